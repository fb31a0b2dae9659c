"""Collection heartbeats and the view collection_status (docs/collection.md "Collection uptime",
docs/views.md, docs/schema.md's collection_sources and collection_gaps, docs/alerts.md's
CollectionSourceSilent).

The contract under test:

* An ingestion request that names its source in X-Opsdb-Source (kind in X-Opsdb-Source-Kind:
  agent, tail or http, the default; X-Opsdb-Interval: a duration) is a heartbeat of that source
  carrying the rows it wrote; a bad header is a 400 and nothing is written. POST
  /api/v1/heartbeat {"sources": [{kind, name, interval}]} is a heartbeat with no rows; a bad
  body is a 400 naming the bad source, and notes nothing.
* Within a second or two collection_sources holds the source (kind:name, first/last seen, interval,
  silence_ms = 3 intervals but at least 30 s, or collection.silence without interval, rows).
* A heartbeat after a silence longer than silence_ms records a collection_gaps row (ts = the
  heartbeat before, ended_at = this one, downtime = the silence less the interval); the
  server's own downtime counts like any silence, since the sources are kept across restarts.
* collection_status: status silent when the last heartbeat is older than silence_ms, else ok;
  gaps_24h counts the gaps that ended in the last 24 h plus a silence going on; uptime_24h and
  uptime_30d are 100 * (1 - downtime / observed), observed being the part of the window since
  first seen and downtime that of the gaps and of the ongoing silence (after its interval),
  clipped to the window.
* The default rule CollectionSourceSilent fires for a silent source.
"""

import time

import pytest
import yaml

from conftest import wait_until

SEC = 1000
DAY = 86_400_000


def ingest(srv, name, kind=None, interval=None, rows=1, ts=None):
    headers = {"X-Opsdb-Source": name}
    if kind:
        headers["X-Opsdb-Source-Kind"] = kind
    if interval:
        headers["X-Opsdb-Interval"] = interval
    now = ts or int(time.time() * 1000)
    body = [{"ts": now - i, "metric": "m", "host": name[:40], "value": i} for i in range(rows)]
    return srv.ingest("system_metrics", body, headers=headers)


def sources(srv):
    return {r["source"]: r for r in srv.query("SELECT * FROM collection_sources")}


def status(srv, **params):
    r = srv.get("/api/v1/views/collection_status", params=params)
    assert r.status_code == 200, r.text
    return {row["source"]: row for row in r.json()["rows"]}


def gaps(srv, source):
    return srv.query(f"SELECT ts, ended_at, downtime_ms FROM collection_gaps "
                     f"WHERE source = '{source}' ORDER BY ts")


def test_an_ingestion_that_names_its_source_is_a_heartbeat(server_factory):
    srv = server_factory()
    t0 = int(time.time() * 1000)
    r = ingest(srv, "web-1", kind="agent", interval="10s", rows=3)
    assert r.status_code == 200, r.text
    assert ingest(srv, "web-1", kind="agent", interval="10s", rows=2).status_code == 200
    assert ingest(srv, "batch-loader").status_code == 200  # kind http, no interval
    # an ingestion that names no source is no heartbeat
    assert srv.ingest("system_metrics", [{"ts": t0, "metric": "m", "host": "x", "value": 1}]) \
        .status_code == 200
    assert wait_until(lambda: len(sources(srv)) == 2, timeout=10), sources(srv)
    got = sources(srv)
    a = got["agent:web-1"]
    assert (a["kind"], a["name"], a["interval_ms"], a["silence_ms"], a["rows"], a["gaps"]) == \
        ("agent", "web-1", 10_000, 30_000, 5, 0), a
    assert t0 <= a["first_seen"] <= a["last_seen"] <= int(time.time() * 1000), a
    h = got["http:batch-loader"]
    assert (h["interval_ms"], h["silence_ms"], h["rows"]) == (0, 300_000, 1), h
    st = status(srv)
    assert st["agent:web-1"]["status"] == "ok" and st["agent:web-1"]["uptime_24h"] == 100, st
    assert st["agent:web-1"]["gaps_24h"] == 0


