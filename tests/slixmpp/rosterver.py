#!/usr/bin/python3
"""Roster versioning and entity capabilities as slixmpp (Debian's python3-slixmpp) sees them.

Driven by tests/server_rosterver.rs. One run is one session of alice, a client that keeps its
roster between sessions in a JSON file (--cache), as a phone does: slixmpp sends the version it
stored with its roster get (RFC 6121 section 2.6) when the server offers roster versioning, and
stores the version of every result and push. The run reports, as JSON lines on stdout:

  login     the stream features slixmpp saw: roster versioning, and the server's caps
  caps      whether slixmpp's XEP-0115 plugin validated the server's caps against the server's
            disco#info (it only stores a ver it checked), and the ver slixmpp computes itself
            from a disco#info it fetches
  roster    the ver sent, whether the result was empty, the ver and items of the result, and
            slixmpp's roster afterwards (from its cache when the result was empty)
  push      with --set-name: the ver of the push for bob's renamed item
  cache     the version slixmpp stored at the end

A step that does not finish within its deadline prints {"event": "error", ...} and exits 1.
Login and SASL as in client.py (SCRAM without channel-binding data, see its docstring).
"""

import argparse
import asyncio
import json
import logging
import os
import sys

import slixmpp

DOMAIN = 'localhost'
ALICE = 'alice@localhost'
BOB = 'bob@localhost'
# Each wait for the server, in seconds.
STEP_TIMEOUT = 10.0


def emit(event, **fields):
    """One observation for the Rust test."""
    print(json.dumps({'event': event, **fields}, sort_keys=True), flush=True)


class Failed(Exception):
    """A step did not finish."""


class FileRoster:
    """slixmpp's roster datastore interface (see slixmpp.roster.item), kept in a JSON file:
    the items and the roster version of each owner."""

    def __init__(self, path):
        self.path = path
        try:
            with open(path, encoding='utf-8') as file:
                self.data = json.load(file)
        except FileNotFoundError:
            self.data = {}

    def _owner(self, owner):
        return self.data.setdefault(str(owner), {'ver': '', 'items': {}})

    def _write(self):
        with open(self.path, 'w', encoding='utf-8') as file:
            json.dump(self.data, file, sort_keys=True)

    def entries(self, owner, default=None):
        if owner is None:
            return list(self.data)
        return list(self._owner(owner)['items'])

    def load(self, owner, jid, db_state):
        return self._owner(owner)['items'].get(str(jid))

    def save(self, owner, jid, item_state, db_state):
        items = self._owner(owner)['items']
        if item_state.get('removed'):
            items.pop(str(jid), None)
        else:
            items[str(jid)] = {key: (sorted(value) if isinstance(value, (set, list)) else value)
                               for key, value in item_state.items()}
        self._write()

    def version(self, owner):
        return self._owner(owner)['ver']

    def set_version(self, owner, ver):
        self._owner(owner)['ver'] = ver
        self._write()


