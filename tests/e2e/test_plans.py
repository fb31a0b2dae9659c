"""Index effectiveness: no view and no documented or typical query scans a large table.

A database is filled with a realistic volume (two days of API usage, 200 hosts' metrics, errors,
pipeline runs, handler intervals, alerts and job runs) through `opsdb ingest`, then a server is
started on it exactly as users run it (no ANALYZE is run: the plans are the ones the server
gets). For every view, every ```sql block in README.md and docs/*.md, and a list of typical
operator queries, `EXPLAIN QUERY PLAN` is asked through GET /api/v1/query and the test fails
when a plan line reads `SCAN <large table>` without `USING INDEX`, `USING COVERING INDEX` or
`USING (INTEGER) PRIMARY KEY`. Plans name tables by their alias (`SCAN r`), so aliases are
resolved from the query text and the SQL of the views it reads. Small tables
(system_metrics_series, scheduled_jobs) may be scanned.
"""

import json
import random
import re
import time
from pathlib import Path

import pytest

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
LARGE = {"system_metrics_samples", "system_metrics_cold", "api_usage", "error_logs", "pipeline_status",
         "handler_metrics", "alert_history", "job_runs", "pipeline_status_runs"}
VIEWS = ["system_health", "api_performance", "error_summary", "pipeline_health",
         "handler_performance", "active_alerts", "alert_quality", "job_status"]
SQL_WORDS = {"where", "group", "order", "limit", "join", "left", "inner", "cross", "outer", "on",
             "using", "union", "natural", "as", "having", "window", "except", "intersect",
             "full", "right"}

