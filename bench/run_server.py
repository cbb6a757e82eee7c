#!/usr/bin/python3
"""Server benchmark: the bundled server (`mqtt2xmpp server`), Prosody and ejabberd (when
installed, and run as root), one after the other in one run, under the same load from
examples/loadgen.rs, on the same certificate and the same accounts. Prints one table with the
ratios ours/Prosody and ours/ejabberd.

    bench/run_server.py                          # 5 to 7 minutes on 2 cores
    bench/run_server.py --stream-management      # every client enables XEP-0198

What it measures, per server (see bench/README.md for the settings that make it fair):

1. login rate: --logins full logins (TCP, STARTTLS, SCRAM-SHA-1, bind), 16 at a time;
2. routing at saturation: --pairs pairs of clients messaging each other, 16 messages in
   flight per client, --duration seconds: messages per second and CPU per message;
3. routing at a fixed rate (--rate messages per second in all): latency percentiles;
4. after a restart, memory per idle authenticated connection: the server's RSS before, with
   1 000, and with 10 000 connections (authenticated, bound, available presence), divided by
   the connections;
5. routing at saturation again, with those 10 000 idle connections still online.

With --stream-management, every loadgen client of the servers it names (all three by default)
enables XEP-0198 stream management after binding, answers the server's ack requests and asks
for acks itself (an <r/> after every fifth stanza sent, as slixmpp does). Prosody then loads its
mod_smacks (shipped with 0.12, not in the deploy snippet's modules); ejabberd's mod_stream_mgmt
is in the deploy YAML already; the bundled server always offers it. The table says per column
whether it was on.

The rows above run without a message archive on either side (the bundled server with
--no-archive, Prosody without mod_mam), as before the archive existed. With --archive, the
bundled server and Prosody then restart with their archive on (ours by default; Prosody with
mod_mam, `default_archive_policy = true`, its default `internal` storage and one-week expiry) and
route at saturation once more: that run's rate, latency and CPU per message, and the disk bytes
per archived message (growth of the data directory, measured with the server stopped, so with
SQLite's WAL checkpointed, divided by the messages archived: rows in our archive, every routed
message twice, sender's and recipient's copy, for Prosody).

    bench/run_server.py --servers mqtt2xmpp,prosody --archive

With --muc, one more row: groupchat in a room of --room-occupants (100) clients, all joined to
one room (ours at conference.localhost, Prosody's `Component "conference.localhost" "muc"`
with `muc_room_locking = false`, ejabberd's mod_muc with its defaults), the first
--room-senders of them talking as fast as the room echoes their messages back (8 in flight
each): the groupchat messages delivered per second, counted at every occupant, and the
server's CPU per delivered message. Ours runs without its per-occupant message rate (120 a
minute by default), since Prosody and ejabberd have none by default. --muc-only runs that row
alone (about a minute per server):

    bench/run_server.py --servers mqtt2xmpp,prosody --muc-only
"""

import argparse
import sys
import time

import common
from common import log

def idle_memory(server, counts, while_held=None):
    """The server's RSS growth per connection with each number of connections in `counts`
    (ascending; each run adds connections to those of the runs before). Returns (baseline RSS
    in KiB, {count: KiB per connection}, connections held at the end)."""
    pid = server.pid()
    baseline = common.steady_rss_kib(pid)
    per_connection, runs, opened = {}, [], 0
    try:
        for count in counts:
            run = common.Loadgen('idle', *common.conn_args(server, first=opened), '--count',
                                 count - opened, stdin=True)
            runs.append(run)
            if not run.ready.wait(900):
                raise RuntimeError('the idle run did not get ready')
            opened = count
            held = sum(r.ready_count for r in runs)
            rss = common.steady_rss_kib(pid)
            # Per connection held: a server that refused some is not credited for them.
            per_connection[count] = (rss - baseline) / held if held else None
            log(f'  {server.name}: RSS {baseline} KiB → {rss} KiB with {held} of {count} '
                f'connections held')
        if while_held:
            while_held()
    finally:
        for run in runs:
            run.release()
        for run in runs:
            log(f'  idle run: {run.wait(300)}')
    return baseline, per_connection, sum(r.ready_count for r in runs)


