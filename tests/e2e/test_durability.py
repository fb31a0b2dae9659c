"""Durability and concurrency under load: a 2xx means the rows are committed, a request is
atomic (all of its rows or none), a crash (SIGKILL) loses nothing acknowledged, a graceful stop
(SIGTERM) commits what it accepted and answers the requests under way before it stops (new ones get a
503), and concurrent writers and readers see consistent data.

Every batch carries a unique key (client_id for api_usage, host for system_metrics) and its rows
a row number, so each batch can be counted after the fact.
"""

import json
import sqlite3
import threading
import time

import pytest
import requests

from conftest import now_ms

BATCH_ROWS = 20


def api_batch(key, n=BATCH_ROWS):
    ts = now_ms() - 1000
    return "".join(json.dumps({"ts": ts - i, "method": "POST", "endpoint": "/load",
                               "status_code": 200, "client_id": key, "request_bytes": i,
                               "latency_ms": 0.5 + i}) + "\n" for i in range(n)).encode()


def lp_batch(key, n=BATCH_ROWS):
    ts = (now_ms() - 1000) * 1_000_000
    return "".join(f"load,host={key} f{i}={i}i {ts}\n" for i in range(n)).encode()


class Load:
    """Writer threads that send batches until stopped or until the server goes away.

    Thread t sends batches keyed PREFIXw<t>-<batch>; every lineproto_every-th thread writes
    line protocol to /write, the others NDJSON to /api/v1/ingest/api_usage.
    acked: keys answered 2xx; refused: keys answered with another status (nothing may be
    written); unknown: keys whose request failed without an answer (all or nothing may be
    written)."""

    def __init__(self, srv, writers, lineproto_every=0, max_batches=100_000, pause_s=0.0,
                 prefix=""):
        self.srv = srv
        self.prefix = prefix
        self.url = srv.url
        self.writers = writers
        self.lineproto_every = lineproto_every
        self.max_batches = max_batches
        self.pause_s = pause_s
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked, self.refused, self.unknown = {}, {}, {}
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True)
                        for t in range(writers)]

    def kind(self, t):
        return "lp" if self.lineproto_every and t % self.lineproto_every == 0 else "api"

    def _run(self, t):
        session = requests.Session()
        kind = self.kind(t)
        for b in range(self.max_batches):
            if self.stop.is_set():
                break
            key = f"{self.prefix}w{t}-{b}"
            try:
                if kind == "lp":
                    r = session.post(self.url + "/write", data=lp_batch(key), timeout=30)
                else:
                    r = session.post(self.url + "/api/v1/ingest/api_usage", data=api_batch(key),
                                     headers={"Content-Type": "application/x-ndjson"},
                                     timeout=30)
            except requests.RequestException as exc:
                with self.lock:
                    self.unknown[key] = (kind, repr(exc))
                break  # the server is gone
            with self.lock:
                if 200 <= r.status_code < 300:
                    self.acked[key] = kind
                else:
                    self.refused[key] = (kind, r.status_code, r.text[:300])
            if r.status_code == 503 and "stopping" in r.text:
                break  # the server is going away
            if self.pause_s:
                time.sleep(self.pause_s)
        session.close()

    def start(self):
        for th in self.threads:
            th.start()
        return self

    def wait_acked(self, n, timeout=20.0):
        """Waits until at least n batches were acknowledged (bounded)."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.02) + 1):
            with self.lock:
                if len(self.acked) >= n:
                    return
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        pytest.fail(f"only {len(self.acked)} batches acknowledged in {timeout} s")

    def finish(self, timeout=60.0):
        self.stop.set()
        deadline = time.monotonic() + timeout
        for th in self.threads:
            th.join(max(0.1, deadline - time.monotonic()))
        alive = [th for th in self.threads if th.is_alive()]
        assert not alive, f"{len(alive)} writer threads did not finish"


def batch_counts(srv):
    """{key: (rows, distinct row numbers)} for every batch key in the database."""
    out = {}
    for r in srv.query("SELECT client_id AS k, count(*) AS n, count(DISTINCT request_bytes) AS d "
                       "FROM api_usage WHERE endpoint = '/load' GROUP BY client_id"):
        out[r["k"]] = (r["n"], r["d"])
    for r in srv.query("SELECT host AS k, count(*) AS n, count(DISTINCT metric) AS d "
                       "FROM system_metrics WHERE metric LIKE 'load_f%' GROUP BY host"):
        out[r["k"]] = (r["n"], r["d"])
    return out


def check_batches(counts, acked, refused, unknown):
    """Every acknowledged batch is whole; no batch is partial; refused batches are absent;
    nothing appears that was never sent."""
    full = (BATCH_ROWS, BATCH_ROWS)
    missing = {k for k in acked if counts.get(k) != full}
    assert not missing, f"acknowledged batches lost or partial: " \
                        f"{sorted((k, counts.get(k)) for k in missing)[:20]}"
    partial = {k: v for k, v in counts.items() if v != full}
    assert not partial, f"partially written batches: {sorted(partial.items())[:20]}"
    present_refused = set(refused) & set(counts)
    assert not present_refused, f"refused batches were written: {sorted(present_refused)[:20]}"
    strangers = set(counts) - set(acked) - set(unknown)
    assert not strangers, f"batches nobody sent: {sorted(strangers)[:20]}"


def integrity_check(db):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        con.close()


def test_kill9_during_load_loses_no_acknowledged_batch(server_factory):
    srv = server_factory()
    acked, refused, unknown = {}, {}, {}
    for rnd in range(2):
        load = Load(srv, writers=8, lineproto_every=4, prefix=f"r{rnd}").start()
        load.wait_acked(30)
        time.sleep(0.3)
        srv.kill9()
        assert srv.returncode == -9
        load.finish()
        acked.update(load.acked)
        refused.update(load.refused)
        unknown.update(load.unknown)
        srv.restart()
        check_batches(batch_counts(srv), acked, refused, unknown)
    assert not refused, f"requests refused under load: {list(refused.items())[:5]}"
    srv.stop()
    integrity_check(srv.db)


def test_concurrent_writers_and_readers(server_factory):
    srv = server_factory()
    load = Load(srv, writers=16, lineproto_every=4).start()
    reader_errors = []
    reads = [0]
    stop = threading.Event()

    def reader(i):
        session = requests.Session()
        queries = [
            ("/api/v1/query", {"sql": "SELECT count(*) AS n FROM api_usage"}),
            ("/api/v1/query", {"sql": "SELECT client_id, count(*) AS n FROM api_usage "
                                      "GROUP BY client_id HAVING n != 20"}),
            ("/api/v1/views/api_performance", {}),
            ("/api/v1/views/system_health", {}),
            ("/api/v1/query", {"sql": "SELECT host, count(*) AS n FROM system_metrics "
                                      "GROUP BY host ORDER BY n DESC LIMIT 5"}),
            ("/metrics", {}),
        ]
        last_count = 0
        for k in range(100_000):
            if stop.is_set():
                break
            path, params = queries[(k + i) % len(queries)]
            try:
                r = session.get(srv.url + path, params=params, timeout=30)
            except requests.RequestException as exc:
                reader_errors.append((path, repr(exc)))
                break
            if r.status_code != 200:
                reader_errors.append((path, r.status_code, r.text[:300]))
                continue
            reads[0] += 1
            if path == "/api/v1/query" and "HAVING" in params["sql"]:
                if r.json()["rows"]:
                    reader_errors.append(("partial batch visible", r.json()["rows"][:5]))
            elif path == "/api/v1/query" and params["sql"].startswith("SELECT count"):
                n = r.json()["rows"][0]["n"]
                if n < last_count:
                    reader_errors.append(("count went back", last_count, n))
                last_count = n
        session.close()

    readers = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(4)]
    for th in readers:
        th.start()
    time.sleep(5)
    stop.set()
    load.finish()
    for th in readers:
        th.join(30)
    assert not any(th.is_alive() for th in readers), "reader threads did not finish"
    assert not reader_errors, reader_errors[:10]
    assert reads[0] > 20, f"only {reads[0]} reads in 5 s"
    assert not load.refused, list(load.refused.items())[:5]
    assert not load.unknown, list(load.unknown.items())[:5]
    assert len(load.acked) > 50, f"only {len(load.acked)} batches in 5 s"
    counts = batch_counts(srv)
    check_batches(counts, load.acked, {}, {})
    assert set(counts) == set(load.acked)
    api_acked = sum(1 for kind in load.acked.values() if kind == "api")
    total = srv.count("api_usage", "endpoint = '/load'")
    assert total == api_acked * BATCH_ROWS
    distinct = srv.scalar("SELECT count(*) FROM (SELECT DISTINCT client_id, request_bytes "
                          "FROM api_usage WHERE endpoint = '/load')")
    assert distinct == total  # every row exactly once
    srv.stop()
    integrity_check(srv.db)


def test_sigterm_during_load_commits_and_exits_0(server_factory):
    srv = server_factory()
    load = Load(srv, writers=12, lineproto_every=3).start()
    load.wait_acked(30)
    time.sleep(0.3)
    rc = srv.stop(timeout=60)  # checks exit status 0 and a clean sanitizer report
    assert rc == 0
    load.finish()
    text = srv.run_stderr()
    assert "SIGTERM" in text and "stopped" in text, text[-3000:]
    srv.restart()
    counts = batch_counts(srv)
    check_batches(counts, load.acked, load.refused, load.unknown)
    # the requests under way when the signal came were answered before the server stopped: a
    # batch it wrote was acknowledged (so no client sends it twice); the requests that came
    # after were refused with a 503 and written nowhere
    assert set(counts) == set(load.acked), \
        f"batches written but not acknowledged: {sorted(set(counts) - set(load.acked))[:20]}"
    late = [v for v in load.refused.values() if v[1] != 503 or "stopping" not in v[2]]
    assert not late, late[:5]
    srv.stop()
    integrity_check(srv.db)


def test_sigint_stops_cleanly(server_factory):
    import signal
    srv = server_factory()
    assert srv.post("/api/v1/ingest/api_usage", data=api_batch("sigint"),
                    headers={"Content-Type": "application/x-ndjson"}).status_code == 200
    assert srv.stop(sig=signal.SIGINT) == 0
    srv.restart()
    assert batch_counts(srv) == {"sigint": (BATCH_ROWS, BATCH_ROWS)}


def test_restart_keeps_data_and_schema(server_factory):
    srv = server_factory()
    assert srv.post("/api/v1/ingest/api_usage", data=api_batch("keep"),
                    headers={"Content-Type": "application/x-ndjson"}).status_code == 200
    assert srv.post("/write", data=lp_batch("keep-lp")).status_code == 204
    # sqlite_stat1 may appear: PRAGMA optimize at shutdown analyzes what queries used
    schema = ("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_stat%' "
              "ORDER BY type, name")
    before = srv.query(schema)
    srv.restart()
    assert batch_counts(srv) == {"keep": (BATCH_ROWS, BATCH_ROWS),
                                 "keep-lp": (BATCH_ROWS, BATCH_ROWS)}
    assert srv.query(schema) == before
    # the migration ran once
    assert "migrating" not in srv.run_stderr()


def test_back_pressure_with_small_queue_and_groups(server_factory):
    """A queue of 1000 rows and groups of at most 50: writers wait for space instead of failing,
    batches larger than a group still commit whole, and every acknowledged row is there once."""
    srv = server_factory("--set", "writer.queue_max_rows=1000",
                         "--set", "writer.max_group_rows=50")
    def group_metrics():
        text = srv.get("/metrics").text
        return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
                if line.startswith("opsdb_writer_group_commit_rows_") or
                line.startswith("opsdb_writer_queue_rows ")}

    before = group_metrics()  # the jobs engine's rows of its jobs, written at start
    load = Load(srv, writers=12, lineproto_every=3).start()
    time.sleep(2.5)
    load.finish()
    assert not load.refused, list(load.refused.items())[:5]
    assert not load.unknown, list(load.unknown.items())[:5]
    assert len(load.acked) > 20
    counts = batch_counts(srv)
    check_batches(counts, load.acked, {}, {})
    assert set(counts) == set(load.acked)
    m = group_metrics()
    assert m["opsdb_writer_queue_rows"] == 0
    assert m["opsdb_writer_group_commit_rows_sum"] - before["opsdb_writer_group_commit_rows_sum"] \
        == len(load.acked) * BATCH_ROWS
    big = api_batch("big", 400)  # larger than a group and than half the queue
    r = srv.post("/api/v1/ingest/api_usage", data=big,
                 headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    assert srv.count("api_usage", "client_id = 'big'") == 400