@pytest.mark.parametrize("headers, what", [
    ({"X-Opsdb-Source": "a", "X-Opsdb-Source-Kind": "scrape"}, "source kind 'scrape'"),
    ({"X-Opsdb-Source": "a", "X-Opsdb-Source-Kind": "nonsense"}, "source kind 'nonsense'"),
    ({"X-Opsdb-Source": "a", "X-Opsdb-Interval": "often"}, "source interval 'often'"),
    ({"X-Opsdb-Source": "a", "X-Opsdb-Interval": "-5s"}, "source interval '-5s'"),
    ({"X-Opsdb-Source": "x" * 300}, "source name must be 1 to 255 bytes"),
])
def test_a_bad_source_header_is_a_400_and_writes_nothing(server, headers, what):
    r = server.ingest("system_metrics", [{"ts": int(time.time() * 1000), "metric": "m",
                                          "host": "h", "value": 1}], headers=headers)
    assert r.status_code == 400, r.text
    assert what in r.json()["error"] and "nothing was written" in r.json()["error"], r.text
    assert server.count("system_metrics") == 0
    time.sleep(2)  # a flush of the heartbeats later: nothing was noted either
    assert server.count("collection_sources") == 0


def test_heartbeat_route(server):
    r = server.post("/api/v1/heartbeat", json={"sources": [
        {"kind": "tail", "name": "web-1:/var/log/nginx/access.log", "interval": "1s"},
        {"name": "cron-box"}]})
    assert r.status_code == 200 and r.json() == {"noted": 2}, r.text
    assert wait_until(lambda: len(sources(server)) == 2, timeout=10)
    got = sources(server)
    t = got["tail:web-1:/var/log/nginx/access.log"]
    assert (t["kind"], t["interval_ms"], t["silence_ms"], t["rows"]) == ("tail", 1000, 30_000, 0)
    assert got["http:cron-box"]["interval_ms"] == 0


@pytest.mark.parametrize("body, what", [
    ("not json", "the body must be"),
    ({"sources": {"name": "a"}}, "the body must be"),
    ({"sources": [{"name": "a"}, {"kind": "agent"}]}, "sources[1]: a source is an object"),
    ({"sources": [{"name": "a", "kind": "syslog"}]}, "sources[0]: source kind 'syslog'"),
    ({"sources": [{"name": "a", "interval": 10}]}, "sources[0]: a source is an object"),
    ({"sources": [{"name": f"s{i}"} for i in range(1001)]}, "at most 1000 sources"),
])
def test_heartbeat_route_rejects_bad_bodies(server, body, what):
    kw = {"data": body} if isinstance(body, str) else {"json": body}
    r = server.post("/api/v1/heartbeat", **kw)
    assert r.status_code in (400, 413), r.text
    assert what in r.json()["error"], r.text
    time.sleep(2)
    assert server.count("collection_sources") == 0, "a rejected heartbeat was noted"


def expected_uptime(src, gap_rows, now_ms, window_ms):
    """collection_status's uptime, computed from the rows as docs/collection.md says."""
    lo = max(src["first_seen"], now_ms - window_ms)
    down = sum(max(0, min(g["ended_at"], now_ms) - max(g["ended_at"] - g["downtime_ms"],
                                                         now_ms - window_ms))
               for g in gap_rows if g["ended_at"] > now_ms - window_ms)
    if now_ms - src["last_seen"] > src["silence_ms"]:
        down += max(0, now_ms - max(src["last_seen"] + src["interval_ms"], now_ms - window_ms))
    return round(100 * (1 - down / max(1, now_ms - lo)), 3)


