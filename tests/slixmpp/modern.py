"""slixmpp as a modern mobile-minded client: the plugins such a client loads (stream management
XEP-0198 with resumption, client state indication XEP-0352, entity capabilities XEP-0115,
ping) and roster versioning, against the bundled server.

Driven by tests/stream_management.rs with Debian's slixmpp (/usr/bin/python3) and with the
current release from PyPI (a virtual environment); it runs under either. bob logs in with the
plugins, alice with none; then:

1. alice sends bob a chat; bob gets it;
2. bob asks the server for an ack: the server's h equals what bob sent, and the server's own
   ack requests were answered without complaint;
3. bob goes inactive; alice changes her presence twice and sends another chat; bob gets the
   chat at once and none of the presence; bob goes active and gets alice's latest presence.

It prints one JSON object with what it saw and exits 0, or {"event": "error", ...} and exit 1.
Every wait is for an event with a deadline; "nothing more arrived" is a ping round trip.

PLAIN over TLS: which SASL mechanisms each slixmpp version manages is another test's business.
"""

import argparse
import asyncio
import json
import sys

import slixmpp
from steps import STEP_TIMEOUT, Steps

DOMAIN = 'localhost'


class Client(Steps, slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca_file, modern):
        super().__init__(jid, password)
        self.ca_certs = ca_file
        self.plugin['feature_mechanisms'].use_mech = 'PLAIN'
        self.register_plugin('xep_0199')
        if modern:
            self.register_plugin('xep_0030')
            self.register_plugin('xep_0115')
            self.register_plugin('xep_0198')
            self.register_plugin('xep_0352')
        self.messages = []
        self.presences = []
        self.watch_steps()
        self.add_event_handler('message', self._message)
        self.add_event_handler('presence', self._presence)

    def _message(self, msg):
        self.messages.append(msg['body'])
        self.changed.set()

    def _presence(self, presence):
        self.presences.append({'from': str(presence['from']), 'type': presence['type'],
                               'status': presence['status']})
        self.changed.set()

    async def barrier(self):
        await self.plugin['xep_0199'].send_ping(DOMAIN, timeout=STEP_TIMEOUT)


async def scenario(args):
    bob = Client('bob@localhost/phone', args.bob_password, args.ca, modern=True)
    alice = Client('alice@localhost/laptop', args.alice_password, args.ca, modern=False)
    await bob.login(args.port)
    await alice.login(args.port)
    # Roster versioning: the client keeps the version the server gave it, if any.
    await bob.get_roster(timeout=STEP_TIMEOUT)
    bob.send_presence()
    alice.send_presence()
    # Each approves the other's request (slixmpp's default) and subscribes back.
    bob.send_presence_subscription(pto='alice@localhost')
    await bob.until('alice online', lambda: any(
        p['from'] == 'alice@localhost/laptop' and p['type'] == 'available' for p in bob.presences))

    alice.send_message(mto='bob@localhost', mbody='hello-modern', mtype='chat')
    await bob.until('the first chat', lambda: 'hello-modern' in bob.messages)

    sm = bob.plugin['xep_0198']
    bob.add_event_handler('stanza_acked', lambda _stanza: bob.changed.set())
    # The server's ack covers exactly what bob sent since enabling.
    await bob.barrier()
    sent = sm.seq
    sm.request_ack()
    await bob.until(f'an ack of {sent} stanzas', lambda: sm.last_ack == sent)
    sm_state = {'enabled': bool(sm.enabled_in), 'id': sm.sm_id, 'seq': sent,
                'last_ack': sm.last_ack, 'handled': sm.handled}

    bob.plugin['xep_0352'].send_inactive()
    await bob.barrier()
    before = len(bob.presences)
    for status in ('reading-1', 'reading-2'):
        alice.send_presence(pstatus=status)
    alice.send_message(mto='bob@localhost', mbody='alert-while-inactive', mtype='chat')
    await alice.barrier()
    await bob.until('the chat while inactive', lambda: 'alert-while-inactive' in bob.messages)
    await bob.barrier()
    held = [p['status'] for p in bob.presences[before:]]
    bob.plugin['xep_0352'].send_active()
    await bob.until('the latest presence', lambda: any(
        p['status'] == 'reading-2' for p in bob.presences))
    await bob.barrier()
    flushed = [p['status'] for p in bob.presences[before:]]

    result = {
        'event': 'done',
        'slixmpp': slixmpp.__version__,
        'sm': sm_state,
        'csi': bool(bob.plugin['xep_0352'].enabled),
        'caps': 'xep_0115' in bob.plugin,
        'messages': bob.messages,
        'presence_while_inactive': held,
        'presence_after_active': flushed,
    }
    bob.disconnect()
    alice.disconnect()
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--ca', required=True)
    parser.add_argument('--alice-password', required=True)
    parser.add_argument('--bob-password', required=True)
    args = parser.parse_args()
    try:
        result = asyncio.run(asyncio.wait_for(scenario(args), 60))
    except Exception as error:  # reported to the Rust test, which shows it
        print(json.dumps({'event': 'error', 'error': repr(error)}), flush=True)
        sys.exit(1)
    print(json.dumps(result, sort_keys=True), flush=True)


if __name__ == '__main__':
    main()
