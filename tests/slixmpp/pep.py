"""slixmpp and PEP (XEP-0163) on the bundled server: nicknames (XEP-0172), avatars (XEP-0084)
and an OMEMO device list, with the notifications that entity capabilities (XEP-0115) ask for.

Driven by tests/pep.rs with Debian's slixmpp (/usr/bin/python3) and with the current release
from PyPI (a virtual environment); it runs under either. alice and bob are contacts (each
subscribed to the other's presence), carol is a stranger to both. Every client loads the
plugins of XEP-0030, 0115, 0060, 0163, 0172 and 0084, so its caps say
`http://jabber.org/protocol/nick+notify` and `urn:xmpp:avatar:metadata+notify`.

1. alice publishes her nickname: bob is notified, carol is not (a ping round trip after
   bob's notification shows nothing is on its way to her), and carol may not read it;
2. alice publishes an avatar (data, then metadata): bob is notified of the metadata and
   fetches the data by its id;
3. alice publishes an OMEMO device list on the open access model: carol reads it;
4. bob logs out, alice changes her nickname, bob logs in again: the new nickname comes to him
   without asking (the last published item, XEP-0163 §4.3.2).

It prints JSON lines of what it saw and ends with {"event": "done", ...}, or prints
{"event": "error", ...} and exits 1. Every wait is for an event with a deadline.

PLAIN over TLS: which SASL mechanisms each slixmpp version manages is another test's business.
"""

import argparse
import asyncio
import json
import sys
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError
from steps import STEP_TIMEOUT, Steps

DOMAIN = 'localhost'
NICK = 'http://jabber.org/protocol/nick'
AVATAR_DATA = 'urn:xmpp:avatar:data'
AVATAR_METADATA = 'urn:xmpp:avatar:metadata'
DEVICELIST = 'eu.siacs.conversations.axolotl.devicelist'
# A 1×1 PNG.
AVATAR = bytes.fromhex(
    '89504e470d0a1a0a0000000d4948445200000001000000010806000000'
    '1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082')


def emit(event, **fields):
    print(json.dumps({'event': event, **fields}, sort_keys=True), flush=True)


class Client(Steps, slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca_file):
        super().__init__(jid, password)
        self.ca_certs = ca_file
        self.plugin['feature_mechanisms'].use_mech = 'PLAIN'
        for plugin in ('xep_0030', 'xep_0004', 'xep_0115', 'xep_0060', 'xep_0163',
                       'xep_0172', 'xep_0084', 'xep_0199'):
            self.register_plugin(plugin)
        self.events = []
        self.presences = []
        self.watch_steps()
        self.add_event_handler('pubsub_publish', self._published)
        self.add_event_handler('presence_available', self._presence)

    def _published(self, msg):
        items = msg['pubsub_event']['items']
        item = items['item']
        payload = item['payload']
        self.events.append({
            'from': str(msg['from']),
            'node': items['node'],
            'id': item['id'],
            'text': ''.join(payload.itertext()) if payload is not None else None,
            'attrs': [dict(child.attrib) for child in payload] if payload is not None else [],
        })
        self.changed.set()

    def _presence(self, presence):
        self.presences.append(str(presence['from']))
        self.changed.set()

    async def login(self, port):
        await super().login(port)
        # The caps of the first presence must already list the +notify features the plugins
        # registered at bind time (they update the caps in the background).
        await self.plugin['xep_0115'].update_caps(broadcast=False)
        self.send_presence()


    async def barrier(self):
        await self.plugin['xep_0199'].send_ping(DOMAIN, timeout=STEP_TIMEOUT)

    def seen(self, node):
        return [e for e in self.events if e['node'] == node]

    async def read(self, owner, node, ids=None):
        """The (id, text, attributes) of `owner`'s items of `node`, or the error."""
        try:
            iq = await self.plugin['xep_0060'].get_items(
                owner, node, item_ids=ids, timeout=STEP_TIMEOUT)
        except IqError as error:
            return {'error': error.iq['error']['condition'],
                    'pubsub': error.iq['error']['pubsub']['condition'] or None}
        items = []
        for item in iq['pubsub']['items']:
            payload = item['payload']
            items.append({'id': item['id'],
                          'text': ''.join(payload.itertext()) if payload is not None else None,
                          'attrs': [dict(c.attrib) for c in payload] if payload is not None else []})
        return {'items': items}


