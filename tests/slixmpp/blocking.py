"""slixmpp's blocking plugin (XEP-0191, xep_0191) against the bundled server.

Driven by tests/blocking.rs with Debian's slixmpp (/usr/bin/python3) and with the current
release from PyPI (a virtual environment); it runs under either. Two commands, with a server
restart in between:

block    alice logs in twice (resources "one" and "two"), both fetch the block list; bob logs
         in. bob's first chat reaches alice. alice/one blocks bob: alice/two sees the push.
         bob's next chat bounces with service-unavailable and never reaches alice; alice's
         chat to bob bounces with not-acceptable and <blocked/> and never reaches bob.
unblock  (after a restart) alice/two's list still holds bob; bob's chat still bounces.
         alice/one unblocks bob: alice/two sees the push, and bob's next chat arrives.

It prints one JSON object with what it saw ({"event": "done", ...}) and exits 0, or
{"event": "error", ...} and exits 1. Every wait is for an event with a deadline; "nothing
arrived" is established with a ping round trip to the server, which answers in order after
everything it routed before (the hub handles every stanza in one order).

PLAIN over TLS: which SASL mechanisms each slixmpp version manages is another test's business.
"""

import argparse
import asyncio
import json
import sys

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath
from steps import STEP_TIMEOUT, Steps

DOMAIN = 'localhost'
BLOCKING = '{urn:xmpp:blocking}'
STANZAS = '{urn:ietf:params:xml:ns:xmpp-stanzas}'
BLOCKED = '{urn:xmpp:blocking:errors}blocked'


class Client(Steps, slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca_file):
        super().__init__(jid, password)
        self.ca_certs = ca_file
        self.plugin['feature_mechanisms'].use_mech = 'PLAIN'
        self.register_plugin('xep_0030')
        self.register_plugin('xep_0199')
        self.register_plugin('xep_0191')
        self.messages = []
        self.pushes = []
        self.watch_steps()
        # Every message, errors included (slixmpp's own 'message' event leaves some out).
        self.register_handler(Callback('every message', StanzaPath('message'), self._message))
        self.add_event_handler('blocked', self._push('block'))
        self.add_event_handler('unblocked', self._push('unblock'))

    def _message(self, msg):
        error = msg.xml.find('{jabber:client}error')
        seen = {'from': str(msg['from']), 'type': msg['type'], 'body': msg['body'],
                'id': msg['id']}
        if error is not None:
            seen['error_type'] = error.get('type')
            seen['conditions'] = sorted(child.tag.split('}')[-1] for child in error
                                        if child.tag.startswith(STANZAS))
            seen['blocked'] = error.find(BLOCKED) is not None
        self.messages.append(seen)
        self.changed.set()

    def _push(self, kind):
        def handler(iq):
            element = iq.xml.find(BLOCKING + kind)
            items = [] if element is None else sorted(
                item.get('jid') for item in element.findall(BLOCKING + 'item'))
            self.pushes.append({'kind': kind, 'items': items})
            self.changed.set()
        return handler

    async def login(self, port):
        await super().login(port)
        self.send_presence()


    async def barrier(self):
        await self.plugin['xep_0199'].send_ping(DOMAIN, timeout=STEP_TIMEOUT)

    async def block_list(self):
        """The block list, as the server sends it (this also asks for its pushes)."""
        iq = await self.plugin['xep_0191'].get_blocked(timeout=STEP_TIMEOUT)
        element = iq.xml.find(BLOCKING + 'blocklist')
        return sorted(item.get('jid') for item in element.findall(BLOCKING + 'item'))

    def bodies(self, text):
        return [m for m in self.messages if m['body'] == text]


async def chat_refused(sender, recipient, to, text):
    """`sender` chats `text` (also its id) to `to`; returns the error it gets back (the
    server's bounce carries the id, not the body), and whether `recipient` got the chat by
    the time a ping of its own came back."""
    message = sender.make_message(mto=to, mbody=text, mtype='chat')
    message['id'] = text
    message.send()
    errors = lambda: [m for m in sender.messages if m['type'] == 'error' and m['id'] == text]
    await sender.until(f'the error for {text!r}', errors)
    await recipient.barrier()
    return errors()[0], bool(recipient.bodies(text))


async def chat_arrives(sender, recipient, to, text):
    sender.send_message(mto=to, mbody=text, mtype='chat')
    await recipient.until(f'the chat {text!r}', lambda: recipient.bodies(text))
    return True


async def block(args):
    one = Client('alice@localhost/one', args.alice_password, args.ca)
    two = Client('alice@localhost/two', args.alice_password, args.ca)
    bob = Client('bob@localhost/desk', args.bob_password, args.ca)
    for client in (one, two, bob):
        await client.login(args.port)
    report = {'event': 'done', 'slixmpp': slixmpp.__version__}
    report['list_before'] = await one.block_list()
    await two.block_list()
    report['chat_before'] = await chat_arrives(bob, one, 'alice@localhost/one', 'before-block')
    await one.plugin['xep_0191'].block('bob@localhost', timeout=STEP_TIMEOUT)
    await two.until('the block push', lambda: two.pushes)
    report['pushes_two'] = two.pushes
    report['pushes_one'] = one.pushes
    report['bob_to_alice_error'], report['bob_to_alice_delivered'] = await chat_refused(
        bob, one, 'alice@localhost/one', 'while-blocked')
    report['alice_to_bob_error'], report['alice_to_bob_delivered'] = await chat_refused(
        one, bob, 'bob@localhost', 'to-the-blocked')
    report['list_after'] = await two.block_list()
    for client in (one, two, bob):
        client.disconnect()
    return report


async def unblock(args):
    one = Client('alice@localhost/one', args.alice_password, args.ca)
    two = Client('alice@localhost/two', args.alice_password, args.ca)
    bob = Client('bob@localhost/desk', args.bob_password, args.ca)
    for client in (one, two, bob):
        await client.login(args.port)
    report = {'event': 'done', 'slixmpp': slixmpp.__version__}
    report['list_after_restart'] = await two.block_list()
    report['bob_to_alice_error'], report['bob_to_alice_delivered'] = await chat_refused(
        bob, one, 'alice@localhost/one', 'still-blocked')
    await one.plugin['xep_0191'].unblock('bob@localhost', timeout=STEP_TIMEOUT)
    await two.until('the unblock push', lambda: two.pushes)
    report['pushes_two'] = two.pushes
    report['chat_after'] = await chat_arrives(bob, one, 'alice@localhost/one', 'after-unblock')
    report['list_after'] = await one.block_list()
    for client in (one, two, bob):
        client.disconnect()
    return report


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('command', choices=('block', 'unblock'))
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--ca', required=True)
    parser.add_argument('--alice-password', required=True)
    parser.add_argument('--bob-password', required=True)
    args = parser.parse_args()
    step = block if args.command == 'block' else unblock
    try:
        result = asyncio.run(asyncio.wait_for(step(args), 60))
    except Exception as error:  # reported to the Rust test, which shows it
        print(json.dumps({'event': 'error', 'error': repr(error)}), flush=True)
        sys.exit(1)
    print(json.dumps(result, sort_keys=True), flush=True)


if __name__ == '__main__':
    main()
