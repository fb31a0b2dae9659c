"""The answer cache of views and series: a repeated question is served from memory
(X-Opsdb-Cache: hit) until a commit writes a table the answer read; writes to other tables keep
it; answers anchored at "now" live at most a second; the memory budget holds; /metrics counts."""

import time

from conftest import now_ms


def metric(srv, name):
    for line in srv.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def api_rows(ts, n, endpoint="/c"):
    return [{"ts": ts + i, "method": "GET", "endpoint": endpoint, "status_code": 200,
             "latency_ms": 10 + i} for i in range(n)]


def test_view_answers_are_cached_until_their_table_changes(server_factory):
    srv = server_factory()
    ts = now_ms() - 60_000
    assert srv.ingest("api_usage", api_rows(ts, 5)).status_code == 200
    params = {"now": (ts + 60_000) / 1000, "window": "5m"}
    first = srv.get("/api/v1/views/api_performance", params=params)
    assert first.status_code == 200 and first.headers["X-Opsdb-Cache"] == "miss"
    again = srv.get("/api/v1/views/api_performance", params=dict(reversed(list(params.items()))))
    assert again.headers["X-Opsdb-Cache"] == "hit" and again.json() == first.json()

    # another table changes: still a hit
    assert srv.ingest("error_logs", [{"ts": ts, "level": "error", "message": "x"}]).status_code == 200
    assert srv.get("/api/v1/views/api_performance", params=params).headers["X-Opsdb-Cache"] == "hit"

    # its own table changes: recomputed, and the new rows are in the answer
    assert srv.ingest("api_usage", api_rows(ts + 100, 3)).status_code == 200
    fresh = srv.get("/api/v1/views/api_performance", params=params)
    assert fresh.headers["X-Opsdb-Cache"] == "miss"
    assert fresh.json()["rows"][0]["requests"] == 8

    assert metric(srv, "opsdb_query_cache_hits_total") == 2
    assert metric(srv, "opsdb_query_cache_misses_total") == 2
    assert metric(srv, "opsdb_query_cache_entries") == 1


def test_answers_anchored_at_now_expire(server_factory):
    srv = server_factory()
    assert srv.get("/api/v1/views/job_status").headers["X-Opsdb-Cache"] == "miss"
    assert srv.get("/api/v1/views/job_status").headers["X-Opsdb-Cache"] == "hit"
    time.sleep(1.1)
    assert srv.get("/api/v1/views/job_status").headers["X-Opsdb-Cache"] == "miss"


def test_series_answers_are_cached_and_invalidated(server_factory):
    srv = server_factory()
    ts = now_ms() - 120_000
    line = f"cpu,host=a usage=1 {ts}"
    assert srv.post("/write", params={"precision": "ms"}, data=line).status_code == 204
    q = {"metric": "cpu_usage", "from": (ts - 60_000) / 1000, "to": (ts + 60_000) / 1000,
         "step": "1m"}
    assert srv.get("/api/v1/series", params=q).headers["X-Opsdb-Cache"] == "miss"
    assert srv.get("/api/v1/series", params=q).headers["X-Opsdb-Cache"] == "hit"
    line = f"cpu,host=a usage=3 {ts + 1}"
    assert srv.post("/write", params={"precision": "ms"}, data=line).status_code == 204
    r = srv.get("/api/v1/series", params=q)
    assert r.headers["X-Opsdb-Cache"] == "miss"
    assert r.json()["series"][0]["values"][0][1] == 2  # avg of 1 and 3


def test_memory_budget_evicts(server_factory):
    srv = server_factory("--set", "query.cache_bytes=64KiB")
    ts = now_ms() - 60_000
    assert srv.ingest("api_usage", api_rows(ts, 50)).status_code == 200
    for w in range(1, 200):
        r = srv.get("/api/v1/views/api_performance", params={"now": ts / 1000 + 60, "window": f"{w}m"})
        assert r.status_code == 200
    assert metric(srv, "opsdb_query_cache_size_bytes") <= 64 * 1024
    assert metric(srv, "opsdb_query_cache_evictions_total") > 0


def test_cache_off(server_factory):
    srv = server_factory("--set", "query.cache_bytes=0")
    for _ in range(2):
        assert srv.get("/api/v1/views/system_health").headers["X-Opsdb-Cache"] == "miss"


def test_keys_cannot_be_forged_by_parameter_names(server_factory):
    """A parameter named "agg=max&filter" must not share a key with agg=max&filter=..."""
    srv = server_factory()
    ts = now_ms() - 120_000
    assert srv.post("/write", params={"precision": "ms"},
                    data=f"cpu,host=a value=1 {ts}").status_code == 204
    base = f"metric=cpu_value&from={(ts - 60_000) // 1000}&to={(ts + 60_000) // 1000}"
    forged = srv.get(f"/api/v1/series?agg%3Dmax%26filter=host%3Dzzz&{base}")
    assert forged.status_code == 200 and forged.json()["series"]
    genuine = srv.get(f"/api/v1/series?agg=max&filter=host%3Dzzz&{base}")
    assert genuine.headers["X-Opsdb-Cache"] == "miss"
    assert genuine.json()["series"] == [] and genuine.json()["agg"] == "max"


def test_writes_of_another_process_invalidate(server_factory, run_cli):
    srv = server_factory()
    ts = now_ms() - 60_000
    assert srv.ingest("api_usage", api_rows(ts, 2)).status_code == 200
    params = {"now": (ts + 60_000) / 1000, "window": "5m"}
    assert srv.get("/api/v1/views/api_performance", params=params).json()["rows"][0]["requests"] == 2
    assert srv.get("/api/v1/views/api_performance", params=params).headers["X-Opsdb-Cache"] == "hit"
    rows = "".join(
        f'{{"ts": {ts + 10 + i}, "method": "GET", "endpoint": "/c", "status_code": 200}}\n'
        for i in range(3))
    cp = run_cli("ingest", "api_usage", "-", "--db", srv.db, input=rows)
    assert cp.returncode == 0, cp.stderr
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r = srv.get("/api/v1/views/api_performance", params=params)
        if r.json()["rows"][0]["requests"] == 5:
            break
        time.sleep(0.2)
    assert r.json()["rows"][0]["requests"] == 5, "the other process's rows never showed"


def test_time_zero_is_a_time(server_factory):
    """from=0 / to=0 / now=0 are 1970-01-01, not "not given"."""
    srv = server_factory()
    r = srv.get("/api/v1/series", params={"metric": "m", "from": -3600, "to": 0, "step": "1m"})
    assert r.status_code == 200, r.text
    assert r.json()["to"] == 0 and r.json()["from"] == -3_600_000
    r = srv.get("/api/v1/views/api_performance", params={"now": 0})
    assert r.status_code == 200 and r.json()["rows"] == []
