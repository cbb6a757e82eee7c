"""slixmpp administering a room (XEP-0045 §7.8, §8, §9) of the bundled server, and XEP-0249.

Driven by tests/muc_admin.rs with Debian's slixmpp (/usr/bin/python3) and with the current
release from PyPI (a virtual environment); it runs under either.

1. alice creates lab@conference.localhost by joining it as Alice; bob and carol join;
2. carol, a participant, tries to kick Alice: refused;
3. alice kicks Carol with a reason (set_role 'none'): carol sees 307 and 110, bob sees 307;
4. alice bans bob (set_affiliation 'outcast'): bob sees 301 and 110;
5. alice makes dave a member, then reads the ban list and the member list;
6. alice invites dave through the room (mediated): dave gets `groupchat_invite`;
7. dave declines: alice gets the decline from the room;
8. alice invites dave directly (XEP-0249): dave gets `groupchat_direct_invite`.

It prints JSON lines of what it saw and ends with {"event": "done", ...}, or prints
{"event": "error", ...} and exits 1. Every wait is for an event with a deadline.
"""

import argparse
import asyncio
import json
import sys

import slixmpp
from slixmpp.exceptions import IqError

from steps import STEP_TIMEOUT, Steps

ROOM = 'lab@conference.localhost'
# Some slixmpp releases print from inside the plugin; the report goes to the real stdout only.
OUT = sys.stdout
sys.stdout = sys.stderr


def emit(event, **fields):
    print(json.dumps({'event': event, **fields}, sort_keys=True), file=OUT, flush=True)


class Client(Steps, slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca_file):
        super().__init__(jid, password)
        self.ca_certs = ca_file
        self.plugin['feature_mechanisms'].use_mech = 'PLAIN'
        for plugin in ('xep_0030', 'xep_0045', 'xep_0249'):
            self.register_plugin(plugin)
        self.watch_steps()
        self.seen = []
        self.add_event_handler('muc::%s::presence' % ROOM, self._presence)
        self.add_event_handler('groupchat_invite', self._invite)
        self.add_event_handler('groupchat_direct_invite', self._direct_invite)
        self.add_event_handler('message', self._message)

    def _record(self, entry):
        self.seen.append(entry)
        self.changed.set()

    def _presence(self, presence):
        item = presence['muc']
        x = presence.xml.find('{http://jabber.org/protocol/muc#user}x')
        actor = reason = ''
        if x is not None:
            element = x.find('{http://jabber.org/protocol/muc#user}item')
            if element is not None:
                found = element.find('{http://jabber.org/protocol/muc#user}actor')
                actor = found.get('nick', '') if found is not None else ''
                found = element.find('{http://jabber.org/protocol/muc#user}reason')
                reason = (found.text or '') if found is not None else ''
        self._record({
            'kind': 'presence', 'from': str(presence['from']), 'type': presence['type'],
            'codes': sorted(str(c) for c in item['status_codes']),
            'role': item['role'], 'affiliation': item['affiliation'],
            'actor': actor, 'reason': reason,
        })

    def _invite(self, msg):
        invite = msg['muc']['invite']
        self._record({'kind': 'invite', 'from': str(msg['from']),
                      'inviter': str(invite['from']), 'reason': invite['reason']})

    def _direct_invite(self, msg):
        self._record({'kind': 'direct_invite', 'from': str(msg['from']),
                      'jid': str(msg['groupchat_invite']['jid']),
                      'reason': msg['groupchat_invite']['reason']})

    def _message(self, msg):
        # The decline is read here: slixmpp's own decline event fires only in some releases.
        x = msg.xml.find('{http://jabber.org/protocol/muc#user}x')
        decline = x.find('{http://jabber.org/protocol/muc#user}decline') if x is not None else None
        if decline is not None:
            found = decline.find('{http://jabber.org/protocol/muc#user}reason')
            self._record({'kind': 'decline', 'from': str(msg['from']),
                          'decliner': decline.get('from', ''),
                          'reason': (found.text or '') if found is not None else ''})

    async def wait_for(self, what, predicate):
        await self.until(what, lambda: any(predicate(e) for e in self.seen))
        return next(e for e in self.seen if predicate(e))


