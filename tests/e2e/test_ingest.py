"""POST /api/v1/ingest/{table}: every input format into every table, timestamps, validation
errors with row and field, atomicity of a request, size and row limits, and error fingerprints.

Most tests share one server per configuration (module-scoped) and tell their rows apart by a
unique marker in a text column, so they count only their own rows.
"""

import csv
import datetime as dt
import gzip
import io
import json
import zlib

import pytest
import requests

from conftest import is_sanitizer_build, now_ms, unique

JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}
CSV = {"Content-Type": "text/csv"}

# table -> (marker column, minimal valid row with the marker in that column)
TABLES = {
    "system_metrics": ("host", lambda m, ts: {"ts": ts, "host": m, "metric": "cpu_usage",
                                              "value": 1.5}),
    "api_usage": ("endpoint", lambda m, ts: {"ts": ts, "method": "GET", "endpoint": m,
                                             "status_code": 200}),
    "error_logs": ("message", lambda m, ts: {"ts": ts, "level": "error", "message": m}),
    "pipeline_status": ("pipeline", lambda m, ts: {"ts": ts, "pipeline": m, "run_id": "r1",
                                                   "status": "running"}),
    "handler_metrics": ("handler", lambda m, ts: {"ts": ts, "handler": m, "invocations": 5}),
    "alert_history": ("alert_id", lambda m, ts: {"ts": ts, "alert_id": m, "rule": "r",
                                                 "state": "firing"}),
    "scheduled_jobs": ("name", lambda m, ts: {"ts": ts, "name": m, "kind": "builtin"}),
    "job_runs": ("job", lambda m, ts: {"ts": ts, "job": m, "status": "ok"}),
}


def rows_for(table, marker, n, ts=None):
    """n valid rows for table; row i carries marker-i in the table's marker column."""
    base = ts if ts is not None else now_ms() - 60_000
    make = TABLES[table][1]
    return [make(f"{marker}-{i}", base - i) for i in range(n)]


def count_marked(srv, table, marker):
    col = TABLES[table][0]
    return srv.count(table, f"{col} LIKE '{marker}-%'")


def to_ndjson(rows):
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def to_csv(rows):
    cols = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
    return out.getvalue().encode()


def encode(fmt, rows):
    """(body bytes, headers) of rows in one of the input formats."""
    if fmt == "json_object":
        assert len(rows) == 1
        return json.dumps(rows[0]).encode(), JSON
    if fmt == "json_array":
        return json.dumps(rows).encode(), JSON
    if fmt == "ndjson":
        return to_ndjson(rows), NDJSON
    if fmt == "csv":
        return to_csv(rows), CSV
    if fmt == "gzip_ndjson":
        return gzip.compress(to_ndjson(rows)), {**NDJSON, "Content-Encoding": "gzip"}
    if fmt == "gzip_csv":
        return gzip.compress(to_csv(rows)), {**CSV, "Content-Encoding": "gzip"}
    if fmt == "gzip_json":
        return gzip.compress(json.dumps(rows).encode()), {**JSON, "Content-Encoding": "gzip"}
    raise AssertionError(fmt)


def assert_rejected(r, where, index, field):
    """r is a 400 whose details name index (as 'row' or 'line') and field."""
    assert r.status_code == 400, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["error"], str) and body["error"]
    assert "nothing was written" in body["error"]
    named = [(d.get(where), d["field"]) for d in body["details"]]
    assert (index, field) in named, f"expected {where} {index} field {field!r} in {body}"
    for d in body["details"]:
        assert set(d) == {where, "field", "reason"}, d
        assert d["reason"], d
    return body


@pytest.fixture(scope="module")
def srv(module_server_factory):
    """The shared server with the default configuration."""
    return module_server_factory()


@pytest.fixture(scope="module")
def small_srv(module_server_factory):
    """A server with small limits: 2048-byte bodies and 10 rows per request."""
    return module_server_factory("--set", "http.max_body_bytes=2048",
                                 "--set", "ingest.max_rows_per_request=10")


# ---- every format into every table --------------------------------------------------------

FORMATS = ["json_object", "json_array", "ndjson", "csv", "gzip_ndjson", "gzip_csv", "gzip_json"]


@pytest.mark.parametrize("table", sorted(TABLES))
@pytest.mark.parametrize("fmt", FORMATS)
def test_ingest_format_into_table(srv, table, fmt):
    marker = unique()
    n = 1 if fmt == "json_object" else 3
    rows = rows_for(table, marker, n)
    body, headers = encode(fmt, rows)
    r = srv.post(f"/api/v1/ingest/{table}", data=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"table": table, "rows": n}
    col = TABLES[table][0]
    got = srv.query(f"SELECT * FROM {table} WHERE {col} LIKE '{marker}-%' ORDER BY {col}")
    assert len(got) == n
    for want, have in zip(sorted(rows, key=lambda x: x[col]), got):
        for k, v in want.items():
            assert have[k] == v, (k, want, have)


def test_ndjson_detected_from_body_without_content_type(srv):
    marker = unique()
    rows = rows_for("api_usage", marker, 2)
    r = srv.post("/api/v1/ingest/api_usage", data=to_ndjson(rows))
    assert r.status_code == 200, r.text
    assert r.json() == {"table": "api_usage", "rows": 2}


