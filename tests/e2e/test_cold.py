"""Cold storage of system_metrics: compaction moves the raw samples older than a horizon into
compressed per-series day chunks, and nothing a user can ask changes.

The contract under test:

* `opsdb compact --db DB [--older-than DURATION] [--quiet]` (default horizon: the option
  storage.compress_after, 2h) moves the samples of system_metrics_samples older than the horizon
  into system_metrics_chunks (series_id, day, start_ts, end_ts, count, data): one chunk per series
  and UTC day (several only beyond 65536 samples), never spanning a day. It prints "compacted N
  samples of M series older than ... into chunks"; a bad duration is exit 2 with a message.
* The server does the same every storage.compact_interval with storage.compress_after (0: never).
* system_metrics_cold (a read-only virtual table) reads the chunks back; system_metrics_raw is
  cold UNION ALL samples, and system_metrics (the documented columns) covers both, so SQL, the
  series API at every resolution, system_health and `opsdb retention status` answer exactly as
  before (sums within 1e-9, relative to the sum of magnitudes: they may be added in another
  order).
* Per series every raw sample is newer than every cold one. A late sample at or before its
  series' newest cold ts is merged into the chunk of its day; the same (series, ts) again replaces
  the value (last write wins, also inside one request); the rollups system_metrics_1m/_1h stay
  exact. No (series_id, ts) is ever stored twice.
* A crash (kill -9) in the middle of a compaction loses and duplicates nothing.
* A corrupt chunk is a query error with a message, never a crash.

Each test checks against an independent Python model of what the table must hold (values that
are multiples of 1/4 where rollups are compared exactly: every sum is then exact in any order).
The bulk load of the crash test goes straight into the raw samples table with the sqlite3 shell
(a million samples through the sanitizer build's ingest path would take a minute); everything
else goes through HTTP and the CLI.
"""

import bisect
import json
import math
import os
import random
import re
import select
import signal
import subprocess
import time

import pytest

from test_series import (Key, Model as SeriesModel, ceil_to, close, floor_to,  # noqa: E402
                         key, labels_json)
from conftest import now_ms, sanitizer_reports as sanitizer_lines, wait_until

SEC, MIN, HOUR, DAY = 1000, 60_000, 3_600_000, 86_400_000
AGGS = ["avg", "min", "max", "sum", "count", "last"]
SERVER_ARGS = ("--set", "query.cache_bytes=0", "--set", "query.max_rows=500000",
               "--set", "query.timeout=30s", "--set", "storage.compress_after=0")
# metric -> (measurement, field) in line protocol
LP_NAMES = {"cpu_usage": ("cpu", "usage"), "mem_used": ("mem", "used")}


def key_of_row(r):
    return Key(r["metric"], r["host"], r["component"],
               tuple(sorted(json.loads(r["labels"]).items())))


# ---- the model -------------------------------------------------------------------------------


class Model(SeriesModel):
    """{Key: {ts: value}}: what system_metrics must hold (test_series.py's model, with the
    look-ups the cold tests need)."""

    def count(self, pred=lambda k, ts: True):
        return sum(1 for k, pts in self.points.items() for ts in pts if pred(k, ts))

    def flat(self):
        return {(k, ts): v for k, pts in self.points.items() for ts, v in pts.items()}

    def latest(self, k, at_ms):
        """(ts, value) of the newest sample of k at or before at_ms, or None."""
        tss, vals = self.index(k)
        i = bisect.bisect_right(tss, at_ms)
        return (tss[i - 1], vals[i - 1]) if i else None


def aggregate(values, agg):
    """(value, scale) of one bucket's values in time order."""
    if agg == "count":
        return len(values), 0.0
    if agg == "min":
        return min(values), 0.0
    if agg == "max":
        return max(values), 0.0
    if agg == "last":
        return values[-1], 0.0
    total, magnitude = math.fsum(values), math.fsum(abs(v) for v in values)
    if agg == "sum":
        return total, magnitude
    return total / len(values), magnitude / len(values)


def expect_series(model, metric, host_re, from_ms, to_ms, step_ms, agg):
    """The series of GET /api/v1/series (filter host=~host_re or none) as
    [{"labels": ..., "values": [[bucket, (value, scale)], ...]}]."""
    fa, ta = floor_to(from_ms, step_ms), ceil_to(to_ms, step_ms)
    out = []
    for k in model.points:
        if k.metric != metric or (host_re and not re.fullmatch(host_re, k.host)):
            continue
        tss, vals = model.index(k)
        buckets = {}
        for i in range(bisect.bisect_left(tss, fa), bisect.bisect_left(tss, ta)):
            buckets.setdefault(floor_to(tss[i], step_ms), []).append(vals[i])
        if buckets:
            out.append(((k.host, k.component, labels_json(k)),
                        {"labels": {"host": k.host, "component": k.component, **dict(k.labels)},
                         "values": [[b, aggregate(buckets[b], agg)] for b in sorted(buckets)]}))
    out.sort(key=lambda p: p[0])
    return [s for _, s in out]


def compare_series(what, got, want, agg):
    assert [s.get("labels") for s in got] == [s["labels"] for s in want], \
        f"{what}: series differ:\n got {[s.get('labels') for s in got]}\n" \
        f"want {[s['labels'] for s in want]}"
    bad = []
    for gs, ws in zip(got, want):
        gts, wts = [p[0] for p in gs["values"]], [p[0] for p in ws["values"]]
        if gts != wts:
            bad.append(f"{ws['labels']}: buckets differ: only in answer "
                       f"{sorted(set(gts) - set(wts))[:5]}, missing "
                       f"{sorted(set(wts) - set(gts))[:5]}")
            continue
        for (ts, v), (_, (wv, scale)) in zip(gs["values"], ws["values"]):
            if not (v == wv if agg in ("count", "min", "max", "last") else close(v, wv, scale)):
                bad.append(f"{ws['labels']} bucket {ts}: got {v!r}, expected {wv!r}")
    assert not bad, f"{what}: {len(bad)} mismatches:\n" + "\n".join(bad[:10])


def expected_rollups(model, bucket_ms):
    """{(Key, bucket ts): (min, max, sum, count, last, last_ts)}."""
    want = {}
    for k in model.points:
        tss, vals = model.index(k)
        groups = {}
        for ts, v in zip(tss, vals):
            groups.setdefault(floor_to(ts, bucket_ms), []).append((ts, v))
        for b, pts in groups.items():
            values = [v for _, v in pts]
            want[(k, b)] = (min(values), max(values), math.fsum(values), len(values),
                            pts[-1][1], pts[-1][0])
    return want


# ---- talking to opsdb ------------------------------------------------------------------------


def json_row(k, ts, value):
    return {"ts": ts, "metric": k.metric, "host": k.host, "component": k.component,
            "labels": dict(k.labels), "value": value}


def ndjson(points):
    return "".join(json.dumps(json_row(k, ts, v)) + "\n" for k, ts, v in points)


def ingest_cli(run_cli, db, points, path=None):
    """opsdb ingest system_metrics FILE (path given) or - (stdin)."""
    if path is not None:
        path.write_text(ndjson(points))
        cp = run_cli("ingest", "system_metrics", path, "--db", db, timeout=120)
    else:
        cp = run_cli("ingest", "system_metrics", "-", "--db", db, input=ndjson(points),
                     timeout=120)
    assert cp.returncode == 0, cp.stderr[-3000:]
    return cp


def ingest_http(srv, points):
    r = srv.ingest("system_metrics", [json_row(k, ts, v) for k, ts, v in points])
    assert r.status_code == 200, f"ingest -> {r.status_code} {r.text[:2000]}"
    assert r.json()["rows"] == len(points), r.text
    return r


def ingest_lp(srv, points):
    lines = []
    for k, ts, v in points:
        measurement, field = LP_NAMES[k.metric]
        tags = [("host", k.host), ("component", k.component), *k.labels]
        lines.append(f"{measurement}" + "".join(f",{n}={x}" for n, x in tags if x != "")
                     + f" {field}={float(v)!r} {ts}")
    r = srv.post("/write", params={"precision": "ms"}, data="\n".join(lines).encode(),
                 headers={"Content-Type": "text/plain; charset=utf-8"})
    assert r.status_code == 204, f"POST /write -> {r.status_code} {r.text[:2000]}"


def cli_query(run_cli, db, sql, expect_ok=True):
    cp = run_cli("query", sql, "--db", db, "--format", "json", "--set", "query.max_rows=500000",
                 "--set", "query.timeout=60s", timeout=120)
    if expect_ok:
        assert cp.returncode == 0, f"{sql}: {cp.stderr[-3000:]}"
        return json.loads(cp.stdout)["rows"]
    return cp


