#!/usr/bin/python3
"""An external component (XEP-0114) written with slixmpp's ComponentXMPP (Debian's
python3-slixmpp), attached to the bundled server by tests/components.rs.

It connects to --port on 127.0.0.1 as --name with the secret in --secret-file, and then:
- greets each JID given with --greet (from greeter@NAME), once the handshake is accepted,
  and asks each JID given with --subscribe for a presence subscription (from greeter@NAME);
- answers every chat message with "echo: " and its body, from the address it was sent to;
- on the body "quit", answers "bye" and disconnects.

It prints what it observed as JSON lines on stdout ({"event": ...}) for the Rust test, which
asserts on them: "session_start" after the handshake, "message" for each message received, "subscribed" and "presence" for the
subscription answers and presence it gets,
"disconnected", then "done". If the session has not ended within --deadline seconds it prints
{"event": "error", ...} and exits 1. slixmpp's own log goes to stderr (DEBUG with
SLIXMPP_DEBUG=1, else WARNING).
"""

import argparse
import asyncio
import json
import logging
import os
import sys

from slixmpp.componentxmpp import ComponentXMPP


def emit(event, **fields):
    """One observation for the Rust test."""
    print(json.dumps({'event': event, **fields}, sort_keys=True), flush=True)


class Echo(ComponentXMPP):
    def __init__(self, name, secret, port, greet, subscribe):
        super().__init__(name, secret, '127.0.0.1', port)
        self.name = name
        self.greet = greet
        self.subscribe = subscribe
        self.ended = asyncio.get_event_loop().create_future()
        self.add_event_handler('session_start', self.on_start)
        self.add_event_handler('message', self.on_message)
        self.add_event_handler('disconnected', self.on_disconnected)
        self.add_event_handler('stream_error', self.on_stream_error)
        self.add_event_handler('presence_subscribed', self.on_subscribed)
        self.add_event_handler('presence_available', self.on_presence)
        self.add_event_handler('presence_unavailable', self.on_presence)

    def on_start(self, _event):
        emit('session_start', jid=str(self.boundjid))
        for jid in self.greet:
            self.send_message(mto=jid, mfrom='greeter@%s' % self.name,
                              mbody='hello from %s' % self.name, mtype='chat')
        for jid in self.subscribe:
            self.send_presence(pto=jid, pfrom='greeter@%s' % self.name, ptype='subscribe')

    def on_subscribed(self, presence):
        emit('subscribed', sender=str(presence['from']), to=str(presence['to']))

    def on_presence(self, presence):
        emit('presence', sender=str(presence['from']), to=str(presence['to']),
             type=presence['type'])

    def on_message(self, msg):
        body = msg['body']
        emit('message', sender=str(msg['from']), to=str(msg['to']), body=body,
             type=msg['type'])
        if msg['type'] not in ('chat', 'normal'):
            return
        if body == 'quit':
            self.send_message(mto=msg['from'], mfrom=msg['to'], mbody='bye', mtype='chat')
            self.disconnect()
            return
        msg.reply('echo: %s' % body).send()

    def on_stream_error(self, error):
        emit('stream_error', condition=error['condition'], text=error['text'])

    def on_disconnected(self, _reason):
        emit('disconnected')
        if not self.ended.done():
            self.ended.set_result(True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--name', required=True)
    parser.add_argument('--secret-file', required=True)
    parser.add_argument('--greet', action='append', default=[])
    parser.add_argument('--subscribe', action='append', default=[])
    parser.add_argument('--deadline', type=float, default=30.0)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get('SLIXMPP_DEBUG') else logging.WARNING,
        stream=sys.stderr)
    with open(args.secret_file, encoding='utf-8') as file:
        secret = file.read().rstrip('\n')
    component = Echo(args.name, secret, args.port, args.greet, args.subscribe)
    component.connect()
    loop = asyncio.get_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(component.ended, args.deadline))
    except asyncio.TimeoutError:
        emit('error', step='the session did not end within %s s' % args.deadline)
        sys.exit(1)
    emit('done')


if __name__ == '__main__':
    main()
