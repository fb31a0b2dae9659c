#!/usr/bin/python3
"""How much smaller the event tables get once packed, and how fast a packed partition scans:
the storage issue's logs target (>= 10x) measured in minutes instead of bench/scale.sh's hour.

usage: bench/packratio.py [--opsdb PATH] [--baseline PATH] [--days D] [--tables T,T]
                          [--end EPOCH_S] [--seed N] [--runs N] [--keep]

It builds bench/gen into a temporary directory, generates D whole UTC days (default 1) of the
reference workload's event tables ending at --end (default 1767225600, 2026-01-01 00:00 UTC:
the same rows on every run; retention is off so old days load), sends them as NDJSON (10,000 rows
per request, 2 kept-alive senders, bench/send.py) to `opsdb serve` on a fresh database with
packing off, and stops the server. Then, for --opsdb (default ./opsdb) and, when given,
--baseline (another build, e.g. of the previous commit), each on its own copy of that database
with the server stopped, as bench/scale.sh does:

1. `opsdb partitions --format json`, `opsdb compact --older-than` (every partition of the loaded
   days; timed), `opsdb partitions --format json` again. Per table: rows, hot bytes (dbstat pages
   of each partition and its indexes), packed bytes (dbstat pages of its blocks), the ratio (and
   the least ratio of one partition) and packed bytes per row; the same definition as
   bench/scale.sh's report.
2. A full scan of the packed error_logs partitions, `SELECT count(*), sum(length(message)),
   sum(length(stack_trace)), count(trace_id), min(ts), max(ts) FROM error_logs`, through
   `opsdb serve`'s SQL route (answer cache off) on one kept-alive connection: --runs times
   (default 30), alternating between the builds when there are two (the machine is shared: back
   to back is the only fair comparison); min and median ms. The builds must give the same answer.

Summary on stdout (markdown), progress on stderr. Stdlib only.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port, log, wait_ready  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
TABLES = ("api_usage", "error_logs", "pipeline_status", "handler_metrics")
SCAN_SQL = ("SELECT count(*), sum(length(message)), sum(length(stack_trace)), count(trace_id), "
            "min(ts), max(ts) FROM error_logs")
RET_ARGS = [a for t in TABLES for a in ("--set", f"retention.{t}=0")]  # old days load
SERVE_ARGS = ["--no-collect", "--set", "query.cache_bytes=0", "--set", "storage.compress_after=0",
              "--set", "storage.compress_events_after=0"] + RET_ARGS


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-600:]}")
    return p.stdout


class Server:
    """opsdb serve on db; stopped (SIGTERM, then waited for) by stop()."""

    def __init__(self, opsdb, db, logfile):
        self.port = free_port()
        self.log = open(logfile, "ab")
        self.proc = subprocess.Popen(
            [opsdb, "serve", "--db", db, "--listen", f"127.0.0.1:{self.port}"] + SERVE_ARGS,
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_ready(self.port, self.proc, timeout=120, path="/healthz")
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def query(self, sql):
        """(rows, seconds) of one SQL query; exits the benchmark on an error answer."""
        t0 = time.monotonic()
        self.conn.request("GET", "/api/v1/query?sql=" + urllib.parse.quote(sql))
        r = self.conn.getresponse()
        body = r.read()
        secs = time.monotonic() - t0
        if r.status != 200:
            raise SystemExit(f"query failed ({r.status}): {body[:400]!r}")
        return json.loads(body)["rows"], secs

    def stop(self):
        self.conn.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def load(opsdb, tmp, days, end, seed, tables):
    """Generates and sends the event tables into tmp/hot.db; returns {table: rows acked}."""
    gen = os.path.join(tmp, "gen")
    run([os.environ.get("CC", "gcc"), "-O2", "-std=c11", "-o", gen, os.path.join(BENCH, "gen.c")])
    db = os.path.join(tmp, "hot.db")
    srv = Server(opsdb, db, os.path.join(tmp, "server-load.log"))
    acked = {}
    try:
        for t in tables:
            d = os.path.join(tmp, "nd", t)
            os.makedirs(d)
            t0 = time.monotonic()
            run([gen, "--seed", str(seed), "--table", t, "--start", str(end - days * 86400),
                 "--end", str(end), "--out-dir", d, "--batch", "10000"])
            files = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".ndjson"))
            t1 = time.monotonic()
            out = run([sys.executable, os.path.join(BENCH, "send.py"),
                       f"http://127.0.0.1:{srv.port}/api/v1/ingest/{t}",
                       "application/x-ndjson", "2"] + files)
            rows = 0
            for line in out.splitlines():
                code, _, f = line.split(" ", 2)
                if code != "200":
                    raise SystemExit(f"sending {f} answered {code}: {open(f + '.resp').read()[:400]}")
                rows += json.load(open(f + ".resp"))["rows"]
            acked[t] = rows
            log(f"  {t}: {rows:,} rows generated in {t1 - t0:.1f} s, sent in "
                f"{time.monotonic() - t1:.1f} s")
            shutil.rmtree(d)
    finally:
        srv.stop()
    return acked


def partitions(opsdb, db):
    doc = json.loads(run([opsdb, "partitions", "--db", db, "--format", "json"] + RET_ARGS))
    return {r["partition"]: r for r in doc["rows"]}


def pack(label, opsdb, tmp, end):
    """Packs a copy of the hot database with opsdb; returns (db, per-table sums, seconds)."""
    db = os.path.join(tmp, f"{label}.db")
    for suffix in ("", "-wal"):
        if os.path.exists(os.path.join(tmp, "hot.db" + suffix)):
            shutil.copyfile(os.path.join(tmp, "hot.db" + suffix), db + suffix)
    before = partitions(opsdb, db)
    older = int(time.time()) - end  # every partition that ended by the data end
    t0 = time.monotonic()
    run([opsdb, "compact", "--db", db, "--older-than", f"{older}s", "--quiet"] + RET_ARGS)
    secs = time.monotonic() - t0
    after = partitions(opsdb, db)
    sums = {}
    for name, c in after.items():
        h = before.get(name)
        if c.get("state") == "cold" and h and h.get("state") == "hot" and c["table"] in TABLES:
            s = sums.setdefault(c["table"], [0, 0, 0, 0, float("inf")])
            s[0] += 1
            s[1] += h["rows"]
            s[2] += h["bytes"] or 0
            s[3] += c["bytes"] or 0
            s[4] = min(s[4], ratio(h["bytes"] or 0, c["bytes"] or 0))
    return db, sums, secs


def ratio(a, b):
    return a / b if b else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--opsdb", default=os.path.join(ROOT, "opsdb"))
    ap.add_argument("--baseline", help="another opsdb build packed and scanned back to back")
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--tables", default=",".join(TABLES))
    ap.add_argument("--end", type=int, default=1767225600)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    tables = [t for t in a.tables.split(",") if t]
    for t in tables:
        if t not in TABLES:
            ap.error(f"--tables: {t} is not one of {', '.join(TABLES)}")
    if a.days < 1 or a.end % 86400 or a.runs < 1:
        ap.error("--days and --runs must be >= 1 and --end a UTC midnight (a multiple of 86400)")
    builds = [("new", os.path.abspath(a.opsdb))]
    if a.baseline:
        builds.insert(0, ("baseline", os.path.abspath(a.baseline)))
    for _, path in builds:
        if not os.access(path, os.X_OK):
            ap.error(f"no opsdb binary at {path}")
    tmp = tempfile.mkdtemp(prefix="opsdb-packratio.")
    ok = False
    try:
        log(f"== loading {a.days} day(s) of {', '.join(tables)} (ending {a.end}) into {tmp}/hot.db")
        load(builds[-1][1], tmp, a.days, a.end, a.seed, tables)
        results = {}
        for label, path in builds:
            log(f"== packing with {label} ({path})")
            results[label] = pack(label, path, tmp, a.end)
            log(f"  {results[label][2]:.1f} s")
        scans = {label: [] for label, _ in builds}
        answers = {}
        if "error_logs" in tables:
            log(f"== scanning the packed error_logs, {a.runs} runs per build")
            servers = {label: Server(path, results[label][0], os.path.join(tmp, f"server-{label}.log"))
                       for label, path in builds}
            try:
                for label, srv in servers.items():  # warm the page cache once
                    answers[label] = srv.query(SCAN_SQL)[0]
                for _ in range(a.runs):
                    for label, srv in servers.items():
                        scans[label].append(srv.query(SCAN_SQL)[1] * 1000)
            finally:
                for srv in servers.values():
                    srv.stop()
        print(f"# bench/packratio.py: {a.days} day(s) ending {a.end}, seed {a.seed}")
        print()
        print("| build | table | partitions | rows | hot bytes (rows + indexes) | packed bytes | "
              "smaller by | least of a partition | packed bytes/row |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for label, _ in builds:
            for t in tables:
                n, rows, hb, cb, least = results[label][1].get(t, [0, 0, 0, 0, float("nan")])
                print(f"| {label} | {t} | {n} | {rows:,} | {hb:,} | {cb:,} | **{ratio(hb, cb):.2f}x** | "
                      f"{least:.2f}x | {ratio(cb, rows):.2f} |")
        print()
        for label, _ in builds:
            print(f"- {label}: `opsdb compact` packed in {results[label][2]:.1f} s")
        if answers:
            print()
            print(f"Full scan of the packed error_logs (`{SCAN_SQL}`), {a.runs} runs per build, "
                  "alternating, one kept-alive connection to each build's server:")
            print()
            for label, _ in builds:
                s = scans[label]
                print(f"- {label}: min {min(s):.1f} ms, median {statistics.median(s):.1f} ms "
                      f"(answer {answers[label]})")
            if len(set(json.dumps(v) for v in answers.values())) > 1:
                print("- **the builds answered differently**")
                raise SystemExit(1)
        ok = True
    finally:
        if a.keep or not ok:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
