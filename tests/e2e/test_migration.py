"""Schema migration: an older database is brought forward by `opsdb init` and by `opsdb serve`
without losing rows; a database from a newer opsdb is refused; the journal is WAL.

The "older schema" is made with the sqlite3 command-line shell (Debian package sqlite3): a plain
api_usage table without the column count (added later), without indexes, partitions and every
other table, holding rows, at user_version 0. Migration adds the column, moves the rows into day
partitions behind the virtual table, and creates the rest.
"""

import json
import shutil
import subprocess
import time

import pytest

NOW_MS = (int(time.time()) - 600) * 1000
CURRENT_VERSION = 17  # src/core/schema.c SCHEMA_VERSION
VIEWS = ["system_health", "api_performance", "error_summary", "pipeline_health",
         "handler_performance", "active_alerts", "alert_quality", "job_status",
         "collection_status"]

pytestmark = pytest.mark.skipif(shutil.which("sqlite3") is None,
                                reason="needs the sqlite3 shell (apt-get install sqlite3)")


def sqlite3(db, sql):
    cp = subprocess.run(["sqlite3", "-batch", "-bail", str(db)], input=sql, text=True,
                        capture_output=True, timeout=60)
    assert cp.returncode == 0, f"sqlite3 {sql!r}: {cp.stderr}"
    return cp.stdout


def sqlite3_rows(db, sql):
    out = sqlite3(db, ".mode json\n" + sql + ";\n").strip()
    return json.loads(out) if out else []


def rows(n):
    return "".join(json.dumps({"ts": NOW_MS - i * 1000, "service": f"s{i % 3}", "method": "GET",
                               "endpoint": f"/m/{i}", "status_code": 200 + i % 3,
                               "latency_ms": float(i), "count": 4}) + "\n" for i in range(n))


OLD_API_USAGE = ("ts INTEGER NOT NULL, service TEXT NOT NULL DEFAULT '', method TEXT NOT NULL, "
                 "endpoint TEXT NOT NULL, status_code INTEGER NOT NULL, latency_ms REAL, "
                 "request_bytes INTEGER, response_bytes INTEGER, client_id TEXT, "
                 "host TEXT NOT NULL DEFAULT ''")


def make_old(db, run_cli):
    """A database at 'schema version 0': api_usage as a plain table without the column count,
    without indexes and partitions, holding 25 rows; nothing else."""
    inserts = "".join(
        f"INSERT INTO api_usage (ts, service, method, endpoint, status_code, latency_ms) VALUES "
        f"({r['ts']}, '{r['service']}', 'GET', '{r['endpoint']}', {r['status_code']}, "
        f"{r['latency_ms']});\n"
        for r in map(json.loads, rows(25).splitlines()))
    sqlite3(db, f"PRAGMA journal_mode=WAL;\nCREATE TABLE api_usage ({OLD_API_USAGE});\n"
                f"{inserts}PRAGMA user_version=0;\n")
    before = sqlite3_rows(db, "SELECT * FROM api_usage ORDER BY rowid")
    assert len(before) == 25
    return before


