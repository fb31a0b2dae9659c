"""A failing database: the writer's commit fails (fault injection OPSDB_FAULT=commit:N fails every
Nth group commit). The client gets 503 with Retry-After, nothing of the request is stored, /readyz
reports the failure, and the next request succeeds: a 503 is safe to retry."""

from conftest import now_ms


def test_failed_commit_is_503_and_nothing_is_written(server_factory):
    # commit 1 is the jobs engine writing the builtin jobs' rows at start: the 3rd fails
    srv = server_factory(env={"OPSDB_FAULT": "commit:3"})
    ts = now_ms()
    rows = [{"ts": ts + i, "method": "GET", "endpoint": f"/f/{i}", "status_code": 200}
            for i in range(10)]
    first = srv.ingest("api_usage", rows)
    assert first.status_code == 200, first.text

    second = srv.ingest("api_usage", [dict(r, client_id="second") for r in rows])
    assert second.status_code == 503, second.text
    assert second.headers.get("Retry-After") == "1"
    body = second.json()
    assert "nothing was written" in body["error"] and "retry" in body["error"]
    assert srv.count("api_usage", "client_id = 'second'") == 0

    ready = srv.get("/readyz")
    assert ready.status_code == 503 and "commit failed" in ready.json()["error"]

    third = srv.ingest("api_usage", [dict(r, client_id="third") for r in rows])
    assert third.status_code == 200, third.text
    assert srv.count("api_usage", "client_id = 'third'") == 10
    assert srv.get("/readyz").status_code == 200

    metrics = srv.get("/metrics").text
    assert 'opsdb_rows_rejected_total{table="api_usage",reason="store_unavailable"} 10' in metrics
    assert "opsdb_writer_batches_failed_total 0" not in metrics


def test_failed_commit_on_line_protocol_forgets_new_series(server_factory):
    """Series created inside a rolled-back group must not be remembered as existing: the retry
    has to create them again (else samples would point at a series that is not there)."""
    srv = server_factory(env={"OPSDB_FAULT": "commit:1"})
    line = f"fault,host=h1 value=1 {now_ms()}"
    r = srv.post("/write", params={"precision": "ms"}, data=line)
    assert r.status_code == 503
    srv.stop()
    srv.env.pop("OPSDB_FAULT")
    srv.start()
    r = srv.post("/write", params={"precision": "ms"}, data=line)
    assert r.status_code == 204, r.text
    rows = srv.query("SELECT host, metric, value FROM system_metrics WHERE metric = 'fault_value'")
    assert rows == [{"host": "h1", "metric": "fault_value", "value": 1}]
