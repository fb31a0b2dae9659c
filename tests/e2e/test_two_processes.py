"""`opsdb ingest` writing to the database file of a running `opsdb serve`: both processes use
SQLite's locking, and the server takes series that the other process created as its own."""

import json

from conftest import now_ms


def test_server_writes_a_series_created_by_another_process(server_factory, run_cli):
    srv = server_factory()
    ts = now_ms() - 60_000
    row = {"ts": ts, "metric": "cpu_usage", "host": "h1", "value": 1}
    cp = run_cli("ingest", "system_metrics", "-", "--db", srv.db, input=json.dumps(row) + "\n")
    assert cp.returncode == 0, cp.stderr
    r = srv.post("/write", params={"precision": "ms"}, data=f"cpu,host=h1 usage=3 {ts + 1}")
    assert r.status_code == 204, r.text
    assert srv.count("system_metrics_series") == 1
    assert srv.query("SELECT count, sum FROM system_metrics_1m") == [{"count": 2, "sum": 4}]
    # and the other way round: the CLI takes the server's series too
    r = srv.post("/write", params={"precision": "ms"}, data=f"cpu,host=h2 usage=5 {ts}")
    assert r.status_code == 204
    row = {"ts": ts + 2, "metric": "cpu_usage", "host": "h2", "value": 7}
    cp = run_cli("ingest", "system_metrics", "-", "--db", srv.db, input=json.dumps(row) + "\n")
    assert cp.returncode == 0, cp.stderr
    assert srv.count("system_metrics_series") == 2
    assert srv.count("system_metrics", "host = 'h2'") == 2
