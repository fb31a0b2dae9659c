"""A safe SQL surface: classic injection strings sent through every route of the route table
(GET / lists them), every query parameter the routes document (views with every column of the
view as a filter, series matchers, job names and ids in the path...), and every JSON body field
(each column of each table on ingestion, silences, users, tokens, sessions, heartbeats, acks),
plus line protocol and raw bodies. After each route: no answer was a 5xx, no table lost or
changed a row it had before (row sets of every plain table, read with sqlite3 itself), the
users and tokens are exactly as they were, and no file the strings name was created.

The read-only SQL route is then attacked directly: writes, ATTACH, PRAGMA writes,
load_extension, readfile/writefile, fts3_tokenizer, several statements, temp tables, VACUUM
INTO — all refused with nothing changed — a runaway query stopped at query.timeout, and the
tables a reader may not read (users, tokens, the audit log, their partitions, dbstat) refused
to a reader; password and token hashes read as NULL even to an admin.

Servers listen on 127.0.0.1 with auth off (every route reachable, as an admin) unless a test
says otherwise."""

import collections
import hashlib
import json
import re
import sqlite3
import time
import urllib.parse
from pathlib import Path

import requests

from conftest import now_ms

ROOT = Path(__file__).resolve().parents[2]

# tables opsdb's own background work may rewrite while the test runs (builtin jobs' state)
BACKGROUND = {"scheduled_jobs", "opsdb_meta"}
# the maintenance jobs that run soon after a server starts: each run adds a row to job_runs (and
# counts it in opsdb_partitions), which a read must not be blamed for
NO_MAINTENANCE = ("--set", "jobs.compaction=off", "--set", "jobs.compression=off",
                  "--set", "jobs.retention=off")
# tables whose rows count what is written (a partition's row count): they change with every
# accepted row, and are checked for existence only after writes
COUNTERS = {"opsdb_partitions"}


def injections(tmp):
    """Classic strings; the file paths they name are in tmp so the test can look for them."""
    return [
        "' OR 1=1 --",
        '"; DROP TABLE api_usage; --',
        f"1; ATTACH DATABASE '{tmp}/attached.db' AS x; --",
        "') UNION SELECT * FROM api_tokens --",
        "1 UNION SELECT secret_hash, password_hash FROM api_tokens, users",
        f"x'); SELECT load_extension('{tmp}/evil.so'); --",
        "' || readfile('/etc/passwd') || '",
        f"'; SELECT writefile('{tmp}/written.txt', 'x'); --",
        "Robert'); DELETE FROM users; UPDATE api_tokens SET revoked_at = 1; --",
        "1' AND (SELECT count(*) FROM sqlite_master) > 0 AND '1'='1",
        "%00",
        "a\x00b",
        "\\' OR \\'1\\'=\\'1",
        "1e999",
        "-1",
        "x" * 5000,
    ]


def attack_files(tmp):
    return [Path(tmp) / n for n in ("attached.db", "evil.so", "written.txt", "x")]


# ---- reading the database as sqlite3 sees it ----------------------------------------------------

