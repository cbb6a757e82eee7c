#!/usr/bin/python3
"""slixmpp (Debian's python3-slixmpp) logging in over direct TLS (XEP-0368).

Driven by tests/server_tls.rs. alice and bob connect to the server's direct TLS port with
slixmpp's use_ssl=True and ALPN "xmpp-client" (slixmpp 1.8.3 sets no ALPN itself; phone clients
do), log in with SCRAM, and alice sends bob a message. Each observation is one JSON line on
stdout; the Rust test asserts on them. Every wait has a deadline; on failure the script prints
{"event": "error", ...} and exits 1.

SCRAM and slixmpp 1.8.3: it only knows the tls-unique channel binding, which TLS 1.3 does not
define, so the channel-binding data is withheld (gs2 flag "n") and plain SCRAM is used, as in
client.py.
"""

import argparse
import asyncio
import json
import ssl
import sys

import slixmpp

STEP_TIMEOUT = 10.0


def emit(event, **fields):
    print(json.dumps({'event': event, **fields}, sort_keys=True), flush=True)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca_file):
        super().__init__(jid, password)
        self.ca_certs = ca_file
        self.ssl_context.set_alpn_protocols(['xmpp-client'])
        mechanisms = self['feature_mechanisms']
        stock_credentials = mechanisms.sasl_callback

        def credentials(required, optional):
            values = stock_credentials(required, optional)
            values.pop('channel_binding', None)
            return values

        mechanisms.sasl_callback = credentials
        mechanisms.use_mechs = {'SCRAM-SHA-256', 'SCRAM-SHA-1'}
        self.mechanism = None
        self.starttls_offered = None
        self.session = asyncio.get_event_loop().create_future()
        self.messages = asyncio.Queue()
        self.add_event_handler('stream_negotiated', lambda _: None)
        self.add_event_handler('auth_success', self._auth_success)
        self.add_event_handler('session_start', self._done('session_start'))
        for failure in ('failed_all_auth', 'disconnected', 'ssl_invalid_chain', 'stream_error',
                        'connection_failed'):
            self.add_event_handler(failure, self._done(failure))
        self.add_event_handler('message', self.messages.put_nowait)
        self.register_handler(slixmpp.xmlstream.handler.Callback(
            'features', slixmpp.xmlstream.matcher.MatchXPath('{%s}features' % self.stream_ns),
            self._features))

    def _features(self, features):
        # The first features: those offered right after the TLS handshake.
        if self.starttls_offered is None:
            self.starttls_offered = 'starttls' in features['features']

    def _auth_success(self, _stanza):
        self.mechanism = self['feature_mechanisms'].mech.name

    def _done(self, name):
        def handler(data=None):
            if self.session.done():
                return
            if name == 'session_start':
                self.session.set_result(None)
            else:
                self.session.set_exception(RuntimeError(f'{name}: {data}'))
        return handler

    async def login(self, port):
        self.connect(('127.0.0.1', port), use_ssl=True, force_starttls=False)
        await asyncio.wait_for(asyncio.shield(self.session), STEP_TIMEOUT)
        tls = self.socket
        return {
            'jid': str(self.boundjid),
            'tls_version': tls.version(),
            'alpn': tls.selected_alpn_protocol(),
            'verified': self.ssl_context.verify_mode == ssl.CERT_REQUIRED
            and self.ssl_context.check_hostname,
            'starttls_offered': self.starttls_offered,
            'mechanism': self.mechanism,
        }


async def main(args):
    alice = Client('alice@localhost/direct-tls', 'alice-secret', args.ca)
    bob = Client('bob@localhost/direct-tls', 'bob-secret', args.ca)
    try:
        for client in (alice, bob):
            emit('login', **await client.login(args.port))
        alice.send_message(mto='bob@localhost/direct-tls', mbody='Hello Bob, over direct TLS',
                           mtype='chat')
        message = await asyncio.wait_for(bob.messages.get(), STEP_TIMEOUT)
        emit('message', **{'from': str(message['from']), 'body': message['body']})
    except (asyncio.TimeoutError, RuntimeError) as error:
        emit('error', step=repr(error))
        return 1
    finally:
        for client in (alice, bob):
            await client.disconnect()
    emit('done')
    return 0


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--ca', required=True)
    sys.exit(asyncio.run(main(parser.parse_args())))