SEED = 7
REF = (int(time.time()) // 60) * 60 * 1000 - 10 * 60_000  # 10 minutes ago, whole minute
HOUR = 3_600_000
SPAN = 2 * 24 * HOUR


# ---- the volume ----------------------------------------------------------------------------


def generate(rng):
    t = {}

    def ts():
        return REF - rng.randint(0, SPAN)

    endpoints = [f"/api/v1/{r}/:id" for r in ("users", "orders", "items", "carts", "search",
                                              "payments", "sessions", "reports")] + ["/healthz"]
    t["api_usage"] = [
        {"ts": ts(), "service": f"svc{rng.randint(0, 9)}", "method": rng.choice(["GET", "POST"]),
         "endpoint": rng.choice(endpoints), "status_code": rng.choice([200, 200, 201, 404, 500]),
         "latency_ms": round(rng.lognormvariate(3, 1), 2), "response_bytes": rng.randint(0, 9999),
         "client_id": f"c{rng.randint(0, 300)}", "host": f"web-{rng.randint(0, 19)}"}
        for _ in range(50_000)]
    metrics = ["cpu_usage", "memory_usage", "disk_usage", "load1"]
    t["system_metrics"] = [
        {"ts": REF - k * 60_000 * 48 - rng.randint(0, 59_999), "host": f"host-{h:03d}",
         "component": ["", "web", "db"][h % 3], "metric": m, "value": round(rng.random() * 100, 2)}
        for h in range(200) for m in metrics for k in range(30)]
    t["error_logs"] = [
        {"ts": ts(), "service": f"svc{rng.randint(0, 9)}", "component": f"comp{rng.randint(0, 9)}",
         "host": f"web-{rng.randint(0, 19)}", "level": rng.choice(["warning", "error"]),
         "error_type": f"E{rng.randint(0, 40)}", "message": f"failure {rng.randint(0, 40)}"}
        for _ in range(10_000)]
    t["pipeline_status"] = []
    for run in range(2500):
        start = ts()
        p = f"pipe{run % 25}"
        t["pipeline_status"] += [
            {"ts": start, "pipeline": p, "run_id": f"r{run}", "status": "running",
             "started_at": start},
            {"ts": start + 60_000, "pipeline": p, "run_id": f"r{run}",
             "status": rng.choice(["succeeded", "succeeded", "failed"]),
             "started_at": start, "finished_at": start + 60_000}]
    t["handler_metrics"] = [
        {"ts": ts(), "handler": f"h{rng.randint(0, 49)}", "component": f"comp{rng.randint(0, 4)}",
         "invocations": rng.randint(0, 1000), "errors": rng.randint(0, 5),
         "duration_ms_avg": round(rng.random() * 100, 2), "queue_depth": rng.randint(0, 500)}
        for _ in range(10_000)]
    t["alert_history"] = [
        {"ts": ts(), "alert_id": f"a{rng.randint(0, 499)}", "rule": f"rule{rng.randint(0, 19)}",
         "state": rng.choice(["pending", "firing", "resolved", "acknowledged"]),
         "value": rng.random()} for _ in range(3000)]
    t["scheduled_jobs"] = [
        {"ts": REF, "name": f"job{j}", "kind": "command", "schedule": "@hourly",
         "next_run_at": REF + rng.randint(-HOUR, HOUR)} for j in range(50)]
    t["job_runs"] = [
        {"ts": ts(), "job": f"job{rng.randint(0, 49)}", "status": rng.choice(["ok", "failed"]),
         "duration_ms": rng.randint(0, 60_000)} for _ in range(2000)]
    return t


@pytest.fixture(scope="module")
def volume(module_server_factory, opsdb_bin, tmp_path_factory):
    base = tmp_path_factory.mktemp("plans")
    db = base / "volume.db"
    rows = generate(random.Random(SEED))
    for table, items in rows.items():
        path = base / f"{table}.ndjson"
        path.write_text("".join(json.dumps(r) + "\n" for r in items))
        cp = run_cli("ingest", table, path, "--db", db, bin_path=opsdb_bin, timeout=120)
        assert cp.returncode == 0, cp.stderr
    return module_server_factory(db=db), rows


# ---- the queries ---------------------------------------------------------------------------


def typical_queries():
    """What operators ask, in the shapes the indexes were declared for (src/core/schema.c)."""
    a, b = REF - HOUR, REF
    return [
        # api_usage: per-endpoint window, per-service window, all endpoints in a window
        f"SELECT count(*), avg(latency_ms) FROM api_usage WHERE endpoint = '/api/v1/users/:id' "
        f"AND ts > {a} AND ts <= {b}",
        f"SELECT ts, status_code, latency_ms FROM api_usage WHERE service = 'svc1' "
        f"AND ts BETWEEN {a} AND {b} ORDER BY ts",
        f"SELECT status_code, count(*) FROM api_usage WHERE ts > {a} GROUP BY status_code",
        "SELECT * FROM api_usage ORDER BY ts DESC LIMIT 20",
        # system_metrics: one host's metric over a range; one metric of every host, recently
        f"SELECT ts, value FROM system_metrics WHERE host = 'host-007' AND metric = 'cpu_usage' "
        f"AND ts BETWEEN {a} AND {b} ORDER BY ts",
        f"SELECT host, max(value) FROM system_metrics WHERE metric = 'disk_usage' "
        f"AND ts > {b - 600_000} GROUP BY host",
        f"SELECT metric, avg(value) FROM system_metrics WHERE host = 'host-001' "
        f"AND component = 'web' AND ts > {a} GROUP BY metric",
        # the whole fleet in the last five minutes (timestamp-based, like the other tables)
        f"SELECT host, metric, value FROM system_metrics WHERE ts > {b - 300_000}",
        # error_logs: one fingerprint's events, a component's errors, the latest errors
        "SELECT ts, host, message FROM error_logs WHERE fingerprint = 'abcdef0123456789' "
        "ORDER BY ts DESC LIMIT 50",
        f"SELECT level, count(*) FROM error_logs WHERE component = 'comp3' AND ts > {a} "
        "GROUP BY level",
        f"SELECT * FROM error_logs WHERE ts > {a} AND level = 'error' ORDER BY ts DESC LIMIT 100",
        # pipeline_status: failed runs, one pipeline's history
        f"SELECT pipeline, run_id, ts, message FROM pipeline_status WHERE status = 'failed' "
        f"AND ts > {REF - 24 * HOUR} ORDER BY ts DESC",
        "SELECT * FROM pipeline_status WHERE pipeline = 'pipe3' ORDER BY ts DESC LIMIT 20",
        # handler_metrics: one handler over time, a component over time
        f"SELECT ts, invocations, errors FROM handler_metrics WHERE handler = 'h7' AND ts > {a}",
        f"SELECT handler, sum(invocations) FROM handler_metrics WHERE component = 'comp1' "
        f"AND ts > {a} GROUP BY handler",
        # alert_history: alerts by state, one alert's transitions, recent transitions
        f"SELECT alert_id, ts FROM alert_history WHERE state = 'firing' AND ts > {a}",
        "SELECT * FROM alert_history WHERE alert_id = 'a42' ORDER BY ts",
        f"SELECT rule, count(*) FROM alert_history WHERE ts > {REF - 24 * HOUR} GROUP BY rule",
        # job_runs: one job's history, failures over time; scheduled_jobs is small
        "SELECT * FROM job_runs WHERE job = 'job3' ORDER BY ts DESC LIMIT 10",
        f"SELECT job, ts FROM job_runs WHERE status = 'failed' AND ts > {REF - 24 * HOUR}",
        "SELECT name, next_run_at FROM scheduled_jobs WHERE enabled = 1 ORDER BY next_run_at",
    ]


def documented_queries():
    """Every statement in a ```sql block of README.md and docs/*.md, and the SQL of the examples
    in other blocks (`opsdb query '...'`, `sql=...` of the HTTP route), with :params as literals.
    Returns (where, sql) pairs."""
    out = []
    files = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    for f in files:
        if not f.is_file():
            continue
        where = str(f.relative_to(ROOT))
        for lang, block in re.findall(r"```(\w*)[^\n]*\n(.*?)```", f.read_text(), re.S):
            if lang == "sql":
                stmts = re.split(r";\s*(?:\n|$)", block)
            else:
                stmts = re.findall(r"opsdb query\s+'([^']*)'", block)
                stmts += re.findall(r'opsdb query\s+"([^"]*)"', block)
                stmts += re.findall(r'"sql=([^"]*)"', block)
                stmts += re.findall(r"'sql=([^']*)'", block)
            for stmt in stmts:
                stmt = "\n".join(l for l in stmt.splitlines() if not l.strip().startswith("--"))
                stmt = stmt.strip().rstrip(";")
                if not re.match(r"(?is)^(SELECT|WITH)\b", stmt):
                    continue  # DDL and examples of writes are not queries to plan
                stmt = re.sub(r"(?<![\w:]):[A-Za-z_]\w*|[$@][A-Za-z_]\w*", str(REF), stmt)
                out.append((where, stmt))
    return out


# Documented queries known to scan a large table; each is reported, not hidden (strict xfail:
# the test fails once the query or the indexes change so that it no longer scans).
KNOWN_SCANS = {}


# ---- the check -----------------------------------------------------------------------------


def view_sql(srv):
    return {r["name"]: r["sql"] for r in
            srv.query("SELECT name, sql FROM sqlite_schema WHERE type = 'view'")}


def aliases(sql, views):
    """alias (or name) -> set of table names, from the query and the views it reads."""
    texts, seen = [sql], set()
    for _ in range(4):  # views of views, bounded
        for name, body in views.items():
            if name not in seen and any(re.search(rf"\b{name}\b", t) for t in texts):
                seen.add(name)
                texts.append(body)
    out = {}
    for text in texts:
        for table, alias in re.findall(r"(?i)\b(?:FROM|JOIN)\s+(\w+)(?:\s+AS)?\s+(\w+)", text):
            if alias.lower() not in SQL_WORDS:
                out.setdefault(alias, set()).add(table)
    return out


def plan(srv, sql):
    r = srv.get("/api/v1/query", params={"sql": "EXPLAIN QUERY PLAN " + sql})
    assert r.status_code == 200, f"EXPLAIN {sql}: {r.status_code} {r.text}"
    return [row["detail"] for row in r.json()["rows"]]


def full_scans(lines, alias_map):
    """Plan lines that read a whole large table. Besides SCAN without an index, samples searched
    by series_id alone under a scan of the series dictionary read every sample of every series:
    that is a full scan too, spelled as SEARCH (or, for the compressed samples' virtual table,
    as INDEX 1)."""
    bad = []
    def tables_of(name, alias):
        return {name} | (set() if alias else alias_map.get(name, set()))
    series_scanned = any(
        "system_metrics_series" in tables_of(m.group(1), m.group(2))
        for m in (re.match(r"SCAN (?:TABLE )?(\w+)(?: AS (\w+))?$", line) for line in lines) if m)
    for line in lines:
        m = re.match(r"SEARCH (?:TABLE )?(\w+)(?: AS (\w+))? USING PRIMARY KEY \(series_id=\?\)$",
                     line)
        if m and series_scanned and "system_metrics_samples" in tables_of(m.group(1), m.group(2)):
            bad.append(line)
    for line in lines:
        m = re.match(r"SCAN (?:TABLE )?(\w+)(?: AS (\w+))?(.*)$", line)
        if not m:
            continue
        name, rest = m.group(1), m.group(3)
        tables = {name} | (set() if m.group(2) else alias_map.get(name, set()))
        vt = re.match(r" VIRTUAL TABLE INDEX (\d+):(.*)$", rest)
        if vt and "system_metrics_cold" in tables:
            # the compressed samples: idxNum bit 1 = one series, 2|4 = a ts bound
            idx = int(vt.group(1))
            if not idx & 1 or (idx == 1 and series_scanned):
                bad.append(line)
            continue
        if vt:
            # a partitioned event table: the constraints each partition gets ("ts>=,job=,");
            # none is a scan of every partition, unless rows come in ts order (idxNum bit 2:
            # each partition's ts index, newest or oldest first, as ORDER BY ts LIMIT n reads)
            if tables & LARGE and not vt.group(2).strip(",") and not int(vt.group(1)) & 2:
                bad.append(line)
            continue
        if tables & LARGE and not re.search(
                r"USING (COVERING INDEX|INDEX|PRIMARY KEY|INTEGER PRIMARY KEY)", rest):
            bad.append(line)
    return bad


def check(srv, what, sql, views):
    lines = plan(srv, sql)
    bad = full_scans(lines, aliases(sql, views))
    assert not bad, (f"{what} scans a large table without an index: {bad}\n"
                     f"query: {sql}\nplan:\n  " + "\n  ".join(lines))


@pytest.mark.parametrize("name", VIEWS)
def test_view_plans(volume, name):
    srv, _ = volume
    check(srv, f"view {name}", f"SELECT * FROM {name}", view_sql(srv))


TYPICAL_SCANS = {}


def typical_marks(sql):
    return [pytest.mark.xfail(strict=True, reason=reason)
            for prefix, reason in TYPICAL_SCANS.items() if sql.startswith(prefix)]


@pytest.mark.parametrize("i", [pytest.param(i, marks=typical_marks(q))
                               for i, q in enumerate(typical_queries())])
def test_typical_query_plans(volume, i):
    srv, _ = volume
    check(srv, "typical query", typical_queries()[i], view_sql(srv))


DOCUMENTED = documented_queries()


@pytest.mark.parametrize("where,sql", [
    pytest.param(w, q, marks=[pytest.mark.xfail(strict=True, reason=KNOWN_SCANS[q])]
                 if q in KNOWN_SCANS else []) for w, q in DOCUMENTED] or
    [pytest.param("", "", marks=pytest.mark.skip(reason="no SQL in README.md or docs/*.md"))])
def test_documented_query_plans(volume, where, sql):
    srv, _ = volume
    check(srv, f"query in {where}", sql, view_sql(srv))


def test_checker_catches_a_scan(volume):
    """The check itself: a query that cannot use an index is caught, also behind an alias."""
    srv, _ = volume
    views = view_sql(srv)
    for sql in ("SELECT * FROM api_usage WHERE client_id = 'c1'",
                "SELECT count(*) FROM error_logs e WHERE e.host = 'web-1'",
                "SELECT * FROM system_metrics WHERE value > 99"):
        assert full_scans(plan(srv, sql), aliases(sql, views)), sql


@pytest.mark.parametrize("name", VIEWS)
def test_views_answer_on_the_volume(volume, name):
    """Every view answers within query.timeout (3 s by default) on this volume."""
    srv, rows = volume
    t0 = time.monotonic()
    r = srv.get(f"/api/v1/views/{name}", params={"now": REF / 1000, "window": "1d"})
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, f"{name}: {r.status_code} {r.text} after {elapsed:.2f} s"
    assert r.json()["row_count"] > 0, name