def test_format_query_parameter_selects_csv(srv):
    marker = unique()
    rows = rows_for("job_runs", marker, 2)
    r = srv.post("/api/v1/ingest/job_runs?format=csv", data=to_csv(rows),
                 headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert count_marked(srv, "job_runs", marker) == 2


def test_csv_quoting_and_crlf(srv):
    marker = unique()
    ts = now_ms() - 5000
    body = (f'ts,level,message,stack_trace\r\n'
            f'{ts},error,"{marker}-0, with ""quotes""","line1\nline2"\r\n').encode()
    r = srv.post("/api/v1/ingest/error_logs", data=body, headers=CSV)
    assert r.status_code == 200, r.text
    row = srv.query(f"SELECT message, stack_trace FROM error_logs "
                    f"WHERE message LIKE '{marker}-%'")[0]
    assert row == {"message": f'{marker}-0, with "quotes"', "stack_trace": "line1\nline2"}


def test_pretty_printed_json_object(srv):
    marker = unique()
    row = rows_for("handler_metrics", marker, 1)[0]
    r = srv.post("/api/v1/ingest/handler_metrics", data=json.dumps(row, indent=4), headers=JSON)
    assert r.status_code == 200, r.text
    assert count_marked(srv, "handler_metrics", marker) == 1


def test_defaults_and_optional_columns(srv):
    marker = unique()
    r = srv.ingest("api_usage", rows_for("api_usage", marker, 1))
    assert r.status_code == 200, r.text
    row = srv.query(f"SELECT service, host, count, latency_ms, client_id FROM api_usage "
                    f"WHERE endpoint LIKE '{marker}-%'")[0]
    assert row == {"service": "", "host": "", "count": 1, "latency_ms": None, "client_id": None}


def test_scheduled_jobs_second_write_replaces_by_name(srv):
    marker = unique()
    name = f"{marker}-0"
    ts = now_ms() - 1000
    r = srv.ingest("scheduled_jobs", [{"ts": ts - 10, "name": name, "kind": "builtin",
                                       "schedule": "@hourly"}])
    assert r.status_code == 200, r.text
    r = srv.ingest("scheduled_jobs", [{"ts": ts, "name": name, "kind": "command",
                                       "schedule": "@daily"}])
    assert r.status_code == 200, r.text
    rows = srv.query(f"SELECT kind, schedule FROM scheduled_jobs WHERE name = '{name}'")
    assert rows == [{"kind": "command", "schedule": "@daily"}]


def test_level_alias_is_stored_canonically(srv):
    marker = unique()
    row = rows_for("error_logs", marker, 1)[0]
    row["level"] = "WARN"
    assert srv.ingest("error_logs", [row]).status_code == 200
    assert srv.scalar(f"SELECT level FROM error_logs WHERE message LIKE '{marker}-%'") == "warning"


# ---- timestamps ---------------------------------------------------------------------------

def rfc3339(ms, offset_minutes=0, digits=3):
    tz = dt.timezone(dt.timedelta(minutes=offset_minutes))
    t = dt.datetime.fromtimestamp(ms / 1000, tz)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        frac = f"{(ms % 1000) * 1_000_000:09d}"[:digits]
        text += "." + frac
    if offset_minutes == 0:
        return text + "Z"
    sign = "+" if offset_minutes > 0 else "-"
    return text + f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"


def ingest_ts(srv, ts_value, params=None, fmt="json_array"):
    marker = unique()
    row = rows_for("api_usage", marker, 1)[0]
    row["ts"] = ts_value
    body, headers = encode(fmt, [row])
    r = srv.post("/api/v1/ingest/api_usage", data=body, headers=headers, params=params)
    assert r.status_code == 200, r.text
    return srv.scalar(f"SELECT ts FROM api_usage WHERE endpoint LIKE '{marker}-%'")


@pytest.mark.parametrize("offset", [0, 120, -330])
def test_ts_rfc3339(srv, offset):
    ms = now_ms() - 90_000
    assert ingest_ts(srv, rfc3339(ms, offset)) == ms


def test_ts_rfc3339_whole_seconds_and_nanoseconds(srv):
    ms = (now_ms() - 90_000) // 1000 * 1000 + 123
    assert ingest_ts(srv, rfc3339(ms, 0, digits=0)) == ms - 123
    assert ingest_ts(srv, rfc3339(ms, 0, digits=9)) == ms  # sub-millisecond digits truncate


@pytest.mark.parametrize("fmt", ["json_array", "csv"])
@pytest.mark.parametrize("precision,scale", [("s", 1 / 1000), ("ms", 1), ("us", 1000),
                                             ("ns", 1_000_000), (None, 1)])
def test_ts_epoch_precision(srv, precision, scale, fmt):
    ms = (now_ms() - 120_000) // 1000 * 1000 + (0 if precision == "s" else 417)
    value = int(ms * scale) if scale >= 1 else ms // 1000
    params = {"precision": precision} if precision else None
    assert ingest_ts(srv, value, params, fmt) == ms


def test_ts_fractional_epoch_seconds(srv):
    ms = (now_ms() - 30_000) // 1000 * 1000
    assert ingest_ts(srv, ms / 1000 + 0.5, {"precision": "s"}) == ms + 500


def test_ts_shortly_in_future_is_accepted(srv):
    ms = now_ms() + 120_000
    assert ingest_ts(srv, ms) == ms


def test_future_and_retention_boundaries(srv):
    """ts may be up to 5 minutes ahead of the server's clock and as old as the table's retention
    (30 days for api_usage)."""
    now = now_ms()
    assert ingest_ts(srv, now + 4 * 60_000 + 50_000) == now + 290_000
    assert ingest_ts(srv, now - 29 * 86_400_000) == now - 29 * 86_400_000
    for ts in (now + 5 * 60_000 + 10_000, now - 30 * 86_400_000 - 60_000):
        marker = unique()
        r = srv.ingest("api_usage", rows_for("api_usage", marker, 1, ts=ts))
        assert_rejected(r, "row", 0, "ts")


def test_retention_is_per_table(srv):
    """pipeline_status keeps 90 days, api_usage 30."""
    marker = unique()
    old = now_ms() - 60 * 86_400_000
    row = rows_for("pipeline_status", marker, 1, ts=old)
    assert srv.ingest("pipeline_status", row).status_code == 200
    r = srv.ingest("api_usage", rows_for("api_usage", marker, 1, ts=old))
    assert_rejected(r, "row", 0, "ts")


def test_bad_precision_is_400(srv):
    marker = unique()
    r = srv.post("/api/v1/ingest/api_usage", params={"precision": "minutes"},
                 json=rows_for("api_usage", marker, 1))
    assert r.status_code == 400, r.text
    assert "precision" in r.json()["error"]
    assert count_marked(srv, "api_usage", marker) == 0


# ---- bad rows: 400 naming row and field, nothing written ----------------------------------

def _bad(table, change, marker):
    row = rows_for(table, marker, 2)[1]
    row[TABLES[table][0]] = f"{marker}-1"
    change(row)
    return row


def _drop(key):
    return lambda r: r.pop(key)


def _set(key, value):
    def change(r):
        r[key] = value() if callable(value) else value
    return change


# id -> (table, change to the middle row, field named, formats it applies to)
BAD_ROWS = {
    "status_code_999": ("api_usage", _set("status_code", 999), "status_code",
                        ["json", "ndjson", "csv"]),
    "unknown_field": ("api_usage", _set("colour", "red"), "colour", ["json", "ndjson"]),
    "missing_required": ("api_usage", _drop("method"), "method", ["json", "ndjson", "csv"]),
    "wrong_type_text_for_int": ("api_usage", _set("status_code", "abc"), "status_code",
                                ["json", "ndjson", "csv"]),
    "wrong_type_number_for_text": ("error_logs", _set("service", 42), "service",
                                   ["json", "ndjson"]),
    "wrong_type_bool_for_real": ("api_usage", _set("latency_ms", True), "latency_ms",
                                 ["json", "ndjson"]),
    "wrong_type_object_for_int": ("handler_metrics", _set("invocations", {"a": 1}),
                                  "invocations", ["json", "ndjson"]),
    "invalid_level": ("error_logs", _set("level", "loud"), "level", ["json", "ndjson", "csv"]),
    "invalid_enum_method": ("api_usage", _set("method", "FETCH"), "method",
                            ["json", "ndjson", "csv"]),
    "ts_in_future": ("api_usage", _set("ts", lambda: now_ms() + 10 * 60_000), "ts",
                     ["json", "ndjson", "csv"]),
    "ts_older_than_retention": ("api_usage", _set("ts", lambda: now_ms() - 31 * 86_400_000),
                                "ts", ["json", "ndjson", "csv"]),
    "ts_not_a_time": ("api_usage", _set("ts", "yesterday"), "ts", ["json", "ndjson", "csv"]),
    "too_long_string": ("api_usage", _set("service", "s" * 256), "service",
                        ["json", "ndjson", "csv"]),
    "negative_count": ("api_usage", _set("count", 0), "count", ["json", "ndjson", "csv"]),
    "labels_not_object": ("system_metrics", _set("labels", "[1,2]"), "labels",
                          ["json", "ndjson", "csv"]),
    "value_not_finite": ("system_metrics", _set("value", "nan"), "value",
                         ["json", "ndjson", "csv"]),
}


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_rejects_whole_request(srv, case, fmt):
    table, change, field, formats = BAD_ROWS[case]
    if fmt not in formats:
        pytest.skip(f"{case} cannot be written in {fmt}")
    marker = unique()
    rows = rows_for(table, marker, 3)
    rows[1] = _bad(table, change, marker)
    if fmt == "json":
        r = srv.post(f"/api/v1/ingest/{table}", data=json.dumps(rows), headers=JSON)
        body = assert_rejected(r, "row", 1, field)  # rows of an array are counted from 0
    elif fmt == "ndjson":
        r = srv.post(f"/api/v1/ingest/{table}", data=to_ndjson(rows), headers=NDJSON)
        body = assert_rejected(r, "line", 2, field)
    else:
        r = srv.post(f"/api/v1/ingest/{table}", data=to_csv(rows), headers=CSV)
        body = assert_rejected(r, "line", 3, field)  # the header is line 1
    assert body["rejected"] == 1
    assert count_marked(srv, table, marker) == 0


def test_unknown_csv_header_column(srv):
    marker = unique()
    rows = rows_for("api_usage", marker, 2)
    rows[0]["colour"] = "red"
    r = srv.post("/api/v1/ingest/api_usage", data=to_csv(rows), headers=CSV)
    assert_rejected(r, "line", 1, "colour")
    assert count_marked(srv, "api_usage", marker) == 0


def test_csv_row_with_wrong_field_count(srv):
    marker = unique()
    ts = now_ms() - 1000
    body = (f"ts,method,endpoint,status_code\n{ts},GET,{marker}-0,200\n"
            f"{ts},GET,{marker}-1\n").encode()
    r = srv.post("/api/v1/ingest/api_usage", data=body, headers=CSV)
    assert_rejected(r, "line", 3, "")
    assert count_marked(srv, "api_usage", marker) == 0


def test_single_object_bad_row(srv):
    marker = unique()
    row = rows_for("api_usage", marker, 1)[0]
    row["status_code"] = 999
    r = srv.post("/api/v1/ingest/api_usage", data=json.dumps(row), headers=JSON)
    assert_rejected(r, "row", 0, "status_code")
    assert count_marked(srv, "api_usage", marker) == 0


def test_bad_json_line_in_ndjson(srv):
    marker = unique()
    lines = to_ndjson(rows_for("api_usage", marker, 3)).split(b"\n")
    lines[1] = lines[1][:-5]  # cut the closing brace and more
    r = srv.post("/api/v1/ingest/api_usage", data=b"\n".join(lines), headers=NDJSON)
    assert_rejected(r, "line", 2, "")
    assert count_marked(srv, "api_usage", marker) == 0


def test_bad_json_array(srv):
    marker = unique()
    body = json.dumps(rows_for("api_usage", marker, 3))[:-3]
    r = srv.post("/api/v1/ingest/api_usage", data=body, headers=JSON)
    assert r.status_code == 400, r.text
    assert r.json()["details"]
    assert count_marked(srv, "api_usage", marker) == 0


def test_array_element_not_an_object(srv):
    marker = unique()
    rows = rows_for("api_usage", marker, 2)
    r = srv.post("/api/v1/ingest/api_usage", data=json.dumps([rows[0], 42, rows[1]]),
                 headers=JSON)
    assert_rejected(r, "row", 1, "")
    assert count_marked(srv, "api_usage", marker) == 0


def test_invalid_utf8_in_ndjson(srv):
    marker = unique()
    rows = rows_for("error_logs", marker, 3)
    lines = to_ndjson(rows).split(b"\n")
    lines[1] = lines[1].replace(f"{marker}-1".encode(), f"{marker}-1 \xff\xfe".encode("latin-1"))
    r = srv.post("/api/v1/ingest/error_logs", data=b"\n".join(lines), headers=NDJSON)
    assert_rejected(r, "line", 2, "message")
    assert count_marked(srv, "error_logs", marker) == 0


@pytest.mark.parametrize("bad", [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf"],
                         ids=["ff", "truncated", "surrogate", "overlong"])
def test_invalid_utf8_in_csv(srv, bad):
    marker = unique()
    ts = now_ms() - 1000
    body = (f"ts,level,message\n{ts},error,{marker}-0\n".encode()
            + f"{ts},error,{marker}-1 ".encode() + bad + b"\n")
    r = srv.post("/api/v1/ingest/error_logs", data=body, headers=CSV)
    assert_rejected(r, "line", 3, "message")
    assert count_marked(srv, "error_logs", marker) == 0


def test_valid_multibyte_utf8_is_kept(srv):
    marker = unique()
    row = rows_for("error_logs", marker, 1)[0]
    row["message"] += " — naïve ☃ 𝄞"
    assert srv.ingest("error_logs", [row]).status_code == 200  # \u escapes, surrogate pair
    raw = dict(row, message=row["message"].replace(f"{marker}-0", f"{marker}-1"))
    r = srv.post("/api/v1/ingest/error_logs", data=json.dumps(raw, ensure_ascii=False).encode(),
                 headers=JSON)
    assert r.status_code == 200, r.text
    got = srv.query(f"SELECT message FROM error_logs WHERE message LIKE '{marker}-%' "
                    f"ORDER BY message")
    assert [g["message"] for g in got] == [row["message"], raw["message"]]


def test_string_at_limit_is_accepted_over_limit_rejected(srv):
    marker = unique()
    rows = rows_for("api_usage", marker, 1)
    rows[0]["endpoint"] = f"{marker}-" + "e" * (1024 - len(marker) - 1)
    assert len(rows[0]["endpoint"]) == 1024
    assert srv.ingest("api_usage", rows).status_code == 200
    rows[0]["endpoint"] += "e"
    assert_rejected(srv.ingest("api_usage", rows), "row", 0, "endpoint")
    assert count_marked(srv, "api_usage", marker) == 1


def test_two_bad_fields_in_one_row_count_once(srv):
    marker = unique()
    rows = rows_for("api_usage", marker, 2)
    rows[1]["status_code"] = 999
    rows[1]["method"] = "FETCH"
    body = assert_rejected(srv.ingest("api_usage", rows), "row", 1, "status_code")
    assert (1, "method") in [(d["row"], d["field"]) for d in body["details"]]
    assert body["rejected"] == 1


def test_at_most_100_details(srv):
    marker = unique()
    rows = rows_for("api_usage", marker, 250)
    for row in rows:
        row["status_code"] = 999
    r = srv.ingest("api_usage", rows)
    assert r.status_code == 400
    body = r.json()
    assert len(body["details"]) == 100
    assert body["rejected"] == 250
    assert [d["row"] for d in body["details"]] == list(range(100))
    assert count_marked(srv, "api_usage", marker) == 0


def test_empty_body_is_400(srv):
    for headers in (JSON, NDJSON, CSV):
        r = srv.post("/api/v1/ingest/api_usage", data=b"", headers=headers)
        assert r.status_code == 400, (headers, r.text)
        assert r.json()["error"]


def test_unknown_table_is_404(srv):
    r = srv.post("/api/v1/ingest/no_such_table", json={"ts": now_ms()})
    assert r.status_code == 404
    body = r.json()
    assert "no_such_table" in body["error"]
    assert "api_usage" in body["error"]  # the message lists the tables


def test_get_on_ingest_is_405(srv):
    r = srv.get("/api/v1/ingest/api_usage")
    assert r.status_code == 405
    assert r.json()["error"]


def test_unsupported_content_encoding_is_415(srv):
    marker = unique()
    r = srv.post("/api/v1/ingest/api_usage", data=json.dumps(rows_for("api_usage", marker, 1)),
                 headers={**JSON, "Content-Encoding": "br"})
    assert r.status_code == 415, r.text
    assert count_marked(srv, "api_usage", marker) == 0


def test_corrupt_gzip_is_400(srv):
    marker = unique()
    data = gzip.compress(to_ndjson(rows_for("api_usage", marker, 3)))
    for body in (data[: len(data) // 2], b"\x1f\x8b\x08\x00garbage-garbage", data[:-8] + b"x" * 8):
        r = srv.post("/api/v1/ingest/api_usage", data=body,
                     headers={**NDJSON, "Content-Encoding": "gzip"})
        assert r.status_code == 400, r.text
        assert "gzip" in r.json()["error"]
    assert count_marked(srv, "api_usage", marker) == 0


def test_deflate_content_encoding(srv):
    marker = unique()
    body = zlib.compress(to_ndjson(rows_for("api_usage", marker, 2)))
    r = srv.post("/api/v1/ingest/api_usage", data=body,
                 headers={**NDJSON, "Content-Encoding": "deflate"})
    assert r.status_code == 200, r.text
    assert count_marked(srv, "api_usage", marker) == 2


# ---- limits -------------------------------------------------------------------------------

def padded_rows(marker, n, size):
    """n api_usage rows whose JSON array is at least size bytes."""
    rows = rows_for("api_usage", marker, n)
    pad = max(0, size // n - 100)
    for row in rows:
        row["service"] = "p" * min(pad, 255)
        row["client_id"] = "c" * min(max(0, pad - 255), 255)
    return rows


def test_body_over_limit_is_413(small_srv):
    marker = unique()
    body = json.dumps(padded_rows(marker, 5, 3000)).encode()
    assert len(body) > 2048
    r = small_srv.post("/api/v1/ingest/api_usage", data=body, headers=JSON)
    assert r.status_code == 413, r.text
    assert "http.max_body_bytes" in r.json()["error"]
    assert count_marked(small_srv, "api_usage", marker) == 0


def test_body_just_under_limit_is_accepted(small_srv):
    marker = unique()
    rows = rows_for("api_usage", marker, 5)
    body = json.dumps(rows).encode()
    body += b" " * (2048 - len(body))
    assert len(body) == 2048
    r = small_srv.post("/api/v1/ingest/api_usage", data=body, headers=JSON)
    assert r.status_code == 200, r.text
    assert count_marked(small_srv, "api_usage", marker) == 5


def test_chunked_body_over_limit_is_413(small_srv):
    marker = unique()
    body = to_ndjson(padded_rows(marker, 8, 4000))
    assert len(body) > 2048

    def chunks():
        for i in range(0, len(body), 500):
            yield body[i:i + 500]

    r = small_srv.post("/api/v1/ingest/api_usage", data=chunks(), headers=NDJSON)
    assert r.status_code == 413, r.text
    assert count_marked(small_srv, "api_usage", marker) == 0


def gzip_bomb(decoded_bytes, chunk=1 << 20):
    """A gzip stream of decoded_bytes spaces, built without holding them in memory."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [z.compress(b"[")]
    block = b" " * chunk
    for _ in range(decoded_bytes // chunk):
        parts.append(z.compress(block))
    parts.append(z.compress(b"]"))
    parts.append(z.flush())
    return b"".join(parts)


def test_gzip_bomb_over_small_limit_is_413(small_srv):
    body = gzip_bomb(1 << 20)
    assert len(body) < 2048
    r = small_srv.post("/api/v1/ingest/api_usage", data=body,
                       headers={**JSON, "Content-Encoding": "gzip"})
    assert r.status_code == 413, r.text
    assert r.json()["error"]


def test_gzip_bomb_over_default_limit_is_413(srv):
    body = gzip_bomb(100 << 20)  # 100 MiB decoded, about 100 KB sent; the limit is 64 MiB
    r = srv.post("/api/v1/ingest/api_usage", data=body,
                 headers={**JSON, "Content-Encoding": "gzip"})
    assert r.status_code == 413, r.text
    assert srv.get("/healthz").status_code == 200


@pytest.mark.parametrize("fmt", ["json_array", "ndjson", "csv", "gzip_ndjson"])
def test_row_limit(small_srv, fmt):
    marker = unique()
    body, headers = encode(fmt, rows_for("api_usage", marker, 10))
    r = small_srv.post("/api/v1/ingest/api_usage", data=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == 10
    marker = unique()
    body, headers = encode(fmt, rows_for("api_usage", marker, 11))
    assert len(body) <= 2048
    r = small_srv.post("/api/v1/ingest/api_usage", data=body, headers=headers)
    assert r.status_code == 413, r.text
    assert "ingest.max_rows_per_request" in r.json()["error"]
    assert count_marked(small_srv, "api_usage", marker) == 0


# ---- fingerprints -------------------------------------------------------------------------

def fingerprints(srv, messages, extra=None):
    """Ingests one error_logs row per message and returns their fingerprints, in order."""
    marker = unique()
    ts = now_ms() - 1000
    rows = []
    for i, msg in enumerate(messages):
        row = {"ts": ts, "level": "error", "message": msg, "trace_id": f"{marker}-{i}",
               "component": "api", "error_type": "E"}
        row.update((extra or [{}] * len(messages))[i])
        rows.append(row)
    r = srv.ingest("error_logs", rows)
    assert r.status_code == 200, r.text
    got = {row["trace_id"]: row["fingerprint"] for row in srv.query(
        f"SELECT trace_id, fingerprint FROM error_logs WHERE trace_id LIKE '{marker}-%'")}
    return [got[f"{marker}-{i}"] for i in range(len(messages))]


SAME_ERROR = {
    "numbers": ("db timed out after 30 s (attempt 3 of 5)",
                "db timed out after 4500 s (attempt 12 of 50)"),
    "decimals_and_ips": ("slow answer 12.5 ms from 10.0.0.1",
                         "slow answer 7.25 ms from 192.168.1.20"),
    "uuid": ("order 123e4567-e89b-12d3-a456-426614174000 not found",
             "order 9B2F1C3E-0A4D-4E5F-8A6B-7C8D9E0F1A2B not found"),
    "hex_0x": ("bad pointer 0x7ffd5a3c in worker", "bad pointer 0xDEADBEEF01 in worker"),
    "hex_id": ("commit 3f2a9c1d8e missing", "commit a9b8c7d6e5f4 missing"),
    "double_quoted": ('key "alpha" is not in the cache', 'key "beta gamma 42" is not in the cache'),
    "single_quoted": ("user 'bob' has no role", "user 'alice-smith' has no role"),
    "mixed": ('request 8f14e45f-ceea-467f-a0e6-1d2c3b4a5f6e for "x" took 1234 ms',
              "request 00000000-0000-0000-0000-000000000000 for \"yy zz\" took 5 ms"),
}


@pytest.mark.parametrize("case", sorted(SAME_ERROR))
def test_fingerprint_folds_variable_parts(srv, case):
    a, b = fingerprints(srv, SAME_ERROR[case])
    assert a == b
    assert len(a) == 16 and all(c in "0123456789abcdef" for c in a), a


def test_fingerprint_differs_for_different_errors(srv):
    fps = fingerprints(srv, ["disk full on /var", "permission denied on /var",
                             "connection refused", "connection reset"])
    assert len(set(fps)) == 4


def test_fingerprint_depends_on_type_and_component(srv):
    msg = "queue is full"
    fps = fingerprints(srv, [msg, msg, msg], extra=[{}, {"error_type": "Other"},
                                                    {"component": "worker"}])
    assert len(set(fps)) == 3


def test_fingerprint_words_with_digits_are_not_folded(srv):
    """Digits inside words (ids like v2, http2) are part of the message."""
    a, b = fingerprints(srv, ["upstream http2 failed", "upstream http3 failed"])
    assert a != b


def test_client_sent_fingerprint_is_kept(srv):
    fps = fingerprints(srv, ["a 1", "a 2"], extra=[{"fingerprint": "my-own-group"}, {}])
    assert fps[0] == "my-own-group"
    assert fps[1] != "my-own-group"


def test_fingerprint_over_ndjson_and_csv_matches_json(srv):
    marker = unique()
    ts = now_ms() - 1000
    base = {"ts": ts, "level": "error", "component": "api", "error_type": "E"}
    rows = [dict(base, message="timeout after 5 ms", trace_id=f"{marker}-{i}") for i in range(3)]
    assert srv.ingest("error_logs", rows[:1]).status_code == 200
    assert srv.post("/api/v1/ingest/error_logs", data=to_ndjson(rows[1:2]),
                    headers=NDJSON).status_code == 200
    assert srv.post("/api/v1/ingest/error_logs", data=to_csv(rows[2:]),
                    headers=CSV).status_code == 200
    fps = {r["fingerprint"] for r in srv.query(
        f"SELECT fingerprint FROM error_logs WHERE trace_id LIKE '{marker}-%'")}
    assert len(fps) == 1


FP_CONFIG = """\
fingerprint:
  rules:
    - regex: "user [a-z]+"
      replacement: "user <name>"
"""


def test_fingerprint_rules_from_config_file(srv, module_server_factory):
    messages = ["login failed for user alice", "login failed for user bob"]
    default_a, default_b = fingerprints(srv, messages)
    assert default_a != default_b
    ruled = module_server_factory(config=FP_CONFIG)
    a, b = fingerprints(ruled, messages)
    assert a == b
    # the rule runs after the built-in folding: numbers still fold
    c, d = fingerprints(ruled, ["user carol got 3 errors", "user dave got 17 errors"])
    assert c == d
    # a different message is still a different error
    assert fingerprints(ruled, ["logout failed for user alice"])[0] != a


def test_bad_fingerprint_rule_stops_the_server(tmp_path, run_cli):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text('fingerprint:\n  rules:\n    - regex: "user ([a-z"\n')
    cp = run_cli("serve", "--db", tmp_path / "x.db", "--listen", "127.0.0.1:0",
                 "--config", cfg, timeout=30)
    assert cp.returncode != 0
    assert "regex" in cp.stderr


# ---- column types -------------------------------------------------------------------------

def test_labels_object_is_stored_canonically(srv):
    marker = unique()
    rows = rows_for("system_metrics", marker, 3)
    rows[0]["labels"] = {"zone": "b", "app": "web"}
    rows[1]["labels"] = '{"zone": "b",   "app": "web"}'  # JSON text in a string
    rows[2]["labels"] = {}
    r = srv.ingest("system_metrics", rows)
    assert r.status_code == 200, r.text
    got = [g["labels"] for g in srv.query(
        f"SELECT labels FROM system_metrics WHERE host LIKE '{marker}-%' ORDER BY host")]
    assert got == ['{"app":"web","zone":"b"}', '{"app":"web","zone":"b"}', "{}"]


@pytest.mark.parametrize("labels", [["x"], "not json", '{"a":', "[]", 42])
def test_labels_must_be_an_object(srv, labels):
    marker = unique()
    rows = rows_for("system_metrics", marker, 1)
    rows[0]["labels"] = labels
    assert_rejected(srv.ingest("system_metrics", rows), "row", 0, "labels")
    assert count_marked(srv, "system_metrics", marker) == 0


@pytest.mark.parametrize("fmt,labels", [("json", {"n": 1}), ("json", {"a": {"b": "c"}}),
                                        ("json", '{"n": 1}'), ("csv", '{"n": true}')])
def test_labels_values_must_be_strings(server_factory, fmt, labels):
    s = server_factory()  # its own server: a use-after-free here once crashed it
    marker = unique()
    rows = rows_for("system_metrics", marker, 1)
    rows[0]["labels"] = labels
    body, headers = encode("csv" if fmt == "csv" else "json_array", rows)
    try:
        r = s.post("/api/v1/ingest/system_metrics", data=body, headers=headers)
    finally:
        s.stop()  # fails the test when the server crashed or reported a sanitizer error
    body = assert_rejected(r, "row" if fmt == "json" else "line", 0 if fmt == "json" else 2,
                           "labels")
    assert "string" in body["details"][0]["reason"]


def test_json_context_column(srv):
    marker = unique()
    rows = rows_for("error_logs", marker, 2)
    rows[0]["context"] = {"user": 7, "tags": ["a", "b"]}
    rows[1]["context"] = [1, 2]
    assert_rejected(srv.ingest("error_logs", rows), "row", 1, "context")
    rows = rows[:1]
    assert srv.ingest("error_logs", rows).status_code == 200
    got = srv.scalar(f"SELECT context FROM error_logs WHERE message LIKE '{marker}-%'")
    assert json.loads(got) == {"user": 7, "tags": ["a", "b"]}


@pytest.mark.parametrize("fmt,true_value,false_value", [("json", True, False), ("json", 1, 0),
                                                        ("csv", "yes", "no"),
                                                        ("csv", "true", "false"),
                                                        ("csv", "1", "0")])
def test_boolean_column(srv, fmt, true_value, false_value):
    marker = unique()
    rows = rows_for("alert_history", marker, 2)
    rows[0]["notified"] = true_value
    rows[1]["notified"] = false_value
    body, headers = encode("csv" if fmt == "csv" else "json_array", rows)
    r = srv.post("/api/v1/ingest/alert_history", data=body, headers=headers)
    assert r.status_code == 200, r.text
    got = srv.query(f"SELECT notified FROM alert_history WHERE alert_id LIKE '{marker}-%' "
                    f"ORDER BY alert_id")
    assert [g["notified"] for g in got] == [1, 0]


def test_boolean_column_rejects_other_values(srv):
    marker = unique()
    rows = rows_for("alert_history", marker, 1)
    rows[0]["notified"] = 2
    assert_rejected(srv.ingest("alert_history", rows), "row", 0, "notified")
    rows[0]["notified"] = "maybe"
    assert_rejected(srv.ingest("alert_history", rows), "row", 0, "notified")


def test_duplicate_json_keys_are_rejected(srv):
    marker = unique()
    row = json.dumps(rows_for("api_usage", marker, 1)[0])
    body = row[:-1] + ', "status_code": 500}'
    r = srv.post("/api/v1/ingest/api_usage", data=f"[{body}]", headers=JSON)
    assert r.status_code == 400, r.text
    assert count_marked(srv, "api_usage", marker) == 0


def test_null_is_missing(srv):
    marker = unique()
    rows = rows_for("api_usage", marker, 2)
    rows[0]["latency_ms"] = None  # optional: fine
    rows[1]["method"] = None  # required: missing
    assert_rejected(srv.ingest("api_usage", rows), "row", 1, "method")


@pytest.mark.parametrize("tail", ["x", "xyz,1"])
def test_csv_text_after_closing_quote_is_rejected(srv, tail):
    marker = unique()
    ts = now_ms() - 1000
    body = f'ts,level,message\n{ts},error,"{marker}-0"{tail}\n{ts},error,{marker}-1\n'.encode()
    r = srv.post("/api/v1/ingest/error_logs", data=body, headers=CSV)
    assert_rejected(r, "line", 2, "message")
    assert count_marked(srv, "error_logs", marker) == 0


def test_body_far_over_limit_is_413(small_srv):
    r = small_srv.post("/api/v1/ingest/api_usage", data=b"[" + b" " * 5_000_000 + b"]",
                       headers=JSON)
    assert r.status_code == 413, r.text
    assert small_srv.get("/healthz").status_code == 200


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_at_most_100_details_in_line_formats(srv, fmt):
    marker = unique()
    rows = rows_for("api_usage", marker, 150)
    for row in rows:
        row["method"] = "FETCH"
    body, headers = encode(fmt, rows)
    r = srv.post("/api/v1/ingest/api_usage", data=body, headers=headers)
    assert r.status_code == 400
    body = r.json()
    assert len(body["details"]) == 100
    assert body["rejected"] == 150
    first = 1 if fmt == "ndjson" else 2
    assert [d["line"] for d in body["details"]] == list(range(first, first + 100))
    assert count_marked(srv, "api_usage", marker) == 0


# ---- JSON syntax (the scanner reads RFC 8259 JSON and nothing else) -----------------------

def post_raw(srv, table, text, headers=JSON):
    return srv.post(f"/api/v1/ingest/{table}", data=text.encode() if isinstance(text, str)
                    else text, headers=headers)


def test_json_escapes_are_decoded(srv):
    marker = unique()
    ts = now_ms() - 1000
    body = ('{"ts": %d, "level": "error", "message": "%s-0 q\\"\\\\\\/\\b\\f\\n\\r\\t'
            '\\u00e9\\u2603\\ud834\\udd1e"}' % (ts, marker))
    r = post_raw(srv, "error_logs", body)
    assert r.status_code == 200, r.text
    assert srv.scalar(f"SELECT message FROM error_logs WHERE message LIKE '{marker}-%'") == \
        f'{marker}-0 q"\\/\b\f\n\r\té☃𝄞'


def test_json_escaped_member_names(srv):
    marker = unique()
    ts = now_ms() - 1000
    body = '{"ts": %d, "level": "error", "mess\\u0061ge": "%s-0"}' % (ts, marker)
    assert post_raw(srv, "error_logs", body).status_code == 200
    assert count_marked(srv, "error_logs", marker) == 1
    # the same member twice, once escaped, is a duplicate
    body = '{"ts": %d, "level": "error", "message": "%s-1", "mess\\u0061ge": "x"}' % (ts, marker)
    assert_rejected(post_raw(srv, "error_logs", body), "row", 0, "message")


@pytest.mark.parametrize("value,stored", [("2.0e2", 200), ("200.0", 200), ("2E+2", 200)])
def test_json_integral_reals_fit_integer_columns(srv, value, stored):
    marker = unique()
    row = json.dumps(rows_for("api_usage", marker, 1)[0]).replace('"status_code": 200',
                                                                  f'"status_code": {value}')
    assert post_raw(srv, "api_usage", row).status_code == 200
    assert srv.scalar(f"SELECT status_code FROM api_usage WHERE endpoint LIKE '{marker}-%'") \
        == stored


@pytest.mark.parametrize("value", ["200.5", "99999999999999999999999", "1e400", "-1e400"])
def test_json_numbers_that_do_not_fit(srv, value):
    marker = unique()
    row = json.dumps(rows_for("api_usage", marker, 1)[0]).replace('"status_code": 200',
                                                                  f'"status_code": {value}')
    assert_rejected(post_raw(srv, "api_usage", row), "row", 0, "status_code")


INVALID_JSON = {
    "plus_sign": '"status_code": +200',
    "leading_zero": '"status_code": 0200',
    "bare_minus": '"status_code": -',
    "dot_without_digits": '"status_code": 2.',
    "exponent_without_digits": '"status_code": 2e',
    "hex": '"status_code": 0x10',
    "nan_literal": '"status_code": NaN',
    "infinity_literal": '"status_code": Infinity',
    "single_quotes": "'status_code': 200",
    "unquoted_key": 'status_code: 200',
    "trailing_comma": '"status_code": 200,',
    "truncated_true": '"status_code": tru',
    "capital_true": '"status_code": True',
    "raw_tab_in_string": '"status_code": 200, "service": "a\tb"',
    "raw_newline_in_string": '"status_code": 200, "service": "a\u0001b"',
    "bad_escape": '"status_code": 200, "service": "a\\qb"',
    "short_unicode_escape": '"status_code": 200, "service": "\\u12"',
    "lone_high_surrogate": '"status_code": 200, "service": "\\ud800"',
    "lone_low_surrogate": '"status_code": 200, "service": "\\udc00"',
    "comment": '"status_code": 200 /* c */',
    "missing_colon": '"status_code" 200',
    "missing_comma": '"status_code": 200 "host": "h"',
}


@pytest.mark.parametrize("case", sorted(INVALID_JSON))
def test_invalid_json_is_400(srv, case):
    marker = unique()
    row = json.dumps(rows_for("api_usage", marker, 1)[0])
    body = row.replace('"status_code": 200', INVALID_JSON[case])
    assert body != row
    for text in (body, f"[{body}]"):
        r = post_raw(srv, "api_usage", text)
        assert r.status_code == 400, (text, r.text)
        assert r.json()["details"], r.text
    r = post_raw(srv, "api_usage", body + "\n" + row + "\n", NDJSON)
    assert_rejected(r, "line", 1, "")
    assert count_marked(srv, "api_usage", marker) == 0


@pytest.mark.parametrize("text", ["[", "{", '{"ts', "[{}", "]", "}", '"text"', "42", "null",
                                  "[1, 2]", "[[]]", "\ufeff{}"])
def test_json_bodies_that_are_not_rows(srv, text):
    r = post_raw(srv, "api_usage", text)
    assert r.status_code == 400, (text, r.text)
    assert r.json()["details"]


def test_empty_json_array_writes_nothing(srv):
    r = post_raw(srv, "api_usage", "[]")
    assert r.status_code == 200, r.text
    assert r.json() == {"table": "api_usage", "rows": 0}


def test_empty_object_lists_required_fields(srv):
    body = assert_rejected(post_raw(srv, "api_usage", "{}"), "row", 0, "ts")
    assert {d["field"] for d in body["details"]} == {"ts", "method", "endpoint", "status_code"}
    assert body["rejected"] == 1


@pytest.mark.parametrize("depth", [33, 1000, 200_000])
def test_deeply_nested_json_is_refused_not_a_crash(srv, depth):
    marker = unique()
    row = rows_for("error_logs", marker, 1)[0]
    text = json.dumps(row)[:-1] + ', "context": {"a": ' + "[" * depth + "]" * depth + "}}"
    r = post_raw(srv, "error_logs", text)
    assert r.status_code in (400, 413), r.text
    assert count_marked(srv, "error_logs", marker) == 0
    assert srv.get("/healthz").status_code == 200


def test_nested_context_within_the_depth_limit(srv):
    marker = unique()
    row = rows_for("error_logs", marker, 1)[0]
    row["context"] = {"a": [[[[{"b": [1, 2.5, True, None, "s"]}]]]]}
    assert srv.ingest("error_logs", [row]).status_code == 200
    got = srv.scalar(f"SELECT context FROM error_logs WHERE message LIKE '{marker}-%'")
    assert json.loads(got) == row["context"]


def test_pretty_printed_array_of_objects(srv):
    marker = unique()
    rows = rows_for("api_usage", marker, 3)
    r = post_raw(srv, "api_usage", json.dumps(rows, indent=2))
    assert r.status_code == 200, r.text
    assert count_marked(srv, "api_usage", marker) == 3


def test_several_objects_on_one_line_are_refused(srv):
    marker = unique()
    a, b = (json.dumps(x) for x in rows_for("api_usage", marker, 2))
    r = post_raw(srv, "api_usage", a + " " + b, NDJSON)
    assert_rejected(r, "line", 1, "")
    assert count_marked(srv, "api_usage", marker) == 0


@pytest.mark.parametrize("key", ["ts\\u0000abcdefghij", "level\\u0000", "message\\u0000x"])
def test_member_name_with_nul_is_an_unknown_field(server_factory, key):
    s = server_factory()  # its own server: the bug crashes it
    body = '{"ts": %d, "level": "error", "message": "m", "%s": 1}' % (now_ms(), key)
    try:
        r = post_raw(s, "error_logs", body)
    finally:
        s.stop()  # fails the test when the server crashed or reported a sanitizer error
    assert r.status_code == 400, r.text
    assert s.returncode == 0


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_text_with_nul_is_rejected(srv, fmt):
    marker = unique()
    ts = now_ms() - 1000
    if fmt == "json":
        r = post_raw(srv, "error_logs", '{"ts": %d, "level": "error", "message": "%s-0 a\\u0000b"}'
                     % (ts, marker))
        where, index = "row", 0
    else:
        r = post_raw(srv, "error_logs", f"ts,level,message\n{ts},error,{marker}-0 a\0b\n".encode(),
                     CSV)
        where, index = "line", 2
    try:
        assert_rejected(r, where, index, "message")
    finally:
        assert count_marked(srv, "error_logs", marker) == 0


# ---- mutated bodies: every answer is 2xx, 400 or 413 with a JSON error, never a crash ------

def _seed_bodies(ts):
    return [
        ("error_logs", JSON, json.dumps([{
            "ts": ts, "level": "error", "message": 'a "q" \u00e9 1234 0xdeadbeef',
            "context": {"a": [1, {"b": "c"}], "n": None}, "trace_id": "t", "stack_trace": "x\ny"},
        ]).encode()),
        ("system_metrics", JSON, json.dumps({"ts": ts, "host": "h", "metric": "m", "value": 1.5e3,
                                             "labels": {"k": "v"}}).encode()),
        ("api_usage", NDJSON,
         b'{"ts":%d,"method":"GET","endpoint":"/a\\u0041","status_code":200,"latency_ms":0.5e-1}\n'
         b'{"ts":"2026-01-01T10:00:00.123+01:00","method":"post","endpoint":"/b",'
         b'"status_code":404}\n' % ts),
        ("api_usage", CSV, b'ts,method,endpoint,status_code,client_id\n'
                           b'%d,GET,"/a,""b""",200,\n%d,PUT,/c,500,"x\ny"\r\n' % (ts, ts)),
        (None, {}, b'cpu,host=a\\ b,component=c,t=x\\,y usage=1.5,i=3i,u=4u,b=t,s="str \\" q" %d\n'
                   b'mem free=2\n# c\n' % (ts * 10**6)),
    ]


# \u0000 inside member names is left out: test_member_name_with_nul_is_an_unknown_field has it
SPECIALS = [b"\x00", b"\\ud800", b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"\n", b"\r",
            b"\xff", b"\xc3", b"9" * 30, b"-", b"e", b".", b" ", b"=", b"\\ ", b"i", b"u",
            b"1e400", b"nan", b"\t", b'""', b"\xef\xbb\xbf", b"[" * 40]


def _mutate(rnd, data):
    b = bytearray(data)
    for _ in range(rnd.randint(1, 6)):
        op, pos = rnd.randrange(5), rnd.randrange(len(b) + 1)
        if op == 0 and b:
            del b[pos % len(b)]
        elif op == 1:
            b[pos:pos] = rnd.choice(SPECIALS)
        elif op == 2 and b:
            b[pos % len(b)] = rnd.randrange(256)
        elif op == 3 and b:
            a = rnd.randrange(len(b))
            b[pos:pos] = b[a:a + rnd.randrange(20)]
        else:
            del b[pos:]
    return bytes(b)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mutated_bodies_never_crash_the_server(server_factory, seed):
    import random
    s = server_factory("--set", "http.max_body_bytes=65536")
    rnd = random.Random(seed)
    seeds = _seed_bodies(now_ms() - 5000)
    for i in range(1500):
        table, headers, data = rnd.choice(seeds)
        body = _mutate(rnd, data)
        path = f"/api/v1/ingest/{table}" if table else "/write"
        try:
            r = s.post(path, data=body, headers=headers)
        except requests.RequestException as exc:  # the server died: say which body did it
            report = ""
            try:
                s.stop()
            except AssertionError as stop_error:
                report = str(stop_error)[-4000:]
            pytest.fail(f"request {i} to {path} killed the server: {exc!r}\nbody: {body!r}\n"
                        f"{report}")
        assert r.status_code in (200, 204, 400, 413), (path, body, r.status_code, r.text)
        if r.status_code in (400, 413):
            assert r.json()["error"], (path, body, r.text)
    assert s.get("/healthz").status_code == 200
    s.stop()  # exit status 0 and no sanitizer report
