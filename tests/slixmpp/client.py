#!/usr/bin/python3
"""slixmpp (the Debian package python3-slixmpp) as the client of the bundled server.

Driven by tests/server_slixmpp.rs: each command below logs in one or two accounts, does one
part of a scenario and prints what it observed as JSON lines on stdout, one object per line
with an "event" key; the Rust test asserts on them. A command that cannot finish (a wait runs
out, a login fails) prints {"event": "error", ...} with the state it reached and exits 1.
slixmpp's own log goes to stderr (DEBUG with SLIXMPP_DEBUG=1, else WARNING).

Nothing here sleeps for a fixed time: every wait is for an event (a stanza, a roster push, a
presence) with a deadline, and "nothing more arrives" is established with a ping round trip to
the server, which answers in order after everything it sent before.

SASL and slixmpp 1.8.3: for -PLUS mechanisms slixmpp only knows the tls-unique channel
binding, which TLS 1.3 does not define (RFC 9266), while the server offers -PLUS with
tls-exporter. Left alone, slixmpp tries SCRAM-SHA-256-PLUS and SCRAM-SHA-1-PLUS with
tls-unique (refused: unsupported channel-binding type), then plain SCRAM with the gs2 flag
"y" ("I could bind, but you offer no -PLUS"), which the server must refuse as a downgrade
because it did offer -PLUS (RFC 5802 section 6). The "scram" configuration therefore keeps
the channel-binding data from slixmpp's SCRAM (gs2 flag "n") and limits it to the plain
SCRAM mechanisms; "stock" leaves slixmpp alone.
"""

import argparse
import asyncio
import json
import logging
import os
import ssl
import sys

import slixmpp

DOMAIN = 'localhost'
ALICE = 'alice@localhost'
BOB = 'bob@localhost'
# Each wait for the server, in seconds.
STEP_TIMEOUT = 10.0

# SASL configurations (see the module docstring):
#   scram        SCRAM-SHA-256 or SCRAM-SHA-1, channel-binding data withheld (gs2 flag "n")
#   SCRAM-SHA-1  only SCRAM-SHA-1, channel-binding data withheld
#   PLAIN        only PLAIN (over TLS)
#   stock-SCRAM-SHA-1  only SCRAM-SHA-1, with slixmpp's tls-unique data (gs2 flag "y")
#   stock        slixmpp's defaults
SASL_MODES = ('scram', 'SCRAM-SHA-1', 'PLAIN', 'stock-SCRAM-SHA-1', 'stock')


def emit(event, **fields):
    """One observation for the Rust test."""
    print(json.dumps({'event': event, **fields}, sort_keys=True), flush=True)


class Failed(Exception):
    """A step did not finish; `state` says how far it got."""

    def __init__(self, step, **state):
        super().__init__(step)
        self.step = step
        self.state = state


