#!/usr/bin/python3
"""Backup, verify and restore at scale, and ingestion while a backup runs (the backups issue's
benchmark).

usage: bench/backup.py [--quick] [--rows N] [--opsdb ./opsdb] [--keep]

Loads the reference workload (bench/gen: system_metrics as line protocol, the event tables as
NDJSON, in time order, through `opsdb serve` with two kept-alive senders) until the database
holds about ROWS rows (default 10,000,000; --quick 1,000,000), then measures, on that database:

1. ingestion without a backup: api_usage NDJSON batches of 10,000 rows sent in a loop by two
   senders for as long as the backup below takes (at least 5 s): rows/s and request latency;
2. `opsdb backup create` while the same ingestion runs: the backup's time and size, and the
   rows/s and request latency of the ingestion meanwhile (a backup must not stop ingestion);
3. `opsdb backup create` with the server idle: time, size of the database and of the backup;
4. `opsdb backup verify` of that backup: time;
5. `opsdb restore` of it at another path, and `opsdb serve` on the restored file until
   /readyz answers: time of each.

Prints a markdown summary (also written to bench/results/backup-<date>.md); progress goes to
stderr. Needs gcc and /usr/bin/python3 (stdlib only). Exit status 1 when a step failed.
"""
import argparse
import glob
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

from benchlib import free_port, log, wait_ready

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS_PER_S = 254  # of the reference workload (bench/README.md)
BATCH = 10000


def run(cmd, **kw):
    t0 = time.monotonic()
    cp = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if cp.returncode != 0:
        raise SystemExit(f"failed ({cp.returncode}): {' '.join(map(str, cmd))}\n{cp.stderr}")
    return cp, time.monotonic() - t0