def test_silences_become_gaps_and_uptime(server_factory):
    """A source without interval may be silent collection.silence (2 s here): a longer silence
    is a gap when it sends again, and the silence going on counts as it lasts."""
    srv = server_factory("--set", "collection.silence=2s")
    name = "http:loader"
    marks = []
    for pause in (0.5, 3.5, 0.5, 4.5, 0.5):
        assert ingest(srv, "loader").status_code == 200
        marks.append(int(time.time() * 1000))
        time.sleep(pause)
    assert ingest(srv, "loader").status_code == 200
    marks.append(int(time.time() * 1000))
    assert wait_until(lambda: len(gaps(srv, name)) == 2 and
                      sources(srv).get(name, {}).get("rows") == 6, timeout=10)
    g = gaps(srv, name)
    src = sources(srv)[name]
    assert src["gaps"] == 2
    for row, (before, after) in zip(g, ((marks[1], marks[2]), (marks[3], marks[4]))):
        # the gap runs from the heartbeat before the silence to the one after it
        assert abs(row["ts"] - before) < 300 and abs(row["ended_at"] - after) < 300, (g, marks)
        assert row["downtime_ms"] == row["ended_at"] - row["ts"]  # no interval to subtract
    st = status(srv)[name]
    assert st["status"] == "ok" and st["gaps_24h"] == 2
    now = int(time.time() * 1000)
    # at a fixed reference time, the view's uptime is the documented formula
    for at in (now, now + 60 * SEC, now + 2 * DAY):
        row = status(srv, now=at // SEC)[name]
        at_ms = at // SEC * SEC
        assert row["uptime_24h"] == pytest.approx(expected_uptime(src, g, at_ms, DAY), abs=1e-3)
        assert row["uptime_30d"] == pytest.approx(expected_uptime(src, g, at_ms, 30 * DAY),
                                                  abs=1e-3)
    later = status(srv, now=(now + 60 * SEC) // SEC)[name]
    assert later["status"] == "silent" and later["gaps_24h"] == 3, later
    assert 0 < later["uptime_24h"] < 100
    assert status(srv, now=(now + 2 * DAY) // SEC)[name]["uptime_24h"] == 0


def test_the_servers_downtime_is_a_gap_of_its_sources(server_factory):
    srv = server_factory("--set", "collection.silence=1s")
    assert ingest(srv, "edge").status_code == 200
    assert wait_until(lambda: "http:edge" in sources(srv), timeout=10)
    srv.stop()
    time.sleep(2.5)
    srv.start()
    assert sources(srv)["http:edge"]["rows"] == 1
    assert ingest(srv, "edge", rows=2).status_code == 200
    assert wait_until(lambda: len(gaps(srv, "http:edge")) == 1, timeout=10)
    src = sources(srv)["http:edge"]
    assert (src["rows"], src["gaps"]) == (3, 1)
    assert gaps(srv, "http:edge")[0]["downtime_ms"] >= 2500


def test_collection_source_silent_fires(server_factory, tmp_path, run_cli):
    """The default group default-collection, replayed from a rule file at 1 s: the alert fires
    for the silent source only."""
    groups = yaml.safe_load(run_cli("alerts", "defaults").stdout)["groups"]
    group = next(g for g in groups if g["name"] == "default-collection")
    assert group["interval"] == "1m" and [r["alert"] for r in group["rules"]] == \
        ["CollectionSourceSilent"]
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{**group, "name": "fast", "interval": "1s"}]}))
    srv = server_factory("--set", "collection.silence=2s", "--set",
                         f"alerting.rule_files={rules}", "--set",
                         "alerting.default_rules=off")
    assert ingest(srv, "quiet").status_code == 200
    assert ingest(srv, "chatty").status_code == 200

    def firing():
        r = srv.get("/api/v1/alerts")
        assert r.status_code == 200, r.text
        return {a["labels"]["source"]: a for a in r.json()["alerts"]
                if a["rule"] == "CollectionSourceSilent" and a["state"] == "firing"}

    deadline = time.time() + 20
    while time.time() < deadline and "quiet" not in firing():
        assert ingest(srv, "chatty").status_code == 200
        time.sleep(0.5)
    got = firing()
    assert set(got) == {"quiet"}, got
    assert got["quiet"]["labels"]["kind"] == "http"
    # it delivers again, and keeps delivering: the alert resolves
    deadline = time.time() + 20
    while time.time() < deadline and "quiet" in firing():
        assert ingest(srv, "quiet").status_code == 200
        assert ingest(srv, "chatty").status_code == 200
        time.sleep(0.5)
    assert not firing(), firing()
