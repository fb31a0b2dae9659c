"""InfluxDB line protocol: POST /write (1.x) and /api/v2/write (2.x) into system_metrics, the
/ping handshake, and Debian's influx CLI writing to opsdb unchanged.

Each test writes series with a unique host (the marker), so the tests share one server.
"""

import json
import shutil
import subprocess
import time

import pytest

from conftest import now_ms, unique

ROUTES = ["/write", "/api/v2/write"]


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory()


def samples(srv, host_like):
    """Rows of system_metrics whose host matches the LIKE pattern, ordered by host, metric."""
    return srv.query(f"SELECT ts, host, component, metric, value, labels FROM system_metrics "
                     f"WHERE host LIKE '{host_like}' ORDER BY host, metric, ts")


def write(srv, body, route="/write", **params):
    if isinstance(body, str):
        body = body.encode()
    return srv.post(route, data=body, params=params or None,
                    headers={"Content-Type": "text/plain; charset=utf-8"})


def assert_line_rejected(r, line, field=None):
    assert r.status_code == 400, r.text
    body = r.json()
    assert "nothing was written" in body["error"]
    lines = [d["line"] for d in body["details"]]
    assert line in lines, body
    if field is not None:
        assert (line, field) in [(d["line"], d["field"]) for d in body["details"]], body
    return body


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("precision,scale", [("s", 0), ("ms", 1), ("us", 10**3), ("u", 10**3),
                                             ("ns", 10**6), ("n", 10**6), (None, 10**6)])
def test_write_with_precision(srv, route, precision, scale):
    host = unique()
    ms = (now_ms() - 60_000) // 1000 * 1000 + (0 if precision == "s" else 250)
    ts = ms // 1000 if precision == "s" else ms * scale + 999 * scale // 1000
    params = {"db": "telegraf"} if route == "/write" else {"org": "o", "bucket": "b"}
    if precision:
        params["precision"] = precision
    r = write(srv, f"cpu,host={host} usage=12.5 {ts}", route, **params)
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert samples(srv, host) == [{"ts": ms, "host": host, "component": "", "metric": "cpu_usage",
                                   "value": 12.5, "labels": "{}"}]


@pytest.mark.parametrize("route", ROUTES)
def test_bad_precision_is_400(srv, route):
    host = unique()
    r = write(srv, f"cpu,host={host} usage=1", route, precision="m")
    assert r.status_code == 400, r.text
    assert "precision" in r.json()["error"]
    assert samples(srv, host) == []


def test_metric_is_measurement_underscore_field(srv):
    host = unique()
    r = write(srv, f"disk,host={host},component=db used_percent=71.5,inodes_free=900i")
    assert r.status_code == 204, r.text
    got = samples(srv, host)
    assert [(g["metric"], g["value"], g["component"]) for g in got] == [
        ("disk_inodes_free", 900, "db"), ("disk_used_percent", 71.5, "db")]


def test_tags_host_component_to_columns_others_to_labels(srv):
    host = unique()
    r = write(srv, f"mem,region=eu-west,host={host},dc=d1,component=cache used=3")
    assert r.status_code == 204, r.text
    (row,) = samples(srv, host)
    assert row["host"] == host
    assert row["component"] == "cache"
    assert json.loads(row["labels"]) == {"dc": "d1", "region": "eu-west"}


def test_field_types(srv):
    host = unique()
    ts = (now_ms() - 1000) * 1_000_000
    r = write(srv, f"m,host={host} f=1.5,neg=-2.25,exp=1e3,i=42i,ni=-7i,u=7u,bt=t,bT=TRUE,"
                   f"btrue=true,bf=f,bfalse=false,bF=False {ts}")
    assert r.status_code == 204, r.text
    values = {g["metric"]: g["value"] for g in samples(srv, host)}
    assert values == {"m_f": 1.5, "m_neg": -2.25, "m_exp": 1000, "m_i": 42, "m_ni": -7, "m_u": 7,
                      "m_bt": 1, "m_bT": 1, "m_btrue": 1, "m_bf": 0, "m_bfalse": 0, "m_bF": 0}


def test_string_fields_become_labels(srv):
    host = unique()
    r = write(srv, f'svc,host={host},env=prod up=1i,version="1.2.3",note="a \\"b\\" c"')
    assert r.status_code == 204, r.text
    (row,) = samples(srv, host)
    assert row["metric"] == "svc_up"
    assert json.loads(row["labels"]) == {"env": "prod", "version": "1.2.3", "note": 'a "b" c'}


def test_line_with_only_string_fields_is_rejected(srv):
    host = unique()
    body = f'svc,host={host} up=1i\nsvc,host={host} version="1.2.3",state="ok"\n'
    body = assert_line_rejected(write(srv, body), 2, "fields")
    assert body["rejected"] == 1
    assert samples(srv, host) == []


