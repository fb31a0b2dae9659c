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
