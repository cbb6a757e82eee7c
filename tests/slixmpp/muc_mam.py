"""slixmpp reads a room's message archive (XEP-0313 on the room's JID, with RSM paging
XEP-0059 and the room's stanza ids XEP-0359) on the bundled server, with xep_0045 and xep_0313.

Driven by tests/muc_mam.rs with Debian's slixmpp (/usr/bin/python3) and with the current
release from PyPI (a virtual environment); it runs under either. Two phases, one per run:

--phase talk: alice joins lab@conference.localhost as Alice and makes it persistent (a
    temporary room's archive ends with the room), bob joins as Bob; they say one, two, three,
    four, five in turn, and each notes the room's stanza id on its own echo (`said`).
    Bob pages through the room's archive two at a time (`archive`), asks for the page after
    the second stanza id (`after_second`), and reads the last page backward (`last_page`).
--phase again (after the server restarted): alice joins again and says six; she pages through
    the whole archive (`archive`), and asks for the page after the fifth message's stanza id,
    given with --after (`after_fifth`); carol, who never joined, reads the public room's
    archive too (`passer_by`).

It prints one JSON event per line, then {"event": "done"}; on failure {"event": "error", ...}
and exit 1. Every wait has a deadline.
"""

import argparse
import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import slixmpp  # noqa: E402
from steps import STEP_TIMEOUT, Steps  # noqa: E402

ROOM = 'lab@conference.localhost'
# Some slixmpp releases print from inside the plugins; the report goes to the real stdout only.
OUT = sys.stdout
sys.stdout = sys.stderr


def emit(event, **fields):
    print(json.dumps({'event': event, **fields}, sort_keys=True), file=OUT, flush=True)


class Client(slixmpp.ClientXMPP, Steps):
    def __init__(self, jid, password, ca_file):
        super().__init__(jid, password)
        self.ca_certs = ca_file
        self.plugin['feature_mechanisms'].use_mech = 'PLAIN'
        for plugin in ('xep_0030', 'xep_0045', 'xep_0059', 'xep_0297', 'xep_0313', 'xep_0359'):
            self.register_plugin(plugin)
        self.watch_steps()
        self.echoes = []
        self.add_event_handler('groupchat_message', self._groupchat)

    def _groupchat(self, msg):
        # History replayed on joining carries a <delay/>: not an echo of what was just said.
        if msg.xml.find('{urn:xmpp:delay}delay') is not None or not msg['body']:
            return
        self.echoes.append({'from': str(msg['from']), 'body': msg['body'],
                            'stanza_id': msg['stanza_id']['id'],
                            'by': str(msg['stanza_id']['by'])})
        self.changed.set()

    async def join(self, nick):
        await self.plugin['xep_0045'].join_muc_wait(
            slixmpp.JID(ROOM), nick, maxstanzas=0, timeout=STEP_TIMEOUT)

    async def say(self, body, others=()):
        """Says `body` and waits until this client and `others` got it back from the room."""
        self.send_message(mto=ROOM, mbody=body, mtype='groupchat')
        for client in (self, *others):
            await client.until(f'{body!r} echoed',
                               lambda c=client: any(e['body'] == body for e in c.echoes))
        return next(e for e in self.echoes if e['body'] == body)


def archived(message):
    """The body, sender and archive id of one MAM result message."""
    result = message['mam_result']
    inner = result['forwarded']['stanza']
    return {'id': result['id'], 'body': inner['body'], 'from': str(inner['from']),
            'archive': str(message['from'])}


async def page_through(client, page, reverse=False, total=None):
    found = []
    kwargs = {'jid': slixmpp.JID(ROOM), 'rsm': {'max': page}, 'reverse': reverse}
    if total is not None:
        kwargs['total'] = total
    async for message in client.plugin['xep_0313'].iterate(**kwargs):
        found.append(archived(message))
    return found


async def one_page(client, after, page):
    iq = await client.plugin['xep_0313'].retrieve(
        jid=slixmpp.JID(ROOM), rsm={'max': page, 'after': after}, timeout=STEP_TIMEOUT)
    return [archived(message) for message in iq['mam']['results']]


async def talk(args):
    alice = Client('alice@localhost/phone', args.alice_password, args.ca)
    bob = Client('bob@localhost/laptop', args.bob_password, args.ca)
    await alice.login(args.port)
    await bob.login(args.port)
    emit('slixmpp', version=slixmpp.__version__)
    await alice.join('Alice')
    # A persistent room: a temporary one ends, archive and all, with its last occupant.
    muc = alice.plugin['xep_0045']
    form = await muc.get_room_config(ROOM, timeout=STEP_TIMEOUT)
    form.get_fields()['muc#roomconfig_persistentroom']['value'] = True
    await muc.set_room_config(ROOM, form, timeout=STEP_TIMEOUT)
    await bob.join('Bob')
    said = []
    for n, body in enumerate(['one', 'two', 'three', 'four', 'five']):
        speaker, listener = (alice, bob) if n % 2 == 0 else (bob, alice)
        said.append(await speaker.say(body, others=(listener,)))
    emit('said', messages=said)
    everything = await asyncio.wait_for(page_through(bob, 2), STEP_TIMEOUT)
    emit('archive', messages=everything)
    emit('after_second', messages=await one_page(bob, said[1]['stanza_id'], 2))
    last = await asyncio.wait_for(page_through(bob, 2, reverse=True, total=2), STEP_TIMEOUT)
    emit('last_page', messages=last)
    for client in (alice, bob):
        client.disconnect()


async def again(args):
    alice = Client('alice@localhost/tablet', args.alice_password, args.ca)
    carol = Client('carol@localhost/desk', args.carol_password, args.ca)
    await alice.login(args.port)
    await carol.login(args.port)
    emit('slixmpp', version=slixmpp.__version__)
    await alice.join('Alice')
    await alice.say('six')
    everything = await asyncio.wait_for(page_through(alice, 2), STEP_TIMEOUT)
    emit('archive', messages=everything)
    emit('after_fifth', messages=await one_page(alice, args.after, 10))
    passer_by = await asyncio.wait_for(page_through(carol, 10), STEP_TIMEOUT)
    emit('passer_by', messages=passer_by)
    for client in (alice, carol):
        client.disconnect()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--ca', required=True)
    parser.add_argument('--phase', choices=['talk', 'again'], required=True)
    parser.add_argument('--alice-password', required=True)
    parser.add_argument('--bob-password', required=True)
    parser.add_argument('--carol-password', required=True)
    parser.add_argument('--after')
    args = parser.parse_args()
    scenario = talk if args.phase == 'talk' else again
    try:
        asyncio.run(asyncio.wait_for(scenario(args), 80))
    except Exception as error:  # Reported as an event: the Rust test shows it.
        emit('error', error=f'{type(error).__name__}: {error}')
        sys.exit(1)
    emit('done')


if __name__ == '__main__':
    main()