def open_options(client):
    form = client.plugin['xep_0004'].make_form(ftype='submit')
    form.add_field(var='FORM_TYPE', ftype='hidden',
                   value='http://jabber.org/protocol/pubsub#publish-options')
    form.add_field(var='pubsub#access_model', value='open')
    return form


async def scenario(args):
    password = {'alice': args.alice_password, 'bob': args.bob_password,
                'carol': args.carol_password}
    alice = Client('alice@localhost/laptop', password['alice'], args.ca)
    bob = Client('bob@localhost/phone', password['bob'], args.ca)
    carol = Client('carol@localhost/phone', password['carol'], args.ca)
    for client in (alice, bob, carol):
        await client.login(args.port)
    # slixmpp approves a request and subscribes back by default: they become contacts.
    bob.send_presence_subscription(pto='alice@localhost')
    await bob.until('alice online', lambda: 'alice@localhost/laptop' in bob.presences)
    await alice.until('bob online', lambda: 'bob@localhost/phone' in alice.presences)

    # 1. A nickname.
    await alice.plugin['xep_0172'].publish_nick('Alice Liddell', timeout=STEP_TIMEOUT)
    await bob.until('the nickname', lambda: any(
        e['text'] == 'Alice Liddell' for e in bob.seen(NICK)))
    await carol.barrier()
    emit('nick', bob=bob.seen(NICK), carol=carol.seen(NICK),
         carol_reads=await carol.read('alice@localhost', NICK),
         bob_reads=await bob.read('alice@localhost', NICK))

    # 2. An avatar: the data, then the metadata that points at it (XEP-0084 §4).
    avatar_id = alice.plugin['xep_0084'].generate_id(AVATAR)
    await alice.plugin['xep_0084'].publish_avatar(AVATAR, timeout=STEP_TIMEOUT)
    await alice.plugin['xep_0084'].publish_avatar_metadata(
        items=[{'id': avatar_id, 'type': 'image/png', 'bytes': len(AVATAR)}],
        timeout=STEP_TIMEOUT)
    await bob.until('the avatar metadata', lambda: bob.seen(AVATAR_METADATA))
    iq = await bob.plugin['xep_0084'].retrieve_avatar(
        'alice@localhost', avatar_id, timeout=STEP_TIMEOUT)
    data = iq['pubsub']['items']['item']['avatar_data']['value']
    emit('avatar', id=avatar_id, metadata=bob.seen(AVATAR_METADATA),
         data_matches=data == AVATAR, data_events=bob.seen(AVATAR_DATA))

    # 3. An OMEMO device list anyone may read.
    devices = ET.fromstring(
        "<list xmlns='eu.siacs.conversations.axolotl'><device id='31415'/></list>")
    await alice.plugin['xep_0060'].publish(
        None, DEVICELIST, id='current', payload=devices, options=open_options(alice),
        timeout=STEP_TIMEOUT)
    emit('devicelist', carol_reads=await carol.read('alice@localhost', DEVICELIST))

    # 4. The last item at login.
    bob.disconnect()
    await bob.disconnected
    await alice.plugin['xep_0172'].publish_nick('Alice the Second', timeout=STEP_TIMEOUT)
    bob = Client('bob@localhost/laptop', password['bob'], args.ca)
    await bob.login(args.port)
    await bob.until('the last nickname', lambda: any(
        e['text'] == 'Alice the Second' for e in bob.seen(NICK)))
    emit('last_item', bob=bob.seen(NICK))

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
    print(json.dumps(result, sort_keys=True), flush=True)


if __name__ == '__main__':
    main()
