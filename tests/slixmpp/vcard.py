"""slixmpp with its vCard plugins (XEP-0054 vcard-temp, XEP-0153 vCard-based avatars) against
the bundled server.

Driven by tests/vcard.rs with Debian's slixmpp (/usr/bin/python3) and with the current release
from PyPI (a virtual environment); it runs under either. Two commands:

- set: alice and bob log in with both plugins and become contacts; alice stores a vCard with
  her name, then sets the image in --avatar as her photo with the XEP-0153 plugin. bob waits
  for alice's presence to carry the photo's hash (slixmpp's "vcard_avatar_update" event), then
  reads alice's vCard, and her PEP avatar (the server published the vCard photo there,
  XEP-0398 §3.2).
- pep: alice and bob become contacts; alice publishes the image in --avatar as her PEP avatar
  (XEP-0084: data, then metadata), and never touches her vCard; bob waits for her presence to
  carry the image's hash (the server made it her vCard photo, XEP-0398 §3.1) and reads her
  vCard.
- read: (after a restart of the server) alice logs in WITHOUT the XEP-0153 plugin, so her
  presence says nothing about a photo; bob logs in with it, waits for alice's presence with the
  hash the server put in, and reads her vCard.

It prints one JSON object per line with an "event" key, the last {"event": "done"}; a step that
cannot finish prints {"event": "error", ...} and exits 1. Every wait is for an event with a
deadline.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import sys

import slixmpp
from steps import STEP_TIMEOUT, Steps



def emit(event, **fields):
    """One observation for the Rust test."""
    print(json.dumps({'event': event, **fields}, sort_keys=True), flush=True)


class Client(Steps, slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca_file, avatars):
        super().__init__(jid, password)
        self.ca_certs = ca_file
        self.plugin['feature_mechanisms'].use_mech = 'PLAIN'
        self.register_plugin('xep_0054')
        self.register_plugin('xep_0084')
        if avatars:
            self.register_plugin('xep_0153')
        self.photos = []
        self.avatar_updates = []
        self.available = set()
        self.watch_steps()
        self.add_event_handler('presence_available', self._presence)
        self.add_event_handler('vcard_avatar_update', self._avatar_update)

    def _presence(self, presence):
        sender = str(presence['from'])
        self.available.add(sender)
        # What the presence says about the photo, read from the XML: None for no
        # vcard-temp:x:update or no <photo/> in it, '' for an empty one.
        photo = presence.xml.find('{vcard-temp:x:update}x/{vcard-temp:x:update}photo')
        self.photos.append({'from': sender,
                            'photo': None if photo is None else (photo.text or '')})
        self.changed.set()

    def _avatar_update(self, presence):
        self.avatar_updates.append({'from': str(presence['from']),
                                    'photo': presence['vcard_temp_update']['photo']})
        self.changed.set()


async def read_vcard(reader, owner):
    """`owner`'s vCard as `reader` gets it from the server."""
    iq = await reader.plugin['xep_0054'].get_vcard(owner, cached=False, timeout=STEP_TIMEOUT)
    card = iq['vcard_temp']
    image = card['PHOTO']['BINVAL']
    emit('vcard', reader=str(reader.boundjid.bare), owner=owner, fn=card['FN'],
         photo_type=card['PHOTO']['TYPE'], photo_bytes=len(image),
         photo_sha1=hashlib.sha1(image).hexdigest() if image else None)


async def read_pep_avatar(reader, owner, digest):
    """`owner`'s PEP avatar data item `digest` as `reader` gets it (XEP-0084 §4.2)."""
    iq = await reader.plugin['xep_0084'].retrieve_avatar(owner, digest, timeout=STEP_TIMEOUT)
    data = iq.xml.find('.//{urn:xmpp:avatar:data}data')
    image = base64.b64decode(data.text or '') if data is not None else b''
    emit('pep_avatar', reader=str(reader.boundjid.bare), owner=owner, id=digest,
         photo_bytes=len(image), photo_sha1=hashlib.sha1(image).hexdigest() if image else None)


