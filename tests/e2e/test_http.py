"""The HTTP surface: health and readiness, the route index, errors for unknown routes and wrong
methods, the views list, read-only SQL with its limits and formats, and /metrics."""

import csv
import io
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import now_ms, unique


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory()


@pytest.fixture(scope="module")
def limited(module_server_factory):
    """A server with a 200 ms query time limit and a 5-row query limit."""
    return module_server_factory("--set", "query.timeout=200ms", "--set", "query.max_rows=5")


def api_rows(marker, n, **extra):
    ts = now_ms() - 10_000
    return [dict({"ts": ts - i, "method": "GET", "endpoint": f"{marker}-{i}",
                  "status_code": 200, "latency_ms": 1.5}, **extra) for i in range(n)]


def assert_json_error(r, status):
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["error"], str) and body["error"]
    return body["error"]


# ---- health, index, errors ----------------------------------------------------------------

def test_healthz(srv):
    r = srv.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_readyz(srv):
    r = srv.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready"}


def test_head_healthz_has_no_body(srv):
    r = srv.request("HEAD", "/healthz")
    assert r.status_code == 200
    assert r.content == b""


EXPECTED_ROUTES = {
    ("GET", "/"), ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
    ("POST", "/api/v1/ingest/{table}"), ("POST", "/write"), ("POST", "/api/v2/write"),
    ("GET", "/ping"), ("GET", "/api/v1/views"), ("GET", "/api/v1/views/{name}"),
    ("GET", "/api/v1/query"), ("POST", "/api/v1/query"), ("GET", "/api/v1/schema"),
}


def test_index_lists_routes(srv):
    r = srv.get("/")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["name"] == "opsdb"
    routes = body["routes"]
    assert EXPECTED_ROUTES <= {(x["method"], x["path"]) for x in routes}
    for x in routes:
        assert set(x) == {"method", "path", "role", "doc"}, x
        assert x["role"] in ("public", "reader", "writer", "admin"), x
        assert x["doc"], x
    # no route is listed twice
    assert len({(x["method"], x["path"]) for x in routes}) == len(routes)


@pytest.mark.parametrize("path", ["/nope", "/api/v1/nope", "/api/v1/ingest/", "/api/v1/ingest",
                                  "/api/v1/ingest/api_usage/extra", "/healthz/", "/HEALTHZ",
                                  "/api/v1/views/"])
def test_unknown_route_is_404_json(srv, path):
    err = assert_json_error(srv.get(path), 404)
    assert "GET /" in err or "route" in err


@pytest.mark.parametrize("method,path", [("POST", "/healthz"), ("DELETE", "/api/v1/query"),
                                         ("PUT", "/api/v1/ingest/api_usage"), ("GET", "/write"),
                                         ("POST", "/api/v1/views"), ("PATCH", "/metrics")])
def test_wrong_method_is_405_json(srv, method, path):
    err = assert_json_error(srv.request(method, path), 405)
    assert method in err


@pytest.mark.parametrize("method,path,allowed", [("POST", "/healthz", {"GET"}),
                                                 ("DELETE", "/api/v1/query", {"GET", "POST"}),
                                                 ("POST", "/ping", {"GET", "HEAD"})])
def test_405_names_allowed_methods(srv, method, path, allowed):
    """RFC 9110 15.5.6: a 405 carries Allow."""
    r = srv.request(method, path)
    assert r.status_code == 405
    assert {m.strip() for m in r.headers.get("Allow", "").split(",")} >= allowed, r.headers


def test_responses_have_nosniff(srv):
    assert srv.get("/healthz").headers["X-Content-Type-Options"] == "nosniff"


# ---- views and schema ---------------------------------------------------------------------

VIEWS = {"system_health", "api_performance", "error_summary", "pipeline_health",
         "handler_performance", "active_alerts", "alert_quality", "job_status"}


def test_views_list(srv):
    r = srv.get("/api/v1/views")
    assert r.status_code == 200
    body = r.json()
    names = {v["name"] for v in body["views"]}
    assert VIEWS <= names
    for v in body["views"]:
        assert v["doc"]
        assert isinstance(v["default_window_s"], int) and v["default_window_s"] >= 0
    assert {"window", "now", "format"} <= set(body["parameters"])


