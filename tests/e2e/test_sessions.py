"""Passwords and dashboard sessions: opsdb user add --password-stdin and opsdb user passwd (never
a password on the command line, only an argon2id hash stored), POST /api/v1/session with a
password or a token (the cookie's attributes, the CSRF token in the body), the CSRF token
required on state-changing requests made with the cookie and not with a token, sessions ending
at logout, expiry, when the user is disabled, its password changed or the token revoked, the
role of a session being its user's, failed logins audited and rate limited (429).

Servers run with --auth required (the harness' servers listen on 127.0.0.1, where auth is off
by default)."""

import concurrent.futures
import json
import sqlite3
import time

import requests

from conftest import wait_until

PASSWORD = "correct horse battery"


def add_user(run_cli, db, name, role, password=None):
    args = ["user", "add", name, "--role", role, "--db", db]
    if password is not None:
        args.append("--password-stdin")
    cp = run_cli(*args, input=None if password is None else password + "\n")
    assert cp.returncode == 0, cp.stderr
    return cp


def make_token(run_cli, db, user):
    cp = run_cli("token", "create", user, "--db", db)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout.strip()


def login(srv, **body):
    """A fresh client (its own cookie jar) and the answer of its sign-in."""
    client = requests.Session()
    r = client.post(srv.url + "/api/v1/session", json=body, timeout=60)
    return client, r