BAD_LINES = {
    "field_not_a_number": ("cpu,host={h} usage=abc", "fields"),
    "tag_without_value": ("cpu,host={h},dc usage=1", "tags"),
    "tag_with_empty_value": ("cpu,host={h},dc= usage=1", "tags"),
    "no_fields": ("cpu,host={h}", "fields"),
    "field_without_value": ("cpu,host={h} usage", "fields"),
    "unterminated_string": ('cpu,host={h} usage=1,s="open', "fields"),
    "bad_timestamp": ("cpu,host={h} usage=1 12x", "timestamp"),
    "float_timestamp": ("cpu,host={h} usage=1 1.5", "timestamp"),
    "negative_unsigned": ("cpu,host={h} usage=-1u", "fields"),
    "bad_integer": ("cpu,host={h} usage=1.5i", "fields"),
    "timestamp_in_future": ("cpu,host={h} usage=1 {future}", "ts"),
    "timestamp_too_old": ("cpu,host={h} usage=1 {old}", "ts"),
    "no_measurement": (",host={h} usage=1", "measurement"),
}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_rejects_request(srv, case, route):
    host = unique()
    line, field = BAD_LINES[case]
    now_ns = now_ms() * 1_000_000
    bad = line.format(h=host, future=now_ns + 3600 * 10**9, old=now_ns - 40 * 86400 * 10**9)
    body = f"cpu,host={host} usage=1\n# a comment\n{bad}\ncpu,host={host} usage=3\n"
    body = assert_line_rejected(write(srv, body, route), 3, field)
    assert body["rejected"] == 1
    assert all(d["line"] == 3 for d in body["details"]), body
    assert samples(srv, host) == []


def test_several_bad_lines_are_all_named(srv):
    host = unique()
    body = "\n".join([f"cpu,host={host} a=1", f"cpu,host={host} a=x", f"cpu,host={host} a=2",
                      f"cpu,host={host}", f"cpu,host={host} a=3"])
    body = assert_line_rejected(write(srv, body), 2)
    assert [d["line"] for d in body["details"]] == [2, 4]
    assert body["rejected"] == 2
    assert samples(srv, host) == []


def test_missing_timestamp_is_now(srv):
    host = unique()
    before = now_ms()
    r = write(srv, f"cpu,host={host} usage=1")
    after = now_ms()
    assert r.status_code == 204, r.text
    (row,) = samples(srv, host)
    assert before - 1000 <= row["ts"] <= after + 1000


def test_escaped_spaces_commas_and_equals(srv):
    host = unique()
    r = write(srv, f"my\\ cpu\\,x,host={host}\\ a,component=web\\,api,dc=x\\=y,"
                   f"rack\\ id=r\\ 1 used\\ pct=1")
    assert r.status_code == 204, r.text
    rows = samples(srv, f"{host} a")
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["component"] == "web,api"
    assert row["metric"] == "my cpu,x_used pct"
    assert json.loads(row["labels"]) == {"dc": "x=y", "rack id": "r 1"}


def test_blank_lines_comments_and_crlf(srv):
    host = unique()
    body = f"\n# header comment\r\ncpu,host={host} a=1\r\n\r\n   \ncpu,host={host} b=2\r\n"
    r = write(srv, body)
    assert r.status_code == 204, r.text
    assert [g["metric"] for g in samples(srv, host)] == ["cpu_a", "cpu_b"]


def test_same_series_and_time_is_replaced(srv):
    host = unique()
    ts = (now_ms() - 5000) * 1_000_000
    assert write(srv, f"cpu,host={host} usage=1 {ts}").status_code == 204
    assert write(srv, f"cpu,host={host} usage=2 {ts}").status_code == 204
    rows = samples(srv, host)
    assert [r["value"] for r in rows] == [2]