def test_schema_lists_tables_and_columns(srv):
    body = srv.get("/api/v1/schema").json()
    tables = {t["name"]: t for t in body["tables"]}
    assert {"system_metrics", "api_usage", "error_logs", "pipeline_status", "handler_metrics",
            "alert_history", "scheduled_jobs", "job_runs"} <= set(tables)
    cols = {c["name"]: c for c in tables["api_usage"]["columns"]}
    assert cols["ts"] == {"name": "ts", "type": "timestamp", "required": True}
    assert cols["latency_ms"]["required"] is False


# ---- read-only SQL ------------------------------------------------------------------------

def test_query_get_and_post(srv):
    marker = unique()
    assert srv.ingest("api_usage", api_rows(marker, 3)).status_code == 200
    sql = f"SELECT endpoint, status_code FROM api_usage WHERE endpoint LIKE '{marker}-%' " \
          f"ORDER BY endpoint"
    want = [{"endpoint": f"{marker}-{i}", "status_code": 200} for i in range(3)]
    r = srv.get("/api/v1/query", params={"sql": sql})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == ["endpoint", "status_code"]
    assert body["row_count"] == 3
    assert body["rows"] == want
    r = srv.post("/api/v1/query", data=sql.encode(), headers={"Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == want


def test_query_value_types(srv):
    row = srv.query("SELECT 1 AS i, 2.5 AS r, 'x' AS t, NULL AS n, 9007199254740993 AS big, "
                    "0.1 AS tenth, 'é☃' AS u, 'a\"b\\c' || char(10) || char(1) AS esc")[0]
    assert row == {"i": 1, "r": 2.5, "t": "x", "n": None, "big": 9007199254740993,
                   "tenth": 0.1, "u": "é☃", "esc": 'a"b\\c\n\x01'}


def test_query_views_are_queryable(srv):
    for v in sorted(VIEWS):
        r = srv.get("/api/v1/query", params={"sql": f"SELECT * FROM {v} LIMIT 1"})
        assert r.status_code == 200, (v, r.text)


def test_query_read_pragmas_are_allowed(srv):
    rows = srv.query("PRAGMA table_info(api_usage)")
    assert "endpoint" in {r["name"] for r in rows}


def test_query_csv(srv):
    marker = unique()
    rows = api_rows(marker, 2, service='svc, "quoted"\nline')
    assert srv.ingest("api_usage", rows).status_code == 200
    r = srv.get("/api/v1/query", params={
        "sql": f"SELECT endpoint, service, status_code, latency_ms, client_id FROM api_usage "
               f"WHERE endpoint LIKE '{marker}-%' ORDER BY endpoint", "format": "csv"})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/csv")
    got = list(csv.reader(io.StringIO(r.text)))
    assert got[0] == ["endpoint", "service", "status_code", "latency_ms", "client_id"]
    assert got[1:] == [[f"{marker}-{i}", 'svc, "quoted"\nline', "200", "1.5", ""]
                       for i in range(2)]


def test_query_csv_quotes_header_and_carriage_return(srv):
    r = srv.get("/api/v1/query", params={"sql": "SELECT 1 AS \"a,b\", 'x' || char(13) || 'y' AS c",
                                         "format": "csv"})
    assert r.status_code == 200
    got = list(csv.reader(io.StringIO(r.text, newline="")))
    assert got == [["a,b", "c"], ["1", "x\ry"]]


def test_query_json_is_valid_utf8_for_blobs(srv):
    """Blobs and text that is not UTF-8 (only SQL can make it: ingestion refuses it) still give
    valid UTF-8 JSON."""
    sql = "SELECT x'ff00c3' AS b, CAST(x'e282' AS TEXT) AS t, x'c3a9' AS ok"
    r = srv.get("/api/v1/query", params={"sql": sql})
    assert r.status_code == 200, r.text
    row = json.loads(r.content.decode("utf-8"))["rows"][0]
    assert row["ok"] == "é"
    assert "\ufffd" in row["b"] and "\ufffd" in row["t"], row  # U+FFFD for bad bytes


def test_query_bad_format_is_400(srv):
    assert_json_error(srv.get("/api/v1/query", params={"sql": "SELECT 1", "format": "xml"}), 400)


@pytest.mark.parametrize("params", [{}, {"sql": ""}, {"sql": "   "}])
def test_query_missing_sql_is_400(srv, params):
    assert_json_error(srv.get("/api/v1/query", params=params), 400)


def test_query_syntax_error_is_400_with_sqlite_message(srv):
    err = assert_json_error(srv.get("/api/v1/query", params={"sql": "SELEC 1"}), 400)
    assert "syntax error" in err
    err = assert_json_error(srv.get("/api/v1/query", params={"sql": "SELECT * FROM nope"}), 400)
    assert "no such table" in err


def _writes(tmp):
    attach = tmp / "attached.db"
    vac = tmp / "vacuumed.db"
    return {
        "insert": ("INSERT INTO api_usage (ts, method, endpoint, status_code) "
                   "VALUES (1, 'GET', '/x', 200)", None),
        "insert_select": ("INSERT INTO api_usage SELECT * FROM api_usage", None),
        "delete": ("DELETE FROM api_usage", None),
        "update": ("UPDATE api_usage SET status_code = 500", None),
        "replace": ("REPLACE INTO scheduled_jobs (ts, name, kind) VALUES (1, 'j', 'builtin')",
                    None),
        "cte_delete": ("WITH x AS (SELECT 1) DELETE FROM api_usage", None),
        "drop_table": ("DROP TABLE api_usage", None),
        "drop_view": ("DROP VIEW error_summary", None),
        # DDL against a plain table, so the authorizer is what refuses (event tables are
        # virtual tables: SQLite refuses DDL on them before the authorizer is asked)
        "drop_index": ("DROP INDEX scheduled_jobs_next_run", None),
        "create_table": ("CREATE TABLE t (x)", None),
        "create_temp_table": ("CREATE TEMP TABLE t (x)", None),
        "create_table_as": ("CREATE TABLE t AS SELECT * FROM api_usage", None),
        "create_index": ("CREATE INDEX i ON scheduled_jobs (kind)", None),
        "create_view": ("CREATE VIEW v AS SELECT 1", None),
        "create_trigger": ("CREATE TRIGGER tr AFTER INSERT ON scheduled_jobs BEGIN "
                           "DELETE FROM scheduled_jobs; END", None),
        "alter": ("ALTER TABLE scheduled_jobs ADD COLUMN x", None),
        "attach": (f"ATTACH DATABASE '{attach}' AS other", attach),
        "detach": ("DETACH DATABASE main", None),
        "pragma_writable_schema": ("PRAGMA writable_schema = 1", None),
        "pragma_writable_schema_read": ("PRAGMA writable_schema", None),
        "pragma_journal_mode": ("PRAGMA journal_mode = delete", None),
        "pragma_user_version": ("PRAGMA user_version = 7", None),
        "pragma_query_only_off": ("PRAGMA query_only = 0", None),
        "load_extension": ("SELECT load_extension('/usr/lib/x86_64-linux-gnu/libz.so')", None),
        "vacuum": ("VACUUM", None),
        "vacuum_into": (f"VACUUM INTO '{vac}'", vac),
        "reindex": ("REINDEX", None),
        "analyze": ("ANALYZE", None),
        "begin": ("BEGIN IMMEDIATE", None),
        "savepoint": ("SAVEPOINT s", None),
        "two_selects": ("SELECT 1; SELECT 2", None),
        "select_then_delete": ("SELECT 1; DELETE FROM api_usage", None),
        "select_then_drop": ("SELECT count(*) FROM api_usage;DROP TABLE api_usage;", None),
    }


CLEAR = ("read-only", "not allowed", "only one statement", "not authorized", "denied")


@pytest.fixture(scope="module")
def ro_state(srv, tmp_path_factory):
    marker = unique()
    assert srv.ingest("api_usage", api_rows(marker, 4)).status_code == 200
    tmp = tmp_path_factory.mktemp("ro")
    return tmp, marker


def _snapshot(srv):
    return (srv.query("SELECT type, name, sql FROM sqlite_master ORDER BY type, name"),
            srv.query("SELECT * FROM api_usage ORDER BY ts, endpoint"),
            srv.count("scheduled_jobs"))


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("case", sorted(_writes(Path("/unused"))))
def test_query_is_read_only(srv, ro_state, case, method):
    tmp, _marker = ro_state
    sql, created_file = _writes(tmp)[case]
    before = _snapshot(srv)
    if method == "GET":
        r = srv.get("/api/v1/query", params={"sql": sql})
    else:
        r = srv.post("/api/v1/query", data=sql.encode(), headers={"Content-Type": "text/plain"})
    err = assert_json_error(r, 400)
    assert any(word in err for word in CLEAR), err
    assert _snapshot(srv) == before
    if created_file is not None:
        assert not created_file.exists()
    assert srv.get("/readyz").status_code == 200


@pytest.mark.parametrize("sql", ["SELECT 1; -- trailing comment", "SELECT 1; /* c */"])
def test_query_trailing_comment_is_not_a_second_statement(srv, sql):
    r = srv.get("/api/v1/query", params={"sql": sql})
    assert r.status_code == 200, r.text


def test_query_trailing_semicolons_are_one_statement(srv):
    assert srv.query("SELECT 7 AS x;;  ;\n") == [{"x": 7}]


LONG_CTE = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
            "SELECT count(*) FROM c")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_query_time_limit(limited, method):
    t0 = time.monotonic()
    if method == "GET":
        r = limited.get("/api/v1/query", params={"sql": LONG_CTE})
    else:
        r = limited.post("/api/v1/query", data=LONG_CTE, headers={"Content-Type": "text/plain"})
    elapsed = time.monotonic() - t0
    assert 400 <= r.status_code < 500, r.text
    err = r.json()["error"]
    assert "time limit" in err and "200 ms" in err, err
    assert elapsed < 5, elapsed
    # the connection is usable again at once
    assert limited.query("SELECT 1 AS one") == [{"one": 1}]


def test_query_time_limit_on_view(limited):
    r = limited.get("/api/v1/query", params={
        "sql": "SELECT count(*) FROM api_usage a, (" + LONG_CTE + ") b"})
    assert 400 <= r.status_code < 500, r.text
    assert "time limit" in r.json()["error"]


def test_query_time_limit_covers_long_function_calls(server_factory):
    s = server_factory("--set", "query.timeout=200ms")
    sql = ("SELECT sum(length(printf('%.*c', 50000000, 'x'))) AS n FROM "
           "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 40) "
           "SELECT x FROM c)")
    t0 = time.monotonic()
    try:
        r = s.get("/api/v1/query", params={"sql": sql}, timeout=3)
    except requests.Timeout:
        pytest.fail("the query ran for more than 3 s with query.timeout=200ms")
    finally:
        s.kill9()  # a runaway query would hold a graceful stop for a minute
    assert time.monotonic() - t0 < 2
    # values are capped at 16 MiB: printf() past it yields NULL (SQLite) or the query is stopped
    assert (400 <= r.status_code < 500) or r.json()["rows"] == [{"n": None}], r.text


def test_query_row_limit(limited):
    five = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 5) SELECT x FROM c"
    assert [r["x"] for r in limited.query(five)] == [1, 2, 3, 4, 5]
    six = five.replace("LIMIT 5", "LIMIT 6")
    for fmt in ("json", "csv"):
        r = limited.get("/api/v1/query", params={"sql": six, "format": fmt})
        assert 400 <= r.status_code < 500, r.text
        err = r.json()["error"]
        assert "row limit" in err and "5" in err, err


