"""Packed (cold) event partitions (docs/storage.md, docs/config.md storage.compress_events_after).

A day partition of an event table whose whole window ends at or before now -
storage.compress_events_after (1d) is packed by `opsdb compact` or the server's compaction timer:
its rows become zstd column blocks in `<partition>_packed`, the plain table is replaced by an
`opsdb_packed` virtual table under the same name, and its catalogue state becomes 'cold'. What
is checked here, against a copy of the same database that was never packed and against values
computed in Python from the rows sent:

* exactly the partitions past the horizon are packed, with their rows, into far fewer bytes;
* every answer is the same before and after: whole tables with their rowids, ts ranges across the
  packed/hot boundary, ORDER BY ts [DESC] LIMIT, rowid lookups, indexed equality, correlated
  subqueries, every view with its parameters, over SQL, the CLI and HTTP (JSON and CSV, byte
  for byte);
* a late row unpacks its partition (same rows, same rowids) and the rollup-based views answer as
  on a database never packed; the next pass packs it again;
* the server packs by itself while rows arrive; a CLI pack next to a running server;
* kill -9 in the middle of packing a 200,000-row partition loses and doubles nothing: the
  partition is hot or cold, never half;
* retention drops a packed partition with its blocks table;
* a damaged block is an error naming the partition and the block, never a crash.
"""

import json
import math
import os
import random
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import now_ms, run_cli as cli, wait_until
from test_partitions import (APPLY_RE, DAY, EVENT_TABLES, HOUR, LONG, MARKER, MIN,
                             away_from_midnight, catalogue, check_row, cli_ingest, cli_query,
                             cli_rows, day_of, gen_events, listed, midnights, ndjson, part_name,
                             want_catalogue)
from test_views import (API_SPEC, ERR_SPEC, HANDLER_SPEC, compare_rows, expect_api_performance,
                        expect_error_summary, expect_handler_performance, post_ndjson)

SEED = 20261130
COUNTS = {"api_usage": 5000, "error_logs": 6000, "pipeline_status": 700,
          "handler_metrics": 1500, "alert_history": 500, "job_runs": 500}
# a column of each table that leads an index, and a value of it present in the generated rows
KEYED = {"api_usage": ("endpoint", "/a"), "pipeline_status": ("pipeline", "pipe1"),
         "handler_metrics": ("handler", "h2"), "alert_history": ("alert_id", "al3"),
         "job_runs": ("job", "job1")}
COMPACT_RE = re.compile(r"^packed (\d+) event partitions older than (\S+) \((\d+) rows\) into "
                        r"(\d+) bytes$", re.M)
# job_status is left out: each server schedules its own builtin jobs (next_run_at differs)
VIEWS = ["api_performance", "error_summary", "handler_performance", "pipeline_health",
         "active_alerts", "alert_quality"]

# ---- realistic error_logs rows (what makes packing worth it: repetitive text with numbers) -----

HOSTS = ["web-1", "web-2", "web-3", "worker-1", "worker-2", "db-1"]
ERROR_TEMPLATES = [
    ("ValueError", "api", "invalid value {n} for field 'quantity' in order {m}"),
    ("TimeoutError", "worker", "call to payments.internal:{p} timed out after {ms} ms"),
    ("KeyError", "worker", "missing key 'session:{m}' in cache shard {s}"),
    ("ConnectionError", "db", "connection to db-{s}.internal:5432 refused (attempt {a} of 5)"),
    ("PermissionError", "api", "user {m} may not read /orders/{n}"),
    ("RuntimeError", "scheduler", "job sync-{s} exited with status {a} after {ms} ms"),
]
STACK = ('Traceback (most recent call last):\n'
         '  File "/srv/app/server.py", line {l1}, in handle\n    return view(request)\n'
         '  File "/srv/app/{comp}/views.py", line {l2}, in view\n    result = service.run(args)\n'
         '  File "/srv/app/{comp}/service.py", line {l3}, in run\n    raise {etype}(msg)\n'
         '{etype}: {msg}')


def realistic_errors(seed, lo, hi, n):
    """error_logs rows over [lo, hi] (at and around midnights too, as gen_events makes them):
    messages from templates with numbers, stack traces, several hosts, a random trace id each."""
    rng = random.Random(seed)
    ids = set()
    out = []
    for r in gen_events(seed, lo, hi, {"error_logs": n})["error_logs"]:
        k = rng.randrange(len(ERROR_TEMPLATES))
        etype, comp, tmpl = ERROR_TEMPLATES[k]
        msg = tmpl.format(n=rng.randint(0, 99999), m=rng.randint(10**5, 10**7),
                          p=rng.choice([443, 8443, 9000]), ms=rng.randint(1000, 30000),
                          s=rng.randrange(16), a=rng.randint(1, 5))
        tid = f"{rng.getrandbits(64):016x}"
        while tid in ids:
            tid = f"{rng.getrandbits(64):016x}"
        ids.add(tid)
        row = {"ts": r["ts"], "service": rng.choice(["shop", "auth", "billing"]),
               "component": comp, "host": rng.choice(HOSTS),
               "level": rng.choices(["warning", "error", "critical", "fatal", "info"],
                                    [30, 50, 10, 2, 8])[0],
               "error_type": etype, "message": msg, "fingerprint": f"{etype}-{k}",
               "trace_id": tid}
        if rng.random() < 0.7:
            row["stack_trace"] = STACK.format(l1=212, l2=40 + 7 * k, l3=100 + k + rng.randrange(3),
                                              comp=comp, etype=etype, msg=msg)
        out.append(row)
    return out


# ---- helpers ---------------------------------------------------------------------------------


def errors_by_fp(rows, window, now):
    """expect_error_summary keyed as compare_rows wants (by a tuple)."""
    return {(fp,): v for fp, v in expect_error_summary(rows, window, now).items()}


def copy_db(src, dst):
    """Copies a database that no process has open (its -wal too, if any)."""
    for suffix in ("", "-wal"):
        if os.path.exists(f"{src}{suffix}"):
            shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")
    return dst


def compact(db, *opts, timeout=120):
    cp = cli("compact", "--db", db, "--quiet", *opts, timeout=timeout)
    assert cp.returncode == 0, cp.stderr[-3000:]
    m = COMPACT_RE.search(cp.stdout)
    assert m, cp.stdout
    return int(m.group(1)), int(m.group(3)), int(m.group(4))


def old_parts(data, before):
    """{(table, partition start): rows} of the partitions whose day ends by `before`."""
    return {(t, s): n for t, rows in data.items()
            for s, n in sorted(count_by_day(rows).items()) if s + DAY <= before}


def count_by_day(rows):
    out = {}
    for r in rows:
        out[day_of(r["ts"])] = out.get(day_of(r["ts"]), 0) + 1
    return out