def gone(nick):
    return lambda e: (e['kind'] == 'presence' and e['from'] == f'{ROOM}/{nick}'
                      and e['type'] == 'unavailable')


async def scenario(args):
    clients = {}
    for user, resource in (('alice', 'phone'), ('bob', 'laptop'), ('carol', 'desk'),
                           ('dave', 'tablet')):
        client = Client(f'{user}@localhost/{resource}', getattr(args, f'{user}_password'),
                        args.ca)
        await client.login(args.port)
        client.send_presence()
        clients[user] = client
    alice, bob, carol, dave = (clients[u] for u in ('alice', 'bob', 'carol', 'dave'))
    muc = {name: client.plugin['xep_0045'] for name, client in clients.items()}

    # 1. The room is created by joining it (an instant room).
    for name, nick in (('alice', 'Alice'), ('bob', 'Bob'), ('carol', 'Carol')):
        await muc[name].join_muc_wait(ROOM, nick, maxstanzas=0, timeout=STEP_TIMEOUT)

    # 2. A participant may not kick.
    try:
        await muc['carol'].set_role(ROOM, 'Alice', 'none', timeout=STEP_TIMEOUT)
        emit('participant_kick', condition='result')
    except IqError as error:
        emit('participant_kick', condition=error.iq['error']['condition'])

    # 3. The owner kicks Carol.
    await muc['alice'].set_role(ROOM, 'Carol', 'none', reason='spam', timeout=STEP_TIMEOUT)
    emit('kick', kicked=await carol.wait_for('her own kick', gone('Carol')),
         seen=await bob.wait_for('Carol kicked', gone('Carol')))

    # 4. The owner bans bob.
    await muc['alice'].set_affiliation(ROOM, 'outcast', jid='bob@localhost',
                                       reason='trolling', timeout=STEP_TIMEOUT)
    emit('ban', banned=await bob.wait_for('his own ban', gone('Bob')))

    # 5. dave becomes a member; the lists.
    await muc['alice'].set_affiliation(ROOM, 'member', jid='dave@localhost',
                                       timeout=STEP_TIMEOUT)
    outcasts = await muc['alice'].get_affiliation_list(ROOM, 'outcast', timeout=STEP_TIMEOUT)
    members = await muc['alice'].get_affiliation_list(ROOM, 'member', timeout=STEP_TIMEOUT)
    emit('lists', outcast=sorted(str(j) for j in outcasts),
         member=sorted(str(j) for j in members))

    # 6. A mediated invitation.
    muc['alice'].invite(ROOM, 'dave@localhost', reason='come and see')
    emit('invite', **await dave.wait_for('the invitation', lambda e: e['kind'] == 'invite'))

    # 7. dave declines it.
    muc['dave'].decline(ROOM, 'alice@localhost/phone', reason='busy')
    emit('decline', **await alice.wait_for('the decline', lambda e: e['kind'] == 'decline'))

    # 8. A direct invitation (XEP-0249), account to account.
    alice.plugin['xep_0249'].send_invitation('dave@localhost', ROOM, reason='direct')
    emit('direct_invite',
         **await dave.wait_for('the direct invitation', lambda e: e['kind'] == 'direct_invite'))

    for client in clients.values():
        client.disconnect()
    return {'event': 'done', 'slixmpp': slixmpp.__version__}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--ca', required=True)
    for user in ('alice', 'bob', 'carol', 'dave'):
        parser.add_argument(f'--{user}-password', required=True)
    args = parser.parse_args()
    try:
        result = asyncio.run(asyncio.wait_for(scenario(args), 90))
    except Exception as error:  # reported to the Rust test, which shows it
        emit('error', error=repr(error))
        sys.exit(1)
    print(json.dumps(result, sort_keys=True), file=OUT, flush=True)


if __name__ == '__main__':
    main()
