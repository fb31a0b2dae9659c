"""api_usage, handler_metrics and error_logs rollups (1 minute, 1 hour): maintained from each
batch, late rows included, and read by api_performance, handler_performance and error_summary
for the whole minutes and hours of a window, with raw rows only at its edges. The views'
answers are compared with values computed here from the raw rows, on random windows (now and
length) from a second to three days; percentiles merged from latency sketches must be within 1%
of the exact ones."""

import json
import random
import subprocess
import time

import pytest

from conftest import now_ms
from test_migration import CURRENT_VERSION
from test_views import (API_SPEC, ERR_SPEC, HANDLER_SPEC, MIN, HOUR, DAY, compare_rows,
                        expect_api_performance, expect_error_summary, expect_handler_performance,
                        post_ndjson)

SEED = 20261129
# four days ago, off the minute grid; the views take `now` as a parameter
START = (int(time.time()) - 4 * 86400) * 1000 + 12_345


def gen(rng, n_api=4000, n_handler=1500, span=3 * DAY):
    api, handler = [], []
    for _ in range(n_api):
        row = {"ts": START + rng.randrange(span), "service": rng.choice(["shop", "auth", ""]),
               "method": rng.choice(["GET", "POST"]), "endpoint": rng.choice(["/a", "/b/:id"]),
               "status_code": rng.choice([200, 200, 204, 302, 404, 429, 500, 503])}
        if rng.random() < 0.9:
            row["latency_ms"] = round(rng.lognormvariate(3, 1.2), 3)
        if rng.random() < 0.7:
            row["request_bytes"] = rng.randint(0, 5000)
        if rng.random() < 0.9:
            row["response_bytes"] = rng.randint(0, 90000)
        if rng.random() < 0.3:
            row["count"] = rng.randint(1, 9)
        api.append(row)
    used = set()
    for _ in range(n_handler):
        ts = START + rng.randrange(span)
        while ts in used:  # distinct: "the latest queue depth" is never a tie
            ts += 1
        used.add(ts)
        inv = rng.randint(0, 400)
        row = {"ts": ts, "handler": rng.choice(["h1", "h2", "h3"]),
               "component": rng.choice(["c1", "c2"]), "invocations": inv}
        if rng.random() < 0.8:
            row["errors"] = rng.randint(0, inv)
        if rng.random() < 0.5:
            row["retries"] = rng.randint(0, 9)
        if rng.random() < 0.85:
            row["duration_ms_avg"] = round(rng.uniform(0.1, 900), 3)
        if rng.random() < 0.85:
            row["duration_ms_p95"] = round(rng.uniform(1, 2000), 3)
        if rng.random() < 0.8:
            row["queue_depth"] = rng.randint(0, 10000)
        handler.append(row)
    return api, handler


LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "fatal"]


def gen_errors(rng, n=2500, span=3 * DAY):
    """Error events of 12 fingerprints on 5 hosts, at distinct times ("latest message" is never
    a tie)."""
    rows, used = [], set()
    for _ in range(n):
        ts = START + rng.randrange(span)
        while ts in used:
            ts += 1
        used.add(ts)
        f = rng.randrange(12)
        rows.append({"ts": ts, "fingerprint": f"fp{f:02d}", "error_type": f"E{f % 4}",
                     "component": rng.choice(["api", "db", ""]), "host": rng.choice(
                         ["h1", "h2", "h3", "h4", ""]), "level": rng.choice(LEVELS),
                     "message": f"failure {rng.randrange(10**6)}"})
    return rows


def post_shuffled(srv, rng, table, rows):
    """Several requests, out of time order: every batch lands in old and new buckets."""
    rows = rows[:]
    rng.shuffle(rows)
    for i in range(0, len(rows), 700):
        post_ndjson(srv, table, rows[i:i + 700])


@pytest.fixture(scope="module")
def loaded(module_server_factory):
    rng = random.Random(SEED)
    api, handler = gen(rng)
    errors = gen_errors(rng)
    srv = module_server_factory()
    post_shuffled(srv, rng, "api_usage", api)
    post_shuffled(srv, rng, "handler_metrics", handler)
    post_shuffled(srv, rng, "error_logs", errors)
    return srv, api, handler, errors


def view_rows(srv, name, now_ms, window_ms):
    r = srv.get(f"/api/v1/views/{name}",
                params={"now": f"{now_ms / 1000:.3f}", "window": f"{window_ms}ms"})
    assert r.status_code == 200, r.text
    return r.json()["rows"]


def windows(seed, n):
    rng = random.Random(seed)
    out = [(START + 2 * DAY, 3 * DAY), (START + DAY + 7 * HOUR, 15 * MIN),
           (START + DAY + 59_999, 59_999), (START + 30 * HOUR + 1, 2 * HOUR - 2)]
    for _ in range(n):
        length = rng.choice([rng.randint(1000, 5 * MIN), rng.randint(5 * MIN, 3 * HOUR),
                             rng.randint(3 * HOUR, 3 * DAY)])
        out.append((START + rng.randrange(3 * DAY + HOUR), length))
    return out