def schema_of(q):
    """{name: (type, tbl_name, sql)} of sqlite_schema; q runs SQL and returns rows."""
    return {x["name"]: (x["type"], x["tbl_name"], x["sql"])
            for x in q("SELECT name, type, tbl_name, sql FROM sqlite_schema")}


def assert_hot_or_cold(q, table):
    """Each partition of table is wholly hot (a plain table, no blocks) or wholly cold (the
    virtual table over its blocks, no plain table or index), as the catalogue says."""
    schema = schema_of(q)
    for name, _s, _e, _n, state in catalogue(q("SELECT * FROM opsdb_partitions"), table):
        kind, _, sql = schema[name]
        if state == "cold":
            assert kind == "table" and sql == (f"CREATE VIRTUAL TABLE {name} USING "
                                               f"opsdb_packed({table}, {name}_packed)"), sql
            assert schema[f"{name}_packed"][0] == "table", name
            assert not [n for n, v in schema.items() if v[0] == "index" and v[1] == name], name
        else:
            assert state == "hot" and sql.startswith(f"CREATE TABLE {name} ("), (state, sql)
            assert f"{name}_packed" not in schema, name
    assert "opsdb_unpacking" not in schema


def http_text(srv, path, params):
    r = srv.get(path, params=params)
    assert r.status_code == 200, f"{path} {params}: {r.status_code} {r.text[:1000]}"
    return r.text


def marks(rows, table):
    return [r[MARKER[table]] for r in rows]


def by_ts(rows):
    return sorted(rows, key=lambda r: r["ts"])


# ---- two copies of the same ~4 days of every event table: one packed, one never --------------


@pytest.fixture(scope="module")
def twin(opsdb_bin, tmp_path_factory, module_server_factory):
    away_from_midnight(120)  # now - 1d stays on one side of a midnight for the whole module
    base = tmp_path_factory.mktemp("packed")
    now = now_ms()
    # from 02:00 four days back: that first day holds 22 hours of rows whatever the time of day
    # (from now - 4 days it held what was left of that day: nothing after 22:00)
    lo, hi = now - now % DAY - 4 * DAY + 2 * HOUR, now - MIN
    data = gen_events(SEED, lo, hi, {t: n for t, n in COUNTS.items() if t != "error_logs"})
    data["error_logs"] = realistic_errors(SEED + 1, lo, hi, COUNTS["error_logs"])
    rng = random.Random(SEED + 2)
    ref, packed = base / "ref.db", base / "packed.db"
    for table in EVENT_TABLES:  # shuffled: rowid order is not ts order
        rows = data[table][:]
        rng.shuffle(rows)
        cli_ingest(cli, ref, table, rows)
    copy_db(ref, packed)
    t0 = now_ms()
    t = time.monotonic()
    nparts, nrows, nbytes = compact(packed)
    secs = time.monotonic() - t
    assert now_ms() - t0 < 60_000
    copy_db(ref, base / "pristine_ref.db")
    copy_db(packed, base / "pristine_packed.db")
    common = (*LONG, "--set", "query.max_rows=100000")
    ref_srv = module_server_factory(*common, "--set", "storage.compress_events_after=0", db=ref)
    pk_srv = module_server_factory(*common, db=packed)
    return {"data": data, "lo": lo, "hi": hi, "packed_before": t0 - DAY, "ref": ref_srv,
            "pk": pk_srv, "base": base, "compact": (nparts, nrows, nbytes), "compact_s": secs,
            "boundary": day_of(t0 - DAY)}


def test_compact_packs_exactly_the_partitions_past_the_horizon(twin):
    data, pk, ref, before = twin["data"], twin["pk"], twin["ref"], twin["packed_before"]
    old = old_parts(data, before)
    assert twin["compact"][:2] == (len(old), sum(old.values())), (twin["compact"], old)
    print(f"\nopsdb compact packed {len(old)} partitions ({sum(old.values())} rows) into "
          f"{twin['compact'][2]} bytes in {twin['compact_s']:.2f} s")
    cat = pk.query("SELECT * FROM opsdb_partitions ORDER BY table_name, start_ts")
    ref_cat = ref.query("SELECT * FROM opsdb_partitions ORDER BY table_name, start_ts")
    for table in EVENT_TABLES:
        want = want_catalogue(table, data[table], packed_before=before)
        states = [w[4] for w in want]
        assert "cold" in states and "hot" in states, want  # both kinds, for every table
        assert catalogue(cat, table) == want, table
        assert catalogue(ref_cat, table) == want_catalogue(table, data[table]), table
        assert_hot_or_cold(pk.query, table)
        for name, start, _end, n, state in want:
            if state != "cold":
                continue
            day = [r["ts"] for r in data[table] if day_of(r["ts"]) == start]
            blocks = pk.query(f"SELECT block, min_ts, max_ts, min_rowid, max_rowid, rows FROM "
                              f"{name}_packed ORDER BY block")
            assert sum(b["rows"] for b in blocks) == n, name
            assert len(blocks) == math.ceil(n / 8192), name
            assert (blocks[0]["min_ts"], blocks[-1]["max_ts"]) == (min(day), max(day)), name
            local = ref.query(f"SELECT min(rowid) AS lo, max(rowid) AS hi FROM {name}")[0]
            assert (min(b["min_rowid"] for b in blocks), max(b["max_rowid"] for b in blocks)) \
                == (local["lo"], local["hi"]), name

    # `opsdb partitions`: the same states; packed partitions far smaller than the plain ones
    parts = cli_rows(cli, pk.db, "partitions")
    plain = {p["partition"]: p["bytes"] for p in cli_rows(cli, ref.db, "partitions")}
    cold_bytes = 0
    for table in EVENT_TABLES:
        assert listed(parts, table) == want_catalogue(table, data[table], packed_before=before)
        cold = [p for p in parts if p["table"] == table and p["state"] == "cold"]
        ratios = [plain[p["partition"]] / p["bytes"] for p in cold]
        cold_bytes += sum(p["bytes"] for p in cold)
        print(f"{table}: {len(cold)} packed partitions, {sum(p['rows'] for p in cold)} rows, "
              f"{sum(plain[p['partition']] for p in cold)} -> {sum(p['bytes'] for p in cold)} "
              f"bytes (x{min(ratios):.1f} .. x{max(ratios):.1f})")
        for p in cold:
            assert p["bytes"] < plain[p["partition"]], p
            # a partial day (the first one holds from 0 to 22 hours of rows, by the time of day
            # the test runs) takes whole pages: the 10x holds for the days that fill them
            if table == "error_logs" and p["rows"] >= 1000:
                assert p["bytes"] * 10 <= plain[p["partition"]], (p, plain[p["partition"]])
        if table == "error_logs":
            assert sum(p["bytes"] for p in cold) * 10 <= sum(plain[p["partition"]] for p in cold)
        hot = [p for p in parts if p["table"] == table and p["state"] == "hot"]
        assert all(p["bytes"] == plain[p["partition"]] for p in hot), hot
    assert twin["compact"][2] <= cold_bytes  # blocks' payload fits in the pages listed