def opsdb_rows(run_cli, db, sql):
    cp = run_cli("query", sql, "--db", db, "--format", "json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)["rows"]


def check_migrated(db, before, run_cli):
    assert sqlite3(db, "PRAGMA user_version;").strip() == str(CURRENT_VERSION)
    names = {r["name"]: r["type"] for r in sqlite3_rows(db, "SELECT name, type FROM sqlite_schema")}
    assert names.get("job_runs") == "table"
    for v in VIEWS:
        assert names.get(v) == "view", v
    # the rows moved into day partitions, each with the table's columns and indexes
    parts = [r["name"] for r in sqlite3_rows(
        db, "SELECT name FROM opsdb_partitions WHERE table_name = 'api_usage'")]
    assert parts and all(p.startswith("api_usage_p") for p in parts), parts
    for part in parts:
        info = {r["name"]: r for r in sqlite3_rows(db, f"SELECT * FROM pragma_table_info('{part}')")}
        assert info["count"]["notnull"] == 1 and info["count"]["dflt_value"] == "1", info
        idx = [r["name"] for r in sqlite3_rows(
            db, f"SELECT name FROM pragma_index_info('{part}_service_ts')")]
        assert idx == ["service", "ts"]
    assert "api_usage" in names  # now the virtual table over the partitions
    after = opsdb_rows(run_cli, db, "SELECT * FROM api_usage ORDER BY ts DESC")
    assert [{k: v for k, v in r.items() if k != "count"} for r in after] == before
    assert {r["count"] for r in after} == {1}  # the old rows get the column's default
    job_cols = [r["name"] for r in opsdb_rows(run_cli, db,
                                               "SELECT name FROM pragma_table_info('job_runs')")]
    assert job_cols[:4] == ["ts", "job", "run_id", "status"], job_cols
    log = sqlite3_rows(db, "SELECT * FROM opsdb_migrations")
    assert [r["version"] for r in log] == list(range(1, CURRENT_VERSION + 1)), log
    assert log[0]["applied_at"] >= NOW_MS and log[0]["description"]


def test_init_migrates_forward(run_cli, tmp_path):
    db = tmp_path / "old.db"
    before = make_old(db, run_cli)
    t0 = int(time.time() * 1000)
    cp = run_cli("init", "--db", db)
    assert cp.returncode == 0, cp.stderr
    assert f"schema version {CURRENT_VERSION}" in cp.stdout
    assert f"from schema version 0 to {CURRENT_VERSION}" in cp.stderr and "adding column api_usage.count" in \
        cp.stderr, cp.stderr
    check_migrated(db, before, run_cli)
    assert sqlite3_rows(db, "SELECT applied_at FROM opsdb_migrations")[0]["applied_at"] >= t0
    # the migrated database works: the new column and table take rows, the view reads them
    cp = run_cli("ingest", "job_runs", "-", "--db", db,
                 input=json.dumps({"ts": NOW_MS, "job": "j", "status": "ok"}) + "\n")
    assert cp.returncode == 0, cp.stderr
    cp = run_cli("view", "api_performance", "--db", db, "--now", NOW_MS // 1000, "--window", "1h",
                 "--format", "json")
    assert cp.returncode == 0, cp.stderr
    assert sum(r["requests"] for r in json.loads(cp.stdout)["rows"]) == 25
    # and a second init changes nothing
    cp = run_cli("init", "--db", db)
    assert cp.returncode == 0 and "migrat" not in cp.stderr, cp.stderr


def test_serve_migrates_forward(run_cli, server_factory, tmp_path):
    db = tmp_path / "old-serve.db"
    before = make_old(db, run_cli)
    srv = server_factory(db=db)
    assert srv.scalar("SELECT count(*) FROM api_usage WHERE count = 1") == 25
    r = srv.post("/api/v1/ingest/job_runs", data=json.dumps(
        {"ts": NOW_MS, "job": "j", "status": "ok"}).encode(),
        headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    srv.stop()
    assert f"from schema version 0 to {CURRENT_VERSION}" in srv.stderr_text()
    check_migrated(db, before, run_cli)


def test_newer_database_is_refused(run_cli, server_factory, tmp_path):
    db = tmp_path / "future.db"
    assert run_cli("init", "--db", db).returncode == 0
    sqlite3(db, "PRAGMA user_version=99;")
    schema = sqlite3(db, ".schema")
    for args in (["init", "--db", db], ["ingest", "api_usage", "-", "--db", db]):
        cp = run_cli(*args, input=rows(1))
        assert cp.returncode == 1, (args, cp.stderr)
        assert f"schema version 99, newer than this opsdb's {CURRENT_VERSION}" in cp.stderr, cp.stderr
        assert "upgrade opsdb" in cp.stderr
    srv = server_factory(db=db, start=False, start_timeout=15)
    with pytest.raises(Exception, match="exited with 1"):
        srv.start()
    assert f"schema version 99, newer than this opsdb's {CURRENT_VERSION}" in srv.stderr_text()
    # nothing was touched
    assert sqlite3(db, "PRAGMA user_version;").strip() == "99"
    assert sqlite3(db, ".schema") == schema


def test_wal_mode(run_cli, server_factory, tmp_path):
    db = tmp_path / "wal.db"
    assert run_cli("init", "--db", db).returncode == 0
    assert sqlite3(db, "PRAGMA journal_mode;").strip() == "wal"
    db2 = tmp_path / "wal-serve.db"  # created by serve
    srv = server_factory(db=db2)
    srv.stop()
    assert sqlite3(db2, "PRAGMA journal_mode;").strip() == "wal"
