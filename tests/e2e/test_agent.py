"""opsdb agent against real servers: the host's metrics arrive, plausible against /proc; the
agent rides out a server that stops (every collection instant arrives exactly once after the
server is back); the spool is bounded (oldest dropped), survives an agent restart, and a batch
the server refuses (4xx) is dropped, not retried; bad flags are usage errors. And `opsdb serve`
collects its own host by default (system_health lights up within one interval), not with
--no-collect.

The agent ends with a line `agent: stopped: collections=N rows_sent=N ... spool_batches=N` that
these tests read (agent_summary)."""

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import (assert_no_sanitizer_reports, child_env, free_port, opsdb_bin_path,
                      wait_until)

HOST = socket.gethostname()
SUMMARY = re.compile(r"agent: stopped: (.*)$", re.M)


def agent_summary(text):
    """The counts of the agent's last summary line, as a dict of ints."""
    found = SUMMARY.findall(text)
    assert found, f"no summary line in the agent's stderr:\n{text[-3000:]}"
    return {k: int(v) for k, v in (kv.split("=") for kv in found[-1].split())}


class Agent:
    """One `opsdb agent` process; stderr goes to a file in the test's directory."""

    def __init__(self, tmp_path, server_url, spool, *args):
        self.stderr_path = tmp_path / f"agent-{time.monotonic_ns()}.stderr"
        cmd = [opsdb_bin_path(), "agent", "--server", server_url, "--spool", str(spool),
               *[str(a) for a in args]]
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                         stdin=subprocess.DEVNULL, env=child_env())

    def stderr(self):
        return self.stderr_path.read_text(errors="replace")

    def stop(self):
        """SIGTERM, bounded wait; checks the exit status and sanitizers; returns the counts."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            pytest.fail(f"the agent did not stop on SIGTERM:\n{self.stderr()[-3000:]}")
        text = self.stderr()
        assert_no_sanitizer_reports(text, "opsdb agent")
        assert rc == 0, f"the agent exited with {rc}:\n{text[-3000:]}"
        return agent_summary(text)


def spooled(spool):
    """The batch files in the spool directory, oldest first."""
    return sorted(p for p in os.listdir(spool) if p.endswith(".ndjson")) if spool.exists() else []


def timestamps(server, metric):
    rows = server.query(f"SELECT ts FROM system_metrics WHERE host = '{HOST}' AND "
                        f"metric = '{metric}' ORDER BY ts")
    return [r["ts"] for r in rows]


def meminfo_kib(name):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {name} in /proc/meminfo")


# ---- one collection ---------------------------------------------------------------------------


def test_once_sends_plausible_host_metrics(server_factory, run_cli, tmp_path):
    srv = server_factory()
    cp = run_cli("agent", "--server", srv.url, "--once", "--spool", tmp_path / "spool")
    assert cp.returncode == 0, cp.stderr
    counts = agent_summary(cp.stderr)
    assert counts["collections"] == 1 and counts["spool_batches"] == 0
    assert counts["rows_sent"] == counts["rows_collected"] == srv.count("system_metrics") > 30

    def value(metric, where="1=1"):
        rows = srv.query(f"SELECT value FROM system_metrics WHERE host = '{HOST}' AND "
                         f"metric = '{metric}' AND {where}")
        assert len(rows) == 1, (metric, rows)
        return rows[0]["value"]

    assert value("memory_total_bytes") == meminfo_kib("MemTotal") * 1024
    assert value("swap_total_bytes") == meminfo_kib("SwapTotal") * 1024
    assert 0 < value("memory_usage") < 100
    assert 0 <= value("cpu_usage") <= 100
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    assert abs(value("uptime_seconds") - uptime) < 30
    st = os.statvfs("/")
    assert value("filesystem_size_bytes", "labels = '{\"mount\":\"/\"}'") == st.f_blocks * st.f_frsize
    with open("/proc/stat") as f:
        cpus = sum(1 for line in f if re.match(r"cpu\d+ ", line))
    assert srv.count("system_metrics", "metric = 'cpu_core_usage_percent'") == cpus
    with open("/proc/loadavg") as f:
        load1 = float(f.read().split()[0])
    assert abs(value("load_average_1m") - load1) < 2
    processes = sum(1 for p in os.listdir("/proc") if p.isdigit())
    assert abs(value("processes_total") - processes) < 100
    with open("/proc/net/dev") as f:
        interfaces = {line.split(":")[0].strip() for line in f if ":" in line}
    sent = {r["i"] for r in srv.query("SELECT DISTINCT json_extract(labels, '$.interface') AS i "
                                      "FROM system_metrics WHERE component = 'network'")}
    assert sent == interfaces
    # loop and ram devices are no disks
    devices = {r["d"] for r in srv.query("SELECT DISTINCT json_extract(labels, '$.device') AS d "
                                         "FROM system_metrics WHERE component = 'disk'")}
    assert not {d for d in devices if d.startswith(("loop", "ram", "zram"))}
    # the host's row of system_health has its three figures
    health = srv.get("/api/v1/views/system_health").json()["rows"]
    row = [r for r in health if r["host"] == HOST and r["component"] == "system"]
    assert row and all(row[0][k] is not None for k in ("cpu", "memory", "disk")), health


# ---- the server goes away and comes back --------------------------------------------------------


def test_agent_rides_out_a_server_restart(server_factory, tmp_path):
    """Every collection instant of the run is stored exactly once, the downtime included."""
    port = free_port()
    srv = server_factory(port=port)
    spool = tmp_path / "spool"
    agent = Agent(tmp_path, srv.url, spool, "--interval", "1s", "--set", "agent.retry_max=1s")
    assert wait_until(lambda: len(timestamps(srv, "uptime_seconds")) >= 3, timeout=20), \
        agent.stderr()
    srv.stop()
    down_from = time.time() * 1000
    assert wait_until(lambda: len(spooled(spool)) >= 4, timeout=20), agent.stderr()
    down_to = time.time() * 1000
    srv.start()
    assert wait_until(lambda: not spooled(spool), timeout=30), agent.stderr()
    after = len(timestamps(srv, "uptime_seconds"))
    assert wait_until(lambda: len(timestamps(srv, "uptime_seconds")) >= after + 2, timeout=20)
    counts = agent.stop()
    log = agent.stderr()
    assert "cannot send to" in log and "replayed" in log and "answers again" in log, log

    ts = timestamps(srv, "uptime_seconds")
    assert len(ts) == len(set(ts)) == counts["collections"], (len(ts), counts)
    assert timestamps(srv, "memory_usage") == ts
    assert sum(1 for t in ts if down_from < t < down_to) >= 3, "nothing from the downtime"
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    assert max(gaps) < 2600, f"a gap of {max(gaps)} ms between collections"
    # no batch was sent twice (a second write of a sample would not add a row) or lost
    assert counts["rows_sent"] == counts["rows_collected"] == srv.count("system_metrics")
    assert counts["batches_replayed"] >= 4 and counts["batches_dropped"] == 0
    assert counts["spool_batches"] == 0 and spooled(spool) == []


def test_agent_restart_keeps_its_spool(server_factory, run_cli, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"  # nothing listens yet
    spool = tmp_path / "spool"
    agent = Agent(tmp_path, url, spool, "--interval", "1s")
    assert wait_until(lambda: len(spooled(spool)) >= 3, timeout=20), agent.stderr()
    # a second agent on the same spool is refused while the first holds it
    cp = run_cli("agent", "--server", url, "--spool", spool, "--once")
    assert cp.returncode == 1 and "in use by another agent" in cp.stderr, cp.stderr
    first = agent.stop()
    assert first["rows_sent"] == 0 and first["spool_batches"] == len(spooled(spool)) >= 3
    srv = server_factory(port=port)
    cp = run_cli("agent", "--server", url, "--spool", spool, "--once")
    assert cp.returncode == 0, cp.stderr
    assert "from an earlier run" in cp.stderr and "replayed" in cp.stderr, cp.stderr
    second = agent_summary(cp.stderr)
    assert second["batches_replayed"] == first["spool_batches"]
    assert spooled(spool) == []
    ts = timestamps(srv, "uptime_seconds")
    assert len(ts) == first["collections"] + 1
    assert srv.count("system_metrics") == first["rows_collected"] + second["rows_collected"]


def test_spool_bound_drops_the_oldest_batches(server_factory, run_cli, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # the size of one batch on this machine, from a collection that could only be spooled
    probe = tmp_path / "probe"
    cp = run_cli("agent", "--server", url, "--spool", probe, "--once")
    assert cp.returncode == 1 and "spool" in cp.stderr, cp.stderr
    size = max(os.path.getsize(probe / p) for p in spooled(probe))
    bound = int(size * 2.5)  # two batches fit, a third does not
    spool = tmp_path / "spool"
    agent = Agent(tmp_path, url, spool, "--interval", "1s", "--spool-max-bytes", bound)
    time.sleep(0.5)
    assert wait_until(lambda: "dropped its oldest batch" in agent.stderr(), timeout=20)
    time.sleep(2)
    counts = agent.stop()
    assert counts["batches_dropped"] >= 2 and counts["rows_dropped"] > 0, counts
    assert counts["spool_batches"] == len(spooled(spool)) <= 2
    assert counts["spool_bytes"] <= bound
    # what is left is the newest: replayed, they are the last collections before the stop
    kept = [int(p.split(".")[0]) for p in spooled(spool)]
    assert kept == sorted(kept) and kept[-1] == counts["collections"] - 1
    srv = server_factory(port=port)
    cp = run_cli("agent", "--server", url, "--spool", spool, "--once")
    assert cp.returncode == 0, cp.stderr
    ts = timestamps(srv, "uptime_seconds")
    assert len(ts) == len(kept) + 1


def test_refused_batches_are_dropped_not_retried(server_factory, run_cli, tmp_path):
    # a server that takes at most 5 rows per request answers 413 to every collection
    srv = server_factory("--set", "ingest.max_rows_per_request=5")
    spool = tmp_path / "spool"
    cp = run_cli("agent", "--server", srv.url, "--spool", spool, "--once")
    assert cp.returncode == 1, cp.stderr
    assert "refused a batch" in cp.stderr and "413" in cp.stderr, cp.stderr
    agent = Agent(tmp_path, srv.url, spool, "--interval", "1s")
    assert wait_until(lambda: agent.stderr().count("refused a batch") >= 2, timeout=20)
    counts = agent.stop()
    assert counts["batches_refused"] >= 2 and counts["rows_sent"] == 0, counts
    assert counts["spool_batches"] == 0 and spooled(spool) == []
    assert srv.count("system_metrics") == 0


def test_token_and_source_headers(run_cli, tmp_path):
    """What the agent sends, as a plain HTTP server receives it."""
    from http.server import BaseHTTPRequestHandler, HTTPServer
    import threading

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append((self.path, dict(self.headers), body))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.handle_request, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    cp = run_cli("agent", "--server", url, "--once", "--spool", tmp_path / "s", "--interval",
                 "15s", env={"OPSDB_AGENT_TOKEN": "t0ken"})
    thread.join(timeout=10)
    httpd.server_close()
    assert cp.returncode == 0, cp.stderr
    path, headers, body = seen[0]
    assert path == "/api/v1/ingest/system_metrics"
    assert headers["Authorization"] == "Bearer t0ken"
    assert headers["X-Opsdb-Source"] == HOST
    assert headers["X-Opsdb-Source-Kind"] == "agent"
    assert headers["X-Opsdb-Interval"] == "15000ms"
    assert "ndjson" in headers["Content-Type"]
    lines = body.decode().splitlines()
    assert len(lines) == agent_summary(cp.stderr)["rows_sent"]
    assert len({line.split('"ts":')[1].split(",")[0] for line in lines}) == 1


# ---- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize("args, needle", [
    (["--interval", "soon"], "--interval soon"),
    (["--interval", "100ms"], "outside"),
    (["--spool-max-bytes", "lots"], "--spool-max-bytes lots"),
    (["--server"], "--server needs a value"),
    (["--bogus"], "unexpected argument '--bogus'"),
    ([], "no server"),
])
def test_bad_flags_are_usage_errors(run_cli, tmp_path, args, needle):
    extra = [] if args == [] or args[0] == "--server" else ["--server", "127.0.0.1:1"]
    cp = run_cli("agent", *extra, *args, "--spool", tmp_path / "s")
    assert cp.returncode == 2, cp.stderr
    assert needle in cp.stderr and "opsdb agent --help" in cp.stderr, cp.stderr
    assert not (tmp_path / "s").exists()


def test_help(run_cli):
    for args in (["agent", "--help"], ["help", "agent"]):
        cp = run_cli(*args)
        assert cp.returncode == 0 and cp.stdout.startswith("usage: opsdb agent"), cp


# ---- the server's own host ----------------------------------------------------------------------


def test_default_server_collects_its_own_host(server_factory, tmp_path):
    srv = server_factory(collect=True)  # the default collection.interval, 10s
    started = time.monotonic()

    def host_row():
        rows = srv.get("/api/v1/views/system_health").json()["rows"]
        row = [r for r in rows if r["host"] == HOST and r["component"] == "system"]
        return row and all(row[0][k] is not None for k in ("cpu", "memory", "disk")) and row[0]

    row = wait_until(host_row, timeout=10)
    assert row and time.monotonic() - started < 10, srv.run_stderr()
    assert row["status"] in ("ok", "warning", "critical")
    assert srv.count("system_metrics", "component = 'opsdb' AND metric = 'opsdb_rss_bytes'") >= 1
    assert "collecting this host" in srv.run_stderr()


def test_no_collect_and_collection_self_off(server_factory, tmp_path):
    a = server_factory(db=tmp_path / "a.db")  # the harness passes --no-collect
    b = server_factory("--set", "collection.self=off", "--set", "collection.interval=1s",
                       db=tmp_path / "b.db", collect=True)
    c = server_factory("--set", "collection.interval=1s", db=tmp_path / "c.db", collect=True)
    assert wait_until(lambda: c.count("system_metrics") > 0, timeout=10)
    time.sleep(1.5)
    assert a.count("system_metrics") == 0 and b.count("system_metrics") == 0
    # two collections a second apart: the server's rates are there from the second on
    assert wait_until(lambda: c.count("system_metrics",
                                      "metric = 'opsdb_ingest_rows_per_second'") >= 1, timeout=10)
