"""slixmpp reads the bot's sensors through XEP-0323 (Internet of Things - Sensor Data), with raw
stanzas (slixmpp has no plugin for this XEP), and asks the same through text commands.

Driven by tests/sensordata.rs with Debian's slixmpp (/usr/bin/python3) and with the current
release from PyPI (a virtual environment); it runs under either. It logs in as JID/resource
'readout' and:

1. sends each --ask TEXT to --peer as a chat message and reports the reply (`chat`); the
   first reply also tells the bot's full JID, which the read-outs go to (an IQ to a bare JID
   is the server's to answer, RFC 6120 10.5.3);
2. asks disco#info of the bot and reports whether it announces urn:xmpp:iot:sensordata
   (`disco`, XEP-0323 section 4);
3. sends each --req XML (a <req/>) in an IQ get and reports the answer (`readout`): the IQ's
   type, the accepted seqnr or the error condition, then every <fields/> or <failure/>
   message with that seqnr until one says done='true', each with its values.

It prints one JSON event per line, then {"event": "done"}; on failure {"event": "error", ...}
and exit 1. Every wait has a deadline.
"""

import argparse
import asyncio
import inspect
import json
import sys
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

STEP_TIMEOUT = 10.0
NS = 'urn:xmpp:iot:sensordata'


def emit(**event):
    print(json.dumps(event), flush=True)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca_file):
        super().__init__(jid, password)
        self.ca_certs = ca_file
        self.plugin['feature_mechanisms'].use_mech = 'PLAIN'
        self.register_plugin('xep_0030')
        self.started = None
        self.replies = asyncio.Queue()
        self.readouts = asyncio.Queue()
        self.add_event_handler('session_start', self._started)
        self.add_event_handler('message', self._message)
        for kind in ('fields', 'failure'):
            self.register_handler(Callback(
                f'sensordata {kind}',
                MatchXPath(f'{{{self.default_ns}}}message/{{{NS}}}{kind}'),
                self._readout))

    def _started(self, _event):
        if self.started and not self.started.done():
            self.started.set_result(None)

    def _message(self, msg):
        delayed = msg.xml.find('{urn:xmpp:delay}delay') is not None
        if msg['type'] in ('chat', 'normal') and msg['body'] and not delayed:
            self.replies.put_nowait(msg)

    def _readout(self, msg):
        self.readouts.put_nowait(msg)


def flag(element, name):
    return element.get(name) in ('true', '1')


def message_report(msg):
    """What one read-out message holds."""
    size = len(str(msg).encode('utf-8'))
    fields = msg.xml.find(f'{{{NS}}}fields')
    if fields is not None:
        nodes = []
        for node in fields.findall(f'{{{NS}}}node'):
            stamps = []
            for stamp in node.findall(f'{{{NS}}}timestamp'):
                stamps.append({
                    'value': stamp.get('value'),
                    'numeric': [{
                        'name': n.get('name'),
                        'value': n.get('value'),
                        'unit': n.get('unit'),
                        'momentary': flag(n, 'momentary'),
                        'historical': flag(n, 'historicalOther'),
                    } for n in stamp.findall(f'{{{NS}}}numeric')],
                })
            nodes.append({'id': node.get('nodeId'), 'timestamps': stamps})
        return {'kind': 'fields', 'seqnr': fields.get('seqnr'), 'done': flag(fields, 'done'),
                'nodes': nodes, 'bytes': size}
    failure = msg.xml.find(f'{{{NS}}}failure')
    return {'kind': 'failure', 'seqnr': failure.get('seqnr'), 'done': flag(failure, 'done'),
            'errors': [e.text or '' for e in failure.findall(f'{{{NS}}}error')],
            'bytes': size}


async def readout(client, to, req_xml):
    req = ET.fromstring(req_xml)
    seqnr = req.get('seqnr')
    iq = client.make_iq_get(ito=to)
    iq.append(req)
    report = {'event': 'readout', 'req': req_xml}
    try:
        result = await iq.send(timeout=STEP_TIMEOUT)
    except IqError as error:
        report.update(type='error', condition=error.iq['error']['condition'],
                      text=error.iq['error']['text'])
        emit(**report)
        return
    accepted = result.xml.find(f'{{{NS}}}accepted')
    report.update(type=result['type'],
                  accepted=None if accepted is None else accepted.get('seqnr'))
    messages = []
    while not messages or not messages[-1]['done']:
        msg = await asyncio.wait_for(client.readouts.get(), STEP_TIMEOUT)
        got = message_report(msg)
        if got['seqnr'] == seqnr:
            messages.append(got)
    report['messages'] = messages
    emit(**report)


async def scenario(args):
    client = Client(f'{args.jid}/readout', args.password, args.ca)
    client.started = asyncio.get_running_loop().create_future()
    if 'address' in inspect.signature(client.connect).parameters:
        client.connect(('127.0.0.1', args.port))  # slixmpp 1.8
    else:
        client.connect('127.0.0.1', args.port)
    await asyncio.wait_for(client.started, STEP_TIMEOUT)
    client.send_presence()
    emit(event='slixmpp', version=slixmpp.__version__)

    bot = None
    for text in args.ask:
        client.send_message(mto=args.peer, mbody=text, mtype='chat')
        reply = await asyncio.wait_for(client.replies.get(), STEP_TIMEOUT)
        bot = reply['from']
        emit(event='chat', ask=text, body=reply['body'], bot=str(bot))
    if bot is None:
        raise RuntimeError('give at least one --ask: its reply tells the bot\'s full JID')

    info = await client.plugin['xep_0030'].get_info(jid=bot, timeout=STEP_TIMEOUT)
    emit(event='disco', sensordata=NS in info['disco_info']['features'])

    for req in args.req:
        await readout(client, bot, req)

    client.disconnect()
    emit(event='done')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--ca', required=True)
    parser.add_argument('--jid', required=True)
    parser.add_argument('--password', required=True)
    parser.add_argument('--peer', required=True)
    parser.add_argument('--ask', action='append', default=[])
    parser.add_argument('--req', action='append', default=[])
    args = parser.parse_args()
    try:
        asyncio.run(asyncio.wait_for(scenario(args), 90))
    except Exception as error:  # Reported as an event: the Rust test shows it.
        emit(event='error', error=f'{type(error).__name__}: {error}')
        sys.exit(1)


if __name__ == '__main__':
    main()