def bench(server, args):
    out = {}
    watch = {'server': server.pid()}
    # Warm up: a few logins load every code path a login needs.
    common.run_loadgen('login', *common.conn_args(server), '--count', 20, '--concurrency', 4)

    log(f'  {server.name}: {args.logins} logins, {args.login_concurrency} at a time')
    login = common.run_loadgen('login', *common.conn_args(server), '--count', args.logins,
                               '--concurrency', args.login_concurrency, watch=watch)
    out['logins_per_s'] = login['logins_per_s'] if not login['failed'] else None
    out['login_p50'] = login['p50_ms']
    out['login_p99'] = login['p99_ms']
    out['login_cpu_ms'] = (login['cpu']['server'] * 1000 / login['count']
                           if login['count'] and login['cpu']['server'] is not None else None)
    out['login_failed'] = login['failed']

    log(f'  {server.name}: routing at saturation, {args.pairs} pairs')
    sat = common.run_loadgen('route', *common.conn_args(server), '--pairs', args.pairs,
                             '--duration', f'{args.duration}s', watch=watch)
    out['route_msgs_per_s'] = sat['msgs_per_s']
    out['route_sat_p50'] = sat['p50_ms']
    out['route_sat_p99'] = sat['p99_ms']
    out['route_cpu_us'] = (sat['cpu']['server'] * 1e6 / sat['received']
                           if sat['received'] and sat['cpu']['server'] is not None else None)
    out['route_errors'] = sat['errors']

    log(f'  {server.name}: routing at {args.rate} msg/s')
    fixed = common.run_loadgen('route', *common.conn_args(server), '--pairs', args.pairs,
                               '--rate', args.rate, '--duration', f'{args.duration}s',
                               watch=watch)
    out['fixed_rate'] = fixed['msgs_per_s']
    for p in ('p50', 'p90', 'p99', 'max'):
        out[f'fixed_{p}'] = fixed[f'{p}_ms']
    out['rss_after_load_mib'] = common.rss_kib(server.pid()) / 1024

    # Memory on a fresh process: what the load above left in the allocator (or the garbage
    # collector's heap) would otherwise hide part of the growth, or add to it.
    log(f'  {server.name}: restarting for the memory measurement')
    server.stop()
    server.start()
    common.run_loadgen('login', *common.conn_args(server), '--count', 20, '--concurrency', 4)

    def route_among_idle():
        # The same saturation run with every idle connection still online, on accounts of
        # its own: does routing cost grow with the number of sessions?
        log(f'  {server.name}: routing at saturation with {max(args.idle)} idle connections')
        busy = common.run_loadgen('route', *common.conn_args(server, first=max(args.idle)),
                                  '--pairs', args.pairs, '--duration', f'{args.duration}s',
                                  watch={'server': server.pid()})
        out['crowd_msgs_per_s'] = busy['msgs_per_s']
        out['crowd_p99'] = busy['p99_ms']
        out['crowd_cpu_us'] = (busy['cpu']['server'] * 1e6 / busy['received']
                               if busy['received'] and busy['cpu']['server'] is not None
                               else None)

    baseline, per_connection, held = idle_memory(server, args.idle, route_among_idle)
    out['rss_start_mib'] = baseline / 1024
    for count in args.idle:
        out[f'idle_{count}'] = per_connection.get(count)
    out['held'] = held
    return out


def archive_run(server, args, out):
    """Routing at saturation with the server's message archive on, and the disk it takes
    per archived message (see the module docs)."""
    server.stop()
    server.set_archive(True)
    before = common.disk_bytes(server.data)
    server.start()
    common.run_loadgen('login', *common.conn_args(server), '--count', 20, '--concurrency', 4)
    log(f'  {server.name}: routing at saturation with the archive on, {args.pairs} pairs')
    sat = common.run_loadgen('route', *common.conn_args(server), '--pairs', args.pairs,
                             '--duration', f'{args.duration}s', watch={'server': server.pid()})
    out['archive_msgs_per_s'] = sat['msgs_per_s']
    out['archive_p50'] = sat['p50_ms']
    out['archive_p99'] = sat['p99_ms']
    out['archive_cpu_us'] = (sat['cpu']['server'] * 1e6 / sat['received']
                             if sat['received'] and sat['cpu']['server'] is not None else None)
    server.stop()
    grown = common.disk_bytes(server.data) - before
    archived = server.archived() if hasattr(server, 'archived') else 2 * sat['received']
    out['archived'] = archived
    out['archive_bytes_per_msg'] = grown / archived if archived else None
    log(f'  {server.name}: {archived} messages archived, data directory +{grown} bytes')