class Changes:
    """Wakes waiters whenever any client saw something (a stanza, a push, a presence)."""

    def __init__(self):
        self.event = asyncio.Event()

    def touch(self, *_args):
        self.event.set()

    async def until(self, what, predicate, state=lambda: {}):
        """Waits until `predicate()` holds, re-checking after every change."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STEP_TIMEOUT
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Failed(f'timed out waiting for {what}', **state())
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), remaining)
            except asyncio.TimeoutError:
                pass


class Client(slixmpp.ClientXMPP):
    """One account's slixmpp session, recording what it receives."""

    def __init__(self, jid, password, ca_file, sasl, changes):
        super().__init__(jid, password)
        self.who = slixmpp.JID(jid).user
        self.changes = changes
        # Trust exactly the server's self-signed certificate; slixmpp verifies the chain and
        # the host name (the JID's domain, "localhost") against it.
        self.ca_certs = ca_file
        self.register_plugin('xep_0199')  # ping, the barrier
        self.register_plugin('xep_0203')  # delayed delivery stamps
        # Subscription requests are answered by the scenario, not automatically.
        self.auto_authorize = None
        self.auto_subscribe = False
        self.configure_sasl(sasl)

        self.mechanism = None
        # Set when STARTTLS succeeded (kept after a disconnection, unlike self.features).
        self.starttls = False
        self.auth_failures = []
        self.messages = []
        self.pushes = []
        self.presences = []
        self.session = None
        for event in ('session_start', 'failed_all_auth', 'disconnected',
                      'ssl_invalid_chain', 'stream_error'):
            self.add_event_handler(event, self._session_event(event))
        self.add_event_handler('tls_success', self._tls_success)
        self.add_event_handler('auth_success', self._auth_success)
        self.add_event_handler('failed_auth', self._failed_auth)
        self.add_event_handler('message', self._message)
        self.add_event_handler('roster_update', self._roster_update)
        self.add_event_handler('presence', self._presence)

    def configure_sasl(self, sasl):
        mechanisms = self['feature_mechanisms']
        if sasl not in SASL_MODES:
            raise ValueError(f'unknown SASL mode {sasl!r}')
        if sasl in ('scram', 'SCRAM-SHA-1'):
            stock_credentials = mechanisms.sasl_callback

            def credentials(required, optional):
                values = stock_credentials(required, optional)
                # slixmpp treats a missing value as empty: SCRAM then sends gs2 flag "n".
                values.pop('channel_binding', None)
                return values

            mechanisms.sasl_callback = credentials
        if sasl == 'scram':
            mechanisms.use_mechs = {'SCRAM-SHA-256', 'SCRAM-SHA-1'}
        elif sasl in ('SCRAM-SHA-1', 'stock-SCRAM-SHA-1'):
            mechanisms.use_mech = 'SCRAM-SHA-1'
        elif sasl == 'PLAIN':
            mechanisms.use_mech = 'PLAIN'

    # Event handlers.

    def _session_event(self, name):
        def handler(data):
            if self.session is not None and not self.session.done():
                if name == 'session_start':
                    self.session.set_result(None)
                else:
                    self.session.set_exception(Failed(f'{self.who}: {name} before the session',
                                                      detail=str(data),
                                                      auth_failures=self.auth_failures))
            self.changes.touch()
        return handler

    def _tls_success(self, _data):
        self.starttls = True

    def _auth_success(self, _stanza):
        self.mechanism = self['feature_mechanisms'].mech.name

    def _failed_auth(self, stanza):
        self.auth_failures.append({'mechanism': self['feature_mechanisms'].mech.name,
                                   'condition': stanza['condition']})

    def _message(self, msg):
        stamp = msg['delay']['stamp']
        self.messages.append({
            'from': str(msg['from']),
            'to': str(msg['to']),
            'type': msg['type'],
            'body': msg['body'],
            # XEP-0203 stamp as seconds since the epoch.
            'delay_stamp': stamp.timestamp() if stamp else None,
            'delay_from': str(msg['delay']['from'] or '') or None,
        })
        self.changes.touch()

    def _roster_update(self, iq):
        self.pushes.append({
            'type': iq['type'],
            'items': {str(jid): {'subscription': item['subscription'],
                                 'ask': item['ask'] or None,
                                 'name': item['name'] or None,
                                 'groups': sorted(item['groups'])}
                      for jid, item in iq['roster']['items'].items()},
        })
        self.changes.touch()

    def _presence(self, presence):
        self.presences.append({'from': str(presence['from']), 'type': presence['type']})
        self.changes.touch()

    # Steps.

    async def login(self, port):
        """Connects (STARTTLS is required by slixmpp's default force_starttls) and waits for
        the session; returns the login report."""
        self.session = asyncio.get_running_loop().create_future()
        self.connect(('127.0.0.1', port))
        try:
            await asyncio.wait_for(asyncio.shield(self.session), STEP_TIMEOUT)
        except asyncio.TimeoutError:
            raise Failed(f'{self.who}: no session within {STEP_TIMEOUT} s',
                         auth_failures=self.auth_failures) from None
        return self.report_login()

    def report_login(self):
        tls = self.socket if isinstance(self.socket, (ssl.SSLObject, ssl.SSLSocket)) else None
        return {
            'who': self.who,
            'jid': str(self.boundjid),
            'mechanism': self.mechanism,
            'starttls': self.starttls and 'starttls' in self.features,
            'tls_version': tls.version() if tls else None,
            'verified': bool(tls) and self.ssl_context.verify_mode == ssl.CERT_REQUIRED
            and self.ssl_context.check_hostname,
            'auth_failures': self.auth_failures,
        }

    async def barrier(self):
        """A ping to the server: once answered, everything it sent earlier has been handled."""
        await self['xep_0199'].send_ping(DOMAIN, timeout=STEP_TIMEOUT)

    async def fetch_roster(self):
        """Fetches the roster; returns the items of the result as the server sent them."""
        result = await self.get_roster(timeout=STEP_TIMEOUT)
        return wire_items(result)

    def item(self, jid):
        """slixmpp's roster state for `jid` (None when not in the roster)."""
        if not self.client_roster.has_jid(jid):
            return None
        item = self.client_roster[jid]
        return {'subscription': item['subscription'],
                'pending_out': item['pending_out'],
                'name': item['name'] or None,
                'groups': sorted(item['groups']),
                'resources': sorted(item.resources)}

    def state(self):
        return {'who': self.who,
                'roster': {jid: self.item(jid) for jid in self.client_roster.keys()},
                'pushes': self.pushes,
                'presences': self.presences,
                'messages': self.messages}

    def pushed(self, jid, **expected):
        return any(push['type'] == 'set' and jid in push['items']
                   and all(push['items'][jid].get(k) == v for k, v in expected.items())
                   for push in self.pushes)

    def requested_by(self, jid):
        return any(p['type'] == 'subscribe' and slixmpp.JID(p['from']).bare == jid
                   for p in self.presences)

    def online(self, jid):
        item = self.item(jid)
        return bool(item and item['resources'])

    async def logout(self):
        await self.disconnect()


