"""Time partitions of the event tables (docs/storage.md, docs/config.md).

Every event table (api_usage, error_logs, pipeline_status, handler_metrics, alert_history,
job_runs) keeps its rows in plain tables `<table>_p<YYYYMMDD>` (one per UTC day, or per
`partition.<table>` window: `<table>_pYYYYMMDDtHHMMSS`), listed in the catalogue
`opsdb_partitions(name, table_name, start_ts, end_ts, rows, state, created_at)`; the table's own
name is a read-only virtual table over them. What is checked here, against values computed in
Python from the rows sent:

* rows land in the partition of their window, whatever the order of arrival; the catalogue and
  `opsdb partitions` say so exactly; every row reads back through the table once, rowid =
  (partition start minute + 2^31) << 31 | rowid in the partition;
* SQL, views, `ORDER BY ts [DESC] LIMIT n` and rowid lookups across partition boundaries;
* retention drops whole partitions (`opsdb retention apply`, and the server by itself every
  storage.retention_interval), days of compressed metric chunks and old rollup buckets, and
  views stop answering with dropped rows (no stale cached answer);
* other windows (partition.<table>=1h) and a change of window, refused windows, refused SQL
  writes, failed requests that leave no partition behind, a server next to another process
  that makes or drops partitions, the migration of a schema-version-4 database (plain tables;
  the 4097-day migration case takes 20-30 s).

Times are relative to the wall clock (ingestion refuses rows older than the retention policy),
so tests that depend on where "now - N days" falls against a UTC midnight first step away from
midnight.
"""

import json
import math
import os
import random
import re
import shutil
import subprocess
import time

import pytest

from conftest import now_ms, wait_until
from test_migration import CURRENT_VERSION
from test_views import (API_SPEC, HANDLER_SPEC, compare_rows, expect_api_performance,
                        expect_handler_performance, post_ndjson)

SEED = 20261129
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
ROWID_BITS = 31
MINUTE_OFFSET = 1 << 31
EVENT_TABLES = ["api_usage", "error_logs", "pipeline_status", "handler_metrics",
                "alert_history", "job_runs"]
# a column of each table that carries a unique marker per row sent
MARKER = {"api_usage": "client_id", "error_logs": "trace_id", "pipeline_status": "message",
          "handler_metrics": "host", "alert_history": "summary", "job_runs": "output"}
LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "fatal"]
# long retention everywhere: rows up to 40 days old are accepted
LONG = [a for t in EVENT_TABLES + ["system_metrics"] for a in ("--set", f"retention.{t}=40d")]
APPLY_RE = re.compile(r"^dropped (\d+) partitions? \((\d+) rows\), (\d+) chunks? \((\d+) "
                      r"samples\) and (\d+) rollup rows in ([0-9.]+) s$")


# ---- helpers -------------------------------------------------------------------------------


def day_of(ts):
    return ts - ts % DAY