def test_gzip_body(srv):
    import gzip
    host = unique()
    now = now_ms()  # once: a clock read per line can give two lines the same ms (one sample)
    body = gzip.compress("\n".join(f"cpu,host={host} v={i} {(now - i) * 10**6}"
                                   for i in range(50)).encode())
    r = srv.post("/write", data=body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 204, r.text
    assert srv.count("system_metrics", f"host = '{host}'") == 50


def test_many_lines(srv):
    host = unique()
    base = now_ms() - 100_000
    body = "\n".join(f"cpu,host={host},core=c{i % 8} user={i}.5,sys={i}i {(base + i) * 10**6}"
                     for i in range(2000))
    r = write(srv, body)
    assert r.status_code == 204, r.text
    assert srv.count("system_metrics", f"host = '{host}'") == 4000


def test_empty_body_is_accepted(srv):
    r = write(srv, "")
    assert r.status_code == 204, r.text


def test_row_limit_applies_to_points(module_server_factory):
    small = module_server_factory("--set", "ingest.max_rows_per_request=10")
    host = unique()
    ten = "\n".join(f"cpu,host={host} v={i} {(now_ms() - i) * 10**6}" for i in range(10))
    assert write(small, ten).status_code == 204
    host = unique()
    eleven = "\n".join(f"cpu,host={host} v={i} {(now_ms() - i) * 10**6}" for i in range(11))
    r = write(small, eleven)
    assert r.status_code == 413, r.text
    assert samples(small, host) == []
    host = unique()  # six lines of two fields are twelve points
    twelve = "\n".join(f"cpu,host={host} a={i},b={i} {(now_ms() - i) * 10**6}" for i in range(6))
    assert write(small, twelve).status_code == 413
    assert samples(small, host) == []


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_ping(srv, method):
    r = srv.request(method, "/ping")
    assert r.status_code == 204
    assert r.content == b""
    assert r.headers.get("X-Influxdb-Version")


def test_get_write_is_405(srv):
    assert srv.get("/write").status_code == 405


# ---- the influx CLI (Debian package influxdb-client) ---------------------------------------

influx = shutil.which("influx")


@pytest.mark.skipif(influx is None, reason="the influx CLI (influxdb-client) is not installed")
def test_influx_cli_insert(srv):
    host = unique()
    before = now_ms()
    cp = subprocess.run([influx, "-host", "127.0.0.1", "-port", str(srv.port), "-database", "db",
                         "-execute", f"INSERT cpu,host={host},dc=d1 usage=1,idle=99i"],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    rows = samples(srv, host)
    assert [(r["metric"], r["value"]) for r in rows] == [("cpu_idle", 99), ("cpu_usage", 1)]
    assert all(json.loads(r["labels"]) == {"dc": "d1"} for r in rows)
    assert all(before - 1000 <= r["ts"] <= now_ms() + 1000 for r in rows)


@pytest.mark.skipif(influx is None, reason="the influx CLI (influxdb-client) is not installed")
def test_influx_cli_insert_with_precision(srv):
    host = unique()
    ts_s = int(time.time()) - 120
    cp = subprocess.run([influx, "-host", "127.0.0.1", "-port", str(srv.port), "-database", "db",
                         "-precision", "s", "-execute", f"INSERT load,host={host} avg1=0.5 {ts_s}"],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    assert samples(srv, host) == [{"ts": ts_s * 1000, "host": host, "component": "",
                                   "metric": "load_avg1", "value": 0.5, "labels": "{}"}]


@pytest.mark.skipif(influx is None, reason="the influx CLI (influxdb-client) is not installed")
def test_influx_cli_reports_a_rejected_point(srv):
    host = unique()
    cp = subprocess.run([influx, "-host", "127.0.0.1", "-port", str(srv.port), "-database", "db",
                         "-execute", f'INSERT cpu,host={host} note="only a string"'],
                        capture_output=True, text=True, timeout=60)
    assert "string" in (cp.stdout + cp.stderr), (cp.stdout, cp.stderr)
    assert samples(srv, host) == []


@pytest.mark.parametrize("value", ["1e400", "-1e400", "-inf", "-nan", "nan", "inf", "+inf"])
def test_non_finite_field_is_rejected(srv, value):
    host = unique()
    r = write(srv, f"cpu,host={host} ok=1\ncpu,host={host} v={value}\n")
    assert_line_rejected(r, 2, "fields")
    assert samples(srv, host) == []


LIMITS = {
    "metric_over_255_bytes": ("m" * 250 + ",host={h} " + "f" * 10 + "=1", "metric"),
    "host_over_255_bytes": ("cpu,host={h}" + "h" * 300 + " v=1", "host"),
    "component_over_255_bytes": ("cpu,host={h},component=" + "c" * 256 + " v=1", "component"),
    "labels_over_4096_bytes": ("cpu,host={h}," + ",".join(f"t{i}=" + "v" * 100 for i in range(50))
                               + " v=1", "labels"),
    "more_than_64_tags": ("cpu,host={h}," + ",".join(f"t{i}=v" for i in range(65)) + " v=1",
                          "tags"),
    "more_than_256_fields": ("cpu,host={h} " + ",".join(f"f{i}=1" for i in range(257)), "fields"),
    "timestamp_too_long": ("cpu,host={h} v=1 " + "9" * 40, "timestamp"),
}


@pytest.mark.parametrize("case", sorted(LIMITS))
def test_line_limits(srv, case):
    host = unique()
    line, field = LIMITS[case]
    body = f"cpu,host={host} ok=1\n" + line.format(h=host) + "\n"
    assert_line_rejected(write(srv, body), 2, field)
    assert samples(srv, host + "%") == []


def test_line_at_limits_is_accepted(srv):
    host = unique()
    line = (f"cpu,host={host}," + ",".join(f"t{i}=v" for i in range(63)) + " "
            + ",".join(f"f{i}={i}" for i in range(256)))
    r = write(srv, line)
    assert r.status_code == 204, r.text
    assert srv.count("system_metrics", f"host = '{host}'") == 256


@pytest.mark.parametrize("line", [b"cpu,host=%s\xff v=1", b"c\xffpu,host=%s v=1",
                                  b"cpu,host=%s,t\xff=a v=1", b'cpu,host=%s v=1,s="\xc3"'],
                         ids=["tag_value", "measurement", "tag_key", "string_field"])
def test_invalid_utf8_is_rejected(srv, line):
    host = unique()
    body = b"cpu,host=%s ok=1\n" % host.encode() + line % host.encode() + b"\n"
    assert_line_rejected(write(srv, body), 2)
    assert samples(srv, host + "%") == []
