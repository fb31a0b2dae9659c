"""Access logs of a real nginx into api_usage (docs/collection.md, "Access and application logs").

The test starts nginx (Debian's package) on a free loopback port with a configuration written
into its temporary directory: a log_format with $request_time and $upstream_response_time,
locations answering 200, 201, 204, 301, 404, 500 and 503 with `return`, and a location proxied to
a small Python upstream. A bounded load of a few thousand requests (paths with numeric ids, UUIDs
and hex ids, query strings, and a few bytes that are no HTTP request at all) goes through it; then
`opsdb ingest api_usage --format nginx_timed` imports nginx's access log, and the rows must be the
requests nginx logged, per status code, with their endpoints folded into route templates.
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import free_port, wait_until

LOAD_REQUESTS = 3000
LOAD_SECONDS = 90  # the load stops here even when not all requests were made
GARBAGE_REQUESTS = 3

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format timed '$remote_addr - $remote_user [$time_local] "$request" $status '
                     '$body_bytes_sent "$http_referer" "$http_user_agent" '
                     '$request_time $upstream_response_time';
    access_log {dir}/access.log timed;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{port};
        location ~ ^/users/ {{ return 200 "user\\n"; }}
        location ~ ^/orders/ {{ return 201 "created\\n"; }}
        location = /empty {{ return 204; }}
        location = /old {{ return 301 /new; }}
        location = /boom {{ return 500; }}
        location = /busy {{ return 503; }}
        location /api/ {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location / {{ return 404; }}
    }}
}}
"""


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        time.sleep(0.002)  # an upstream time nginx can measure
        body = b'{"ok": true}\n'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def nginx(tmp_path):
    """A running nginx; yields (base URL, access log path). Stopped (QUIT, then KILL) at the
    end."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(binary, os.X_OK):
        pytest.fail("nginx is missing: install Debian's nginx package (scripts/install-deps.sh "
                    "test)", pytrace=False)
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    upstream.daemon_threads = True
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    work = tmp_path / "nginx"
    work.mkdir()
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=work, port=port,
                                      upstream_port=upstream.server_address[1]))
    stderr = open(work / "stderr", "wb")
    proc = subprocess.Popen([binary, "-p", str(work), "-c", str(conf), "-e",
                             str(work / "error.log")], stdout=stderr, stderr=stderr,
                            stdin=subprocess.DEVNULL)
    stderr.close()

    def listening():
        if proc.poll() is not None:
            return "exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return "up"
        except OSError:
            return None

    state = wait_until(listening, timeout=15)
    if state != "up":
        proc.kill()
        proc.wait(timeout=10)
        pytest.fail(f"nginx did not start ({state}):\n{(work / 'stderr').read_text()}\n"
                    f"{(work / 'error.log').read_text() if (work / 'error.log').exists() else ''}")
    try:
        yield f"http://127.0.0.1:{port}", work / "access.log", proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        upstream.shutdown()
        upstream.server_close()


def paths(rng):
    """An endless mix of request paths: ids, UUIDs, hex ids, query strings, every status."""
    makers = [
        lambda: f"/users/{rng.randrange(1, 10**6)}",
        lambda: f"/users/{rng.randrange(1, 10**6)}/profile?tab={rng.randrange(5)}",
        lambda: f"/orders/{uuid.UUID(int=rng.getrandbits(128), version=4)}",
        lambda: f"/api/items/{rng.randrange(1, 10**4)}",
        lambda: f"/api/blobs/{rng.getrandbits(48):012x}",
        lambda: "/empty",
        lambda: "/old",
        lambda: "/boom",
        lambda: "/busy",
        lambda: f"/missing/{rng.randrange(100)}",
    ]
    while True:
        yield rng.choice(makers)()


def load(base, count, seconds):
    """count requests from 4 threads with keep-alive sessions, bounded by seconds. Returns the
    number made."""
    deadline = time.monotonic() + seconds
    made = Counter()
    lock = threading.Lock()

    def worker(n, seed):
        rng = random.Random(seed)
        gen = paths(rng)
        with requests.Session() as s:
            for _ in range(n):
                if time.monotonic() > deadline:
                    return
                s.get(base + next(gen), allow_redirects=False, timeout=10)
                with lock:
                    made["n"] += 1

    threads = [threading.Thread(target=worker, args=(count // 4, i)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 30)
    return made["n"]


def send_garbage(base):
    """Bytes that are no HTTP request (a TLS hello to a plain port): nginx answers 400."""
    host, port = base.rsplit("/", 1)[1].split(":")
    for _ in range(GARBAGE_REQUESTS):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n")
            try:
                s.recv(4096)
            except OSError:
                pass


LOG_STATUS = re.compile(r'^\S+ - \S+ \[[^\]]+\] "(?:[^"\\]|\\.)*" (\d{3}) ')


def logged_statuses(path):
    """nginx's own count of requests per status, read from its log here (not by opsdb)."""
    counts = Counter()
    lines = path.read_text(errors="replace").splitlines()
    for line in lines:
        m = LOG_STATUS.match(line)
        assert m, f"a line of nginx's log this test cannot read: {line!r}"
        counts[int(m.group(1))] += 1
    return counts, len(lines)


