"""How ingestion writes metric samples as chunks (src/store/sqlite_cold.c): a request's run of
samples per series becomes a chunk; a small run that follows a small chunk of its series in the
same UTC day joins it (so a source sending one sample per series per request fills chunks of a
few hundred samples, not a row per sample); a run that overlaps a chunk is merged with its day.
Whatever the request shapes, every answer equals a model of the samples sent, last write winning,
and the minute rollup equals the raw samples."""

import random
import subprocess

from conftest import now_ms

HEAD_MAX = 256  # HEAD_SAMPLES_MAX in sqlite_cold.c
STEP = 10_000
MIN = 60_000


def day_start(ts):
    return ts - ts % 86_400_000


def lp(series, ts, value):
    return f"cpu,host={series} usage={value} {ts}"


def post(srv, lines):
    r = srv.post("/write", params={"precision": "ms"}, data="\n".join(lines).encode())
    assert r.status_code == 204, r.text


def stored(srv):
    rows = srv.query("SELECT host, ts, value FROM system_metrics WHERE metric = 'cpu_usage'")
    got = {}
    for r in rows:
        assert (r["host"], r["ts"]) not in got, f"two samples for {r['host']} at {r['ts']}"
        got[(r["host"], r["ts"])] = r["value"]
    return got


def chunks(srv):
    return srv.query("SELECT r.host, c.day, c.start_ts, c.end_ts, c.count FROM "
                     "system_metrics_chunks c JOIN system_metrics_series r ON r.id = c.series_id "
                     "ORDER BY r.host, c.start_ts")


def assert_minutes_exact(srv):
    """system_metrics_1m against the raw samples, in one statement (one snapshot); values are
    multiples of 1/4, so sums are exact whatever the order."""
    bad = srv.scalar(f"""
        WITH a AS (SELECT series_id, ts - ts % {MIN} AS b, count(*) AS c, sum(value) AS s,
                          min(value) AS mn, max(value) AS mx, max(ts) AS lts
                   FROM system_metrics_raw GROUP BY 1, 2)
        SELECT (SELECT count(*) FROM a LEFT JOIN system_metrics_1m r
                ON r.series_id = a.series_id AND r.ts = a.b
                WHERE r.ts IS NULL OR r.count != a.c OR r.sum != a.s OR r.min != a.mn
                   OR r.max != a.mx OR r.last_ts != a.lts
                   OR r.last != (SELECT value FROM system_metrics_raw x
                                 WHERE x.series_id = a.series_id AND x.ts = a.lts))
             + abs((SELECT count(*) FROM system_metrics_1m) - (SELECT count(*) FROM a))""")
    assert bad == 0, f"{bad} minute buckets disagree with the raw samples"


def assert_chunks_sound(srv):
    """Per series: chunks never overlap, never span a day, and count what they hold."""
    by_host = {}
    for c in chunks(srv):
        assert day_start(c["start_ts"]) == day_start(c["end_ts"]) == c["day"] * 86_400_000, c
        assert c["start_ts"] <= c["end_ts"] and c["count"] >= 1, c
        prev = by_host.get(c["host"])
        assert prev is None or prev["end_ts"] < c["start_ts"], (prev, c)
        by_host[c["host"]] = c


def test_one_sample_per_request_fills_chunks(server):
    """An agent's shape: every request carries one sample of each series. The samples join the
    series' last chunk until it holds HEAD_MAX, so 600 requests make 3 chunks per series, not
    600 rows."""
    base = day_start(now_ms()) - 12 * 3600_000  # yesterday noon: the run stays in one day
    model = {}
    for i in range(600):
        lines = []
        for h in ("a", "b", "c"):
            v = ((i * 7 + ord(h)) % 400) / 4
            model[(h, base + i * STEP)] = v
            lines.append(lp(h, base + i * STEP, v))
        post(server, lines)
    assert stored(server) == model
    per_host = {}
    for c in chunks(server):
        per_host.setdefault(c["host"], []).append(c["count"])
    assert per_host == {h: [HEAD_MAX, HEAD_MAX, 600 - 2 * HEAD_MAX] for h in "abc"}, per_host
    assert_chunks_sound(server)
    assert_minutes_exact(server)


def test_a_large_run_is_a_chunk_of_its_own(server):
    base = now_ms() - 3600_000
    base -= base % MIN
    span = (HEAD_MAX + 10) * STEP
    if (base - 10 * STEP) // 86400_000 != (base + span) // 86400_000:
        base -= span + 10 * STEP  # all on one day: a day's samples are its own chunks
    first = [lp("big", base - 10 * STEP + i * STEP, 1) for i in range(3)]
    post(server, first)
    run = [lp("big", base + i * STEP, i / 4) for i in range(HEAD_MAX)]  # 3 + 256 > HEAD_MAX
    post(server, run)
    counts = [c["count"] for c in chunks(server)]
    assert counts == [3, HEAD_MAX], counts
    assert_minutes_exact(server)


def test_random_requests_late_rewritten_and_out_of_order(server):
    """Requests of random sizes, out of time order, with late samples, rewrites of stored
    samples and duplicates inside one request: the stored samples are the model's (last write
    wins), chunks stay sound, minutes exact."""
    rng = random.Random(11)
    base = now_ms() - 5 * 3600_000
    base -= base % MIN
    slots = [base + i * STEP for i in range(1500)]
    model = {}
    for _ in range(250):
        kind = rng.random()
        if kind < 0.6:  # a short run, usually the next slots
            start = rng.randrange(len(slots) - 20)
            picks = [(h, slots[start + k]) for h in ("x", "y") for k in range(rng.randint(1, 8))]
        else:  # scattered: late samples and rewrites of any slot
            picks = [(rng.choice("xyz"), rng.choice(slots)) for _ in range(rng.randint(1, 30))]
        lines = []
        for h, ts in picks:
            v = rng.randint(-400, 400) / 4
            model[(h, ts)] = v  # the last line of the request for (h, ts) wins
            lines.append(lp(h, ts, v))
        post(server, lines)
    assert stored(server) == model
    assert_chunks_sound(server)
    assert_minutes_exact(server)
    got = server.query("SELECT count(*) AS n, sum(count) AS s FROM system_metrics_1h")[0]
    assert got["s"] == len(model), got


def test_a_damaged_last_chunk_does_not_stop_writes(server_factory, run_cli, tmp_db):
    """The small chunk a new sample would join cannot be decoded: the sample starts a chunk of
    its own, the write succeeds, and reading the damaged chunk is a clear error."""
    srv = server_factory()
    base = now_ms() - 3600_000
    base -= base % MIN
    post(srv, [lp("d", base + i * STEP, i) for i in range(5)])
    srv.stop()
    subprocess.run(["sqlite3", str(tmp_db), "UPDATE system_metrics_chunks SET data = X'8F4301' "
                    "WHERE count = 5;"], check=True)
    srv.start()
    post(srv, [lp("d", base + 10 * STEP, 99)])
    counts = [c["count"] for c in chunks(srv)]
    assert counts == [5, 1], counts
    r = srv.get("/api/v1/query", params={"sql": "SELECT count(*) FROM system_metrics"})
    assert r.status_code >= 400 and "chunk" in r.text, (r.status_code, r.text[:500])
