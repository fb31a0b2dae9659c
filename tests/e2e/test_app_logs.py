"""Application logs into error_logs (docs/collection.md, "Access and application logs").

JSON lines and plain-text logs with Python, Java and JavaScript stack traces are imported with
`opsdb ingest error_logs --format json-log|plain-log`; the rows must carry the mapped levels, the
joined stack traces and the exception types, skip what is below logs.min_level, and have the
fingerprints the JSON API computes when the same events are posted to a running server.
"""

import json
import time

import pytest

from conftest import now_ms


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def plain_time(ms):
    """Python logging's default: a comma before the milliseconds, no zone (read as UTC)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f",{ms % 1000:03d}"


PY_TRACE = ("Traceback (most recent call last):\n"
            '  File "billing/invoice.py", line 41, in total\n'
            "    return amount / count\n"
            "ZeroDivisionError: division by zero")
JAVA_TRACE = ("java.lang.IllegalStateException: replica unreachable\n"
              "\tat com.shop.db.Pool.get(Pool.java:88)\n"
              "\t... 12 more\n"
              "Caused by: java.net.SocketTimeoutException: connect timed out\n"
              "\tat java.net.Socket.connect(Socket.java:601)")
JS_STACK = "CardError: declined\n    at pay (pay.js:10)\n    at main (main.js:3)"


@pytest.fixture
def logs(tmp_path):
    """Writes the two logs; returns (json path, plain path, the events each should make)."""
    t = now_ms() - 120000
    json_log = tmp_path / "checkout.jsonl"
    lines = [
        {"ts": iso(t), "level": "ERROR", "msg": "payment 4411 declined for order 99",
         "logger": "payments", "trace_id": "4bf92f3577b34da6", "user": "u1",
         "error": {"type": "CardError", "message": "declined", "stack": JS_STACK}},
        {"ts": iso(t + 1), "level": "warn", "msg": "slow query took 1234 ms",
         "component": "db"},
        {"ts": iso(t + 2), "level": "info", "msg": "request served", "component": "web"},
        {"time": t + 3, "level": 60, "msg": "out of memory", "component": "worker"},
    ]
    text = "\n".join(json.dumps(x) for x in lines[:2])
    text += "\n    at Query.run (db.js:5)\n    at Pool.exec (pool.js:9)\n"  # printed after it
    text += "\n".join(json.dumps(x) for x in lines[2:]) + "\n"
    json_log.write_text(text)

    plain_log = tmp_path / "billing.log"
    plain_log.write_text(
        f"{plain_time(t)} ERROR [invoices] invoice 77 failed for 'acme'\n{PY_TRACE}\n"
        f"{plain_time(t + 1)} INFO [api] request served\n"
        f"{plain_time(t + 2)} WARNING [api] retrying request 3 of 5\n"
        f"{plain_time(t + 3)} CRITICAL [db] replica lag 120 s\n{JAVA_TRACE}\n")

    # what each event is as a row of the JSON API (the same message, type and component)
    expected = [
        {"ts": t, "level": "error", "service": "checkout", "component": "payments",
         "error_type": "CardError", "message": "payment 4411 declined for order 99",
         "stack_trace": JS_STACK, "trace_id": "4bf92f3577b34da6"},
        {"ts": t + 1, "level": "warning", "service": "checkout", "component": "db",
         "error_type": "", "message": "slow query took 1234 ms",
         "stack_trace": "    at Query.run (db.js:5)\n    at Pool.exec (pool.js:9)"},
        {"ts": t + 3, "level": "fatal", "service": "checkout", "component": "worker",
         "error_type": "", "message": "out of memory", "stack_trace": None},
        {"ts": t, "level": "error", "service": "billing", "component": "invoices",
         "error_type": "ZeroDivisionError", "message": "invoice 77 failed for 'acme'",
         "stack_trace": PY_TRACE},
        {"ts": t + 2, "level": "warning", "service": "billing", "component": "api",
         "error_type": "", "message": "retrying request 3 of 5", "stack_trace": None},
        {"ts": t + 3, "level": "critical", "service": "billing", "component": "db",
         "error_type": "java.lang.IllegalStateException", "message": "replica lag 120 s",
         "stack_trace": JAVA_TRACE},
    ]
    return json_log, plain_log, expected


COLUMNS = "ts, level, service, component, error_type, message, stack_trace"


def rows(run_cli, db, sql):
    cp = run_cli("query", sql, "--db", db, "--format", "json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)["rows"]


def test_app_logs_rows_levels_traces_and_fingerprints(logs, run_cli, tmp_db, server_factory):
    json_log, plain_log, expected = logs
    for path, fmt, n in ((json_log, "json-log", 3), (plain_log, "plain-log", 3)):
        cp = run_cli("ingest", "error_logs", path, "--format", fmt, "--db", tmp_db,
                     "--set", "logs.host=app-1")
        assert cp.returncode == 0, cp.stderr
        assert f"ingested {n} rows into error_logs" in cp.stdout
        assert "rejected" not in cp.stderr

    got = rows(run_cli, tmp_db, f"SELECT {COLUMNS}, trace_id, host, context FROM error_logs "
                                f"ORDER BY service DESC, ts")
    want = sorted(expected, key=lambda r: (r["service"] == "billing", r["ts"]))
    assert [{k: r[k] for k in want[0] if k != "trace_id"} for r in got] == \
        [{k: r[k] for k in r if k != "trace_id"} for r in want]
    assert got[0]["trace_id"] == "4bf92f3577b34da6"
    assert got[0]["context"] == '{"user":"u1"}'  # the fields without a column
    assert {r["host"] for r in got} == {"app-1"}

    # the same events through the JSON API: every message has one fingerprint
    server = server_factory(db=tmp_db)
    r = server.ingest("error_logs", [{k: v for k, v in e.items() if v is not None}
                                     for e in expected])
    assert r.status_code < 300, r.text
    groups = server.query("SELECT message, count(*) AS n, count(DISTINCT fingerprint) AS fps "
                          "FROM error_logs GROUP BY message")
    assert len(groups) == len(expected)
    for g in groups:
        assert (g["n"], g["fps"]) == (2, 1), g


def test_min_level_and_custom_pattern(run_cli, tmp_db, tmp_path):
    t = now_ms() - 60000
    log = tmp_path / "svc.log"
    log.write_text(f"{t} svc=orders lvl=30 first info\n"
                   f"{t} svc=orders lvl=50 an error\n"
                   f"{t} svc=orders lvl=20 a debug line\n")
    pattern = "^%{TIME} svc=%{SERVICE} lvl=%{LEVEL} %{MESSAGE}$"
    cp = run_cli("ingest", "error_logs", log, "--format", "plain-log", "--db", tmp_db,
                 "--set", f"logs.plain_pattern={pattern}", "--set", "logs.min_level=info")
    assert cp.returncode == 0, cp.stderr
    got = rows(run_cli, tmp_db, "SELECT ts, service, level, message FROM error_logs ORDER BY level")
    assert got == [
        {"ts": t, "service": "orders", "level": "error", "message": "an error"},
        {"ts": t, "service": "orders", "level": "info", "message": "first info"},
    ]


def test_bad_lines_and_bad_patterns(run_cli, tmp_db, tmp_path):
    t = now_ms() - 60000
    log = tmp_path / "app.jsonl"
    log.write_text("not json and no event before it\n"
                   f'{{"ts": {t}, "level": "error", "msg": "fine"}}\n'
                   f'{{"ts": {t}, "level": "shouting", "msg": "bad level"}}\n'
                   '{"ts": 1, "level": "error",\n')
    cp = run_cli("ingest", "error_logs", log, "--format", "json-log", "--db", tmp_db)
    assert cp.returncode == 0, cp.stderr
    assert "ingested 1 rows" in cp.stdout
    for n in (1, 3, 4):
        assert f"rejected line {n}:" in cp.stderr
    assert "level 'shouting' is not a level" in cp.stderr

    cp = run_cli("ingest", "error_logs", log, "--format", "plain-log", "--db", tmp_db,
                 "--set", "logs.plain_pattern=%{TIME} %{WHAT} %{MESSAGE}")
    assert cp.returncode == 1
    assert "unknown placeholder '%{WHAT}" in cp.stderr
