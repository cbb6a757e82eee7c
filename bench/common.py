"""Shared by the benchmark drivers in bench/: private servers and brokers on free loopback ports,
the load generator, /proc measurements, and the result table.

Every peer runs from a private configuration in a temporary directory (removed at the end) on a
free 127.0.0.1 port; nothing is installed or changed system-wide. Standard library only.
"""

import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / 'target' / 'release' / 'mqtt2xmpp'
LOADGEN = ROOT / 'target' / 'release' / 'examples' / 'loadgen'
# Every benchmark account has this password.
PASSWORD = 'bench-password'
DOMAIN = 'localhost'
# Debian's interpreter, where python3-slixmpp and python3-paho-mqtt live.
PYTHON = '/usr/bin/python3'


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def build():
    """Release builds of the binary and the load generator (cargo skips them when fresh)."""
    log('building: cargo build --release --bin mqtt2xmpp --example loadgen')
    subprocess.run(['cargo', 'build', '--quiet', '--release', '--bin', 'mqtt2xmpp', '--example',
                    'loadgen'],
                   cwd=ROOT, check=True)


def disk_bytes(directory):
    """The bytes of every file under `directory`."""
    return sum(p.stat().st_size for p in Path(directory).rglob('*') if p.is_file())


def raise_nofile(wanted=60000):
    """Raises this process's open-file limit (inherited by every peer it starts)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if os.geteuid() == 0 and hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=1):
            return True
    except OSError:
        return False


def wait_for(what, predicate, timeout=60.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f'timed out after {timeout:.0f} s waiting for {what}')
        time.sleep(interval)


def rss_kib(pid):
    """Resident set size of a process, in KiB (VmRSS)."""
    with open(f'/proc/{pid}/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise RuntimeError(f'no VmRSS for pid {pid}')


def steady_rss_kib(pid, window=3.0, tolerance=0.01, limit=30.0):
    """RSS once it has stopped moving: within `tolerance` over `window` seconds (a garbage
    collector may still be returning memory after a burst), or after `limit` seconds."""
    samples, started = [], time.monotonic()
    while True:
        samples.append((time.monotonic(), rss_kib(pid)))
        recent = [kib for at, kib in samples if at >= samples[-1][0] - window]
        if (samples[-1][0] - samples[0][0] >= window
                and max(recent) - min(recent) <= tolerance * max(recent)):
            return samples[-1][1]
        if time.monotonic() - started > limit:
            return samples[-1][1]
        time.sleep(0.5)


def cpu_seconds(pid):
    """User + system CPU time a process has used so far."""
    with open(f'/proc/{pid}/stat') as stat:
        fields = stat.read().rsplit(')', 1)[1].split()
    # Fields 14 and 15 of proc(5), counted from the state (field 3) here.
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def machine():
    """One line about the machine: cores, CPU model, memory, kernel, and the load right now."""
    model = 'unknown CPU'
    with open('/proc/cpuinfo') as info:
        for line in info:
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    with open('/proc/meminfo') as info:
        total_kib = int(info.readline().split()[1])
    load = os.getloadavg()
    return (f'{os.cpu_count()} cores ({model}), {total_kib / 1048576:.0f} GiB RAM, '
            f'Linux {os.uname().release}; load average at start {load[0]:.2f}')


def versions():
    def first_line(command):
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=30)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return 'not installed'

    packages = {}
    out = subprocess.run(['dpkg-query', '-W', '-f', '${Package} ${Version}\\n', 'prosody',
                          'ejabberd', 'mosquitto', 'python3-slixmpp', 'python3-paho-mqtt',
                          'lua5.4', 'erlang-base'],
                         capture_output=True, text=True)
    for line in out.stdout.splitlines():
        name, _, version = line.partition(' ')
        packages[name] = version
    packages['rustc'] = first_line(['rustc', '--version'])
    return packages


# ---------------------------------------------------------------------------------------------
# Processes


class Process:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name, command, log_path, env=None, cwd=None):
        self.name = name
        self.log_path = Path(log_path)
        self.log_file = open(self.log_path, 'ab')
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, env=env, cwd=cwd)
        self.pid = self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def log(self):
        try:
            return self.log_path.read_text(errors='replace')
        except OSError:
            return ''

    def stop(self, timeout=10.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f'{self.name} did not stop within {timeout:.0f} s of SIGTERM; killing it')
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()
        return self.proc.returncode


def write(path, text, mode=0o600):
    path = Path(path)
    path.write_text(text)
    os.chmod(path, mode)
    return path


def make_certificate(directory):
    """A self-signed P-256 certificate for DOMAIN (ten years: ejabberd refuses longer ones).
    Returns (cert, key, cert+key in one file). All three servers get the same one."""
    directory = Path(directory)
    cert, key, both = directory / 'cert.pem', directory / 'key.pem', directory / 'both.pem'
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:P-256', '-nodes', '-days', '3650', '-subj',
                    f'/CN={DOMAIN}', '-addext', f'subjectAltName=DNS:{DOMAIN}', '-addext',
                    'basicConstraints=critical,CA:FALSE', '-addext',
                    'extendedKeyUsage=serverAuth', '-addext', 'keyUsage=digitalSignature',
                    '-keyout', str(key), '-out', str(cert)],
                   check=True, capture_output=True)
    both.write_text(cert.read_text() + key.read_text())
    for path in (cert, key, both):
        os.chmod(path, 0o644)
    return cert, key, both


# ---------------------------------------------------------------------------------------------
# XMPP servers
#
# Each has: name, port, ca (the certificate clients pin), pid() (the process to measure), and
# add_accounts(names), start(), stop().


class Bundled:
    """`mqtt2xmpp server` with its data in a private directory."""

    name = 'mqtt2xmpp'
    # Whether loadgen's clients enable XEP-0198 (the server always offers it).
    stream_management = False

    def __init__(self, workdir, cert, key, extra=()):
        self.dir = Path(workdir) / 'bundled'
        self.data = self.dir / 'data'
        self.data.mkdir(parents=True)
        self.cert, self.key, self.ca = cert, key, cert
        self.extra = list(extra)
        self.port = free_port()
        self.process = None

    def add_accounts(self, names):
        """One account with `mqtt2xmpp user add`, then copies of its SCRAM verifiers for the
        rest (same password and salt), in one SQLite transaction: 10 000 `user add` runs would
        take minutes."""
        names = list(names)
        pw = write(self.dir / 'password', PASSWORD + '\n')
        template = names[0]
        subprocess.run([str(BIN), 'user', '--data-dir', str(self.data), 'add',
                        f'{template}@{DOMAIN}', '--password-file', str(pw)],
                       check=True, capture_output=True)
        db = sqlite3.connect(self.data / 'server.sqlite', timeout=30)
        with db:
            db.executemany(
                'INSERT INTO accounts (username, created_at) '
                'SELECT ?, created_at FROM accounts WHERE username = ?',
                [(name, template) for name in names[1:]])
            db.executemany(
                'INSERT INTO scram (username, hash, salt, iterations, stored_key, server_key) '
                'SELECT ?, hash, salt, iterations, stored_key, server_key FROM scram '
                'WHERE username = ?',
                [(name, template) for name in names[1:]])
        db.close()

    def set_archive(self, on):
        """The message archive (XEP-0313) on (the default) or off (`--no-archive`) from the
        next start."""
        self.extra = [a for a in self.extra if a != '--no-archive'] + ([] if on else
                                                                       ['--no-archive'])

    def archived(self):
        """Rows in the archive (read while the server is stopped)."""
        db = sqlite3.connect(self.data / 'server.sqlite', timeout=30)
        try:
            return db.execute('SELECT COUNT(*) FROM archive').fetchone()[0]
        finally:
            db.close()

    def start(self):
        command = [str(BIN), 'server', '--listen', f'127.0.0.1:{self.port}', '--data-dir',
                   str(self.data), '--cert', str(self.cert), '--key', str(self.key)] + self.extra
        self.process = Process(self.name, command, self.dir / 'server.log')
        wait_for(f'{self.name} on port {self.port}',
                 lambda: port_open(self.port) or not self.process.alive(), 30)
        if not self.process.alive():
            raise RuntimeError(f'{self.name} exited:\n{self.process.log()}')

    def pid(self):
        return self.process.pid

    def stop(self):
        if self.process:
            self.process.stop()

    def log(self):
        return self.process.log() if self.process else ''


PROSODY_SNIPPET = (ROOT / 'deploy' / 'prosody-mqtt2xmpp.cfg.lua').read_text()


def with_modules(snippet, modules):
    """The Prosody snippet with `modules` added to its `modules_enabled` list."""
    if not modules:
        return snippet
    added = ''.join(f'{lua(m)}, ' for m in modules)
    changed, n = re.subn(r'^modules_enabled = \{ ', lambda m: m.group(0) + added, snippet,
                         count=1, flags=re.M)
    if n != 1:
        raise RuntimeError('the Prosody snippet has no `modules_enabled = { ...` line')
    return changed


def lua(text):
    return '"' + str(text).replace('\\', '\\\\').replace('"', '\\"') + '"'


class Prosody:
    """Prosody 0.12 from `deploy/prosody-mqtt2xmpp.cfg.lua`, as the tests run it (c2s only)."""

    name = 'Prosody'
    stream_management = False

    def __init__(self, workdir, cert, key, extra_config='', modules=()):
        """`modules`: more modules to load, added to the snippet's `modules_enabled` (e.g.
        `smacks`, XEP-0198, which Prosody 0.12 ships but the snippet does not enable)."""
        self.cert_files, self.extra_config, self.modules = (cert, key), extra_config, list(modules)
        self.dir = Path(workdir) / 'prosody'
        self.data = self.dir / 'data'
        self.certs = self.dir / 'certs'
        for d in (self.data, self.certs):
            d.mkdir(parents=True)
        shutil.copy(cert, self.certs / f'{DOMAIN}.crt')
        shutil.copy(key, self.certs / f'{DOMAIN}.key')
        self.ca = cert
        self.port = free_port()
        self.config = self.dir / 'prosody.cfg.lua'
        self.logfile = self.dir / 'prosody.log'
        self._write_config()
        self.process = None

    def set_archive(self, on):
        """Loads mod_mam (XEP-0313, shipped with 0.12) with every message archived
        (`default_archive_policy = true`) in its default storage (`internal`, files under
        data_path) and default expiry (one week), or not; takes effect at the next start."""
        self.modules = [m for m in self.modules if m != 'mam'] + (['mam'] if on else [])
        self.archive_config = 'default_archive_policy = true' if on else ''
        self._write_config()

    archive_config = ''
    muc_config = ''

    def set_muc(self, on):
        """A multi-user chat service (XEP-0045) at conference.DOMAIN, Prosody's `muc`
        component with its defaults, except that new rooms are not locked until configured
        (`muc_room_locking = false`, as the bundled server's instant rooms); takes effect at
        the next start."""
        self.muc_config = (f'Component "conference.{DOMAIN}" "muc"\n'
                           '    muc_room_locking = false\n') if on else ''
        self._write_config()

    def _write_config(self):
        modules, extra_config = self.modules, self.extra_config + '\n' + self.archive_config
        write(self.config, f'''-- Private benchmark server written by bench/common.py
run_as_root = true
pidfile = {lua(self.dir / 'prosody.pid')}
data_path = {lua(self.data)}
certificates = {lua(self.certs)}
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = {lua(self.logfile)} }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.port} }}
c2s_direct_tls_ports = {{}}
legacy_ssl_ports = {{}}
s2s_ports = {{}}
component_ports = {{}}
http_ports = {{}}
https_ports = {{}}
storage = "internal"
modules_disabled = {{ "s2s" }}

-- deploy/prosody-mqtt2xmpp.cfg.lua{', with more modules' if modules else ', verbatim'}:
{with_modules(PROSODY_SNIPPET, modules)}
-- Benchmark settings:
{extra_config}

VirtualHost "{DOMAIN}"
    ssl = {{ certificate = {lua(self.certs / f'{DOMAIN}.crt')}, key = {lua(self.certs / f'{DOMAIN}.key')} }}

{self.muc_config}''')

    def add_accounts(self, names):
        """One account with `prosodyctl register`, then copies of its account file (same
        password and salt) for the rest."""
        names = list(names)
        template = names[0]
        subprocess.run(['prosodyctl', '--config', str(self.config), 'register', template,
                        DOMAIN, PASSWORD], check=True, capture_output=True)
        accounts = self.data / DOMAIN / 'accounts'
        source = (accounts / f'{template}.dat').read_bytes()
        for name in names[1:]:
            assert re.fullmatch(r'[a-z0-9]+', name), name
            (accounts / f'{name}.dat').write_bytes(source)

    def start(self):
        self.process = Process(self.name, ['prosody', '-F', '--config', str(self.config)],
                               self.dir / 'prosody.console.log')
        listening = f"Activated service 'c2s' on [127.0.0.1]:{self.port}"
        wait_for(f'Prosody on port {self.port}',
                 lambda: (listening in self.log() and port_open(self.port))
                 or not self.process.alive(), 30)
        if not self.process.alive():
            raise RuntimeError(f'Prosody exited:\n{self.log()}')

    def pid(self):
        return self.process.pid

    def stop(self):
        if self.process:
            self.process.stop()

    def log(self):
        text = self.logfile.read_text(errors='replace') if self.logfile.exists() else ''
        return text + (self.process.log() if self.process else '')


EJABBERD_CONFIG = (ROOT / 'deploy' / 'ejabberd-mqtt2xmpp.yml').read_text()


class Ejabberd:
    """ejabberd 23.01 from `deploy/ejabberd-mqtt2xmpp.yml` (port and certificate replaced), a
    private node as tests/deploy.rs starts it. Needs root (ejabberdctl runs it as `ejabberd`)."""

    name = 'ejabberd'
    # mod_stream_mgmt is in deploy/ejabberd-mqtt2xmpp.yml: only the clients choose.
    stream_management = False

    def __init__(self, workdir, cert, both, replace=()):
        self.dir = Path(workdir) / 'ejabberd'
        self.logs, self.spool = self.dir / 'logs', self.dir / 'spool'
        for d in (self.logs, self.spool):
            d.mkdir(parents=True)
        self.ca = cert
        certfile = shutil.copy(both, self.dir / 'localhost.pem')
        self.port = free_port()
        lines, used = [], set()
        for line in EJABBERD_CONFIG.splitlines():
            indent = line[:len(line) - len(line.lstrip())]
            if line.strip().startswith('port:'):
                line = f'{indent}port: {self.port}'
            elif line.strip() == '- "/etc/ejabberd/mqtt2xmpp.pem"':
                line = f'{indent}- "{certfile}"'
            for old, new in replace:
                if line.strip() == old:
                    line = '\n'.join(indent + part for part in new.split('\n'))
                    used.add(old)
            lines.append(line)
        unused = [old for old, _ in replace if old not in used]
        if unused:
            raise RuntimeError(f'ejabberd snippet has no line {unused}: update the replacements')
        self.config = write(self.dir / 'ejabberd.yml', '\n'.join(lines) + '\n', 0o644)
        self.node = f'mqtt2xmpp_bench_{os.getpid()}_{int(time.time())}@localhost'
        self.ctl_config = write(self.dir / 'ejabberdctl.cfg', (
            f'ERLANG_NODE={self.node}\n'
            'ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 -kernel inet_dist_use_interface {127,0,0,1}"\n'
            'ERL_EPMD_ADDRESS=127.0.0.1\n'), 0o644)
        self.started_epmd = not self._epmd_names()
        subprocess.run(['chown', '-R', 'ejabberd:ejabberd', str(self.dir)], check=True)
        os.chmod(self.dir, 0o755)
        self.launched = False

    def ctl(self, *args, timeout=120):
        # As root, ejabberdctl starts the node through `su ejabberd`, whose pam_limits resets
        # the open-files limit to 1024: the node then refuses connections past about 990
        # ("Failed TCP accept: too many open files"). Switching to the user without PAM keeps
        # this process's limit.
        switch = ['setpriv', '--reuid', 'ejabberd', '--regid', 'ejabberd', '--init-groups',
                  'env', 'HOME=/var/lib/ejabberd'] if os.geteuid() == 0 else []
        return subprocess.run([*switch, 'ejabberdctl', '--config', str(self.config), '--ctl-config',
                               str(self.ctl_config), '--logs', str(self.logs), '--spool',
                               str(self.spool), *args],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def start(self):
        self.launched = True
        out = self.ctl('start')
        if out.returncode != 0:
            raise RuntimeError(f'ejabberdctl start failed: {out.stdout}{out.stderr}')
        accepting = (f'Start accepting TCP connections at 127.0.0.1:{self.port} '
                     'for ejabberd_c2s')
        wait_for(f'ejabberd on port {self.port}',
                 lambda: accepting in self.log() and port_open(self.port), 90, 0.2)

    def add_accounts(self, names):
        """One account with `ejabberdctl register`; its SCRAM credentials exported with
        `export_piefxis` (XEP-0227) and imported again under every other name in one
        `import_piefxis`, so ejabberd derives no keys (a plain password costs it about 11 ms an
        account, `register` about half a second)."""
        names = list(names)
        template = names[0]
        out = self.ctl('register', template, DOMAIN, PASSWORD)
        if out.returncode != 0:
            raise RuntimeError(f'ejabberdctl register failed: {out.stdout}{out.stderr}')
        export = self.dir / 'export'
        export.mkdir()
        shutil.chown(export, 'ejabberd', 'ejabberd')
        out = self.ctl('export_piefxis', str(export))
        host_files = list(export.glob(f'*_{DOMAIN}.xml'))
        if out.returncode != 0 or len(host_files) != 1:
            raise RuntimeError(f'export_piefxis failed: {out.stdout}{out.stderr}')
        exported = host_files[0].read_text()
        match = re.search(rf"<user name='{template}'>.*?</user>", exported, re.S)
        if not match:
            raise RuntimeError(f'no credentials for {template} in:\n{exported}')
        users = ''.join(match.group(0).replace(f"name='{template}'", f"name='{name}'", 1)
                        for name in names[1:])
        pie = write(self.dir / 'accounts.xml',
                    "<?xml version='1.0' encoding='UTF-8'?>"
                    f"<server-data xmlns='urn:xmpp:pie:0'><host jid='{DOMAIN}'>{users}"
                    '</host></server-data>', 0o644)
        out = self.ctl('import_piefxis', str(pie), timeout=900)
        if out.returncode != 0:
            raise RuntimeError(f'import_piefxis failed: {out.stdout}{out.stderr}')
        registered = self.ctl('registered_users', DOMAIN)
        count = len(registered.stdout.split())
        if count < len(names):
            raise RuntimeError(f'ejabberd has {count} of {len(names)} accounts after import')

    def pid(self):
        """The node's Erlang VM (beam.smp started with -sname NODE)."""
        for entry in os.listdir('/proc'):
            if not entry.isdigit():
                continue
            try:
                args = Path(f'/proc/{entry}/cmdline').read_bytes().split(b'\0')
            except OSError:
                continue
            for a, b in zip(args, args[1:]):
                if a == b'-sname' and b == self.node.encode():
                    return int(entry)
        raise RuntimeError('ejabberd VM not found')

    def _epmd_names(self):
        try:
            out = subprocess.run(['epmd', '-names'], capture_output=True, text=True, timeout=10)
        except OSError:
            return []
        return [line.split()[1] for line in out.stdout.splitlines() if line.startswith('name ')]

    def stop(self):
        if not self.launched:
            return
        self.launched = False
        try:
            pid = self.pid()
        except RuntimeError:
            pid = None
        self.ctl('stop')
        if pid:
            try:
                wait_for('ejabberd to stop', lambda: not Path(f'/proc/{pid}').exists(), 30)
            except RuntimeError:
                os.kill(pid, signal.SIGKILL)
        if self.started_epmd:
            name = self.node.split('@')[0]
            try:
                wait_for('epmd to forget the node', lambda: name not in self._epmd_names(), 10)
            except RuntimeError:
                pass
            if not self._epmd_names():
                subprocess.run(['epmd', '-kill'], capture_output=True)

    def log(self):
        path = self.logs / 'ejabberd.log'
        return path.read_text(errors='replace') if path.exists() else ''


def ejabberd_available():
    return shutil.which('ejabberdctl') is not None and os.geteuid() == 0


def prosody_available():
    return shutil.which('prosody') is not None and shutil.which('prosodyctl') is not None


class Mosquitto:
    """A private mosquitto broker (anonymous, no persistence) on a free loopback port."""

    def __init__(self, workdir):
        self.dir = Path(workdir) / 'mosquitto'
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.config = write(self.dir / 'mosquitto.conf',
                            f'user root\nlistener {self.port} 127.0.0.1\nallow_anonymous true\n'
                            'persistence false\nlog_dest stderr\n')
        self.process = None

    def start(self):
        self.process = Process('mosquitto', ['mosquitto', '-c', str(self.config)],
                               self.dir / 'mosquitto.log')
        wait_for('mosquitto', lambda: port_open(self.port) or not self.process.alive(), 20)
        if not self.process.alive():
            raise RuntimeError(f'mosquitto exited:\n{self.process.log()}')

    def stop(self):
        if self.process:
            self.process.stop()


# ---------------------------------------------------------------------------------------------
# The load generator


class Loadgen:
    """One run of examples/loadgen. `watch` maps a label to a pid whose CPU time is read at the
    run's `MARK start` and `MARK end` lines; `cpu` then holds the seconds used in between."""

    def __init__(self, mode, *args, watch=None, stdin=False):
        self.command = [str(LOADGEN), mode, *[str(a) for a in args]]
        self.watch = watch or {}
        self.marks = {}
        self.lines = []
        self.ready_count = 0
        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, text=True,
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith('MARK '):
                self.marks[line[5:]] = ({label: cpu_seconds(pid)
                                         for label, pid in self.watch.items()
                                         if Path(f'/proc/{pid}').exists()},
                                        time.monotonic())
            elif line.startswith('READY'):
                self.ready_count = int(line.split()[1])
                self.ready.set()
            elif line:
                self.lines.append(line)
        self.ready.set()

    def wait(self, timeout=600):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise RuntimeError(f'loadgen did not finish within {timeout} s: {self.command}')
        self.reader.join(10)
        if self.proc.returncode != 0 or not self.lines:
            raise RuntimeError(f'loadgen failed ({self.proc.returncode}): {self.command}')
        return json.loads(self.lines[-1])

    def release(self):
        """Idle mode: close standard input, so it lets the connections go."""
        if self.proc.stdin:
            self.proc.stdin.close()

    def cpu(self, label):
        """CPU seconds `label` used between the run's two marks (None if not measured)."""
        try:
            start, end = self.marks['start'][0], self.marks['end'][0]
            return end[label] - start[label]
        except KeyError:
            return None


def run_loadgen(mode, *args, watch=None, timeout=600):
    run = Loadgen(mode, *args, watch=watch)
    result = run.wait(timeout)
    result['cpu'] = {label: run.cpu(label) for label in (watch or {})}
    return result


def conn_args(server, prefix='u', first=0):
    """How loadgen reaches `server`; with `--stream-management` when the server's
    `stream_management` is set (XEP-0198 on every connection)."""
    return ['--server', f'127.0.0.1:{server.port}', '--ca', server.ca, '--password', PASSWORD,
            '--prefix', prefix, '--first', first] + (
                ['--stream-management'] if getattr(server, 'stream_management', False) else [])


# ---------------------------------------------------------------------------------------------
# The table


def fmt(value, digits=1):
    if value is None:
        return '–'
    if isinstance(value, str):
        return value
    if abs(value) >= 100:
        return f'{value:,.0f}'
    return f'{value:.{digits}f}' if abs(value) >= 1 else f'{value:.{max(digits, 2)}f}'


def ratio(ours, theirs):
    if ours is None or theirs is None or isinstance(ours, str) or isinstance(theirs, str) \
            or not theirs:
        return '–'
    return f'{ours / theirs:.2f}×'


def table(header, rows):
    """A Markdown table; rows are lists of cells (already strings)."""
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    line = lambda cells: '| ' + ' | '.join(str(c).ljust(w) for c, w in zip(cells, widths)) + ' |'
    out = [line(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
    out += [line(row) for row in rows]
    return '\n'.join(out)


class Workdir:
    """A temporary directory readable by the `ejabberd` user, removed at the end."""

    def __enter__(self):
        self.path = Path(tempfile.mkdtemp(prefix='mqtt2xmpp-bench-'))
        os.chmod(self.path, 0o755)
        return self.path

    def __exit__(self, *exc):
        if os.environ.get('BENCH_KEEP'):
            log(f'kept {self.path}')
        else:
            shutil.rmtree(self.path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Bots


def each_bot(workdir, server, broker, topics, run, notes, **bot_options):
    """Runs `run(bot)` for our bridge (as `bot`) and then for the reference Python bot (as
    `pybot`), one after the other on the same server and broker, and returns their results by
    kind ('bridge', 'python'). A bot that fails is reported in `notes`; the other still runs."""
    results = {}
    for kind, user in (('bridge', 'bot'), ('python', 'pybot')):
        bot = BotProcess(kind, workdir, server, broker, user, topics, **bot_options)
        log(f'--- {bot.name}')
        try:
            results[kind] = run(bot)
            log(f'  {results[kind]}')
        except Exception as e:  # noqa: BLE001 - report and go on
            notes.append(f'{bot.name}: failed: {e}')
            log(f'  {bot.name} failed: {e}\n{bot.log()[-3000:]}')
        finally:
            if bot.process and bot.process.alive():
                bot.stop()
    return results


class BotProcess:
    """Our bridge (`mqtt2xmpp bridge`) or the reference Python bot (bench/reference_bot.py),
    logged in as `user` on `server`, reading `topics` (the first one answers) from `broker`."""

    def __init__(self, kind, workdir, server, broker, user, topics, max_topics=10_100):
        self.kind = kind
        self.name = 'mqtt2xmpp bridge' if kind == 'bridge' else 'reference bot (Python)'
        self.dir = Path(workdir) / f'bot-{kind}'
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jid = f'{user}@{DOMAIN}'
        pw = write(self.dir / 'password', PASSWORD + '\n')
        common = ['--jid', self.jid, '--password-file', str(pw), '--xmpp-server',
                  f'127.0.0.1:{server.port}', '--xmpp-ca', str(server.ca), '--mqtt-port',
                  str(broker.port)]
        if kind == 'bridge':
            # The first topic carries plain numbers, the others JSON ({"value": …}, what
            # `mqtt2xmpp simulate --building` publishes), which the bridge reads through a JSON
            # pointer; the Python bot tries both on every payload. The reply rate limit per
            # contact is raised out of the way (the Python bot has none); --max-topics holds
            # every benchmark topic.
            sensors = [f'name=s0,topic={topics[0]}'] + [
                f'name=s{n},topic={topic},json-pointer=/value'
                for n, topic in enumerate(topics[1:], 1)]
            self.command = [str(BIN), 'bridge', *common,
                            *[arg for spec in sensors for arg in ('--sensor', spec)],
                            '--max-topics', str(max_topics),
                            '--replies-per-minute', '100000', '--reply-burst', '100000']
        else:
            self.command = [PYTHON, str(ROOT / 'bench' / 'reference_bot.py'), *common,
                            *[arg for topic in topics for arg in ('--topic', topic)]]
        self.process = None

    def start(self):
        self.process = Process(self.name, self.command, self.dir / 'bot.log')

    def pid(self):
        return self.process.pid

    def stop(self):
        """Stops the bot; returns the MQTT payloads it accepted (from its last log line)."""
        self.process.stop()
        found = re.findall(r'accepted=(\d+)', self.process.log())
        return int(found[-1]) if found else None

    def log(self):
        return self.process.log() if self.process else ''


def wait_until_answering(bot, server, broker, asker_prefix, timeout=120):
    """Publishes markers (a new one every 250 ms) and asks until a reply shows one: the bot is
    logged in to both sides, subscribed, and has read everything published before that marker.
    Returns the loadgen result; its `p50_ms` is the time from the first marker to that reply."""
    deadline = time.monotonic() + timeout
    while True:
        # A value no earlier marker had, so that only this publication can satisfy the wait.
        wait_until_answering.markers += 1
        base = 4_200_000 + 1000 * wait_until_answering.markers
        try:
            result = run_loadgen('fresh', *conn_args(server, prefix=asker_prefix), '--to',
                                 bot.jid, '--mqtt', f'127.0.0.1:{broker.port}', '--samples', 400,
                                 '--interval', '250ms', '--first-only', '--base', base,
                                 '--timeout', '5s', timeout=300)
            if not result['missed']:
                return result
        except RuntimeError:
            pass
        if time.monotonic() > deadline or not bot.process.alive():
            raise RuntimeError(f'{bot.name} does not answer; log:\n{bot.log()[-3000:]}')
        time.sleep(1)


wait_until_answering.markers = 0
