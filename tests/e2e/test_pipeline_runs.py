"""The per-run rollup of pipeline_status and pipeline_health, which reads it.

pipeline_status_runs holds one row per (pipeline, run_id) — first and last ts of the run's rows,
their count, whether any failed or succeeded, min(started_at), max(finished_at),
max(duration_ms) — kept from each batch's rows in the write transaction; it must always equal
what grouping the stored rows by run gives. Schema version 9 backfills it; retention drops a
run's row only once its raw rows are all gone.

pipeline_health takes the runs wholly inside its window from the rollup and those that
straddle an edge of the window from their raw rows. Its answer must be exactly what the view
computed before the rollup existed, which grouped every row of the window by run: that SQL is
kept here (REFERENCE) and run over the raw rows through the SQL route for each window, and the
two answers must be equal to the last digit.

The data: runs of a few rows to a few dozen minutes, some lasting hours across midnight (the
partitions' edge) or longer than the windows, a run_id reused by two pipelines, rows at the same
ts, missing started_at/finished_at/duration_ms, and rows sent in shuffled requests of random
sizes, so runs arrive in pieces and late. The windows: random ends and lengths from 1 ms to
four days, ends and starts exactly on rows, and the default (24 h).
"""

import json
import random
import re
import subprocess
import shutil

import pytest

from conftest import now_ms
from test_migration import CURRENT_VERSION
from test_views import post_ndjson

