"""slixmpp as a room's owner (XEP-0045 §10) on the bundled server, with its xep_0045 plugin.

Driven by tests/muc_owner.rs with Debian's slixmpp (/usr/bin/python3) and with the current
release from PyPI (a virtual environment); it runs under either, in two phases around a
restart of the server.

--phase configure:
1. alice creates lounge@conference.localhost (201) and gets its configuration form;
2. she submits it: persistent, named, password-protected;
3. bob joins without the password: not-authorized; with it: in;
4. she makes it members-only: bob, no member, is taken out (322); carol, with the password,
   gets registration-required;
5. she sets the subject and leaves; the room stays.

--phase restarted (the server was restarted on the same data directory):
1. carol finds the room in the service's list, and its disco#info says persistent,
   password-protected, members-only;
2. alice joins with the password: no 201, still the owner, the subject is still there;
3. she destroys the room, naming another and a reason: she gets <destroy/> in her unavailable
   presence, and carol no longer finds the room.

It prints JSON lines of what it saw and ends with {"event": "done", ...}, or prints
{"event": "error", ...} and exits 1. Every wait is for an event with a deadline.
"""

import argparse
import asyncio
import json
import sys

import slixmpp
from slixmpp.exceptions import PresenceError
from steps import STEP_TIMEOUT, Steps

ROOM = 'lounge@conference.localhost'
SERVICE = 'conference.localhost'
MUC_USER = '{http://jabber.org/protocol/muc#user}'
# Some slixmpp releases print from inside the plugin; the report goes to the real stdout only.
OUT = sys.stdout
sys.stdout = sys.stderr


def emit(event, **fields):
    print(json.dumps({'event': event, **fields}, sort_keys=True), file=OUT, flush=True)


def codes(presence):
    return sorted(str(c) for c in presence['muc']['status_codes'])


class Client(slixmpp.ClientXMPP, Steps):
    def __init__(self, jid, password, ca_file):
        super().__init__(jid, password)
        self.ca_certs = ca_file
        self.plugin['feature_mechanisms'].use_mech = 'PLAIN'
        for plugin in ('xep_0004', 'xep_0030', 'xep_0045'):
            self.register_plugin(plugin)
        self.watch_steps()
        self.seen = []
        self.add_event_handler('muc::%s::presence' % ROOM, self._presence)

    def _presence(self, presence):
        destroy = presence.xml.find(f'{MUC_USER}x/{MUC_USER}destroy')
        reason = destroy.find(f'{MUC_USER}reason') if destroy is not None else None
        self.seen.append({
            'from': str(presence['from']), 'type': presence['type'], 'codes': codes(presence),
            'destroy': None if destroy is None else {
                'jid': destroy.get('jid'), 'reason': reason.text if reason is not None else None,
            },
        })
        self.changed.set()

    async def wait_for(self, what, predicate):
        await self.until(what, lambda: any(predicate(e) for e in self.seen))
        return [e for e in self.seen if predicate(e)][0]

    async def try_join(self, nick, password=None):
        """Joins ROOM; the own presence, or the error condition."""
        try:
            own, subject, _occupants, _history = await self.plugin['xep_0045'].join_muc_wait(
                ROOM, nick, password=password, maxstanzas=0, timeout=STEP_TIMEOUT)
            return {'codes': codes(own), 'affiliation': own['muc']['affiliation'],
                    'subject': subject['subject']}
        except PresenceError as error:
            return {'error': error.condition}

    async def room_features(self):
        info = await self.plugin['xep_0030'].get_info(jid=ROOM, timeout=STEP_TIMEOUT)
        return sorted(info['disco_info']['features'])

    async def listed_rooms(self):
        items = await self.plugin['xep_0030'].get_items(jid=SERVICE, timeout=STEP_TIMEOUT)
        return sorted(str(item[0]) for item in items['disco_items']['items'])


async def configure(alice, bob, carol):
    muc = alice.plugin['xep_0045']
    created = await alice.try_join('Alice')
    emit('created', **created)

    form = await muc.get_room_config(ROOM, timeout=STEP_TIMEOUT)
    fields = form.get_fields()
    emit('form', vars=sorted(fields),
         values={var: str(fields[var]['value']) for var in (
             'muc#roomconfig_persistentroom', 'muc#roomconfig_whois',
             'muc#roomconfig_maxusers', 'muc#roomconfig_historylength')})
    for var, value in (('muc#roomconfig_persistentroom', True),
                       ('muc#roomconfig_roomname', 'The lounge'),
                       ('muc#roomconfig_passwordprotectedroom', True),
                       ('muc#roomconfig_roomsecret', 's3cret')):
        fields[var]['value'] = value
    await muc.set_room_config(ROOM, form, timeout=STEP_TIMEOUT)

    without = await bob.try_join('Bob')
    with_password = await bob.try_join('Bob', password='s3cret')
    emit('password', without=without, with_password=with_password)

    form = await muc.get_room_config(ROOM, timeout=STEP_TIMEOUT)
    form.get_fields()['muc#roomconfig_membersonly']['value'] = True
    await muc.set_room_config(ROOM, form, timeout=STEP_TIMEOUT)
    removed = await bob.wait_for('bob taken out', lambda e: e['type'] == 'unavailable'
                                 and e['from'] == f'{ROOM}/Bob')
    stranger = await carol.try_join('Carol', password='s3cret')
    emit('members_only', removed=removed, stranger=stranger)

    # The subject has no answer; the form asked for after it is answered after it is stored.
    muc.set_subject(ROOM, 'Kept across restarts')
    form = await muc.get_room_config(ROOM, timeout=STEP_TIMEOUT)
    emit('stored', persistent=str(form.get_fields()['muc#roomconfig_persistentroom']['value']))
    # The plugin forgets the room as it leaves, so its own unavailable presence is not seen;
    # the owner's next request is answered after the leave went through.
    muc.leave_muc(ROOM, 'Alice')
    await muc.get_room_config(ROOM, timeout=STEP_TIMEOUT)
    emit('left', listed=await carol.listed_rooms())


async def restarted(alice, _bob, carol):
    emit('found', listed=await carol.listed_rooms(), features=await carol.room_features())
    back = await alice.try_join('Alice', password='s3cret')
    emit('back', **back)
    await alice.plugin['xep_0045'].destroy(ROOM, reason='Moved', altroom='hall@conference.localhost',
                                           timeout=STEP_TIMEOUT)
    gone = await alice.wait_for('the destroy presence', lambda e: e['destroy'] is not None)
    emit('destroyed', presence=gone, listed=await carol.listed_rooms())


async def scenario(args):
    alice = Client('alice@localhost/phone', args.alice_password, args.ca)
    bob = Client('bob@localhost/laptop', args.bob_password, args.ca)
    carol = Client('carol@localhost/desk', args.carol_password, args.ca)
    for client in (alice, bob, carol):
        await client.login(args.port)
        client.send_presence()
    phase = configure if args.phase == 'configure' else restarted
    await phase(alice, bob, carol)
    for client in (alice, bob, carol):
        client.disconnect()
    return {'event': 'done', 'slixmpp': slixmpp.__version__}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--phase', choices=('configure', 'restarted'), required=True)
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