def query(run_cli, db, sql):
    cp = run_cli("query", sql, "--db", db, "--format", "json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)["rows"]


def test_nginx_access_log_rows_equal_logged_requests(nginx, run_cli, tmp_db):
    base, access_log, proc = nginx
    made = load(base, LOAD_REQUESTS, LOAD_SECONDS)
    assert made >= LOAD_REQUESTS // 2, f"only {made} requests within {LOAD_SECONDS} s"
    send_garbage(base)
    proc.send_signal(signal.SIGQUIT)  # every line is written once nginx has exited
    proc.wait(timeout=15)
    want, lines = logged_statuses(access_log)
    assert lines == made + GARBAGE_REQUESTS
    assert {200, 201, 204, 301, 400, 404, 500, 503} <= set(want), want

    cp = run_cli("ingest", "api_usage", access_log, "--format", "nginx_timed", "--db", tmp_db)
    assert cp.returncode == 0, cp.stderr
    assert f"ingested {lines} rows into api_usage" in cp.stdout
    assert "rejected" not in cp.stderr

    got = {r["status_code"]: r["n"] for r in query(
        run_cli, tmp_db, "SELECT status_code, count(*) AS n FROM api_usage GROUP BY 1")}
    assert got == dict(want)

    endpoints = {r["endpoint"]: r for r in query(
        run_cli, tmp_db,
        "SELECT endpoint, count(*) AS n, min(method) AS method, max(method) AS method2, "
        "min(latency_ms) AS lat_min, count(latency_ms) AS lat_n FROM api_usage GROUP BY 1")}
    # ids folded: a handful of route templates for thousands of distinct paths
    assert {"/users/:id", "/users/:id/profile", "/orders/:id", "/api/items/:id",
            "/api/blobs/:id", "/missing/:id", "/empty", "/old", "/boom", "/busy",
            "(invalid)"} == set(endpoints), sorted(endpoints)
    assert endpoints["(invalid)"]["n"] == GARBAGE_REQUESTS
    assert endpoints["(invalid)"]["method"] == "OTHER"
    assert endpoints["/users/:id"]["method"] == endpoints["/users/:id"]["method2"] == "GET"
    # every row has $request_time; the proxied ones waited for the upstream's 2 ms
    for name, r in endpoints.items():
        assert r["lat_n"] == r["n"], name
    assert endpoints["/api/items/:id"]["lat_min"] >= 1.0

    # the service is named after the log's directory, the host is this machine
    rows = query(run_cli, tmp_db, "SELECT DISTINCT service, host, client_id FROM api_usage")
    assert rows == [{"service": "nginx", "host": socket.gethostname(), "client_id": "127.0.0.1"}]


def test_bad_lines_are_listed_and_skipped(run_cli, tmp_db, tmp_path):
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(time.time() - 60))
    good = f'127.0.0.1 - - [{stamp}] "GET /users/7 HTTP/1.1" 200 5 "-" "curl"'
    log = tmp_path / "web.access.log"
    log.write_text(f"{good}\nnot a log line\n{good}\n{good[:40]}\n")
    cp = run_cli("ingest", "api_usage", log, "--format", "nginx", "--db", tmp_db,
                 "--set", "logs.service=web", "--set", "logs.host=edge-1")
    assert cp.returncode == 0, cp.stderr
    assert "ingested 2 rows" in cp.stdout
    assert "rejected line 2:" in cp.stderr and "rejected line 4:" in cp.stderr
    assert "skipped 2 bad lines" in cp.stderr
    rows = query(run_cli, tmp_db, "SELECT service, host, endpoint FROM api_usage")
    assert rows == [{"service": "web", "host": "edge-1", "endpoint": "/users/:id"}] * 2

    # nothing readable: an error, and nothing written
    bad = tmp_path / "bad.log"
    bad.write_text("garbage\nmore garbage\n")
    cp = run_cli("ingest", "api_usage", bad, "--format", "apache", "--db", tmp_db)
    assert cp.returncode == 1
    assert "no line could be read as a apache log" in cp.stderr
    assert query(run_cli, tmp_db, "SELECT count(*) AS n FROM api_usage") == [{"n": 2}]


@pytest.mark.parametrize("args, message", [
    (["error_logs", "-", "--format", "nginx"], "--format nginx reads into api_usage"),
    (["api_usage", "-", "--format", "json-log"], "--format json-log reads into error_logs"),
    (["api_usage", "-", "--format", "squid"], "nginx_timed"),
])
def test_format_usage_errors(run_cli, tmp_db, args, message):
    cp = run_cli("ingest", *args, "--db", tmp_db)
    assert cp.returncode == 2
    assert message in cp.stderr


def test_custom_format_and_help(run_cli, tmp_db, tmp_path):
    log = tmp_path / "api.log"
    ms = int(time.time() * 1000) - 60000
    log.write_text(f"{ms / 1000:.3f} DELETE /things/12 204 0.004\n")
    cp = run_cli("ingest", "api_usage", log, "--format", "access", "--db", tmp_db,
                 "--set", "logs.access_format=$msec $request_method $uri $status $request_time")
    assert cp.returncode == 0, cp.stderr
    assert query(run_cli, tmp_db, "SELECT ts, method, endpoint, latency_ms, service "
                 "FROM api_usage") == [{"ts": ms, "method": "DELETE", "endpoint": "/things/:id",
                                        "latency_ms": 4.0, "service": "api"}]
    cp = run_cli("ingest", "--help")
    assert cp.returncode == 0
    for word in ("nginx_timed", "apache", "json-log", "plain-log"):
        assert word in cp.stdout