async def contacts(args, alice_avatars=True):
    """alice and bob logged in, each subscribed to the other, both available."""
    alice = Client('alice@localhost/laptop', args.alice_password, args.ca, avatars=alice_avatars)
    bob = Client('bob@localhost/phone', args.bob_password, args.ca, avatars=True)
    await alice.login(args.port)
    await bob.login(args.port)
    alice.send_presence()
    bob.send_presence()
    bob.send_presence_subscription(pto='alice@localhost')
    await bob.until('alice online', lambda: 'alice@localhost/laptop' in bob.available)
    return alice, bob


async def pep_command(args, avatar):
    alice, bob = await contacts(args, alice_avatars=False)
    digest = hashlib.sha1(avatar).hexdigest()
    await alice.plugin['xep_0084'].publish_avatar(avatar, timeout=STEP_TIMEOUT)
    await alice.plugin['xep_0084'].publish_avatar_metadata(
        items=[{'id': digest, 'type': 'image/png', 'bytes': len(avatar)}], timeout=STEP_TIMEOUT)
    await bob.until('the PEP avatar\'s hash in alice\'s presence', lambda: any(
        p['from'] == 'alice@localhost/laptop' and p['photo'] == digest for p in bob.photos))
    emit('seen', who='bob', photos=[p['photo'] for p in bob.photos
                                    if p['from'] == 'alice@localhost/laptop'])
    await read_vcard(bob, 'alice@localhost')
    alice.disconnect()
    bob.disconnect()


async def set_command(args, avatar):
    alice = Client('alice@localhost/laptop', args.alice_password, args.ca, avatars=True)
    bob = Client('bob@localhost/phone', args.bob_password, args.ca, avatars=True)
    await alice.login(args.port)
    await bob.login(args.port)
    alice.send_presence()
    bob.send_presence()
    # Each approves the other's request (slixmpp's default) and subscribes back.
    bob.send_presence_subscription(pto='alice@localhost')
    await bob.until('alice online', lambda: 'alice@localhost/laptop' in bob.available)

    card = alice.plugin['xep_0054'].make_vcard()
    card['FN'] = 'Alice Liddell'
    await alice.plugin['xep_0054'].publish_vcard(card, timeout=STEP_TIMEOUT)
    await alice.plugin['xep_0153'].set_avatar(avatar=avatar, mtype='image/png',
                                              timeout=STEP_TIMEOUT)
    digest = hashlib.sha1(avatar).hexdigest()
    await bob.until('the avatar hash in alice\'s presence', lambda: any(
        u['from'] == 'alice@localhost/laptop' and u['photo'] == digest
        for u in bob.avatar_updates))
    emit('seen', who='bob', photos=[p['photo'] for p in bob.photos
                                    if p['from'] == 'alice@localhost/laptop'])
    await read_vcard(bob, 'alice@localhost')
    await read_vcard(alice, 'alice@localhost')
    await read_pep_avatar(bob, 'alice@localhost', digest)
    alice.disconnect()
    bob.disconnect()


async def read_command(args, avatar):
    digest = hashlib.sha1(avatar).hexdigest()
    bob = Client('bob@localhost/phone', args.bob_password, args.ca, avatars=True)
    alice = Client('alice@localhost/laptop', args.alice_password, args.ca, avatars=False)
    await bob.login(args.port)
    bob.send_presence()
    await alice.login(args.port)
    alice.send_presence()
    await bob.until('alice online with her avatar hash', lambda: any(
        p['from'] == 'alice@localhost/laptop' and p['photo'] == digest for p in bob.photos))
    emit('seen', who='bob', photos=[p['photo'] for p in bob.photos
                                    if p['from'] == 'alice@localhost/laptop'])
    await read_vcard(bob, 'alice@localhost')
    alice.disconnect()
    bob.disconnect()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('command', choices=['set', 'pep', 'read'])
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--ca', required=True)
    parser.add_argument('--alice-password', required=True)
    parser.add_argument('--bob-password', required=True)
    parser.add_argument('--avatar', required=True, help='the image file alice sets')
    args = parser.parse_args()
    with open(args.avatar, 'rb') as image:
        avatar = image.read()
    command = {'set': set_command, 'pep': pep_command, 'read': read_command}[args.command]
    try:
        asyncio.run(asyncio.wait_for(command(args, avatar), 60))
    except Exception as error:  # reported to the Rust test, which shows it
        emit('error', error=repr(error), slixmpp=slixmpp.__version__)
        sys.exit(1)
    emit('done', slixmpp=slixmpp.__version__)


if __name__ == '__main__':
    main()