def compact(run_cli, db, *args, timeout=120, env=None):
    cp = run_cli("compact", "--db", db, *args, timeout=timeout, env=env)
    assert cp.returncode == 0, cp.stderr[-3000:]
    m = re.search(r"compacted (\d+) samples of (\d+) series older than (\S+) into chunks",
                  cp.stdout)
    assert m, f"unexpected output of opsdb compact: {cp.stdout!r}"
    return int(m.group(1)), int(m.group(2)), cp


def sqlite3(db, sql):
    cp = subprocess.run(["sqlite3", str(db)], input=sql, capture_output=True, text=True,
                        timeout=120)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


def series_keys(q):
    """{series_id: Key}; q runs SQL and returns rows."""
    return {r["id"]: key_of_row(r) for r in
            q("SELECT id, metric, host, component, labels FROM system_metrics_series")}


def raw_samples(q):
    """{(Key, ts): value} of system_metrics; fails on a (series, ts) seen twice."""
    got = {}
    for r in q("SELECT metric, host, component, labels, ts, value FROM system_metrics"):
        kt = (key_of_row(r), r["ts"])
        assert kt not in got, f"system_metrics holds {kt} twice: {got[kt]!r} and {r['value']!r}"
        got[kt] = r["value"]
    return got


def rollup_rows(q, table):
    keys = series_keys(q)
    got = {}
    for r in q(f"SELECT series_id, ts, min, max, sum, count, last, last_ts FROM {table}"):
        k = keys.get(r["series_id"], ("no such series", r["series_id"]))
        assert (k, r["ts"]) not in got, f"{table}: two rows for {k} at {r['ts']}"
        got[(k, r["ts"])] = (r["min"], r["max"], r["sum"], r["count"], r["last"], r["last_ts"])
    return got


def diff_text(got, want, limit=10):
    keys = [kt for kt in set(got) | set(want) if got.get(kt, "absent") != want.get(kt, "absent")]
    keys.sort(key=str)
    return f"{len(keys)} differ (key: got, expected):\n" + "\n".join(
        f"  {kt}: {got.get(kt, 'absent')!r}, {want.get(kt, 'absent')!r}" for kt in keys[:limit])


def assert_storage_sound(q, one_chunk_per_day=True):
    """The invariants of cold storage, read through SQL: no (series_id, ts) twice across raw and
    cold; per series every raw sample newer than every cold one; a chunk within one UTC day, at
    most one per series and day (days here hold fewer than 65536 samples), its count what the
    virtual table reads back."""
    dups = q("SELECT series_id, ts, count(*) AS n FROM system_metrics_raw GROUP BY 1, 2 "
             "HAVING count(*) > 1 LIMIT 10")
    assert not dups, f"samples stored twice: {dups}"
    mixed = q("SELECT c.series_id, c.newest_cold, h.oldest_raw FROM "
              "(SELECT series_id, max(ts) AS newest_cold FROM system_metrics_cold GROUP BY 1) c "
              "JOIN (SELECT series_id, min(ts) AS oldest_raw FROM system_metrics_samples "
              "GROUP BY 1) h ON h.series_id = c.series_id WHERE c.newest_cold >= h.oldest_raw")
    assert not mixed, f"raw samples older than cold ones of the same series: {mixed}"
    bad = q(f"SELECT series_id, day, start_ts, end_ts, count FROM system_metrics_chunks WHERE "
            f"day != start_ts / {DAY} - (start_ts < 0 AND start_ts % {DAY} != 0) "
            f"OR end_ts / {DAY} != start_ts / {DAY} OR end_ts < start_ts OR count < 1 LIMIT 10")
    assert not bad, f"chunks outside their UTC day: {bad}"
    if one_chunk_per_day:
        multi = q("SELECT series_id, day, count(*) AS n FROM system_metrics_chunks "
                  "GROUP BY 1, 2 HAVING count(*) > 1 LIMIT 10")
        assert not multi, f"several chunks for one series and day: {multi}"
    overlap = q("SELECT a.series_id, a.start_ts, b.start_ts AS next_start FROM "
                "system_metrics_chunks a JOIN system_metrics_chunks b ON b.series_id = "
                "a.series_id AND b.start_ts > a.start_ts AND b.start_ts <= a.end_ts LIMIT 10")
    assert not overlap, f"chunks overlap: {overlap}"
    big = q("SELECT series_id, start_ts, count FROM system_metrics_chunks "
            "WHERE count > 65536 LIMIT 10")
    assert not big, f"chunks over 65536 samples: {big}"
    counted = q("SELECT series_id, sum(count) AS n, min(start_ts) AS lo, max(end_ts) AS hi "
                "FROM system_metrics_chunks GROUP BY 1 ORDER BY 1")
    read = q("SELECT series_id, count(*) AS n, min(ts) AS lo, max(ts) AS hi "
             "FROM system_metrics_cold GROUP BY 1 ORDER BY 1")
    assert counted == read, "chunk headers (count, start_ts, end_ts) and the rows read back differ"


def assert_matches_model(q, model, what, rollups=True, one_chunk_per_day=True):
    got = raw_samples(q)
    want = model.flat()
    assert got == want, f"{what}: system_metrics: " + diff_text(got, want)
    if rollups:
        for table, bucket in (("system_metrics_1m", MIN), ("system_metrics_1h", HOUR)):
            got = rollup_rows(q, table)
            want = expected_rollups(model, bucket)
            assert got == want, f"{what}: {table} (min, max, sum, count, last, last_ts): " + \
                diff_text(got, want)
    assert_storage_sound(q, one_chunk_per_day)


def get_series(srv, **params):
    params = {k: v for k, v in params.items() if v is not None}
    r = srv.get("/api/v1/series", params=params)
    assert r.status_code == 200, f"GET /api/v1/series {params} -> {r.status_code} {r.text[:2000]}"
    return r.json()


def health(srv, now_s):
    r = srv.get("/api/v1/views/system_health", params={"now": str(now_s)})
    assert r.status_code == 200, f"system_health now={now_s} -> {r.status_code} {r.text[:2000]}"
    return sorted(r.json()["rows"], key=lambda x: (x["host"], x["component"]))


def retention_row(run_cli, db):
    cp = run_cli("retention", "status", "--db", db, "--format", "json")
    assert cp.returncode == 0, cp.stderr
    row = next(r for r in json.loads(cp.stdout)["rows"] if r["table"] == "system_metrics")
    return {k: row[k] for k in ("rows", "oldest", "newest")}