@pytest.mark.parametrize("now_ms,window_ms", windows(1, 20))
def test_api_performance_matches_raw_rows(loaded, now_ms, window_ms):
    srv, api, _, _ = loaded
    want = expect_api_performance(api, window_ms, now_ms)
    got = view_rows(srv, "api_performance", now_ms, window_ms)
    compare_rows("api_performance", got, want, ("service", "endpoint"), API_SPEC)


@pytest.mark.parametrize("now_ms,window_ms", windows(2, 12))
def test_handler_performance_matches_raw_rows(loaded, now_ms, window_ms):
    srv, _, handler, _ = loaded
    want = expect_handler_performance(handler, window_ms, now_ms)
    got = view_rows(srv, "handler_performance", now_ms, window_ms)
    compare_rows("handler_performance", got, want, ("handler", "component"), HANDLER_SPEC)


@pytest.mark.parametrize("now_ms,window_ms", windows(4, 12))
def test_error_summary_matches_raw_rows(loaded, now_ms, window_ms):
    srv, _, _, errors = loaded
    want = {(k,): v for k, v in expect_error_summary(errors, window_ms, now_ms).items()}
    got = view_rows(srv, "error_summary", now_ms, window_ms)
    compare_rows("error_summary", got, want, ("fingerprint",), ERR_SPEC)


