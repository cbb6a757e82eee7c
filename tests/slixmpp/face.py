"""The bot's face as a contact's slixmpp sees it: presence, vCard, PEP avatar and nickname.

Driven by tests/bot_face.rs with Debian's slixmpp (/usr/bin/python3) and the current release
from PyPI (a virtual environment), against the bot on the bundled server and on Prosody. The
contact (alice) logs in with slixmpp's plugins for vCards (XEP-0054), vCard-based avatars
(XEP-0153), PEP avatars (XEP-0084), nicknames (XEP-0172) and entity capabilities (XEP-0115),
subscribes to the bot's presence and waits for it, then:

- `presence`: what the bot's available presence says: the XEP-0153 photo hash (also as
  slixmpp's `vcard_avatar_update` event sees it) and the XEP-0115 caps;
- `caps`: the bot's disco#info on the caps node, and the verification string slixmpp's own
  XEP-0115 plugin computes from it;
- `vcard`: the bot's vCard as the server gives it (name, nickname, description, photo);
- `metadata`, `avatar`: the PEP avatar metadata, and the data item the metadata names;
- `nick`: the PEP nickname.

It prints one JSON object per line with an "event" key, the last {"event": "done"}; a step that
cannot finish prints {"event": "error", ...} and exits 1. Every wait has a deadline.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import sys

import slixmpp
from steps import STEP_TIMEOUT, Steps

CAPS = 'http://jabber.org/protocol/caps'
NICK = 'http://jabber.org/protocol/nick'
METADATA = 'urn:xmpp:avatar:metadata'
DATA = 'urn:xmpp:avatar:data'
VCARD = 'vcard-temp'


def emit(event, **fields):
    print(json.dumps({'event': event, **fields}, sort_keys=True), flush=True)


class Client(Steps, slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca_file, bot):
        super().__init__(jid, password)
        self.ca_certs = ca_file
        self.plugin['feature_mechanisms'].use_mech = 'PLAIN'
        for plugin in ('xep_0030', 'xep_0054', 'xep_0060', 'xep_0084', 'xep_0115', 'xep_0153',
                       'xep_0172'):
            self.register_plugin(plugin)
        self.bot = bot
        self.presences = []
        self.avatar_updates = []
        self.watch_steps()
        self.add_event_handler('presence_available', self._presence)
        self.add_event_handler('vcard_avatar_update', self._avatar_update)

    def _presence(self, presence):
        if presence['from'].bare != self.bot:
            return
        photo = presence.xml.find('{vcard-temp:x:update}x/{vcard-temp:x:update}photo')
        caps = presence.xml.find(f'{{{CAPS}}}c')
        self.presences.append({
            'from': str(presence['from']),
            'photo': None if photo is None else (photo.text or ''),
            'caps': None if caps is None else dict(caps.attrib),
        })
        self.changed.set()

    def _avatar_update(self, presence):
        if presence['from'].bare != self.bot:
            return
        self.avatar_updates.append(presence['vcard_temp_update']['photo'])
        self.changed.set()

    async def pep_items(self, node):
        """The payloads of the bot's PEP `node` (XEP-0060 §6.5), as (id, element)."""
        iq = await self.plugin['xep_0060'].get_items(self.bot, node, timeout=STEP_TIMEOUT)
        items = iq.xml.findall(
            '{http://jabber.org/protocol/pubsub}pubsub/{http://jabber.org/protocol/pubsub}items/'
            '{http://jabber.org/protocol/pubsub}item')
        return [(item.get('id'), next(iter(item), None)) for item in items]


def text(element, path):
    found = element.find(path)
    return None if found is None else (found.text or '')


async def face(args):
    alice = Client(f'{args.user}@localhost/face', args.password, args.ca, args.bot)
    await alice.login(args.port)
    alice.send_presence()
    alice.send_presence_subscription(pto=args.bot)
    await alice.until('the bot\'s presence with a photo hash', lambda: any(
        p['photo'] for p in alice.presences))
    seen = next(p for p in alice.presences if p['photo'])
    await alice.until('slixmpp\'s vcard_avatar_update', lambda: alice.avatar_updates)
    emit('presence', avatar_updates=alice.avatar_updates, **seen)

    # XEP-0115 §6.2: the disco#info under NODE#VER, and slixmpp's own hash of it (§5.1).
    caps = seen['caps'] or {}
    if caps.get('node') and caps.get('ver'):
        node = f"{caps['node']}#{caps['ver']}"
        info = await alice.plugin['xep_0030'].get_info(jid=seen['from'], node=node,
                                                       timeout=STEP_TIMEOUT)
        verstring = alice.plugin['xep_0115'].generate_verstring(info['disco_info'], 'sha-1')
        emit('caps', ver=caps['ver'], computed=verstring,
             identities=[list(i) for i in info['disco_info']['identities']],
             features=sorted(info['disco_info']['features']))

    iq = await alice.plugin['xep_0054'].get_vcard(args.bot, cached=False, timeout=STEP_TIMEOUT)
    card = iq.xml.find(f'{{{VCARD}}}vCard')
    binval = text(card, f'{{{VCARD}}}PHOTO/{{{VCARD}}}BINVAL') or ''
    photo = base64.b64decode(''.join(binval.split())) if binval else b''
    emit('vcard', fn=text(card, f'{{{VCARD}}}FN'), nickname=text(card, f'{{{VCARD}}}NICKNAME'),
         desc=text(card, f'{{{VCARD}}}DESC'), note=text(card, f'{{{VCARD}}}NOTE'),
         photo_type=text(card, f'{{{VCARD}}}PHOTO/{{{VCARD}}}TYPE'), photo_bytes=len(photo),
         photo_sha1=hashlib.sha1(photo).hexdigest() if photo else None)

    metadata = []
    for item_id, payload in await alice.pep_items(METADATA):
        for info in ([] if payload is None else payload.findall(f'{{{METADATA}}}info')):
            metadata.append({'item': item_id, **dict(info.attrib)})
    emit('metadata', items=metadata)
    for info in metadata:
        iq = await alice.plugin['xep_0084'].retrieve_avatar(args.bot, info['id'],
                                                            timeout=STEP_TIMEOUT)
        items = iq.xml.findall(f'.//{{{DATA}}}data')
        image = base64.b64decode(''.join((items[0].text or '').split())) if items else b''
        emit('avatar', id=info['id'], data_items=len(items), bytes=len(image),
             sha1=hashlib.sha1(image).hexdigest() if image else None)

    nicks = [text(payload, '.') for _, payload in await alice.pep_items(NICK)
             if payload is not None and payload.tag == f'{{{NICK}}}nick']
    emit('nick', nicks=nicks)
    alice.disconnect()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--ca', required=True)
    parser.add_argument('--bot', required=True, help='the bot\'s bare JID')
    parser.add_argument('--user', required=True)
    parser.add_argument('--password', required=True)
    args = parser.parse_args()
    try:
        asyncio.run(asyncio.wait_for(face(args), 60))
    except Exception as error:  # noqa: BLE001 - reported to the Rust test, which shows it
        emit('error', error=repr(error), slixmpp=slixmpp.__version__)
        sys.exit(1)
    emit('done', slixmpp=slixmpp.__version__)


if __name__ == '__main__':
    main()
