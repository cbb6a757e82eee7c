"""slixmpp with its HTTP File Upload plugin (XEP-0363) and out-of-band data (XEP-0066) against
the bundled server.

Driven by tests/upload.rs with Debian's slixmpp (/usr/bin/python3, with python3-aiohttp) and
with the current release from PyPI (a virtual environment). The server's certificate is
trusted through SSL_CERT_FILE, which the test sets. Commands:

- share: alice and bob log in; alice uploads the file --file (a photo) with the plugin, found
  by disco on the server, and sends its URL to bob as the body of a message with an OOB
  element, as Conversations does; bob downloads the URL of the OOB element and reports the
  bytes' SHA-256, length and the type the server served.
- refusals: alice asks for a slot larger than the maximum and reports the error and the
  maximum the server named; then asks for slots of --slot-size until the quota refuses one,
  and reports how many she got and the error.

It prints one JSON object per line with an "event" key, the last {"event": "done"}; a step that
cannot finish prints {"event": "error", ...} and exits 1.
"""

import argparse
import asyncio
import hashlib
import json
import sys

import aiohttp
import slixmpp
from slixmpp.exceptions import IqError
from steps import STEP_TIMEOUT, Steps


def emit(event, **fields):
    print(json.dumps({'event': event, **fields}, sort_keys=True), flush=True)


class Client(Steps, slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca_file):
        super().__init__(jid, password)
        self.ca_certs = ca_file
        self.plugin['feature_mechanisms'].use_mech = 'PLAIN'
        self.register_plugin('xep_0030')
        self.register_plugin('xep_0066')
        self.register_plugin('xep_0363')
        self.messages = []
        self.watch_steps()
        self.add_event_handler('message', self._message)

    def _message(self, message):
        self.messages.append(message)
        self.changed.set()


async def upload_service(client):
    """The upload service's JID, found by disco as the plugin does (XEP-0363 §2): the server's
    items, the one whose disco#info says store/file and urn:xmpp:http:upload:0. The plugin's
    own search is tried first; Debian's 1.8.3 fails in it on Python 3.11 (its xep_0030 passes
    coroutines to asyncio.wait), so the same walk is done here by hand then."""
    plugin = client.plugin['xep_0363']
    try:
        info = await plugin.find_upload_service('localhost', timeout=STEP_TIMEOUT)
        found = str(info['from']) if info is not None else None
        how = 'plugin'
    except TypeError:
        found = None
        how = 'by hand'
        items = await client.plugin['xep_0030'].get_items(jid='localhost', timeout=STEP_TIMEOUT)
        for item in items['disco_items']['items']:
            info = await client.plugin['xep_0030'].get_info(jid=item[0], timeout=STEP_TIMEOUT)
            identities = [(i[0], i[1]) for i in info['disco_info']['identities']]
            if ('store', 'file') in identities and \
                    'urn:xmpp:http:upload:0' in info['disco_info']['features']:
                found = str(item[0])
    emit('service', jid=found, how=how)
    if found is None:
        raise RuntimeError('no upload service found')
    plugin.upload_service = found
    return found


async def share(args):
    alice = Client('alice@localhost/phone', args.alice_password, args.ca)
    bob = Client('bob@localhost/laptop', args.bob_password, args.ca)
    await alice.login(args.port)
    await bob.login(args.port)
    alice.send_presence()
    bob.send_presence()
    await upload_service(alice)
    with open(args.file, 'rb') as photo:
        url = await alice.plugin['xep_0363'].upload_file(
            args.file, content_type='image/jpeg', input_file=photo, timeout=STEP_TIMEOUT)
    emit('uploaded', url=url)
    message = alice.make_message(mto='bob@localhost', mbody=url, mtype='chat')
    message['oob']['url'] = url
    message.send()
    await bob.until('the photo message', lambda: bob.messages)
    got = bob.messages[0]
    oob = got['oob']['url']
    async with aiohttp.ClientSession() as session:
        async with session.get(oob) as response:
            data = await response.read()
            emit('downloaded', status=response.status, body=got['body'], oob=oob,
                 sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                 content_type=response.headers.get('Content-Type'),
                 nosniff=response.headers.get('X-Content-Type-Options'))
    alice.disconnect()
    bob.disconnect()


async def refusals(args):
    alice = Client('alice@localhost/phone', args.alice_password, args.ca)
    await alice.login(args.port)
    upload = alice.plugin['xep_0363']
    jid = await upload_service(alice)
    try:
        await upload.request_slot(jid, 'huge.bin', args.too_large, 'application/octet-stream',
                                  timeout=STEP_TIMEOUT)
        emit('too_large', refused=False)
    except IqError as error:
        max_size = error.iq.xml.find(
            './/{urn:xmpp:http:upload:0}file-too-large/{urn:xmpp:http:upload:0}max-file-size')
        emit('too_large', refused=True, condition=error.condition,
             max_file_size=None if max_size is None else max_size.text)
    granted = 0
    while granted < 100:
        try:
            await upload.request_slot(jid, f'part{granted}.bin', args.slot_size,
                                      'application/octet-stream', timeout=STEP_TIMEOUT)
            granted += 1
        except IqError as error:
            emit('quota', granted=granted, condition=error.condition, text=error.text)
            break
    alice.disconnect()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('command', choices=['share', 'refusals'])
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--ca', required=True)
    parser.add_argument('--alice-password', required=True)
    parser.add_argument('--bob-password', required=True)
    parser.add_argument('--file')
    parser.add_argument('--too-large', type=int, default=0)
    parser.add_argument('--slot-size', type=int, default=0)
    args = parser.parse_args()
    try:
        if args.command == 'share':
            await asyncio.wait_for(share(args), 60)
        else:
            await asyncio.wait_for(refusals(args), 60)
    except Exception as error:  # reported to the Rust test, which fails with it
        emit('error', error=repr(error))
        sys.exit(1)
    emit('done')


if __name__ == '__main__':
    asyncio.run(main())
