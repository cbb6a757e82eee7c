"""slixmpp reads its user's message archive (XEP-0313, with RSM paging XEP-0059 and stanza ids
XEP-0359) on the bundled server, as a device that was not there when the chat happened.

Driven by tests/mam.rs with Debian's slixmpp (/usr/bin/python3) and with the current release
from PyPI (a virtual environment); it runs under either. It logs in as JID/RESOURCE and:

1. with --ask TEXT: sends TEXT to --peer and reports the reply, with the stanza id the server
   put on it (`reply`);
2. pages through the whole archive, --page messages at a time (`archive`);
3. pages through the messages with --peer only (`with_peer`);
4. reads the last page backward, from an empty <before/> (`last_page`, newest first, as
   slixmpp yields a reversed iteration).

It prints one JSON event per line, then {"event": "done"}; on failure {"event": "error", ...}
and exit 1. Every wait has a deadline.

PLAIN over TLS: which SASL mechanisms each slixmpp version manages is another test's business.
"""

import argparse
import asyncio
import inspect
import json
import sys

import slixmpp

STEP_TIMEOUT = 10.0


def emit(**event):
    print(json.dumps(event), flush=True)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca_file):
        super().__init__(jid, password)
        self.ca_certs = ca_file
        self.plugin['feature_mechanisms'].use_mech = 'PLAIN'
        for plugin in ('xep_0030', 'xep_0059', 'xep_0297', 'xep_0313', 'xep_0359'):
            self.register_plugin(plugin)
        self.started = None
        self.replies = asyncio.Queue()
        self.add_event_handler('session_start', self._started)
        self.add_event_handler('message', self._message)

    def _started(self, _event):
        if self.started and not self.started.done():
            self.started.set_result(None)

    def _message(self, msg):
        # Messages kept offline for this account (with a <delay/>, XEP-0203) are older replies,
        # not the answer to this run's question.
        delayed = msg.xml.find('{urn:xmpp:delay}delay') is not None
        if msg['type'] in ('chat', 'normal') and msg['body'] and not delayed:
            self.replies.put_nowait(msg)


def archived(message):
    """The body, sender and archive id of one MAM result message."""
    result = message['mam_result']
    inner = result['forwarded']['stanza']
    return {
        'id': result['id'],
        'body': inner['body'],
        'from': str(inner['from'].bare),
        'stamp': str(result['forwarded']['delay']['stamp']),
    }


async def page_through(client, archive, page, with_jid=None, reverse=False, total=None):
    found = []
    kwargs = {'jid': archive, 'rsm': {'max': page}, 'reverse': reverse}
    if with_jid:
        kwargs['with_jid'] = slixmpp.JID(with_jid)
    if total is not None:
        kwargs['total'] = total
    iterator = client.plugin['xep_0313'].iterate(**kwargs)
    async for message in iterator:
        found.append(archived(message))
    return found


async def scenario(args):
    client = Client(f'{args.jid}/{args.resource}', args.password, args.ca)
    client.started = asyncio.get_running_loop().create_future()
    if 'address' in inspect.signature(client.connect).parameters:
        client.connect(('127.0.0.1', args.port))  # slixmpp 1.8
    else:
        client.connect('127.0.0.1', args.port)
    await asyncio.wait_for(client.started, STEP_TIMEOUT)
    client.send_presence()
    emit(event='slixmpp', version=slixmpp.__version__)
    archive = slixmpp.JID(args.jid)

    if args.ask:
        client.send_message(mto=args.peer, mbody=args.ask, mtype='chat')
        reply = await asyncio.wait_for(client.replies.get(), STEP_TIMEOUT)
        emit(event='reply', body=reply['body'],
             stanza_id=reply['stanza_id']['id'], by=str(reply['stanza_id']['by']))

    everything = await asyncio.wait_for(page_through(client, archive, args.page), STEP_TIMEOUT)
    emit(event='archive', messages=everything)
    with_peer = await asyncio.wait_for(
        page_through(client, archive, args.page, with_jid=args.peer), STEP_TIMEOUT)
    emit(event='with_peer', messages=with_peer)
    last = await asyncio.wait_for(
        page_through(client, archive, args.page, reverse=True, total=args.page), STEP_TIMEOUT)
    emit(event='last_page', messages=last)

    client.disconnect()
    emit(event='done')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--ca', required=True)
    parser.add_argument('--jid', required=True)
    parser.add_argument('--password', required=True)
    parser.add_argument('--resource', required=True)
    parser.add_argument('--peer', required=True)
    parser.add_argument('--page', type=int, default=2)
    parser.add_argument('--ask')
    args = parser.parse_args()
    try:
        asyncio.run(asyncio.wait_for(scenario(args), 60))
    except Exception as error:  # Reported as an event: the Rust test shows it.
        emit(event='error', error=f'{type(error).__name__}: {error}')
        sys.exit(1)


if __name__ == '__main__':
    main()
