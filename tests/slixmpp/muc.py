"""slixmpp and the rooms (XEP-0045) of the bundled server, with its xep_0045 plugin.

Driven by tests/muc.rs with Debian's slixmpp (/usr/bin/python3) and with the current release
from PyPI (a virtual environment); it runs under either.

1. alice joins lab@conference.localhost as Alice: she creates it (201), sees herself (110)
   and that real JIDs are shown (100), and says something;
2. bob joins as Bob asking for ten messages of history: he sees Alice in the room, alice's
   message with the room's delay stamp, and then the subject;
3. bob speaks: alice gets it from lab@conference.localhost/Bob with the room's stanza id;
4. bob becomes Robert: alice sees Bob leave with 303 and the new nick, then Robert;
5. alice writes privately to Robert through his room JID;
6. self-ping (XEP-0410 with a plain XEP-0199 ping): bob is joined, carol, outside, is not;
7. bob leaves: alice sees Robert unavailable.

It prints JSON lines of what it saw and ends with {"event": "done", ...}, or prints
{"event": "error", ...} and exits 1. Every wait is for an event with a deadline.
"""

import argparse
import asyncio
import inspect
import json
import sys

import slixmpp
from slixmpp.exceptions import IqError

ROOM = 'lab@conference.localhost'
STEP_TIMEOUT = 10.0
# Some slixmpp releases print from inside the plugin; the report goes to the real stdout only.
OUT = sys.stdout
sys.stdout = sys.stderr


def emit(event, **fields):
    print(json.dumps({'event': event, **fields}, sort_keys=True), file=OUT, flush=True)


def codes(presence):
    return sorted(str(c) for c in presence['muc']['status_codes'])


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca_file):
        super().__init__(jid, password)
        self.ca_certs = ca_file
        self.plugin['feature_mechanisms'].use_mech = 'PLAIN'
        for plugin in ('xep_0030', 'xep_0045', 'xep_0199', 'xep_0359'):
            self.register_plugin(plugin)
        self.seen = []
        self.changed = asyncio.Event()
        self.started = None
        self.add_event_handler('session_start', self._started)
        self.add_event_handler('groupchat_message', self._groupchat)
        self.add_event_handler('muc::%s::presence' % ROOM, self._presence)
        self.add_event_handler('message', self._message)

    def _started(self, _event):
        if self.started and not self.started.done():
            self.started.set_result(None)

    def _groupchat(self, msg):
        self.seen.append({
            'kind': 'groupchat', 'from': str(msg['from']), 'body': msg['body'],
            'stanza_id_by': str(msg['stanza_id']['by']), 'stanza_id': msg['stanza_id']['id'],
        })
        self.changed.set()

    def _message(self, msg):
        if msg['type'] in ('chat', 'normal'):
            self.seen.append({'kind': 'private', 'from': str(msg['from']), 'body': msg['body']})
            self.changed.set()

    def _presence(self, presence):
        self.seen.append({
            'kind': 'presence', 'from': str(presence['from']), 'type': presence['type'],
            'codes': codes(presence), 'nick': presence['muc']['item']['nick'] or '',
            'role': presence['muc']['role'],
        })
        self.changed.set()

    async def login(self, port):
        self.started = asyncio.get_running_loop().create_future()
        if 'address' in inspect.signature(self.connect).parameters:
            self.connect(('127.0.0.1', port))  # slixmpp 1.8
        else:
            self.connect('127.0.0.1', port)
        await asyncio.wait_for(self.started, STEP_TIMEOUT)
        self.send_presence()

    async def until(self, what, predicate):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STEP_TIMEOUT
        while True:
            found = [e for e in self.seen if predicate(e)]
            if found:
                return found[0]
            if loop.time() > deadline:
                raise RuntimeError(f'timed out waiting for {what}: {self.seen}')
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                pass

    async def self_ping(self, nick):
        try:
            await self.plugin['xep_0199'].send_ping(f'{ROOM}/{nick}', timeout=STEP_TIMEOUT)
            return 'result'
        except IqError as error:
            return error.iq['error']['condition']


async def scenario(args):
    alice = Client('alice@localhost/phone', args.alice_password, args.ca)
    bob = Client('bob@localhost/laptop', args.bob_password, args.ca)
    carol = Client('carol@localhost/desk', args.carol_password, args.ca)
    for client in (alice, bob, carol):
        await client.login(args.port)
    muc_a, muc_b = alice.plugin['xep_0045'], bob.plugin['xep_0045']

    # 1. alice creates the room.
    own, _subject, _occupants, _history = await muc_a.join_muc_wait(
        ROOM, 'Alice', maxstanzas=0, timeout=STEP_TIMEOUT)
    emit('created', codes=codes(own), role=own['muc']['role'],
         affiliation=own['muc']['affiliation'], jid=str(own['muc']['jid']))
    alice.send_message(mto=ROOM, mbody='hello from alice', mtype='groupchat')
    await alice.until('her own message back', lambda e: e.get('body') == 'hello from alice')

    # 2. bob joins with history.
    own, subject, occupants, history = await muc_b.join_muc_wait(
        ROOM, 'Bob', maxstanzas=10, timeout=STEP_TIMEOUT)
    emit('joined', codes=codes(own), role=own['muc']['role'],
         occupants=[str(p['from']) for p in occupants],
         history=[{'body': m['body'], 'from': str(m['from']),
                   'delay_from': str(m['delay']['from'])} for m in history],
         subject=subject['subject'])

    # 3. bob speaks.
    bob.send_message(mto=ROOM, mbody='hi all', mtype='groupchat')
    said = await alice.until('bob in the room', lambda e: e.get('body') == 'hi all')
    emit('groupchat', **said)

    # 4. bob becomes Robert.
    bob.send_presence(pto=f'{ROOM}/Robert')
    left = await alice.until('Bob leaving with 303', lambda e: e['kind'] == 'presence'
                             and e['from'] == f'{ROOM}/Bob' and e['type'] == 'unavailable')
    back = await alice.until('Robert', lambda e: e['kind'] == 'presence'
                             and e['from'] == f'{ROOM}/Robert' and e['type'] != 'unavailable')
    emit('nick_change', left=left, back=back)

    # 5. A private message through the room.
    alice.send_message(mto=f'{ROOM}/Robert', mbody='psst', mtype='chat')
    private = await bob.until('the private message', lambda e: e['kind'] == 'private')
    emit('private', **private)

    # 6. Self-ping.
    emit('self_ping', bob=await bob.self_ping('Robert'), carol=await carol.self_ping('Carol'))

    # 7. bob leaves.
    muc_b.leave_muc(ROOM, 'Robert')
    gone = await alice.until('Robert leaving', lambda e: e['kind'] == 'presence'
                             and e['from'] == f'{ROOM}/Robert' and e['type'] == 'unavailable')
    emit('left', **gone)

    for client in (alice, bob, carol):
        client.disconnect()
    return {'event': 'done', 'slixmpp': slixmpp.__version__}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--ca', required=True)
    parser.add_argument('--alice-password', required=True)
    parser.add_argument('--bob-password', required=True)
    parser.add_argument('--carol-password', required=True)
    args = parser.parse_args()
    try:
        result = asyncio.run(asyncio.wait_for(scenario(args), 90))
    except Exception as error:  # reported to the Rust test, which shows it
        emit('error', error=repr(error))
        sys.exit(1)
    print(json.dumps(result, sort_keys=True), file=OUT, flush=True)


if __name__ == '__main__':
    main()
