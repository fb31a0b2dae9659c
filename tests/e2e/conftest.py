"""Shared harness of the end-to-end tests: start the real opsdb binary and talk to it like a user.

Every test here drives the binary named by the environment variable OPSDB_BIN (default
/work/main/build/asan/opsdb, the sanitizer build) through HTTP and the command line only.

Fixtures
--------
opsdb_bin       path of the binary (the session fails early when it is missing)
tmp_db          path of a fresh database file in the test's temporary directory
server_factory  starts servers: ``server_factory("--set", "query.max_rows=5", env={...})``;
                servers run with --no-collect (no rows of their own host in system_metrics)
                unless started with ``collect=True``
server          one server on a fresh database with the default configuration
run_cli         ``run_cli("query", "SELECT 1", "--db", path, input=None)`` -> CompletedProcess

Every server listens on 127.0.0.1 only, on a free port. Servers still running when a test ends
are stopped with SIGTERM by the factory, and the test errors unless the exit status is 0 and the
standard error has no sanitizer report: every test is also a leak and undefined-behaviour check.

Every wait in this harness is bounded in time and in iterations.
"""

import json
import os
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

DEFAULT_BIN = "/work/main/build/asan/opsdb"

# Lines that mean the sanitizers found something (ASan, LSan, UBSan).
SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
)

HTTP_TIMEOUT_S = 30  # default timeout of one HTTP request made through Server helpers


def opsdb_bin_path():
    """The binary under test: $OPSDB_BIN or the default sanitizer build."""
    return os.environ.get("OPSDB_BIN", DEFAULT_BIN)


