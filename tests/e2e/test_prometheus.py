"""Prometheus end to end, with Debian's real prometheus (and prometheus-node-exporter when it is
installed) on loopback ports: remote write into opsdb (rows, labels, and values equal to what
Prometheus's own query API answers), opsdb's scrape jobs (values equal to what the target
serves, `up` going to 0 when the target stops and back to 1, one log line per change), bad
remote-write bodies (4xx with a JSON error, nothing written) and scrape configuration errors
named by file and line (docs/collection.md, section Prometheus)."""

import json
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
import requests
import snappy

from conftest import free_port, now_ms, wait_until

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
NODE_EXPORTER = shutil.which("prometheus-node-exporter")


# ---- a real Prometheus ------------------------------------------------------------------------


class Prometheus:
    """prometheus on 127.0.0.1:port with its own config and data directory, scraping itself
    every second (and remote-writing to remote_write_url when given)."""

    def __init__(self, workdir, remote_write_url=None, port=None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.remote_write_url = remote_write_url
        self.proc = None
        self.log = self.workdir / "prometheus.log"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def config(self):
        text = (
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: prometheus\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{self.port}']}}]\n"
        )
        if self.remote_write_url:
            text += (
                "remote_write:\n"
                f"  - url: {self.remote_write_url}\n"
                "    queue_config: {batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s}\n"
            )
        return text

    def start(self, timeout=30):
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "prometheus.yml").write_text(self.config())
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={self.workdir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=self.workdir)

        def ready():
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log.read_text()[-3000:]}"
            try:
                return requests.get(self.url + "/-/ready", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        assert wait_until(ready, timeout=timeout, interval=0.2), \
            f"prometheus not ready in {timeout} s:\n{self.log.read_text()[-3000:]}"
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def query(self, promql, at_ms):
        """The instant query's result list at time at_ms."""
        r = requests.get(self.url + "/api/v1/query",
                         params={"query": promql, "time": f"{at_ms / 1000:.3f}"}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["data"]["result"]


@pytest.fixture
def prometheus_factory(tmp_path):
    started = []

    def start(name="prom", **kw):
        p = Prometheus(tmp_path / name, **kw).start()
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


@pytest.fixture
def node_exporter(tmp_path):
    """prometheus-node-exporter on a loopback port (skips when it is not installed)."""
    if not NODE_EXPORTER:
        pytest.skip("prometheus-node-exporter is not installed")
    port = free_port()
    log = open(tmp_path / "node-exporter.log", "wb")
    proc = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def ready():
        try:
            return requests.get(url + "/metrics", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    assert wait_until(ready, timeout=20, interval=0.2), "node exporter did not start"
    yield port
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


def page_value(url, metric, labels=None):
    """The value of one series on a /metrics page, read with a parser of this test's own."""
    text = requests.get(url + "/metrics", timeout=10).text
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if not m or m.group(1) != metric:
            continue
        have = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in (labels or {}).items()):
            return float(m.group(4))
    raise AssertionError(f"{metric}{labels or ''} is not on {url}/metrics")


def latest(server, where):
    rows = server.query(f"SELECT ts, value, host, component, labels FROM system_metrics "
                        f"WHERE {where} ORDER BY ts DESC LIMIT 1")
    return rows[0] if rows else None


# ---- remote write from a real Prometheus ------------------------------------------------------


def test_remote_write_from_prometheus(server_factory, prometheus_factory):
    server = server_factory()
    prom = prometheus_factory(remote_write_url=server.url + "/api/v1/prom/write")
    instance = f"127.0.0.1:{prom.port}"
    assert wait_until(lambda: server.count(
        "system_metrics", f"metric = 'up' AND component = 'prometheus' AND host = '{instance}'")
        >= 3, timeout=60, interval=0.5), server.run_stderr()[-3000:]

    # job and instance became component and host; the other labels stay, without __name__
    info = latest(server, "metric = 'prometheus_build_info'")
    assert info is not None
    assert info["host"] == instance and info["component"] == "prometheus"
    labels = json.loads(info["labels"])
    assert labels["version"].startswith("2.") and "goversion" in labels
    assert not {"__name__", "job", "instance"} & set(labels)
    assert info["value"] == 1

    # the values opsdb holds are Prometheus's own, series by series and timestamp by timestamp
    where = ("metric = 'prometheus_http_requests_total' AND labels LIKE '%\"handler\":\"/metrics\"%'"
             " AND labels LIKE '%\"code\":\"200\"%'")
    assert wait_until(lambda: server.count("system_metrics", where) >= 3, timeout=30,
                      interval=0.5)
    rows = server.query(f"SELECT ts, value FROM system_metrics WHERE {where} "
                        f"ORDER BY ts DESC LIMIT 3")
    for row in rows:
        result = prom.query('prometheus_http_requests_total{handler="/metrics",code="200"}',
                            row["ts"])
        assert len(result) == 1, result
        assert float(result[0]["value"][1]) == row["value"], (row, result)
    up = server.query(f"SELECT ts, value FROM system_metrics WHERE metric = 'up' "
                      f"AND host = '{instance}' ORDER BY ts DESC LIMIT 1")[0]
    assert float(prom.query("up", up["ts"])[0]["value"][1]) == up["value"] == 1

    # histograms arrive as their _bucket series with le labels
    assert server.count("system_metrics", "metric = 'prometheus_http_request_duration_seconds_bucket'"
                        " AND labels LIKE '%\"le\":\"+Inf\"%'") > 0
    assert "remote write from" not in server.run_stderr()  # nothing was refused


# ---- opsdb scrapes Prometheus and the node exporter -------------------------------------------


def test_scrape_values_up_and_down(server_factory, prometheus_factory, node_exporter):
    prom = prometheus_factory()
    prom_instance = f"127.0.0.1:{prom.port}"
    node_instance = f"127.0.0.1:{node_exporter}"
    config = (
        "scrape:\n"
        "  configs:\n"
        "    - job_name: prom\n"
        "      scrape_interval: 1s\n"
        f"      targets: ['{prom_instance}']\n"
        "      labels: {env: e2e}\n"
        "    - job_name: node\n"
        "      scrape_interval: 1s\n"
        "      static_configs:\n"
        f"        - targets: ['http://{node_instance}/metrics']\n"
    )
    server = server_factory(config=config)
    for job, instance in (("prom", prom_instance), ("node", node_instance)):
        assert wait_until(lambda: (latest(server, f"metric = 'up' AND component = '{job}'")
                                   or {}).get("value") == 1, timeout=30, interval=0.2), \
            server.run_stderr()[-3000:]
        row = latest(server, f"metric = 'up' AND component = '{job}'")
        assert row["host"] == instance
        for name in ("scrape_duration_seconds", "scrape_samples_scraped"):
            assert latest(server, f"metric = '{name}' AND component = '{job}'") is not None
    assert latest(server, "metric = 'scrape_samples_scraped' AND component = 'prom'")["value"] > 100

    # a stable value equals what the target serves; labels as configured
    start = latest(server, "metric = 'process_start_time_seconds' AND component = 'prom'")
    assert start["value"] == page_value(prom.url, "process_start_time_seconds")
    assert json.loads(start["labels"]) == {"env": "e2e"}
    boot = latest(server, "metric = 'node_boot_time_seconds' AND component = 'node'")
    assert boot["value"] == page_value(f"http://{node_instance}", "node_boot_time_seconds")

    # a counter opsdb scraped lies between what the page served before and after
    series = {"handler": "/metrics", "code": "200"}
    where = ("metric = 'prometheus_http_requests_total' AND component = 'prom' "
             "AND labels LIKE '%\"handler\":\"/metrics\"%' AND labels LIKE '%\"code\":\"200\"%'")
    before, t0 = page_value(prom.url, "prometheus_http_requests_total", series), now_ms()
    assert wait_until(lambda: (latest(server, where) or {}).get("ts", 0) > t0 + 100, timeout=10)
    after = page_value(prom.url, "prometheus_http_requests_total", series)
    scraped = latest(server, where)["value"]
    assert before <= scraped <= after and after > before

    # the target stops: up goes to 0, logged once however many scrapes fail
    prom.stop()
    assert wait_until(lambda: latest(server, "metric = 'up' AND component = 'prom'")["value"] == 0,
                      timeout=15, interval=0.2)
    t_down = now_ms()
    assert wait_until(lambda: server.count(
        "system_metrics", f"metric = 'up' AND component = 'prom' AND value = 0 "
                          f"AND ts > {t_down}") >= 3, timeout=15, interval=0.2)
    failed = f"scrape of http://{prom_instance}/metrics (job prom) failed"
    assert server.run_stderr().count(failed) == 1, server.run_stderr()[-3000:]
    # the node exporter went on
    assert latest(server, "metric = 'up' AND component = 'node'")["value"] == 1

    # and back: up is 1 again, one line says so
    prom.start()
    assert wait_until(lambda: latest(server, "metric = 'up' AND component = 'prom'")["value"] == 1,
                      timeout=30, interval=0.2)
    assert server.run_stderr().count(f"scrape of http://{prom_instance}/metrics (job prom) "
                                     f"succeeds again") == 1


def test_scrape_failures_store_up_zero_and_no_page(server_factory, tmp_path):
    """A page that is not the text format, a sample limit passed, an HTTP error: up is 0 and
    none of the page is stored; the reason is logged."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    pages = {"/bad": b"good_metric 1\nthis is { not a sample\n",
             "/many": b"".join(b"m%d %d\n" % (i, i) for i in range(20)),
             "/nan": b"finite 1\nstale NaN\ninf +Inf\n"}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path)
            self.send_response(200 if body else 503)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        config = "scrape:\n" + "".join(
            f"  - {{job_name: {name}, scrape_interval: 1s, sample_limit: 10, "
            f"targets: ['{base}/{name}']}}\n" for name in ("bad", "many", "nan", "missing"))
        server = server_factory(config=config)
        for job in ("bad", "many", "missing", "nan"):
            assert wait_until(lambda: latest(server, f"metric = 'up' AND component = '{job}'"),
                              timeout=15, interval=0.2)
        for job in ("bad", "many", "missing"):
            assert latest(server, f"metric = 'up' AND component = '{job}'")["value"] == 0
        assert server.count("system_metrics", "metric IN ('good_metric', 'm1')") == 0
        assert latest(server, "metric = 'up' AND component = 'nan'")["value"] == 1
        assert latest(server, "metric = 'finite'")["value"] == 1
        assert server.count("system_metrics", "metric IN ('stale', 'inf')") == 0
        assert latest(server, "metric = 'scrape_samples_nonfinite' AND component = 'nan'")[
            "value"] == 2
        assert latest(server, "metric = 'scrape_samples_scraped' AND component = 'nan'")[
            "value"] == 3
        log = server.run_stderr()
        assert "line 2: " in log and "more than 10 samples (sample_limit)" in log
        assert "HTTP status 503" in log
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("job, needle", [
    ("{job_name: a}", ":3: job a has no targets"),
    ("{targets: ['h:1']}", ":3: a scrape job needs a job_name"),
    ("{job_name: a, targets: ['no-port']}", ":3: targets: 'no-port' is neither host:port"),
    ("{job_name: a, targets: ['h:1'], scrape_interval: 1s, scrape_timeout: 5s}",
     "scrape_timeout is longer than scrape_interval"),
    ("{job_name: a, targets: ['h:1'], scrape_interval: soon}", "scrape_interval: expected a duration"),
    ("{job_name: a, targets: ['h:1'], colour: red}", "unknown key 'colour' in a scrape job"),
    ("{job_name: a, targets: ['h:1'], labels: {job: x}}", "is not a label name a job may set"),
])
def test_scrape_config_errors_name_the_line(run_cli, tmp_path, job, needle):
    cfg = tmp_path / "opsdb.yml"
    cfg.write_text(f"# scrape jobs\nscrape:\n  configs: [{job}]\n")
    r = run_cli("serve", "--db", str(tmp_path / "x.db"), "--listen", "127.0.0.1:0", "--config",
                str(cfg), timeout=60)
    assert r.returncode != 0
    assert needle in r.stderr and str(cfg) in r.stderr, r.stderr


# ---- bad remote-write bodies ------------------------------------------------------------------


def _varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len_field(number, payload):
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def write_request(series):
    """A remote-write WriteRequest: series is a list of (labels, [(value, ts_ms)]), labels a
    dict or a list of (name, value) pairs."""
    body = b""
    for labels, samples in series:
        pairs = labels.items() if isinstance(labels, dict) else labels
        ts = b"".join(_len_field(1, _len_field(1, k.encode()) + _len_field(2, v.encode()))
                      for k, v in pairs)
        for value, ts_ms in samples:
            ts += _len_field(2, _varint(1 << 3 | 1) + struct.pack("<d", value)
                             + _varint(2 << 3) + _varint(ts_ms))
        body += _len_field(1, ts)
    return body


HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
           "X-Prometheus-Remote-Write-Version": "0.1.0"}


def test_remote_write_good_and_nonfinite(server):
    t = now_ms() - 1000
    body = write_request([
        ({"__name__": "rw_good", "job": "api", "instance": "h1:9100", "zone": "a", "empty": ""},
         [(1.5, t), (2.5, t + 1)]),
        ({"__name__": "rw_stale", "job": "api"}, [(float("nan"), t), (float("inf"), t)]),
    ])
    r = server.post("/api/v1/write", data=snappy.compress(body), headers=HEADERS)
    assert r.status_code == 204, r.text
    rows = server.query("SELECT ts, value, host, component, labels FROM system_metrics "
                        "WHERE metric = 'rw_good' ORDER BY ts")
    assert [(x["ts"], x["value"]) for x in rows] == [(t, 1.5), (t + 1, 2.5)]
    assert rows[0]["host"] == "h1:9100" and rows[0]["component"] == "api"
    assert json.loads(rows[0]["labels"]) == {"zone": "a"}
    assert server.count("system_metrics", "metric = 'rw_stale'") == 0


@pytest.mark.parametrize("name, data, status, needle", [
    ("not snappy", b"\xff\xff\xff\xff\xff\xff", 400, "not snappy-compressed"),
    ("not protobuf", snappy.compress(b"\x0a\xff\xff\xff\xff\x0f"), 400, "does not decode"),
    ("no name", snappy.compress(write_request([({"job": "x"}, [(1.0, now_ms())])])), 400,
     "no metric name"),
    ("far future", snappy.compress(write_request(
        [({"__name__": "rw_future"}, [(1.0, now_ms() + 86400000)])])), 400, "future"),
    ("twice", snappy.compress(write_request(
        [({"__name__": "rw_ok"}, [(1.0, now_ms())]),
         ([("__name__", "rw_twice"), ("a", "1"), ("a", "2")], [(1.0, now_ms())])])), 400,
     "appears twice"),
])
def test_remote_write_bad_bodies(server, name, data, status, needle):
    r = server.post("/api/v1/prom/write", data=data, headers=HEADERS)
    assert r.status_code == status, (name, r.status_code, r.text)
    err = r.json()
    assert needle in json.dumps(err), (name, err)
    assert "nothing was written" in err["error"]
    assert server.count("system_metrics") == 0
    assert "remote write from 127.0.0.1: 400" in server.run_stderr()


def test_remote_write_limits_and_headers(server_factory):
    server = server_factory("--set", "remote_write.max_decoded_bytes=2048",
                            "--set", "http.max_body_bytes=4096")
    big = write_request([({"__name__": "rw_big", "pad": "x" * 3000}, [(1.0, now_ms())])])
    r = server.post("/api/v1/prom/write", data=snappy.compress(big), headers=HEADERS)
    assert r.status_code == 413 and "remote_write.max_decoded_bytes" in r.json()["error"]
    r = server.post("/api/v1/prom/write", data=b"\x00" * 5000, headers=HEADERS)
    assert r.status_code == 413 and "http.max_body_bytes" in r.json()["error"]
    small = snappy.compress(write_request([({"__name__": "rw_small"}, [(1.0, now_ms())])]))
    r = server.post("/api/v1/prom/write", data=small,
                    headers={**HEADERS, "Content-Encoding": "gzip"})
    assert r.status_code == 415 and "snappy" in r.json()["error"]
    r = server.post("/api/v1/prom/write", data=small,
                    headers={**HEADERS, "Content-Type": "application/json"})
    assert r.status_code == 415
    r = server.post("/api/v1/prom/write", data=small, headers={
        **HEADERS, "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"})
    assert r.status_code == 415 and "2.0" in r.json()["error"]
    assert server.count("system_metrics") == 0
    r = server.post("/api/v1/prom/write", data=small, headers=HEADERS)
    assert r.status_code == 204
    assert server.count("system_metrics", "metric = 'rw_small'") == 1
    metrics = server.get("/metrics").text
    assert re.search(r'opsdb_rows_rejected_total\{table="system_metrics",reason="bad_body"\} 3',
                     metrics), metrics
    assert server.get("/api/v1/prom/write").status_code == 405