SEED = 20261129
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
# the data lies in [START, END): days before the clock, so that partitions past and present
# (and, once packed, both kinds) hold it; the views take `now` as a parameter
END = (now_ms() // MIN) * MIN - HOUR
START = END - 4 * DAY

# The view as it was before the rollup (schema version 8): every row of the window grouped by
# run. opsdb_now_ms() and the window are put in as numbers for each window.
REFERENCE = """
WITH runs AS ( SELECT pipeline, run_id, max(ts) AS ts,  max(status = 'failed') AS failed,
 max(status = 'succeeded') AS succeeded,
 coalesce(max(finished_at) - min(started_at), max(duration_ms)) AS duration_ms
 FROM pipeline_status WHERE ts > opsdb_now_ms() - opsdb_param('window_ms', 86400000)
 AND ts <= opsdb_now_ms() GROUP BY pipeline, run_id)
SELECT r.pipeline,
 (SELECT p.status FROM pipeline_status p WHERE p.pipeline = r.pipeline AND p.ts <= opsdb_now_ms()
  ORDER BY p.ts DESC LIMIT 1) AS last_status,
 (SELECT p.ts FROM pipeline_status p WHERE p.pipeline = r.pipeline AND p.ts <= opsdb_now_ms()
  AND p.status = 'succeeded' ORDER BY p.ts DESC LIMIT 1) AS last_success,
 count(*) AS runs, sum(r.failed) AS failed_runs,
 round(1.0 * sum(r.succeeded AND NOT r.failed) / nullif(sum(r.succeeded OR r.failed), 0), 6)
  AS success_rate,
 round(avg(CASE WHEN r.succeeded OR r.failed THEN r.duration_ms END), 1) AS mean_duration_ms,
 opsdb_now_ms() - (SELECT p.ts FROM pipeline_status p WHERE p.pipeline = r.pipeline
  AND p.ts <= opsdb_now_ms() AND p.status = 'succeeded' ORDER BY p.ts DESC LIMIT 1)
  AS freshness_ms
FROM runs r GROUP BY r.pipeline
"""

# what the rollup must hold, from the raw rows
RUNS_FROM_ROWS = """
SELECT pipeline, run_id, min(ts) AS first_ts, max(ts) AS last_ts, count(*) AS rows,
 max(status = 'failed') AS failed, max(status = 'succeeded') AS succeeded,
 min(started_at) AS started_at_min, max(finished_at) AS finished_at_max,
 max(duration_ms) AS duration_ms_max
FROM pipeline_status GROUP BY pipeline, run_id ORDER BY pipeline, run_id
"""
RUNS_STORED = ("SELECT pipeline, run_id, first_ts, last_ts, rows, failed, succeeded, "
               "started_at_min, finished_at_max, duration_ms_max FROM pipeline_status_runs "
               "ORDER BY pipeline, run_id")
SPAN = "SELECT value FROM opsdb_meta WHERE key = 'pipeline_status_runs.max_span_ms'"

COLUMNS = ["pipeline", "last_status", "last_success", "runs", "failed_runs", "success_rate",
           "mean_duration_ms", "freshness_ms"]
STATUSES = ["queued", "running", "succeeded", "failed", "skipped", "cancelled"]


def reference_sql(now, window_ms=DAY):
    return (REFERENCE.replace("opsdb_param('window_ms', 86400000)", str(window_ms))
            .replace("opsdb_now_ms()", str(now)))


def gen_runs(rng, start=START, end=END, n_runs=700):
    """State changes of n_runs runs of five pipelines starting in [start, end), none after end
    (ingestion refuses rows in the future)."""
    rows = []
    lengths = [lambda: 0, lambda: rng.randint(1, 5 * MIN), lambda: rng.randint(5 * MIN, HOUR),
               lambda: rng.randint(HOUR, 14 * HOUR), lambda: rng.randint(DAY, 2 * DAY)]
    for k in range(n_runs):
        pipeline = f"pipe{rng.randrange(5)}"
        run_id = f"{pipeline}-{k}" if k % 97 else "shared-run-id"  # one id in two pipelines
        first = rng.randrange(start, end)
        if rng.random() < 0.3:
            first -= first % 1000  # on a whole second: windows end exactly there too
        length = rng.choices(lengths, weights=[5, 40, 40, 12, 3])[0]()
        n = rng.randint(1, 8)
        times = sorted(min(t, end) for t in [first, first + length] + [
            first + rng.randint(0, length) for _ in range(max(0, n - 2))])[:n]
        for i, ts in enumerate(times):
            status = "queued" if i == 0 and n > 1 else rng.choice(STATUSES)
            row = {"ts": ts, "pipeline": pipeline, "run_id": run_id,
                   "stage": rng.choice(["", "extract", "load"]), "status": status}
            if rng.random() < 0.7:
                row["started_at"] = first + rng.randint(-1000, 1000)
            if status in ("succeeded", "failed", "cancelled") and rng.random() < 0.8:
                row["finished_at"] = ts
            if rng.random() < 0.5:
                row["duration_ms"] = rng.randint(0, 10 * HOUR)
            rows.append(row)
    return rows


def send_shuffled(srv, rng, rows):
    """Rows in random order and requests of random sizes: a run comes in pieces, some late."""
    rows = rows[:]
    rng.shuffle(rows)
    i = 0
    while i < len(rows):
        n = rng.choice([1, 3, 20, 150])
        post_ndjson(srv, "pipeline_status", rows[i:i + n])
        i += n


def windows(rng, rows, n=60):
    """(now_ms, window_ms or None) pairs: random, and with an edge exactly on a row."""
    out = [(END, None), (END, 30 * DAY), (START + DAY, None)]
    scales = [(1, HOUR), (HOUR, DAY), (DAY, 4 * DAY)]
    for _ in range(n):
        lo, hi = rng.choice(scales)
        window = rng.randint(lo, hi)
        kind = rng.random()
        if kind < 0.4:
            now = rng.randint(START - HOUR, END + HOUR)
        elif kind < 0.7:
            now = rng.choice(rows)["ts"]  # a row exactly at now: inside
        else:
            now = rng.choice(rows)["ts"] + window  # a row exactly at now - window: outside
        out.append((now, window))
    return out


def view_params(now, window):
    params = {"now": f"{now // 1000}.{now % 1000:03d}"}
    if window is not None:
        params["window"] = f"{window}ms"
    return params


def check_windows(srv, wins):
    for now, window in wins:
        r = srv.get("/api/v1/views/pipeline_health", params=view_params(now, window))
        assert r.status_code == 200, r.text
        assert r.json()["columns"] == COLUMNS
        got = r.json()["rows"]
        want = srv.query(reference_sql(now, window if window is not None else DAY))
        assert got == want, f"now={now} window={window}:\n view {got}\n reference {want}"


def check_rollup(srv):
    stored, derived = srv.query(RUNS_STORED), srv.query(RUNS_FROM_ROWS)
    assert stored == derived
    assert srv.scalar(SPAN) == max(r["last_ts"] - r["first_ts"] for r in stored)


@pytest.fixture(scope="module")
def loaded(module_server_factory):
    rng = random.Random(SEED)
    rows = gen_runs(rng)
    srv = module_server_factory("--set", "storage.compress_events_after=0")
    send_shuffled(srv, rng, rows)
    return srv, rows, rng


def test_rollup_holds_each_run(loaded):
    srv, rows, _ = loaded
    check_rollup(srv)
    assert srv.count("pipeline_status_runs") == len({(r["pipeline"], r["run_id"]) for r in rows})
    # midnight: some runs have rows in two partitions, folded from each
    spans_midnight = [r for r in srv.query(RUNS_STORED)
                      if r["first_ts"] // DAY != r["last_ts"] // DAY]
    assert len(spans_midnight) > 10


def test_view_equals_reference(loaded):
    srv, rows, rng = loaded
    check_windows(srv, windows(rng, rows))


def test_late_rows_and_packed_partitions(loaded, run_cli):
    """Packed partitions (the view's raw reads go through their blocks), then late rows into
    them and new runs' pieces: the rollup and the view stay exact."""
    srv, rows, rng = loaded
    srv.stop()
    cp = run_cli("compact", "--db", srv.db, "--older-than", "1h")
    assert cp.returncode == 0, cp.stderr
    assert "packed" in cp.stdout
    srv.restart()
    check_windows(srv, windows(rng, rows, 25))
    late = gen_runs(rng, n_runs=150)
    # and more rows of runs already stored, before and after their rows
    for r in rng.sample(rows, 100):
        extra = dict(r, ts=r["ts"] + rng.randint(-2 * HOUR, 2 * HOUR), status=rng.choice(STATUSES))
        extra["ts"] = min(max(extra["ts"], START), END)
        late.append(extra)
    send_shuffled(srv, rng, late)
    rows = rows + late
    check_rollup(srv)
    check_windows(srv, windows(rng, rows, 40))


def plan(srv, sql):
    r = srv.get("/api/v1/query", params={"sql": "EXPLAIN QUERY PLAN " + sql})
    assert r.status_code == 200, r.text
    return [row["detail"] for row in r.json()["rows"]]


def test_plan_reads_the_rollup_by_time(loaded):
    """The view picks runs by a range of the rollup's primary key (first_ts, ...); it reads raw
    rows only in ts ranges bounded on both sides (the straddling runs), and per pipeline for
    the latest row (as before)."""
    srv, _, _ = loaded
    lines = plan(srv, "SELECT * FROM pipeline_health")
    text = "\n".join(lines)
    assert re.search(r"^SEARCH pr USING PRIMARY KEY \(first_ts>\? AND first_ts<\?\)$", text,
                     re.M), text
    assert not re.search(r"SCAN pr\b", text), text
    raw = [line.split(":", 1)[1] for line in lines if line.startswith("SCAN p VIRTUAL TABLE")]
    ranges = [c for c in raw if "pipeline=" not in c]
    assert len(ranges) == 2 and len(raw) == 5, lines
    assert all(re.search(r"ts>=?,", c) and re.search(r"ts<=,", c) for c in ranges), ranges


def sqlite3(db, sql):
    cp = subprocess.run(["sqlite3", "-batch", "-bail", str(db)], input=sql, text=True,
                        capture_output=True, timeout=60)
    assert cp.returncode == 0, f"sqlite3 {sql!r}: {cp.stderr}"
    return cp.stdout


def cli_rows(run_cli, db, sql):
    cp = run_cli("query", sql, "--db", db, "--format", "json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)["rows"]


def view_cli(run_cli, db, now, window):
    cp = run_cli("view", "pipeline_health", "--db", db, "--now", view_params(now, window)["now"],
                 "--window", f"{window}ms", "--format", "json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)["rows"]


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="needs the sqlite3 shell")
def test_migration_backfills_runs(run_cli, tmp_path):
    """Schema version 9 added the rollup: a version-8 database (rows, no rollup, no span) is
    migrated and its backfilled rollup equals the one ingestion kept batch by batch."""
    rng = random.Random(SEED + 1)
    rows = gen_runs(rng, n_runs=200)
    rng.shuffle(rows)
    db = tmp_path / "v8.db"
    for i in range(0, len(rows), 97):
        cp = run_cli("ingest", "pipeline_status", "-", "--db", db,
                     input="".join(json.dumps(r) + "\n" for r in rows[i:i + 97]))
        assert cp.returncode == 0, cp.stderr
    incremental = cli_rows(run_cli, db, RUNS_STORED)
    span = cli_rows(run_cli, db, SPAN)
    assert incremental and span
    sqlite3(db, "DROP TABLE pipeline_status_runs; DELETE FROM opsdb_meta WHERE key = "
                "'pipeline_status_runs.max_span_ms'; DELETE FROM opsdb_migrations WHERE "
                "version = 9; PRAGMA user_version = 8;")
    cp = run_cli("init", "--db", db)
    assert cp.returncode == 0, cp.stderr
    assert f"from schema version 8 to {CURRENT_VERSION}" in cp.stderr, cp.stderr
    assert "migration to schema version 9" in cp.stderr, cp.stderr
    assert cli_rows(run_cli, db, RUNS_STORED) == incremental
    assert cli_rows(run_cli, db, SPAN) == span
    for now, window in windows(rng, rows, 10):
        window = window or DAY
        assert view_cli(run_cli, db, now, window) == \
            cli_rows(run_cli, db, reference_sql(now, window)), (now, window)


def test_retention_keeps_runs_while_raw_rows_stay(run_cli, tmp_path):
    """Per-run rows follow storage.rollup_1h_retention but stay while any raw row of their run
    is held: with a shorter rollup policy than the raw one, exactly the runs whose rows are all
    dropped go, and the view stays exact for every window inside raw retention. With a longer
    one, runs older than the raw rows stay and answer windows the raw rows no longer reach."""
    rng = random.Random(SEED + 2)
    clock = now_ms()
    rows = gen_runs(rng, start=clock - 9 * DAY, end=clock - HOUR, n_runs=300)
    db = tmp_path / "ret.db"
    cp = run_cli("ingest", "pipeline_status", "-", "--db", db,
                 input="".join(json.dumps(r) + "\n" for r in rows))
    assert cp.returncode == 0, cp.stderr
    before = cli_rows(run_cli, db, RUNS_STORED)

    # raw rows kept 5 days, hourly rollups 2: the runs with raw rows left all stay
    cp = run_cli("retention", "apply", "--db", db, "--set", "retention.pipeline_status=5d",
                 "--set", "storage.rollup_1h_retention=2d")
    assert cp.returncode == 0, cp.stderr
    until = cli_rows(run_cli, db, "SELECT value FROM opsdb_meta WHERE key = "
                                  "'pipeline_status.dropped_until'")[0]["value"]
    assert clock - 6 * DAY <= until <= clock - 5 * DAY
    kept = cli_rows(run_cli, db, RUNS_STORED)
    assert kept == [r for r in before if r["last_ts"] >= until]
    assert len(kept) < len(before)
    with_rows = cli_rows(run_cli, db, "SELECT DISTINCT pipeline, run_id FROM pipeline_status")
    assert {(r["pipeline"], r["run_id"]) for r in kept} == \
        {(r["pipeline"], r["run_id"]) for r in with_rows}
    for _ in range(12):
        window = rng.randint(MIN, 4 * DAY)
        now = rng.randint(until + window, clock)
        assert view_cli(run_cli, db, now, window) == \
            cli_rows(run_cli, db, reference_sql(now, window)), (now, window)

    # raw rows kept 2 days, hourly rollups 4: runs of days 2..4 stay without their rows
    cp = run_cli("retention", "apply", "--db", db, "--set", "retention.pipeline_status=2d",
                 "--set", "storage.rollup_1h_retention=4d")
    assert cp.returncode == 0, cp.stderr
    kept = cli_rows(run_cli, db, RUNS_STORED)
    assert all(r["last_ts"] >= clock - 4 * DAY for r in kept)
    assert any(r["last_ts"] < clock - 3 * DAY for r in kept)  # no raw row of these is left
    assert [r for r in before if r["last_ts"] >= clock - 4 * DAY + 10 * MIN] == \
        [r for r in kept if r["last_ts"] >= clock - 4 * DAY + 10 * MIN]
    # a window over dropped raw rows: the runs wholly inside it come from the rollup
    now, window = clock - 3 * DAY, 12 * HOUR
    assert cli_rows(run_cli, db, reference_sql(now, window)) == []
    inside = [r for r in before if now - window < r["first_ts"] and r["last_ts"] <= now]
    assert sum(r["runs"] for r in view_cli(run_cli, db, now, window)) == len(inside) > 0
