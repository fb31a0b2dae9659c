"""Metric samples in compressed chunks: ingestion writes every sample of system_metrics straight
into per-series day chunks, compaction folds the many small chunks of a past day into the fewest,
and nothing a user can ask changes.

The contract under test:

* Ingestion (POST /api/v1/ingest, POST /write, `opsdb ingest`) writes each series' run of samples
  within one UTC day in one batch (a request; a CLI input under 8 MB) as one new row of
  system_metrics_chunks (series_id, day, start_ts, end_ts, count, data, minutes), split only
  beyond 65536 samples; a run that follows a small chunk of its series in the same day (the two
  together at most 256 samples) joins it instead. The chunks of a series never overlap in time:
  a run that overlaps one is merged with its day's chunks and the day is rewritten as the fewest
  chunks of at most 65536 samples. Of the samples of one (series, ts) the last written wins,
  also inside one request; no (series, ts) is ever stored twice. system_metrics_samples, where
  samples were kept a row each before schema version 8, stays empty.
* `opsdb compact --db DB [--older-than DURATION] [--quiet]` (default horizon: the option
  storage.compress_after, 2h; 0 means never) folds: for each series, every UTC day whose chunks
  all end before now minus the horizon and that lies in more chunks than it needs (more than
  ceil(samples / 65536)) is rewritten as the fewest chunks; no other day is touched. It prints
  "compacted N samples of M series older than ... into chunks" (N: the samples rewritten, M:
  their series); a bad duration is exit 2 with a message.
* The server does the same every storage.compact_interval with storage.compress_after (0: never).
* Every chunk row carries its minutes (the 1-minute rollup of its samples); system_metrics_1m
  reads them back, a minute split by a chunk boundary as one row, and with system_metrics_1h
  stays exact. system_metrics_cold (a read-only virtual table) reads the samples back,
  system_metrics_raw is cold UNION ALL samples, and system_metrics (the documented columns)
  covers both, so SQL, the series API at every resolution, system_health and `opsdb retention
  status` answer the same before and after a compaction (sums within 1e-9, relative to the sum
  of magnitudes: they may be added in another order).
* A crash (kill -9) in the middle of a compaction loses and duplicates nothing.
* A corrupt chunk is an error with a message naming its series, never a crash, and keeps no
  other series from being folded.

Each test checks against independent Python models: of what system_metrics must hold (values
that are multiples of 1/4 where rollups are compared exactly: every sum is then exact in any
order) and, where the test knows the batches, of the very chunk rows the contract above makes of
them. The first crash test loads raw samples straight into system_metrics_samples with the
sqlite3 shell, as a database from before schema version 8 holds them (compaction moves them into
chunks); everything else goes through HTTP and the CLI.
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
                         key, labels_json, parse_dur)
from conftest import now_ms, sanitizer_reports as sanitizer_lines, wait_until

SEC, MIN, HOUR, DAY = 1000, 60_000, 3_600_000, 86_400_000
AGGS = ["avg", "min", "max", "sum", "count", "last"]
SERVER_ARGS = ("--set", "query.cache_bytes=0", "--set", "query.max_rows=500000",
               "--set", "query.timeout=30s", "--set", "storage.compress_after=0")
# metric -> (measurement, field) in line protocol
LP_NAMES = {"cpu_usage": ("cpu", "usage"), "mem_used": ("mem", "used")}
CHUNK_MAX = 65536  # samples of one chunk at most
HEAD_MAX = 256  # a run joins the small chunk before it in its day while both hold at most this
CLI_BATCH_BYTES = 8 << 20  # opsdb ingest writes a smaller input as one batch


def key_of_row(r):
    return Key(r["metric"], r["host"], r["component"],
               tuple(sorted(json.loads(r["labels"]).items())))


# ---- the models ------------------------------------------------------------------------------


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

    def day_ts(self, k, day):
        """The sorted ts of k in that UTC day (a day number: ts // DAY)."""
        tss, _ = self.index(k)
        return tss[bisect.bisect_left(tss, day * DAY):bisect.bisect_left(tss, (day + 1) * DAY)]


def fewest(n):
    """The fewest chunks n samples of one series and day fit in."""
    return -(-n // CHUNK_MAX)


def split_chunks(tss):
    """The chunks, (start_ts, end_ts, count), that sorted distinct tss of one series and day are
    written as: CHUNK_MAX samples each but the last."""
    return [(tss[i], tss[min(i + CHUNK_MAX, len(tss)) - 1], min(CHUNK_MAX, len(tss) - i))
            for i in range(0, len(tss), CHUNK_MAX)]


class Layout:
    """{(Key, day): [(start_ts, end_ts, count), ...] by start_ts}: the rows system_metrics_chunks
    must hold after the batches written through write() and the compactions through fold()."""

    def __init__(self, model):
        self.model = model
        self.days = {}

    def write(self, points):
        """One batch: puts its points into the model and returns {(Key, day): "merged", "joined"
        or "new"}, what became of each run. Of the day's chunks, the last one starting at or
        before the run's end decides: overlapping the run, the day is merged; holding, with the
        run (its duplicates counted), at most HEAD_MAX samples, the run joins it."""
        self.model.put_all(points)
        runs = {}
        for k, ts, _ in points:
            runs.setdefault((k, ts // DAY), []).append(ts)
        how = {}
        for (k, day), tss in runs.items():
            lo, hi = min(tss), max(tss)
            old = self.days.get((k, day), [])
            prev = [c for c in old if c[0] <= hi][-1:]
            if prev and prev[0][1] >= lo:
                self.days[(k, day)] = split_chunks(self.model.day_ts(k, day))
                how[(k, day)] = "merged"
            elif prev and prev[0][2] + len(tss) <= HEAD_MAX:
                day_ts = self.model.day_ts(k, day)
                joined = day_ts[bisect.bisect_left(day_ts, prev[0][0]):
                                bisect.bisect_right(day_ts, hi)]
                self.days[(k, day)] = sorted([c for c in old if c != prev[0]] +
                                             split_chunks(joined))
                how[(k, day)] = "joined"
            else:
                self.days[(k, day)] = sorted(old + split_chunks(sorted(set(tss))))
                how[(k, day)] = "new"
        return how

    def fold(self, before_ms):
        """A compaction with that horizon; returns (samples, series) it must report."""
        moved, series = 0, set()
        for (k, day), chunks in self.days.items():
            n = sum(c[2] for c in chunks)
            if max(c[1] for c in chunks) < before_ms and len(chunks) > fewest(n):
                self.days[(k, day)] = split_chunks(self.model.day_ts(k, day))
                moved += n
                series.add(k)
        return moved, len(series)

    def unfolded(self, pred=lambda k, day, chunks: True):
        """The (Key, day)s in more chunks than they need (and pred)."""
        return [(k, day) for (k, day), ch in self.days.items()
                if len(ch) > fewest(sum(c[2] for c in ch)) and pred(k, day, ch)]


def time_slices(rng, start, end, recent_from):
    """Bounds of time slices from start past end: 90 min to 4 h wide up to recent_from, 7 to 13
    min after, at odd milliseconds (so minutes are split between chunks)."""
    bounds = [start]
    while bounds[-1] <= end:
        if bounds[-1] < recent_from:
            bounds.append(min(bounds[-1] + rng.randint(90 * MIN, 4 * HOUR) + rng.randrange(SEC),
                              recent_from))
        else:
            bounds.append(bounds[-1] + rng.randint(7 * MIN, 13 * MIN) + rng.randrange(1, SEC))
    return bounds


def slices(points, bounds, rng):
    """The points (sorted by ts) of each slice [bounds[i], bounds[i + 1]) that has any, in time
    order, each shuffled: written a request each, a slice is a run of every series and day it
    holds."""
    tss = [p[1] for p in points]
    out = []
    for lo, hi in zip(bounds, bounds[1:]):
        batch = points[bisect.bisect_left(tss, lo):bisect.bisect_left(tss, hi)]
        rng.shuffle(batch)
        if batch:
            out.append(batch)
    assert sum(map(len, out)) == len(points), "test bug: points outside the slices"
    return out


def sorted_points(model):
    return sorted(((k, ts, v) for k, pts in model.points.items() for ts, v in pts.items()),
                  key=lambda p: p[1])


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


def assert_storage_sound(q, folded_before=None):
    """The invariants of the chunks, read through SQL: system_metrics_samples empty; no
    (series_id, ts) twice; a chunk within one UTC day, of 1..65536 samples, with its minutes;
    the chunks of a series never overlapping; their counts and bounds what the virtual table
    reads back; and with folded_before (ms), every day whose chunks all end before it in the
    fewest chunks."""
    raw = q("SELECT count(*) AS n FROM system_metrics_samples")
    assert raw == [{"n": 0}], f"samples stored outside the chunks: {raw}"
    dups = q("SELECT series_id, ts, count(*) AS n FROM system_metrics_raw GROUP BY 1, 2 "
             "HAVING count(*) > 1 LIMIT 10")
    assert not dups, f"samples stored twice: {dups}"
    bad = q(f"SELECT series_id, day, start_ts, end_ts, count FROM system_metrics_chunks WHERE "
            f"day != start_ts / {DAY} - (start_ts < 0 AND start_ts % {DAY} != 0) "
            f"OR end_ts / {DAY} != start_ts / {DAY} OR end_ts < start_ts OR count < 1 "
            f"OR count > {CHUNK_MAX} OR (count = 1) != (start_ts = end_ts) LIMIT 10")
    assert not bad, f"chunks outside their UTC day or of an impossible count: {bad}"
    bare = q("SELECT series_id, start_ts FROM system_metrics_chunks WHERE minutes IS NULL "
             "LIMIT 10")
    assert not bare, f"chunks without their minute rollup: {bare}"
    overlap = q("SELECT series_id, prev_end, start_ts FROM (SELECT series_id, start_ts, "
                "lag(end_ts) OVER (PARTITION BY series_id ORDER BY start_ts) AS prev_end "
                "FROM system_metrics_chunks) WHERE prev_end >= start_ts LIMIT 10")
    assert not overlap, f"chunks of one series overlap: {overlap}"
    counted = q("SELECT series_id, sum(count) AS n, min(start_ts) AS lo, max(end_ts) AS hi "
                "FROM system_metrics_chunks GROUP BY 1 ORDER BY 1")
    read = q("SELECT series_id, count(*) AS n, min(ts) AS lo, max(ts) AS hi "
             "FROM system_metrics_cold GROUP BY 1 ORDER BY 1")
    assert counted == read, "chunk headers (count, start_ts, end_ts) and the rows read back differ"
    if folded_before is not None:
        unfolded = q(f"SELECT series_id, day, count(*) AS chunks, sum(count) AS n, max(end_ts) "
                     f"AS end_ts FROM system_metrics_chunks GROUP BY 1, 2 HAVING max(end_ts) < "
                     f"{folded_before} AND count(*) > (sum(count) + {CHUNK_MAX - 1}) / "
                     f"{CHUNK_MAX} LIMIT 10")
        assert not unfolded, f"days ending before {folded_before} not folded: {unfolded}"


def assert_matches_model(q, model, what, rollups=True, folded_before=None):
    got = raw_samples(q)
    want = model.flat()
    assert got == want, f"{what}: system_metrics: " + diff_text(got, want)
    if rollups:
        for table, bucket in (("system_metrics_1m", MIN), ("system_metrics_1h", HOUR)):
            got = rollup_rows(q, table)
            want = expected_rollups(model, bucket)
            assert got == want, f"{what}: {table} (min, max, sum, count, last, last_ts): " + \
                diff_text(got, want)
    assert_storage_sound(q, folded_before)


def assert_rollups_close(q, model, what):
    """The rollups are the model's: sums within 1e-9 of the bucket's sum of magnitudes (for
    values that are not multiples of 1/4), the rest exactly."""
    for table, bucket in (("system_metrics_1m", MIN), ("system_metrics_1h", HOUR)):
        got, want = rollup_rows(q, table), expected_rollups(model, bucket)
        assert got.keys() == want.keys(), f"{what}: {table}: buckets " + diff_text(
            {kt: "present" for kt in got}, {kt: "present" for kt in want})
        scale = {}
        for k, pts in model.points.items():
            for ts, v in pts.items():
                kt = (k, floor_to(ts, bucket))
                scale[kt] = scale.get(kt, 0.0) + abs(v)
        bad = {kt: (got[kt], want[kt]) for kt in want
               if got[kt][:2] + got[kt][3:] != want[kt][:2] + want[kt][3:]
               or not close(got[kt][2], want[kt][2], scale[kt])}
        assert not bad, f"{what}: {table}: {len(bad)} buckets differ (got, expected):\n" + \
            "\n".join(f"  {kt}: {g}, {w}" for kt, (g, w) in sorted(bad.items(), key=str)[:10])


def chunk_layout(q):
    """system_metrics_chunks as Layout.days: {(Key, day): [(start_ts, end_ts, count), ...]}."""
    keys = series_keys(q)
    got = {}
    for r in q("SELECT series_id, day, start_ts, end_ts, count FROM system_metrics_chunks "
               "ORDER BY series_id, start_ts"):
        got.setdefault((keys[r["series_id"]], r["day"]), []).append(
            (r["start_ts"], r["end_ts"], r["count"]))
    return got


def assert_layout(q, layout, what):
    got = chunk_layout(q)
    assert got == layout.days, \
        f"{what}: chunks (start_ts, end_ts, count) per series and day: " + diff_text(got,
                                                                                    layout.days)


def chunk_rows(q):
    """{(series_id, day): [(rowid, start_ts, end_ts, count, data, minutes), ...] by start_ts},
    the blobs in hex: everything a compaction must leave as it is or fold."""
    out = {}
    for r in q("SELECT rowid AS id, series_id, day, start_ts, end_ts, count, hex(data) AS data, "
               "hex(minutes) AS minutes FROM system_metrics_chunks ORDER BY series_id, start_ts"):
        out.setdefault((r["series_id"], r["day"]), []).append(
            (r["id"], r["start_ts"], r["end_ts"], r["count"], r["data"], r["minutes"]))
    return out


def check_fold(before, after, horizon_lo, horizon_hi):
    """What one compaction did to the chunks (chunk_rows before and after, nothing written in
    between; its horizon somewhere in [horizon_lo, horizon_hi]): every day in more chunks than
    it needs whose chunks all end before the horizon is now in the fewest, spanning what it
    spanned; every other day is as it was, to the byte. Returns (samples, series) folded."""
    assert after.keys() == before.keys(), \
        f"days appeared or vanished: {sorted(set(after) ^ set(before))[:10]}"
    moved, series, bad = 0, set(), []
    for sd, old in sorted(before.items()):
        new, n, end = after[sd], sum(c[3] for c in old), max(c[2] for c in old)
        foldable = len(old) > fewest(n)
        if new == old:
            if foldable and end < horizon_lo:
                bad.append(f"series {sd[0]} day {sd[1]}: {len(old)} chunks of {n} samples, "
                           f"ending {end} before the horizon {horizon_lo}, were not folded")
        elif not foldable or end >= horizon_hi:
            bad.append(f"series {sd[0]} day {sd[1]} ({len(old)} chunks of {n} samples, ending "
                       f"{end}; horizon {horizon_lo}..{horizon_hi}) was rewritten")
        elif (len(new), sum(c[3] for c in new), new[0][1], new[-1][2]) != \
                (fewest(n), n, old[0][1], end):
            bad.append(f"series {sd[0]} day {sd[1]}: {len(old)} chunks {[c[1:4] for c in old]} "
                       f"were folded into {[c[1:4] for c in new]}")
        else:
            moved += n
            series.add(sd[0])
    assert not bad, f"{len(bad)} days compacted wrongly:\n" + "\n".join(bad[:10])
    return moved, len(series)


def compact_checked(q, run_cli, db, older_than, *args):
    """opsdb compact --older-than older_than, checked with check_fold; returns (samples,
    series) reported."""
    before = chunk_rows(q)
    t0 = now_ms()
    moved, nseries, cp = compact(run_cli, db, "--older-than", older_than, *args)
    t1 = now_ms()
    age = parse_dur(older_than)
    assert (moved, nseries) == check_fold(before, chunk_rows(q), t0 - age, t1 - age), cp.stdout
    return moved, nseries


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
    net_walk on 2 hosts for 2 days (2-decimal random walk every 10 s: bytes per point), net_walk
    on h02 every 2 s for the last 80 minutes (written a time slice per request: a chunk per
    slice, too many samples to join another), and extreme values on h00. No sample within 5
    minutes of gen_now - 1h, where the horizon of `compact --older-than 1h` falls."""
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
    k, v = key("net_walk", "h02", "net", dir="tx"), 500.0
    for ts in range(gen_now - 80 * MIN + rng.randrange(SEC), end, 2 * SEC):
        v = round(v + rng.randint(-50, 50) / 100, 2)
        put(k, ts, v)
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


def test_compaction_changes_no_answer(server_factory, run_cli, tmp_db):
    """Three days of metrics written a time slice per request (most days of a series then lie in
    many chunks, and minutes are split between chunks), some of them late: every answer is
    right, and the same after the compaction folded the past days; the chunks are the ones the
    contract makes of these batches, before and after."""
    gen_now = now_ms()
    base, end, model = gen_transparency_data(gen_now)
    srv = server_factory(*SERVER_ARGS)
    rng = random.Random(5)
    layout = Layout(Model())
    points = sorted_points(model)
    # held back and written last, in one shuffled request: the extremes (new chunks of their
    # own) and some of h03's disk samples (merged into their days)
    held = [p[0].metric == "extreme" or (p[0].host == "h03" and p[0].metric == "disk_usage" and
                                         rng.random() < 0.05) for p in points]
    late = [p for p, h in zip(points, held) if h]
    for batch in slices([p for p, h in zip(points, held) if not h],
                        time_slices(rng, base, end, gen_now - 80 * MIN), rng):
        ingest_http(srv, batch)
        layout.write(batch)
    rng.shuffle(late)
    ingest_http(srv, late)
    how = layout.write(late)
    assert set(how.values()) == {"new", "merged"}, f"test bug: {how}"
    assert layout.model.flat() == model.flat(), "test bug"
    assert_layout(srv.query, layout, "after ingestion")
    assert len(layout.unfolded()) > 100, "test bug: hardly a day in several chunks"

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
    assert_rollups_close(srv.query, model, "before compaction")

    # no sample lies within 5 minutes of gen_now - 1h: any horizon from there to 5 minutes later
    # folds the same days
    rows_before = chunk_rows(srv.query)
    t0 = now_ms()
    moved, nseries, cp = compact(run_cli, tmp_db, "--older-than", "1h")
    t1 = now_ms()
    assert "samples moved" in cp.stderr, f"no progress on stderr: {cp.stderr!r}"
    assert t1 - gen_now < 5 * MIN, "the compaction ended past the gap in the data"
    assert "1h" in cp.stdout
    assert (moved, nseries) == layout.fold(gen_now - HOUR), cp.stdout
    assert check_fold(rows_before, chunk_rows(srv.query), t0 - HOUR, t1 - HOUR) == \
        (moved, nseries)
    assert_layout(srv.query, layout, "after compaction")
    assert moved > total // 2, "test bug: the compaction had little to do"
    assert layout.unfolded(), "test bug: no day left in several chunks past the horizon"

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
    assert_rollups_close(srv.query, model, "after compaction")

    # system_health against the model at a time whose latest samples are all in folded days
    at = (base + 36 * HOUR + 17 * MIN)
    hosts = {(k.host, k.component) for k in model.points}
    want = {}
    for hc in hosts:
        ks = [k for k in model.points if (k.host, k.component) == hc]
        latest = {k: model.latest(k, at) for k in ks}
        if not any(latest.values()):
            continue  # h02's second net_walk starts later
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
    assert q("SELECT sum(count) AS n FROM system_metrics_chunks")[0]["n"] == total
    assert_storage_sound(q, folded_before=t0 - HOUR)

    # 2-decimal random walks every 10 s: under 2 bytes per sample for full days
    bpp = q("SELECT sum(length(c.data)) AS bytes, sum(c.count) AS n, count(*) AS chunks FROM "
            "system_metrics_chunks c JOIN system_metrics_series r ON r.id = c.series_id "
            "WHERE r.metric = 'net_walk' AND c.count = 8640")[0]
    assert bpp["chunks"] == 4, bpp
    assert bpp["bytes"] / bpp["n"] < 2.0, f"{bpp['bytes'] / bpp['n']:.2f} bytes per sample: {bpp}"


# ---- 2. late and rewritten samples -----------------------------------------------------------


def quarter(rng, lo=-200, hi=200):
    return rng.randint(lo * 4, hi * 4) / 4


def not_at_day_edges(ts):
    """Generated samples keep off the first and last 2 s of a UTC day, where tests put theirs."""
    return 2 * SEC <= ts % DAY < DAY - 2 * SEC


def test_late_samples_merge_into_cold_days(server_factory, run_cli, tmp_db):
    """Late and rewritten samples, through every ingest path, land as the contract says: a run
    that overlaps a chunk of its series is merged and its day rewritten as the fewest chunks; one
    that follows a small chunk of its day joins it; any other is a new chunk; the day's other
    chunks stay as they were; the last write of a sample wins; the rollups, the series API (whose
    cached answers must not survive) and system_health stay exact; a later compaction folds what
    the late samples left in several chunks."""
    rng = random.Random(77)
    srv = server_factory("--set", "query.max_rows=500000", "--set", "storage.compress_after=0")
    gen_now = now_ms()
    base = (gen_now - 2 * DAY) // DAY * DAY
    gen = Model()
    a, b = key("cpu_usage", "web-1", "web"), key("cpu_usage", "web-2", "web", core="0")
    c, d = key("mem_used", "db-1", "db"), key("cpu_usage", "old-1", "batch")  # d: stopped early
    horizon = gen_now - HOUR  # of `compact --older-than 1h`, give or take the 5-minute gap
    for k, start, stop in ((a, base, gen_now - 2 * MIN), (b, base + 5 * HOUR, gen_now - MIN),
                           (c, base + DAY + 3 * HOUR, gen_now - 3 * MIN),
                           (d, base, base + DAY + 7 * HOUR)):
        ts = start + rng.randrange(MIN)
        while ts < stop:
            if not horizon - 5 * MIN <= ts < horizon + 5 * MIN and not_at_day_edges(ts):
                gen.put(k, ts, quarter(rng))
            ts += rng.randint(40 * SEC, 80 * SEC)
    # a time slice per request, alternately JSON and line protocol: days in several chunks
    layout = Layout(Model())
    for i, batch in enumerate(slices(sorted_points(gen), time_slices(rng, base, gen_now,
                                                                     gen_now - 80 * MIN), rng)):
        (ingest_lp if i % 2 else ingest_http)(srv, batch)
        layout.write(batch)
    model = layout.model
    q = srv.query

    def cq(sql):  # through the CLI: no cached answer of the server in the way
        return cli_query(run_cli, tmp_db, sql)

    assert_matches_model(q, model, "after ingestion")
    assert_layout(q, layout, "after ingestion")

    # answers cached before the late writes must not survive them
    cached = dict(metric="cpu_usage", step="1h", agg="sum", resolution="1h",
                  **{"from": base // SEC, "to": gen_now // SEC})
    get_series(srv, **cached)
    health_now = gen_now // SEC
    health(srv, health_now)

    moved, nseries = compact_checked(cq, run_cli, tmp_db, "1h")
    assert now_ms() - gen_now < 5 * MIN, "the compaction ended past the gap in the data"
    assert (moved, nseries) == layout.fold(horizon)
    assert moved > 0, "test bug: nothing to fold"
    assert_matches_model(cq, model, "after compaction", folded_before=horizon)
    assert_layout(cq, layout, "after compaction")

    def day(i):
        return base // DAY + i

    def day_ts(k, i):
        return model.day_ts(k, day(i))

    def buckets_min_last(k, i):
        """A minute bucket of k in day i with 2+ samples: (ts of its min, ts of its last)."""
        groups = {}
        for ts in day_ts(k, i):
            groups.setdefault(floor_to(ts, MIN), []).append(ts)
        for _, tss in sorted(groups.items()):
            if len(tss) >= 2:
                return min(tss, key=lambda t: model.points[k][t]), max(tss)
        raise AssertionError("test bug: no minute with two samples")

    def write(via, points, want_how):
        """Writes one request and checks what became of each run it holds (want_how: what
        the test means it to be) and of every chunk: a day with a new run keeps all its chunks,
        one with a joined run all but the chunk joined, one without a run all, to the byte."""
        rows_before = chunk_rows(q)
        if via is ingest_cli:
            ingest_cli(run_cli, tmp_db, points)
            time.sleep(1.1)  # the server notices the CLI's commit within a second
        else:
            via(srv, points)
        how = layout.write(points)
        for kd, w in want_how.items():
            assert how[kd] == w, f"test bug: {kd} would be {how[kd]}, not {w}"
        assert_layout(q, layout, f"after writing {points}")
        rows, keys = chunk_rows(q), series_keys(q)
        for (sid, dy), old in rows_before.items():
            lost = set(old) - set(rows[(sid, dy)])
            w = how.get((keys[sid], dy))
            assert w == "merged" or len(lost) == (w == "joined"), \
                f"{keys[sid]} day {dy} ({w or 'not written'}) lost the chunks {lost}"

    # (a) new samples at the edges of folded days (before the first chunk, after a big one), and
    # in days without a chunk of their series: each run a new chunk beside the day's others;
    # several writes of one new ts in a new chunk
    e = key("cpu_usage", "new-1", "web")  # a new series with old samples
    edges = [(a, base + DAY - 1, 7.75), (a, base + DAY, -3.5), (a, base + DAY + 1, 0.5),
             (b, base + DAY + 1, 0.25), (c, base + 2 * HOUR, 5.0), (c, base + DAY + 2 * HOUR, 6.25),
             (e, base + 3 * HOUR, 2.5), (e, base + 5 * HOUR, 1.0), (e, base + 5 * HOUR, 2.0),
             (e, base + DAY + 3, 3.5)]
    write(ingest_http, edges, {(a, day(0)): "new", (a, day(1)): "new", (b, day(1)): "new",
                               (c, day(0)): "new", (c, day(1)): "new", (e, day(0)): "new",
                               (e, day(1)): "new"})
    assert all(len(layout.days[(k, day(1))]) >= 2 for k in (a, b, c))
    # a sample in the gap after a's big chunk of day 0: a chunk of its own; samples after the
    # small chunks of c: they join them, and c's big chunk of day 1 stays as it was
    big = layout.days[(a, day(0))][0]
    assert big[2] > HEAD_MAX and big[1] + 1 < base + DAY - 1, f"test bug: {big}"
    write(ingest_http, [(a, big[1] + 1, -0.75), (c, base + 2 * HOUR + 5, 0.5),
                        (c, base + DAY + 2 * HOUR + 1, 1.25)],
          {(a, day(0)): "new", (c, day(0)): "joined", (c, day(1)): "joined"})
    assert len(layout.days[(a, day(0))]) == 3 and len(layout.days[(c, day(1))]) == 2

    # (b) overwrites of stored samples, as line protocol: the minimum of a minute bucket becomes
    # its maximum, the last of a bucket changes, the newest sample of d (health reads it); a's
    # day 1, in two chunks since (a), is merged into one
    mn_ts, last_ts = buckets_min_last(a, 1)
    d_newest = max(model.points[d])
    write(ingest_lp, [(a, mn_ts, 999.75), (a, last_ts, -999.5), (d, d_newest, 42.25)],
          {(a, day(1)): "merged", (d, day(1)): "merged"})
    assert len(layout.days[(a, day(1))]) == 1

    # (c) several writes of one stored (series, ts) in one request, and of a ts that held no
    # sample yet: the last one wins
    dup_ts, new_ts = day_ts(b, 1)[10], day_ts(b, 1)[20] + 1
    write(ingest_http, [(b, dup_ts, 1.0), (b, new_ts, 2.0), (b, dup_ts, 3.0), (b, new_ts, 4.0),
                        (b, dup_ts, -5.25), (b, new_ts, 6.5)], {(b, day(1)): "merged"})

    # (d) one request of a's samples all over: new and rewritten, in a folded day, in today's
    # chunks, after the newest sample, and a stored ts twice
    recent = [ts for ts in sorted(model.points[a]) if ts > horizon + 5 * MIN]
    mixed = [(a, day_ts(a, 0)[3], 13.25), (a, day_ts(a, 0)[3] + 2, 14.0),
             (a, recent[0], 15.75), (a, recent[1] + 1, 16.0), (a, recent[2], 17.0),
             (a, recent[2], 18.5), (a, gen_now - 30 * SEC, 19.25),
             (a, day_ts(a, 1)[7], 20.0), (a, day_ts(a, 1)[7], 21.0)]
    rng.shuffle(mixed)
    write(ingest_http, mixed, {(a, day(0)): "merged", (a, day(1)): "merged",
                               (a, recent[0] // DAY): "merged"})

    # line protocol and the CLI merge the same way
    write(ingest_lp, [(a, day_ts(a, 0)[40], -1.5), (c, day_ts(c, 1)[5] + 3, 2.75)],
          {(a, day(0)): "merged", (c, day(1)): "merged"})
    write(ingest_cli, [(b, day_ts(b, 0)[2], 8.25), (b, day_ts(b, 0)[2] + 1, 9.5)],
          {(b, day(0)): "merged"})

    assert_matches_model(q, model, "after the late samples")
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
    # system_health: d's latest value is its rewritten newest sample
    rows = {(r["host"], r["component"]): r for r in health(srv, health_now)}
    assert rows[("old-1", "batch")]["cpu"] == 42.25
    assert rows[("old-1", "batch")]["last_seen"] == d_newest

    # a run before the day's first chunk is a chunk of its own, whatever the time of day (the
    # late writes above leave today in several chunks only late in a UTC day)
    f = key("cpu_usage", "late-1", "web")
    write(ingest_http, [(f, base + 10 * HOUR, 1.25)], {(f, day(0)): "new"})
    write(ingest_lp, [(f, base + 5 * HOUR, 2.5)], {(f, day(0)): "new"})

    # one more compaction, past every sample, folds every day the late samples left in several
    # chunks and keeps all of it
    want = layout.fold(now_ms())
    assert want[0] > 0, "test bug: nothing left to fold"
    assert compact_checked(cq, run_cli, tmp_db, "0s") == want
    time.sleep(1.1)
    assert_layout(q, layout, "after a second compaction")
    assert_matches_model(q, model, "after a second compaction", folded_before=now_ms())


def assert_read_in_order(q, model, k, at_ts):
    """The samples of k around at_ts (a chunk boundary) come back in order both ways."""
    tss, _ = model.index(k)
    i = bisect.bisect_left(tss, at_ts)
    lo, hi = tss[i - 50], tss[i + 50]
    want = [{"ts": t, "value": model.points[k][t]} for t in tss[i - 50:i + 51]]
    assert q(f"SELECT ts, value FROM system_metrics WHERE ts BETWEEN {lo} AND {hi} "
             f"ORDER BY ts") == want
    assert q(f"SELECT ts, value FROM system_metrics WHERE ts BETWEEN {lo} AND {hi} "
             f"ORDER BY ts DESC") == want[::-1]


def test_a_day_over_65536_samples(run_cli, tmp_db):
    """One series with 68,000 samples in one UTC day: a batch of 66,000 is two chunks (65536 and
    the rest), a batch of the other 2,000 a third; compaction folds the three into two; late
    samples at the edges of both merge into the day, again two chunks; rows come back in order
    both ways across the chunk boundaries."""
    rng = random.Random(65536)
    day = (now_ms() - 2 * DAY) // DAY * DAY
    k = key("cpu_usage", "dense", "x")
    gen = Model()
    for i in range(68_000):
        gen.put(k, day + i * 1270 + rng.randrange(2), quarter(rng, -20, 20))
    points = sorted_points(gen)
    layout = Layout(Model())
    for batch in (points[:66_000], points[66_000:]):
        assert len(ndjson(batch)) < CLI_BATCH_BYTES, "test bug: more than one batch"
        ingest_cli(run_cli, tmp_db, batch)
        assert layout.write(batch) == {(k, day // DAY): "new"}
    model = layout.model
    assert [c[2] for c in layout.days[(k, day // DAY)]] == [65536, 464, 2000]

    def q(sql):
        return cli_query(run_cli, tmp_db, sql)

    assert_layout(q, layout, "after ingestion")
    tss, vals = model.index(k)
    assert_read_in_order(q, model, k, tss[65536])
    assert_read_in_order(q, model, k, tss[66000])

    moved, nseries, cp = compact(run_cli, tmp_db, "--older-than", "1h", "--quiet")
    assert (moved, nseries) == layout.fold(now_ms() - HOUR) == (68_000, 1)
    assert "compact:" not in cp.stderr, f"progress despite --quiet: {cp.stderr!r}"
    assert_layout(q, layout, "after compaction")
    chunks = layout.days[(k, day // DAY)]
    assert [c[2] for c in chunks] == [65536, 2464]
    edge = chunks[0][1]
    late = [(k, edge, 0.5), (k, edge + 1, 0.75), (k, chunks[1][0], -0.25), (k, day, 1.0),
            (k, day + DAY - 1, 2.0), (k, chunks[1][1] - 1, 3.0)]
    ingest_cli(run_cli, tmp_db, late)
    assert layout.write(late) == {(k, day // DAY): "merged"}
    assert_layout(q, layout, "after the late samples")
    tss, vals = model.index(k)
    assert [c[2] for c in layout.days[(k, day // DAY)]] == [65536, len(tss) - 65536]
    got = q("SELECT ts, value FROM system_metrics ORDER BY ts")
    assert got == [{"ts": t, "value": v} for t, v in zip(tss, vals)]
    assert_read_in_order(q, model, k, edge)
    assert_read_in_order(q, model, k, tss[65536])
    assert q("SELECT ts FROM system_metrics ORDER BY ts DESC LIMIT 1") == [{"ts": tss[-1]}]
    assert_matches_model(q, model, "a day of two chunks", folded_before=now_ms())


# ---- 3. randomized rounds --------------------------------------------------------------------


def test_random_rounds_of_late_samples_and_compactions(server_factory, run_cli, tmp_db):
    rng = random.Random(31337)
    srv = server_factory(*SERVER_ARGS)
    start = now_ms() - 5 * DAY // 2
    keys = [key("cpu_usage", f"r{i}", "web" if i % 2 else "db", **({"core": str(i)} if i % 3
                                                                     else {}))
            for i in range(6)] + [key("mem_used", "r0", "db"), key("mem_used", "r9", "app")]
    model = Model()
    layout = Layout(model)
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
            layout.write(batch)
        what = f"round {rnd} (compact --older-than {horizon})"
        assert_layout(srv.query, layout, f"{what}: before the compaction")
        t0 = now_ms()
        compact_checked(srv.query, run_cli, tmp_db, horizon, "--quiet")
        layout.days = chunk_layout(srv.query)  # as check_fold found it
        assert_matches_model(srv.query, model, what, folded_before=t0 - parse_dur(horizon))
    assert srv.query("SELECT count(*) AS n FROM system_metrics_chunks")[0]["n"] > 0


def test_cli_compaction_next_to_a_busy_server(server_factory, run_cli, tmp_db):
    """opsdb compact in another process folds while the server takes recent, late and rewritten
    samples without a pause: no request fails, and afterwards the table is the model; a second
    compaction then folds exactly what the concurrent writes left in several chunks."""
    rng = random.Random(8)
    srv = server_factory(*SERVER_ARGS)
    gen_now = now_ms()
    # from midnight three days back: two whole past days older than the hour the check below
    # asks for, whatever the time of day (yesterday is not an hour old before 01:00 UTC)
    start = gen_now - gen_now % DAY - 3 * DAY
    keys = [key("cpu_usage", f"b{i // 4}", f"c{i % 4}") for i in range(120)]
    gen = Model()
    for k in keys:
        for ts in range(start + rng.randrange(MIN), gen_now - 5 * MIN, 5 * MIN):
            gen.put(k, ts, quarter(rng))
    layout = Layout(Model())
    # a time slice per request, the latest first: a chunk per slice, series and day
    for batch in reversed(slices(sorted_points(gen), time_slices(rng, start, gen_now, gen_now),
                                 rng)):
        ingest_http(srv, batch)
        layout.write(batch)
    model = layout.model
    assert_layout(srv.query, layout, "after ingestion")
    assert len(layout.unfolded(lambda k, day, ch: ch[-1][1] < gen_now - HOUR)) >= 200, \
        "test bug: little to fold"

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
    assert not sanitizer_lines(err), err[-3000:]
    m = re.search(r"compacted (\d+) samples of (\d+) series", out)
    assert m and int(m.group(1)) > 0 and int(m.group(2)) > 0, out
    assert_matches_model(srv.query, model, "after a compaction next to a busy server")
    t0 = now_ms()
    compact_checked(srv.query, run_cli, tmp_db, "30m", "--quiet")
    assert_matches_model(srv.query, model, "after a second compaction",
                         folded_before=t0 - 30 * MIN)


# ---- 4. the server compacts by itself --------------------------------------------------------


def compacted_total(srv):
    m = re.search(r"^opsdb_samples_compacted_total (\d+)$", srv.get("/metrics").text, re.M)
    assert m, "no opsdb_samples_compacted_total in /metrics"
    return int(m.group(1))


def unfolded_days(q, before_ms):
    """How many days of a series end before before_ms in more chunks than they need."""
    return q(f"SELECT count(*) AS n FROM (SELECT series_id FROM system_metrics_chunks GROUP BY "
             f"series_id, day HAVING max(end_ts) < {before_ms} AND count(*) > (sum(count) + "
             f"{CHUNK_MAX - 1}) / {CHUNK_MAX})")[0]["n"]


def test_server_compacts_by_itself(server_factory, tmp_db):
    """The server folds by itself every storage.compact_interval, a group of series at a time:
    the past days, written a chunk per request, end up in the fewest chunks while recent, late
    and rewritten samples keep coming (every answer meanwhile whole); days with a chunk newer
    than its horizon stay as they are; a day that late samples give another chunk is folded
    again in a later pass, and /metrics counts the samples folded."""
    rng = random.Random(4)
    srv = server_factory("--set", "storage.compact_interval=1s", "--set",
                         "storage.compress_after=1h", "--set", "query.max_rows=500000",
                         "--set", "query.cache_bytes=0")
    q = srv.query
    gen_now = now_ms()
    base = (gen_now - 2 * DAY) // DAY * DAY
    model = Model()
    # a few series written in the last 50 minutes only, in three requests, the latest first (a
    # run before a chunk joins none): days in several chunks that stay past the horizon for as
    # long as the test runs
    fresh = [key("cpu_usage", "fresh", f"f{i}") for i in range(5)]
    for lo in (gen_now - 18 * MIN, gen_now - 34 * MIN, gen_now - 50 * MIN):
        batch = [(k, ts, quarter(rng)) for k in fresh
                 for ts in range(lo + rng.randrange(SEC), lo + 16 * MIN, 2 * MIN)]
        ingest_http(srv, batch)
        model.put_all(batch)
    ids = {k: i for i, k in series_keys(q).items()}
    fresh_rows = {sd: r for sd, r in chunk_rows(q).items() if sd[0] in {ids[k] for k in fresh}}
    assert any(len(r) > 1 for r in fresh_rows.values()), f"test bug: {fresh_rows}"

    keys = [key("cpu_usage" if i % 2 else "mem_used", f"s{i // 10}", f"c{i % 10}")
            for i in range(300)]  # more series than one compaction step takes
    gen = Model()
    for k in keys:
        ts = base + rng.randrange(10 * MIN)
        while ts < gen_now - 2 * MIN:
            if not_at_day_edges(ts):
                gen.put(k, ts, quarter(rng))
            ts += rng.randint(20 * MIN, 40 * MIN)
    # a time slice per request, the latest first: a chunk per slice, series and day
    for batch in reversed(slices(sorted_points(gen), time_slices(rng, base, gen_now, gen_now),
                                 rng)):
        ingest_http(srv, batch)
        model.put_all(batch)
    ids = {k: i for i, k in series_keys(q).items()}
    total_before = model.count()
    sums_sql = ("SELECT metric, count(*) AS n, sum(value) AS s, min(value) AS mn, "
                "max(value) AS mx FROM system_metrics GROUP BY metric ORDER BY metric")
    horizon_slack = 2 * MIN
    checked = []  # the horizon of the last check that found every past day folded

    def late_ts(now):
        while True:
            ts = rng.randint(base, now - 2 * HOUR)
            if not_at_day_edges(ts):
                return ts

    def done():
        # ingestion goes on while the server compacts: recent, late and rewritten samples
        now = now_ms()
        batch = [(rng.choice(keys), now - rng.randrange(SEC, 10 * MIN), quarter(rng))
                 for _ in range(20)]
        batch += [(rng.choice(keys), late_ts(now), quarter(rng)) for _ in range(5)]
        for k in rng.sample(keys, 3):
            batch.append((k, rng.choice(model.index(k)[0][:50]), quarter(rng)))
        ingest_http(srv, batch)
        model.put_all(batch)
        # every answer during the compaction is whole: nothing missing, nothing twice
        n = q("SELECT count(*) AS n FROM system_metrics")[0]["n"]
        assert n == model.count(), "a query during compaction saw samples missing or twice"
        horizon = now_ms() - HOUR - horizon_slack
        if unfolded_days(q, horizon) or compacted_total(srv) == 0:
            return False
        checked.append(horizon)
        return True

    assert wait_until(done, timeout=25, interval=0.2), \
        "the server did not fold the past days within 25 s:\n" + srv.run_stderr()[-3000:]
    assert model.count() > total_before
    assert_matches_model(q, model, "after the server's compaction", folded_before=checked[-1])
    assert {sd: r for sd, r in chunk_rows(q).items() if sd in fresh_rows} == fresh_rows, \
        "the server rewrote days with chunks newer than its horizon"

    # late samples before each folded first day's first one: a chunk more in each day, which
    # the next passes fold, every sample of those days counted once more
    rows_before, metric_before = chunk_rows(q), compacted_total(srv)
    first_day = base // DAY
    late = [(k, model.day_ts(k, first_day)[0] - 1, 0.25) for k in keys[:10]]
    ingest_http(srv, late)
    model.put_all(late)
    late_days = {(ids[k], first_day) for k, _, _ in late}

    def refolded():
        rows = chunk_rows(q)
        return all(len(rows[sd]) == 1 for sd in late_days) and \
            unfolded_days(q, now_ms() - HOUR - horizon_slack) == 0

    assert wait_until(refolded, timeout=15, interval=0.2), \
        "the server did not fold the late chunks:\n" + srv.run_stderr()[-3000:]
    rows = chunk_rows(q)
    changed = {sd for sd in rows if rows[sd] != rows_before.get(sd)}
    assert late_days <= changed
    assert compacted_total(srv) - metric_before == \
        sum(c[3] for sd in changed for c in rows[sd]), "opsdb_samples_compacted_total"
    assert_matches_model(q, model, "after the server folded the late chunks",
                         folded_before=now_ms() - HOUR - horizon_slack)
    want = {}
    for k, p in model.points.items():
        w = want.setdefault(k.metric, [0, []])
        w[0] += len(p)
        w[1].extend(p.values())
    assert q(sums_sql) == [{"metric": m, "n": n, "s": math.fsum(vs), "mn": min(vs),
                            "mx": max(vs)} for m, (n, vs) in sorted(want.items())]
    assert "compaction failed" not in srv.run_stderr(), srv.run_stderr()[-3000:]


# ---- 5. a crash in the middle of a compaction ------------------------------------------------
# First of a database from before schema version 8, whose raw samples compaction moves into
# chunks; then of folding.


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


def kill_compact_after_first_step(opsdb_bin, db):
    """Starts opsdb compact --older-than 1h and kills it (SIGKILL) as soon as it reports a
    committed step that moved samples; returns what it wrote to stderr."""
    proc = subprocess.Popen([opsdb_bin, "compact", "--db", str(db), "--older-than", "1h"],
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
    return err


def test_kill9_in_the_middle_of_a_compaction(run_cli, server_factory, opsdb_bin, tmp_db):
    nseries, per_series = 1000, 1000
    bulk_load(run_cli, tmp_db, nseries, per_series, now_ms())
    want = cli_query(run_cli, tmp_db, PER_SERIES_SQL)
    assert len(want) == nseries and sum(r["n"] for r in want) == nseries * per_series

    # the CLI, killed after its first committed step (it reports progress per step)
    kill_compact_after_first_step(opsdb_bin, tmp_db)
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


MINUTES_SQL = ("SELECT series_id, sum(count) AS n, sum(sum) AS s, min(min) AS mn, max(max) AS mx "
               "FROM system_metrics_1m GROUP BY series_id ORDER BY series_id")


def test_kill9_in_the_middle_of_folding(run_cli, server_factory, opsdb_bin, tmp_path, tmp_db):
    """kill -9 of opsdb compact, then of the server, while they fold the days of 1000 series,
    each in three chunks: every day is as it was or folded, no sample is lost or doubled, the
    minute rollups agree, and a last compaction folds the rest."""
    nseries, per_chunk = 1000, 20
    base = (now_ms() - 3 * DAY) // DAY * DAY
    assert run_cli("init", "--db", tmp_db).returncode == 0
    for d in range(2):
        for part in reversed(range(3)):  # a request each, the latest first: three chunks
            path = tmp_path / f"part{d}{part}.ndjson"
            path.write_text("".join(
                f'{{"ts":{base + d * DAY + part * 8 * HOUR + j * 5 * MIN + i},"metric":'
                f'"m{i // 50}","host":"k{i % 50}","component":"c","labels":{{}},"value":'
                f'{((j * 7 + i + part) % 1000) * 0.25}}}\n'
                for i in range(nseries) for j in range(per_chunk)))
            assert path.stat().st_size < CLI_BATCH_BYTES, "test bug: more than one batch"
            cp = run_cli("ingest", "system_metrics", path, "--db", tmp_db, timeout=120)
            assert cp.returncode == 0, cp.stderr[-3000:]
    total = nseries * 2 * 3 * per_chunk

    def q(sql):
        return cli_query(run_cli, tmp_db, sql)

    want, want_minutes = q(PER_SERIES_SQL), q(MINUTES_SQL)
    assert len(want) == nseries and sum(r["n"] for r in want) == total
    assert [(r["series_id"], r["n"]) for r in want_minutes] == \
        [(r["series_id"], r["n"]) for r in want]

    def assert_whole(what, folded_before=None):
        assert sqlite3(tmp_db, "PRAGMA integrity_check;").strip() == "ok", what
        assert q(PER_SERIES_SQL) == want, f"{what}: samples lost or doubled"
        assert q(MINUTES_SQL) == want_minutes, f"{what}: the minute rollups changed"
        assert_storage_sound(q, folded_before)

    rows = chunk_rows(q)
    assert len(rows) == 2 * nseries and all(len(r) == 3 for r in rows.values())

    # the CLI, killed after its first committed step (it reports progress per step)
    kill_compact_after_first_step(opsdb_bin, tmp_db)
    after = chunk_rows(q)
    moved, _ = check_fold(rows, after, -math.inf, math.inf)  # every day as it was or folded
    assert 0 < moved < total, f"{moved} samples folded: no crash mid-way"
    assert_whole("after kill -9 of opsdb compact")

    # the server, killed while it folds by itself
    srv = server_factory("--set", "storage.compact_interval=1s", "--set",
                         "storage.compress_after=1h")

    def chunks():
        return int(sqlite3(tmp_db, "SELECT count(*) FROM system_metrics_chunks;"))

    first = chunks()
    assert wait_until(lambda: chunks() < first, timeout=20, interval=0.05), \
        "the server did not compact"
    srv.kill9()
    rows, after = after, chunk_rows(q)
    moved_by_server, _ = check_fold(rows, after, -math.inf, math.inf)
    assert moved_by_server > 0
    assert_whole("after kill -9 of the compacting server")

    # a last compaction completes and folds the rest
    moved_last, _ = compact_checked(q, run_cli, tmp_db, "1h", "--quiet")
    assert moved_last > 0 and moved + moved_by_server + moved_last == total
    assert_whole("after the last compaction", folded_before=base + 2 * DAY)


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
    """Without --older-than, opsdb compact folds the days whose chunks all end before now minus
    storage.compress_after: 2h unless set, with --set or in the environment."""
    now = now_ms()
    ages = [5 * HOUR, 3 * HOUR, 100 * MIN, 40 * MIN, 10 * MIN]
    keys = [key("cpu_usage", f"h{i}", "c") for i in range(len(ages))]
    ends = [now - age + (SEC if (now - age) % DAY < SEC else 0) for age in ages]
    layout = Layout(Model())
    # two requests, the later samples first (an earlier one joins no chunk): every series has a
    # day in two chunks
    for before in (0, SEC):
        batch = [(k, end - before, float(i)) for i, (k, end) in enumerate(zip(keys, ends))]
        ingest_cli(run_cli, tmp_db, batch)
        assert set(layout.write(batch).values()) == {"new"}

    def q(sql):
        return cli_query(run_cli, tmp_db, sql)

    assert_layout(q, layout, "after ingestion")
    assert compact(run_cli, tmp_db)[:2] == layout.fold(now - 2 * HOUR) == (4, 2)  # the default
    assert compact(run_cli, tmp_db, "--set", "storage.compress_after=90m")[:2] == \
        layout.fold(now - 90 * MIN) == (2, 1)
    assert compact(run_cli, tmp_db, env={"OPSDB_STORAGE_COMPRESS_AFTER": "30m"})[:2] == \
        layout.fold(now - 30 * MIN) == (2, 1)
    assert_layout(q, layout, "after the compactions")
    assert [len(layout.days[(k, end // DAY)]) for k, end in zip(keys, ends)] == [1, 1, 1, 1, 2]


def test_compress_after_0_means_never_for_the_cli_too(run_cli, tmp_db):
    """docs/config.md: storage.compress_after 0 = never. `opsdb compact` without --older-than
    takes its horizon from that option, so with 0 it folds nothing (rather than every day up to
    this millisecond), though a past day lies in two chunks."""
    now = now_ms()
    k = key("cpu_usage", "h", "c")
    day = (now - 2 * DAY) // DAY * DAY
    # the later sample of the past day first: the earlier one is a chunk of its own
    ingest_cli(run_cli, tmp_db, [(k, day + 2 * HOUR, 2.0), (k, now - 3 * HOUR, 1.0)])
    ingest_cli(run_cli, tmp_db, [(k, day + HOUR, 1.0), (k, now - 10 * MIN, 1.0),
                                 (k, now - SEC, 1.0)])

    def rows():
        return chunk_rows(lambda sql: cli_query(run_cli, tmp_db, sql))

    before = rows()
    assert len(before[(1, day // DAY)]) == 2, before
    cp = run_cli("compact", "--db", tmp_db, "--set", "storage.compress_after=0")
    assert cp.returncode == 0 and "storage.compress_after is 0" in cp.stdout, (cp.stdout, cp.stderr)
    assert "compacted" not in cp.stdout, cp.stdout
    assert rows() == before, f"storage.compress_after=0 (never): {cp.stdout}"
    cp = run_cli("compact", "--db", tmp_db, "--set", "storage.compress_after=0",
                 "--set", "storage.compress_events_after=0")
    assert cp.returncode == 0 and "nothing done" in cp.stdout, (cp.stdout, cp.stderr)
    assert rows() == before
    # --older-than overrides the option: there was a day to fold
    assert compact(run_cli, tmp_db, "--older-than", "1h", "--set",
                   "storage.compress_after=0")[:2] == (2, 1)
    assert len(rows()[(1, day // DAY)]) == 1


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
    """Damaged chunks (garbage, a truncated blob, a flipped byte, damaged minutes) make every
    query that reads them an error naming the series and the chunk, never a crash; what does not
    read them answers exactly; a late sample that must be merged into a damaged day is refused,
    and nothing of its request is written."""
    now = now_ms()
    base = (now - 2 * DAY) // DAY * DAY
    bad_k, good_k = key("cpu_usage", "bad", "c"), key("cpu_usage", "good", "c")
    pts = [(k, base + i * 5 * MIN + j, float(i % 17) / 4) for k in (bad_k, good_k)
           for j, i in enumerate(range(0, 2 * DAY // (5 * MIN)))]
    # two requests, the mornings and the afternoons: every day in two chunks, then folded
    ingest_cli(run_cli, tmp_db, [p for p in pts if p[1] % DAY < 12 * HOUR])
    ingest_cli(run_cli, tmp_db, [p for p in pts if p[1] % DAY >= 12 * HOUR])
    recent = [(k, max(now - 10 * MIN, now // DAY * DAY), 1.0) for k in (bad_k, good_k)]
    ingest_cli(run_cli, tmp_db, recent)  # today: in no day a compaction folds
    pts += recent
    # yesterday ended minutes ago just after midnight: a horizon of 5 minutes folds both days
    assert compact(run_cli, tmp_db, "--older-than", "5m")[:2] == (len(pts) - 2, 2)
    day0, day1 = base // DAY, base // DAY + 1
    ids = {r["host"]: r["id"] for r in cli_query(
        run_cli, tmp_db, "SELECT id, host FROM system_metrics_series")}

    def chunk_of(host, day):
        """(rowid, start_ts) of the one chunk of host's series in day."""
        rows = sqlite3(tmp_db, f"SELECT rowid, start_ts FROM system_metrics_chunks WHERE "
                               f"series_id = {ids[host]} AND day = {day};").split()
        assert len(rows) == 1, f"{host} day {day}: chunks {rows}"
        return tuple(int(x) for x in rows[0].split("|"))

    bad0, bad1, good1 = chunk_of("bad", day0), chunk_of("bad", day1), chunk_of("good", day1)
    chunk_of("good", day0)
    # three kinds of damage: garbage, a truncated blob, a flipped byte inside the payload
    sqlite3(tmp_db, f"UPDATE system_metrics_chunks SET data = X'00112233' "
                    f"WHERE rowid = {bad0[0]};")
    blob = chunk_hex(tmp_db, bad1[0])
    cut = blob[:len(blob) // 3 * 2]  # two thirds of the hex digits, an even number
    sqlite3(tmp_db, f"UPDATE system_metrics_chunks SET data = X'{cut}' WHERE rowid = {bad1[0]};")
    srv = server_factory()

    def assert_error(r, what, host, starts=None):
        """An error naming host's series, "chunk" and (starts given) one of those chunks."""
        assert 400 <= r.status_code < 600, f"{what}: {r.status_code} {r.text[:500]}"
        msg = r.json().get("error")
        assert isinstance(msg, str) and "chunk" in msg and \
            re.search(rf"series {ids[host]}\b", msg), f"{what}: {msg!r}"
        if starts:
            assert any(str(s) in msg for s in starts), f"{what}: no chunk start in {msg!r}"

    for sql in ["SELECT count(*) FROM system_metrics",
                "SELECT * FROM system_metrics WHERE host = 'bad' ORDER BY ts DESC",
                f"SELECT * FROM system_metrics_cold WHERE ts < {base + DAY}",
                "SELECT sum(value) FROM system_metrics_raw"]:
        assert_error(srv.get("/api/v1/query", params={"sql": sql}), sql, "bad",
                     (bad0[1], bad1[1]))
    cp = cli_query(run_cli, tmp_db, "SELECT count(*) FROM system_metrics", expect_ok=False)
    assert cp.returncode == 1 and "chunk" in cp.stderr, (cp.returncode, cp.stderr)
    assert re.search(rf"series {ids['bad']}\b", cp.stderr), cp.stderr
    r = srv.get("/api/v1/series", params={"metric": "cpu_usage", "from": base // SEC,
                                          "to": now // SEC, "step": "10m", "resolution": "raw"})
    assert_error(r, "series API over the corrupt chunks", "bad")
    # what does not touch the damage still answers, exactly
    good = srv.query("SELECT count(*) AS n, sum(value) AS s FROM system_metrics "
                     "WHERE host = 'good'")
    assert good == [{"n": sum(1 for p in pts if p[0] == good_k),
                     "s": math.fsum(p[2] for p in pts if p[0] == good_k)}]
    # a late sample that must be merged into a damaged day is refused, with a message, and
    # nothing of its request is written
    r = srv.ingest("system_metrics", [json_row(bad_k, base + 7, 1.0),
                                      json_row(good_k, base + 7, 1.0)])
    assert_error(r, "ingest into a corrupt day", "bad")
    r = srv.ingest("system_metrics", [json_row(good_k, base + 9, 2.0)])
    assert r.status_code == 200, r.text
    assert srv.query(f"SELECT ts, value FROM system_metrics WHERE host = 'good' AND "
                     f"ts < {base + 60 * SEC} ORDER BY ts") == \
        [{"ts": base, "value": 0.0}, {"ts": base + 9, "value": 2.0}]
    assert srv.get("/healthz").status_code == 200
    # a byte flipped inside the compressed payload of a good chunk: its checksum catches it
    blob = bytearray.fromhex(chunk_hex(tmp_db, good1[0]))
    blob[len(blob) - 6] ^= 0x5A
    sqlite3(tmp_db, f"UPDATE system_metrics_chunks SET data = X'{blob.hex()}' "
                    f"WHERE rowid = {good1[0]};")
    time.sleep(1.1)
    assert_error(srv.get("/api/v1/query", params={
        "sql": "SELECT count(*), sum(value) FROM system_metrics WHERE host = 'good'"}),
        "a flipped byte", "good", (good1[1],))
    # damaged minutes of good's first day: the minute rollup and what answers from it are
    # errors, its samples still read
    good0 = chunk_of("good", day0)
    sqlite3(tmp_db, f"UPDATE system_metrics_chunks SET minutes = X'8F4D0011' "
                    f"WHERE rowid = {good0[0]};")
    time.sleep(1.1)
    assert_error(srv.get("/api/v1/query", params={
        "sql": f"SELECT * FROM system_metrics_1m WHERE series_id = {ids['good']}"}),
        "damaged minutes", "good", (good0[1],))
    r = srv.get("/api/v1/series", params={"metric": "cpu_usage", "filter": "host=good",
                                          "from": base // SEC, "to": (base + DAY) // SEC,
                                          "step": "10m", "resolution": "1m"})
    assert_error(r, "series API from damaged minutes", "good")
    assert srv.query(f"SELECT count(*) AS n FROM system_metrics WHERE host = 'good' AND "
                     f"ts < {base + DAY}") == \
        [{"n": sum(1 for p in pts if p[0] == good_k and p[1] < base + DAY) + 1}]
    assert srv.get("/healthz").status_code == 200


def test_one_corrupt_chunk_does_not_stop_compaction_of_the_others(server_factory, run_cli,
                                                                   tmp_db):
    """A damaged chunk is one series' problem: opsdb compact and the server fold the days of
    every other series (one bad blob must not leave them in ever more chunks), report the failure
    naming the series and the chunk, and count as compacted only what they committed (not a day
    of the damaged series folded before the damage was met and rolled back)."""
    now = now_ms()
    base = (now - 3 * DAY) // DAY * DAY
    keys = [key("cpu_usage", f"z{i}", "c") for i in range(4)]

    def write_day(start):
        """Midnight to 20:00 in four requests of five hours, the latest first (a run before a
        chunk joins none): four chunks per series."""
        for part in reversed(range(4)):
            ingest_cli(run_cli, tmp_db, [(k, start + part * 5 * HOUR + i * 10 * MIN, 1.0 + i % 4)
                                         for k in keys for i in range(30)])

    def q(sql):
        return cli_query(run_cli, tmp_db, sql)

    def of_z1(rows, z1=True):
        return {sd: r for sd, r in rows.items() if (sd[0] == ids["z1"]) == z1}

    write_day(base)
    write_day(base + DAY)
    ids = {r["host"]: r["id"] for r in q("SELECT id, host FROM system_metrics_series")}
    day1 = base // DAY + 1
    before = chunk_rows(q)
    assert len(before) == 8 and all(len(r) == 4 for r in before.values())
    # the second day of z1 is damaged; its first day, folded before the damage is met, is
    # rolled back with it or kept, but not counted unless kept
    victim = before[(ids["z1"], day1)][1]
    sqlite3(tmp_db, f"UPDATE system_metrics_chunks SET data = X'00112233' "
                    f"WHERE rowid = {victim[0]};")
    before = chunk_rows(q)

    # the CLI meets the damage: an error naming the series and the chunk; the others folded
    t0 = now_ms()
    cp = run_cli("compact", "--db", tmp_db, "--older-than", "1h")
    assert cp.returncode == 1 and "chunk" in cp.stderr, (cp.returncode, cp.stdout, cp.stderr)
    assert re.search(rf"series {ids['z1']}\b", cp.stderr), cp.stderr
    after = chunk_rows(q)
    assert check_fold(of_z1(before, False), of_z1(after, False), t0 - HOUR,
                      now_ms() - HOUR) == (3 * 240, 3)
    check_fold(of_z1(before), of_z1(after), -math.inf, math.inf)
    assert after[(ids["z1"], day1)] == before[(ids["z1"], day1)]

    # the server meets it in every pass, and folds the others' next day
    write_day(base + 2 * DAY)
    before = chunk_rows(q)
    srv = server_factory("--set", "storage.compact_interval=1s", "--set",
                         "storage.compress_after=1h", "--set", "query.cache_bytes=0")

    def folded():
        rows = chunk_rows(srv.query)
        return "compaction failed" in srv.run_stderr() and \
            all(len(rows[(ids[h], day1 + 1)]) == 1 for h in ("z0", "z2", "z3"))

    assert wait_until(folded, timeout=10, interval=0.25), srv.run_stderr()[-2000:]
    time.sleep(2.5)  # two passes more, each meeting the damage again
    log = srv.run_stderr()
    assert re.search(rf"compaction failed.*chunk.*series {ids['z1']}\b", log), log[-2000:]
    after = chunk_rows(srv.query)
    assert after[(ids["z1"], day1)] == before[(ids["z1"], day1)]
    moved = check_fold(of_z1(before, False), of_z1(after, False), base + 2 * DAY + 21 * HOUR,
                       math.inf)[0]
    assert moved == 3 * 120
    moved += check_fold(of_z1(before), of_z1(after), -math.inf, math.inf)[0]
    metric = compacted_total(srv)
    assert metric == moved, \
        f"opsdb_samples_compacted_total is {metric}, but the server folded {moved} samples"


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
