"""Throwaway PostgreSQL servers (and pgbouncers) that the end-to-end tests start themselves.

Nothing of the system's PostgreSQL is used but its binaries (Debian's postgresql package, found
under /usr/lib/postgresql/<newest>/bin, or $OPSDB_PG_BINDIR): no system cluster, no service.
Each server listens on 127.0.0.1 only, on a free port, and lives in a directory of its own under
/dev/shm (see tmp_parent()), removed when it is cleaned up. PostgreSQL refuses to run as root, so
when the tests run as root every PostgreSQL and pgbouncer program runs as the `postgres` system
user (made by the package), through util-linux's setpriv, which execs in place: the process the
harness holds is the postmaster itself (kill() hits exactly it), and it gets a parent-death
signal, so a test run that dies, even by SIGKILL, takes its servers with it.

Authentication is by password (scram-sha-256) on loopback TCP, for every role including the
superuser `postgres`; unix sockets are off. dsn() puts the password in the URI, as opsdb's --db
takes it. `initdb` runs once per test process into a template that each new cluster copies
(initdb costs seconds, a copy a fraction of one), so every cluster of one run has the same
superuser password and the same system identifier.

Use in a test module:

    pytest_plugins = ["pgharness"]     # the fixtures below, one pg_shared for the whole run
    from pgharness import PgBouncer, PgCluster, PgError

Fixtures
--------
pg_cluster      a started PgCluster of its own (function scope), fsync on
pg_cluster_tls  the same with ssl="required" (pg_hba has only hostssl lines); .ca_file is the CA
pg_shared       ONE cluster for the whole run (session scope): do not stop or reconfigure it
pg_db           a fresh database on pg_shared (a PgDatabase), dropped after the test

Classes
-------
PgCluster(tmpdir, ssl=None|"optional"|"required", fsync=True, settings=None)
    .start() .stop() .kill() .cleanup(), .port, .dsn(user, db, **params), .psql(sql, user, db),
    .create_role(name), .create_db(name, owner), .standby(), .promote(), .current_lsn(),
    .wait_replayed(lsn)
PgBouncer(cluster, pool_mode="transaction")  .start() .stop() .dsn() .psql() .admin()
multi_host_dsn(clusters, user, db, **params)  one libpq URI naming several servers

Every wait is bounded in time. Everything started is stopped and removed by cleanup(), by the
fixtures' teardown even when the test fails, and at the latest when the test process exits;
directories left by a run that was killed are removed by the next run.

PYTEST_DONT_REWRITE: this module has no assert to rewrite, and test modules import it before
pytest reads their pytest_plugins (which would warn that it was imported too early to rewrite).
"""

import atexit
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from conftest import free_port, unique
from pki import Pki

PG_USER = "postgres"  # the system user that runs the servers, and the superuser role's name
TMP_PREFIX = "opsdb-pg-"  # every directory the harness makes under the temporary folder
PGBOUNCER = "/usr/sbin/pgbouncer"
START_TIMEOUT_S = 60
QUERY_TIMEOUT_S = 30
SSL_MODES = (None, "optional", "required")
SUPERUSER_PASSWORD = secrets.token_hex(16)  # of this process's template, so of every cluster
INSTALL_HINT = "scripts/install-deps.sh test installs it (Debian packages postgresql, pgbouncer)"


class PgError(Exception):
    """A PostgreSQL program failed; .stderr holds what it said (psql's error, a log's tail)."""

    def __init__(self, message, stderr=""):
        super().__init__(f"{message}\n{stderr}".rstrip())
        self.stderr = stderr


# ---- programs and processes ------------------------------------------------------------------


def pg_bindir():
    """The directory of the server programs: $OPSDB_PG_BINDIR, else the newest
    /usr/lib/postgresql/<major>/bin holding postgres and initdb."""
    if os.environ.get("OPSDB_PG_BINDIR"):
        dirs = [Path(os.environ["OPSDB_PG_BINDIR"])]
    else:
        found = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if d.parent.name.isdigit()]
        dirs = sorted(found, key=lambda d: int(d.parent.name), reverse=True)
    for d in dirs:
        if all(os.access(d / p, os.X_OK) for p in ("postgres", "initdb", "psql")):
            return d
    raise PgError(f"no PostgreSQL server programs (postgres, initdb, psql) in "
                  f"{[str(d) for d in dirs] or '/usr/lib/postgresql/*/bin'}: {INSTALL_HINT}")


