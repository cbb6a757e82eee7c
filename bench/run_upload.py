#!/usr/bin/python3
"""Upload benchmark: HTTP File Upload (XEP-0363) on the bundled server (`mqtt2xmpp server
--http-listen`) and on Prosody 0.12 with mod_http_file_share, one after the other in one run,
under the same load from examples/loadgen.rs (`upload` mode), on the same certificate and the
same accounts. Prints one table with the ratios ours/Prosody.

    bench/run_upload.py                 # about a minute on 2 cores

The load: --clients (8) XMPP clients, each in a closed loop for --duration (20) seconds after 2
of warm-up: ask the service upload.localhost for a slot for a file of --size (1 MiB) bytes, PUT
it over a new TLS connection (with the slot's headers, as clients do), and start over when the
server has answered the PUT. Reported: files and megabytes stored per second, the time from
the slot request to the PUT's answer, and the server's CPU time per file (from /proc, over the
measured window).

Both servers get the same limits: 10 MiB files, a quota that the run cannot reach (Prosody's
default daily quota of 100 MB would stop its uploaders within seconds), one-week expiry. Both
write every file to their data directory in a temporary directory (so to the same disk).
Prosody serves HTTPS itself (`https_ports`), its upload URLs naming `localhost` as ours do.
"""

import argparse
import sys
import time

import common
from common import log

BIG_QUOTA = 1 << 40


class ProsodyUpload(common.Prosody):
    """Prosody with `Component "upload.localhost" "http_file_share"` on an HTTPS port of its
    own, the certificate of the run."""

    def __init__(self, workdir, cert, key, size_limit):
        self.http_port = common.free_port()
        super().__init__(workdir, cert, key, extra_config=f'''default_iteration_count = 4096
https_ports = {{ {self.http_port} }}
https_interfaces = {{ "127.0.0.1" }}
https_ssl = {{ certificate = {common.lua(cert)}, key = {common.lua(key)} }}
''')
        self.muc_config = f'''Component "upload.{common.DOMAIN}" "http_file_share"
    http_host = "{common.DOMAIN}"
    http_external_url = "https://{common.DOMAIN}:{self.http_port}/"
    http_file_share_size_limit = {size_limit}
    http_file_share_daily_quota = {BIG_QUOTA}
'''
        self._write_config()


def bench(server, args):
    watch = {'server': server.pid()}
    # Warm-up: a few uploads load every code path.
    common.run_loadgen('upload', *common.conn_args(server), '--clients', 2, '--size',
                       args.size, '--duration', '2s', '--warmup', '1s')
    log(f'  {server.name}: {args.clients} clients uploading {args.size} bytes a file')
    run = common.run_loadgen('upload', *common.conn_args(server, first=10), '--clients',
                             args.clients, '--size', args.size, '--duration',
                             f'{args.duration}s', watch=watch)
    cpu = run['cpu']['server']
    return {
        'files_per_s': run['files_per_s'],
        'mb_per_s': run['mb_per_s'],
        'p50': run['p50_ms'],
        'p99': run['p99_ms'],
        'cpu_ms': cpu * 1000 / run['files'] if run['files'] and cpu is not None else None,
        'cpu_share': cpu / args.duration if cpu is not None else None,
        'refused': run['refused'],
        'errors': run['errors'],
        'rss_mib': common.rss_kib(server.pid()) / 1024,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--servers', default='mqtt2xmpp,prosody')
    ap.add_argument('--clients', type=int, default=8)
    ap.add_argument('--size', type=int, default=1024 * 1024, help='bytes per file')
    ap.add_argument('--duration', type=int, default=20, help='seconds measured')
    ap.add_argument('--no-build', action='store_true')
    args = ap.parse_args()
    wanted = args.servers.lower().split(',')
    started = time.monotonic()
    if not args.no_build:
        common.build()
    accounts = [f'u{n}' for n in range(10 + args.clients)]
    print(f'machine: {common.machine()}')
    print('versions: ' + ', '.join(f'{k} {v}' for k, v in common.versions().items()))

    size_limit = 10 * 1024 * 1024
    results, notes = {}, []
    with common.Workdir() as work:
        cert, key, _both = common.make_certificate(work)
        servers = []
        if 'mqtt2xmpp' in wanted:
            http_port = common.free_port()
            servers.append(common.Bundled(work, cert, key, extra=[
                '--http-listen', f'127.0.0.1:{http_port}',
                '--upload-max-size', str(size_limit), '--upload-quota', str(BIG_QUOTA),
                '--bytes-per-second', '1000000000', '--burst-bytes', '1000000000',
                '--no-archive']))
        if 'prosody' in wanted:
            if common.prosody_available():
                servers.append(ProsodyUpload(work, cert, key, size_limit))
            else:
                notes.append('Prosody: not installed')
        for server in servers:
            log(f'--- {server.name}')
            try:
                server.add_accounts(accounts)
                server.start()
                results[server.name] = bench(server, args)
                log(f'  {server.name}: {results[server.name]}')
            except Exception as e:  # noqa: BLE001 - report and go on with the next server
                notes.append(f'{server.name}: failed: {e}')
                log(f'  {server.name} failed: {e}\n{server.log()[-3000:]}')
            finally:
                server.stop()

    names = [s.name for s in servers if s.name in results]
    ours = results.get('mqtt2xmpp', {})
    others = [n for n in names if n != 'mqtt2xmpp']
    rows_spec = [
        (f'files stored/s ({args.clients} clients, {args.size:,} bytes each)', '↑',
         'files_per_s'),
        ('  MB/s', '↑', 'mb_per_s'),
        ('  slot request to PUT answered, p50 / p99, ms', '↓', ('p50', 'p99')),
        ('  server CPU per file, ms', '↓', 'cpu_ms'),
        ('  server CPU, cores busy', '', 'cpu_share'),
        ('  RSS after the run, MiB', '↓', 'rss_mib'),
    ]
    header = ['', 'better'] + names + [f'ours/{n}' for n in others]
    rows = []
    for label, better, key in rows_spec:
        row = [label, better]
        for n in names:
            if isinstance(key, tuple):
                row.append(' / '.join(common.fmt(results[n].get(k)) for k in key))
            else:
                row.append(common.fmt(results[n].get(key)))
        for n in others:
            k = key[-1] if isinstance(key, tuple) else key
            row.append(common.ratio(ours.get(k), results[n].get(k)) if better else '')
        rows.append(row)
    print()
    print(common.table(header, rows))
    print()
    print('ratio = ours ÷ theirs: above 1× is better where ↑, below 1× is better where ↓.')
    for n in names:
        r = results[n]
        print(f"{n}: {r['refused']} PUTs refused, {r['errors']} clients failed")
    for note in notes:
        print(note)
    print(f'total time {time.monotonic() - started:.0f} s')


if __name__ == '__main__':
    sys.exit(main())
