#!/usr/bin/python3
"""nbxmpp (Debian python3-nbxmpp, the protocol library of Gajim) as a user of the bot: logs
in over STARTTLS, sends the bot one question and prints the first answer, on a GLib main
loop as Gajim runs it. Driven by tests/clients.rs; prints JSON lines ({"event": "online" |
"answer" | "error", ...}) and exits 0 once it has an answer. The deadline is the caller's.

Environment: XMPP_PORT, XMPP_USER, XMPP_PASSWORD, BOT_JID, QUESTION, XMPP_CA (the server's
self-signed certificate, trusted as Gajim trusts a certificate the user accepted).
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
from nbxmpp.protocol import JID, Message, Presence  # noqa: E402
from nbxmpp.structs import StanzaHandler  # noqa: E402


def emit(event, **fields):
    print(json.dumps({'event': event, **fields}, sort_keys=True), flush=True)


def main():
    env = os.environ
    bot = JID.from_string(env['BOT_JID'])
    loop = GLib.MainLoop()
    status = {'code': 1}

    def finish(code):
        status['code'] = code
        loop.quit()

    client = Client()
    client.set_domain('localhost')
    client.set_username(env['XMPP_USER'])
    client.set_resource('nbxmpp')
    client.set_password(env['XMPP_PASSWORD'])
    client.set_custom_host(f"127.0.0.1:{env['XMPP_PORT']}",
                           ConnectionProtocol.TCP, ConnectionType.START_TLS)
    client.set_accepted_certificates(
        [Gio.TlsCertificate.new_from_file(env['XMPP_CA'])])
    # The certificate names localhost, the connection goes to 127.0.0.1.
    client.set_ignored_tls_errors({Gio.TlsCertificateFlags.BAD_IDENTITY})

    def on_message(_client, stanza, _properties):
        body = stanza.getBody()
        sender = stanza.getFrom()
        if body and sender is not None and sender.bare == bot.bare \
                and stanza.getType() != 'error':
            emit('answer', body=body, **{'from': str(sender)})
            finish(0)

    def on_connected(_client, _signal):
        emit('online', jid=str(client.get_bound_jid()))
        client.send_stanza(Presence())
        client.send_stanza(Message(to=bot, body=env['QUESTION'], typ='chat'))

    def on_failed(_client, signal, *args):
        emit('error', signal=signal, detail=repr(args),
             error=repr(client.get_error()))
        finish(1)

    client.register_handler(StanzaHandler(name='message', callback=on_message))
    client.subscribe('connected', on_connected)
    client.subscribe('connection-failed', on_failed)
    client.subscribe('disconnected', on_failed)
    client.connect()
    loop.run()
    return status['code']


if __name__ == '__main__':
    sys.exit(main())