def room_run(server, args, out):
    """Groupchat at saturation in one room of --room-occupants clients (see the module docs)."""
    log(f'  {server.name}: groupchat in a room of {args.room_occupants}, '
        f'{args.room_senders} senders')
    run = common.run_loadgen('room', *common.conn_args(server), '--room',
                             f'bench@conference.{common.DOMAIN}', '--occupants',
                             args.room_occupants, '--senders', args.room_senders,
                             '--warmup', '5s', '--duration', f'{args.room_duration}s',
                             watch={'server': server.pid()}, timeout=300)
    out['room_delivered_per_s'] = run['delivered_per_s']
    out['room_p50'] = run['p50_ms']
    out['room_p99'] = run['p99_ms']
    out['room_cpu_us'] = (run['cpu']['server'] * 1e6 / run['received']
                          if run['received'] and run['cpu']['server'] is not None else None)
    out['room_sent'] = run['sent']
    out['room_errors'] = run['errors']
    out['room_setup_s'] = run['login_s'] + run['join_s']


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--servers', default='mqtt2xmpp,prosody,ejabberd')
    ap.add_argument('--pairs', type=int, default=50)
    ap.add_argument('--rate', type=int, default=2000, help='fixed routing rate, msg/s')
    ap.add_argument('--duration', type=int, default=10, help='seconds per routing run')
    ap.add_argument('--logins', type=int, default=1000)
    ap.add_argument('--login-concurrency', type=int, default=16)
    ap.add_argument('--idle', default='1000,10000', help='connection counts, ascending')
    ap.add_argument('--no-build', action='store_true')
    ap.add_argument('--archive', action='store_true',
                    help='also route with the message archive on (ours and Prosody\'s '
                    'mod_mam) and measure its disk use per message')
    ap.add_argument('--muc', action='store_true',
                    help='also measure groupchat in a room of --room-occupants clients')
    ap.add_argument('--muc-only', action='store_true',
                    help='measure only groupchat in a room (implies --muc)')
    ap.add_argument('--room-occupants', type=int, default=100)
    ap.add_argument('--room-senders', type=int, default=2)
    ap.add_argument('--room-duration', type=int, default=30, help='seconds measured')
    ap.add_argument('--stream-management', nargs='?', const='mqtt2xmpp,prosody,ejabberd',
                    default='', metavar='SERVERS',
                    help='clients enable XEP-0198 stream management on these servers (all '
                    'three when given alone)')
    args = ap.parse_args()
    args.idle = [int(n) for n in args.idle.split(',')]
    args.muc = args.muc or args.muc_only
    wanted = args.servers.lower().split(',')
    with_sm = {n for n in args.stream_management.lower().split(',') if n}
    if with_sm - {'mqtt2xmpp', 'prosody', 'ejabberd'}:
        ap.error('--stream-management: unknown servers '
                 f"{sorted(with_sm - {'mqtt2xmpp', 'prosody', 'ejabberd'})}")

    started = time.monotonic()
    if not args.no_build:
        common.build()
    nofile = common.raise_nofile(3 * max(args.idle) + 10000)
    # u0 … u9999 for the idle connections (and the other runs), 2 × pairs more for routing
    # while they are online.
    accounts = [f'u{n}' for n in range(max(max(args.idle), 10000) + 2 * args.pairs)]
    if args.muc_only:
        accounts = [f'u{n}' for n in range(args.room_occupants)]
    print(f'machine: {common.machine()}')
    print(f'open files limit: {nofile}')
    print('versions: ' + ', '.join(f'{k} {v}' for k, v in common.versions().items()))

    results, notes = {}, []
    with common.Workdir() as work:
        cert, key, both = common.make_certificate(work)
        servers = []
        if 'mqtt2xmpp' in wanted:
            servers.append(common.Bundled(work, cert, key, extra=[
                '--max-connections', str(max(args.idle) + 1000),
                '--bytes-per-second', '1000000000', '--burst-bytes', '1000000000',
                # No per-occupant room rate either: Prosody and ejabberd have none by default.
                '--muc-messages-per-minute', '1000000000', '--muc-message-burst', '1000000000',
                # The rows compare servers without an archive; --archive adds its own.
                '--no-archive']))
            servers[-1].stream_management = 'mqtt2xmpp' in with_sm
        if 'prosody' in wanted:
            if common.prosody_available():
                # Prosody's default is 10 000 PBKDF2 iterations; the others use 4 096.
                servers.append(common.Prosody(
                    work, cert, key, extra_config='default_iteration_count = 4096',
                    modules=['smacks'] if 'prosody' in with_sm else []))
                servers[-1].stream_management = 'prosody' in with_sm
                if args.muc:
                    servers[-1].set_muc(True)
            else:
                notes.append('Prosody: not installed')
        if 'ejabberd' in wanted:
            if common.ejabberd_available():
                servers.append(common.Ejabberd(work, cert, both, replace=[
                    # No per-connection byte rate (as the bundled server's is lifted).
                    ('c2s_shaper: normal', 'c2s_shaper: none'),
                    # The snippet's `backlog: 128` is the listen queue the other two get.
                ] + ([
                    # Rooms at conference.localhost, mod_muc's defaults.
                    ('mod_ping: {}', 'mod_ping: {}\nmod_muc: {}'),
                ] if args.muc else [])))
                servers[-1].stream_management = 'ejabberd' in with_sm
            else:
                notes.append('ejabberd: not installed, or not running as root')
        for server in servers:
            log(f'--- {server.name}')
            began = time.monotonic()
            try:
                if isinstance(server, common.Ejabberd):
                    # The import needs a running node; a restart then starts the measurements
                    # from a VM that has not just parsed 10 000 accounts.
                    server.start()
                    server.add_accounts(accounts)
                    server.stop()
                    server.start()
                else:
                    server.add_accounts(accounts)
                    server.start()
                log(f'  {server.name}: up with {len(accounts)} accounts after '
                    f'{time.monotonic() - began:.1f} s')
                results[server.name] = {} if args.muc_only else bench(server, args)
                if args.archive and hasattr(server, 'set_archive') and not args.muc_only:
                    archive_run(server, args, results[server.name])
                if args.muc:
                    if args.archive and hasattr(server, 'set_archive'):
                        # The room row compares the rooms without their archives.
                        server.stop()
                        server.set_archive(False)
                        server.start()
                    room_run(server, args, results[server.name])
                log(f'  {server.name}: {results[server.name]}')
            except Exception as e:  # noqa: BLE001 - report and go on with the next server
                notes.append(f'{server.name}: failed: {e}')
                log(f'  {server.name} failed: {e}\n{server.log()[-3000:]}')
            finally:
                server.stop()
            log(f'  {server.name}: done after {time.monotonic() - began:.0f} s')

    names = [s.name for s in servers if s.name in results]
    ours = results.get('mqtt2xmpp', {})
    others = [n for n in names if n != 'mqtt2xmpp']
    for n in names:
        results[n]['archive_state'] = 'off'
    for n in names:
        results[n]['sm'] = ('on' if next(s for s in servers if s.name == n).stream_management
                            else 'off')
    rows_spec = [
        ('stream management (XEP-0198) in the clients', '', 'sm'),
        ('routing at saturation, msg/s', '↑', 'route_msgs_per_s'),
        ('  latency p50 / p99 at saturation, ms', '↓', ('route_sat_p50', 'route_sat_p99')),
        ('  server CPU per routed message, µs', '↓', 'route_cpu_us'),
        (f'routing at {args.rate} msg/s: latency p50, ms', '↓', 'fixed_p50'),
        ('  p90, ms', '↓', 'fixed_p90'),
        ('  p99, ms', '↓', 'fixed_p99'),
        ('  max, ms', '↓', 'fixed_max'),
        (f'logins/s ({args.logins}, {args.login_concurrency} at a time)', '↑', 'logins_per_s'),
        ('  one login p50 / p99, ms', '↓', ('login_p50', 'login_p99')),
        ('  server CPU per login, ms', '↓', 'login_cpu_ms'),
        (f'routing at saturation, {max(args.idle):,} idle connections online, msg/s', '↑',
         'crowd_msgs_per_s'),
        ('  latency p99, ms', '↓', 'crowd_p99'),
        ('  server CPU per routed message, µs', '↓', 'crowd_cpu_us'),
    ] + [(f'RSS per idle connection, {n:,} connections, KiB', '↓', f'idle_{n}')
         for n in args.idle] + [
        (f'connections held (of {max(args.idle):,})', '↑', 'held'),
        ('RSS at start (after 20 logins), MiB', '↓', 'rss_start_mib'),
    ] + ([
        ('message archive (XEP-0313) in the rows above', '', 'archive_state'),
        ('routing at saturation, archive on, msg/s', '↑', 'archive_msgs_per_s'),
        ('  latency p50 / p99, archive on, ms', '↓', ('archive_p50', 'archive_p99')),
        ('  server CPU per routed message, archive on, µs', '↓', 'archive_cpu_us'),
        ('  disk bytes per archived message', '↓', 'archive_bytes_per_msg'),
        ('  messages archived in that run', '', 'archived'),
    ] if args.archive else [])
    room_rows = [
        (f'groupchat to a room of {args.room_occupants} occupants ({args.room_senders} '
         'senders), messages delivered/s', '↑', 'room_delivered_per_s'),
        ('  latency p50 / p99, send to delivery, ms', '↓', ('room_p50', 'room_p99')),
        ('  server CPU per delivered message, µs', '↓', 'room_cpu_us'),
        ('  messages sent in the run', '', 'room_sent'),
    ] if args.muc else []
    rows_spec = room_rows if args.muc_only else rows_spec + room_rows
    header = ['', 'better'] + names + [f'ours/{n}' for n in others]
    rows = []
    for label, better, key in rows_spec:
        row = [label, better]
        for n in names:
            if isinstance(key, tuple):
                row.append(' / '.join(fmt_or(results[n].get(k)) for k in key))
            else:
                row.append(fmt_or(results[n].get(key)))
        for n in others:
            k = key[-1] if isinstance(key, tuple) else key
            row.append(common.ratio(ours.get(k), results[n].get(k)))
        rows.append(row)
    print()
    print(common.table(header, rows))
    print()
    print('ratio = ours ÷ theirs: above 1× is better where ↑, below 1× is better where ↓.')
    for n in names:
        r = results[n]
        extra = []
        if r.get('login_failed'):
            extra.append(f"{r['login_failed']} logins failed")
        if r.get('room_errors'):
            extra.append(f"{r['room_errors']} room connections failed")
        if args.muc_only:
            extra.append(f"{args.room_occupants} logins and joins took "
                         f"{r.get('room_setup_s', 0):.1f} s")
            print(f'{n}: ' + '; '.join(extra))
            continue
        if r.get('route_errors'):
            extra.append(f"{r['route_errors']} routing connections failed")
        extra.append(f"routing at the fixed rate delivered {r.get('fixed_rate', 0):.0f} msg/s")
        extra.append(f"RSS after the login and routing runs {r.get('rss_after_load_mib', 0):.1f} "
                     'MiB')
        print(f'{n}: ' + '; '.join(extra))
    if any(results[n]['sm'] == 'on' for n in names):
        print('stream management on: every client enables it after binding (no resumption), '
              'answers each <r/> and sends <r/> after every fifth stanza; off: the same '
              'clients without it.')
        for n in names:
            if results[n]['sm'] == 'off':
                print(f'{n}: stream management off in this run (--stream-management names the '
                      'servers it is on for).')
    for note in notes:
        print(note)
    print(f'total time {time.monotonic() - started:.0f} s')


def fmt_or(value):
    return common.fmt(value)


if __name__ == '__main__':
    sys.exit(main())
