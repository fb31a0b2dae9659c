"""Schema version 1 -> now, a real forward migration: version 2 added the system_metrics rollups
and backfills the hourly ones from the raw samples; version 8 moves the raw samples (a row each in
system_metrics_samples) into chunks, whose rows carry the minute rollups. A database that has raw
samples and no rollups (version 1) migrates under this opsdb, and the rollups it ends with equal
the ones that ingestion maintains incrementally — out-of-order, late and rewritten samples
included."""

import json
import random
import subprocess

from conftest import now_ms
from test_migration import CURRENT_VERSION

TABLES = ("system_metrics_1m", "system_metrics_1h")


def sqlite3(db, sql):
    return subprocess.run(["sqlite3", str(db)], input=sql, capture_output=True, text=True,
                          check=True).stdout


def rollups(run_cli, db):
    out = {}
    for t in TABLES:
        cp = run_cli("query", f"SELECT * FROM {t} ORDER BY series_id, ts", "--db", db,
                     "--format", "json")
        assert cp.returncode == 0, cp.stderr
        out[t] = json.loads(cp.stdout)["rows"]
    return out


def same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], float) or isinstance(y[k], float):
                assert abs(x[k] - y[k]) <= 1e-9 * max(1.0, abs(x[k])), (k, x, y)
            else:
                assert x[k] == y[k], (k, x, y)


def test_version_1_database_gets_rollups_backfilled(run_cli, tmp_path):
    db = tmp_path / "v1.db"
    rng = random.Random(7)
    base = now_ms() - 3 * 3600 * 1000
    rows = []
    for _ in range(3000):
        rows.append({"ts": base + rng.randrange(0, 3 * 3600 * 1000), "metric": "cpu_usage",
                     "host": f"h{rng.randrange(4)}", "value": round(rng.uniform(0, 100), 3)})
    rows += [dict(r, value=r["value"] + 1) for r in rows[:200]]  # rewritten samples
    for start in range(0, len(rows), 700):  # several requests, out of time order
        cp = run_cli("ingest", "system_metrics", "-", "--db", db,
                     input="".join(json.dumps(r) + "\n" for r in rows[start:start + 700]))
        assert cp.returncode == 0, cp.stderr
    incremental = rollups(run_cli, db)
    assert sum(r["count"] for r in incremental["system_metrics_1h"]) == 3000 - sum(
        1 for i, r in enumerate(rows[:3000]) if any(
            (o["ts"], o["host"]) == (r["ts"], r["host"]) for o in rows[:i]))

    cp = run_cli("query", "SELECT series_id, ts, value FROM system_metrics_raw", "--db", db,
                 "--format", "json")
    assert cp.returncode == 0, cp.stderr
    samples = json.loads(cp.stdout)["rows"]
    assert len(samples) == sum(r["count"] for r in incremental["system_metrics_1h"])
    # back to version 1's layout: samples a row each, no chunks, no rollups. The minutes are a
    # virtual table whose module the sqlite3 shell lacks, so its schema row goes directly.
    sqlite3(db, "PRAGMA writable_schema = ON;"
                "DELETE FROM sqlite_schema WHERE name = 'system_metrics_1m';"
                "PRAGMA writable_schema = OFF;")
    sqlite3(db, "DELETE FROM system_metrics_chunks; DROP TABLE system_metrics_1h;" +
            "".join(f"INSERT INTO system_metrics_samples VALUES ({r['series_id']}, {r['ts']}, "
                    f"{r['value']!r});" for r in samples) +
            "DELETE FROM opsdb_migrations WHERE version >= 2; PRAGMA user_version = 1;")
    cp = run_cli("init", "--db", db)
    assert cp.returncode == 0, cp.stderr
    assert f"from schema version 1 to {CURRENT_VERSION}" in cp.stderr, cp.stderr
    assert sqlite3(db, "PRAGMA user_version;").strip() == str(CURRENT_VERSION)
    assert sqlite3(db, "SELECT count(*) FROM system_metrics_samples;").strip() == "0"
    assert int(sqlite3(db, "SELECT sum(count) FROM system_metrics_chunks;")) == len(samples)
    backfilled = rollups(run_cli, db)
    for t in TABLES:
        same(backfilled[t], incremental[t])
