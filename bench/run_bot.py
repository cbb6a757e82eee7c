#!/usr/bin/python3
"""Bot benchmark: `mqtt2xmpp bridge` against the reference Python bot (bench/reference_bot.py,
slixmpp + paho-mqtt), one after the other in one run, through the same private mosquitto and
the same bundled XMPP server. Prints one table with the ratios bridge/Python.

    bench/run_bot.py               # about 2 minutes

Per bot: RSS once it answers (idle); asks per second and the ask→reply round trip with 1, 10
and 100 concurrent askers in a closed loop (each asker sends the next question when the reply
to the last one arrives), and the bot's CPU time per answer; then 10 000 distinct topics
published once each (LOAD/t0 … LOAD/t9999, under the bot's `LOAD/#` filter) and the RSS with
them cached.
"""

import argparse
import sys
import time

import common
from common import log

TOPICS = ['bench/temperature', 'LOAD/#']
SETTLE = 3.0


def bench(bot, server, broker, args):
    out = {}
    bot.start()
    common.wait_until_answering(bot, server, broker, 'f')
    time.sleep(SETTLE)
    out['rss_idle_mib'] = common.rss_kib(bot.pid()) / 1024
    for askers in args.askers:
        log(f'  {bot.name}: {askers} askers for {args.duration} s')
        result = common.run_loadgen('ask', *common.conn_args(server, prefix='a'), '--to', bot.jid,
                                    '--askers', askers, '--duration', f'{args.duration}s',
                                    '--expect', 'bench/temperature',
                                    watch={'bot': bot.pid(), 'server': server.pid()})
        log(f'    {result}')
        out[f'asks_{askers}'] = result['asks_per_s']
        out[f'p50_{askers}'] = result['p50_ms']
        out[f'p99_{askers}'] = result['p99_ms']
        out[f'max_{askers}'] = result['max_ms']
        replies = result['replies']
        for who in ('bot', 'server'):
            cpu = result['cpu'][who]
            out[f'{who}_cpu_{askers}'] = cpu * 1e6 / replies if replies and cpu is not None else None
        out[f'bad_{askers}'] = result['unexpected'] + result['timeouts'] + result['errors']
    log(f'  {bot.name}: publishing {args.topics} topics')
    # Paced: mosquitto drops what a subscriber has not read once 1 000 messages wait for it,
    # and the point here is the memory of a full cache, not the ingest rate (run_ingest.py).
    published = common.run_loadgen('publish', '--mqtt', f'127.0.0.1:{broker.port}', '--prefix',
                                   'LOAD/t', '--topics', args.topics, '--rate',
                                   args.publish_rate)
    log(f'    {published}')
    # A marker published after them comes back only once the bot has read them all.
    common.wait_until_answering(bot, server, broker, 'f')
    time.sleep(SETTLE)
    out['rss_topics_mib'] = common.rss_kib(bot.pid()) / 1024
    out['bytes_per_topic'] = ((out['rss_topics_mib'] - out['rss_idle_mib']) * 1048576
                              / args.topics)
    out['accepted'] = bot.stop()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--askers', default='1,10,100')
    ap.add_argument('--duration', type=int, default=10, help='seconds per ask run')
    ap.add_argument('--topics', type=int, default=10_000)
    ap.add_argument('--publish-rate', type=int, default=2000, help='topics published per second')
    ap.add_argument('--no-build', action='store_true')
    args = ap.parse_args()
    args.askers = [int(n) for n in args.askers.split(',')]

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
        # The bot's replies are over the bundled server's default 64 KiB/s per connection
        # at these rates: lifted, as in the server benchmark.
        server = common.Bundled(work, cert, key, extra=[
            '--bytes-per-second', '1000000000', '--burst-bytes', '1000000000'])
        server.add_accounts(['bot', 'pybot', 'f0'] + [f'a{n}' for n in range(max(args.askers))])
        server.start()
        try:
            results.update(common.each_bot(
                work, server, broker, TOPICS, lambda bot: bench(bot, server, broker, args),
                notes, max_topics=args.topics + 100))
        finally:
            server.stop()
            broker.stop()

    kinds = [k for k in ('bridge', 'python') if k in results]
    labels = {'bridge': 'mqtt2xmpp bridge', 'python': 'reference bot (Python)'}
    rows_spec = []
    for n in args.askers:
        who = f'{n} asker' + ('s' if n > 1 else '')
        rows_spec += [
            (f'asks/s, {who}', '↑', f'asks_{n}'),
            ('  round trip p50 / p99, ms', '↓', (f'p50_{n}', f'p99_{n}')),
            ('  bot CPU per answer, µs', '↓', f'bot_cpu_{n}'),
        ]
    rows_spec += [
        ('RSS idle, MiB', '↓', 'rss_idle_mib'),
        (f'RSS with {args.topics:,} cached topics, MiB', '↓', 'rss_topics_mib'),
        ('  growth per cached topic, bytes', '↓', 'bytes_per_topic'),
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
            row.append(common.ratio(results['bridge'].get(k), results['python'].get(k)))
        rows.append(row)
    print()
    print(common.table(header, rows))
    print()
    print('ratio = bridge ÷ Python: above 1× is better where ↑, below 1× is better where ↓.')
    for k in kinds:
        bad = {n: results[k][f'bad_{n}'] for n in args.askers if results[k].get(f'bad_{n}')}
        server_cpu = ', '.join(f"{n}: {common.fmt(results[k].get(f'server_cpu_{n}'))}"
                               for n in args.askers)
        print(f'{labels[k]}: server CPU per answer (µs, by askers) {server_cpu}; '
              f'MQTT payloads accepted {results[k].get("accepted")}'
              + (f'; unexpected/timed-out answers {bad}' if bad else ''))
    for note in notes:
        print(note)
    print(f'total time {time.monotonic() - started:.0f} s')


if __name__ == '__main__':
    sys.exit(main())
