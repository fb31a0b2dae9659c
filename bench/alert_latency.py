#!/usr/bin/python3
"""Alert delivery latency: how long from the acknowledgement of the sample that crosses a
threshold to the webhook receiver getting the alert, with many rules loaded and ingestion
running in the background (the alerting issue's benchmark).

usage: bench/alert_latency.py [--rules 1000] [--crossings 1000] [--rate 100000] [--quick]
                              [--opsdb ./opsdb] [--keep]

Starts `opsdb serve` on a fresh database in a temporary directory with RULES threshold rules
(rule i: max of metric bench_x<i> over 30 s > 90, for 0s, group interval 1 h, so only the
evaluation that follows a commit can fire it in time) and a webhook receiver (a Python HTTP
server on loopback, route group_wait 0s, one group per alert). A sender thread posts background
line protocol at RATE points/s (metrics no rule watches, 20 hosts x 25 fields per line). Then
CROSSINGS times, spread over the run, it posts one sample of bench_x<i> = 95 (line protocol bench x<i>=95) and notes when the
POST returned 204 (acknowledged, durable); the receiver notes when the alert for rule i
arrives. Prints p50/p95/p99/max of the latencies, the background rate reached, and the
deliveries missing; exit status 1 when any crossing was not delivered within 10 s.
--quick: 100 rules, 100 crossings, 20,000 points/s.
"""
import argparse
import http.client
import http.server
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import free_port, percentile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Receiver(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port):
        self.arrivals = {}  # alertname -> monotonic time of the first firing notification
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", port), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        now = time.monotonic()
        try:
            payload = json.loads(body)
            for alert in payload.get("alerts", []):
                name = alert["labels"].get("alertname", "")
                if alert.get("status") == "firing":
                    with self.server.lock:
                        self.server.arrivals.setdefault(name, now)
        except (ValueError, KeyError):
            pass
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def write_config(tmp, rules, hook_port):
    with open(os.path.join(tmp, "rules.yaml"), "w") as f:
        f.write("groups:\n  - name: bench\n    interval: 1h\n    rules:\n")
        for i in range(rules):
            f.write(f"      - alert: Bench{i}\n        table: system_metrics\n"
                    f"        metric: bench_x{i}\n        aggregation: max\n"
                    f"        window: 30s\n        op: \">\"\n        threshold: 90\n"
                    f"        for: 0s\n        labels: {{severity: warning}}\n")
    with open(os.path.join(tmp, "opsdb.yaml"), "w") as f:
        f.write("alerting:\n  rule_files: [rules.yaml]\n  default_rules: off\n"
                "  receivers:\n    - name: hook\n"
                f"      webhook: {{url: \"http://127.0.0.1:{hook_port}/hook\"}}\n"
                "  route: {receiver: hook, group_by: [alertname, host], group_wait: 0s,\n"
                "          group_interval: 1m, repeat_interval: 4h}\n")


def post(conn, path, body):
    conn.request("POST", path, body=body, headers={"Content-Type": "text/plain"})
    r = conn.getresponse()
    r.read()
    return r.status


def background(port, rate, stop, sent):
    """Line protocol at about rate points/s (20 hosts x 25 fields per line), in a process of its
    own: in the measuring process it would hold the interpreter lock and delay the receiver."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    lines_per_batch = max(1, rate // 25 // 10)  # ten requests per second
    prefix = [f"bg,host=bg-{k % 20},component=bench "
              + ",".join(f"f{j}={(k * 31 + j) % 97}.5" for j in range(25)) + " "
              for k in range(lines_per_batch)]
    t_next = time.monotonic()
    last = 0
    while not stop.is_set():
        # each series' samples in time order, as an agent sends them: no batch overlaps the last
        ts = max(int(time.time() * 1000) - lines_per_batch, last + 1)
        last = ts + lines_per_batch - 1
        body = "\n".join(p + str(ts + k) for k, p in enumerate(prefix))
        if post(conn, "/write?precision=ms", body) == 204:
            with sent.get_lock():
                sent.value += lines_per_batch * 25
        t_next += 0.1
        time.sleep(max(0.0, t_next - time.monotonic()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--crossings", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=100000, help="background points per second")
    ap.add_argument("--spread", type=float, default=60.0, help="seconds the crossings span")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--opsdb", default=os.path.join(ROOT, "opsdb"))
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.rules, a.crossings, a.rate, a.spread = 100, 100, 20000, 10.0
    a.crossings = min(a.crossings, a.rules)  # one crossing per rule: each fires once
    tmp = tempfile.mkdtemp(prefix="opsdb-alert-bench.")
    hook_port, port = free_port(), free_port()
    receiver = Receiver(hook_port)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    write_config(tmp, a.rules, hook_port)
    log = open(os.path.join(tmp, "server.log"), "w")
    server = subprocess.Popen([a.opsdb, "serve", "--config", os.path.join(tmp, "opsdb.yaml"),
                               "--db", os.path.join(tmp, "bench.db"), "--listen",
                               f"127.0.0.1:{port}", "--no-collect"], stdout=log, stderr=log)
    stop = multiprocessing.Event()
    try:
        for _ in range(200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        else:
            sys.exit("alert_latency: the server did not start; see " + log.name)
        print(f"alert_latency: {a.rules} rules, background {a.rate} points/s, {a.crossings} "
              f"crossings over {a.spread:.0f} s", file=sys.stderr)
        sent = multiprocessing.Value("q", 0)
        bg = multiprocessing.Process(target=background, args=(port, a.rate, stop, sent),
                                     daemon=True)
        t_bg = time.monotonic()
        bg.start()
        time.sleep(2)  # ingestion in full swing first
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        acked = {}
        gap = a.spread / a.crossings
        t_next = time.monotonic()
        for i in range(a.crossings):
            line = f"bench,host=x{i % 20},component=bench x{i}=95 {int(time.time() * 1000)}"
            if post(conn, "/write?precision=ms", line) == 204:
                acked[f"Bench{i}"] = time.monotonic()
            t_next += gap
            time.sleep(max(0.0, t_next - time.monotonic()))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with receiver.lock:
                if all(n in receiver.arrivals for n in acked):
                    break
            time.sleep(0.05)
        stop.set()
        bg.join(timeout=30)
        bg_rate = sent.value / (time.monotonic() - t_bg)
        with receiver.lock:
            lat = sorted((receiver.arrivals[n] - t) * 1000 for n, t in acked.items()
                         if n in receiver.arrivals)
        missing = len(acked) - len(lat)
        print("| measure | value |\n|---|---:|")
        print(f"| rules loaded | {a.rules} |")
        print(f"| background ingestion, points/s (reached) | {bg_rate:,.0f} |")
        print(f"| crossings acknowledged / delivered | {len(acked)} / {len(lat)} |")
        for p in (50, 95, 99):
            print(f"| p{p} latency, ms (acknowledged -> webhook) | {percentile(lat, p):.1f} |")
        print(f"| max latency, ms | {lat[-1] if lat else float('nan'):.1f} |")
        if missing:
            print(f"alert_latency: {missing} crossings were not delivered within 10 s",
                  file=sys.stderr)
        return 1 if missing else 0
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=60)
        receiver.shutdown()
        log.close()
        if a.keep:
            print(f"alert_latency: kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