def child_env(extra=None):
    """Environment for a child opsdb process.

    OPSDB_<OPTION> variables of the caller's environment are removed (they would override the
    options a test sets; OPSDB_BIN is kept), sanitizer options get strict defaults unless the
    caller set them, and ``extra`` (a dict; a value of None removes the variable) is applied last.
    The default alert rules are off (OPSDB_ALERTING_DEFAULT_RULES=off): they would write
    alert_history rows about every test's data. A test of them removes the variable with
    ``extra={"OPSDB_ALERTING_DEFAULT_RULES": None}``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSDB_") or k == "OPSDB_BIN"}
    env["OPSDB_ALERTING_DEFAULT_RULES"] = "off"
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def sanitizer_reports(text):
    """The lines of ``text`` that are sanitizer reports (empty list when clean)."""
    return [line for line in text.splitlines() if any(p in line for p in SANITIZER_PATTERNS)]


def assert_no_sanitizer_reports(text, what="opsdb"):
    """Fails the test when ``text`` (a process's stderr) holds a sanitizer report."""
    reports = sanitizer_reports(text)
    assert not reports, f"{what} reported sanitizer errors:\n{text[-20000:]}"


def is_sanitizer_build(path=None):
    """True when the binary (default: the one under test) is built with AddressSanitizer. Tests
    marked xfail for a memory bug use it as their condition: a release build may run past the
    bug without noticing it."""
    try:
        with open(path or opsdb_bin_path(), "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (the server may still lose a race;
    Server.start retries with another port when the bind fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_listens_on(pid, port):
    """True when process pid holds a TCP socket listening on port (read from /proc), so a
    server that lost the port to another process is not mistaken for a healthy one. None when
    /proc cannot tell (then callers rely on /healthz alone)."""
    inodes = set()
    try:
        for name in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(name) as f:
                    next(f)
                    for line in f:
                        parts = line.split()
                        if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                            inodes.add(parts[9])
            except FileNotFoundError:
                continue
        fds = os.listdir(f"/proc/{pid}/fd")
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def run_cli(*args, input=None, env=None, timeout=60, bin_path=None, check_sanitizers=True):
    """Runs ``opsdb ARGS...`` and returns the subprocess.CompletedProcess.

    input: str (text mode: stdout/stderr are str) or bytes (binary mode: they are bytes) fed to
    stdin; None gives an empty stdin. env: extra environment (see child_env). The exit status is
    not checked (tests assert on .returncode), but a sanitizer report in stderr fails the test
    unless check_sanitizers is False.
    """
    binary = bin_path or opsdb_bin_path()
    text = not isinstance(input, (bytes, bytearray))
    cp = subprocess.run(
        [binary, *[str(a) for a in args]],
        input=input if input is not None else ("" if text else b""),
        capture_output=True,
        text=text,
        errors="replace" if text else None,
        env=child_env(env),
        timeout=timeout,
    )
    if check_sanitizers:
        err = cp.stderr if text else cp.stderr.decode("utf-8", "replace")
        assert_no_sanitizer_reports(err, f"opsdb {' '.join(str(a) for a in args)}")
    return cp


class ServerStartError(Exception):
    """The server process exited or never answered /healthz."""


class Server:
    """One `opsdb serve` process on a database file, listening on 127.0.0.1.

    Attributes: url ("http://127.0.0.1:PORT"), port, db (Path of the database file), args (the
    extra command-line arguments), proc (the subprocess.Popen while running, else None),
    returncode (exit status of the last run).

    Construct through the ``server_factory`` fixture, which starts it and stops it at the end of
    the test. Methods: start(), stop(), kill9(), restart(), stderr_text(), and HTTP helpers get(),
    post(), query(), count(), ingest().
    """

    def __init__(self, binary, db, workdir, args=(), env=None, config=None, port=None,
                 start_timeout=30.0, collect=False):
        """binary: the opsdb executable. db: database path. workdir: directory for logs and the
        config file. args: extra arguments after `serve --db DB --listen ADDR`, e.g.
        ("--set", "query.timeout=200ms"). env: extra environment (see child_env). config: text
        of a YAML configuration file, written to workdir and passed with --config. port: a
        fixed port (default: a free one). start_timeout: seconds to wait for /healthz.
        collect: True lets the server collect its own host (without it, --no-collect is
        passed, so tests that count system_metrics rows see only their own)."""
        self.binary = str(binary)
        self.db = Path(db)
        self.workdir = Path(workdir)
        self.args = [str(a) for a in args]
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self.collect = collect
        self.port = port
        self.fixed_port = port is not None
        self.proc = None
        self.returncode = None
        self.runs = 0
        self._id = f"{self.db.stem}-{id(self):x}"
        self.stderr_path = self.workdir / f"opsdb-{self._id}.stderr"
        self.stdout_path = self.workdir / f"opsdb-{self._id}.stdout"
        self._run_offset = 0  # where the current run's stderr starts in stderr_path
        self.scheme = "http"  # "https" for a server given --tls-cert (set before start())
        self.config_path = None
        if config is not None:
            self.config_path = self.workdir / f"opsdb-{self._id}.yaml"
            self.config_path.write_text(config)
        self.session = requests.Session()

    # ---- lifecycle --------------------------------------------------------------------------

    @property
    def url(self):
        """Base URL, e.g. http://127.0.0.1:40123 (no trailing slash)."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def command(self):
        """The argv the server is (or will be) started with."""
        cmd = [self.binary, "serve", "--db", str(self.db), "--listen", f"127.0.0.1:{self.port}"]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        if not self.collect:
            cmd.append("--no-collect")
        return cmd + self.args

    def start(self):
        """Starts the process and waits (bounded by start_timeout) until GET /healthz is 200.
        Retries up to 5 times on another free port when the port was taken. Raises
        ServerStartError with the stderr when the server exits or never gets healthy."""
        assert not self.running, "server already running"
        last_error = None
        for _attempt in range(5):
            if self.port is None:
                self.port = free_port()
            try:
                self._start_once()
                return self
            except ServerStartError as exc:
                last_error = exc
                if "cannot listen" not in str(exc) or self.fixed_port:
                    raise
                self.port = None  # the port was taken: try another one
        raise last_error

    def _start_once(self):
        with open(self.stderr_path, "ab") as f:
            self._run_offset = f.tell()
        err = open(self.stderr_path, "ab")
        out = open(self.stdout_path, "ab")
        try:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, env=child_env(self.env),
                                         cwd=self.workdir)
        finally:
            err.close()
            out.close()
        self.runs += 1
        self.returncode = None
        deadline = time.monotonic() + self.start_timeout
        for _ in range(int(self.start_timeout / 0.05) + 1):
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                self.proc = None
                raise ServerStartError(
                    f"opsdb serve exited with {rc} during start:\n{self.run_stderr()}")
            # the port must be ours: another process may have taken it, and then /healthz
            # would answer for that one
            if pid_listens_on(self.proc.pid, self.port) is not False:
                try:
                    r = self.session.get(self.url + "/healthz", timeout=2)
                    if r.status_code == 200 and self.proc.poll() is None:
                        return
                except requests.RequestException:
                    pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.kill9()
        raise ServerStartError(f"opsdb serve did not answer /healthz within "
                               f"{self.start_timeout} s:\n{self.run_stderr()}")

    def stop(self, timeout=30.0, check=True, sig=signal.SIGTERM):
        """Sends SIGTERM (or sig) and waits up to timeout seconds for the exit. With check, the
        test fails unless the exit status is 0 and stderr has no sanitizer report. A server that
        does not exit in time is killed with SIGKILL and the test fails. Returns the exit
        status (None when the server was not running)."""
        self.session.close()
        if self.proc is None:
            return self.returncode
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
            self.proc = None
            pytest.fail(f"opsdb serve did not exit within {timeout} s of {sig!r}:\n"
                        f"{self.run_stderr()[-5000:]}")
        self.proc = None
        self.returncode = rc
        if check:
            text = self.run_stderr()
            assert_no_sanitizer_reports(text, "opsdb serve")
            assert rc == 0, f"opsdb serve exited with {rc}:\n{text[-5000:]}"
        return rc

    def kill9(self):
        """Kills the process with SIGKILL (a crash: nothing is flushed) and reaps it."""
        self.session.close()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.returncode = self.proc.wait(timeout=30)
        self.proc = None

    def restart(self, check=True):
        """Stops the server (SIGTERM, checked) if it runs, then starts it again on the same
        database, arguments and, if it is still free, the same port. Returns self."""
        if self.running:
            self.stop(check=check)
        self.session = requests.Session()
        return self.start()

    def stderr_text(self):
        """Everything the server wrote to stderr, over all its runs."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def run_stderr(self):
        """What the current (or last) run wrote to stderr."""
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(self._run_offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    # ---- HTTP helpers -----------------------------------------------------------------------

    def get(self, path, **kw):
        """requests GET on url + path, with a default timeout."""
        kw.setdefault("timeout", HTTP_TIMEOUT_S)
        return self.session.get(self.url + path, **kw)

    def post(self, path, **kw):
        """requests POST on url + path, with a default timeout."""
        kw.setdefault("timeout", HTTP_TIMEOUT_S)
        return self.session.post(self.url + path, **kw)

    def request(self, method, path, **kw):
        """Any method on url + path, with a default timeout."""
        kw.setdefault("timeout", HTTP_TIMEOUT_S)
        return self.session.request(method, self.url + path, **kw)

    def query(self, sql):
        """Rows (list of dicts) of read-only SQL through GET /api/v1/query; fails unless 200."""
        r = self.get("/api/v1/query", params={"sql": sql})
        assert r.status_code == 200, f"query {sql!r} -> {r.status_code} {r.text}"
        return r.json()["rows"]

    def scalar(self, sql):
        """The first column of the first row of a query."""
        rows = self.query(sql)
        assert rows, f"query {sql!r} returned no rows"
        return next(iter(rows[0].values()))

    def count(self, table, where="1=1"):
        """SELECT count(*) FROM table WHERE where."""
        return self.scalar(f"SELECT count(*) AS n FROM {table} WHERE {where}")

    def ingest(self, table, rows, params=None, **kw):
        """POSTs rows (a list of dicts, sent as a JSON array) to /api/v1/ingest/<table>; returns
        the response."""
        return self.post(f"/api/v1/ingest/{table}", json=rows, params=params, **kw)

    def __repr__(self):
        return f"<opsdb Server {self.url} db={self.db} running={self.running}>"


@pytest.fixture(scope="session")
def opsdb_bin():
    """Path of the binary under test ($OPSDB_BIN or the default sanitizer build)."""
    path = opsdb_bin_path()
    if not os.access(path, os.X_OK):
        pytest.fail(f"opsdb binary {path} is missing: build it (make build/asan/opsdb) or set "
                    f"OPSDB_BIN", pytrace=False)
    return path


@pytest.fixture
def tmp_db(tmp_path):
    """Path (a pathlib.Path) of a database file that does not exist yet, in tmp_path."""
    return tmp_path / "x.db"


def _make_factory(opsdb_bin, base_dir, default_db):
    servers = []

    def factory(*args, db=None, env=None, config=None, port=None, start=True,
                start_timeout=30.0, collect=False):
        """Starts `opsdb serve` and returns its Server.

        args: extra command-line arguments, e.g. ("--set", "http.max_body_bytes=2048").
        db: database path (default: the test's tmp_db, so a second server in the same test gets
        the same file unless db is given). env: extra environment variables. config: YAML text
        for --config. port: fixed port (default: a free one). start: False returns the Server
        unstarted (call .start()). collect: True lets the server collect its own host (default
        --no-collect). The factory stops every server at the end of the test and checks its
        exit status and stderr."""
        s = Server(opsdb_bin, db or default_db, base_dir, args=args, env=env, config=config,
                   port=port, start_timeout=start_timeout, collect=collect)
        servers.append(s)
        if start:
            s.start()
        return s

    def finish():
        failures = []
        for s in servers:
            if s.running:
                try:
                    s.stop(check=True)
                except (AssertionError, pytest.fail.Exception) as exc:
                    failures.append(str(exc))
        if failures:
            pytest.fail("\n".join(failures), pytrace=False)

    return factory, finish


@pytest.fixture
def server_factory(opsdb_bin, tmp_path, tmp_db):
    """A function that starts servers for this test (see Server); all are stopped and checked
    (exit status 0, no sanitizer report) when the test ends."""
    factory, finish = _make_factory(opsdb_bin, tmp_path, tmp_db)
    yield factory
    finish()


@pytest.fixture
def server(server_factory):
    """A running server with the default configuration on a fresh database (tmp_db)."""
    return server_factory()


@pytest.fixture(scope="module")
def module_server_factory(opsdb_bin, tmp_path_factory):
    """Like server_factory, for servers shared by the tests of one module (faster; tests must
    then use unique markers instead of counting whole tables). Databases default to a fresh
    file per call."""
    base = tmp_path_factory.mktemp("module-server")
    counter = {"n": 0}
    factory, finish = _make_factory(opsdb_bin, base, base / "shared.db")

    def fresh(*args, db=None, **kw):
        counter["n"] += 1
        return factory(*args, db=db or base / f"shared-{counter['n']}.db", **kw)

    yield fresh
    finish()


@pytest.fixture(name="run_cli")
def run_cli_fixture(opsdb_bin):
    """run_cli(*args, input=None, env=None, timeout=60) -> subprocess.CompletedProcess of
    `opsdb ARGS...` (see the module function run_cli)."""

    def run(*args, input=None, env=None, timeout=60, check_sanitizers=True):
        return run_cli(*args, input=input, env=env, timeout=timeout, bin_path=opsdb_bin,
                       check_sanitizers=check_sanitizers)

    return run


def now_ms():
    """The wall clock in epoch milliseconds (the server uses the same clock)."""
    return int(time.time() * 1000)


def wait_until(predicate, timeout=10.0, interval=0.05):
    """Calls predicate() until it returns a true value or timeout seconds pass; returns the last
    value. Bounded in time and in iterations."""
    deadline = time.monotonic() + timeout
    value = None
    for _ in range(int(timeout / interval) + 2):
        value = predicate()
        if value or time.monotonic() > deadline:
            break
        time.sleep(interval)
    return value


def unique(prefix="m"):
    """A short marker unique to this call (letters and digits only: safe in LIKE patterns)."""
    unique.counter += 1
    return f"{prefix}{os.getpid():x}x{unique.counter}x{int(time.time() * 1e6) % 10**9:x}"


unique.counter = 0

__all__ = ["Server", "ServerStartError", "run_cli", "child_env", "sanitizer_reports",
           "is_sanitizer_build",
           "assert_no_sanitizer_reports", "free_port", "now_ms", "wait_until", "unique"]


# ---- a webhook receiver (alert notifications) ----------------------------------------------


class Recorder:
    """The requests an HTTP server received: (monotonic time, path, headers, JSON body)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []

    def add(self, item):
        with self.lock:
            self.requests.append(item)

    def bodies(self, path=None):
        with self.lock:
            return [body for _, p, _, body in self.requests if path is None or p == path]


@pytest.fixture
def webhook():
    """An HTTP server on 127.0.0.1 that answers 200 to every POST and records it; yields
    (url, recorder)."""
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            rec.add((time.monotonic(), self.path, dict(self.headers), json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", rec
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)