def snapshot(db):
    """{table: Counter of row reprs} of every plain table (virtual tables are read through the
    physical tables they keep their rows in)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        names = [n for (n, sql) in con.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table'")
            if not (sql or "").upper().startswith("CREATE VIRTUAL")]
        snap = {}
        for n in names:
            rows = con.execute(f'SELECT * FROM "{n}"').fetchall()
            snap[n] = collections.Counter(repr(r) for r in rows)
        return snap
    finally:
        con.close()


def digest(rows):
    return hashlib.sha256("\n".join(sorted(rows.elements())).encode()).hexdigest()[:16]


def changes(before, after, exact=(), skip=BACKGROUND):
    """What a route may not have done: drop a table, lose or change a row that was there, or
    (for the tables in exact) add one."""
    found = []
    for table, rows in before.items():
        if table in skip:
            if table not in after:
                found.append(f"table {table} is gone")
            continue
        if table not in after:
            found.append(f"table {table} is gone")
            continue
        lost = rows - after[table]
        if lost:
            found.append(f"{table}: {sum(lost.values())} rows changed or deleted, e.g. "
                         f"{next(iter(lost))[:200]}")
        if table in exact and after[table] != rows:
            found.append(f"{table}: {digest(rows)} -> {digest(after[table])} "
                         f"({sum(rows.values())} -> {sum(after[table].values())} rows)")
    return found


# ---- what the routes take ------------------------------------------------------------------------

# query parameters per route path, from docs/api.md and the handlers
ROUTE_PARAMS = {
    "/api/v1/views/{name}": ["window", "now", "order", "limit", "format", "quick_ms"],
    "/api/v1/query": ["sql", "format"],
    "/api/v1/series": ["metric", "filter", "from", "to", "step", "agg", "resolution", "format"],
    "/api/v1/ingest/{table}": ["format", "precision"],
    "/write": ["precision", "db", "rp", "u", "p"],
    "/api/v2/write": ["precision", "org", "bucket"],
    "/api/v1/jobs": ["all"],
    "/api/v1/jobs/{name}/history": ["limit"],
    "/api/v1/jobs/{name}/start": ["run_id", "rid"],
    "/api/v1/jobs/{name}/success": ["run_id", "rid", "exit_code"],
    "/api/v1/jobs/{name}/fail": ["run_id", "rid", "exit_code"],
    "/api/v1/tokens": ["user"],
}
ALL_PARAMS = sorted({p for ps in ROUTE_PARAMS.values() for p in ps} | {"table", "user", "name"})

# JSON bodies: field -> a valid value (each field then gets the strings in turn)
BODIES = {
    "/api/v1/silences": {"matchers": "host=injbase", "duration": "1h", "created_by": "injbase",
                         "comment": "injbase", "starts_at": None, "ends_at": None, "id": None},
    "/api/v1/users": {"name": "injbase", "role": "reader", "password": "injbase-password"},
    "/api/v1/tokens": {"user": "nosuchuser", "expires": "1d", "tables": "api_usage",
                       "description": "injbase"},
    "/api/v1/session": {"user": "injbase", "password": "injbase-password"},
    "/api/v1/alerts/{id}/ack": {"by": "injbase"},
    "/api/v1/heartbeat": {"sources": [{"kind": "agent", "name": "injbase", "interval": "10s"}]},
}
RAW_BODIES = {"/api/v1/jobs/{name}/success", "/api/v1/jobs/{name}/fail", "/api/v1/query",
              "/api/v1/prom/write", "/api/v1/write"}


def schema_columns():
    """{table: [(column, type, valid value)]} from docs/schema.md (types, enums, bounds)."""
    doc = (ROOT / "docs" / "schema.md").read_text()
    tables, table = {}, None
    for line in doc.splitlines():
        m = re.match(r"^## (\w+)$", line)
        if m:
            table = m.group(1)
            tables[table] = []
            continue
        m = re.match(r"^\| `(\w+)` \| ([\w ]+?) \| (yes|no) \| ([^|]*) \|", line)
        if table and m:
            name, typ, _, limits = m.groups()
            enum = re.findall(r"`([^`]+)`", limits) if limits.startswith("one of") else []
            rng = re.match(r"(-?[\d.]+)\.\.", limits)
            if enum:
                value = enum[0]
            elif typ == "timestamp":
                value = now_ms()
            elif typ in ("integer", "real"):
                value = float(rng.group(1)) if rng else 1
                value = int(value) if typ == "integer" else value
            elif typ == "boolean":
                value = 0
            elif typ == "json object":
                value = {"k": "injbase"}
            else:
                value = "injbase"
            tables[table].append((name, typ, value))
    return tables


def concrete(path, arg):
    return re.sub(r"\{\w+\}", urllib.parse.quote(arg, safe=""), path)


class Attack:
    """Sends requests and keeps what answered 5xx."""

    def __init__(self, srv):
        self.srv = srv
        self.failures = []
        self.sent = 0

    def send(self, method, path, **kw):
        kw.setdefault("timeout", 60)
        try:
            r = self.srv.session.request(method, self.srv.url + path, **kw)
        except requests.RequestException as exc:
            self.failures.append(f"{method} {path[:120]}: no answer ({exc})")
            return None
        self.sent += 1
        if r.status_code >= 500:
            self.failures.append(f"{method} {path[:120]} {str(kw.get('params'))[:200]} "
                                 f"{str(kw.get('json') or kw.get('data'))[:200]}: "
                                 f"{r.status_code} {r.text[:200]}")
        return r


def seed(srv, run_cli, db):
    """Rows in every client table, a silence, a job, a user with a password and a token."""
    base = schema_columns()
    for table in ("system_metrics", "api_usage", "error_logs", "pipeline_status",
                  "handler_metrics"):
        row = {c: v for c, _, v in base[table]}
        for c, typ, _ in base[table]:
            if typ == "text" and isinstance(row[c], str) and row[c] == "injbase":
                row[c] = "seeded"
        r = srv.ingest(table, [row])
        assert r.status_code < 300, (table, r.text)
    assert srv.post("/api/v1/silences", json={"matchers": "host=seeded", "duration": "1h",
                                               "created_by": "seed"}).status_code < 300
    assert srv.post("/api/v1/jobs/seeded-job/start").status_code < 300
    cp = run_cli("user", "add", "seeded", "--role", "reader", "--password-stdin", "--db", db,
                 input="seeded-password\n")
    assert cp.returncode == 0, cp.stderr
    assert run_cli("token", "create", "seeded", "--db", db).returncode == 0


def attack_route(attack, route, strings, columns, views):
    method, path = route["method"], route["path"]
    if method == "HEAD":
        return
    for s in strings:
        # the path argument, and every parameter at once
        attack.send(method, concrete(path, s), params={p: s for p in ALL_PARAMS})
        arg = {"{table}": "api_usage", "{name}": "inj-job", "{id}": "inj-id"}
        fixed = path
        for k, v in arg.items():
            fixed = fixed.replace(k, v)
        names = ROUTE_PARAMS.get(path, [])
        if path == "/api/v1/views/{name}":
            for view, cols in views.items():
                for p in names + cols:
                    attack.send(method, f"/api/v1/views/{view}", params={p: s})
            continue
        for p in names:
            attack.send(method, fixed, params={p: s})
        if path in BODIES:
            for field in BODIES[path]:
                body = {k: v for k, v in BODIES[path].items() if v is not None}
                body[field] = s
                attack.send(method, fixed, json=body)
            attack.send(method, fixed, json={k: s for k in BODIES[path]})
        if path in RAW_BODIES:
            attack.send(method, fixed, data=s.encode())
        if path in ("/write", "/api/v2/write"):
            esc = s.replace(" ", "\\ ").replace(",", "\\,").replace("=", "\\=")
            for line in (f"{esc},host=injbase value=1", f"m,host={esc} value=1",
                         f"m,{esc}=x value=1", f"m,host=injbase {esc}=1",
                         f'm,host=injbase value=1,note="{s}"'):
                attack.send(method, fixed, data=line.encode())
        if path == "/api/v1/ingest/{table}":
            for table, cols in columns.items():
                valid = {c: v for c, _, v in cols}
                for c, typ, _ in cols:
                    attack.send(method, f"/api/v1/ingest/{table}", json=[{**valid, c: s}])
                attack.send(method, f"/api/v1/ingest/{table}",
                            json=[{c: s for c, _, _ in cols}])
                attack.send(method, f"/api/v1/ingest/{table}",
                            data=",".join(valid) + "\n" + ",".join(
                                json.dumps(s) for _ in valid) + "\n",
                            headers={"Content-Type": "text/csv"})


def test_injection_strings_through_every_route_change_nothing(run_cli, server_factory, tmp_db,
                                                              tmp_path):
    srv = server_factory(*NO_MAINTENANCE)
    seed(srv, run_cli, tmp_db)
    baseline = snapshot(tmp_db)  # the seeded rows: no route may change or delete one
    seeded = [t for t, rows in baseline.items() if any("seeded" in r for r in rows)]
    assert len(seeded) >= 8, seeded  # the check below sees the rows of every client table
    columns = schema_columns()
    for table in ("system_metrics", "api_usage", "error_logs", "pipeline_status",
                  "handler_metrics"):  # the valid rows the attack varies are valid indeed
        r = srv.ingest(table, [{c: v for c, _, v in columns[table]}])
        assert r.status_code < 300, (table, r.text)
    views = {}
    for v in srv.get("/api/v1/views").json()["views"]:
        r = srv.get(f"/api/v1/views/{v['name']}")
        assert r.status_code == 200, r.text
        views[v["name"]] = r.json()["columns"]
    assert sum(len(c) for c in views.values()) > 30
    routes = srv.get("/").json()["routes"]
    strings = injections(tmp_path)
    attack = Attack(srv)
    problems = []
    for route in routes:
        before = snapshot(tmp_db)
        attack_route(attack, route, strings, columns, views)
        after = snapshot(tmp_db)
        # a read changes nothing at all; a write adds rows (the strings as values, where they
        # are valid) but never changes or deletes one that was seeded
        readonly = route["method"] == "GET" or route["path"] == "/api/v1/query"
        found = changes(before, after, set(before) - BACKGROUND) if readonly else []
        found += changes(baseline, after, skip=BACKGROUND | COUNTERS)
        problems += [f"{route['method']} {route['path']}: {c}" for c in found]
    assert attack.sent > 2000, attack.sent
    assert not attack.failures, "\n".join(attack.failures[:40])
    assert not problems, "\n".join(problems[:40])
    created = [str(f) for f in attack_files(tmp_path) if f.exists()]
    assert not created, created
    assert srv.get("/healthz").status_code == 200
    # the seeded rows are all still there, and readable
    assert srv.count("api_usage", "service = 'seeded'") == 1
    assert srv.count("users", "name = 'seeded'") == 1


# ---- the read-only SQL route ---------------------------------------------------------------------

def refused_statements(tmp):
    return [
        "INSERT INTO api_usage (ts, service) VALUES (1, 'x')",
        "UPDATE users SET role = 'admin'",
        "DELETE FROM api_tokens",
        "DROP TABLE api_usage",
        "DROP VIEW api_performance",
        "CREATE TABLE evil (x)",
        "CREATE TEMP TABLE evil (x)",
        "CREATE TEMP VIEW evil AS SELECT 1",
        "ALTER TABLE users ADD COLUMN evil",
        "CREATE TRIGGER evil AFTER INSERT ON users BEGIN DELETE FROM users; END",
        "REPLACE INTO users (name) VALUES ('x')",
        f"ATTACH DATABASE '{tmp}/attached.db' AS x",
        f"ATTACH '{tmp}/x' AS y",
        "DETACH DATABASE main",
        "PRAGMA user_version = 99",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA writable_schema = ON",
        "PRAGMA query_only = 0",
        "PRAGMA foreign_keys = OFF",
        "SELECT * FROM pragma_journal_mode",
        f"SELECT load_extension('{tmp}/evil.so')",
        "SELECT load_extension('libc.so.6', 'system')",
        "SELECT readfile('/etc/passwd')",
        f"SELECT writefile('{tmp}/written.txt', 'x')",
        "SELECT edit('x')",
        "SELECT fts3_tokenizer('simple')",
        "SELECT 1; DROP TABLE api_usage",
        "SELECT 1; ATTACH DATABASE ':memory:' AS m",
        "BEGIN; DELETE FROM users; COMMIT",
        "SAVEPOINT s",
        f"VACUUM INTO '{tmp}/copy.db'",
        "VACUUM",
        "REINDEX",
        "ANALYZE",
        "WITH x AS (SELECT 1) DELETE FROM users",
        "INSERT INTO api_usage SELECT * FROM api_usage",
    ]


def test_sql_route_refuses_writes_attach_pragmas_extensions_and_files(server_factory, tmp_db,
                                                                       tmp_path, run_cli):
    srv = server_factory(*NO_MAINTENANCE)
    seed(srv, run_cli, tmp_db)
    assert srv.scalar("SELECT count(*) AS n FROM api_usage") >= 1  # reads work
    before = snapshot(tmp_db)
    accepted = []
    for sql in refused_statements(tmp_path):
        for send in (lambda q: srv.get("/api/v1/query", params={"sql": q}),
                     lambda q: srv.post("/api/v1/query", data=q.encode(),
                                        headers={"Content-Type": "text/plain"})):
            r = send(sql)
            if not 400 <= r.status_code < 500 or "error" not in r.json():
                accepted.append(f"{sql}: {r.status_code} {r.text[:200]}")
    assert not accepted, "\n".join(accepted)
    assert not changes(before, snapshot(tmp_db), exact=set(before) - BACKGROUND)
    assert not [f for f in list(attack_files(tmp_path)) + [tmp_path / "copy.db"] if f.exists()]
    # the CLI's query runs under the same rules
    cp = run_cli("query", "--db", tmp_db, "DELETE FROM users")
    assert cp.returncode != 0 and "read-only" in cp.stderr
    assert srv.count("users") == 1


def test_sql_route_stops_a_runaway_query_at_its_time_limit(server_factory):
    srv = server_factory("--set", "query.timeout=300ms")
    runaway = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
               "SELECT count(*) FROM c")
    for sql in (runaway, "SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
                         "SELECT x + 1 FROM c LIMIT 100000000) SELECT x FROM c) a, "
                         "(SELECT 1 UNION SELECT 2) b"):
        t0 = time.monotonic()
        r = srv.get("/api/v1/query", params={"sql": sql}, timeout=60)
        took = time.monotonic() - t0
        assert r.status_code >= 400 and "time limit" in r.json()["error"], r.text
        assert took < 10, f"the query ran {took:.1f} s past a 300 ms limit"
    assert srv.get("/api/v1/query", params={"sql": "SELECT 1 AS x"}).json()["rows"] == [{"x": 1}]


def test_sql_route_per_role_tables_and_hidden_secrets(server_factory, run_cli, tmp_db):
    assert run_cli("user", "add", "adm", "--role", "admin", "--password-stdin", "--db", tmp_db,
                   input="admin-password\n").returncode == 0
    assert run_cli("user", "add", "rd", "--role", "reader", "--db", tmp_db).returncode == 0
    admin = run_cli("token", "create", "adm", "--db", tmp_db).stdout.strip()
    reader = run_cli("token", "create", "rd", "--db", tmp_db).stdout.strip()
    srv = server_factory("--auth", "required")

    def query(token, sql):
        return srv.get("/api/v1/query", params={"sql": sql},
                       headers={"Authorization": f"Bearer {token}"})

    parts = query(admin, "SELECT name FROM opsdb_partitions WHERE table_name = 'audit_log'")
    assert parts.status_code == 200 and parts.json()["rows"], parts.text
    for sql in ("SELECT * FROM users", "SELECT secret_hash FROM api_tokens",
                "SELECT * FROM audit_log", f"SELECT * FROM {parts.json()['rows'][0]['name']}",
                "SELECT * FROM dbstat", "SELECT name, payload FROM dbstat WHERE name = 'users'",
                "SELECT (SELECT count(*) FROM users) AS n",
                "SELECT * FROM api_usage WHERE service IN (SELECT name FROM users)"):
        r = query(reader, sql)
        assert r.status_code == 403, (sql, r.status_code, r.text)
    assert query(reader, "SELECT count(*) AS n FROM api_usage").status_code == 200
    # an admin reads users and tokens, but never a password or secret hash
    rows = query(admin, "SELECT name, password_hash FROM users").json()["rows"]
    assert rows and all(r["password_hash"] is None for r in rows), rows
    rows = query(admin, "SELECT * FROM api_tokens").json()["rows"]
    assert rows and all(r["secret_hash"] is None for r in rows), rows
    r = query(admin, "SELECT count(*) AS n FROM users WHERE password_hash LIKE '$argon2id$%'")
    assert r.json()["rows"] == [{"n": 0}], r.text