def test_rollup_buckets_hold_every_request(loaded):
    srv, api, _, _ = loaded
    for level, size in (("1m", MIN), ("1h", HOUR)):
        want = {}
        for r in api:
            b = r["ts"] - r["ts"] % size
            k = (b, r.get("service", ""), r["endpoint"], r["method"], r["status_code"] // 100)
            want[k] = want.get(k, 0) + r.get("count", 1)
        rows = srv.query(f"SELECT ts, service, endpoint, method, status_class, requests, "
                         f"sketch_count(latency_sketch) AS sk FROM api_usage_{level}")
        got = {(x["ts"], x["service"], x["endpoint"], x["method"], x["status_class"]):
               x["requests"] for x in rows}
        assert got == want, level
        assert all(x["sk"] is None or x["sk"] <= x["requests"] for x in rows)


def test_late_rows_update_old_buckets(module_server_factory):
    rng = random.Random(SEED + 1)
    api, handler = gen(rng, 600, 300, DAY)
    srv = module_server_factory()
    post_ndjson(srv, "api_usage", api[:300])
    post_ndjson(srv, "handler_metrics", handler[:150])
    before = view_rows(srv, "api_performance", START + DAY, DAY)
    post_shuffled(srv, rng, "api_usage", api[300:])  # late: the same day again
    post_shuffled(srv, rng, "handler_metrics", handler[150:])
    for now_ms, window_ms in windows(3, 6):
        compare_rows("api_performance", view_rows(srv, "api_performance", now_ms, window_ms),
                     expect_api_performance(api, window_ms, now_ms), ("service", "endpoint"),
                     API_SPEC)
        compare_rows("handler_performance",
                     view_rows(srv, "handler_performance", now_ms, window_ms),
                     expect_handler_performance(handler, window_ms, now_ms),
                     ("handler", "component"), HANDLER_SPEC)
    after = view_rows(srv, "api_performance", START + DAY, DAY)
    assert sum(r["requests"] for r in after) > sum(r["requests"] for r in before)


def test_view_reads_rollups(loaded):
    """api_performance reads days, hours and minutes from the rollups and the raw table only for
    the edges of the window, through its ts index."""
    srv, _, _, _ = loaded
    r = srv.get("/api/v1/query", params={"sql": "EXPLAIN QUERY PLAN SELECT * FROM "
                                         "api_performance"})
    assert r.status_code == 200, r.text
    lines = [row["detail"] for row in r.json()["rows"]]
    # the day, the two hour and the two minute ranges (rollups r), each a range of the primary
    # key, and the two raw edges (api_usage a, partitioned), each a ts range given to the
    # partitions
    assert lines.count("SEARCH r USING PRIMARY KEY (ts>? AND ts<?)") == 5, lines
    edges = [x for x in lines if x.startswith("SCAN a VIRTUAL TABLE")]
    assert len(edges) == 2 and all(x.endswith(("ts>,ts<,", "ts>=,ts<=,")) for x in edges), lines
    assert not [x for x in lines if x in ("SCAN a", "SCAN r")], lines


def sqlite3_shell(db, sql):
    subprocess.run(["sqlite3", str(db)], input=sql, capture_output=True, text=True, check=True)


def rollup_rows(run_cli, db, table):
    cp = run_cli("query", f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4, 5", "--db", db,
                 "--format", "json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)["rows"]


def test_migration_backfills_event_rollups(run_cli, tmp_path):
    """Schema version 4 added these rollups: a version-3 database (rows, no rollups) migrates
    and its backfilled rollups equal the ones ingestion maintained batch by batch."""
    rng = random.Random(SEED + 2)
    api, handler = gen(rng, 1500, 500, DAY)
    db = tmp_path / "v3.db"
    errors = gen_errors(rng, 800, DAY)
    for table, rows in (("api_usage", api), ("handler_metrics", handler), ("error_logs", errors)):
        for i in range(0, len(rows), 400):
            cp = run_cli("ingest", table, "-", "--db", db,
                         input="".join(json.dumps(r) + "\n" for r in rows[i:i + 400]))
            assert cp.returncode == 0, cp.stderr
    tables = [f"{t}_{lv}" for t in ("api_usage", "handler_metrics", "error_logs")
              for lv in ("1m", "1h", "1d")]
    incremental = {t: rollup_rows(run_cli, db, t) for t in tables}
    assert all(incremental[t] for t in tables), "every level holds buckets"
    sqlite3_shell(db, "".join(f"DROP TABLE {t};\n" for t in tables) +
                  "DELETE FROM opsdb_migrations WHERE version = 4; PRAGMA user_version = 3;")
    cp = run_cli("init", "--db", db)
    assert cp.returncode == 0, cp.stderr
    assert f"from schema version 3 to {CURRENT_VERSION}" in cp.stderr, cp.stderr
    same_rollups(run_cli, db, tables, incremental)
    # version 7 added the daily level alone, built from the hourly one
    daily = [t for t in tables if t.endswith("_1d")]
    sqlite3_shell(db, "".join(f"DROP TABLE {t};\n" for t in daily) +
                  "DELETE FROM opsdb_migrations WHERE version = 7; PRAGMA user_version = 6;")
    cp = run_cli("init", "--db", db)
    assert cp.returncode == 0, cp.stderr
    assert f"from schema version 6 to {CURRENT_VERSION}" in cp.stderr, cp.stderr
    same_rollups(run_cli, db, daily, incremental)


def same_rollups(run_cli, db, tables, incremental):
    for t in tables:
        backfilled = rollup_rows(run_cli, db, t)
        assert len(backfilled) == len(incremental[t]), t
        for got, want in zip(backfilled, incremental[t]):
            for col, w in want.items():
                g = got[col]
                if isinstance(w, float):  # sums added in another order
                    assert abs(g - w) <= 1e-9 * max(1.0, abs(w)), (t, col, got, want)
                else:
                    assert g == w, (t, col, got, want)


def test_minutes_are_read_until_retention_drops_them(run_cli, tmp_path):
    """Retention records how far it dropped the minute rollups (opsdb_meta
    '<table>_1m.dropped_before'); the views read minute buckets up to there and raw rows beyond,
    so a window whose old end lies past the minutes' retention is exact before and after they
    go, and reads minutes while they are there."""
    rng = random.Random(SEED + 5)
    api, _ = gen(rng, 3000, 10, 4 * DAY - HOUR)
    db = tmp_path / "m.db"
    cp = run_cli("ingest", "api_usage", "-", "--db", db,
                 input="".join(json.dumps(r) + "\n" for r in api))
    assert cp.returncode == 0, cp.stderr
    now = START + 4 * DAY - HOUR + 7_777
    window = 3 * DAY + 5 * HOUR + 1234  # the old end is about 3.2 days back, mid-hour

    def view():
        cp = run_cli("view", "api_performance", "--db", db, "--now", f"{now / 1000:.3f}",
                     "--window", f"{window}ms", "--format", "json")
        assert cp.returncode == 0, cp.stderr
        return json.loads(cp.stdout)["rows"]

    def meta(key):
        cp = run_cli("query", f"SELECT value FROM opsdb_meta WHERE key = '{key}'", "--db", db,
                     "--format", "json")
        rows = json.loads(cp.stdout)["rows"]
        return rows[0]["value"] if rows else None

    want = expect_api_performance(api, window, now)
    compare_rows("api_performance", view(), want, ("service", "endpoint"), API_SPEC)
    assert meta("api_usage_1m.dropped_before") is None
    cp = run_cli("retention", "apply", "--db", db, "--set", "storage.event_rollup_1m_retention=2d")
    assert cp.returncode == 0, cp.stderr
    cut = meta("api_usage_1m.dropped_before")
    assert cut is not None and abs(cut - (now_ms() - 2 * DAY)) < 60_000
    left = run_cli("query", f"SELECT count(*) AS n FROM api_usage_1m WHERE ts < {cut}", "--db",
                   db, "--format", "json")
    assert json.loads(left.stdout)["rows"][0]["n"] == 0
    compare_rows("api_performance", view(), want, ("service", "endpoint"), API_SPEC)
    # the system_metrics minutes have their own policy: the event one leaves them alone
    assert meta("system_metrics_1m.dropped_before") is not None
