#!/usr/bin/python3
"""nbxmpp (Debian python3-nbxmpp, the protocol library of Gajim) keeping bookmarks in PEP
(XEP-0402) with its own NativeBookmarks module, as Gajim does: publish-options asking for a
whitelist node that keeps every item, and a reconfiguration if the server says the node
differs. Driven by tests/pep.rs:

- `store`: logs in, stores two bookmarks, reads them back in the same session;
- `read`: logs in and reads the bookmarks.

Prints JSON lines ({"event": "online" | "bookmarks" | "error" | "done", ...}) and exits 0
after "done". The deadline is the caller's.

Environment: XMPP_PORT, XMPP_USER, XMPP_PASSWORD, XMPP_CA (the server's self-signed
certificate, trusted as Gajim trusts a certificate the user accepted).
"""

import json
import os
import sys

import gi

gi.require_version('Gio', '2.0')
gi.require_version('GLib', '2.0')
from gi.repository import Gio, GLib  # noqa: E402

from nbxmpp.client import Client  # noqa: E402
from nbxmpp.const import ConnectionProtocol, ConnectionType  # noqa: E402
from nbxmpp.protocol import JID  # noqa: E402
from nbxmpp.structs import BookmarkData  # noqa: E402

BOOKMARKS = [
    BookmarkData(jid=JID.from_string('lobby@conference.localhost'), name='Lobby',
                 nick='alice', autojoin=True),
    BookmarkData(jid=JID.from_string('ops@conference.localhost'), name='Operations',
                 autojoin=False),
]


def emit(event, **fields):
    print(json.dumps({'event': event, **fields}, sort_keys=True), flush=True)


def main():
    action = sys.argv[1]
    env = os.environ
    loop = GLib.MainLoop()
    status = {'code': 1, 'finished': False}

    def finish(code):
        status['code'] = code
        status['finished'] = True
        loop.quit()

    client = Client()
    client.set_domain('localhost')
    client.set_username(env['XMPP_USER'])
    client.set_resource('gajim')
    client.set_password(env['XMPP_PASSWORD'])
    client.set_custom_host(f"127.0.0.1:{env['XMPP_PORT']}",
                           ConnectionProtocol.TCP, ConnectionType.START_TLS)
    client.set_accepted_certificates(
        [Gio.TlsCertificate.new_from_file(env['XMPP_CA'])])
    # The certificate names localhost, the connection goes to 127.0.0.1.
    client.set_ignored_tls_errors({Gio.TlsCertificateFlags.BAD_IDENTITY})
    bookmarks = client.get_module('NativeBookmarks')

    def fail(what, error):
        emit('error', step=what, error=repr(error))
        finish(1)

    def read_back(task):
        try:
            found = task.finish()
        except Exception as error:  # reported to the Rust test
            fail('request_bookmarks', error)
            return
        emit('bookmarks', bookmarks=[
            {'jid': str(b.jid), 'name': b.name, 'nick': b.nick, 'autojoin': b.autojoin}
            for b in found])
        emit('done')
        finish(0)

    def stored(task):
        try:
            task.finish()
        except Exception as error:
            fail('store_bookmarks', error)
            return
        # The publications went out before this request, on the same stream: the server
        # answers in order.
        bookmarks.request_bookmarks(callback=read_back)

    def on_connected(_client, _signal):
        emit('online', jid=str(client.get_bound_jid()))
        if action == 'store':
            bookmarks.store_bookmarks(BOOKMARKS, callback=stored)
        else:
            bookmarks.request_bookmarks(callback=read_back)

    def on_failed(_client, signal, *args):
        if status['finished']:
            return
        emit('error', signal=signal, detail=repr(args), error=repr(client.get_error()))
        finish(1)

    client.subscribe('connected', on_connected)
    client.subscribe('connection-failed', on_failed)
    client.subscribe('disconnected', on_failed)
    client.connect()
    loop.run()
    return status['code']


if __name__ == '__main__':
    sys.exit(main())
