#!/usr/bin/python3
"""MQTT ingest benchmark: `mqtt2xmpp simulate` publishes a building's readings (JSON, QoS 0,
10 000 topics) to a private mosquitto as fast as the broker takes them, while `mqtt2xmpp
bridge`, then the reference Python bot (bench/reference_bot.py), reads them. Same broker, same
bundled XMPP server, one run. Prints one table with the ratios bridge/Python.

    bench/run_ingest.py            # under a minute

Per bot:

- processed rate: payloads the bot accepted (its own count, logged when it stops) divided by
  the time from the flood's start until a marker published right after the flood shows up in
  a reply (so everything before it has been read);
- freshness: marker values published on the bot's answering topic (QoS 1), one every 100 ms
  idle and one every 250 ms during the flood, while an asker asks the bot again 5 ms after each
  reply; for each marker, the time from publishing it to the first reply that shows it (or a
  later value). mosquitto drops messages for a subscriber that already has max_queued_messages
  (1000 by default) waiting, so a slow bot loses readings (and markers) rather than falling
  ever further behind; what the socket buffers hold still delays the rest.
"""

import argparse
import re
import subprocess
import sys
import time

import common
from common import log

TOPICS = ['bench/temperature', 'LOAD/#']


def simulate(broker, count):
    """Starts the flood: 25 floors × 4 wings × 25 rooms × 4 sensors = 10 000 topics."""
    return subprocess.Popen([str(common.BIN), 'simulate', '--building', 'LOAD', '--floors', '25',
                             '--rooms-per-wing', '25', '--rate', '100000', '--count',
                             str(count), '--qos', '0', '--mqtt-port', str(broker.port),
                             '--seed', '1'],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def fresh(server, broker, bot, samples, interval, base):
    return common.Loadgen('fresh', *common.conn_args(server, prefix='f'), '--to', bot.jid,
                          '--mqtt', f'127.0.0.1:{broker.port}', '--samples', samples,
                          '--interval', interval, '--base', base, '--timeout', '60s')


def bench(bot, server, broker, args):
    out = {}
    bot.start()
    started = common.wait_until_answering(bot, server, broker, 'g')
    idle = fresh(server, broker, bot, 20, '100ms', 500000).wait()
    log(f'  idle freshness: {idle}')
    out['idle_p50'], out['idle_p99'], out['idle_max'] = (idle['p50_ms'], idle['p99_ms'],
                                                        idle['max_ms'])
    cpu_before = common.cpu_seconds(bot.pid())
    flood_started = time.monotonic()
    flood = simulate(broker, args.count)
    during = fresh(server, broker, bot, args.samples, '250ms', 600000)
    flood_output, _ = flood.communicate(timeout=600)
    flood_done = time.monotonic()
    match = re.search(r'published (\d+) messages? in .*?\(([\d.]+) messages/s\)', flood_output)
    if flood.returncode != 0 or not match:
        raise RuntimeError(f'the simulator failed:\n{flood_output[-2000:]}')
    out['published'] = int(match.group(1))
    out['publish_rate'] = float(match.group(2))
    log(f'  flood: {match.group(0)} (wall {flood_done - flood_started:.1f} s)')
    # A marker published right after the flood (by another asker account): once a reply shows
    # it, everything published before it has been read. Its value is above the markers of the
    # run still going, which it settles.
    asked = time.monotonic()
    final = common.wait_until_answering(bot, server, broker, 'g')
    # From the first of its markers (published once the asker is logged in, a few
    # milliseconds after `asked`) to the reply that showed one.
    caught_up = asked + final['p50_ms'] / 1000
    during_result = during.wait()
    log(f'  freshness during the flood: {during_result}')
    out['flood_p50'], out['flood_p99'], out['flood_max'] = (
        during_result['p50_ms'], during_result['p99_ms'], during_result['max_ms'])
    out['flood_missed'] = during_result['missed']
    out['flood_samples'] = during_result['samples']
    out['bot_cpu_s'] = common.cpu_seconds(bot.pid()) - cpu_before
    out['catch_up_s'] = caught_up - flood_done
    accepted = bot.stop()
    # The markers are not part of the flood.
    markers = sum(r['published'] for r in (started, idle, during_result, final))
    out['accepted'] = accepted
    flood_accepted = max(0, (accepted or 0) - markers)
    out['processed_rate'] = flood_accepted / (caught_up - flood_started)
    out['processed_share'] = flood_accepted / out['published'] * 100
    out['cpu_us_per_msg'] = out['bot_cpu_s'] * 1e6 / flood_accepted if flood_accepted else None
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--count', type=int, default=1_000_000, help='readings in the flood')
    ap.add_argument('--samples', type=int, default=40,
                    help='freshness markers during the flood (one every 250 ms)')
    ap.add_argument('--no-build', action='store_true')
    args = ap.parse_args()

    started = time.monotonic()
    if not args.no_build:
        common.build()
    common.raise_nofile()
    print(f'machine: {common.machine()}')
    print('versions: ' + ', '.join(f'{k} {v}' for k, v in common.versions().items()))
    results, notes = {}, []
    with common.Workdir() as work:
        cert, key, _ = common.make_certificate(work)
        broker = common.Mosquitto(work)
        broker.start()
        server = common.Bundled(work, cert, key, extra=[
            '--bytes-per-second', '1000000000', '--burst-bytes', '1000000000'])
        server.add_accounts(['bot', 'pybot', 'f0', 'g0'])
        server.start()
        try:
            results.update(common.each_bot(
                work, server, broker, TOPICS, lambda bot: bench(bot, server, broker, args),
                notes))
        finally:
            server.stop()
            broker.stop()

    kinds = [k for k in ('bridge', 'python') if k in results]
    labels = {'bridge': 'mqtt2xmpp bridge', 'python': 'reference bot (Python)'}
    rows_spec = [
        ('flood published (mosquitto, QoS 0), msg/s', '', 'publish_rate'),
        ('bot processed, msg/s', '↑', 'processed_rate'),
        ('  share of the flood processed, %', '↑', 'processed_share'),
        ('  bot CPU per reading, µs', '↓', 'cpu_us_per_msg'),
        ('  caught up after the flood ended, s', '↓', 'catch_up_s'),
        ('freshness idle p50 / p99, ms', '↓', ('idle_p50', 'idle_p99')),
        ('freshness during the flood p50, ms', '↓', 'flood_p50'),
        ('  p99, ms', '↓', 'flood_p99'),
        ('  max, ms', '↓', 'flood_max'),
    ]
    header = ['', 'better'] + [labels[k] for k in kinds]
    if len(kinds) == 2:
        header.append('bridge/Python')
    rows = []
    for label, better, key in rows_spec:
        row = [label, better]
        for k in kinds:
            if isinstance(key, tuple):
                row.append(' / '.join(common.fmt(results[k].get(x)) for x in key))
            else:
                row.append(common.fmt(results[k].get(key)))
        if len(kinds) == 2:
            k = key[-1] if isinstance(key, tuple) else key
            row.append(common.ratio(results['bridge'].get(k), results['python'].get(k))
                       if better else '')
        rows.append(row)
    print()
    print(common.table(header, rows))
    print()
    print('ratio = bridge ÷ Python: above 1× is better where ↑, below 1× is better where ↓.')
    for k in kinds:
        r = results[k]
        print(f"{labels[k]}: {r['published']} readings published, {r['accepted']} payloads "
              f"accepted in all; of the {args.samples} freshness markers published during the "
              f"flood, {r['flood_missed']} never showed, nor anything later")
    for note in notes:
        print(note)
    print(f'total time {time.monotonic() - started:.0f} s')


if __name__ == '__main__':
    sys.exit(main())
