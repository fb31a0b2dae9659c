#!/usr/bin/python3
"""The agent's own cost: CPU (in % of one core) and memory (RSS) of `opsdb agent` at its usual
interval, sending to a real server (the collection issue's targets: < 1% of a core, < 20 MiB).

usage: bench/agent.py [--seconds 150] [--interval 10s] [--opsdb ./opsdb] [--keep]
                      [--tail-rate LINES_PER_SECOND]

Starts `opsdb serve --no-collect` on a fresh database in a temporary directory and `opsdb agent
--interval INTERVAL` against it, lets the agent run SECONDS, and reads the agent's utime+stime
(/proc/PID/stat) at its start (after 2 s, so the process's start-up is not counted) and end,
and its RSS (VmRSS) and peak RSS (VmHWM) from /proc/PID/status every second. Prints the
machine, the collections and rows the server stored, CPU % of one core over the run, and mean
and peak RSS; exit status 1 when a target is missed or the server stored no rows.

With --tail-rate N the agent also tails a busy nginx access log (`--tail nginx_timed:LOG`) that
this script appends N lines a second to (in batches every 100 ms, as a busy web server's log
grows), and the server must have stored every line written in api_usage. The targets are then
the agent's with one busy file: its CPU grows with the lines it parses and sends, so the run
reports the CPU per 1000 lines a second as well.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

TICKS = os.sysconf("SC_CLK_TCK")
CPU_TARGET_PERCENT = 1.0
RSS_TARGET_MIB = 20.0


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def status_kib(pid, name):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(url, sql):
    q = urllib.parse.urlencode({"sql": sql})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=30) as r:
        return json.load(r)["rows"]


def write_log(path, rate, stop):
    """Appends rate lines a second of nginx's timed format to path from a thread, until stop is
    set; returns the thread and a one-item list holding the count of lines written."""
    written = [0]
    paths = ["/api/users/{n}", "/api/orders/{n}/items", "/static/app.js", "/health"]
    statuses = [200, 200, 200, 201, 204, 301, 404, 500]

    def run():
        with open(path, "a", buffering=1 << 16) as f:
            next_at = time.monotonic()
            while not stop.is_set():
                now = time.time()
                stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
                lines = []
                for _ in range(max(1, rate // 10)):
                    n = written[0] + len(lines)
                    lines.append(f'10.0.{n % 250}.{n % 200} - - [{stamp}] "GET '
                                 f'{paths[n % 4].format(n=n)} HTTP/1.1" {statuses[n % 8]} '
                                 f'{n % 5000} "-" "bench/1.0" 0.{n % 1000:03d} -\n')
                f.write("".join(lines))
                f.flush()
                written[0] += len(lines)
                next_at += 0.1
                time.sleep(max(0.0, next_at - time.monotonic()))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, written


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=150)
    ap.add_argument("--interval", default="10s")
    ap.add_argument("--opsdb", default=os.path.join(os.path.dirname(__file__), "..", "opsdb"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--tail-rate", type=int, default=0,
                    help="also tail an nginx log growing by this many lines a second")
    args = ap.parse_args()
    if not 10 <= args.seconds <= 600:
        sys.exit("--seconds: 10 to 600")
    if not 0 <= args.tail_rate <= 100000:
        sys.exit("--tail-rate: 0 to 100000")
    tmp = tempfile.mkdtemp(prefix="opsdb-bench-agent-")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSDB_")}
    server = subprocess.Popen([args.opsdb, "serve", "--db", f"{tmp}/b.db", "--listen",
                               f"127.0.0.1:{port}", "--no-collect"], env=env,
                              stderr=open(f"{tmp}/serve.log", "wb"))
    agent = writer = None
    stop_writing = threading.Event()
    log = f"{tmp}/access.log"
    tail = ["--tail", f"nginx_timed:{log}"] if args.tail_rate else []
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        else:
            sys.exit("the server did not start")
        if args.tail_rate:
            open(log, "w").close()
            writer, written = write_log(log, args.tail_rate, stop_writing)
        agent = subprocess.Popen([args.opsdb, "agent", "--server", url, "--interval",
                                  args.interval, "--spool", f"{tmp}/spool", *tail], env=env,
                                 stderr=open(f"{tmp}/agent.log", "wb"))
        time.sleep(2)
        t0, c0 = time.monotonic(), cpu_ticks(agent.pid)
        rss = []
        end = t0 + args.seconds
        while time.monotonic() < end and agent.poll() is None:
            rss.append(status_kib(agent.pid, "VmRSS"))
            time.sleep(1)
        t1, c1 = time.monotonic(), cpu_ticks(agent.pid)
        peak = status_kib(agent.pid, "VmHWM")
        cpu = 100.0 * (c1 - c0) / TICKS / (t1 - t0)
        stored = query(url, "SELECT count(DISTINCT ts) AS c, count(*) AS n FROM system_metrics")
        mean_mib = sum(rss) / len(rss) / 1024 if rss else 0
        print(f"machine: {platform.node()}, {os.cpu_count()} cpus, {platform.platform()}")
        print(f"run: {t1 - t0:.0f} s at --interval {args.interval}; the server stored "
              f"{stored[0]['c']} collections, {stored[0]['n']} rows")
        tail_ok = True
        if args.tail_rate:
            stop_writing.set()
            writer.join(timeout=10)
            lines = written[0]
            for _ in range(300):  # the last lines: up to a poll and a send away
                rows = query(url, "SELECT count(*) AS n FROM api_usage")[0]["n"]
                if rows >= lines:
                    break
                time.sleep(0.1)
            tail_ok = rows == lines
            print(f"tail: {lines} lines written at {args.tail_rate}/s, {rows} rows stored in "
                  f"api_usage; agent cpu per 1000 lines/s: "
                  f"{cpu * 1000 / args.tail_rate:.3f}% of one core")
        print(f"agent cpu: {cpu:.3f}% of one core (target < {CPU_TARGET_PERCENT}%)")
        print(f"agent rss: mean {mean_mib:.1f} MiB, peak {peak / 1024:.1f} MiB "
              f"(target < {RSS_TARGET_MIB} MiB)")
        ok = cpu < CPU_TARGET_PERCENT and peak / 1024 < RSS_TARGET_MIB and stored[0]["n"] > 0
        return 0 if ok and tail_ok else 1
    finally:
        stop_writing.set()
        for p in (agent, server):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
