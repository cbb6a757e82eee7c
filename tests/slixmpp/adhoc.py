"""slixmpp's XEP-0050 and XEP-0004 plugins against the bot's ad-hoc commands.

Driven by tests/adhoc.rs with Debian's slixmpp (/usr/bin/python3) and the current release from
PyPI (a virtual environment), against the bot on the bundled server and on Prosody. Modes:

- `contact` (a contact on the bot's allow list): lists the commands on the commands node of the
  bot's full JID; runs "Stale sensors" (one step); "Read sensors" with a sensor chosen; the
  two-stage "Statistics" through next, prev, next and complete; "Set an alert" with a word for
  a number, then a number; cancels a session and tries to go on with it; uses a made-up
  session id.
- `stranger` (not on the allow list): the list is empty, and running a command is forbidden.
- `expired` (against a bot whose sessions expire at once): starts "Statistics" and goes on
  with it, twice (expired both times); a one-step command still completes.
- `hostile`: submits a form with `--fields` (empty) fields; opens a thousand sessions of
  "Statistics", then uses the first and the last.

It prints JSON lines of what it saw and ends with {"event": "done", ...}, or prints
{"event": "error", ...} and exits 1. Every wait has a deadline.
"""

import argparse
import asyncio
import json
import sys
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError
from steps import STEP_TIMEOUT, Steps

COMMANDS = 'http://jabber.org/protocol/commands'
DATA = 'jabber:x:data'


def emit(event, **fields):
    print(json.dumps({'event': event, **fields}, sort_keys=True), flush=True)


def answer(iq):
    """What a command answer says: status, session, actions, notes, form fields, table rows."""
    command = iq.xml.find(f'{{{COMMANDS}}}command')
    out = {
        'status': command.get('status'),
        'sessionid': command.get('sessionid'),
        'actions': [],
        'notes': [],
        'fields': {},
        'options': {},
        'rows': [],
    }
    actions = command.find(f'{{{COMMANDS}}}actions')
    if actions is not None:
        out['actions'] = [actions.get('execute')] + [a.tag.split('}')[1] for a in actions]
    for note in command.findall(f'{{{COMMANDS}}}note'):
        out['notes'].append([note.get('type'), note.text or ''])
    form = command.find(f'{{{DATA}}}x')
    if form is not None:
        for field in form.findall(f'{{{DATA}}}field'):
            var = field.get('var')
            out['fields'][var] = [v.text or '' for v in field.findall(f'{{{DATA}}}value')]
            options = [o.get('label') for o in field.findall(f'{{{DATA}}}option')]
            if options:
                out['options'][var] = options
            validate = field.find('{http://jabber.org/protocol/xdata-validate}validate')
            if validate is not None:
                out.setdefault('datatypes', {})[var] = validate.get('datatype')
        for item in form.findall(f'{{{DATA}}}item'):
            out['rows'].append({
                f.get('var'): (f.findtext(f'{{{DATA}}}value') or '')
                for f in item.findall(f'{{{DATA}}}field')})
    return out


def error(exc):
    """An IQ error's condition and the XEP-0050 specific condition, if any."""
    specific = [c.tag.split('}')[1] for c in exc.iq['error'].xml
                if c.tag.startswith(f'{{{COMMANDS}}}')]
    return {'condition': exc.iq['error']['condition'], 'specific': specific,
            'type': exc.iq['error']['type']}


