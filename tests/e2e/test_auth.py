"""Users, roles, API tokens and the audit log: every route of the route table walked with no
token, with each role, and with revoked, expired and malformed tokens; the credential schemes
clients send (Bearer, Token, Basic, Influx's ?p=); a revoke from the CLI reaching a running
server; tables a reader may not read with SQL; tables clients may not write; the mode a server
picks from its address; opsdb init's first admin; and secrets never showing in logs, errors,
the audit log or /metrics.

Servers here run with --auth required (the harness' servers listen on 127.0.0.1, where auth is
off by default)."""

import base64
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import now_ms, wait_until

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("public", "reader", "writer", "admin")
TOKEN_RE = re.compile(r"^opsdb_[0-9a-f]{12}_[0-9a-f]{64}$")


def make_user(run_cli, db, name, role):
    cp = run_cli("user", "add", name, "--role", role, "--db", db)
    assert cp.returncode == 0, cp.stderr


def make_token(run_cli, db, user, *extra):
    cp = run_cli("token", "create", user, *extra, "--db", db)
    assert cp.returncode == 0, cp.stderr
    token = cp.stdout.strip()
    assert TOKEN_RE.match(token), cp.stdout
    return token


def token_id(token):
    return token.split("_")[1]


def bearer(token):
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture
def auth_env(run_cli, server_factory, tmp_db):
    """A server with --auth required and a token of each role, plus a revoked one, an expired
    one and a writer token limited to api_usage."""
    tokens = {}
    for role in ("admin", "writer", "reader"):
        make_user(run_cli, tmp_db, f"u-{role}", role)
        tokens[role] = make_token(run_cli, tmp_db, f"u-{role}")
    tokens["revoked"] = make_token(run_cli, tmp_db, "u-admin")
    assert run_cli("token", "revoke", token_id(tokens["revoked"]), "--db", tmp_db).returncode == 0
    tokens["expired"] = make_token(run_cli, tmp_db, "u-admin", "--expires", "1s")
    tokens["scoped"] = make_token(run_cli, tmp_db, "u-writer", "--tables", "api_usage")
    srv = server_factory("--auth", "required")
    time.sleep(1.1)  # the 1s token is past its expiry now
    return srv, tokens


# ---- every route, every role ---------------------------------------------------------------

PATH_ARGS = {"{table}": "api_usage", "{name}": "nosuchthing", "{id}": "nosuchid"}


def concrete(path):
    for k, v in PATH_ARGS.items():
        path = path.replace(k, v)
    return path


def allowed(role, need):
    return need == "public" or role == "admin" or role == need


def test_every_route_declares_a_known_role(auth_env):
    srv, _ = auth_env
    routes = srv.get("/").json()["routes"]
    assert len(routes) > 30
    for r in routes:
        assert r.get("role") in ROLES, f"route {r['method']} {r['path']} has role {r.get('role')!r}"


def test_every_route_enforces_its_role(auth_env):
    """Each route with no token, each role, a revoked, an expired and a malformed token: 401
    without a valid token, 403 with a role that falls short, and otherwise the handler's own
    answer (never 401/403/500)."""
    srv, tokens = auth_env
    routes = srv.get("/").json()["routes"]
    callers = {"none": None, "reader": tokens["reader"], "writer": tokens["writer"],
               "admin": tokens["admin"], "revoked": tokens["revoked"],
               "expired": tokens["expired"], "malformed": "opsdb_nothex_123"}
    failures = []
    for r in routes:
        need = r["role"]
        assert need in ROLES, r
        path = concrete(r["path"])
        for who, token in callers.items():
            resp = srv.request(r["method"], path, headers=bearer(token), data=b"")
            got = resp.status_code
            if need == "public":
                ok = got not in (401, 403, 500)
            elif who in ("reader", "writer", "admin"):
                ok = got not in (401, 403, 500) if allowed(who, need) else got == 403
            else:
                ok = got == 401 and resp.headers.get("WWW-Authenticate", "").startswith("Bearer")
            if not ok:
                failures.append(f"{r['method']} {path} (role {need}) as {who}: {got} "
                                f"{resp.text[:200]}")
    assert not failures, "\n".join(failures)