def wire_items(iq):
    return {str(jid): {'subscription': item['subscription'],
                       'ask': item['ask'] or None,
                       'name': item['name'] or None,
                       'groups': sorted(item['groups'])}
            for jid, item in iq['roster']['items'].items()}


async def online_pair(args, changes, resource):
    """alice and bob logged in with SCRAM, rosters fetched, available."""
    alice = Client(f'{ALICE}/{resource}', args.alice_password, args.ca, 'scram', changes)
    bob = Client(f'{BOB}/{resource}', args.bob_password, args.ca, 'scram', changes)
    for client in (alice, bob):
        emit('login', **await client.login(args.port))
    for client in (alice, bob):
        emit('roster', who=client.who, items=await client.fetch_roster())
    return alice, bob


# Commands.

async def mechanisms(args, changes):
    """Logs alice in once per SASL configuration in `args.modes`, one report each."""
    for mode in args.modes:
        alice = Client(f'{ALICE}/{mode}', args.alice_password, args.ca, mode, changes)
        try:
            report = await alice.login(args.port)
            emit('login', mode=mode, ok=True, **report)
        except Failed as failure:
            emit('login', mode=mode, ok=False, who=alice.who, step=failure.step,
                 starttls=alice.starttls, auth_failures=alice.auth_failures)
        await alice.logout()


async def befriend(args, changes):
    """Scenarios 1 and 2: roster add, mutual subscription, presence, a chat message."""
    alice, bob = await online_pair(args, changes, 'slixmpp')
    clients = (alice, bob)

    def state():
        return {'alice': alice.state(), 'bob': bob.state()}

    for client in clients:
        client.send_presence()
    await alice.barrier()
    await bob.barrier()

    # alice puts bob in her roster, named and grouped: the server pushes the new item.
    await alice.update_roster(BOB, name='Bob', groups=['Friends'], timeout=STEP_TIMEOUT)
    await changes.until('the roster push for bob', lambda: alice.pushed(BOB, name='Bob'), state)
    emit('roster_push', who='alice',
         push=next(p for p in alice.pushes if p['type'] == 'set' and BOB in p['items']))

    # alice subscribes to bob's presence; bob approves and subscribes back; alice approves.
    alice.send_presence(pto=BOB, ptype='subscribe')
    await changes.until('bob to get alice\'s request', lambda: bob.requested_by(ALICE), state)
    emit('subscription_request', who='bob',
         presence=next(p for p in bob.presences if p['type'] == 'subscribe'))
    # Plain stanzas rather than slixmpp's authorize(), which would also send a directed
    # presence: the available presence alice then sees must come from the server.
    bob.send_presence(pto=ALICE, ptype='subscribed')
    bob.send_presence(pto=ALICE, ptype='subscribe')
    await changes.until('alice to get bob\'s request', lambda: alice.requested_by(BOB), state)
    emit('subscription_request', who='alice',
         presence=next(p for p in alice.presences if p['type'] == 'subscribe'))
    alice.send_presence(pto=BOB, ptype='subscribed')

    def mutual():
        return all(
            (client.item(contact) or {}).get('subscription') == 'both'
            and not client.item(contact)['pending_out']
            for client, contact in ((alice, BOB), (bob, ALICE)))

    await changes.until('subscription both on both sides', mutual, state)
    await changes.until('each to see the other online',
                        lambda: alice.online(BOB) and bob.online(ALICE), state)
    emit('roster_state', who='alice', contact=BOB, item=alice.item(BOB))
    emit('roster_state', who='bob', contact=ALICE, item=bob.item(ALICE))
    emit('presences', who='alice', presences=alice.presences)

    # Scenario 2: a chat message to bob's bare JID.
    alice.send_message(mto=BOB, mbody='Hello Bob, this is slixmpp', mtype='chat')
    await changes.until('bob to get the message', lambda: bob.messages, state)
    await bob.barrier()
    emit('messages', who='bob', messages=bob.messages)
    emit('messages', who='alice', messages=alice.messages)
    for client in clients:
        await client.logout()