class Alice(slixmpp.ClientXMPP):
    """alice's session with a roster cache."""

    def __init__(self, resource, password, ca_file, cache):
        super().__init__(f'{ALICE}/{resource}', password)
        self.ca_certs = ca_file
        self.register_plugin('xep_0030')
        self.register_plugin('xep_0115')
        self.auto_authorize = None
        self.auto_subscribe = False
        mechanisms = self['feature_mechanisms']
        stock_credentials = mechanisms.sasl_callback

        def credentials(required, optional):
            values = stock_credentials(required, optional)
            values.pop('channel_binding', None)
            return values

        mechanisms.sasl_callback = credentials
        mechanisms.use_mechs = {'SCRAM-SHA-256', 'SCRAM-SHA-1'}
        self.roster.set_backend(FileRoster(cache), save=False)
        self.session = None
        self.features_caps = None
        self.pushes = []
        # Whether each IQ result, by id, carried a roster query as it came off the wire
        # (slixmpp's roster handling adds an empty one to the stanza object it keeps).
        self.results_with_query = {}
        self.add_filter('in', self._record_result)
        self.changed = asyncio.Event()
        self.add_event_handler('session_start', self._session_start)
        self.add_event_handler('entity_caps', self._entity_caps)
        self.add_event_handler('roster_update', self._roster_update)

    def _session_start(self, _data):
        if self.session is not None and not self.session.done():
            self.session.set_result(None)

    def _record_result(self, stanza):
        if isinstance(stanza, slixmpp.Iq) and stanza['type'] == 'result':
            query = stanza.xml.find('{jabber:iq:roster}query')
            self.results_with_query[stanza['id']] = query is not None
        return stanza

    def _entity_caps(self, presence):
        # The stream feature, which slixmpp hands to its caps plugin as a presence of the
        # server's domain.
        if presence['from'] == DOMAIN:
            caps = presence['caps']
            self.features_caps = {'hash': caps['hash'], 'node': caps['node'],
                                  'ver': caps['ver']}
            self.changed.set()

    def _roster_update(self, iq):
        if iq['type'] == 'set':
            self.pushes.append({'ver': iq['roster']['ver'],
                                'items': sorted(str(jid) for jid in iq['roster']['items'])})
            self.changed.set()

    async def until(self, what, predicate):
        """Waits until `predicate()` (a coroutine function) holds, re-checking after every
        change and at most every 50 ms (slixmpp's caps plugin stores its result without an
        event)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STEP_TIMEOUT
        while not await predicate():
            if loop.time() >= deadline:
                raise Failed(f'timed out waiting for {what}')
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 0.05)
            except asyncio.TimeoutError:
                pass

    async def login(self, port):
        self.session = asyncio.get_running_loop().create_future()
        self.connect(('127.0.0.1', port))
        try:
            await asyncio.wait_for(asyncio.shield(self.session), STEP_TIMEOUT)
        except asyncio.TimeoutError:
            raise Failed(f'no session within {STEP_TIMEOUT} s') from None

    def roster_state(self):
        roster = self.client_roster
        return {str(jid): {'subscription': roster[jid]['subscription'],
                           'name': roster[jid]['name'] or None}
                for jid in roster.keys()}


async def session(args):
    alice = Alice(args.resource, args.alice_password, args.ca, args.cache)
    await alice.login(args.port)

    async def features_caps_seen():
        return alice.features_caps is not None

    await alice.until('the caps stream feature', features_caps_seen)
    emit('login', jid=str(alice.boundjid), rosterver='rosterver' in alice.features,
         caps=alice.features_caps)

    # Entity capabilities: slixmpp fetched the server's disco#info for NODE#VER and stored the
    # ver only if its own hash of that answer matched.
    ver = alice.features_caps['ver']

    async def validated():
        return await alice['xep_0115'].get_verstring(DOMAIN) == ver

    await alice.until("slixmpp's validation of the server's caps", validated)
    info = await alice['xep_0030'].get_info(jid=DOMAIN, timeout=STEP_TIMEOUT)
    computed = alice['xep_0115'].generate_verstring(info['disco_info'], 'sha-1')
    emit('caps', validated=True, computed=computed,
         features=sorted(info['disco_info']['features']))

    # Roster versioning.
    sent = alice.client_roster.version
    result = await alice.get_roster(timeout=STEP_TIMEOUT)
    empty = not alice.results_with_query[result['id']]
    emit('roster', sent_ver=sent, empty=empty, ver=None if empty else result['roster']['ver'],
         items=sorted(str(jid) for jid in result['roster']['items']),
         state=alice.roster_state())

    if args.set_name:
        await alice.update_roster(BOB, name=args.set_name, timeout=STEP_TIMEOUT)

        async def pushed():
            return any(BOB in push['items'] for push in alice.pushes)

        await alice.until('the push for bob', pushed)
        emit('push', **next(push for push in alice.pushes if BOB in push['items']))
    emit('cache', ver=alice.client_roster.version)
    await alice.disconnect()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--ca', required=True, help="the server's certificate (PEM)")
    parser.add_argument('--alice-password', required=True)
    parser.add_argument('--cache', required=True, help='the roster cache (JSON file)')
    parser.add_argument('--resource', required=True)
    parser.add_argument('--set-name', help="rename (or add) bob in alice's roster")
    return parser.parse_args()


async def main(args):
    try:
        await session(args)
    except Failed as failure:
        emit('error', step=str(failure))
        return 1
    except (slixmpp.exceptions.IqError, slixmpp.exceptions.IqTimeout) as error:
        emit('error', step=type(error).__name__, iq=str(error.iq))
        return 1
    emit('done')
    return 0


if __name__ == '__main__':
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if os.environ.get('SLIXMPP_DEBUG') == '1' else logging.WARNING,
        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    sys.exit(asyncio.run(main(parse_args())))