def test_allowed_roles_get_2xx_on_read_routes(auth_env):
    srv, tokens = auth_env
    for path in ("/api/v1/views", "/api/v1/schema", "/metrics", "/api/v1/query?sql=SELECT%201"):
        assert srv.get(path, headers=bearer(tokens["reader"])).status_code == 200, path
        assert srv.get(path, headers=bearer(tokens["admin"])).status_code == 200, path
        assert srv.get(path, headers=bearer(tokens["writer"])).status_code == 403, path
    assert srv.get("/api/v1/tokens", headers=bearer(tokens["admin"])).status_code == 200


def test_refusals_name_the_reason_without_the_token(auth_env):
    srv, tokens = auth_env
    for who, reason in (("revoked", "revoked token"), ("expired", "expired token")):
        r = srv.get("/api/v1/views", headers=bearer(tokens[who]))
        assert r.status_code == 401 and reason in r.json()["error"], r.text
        assert tokens[who] not in r.text and tokens[who].split("_")[2] not in r.text
    unknown = "opsdb_" + "0" * 12 + "_" + "1" * 64
    r = srv.get("/api/v1/views", headers=bearer(unknown))
    assert r.status_code == 401 and "unknown token" in r.json()["error"] and unknown not in r.text
    # the right id with a wrong secret is as unknown as no such id
    forged = "opsdb_" + token_id(tokens["admin"]) + "_" + "2" * 64
    r = srv.get("/api/v1/views", headers=bearer(forged))
    assert r.status_code == 401 and "unknown token" in r.json()["error"]
    r = srv.get("/api/v1/views")
    assert r.status_code == 401 and "no token" in r.json()["error"]
    r = srv.get("/api/v1/tokens", headers=bearer(tokens["reader"]))
    assert r.status_code == 403 and "needs the role admin" in r.json()["error"], r.text


# ---- credential schemes ----------------------------------------------------------------------

def line(marker):
    return f"auth_test,host={marker} value=1 {now_ms() * 1_000_000}\n".encode()


def test_schemes_clients_send(auth_env):
    srv, tokens = auth_env
    w = tokens["writer"]
    basic = base64.b64encode(f"anyone:{w}".encode()).decode()
    for i, headers in enumerate(({"Authorization": f"Bearer {w}"},
                                 {"Authorization": f"Token {w}"},
                                 {"Authorization": f"Basic {basic}"})):
        r = srv.post("/api/v2/write", data=line(f"h{i}"), headers=headers)
        assert r.status_code == 204, (headers, r.text)
    assert srv.post(f"/write?u=x&p={w}", data=line("hp")).status_code == 204
    # ?p= is InfluxDB 1.x's: only /write reads it
    assert srv.post(f"/api/v2/write?p={w}", data=line("hq")).status_code == 401
    assert srv.post("/write", data=line("hx"),
                    headers={"Authorization": f"Digest {w}"}).status_code == 401
    rows = srv.get("/api/v1/query", params={"sql": "SELECT DISTINCT host FROM system_metrics "
                                                   "WHERE metric = 'auth_test_value' ORDER BY host"},
                   headers=bearer(tokens["reader"])).json()["rows"]
    assert [r["host"] for r in rows] == ["h0", "h1", "h2", "hp"]


influx = shutil.which("influx")