def test_concurrent_slow_queries_all_stop(limited):
    import concurrent.futures as cf
    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(lambda _: limited.request(
            "GET", "/api/v1/query", params={"sql": LONG_CTE}).status_code, range(8)))
    assert all(400 <= c < 500 for c in codes), codes
    assert time.monotonic() - t0 < 20


# ---- /metrics -----------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """{(name, frozenset(labels.items())): value} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"unparsable metrics line: {line!r}"
        labels = frozenset(LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def metric(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(srv):
    r = srv.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    return r.text, parse_metrics(r.text)


promtool = shutil.which("promtool")


def promtool_check(text):
    cp = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                        text=True, timeout=60)
    assert cp.returncode == 0, f"promtool check metrics:\n{cp.stdout}{cp.stderr}"


@pytest.mark.skipif(promtool is None, reason="promtool (Debian package prometheus) is absent")
def test_metrics_pass_promtool_on_fresh_server(server_factory):
    text, _ = scrape(server_factory())
    promtool_check(text)


def test_metrics_move_after_ingest(server_factory):
    s = server_factory("--set", "http.max_body_bytes=4096")
    _, m0 = scrape(s)
    ep = 'POST', '/api/v1/ingest/{table}'
    marker = unique()
    assert s.ingest("api_usage", api_rows(marker, 7)).status_code == 200
    assert s.ingest("error_logs", [{"ts": now_ms(), "level": "error",
                                    "message": "x"}]).status_code == 200
    bad = api_rows(marker, 3, status_code=999)
    assert s.ingest("api_usage", bad).status_code == 400
    assert s.post("/api/v1/ingest/api_usage", data=b"x" * 5000).status_code == 413
    assert s.post("/write", data=b"cpu,host=h v=1\n").status_code == 204
    for _ in range(3):
        assert s.get("/healthz").status_code == 200
    big = "\n".join(json.dumps(r) for r in api_rows(unique(), 20))
    assert s.post("/api/v1/ingest/api_usage", data=big.encode()).status_code == 200
    text, m1 = scrape(s)

    def delta(name, **labels):
        return metric(m1, name, **labels) - metric(m0, name, **labels)

    assert delta("opsdb_rows_ingested_total", table="api_usage") == 27
    assert delta("opsdb_rows_ingested_total", table="error_logs") == 1
    assert delta("opsdb_rows_ingested_total", table="system_metrics") == 1
    assert delta("opsdb_rows_ingested_total", table="job_runs") == 0
    assert delta("opsdb_rows_rejected_total", table="api_usage", reason="validation") == 3
    too_large = sum(v for (n, ls), v in m1.items()
                    if n == "opsdb_rows_rejected_total" and ("reason", "too_large") in ls)
    assert too_large == 1
    assert delta("opsdb_http_requests_total", method=ep[0], route=ep[1], code="2xx") == 3
    assert delta("opsdb_http_requests_total", method=ep[0], route=ep[1], code="4xx") == 2
    assert delta("opsdb_http_requests_total", method="GET", route="/healthz", code="2xx") == 3
    assert delta("opsdb_http_request_duration_seconds_count", method=ep[0], route=ep[1]) == 5
    assert delta("opsdb_http_request_duration_seconds_bucket", method=ep[0], route=ep[1],
                 le="+Inf") == 5
    assert metric(m1, "opsdb_http_request_duration_seconds_sum", method=ep[0], route=ep[1]) > 0
    # buckets are cumulative
    les = sorted(((float(dict(ls)["le"]), v) for (n, ls), v in m1.items()
                  if n == "opsdb_http_request_duration_seconds_bucket"
                  and dict(ls).get("route") == ep[1]), key=lambda x: x[0])
    assert [v for _, v in les] == sorted(v for _, v in les)
    assert ("opsdb_writer_queue_rows", frozenset()) in m1
    assert metric(m1, "opsdb_writer_queue_rows") == 0  # nothing waits at rest
    assert delta("opsdb_writer_group_commit_rows_count") >= 1
    assert delta("opsdb_writer_group_commit_rows_count") <= 4
    assert delta("opsdb_writer_group_commit_rows_sum") == 29
    assert metric(m1, "opsdb_writer_group_commit_rows_bucket", le="+Inf") == \
        metric(m1, "opsdb_writer_group_commit_rows_count")
    assert metric(m1, "opsdb_database_size_bytes") > 0
    if promtool:
        promtool_check(text)


def test_metrics_database_bytes_grow(server_factory):
    s = server_factory()
    _, m0 = scrape(s)
    marker = unique()
    rows = api_rows(marker, 3000, service="s" * 200)
    assert s.ingest("api_usage", rows).status_code == 200
    _, m1 = scrape(s)
    assert metric(m1, "opsdb_database_size_bytes") >= metric(m0, "opsdb_database_size_bytes") \
        + 3000 * 200


@pytest.mark.skipif(promtool is None, reason="promtool (Debian package prometheus) is absent")
def test_metrics_pass_promtool_after_every_kind_of_request(server_factory):
    s = server_factory("--set", "http.max_body_bytes=2048")
    s.ingest("api_usage", api_rows(unique(), 2))
    s.ingest("api_usage", api_rows(unique(), 2, status_code=1))
    s.post("/api/v1/ingest/nope", data=b"x" * 3000)
    s.post("/api/v1/ingest/api_usage", data=b"\x1f\x8b garbage",
           headers={"Content-Encoding": "gzip"})
    s.post("/api/v1/ingest/api_usage", data=b"{}", headers={"Content-Encoding": "br"})
    s.get("/nope")
    s.request("DELETE", "/healthz")
    s.get("/api/v1/query", params={"sql": "DROP TABLE api_usage"})
    s.get("/api/v1/views/api_performance")
    text, _ = scrape(s)
    promtool_check(text)