def db_rows(db, sql, *params):
    """Rows of a plain table, read with sqlite3 itself."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def audit(run_cli, db, where):
    """audit_log rows (dicts) matching where, through opsdb query (the table is partitioned)."""
    cp = run_cli("query", "--db", db, "--format", "json",
                 f"SELECT action, outcome, status, detail, peer, target FROM audit_log WHERE "
                 f"{where} ORDER BY ts")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)["rows"]


def test_password_is_stored_as_argon2id_and_never_taken_from_the_command_line(run_cli, tmp_db):
    add_user(run_cli, tmp_db, "alice", "reader", PASSWORD)
    (stored,) = db_rows(tmp_db, "SELECT password_hash FROM users WHERE name = 'alice'")[0]
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    cp = run_cli("user", "add", "bob", "--role", "reader", "--password", PASSWORD, "--db", tmp_db)
    assert cp.returncode == 2 and "--password-stdin" in cp.stderr
    assert db_rows(tmp_db, "SELECT count(*) FROM users WHERE name = 'bob'")[0][0] == 0
    cp = run_cli("user", "passwd", "alice", "--db", tmp_db, input="short\n")
    assert cp.returncode == 1 and "8 to 1024 bytes" in cp.stderr
    cp = run_cli("user", "passwd", "alice", "--db", tmp_db, input="")
    assert cp.returncode == 1 and "no password on standard input" in cp.stderr
    cp = run_cli("user", "passwd", "nobody", "--db", tmp_db, input=PASSWORD + "\n")
    assert cp.returncode == 1 and "no user 'nobody'" in cp.stderr
    cp = run_cli("user", "passwd", "alice", "--db", tmp_db, input="another password\n")
    assert cp.returncode == 0, cp.stderr
    (changed,) = db_rows(tmp_db, "SELECT password_hash FROM users WHERE name = 'alice'")[0]
    assert changed.startswith("$argon2id$") and changed != stored
    listing = json.loads(run_cli("user", "list", "--format", "json", "--db", tmp_db).stdout)
    row = [u for u in listing["rows"] if u["name"] == "alice"][0]
    assert row["password"] == 1 and "$argon2id$" not in json.dumps(listing)
    actions = [a["action"] for a in audit(run_cli, tmp_db, "target = 'alice'")]
    assert actions == ["user.add", "user.passwd"], actions
    cp = run_cli("user", "passwd", "alice", "--remove", "--db", tmp_db)
    assert cp.returncode == 0, cp.stderr
    assert db_rows(tmp_db, "SELECT password_hash FROM users WHERE name = 'alice'")[0][0] is None
    assert run_cli("user", "passwd", "--help").returncode == 0


def test_password_session_cookie_csrf_and_logout(run_cli, server_factory, tmp_db):
    add_user(run_cli, tmp_db, "alice", "admin", PASSWORD)
    srv = server_factory("--auth", "required")
    client, r = login(srv, user="alice", password=PASSWORD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"] == "alice" and body["role"] == "admin" and len(body["csrf_token"]) == 64
    cookie = r.headers["Set-Cookie"]
    attrs = [a.strip() for a in cookie.split(";")]
    assert attrs[0].startswith("opsdb_session=") and len(attrs[0].split("=", 1)[1]) == 64
    assert "HttpOnly" in attrs and "SameSite=Strict" in attrs and "Path=/" in attrs
    assert "Secure" not in attrs  # plain HTTP: a Secure cookie would never come back
    assert "Max-Age=43200" in attrs  # auth.session_ttl 12h
    assert body["csrf_token"] not in cookie
    # reads need no CSRF token
    assert client.get(srv.url + "/api/v1/views", timeout=30).status_code == 200
    assert client.get(srv.url + "/api/v1/session", timeout=30).json()["csrf_token"] == \
        body["csrf_token"]
    # a state-changing request with the cookie alone is refused, with a wrong token too
    silence = {"matchers": "alertname=X", "duration": "1h", "created_by": "alice"}
    r = client.post(srv.url + "/api/v1/silences", json=silence, timeout=30)
    assert r.status_code == 403 and "X-CSRF-Token" in r.json()["error"], r.text
    r = client.post(srv.url + "/api/v1/silences", json=silence, timeout=30,
                    headers={"X-CSRF-Token": "0" * 64})
    assert r.status_code == 403
    r = client.post(srv.url + "/api/v1/silences", json=silence, timeout=30,
                    headers={"X-CSRF-Token": body["csrf_token"]})
    assert r.status_code in (200, 201), r.text
    # the other session's CSRF token does not fit this one
    other, r2 = login(srv, user="alice", password=PASSWORD)
    assert r2.status_code == 200
    r = client.delete(srv.url + "/api/v1/session", timeout=30,
                      headers={"X-CSRF-Token": r2.json()["csrf_token"]})
    assert r.status_code == 403
    # logout: the cookie is removed and the session refused from then on
    r = client.delete(srv.url + "/api/v1/session", timeout=30,
                      headers={"X-CSRF-Token": body["csrf_token"]})
    assert r.status_code == 200 and "Max-Age=0" in r.headers["Set-Cookie"], r.text
    stale = {"opsdb_session": attrs[0].split("=", 1)[1]}
    r = requests.get(srv.url + "/api/v1/views", cookies=stale, timeout=30)
    assert r.status_code == 401 and "no session" in r.json()["error"]
    assert other.get(srv.url + "/api/v1/views", timeout=30).status_code == 200
    # a made-up session id is as unknown as an ended one
    r = requests.get(srv.url + "/api/v1/views", cookies={"opsdb_session": "a" * 64}, timeout=30)
    assert r.status_code == 401
    rows = wait_until(lambda: [a["action"] for a in audit(run_cli, tmp_db,
                                                           "action LIKE 'session.%'")]
                      if audit(run_cli, tmp_db, "action = 'session.end' AND outcome = 'ok'")
                      else None)
    assert rows and rows.count("session.create") == 2 and "session.end" in rows, rows


def test_token_requests_need_no_csrf_and_token_sessions(run_cli, server_factory, tmp_db):
    add_user(run_cli, tmp_db, "w", "writer")
    token = make_token(run_cli, tmp_db, "w")
    srv = server_factory("--auth", "required")
    rows = [{"ts": int(time.time() * 1000), "service": "s", "method": "GET", "endpoint": "/x",
             "status_code": 200, "latency_ms": 1}]
    r = srv.ingest("api_usage", rows, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code < 300, r.text  # an Authorization header: no CSRF token needed
    # a session opened with the token acts as its user (writer): writes with the CSRF token
    client, r = login(srv, token=token)
    assert r.status_code == 200 and r.json()["role"] == "writer", r.text
    csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
    assert client.post(srv.url + "/api/v1/ingest/api_usage", json=rows, timeout=30).status_code \
        == 403
    assert client.post(srv.url + "/api/v1/ingest/api_usage", json=rows, headers=csrf,
                       timeout=30).status_code < 300
    assert client.get(srv.url + "/api/v1/views", timeout=30).status_code == 403  # not a reader
    # the cookie and an Authorization header: the header decides, without CSRF
    r = client.post(srv.url + "/api/v1/ingest/api_usage", json=rows, timeout=30,
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code < 300
    # revoking the token ends the session opened with it
    assert run_cli("token", "revoke", token.split("_")[1], "--db", tmp_db).returncode == 0
    status = wait_until(lambda: client.post(srv.url + "/api/v1/ingest/api_usage", json=rows,
                                            headers=csrf, timeout=30).status_code == 401,
                        timeout=10)
    assert status, "the session outlived the revoked token"
    _, r = login(srv, token=token)
    assert r.status_code == 401 and "revoked" in r.json()["error"]
    assert token not in srv.stderr_text()


def test_sessions_end_when_the_user_is_disabled_or_its_password_changes(run_cli, server_factory,
                                                                          tmp_db):
    add_user(run_cli, tmp_db, "r", "reader", PASSWORD)
    srv = server_factory("--auth", "required")
    first, r = login(srv, user="r", password=PASSWORD)
    assert r.status_code == 200 and r.json()["role"] == "reader"
    assert first.get(srv.url + "/api/v1/views", timeout=30).status_code == 200
    assert first.get(srv.url + "/api/v1/tokens", timeout=30).status_code == 403  # reader's role
    assert run_cli("user", "passwd", "r", "--db", tmp_db, input="a new password\n").returncode == 0
    assert wait_until(lambda: first.get(srv.url + "/api/v1/views", timeout=30).status_code == 401)
    _, r = login(srv, user="r", password=PASSWORD)
    assert r.status_code == 401
    second, r = login(srv, user="r", password="a new password")
    assert r.status_code == 200
    assert run_cli("user", "disable", "r", "--db", tmp_db).returncode == 0
    assert wait_until(lambda: second.get(srv.url + "/api/v1/views", timeout=30).status_code == 401)
    _, r = login(srv, user="r", password="a new password")
    assert r.status_code == 401


def test_session_expires_after_its_ttl(run_cli, server_factory, tmp_db):
    add_user(run_cli, tmp_db, "r", "reader", PASSWORD)
    srv = server_factory("--auth", "required", "--set", "auth.session_ttl=2s")
    client, r = login(srv, user="r", password=PASSWORD)
    assert r.status_code == 200 and "Max-Age=2" in r.headers["Set-Cookie"], r.headers
    opened = time.monotonic()
    # sent by hand: the client's cookie jar would drop it at its Max-Age by itself; the server
    # must refuse it even from a client that keeps it
    cookie = {"opsdb_session": client.cookies["opsdb_session"]}
    assert requests.get(srv.url + "/api/v1/views", cookies=cookie, timeout=30).status_code == 200
    assert wait_until(lambda: requests.get(srv.url + "/api/v1/views", cookies=cookie,
                                           timeout=30).status_code == 401, timeout=10)
    assert time.monotonic() - opened >= 1.5
    cp = run_cli("serve", "--db", tmp_db, "--set", "auth.session_ttl=0s", timeout=20)
    assert cp.returncode != 0 and "auth.session_ttl" in cp.stderr


def test_failed_logins_are_refused_alike_audited_and_rate_limited(run_cli, server_factory,
                                                                   tmp_db):
    add_user(run_cli, tmp_db, "alice", "reader", PASSWORD)
    add_user(run_cli, tmp_db, "nopass", "reader")
    reader = make_token(run_cli, tmp_db, "nopass")
    srv = server_factory("--auth", "required")
    answers = {}
    for name, body in {"wrong password": {"user": "alice", "password": "not it at all"},
                       "unknown user": {"user": "nosuch", "password": "not it at all"},
                       "no password": {"user": "nopass", "password": "not it at all"}}.items():
        _, r = login(srv, **body)
        answers[name] = (r.status_code, r.json()["error"])
    assert len(set(answers.values())) == 1 and answers["unknown user"][0] == 401, answers
    for bad in ({}, {"user": "alice"}, {"user": 1, "password": "x"}, {"token": 5},
                {"user": "alice", "password": "x", "token": "y"}, {"user": "a b", "password": "x"}):
        _, r = login(srv, **bad)
        assert r.status_code == 400, (bad, r.text)
    r = requests.post(srv.url + "/api/v1/session", data=b"not json", timeout=30)
    assert r.status_code == 400
    # many failed attempts at once: past the burst, 429 at once, without checking the password;
    # while the buckets are empty the right password is refused too
    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(lambda: login(srv, user="alice", password="guess guess")[1])
                   for _ in range(12)]
        first = next(concurrent.futures.as_completed(futures, timeout=60)).result()
        assert first.status_code == 429 and first.headers.get("Retry-After") == "1", first.text
        _, right = login(srv, user="alice", password=PASSWORD)
        codes = [f.result(timeout=120).status_code for f in futures]
    assert codes.count(429) >= 5 and set(codes) <= {401, 429}, codes
    assert right.status_code == 429, right.text
    assert wait_until(lambda: login(srv, user="alice", password=PASSWORD)[1].status_code == 200,
                      timeout=20, interval=0.5)
    assert wait_until(lambda: audit(run_cli, tmp_db, "action = 'session.create' AND outcome "
                                                     "= 'denied' AND status = 429"), timeout=10)
    denied = audit(run_cli, tmp_db, "action = 'session.create' AND outcome = 'denied'")
    details = " ".join(d["detail"] for d in denied)
    assert "wrong password" in details and "no user nosuch" in details and "failed logins" in \
        details and "has no password" in details
    assert all(d["peer"].startswith("127.0.0.1:") for d in denied)
    assert PASSWORD not in srv.stderr_text() and "guess guess" not in srv.stderr_text()
    metrics = requests.get(srv.url + "/metrics", timeout=30,
                           headers={"Authorization": "Bearer " + reader})
    assert 'opsdb_auth_logins_total{result="too many failed logins"}' in metrics.text
