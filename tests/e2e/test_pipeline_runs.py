"""The per-run rollup of pipeline_status, pipeline_status_runs: one row per (pipeline, run_id)
with the first and last ts of the run's rows, their count, whether any failed or succeeded,
min(started_at), max(finished_at) and max(duration_ms), kept from each batch's rows in the
write transaction. It must always equal what grouping the stored rows by run gives: the runs
come in pieces, late, across midnight (two partitions) and into packed partitions. Schema
version 9 backfills it; retention drops a run's row only once its raw rows are all gone.

The data: runs of a few rows to a few dozen minutes, some lasting hours across midnight or
days, a run_id reused by two pipelines, rows at the same ts, missing started_at/finished_at/
duration_ms, and rows sent in shuffled requests of random sizes.
"""

import json
import random
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

STATUSES = ["queued", "running", "succeeded", "failed", "skipped", "cancelled"]


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


def test_late_rows_and_packed_partitions(loaded, run_cli):
    """Late rows into packed partitions (which unpacks them) and new runs' pieces: the rollup
    stays exact."""
    srv, rows, rng = loaded
    srv.stop()
    cp = run_cli("compact", "--db", srv.db, "--older-than", "1h")
    assert cp.returncode == 0, cp.stderr
    assert "packed" in cp.stdout
    srv.restart()
    late = gen_runs(rng, n_runs=150)
    # and more rows of runs already stored, before and after their rows
    for r in rng.sample(rows, 100):
        extra = dict(r, ts=r["ts"] + rng.randint(-2 * HOUR, 2 * HOUR), status=rng.choice(STATUSES))
        extra["ts"] = min(max(extra["ts"], START), END)
        late.append(extra)
    send_shuffled(srv, rng, late)
    check_rollup(srv)


def sqlite3(db, sql):
    cp = subprocess.run(["sqlite3", "-batch", "-bail", str(db)], input=sql, text=True,
                        capture_output=True, timeout=60)
    assert cp.returncode == 0, f"sqlite3 {sql!r}: {cp.stderr}"
    return cp.stdout


def cli_rows(run_cli, db, sql):
    cp = run_cli("query", sql, "--db", db, "--format", "json")
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


def test_retention_keeps_runs_while_raw_rows_stay(run_cli, tmp_path):
    """Per-run rows follow storage.rollup_1h_retention but stay while any raw row of their run
    is held: with a shorter rollup policy than the raw one, exactly the runs whose rows are all
    dropped go; with a longer one, runs older than the raw rows stay."""
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

    # raw rows kept 2 days, hourly rollups 4: runs of days 2..4 stay without their rows
    cp = run_cli("retention", "apply", "--db", db, "--set", "retention.pipeline_status=2d",
                 "--set", "storage.rollup_1h_retention=4d")
    assert cp.returncode == 0, cp.stderr
    kept = cli_rows(run_cli, db, RUNS_STORED)
    assert all(r["last_ts"] >= clock - 4 * DAY for r in kept)
    assert any(r["last_ts"] < clock - 3 * DAY for r in kept)  # no raw row of these is left
    assert [r for r in before if r["last_ts"] >= clock - 4 * DAY + 10 * MIN] == \
        [r for r in kept if r["last_ts"] >= clock - 4 * DAY + 10 * MIN]
