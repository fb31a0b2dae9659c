"""Limits on what clients send (docs/security.md, "Limits"): each named limit is answered as
documented — the status, a JSON error naming the option — and nothing of a refused request is
stored. The connection limits are checked with raw sockets on loopback."""

import json
import socket
import time

import pytest
import requests

from conftest import now_ms, unique


def error_of(r):
    body = r.json()
    assert set(body) >= {"error", "details"}, body
    return body


def test_body_and_rows_limits_answer_413(server_factory):
    srv = server_factory("--set", "http.max_body_bytes=4096",
                         "--set", "ingest.max_rows_per_request=3")
    marker = unique("big")
    rows = [{"ts": now_ms(), "level": "error", "message": marker, "service": "s"}] * 4
    r = srv.ingest("error_logs", rows)
    assert r.status_code == 413, r.text
    assert "ingest.max_rows_per_request" in error_of(r)["error"]
    r = srv.post("/api/v1/ingest/error_logs", data=b"[" + b" " * 5000 + b"]")
    assert r.status_code == 413, r.text
    assert "http.max_body_bytes" in error_of(r)["error"]
    assert srv.count("error_logs", f"message = '{marker}'") == 0


def test_json_depth_and_string_length(server_factory):
    srv = server_factory("--set", "ingest.max_json_depth=4", "--set",
                         "ingest.max_string_bytes=100")
    marker = unique("deep")

    def row(context, message=marker):
        return {"ts": now_ms(), "level": "error", "message": message, "context": context}

    ok = srv.ingest("error_logs", [row({"a": {"b": {"c": 1}}})])  # context at 1, c's object at 4
    assert ok.status_code == 200, ok.text
    deep = srv.ingest("error_logs", [row({"a": {"b": {"c": {"d": {"e": 1}}}}})])
    assert deep.status_code == 400, deep.text
    reasons = [d["reason"] for d in error_of(deep)["details"]]
    assert any("ingest.max_json_depth" in x and "4 levels" in x for x in reasons), reasons

    fits = srv.ingest("error_logs", [row({}, marker + "x" * (100 - len(marker)))])
    assert fits.status_code == 200, fits.text
    long = srv.ingest("error_logs", [row({}, marker + "x" * 200), row({})])
    assert long.status_code == 400, long.text
    reasons = [d["reason"] for d in error_of(long)["details"]]
    assert any("ingest.max_string_bytes" in x and "100 bytes" in x for x in reasons), reasons
    # a member name counts too, and NDJSON is held to the same limits
    nd = json.dumps(row({"k" * 150: "v"})) + "\n" + json.dumps(row({}))
    r = srv.post("/api/v1/ingest/error_logs", data=nd,
                 headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 400 and "ingest.max_string_bytes" in r.text, r.text
    # only the two rows within the limits were stored
    assert srv.count("error_logs", f"message LIKE '{marker}%'") == 2


def test_header_size_answers_431(server_factory):
    srv = server_factory("--set", "http.max_header_bytes=2048")
    assert srv.get("/api/v1/schema", headers={"X-Pad": "a" * 1500}).status_code == 200
    r = srv.get("/api/v1/schema", headers={"X-Pad": "a" * 3000})
    assert r.status_code == 431, r.text
    assert "http.max_header_bytes" in error_of(r)["error"]
    # past what a connection may hold at all, libmicrohttpd itself refuses: still a 4xx
    r = srv.get("/api/v1/schema", headers={"X-Pad": "a" * 200000})
    assert r.status_code in (413, 431), r.status_code
    metrics = srv.get("/metrics").text
    assert "opsdb_http_headers_too_large_total 1" in metrics
    assert srv.get("/healthz").status_code == 200


def test_rate_limit_answers_429_with_retry_after(server_factory):
    srv = server_factory("--set", "http.rate_limit=2", "--set", "http.rate_limit_burst=4")
    s = requests.Session()
    codes = [s.get(srv.url + "/api/v1/schema", timeout=30) for _ in range(10)]
    statuses = [r.status_code for r in codes]
    # bursts of 4, 2 more per second: a quick loop of 10 gets at least one 429, and the first
    # four always pass
    assert statuses[:4] == [200] * 4, statuses
    refused = [r for r in codes if r.status_code == 429]
    assert refused, statuses
    assert set(statuses) <= {200, 429}, statuses
    retry = int(refused[0].headers["Retry-After"])
    assert 1 <= retry <= 2, refused[0].headers
    assert "http.rate_limit" in error_of(refused[0])["error"]
    # another bearer token is another client with its own bucket; probes are never limited
    other = s.get(srv.url + "/api/v1/schema", headers={"Authorization": "Bearer other"},
                  timeout=30)
    assert other.status_code == 200
    assert all(s.get(srv.url + "/healthz", timeout=30).status_code == 200 for _ in range(10))
    time.sleep(retry + 0.2)
    assert s.get(srv.url + "/api/v1/schema", timeout=30).status_code == 200
    assert "opsdb_http_rate_limited_total" in srv.get("/metrics").text


def test_series_per_metric_limit(server_factory):
    srv = server_factory("--set", "limits.max_series_per_metric=3")
    metric = unique("card")
    ts = now_ms()

    def sample(host, value=1.0):
        return {"ts": ts, "metric": metric, "host": host, "value": value}

    r = srv.ingest("system_metrics", [sample(f"h{i}") for i in range(3)])
    assert r.status_code == 200, r.text
    # one sample of a known series and one of a fourth: the whole request is refused
    r = srv.ingest("system_metrics", [dict(sample("h0", 2.0), ts=ts + 1), sample("h3")])
    assert r.status_code == 400, r.text
    msg = error_of(r)["error"]
    assert metric in msg and "limits.max_series_per_metric" in msg and "3" in msg, msg
    assert srv.count("system_metrics", f"metric = '{metric}'") == 3
    # line protocol is held to it too; other metrics and known series go on
    r = srv.post("/write", data=f"{metric},host=h9 v=1", params={"precision": "ms"})
    assert r.status_code == 204, r.text  # the metric is {metric}_v: a new one
    assert srv.ingest("system_metrics", [dict(sample("h1", 5.0), ts=ts + 2)]).status_code == 200
    # the count survives a restart (it is read back from the series table)
    srv.restart()
    r = srv.ingest("system_metrics", [sample("h4")])
    assert r.status_code == 400 and "limits.max_series_per_metric" in r.text, r.text
    assert srv.count("system_metrics", f"metric = '{metric}'") == 4


def test_labels_per_sample_limit(server_factory):
    srv = server_factory("--set", "limits.max_labels=2")
    metric = unique("lab")
    ok = {"ts": now_ms(), "metric": metric, "value": 1, "labels": {"a": "1", "b": "2"}}
    assert srv.ingest("system_metrics", [ok]).status_code == 200
    many = dict(ok, labels={"a": "1", "b": "2", "c": "\"3\""})
    r = srv.ingest("system_metrics", [many])
    assert r.status_code == 400, r.text
    reasons = [d["reason"] for d in error_of(r)["details"]]
    assert any("3 labels" in x and "limits.max_labels" in x for x in reasons), reasons
    r = srv.post("/write", data=f"{metric},a=1,b=2,c=3 v=1")
    assert r.status_code == 400 and "limits.max_labels" in r.text, r.text
    assert srv.count("system_metrics", f"metric LIKE '{metric}%'") == 1


def raw_connection(port, source="127.0.0.1"):
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return s


def closed_by_server(sock, within_s):
    """True when the server closes sock (EOF or reset) within within_s seconds."""
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_connections_per_client_address(server_factory):
    srv = server_factory("--set", "http.max_connections_per_client=4")
    srv.session.close()  # its keep-alive connection from the start counts until it is gone
    held = []
    deadline = time.monotonic() + 10
    while len(held) < 4 and time.monotonic() < deadline:
        s = raw_connection(srv.port)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        if s.recv(4096).startswith(b"HTTP/1.1 200"):
            held.append(s)  # kept alive: it holds one of the address's 4
        else:
            s.close()  # refused while the server still counted the session's connection
            time.sleep(0.1)
    assert len(held) == 4, "four keep-alive connections could not be held"
    try:
        extra = raw_connection(srv.port)
        assert closed_by_server(extra, 5), "a fifth connection from one address was kept"
        extra.close()
        # another address is another client
        other = raw_connection(srv.port, source="127.0.0.2")
        other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert other.recv(4096).startswith(b"HTTP/1.1 200")
        other.close()
    finally:
        for s in held:
            s.close()
    # the held connections are gone: the address may connect again
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if srv.get("/healthz", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.1)
    else:
        pytest.fail("the address could not connect again after closing its connections")


def test_idle_connection_timeout(server_factory):
    srv = server_factory("--set", "http.connection_timeout=1s")
    idle = raw_connection(srv.port)
    half = raw_connection(srv.port)
    half.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # a request that stops half way
    t0 = time.monotonic()
    assert closed_by_server(idle, 8) and closed_by_server(half, 8)
    assert time.monotonic() - t0 < 8
    idle.close()
    half.close()
    # a new connection (the harness session's kept-alive one was idle for as long)
    assert requests.get(srv.url + "/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize("option,value", [
    ("http.rate_limit", "-1"), ("http.max_header_bytes", "10"), ("limits.max_labels", "x"),
    ("ingest.max_json_depth", "1"), ("http.connection_timeout", "0"),
])
def test_bad_limit_values_are_refused(run_cli, tmp_db, option, value):
    r = run_cli("serve", "--db", str(tmp_db), "--listen", "127.0.0.1:0", "--no-collect",
                "--set", f"{option}={value}", timeout=30)
    assert r.returncode != 0
    assert option in r.stderr, r.stderr