def test_rows_and_rowids_are_unchanged(twin):
    data, pk, ref = twin["data"], twin["pk"], twin["ref"]
    for table in EVENT_TABLES:
        mark = MARKER[table]
        sql = f"SELECT rowid AS rid, * FROM {table} ORDER BY rowid"
        got = pk.query(sql)
        assert got == ref.query(sql), table
        sent = {r[mark]: r for r in data[table]}
        assert sorted(marks(got, table)) == sorted(sent), table
        for x in got:
            check_row(f"{table}[{x[mark]}]", x, sent[x[mark]])
        # a packed partition read under its own name: its rows with their own rowids
        for name, *_rest, state in catalogue(pk.query("SELECT * FROM opsdb_partitions"), table):
            sql = f"SELECT rowid AS rid, * FROM {name} ORDER BY rowid"
            assert pk.query(sql) == ref.query(sql), name
            sql = f"SELECT rowid AS rid, {mark} FROM {name} ORDER BY ts DESC, rowid DESC"
            assert pk.query(sql) == ref.query(sql), name
            # a whole real equals the integer rowid, as in SQLite; a fraction equals none
            inner = pk.query(f"SELECT rowid AS rid, {mark} FROM {name} ORDER BY rowid LIMIT 1")
            if inner:
                r0 = inner[0]["rid"]
                for cond, want in ((f"rowid = {r0}.0", [inner[0][mark]]),
                                   (f"rowid = {r0}.5", [])):
                    got_ = pk.query(f"SELECT {mark} FROM {name} WHERE {cond}")
                    assert marks(got_, table) == want, (name, cond)
                    assert got_ == ref.query(f"SELECT {mark} FROM {name} WHERE {cond}")

        # rowid lookups: rowids taken before packing find the same rows after it
        rid = {x[mark]: x["rid"] for x in got}
        days = {}
        for r in by_ts(data[table]):
            days.setdefault(day_of(r["ts"]), []).append(r)
        # first, middle and last row of each day; a day of one or two rows gives each once
        picks = list({id(rs[i]): rs[i] for rs in days.values()
                      for i in (0, len(rs) // 2, -1)}.values())
        for r in picks:
            m = r[mark]
            assert marks(pk.query(f"SELECT {mark} FROM {table} WHERE rowid = {rid[m]}"),
                         table) == [m]
            assert marks(pk.query(f"SELECT {mark} FROM {table} WHERE rowid = (SELECT rowid "
                                  f"FROM {table} WHERE {mark} = '{m}')"), table) == [m]
            assert marks(pk.query(f"SELECT {mark} FROM {table} WHERE rowid = {rid[m]} AND "
                                  f"ts = {r['ts']}"), table) == [m]
            assert pk.query(f"SELECT {mark} FROM {table} WHERE rowid = {rid[m]} AND "
                            f"ts = {r['ts'] + 1}") == []
        inner = ", ".join(f"'{r[mark]}'" for r in picks)
        for sql in (f"SELECT {mark} FROM {table} WHERE rowid IN (SELECT rowid FROM {table} "
                    f"WHERE {mark} IN ({inner})) ORDER BY ts",
                    f"SELECT {mark} FROM {table} WHERE rowid IN "
                    f"({', '.join(str(rid[r[mark]]) for r in picks)}) ORDER BY ts"):
            assert marks(pk.query(sql), table) == marks(by_ts(picks), table), sql
        top = max(rid.values())
        for bogus in (top + 1, min(rid.values()) - 1, 0, -1, "'abc'", 1.5):
            assert pk.query(f"SELECT {mark} FROM {table} WHERE rowid = {bogus}") == [], bogus
        # odd forms of rowid constraints answer as before packing, whatever they answer
        for cond in (f"rowid = '{top}'", f"rowid = {top}.0", f"rowid BETWEEN {top - 3} AND {top}",
                     f"rowid > {top - 2}", f"+rowid = {top}"):
            sql = f"SELECT {mark} FROM {table} WHERE {cond}"
            assert pk.query(sql) == ref.query(sql), sql


def range_cases(twin):
    """ts ranges: across the packed/hot boundary, across midnights between packed days, the
    whole data, single milliseconds at boundaries."""
    b, ms = twin["boundary"], midnights(twin["lo"], twin["hi"])
    return [(b - 1, b + 1), (b - 3 * HOUR, b + 2 * HOUR), (b - 30 * HOUR, b + 7),
            (ms[0] - 1, ms[0] + 1), (ms[0] + 5 * HOUR, ms[1] + 7), (b - 1, b - 1),
            (ms[0] - 2 * DAY, ms[0] + 12)]


def test_sql_answers_are_identical(twin):
    data, pk, ref = twin["data"], twin["pk"], twin["ref"]
    checked = 0

    def same(sql, want=None, csv=False):
        """Runs sql on both servers: the same JSON, byte for byte (with csv, the same CSV too);
        with want, the first column of the rows must be want (a list: in that order)."""
        nonlocal checked
        got = http_text(pk, "/api/v1/query", {"sql": sql})
        assert got == http_text(ref, "/api/v1/query", {"sql": sql}), sql
        if csv:
            csv = {"sql": sql, "format": "csv"}
            assert http_text(pk, "/api/v1/query", csv) == http_text(ref, "/api/v1/query", csv)
        checked += 1
        rows = json.loads(got)["rows"]
        if want is not None:
            assert [next(iter(x.values())) for x in rows] == want, sql
        return rows

    for table in EVENT_TABLES:
        mark, rows = MARKER[table], by_ts(data[table])
        ids = marks(rows, table)
        same(f"SELECT {mark} FROM {table} ORDER BY ts DESC LIMIT 7", ids[::-1][:7])
        same(f"SELECT {mark} FROM {table} ORDER BY ts LIMIT 5 OFFSET 3", ids[3:8])
        same(f"SELECT {mark} FROM {table} ORDER BY ts DESC, rowid DESC LIMIT 9", ids[::-1][:9])
        same(f"SELECT {mark} FROM {table} ORDER BY ts", ids)
        for lo, hi in range_cases(twin):
            sel = [r for r in rows if lo <= r["ts"] < hi]
            got = same(f"SELECT count(*) AS n, min(ts) AS a, max(ts) AS b, sum(ts % 1000) AS c "
                       f"FROM {table} WHERE ts >= {lo} AND ts < {hi}")[0]
            assert (got["n"], got["a"], got["b"], got["c"] or 0) == (
                len(sel), min((r["ts"] for r in sel), default=None),
                max((r["ts"] for r in sel), default=None), sum(r["ts"] % 1000 for r in sel))
            inside = [r for r in rows if lo < r["ts"] <= hi]
            same(f"SELECT {mark} FROM {table} WHERE ts > {lo} AND ts <= {hi} ORDER BY ts DESC "
                 f"LIMIT 5", marks(inside[::-1][:5], table))
            same(f"SELECT {mark} FROM {table} WHERE ts BETWEEN {lo} AND {hi} ORDER BY ts",
                 marks([r for r in rows if lo <= r["ts"] <= hi], table))
            same(f"SELECT {mark} FROM {table} WHERE ts >= {lo} ORDER BY ts LIMIT 4",
                 marks([r for r in rows if r["ts"] >= lo][:4], table))
            same(f"SELECT rowid AS rid, * FROM {table} WHERE ts >= {lo} AND ts <= {hi} "
                 f"ORDER BY rowid", csv=True)
        col, val = KEYED.get(table, ("fingerprint", "TimeoutError-1"))
        keyed = [r for r in rows if r.get(col) == val]
        assert keyed, (table, col, val)
        same(f"SELECT {mark} FROM {table} WHERE {col} = '{val}' ORDER BY ts", marks(keyed, table))
        b = twin["boundary"]
        same(f"SELECT {mark} FROM {table} WHERE {col} = '{val}' AND ts >= {b - 2 * HOUR} "
             f"ORDER BY ts LIMIT 3", marks([r for r in keyed if r["ts"] >= b - 2 * HOUR][:3],
                                           table))
        same(f"SELECT {mark} FROM {table} WHERE {col} = '{val}' AND ts < {b + HOUR} "
             f"ORDER BY ts DESC LIMIT 3",
             marks([r for r in keyed if r["ts"] < b + HOUR][::-1][:3], table))
        same(f"SELECT {col}, count(*) AS n, min(ts) AS lo, max(ts) AS hi FROM {table} "
             f"GROUP BY {col} ORDER BY {col}")

    # correlated subqueries: one filter per outer row, over packed and hot partitions
    api, errs = data["api_usage"], data["error_logs"]
    ms = midnights(twin["lo"], twin["hi"])
    picks = [r for r in api if r["ts"] in {m + d for m in ms for d in (-1, 0)}] + api[100:115]
    ids = ", ".join(f"'{r['client_id']}'" for r in picks)
    got = same(f"SELECT a.client_id AS id, (SELECT count(*) FROM api_usage b WHERE "
               f"b.endpoint = a.endpoint AND b.ts > a.ts - {HOUR} AND b.ts <= a.ts) AS n "
               f"FROM api_usage a WHERE a.client_id IN ({ids}) ORDER BY a.ts")
    assert {x["id"]: x["n"] for x in got} == {
        r["client_id"]: sum(1 for b in api if b["endpoint"] == r["endpoint"]
                            and r["ts"] - HOUR < b["ts"] <= r["ts"]) for r in picks}
    epicks = errs[::400]
    ids = ", ".join(f"'{r['trace_id']}'" for r in epicks)
    got = same(f"SELECT e.trace_id AS id, (SELECT count(*) FROM error_logs f WHERE "
               f"f.fingerprint = e.fingerprint AND f.ts < e.ts) AS n, (SELECT g.trace_id FROM "
               f"error_logs g WHERE g.ts > e.ts ORDER BY g.ts LIMIT 1) AS nxt FROM error_logs e "
               f"WHERE e.trace_id IN ({ids}) ORDER BY e.ts")
    srt = by_ts(errs)
    assert {x["id"]: (x["n"], x["nxt"]) for x in got} == {
        r["trace_id"]: (sum(1 for f in errs if f["fingerprint"] == r["fingerprint"]
                            and f["ts"] < r["ts"]),
                        next((g["trace_id"] for g in srt if g["ts"] > r["ts"]), None))
        for r in epicks}
    # joins and aggregates over both kinds of partitions
    b = twin["boundary"]
    got = same(f"SELECT count(*) AS n FROM api_usage a JOIN handler_metrics h ON h.ts > a.ts - "
               f"{MIN} AND h.ts <= a.ts WHERE a.ts >= {b - HOUR} AND a.ts < {b + HOUR}")
    hm = data["handler_metrics"]
    assert got == [{"n": sum(1 for a in api if b - HOUR <= a["ts"] < b + HOUR
                             for h in hm if a["ts"] - MIN < h["ts"] <= a["ts"])}]
    got = same("SELECT endpoint, count(*) AS n, sum(response_bytes) AS b, sum(count) AS c "
               "FROM api_usage GROUP BY endpoint ORDER BY endpoint")
    assert {x["endpoint"]: (x["n"], x["b"], x["c"]) for x in got} == {
        e: (len(g), sum(r.get("response_bytes", 0) for r in g), sum(r.get("count", 1) for r in g))
        for e in {r["endpoint"] for r in api} for g in [[r for r in api if r["endpoint"] == e]]}
    same("SELECT fingerprint, host, count(*) AS n, max(level) AS l FROM error_logs "
         "GROUP BY 1, 2 ORDER BY 1, 2")
    print(f"\n{checked} queries answered the same before and after packing (JSON; CSV too for "
          f"the whole-row ones)")


def view_cases(twin):
    """(now, window) pairs whose windows cover packed days, the packed/hot boundary, partial
    minutes inside packed days (read from raw rows) and the whole data."""
    b, ms = twin["boundary"], midnights(twin["lo"], twin["hi"])
    return [(twin["hi"], 5 * DAY), (b + 30 * MIN + 17_123, 3 * HOUR + 1234),
            (ms[0] + 12 * HOUR + 40_000, 50_000), (ms[0] + 13 * HOUR + 7, DAY + 11 * MIN),
            (ms[1] - 20_000, 45 * MIN + 30_500)]


def test_views_answer_the_same(twin):
    data, pk, ref = twin["data"], twin["pk"], twin["ref"]
    n = 0
    for now, window in view_cases(twin):
        for name in VIEWS:
            for fmt in ("json", "csv"):
                params = {"now": f"{now / 1000:.3f}", "window": f"{window}ms", "format": fmt}
                got = http_text(pk, f"/api/v1/views/{name}", params)
                assert got == http_text(ref, f"/api/v1/views/{name}", params), (name, params)
                n += 1
            rows = json.loads(http_text(pk, f"/api/v1/views/{name}",
                                        {"now": f"{now / 1000:.3f}", "window": f"{window}ms"}))
            rows = rows["rows"]
            if name == "api_performance":
                compare_rows(f"{name}@{now},{window}", rows,
                             expect_api_performance(data["api_usage"], window, now),
                             ("service", "endpoint"), API_SPEC)
            elif name == "handler_performance":
                compare_rows(f"{name}@{now},{window}", rows,
                             expect_handler_performance(data["handler_metrics"], window, now),
                             ("handler", "component"), HANDLER_SPEC)
            elif name == "error_summary":
                compare_rows(f"{name}@{now},{window}", rows,
                             errors_by_fp(data["error_logs"], window, now),
                             ("fingerprint",), ERR_SPEC)
    # filters, order and limit; and the views through SQL
    for name, extra in (("api_performance", {"endpoint": "/a", "order": "requests desc"}),
                        ("error_summary", {"fingerprint": "TimeoutError-1"}),
                        ("error_summary", {"order": "count_window desc", "limit": "2"}),
                        ("handler_performance", {"handler": "h1", "limit": "1"}),
                        ("pipeline_health", {"order": "pipeline"})):
        params = {"now": f"{twin['hi'] / 1000:.3f}", "window": "3d", **extra}
        got = http_text(pk, f"/api/v1/views/{name}", params)
        assert json.loads(got)["rows"], (name, params)
        assert got == http_text(ref, f"/api/v1/views/{name}", params), (name, params)
        n += 1
    for name in VIEWS:  # at the current time: leave out the ages, which move between requests
        rows = [[{k: v for k, v in x.items()
                  if k not in ("freshness_ms", "age_ms", "mean_duration_ms")}
                 for x in s.query(f"SELECT * FROM {name}")] for s in (pk, ref)]
        assert rows[0] == rows[1], name
    # the CLI reads the packed file the same way
    for name in ("error_summary", "api_performance", "pipeline_health"):
        for fmt in ("json", "csv"):
            args = ("view", name, "--now", f"{twin['hi'] / 1000:.3f}", "--window", "4d",
                    "--format", fmt)
            a, b = cli(*args, "--db", pk.db), cli(*args, "--db", ref.db)
            assert a.returncode == b.returncode == 0, a.stderr + b.stderr
            assert a.stdout == b.stdout, (name, fmt)
    print(f"\n{n} view answers the same before and after packing")


# ---- late rows -------------------------------------------------------------------------------


def late_rows(twin, day, tag):
    """A few rows of api_usage, error_logs and handler_metrics inside the packed day `day`, in
    minutes that already hold rows (so their rollup buckets change)."""
    data, rng = twin["data"], random.Random(tag)
    out = {}
    for table in ("api_usage", "error_logs", "handler_metrics"):
        base = [r for r in data[table] if day_of(r["ts"]) == day]
        rows = []
        for i, r in enumerate(rng.sample(base, 3)):
            row = dict(r)
            row["ts"] = r["ts"] + (1 if r["ts"] % MIN < MIN - 1 else -1)
            row[MARKER[table]] = f"{tag}{table[:2]}{i}"
            rows.append(row)
        out[table] = rows
    return out


ROLLUP_1M = {"api_usage": "api_usage_1m", "error_logs": "error_logs_1m",
             "handler_metrics": "handler_metrics_1m"}


def test_late_row_unpacks_then_the_next_pass_packs_again(twin, server_factory, tmp_path):
    """Late rows into a packed day, through a server on a copy of the packed database and one
    on a copy of the never-packed one; then `opsdb compact` (next to the running server) packs
    the day again. Twice."""
    base, data = twin["base"], twin["data"]
    db = copy_db(base / "pristine_packed.db", tmp_path / "late.db")
    never = copy_db(base / "pristine_ref.db", tmp_path / "never.db")
    common = (*LONG, "--set", "query.max_rows=100000")
    srv = server_factory(*common, db=db)
    ref = server_factory(*common, "--set", "storage.compress_events_after=0", db=never)
    cold_days = sorted({c["start_ts"] for c in srv.query(
        "SELECT start_ts FROM opsdb_partitions WHERE state = 'cold'")})
    day = cold_days[1]  # a whole packed day
    before = {t: srv.query(f"SELECT rowid AS rid, * FROM {t} ORDER BY rowid") for t in ROLLUP_1M}

    def views(s):
        out = []
        edges = [(r["ts"] + 20_000, 40_000) for r in late["api_usage"][:2] + late["error_logs"][:1]]
        for now, window in [(day + 13 * HOUR, 2 * DAY), (day + DAY - 1, DAY),
                            (day + 10 * HOUR + 30_000, 3 * HOUR + 5_000)] + edges:
            for name in ("api_performance", "error_summary", "handler_performance"):
                params = {"now": f"{now / 1000:.3f}", "window": f"{window}ms"}
                out.append((name, now, window,
                            http_text(s, f"/api/v1/views/{name}", params)))
        return out

    def check_views(got):
        assert got == views(ref)  # byte for byte as the never-packed database answers
        for name, now, window, text in got:
            rows, where = json.loads(text)["rows"], f"{name}@{now},{window}"
            if name == "api_performance":
                compare_rows(where, rows, expect_api_performance(data["api_usage"], window, now),
                             ("service", "endpoint"), API_SPEC)
            elif name == "error_summary":
                compare_rows(where, rows, errors_by_fp(data["error_logs"], window, now),
                             ("fingerprint",), ERR_SPEC)
            else:
                compare_rows(where, rows,
                             expect_handler_performance(data["handler_metrics"], window, now),
                             ("handler", "component"), HANDLER_SPEC)

    for round_ in range(2):
        late = late_rows(twin, day, f"late{round_}x")
        for table, rows in late.items():
            post_ndjson(srv, table, rows)
            post_ndjson(ref, table, rows)
            assert f"{part_name(table, day)} was packed and got a late row: unpacked" in \
                srv.run_stderr()
            data = {**data, table: data[table] + rows}
        cat = srv.query("SELECT * FROM opsdb_partitions ORDER BY table_name, start_ts")
        for table in EVENT_TABLES:
            want = want_catalogue(table, data[table], packed_before=twin["packed_before"])
            if table in late:  # the day with late rows is hot again, the others as they were
                want = [w if w[1] != day else w[:4] + ("hot",) for w in want]
            assert catalogue(cat, table) == want, table
            assert_hot_or_cold(srv.query, table)
        for table in late:
            mark = MARKER[table]
            sql = f"SELECT rowid AS rid, * FROM {table} ORDER BY rowid"
            got = srv.query(sql)
            assert got == ref.query(sql), table  # rowids and all
            old = {y[mark] for y in before[table]}
            assert [x for x in got if x[mark] in old] == before[table], \
                f"{table}: the rows read before the late rows changed"
            assert sorted(marks(got, table)) == sorted(marks(data[table], table))
            sql = f"SELECT * FROM {ROLLUP_1M[table]} ORDER BY 1, 2, 3, 4"
            assert srv.query(sql) == ref.query(sql), f"{ROLLUP_1M[table]} differs"
            before[table] = got
        got = views(srv)
        check_views(got)
        # the next pass packs the three days again, and nothing else; answers do not change
        nparts, nrows, _ = compact(db)
        assert (nparts, nrows) == (3, sum(sum(1 for r in data[t] if day_of(r["ts"]) == day)
                                          for t in late))
        cat = srv.query("SELECT * FROM opsdb_partitions ORDER BY table_name, start_ts")
        for table in EVENT_TABLES:
            assert catalogue(cat, table) == want_catalogue(
                table, data[table], packed_before=twin["packed_before"]), table
            assert_hot_or_cold(srv.query, table)
        for table in late:
            assert srv.query(f"SELECT rowid AS rid, * FROM {table} ORDER BY rowid") == \
                before[table], table
        assert views(srv) == got


# ---- the server ------------------------------------------------------------------------------


def test_server_packs_by_itself_while_rows_arrive(server_factory, tmp_path):
    away_from_midnight(60)
    into = now_ms() % DAY  # and from 01:00, when now - 1h crosses midnight
    if HOUR - 90_000 < into < HOUR + 30_000:
        time.sleep((HOUR + 30_000 - into) / 1000)
    now = now_ms()
    lo, hi = now - 3 * DAY, now - MIN
    data = gen_events(SEED + 5, lo, hi, {"api_usage": 2500})
    data["error_logs"] = realistic_errors(SEED + 6, lo, hi, 1500)
    srv = server_factory(*LONG, "--set", "storage.compact_interval=1s", "--set",
                         "storage.compress_events_after=1h", "--set", "query.max_rows=100000",
                         "--set", "storage.pack_quiet=0")
    ref = tmp_path / "ref.db"  # the same batches, in the same order, never packed
    rng = random.Random(SEED + 7)
    for table, rows in data.items():
        rows = rows[:]
        rng.shuffle(rows)
        for i in range(0, len(rows), 600):
            post_ndjson(srv, table, rows[i:i + 600])
            time.sleep(0.3)  # let the server pack between batches: later ones unpack again
        cli_ingest(cli, ref, table, rows)

    def metric():
        m = re.search(r"^opsdb_partitions_packed_total (\d+)$", srv.get("/metrics").text, re.M)
        return int(m.group(1))

    def settled():
        cat = srv.query("SELECT * FROM opsdb_partitions ORDER BY table_name, start_ts")
        return all(catalogue(cat, t) == want_catalogue(t, rows, packed_before=now_ms() - HOUR)
                   for t, rows in data.items())

    if not wait_until(settled, timeout=30, interval=0.2):
        cat = srv.query("SELECT * FROM opsdb_partitions ORDER BY table_name, start_ts")
        for t, rows in data.items():
            assert catalogue(cat, t) == want_catalogue(t, rows, packed_before=now_ms() - HOUR), \
                srv.run_stderr()[-3000:]
    ncold = srv.scalar("SELECT count(*) AS n FROM opsdb_partitions WHERE state = 'cold'")
    assert ncold >= 4
    assert metric() >= ncold
    log = srv.run_stderr()
    assert re.search(r"packed error_logs_p\d{8}: \d+ rows into \d+ bytes", log), log[-3000:]
    for table in data:
        assert_hot_or_cold(srv.query, table)
        sql = f"SELECT rowid AS rid, * FROM {table} ORDER BY rowid"
        assert srv.query(sql) == cli_query(cli, ref, sql), table
    for name in ("api_performance", "error_summary"):
        for now_, window in ((hi, 3 * DAY), (day_of(hi) - 20_000, 90 * MIN + 4321)):
            params = {"now": f"{now_ / 1000:.3f}", "window": f"{window}ms"}
            got = json.loads(http_text(srv, f"/api/v1/views/{name}", params))["rows"]
            cp = cli("view", name, "--db", ref, "--now", params["now"], "--window",
                     params["window"], "--format", "json")
            want = json.loads(cp.stdout)["rows"]
            # batches of another size sum latencies in another order: the last bit may differ
            assert len(got) == len(want) and all(
                g.keys() == w.keys() and all(
                    math.isclose(g[k], w[k], rel_tol=1e-12) if isinstance(w[k], float)
                    else g[k] == w[k] for k in w) for g, w in zip(got, want)), \
                (name, params, [(k, g.get(k), w.get(k)) for g, w in zip(got, want)
                                for k in w if g.get(k) != w.get(k)][:10])

    # a late row over HTTP: unpacked, visible, then packed again by the server itself
    day = min(c["start_ts"] for c in srv.query("SELECT start_ts FROM opsdb_partitions WHERE "
                                               "state = 'cold' AND table_name = 'api_usage'"))
    name = part_name("api_usage", day)
    packed0 = metric()
    row = {"ts": day + 5 * HOUR + 3, "method": "GET", "endpoint": "/late", "status_code": 500,
           "latency_ms": 7.5, "client_id": "late0"}
    r = srv.ingest("api_usage", [row])
    assert r.status_code == 200, r.text
    assert srv.query("SELECT client_id FROM api_usage WHERE endpoint = '/late'") == \
        [{"client_id": "late0"}]
    assert wait_until(lambda: f"{name} was packed and got a late row: unpacked" in
                      srv.run_stderr(), timeout=5)
    assert wait_until(lambda: srv.scalar(f"SELECT state FROM opsdb_partitions WHERE "
                                         f"name = '{name}'") == "cold", timeout=20), \
        srv.run_stderr()[-2000:]
    assert metric() == packed0 + 1
    assert srv.count(name) == sum(1 for r in data["api_usage"] if day_of(r["ts"]) == day) + 1
    got = srv.query("SELECT requests, errors, latency_sum FROM api_usage_1m WHERE "
                    "endpoint = '/late'")
    assert got == [{"requests": 1, "errors": 1, "latency_sum": 7.5}]


def test_a_partition_still_being_written_waits_for_quiet(server_factory):
    """A backfill streaming into an old day: the server does not pack the day between its
    batches (each next batch would unpack it again), but once storage.pack_quiet has passed
    without rows."""
    away_from_midnight(60)
    srv = server_factory(*LONG, "--set", "storage.compact_interval=1s", "--set",
                         "storage.compress_events_after=1h", "--set", "storage.pack_quiet=3s")
    day = day_of(now_ms() - 2 * DAY)
    name = part_name("api_usage", day)
    t_end = time.monotonic() + 5
    i = 0
    while time.monotonic() < t_end:
        rows = [{"ts": day + HOUR + i * 100 + k, "method": "GET", "endpoint": "/backfill",
                 "status_code": 200, "client_id": f"b{i}"} for k in range(50)]
        assert srv.ingest("api_usage", rows).status_code == 200
        i += 1
        time.sleep(0.3)
    state = srv.scalar(f"SELECT state FROM opsdb_partitions WHERE name = '{name}'")
    assert state == "hot"
    assert "got a late row" not in srv.run_stderr()
    assert wait_until(lambda: srv.scalar(f"SELECT state FROM opsdb_partitions WHERE "
                                         f"name = '{name}'") == "cold", timeout=15), \
        srv.run_stderr()[-2000:]
    assert srv.count(name) == i * 50
    assert "got a late row" not in srv.run_stderr()


def test_cli_packs_next_to_a_running_server(server_factory):
    """`opsdb compact` packs a partition the server holds an insert statement for: the server's
    next row for that day must unpack it, not fail."""
    away_from_midnight()
    srv = server_factory(*LONG, "--set", "storage.compress_events_after=0")
    now = now_ms()
    rows = [{"ts": now - 3 * DAY + i * 1000, "method": "GET", "endpoint": "/x",
             "status_code": 200, "client_id": f"s{i}"} for i in range(5)]
    assert srv.ingest("api_usage", rows + [{"ts": now - 1000, "method": "GET", "endpoint": "/x",
                                            "status_code": 200, "client_id": "now"}]
                      ).status_code == 200
    nparts, nrows, _ = compact(srv.db)
    assert (nparts, nrows) == (1, 5)
    name = part_name("api_usage", day_of(now - 3 * DAY))
    assert srv.scalar(f"SELECT state FROM opsdb_partitions WHERE name = '{name}'") == "cold"
    assert srv.query(f"SELECT client_id FROM {name} ORDER BY ts") == \
        [{"client_id": f"s{i}"} for i in range(5)]
    r = srv.ingest("api_usage", [{"ts": now - 3 * DAY + 500, "method": "GET", "endpoint": "/x",
                                  "status_code": 200, "client_id": "late"}])
    assert r.status_code == 200, r.text
    assert srv.query(f"SELECT client_id FROM api_usage WHERE ts < {now - DAY} ORDER BY ts") == \
        [{"client_id": c} for c in ("s0", "late", "s1", "s2", "s3", "s4")]
    assert srv.scalar(f"SELECT state FROM opsdb_partitions WHERE name = '{name}'") == "hot"
    assert srv.scalar(f"SELECT rows FROM opsdb_partitions WHERE name = '{name}'") == 6


# ---- kill -9 in the middle of packing --------------------------------------------------------

BIG_ROWS = 150_000
# count and checksums of every row: a row lost, doubled or changed moves them (the client ids
# are s<i> and b<i>: their numbers summed, and squared)
CHECK_SQL = ("SELECT count(*) AS n, sum(client_id LIKE 'b%') AS b, sum(CAST(substr(client_id, 2) "
             "AS INTEGER)) AS ids, sum(CAST(substr(client_id, 2) AS INTEGER) * CAST(substr("
             "client_id, 2) AS INTEGER)) AS ids2, sum(ts) AS ts, sum(status_code) AS sc, "
             "sum(coalesce(response_bytes, -1)) AS rb, sum(length(endpoint) * ts % 1000003) AS ep, "
             "sum(CAST(round(latency_ms * 1000) AS INTEGER)) AS lat FROM api_usage")


def big_rows(day):
    rng = random.Random(SEED + 9)
    return [{"ts": day + rng.randrange(DAY), "method": rng.choice(["GET", "POST"]),
             "endpoint": rng.choice(["/a", "/b/:id", "/c", "/d/:id/e"]),
             "status_code": rng.choice([200, 200, 200, 201, 404, 500]),
             "latency_ms": round(rng.lognormvariate(3, 1), 3),
             "response_bytes": rng.randrange(90000), "client_id": f"b{i}"}
            for i in range(BIG_ROWS)]


def check_of(rows):
    nums = [int(r["client_id"][1:]) for r in rows]
    return {"n": len(rows), "b": sum(r["client_id"][0] == "b" for r in rows), "ids": sum(nums),
            "ids2": sum(x * x for x in nums), "ts": sum(r["ts"] for r in rows),
            "sc": sum(r["status_code"] for r in rows),
            "rb": sum(r.get("response_bytes", -1) for r in rows),
            "ep": sum(len(r["endpoint"]) * r["ts"] % 1000003 for r in rows),
            "lat": sum(round(r["latency_ms"] * 1000) for r in rows)}


def test_kill9_while_packing_loses_and_doubles_nothing(opsdb_bin, tmp_path):
    db = tmp_path / "big.db"
    now = now_ms()
    big_day = day_of(now) - 3 * DAY
    small = [{"ts": big_day - DAY + 1000 * i, "method": "GET", "endpoint": "/s",
              "status_code": 200, "latency_ms": 1.0, "client_id": f"s{i}"} for i in range(50)]
    rows = big_rows(big_day)
    cp = cli("ingest", "api_usage", "-", "--db", db, *LONG, input=ndjson(small + rows),
             timeout=300)
    assert cp.returncode == 0, cp.stderr[-2000:]
    want = check_of(small + rows)
    big, first = part_name("api_usage", big_day), part_name("api_usage", big_day - DAY)

    def state():
        got = cli_query(cli, db, CHECK_SQL, "--set", "query.timeout=60s")
        assert got == [want], "rows lost or doubled"
        con = sqlite3.connect(db)  # the catalogue and schema are plain tables
        con.row_factory = sqlite3.Row
        try:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert_hot_or_cold(lambda sql: [dict(x) for x in con.execute(sql)], "api_usage")
            return con.execute(f"SELECT state FROM opsdb_partitions WHERE name = '{big}'"
                               ).fetchone()[0]
        finally:
            con.close()

    # the small older day is packed first, in its own transaction: its progress line says the
    # big day's packing has begun; kill then, and once more when its blocks reach the WAL
    outcomes = []
    for wait_for_wal in (False, True):
        proc = subprocess.Popen([opsdb_bin, "compact", "--db", str(db)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        err = b""
        deadline = time.monotonic() + 60
        try:
            if not wait_for_wal:
                while time.monotonic() < deadline and f"packed {first}".encode() not in err:
                    ready, _, _ = select.select([proc.stderr], [], [], 0.5)
                    if ready:
                        chunk = os.read(proc.stderr.fileno(), 4096)
                        if not chunk:
                            break
                        err += chunk
                time.sleep(0.05)
            else:  # a WAL left by the last run is written over from its start
                wal = f"{db}-wal"
                wal0 = os.path.getsize(wal) if os.path.exists(wal) else 0
                while time.monotonic() < deadline and proc.poll() is None and \
                        (not os.path.exists(wal) or os.path.getsize(wal) < wal0 + (1 << 20)):
                    time.sleep(0.005)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        outcomes.append(state())
    print(f"\nafter kill -9 of opsdb compact: {big} was {outcomes}")
    assert outcomes[0] == "hot", "the first kill came after the big partition was packed"
    # a compaction that runs to its end packs it, with every row
    nparts, nrows, nbytes = compact(db)
    assert nparts >= 1 and state() == "cold"
    print(f"{BIG_ROWS} rows packed into {nbytes} bytes")


# ---- retention -------------------------------------------------------------------------------


def test_retention_drops_packed_partitions_with_their_blocks(twin, tmp_path):
    db = copy_db(twin["base"] / "pristine_packed.db", tmp_path / "ret.db")
    data = twin["data"]
    policy = {"error_logs": 2, "api_usage": 3}
    now = now_ms()
    cp = cli("retention", "apply", "--db", db,
             *[a for t, d in policy.items() for a in ("--set", f"retention.{t}={d}d")])
    assert cp.returncode == 0, cp.stderr
    m = APPLY_RE.match(cp.stdout.strip())
    assert m, cp.stdout
    gone = {(t, s): n for t, d in policy.items() for s, n in count_by_day(data[t]).items()
            if s + DAY <= now - d * DAY}
    assert len(gone) >= 2
    assert all(s + DAY <= twin["packed_before"] for _t, s in gone)  # all of them packed
    assert (int(m.group(1)), int(m.group(2))) == (len(gone), sum(gone.values())), cp.stdout
    schema = schema_of(lambda sql: cli_query(cli, db, sql))
    for t, s in gone:
        assert part_name(t, s) not in schema and f"{part_name(t, s)}_packed" not in schema
    cat = cli_query(cli, db, "SELECT * FROM opsdb_partitions ORDER BY table_name, start_ts")
    for table in EVENT_TABLES:
        keep = [r for r in data[table] if (table, day_of(r["ts"])) not in gone]
        assert catalogue(cat, table) == want_catalogue(table, keep,
                                                       packed_before=twin["packed_before"])
        assert_hot_or_cold(lambda sql: cli_query(cli, db, sql), table)
        got = cli_query(cli, db, f"SELECT {MARKER[table]} FROM {table} ORDER BY ts")
        assert marks(got, table) == marks(by_ts(keep), table), table
    # the whole file holds nothing of them: no orphan blocks table is left anywhere
    con = sqlite3.connect(db)
    try:
        names = {n for (n,) in con.execute("SELECT name FROM sqlite_schema")}
        cold = {c["name"] for c in cat if c["state"] == "cold"}
        assert {n for n in names if n.endswith("_packed")} == {f"{c}_packed" for c in cold}
    finally:
        con.close()


# ---- damage ----------------------------------------------------------------------------------


def test_a_damaged_block_is_an_error_naming_partition_and_block(twin, server_factory, tmp_path):
    db = copy_db(twin["base"] / "pristine_packed.db", tmp_path / "bad.db")
    data = twin["data"]
    cat = cli_query(cli, db, "SELECT * FROM opsdb_partitions WHERE state = 'cold' ORDER BY "
                             "table_name, start_ts")
    errs = [c for c in cat if c["table_name"] == "error_logs"]
    apis = [c for c in cat if c["table_name"] == "api_usage"]
    assert len(errs) >= 3 and len(apis) >= 2
    con = sqlite3.connect(db)
    damaged = {}
    try:
        def blob(name):
            return con.execute(f"SELECT block, data FROM {name}_packed ORDER BY block LIMIT 1"
                               ).fetchone()

        kinds = [("garbage", lambda b: random.Random(1).randbytes(len(b))),
                 ("truncated", lambda b: b[:len(b) // 2]),
                 ("flipped", lambda b: b[:len(b) - 6] + bytes([b[-6] ^ 0x5A]) + b[len(b) - 5:]),
                 ("empty", lambda b: b""),
                 ("header", lambda b: bytes([b[0] ^ 0xFF]) + b[1:])]
        for (kind, spoil), part in zip(kinds, errs + apis):
            block, data_ = blob(part["name"])
            con.execute(f"UPDATE {part['name']}_packed SET data = ? WHERE block = ?",
                        (spoil(bytes(data_)), block))
            damaged[part["name"]] = (kind, block, part)
        con.commit()
    finally:
        con.close()
    srv = server_factory(*LONG, "--set", "query.max_rows=100000", db=db)

    def assert_error(r, names, what):
        """An error status and a JSON message naming one of names and its damaged block."""
        assert 400 <= r.status_code < 600, f"{what}: {r.status_code} {r.text[:500]}"
        msg = r.json().get("error")
        assert isinstance(msg, str) and any(
            f"packed partition {n}_packed, block {damaged[n][1]}:" in msg for n in names), \
            f"{what}: {msg!r}"

    for name, (kind, block, part) in damaged.items():
        t, s = part["table_name"], part["start_ts"]
        of_table = [n for n, v in damaged.items() if v[2]["table_name"] == t]
        for sql in (f"SELECT count(*) FROM {t}", f"SELECT * FROM {t} ORDER BY ts LIMIT 100000"):
            assert_error(srv.get("/api/v1/query", params={"sql": sql}), of_table, sql)
        for sql in (f"SELECT * FROM {name}", f"SELECT * FROM {t} WHERE ts >= {s} AND "
                                             f"ts < {s + DAY}"):
            assert_error(srv.get("/api/v1/query", params={"sql": sql}), [name], sql)
        cp = cli("query", f"SELECT count(*) FROM {name}", "--db", db)
        assert cp.returncode != 0 and f"{name}_packed" in cp.stderr and f"block {block}" in \
            cp.stderr, (kind, cp.returncode, cp.stderr)
    # a view whose window's partial minutes are read from the damaged block's raw rows
    first = min(r["ts"] for r in data["error_logs"] if day_of(r["ts"]) == errs[0]["start_ts"])
    r = srv.get("/api/v1/views/error_summary", params={"now": f"{(first + 20_000) / 1000:.3f}",
                                                       "window": "50s"})
    assert 400 <= r.status_code < 600 and "error" in r.json(), r.text[:500]
    # what does not touch the damage still answers, exactly
    for table in ("api_usage", "error_logs"):
        bad = {c["start_ts"] for _k, _b, c in damaged.values() if c["table_name"] == table}
        mark = MARKER[table]
        for c in (x for x in srv.query("SELECT * FROM opsdb_partitions") if
                  x["table_name"] == table and x["start_ts"] not in bad):
            # bounds exactly at the midnights: the damaged neighbour's blocks are not read
            got = srv.query(f"SELECT {mark} FROM {table} WHERE ts >= {c['start_ts']} AND "
                            f"ts < {c['end_ts']} ORDER BY ts")
            assert marks(got, table) == marks(by_ts(
                [r for r in data[table] if c["start_ts"] <= r["ts"] < c["end_ts"]]),
                table), c["name"]
            got = srv.query(f"SELECT {mark} FROM {table} WHERE ts > {c['start_ts'] - 1} AND "
                            f"ts <= {c['end_ts'] - 1} ORDER BY ts")
            assert marks(got, table) == marks(by_ts(
                [r for r in data[table] if c["start_ts"] <= r["ts"] < c["end_ts"]]),
                table), c["name"]
    # a late row for a damaged day is refused with a message, and nothing is written
    name, (kind, block, part) = next(iter(damaged.items()))
    row = dict(next(r for r in data["error_logs"] if day_of(r["ts"]) == part["start_ts"]))
    row["trace_id"] = "into-damage"
    r = srv.ingest("error_logs", [row])
    assert 400 <= r.status_code < 600 and "error" in r.json(), r.text[:500]
    assert srv.scalar(f"SELECT state FROM opsdb_partitions WHERE name = '{name}'") == "cold"
    assert srv.count("error_logs", f"ts > {twin['boundary'] + 1}") == sum(
        1 for r in data["error_logs"] if r["ts"] > twin["boundary"] + 1)
    assert srv.get("/healthz").status_code == 200