async def send_offline(args, changes):
    """Scenario 3, first half: alice sends `args.bodies` to bob's bare JID (bob is offline)."""
    alice = Client(f'{ALICE}/sender', args.alice_password, args.ca, 'scram', changes)
    emit('login', **await alice.login(args.port))
    for body in args.bodies:
        alice.send_message(mto=BOB, mbody=body, mtype='chat')
    # Answered after the messages were handled (stored, or bounced back to alice).
    await alice.barrier()
    emit('sent', who='alice', count=len(args.bodies), replies=alice.messages)
    await alice.logout()


async def receive(args, changes):
    """Scenario 3, second half: bob comes online; reports every message he then gets."""
    bob = Client(f'{BOB}/receiver', args.bob_password, args.ca, 'scram', changes)
    emit('login', **await bob.login(args.port))
    emit('roster', who='bob', items=await bob.fetch_roster())
    bob.send_presence()
    # Offline messages are sent in answer to the initial presence, before this ping's result.
    await bob.barrier()
    emit('messages', who='bob', messages=bob.messages)
    await bob.logout()


async def unfriend(args, changes):
    """Scenario 4: alice removes bob from her roster."""
    alice, bob = await online_pair(args, changes, 'remover')

    def state():
        return {'alice': alice.state(), 'bob': bob.state()}

    for client in (alice, bob):
        client.send_presence()
    await changes.until('each to see the other online',
                        lambda: alice.online(BOB) and bob.online(ALICE), state)
    await alice.barrier()
    await bob.barrier()
    emit('messages', who='bob', messages=bob.messages)

    await alice.del_roster_item(BOB)
    await changes.until('the removal push', lambda: alice.pushed(BOB, subscription='remove'),
                        state)
    await changes.until('bob\'s item for alice to lose both subscriptions',
                        lambda: (bob.item(ALICE) or {}).get('subscription') == 'none', state)
    await changes.until('bob to see alice go offline', lambda: not bob.online(ALICE), state)
    await alice.barrier()
    await bob.barrier()
    emit('roster_pushes', who='alice', pushes=[p for p in alice.pushes if p['type'] == 'set'])
    emit('roster_pushes', who='bob', pushes=[p for p in bob.pushes if p['type'] == 'set'])
    emit('roster_state', who='alice', contact=BOB, item=alice.item(BOB))
    emit('roster_state', who='bob', contact=ALICE, item=bob.item(ALICE))
    emit('presences', who='bob', presences=bob.presences)
    # What the server now says: the whole roster, asked for as a client without a cached
    # copy (with the version slixmpp holds, the answer would be empty: nothing changed since).
    for client in (alice, bob):
        client.client_roster.version = ''
        emit('roster_refetched', who=client.who, items=await client.fetch_roster())
    for client in (alice, bob):
        await client.logout()


COMMANDS = {
    'mechanisms': mechanisms,
    'befriend': befriend,
    'send-offline': send_offline,
    'receive': receive,
    'unfriend': unfriend,
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--ca', required=True, help="the server's certificate (PEM)")
    parser.add_argument('--alice-password', required=True)
    parser.add_argument('--bob-password', required=True)
    commands = parser.add_subparsers(dest='command', required=True)
    modes = commands.add_parser('mechanisms')
    modes.add_argument('modes', nargs='+', choices=SASL_MODES)
    commands.add_parser('befriend')
    send = commands.add_parser('send-offline')
    send.add_argument('bodies', nargs='+')
    commands.add_parser('receive')
    commands.add_parser('unfriend')
    return parser.parse_args()


async def main(args):
    changes = Changes()
    try:
        await COMMANDS[args.command](args, changes)
    except Failed as failure:
        emit('error', step=failure.step, state=failure.state)
        return 1
    except (slixmpp.exceptions.IqError, slixmpp.exceptions.IqTimeout) as error:
        emit('error', step=type(error).__name__, state={'iq': str(error.iq)})
        return 1
    emit('done', command=args.command)
    return 0


if __name__ == '__main__':
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if os.environ.get('SLIXMPP_DEBUG') == '1' else logging.WARNING,
        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    sys.exit(asyncio.run(main(parse_args())))