class Sender:
    """Posts files to a URL with two kept-alive connections; loops over them until stopped
    when loop is set. Records (completion time, seconds, rows) per request."""

    def __init__(self, port, path, ctype, files, rows_per_file, loop=False):
        self.port, self.path, self.ctype = port, path, ctype
        self.bodies = [open(f, "rb").read() for f in files]
        self.rows = rows_per_file
        self.loop = loop
        self.done = []  # (monotonic end, seconds, rows, status)
        self.stop = threading.Event()
        self.next = 0
        self.lock = threading.Lock()

    def _take(self):
        with self.lock:
            if self.stop.is_set() or (not self.loop and self.next >= len(self.bodies)):
                return None
            i = self.next % len(self.bodies)
            self.next += 1
            return i

    def _work(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        while (i := self._take()) is not None:
            t0 = time.monotonic()
            conn.request("POST", self.path, body=self.bodies[i],
                         headers={"Content-Type": self.ctype})
            r = conn.getresponse()
            r.read()
            t1 = time.monotonic()
            with self.lock:
                self.done.append((t1, t1 - t0, self.rows[i], r.status))
        conn.close()

    def run(self, senders=2):
        self.threads = [threading.Thread(target=self._work) for _ in range(senders)]
        for t in self.threads:
            t.start()
        return self

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        bad = [d for d in self.done if not 200 <= d[3] < 300]
        if bad:
            raise SystemExit(f"{len(bad)} requests failed, e.g. status {bad[0][3]}")

    def window(self, t0, t1):
        """rows/s, p50, p99 and max latency (ms) of the requests that ended in [t0, t1]."""
        inside = [d for d in self.done if t0 <= d[0] <= t1]
        rows = sum(d[2] for d in inside)
        lat = sorted(d[1] * 1000 for d in inside) or [0.0]
        pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
        return rows / max(t1 - t0, 1e-9), pick(0.5), pick(0.99), lat[-1], len(inside)


def count_lines(files):
    return [sum(1 for _ in open(f, "rb")) for f in files]


def load(gen, tmp, port, rows, end):
    days = rows / ROWS_PER_S / 86400
    start = end - int(days * 86400)
    d = os.path.join(tmp, "load")
    for sub in ("lp", "api_usage", "error_logs", "pipeline_status", "handler_metrics"):
        os.makedirs(os.path.join(d, sub))
    common = [gen, "--seed", "1", "--start", start, "--end", end]
    run(common + ["--table", "system_metrics", "--format", "lp", "--out-dir", d + "/lp",
                  "--batch", BATCH])
    for t in ("api_usage", "error_logs", "pipeline_status", "handler_metrics"):
        run(common + ["--table", t, "--out-dir", d + "/" + t, "--batch", BATCH])
    total = 0
    for sub, path, ctype, per_line in (("lp", "/write?precision=ms", "text/plain", 20),
                                       ("api_usage", "/api/v1/ingest/api_usage",
                                        "application/x-ndjson", 1),
                                       ("error_logs", "/api/v1/ingest/error_logs",
                                        "application/x-ndjson", 1),
                                       ("pipeline_status", "/api/v1/ingest/pipeline_status",
                                        "application/x-ndjson", 1),
                                       ("handler_metrics", "/api/v1/ingest/handler_metrics",
                                        "application/x-ndjson", 1)):
        files = sorted(glob.glob(f"{d}/{sub}/*"))
        lines = [n * per_line for n in count_lines(files)]
        t0 = time.monotonic()
        s = Sender(port, path, ctype, files, lines).run()
        for t in s.threads:
            t.join()
        s.finish()
        total += sum(lines)
        log(f"  loaded {sub}: {sum(lines):,} rows in {time.monotonic() - t0:.1f} s")
    shutil.rmtree(d)
    return total, start


def serve(opsdb, db, port, logf):
    return subprocess.Popen([opsdb, "serve", "--db", db, "--listen", f"127.0.0.1:{port}",
                             "--no-collect"], stdout=logf, stderr=logf)


def stop(proc):
    proc.terminate()
    proc.wait(timeout=600)


def newest_manifest(backups):
    return json.load(open(sorted(glob.glob(f"{backups}/opsdb-*.json"))[-1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1M rows instead of 10M")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--opsdb", default=os.path.join(ROOT, "opsdb"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = ap.parse_args()
    rows = a.rows or (1_000_000 if a.quick else 10_000_000)
    opsdb = os.path.abspath(a.opsdb)
    tmp = tempfile.mkdtemp(prefix="opsdb-bench-backup-")
    gen = os.path.join(tmp, "gen")
    run(["gcc", "-O2", "-std=c11", "-o", gen, os.path.join(ROOT, "bench", "gen.c")])
    db, backups = os.path.join(tmp, "bench.db"), os.path.join(tmp, "backups")
    port = free_port()
    logf = open(os.path.join(tmp, "server.log"), "ab")
    srv = serve(opsdb, db, port, logf)
    try:
        measure(a, opsdb, tmp, gen, db, backups, port, logf, srv, rows)
    finally:
        if srv.poll() is None:
            stop(srv)
        logf.close()
    if a.keep:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp)


def measure(a, opsdb, tmp, gen, db, backups, port, logf, srv, rows):
    wait_ready(port, srv)
    end = int(time.time()) // 10 * 10 - 600
    log(f"loading ~{rows:,} rows into {db}")
    t0 = time.monotonic()
    loaded, start = load(gen, tmp, port, rows, end)
    log(f"loaded {loaded:,} rows in {time.monotonic() - t0:.0f} s")

    # ingestion batches: api_usage of the loaded window again (events: rows add up)
    live = os.path.join(tmp, "live")
    os.makedirs(live)
    run([gen, "--seed", "2", "--start", start, "--end", min(end, start + 86400), "--table",
         "api_usage", "--limit", 200_000, "--out-dir", live, "--batch", BATCH])
    files = sorted(glob.glob(live + "/*"))
    lines = count_lines(files)
    url = ("/api/v1/ingest/api_usage", "application/x-ndjson")

    log("backup while ingesting")
    s = Sender(port, *url, files, lines, loop=True).run()
    time.sleep(1)
    b0 = time.monotonic()
    _, backup_loaded_s = run([opsdb, "backup", "create", "--db", db, "--to", backups, "--quiet"])
    b1 = time.monotonic()
    time.sleep(0.5)
    s.finish()
    during = s.window(b0, b1)
    m_loaded = newest_manifest(backups)

    log("ingestion without a backup")
    span = max(5.0, backup_loaded_s)
    s = Sender(port, *url, files, lines, loop=True).run()
    time.sleep(1)
    n0 = time.monotonic()
    time.sleep(span)
    n1 = time.monotonic()
    s.finish()
    baseline = s.window(n0, n1)

    log("backup, verify, restore with the server idle")
    _, backup_s = run([opsdb, "backup", "create", "--db", db, "--to", backups, "--quiet"])
    m = newest_manifest(backups)
    db_bytes = sum(os.path.getsize(p) for p in glob.glob(db + "*") if os.path.isfile(p))
    _, verify_s = run([opsdb, "backup", "verify", m["name"], "--to", backups, "--quiet"])
    stop(srv)
    restored = os.path.join(tmp, "restored", "bench.db")
    _, restore_s = run([opsdb, "restore", m["name"], "--from", backups, "--db", restored,
                        "--quiet"])
    t0 = time.monotonic()
    srv2 = serve(opsdb, restored, port, logf)
    wait_ready(port, srv2)
    serve_s = time.monotonic() - t0
    stop(srv2)

    mb = lambda n: n / 1e6  # noqa: E731
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    out = [f"# backup benchmark, {m['rows']:,} rows",
           "",
           f"- date: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; command: "
           f"`bench/backup.py{' --quick' if a.quick else ''}"
           f"{f' --rows {a.rows}' if a.rows else ''}`",
           f"- machine: {os.cpu_count()} cores ({cpu}), shared with other work",
           f"- database: {m['rows']:,} rows ({loaded:,} loaded, then the ingestion runs), "
           f"{mb(db_bytes):.0f} MB on disk; copy {mb(m['db_bytes']):.0f} MB",
           "",
           "| step | rows | time s | compressed MB (of) |",
           "|---|---:|---:|---:|",
           f"| backup create, ingestion running | {m_loaded['rows']:,} | {backup_loaded_s:.1f} | "
           f"{mb(m_loaded['bytes']):.0f} (of {mb(m_loaded['db_bytes']):.0f}) |",
           f"| backup create, server idle | {m['rows']:,} | {backup_s:.1f} | "
           f"{mb(m['bytes']):.0f} (of {mb(m['db_bytes']):.0f}) |",
           f"| backup verify | {m['rows']:,} | {verify_s:.1f} | |",
           f"| restore at another path | {m['rows']:,} | {restore_s:.1f} | |",
           f"| serve the restored database (start to /readyz) | | {serve_s:.2f} | |",
           "",
           "api_usage ingestion over HTTP (NDJSON, 10,000 rows a request, 2 senders):",
           "",
           "| | rows/s | p50 ms | p99 ms | max ms | requests |",
           "|---|---:|---:|---:|---:|---:|",
           f"| without a backup ({n1 - n0:.1f} s) | {baseline[0]:,.0f} | {baseline[1]:.0f} | "
           f"{baseline[2]:.0f} | {baseline[3]:.0f} | {baseline[4]} |",
           f"| while `opsdb backup create` runs ({b1 - b0:.1f} s) | {during[0]:,.0f} | "
           f"{during[1]:.0f} | {during[2]:.0f} | {during[3]:.0f} | {during[4]} |"]
    text = "\n".join(out) + "\n"
    print(text)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results",
                           f"backup-{time.strftime('%Y%m%d-%H%M%S')}.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
