#!/usr/bin/python3
"""slixmpp as poezio and other slixmpp programs run it (Debian python3-slixmpp, stock SASL
settings): logs in over STARTTLS, sends the bot one question and prints the first answer,
with the SASL mechanism it logged in with and the attempts the server refused before.
Driven by tests/clients.rs; prints JSON lines ({"event": "online" | "answer" | "error", ...})
and exits 0 once it has an answer. The deadline is the caller's.

Environment: XMPP_PORT, XMPP_USER, XMPP_PASSWORD, BOT_JID, QUESTION, XMPP_CA (the server's
self-signed certificate).
"""

import asyncio
import json
import os
import sys

import slixmpp


def emit(event, **fields):
    print(json.dumps({'event': event, **fields}, sort_keys=True), flush=True)


class Asker(slixmpp.ClientXMPP):
    def __init__(self, env):
        super().__init__(f"{env['XMPP_USER']}@localhost/slixmpp", env['XMPP_PASSWORD'])
        self.ca_certs = env['XMPP_CA']
        self.bot = slixmpp.JID(env['BOT_JID'])
        self.question = env['QUESTION']
        self.refused = []
        self.done = self.loop.create_future()
        self.add_event_handler('failed_auth', self.on_failed_auth)
        self.add_event_handler('session_start', self.on_session_start)
        self.add_event_handler('message', self.on_message)
        self.add_event_handler('connection_failed', self.on_error)
        self.add_event_handler('disconnected', self.on_error)

    def on_failed_auth(self, _event):
        self.refused.append(self['feature_mechanisms'].mech.name)

    async def on_session_start(self, _event):
        emit('online', jid=str(self.boundjid),
             mechanism=self['feature_mechanisms'].mech.name, refused=self.refused)
        self.send_presence()
        self.send_message(mto=self.bot, mbody=self.question, mtype='chat')

    def on_message(self, message):
        if message['from'].bare == self.bot.bare and message['type'] != 'error' \
                and message['body'] and not self.done.done():
            emit('answer', body=message['body'], **{'from': str(message['from'])})
            self.done.set_result(0)

    def on_error(self, event):
        if not self.done.done():
            emit('error', detail=str(event), refused=self.refused)
            self.done.set_result(1)


def main():
    client = Asker(os.environ)
    client.connect(('127.0.0.1', int(os.environ['XMPP_PORT'])))
    code = client.loop.run_until_complete(client.done)
    return code


if __name__ == '__main__':
    sys.exit(main())
