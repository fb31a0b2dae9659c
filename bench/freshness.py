#!/usr/bin/python3
"""Freshness under load: the time from a sample's arrival to it being queryable (the collection
issue's benchmark; target p99 < 1 s).

usage: bench/freshness.py [--quick] [--seconds S] [--senders N] [--batch ROWS] [--opsdb ./opsdb]

Starts `opsdb serve` (the release build) on a fresh database in a temporary directory, then for
S seconds (default 60; --quick 15):

* N senders (default 2) post system_metrics batches of ROWS rows (default 1000) as line
  protocol to /write in a loop, over kept-alive connections: the load, 100 hosts x 10 metrics
  with the current time;
* a probe, 10 times a second, posts one sample of its own series with a unique timestamp (NDJSON
  to /api/v1/ingest/system_metrics) and, from the moment it sent it, polls GET /api/v1/query
  for that sample until it is there. Freshness is the time from sending the sample to the first
  answer that holds it (so it includes the ingestion request's own time: the server answers an
  ingestion only after the commit).

Prints a markdown summary (also written to bench/results/freshness-<date>.md): freshness
p50/p90/p99/max, the load's rows/s and the probe count. Progress goes to stderr. Needs
/usr/bin/python3 (stdlib only). Exit status 1 when a request failed.
"""
import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

from benchlib import free_port, log, percentile, wait_ready

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Load(threading.Thread):
    """Posts line-protocol batches in a loop until stop is set."""

    def __init__(self, port, batch, seed, stop):
        super().__init__(daemon=True)
        self.port, self.batch, self.seed, self.stop = port, batch, seed, stop
        self.rows = 0
        self.failures = 0

    def body(self, i):
        now_ns = time.time_ns()
        lines = []
        for j in range(self.batch):
            k = (i * self.batch + j) % 1000
            lines.append(f"load,host=h{k // 10},component=c{self.seed} v{k % 10}={j * 0.5} "
                         f"{now_ns - j}")
        return "\n".join(lines).encode()

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        i = 0
        while not self.stop.is_set():
            conn.request("POST", "/write", body=self.body(i),
                         headers={"Content-Type": "text/plain"})
            r = conn.getresponse()
            r.read()
            if r.status == 204:
                self.rows += self.batch
            else:
                self.failures += 1
            i += 1
        conn.close()


def probe(port, stop, results, failures):
    """Sends one sample 10 times a second and times until a query sees it."""
    send = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    ask = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    n = 0
    while not stop.is_set():
        ts = int(time.time() * 1000)  # unique: probes are 100 ms apart
        body = json.dumps({"ts": ts, "metric": "probe", "host": "probe", "component": "bench",
                           "value": n})
        sql = (f"SELECT count(*) AS n FROM system_metrics WHERE metric = 'probe' AND "
               f"ts = {ts} AND value = {n}")
        path = "/api/v1/query?" + urllib.parse.urlencode({"sql": sql})
        t0 = time.monotonic()
        send.request("POST", "/api/v1/ingest/system_metrics", body=body,
                     headers={"Content-Type": "application/json"})
        r = send.getresponse()
        r.read()
        if r.status != 200:
            failures.append(f"probe ingest {r.status}")
            continue
        while True:
            ask.request("GET", path)
            r = ask.getresponse()
            answer = r.read()
            if r.status != 200:
                failures.append(f"probe query {r.status} {answer[:200]!r}")
                break
            if json.loads(answer)["rows"][0]["n"] == 1:
                results.append(time.monotonic() - t0)
                break
            if time.monotonic() - t0 > 30:
                failures.append(f"sample {n} not queryable after 30 s")
                break
        n += 1
        left = 0.1 - (time.monotonic() - t0)
        if left > 0:
            time.sleep(left)
    send.close()
    ask.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--senders", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--opsdb", default=os.path.join(ROOT, "opsdb"))
    args = ap.parse_args()
    seconds = args.seconds or (15 if args.quick else 60)
    tmp = tempfile.mkdtemp(prefix="opsdb-freshness-")
    port = free_port()
    server = subprocess.Popen([args.opsdb, "serve", "--db", os.path.join(tmp, "f.db"),
                               "--listen", f"127.0.0.1:{port}", "--no-collect"],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "log"), "w"))
    try:
        wait_ready(port, server)
        stop = threading.Event()
        loads = [Load(port, args.batch, i, stop) for i in range(args.senders)]
        results, failures = [], []
        log(f"freshness: {seconds:.0f} s, {args.senders} senders of {args.batch}-row batches")
        t0 = time.monotonic()
        for ld in loads:
            ld.start()
        p = threading.Thread(target=probe, args=(port, stop, results, failures), daemon=True)
        p.start()
        while time.monotonic() - t0 < seconds:
            time.sleep(min(5, seconds))
            log(f"  {time.monotonic() - t0:5.0f} s: {len(results)} probes, "
                f"{sum(ld.rows for ld in loads):,} load rows")
        stop.set()
        p.join(60)
        for ld in loads:
            ld.join(60)
        elapsed = time.monotonic() - t0
    finally:
        server.terminate()
        server.wait(60)
        shutil.rmtree(tmp, ignore_errors=True)
    fresh = sorted(results)
    rows = sum(ld.rows for ld in loads)
    failures += [f"load request failed x{ld.failures}" for ld in loads if ld.failures]
    ms = [1000 * x for x in fresh]
    out = [f"`bench/freshness.py` ({seconds:.0f} s, {args.senders} senders x {args.batch}-row "
           f"line-protocol batches):", "",
           "| measure | value | target |", "|---|---:|---:|",
           f"| load | {rows / elapsed:,.0f} rows/s | |",
           f"| probes | {len(ms)} | |",
           f"| freshness p50 | {percentile(ms, 50):.1f} ms | |",
           f"| freshness p90 | {percentile(ms, 90):.1f} ms | |",
           f"| freshness p99 | {percentile(ms, 99):.1f} ms | < 1000 ms: "
           f"{'met' if percentile(ms, 99) < 1000 else 'NOT met'} |",
           f"| freshness max | {max(ms) if ms else float('nan'):.1f} ms | |",
           f"| failed requests | {len(failures)} | 0 |"]
    text = "\n".join(out) + "\n"
    print(text)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results",
                           f"freshness-{time.strftime('%Y%m%d-%H%M%S')}.md"), "w") as f:
        f.write(text)
    for msg in failures[:10]:
        log(f"failure: {msg}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