def rfc3339_ms(ms):
    t = time.gmtime(ms // 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{ms % 1000:03d}Z"


# ---- 1. compaction is transparent ------------------------------------------------------------

EXTREMES = [0.1 + 0.2, -0.0, 0.0, 1e300, -1e300, 1e-300, -5e-324, 2.2250738585072014e-308,
            1e308, 123456789.123456789, float(2 ** 62), float(-(2 ** 53) - 1), 1e15 + 0.3,
            3.141592653589793, -7.25, 1 / 3, -2 / 3, 4.35, 0.07, 1e-7, -1e-310, 2.5e-320]


def gen_transparency_data(gen_now):
    """~3 days up to two minutes ago: 10 hosts with cpu_usage (2-decimal random walk, irregular),
    memory_usage (integers), two disk_usage series with labels (arbitrary floats, negative too),
    net_walk on 2 hosts for 2 days (2-decimal random walk every 10 s: bytes per point), and
    extreme values on h00. No sample within 5 minutes of gen_now - 1h, where the horizon of
    `compact --older-than 1h` falls."""
    rng = random.Random(4242)
    base = (gen_now - 5 * DAY // 2) // DAY * DAY  # a UTC midnight 2.5..3.5 days ago
    end = gen_now - 2 * MIN
    gap = (gen_now - HOUR - 5 * MIN, gen_now - HOUR + 5 * MIN)
    model = Model()

    def put(k, ts, v):
        if base <= ts < end and not gap[0] <= ts < gap[1]:
            model.put(k, ts, v)

    for h in range(10):
        host, comp = f"h{h:02d}", "db" if h % 3 == 0 else "web"
        k = key("cpu_usage", host, comp)
        v, ts = rng.uniform(10, 90), base + rng.randrange(60 * SEC)
        while ts < end:
            v += rng.choice([-1, 1]) * rng.randrange(0, 300) / 100
            put(k, ts, round(v, 2))
            ts += rng.randint(35 * SEC, 85 * SEC)
        k = key("memory_usage", host, comp)
        ts = base + rng.randrange(2 * MIN)
        while ts < end:
            put(k, ts, rng.randrange(-5, 101))  # integers, as JSON integers
            ts += rng.randint(1 * MIN, 4 * MIN)
        for mount in ("/", "/var"):
            k = key("disk_usage", host, comp, mount=mount)
            ts = base + rng.randrange(5 * MIN)
            while ts < end:
                put(k, ts, rng.uniform(-1000, 1000))
                ts += rng.randint(30 * SEC, 7 * MIN) + rng.randrange(1000)
        if h == 1:  # samples on both sides of every midnight, to the millisecond
            for d in range(1, 4):
                for off in (-1, 0, 1):
                    put(k, base + d * DAY + off, rng.uniform(-1, 1))
    for h in range(2):
        k = key("net_walk", f"h{h:02d}", "net", dir="rx")
        v = 100.0
        for ts in range(base, base + 2 * DAY, 10 * SEC):  # two full days
            v = round(v + rng.randint(-50, 50) / 100, 2)
            put(k, ts, v)
    k = key("extreme", "h00", "db", kind="special")
    for i, v in enumerate(EXTREMES):
        put(k, base + i * (3 * DAY // len(EXTREMES)) + rng.randrange(1000), v)
    return base, end, model


TRANSPARENCY_SQL = [
    "SELECT count(*) AS n, min(ts) AS lo, max(ts) AS hi FROM system_metrics",
    "SELECT metric, count(*) AS n, sum(value) AS s, sum(abs(value)) AS mag, min(value) AS mn, "
    "max(value) AS mx, min(ts) AS lo, max(ts) AS hi FROM system_metrics GROUP BY metric "
    "ORDER BY metric",
    "SELECT host, component, metric, labels, count(*) AS n, min(value) AS mn, max(value) AS mx, "
    "min(ts) AS lo, max(ts) AS hi, sum(value) AS s, sum(abs(value)) AS mag FROM system_metrics "
    "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
    "SELECT series_id, count(*) AS n, min(ts) AS lo, max(ts) AS hi, sum(value) AS s, "
    "sum(abs(value)) AS mag FROM system_metrics_raw GROUP BY series_id ORDER BY series_id",
    "SELECT ts, value FROM system_metrics WHERE metric = 'extreme' ORDER BY ts",
    "SELECT ts, value FROM system_metrics WHERE host = 'h01' AND metric = 'disk_usage' AND "
    "labels = '{\"mount\":\"/var\"}' ORDER BY ts",
    "SELECT ts, value FROM system_metrics WHERE host = 'h01' AND metric = 'net_walk' ORDER BY ts",
    "SELECT ts, value FROM system_metrics WHERE host = 'h07' AND metric = 'cpu_usage' "
    "ORDER BY ts DESC",
    "SELECT host, count(*) AS n, max(ts) AS hi FROM system_metrics WHERE metric = 'cpu_usage' "
    "GROUP BY host ORDER BY host",
    "SELECT * FROM system_metrics WHERE host = 'h05' AND metric = 'memory_usage' ORDER BY ts "
    "LIMIT 5",
]


def window_sql(rng, base, end):
    """Time-bounded queries over windows drawn at random, on and across UTC midnights: (sql,
    python predicate over (Key, ts), order) for the model."""
    out = []
    for i in range(14):
        if i % 3 == 0:  # across a midnight
            mid = base + rng.randint(1, 3) * DAY
            lo, hi = mid - rng.randrange(1, 3 * HOUR), mid + rng.randrange(0, 3 * HOUR)
        else:
            lo = rng.randrange(base - HOUR, end)
            hi = lo + rng.randrange(1, DAY)
        host = f"h{rng.randrange(10):02d}"
        metric = rng.choice(["cpu_usage", "disk_usage", "memory_usage"])
        ops = [(">=", "<", lambda t, lo=lo, hi=hi: lo <= t < hi),
               (">", "<=", lambda t, lo=lo, hi=hi: lo < t <= hi),
               (">=", "<=", lambda t, lo=lo, hi=hi: lo <= t <= hi)][i % 3]
        cond = f"ts {ops[0]} {lo} AND ts {ops[1]} {hi}"
        if i % 4 == 1:  # bounds given as floats and as text
            cond = f"ts {ops[0]} {lo}.0 AND ts {ops[1]} '{hi}'"
        out.append((f"SELECT host, labels, ts, value FROM system_metrics WHERE metric = "
                    f"'{metric}' AND {cond} ORDER BY host, labels, ts",
                    (lambda k, t, metric=metric, f=ops[2]: k.metric == metric and f(t)), None))
        out.append((f"SELECT host, labels, ts, value FROM system_metrics WHERE metric = "
                    f"'{metric}' AND host = '{host}' AND {cond} ORDER BY ts DESC LIMIT 7",
                    (lambda k, t, metric=metric, host=host, f=ops[2]:
                     k.metric == metric and k.host == host and f(t)), 7))
    return out


def model_rows(model, pred, limit):
    rows = [{"host": k.host, "labels": labels_json(k), "ts": ts, "value": v}
            for k, pts in model.points.items() for ts, v in pts.items() if pred(k, ts)]
    if limit:
        rows.sort(key=lambda r: -r["ts"])
        return rows[:limit]
    rows.sort(key=lambda r: (r["host"], r["labels"], r["ts"]))
    return rows


def same_rows(what, got, want):
    """Rows equal: exactly, but for columns named s/sum (within 1e-9 of the row's mag)."""
    assert len(got) == len(want), f"{what}: {len(got)} rows, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.keys() == w.keys(), f"{what}: row {i}: columns {list(g)} vs {list(w)}"
        for c in g:
            if c in ("s", "sum") and g[c] is not None and w[c] is not None:
                ok = close(g[c], w[c], max(g.get("mag") or 0, w.get("mag") or 0))
            elif c == "mag":
                ok = close(g[c], w[c])
            else:
                ok = g[c] == w[c] and type(g[c]) is type(w[c])
            assert ok, f"{what}: row {i} column {c}: {g[c]!r} vs {w[c]!r}\n{g}\n{w}"


def series_calls(rng, base, end):
    calls = []
    for i in range(24):
        step = ["10s", "90s", "1m", "5m", "7m", "1h", "2h", "1h"][i % 8]
        step_ms = {"10s": 10 * SEC, "90s": 90 * SEC, "1m": MIN, "5m": 5 * MIN, "7m": 7 * MIN,
                   "1h": HOUR, "2h": 2 * HOUR}[step]
        span = min(end - base + 2 * HOUR, step_ms * 600)
        frm = rng.randrange(base - HOUR, end) // SEC
        to = frm + rng.randrange(60, span // SEC + 61)
        if i % 5 == 0:  # around a midnight
            frm = (base + rng.randint(1, 3) * DAY - rng.randrange(span // 2)) // SEC
            to = frm + span // SEC
        metric = ["cpu_usage", "disk_usage", "memory_usage", "net_walk"][i % 4]
        calls.append({"metric": metric, "from": frm, "to": to, "step": step, "step_ms": step_ms,
                      "agg": AGGS[i % 6], "resolution": "raw" if i % 2 else "auto",
                      "host_re": "h0[0-4]" if i % 3 == 0 else None})
    return calls


def take_answers(srv, run_cli, db, queries, calls, health_times):
    out = {"sql": [srv.query(sql) for sql in queries]}
    out["series"] = []
    for c in calls:
        body = get_series(srv, metric=c["metric"], step=c["step"], agg=c["agg"],
                          resolution=c["resolution"], **{"from": c["from"], "to": c["to"]},
                          filter=f"host=~{c['host_re']}" if c["host_re"] else None)
        out["series"].append(body)
    out["health"] = [health(srv, t) for t in health_times]
    out["retention"] = retention_row(run_cli, db)
    return out


def test_compaction_changes_no_answer(server_factory, run_cli, tmp_path, tmp_db):
    gen_now = now_ms()
    base, end, model = gen_transparency_data(gen_now)
    points = [(k, ts, v) for k, pts in model.points.items() for ts, v in pts.items()]
    random.Random(5).shuffle(points)
    ingest_cli(run_cli, tmp_db, points, tmp_path / "data.ndjson")
    srv = server_factory(*SERVER_ARGS)

    rng = random.Random(99)
    windows = window_sql(rng, base, end)
    queries = TRANSPARENCY_SQL + [sql for sql, _, _ in windows]
    calls = series_calls(rng, base, end)
    health_times = [gen_now // SEC, (base + DAY) // SEC, (base + DAY) // SEC - 1,
                    (base + 36 * HOUR + 17 * MIN) // SEC, (gen_now - 2 * HOUR) // SEC,
                    (base - HOUR) // SEC]
    before = take_answers(srv, run_cli, tmp_db, queries, calls, health_times)

    # the answers before compaction are right: checked against the model where it is cheap
    total = model.count()
    assert before["sql"][0] == [{"n": total, "lo": min(min(p) for p in model.points.values()),
                                 "hi": max(max(p) for p in model.points.values())}]
    for (sql, pred, limit), got in zip(windows, before["sql"][len(TRANSPARENCY_SQL):]):
        assert got == model_rows(model, pred, limit), sql
    assert before["retention"] == {"rows": total, "oldest": rfc3339_ms(before["sql"][0][0]["lo"]),
                                   "newest": rfc3339_ms(before["sql"][0][0]["hi"])}

    t0 = now_ms()
    moved, nseries, cp = compact(run_cli, tmp_db, "--older-than", "1h")
    t1 = now_ms()
    assert "samples moved" in cp.stderr, f"no progress on stderr: {cp.stderr!r}"
    assert t1 - t0 < 5 * MIN, "the compaction took longer than the gap in the data"
    horizon = gen_now - HOUR
    assert moved == model.count(lambda k, ts: ts < horizon), cp.stdout
    assert nseries == sum(1 for pts in model.points.values() if min(pts) < horizon), cp.stdout
    assert "1h" in cp.stdout

    after = take_answers(srv, run_cli, tmp_db, queries, calls, health_times)
    for i, sql in enumerate(queries):
        same_rows(sql, after["sql"][i], before["sql"][i])
    for c, a, b in zip(calls, after["series"], before["series"]):
        want = expect_series(model, c["metric"], c["host_re"], c["from"] * SEC, c["to"] * SEC,
                             c["step_ms"], c["agg"])
        compare_series(f"series {c} before compaction", b["series"], want, c["agg"])
        compare_series(f"series {c} after compaction", a["series"], want, c["agg"])
        assert {k: v for k, v in a.items() if k != "series"} == \
            {k: v for k, v in b.items() if k != "series"}, c
    for t, a, b in zip(health_times, after["health"], before["health"]):
        assert a == b, f"system_health now={t}: after compaction\n{a}\nbefore\n{b}"
    assert after["retention"] == before["retention"]

    # system_health against the model at a time whose latest samples are all cold
    at = (base + 36 * HOUR + 17 * MIN)
    hosts = {(k.host, k.component) for k in model.points}
    want = {}
    for hc in hosts:
        ks = [k for k in model.points if (k.host, k.component) == hc]
        latest = {k: model.latest(k, at) for k in ks}
        pick = lambda m: max((lv[1] for k, lv in latest.items() if lv and k.metric == m),
                             default=None)
        want[hc] = {"cpu": pick("cpu_usage"), "memory": pick("memory_usage"),
                    "disk": pick("disk_usage"),
                    "last_seen": max((lv[0] for lv in latest.values() if lv), default=None)}
    got = {(r["host"], r["component"]): {c: r[c] for c in ("cpu", "memory", "disk", "last_seen")}
           for r in after["health"][health_times.index(at // SEC)]}
    assert got == want, diff_text(got, want)

    # where the samples are now
    q = srv.query
    hot = q("SELECT count(*) AS n, min(ts) AS lo FROM system_metrics_samples")[0]
    assert hot["n"] == model.count(lambda k, ts: ts >= horizon)
    assert hot["lo"] >= t0 - HOUR, "samples older than the horizon stayed raw"
    cold = q("SELECT count(*) AS n, max(ts) AS hi FROM system_metrics_cold")[0]
    assert cold["n"] == moved and cold["hi"] < t1 - HOUR
    assert q("SELECT sum(count) AS n FROM system_metrics_chunks")[0]["n"] == moved
    assert_storage_sound(q)

    # 2-decimal random walks every 10 s: under 2 bytes per sample for full days
    bpp = q("SELECT sum(length(c.data)) AS bytes, sum(c.count) AS n, count(*) AS chunks FROM "
            "system_metrics_chunks c JOIN system_metrics_series r ON r.id = c.series_id "
            "WHERE r.metric = 'net_walk' AND c.count = 8640")[0]
    assert bpp["chunks"] == 4, bpp
    assert bpp["bytes"] / bpp["n"] < 2.0, f"{bpp['bytes'] / bpp['n']:.2f} bytes per sample: {bpp}"


# ---- 2. late samples into cold days ----------------------------------------------------------


def quarter(rng, lo=-200, hi=200):
    return rng.randint(lo * 4, hi * 4) / 4


def test_late_samples_merge_into_cold_days(server_factory, run_cli, tmp_db):
    rng = random.Random(77)
    srv = server_factory("--set", "query.max_rows=500000", "--set", "storage.compress_after=0")
    gen_now = now_ms()
    base = (gen_now - 2 * DAY) // DAY * DAY
    model = Model()
    a, b = key("cpu_usage", "web-1", "web"), key("cpu_usage", "web-2", "web", core="0")
    c, d = key("mem_used", "db-1", "db"), key("cpu_usage", "old-1", "batch")  # d: stopped early
    horizon = gen_now - HOUR  # of `compact --older-than 1h`, give or take the 5-minute gap
    for k, start, stop in ((a, base, gen_now - 2 * MIN), (b, base + 5 * HOUR, gen_now - MIN),
                           (c, base + DAY + 3 * HOUR, gen_now - 3 * MIN),
                           (d, base, base + DAY + 7 * HOUR)):
        ts = start + rng.randrange(MIN)
        while ts < stop:
            if not horizon - 5 * MIN <= ts < horizon + 5 * MIN:
                model.put(k, ts, quarter(rng))
            ts += rng.randint(40 * SEC, 80 * SEC)
    points = [(k, ts, v) for k, pts in model.points.items() for ts, v in pts.items()]
    rng.shuffle(points)
    for i in range(0, len(points), 4000):
        ingest_http(srv, points[i:i + 4000])

    # answers cached before the late writes must not survive them
    cached = dict(metric="cpu_usage", step="1h", agg="sum", resolution="1h",
                  **{"from": base // SEC, "to": gen_now // SEC})
    get_series(srv, **cached)
    health_now = gen_now // SEC
    health(srv, health_now)

    moved, _, _ = compact(run_cli, tmp_db, "--older-than", "1h")
    assert moved == model.count(lambda k, ts: ts < horizon)
    assert_matches_model(srv.query, model, "after compaction")
    # every late sample at or before its series' newest cold ts must go to the chunks
    cold_end = {k: max(ts for ts in p if ts < horizon) for k, p in model.points.items()}

    def newest_cold(k):
        return cold_end[k]

    def cold_ts(k, day):
        return sorted(ts for ts in model.points[k] if floor_to(ts, DAY) == base + day * DAY)

    def buckets_min_last(k, day):
        """A minute bucket of k in that day with 2+ samples: (ts of its min, ts of its last)."""
        groups = {}
        for ts in cold_ts(k, day):
            groups.setdefault(floor_to(ts, MIN), []).append(ts)
        for b_ts, tss in sorted(groups.items()):
            if len(tss) >= 2:
                mn = min(tss, key=lambda t: model.points[k][t])
                return mn, max(tss)
        raise AssertionError("test bug: no minute with two samples")

    late = []
    # (a) new samples inside compacted days, exactly at and next to midnight too
    late += [(a, base + 12_345, 1.25), (a, base + DAY, -3.5), (a, base + DAY - 1, 7.75),
             (b, base + DAY + 1, 0.5)]
    # (b) overwrites of existing cold samples: the minimum of a minute bucket becomes its
    # maximum, the last of a bucket changes, the newest cold sample of d (health reads it)
    mn_ts, last_ts = buckets_min_last(a, 1)
    late += [(a, mn_ts, 999.75), (a, last_ts, -999.5), (d, newest_cold(d), 42.25)]
    # (c) before the first sample of a series whose cold days start later, in a day with no
    # chunk of that series
    late += [(c, base + 2 * HOUR, 5.0), (c, base + DAY + 2 * HOUR, 6.25)]
    for k, ts, v in late:
        assert ts <= newest_cold(k)
    # (d) a new series with old samples: it has no chunks, its samples are raw
    e = key("cpu_usage", "new-1", "web")
    cold_end[e] = float("-inf")
    late += [(e, base + 3 * HOUR, 2.5), (e, base + DAY + 3, 3.5)]
    ingest_http(srv, late)
    model.put_all(late)

    # (e) several writes of one cold (series, ts) in one request: the last one wins; also of a
    # cold time that held no sample yet
    dup_ts = cold_ts(b, 1)[10]
    new_ts = cold_ts(b, 1)[20] + 1
    dups = [(b, dup_ts, 1.0), (b, new_ts, 2.0), (b, dup_ts, 3.0), (b, new_ts, 4.0),
            (b, dup_ts, -5.25), (b, new_ts, 6.5)]
    ingest_http(srv, dups)
    model.put_all(dups)

    # (f) one request mixing cold and hot samples of one series: new and rewritten, cold and
    # raw, at the newest cold ts and one millisecond after it, duplicates of a raw ts
    nc = newest_cold(a)
    hot_ts = [ts for ts in sorted(model.points[a]) if ts > gen_now - HOUR + 5 * MIN]
    mixed = [(a, nc, 11.5), (a, nc + 1, 12.5), (a, cold_ts(a, 0)[3], 13.25),
             (a, cold_ts(a, 0)[3] + 2, 14.0), (a, hot_ts[0], 15.75), (a, hot_ts[1] + 1, 16.0),
             (a, hot_ts[2], 17.0), (a, hot_ts[2], 18.5), (a, gen_now - 30 * SEC, 19.25),
             (a, cold_ts(a, 1)[7], 20.0), (a, cold_ts(a, 1)[7], 21.0)]
    rng.shuffle(mixed)
    ingest_http(srv, mixed)
    model.put_all(mixed)

    # line protocol and the CLI take the same path
    lp = [(a, cold_ts(a, 0)[40], -1.5), (c, cold_ts(c, 1)[5] + 3, 2.75)]
    ingest_lp(srv, lp)
    model.put_all(lp)
    cli = [(b, cold_ts(b, 0)[2], 8.25), (b, cold_ts(b, 0)[2] + 1, 9.5)]
    ingest_cli(run_cli, tmp_db, cli)
    model.put_all(cli)

    time.sleep(1.1)  # the server notices the CLI's commit within a second
    assert_matches_model(srv.query, model, "after the late samples")
    # where each late sample went: at or before its series' newest cold ts into the chunks
    keys = series_keys(srv.query)
    cold = {(keys[r["series_id"]], r["ts"]) for r in
            srv.query("SELECT series_id, ts FROM system_metrics_cold")}
    raw = {(keys[r["series_id"]], r["ts"]) for r in
           srv.query("SELECT series_id, ts FROM system_metrics_samples")}
    for k, ts, _ in late + dups + mixed + lp + cli:
        where = "cold" if ts <= cold_end[k] else "raw"
        assert (k, ts) in (cold if where == "cold" else raw), \
            f"late sample {k} {ts} is not among the {where} samples"
    # the series API at every resolution agrees with the model (and forgot its cached answer)
    for agg in AGGS:
        for resolution, step in (("raw", "1h"), ("1m", "1h"), ("1h", "1h"), ("raw", "1m"),
                                 ("1m", "1m"), ("auto", "2h")):
            step_ms = {"1h": HOUR, "1m": MIN, "2h": 2 * HOUR}[step]
            frm, to = base // SEC, gen_now // SEC
            if step == "1m":  # a day around the first midnight
                frm, to = (base + 12 * HOUR) // SEC, (base + 36 * HOUR) // SEC
            for metric in ("cpu_usage", "mem_used"):
                body = get_series(srv, metric=metric, step=step, agg=agg, resolution=resolution,
                                  **{"from": frm, "to": to})
                compare_series(f"{metric} {agg} {resolution} {step}", body["series"],
                               expect_series(model, metric, None, frm * SEC, to * SEC, step_ms,
                                             agg), agg)
    # system_health: d has no raw samples; its latest value is the rewritten newest cold one
    rows = {(r["host"], r["component"]): r for r in health(srv, health_now)}
    assert rows[("old-1", "batch")]["cpu"] == 42.25
    assert rows[("old-1", "batch")]["last_seen"] == newest_cold(d)

    # one more compaction, now with the late raw samples, keeps all of it
    compact(run_cli, tmp_db, "--older-than", "1m")
    time.sleep(1.1)
    assert_matches_model(srv.query, model, "after a second compaction")


def test_a_day_over_65536_samples(run_cli, tmp_path, tmp_db):
    """One series with 68,000 samples in one UTC day: two chunks for the day; late samples at
    the edges of both chunks merge, rows come back in order both ways across the chunk
    boundary."""
    rng = random.Random(65536)
    day = (now_ms() - 2 * DAY) // DAY * DAY
    k = key("cpu_usage", "dense", "x")
    model = Model()
    for i in range(68_000):
        model.put(k, day + i * 1270 + rng.randrange(2), quarter(rng, -20, 20))
    ingest_cli(run_cli, tmp_db, [(k, ts, v) for ts, v in model.points[k].items()],
               tmp_path / "dense.ndjson")
    moved, nseries, cp = compact(run_cli, tmp_db, "--older-than", "1h", "--quiet")
    assert (moved, nseries) == (68_000, 1)
    assert "compact:" not in cp.stderr, f"progress despite --quiet: {cp.stderr!r}"
    q = lambda sql: cli_query(run_cli, tmp_db, sql)
    chunks = q("SELECT day, start_ts, end_ts, count FROM system_metrics_chunks ORDER BY start_ts")
    assert len(chunks) == 2 and chunks[0]["count"] == 65536, chunks
    assert sum(c["count"] for c in chunks) == 68_000
    assert all(c["day"] == day // DAY for c in chunks)
    edge, cold_end = chunks[0]["end_ts"], chunks[1]["end_ts"]
    late = [(k, edge, 0.5), (k, edge + 1, 0.75), (k, chunks[1]["start_ts"], -0.25),
            (k, day, 1.0), (k, day + DAY - 1, 2.0), (k, chunks[1]["end_ts"] - 1, 3.0)]
    ingest_cli(run_cli, tmp_db, late)
    model.put_all(late)
    tss, vals = model.index(k)
    got = q("SELECT ts, value FROM system_metrics ORDER BY ts")
    assert got == [{"ts": t, "value": v} for t, v in zip(tss, vals)]
    i = bisect.bisect_left(tss, edge)
    lo, hi = tss[i - 50], tss[i + 50]
    want = [{"ts": t, "value": model.points[k][t]} for t in tss[i - 50:i + 51]]
    assert q(f"SELECT ts, value FROM system_metrics WHERE ts BETWEEN {lo} AND {hi} "
             f"ORDER BY ts") == want
    assert q(f"SELECT ts, value FROM system_metrics WHERE ts BETWEEN {lo} AND {hi} "
             f"ORDER BY ts DESC") == want[::-1]
    assert q("SELECT ts FROM system_metrics ORDER BY ts DESC LIMIT 1") == [{"ts": tss[-1]}]
    assert_matches_model(q, model, "a day of two chunks", one_chunk_per_day=False)
    chunks = q("SELECT count FROM system_metrics_chunks ORDER BY start_ts")
    cold_n = sum(1 for t in tss if t <= cold_end)  # day + DAY - 1 is raw: after the cold end
    assert [c["count"] for c in chunks] == [65536, cold_n - 65536], chunks


# ---- 3. randomized rounds --------------------------------------------------------------------


def test_random_rounds_of_late_samples_and_compactions(server_factory, run_cli, tmp_db):
    rng = random.Random(31337)
    srv = server_factory(*SERVER_ARGS)
    start = now_ms() - 5 * DAY // 2
    keys = [key("cpu_usage", f"r{i}", "web" if i % 2 else "db", **({"core": str(i)} if i % 3
                                                                     else {}))
            for i in range(6)] + [key("mem_used", "r0", "db"), key("mem_used", "r9", "app")]
    model = Model()
    horizons = ["1d", "45m", "0s", "36h", "2h"]
    for rnd, horizon in enumerate(horizons):
        now = now_ms()
        pts = []
        for _ in range(250):  # recent
            pts.append((rng.choice(keys), rng.randint(now - HOUR, now - SEC), quarter(rng)))
        for _ in range(250):  # late, anywhere in the 2.5 days
            pts.append((rng.choice(keys), rng.randint(start, now - SEC), quarter(rng)))
        existing = [(k, ts) for k, p in model.points.items() for ts in p]
        for k, ts in rng.sample(existing, min(80, len(existing))):  # overwrites
            pts.append((k, ts, quarter(rng)))
        for _ in range(15):  # several writes of one (series, ts) in one request
            k, ts = rng.choice(existing) if existing and rng.random() < 0.5 else \
                (rng.choice(keys), rng.randint(start, now - SEC))
            pts += [(k, ts, quarter(rng)) for _ in range(rng.randint(2, 4))]
        # requests: the duplicates of a (series, ts) stay in one request, in order
        groups = {}
        for p in pts:
            groups.setdefault((p[0], p[1]), []).append(p)
        order = list(groups)
        rng.shuffle(order)
        nreq = rng.randint(1, 3)
        for r in range(nreq):
            batch = [p for kt in order[r::nreq] for p in groups[kt]]
            via = rng.choice(["json", "lp", "cli"])
            if via == "json":
                ingest_http(srv, batch)
            elif via == "lp":
                ingest_lp(srv, batch)
            else:
                ingest_cli(run_cli, tmp_db, batch)
            model.put_all(batch)
        compact(run_cli, tmp_db, "--older-than", horizon, "--quiet")
        assert_matches_model(srv.query, model, f"round {rnd} (compact --older-than {horizon})")
    assert srv.query("SELECT count(*) AS n FROM system_metrics_chunks")[0]["n"] > 0


def test_cli_compaction_next_to_a_busy_server(server_factory, run_cli, tmp_db):
    """opsdb compact in another process while the server takes recent, late and rewritten
    samples without a pause: no request fails, and afterwards the table is the model."""
    rng = random.Random(8)
    srv = server_factory(*SERVER_ARGS)
    gen_now = now_ms()
    start = gen_now - 2 * DAY
    keys = [key("cpu_usage", f"b{i // 4}", f"c{i % 4}") for i in range(120)]
    model = Model()
    for k in keys:
        for ts in range(start + rng.randrange(MIN), gen_now - 5 * MIN, 15 * MIN):
            model.put(k, ts, quarter(rng))
    points = [(k, ts, v) for k, p in model.points.items() for ts, v in p.items()]
    for i in range(0, len(points), 6000):
        ingest_http(srv, points[i:i + 6000])

    proc = subprocess.Popen([srv.binary, "compact", "--db", str(tmp_db), "--older-than", "30m"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    during = 0  # requests answered while opsdb compact ran
    try:
        for _ in range(400):
            now = now_ms()
            rewritten = rng.choice(keys)
            batch = [(rng.choice(keys), now - rng.randrange(SEC, HOUR), quarter(rng))
                     for _ in range(10)]
            batch += [(rng.choice(keys), rng.randint(start, now - HOUR), quarter(rng))
                      for _ in range(10)]
            batch += [(rewritten, ts, quarter(rng))
                      for ts in rng.sample(sorted(model.points[rewritten]), 5)]
            ingest_http(srv, batch)
            model.put_all(batch)
            if proc.poll() is not None:
                break
            during += 1
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert during >= 2, "opsdb compact ended before the writes began: nothing was concurrent"
    assert "compacted" in out and not sanitizer_lines(err), err[-3000:]
    assert_matches_model(srv.query, model, "after a compaction next to a busy server")
    assert srv.query("SELECT count(*) AS n FROM system_metrics_chunks")[0]["n"] > 0


# ---- 4. the server compacts by itself --------------------------------------------------------


def test_server_compacts_by_itself(server_factory, tmp_db):
    rng = random.Random(4)
    srv = server_factory("--set", "storage.compact_interval=1s", "--set",
                         "storage.compress_after=1h", "--set", "query.max_rows=500000",
                         "--set", "query.cache_bytes=0")
    gen_now = now_ms()
    base = (gen_now - 2 * DAY) // DAY * DAY
    keys = [key("cpu_usage" if i % 2 else "mem_used", f"s{i // 10}", f"c{i % 10}")
            for i in range(300)]  # more series than one compaction step takes
    model = Model()
    for k in keys:
        ts = base + rng.randrange(10 * MIN)
        while ts < gen_now - 2 * MIN:
            model.put(k, ts, quarter(rng))
            ts += rng.randint(20 * MIN, 40 * MIN)
    points = [(k, ts, v) for k, p in model.points.items() for ts, v in p.items()]
    rng.shuffle(points)
    for i in range(0, len(points), 5000):
        ingest_http(srv, points[i:i + 5000])
    total_before = model.count()
    sums_sql = ("SELECT metric, count(*) AS n, sum(value) AS s, min(value) AS mn, "
                "max(value) AS mx FROM system_metrics GROUP BY metric ORDER BY metric")
    horizon_slack = 2 * MIN
    seen_partial = False

    def done():
        nonlocal seen_partial
        # ingestion goes on while the server compacts: recent and late samples
        now = now_ms()
        batch = [(rng.choice(keys), now - rng.randrange(SEC, 10 * MIN), quarter(rng))
                 for _ in range(20)]
        batch += [(rng.choice(keys), rng.randint(base, now - 2 * HOUR), quarter(rng))
                  for _ in range(5)]
        ingest_http(srv, batch)
        model.put_all(batch)
        # every answer during the compaction is whole: nothing missing, nothing twice
        n = srv.query("SELECT count(*) AS n FROM system_metrics")[0]["n"]
        assert n == model.count(), "a query during compaction saw samples missing or twice"
        old_raw = srv.query(f"SELECT count(*) AS n FROM system_metrics_samples WHERE ts < "
                            f"{now_ms() - HOUR - horizon_slack}")[0]["n"]
        cold = srv.query("SELECT count(*) AS n FROM system_metrics_chunks")[0]["n"]
        seen_partial |= cold > 0 and old_raw > 0
        return old_raw == 0 and cold > 0

    assert wait_until(done, timeout=25, interval=0.2), \
        "the server did not compact the old samples within 25 s:\n" + srv.run_stderr()[-3000:]
    assert model.count() > total_before
    assert_matches_model(srv.query, model, "after the server's compaction")
    hot_min = srv.query("SELECT min(ts) AS lo FROM system_metrics_samples")[0]["lo"]
    assert hot_min is None or hot_min >= gen_now - HOUR - horizon_slack - 5 * MIN
    # late samples after the compaction
    late = [(k, ts, 0.25) for k in keys[:5] for ts in list(model.points[k])[:3]]
    late += [(keys[7], base + 3 * HOUR + 7, -0.5)]
    ingest_http(srv, late)
    model.put_all(late)
    rows = srv.query(sums_sql)
    want = {}
    for k, p in model.points.items():
        w = want.setdefault(k.metric, [0, [], ])
        w[0] += len(p)
        w[1].extend(p.values())
    assert rows == [{"metric": m, "n": n, "s": math.fsum(vs), "mn": min(vs), "mx": max(vs)}
                    for m, (n, vs) in sorted(want.items())]
    assert "compaction failed" not in srv.run_stderr(), srv.run_stderr()[-3000:]


# ---- 5. a crash in the middle of a compaction ------------------------------------------------


def bulk_load(run_cli, db, nseries, per_series, now):
    """nseries series of per_series samples every 2 minutes, ending over an hour ago, straight
    into the raw samples table."""
    cp = run_cli("init", "--db", db)
    assert cp.returncode == 0, cp.stderr
    start = now - 2 * HOUR - per_series * 2 * MIN
    sqlite3(db, f"""PRAGMA synchronous=OFF;
INSERT INTO system_metrics_series (id, host, component, metric)
  WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {nseries})
  SELECT i, 'k' || (i % 50), 'c', 'm' || (i / 50) FROM s;
INSERT INTO system_metrics_samples (series_id, ts, value)
  WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {per_series - 1})
  SELECT r.id, {start} + s.i * 120000 + r.id, ((s.i * 7 + r.id) % 1000) * 0.25
  FROM system_metrics_series r CROSS JOIN s ORDER BY 1, 2;""")


PER_SERIES_SQL = ("SELECT series_id, count(*) AS n, sum(ts) AS t, sum(value) AS v, min(ts) AS lo, "
                  "max(ts) AS hi FROM system_metrics_raw GROUP BY series_id ORDER BY series_id")
# cold and raw samples of a series lie in disjoint time ranges, chunks in disjoint days; with the
# per-series counts this proves every sample is there exactly once (cheaper than a GROUP BY
# series_id, ts over a million samples)
OVERLAP_SQL = ("SELECT 'cold after raw' AS what, c.series_id AS id FROM (SELECT series_id, "
               "max(end_ts) AS m FROM system_metrics_chunks GROUP BY 1) c JOIN (SELECT series_id, "
               "min(ts) AS m FROM system_metrics_samples GROUP BY 1) h ON h.series_id = "
               "c.series_id WHERE c.m >= h.m UNION ALL SELECT 'two chunks a day', series_id "
               "FROM system_metrics_chunks GROUP BY series_id, day HAVING count(*) > 1")


def assert_exactly_once(run_cli, db, want, what):
    assert sqlite3(db, "PRAGMA integrity_check;").strip() == "ok", what
    assert cli_query(run_cli, db, PER_SERIES_SQL) == want, f"{what}: samples lost or doubled"
    overlap = cli_query(run_cli, db, OVERLAP_SQL)
    assert not overlap, f"{what}: {overlap[:10]}"


def test_kill9_in_the_middle_of_a_compaction(run_cli, server_factory, opsdb_bin, tmp_db):
    nseries, per_series = 1000, 1000
    bulk_load(run_cli, tmp_db, nseries, per_series, now_ms())
    want = cli_query(run_cli, tmp_db, PER_SERIES_SQL)
    assert len(want) == nseries and sum(r["n"] for r in want) == nseries * per_series

    # the CLI, killed after its first committed step (it reports progress per step)
    proc = subprocess.Popen([opsdb_bin, "compact", "--db", str(tmp_db), "--older-than", "1h"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stderr], [], [], 0.5)
            if ready:
                chunk = os.read(proc.stderr.fileno(), 4096)
                if not chunk:
                    break
                err += chunk
                if re.search(rb"[1-9]\d* samples moved", err):
                    break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert re.search(rb"[1-9]\d* samples moved", err), err.decode(errors="replace")[-2000:]
    moved = cli_query(run_cli, tmp_db, "SELECT coalesce(sum(count), 0) AS n FROM "
                                       "system_metrics_chunks")[0]["n"]
    assert 0 < moved < nseries * per_series, f"{moved} samples moved: no crash mid-way"
    assert_exactly_once(run_cli, tmp_db, want, "after kill -9 of opsdb compact")

    # the server, killed while it compacts by itself
    srv = server_factory("--set", "storage.compact_interval=1s", "--set",
                         "storage.compress_after=1h")

    def chunks():
        return int(sqlite3(tmp_db, "SELECT count(*) FROM system_metrics_chunks;"))

    first = chunks()
    assert wait_until(lambda: chunks() > first, timeout=20, interval=0.05), \
        "the server did not compact"
    srv.kill9()
    assert_exactly_once(run_cli, tmp_db, want, "after kill -9 of the compacting server")

    # a second compaction completes and moves the rest
    moved2, _, _ = compact(run_cli, tmp_db, "--older-than", "1h", "--quiet")
    left = cli_query(run_cli, tmp_db, "SELECT count(*) AS n FROM system_metrics_samples")
    assert left == [{"n": 0}]
    assert moved2 > 0
    assert_exactly_once(run_cli, tmp_db, want, "after the second compaction")


# ---- 6. errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("--older-than", "nonsense"), ("--older-than", "-1h"),
                                  ("--older-than", ""), ("--older-than", "5 parsecs"),
                                  ("--older-than",), ("--bogus",)])
def test_compact_rejects_bad_arguments(run_cli, tmp_db, args):
    cp = run_cli("compact", "--db", tmp_db, *args)
    assert cp.returncode == 2, (cp.returncode, cp.stdout, cp.stderr)
    assert "usage" in cp.stderr or "opsdb compact" in cp.stderr, cp.stderr
    if len(args) == 2 and args[0] == "--older-than":
        assert f"'{args[1]}'" in cp.stderr and "duration" in cp.stderr, cp.stderr
    assert "compacted" not in cp.stdout
    assert not tmp_db.exists(), "a rejected command created the database"


def test_compact_on_a_missing_database_is_refused_like_reads(run_cli, tmp_path):
    """There is nothing to compact in a database that does not exist: opsdb compact refuses as
    query, view and retention do, and creates neither the file nor its directory."""
    for db in (tmp_path / "missing.db", tmp_path / "no" / "such" / "dir" / "x.db"):
        ref = run_cli("retention", "status", "--db", db)
        assert ref.returncode != 0 and "does not exist" in ref.stderr, ref.stderr
        cp = run_cli("compact", "--db", db)
        assert not db.exists() and not (tmp_path / "no").exists(), \
            f"opsdb compact created {db}: {cp.stdout} {cp.stderr}"
        assert cp.returncode == ref.returncode, (cp.returncode, cp.stderr)
        assert "does not exist" in cp.stderr, cp.stderr


def test_default_horizon_is_storage_compress_after(run_cli, tmp_db):
    now = now_ms()
    k = key("cpu_usage", "h", "c")
    ages = [5 * HOUR, 3 * HOUR, 100 * MIN, 40 * MIN, 10 * MIN]
    ingest_cli(run_cli, tmp_db, [(k, now - age, float(i)) for i, age in enumerate(ages)])

    def cold():
        return cli_query(run_cli, tmp_db, "SELECT count(*) AS n FROM system_metrics_cold")[0]["n"]

    assert compact(run_cli, tmp_db)[0] == 2  # the default: 2h
    assert cold() == 2
    assert compact(run_cli, tmp_db, "--set", "storage.compress_after=90m")[0] == 1
    assert compact(run_cli, tmp_db, env={"OPSDB_STORAGE_COMPRESS_AFTER": "30m"})[0] == 1
    assert cold() == 4


def test_compress_after_0_means_never_for_the_cli_too(run_cli, tmp_db):
    """docs/config.md: storage.compress_after 0 = never. `opsdb compact` without --older-than
    takes its horizon from that option, so with 0 it compresses nothing (rather than every
    sample up to this millisecond)."""
    now = now_ms()
    k = key("cpu_usage", "h", "c")
    ingest_cli(run_cli, tmp_db, [(k, now - age, 1.0) for age in (3 * HOUR, 10 * MIN, SEC)])
    cp = run_cli("compact", "--db", tmp_db, "--set", "storage.compress_after=0")
    assert cp.returncode == 0 and "storage.compress_after is 0" in cp.stdout, (cp.stdout, cp.stderr)
    cold = cli_query(run_cli, tmp_db, "SELECT count(*) AS n FROM system_metrics_cold")[0]["n"]
    assert cold == 0, f"storage.compress_after=0 (never): {cp.stdout}"
    cp = run_cli("compact", "--db", tmp_db, "--set", "storage.compress_after=0",
                 "--set", "storage.compress_events_after=0")
    assert cp.returncode == 0 and "nothing done" in cp.stdout, (cp.stdout, cp.stderr)


def test_the_cold_table_is_read_only(server_factory, run_cli, tmp_db):
    now = now_ms()
    k = key("cpu_usage", "h", "c")
    ingest_cli(run_cli, tmp_db, [(k, now - 3 * HOUR + i, float(i)) for i in range(10)])
    compact(run_cli, tmp_db, "--older-than", "1h")
    srv = server_factory()
    for sql in ["INSERT INTO system_metrics_cold (series_id, ts, value) VALUES (1, 2, 3)",
                "UPDATE system_metrics_cold SET value = 0",
                "DELETE FROM system_metrics_cold WHERE series_id = 1",
                "DELETE FROM system_metrics_chunks",
                "UPDATE system_metrics_chunks SET data = x'00'",
                "DROP TABLE system_metrics_cold",
                "INSERT INTO system_metrics_raw (series_id, ts, value) VALUES (1, 5, 5)"]:
        for r in (srv.get("/api/v1/query", params={"sql": sql}),
                  srv.post("/api/v1/query", data=sql.encode())):
            assert 400 <= r.status_code < 500, f"{sql} -> {r.status_code} {r.text}"
            assert isinstance(r.json().get("error"), str), r.text
        cp = cli_query(run_cli, tmp_db, sql, expect_ok=False)
        assert cp.returncode != 0, f"opsdb query {sql!r} was not refused"
    assert srv.query("SELECT count(*) AS n, sum(value) AS s FROM system_metrics") == \
        [{"n": 10, "s": 45.0}]


def chunk_hex(db, rowid):
    return sqlite3(db, f"SELECT hex(data) FROM system_metrics_chunks WHERE rowid = {rowid};"
                   ).strip()


def test_a_corrupt_chunk_is_an_error_not_a_crash(server_factory, run_cli, tmp_db):
    now = now_ms()
    base = (now - 2 * DAY) // DAY * DAY
    bad_k, good_k = key("cpu_usage", "bad", "c"), key("cpu_usage", "good", "c")
    pts = [(k, base + i * 5 * MIN + j, float(i % 17) / 4) for k in (bad_k, good_k)
           for j, i in enumerate(range(0, 2 * DAY // (5 * MIN)))]
    pts += [(k, now - 10 * MIN, 1.0) for k in (bad_k, good_k)]
    ingest_cli(run_cli, tmp_db, pts)
    compact(run_cli, tmp_db, "--older-than", "1h")
    chunks = {(r["host"], r["day"]): r["rowid"] for r in cli_query(
        run_cli, tmp_db, "SELECT c.rowid AS rowid, r.host AS host, c.day AS day FROM "
                         "system_metrics_chunks c JOIN system_metrics_series r "
                         "ON r.id = c.series_id")}
    day0, day1 = base // DAY, base // DAY + 1
    assert set(chunks) == {("bad", day0), ("bad", day1), ("good", day0), ("good", day1)}
    # three kinds of damage: garbage, a truncated blob, a flipped byte inside the payload
    sqlite3(tmp_db, f"UPDATE system_metrics_chunks SET data = X'00112233' "
                    f"WHERE rowid = {chunks[('bad', day0)]};")
    blob = chunk_hex(tmp_db, chunks[("bad", day1)])
    cut = blob[:len(blob) // 3 * 2]  # two thirds of the hex digits, an even number
    sqlite3(tmp_db, f"UPDATE system_metrics_chunks SET data = X'{cut}' "
                    f"WHERE rowid = {chunks[('bad', day1)]};")
    srv = server_factory()

    def assert_error(r, what):
        assert 400 <= r.status_code < 600, f"{what}: {r.status_code} {r.text[:500]}"
        body = r.json()
        assert isinstance(body.get("error"), str) and "chunk" in body["error"], \
            f"{what}: {body}"

    for sql in ["SELECT count(*) FROM system_metrics",
                "SELECT * FROM system_metrics WHERE host = 'bad' ORDER BY ts DESC",
                f"SELECT * FROM system_metrics_cold WHERE ts < {base + DAY}",
                "SELECT sum(value) FROM system_metrics_raw"]:
        assert_error(srv.get("/api/v1/query", params={"sql": sql}), sql)
    cp = cli_query(run_cli, tmp_db, "SELECT count(*) FROM system_metrics", expect_ok=False)
    assert cp.returncode == 1 and "chunk" in cp.stderr, (cp.returncode, cp.stderr)
    r = srv.get("/api/v1/series", params={"metric": "cpu_usage", "from": base // SEC,
                                          "to": now // SEC, "step": "10m", "resolution": "raw"})
    assert_error(r, "series API over the corrupt chunks")
    # what does not touch the damage still answers, exactly
    good = srv.query("SELECT count(*) AS n, sum(value) AS s FROM system_metrics "
                     "WHERE host = 'good'")
    assert good == [{"n": sum(1 for p in pts if p[0] == good_k),
                     "s": math.fsum(p[2] for p in pts if p[0] == good_k)}]
    # a late sample for a damaged day is refused, with a message, and nothing is written
    r = srv.ingest("system_metrics", [json_row(bad_k, base + 7, 1.0),
                                      json_row(good_k, base + 7, 1.0)])
    assert_error(r, "ingest into a corrupt day")
    r = srv.ingest("system_metrics", [json_row(good_k, base + 9, 2.0)])
    assert r.status_code == 200, r.text
    assert srv.query(f"SELECT ts, value FROM system_metrics WHERE host = 'good' AND "
                     f"ts < {base + 60 * SEC} ORDER BY ts") == \
        [{"ts": base, "value": 0.0}, {"ts": base + 9, "value": 2.0}]
    assert srv.get("/healthz").status_code == 200
    # a byte flipped inside the compressed payload of a good chunk: its checksum catches it
    blob = bytearray.fromhex(chunk_hex(tmp_db, chunks[("good", day1)]))
    blob[len(blob) - 6] ^= 0x5A
    sqlite3(tmp_db, f"UPDATE system_metrics_chunks SET data = X'{blob.hex()}' "
                    f"WHERE rowid = {chunks[('good', day1)]};")
    time.sleep(1.1)
    assert_error(srv.get("/api/v1/query", params={
        "sql": "SELECT count(*), sum(value) FROM system_metrics WHERE host = 'good'"}),
        "a flipped byte")
    assert srv.get("/healthz").status_code == 200


def test_one_corrupt_chunk_does_not_stop_compaction_of_the_others(server_factory, run_cli,
                                                                   tmp_db):
    """A damaged chunk is one series' problem: the server keeps compacting every other series
    (a single bad blob must not leave the raw table growing for ever), reports the failures,
    and counts as compacted only what it committed."""
    now = now_ms()
    base = (now - 2 * DAY) // DAY * DAY
    keys = [key("cpu_usage", f"z{i}", "c") for i in range(4)]
    ingest_cli(run_cli, tmp_db, [(k, base + i * 10 * MIN, 1.0) for k in keys
                                 for i in range(20 * 6)])  # day 0, midnight to 20:00
    # compact up to about 12:00 of day 0: the rest of the day stays raw
    compact(run_cli, tmp_db, "--older-than", f"{(now - base) // MIN - 12 * 60}m")
    rowid = sqlite3(tmp_db, "SELECT c.rowid FROM system_metrics_chunks c JOIN "
                            "system_metrics_series r ON r.id = c.series_id "
                            "WHERE r.host = 'z1';").strip()
    sqlite3(tmp_db, f"UPDATE system_metrics_chunks SET data = X'00112233' WHERE rowid = {rowid};")
    # the CLI meets the damage: an error with a message, no crash
    cp = run_cli("compact", "--db", tmp_db, "--older-than", "1h")
    assert cp.returncode == 1 and "chunk" in cp.stderr, (cp.returncode, cp.stdout, cp.stderr)
    moved_before = cli_query(run_cli, tmp_db, "SELECT sum(count) AS n FROM "
                                              "system_metrics_chunks")[0]["n"]

    srv = server_factory("--set", "storage.compact_interval=1s", "--set",
                         "storage.compress_after=1h")
    raw_sql = ("SELECT r.host AS host, count(*) AS n FROM system_metrics_samples s JOIN "
               "system_metrics_series r ON r.id = s.series_id GROUP BY 1 ORDER BY 1")
    wait_until(lambda: "compaction failed" in srv.run_stderr() and
               [r["host"] for r in srv.query(raw_sql)] == ["z1"], timeout=5, interval=0.25)
    assert "compaction failed" in srv.run_stderr(), srv.run_stderr()[-2000:]
    raw = srv.query(raw_sql)
    moved = srv.query("SELECT sum(count) AS n FROM system_metrics_chunks")[0]["n"]
    problems = []
    if [r["host"] for r in raw] != ["z1"]:
        problems.append(f"one corrupt chunk of z1 kept the other series from being compacted: "
                        f"raw rows {raw}")
    metrics = srv.get("/metrics").text
    m = re.search(r"^opsdb_samples_compacted_total (\d+)", metrics, re.M)
    if m and int(m.group(1)) != moved - moved_before:  # what was committed, not rolled back
        problems.append(f"opsdb_samples_compacted_total is {m.group(1)}, but the server moved "
                        f"{moved - moved_before} samples into chunks")
    assert not problems, "\n".join(problems)


# ---- 7. query plans and row order ------------------------------------------------------------


def test_one_series_time_bounded_query_uses_the_series_constraint(server_factory, run_cli, tmp_db):
    now = now_ms()
    base = (now - 2 * DAY) // DAY * DAY
    keys = [key("cpu_usage", f"p{i}", "c") for i in range(5)]
    ingest_cli(run_cli, tmp_db, [(k, base + i * 10 * MIN, float(i)) for k in keys
                                 for i in range(2 * DAY // (10 * MIN))])
    compact(run_cli, tmp_db, "--older-than", "1h")
    srv = server_factory()

    def plan(sql):
        return [r["detail"] for r in srv.query("EXPLAIN QUERY PLAN " + sql)]

    lo, hi = base + DAY - HOUR, base + DAY + HOUR
    for sql in [f"SELECT ts, value FROM system_metrics WHERE metric = 'cpu_usage' AND "
                f"host = 'p3' AND component = 'c' AND ts >= {lo} AND ts < {hi}",
                f"SELECT ts, value FROM system_metrics_raw WHERE series_id = 2 AND ts > {lo} "
                f"AND ts <= {hi} ORDER BY ts DESC"]:
        details = plan(sql)
        vt = [d for d in details if "VIRTUAL TABLE" in d]
        assert vt, f"{sql}: the cold samples are not read:\n{details}"
        for d in vt:
            m = re.search(r"VIRTUAL TABLE INDEX (\d+)", d)
            assert m and int(m.group(1)) & 7 == 7, \
                f"{sql}: the cold table is not searched by series and time:\n{details}"
    # system_health reads the newest cold sample of each series by its series
    details = plan("SELECT * FROM system_health")
    idx = [int(m.group(1)) for d in details for m in [re.search(r"VIRTUAL TABLE INDEX (\d+)", d)]
           if m]
    assert idx and all(i & 1 for i in idx), f"system_health scans the cold samples:\n{details}"


def test_cold_rows_come_in_the_order_asked_for(server_factory, run_cli, tmp_db):
    """However the series and the bounds are spelled (integer, real, text, IN, a subquery),
    ORDER BY ts and ORDER BY ts DESC over cold samples give the rows in that order."""
    now = now_ms()
    base = (now - 3 * DAY) // DAY * DAY
    keys = [key("cpu_usage", f"o{i}", "c") for i in range(3)]
    model = Model()
    rng = random.Random(3)
    for k in keys:
        for i in range(3 * DAY // (30 * MIN)):
            model.put(k, base + i * 30 * MIN + rng.randrange(1000), quarter(rng))
    ingest_cli(run_cli, tmp_db, [(k, ts, v) for k, p in model.points.items()
                                 for ts, v in p.items()])
    compact(run_cli, tmp_db, "--older-than", "1h")
    srv = server_factory()
    sid = srv.query("SELECT id FROM system_metrics_series WHERE host = 'o1'")[0]["id"]
    tss = sorted(model.points[keys[1]])
    lo, hi = tss[10], tss[-10]
    inside = [t for t in tss if lo <= t <= hi]
    bad = []
    for series in (f"{sid}", f"{sid}.0", f"'{sid}'", f"+{sid}", f"(SELECT {sid})"):
        for bounds, want in (("", tss), (f" AND ts BETWEEN {lo} AND {hi}", inside),
                             (f" AND ts >= {lo}.0 AND ts <= '{hi}'", inside)):
            for order, rows in (("", want), (" DESC", want[::-1])):
                for table in ("system_metrics_cold", "system_metrics_raw"):
                    sql = f"SELECT ts FROM {table} WHERE series_id = {series}{bounds} " \
                          f"ORDER BY ts{order}"
                    got = [r["ts"] for r in srv.query(sql)]
                    if got != rows:
                        bad.append(f"{sql}: {len(got)} rows, first {got[:3]}, expected "
                                   f"{len(rows)} rows, first {rows[:3]}")
                    sql += " LIMIT 1"
                    got = [r["ts"] for r in srv.query(sql)]
                    if got != rows[:1]:
                        bad.append(f"{sql}: {got}, expected {rows[:1]}")
    assert not bad, f"{len(bad)} queries gave rows out of order:\n" + "\n".join(bad[:12])