class Client(Steps, slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca_file):
        super().__init__(jid, password)
        self.ca_certs = ca_file
        self.plugin['feature_mechanisms'].use_mech = 'PLAIN'
        for plugin in ('xep_0030', 'xep_0004', 'xep_0050'):
            self.register_plugin(plugin)
        self.watch_steps()

    def submit(self, fields):
        form = self.plugin['xep_0004'].make_form(ftype='submit')
        for var, value in fields.items():
            if isinstance(value, list):
                form.add_field(var=var, ftype='list-multi', value=value)
            else:
                form.add_field(var=var, value=value)
        return form

    async def command(self, bot, node, action='execute', sessionid=None, fields=None,
                      payload=None):
        if fields is not None:
            payload = self.submit(fields)
        iq = await self.plugin['xep_0050'].send_command(
            bot, node, action=action, sessionid=sessionid, payload=payload,
            timeout=STEP_TIMEOUT)
        return answer(iq)

    async def attempt(self, what, coroutine):
        try:
            emit(what, answer=await coroutine)
        except IqError as exc:
            emit(what, error=error(exc))

    async def list_commands(self, bot):
        items = await self.plugin['xep_0030'].get_items(jid=bot, node=COMMANDS, timeout=STEP_TIMEOUT)
        return [[jid, node, name] for jid, node, name in items['disco_items']['items']]

    async def contact(self, bot):
        emit('list', items=await self.list_commands(bot))
        info = await self.plugin['xep_0030'].get_info(jid=bot, node='statistics', timeout=STEP_TIMEOUT)
        emit('info', identities=[list(i) for i in info['disco_info']['identities']],
             features=list(info['disco_info']['features']))
        emit('stale', answer=await self.command(bot, 'stale-sensors'))

        first = await self.command(bot, 'read-sensors')
        emit('read_form', answer=first)
        emit('read', answer=await self.command(
            bot, 'read-sensors', action='complete', sessionid=first['sessionid'],
            fields={'sensors': ['temp']}))

        stats = await self.command(bot, 'statistics')
        sid = stats['sessionid']
        steps = {'first': stats}
        steps['next'] = await self.command(bot, 'statistics', action='next', sessionid=sid,
                                           fields={'sensor': 'temp'})
        steps['prev'] = await self.command(bot, 'statistics', action='prev', sessionid=sid)
        steps['next_again'] = await self.command(bot, 'statistics', action='next',
                                                 sessionid=sid, fields={'sensor': 'temp'})
        steps['complete'] = await self.command(bot, 'statistics', action='complete',
                                               sessionid=sid, fields={'window': '1h'})
        emit('stats', **steps)

        alert = await self.command(bot, 'set-alert')
        sid = alert['sessionid']
        second = await self.command(bot, 'set-alert', action='next', sessionid=sid,
                                    fields={'sensor': 'temp'})
        bad = await self.command(bot, 'set-alert', action='complete', sessionid=sid,
                                 fields={'direction': 'above', 'threshold': 'warm'})
        good = await self.command(bot, 'set-alert', action='complete', sessionid=sid,
                                  fields={'direction': 'above', 'threshold': '30'})
        emit('alert', second=second, bad=bad, good=good)

        cancel = await self.command(bot, 'statistics')
        sid = cancel['sessionid']
        emit('cancel', answer=await self.command(bot, 'statistics', action='cancel',
                                                 sessionid=sid))
        await self.attempt('after_cancel', self.command(
            bot, 'statistics', action='next', sessionid=sid, fields={'sensor': 'temp'}))
        await self.attempt('unknown_session', self.command(
            bot, 'statistics', action='next', sessionid='made-up', fields={'sensor': 'temp'}))

    async def stranger(self, bot):
        emit('list', items=await self.list_commands(bot))
        await self.attempt('refused', self.command(bot, 'read-sensors'))

    async def expired(self, bot):
        first = await self.command(bot, 'statistics')
        emit('started', answer=first)
        sid = first['sessionid']
        for what in ('expired', 'expired_again'):
            await self.attempt(what, self.command(
                bot, 'statistics', action='next', sessionid=sid, fields={'sensor': 'temp'}))
        emit('one_step', answer=await self.command(bot, 'stale-sensors'))

    async def hostile(self, bot):
        # `--fields` fields without values (ten thousand are about 200 KB, under the servers'
        # 256 KiB stanza limit), so the bot, not the server, has to deal with them.
        fresh = (await self.command(bot, 'statistics'))['sessionid']
        big = ET.Element(f'{{{DATA}}}x', {'type': 'submit'})
        for i in range(self.fields):
            ET.SubElement(big, f'{{{DATA}}}field', {'var': f'f{i}'})
        await self.attempt('huge_form', self.command(
            bot, 'statistics', action='next', sessionid=fresh, payload=big))
        await self.attempt('after_huge_form', self.command(
            bot, 'statistics', action='next', sessionid=fresh, fields={'sensor': 'temp'}))
        ids = []
        for _ in range(1000):
            ids.append((await self.command(bot, 'statistics'))['sessionid'])
        emit('opened', count=len(ids), distinct=len(set(ids)))
        await self.attempt('oldest', self.command(
            bot, 'statistics', action='next', sessionid=ids[0], fields={'sensor': 'temp'}))
        await self.attempt('newest', self.command(
            bot, 'statistics', action='next', sessionid=ids[-1], fields={'sensor': 'temp'}))


async def main(args):
    client = Client(f'{args.user}@localhost/adhoc', args.password, args.ca)
    client.fields = args.fields
    await client.login(args.port)
    await getattr(client, args.mode)(args.bot)
    emit('done', slixmpp=slixmpp.__version__)
    client.disconnect()


if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--ca', required=True)
    parser.add_argument('--bot', required=True)
    parser.add_argument('--user', required=True)
    parser.add_argument('--password', required=True)
    parser.add_argument('--fields', type=int, default=10_000)
    parser.add_argument('--mode', choices=['contact', 'stranger', 'expired', 'hostile'], required=True)
    arguments = parser.parse_args()
    try:
        asyncio.run(asyncio.wait_for(main(arguments), 90))
    except Exception as exc:  # noqa: BLE001 - report any failure as an event
        emit('error', error=f'{type(exc).__name__}: {exc}')
        sys.exit(1)