def _clean_env(home=None):
    """The environment of every child: no PG* variable of the caller (PGHOST, PGSSLMODE...
    would change what a connection string says), C locale; HOME is home when given (libpq
    looks for ~/.postgresql/postgresql.crt, and the postgres user cannot read root's HOME)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    if home is not None:
        env["HOME"] = str(home)
    return env


def _as_pg(argv, deathsig="KILL"):
    """argv run as the postgres system user (when we are root), with a parent-death signal
    when started from the main thread (the signal follows the thread that started the child: a
    helper thread's end would kill a server it started)."""
    wrap = ["setpriv"]
    if os.geteuid() == 0:
        wrap += [f"--reuid={PG_USER}", f"--regid={PG_USER}", "--init-groups"]
    if threading.current_thread() is threading.main_thread():
        wrap.append(f"--pdeathsig={deathsig}")
    return [*wrap, "--", *map(str, argv)]


def _run_as_pg(argv, cwd, timeout, what):
    """Runs a short PostgreSQL program as the postgres user; PgError with its output when it
    fails or outlives timeout seconds."""
    try:
        cp = subprocess.run(_as_pg(argv), cwd=cwd, env=_clean_env(cwd), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise PgError(f"{what}: no result after {timeout} s", str(e.stderr or "")) from None
    if cp.returncode != 0:
        raise PgError(f"{what} failed with status {cp.returncode}", cp.stderr + cp.stdout)
    return cp


def _give_to_pg(path):
    if os.geteuid() == 0:
        pw = pwd.getpwnam(PG_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _proc_stat(pid):
    """(state, ppid) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid):
    st = _proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _pids(predicate):
    """Pids of the live processes for which predicate(pid, cmdline) is true."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if _alive(int(entry)) and predicate(int(entry), cmdline):
            out.append(int(entry))
    return out


def processes_under(directory):
    """Pids of the live processes whose command line names directory (a server or pgbouncer
    started in it): how tests check that nothing was left running."""
    return _pids(lambda pid, cmdline: f"{directory}/" in cmdline)


def _wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [p for p in pids if _alive(p)]


def _log_tail(path, lines=30):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---- directories -----------------------------------------------------------------------------


def tmp_parent():
    """Where the servers' directories go: $OPSDB_PG_TMPDIR, else /dev/shm when it is a tmpfs
    with 1 GiB free, else /tmp. On tmpfs fsync stays on and costs nothing: a commit is still
    written before it is acknowledged (a kill -9 of a server loses nothing acknowledged); what
    tmpfs gives up is durability across a crash of the machine, which no test makes. On a disk,
    starting a standby, recovering after kill() and removing a cluster take seconds."""
    if os.environ.get("OPSDB_PG_TMPDIR"):
        return Path(os.environ["OPSDB_PG_TMPDIR"])
    try:
        with open("/proc/mounts") as f:
            shm_is_tmpfs = any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in f)
        st = os.statvfs("/dev/shm")
        if shm_is_tmpfs and st.f_bavail * st.f_frsize >= 1 << 30 and os.access("/dev/shm",
                                                                               os.W_OK):
            return Path("/dev/shm")
    except OSError:
        pass
    return Path("/tmp")


def reap_stale(parent=None):
    """Removes the directories (and kills the processes) that test runs which died left under
    parent (default: the harness's temporary folder). A directory belongs to the process whose
    pid its file `owner` holds; those of live processes are not touched. Returns the removed
    directories."""
    removed = []
    for d in Path(parent or tmp_parent()).glob(TMP_PREFIX + "*"):
        try:
            owner = int((d / "owner").read_text())
        except (OSError, ValueError):
            continue  # not ours, or being made right now
        if owner == os.getpid() or _alive(owner):
            continue
        left = processes_under(d)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        _wait_gone(left, 10)
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


_reaped = False


def _new_dir(name):
    """A new directory for one server, owned by the postgres user (the test's own tmp_path is
    not: pytest makes it 0700 for root)."""
    global _reaped
    if not _reaped:
        reap_stale()
        _reaped = True
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "pg"
    d = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{slug}-", dir=tmp_parent()))
    (d / "owner").write_text(f"{os.getpid()}\n")
    _give_to_pg(d)
    return d


class _Template:
    """The data directory that initdb makes once per process and every cluster copies."""

    dir = None

    @classmethod
    def data(cls):
        if cls.dir is None:
            d = _new_dir("template")
            pwfile = d / "pwfile"
            pwfile.write_text(SUPERUSER_PASSWORD + "\n")
            _give_to_pg(pwfile)
            try:
                # --no-sync: fsync of the fresh files buys nothing here (a kill -9 of a server
                # does not lose the page cache); the servers themselves run with fsync on
                _run_as_pg([pg_bindir() / "initdb", "-D", d / "data", "-U", PG_USER,
                            f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8",
                            "--locale=C", "--wal-segsize=1", "--no-sync", "--no-instructions"],
                           cwd=d, timeout=120, what="initdb")
            except BaseException:
                shutil.rmtree(d, ignore_errors=True)
                raise
            pwfile.unlink()
            cls.dir = d
        return cls.dir / "data"

    @classmethod
    def remove(cls):
        if cls.dir is not None:
            shutil.rmtree(cls.dir, ignore_errors=True)
            cls.dir = None


# ---- connection strings and psql -------------------------------------------------------------


def _quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text):
    return "'" + text.replace("'", "''") + "'"


def _uri(hosts, user, password, db, params):
    auth = quote(user, safe="")
    if password is not None:
        auth += ":" + quote(password, safe="")
    query = urlencode({k: str(v) for k, v in params.items() if v is not None})
    return (f"postgresql://{auth}@{','.join(hosts)}/{quote(db, safe='')}"
            + (f"?{query}" if query else ""))


def multi_host_dsn(clusters, user=PG_USER, db="postgres", **params):
    """One libpq URI naming every cluster in order (as opsdb's --db takes a primary and its
    standbys), e.g. with target_session_attrs="read-write". The password is that of the first
    cluster knowing the user; TLS parameters as dsn() sets them for the first cluster."""
    first = clusters[0]
    password = next((c.passwords[user] for c in clusters if user in c.passwords), None)
    return _uri([f"{c.host}:{c.port}" for c in clusters], user, password, db,
                {**first.client_tls_params(params), **params})


def run_psql(dsn, sql, timeout=QUERY_TIMEOUT_S):
    """Runs sql (one or more statements; psql meta-commands too) through psql on dsn and returns
    its output: unaligned, tuples only, fields separated by |, the rows of every statement one
    per line. PgError (with psql's error in .stderr) when a statement fails, the connection is
    refused or it takes longer than timeout seconds."""
    argv = [pg_bindir() / "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn]
    env = _clean_env()
    env["PGCONNECT_TIMEOUT"] = "10"
    try:
        cp = subprocess.run(argv, input=sql, env=env, capture_output=True, text=True,
                            timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise PgError(f"psql: no result after {timeout} s for: {sql[:200]}",
                      str(e.stderr or "")) from None
    if cp.returncode != 0:
        raise PgError(f"psql failed with status {cp.returncode} for: {sql[:200]}", cp.stderr)
    return cp.stdout.rstrip("\n")


# ---- a cluster -------------------------------------------------------------------------------

_live = []  # clusters and bouncers not cleaned up yet, cleaned up at exit


def _setting(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (int, float)):
        return str(value)
    return _quote_literal(str(value))


class PgCluster:
    """One PostgreSQL server in its own directory, on 127.0.0.1 and a port of its own.

    tmpdir: the test's directory; the CA (for ssl) is made there and the server's log is copied
    there by cleanup(). ssl: None (no TLS), "optional" (TLS offered, plaintext allowed) or
    "required" (pg_hba has only hostssl lines: a plaintext connection is refused). fsync: False
    also turns off synchronous_commit and full_page_writes: faster, but then a kill -9 can lose
    commits already acknowledged, so never for a failover test.
    settings: more postgresql.conf lines, {"max_connections": 50}. Not thread-safe."""

    def __init__(self, tmpdir, ssl=None, fsync=True, settings=None, name="pg", pki=None,
                 passwords=None):
        if ssl not in SSL_MODES:
            raise ValueError(f"ssl must be one of {SSL_MODES}, not {ssl!r}")
        self.tmpdir = Path(tmpdir)
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.ssl = ssl
        self.fsync = fsync
        self.settings = dict(settings or {})
        self.host = "127.0.0.1"
        self.port = None
        self.process = None
        # role -> password; a standby shares its primary's (roles replicate)
        self.passwords = passwords if passwords is not None else {PG_USER: SUPERUSER_PASSWORD}
        self.pki = pki
        if ssl and pki is None:
            self.pki = Pki(self.tmpdir / f"{name}-pki")
        self.ca_file = self.pki.ca if ssl else None
        self.dir = _new_dir(name)
        self.datadir = self.dir / "data"
        self.log_file = self.dir / "postgres.log"
        self._dependents = []  # standbys and bouncers, cleaned up with this cluster
        self._standbys = 0
        _live.append(self)

    def __repr__(self):
        return f"<PgCluster {self.name} 127.0.0.1:{self.port} {self.dir}>"

    # -- configuration

    def _write_tls_files(self):
        cert, key = self.pki.server_cert(f"{self.name}-server", secrets.randbelow(2**31) + 1,
                                         alt_names="IP:127.0.0.1,DNS:localhost")
        # the server reads these as the postgres user: copies in its own directory (the key
        # must be 0600 and the server's)
        for src, dst in ((cert, "server.crt"), (key, "server.key"), (self.pki.ca, "ca.crt")):
            shutil.copyfile(src, self.dir / dst)
            os.chmod(self.dir / dst, 0o600)
            _give_to_pg(self.dir / dst)

    def _write_config(self):
        lines = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": "",
            "max_connections": 100,
            "shared_buffers": "16MB",
            "fsync": self.fsync,
            "synchronous_commit": self.fsync,
            "full_page_writes": self.fsync,
            "wal_level": "replica",
            "max_wal_senders": 10,
            "wal_keep_size": "128MB",
            "hot_standby": True,
            "password_encryption": "scram-sha-256",
            "timezone": "UTC",
            "log_timezone": "UTC",
            "log_line_prefix": "%m [%p] %q%u@%d ",
            "ssl": bool(self.ssl),
        }
        if self.ssl:
            lines.update(ssl_cert_file=str(self.dir / "server.crt"),
                         ssl_key_file=str(self.dir / "server.key"))
        lines.update(self.settings)
        conf = "".join(f"{k} = {_setting(v)}\n" for k, v in lines.items())
        (self.datadir / "postgresql.conf").write_text(conf)
        kind = "hostssl" if self.ssl == "required" else "host"
        (self.datadir / "pg_hba.conf").write_text(
            f"{kind} all all 127.0.0.1/32 scram-sha-256\n"
            f"{kind} replication all 127.0.0.1/32 scram-sha-256\n")
        for f in ("postgresql.conf", "pg_hba.conf"):
            _give_to_pg(self.datadir / f)

    def client_tls_params(self, params):
        """The TLS parameters dsn() adds for a client of this cluster when params name no
        sslmode: verify-full against the test CA (or nothing, without TLS)."""
        if not self.ssl or "sslmode" in params:
            return {}
        return {"sslmode": "verify-full", "sslrootcert": str(self.ca_file)}

    # -- life

    @property
    def pid(self):
        """The postmaster's pid while it runs, else None."""
        return self.process.pid if self.process and self.process.poll() is None else None

    def start(self, timeout=START_TIMEOUT_S):
        """Starts the server (initialising the directory on the first start) and returns when it
        accepts connections (a standby: when it accepts read-only ones). Keeps its port across
        restarts; the first start moves to another port when the chosen one was taken."""
        if self.pid:
            return self
        if not self.datadir.exists():
            _run_as_pg(["cp", "-a", _Template.data(), self.datadir], cwd=self.dir, timeout=60,
                       what="copying the template cluster")
        if self.ssl and not (self.dir / "server.crt").exists():
            self._write_tls_files()
        fixed_port = self.port is not None
        for _ in range(1 if fixed_port else 3):
            if not fixed_port:
                self.port = free_port()
            self._write_config()
            if self._spawn(timeout):
                return self
        raise PgError(f"postgres {self.name}: port {self.port} stays taken",
                      _log_tail(self.log_file))

    def _spawn(self, timeout):
        """Starts the postmaster and waits until it is ready: True; False when the port was
        taken; PgError when it fails otherwise or is not ready within timeout seconds."""
        log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                _as_pg([pg_bindir() / "postgres", "-D", self.datadir], deathsig="QUIT"),
                cwd=self.dir, env=_clean_env(self.dir), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                with open(self.log_file, "rb") as f:
                    f.seek(log_start)
                    said = f.read().decode(errors="replace")
                if "could not bind" in said or "could not create any TCP/IP sockets" in said:
                    return False
                raise PgError(f"postgres {self.name} exited with status "
                              f"{self.process.returncode} while starting", said[-3000:])
            if self._status() in ("ready", "standby"):
                return True
            time.sleep(0.02)
        self._terminate(signal.SIGKILL, 10)
        raise PgError(f"postgres {self.name}: not ready after {timeout} s",
                      _log_tail(self.log_file))

    def _status(self):
        """The postmaster's status line in postmaster.pid (what pg_ctl reads), when the file
        is this process's."""
        try:
            lines = (self.datadir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        if len(lines) < 8 or lines[0].strip() != str(self.process.pid):
            return None
        return lines[7].strip()

    def _terminate(self, sig, timeout):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def stop(self, timeout=30, immediate=False):
        """A fast shutdown (SIGINT: sessions are ended, a checkpoint is written), or with
        immediate an immediate one (SIGQUIT: no checkpoint, the next start recovers); SIGKILL
        after timeout seconds. Returns when the server's processes are gone, with the
        postmaster's exit status (None when it was not running)."""
        if self.process is None or self.process.poll() is not None:
            return None
        children = self._children()
        self._terminate(signal.SIGQUIT if immediate else signal.SIGINT, timeout)
        _wait_gone(children, 10)
        return self.process.returncode

    def _children(self):
        pid = self.pid
        return _pids(lambda p, _: (_proc_stat(p) or ("", 0))[1] == pid) if pid else []

    def kill(self, children=True):
        """The server dies as its machine would: SIGKILL to the postmaster and, with children
        (the default), to all its processes at the same moment, so nothing of it writes or
        streams after kill() returns. children=False kills the postmaster only and waits for
        its processes to notice and exit (PostgreSQL's own crash). Returns when all are gone."""
        if not self.pid:
            return
        victims = self._children()
        self.process.kill()
        if children:
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.process.wait(10)
        left = _wait_gone(victims, 30)
        if left:
            raise PgError(f"postgres {self.name}: processes {left} outlived the postmaster")

    def cleanup(self):
        """Stops everything started from this cluster (standbys, bouncers) and the server,
        copies the log to tmpdir and removes the server's directory. Idempotent."""
        for dep in self._dependents:
            dep.cleanup()
        try:
            self.stop(immediate=True)  # its data is thrown away: no checkpoint
        finally:
            if self.process is not None and self.process.poll() is None:
                self.process.kill()
            if self.dir.exists():
                try:
                    shutil.copyfile(self.log_file, self.tmpdir / f"{self.name}.log")
                except OSError:
                    pass
                left = processes_under(self.dir)
                for pid in left:
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(left, 10)
                shutil.rmtree(self.dir, ignore_errors=True)
            if self in _live:
                _live.remove(self)

    # -- clients

    def dsn(self, user=PG_USER, db="postgres", password=None, host=None, **params):
        """A libpq URI to this server: user's password as known to this cluster (create_role
        records it) unless password is given, host 127.0.0.1 unless given (e.g. "localhost"),
        and params as URI parameters (connect_timeout=10 unless given). On a TLS cluster,
        sslmode=verify-full and sslrootcert=<the test CA> unless params name an sslmode."""
        params = {"connect_timeout": 10, **self.client_tls_params(params), **params}
        if password is None:
            password = self.passwords.get(user)
        return _uri([f"{host or self.host}:{self.port}"], user, password, db, params)

    def psql(self, sql, user=PG_USER, db="postgres", timeout=QUERY_TIMEOUT_S, **params):
        """run_psql(self.dsn(user, db, **params), sql): the rows as text."""
        return run_psql(self.dsn(user, db, **params), sql, timeout)

    def create_role(self, name, password=None, attributes="LOGIN"):
        """Creates a role (by default a login role with a random password) and records its
        password for dsn(); returns the password."""
        password = password or secrets.token_hex(12)
        self.psql(f"CREATE ROLE {_quote_ident(name)} {attributes} "
                  f"PASSWORD {_quote_literal(password)}")
        self.passwords[name] = password
        return password

    def create_db(self, name, owner=PG_USER):
        self.psql(f"CREATE DATABASE {_quote_ident(name)} OWNER {_quote_ident(owner)}")
        return name

    def drop_db(self, name):
        """Drops a database, ending the sessions still connected to it."""
        self.psql(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")

    # -- replication

    def current_lsn(self):
        """The primary's current WAL write position (after a commit returns, at or past it)."""
        return self.psql("SELECT pg_current_wal_lsn()")

    def standby(self, name=None, timeout=START_TIMEOUT_S):
        """A started streaming standby of this (running) server: pg_basebackup -R into a new
        directory, its own port, the same TLS mode, settings and CA. Cleaned up with this
        cluster. Its primary_conninfo names this server's port only."""
        self._standbys += 1
        sb = PgCluster(self.tmpdir, ssl=self.ssl, fsync=self.fsync, settings=self.settings,
                       name=name or f"{self.name}-standby{self._standbys}", pki=self.pki,
                       passwords=self.passwords)
        self._dependents.append(sb)
        if sb.ssl:
            sb._write_tls_files()
        # the walreceiver reads the CA as the postgres user: the standby's copy
        conninfo = self.dsn(application_name=sb.name,
                            **({"sslrootcert": str(sb.dir / "ca.crt"), "sslmode": "verify-full"}
                               if self.ssl else {}))
        _run_as_pg([pg_bindir() / "pg_basebackup", "-d", conninfo, "-D", sb.datadir, "-R",
                    "-X", "stream", "-c", "fast", "--no-sync"],
                   cwd=sb.dir, timeout=timeout, what=f"pg_basebackup of {self.name}")
        return sb.start(timeout)

    def promote(self, timeout=START_TIMEOUT_S):
        """Promotes this standby (pg_ctl promote) and returns when it accepts writes."""
        _run_as_pg([pg_bindir() / "pg_ctl", "promote", "-D", self.datadir, "-w", "-t",
                    str(timeout)], cwd=self.dir, timeout=timeout + 10,
                   what=f"pg_ctl promote of {self.name}")
        in_recovery = self.psql("SELECT pg_is_in_recovery()")
        if in_recovery != "f":
            raise PgError(f"postgres {self.name}: still in recovery after promote",
                          _log_tail(self.log_file))

    def wait_replayed(self, lsn, timeout=30):
        """Returns when this standby has replayed the WAL up to lsn (e.g. current_lsn() of its
        primary after a commit); PgError after timeout seconds."""
        if not re.fullmatch(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}", lsn):
            raise ValueError(f"{lsn!r} is not an LSN (like 0/3000148)")
        deadline = time.monotonic() + timeout
        replayed = None
        while time.monotonic() < deadline:
            replayed, done = self.psql(
                f"SELECT pg_last_wal_replay_lsn(), pg_last_wal_replay_lsn() >= '{lsn}'"
            ).split("|")
            if done == "t":
                return
            time.sleep(0.05)
        raise PgError(f"postgres {self.name}: replayed up to {replayed} only, not {lsn}, "
                      f"after {timeout} s", _log_tail(self.log_file))


# ---- pgbouncer -------------------------------------------------------------------------------


def _bouncer_quote(text):
    """A userlist.txt field: in double quotes, a double quote doubled."""
    return '"' + text.replace('"', '""') + '"'


class PgBouncer:
    """A pgbouncer in front of a cluster, on 127.0.0.1 and a port of its own, with its own ini
    and userlist (every role the cluster's .passwords knows when start() or reload() runs, by
    scram-sha-256). Every database name is passed through to the cluster (`* =` entry); the
    admin console is database "pgbouncer" for the superuser. pool_size is default_pool_size and
    max_db_connections: the server connections per database and user."""

    def __init__(self, cluster, pool_mode="transaction", pool_size=20, settings=None,
                 name="pgbouncer"):
        if pool_mode not in ("session", "transaction", "statement"):
            raise ValueError(f"pool_mode must be session, transaction or statement, "
                             f"not {pool_mode!r}")
        if not os.access(PGBOUNCER, os.X_OK):
            raise PgError(f"{PGBOUNCER} is missing: {INSTALL_HINT}")
        self.cluster = cluster
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.settings = dict(settings or {})
        self.name = name
        self.host = "127.0.0.1"
        self.port = None
        self.process = None
        self.dir = _new_dir(name)
        self.log_file = self.dir / "pgbouncer.log"
        cluster._dependents.append(self)
        _live.append(self)

    def _write_files(self):
        users = "".join(f"{_bouncer_quote(u)} {_bouncer_quote(p)}\n"
                        for u, p in self.cluster.passwords.items())
        (self.dir / "userlist.txt").write_text(users)
        server_tls = {}
        if self.cluster.ssl:
            shutil.copyfile(self.cluster.ca_file, self.dir / "ca.crt")
            server_tls = {"server_tls_sslmode": "verify-full",
                          "server_tls_ca_file": self.dir / "ca.crt"}
        ini = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": "",
            "auth_type": "scram-sha-256",
            "auth_file": self.dir / "userlist.txt",
            "admin_users": PG_USER,
            "pool_mode": self.pool_mode,
            "default_pool_size": self.pool_size,
            "max_db_connections": self.pool_size,
            "max_client_conn": 200,
            "ignore_startup_parameters": "extra_float_digits",
            **server_tls,
            **self.settings,
        }
        (self.dir / "pgbouncer.ini").write_text(
            f"[databases]\n* = host={self.cluster.host} port={self.cluster.port}\n\n"
            "[pgbouncer]\n" + "".join(f"{k} = {v}\n" for k, v in ini.items()))
        for f in ("userlist.txt", "pgbouncer.ini", "ca.crt"):
            if (self.dir / f).exists():
                _give_to_pg(self.dir / f)

    def start(self, timeout=START_TIMEOUT_S):
        """Starts pgbouncer (in the foreground, as the postgres user) and returns when it
        listens; another port when the chosen one was taken."""
        if self.process is not None and self.process.poll() is None:
            return self
        for _ in range(3):
            self.port = free_port()
            self._write_files()
            if self._spawn(timeout):
                return self
        raise PgError(f"{self.name}: no free port", _log_tail(self.log_file))

    def _spawn(self, timeout):
        log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                _as_pg([PGBOUNCER, self.dir / "pgbouncer.ini"], deathsig="KILL"),
                cwd=self.dir, env=_clean_env(self.dir), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_file, "rb") as f:
                f.seek(log_start)
                said = f.read().decode(errors="replace")
            if self.process.poll() is not None:
                if "Address already in use" in said:
                    return False
                raise PgError(f"{self.name} exited with status {self.process.returncode}",
                              said[-3000:])
            if "process up" in said:
                return True
            time.sleep(0.02)
        self.stop()
        raise PgError(f"{self.name}: not up after {timeout} s", _log_tail(self.log_file))

    def reload(self):
        """Rewrites the userlist (roles created since start) and makes pgbouncer reread it."""
        self._write_files()
        self.process.send_signal(signal.SIGHUP)

    def stop(self, timeout=10):
        """SIGTERM (immediate shutdown: clients are disconnected), SIGKILL after timeout s."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode if self.process else None

    def cleanup(self):
        try:
            self.stop()
        finally:
            if self.dir.exists():
                try:
                    shutil.copyfile(self.log_file, self.cluster.tmpdir / f"{self.name}.log")
                except OSError:
                    pass
                shutil.rmtree(self.dir, ignore_errors=True)
            if self in _live:
                _live.remove(self)

    def dsn(self, user=PG_USER, db="postgres", password=None, **params):
        """A libpq URI to the cluster through this pgbouncer (plaintext from client to
        pgbouncer; pgbouncer to the server verifies TLS when the cluster has it)."""
        if password is None:
            password = self.cluster.passwords.get(user)
        return _uri([f"{self.host}:{self.port}"], user, password, db,
                    {"connect_timeout": 10, "sslmode": "disable", **params})

    def psql(self, sql, user=PG_USER, db="postgres", timeout=QUERY_TIMEOUT_S, **params):
        return run_psql(self.dsn(user, db, **params), sql, timeout)

    def admin(self, sql, timeout=QUERY_TIMEOUT_S):
        """A command on the admin console (SHOW POOLS, SHOW CLIENTS, ...), as the superuser."""
        return self.psql(sql, db="pgbouncer", timeout=timeout)


def cleanup_all():
    """Cleans up every cluster and pgbouncer not cleaned up yet, and the template: run at exit
    of the test process (a last resort: fixtures clean up their own)."""
    for obj in reversed(list(_live)):
        try:
            obj.cleanup()
        except Exception:  # noqa: BLE001 - at exit, go on with the others
            pass
    _Template.remove()


atexit.register(cleanup_all)


# ---- fixtures --------------------------------------------------------------------------------


class PgDatabase:
    """One database of a cluster: .cluster, .name, .dsn(user, **params), .psql(sql, user)."""

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name

    def dsn(self, user=PG_USER, **params):
        return self.cluster.dsn(user, self.name, **params)

    def psql(self, sql, user=PG_USER, timeout=QUERY_TIMEOUT_S, **params):
        return self.cluster.psql(sql, user, self.name, timeout, **params)


@pytest.fixture
def pg_cluster(tmp_path):
    """A started cluster of the test's own (fsync on, no TLS), cleaned up after the test."""
    cluster = PgCluster(tmp_path / "pg")
    try:
        yield cluster.start()
    finally:
        cluster.cleanup()


@pytest.fixture
def pg_cluster_tls(tmp_path):
    """A started cluster that requires TLS; .ca_file is the CA that signed its certificate (for
    127.0.0.1 and localhost)."""
    cluster = PgCluster(tmp_path / "pg", ssl="required")
    try:
        yield cluster.start()
    finally:
        cluster.cleanup()


_shared = {}


@pytest.fixture(scope="session")
def pg_shared(tmp_path_factory):
    """One cluster for the whole run (fsync on, no TLS). Tests take a database of their own
    (pg_db) and must not stop or reconfigure it. Started once even when several modules import
    this fixture instead of naming pgharness in pytest_plugins."""
    try:
        if "cluster" not in _shared:
            _shared["cluster"] = PgCluster(tmp_path_factory.mktemp("pg-shared"), name="shared")
            _shared["cluster"].start()
        yield _shared["cluster"]
    finally:
        cluster = _shared.pop("cluster", None)
        if cluster is not None:
            cluster.cleanup()


@pytest.fixture
def pg_db(pg_shared):
    """A fresh database on pg_shared owned by the superuser, dropped after the test."""
    name = unique("db").lower()
    pg_shared.create_db(name)
    try:
        yield PgDatabase(pg_shared, name)
    finally:
        if pg_shared.pid:
            pg_shared.drop_db(name)