@pytest.mark.skipif(influx is None, reason="the influx CLI (influxdb-client) is not installed")
def test_influx_cli_writes_with_the_token_as_password(auth_env):
    srv, tokens = auth_env
    base = [influx, "-host", "127.0.0.1", "-port", str(srv.port), "-database", "db"]
    cp = subprocess.run(base + ["-username", "ci", "-password", tokens["writer"], "-execute",
                                "INSERT influx_auth,host=i1 value=3"],
                        capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr + cp.stdout
    cp = subprocess.run(base + ["-username", "ci", "-password", "wrong", "-execute",
                                "INSERT influx_auth,host=i2 value=3"],
                        capture_output=True, text=True, timeout=30)
    assert cp.returncode != 0 or "401" in cp.stdout + cp.stderr or "token" in cp.stdout + cp.stderr
    rows = srv.get("/api/v1/query", params={"sql": "SELECT host FROM system_metrics WHERE "
                                                   "metric = 'influx_auth_value'"},
                   headers=bearer(tokens["admin"])).json()["rows"]
    assert rows == [{"host": "i1"}]


# ---- revocation, tables, writes --------------------------------------------------------------

def test_revoke_from_the_cli_reaches_the_running_server(auth_env, run_cli, tmp_db):
    srv, tokens = auth_env
    t = make_token(run_cli, tmp_db, "u-reader")  # made while the server runs
    assert wait_until(lambda: srv.get("/api/v1/views", headers=bearer(t)).status_code == 200,
                      timeout=3)
    assert run_cli("token", "revoke", token_id(t), "--db", tmp_db).returncode == 0
    start = time.monotonic()
    assert wait_until(lambda: srv.get("/api/v1/views", headers=bearer(t)).status_code == 401,
                      timeout=5)
    assert time.monotonic() - start < 2.5
    # disabling a user refuses every token of theirs
    assert run_cli("user", "disable", "u-reader", "--db", tmp_db).returncode == 0
    assert wait_until(lambda: srv.get("/api/v1/views",
                                      headers=bearer(tokens["reader"])).status_code == 401,
                      timeout=5)
    assert run_cli("user", "enable", "u-reader", "--db", tmp_db).returncode == 0
    assert wait_until(lambda: srv.get("/api/v1/views",
                                      headers=bearer(tokens["reader"])).status_code == 200,
                      timeout=5)


@pytest.mark.parametrize("sql", [
    "SELECT * FROM users", "SELECT count(*) FROM api_tokens", "SELECT 1 FROM audit_log LIMIT 1",
    "SELECT secret_hash FROM main.api_tokens", "SELECT * FROM (SELECT name FROM users) u",
    "WITH x AS (SELECT * FROM api_tokens) SELECT count(*) FROM x",
    "SELECT (SELECT count(*) FROM users)", "SELECT * FROM pragma_table_info('users') "
                                             "JOIN users"])
def test_reader_cannot_read_auth_tables(auth_env, sql):
    srv, tokens = auth_env
    r = srv.get("/api/v1/query", params={"sql": sql}, headers=bearer(tokens["reader"]))
    assert r.status_code == 403, r.text
    assert "not readable with your role" in r.json()["error"]
    r = srv.get("/api/v1/query", params={"sql": sql}, headers=bearer(tokens["admin"]))
    assert r.status_code == 200, r.text


def test_reader_cannot_read_audit_partitions(auth_env):
    srv, tokens = auth_env
    parts = srv.get("/api/v1/query", params={"sql": "SELECT name FROM opsdb_partitions WHERE "
                                                    "table_name = 'audit_log'"},
                    headers=bearer(tokens["admin"])).json()["rows"]
    assert parts, "the CLI's changes made an audit_log partition"
    sql = f"SELECT * FROM {parts[0]['name']}"
    r = srv.get("/api/v1/query", params={"sql": sql}, headers=bearer(tokens["reader"]))
    assert r.status_code == 403, r.text


def test_ingest_refuses_tables_clients_do_not_write(auth_env):
    srv, tokens = auth_env
    for table in ("users", "api_tokens", "audit_log"):
        r = srv.post(f"/api/v1/ingest/{table}", json=[{"ts": now_ms()}],
                     headers=bearer(tokens["admin"]))
        assert r.status_code == 403 and "never written through ingestion" in r.text, r.text
    for table in ("scheduled_jobs", "job_runs", "alert_history", "silences", "incidents",
                  "notification_log", "collection_sources", "collection_gaps"):
        r = srv.post(f"/api/v1/ingest/{table}", json=[], headers=bearer(tokens["writer"]))
        assert r.status_code == 403 and "opsdb's own state" in r.json()["error"], (table, r.text)
    row = {"ts": now_ms() - 1000, "job": "auth-backfill", "status": "ok"}
    r = srv.post("/api/v1/ingest/job_runs", json=[row], headers=bearer(tokens["admin"]))
    assert r.status_code == 200, r.text


def test_scoped_writer_token_writes_only_its_tables(auth_env):
    srv, tokens = auth_env
    s = tokens["scoped"]
    row = {"ts": now_ms() - 1000, "method": "GET", "endpoint": "/scoped", "status_code": 200}
    assert srv.post("/api/v1/ingest/api_usage", json=[row], headers=bearer(s)).status_code == 200
    r = srv.post("/api/v1/ingest/error_logs", json=[{"ts": now_ms(), "level": "error",
                                                     "message": "x"}], headers=bearer(s))
    assert r.status_code == 403 and "error_logs" in r.json()["error"]
    assert "api_usage" in r.json()["error"]
    r = srv.post("/api/v2/write", data=line("scoped"), headers=bearer(s))
    assert r.status_code == 403 and "system_metrics" in r.json()["error"]


def test_scoped_token_calls_state_routes_only_for_its_tables(auth_env, run_cli, tmp_db):
    """Acks, silences and job pings change opsdb's state tables: a token made with --tables
    calls them only when it lists that table."""
    srv, tokens = auth_env
    s = tokens["scoped"]  # api_usage only
    silence = {"matchers": "alertname=X", "duration": "1h",
               "created_by": "t"}
    for method, path, body, table in (
            ("POST", "/api/v1/alerts/nosuchid/ack", None, "alert_history"),
            ("POST", "/api/v1/silences", silence, "silences"),
            ("DELETE", "/api/v1/silences/nosuchid", None, "silences"),
            ("POST", "/api/v1/jobs/nightly-export/start", None, "job_runs"),
            ("POST", "/api/v1/jobs/nightly-export/success", None, "job_runs"),
            ("POST", "/api/v1/jobs/nightly-export/fail", None, "job_runs")):
        r = srv.request(method, path, json=body, headers=bearer(s))
        assert r.status_code == 403, (path, r.text)
        assert table in r.json()["error"] and "api_usage" in r.json()["error"]
    # the heartbeat is the ingestion's own: any writer token sends it
    r = srv.post("/api/v1/heartbeat", json={"sources": [{"kind": "http", "name": "s1"}]},
                 headers=bearer(s))
    assert r.status_code == 200, r.text
    # a token that lists job_runs pings jobs, and still may not silence
    pinger = make_token(run_cli, tmp_db, "u-writer", "--tables", "api_usage,job_runs")
    time.sleep(1.1)  # the server's token cache takes the CLI's new token
    assert srv.post("/api/v1/jobs/nightly-export/success", headers=bearer(pinger)).status_code \
        == 200
    assert srv.post("/api/v1/silences", json=silence,
                    headers=bearer(pinger)).status_code == 403
    assert srv.post("/api/v1/silences", json=silence,
                    headers=bearer(tokens["writer"])).status_code == 200


def test_pages_of_other_origins_may_not_change_state(server_factory):
    """With auth off (loopback), a browser page of another origin could otherwise write through
    a simple cross-site POST: a request whose Origin is not the server's own, nor listed in
    http.allowed_origins, is refused when it would change state."""
    srv = server_factory("--set", "http.allowed_origins=https://grafana.example.com")
    rows = [{"ts": now_ms() - 1000, "method": "GET", "endpoint": "/origin", "status_code": 200}]
    before = srv.get("/api/v1/query", params={"sql": "SELECT count(*) AS n FROM api_usage"})
    r = srv.post("/api/v1/ingest/api_usage", json=rows,
                 headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "evil.example" in r.json()["error"]
    assert "http.allowed_origins" in r.json()["error"]
    r = srv.post("/api/v1/silences", data="{}", headers={"Origin": "null",
                                                         "Content-Type": "text/plain"})
    assert r.status_code == 403
    after = srv.get("/api/v1/query", params={"sql": "SELECT count(*) AS n FROM api_usage"})
    assert after.json()["rows"] == before.json()["rows"]
    # reading from another origin is not refused (the browser keeps the answer from the page)
    assert srv.get("/api/v1/views", headers={"Origin": "https://evil.example"}).status_code == 200
    # the server's own pages, a listed origin, and clients that send no Origin write
    own = f"http://127.0.0.1:{srv.port}"
    for headers in ({"Origin": own}, {"Origin": "https://grafana.example.com"}, {}):
        r = srv.post("/api/v1/ingest/api_usage", json=rows, headers=headers)
        assert r.status_code == 200, (headers, r.text)


def test_ingest_refuses_auth_tables_with_auth_off(server):
    """The harness' server (127.0.0.1, auth off): the auth tables stay closed to ingestion."""
    r = server.post("/api/v1/ingest/users", json=[{"ts": now_ms(), "name": "x", "role": "admin",
                                                   "created_at": now_ms()}])
    assert r.status_code == 403, r.text
    assert server.get("/api/v1/views").status_code == 200  # no token needed here


# ---- the mode a server picks ----------------------------------------------------------------

def test_auth_off_on_a_public_address_needs_insecure(run_cli, tmp_db):
    cp = run_cli("serve", "--db", tmp_db, "--listen", "0.0.0.0:0", "--auth", "off",
                 "--no-collect", timeout=30)
    assert cp.returncode != 0
    assert "refusing to serve 0.0.0.0:0 without authentication" in cp.stderr
    assert "--insecure" in cp.stderr
    cp = run_cli("serve", "--db", tmp_db, "--auth", "sometimes", timeout=30)
    assert cp.returncode != 0 and "auth.mode" in cp.stderr


def test_serve_logs_its_mode(server_factory):
    srv = server_factory()
    assert wait_until(lambda: "authentication off" in srv.stderr_text(), timeout=5)
    srv2 = server_factory("--auth", "required", db=srv.db.parent / "other.db")
    assert wait_until(lambda: "authentication required" in srv2.stderr_text(), timeout=5)


# ---- opsdb init, the token routes, the CLI clients -------------------------------------------

def test_init_creates_the_first_admin_once(run_cli, server_factory, tmp_db):
    cp = run_cli("init", "--db", tmp_db)
    assert cp.returncode == 0, cp.stderr
    tokens = [w for w in cp.stdout.split() if w.startswith("opsdb_")]
    assert len(tokens) == 1 and TOKEN_RE.match(tokens[0]), cp.stdout
    again = run_cli("init", "--db", tmp_db)
    assert again.returncode == 0 and "opsdb_" not in again.stdout
    srv = server_factory("--auth", "required")
    r = srv.get("/api/v1/users", headers=bearer(tokens[0]))
    assert r.status_code == 200 and [u["name"] for u in r.json()["rows"]] == ["admin"]


def test_init_takes_the_admin_token_from_the_environment(run_cli, server_factory, tmp_db):
    given = "opsdb_" + "ab" * 6 + "_" + "cd" * 32
    cp = run_cli("init", "--db", tmp_db, env={"OPSDB_ADMIN_TOKEN": given})
    assert cp.returncode == 0, cp.stderr
    assert given not in cp.stdout and given.split("_")[2] not in cp.stdout
    srv = server_factory("--auth", "required")
    assert srv.get("/api/v1/tokens", headers=bearer(given)).status_code == 200
    cp = run_cli("init", "--db", srv.db.parent / "bad.db", env={"OPSDB_ADMIN_TOKEN": "secret"})
    assert cp.returncode == 1 and "shaped like" in cp.stderr, cp.stderr


def test_token_routes(auth_env):
    srv, tokens = auth_env
    admin = bearer(tokens["admin"])
    r = srv.post("/api/v1/users", json={"name": "ci", "role": "writer"}, headers=admin)
    assert r.status_code == 201, r.text
    r = srv.post("/api/v1/tokens", json={"user": "ci", "expires": "1h", "tables": ["api_usage"],
                                         "description": "pipeline"}, headers=admin)
    assert r.status_code == 201, r.text
    made = r.json()
    assert TOKEN_RE.match(made["token"]) and made["user"] == "ci"
    row = {"ts": now_ms() - 1000, "method": "GET", "endpoint": "/ci", "status_code": 200}
    assert srv.post("/api/v1/ingest/api_usage", json=[row],
                    headers=bearer(made["token"])).status_code == 200
    listed = srv.get("/api/v1/tokens", params={"user": "ci"}, headers=admin)
    assert listed.status_code == 200
    assert made["token"].split("_")[2] not in listed.text
    (t,) = listed.json()["rows"]
    assert t["id"] == made["id"] and t["state"] == "active" and t["tables"] == "api_usage"
    assert srv.request("DELETE", f"/api/v1/tokens/{made['id']}", headers=admin).status_code == 200
    assert wait_until(lambda: srv.post("/api/v1/ingest/api_usage", json=[row],
                                       headers=bearer(made["token"])).status_code == 401,
                      timeout=3)
    for body, why in (({"user": "nobody"}, 404), ({"user": "ci", "expires": "soon"}, 400),
                      ({"user": "ci", "tables": ["users"]}, 400), ({}, 400)):
        assert srv.post("/api/v1/tokens", json=body, headers=admin).status_code == why, body
    assert srv.request("DELETE", "/api/v1/tokens/000000000000",
                       headers=admin).status_code == 404


def test_cli_clients_send_the_token(auth_env, run_cli):
    srv, tokens = auth_env
    run = run_cli
    cp = run("alerts", "list", "--server", srv.url)
    assert cp.returncode == 1 and "401" in cp.stderr and "no token" in cp.stderr
    cp = run("alerts", "list", "--server", srv.url, "--token", tokens["reader"])
    assert cp.returncode == 0, cp.stderr
    cp = run("jobs", "list", "--server", srv.url, env={"OPSDB_TOKEN": tokens["reader"]})
    assert cp.returncode == 0, cp.stderr
    cp = run("jobs", "pause", "nosuchjob", "--server", srv.url,
             env={"OPSDB_TOKEN": tokens["reader"]})
    assert cp.returncode == 1 and "403" in cp.stderr


def test_agent_sends_its_token(auth_env, tmp_path, run_cli):
    srv, tokens = auth_env
    run = run_cli
    spool = tmp_path / "spool"
    cp = run("agent", "--server", srv.url, "--once", "--spool", spool, timeout=60)
    assert cp.returncode == 1  # refused without a token: spooled or dropped
    cp = run("agent", "--server", srv.url, "--once", "--spool", tmp_path / "spool2",
             env={"OPSDB_AGENT_TOKEN": tokens["writer"]}, timeout=60)
    assert cp.returncode == 0, cp.stderr


# ---- the audit log and secrets ----------------------------------------------------------------

def audit_rows(srv, token):
    r = srv.get("/api/v1/query", params={"sql": "SELECT * FROM audit_log ORDER BY ts"},
                headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()["rows"]


def test_audit_log_records_admin_actions_and_refusals(auth_env, run_cli, tmp_db):
    srv, tokens = auth_env
    admin = bearer(tokens["admin"])
    assert srv.post("/api/v1/alerts/reload", headers=admin).status_code in (200, 404)
    srv.get("/api/v1/views", headers=bearer("opsdb_" + "1" * 12 + "_" + "2" * 64))
    srv.get("/api/v1/tokens", headers=bearer(tokens["reader"]))
    made = srv.post("/api/v1/tokens", json={"user": "u-reader"}, headers=admin).json()
    want = {("token.create", "ok"), ("token.revoke", "ok"), ("user.add", "ok"),
            ("POST /api/v1/alerts/reload", "ok"), ("GET /api/v1/views", "denied"),
            ("GET /api/v1/tokens", "denied")}

    def seen():
        rows = audit_rows(srv, tokens["admin"])
        return want <= {(r["action"], r["outcome"]) for r in rows} and rows

    rows = wait_until(seen, timeout=5)
    assert rows, audit_rows(srv, tokens["admin"])
    by_action = {}
    for r in rows:
        by_action.setdefault(r["action"], []).append(r)
    reload = by_action["POST /api/v1/alerts/reload"][-1]
    assert reload["actor"] == "u-admin" and reload["token_id"] == token_id(tokens["admin"])
    assert re.match(r"^127\.0\.0\.1:\d+$", reload["peer"])
    denied = by_action["GET /api/v1/tokens"][-1]
    assert denied["actor"] == "u-reader" and denied["status"] == 403
    unknown = by_action["GET /api/v1/views"][-1]
    assert unknown["actor"] == "-" and unknown["status"] == 401
    assert unknown["detail"] == "unknown token"
    created = [r for r in by_action["token.create"] if r["target"].startswith(made["id"])]
    assert created and created[0]["actor"] == "u-admin"
    assert by_action["user.add"][0]["actor"].startswith("cli:")
    assert by_action["user.add"][0]["peer"] == "cli"


def test_secrets_never_leave_the_client(auth_env, run_cli, tmp_db):
    srv, tokens = auth_env
    secrets = [t.split("_")[2] for t in tokens.values()]
    # tokens where they do not belong: in a URL path, a bad scheme, a forbidden route
    srv.request("DELETE", f"/api/v1/tokens/{tokens['reader']}", headers=bearer(tokens["reader"]))
    srv.get(f"/api/v1/views/{tokens['writer']}")
    srv.get("/api/v1/views", headers={"Authorization": f"Basic {tokens['writer']}"})
    srv.post(f"/write?p={tokens['reader']}x", data=b"x value=1")
    metrics = srv.get("/metrics", headers=bearer(tokens["admin"])).text
    assert 'opsdb_auth_checks_total{result="unknown token"}' in metrics
    wait_until(lambda: len(audit_rows(srv, tokens["admin"])) > 10, timeout=5)
    dump = run_cli("query", "SELECT * FROM audit_log", "--db", tmp_db, "--format", "json").stdout
    tables = run_cli("query", "SELECT * FROM api_tokens", "--db", tmp_db, "--format",
                     "json").stdout
    srv.stop()
    listing = run_cli("token", "list", "--db", tmp_db, "--format", "json").stdout
    for s in secrets:
        for where, text in (("stderr", srv.stderr_text()), ("metrics", metrics),
                            ("audit_log", dump), ("api_tokens", tables), ("list", listing)):
            assert s not in text, f"a token's secret is in {where}"
    # the tokens' last use was written (at the latest when the server stopped)
    used = {r["id"]: r["last_used_at"] for r in json.loads(listing)["rows"]}
    assert used[token_id(tokens["admin"])] is not None
    assert used[token_id(tokens["expired"])] is None


# ---- the CLI ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args,code,message", [
    (["user", "add", "x"], 2, "needs --role"),
    (["user", "add", "x", "--role", "boss"], 1, "not one of admin, writer, reader"),
    (["user", "add", "no spaces", "--role", "reader"], 1, "is not a user name"),
    (["user", "disable", "nobody"], 1, "no user 'nobody'"),
    (["user", "frobnicate"], 2, "expected add"),
    (["token", "create", "nobody"], 1, "no user 'nobody'"),
    (["token", "create", "admin", "--expires", "soon"], 2, "is not a duration"),
    (["token", "create", "admin", "--tables", "users"], 1, "not a table a token can be limited to"),
    (["token", "revoke", "nope"], 1, "is not a token id"),
    (["token", "revoke", "abcdefabcdef"], 1, "no token with id 'abcdefabcdef'"),
    (["token", "list", "--format", "xml"], 2, "--format"),
    (["token", "create", "admin", "--bogus"], 2, "unknown flag"),
])
def test_cli_errors(run_cli, tmp_db, args, code, message):
    assert run_cli("init", "--db", tmp_db).returncode == 0
    cp = run_cli(*args, "--db", tmp_db)
    assert cp.returncode == code, (cp.stdout, cp.stderr)
    assert message in cp.stderr, cp.stderr


@pytest.mark.parametrize("command", ["user", "token"])
def test_cli_help(run_cli, command):
    cp = run_cli(command, "--help")
    assert cp.returncode == 0 and cp.stdout.startswith(f"usage: opsdb {command}")


def test_reader_token_may_not_be_limited_to_tables(run_cli, tmp_db):
    make_user(run_cli, tmp_db, "r", "reader")
    cp = run_cli("token", "create", "r", "--tables", "api_usage", "--db", tmp_db)
    assert cp.returncode == 1 and "is a reader" in cp.stderr


# ---- docs ---------------------------------------------------------------------------------

def test_api_doc_lists_every_route_with_its_role(server):
    """docs/api.md's route table names every route of GET / with the role it declares."""
    doc = (ROOT / "docs/api.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Z]+ /[^`]*)` \| (public|reader|writer|admin) \|", doc,
                           re.M))
    missing = []
    for r in server.get("/").json()["routes"]:
        key = f"{r['method']} {r['path']}"
        if rows.get(key) != r["role"]:
            missing.append(f"{key} ({r['role']}): docs say {rows.get(key)!r}")
    assert not missing, "docs/api.md, Routes and roles:\n" + "\n".join(missing)