COSTLY_REGEX = "user +" + "+" * 90 + "[p-9]+"


def test_costly_regexes_are_refused(server_factory, run_cli, tmp_path, tmp_db):
    """Regression of fuzz/crashes/config-fingerprint-regex-regcomp-blowup: stacked quantifiers
    made glibc's regcomp take seconds and gigabytes. Patterns from clients and from the config
    are refused before they are compiled."""
    srv = server_factory()
    t0 = time.monotonic()
    r = srv.get("/api/v1/series", params={"metric": "m", "filter": "host=~a" + "+" * 60})
    assert r.status_code == 400 and "too costly" in r.text, r.text
    r = srv.get("/api/v1/series", params={"metric": "m", "filter": "host=~((a{1,50}){1,50})"})
    assert r.status_code == 400 and "too costly" in r.text, r.text
    r = srv.get("/api/v1/series", params={"metric": "m", "filter": "host=~" + "(" * 12 + "a" +
                                          "+)" * 12})
    assert r.status_code == 400 and "too costly" in r.text, r.text
    r = srv.get("/api/v1/query", params={"sql": "SELECT 'x' REGEXP 'x" + "*" * 60 + "' AS v"})
    assert r.status_code == 400 and "too costly" in r.text, r.text
    assert time.monotonic() - t0 < 10
    ok = srv.get("/api/v1/series", params={"metric": "m", "filter": "host=~web-[0-9]{1,3}"})
    assert ok.status_code == 200, ok.text
    config = tmp_path / "costly.yaml"
    config.write_text(f'fingerprint:\n  rules:\n    - {{regex: "{COSTLY_REGEX}"}}\n')
    r = run_cli("serve", "--db", str(tmp_db), "--config", str(config), "--listen",
                "127.0.0.1:0", "--no-collect", timeout=30)
    assert r.returncode != 0 and "too costly" in r.stderr, r.stderr