def part_name(table, start, window=DAY):
    t = time.gmtime(start // 1000)
    name = f"{table}_p{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}"
    if window % DAY:
        name += f"t{t.tm_hour:02d}{t.tm_min:02d}{t.tm_sec:02d}"
    return name


def expected_parts(rows, window=DAY):
    """{partition start: rows} for rows partitioned by windows aligned on the epoch."""
    parts = {}
    for r in rows:
        s = r["ts"] - r["ts"] % window
        parts[s] = parts.get(s, 0) + 1
    return parts


def midnights(lo, hi):
    m = day_of(lo) + DAY
    out = []
    while m <= hi:
        out.append(m)
        m += DAY
    return out


def away_from_midnight(margin_s=20):
    """Waits (rarely, at most 2 * margin_s) until now is more than margin_s seconds from a UTC
    midnight, so that 'now - N days' stays on one side of a day boundary during the test."""
    into, margin = now_ms() % DAY, margin_s * 1000
    if into < margin:
        time.sleep((margin - into) / 1000 + 0.1)
    elif into > DAY - margin:
        time.sleep((DAY - into + margin) / 1000 + 0.1)


def make_row(rng, table, ts, mark):
    if table == "api_usage":
        r = {"ts": ts, "service": rng.choice(["shop", "auth", ""]),
             "method": rng.choice(["GET", "POST"]), "endpoint": rng.choice(["/a", "/b/:id"]),
             "status_code": rng.choice([200, 200, 204, 302, 404, 429, 500, 503])}
        if rng.random() < 0.9:
            r["latency_ms"] = round(rng.lognormvariate(3, 1.2), 3)
        if rng.random() < 0.7:
            r["request_bytes"] = rng.randint(0, 5000)
        if rng.random() < 0.9:
            r["response_bytes"] = rng.randint(0, 90000)
        if rng.random() < 0.3:
            r["count"] = rng.randint(1, 9)
    elif table == "error_logs":
        r = {"ts": ts, "service": "svc", "component": rng.choice(["api", "worker", "db"]),
             "level": rng.choice(LEVELS), "error_type": rng.choice(["ValueError", "Timeout"]),
             "message": f"boom {rng.randint(0, 10**6)}", "fingerprint": f"fp{rng.randrange(6)}"}
    elif table == "pipeline_status":
        r = {"ts": ts, "pipeline": f"pipe{rng.randrange(4)}", "run_id": f"r{rng.randrange(60)}",
             "status": rng.choice(["queued", "running", "succeeded", "failed"]),
             "records_in": rng.randint(0, 1000)}
    elif table == "handler_metrics":
        inv = rng.randint(0, 400)
        r = {"ts": ts, "handler": rng.choice(["h1", "h2", "h3"]),
             "component": rng.choice(["c1", "c2"]), "invocations": inv}
        if rng.random() < 0.8:
            r["errors"] = rng.randint(0, inv)
        if rng.random() < 0.5:
            r["retries"] = rng.randint(0, 9)
        if rng.random() < 0.85:
            r["duration_ms_avg"] = round(rng.uniform(0.1, 900), 3)
        if rng.random() < 0.85:
            r["duration_ms_p95"] = round(rng.uniform(1, 2000), 3)
        if rng.random() < 0.8:
            r["queue_depth"] = rng.randint(0, 10000)
    elif table == "alert_history":
        r = {"ts": ts, "alert_id": f"al{rng.randrange(20)}", "rule": f"rule{rng.randrange(3)}",
             "state": rng.choice(["pending", "firing", "resolved"]),
             "value": round(rng.uniform(0, 100), 3), "labels": {"team": rng.choice(["a", "b"])},
             "severity": rng.choice(["info", "warning", "critical"])}
    else:  # job_runs
        r = {"ts": ts, "job": f"job{rng.randrange(5)}", "run_id": f"run{mark}",
             "status": rng.choice(["ok", "failed", "timeout"]),
             "duration_ms": rng.randint(0, 10**5), "exit_code": rng.randint(0, 2)}
    r[MARKER[table]] = mark
    return r


def gen_events(seed, lo, hi, counts, avoid=()):
    """{table: rows} with ts in [lo, hi], distinct within a table, a unique marker per row, and
    rows exactly at and 1 ms before every UTC midnight in the range. avoid: (from, to) ranges
    of ts left empty."""
    rng = random.Random(seed)
    out = {}

    def free(t):
        return not any(a <= t <= b for a, b in avoid)

    for table, n in counts.items():
        used = set()
        stamps = []
        for m in midnights(lo, hi):
            for t in (m - 1, m):
                if lo <= t <= hi and free(t):
                    used.add(t)
                    stamps.append(t)
        while len(stamps) < n:
            t = rng.randint(lo, hi)
            if t not in used and free(t):
                used.add(t)
                stamps.append(t)
        out[table] = [make_row(rng, table, ts, f"{table[:2]}{i}") for i, ts in enumerate(stamps)]
    return out


def check_row(where, got, want):
    """Every column sent comes back as sent (JSON columns as text, reals within 1e-12)."""
    for k, w in want.items():
        g = got[k]
        if isinstance(w, dict):
            assert json.loads(g) == w, f"{where}.{k}: got {g!r}, want {w!r}"
        elif isinstance(w, float):
            assert isinstance(g, (int, float)) and math.isclose(g, w, rel_tol=1e-12), \
                f"{where}.{k}: got {g!r}, want {w!r}"
        else:
            assert g == w, f"{where}.{k}: got {g!r}, want {w!r}"


def ndjson(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


def api_row(ts, mark):
    return {"ts": ts, "method": "GET", "endpoint": "/2p", "status_code": 200, "client_id": mark}


def cli_ingest(run_cli, db, table, rows, *opts):
    cp = run_cli("ingest", table, "-", "--db", db, *LONG, *opts, input=ndjson(rows))
    assert cp.returncode == 0, cp.stderr
    return cp


def cli_rows(run_cli, db, *args):
    cp = run_cli(*args, "--db", db, "--format", "json")
    assert cp.returncode in (0, 1), cp.stderr
    return json.loads(cp.stdout)["rows"]


def cli_query(run_cli, db, sql, *opts):
    cp = run_cli("query", sql, "--db", db, "--format", "json", "--set", "query.max_rows=1000000",
                 *opts)
    assert cp.returncode == 0, f"{sql}: {cp.stderr}"
    return json.loads(cp.stdout)["rows"]


def catalogue(rows_of, table):
    """(name, start, end, rows, state) of table's partitions, from opsdb_partitions rows."""
    return [(c["name"], c["start_ts"], c["end_ts"], c["rows"], c["state"])
            for c in rows_of if c["table_name"] == table]


def listed(parts, table):
    """(partition, from, to, rows, state) of table's rows of `opsdb partitions`."""
    return [(p["partition"], p["from_ms"], p["to_ms"], p["rows"], p["state"])
            for p in parts if p["table"] == table]


def want_catalogue(table, rows, window=DAY, packed_before=None):
    """Catalogue rows; partitions ending by packed_before were packed by `opsdb compact`."""
    return [(part_name(table, s, window), s, s + window, n,
             "cold" if packed_before is not None and s + window <= packed_before else "hot")
            for s, n in sorted(expected_parts(rows, window).items())]


def api_rollup_1m(rows):
    """api_usage_1m computed from raw rows: {(ts, service, endpoint, method, class): {...}}."""
    out = {}
    for r in rows:
        k = (r["ts"] - r["ts"] % MIN, r.get("service", ""), r["endpoint"], r["method"],
             r["status_code"] // 100)
        b = out.setdefault(k, {"requests": 0, "errors": 0, "request_bytes": None,
                               "response_bytes": None, "latency_sum": None,
                               "latency_count": None, "last_ts": r["ts"]})
        c = r.get("count", 1)
        b["requests"] += c
        b["errors"] += c if r["status_code"] >= 500 else 0
        for col in ("request_bytes", "response_bytes"):
            if r.get(col) is not None:
                b[col] = (b[col] or 0) + r[col]
        if r.get("latency_ms") is not None:
            b["latency_sum"] = (b["latency_sum"] or 0.0) + r["latency_ms"] * c
            b["latency_count"] = (b["latency_count"] or 0) + c
        b["last_ts"] = max(b["last_ts"], r["ts"])
    return out


def check_api_rollup(got_rows, rows):
    want = api_rollup_1m(rows)
    got = {(x["ts"], x["service"], x["endpoint"], x["method"], x["status_class"]): x
           for x in got_rows}
    assert sorted(got) == sorted(want), "api_usage_1m buckets differ from the rows"
    for k, w in want.items():
        g = got[k]
        for col, v in w.items():
            if isinstance(v, float):
                assert math.isclose(g[col], v, rel_tol=1e-9), (k, col, g[col], v)
            else:
                assert g[col] == v, (k, col, g[col], v)
        assert g["sk"] == w["latency_count"], (k, "sketch_count", g["sk"], w["latency_count"])


API_1M_SQL = ("SELECT ts, service, endpoint, method, status_class, requests, errors, "
              "request_bytes, response_bytes, latency_sum, latency_count, last_ts, "
              "sketch_count(latency_sketch) AS sk FROM api_usage_1m")


# ---- one server with ~5 days of every event table ------------------------------------------


@pytest.fixture(scope="module")
def loaded(module_server_factory):
    t0 = now_ms()
    lo, hi = t0 - 5 * DAY + HOUR, t0 - MIN
    counts = {"api_usage": 6000, "error_logs": 1200, "pipeline_status": 800,
              "handler_metrics": 2000, "alert_history": 600, "job_runs": 600}
    data = gen_events(SEED, lo, hi, counts)
    srv = module_server_factory(*LONG, "--set", "query.max_rows=100000")
    rng = random.Random(SEED + 1)
    for table, rows in data.items():
        # the newest day first, then the older days late and shuffled, several days a batch
        newest = [r for r in rows if r["ts"] >= day_of(hi)]
        rest = [r for r in rows if r["ts"] < day_of(hi)]
        rng.shuffle(rest)
        post_ndjson(srv, table, newest)
        for i in range(0, len(rest), 500):
            post_ndjson(srv, table, rest[i:i + 500])
    return {"srv": srv, "data": data, "lo": lo, "hi": hi, "t0": t0, "t1": now_ms()}


def test_rows_land_in_one_partition_per_utc_day(loaded, run_cli):
    srv, data = loaded["srv"], loaded["data"]
    cat = srv.query("SELECT * FROM opsdb_partitions ORDER BY table_name, start_ts")
    assert {c["table_name"] for c in cat} == set(EVENT_TABLES)
    assert all(loaded["t0"] <= c["created_at"] <= loaded["t1"] for c in cat), cat
    parts = cli_rows(run_cli, srv.db, "partitions")
    assert listed(parts, "system_metrics") == []  # none loaded here: no chunk days
    for table in EVENT_TABLES:
        rows, mark = data[table], MARKER[table]
        want = want_catalogue(table, rows)
        assert len(want) in (5, 6)  # 5 days back from now: 6 UTC days (5 just after midnight)
        assert catalogue(cat, table) == want, table
        assert listed(parts, table) == want, table
        assert all(isinstance(p["bytes"], int) and p["bytes"] > 0
                   for p in parts if p["table"] == table)

        # each partition table holds exactly the rows of its day
        local = {}
        for name, start, _end, _n, _state in want:
            got = srv.query(f"SELECT rowid AS rid, {mark} FROM {name}")
            assert sorted(x[mark] for x in got) == \
                sorted(r[mark] for r in rows if day_of(r["ts"]) == start), name
            for x in got:
                local[x[mark]] = ((start // MIN + MINUTE_OFFSET) << ROWID_BITS) | x["rid"]

        # through the table's own name: every row once, as sent, with its composed rowid
        got = srv.query(f"SELECT rowid AS rid, * FROM {table}")
        assert len(got) == len(rows), table
        seen = {}
        for x in got:
            assert x[mark] not in seen, f"{table}: row {x[mark]} read twice"
            seen[x[mark]] = x
        sent = {r[mark]: r for r in rows}
        assert set(seen) == set(sent), table
        for m, x in seen.items():
            check_row(f"{table}[{m}]", x, sent[m])
            assert x["rid"] == local[m], f"{table}[{m}]: rowid {x['rid']} != {local[m]}"
        assert len({x["rid"] for x in got}) == len(got), f"{table}: rowids not unique"

        per_day = srv.query(f"SELECT ts - ts % {DAY} AS d, count(*) AS n FROM {table} "
                            f"GROUP BY d ORDER BY d")
        assert [(x["d"], x["n"]) for x in per_day] == sorted(expected_parts(rows).items())


def test_views_across_partition_boundaries(loaded):
    srv, data = loaded["srv"], loaded["data"]
    api, handler = data["api_usage"], data["handler_metrics"]
    ms = midnights(loaded["lo"], loaded["hi"])
    cases = [(ms[0] + 30 * MIN, HOUR), (ms[1] + 12_345, DAY + 7 * MIN), (ms[1] + 20_000, 45_000),
             (ms[2] + HOUR + 1, 2 * DAY + 1), (ms[-1] - 1, 3 * DAY), (ms[0] - 1, 2),
             (ms[3], 1), (ms[3] + 59_999, 2 * MIN)]
    for now, window in cases:
        params = {"now": f"{now / 1000:.3f}", "window": f"{window}ms"}
        r = srv.get("/api/v1/views/api_performance", params=params)
        assert r.status_code == 200, r.text
        compare_rows(f"api_performance@{now},{window}", r.json()["rows"],
                     expect_api_performance(api, window, now), ("service", "endpoint"), API_SPEC)
        r = srv.get("/api/v1/views/handler_performance", params=params)
        assert r.status_code == 200, r.text
        compare_rows(f"handler_performance@{now},{window}", r.json()["rows"],
                     expect_handler_performance(handler, window, now), ("handler", "component"),
                     HANDLER_SPEC)


def test_queries_across_partition_boundaries(loaded):
    srv, data = loaded["srv"], loaded["data"]
    api, errs = data["api_usage"], data["error_logs"]
    ms = midnights(loaded["lo"], loaded["hi"])
    windows = [(ms[0] - 1, ms[0] + 1), (ms[0] - 3 * HOUR, ms[2] + 2 * HOUR),
               (loaded["lo"], loaded["hi"]), (ms[1], ms[1]), (ms[2] - 1, ms[2] - 1),
               (ms[1] - 40 * HOUR, ms[1] + 7)]
    for lo, hi in windows:
        for cond, keep in ((f"ts >= {lo} AND ts < {hi}", lambda t: lo <= t < hi),
                           (f"ts > {lo} AND ts <= {hi}", lambda t: lo < t <= hi),
                           (f"ts BETWEEN {lo} AND {hi}", lambda t: lo <= t <= hi),
                           (f"{lo} <= ts AND ts <= {hi} AND endpoint = '/a'",
                            lambda t: lo <= t <= hi)):
            sel = [r for r in api if keep(r["ts"]) and
                   ("endpoint" not in cond or r["endpoint"] == "/a")]
            got = srv.query(f"SELECT count(*) AS n, sum(coalesce(response_bytes, 0)) AS b, "
                            f"sum(count) AS c FROM api_usage WHERE {cond}")[0]
            assert got["n"] == len(sel), cond
            assert (got["b"] or 0) == sum(r.get("response_bytes", 0) for r in sel), cond
            assert (got["c"] or 0) == sum(r.get("count", 1) for r in sel), cond
        got = srv.query(f"SELECT trace_id FROM error_logs WHERE fingerprint = 'fp2' AND "
                        f"ts >= {lo} AND ts <= {hi}")
        assert sorted(x["trace_id"] for x in got) == sorted(
            r["trace_id"] for r in errs if r["fingerprint"] == "fp2" and lo <= r["ts"] <= hi)
    # the rows at and just before midnight, each in its own partition
    for m in ms:
        for t in (m - 1, m):
            got = srv.query(f"SELECT client_id FROM api_usage WHERE ts = {t}")
            assert [x["client_id"] for x in got] == [r["client_id"] for r in api if r["ts"] == t]
    # a correlated subquery: one filter per outer row, each with other ts bounds
    picks = [r for r in api if r["ts"] in {m + d for m in ms for d in (-1, 0)}][:8] + api[100:112]
    ids = ", ".join(f"'{r['client_id']}'" for r in picks)
    got = srv.query(f"SELECT a.client_id AS id, (SELECT count(*) FROM api_usage b WHERE "
                    f"b.endpoint = a.endpoint AND b.ts > a.ts - {HOUR} AND b.ts <= a.ts) AS n "
                    f"FROM api_usage a WHERE a.client_id IN ({ids})")
    want = {r["client_id"]: sum(1 for b in api if b["endpoint"] == r["endpoint"]
                                and r["ts"] - HOUR < b["ts"] <= r["ts"]) for r in picks}
    assert {x["id"]: x["n"] for x in got} == want
    # a join of two partitioned tables on the minute
    got = srv.query(f"SELECT count(*) AS n FROM api_usage a JOIN error_logs e ON e.ts = a.ts + 0 "
                    f"WHERE a.ts >= {ms[1] - HOUR} AND a.ts < {ms[1] + HOUR}")[0]["n"]
    ets = {r["ts"] for r in errs}
    assert got == sum(1 for r in api if ms[1] - HOUR <= r["ts"] < ms[1] + HOUR and r["ts"] in ets)


VT_PLAN = re.compile(r"SCAN (\w+) VIRTUAL TABLE INDEX (\d+):(.*)$")


def vt_plans(details, table):
    """(idxNum, idxStr) of the partitioned table's scans in EXPLAIN QUERY PLAN details."""
    return [(int(m.group(2)), m.group(3)) for d in details
            for m in [VT_PLAN.match(d)] if m and m.group(1) == table]


def vt_flags(details, table):
    return [n & 3 for n, _ in vt_plans(details, table)]


def vt_columns(details, table):
    return [n >> 2 for n, _ in vt_plans(details, table)]


def vt_constraints(details, table):
    return [c for _, c in vt_plans(details, table)]


def column_index(table, column):
    """The column's position in the table (`opsdb schema` lists them in order)."""
    cp = subprocess.run([os.environ.get("OPSDB_BIN", "./opsdb"), "schema"], capture_output=True,
                        text=True, check=True)
    for line in cp.stdout.splitlines():
        if line.startswith(table + ":"):
            return [c.rstrip("*") for c in line.split(":", 1)[1].split()].index(column)
    raise KeyError(table)


def test_order_by_ts_limit_across_partitions(loaded):
    srv, data = loaded["srv"], loaded["data"]
    ms = midnights(loaded["lo"], loaded["hi"])
    for table in ("api_usage", "error_logs", "job_runs"):
        mark = MARKER[table]
        rows = sorted(data[table], key=lambda r: r["ts"])
        ids = [r[mark] for r in rows]

        def q(sql):
            return [x[mark] for x in srv.query(sql)]

        assert q(f"SELECT {mark} FROM {table} ORDER BY ts DESC LIMIT 7") == ids[::-1][:7]
        assert q(f"SELECT {mark} FROM {table} ORDER BY ts LIMIT 7") == ids[:7]
        assert q(f"SELECT {mark} FROM {table} ORDER BY ts DESC LIMIT 3 OFFSET 10") == \
            ids[::-1][10:13]
        for m in ms:
            below = [r[mark] for r in rows if r["ts"] < m + 2]
            above = [r[mark] for r in rows if r["ts"] >= m - 2]
            assert q(f"SELECT {mark} FROM {table} WHERE ts < {m + 2} ORDER BY ts DESC "
                     f"LIMIT 5") == below[::-1][:5]
            assert q(f"SELECT {mark} FROM {table} WHERE ts >= {m - 2} ORDER BY ts "
                     f"LIMIT 5") == above[:5]
        assert q(f"SELECT {mark} FROM {table} ORDER BY ts DESC") == ids[::-1]
        assert q(f"SELECT {mark} FROM {table} ORDER BY ts") == ids
        got = srv.query(f"SELECT max(ts) AS hi, min(ts) AS lo FROM {table}")[0]
        assert (got["lo"], got["hi"]) == (rows[0]["ts"], rows[-1]["ts"])

    def plan(sql):
        r = srv.get("/api/v1/query", params={"sql": "EXPLAIN QUERY PLAN " + sql})
        assert r.status_code == 200, r.text
        return [x["detail"] for x in r.json()["rows"]]

    desc = plan("SELECT * FROM api_usage ORDER BY ts DESC LIMIT 5")
    assert vt_flags(desc, "api_usage") == [3], desc  # idxNum bits 0-1: ordered, descending
    asc = plan("SELECT * FROM api_usage ORDER BY ts LIMIT 5")
    assert vt_flags(asc, "api_usage") == [2], asc
    assert not any("TEMP B-TREE" in d for d in desc + asc), desc + asc
    rng = plan(f"SELECT * FROM api_usage WHERE ts >= {ms[0]} AND ts < {ms[1]}")
    assert vt_constraints(rng, "api_usage") == ["ts>=,ts<,"], rng
    # the columns read go in idxNum above the flags: a count reads none, * reads all
    assert vt_columns(plan("SELECT count(*) FROM api_usage"), "api_usage") == [0]
    assert vt_columns(plan("SELECT endpoint, ts FROM api_usage"), "api_usage") == [
        (1 << column_index("api_usage", "endpoint")) | (1 << column_index("api_usage", "ts"))]


def test_rowid_lookups(loaded):
    srv, data = loaded["srv"], loaded["data"]
    api = data["api_usage"]
    by_day = {}
    for r in api:
        by_day.setdefault(day_of(r["ts"]), []).append(r["client_id"])
    # first, middle and last of each day; a day of one or two rows gives each once
    picks = list(dict.fromkeys(ids[i] for ids in by_day.values() for i in (0, len(ids) // 2, -1)))
    for m in picks:
        got = srv.query(f"SELECT client_id FROM api_usage WHERE rowid = "
                        f"(SELECT rowid FROM api_usage WHERE client_id = '{m}')")
        assert [x["client_id"] for x in got] == [m]
    inner = ", ".join(f"'{m}'" for m in picks)
    got = srv.query(f"SELECT client_id FROM api_usage WHERE rowid IN "
                    f"(SELECT rowid FROM api_usage WHERE client_id IN ({inner}))")
    assert sorted(x["client_id"] for x in got) == sorted(picks)
    top = srv.scalar("SELECT max(rowid) AS r FROM api_usage")
    for bogus in (top + 1, -1, 1, 0, "'abc'", top + (1 << ROWID_BITS), 1.5):
        assert srv.query(f"SELECT client_id FROM api_usage WHERE rowid = {bogus}") == [], bogus
    r = srv.get("/api/v1/query", params={"sql": "EXPLAIN QUERY PLAN SELECT * FROM api_usage "
                                                "WHERE rowid = 5"})
    assert r.status_code == 200, r.text
    assert vt_constraints([x["detail"] for x in r.json()["rows"]], "api_usage") == ["rowid=,"]


def test_equality_under_another_collation(loaded):
    """A constraint pushed into the partitions must mean what the query says: an equality
    with COLLATE NOCASE on an indexed column (endpoint, service) matches '/a' for '/A'."""
    srv, data = loaded["srv"], loaded["data"]
    api = data["api_usage"]
    want = sum(1 for r in api if r["endpoint"] == "/a")
    assert srv.scalar("SELECT count(*) AS n FROM api_usage WHERE endpoint = '/a'") == want
    assert srv.scalar("SELECT count(*) AS n FROM api_usage WHERE lower(endpoint) = '/a'") == want
    assert srv.scalar("SELECT count(*) AS n FROM api_usage WHERE "
                      "endpoint = '/A' COLLATE NOCASE") == want
    want = sum(1 for r in api if r.get("service") == "shop")
    assert srv.scalar("SELECT count(*) AS n FROM api_usage WHERE "
                      "service = 'SHOP' COLLATE NOCASE") == want


def test_rowids_at_and_before_the_epoch(run_cli, tmp_path):
    """Rows kept forever (retention 0) may be as old as 1970 or older (a ts of 0 is a common
    placeholder): their rowids must still be unique and find their row."""
    db = tmp_path / "epoch.db"
    rows = [api_row(ts, f"e{i}") for i, ts in enumerate((0, 5000, -5000, -DAY - 5000,
                                                          DAY + 5000, 3 * DAY))]
    cp = run_cli("ingest", "api_usage", "-", "--db", db, "--set", "retention.api_usage=0",
                 input=ndjson(rows))
    assert cp.returncode == 0, cp.stderr
    got = cli_query(run_cli, db, "SELECT rowid AS rid, client_id FROM api_usage")
    assert sorted(x["client_id"] for x in got) == sorted(r["client_id"] for r in rows)
    assert len({x["rid"] for x in got}) == len(rows), got
    for r in rows:
        got = cli_query(run_cli, db, f"SELECT client_id FROM api_usage WHERE rowid = (SELECT "
                                     f"rowid FROM api_usage WHERE client_id = '{r['client_id']}')")
        assert [x["client_id"] for x in got] == [r["client_id"]], r


def test_sql_writes_are_refused(loaded):
    srv, data = loaded["srv"], loaded["data"]
    cat = srv.query("SELECT * FROM opsdb_partitions ORDER BY name")
    part, part_rows = [(c["name"], c["rows"]) for c in cat if c["table_name"] == "api_usage"][0]
    ts = data["api_usage"][0]["ts"]
    before = srv.scalar("SELECT count(*) AS n FROM api_usage")
    statements = [
        f"INSERT INTO api_usage (ts, method, endpoint, status_code) VALUES "
        f"({ts}, 'GET', '/w', 200)",
        "UPDATE api_usage SET endpoint = '/w'",
        "DELETE FROM api_usage",
        f"DELETE FROM api_usage WHERE ts = {ts}",
        f"INSERT INTO {part} (ts, method, endpoint, status_code) VALUES ({ts}, 'GET', '/w', 200)",
        f"UPDATE {part} SET endpoint = '/w'",
        f"DELETE FROM {part}",
        f"DROP TABLE {part}",
        f"DROP INDEX {part}_ts",
        f"ALTER TABLE {part} RENAME TO stolen",
        "DROP TABLE api_usage",
        "DELETE FROM opsdb_partitions",
        f"UPDATE opsdb_partitions SET end_ts = 0 WHERE name = '{part}'",
        f"WITH x AS (SELECT 1) DELETE FROM {part}",
        f"CREATE TABLE {part}x AS SELECT * FROM {part}",
    ]
    for sql in statements:
        r = srv.get("/api/v1/query", params={"sql": sql})
        assert r.status_code == 400, f"{sql!r} -> {r.status_code} {r.text}"
        assert "error" in r.json(), r.text
    assert srv.query("SELECT * FROM opsdb_partitions ORDER BY name") == cat
    assert srv.scalar("SELECT count(*) AS n FROM api_usage") == before == len(data["api_usage"])
    assert srv.scalar(f"SELECT count(*) AS n FROM {part}") == part_rows
    assert srv.scalar(f"SELECT count(*) AS n FROM sqlite_schema WHERE name = '{part}x' "
                      f"OR name = 'stolen'") == 0


# ---- retention ----------------------------------------------------------------------------


def retention_data(seed, now, scale=1):
    """~5 days of api_usage, job_runs, error_logs, handler_metrics and system_metrics samples,
    with nothing within 5 minutes of now - 2 days (the 1-minute rollup horizon used below) so
    that the rollup buckets dropped are known exactly."""
    lo, hi = now - 5 * DAY + 10 * MIN, now - MIN
    avoid = [(now - 2 * DAY - 5 * MIN, now - 2 * DAY + 5 * MIN)]
    data = gen_events(seed, lo, hi, {"api_usage": 20000 * scale, "job_runs": 500,
                                     "error_logs": 500, "handler_metrics": 1500}, avoid)
    samples = []
    for i, host in enumerate(("h0", "h1", "h2")):
        t = lo + i * 1000
        while t <= hi:
            if not avoid[0][0] <= t <= avoid[0][1]:
                samples.append({"ts": t, "metric": "cpu_usage", "host": host,
                                "value": round(random.Random(t).uniform(0, 100), 2)})
            t += 7 * MIN
    data["system_metrics"] = samples
    return data


ROLLUP_1M_2D = ("--set", "storage.rollup_1m_retention=2d",
                "--set", "storage.event_rollup_1m_retention=2d")


def dropped_expectation(data, now, policies, rollup_1m_ms, gone=()):
    """What `retention apply` at `now` drops: (partitions, rows, chunks, samples, rollup rows —
    for the metric minutes: chunks that lost theirs); partitions already dropped (names in gone)
    excluded."""
    parts = rows = 0
    for table, days in policies.items():
        if table == "system_metrics":
            continue
        for s, n in expected_parts(data[table]).items():
            if s + DAY <= now - days * DAY and part_name(table, s) not in gone:
                parts += 1
                rows += n
    chunks, samples = set(), 0
    if "system_metrics" in policies:
        first_kept = day_of(now - policies["system_metrics"] * DAY)
        for x in data["system_metrics"]:
            if x["ts"] < first_kept:
                chunks.add((x["host"], day_of(x["ts"])))
                samples += 1
    cut = now - rollup_1m_ms
    rollups = len({k for k in api_rollup_1m(data["api_usage"]) if k[0] < cut})
    rollups += len({(r["ts"] - r["ts"] % MIN, r["handler"], r["component"])
                    for r in data["handler_metrics"] if r["ts"] - r["ts"] % MIN < cut})
    # metric minutes live in the chunks' rows and go a whole day at a time, one chunk per host
    # and day here (compaction folded every past day), except in days whose chunks went
    raw_first = day_of(now - policies["system_metrics"] * DAY) if "system_metrics" in policies \
        else float("-inf")
    rollups += len({(x["host"], day_of(x["ts"])) for x in data["system_metrics"]
                    if raw_first <= x["ts"] < day_of(cut)})
    rollups += len({(r["ts"] - r["ts"] % MIN, r["fingerprint"], r.get("host", ""))
                    for r in data["error_logs"] if r["ts"] - r["ts"] % MIN < cut})
    return parts, rows, len(chunks) if "system_metrics" in policies else 0, samples, rollups


def run_apply(run_cli, db, *opts):
    t = time.monotonic()
    cp = run_cli("retention", "apply", "--db", db, *opts)
    wall = time.monotonic() - t
    assert cp.returncode == 0, cp.stderr
    m = APPLY_RE.match(cp.stdout.strip())
    assert m, cp.stdout
    return tuple(int(x) for x in m.groups()[:5]), float(m.group(6)), wall


def test_retention_apply_drops_whole_partitions(run_cli, tmp_path):
    away_from_midnight()
    db = tmp_path / "ret.db"
    now = now_ms()
    data = retention_data(SEED + 3, now)
    rng = random.Random(SEED + 4)
    for table in ("api_usage", "job_runs", "error_logs", "handler_metrics", "system_metrics"):
        rows = data[table][:]
        rng.shuffle(rows)
        cli_ingest(run_cli, db, table, rows)
    packed_before = now_ms() - HOUR
    cp = run_cli("compact", "--db", db, "--older-than", "1h", "--quiet")
    assert cp.returncode == 0, cp.stderr

    short = {"api_usage": 3, "job_runs": 2, "system_metrics": 3}
    short_opts = [a for t, d in short.items() for a in ("--set", f"retention.{t}={d}d")]
    # before: data older than horizon minus one partition is held
    cp = run_cli("retention", "verify", "--db", db, *short_opts, "--format", "json")
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert "3 tables hold data older than their retention policy" in cp.stderr, cp.stderr
    status = {r["table"]: r for r in json.loads(cp.stdout)["rows"]}
    assert {t: status[t]["status"] for t in short} == {t: "past policy" for t in short}
    assert status["error_logs"]["status"] == "ok"
    assert status["api_usage"]["rows"] == len(data["api_usage"])
    assert run_cli("retention", "verify", "--db", db).returncode == 0  # default policies

    cat0 = cli_query(run_cli, db, "SELECT * FROM opsdb_partitions ORDER BY table_name, start_ts")
    for table in ("api_usage", "job_runs", "error_logs", "handler_metrics"):
        assert catalogue(cat0, table) == want_catalogue(table, data[table],
                                                        packed_before=packed_before), table
    hourly0 = cli_query(run_cli, db, "SELECT * FROM api_usage_1h ORDER BY 1, 2, 3, 4, 5")
    metric_parts = [p for p in cli_rows(run_cli, db, "partitions")
                    if p["table"] == "system_metrics"]
    cold0 = [p for p in metric_parts if p["state"] == "cold"]
    assert sum(p["rows"] for p in metric_parts) == len(data["system_metrics"])
    assert {p["from_ms"] for p in cold0} >= {day_of(x["ts"]) for x in data["system_metrics"]
                                             if x["ts"] < now - 2 * HOUR}

    # the oldest (partial) day of api_usage at 4 days; then a whole day more at 3 days, with
    # job_runs at 2 days, metric chunks at 3 days and minute rollups at 2 days
    before = now_ms()
    got, secs, wall = run_apply(run_cli, db, "--set", "retention.api_usage=4d")
    want = {dropped_expectation(data, t, {"api_usage": 4}, 7 * DAY) for t in (before, now_ms())}
    assert got in want, (got, want)
    assert got[2:] == (0, 0, 0), got
    gone = {part_name("api_usage", day_of(min(r["ts"] for r in data["api_usage"])))}
    print(f"\nretention apply of one day of api_usage ({got[1]} rows): {secs:.3f} s as printed, "
          f"{wall:.3f} s for the whole command (ASan build)")
    assert secs < 10

    before = now_ms()
    got, secs, wall = run_apply(run_cli, db, *short_opts, *ROLLUP_1M_2D)
    after = now_ms()
    want = {dropped_expectation(data, t, short, 2 * DAY, gone) for t in (before, after)}
    assert got in want, (got, want)
    assert got[0] >= 3 and got[2] >= 1 and got[4] > 0, got  # the test drops something
    print(f"retention apply of {got[0]} partitions, {got[2]} chunk days and {got[4]} rollup "
          f"rows: {secs:.3f} s ({wall:.3f} s wall)")
    assert secs < 10

    # a second apply has nothing left to drop
    got, _, _ = run_apply(run_cli, db, *short_opts, *ROLLUP_1M_2D)
    assert got == (0, 0, 0, 0, 0)
    assert run_cli("retention", "verify", "--db", db, *short_opts).returncode == 0

    # exactly the partitions that end at or before their horizon went, nothing else
    now = now_ms()
    cat = cli_query(run_cli, db, "SELECT * FROM opsdb_partitions ORDER BY table_name, start_ts")
    for table in ("api_usage", "job_runs", "error_logs", "handler_metrics"):
        days = short.get(table)
        keep = [r for r in data[table]
                if days is None or day_of(r["ts"]) + DAY > now - days * DAY]
        assert catalogue(cat, table) == want_catalogue(table, keep,
                                                       packed_before=packed_before), table
        mark = MARKER[table]
        got = cli_query(run_cli, db, f"SELECT {mark} FROM {table}")
        assert sorted(x[mark] for x in got) == sorted(r[mark] for r in keep), table
        if days:  # every row inside the policy is still there
            assert {r[mark] for r in data[table] if r["ts"] >= now - days * DAY} <= \
                {x[mark] for x in got}
    names = {x["name"] for x in cli_query(run_cli, db, "SELECT name FROM sqlite_schema WHERE "
                                                       "type = 'table'")}
    for c in cat0:
        assert (c["name"] in names) == (c["name"] in {x["name"] for x in cat}), c["name"]
    status = {r["table"]: r for r in cli_rows(run_cli, db, "retention", "status", *short_opts)}
    assert status["api_usage"]["rows"] == sum(c["rows"] for c in cat
                                              if c["table_name"] == "api_usage")
    # metric chunks: whole days before the horizon's day went
    first_kept = day_of(now - 3 * DAY)
    cold = [p for p in cli_rows(run_cli, db, "partitions")
            if p["state"] == "cold" and p["table"] == "system_metrics"]
    assert [p["from_ms"] for p in cold] == [p["from_ms"] for p in cold0
                                            if p["from_ms"] >= first_kept]
    n = cli_query(run_cli, db, "SELECT count(*) AS n FROM system_metrics")[0]["n"]
    assert n == sum(1 for x in data["system_metrics"] if x["ts"] >= first_kept)
    # rollups: hours kept (400d), minutes before now - 2d gone, the rest as the rows say
    assert cli_query(run_cli, db, "SELECT * FROM api_usage_1h ORDER BY 1, 2, 3, 4, 5") == hourly0
    cut = now - 2 * DAY
    check_api_rollup(cli_query(run_cli, db, API_1M_SQL),
                     [r for r in data["api_usage"] if r["ts"] >= cut])


def window_counts(rows, now, window):
    counts = {}
    for r in rows:
        if now - window < r["ts"] <= now:
            counts[r["fingerprint"]] = counts.get(r["fingerprint"], 0) + 1
    return counts


def test_server_applies_retention_and_answers_change(server_factory, run_cli, tmp_db):
    away_from_midnight()
    now = now_ms()
    lo, hi = now - 5 * DAY + 10 * MIN, now - MIN
    data = gen_events(SEED + 5, lo, hi, {"api_usage": 3000, "error_logs": 800,
                                         "handler_metrics": 800})
    for table, rows in data.items():  # the database, filled with a long retention
        cli_ingest(run_cli, tmp_db, table, rows)
    short = ["--set", "retention.api_usage=3d", "--set", "retention.error_logs=3d",
             "--set", "retention.handler_metrics=3d"]
    started = time.monotonic()
    srv = server_factory(*short, "--set", "storage.retention_interval=5s",
                         "--set", "query.max_rows=100000")

    # before the first run (5 s after start): answers over old data, cached. api_performance
    # over 50 s inside one minute of a day that goes reads raw rows only (no whole minute)
    old_day = day_of(now - 4 * DAY)
    pick = next(r["ts"] for r in data["api_usage"]
                if day_of(r["ts"]) == old_day and 5_000 < r["ts"] % MIN < 50_000)
    old_now = pick - pick % MIN + 55_000
    # error_summary likewise (whole minutes and hours come from rollups, kept longer than rows)
    pick_e = next(r["ts"] for r in data["error_logs"]
                  if day_of(r["ts"]) == old_day and 5_000 < r["ts"] % MIN < 50_000)
    old_err_now = pick_e - pick_e % MIN + 55_000
    views = {
        "error_summary": {"now": f"{old_err_now / 1000:.3f}", "window": "50s"},
        "api_performance": {"now": f"{old_now / 1000:.3f}", "window": "50s"},
        "handler_performance": {"now": f"{(now - MIN) / 1000:.3f}", "window": "4h"},
    }
    first = {}
    for name, params in views.items():
        r = srv.get(f"/api/v1/views/{name}", params=params)
        assert r.status_code == 200, r.text
        again = srv.get(f"/api/v1/views/{name}", params=params)
        assert again.headers["X-Opsdb-Cache"] == "hit" and again.json() == r.json(), name
        first[name] = r.json()["rows"]
    count0 = srv.scalar("SELECT count(*) AS n FROM api_usage")
    assert time.monotonic() - started < 4.5, "too slow: the first retention run may have begun"
    assert "retention dropped" not in srv.run_stderr()
    assert count0 == len(data["api_usage"])
    assert {x["fingerprint"]: x["count_window"] for x in first["error_summary"]} == \
        window_counts(data["error_logs"], old_err_now, 50_000) != {}
    raw_window = expect_api_performance(data["api_usage"], 50_000, old_now)
    assert raw_window, "no row in the raw-only window"
    compare_rows("api_performance", first["api_performance"], raw_window,
                 ("service", "endpoint"), API_SPEC)

    # the server drops the old partitions by itself
    def old_parts():
        return srv.scalar(f"SELECT count(*) AS n FROM opsdb_partitions WHERE "
                          f"end_ts <= {now_ms() - 3 * DAY}")

    assert old_parts() > 0
    assert wait_until(lambda: old_parts() == 0, timeout=20, interval=0.2), srv.run_stderr()
    assert wait_until(lambda: "retention dropped" in srv.run_stderr(), timeout=5)
    t = now_ms()
    kept = {table: [r for r in rows if day_of(r["ts"]) + DAY > t - 3 * DAY]
            for table, rows in data.items()}
    assert srv.scalar("SELECT count(*) AS n FROM api_usage") == len(kept["api_usage"]) < count0
    cat = srv.query("SELECT * FROM opsdb_partitions ORDER BY table_name, start_ts")
    for table in data:
        assert catalogue(cat, table) == want_catalogue(table, kept[table]), table

    # the same questions: recomputed, without the dropped rows
    for name, params in views.items():
        r = srv.get(f"/api/v1/views/{name}", params=params)
        assert r.status_code == 200, r.text
        assert r.headers["X-Opsdb-Cache"] == "miss", name
        views[name] = r.json()["rows"]
    assert views["error_summary"] == []  # its raw rows are gone
    assert views["api_performance"] == []  # its raw rows are gone
    compare_rows("handler_performance", views["handler_performance"],
                 expect_handler_performance(kept["handler_metrics"], 4 * HOUR, now - MIN),
                 ("handler", "component"), HANDLER_SPEC)


# ---- other windows ---------------------------------------------------------------------------


def test_hourly_partitions(server_factory, run_cli):
    srv = server_factory(*LONG, "--set", "partition.api_usage=1h", "--set",
                         "partition.job_runs=2h")
    now = now_ms()
    lo, hi = now - 5 * HOUR - 17, now - 1000
    data = gen_events(SEED + 6, lo, hi, {"api_usage": 900, "job_runs": 300, "error_logs": 200})
    for h in range(lo // HOUR, hi // HOUR + 1):  # rows at and 1 ms before each hour
        for t in (h * HOUR - 1, h * HOUR):
            if lo <= t <= hi and t not in {r["ts"] for r in data["api_usage"]}:
                data["api_usage"].append(make_row(random.Random(t), "api_usage", t, f"hb{t}"))
    rng = random.Random(SEED + 7)
    for table, rows in data.items():
        rows = rows[:]
        rng.shuffle(rows)
        for i in range(0, len(rows), 250):
            post_ndjson(srv, table, rows[i:i + 250])
    cat = srv.query("SELECT * FROM opsdb_partitions ORDER BY table_name, start_ts")
    want = want_catalogue("api_usage", data["api_usage"], HOUR)
    assert len(want) >= 5 and all(re.fullmatch(r"api_usage_p\d{8}t\d\d0000", w[0]) for w in want)
    assert catalogue(cat, "api_usage") == want
    assert catalogue(cat, "job_runs") == want_catalogue("job_runs", data["job_runs"], 2 * HOUR)
    assert catalogue(cat, "error_logs") == want_catalogue("error_logs", data["error_logs"])
    parts = cli_rows(run_cli, srv.db, "partitions")
    assert listed(parts, "api_usage") == want
    for name, start, end, _n, _state in want:
        got = srv.query(f"SELECT client_id FROM {name}")
        assert sorted(x["client_id"] for x in got) == sorted(
            r["client_id"] for r in data["api_usage"] if start <= r["ts"] < end), name
    rows = sorted(data["api_usage"], key=lambda r: r["ts"])
    got = srv.query("SELECT rowid AS rid, * FROM api_usage ORDER BY ts DESC")
    assert [x["client_id"] for x in got] == [r["client_id"] for r in rows[::-1]]
    assert len({x["rid"] for x in got}) == len(got)
    for x in got:
        assert x["rid"] >> ROWID_BITS == (x["ts"] - x["ts"] % HOUR) // MIN + MINUTE_OFFSET
    for h in range(lo // HOUR + 1, hi // HOUR + 1):
        got = srv.query(f"SELECT client_id FROM api_usage WHERE ts >= {h * HOUR - 2} "
                        f"ORDER BY ts LIMIT 4")
        assert [x["client_id"] for x in got] == \
            [r["client_id"] for r in rows if r["ts"] >= h * HOUR - 2][:4]
    assert srv.scalar(f"SELECT count(*) AS n FROM api_usage WHERE ts >= {hi - 2 * HOUR}") == \
        sum(1 for r in rows if r["ts"] >= hi - 2 * HOUR)


@pytest.mark.parametrize("option", ["partition.api_usage=7m", "partition.api_usage=0",
                                    "partition.api_usage=abc", "partition.api_usage=25h",
                                    "partition.api_usage=30s", "partition.system_metrics=1d",
                                    "partition.scheduled_jobs=1d", "partition.nosuch=1d"])
def test_bad_partition_windows_are_refused(run_cli, tmp_path, option):
    db = tmp_path / "w.db"
    cp = run_cli("init", "--db", db, "--set", option)
    assert cp.returncode in (1, 2), cp.stderr
    assert option.split("=")[0] in cp.stderr, cp.stderr


def test_bad_partition_window_stops_the_server(run_cli, tmp_path):
    cp = run_cli("serve", "--db", tmp_path / "s.db", "--listen", "127.0.0.1:0",
                 "--set", "partition.error_logs=7m", timeout=30)
    assert cp.returncode in (1, 2), cp.stderr
    assert "partition.error_logs" in cp.stderr, cp.stderr


def test_window_change_keeps_accepting_rows(run_cli, tmp_path):
    """A change of window shapes new partitions only: a day partition made after hourly ones
    stops where they start, and rows before and after them must all be accepted."""
    db = tmp_path / "wc.db"
    day = day_of(now_ms()) - DAY  # yesterday, whole
    rows = [make_row(random.Random(i), "api_usage", day + h * HOUR + 5, f"wc{i}")
            for i, h in enumerate((2, 20, 1, 23, 0))]
    cli_ingest(run_cli, db, "api_usage", rows[:1], "--set", "partition.api_usage=1h")
    for r in rows[1:]:  # the default day window again, on both sides of the hourly partition
        cp = run_cli("ingest", "api_usage", "-", "--db", db, *LONG, input=ndjson([r]))
        assert cp.returncode == 0, f"row at {r['ts']}: {cp.stderr}"
    cat = cli_query(run_cli, db, "SELECT name, start_ts, end_ts, rows FROM opsdb_partitions "
                                 "ORDER BY start_ts")
    assert len({c["name"] for c in cat}) == len(cat)
    for a, b in zip(cat, cat[1:]):
        assert a["end_ts"] <= b["start_ts"], cat
    assert sum(c["rows"] for c in cat) == len(rows)
    got = cli_query(run_cli, db, "SELECT rowid AS rid, client_id FROM api_usage ORDER BY ts")
    assert [x["client_id"] for x in got] == [r["client_id"] for r in
                                              sorted(rows, key=lambda r: r["ts"])]
    assert len({x["rid"] for x in got}) == len(got)
    for x in got:
        back = cli_query(run_cli, db, f"SELECT client_id FROM api_usage WHERE rowid = {x['rid']}")
        assert back == [{"client_id": x["client_id"]}]


# ---- failures leave nothing behind -----------------------------------------------------------


def tables_named(srv, prefix):
    return sorted(x["name"] for x in srv.query(
        f"SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE '{prefix}%'"))


def test_refused_request_creates_no_partition(server_factory):
    srv = server_factory(*LONG)
    now = now_ms()
    assert srv.ingest("api_usage", [{"ts": now - 1000, "method": "GET", "endpoint": "/ok",
                                     "status_code": 200}]).status_code == 200
    cat = srv.query("SELECT * FROM opsdb_partitions")
    tables = tables_named(srv, "api_usage_p")
    old = day_of(now) - 3 * DAY + 7 * HOUR
    batch = [{"ts": old + i, "method": "GET", "endpoint": "/new", "status_code": 200,
              "client_id": "late"} for i in range(5)]
    batch += [{"ts": old - DAY + i, "method": "GET", "endpoint": "/new", "status_code": 200,
               "client_id": "late"} for i in range(5)]
    for bad in ({"ts": old + 9, "method": "GET", "endpoint": "/bad", "status_code": "abc"},
                {"ts": old + 9, "endpoint": "/bad", "status_code": 200},
                {"ts": now + 2 * HOUR, "method": "GET", "endpoint": "/bad", "status_code": 200},
                {"ts": now - 41 * DAY, "method": "GET", "endpoint": "/bad", "status_code": 200}):
        r = srv.ingest("api_usage", batch[:5] + [bad] + batch[5:])
        assert r.status_code == 400, r.text
        assert srv.query("SELECT * FROM opsdb_partitions") == cat
        assert tables_named(srv, "api_usage_p") == tables
        assert srv.count("api_usage") == 1
    # the same batch without the bad row: two new day partitions, each with its rows
    r = srv.ingest("api_usage", batch)
    assert r.status_code == 200, r.text
    got = srv.query("SELECT name, rows FROM opsdb_partitions ORDER BY start_ts")
    assert [(x["name"], x["rows"]) for x in got] == [
        (part_name("api_usage", day_of(old - DAY)), 5), (part_name("api_usage", day_of(old)), 5),
        (part_name("api_usage", day_of(now)), 1)]
    assert srv.count("api_usage", "client_id = 'late'") == 10


def test_failed_commit_creates_no_partition(server_factory):
    # commit 1 is the jobs engine writing the builtin jobs' rows at start
    srv = server_factory(*LONG, env={"OPSDB_FAULT": "commit:3"})
    now = now_ms()
    assert srv.ingest("api_usage", [{"ts": now - 1000, "method": "GET", "endpoint": "/ok",
                                     "status_code": 200}]).status_code == 200
    cat = srv.query("SELECT * FROM opsdb_partitions")
    tables = tables_named(srv, "api_usage_p")
    old = day_of(now) - 2 * DAY + 5 * HOUR
    batch = [{"ts": old + i * MIN, "method": "GET", "endpoint": "/f", "status_code": 500,
              "latency_ms": 1.0 + i} for i in range(6)]
    r = srv.ingest("api_usage", batch)
    assert r.status_code == 503, r.text
    assert srv.query("SELECT * FROM opsdb_partitions") == cat
    assert tables_named(srv, "api_usage_p") == tables
    # the retry makes the partition again, once, and folds the rows into the rollups once
    r = srv.ingest("api_usage", batch)
    assert r.status_code == 200, r.text
    assert srv.scalar(f"SELECT rows AS n FROM opsdb_partitions WHERE name = "
                      f"'{part_name('api_usage', day_of(old))}'") == 6
    assert srv.count("api_usage", f"ts >= {old} AND ts < {old + HOUR}") == 6
    check_api_rollup(srv.query(API_1M_SQL + f" WHERE ts < {day_of(now)}"), batch)


def test_server_writes_into_a_partition_another_process_made(server_factory, run_cli):
    """`opsdb ingest` next to a running server creates a partition: the server, which already
    knows other partitions, must take it (not create it again and fail)."""
    away_from_midnight()
    srv = server_factory(*LONG)
    now = now_ms()
    assert srv.ingest("api_usage", [api_row(now - 1000, "s0")]).status_code == 200
    cli_ingest(run_cli, srv.db, "api_usage", [api_row(now - DAY, "c1")])
    r = srv.ingest("api_usage", [api_row(now - DAY + 1, "s1")])
    assert r.status_code == 200, r.text
    got = srv.query("SELECT client_id FROM api_usage ORDER BY ts")
    assert [x["client_id"] for x in got] == ["c1", "s1", "s0"]
    cat = srv.query("SELECT name, rows FROM opsdb_partitions ORDER BY start_ts")
    assert [(x["name"], x["rows"]) for x in cat] == [
        (part_name("api_usage", day_of(now - DAY)), 2), (part_name("api_usage", day_of(now)), 1)]


def test_server_writes_after_another_process_dropped_a_partition(server_factory, run_cli):
    """`opsdb retention apply` next to a running server (with a longer policy) drops a partition
    the server knows: the server's next row for that day must make it again, not fail."""
    away_from_midnight()
    srv = server_factory(*LONG)
    now = now_ms()
    assert srv.ingest("api_usage", [api_row(now - 1000, "s0"),
                                    api_row(now - 3 * DAY, "s1")]).status_code == 200
    cp = run_cli("retention", "apply", "--db", srv.db, "--set", "retention.api_usage=2d")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.startswith("dropped 1 partition (1 rows)"), cp.stdout
    r = srv.ingest("api_usage", [api_row(now - 3 * DAY + 1, "s2")])
    assert r.status_code == 200, r.text
    got = srv.query("SELECT client_id FROM api_usage ORDER BY ts")
    assert [x["client_id"] for x in got] == ["s2", "s0"]
    cat = srv.query("SELECT name, rows FROM opsdb_partitions ORDER BY start_ts")
    assert [(x["name"], x["rows"]) for x in cat] == [
        (part_name("api_usage", day_of(now - 3 * DAY)), 1),
        (part_name("api_usage", day_of(now)), 1)]


# ---- migration from schema version 4 ---------------------------------------------------------

needs_sqlite3 = pytest.mark.skipif(shutil.which("sqlite3") is None,
                                   reason="needs the sqlite3 shell (apt-get install sqlite3)")


def sqlite3_shell(db, sql):
    cp = subprocess.run(["sqlite3", "-batch", "-bail", str(db)], input=sql, text=True,
                        capture_output=True, timeout=60)
    assert cp.returncode == 0, f"sqlite3: {cp.stderr}"
    return cp.stdout


def sql_literal(v):
    if v is None:
        return "NULL"
    if isinstance(v, dict):
        v = json.dumps(v)
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return repr(v)


def plain_inserts(table, rows):
    """INSERT statements of the columns each row has (the others take their defaults)."""
    return "".join(f"INSERT INTO {table} ({', '.join(r)}) VALUES "
                   f"({', '.join(sql_literal(v) for v in r.values())});\n" for r in rows)


@needs_sqlite3
def test_migration_from_version_4_moves_rows_into_day_partitions(run_cli, tmp_path):
    now = now_ms()
    lo, hi = now - 3 * DAY + 2 * HOUR, now - 10 * MIN
    data = gen_events(SEED + 8, lo, hi, {"api_usage": 1500, "error_logs": 300})
    api, errs = data["api_usage"], data["error_logs"]
    # the same rows through today's opsdb give the tables' columns (those of a partition) and
    # the rollups a version-4 database held for these rows (maintained at ingestion)
    ref = tmp_path / "ref.db"
    cli_ingest(run_cli, ref, "api_usage", api)
    cli_ingest(run_cli, ref, "error_logs", errs)
    schema = {x["name"]: x["sql"] for x in cli_query(
        run_cli, ref, "SELECT name, sql FROM sqlite_schema WHERE sql IS NOT NULL")}
    aday = part_name("api_usage", day_of(api[0]["ts"]))
    eday = part_name("error_logs", day_of(errs[0]["ts"]))
    api_ddl = schema[aday].replace(aday, "api_usage", 1)
    err_ddl = schema[eday].replace(eday, "error_logs", 1)
    rollups = {t: schema[t] for t in ("api_usage_1m", "api_usage_1h", "handler_metrics_1m",
                                      "handler_metrics_1h")}

    db = tmp_path / "v4.db"
    script = ["PRAGMA journal_mode=WAL;\n", f"{api_ddl};\n", f"{err_ddl};\n",
              "CREATE INDEX api_usage_ts ON api_usage (ts);\n",
              "CREATE INDEX error_logs_ts ON error_logs (ts);\n"]
    script += [f"{ddl};\n" for ddl in rollups.values()]
    shuffled = api[:]
    random.Random(SEED + 9).shuffle(shuffled)
    script.append("BEGIN;\n")
    script.append(plain_inserts("api_usage", shuffled))
    script.append(plain_inserts("error_logs", errs))
    script.append(f"ATTACH '{ref}' AS ref;\n")
    script += [f"INSERT INTO {t} SELECT * FROM ref.{t};\n" for t in rollups]
    script.append("COMMIT;\nDETACH ref;\nPRAGMA user_version=4;\n")
    sqlite3_shell(db, "".join(script))
    assert sqlite3_shell(db, "SELECT count(*) FROM api_usage;").strip() == str(len(api))

    cp = run_cli("init", "--db", db)
    assert cp.returncode == 0, cp.stderr
    assert f"from schema version 4 to {CURRENT_VERSION}" in cp.stderr, cp.stderr
    assert sqlite3_shell(db, "PRAGMA user_version;").strip() == str(CURRENT_VERSION)
    assert sqlite3_shell(db, "SELECT sql FROM sqlite_schema WHERE name = 'api_usage';"
                         ).startswith("CREATE VIRTUAL TABLE")

    cat = cli_query(run_cli, db, "SELECT * FROM opsdb_partitions ORDER BY table_name, start_ts")
    names = {x["name"] for x in cli_query(run_cli, db, "SELECT name FROM sqlite_schema")}
    for table, rows in data.items():
        mark = MARKER[table]
        want = want_catalogue(table, rows)
        assert len(want) in (3, 4)
        assert catalogue(cat, table) == want, table
        for name, start, _end, _n, _state in want:
            got = cli_query(run_cli, db, f"SELECT {mark} FROM {name}")
            assert sorted(x[mark] for x in got) == sorted(
                r[mark] for r in rows if day_of(r["ts"]) == start), name
            assert f"{name}_ts" in names, f"{name} lacks its ts index"
        got = cli_query(run_cli, db, f"SELECT * FROM {table}")
        assert len(got) == len(rows)
        sent = {r[mark]: r for r in rows}
        seen = {x[mark]: x for x in got}
        assert set(seen) == set(sent) and len(seen) == len(got), table
        for m, x in seen.items():
            check_row(f"{table}[{m}]", x, sent[m])
    status = {r["table"]: r for r in cli_rows(run_cli, db, "retention", "status")}
    assert status["api_usage"]["rows"] == len(api)
    assert status["error_logs"]["rows"] == len(errs)

    # the rollups still match the rows, and keep matching as rows arrive in a migrated day
    check_api_rollup(cli_query(run_cli, db, API_1M_SQL), api)
    for end, window in ((hi, 2 * DAY), (day_of(hi) + 30 * MIN, HOUR + 17)):
        got = cli_rows(run_cli, db, "view", "api_performance", "--now", f"{end / 1000:.3f}",
                       "--window", f"{window}ms")
        compare_rows(f"api_performance@{end},{window}", got,
                     expect_api_performance(api, window, end), ("service", "endpoint"), API_SPEC)
    extra = [make_row(random.Random(i), "api_usage", day_of(lo) + DAY + 3 * HOUR + i * 1000 + 7,
                      f"x{i}") for i in range(20)]
    cli_ingest(run_cli, db, "api_usage", extra)
    check_api_rollup(cli_query(run_cli, db, API_1M_SQL), api + extra)
    cat = cli_query(run_cli, db, "SELECT * FROM opsdb_partitions ORDER BY table_name, start_ts")
    assert catalogue(cat, "api_usage") == want_catalogue("api_usage", api + extra)


@needs_sqlite3
def test_migration_keeps_every_day_of_a_long_history(run_cli, tmp_path):
    """A plain table holding more than 4096 distinct days (11 years: alert_history or a table
    kept forever) migrates every one of them; none may be lost, least of all the newest.
    Opt-in (OPSDB_SLOW_TESTS=1): 20-30 s under ASan, as each day becomes a table with its
    indexes and SQLite's DDL cost grows with the schema."""
    db = tmp_path / "long.db"
    newest = day_of(now_ms()) - DAY + 1000
    n = 4100
    sqlite3_shell(db, f"""PRAGMA journal_mode=WAL;
CREATE TABLE api_usage (ts INTEGER NOT NULL, service TEXT NOT NULL DEFAULT '', method TEXT NOT NULL,
  endpoint TEXT NOT NULL, status_code INTEGER NOT NULL, latency_ms REAL, request_bytes INTEGER,
  response_bytes INTEGER, client_id TEXT, host TEXT NOT NULL DEFAULT '',
  count INTEGER NOT NULL DEFAULT 1);
CREATE INDEX api_usage_ts ON api_usage (ts);
WITH RECURSIVE d(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM d WHERE i < {n - 1})
INSERT INTO api_usage (ts, method, endpoint, status_code, client_id)
  SELECT {newest} - i * {DAY}, 'GET', '/d', 200, 'd' || i FROM d;
PRAGMA user_version=4;
""")
    cp = run_cli("init", "--db", db, timeout=120)
    assert cp.returncode == 0, cp.stderr
    got = cli_query(run_cli, db, "SELECT count(*) AS n, min(ts) AS lo, max(ts) AS hi FROM "
                                 "api_usage")[0]
    assert (got["n"], got["lo"], got["hi"]) == (n, newest - (n - 1) * DAY, newest), got
    got = cli_query(run_cli, db, "SELECT count(*) AS n, sum(rows) AS r FROM opsdb_partitions "
                                 "WHERE table_name = 'api_usage'")[0]
    assert (got["n"], got["r"]) == (n, n), got
