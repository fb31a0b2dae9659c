"""`opsdb agent --tail KIND:PATH` ships log files (docs/collection.md, "Shipping log files").

The main test runs a real nginx (the fixture of test_access_logs.py) under a bounded load of
requests with several status codes while `opsdb agent --no-host --tail nginx_timed:ACCESS_LOG`
ships its access log, and meanwhile: (a) rotates the log by rename and SIGUSR1 (nginx reopens its
log), (c) stops the agent with SIGTERM and starts it again, (d) stops the server for a few
seconds (the agent spools) and starts it again, and (b) rotates the log by copytruncate. Every
request carries its own number as the Basic-auth user, which nginx logs as $remote_user and the
parser stores as client_id, so that the rows can be matched to nginx's lines one by one: the rows
in api_usage are exactly the lines of every file nginx wrote (the rotated ones included), none
twice and none missing, per status code too.

The second test writes application logs (JSON lines and plain text with a multi-line Python
traceback, one file created only after the agent started), with the tails given in the config
file's agent.tail list, and checks the error_logs rows and that collection_status shows each file
as a source of kind tail, ok while written and, through heartbeats, while idle.
"""

import os
import random
import re
import shutil
import signal
import socket
import threading
import time
from collections import Counter

import pytest
import requests

from conftest import wait_until
from test_access_logs import nginx, paths  # noqa: F401 (nginx is a fixture)
from test_agent import Agent, spooled

HOST = socket.gethostname()
LOAD_WORKERS = 4
LOAD_MAX_REQUESTS = 40000  # bounds the load even on a fast machine
LOAD_PAUSE_S = 0.004  # between two requests of one worker: a busy, not a saturated, server
# nginx's line: the user (the request's number) and the status
LINE = re.compile(r'^\S+ - (\S+) \[[^\]]+\] "(?:[^"\\]|\\.)*" (\d{3}) ')


class Load:
    """Requests from LOAD_WORKERS threads, each with its own number as Basic-auth user, until
    stop() (or LOAD_MAX_REQUESTS); pause() waits until no request is in flight."""

    def __init__(self, base):
        self.base = base
        self.go = threading.Event()
        self.go.set()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.made = 0
        self.errors = []
        self.threads = [threading.Thread(target=self.worker, args=(i,), daemon=True)
                        for i in range(LOAD_WORKERS)]
        for t in self.threads:
            t.start()

    def next_number(self):
        with self.lock:
            if self.made >= LOAD_MAX_REQUESTS:
                return None
            self.made += 1
            self.in_flight += 1
            return self.made

    def worker(self, seed):
        gen = paths(random.Random(seed))
        with requests.Session() as s:
            while not self.done.is_set():
                if not self.go.wait(timeout=0.2):
                    continue
                n = self.next_number()
                if n is None:
                    return
                try:
                    s.get(self.base + next(gen), auth=(f"r{n}", "x"), allow_redirects=False,
                          timeout=10)
                except requests.RequestException as exc:
                    self.errors.append(repr(exc))
                finally:
                    with self.lock:
                        self.in_flight -= 1
                time.sleep(LOAD_PAUSE_S)

    def count(self):
        with self.lock:
            return self.made

    def pause(self):
        self.go.clear()
        assert wait_until(lambda: self.in_flight == 0, timeout=15), "requests still in flight"
        time.sleep(0.3)  # nginx writes a request's line after its response

    def resume(self):
        self.go.set()

    def stop(self):
        self.done.set()
        self.go.set()
        for t in self.threads:
            t.join(timeout=20)
        assert not any(t.is_alive() for t in self.threads), "the load did not stop"
        time.sleep(0.3)


def logged(files):
    """nginx's own lines, read by the test from every file: {user: status}, and the count of
    lines (a user twice would be a bug of the test's load)."""
    users, lines = {}, 0
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            m = LINE.match(line)
            assert m, f"a line of nginx's log this test cannot read: {line!r}"
            users[m.group(1)] = int(m.group(2))
            lines += 1
    assert len(users) == lines, "the load sent a request number twice"
    return users, lines


def diagnose(srv, files, agents):
    """What went wrong: the rows and lines that do not match, and the agents' logs."""
    want, lines = logged(files)
    rows = srv.query("SELECT client_id, ts FROM api_usage")
    got = Counter(r["client_id"] for r in rows)
    twice = sorted(u for u, n in got.items() if n > 1)
    return (f"{len(rows)} rows for {lines} lines; twice: {twice[:20]}; missing: "
            f"{sorted(set(want) - set(got))[:20]}\n" +
            "\n".join(a.stderr()[-4000:] for a in agents))


def stored(srv):
    return srv.count("api_usage")


def tail_sources(srv):
    r = srv.get("/api/v1/views/collection_status")
    assert r.status_code == 200, r.text
    return {row["name"]: row for row in r.json()["rows"] if row["kind"] == "tail"}


@pytest.fixture
def agents():
    """The agents a test starts (append them); any still running at its end (a test that
    failed half way) is killed."""
    started = []
    yield started
    for agent in started:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait(timeout=10)


def test_nginx_log_shipped_through_rotations_restarts_and_an_outage(nginx, server_factory,
                                                                    tmp_path, agents):
    base, access_log, proc = nginx
    rotated, copied = access_log.with_name("access.log.1"), access_log.with_name("access.log.2")
    files = [rotated, copied, access_log]
    srv = server_factory()
    spool = tmp_path / "spool"
    args = ["--no-host", "--tail", f"nginx_timed:{access_log}", "--interval", "1s",
            "--set", "agent.retry_max=1s", "--set", "logs.rotate_wait=1s"]
    agents.append(Agent(tmp_path, srv.url, spool, *args))
    load = Load(base)
    try:
        assert wait_until(lambda: stored(srv) > 200, timeout=30), agents[-1].stderr()

        # (a) rename + reopen, as logrotate's default with nginx's postrotate USR1
        os.rename(access_log, rotated)
        proc.send_signal(signal.SIGUSR1)
        assert wait_until(lambda: access_log.exists() and access_log.stat().st_size > 0,
                          timeout=15), "nginx did not reopen its log"
        assert wait_until(lambda: "was rotated" in agents[-1].stderr(), timeout=20), \
            agents[-1].stderr()
        before = stored(srv)
        assert wait_until(lambda: stored(srv) > before + 100, timeout=20)

        # (c) the agent stops and starts again while nginx goes on writing
        first = agents[-1].stop()
        assert first["tail_rows_sent"] > 0 and first["tail_spool_batches"] == 0, first
        time.sleep(1.5)
        agents.append(Agent(tmp_path, srv.url, spool, *args))
        before = stored(srv)
        assert wait_until(lambda: stored(srv) > before + 100, timeout=20), agents[-1].stderr()

        # (d) the server goes away for a few seconds: the agent spools, then replays. The stop
        # may come in the middle of a request: the server answers the requests under way before
        # it stops (a batch it committed is acknowledged, so it is not sent again)
        srv.stop()
        tail_spool = next(spool.glob("tail-*"))
        assert wait_until(lambda: len(spooled(tail_spool)) >= 2, timeout=20), \
            agents[-1].stderr()
        time.sleep(2)
        srv.start()
        assert wait_until(lambda: not spooled(tail_spool), timeout=30), agents[-1].stderr()
        assert "replayed" in agents[-1].stderr()

        # (b) copytruncate: once the agent has shipped every line (lines written after its last
        # read and before the truncation are gone for any reader; docs/collection.md)
        load.pause()
        _, lines = logged(files)
        assert wait_until(lambda: stored(srv) == lines, timeout=30), diagnose(srv, files, agents)
        shutil.copyfile(access_log, copied)
        os.truncate(access_log, 0)
        load.resume()
        assert wait_until(lambda: "truncated" in agents[-1].stderr(), timeout=20), \
            agents[-1].stderr()
        before = stored(srv)
        assert wait_until(lambda: stored(srv) > before + 100, timeout=20)
    finally:
        load.stop()

    assert not load.errors, load.errors[:5]
    want, lines = logged(files)
    assert lines == load.count() >= 1000, (lines, load.count())
    assert wait_until(lambda: stored(srv) >= lines, timeout=30), (stored(srv), lines)
    name = f"{HOST}:{access_log}"  # the file's source: HOST:PATH, of kind tail
    # heartbeats are written within a second of the batch that carried them
    assert wait_until(lambda: tail_sources(srv).get(name, {}).get("rows") == lines, timeout=10), \
        tail_sources(srv)
    sources = tail_sources(srv)
    last = agents[-1].stop()
    assert last["tail_spool_batches"] == 0 and last["tail_rows_refused"] == 0, last
    assert last["tail_lines_bad"] == 0 and first["tail_lines_bad"] == 0

    # one row per line nginx wrote: none twice, none missing, each with its status
    rows = srv.query("SELECT client_id, status_code FROM api_usage")
    got = Counter(r["client_id"] for r in rows)
    assert len(rows) == lines, (len(rows), lines)
    assert [u for u, n in got.items() if n > 1] == []
    assert set(got) == set(want), (sorted(set(want) - set(got))[:10],
                                   sorted(set(got) - set(want))[:10])
    assert {r["client_id"]: r["status_code"] for r in rows} == want
    per_status = {r["status_code"]: r["n"] for r in srv.query(
        "SELECT status_code, count(*) AS n FROM api_usage GROUP BY 1")}
    assert per_status == dict(Counter(want.values()))
    assert {200, 201, 204, 301, 404, 500, 503} <= set(per_status), per_status
    assert srv.query("SELECT DISTINCT service, host FROM api_usage") == [
        {"service": "nginx", "host": HOST}]

    # the file is a source of kind tail that was alive throughout (the server's own downtime
    # aside, which collection_status counts as every source's gap)
    assert sources[name]["status"] == "ok" and sources[name]["interval_ms"] == 1000, sources


def iso_now():
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"


def append(path, text):
    with open(path, "a") as f:
        f.write(text)


def test_app_logs_with_traces_and_collection_status(server_factory, tmp_path, agents):
    srv = server_factory()
    jsonl, plain = tmp_path / "orders.jsonl", tmp_path / "billing.log"  # plain: created later
    config = tmp_path / "agent.yaml"
    config.write_text(f"agent:\n  host: off\n  tail_poll: 200ms\n  tail:\n"
                      f"    - json:{jsonl}\n    - plain:{plain}\n"
                      f"logs:\n  multiline_wait: 1s\n")
    append(jsonl, "")
    agent = Agent(tmp_path, srv.url, tmp_path / "spool", "--config", config, "--interval", "1s")
    agents.append(agent)
    # the existing file is a source at once (heartbeat), the missing one is not
    assert wait_until(lambda: f"{HOST}:{jsonl}" in tail_sources(srv), timeout=15), agent.stderr()
    assert f"{HOST}:{plain}" not in tail_sources(srv)

    t = iso_now()
    append(jsonl, f'{{"ts": "{t}", "level": "error", "msg": "payment 17 failed", '
                  f'"component": "checkout", "error": {{"type": "CardDeclined", '
                  f'"stack": "at pay()\\nat main()"}}, "order": 17}}\n'
                  f'{{"ts": "{t}", "level": "info", "msg": "order 18 shipped"}}\n'
                  f'{{"ts": "{t}", "level": "warn", "msg": "slow query 250 ms"}}\n')
    # a plain-text event whose traceback arrives in two writes, polls apart
    append(plain, f"{t} ERROR [worker] task 42 failed\n"
                  "Traceback (most recent call last):\n"
                  '  File "tasks.py", line 3, in run\n')
    time.sleep(1.0)
    append(plain, "    x = 1 / 0\n"
                  "ZeroDivisionError: division by zero\n"
                  f"{t} WARNING [worker] retrying task 42\n")

    def error_rows():
        return srv.query("SELECT message, level, component, error_type, stack_trace, host "
                         "FROM error_logs ORDER BY message")

    # the last event is complete once its file has been idle for logs.multiline_wait
    assert wait_until(lambda: len(error_rows()) == 4, timeout=20), (error_rows(), agent.stderr())
    rows = {r["message"]: r for r in error_rows()}
    assert set(rows) == {"payment 17 failed", "slow query 250 ms", "task 42 failed",
                         "retrying task 42"}
    pay = rows["payment 17 failed"]
    assert (pay["level"], pay["component"], pay["error_type"]) == ("error", "checkout",
                                                                   "CardDeclined")
    assert pay["stack_trace"] == "at pay()\nat main()"
    task = rows["task 42 failed"]
    assert task["error_type"] == "ZeroDivisionError" and task["component"] == "worker"
    assert task["stack_trace"] == ('Traceback (most recent call last):\n'
                                   '  File "tasks.py", line 3, in run\n'
                                   '    x = 1 / 0\n'
                                   'ZeroDivisionError: division by zero')
    assert rows["retrying task 42"]["level"] == "warning"
    assert {r["host"] for r in rows.values()} == {HOST}

    # both files are sources of kind tail, ok; idle, they stay alive through heartbeats
    sources = tail_sources(srv)
    assert {f"{HOST}:{jsonl}", f"{HOST}:{plain}"} <= set(sources), sources
    seen = {n: s["last_seen"] for n, s in sources.items()}
    assert all(s["status"] == "ok" for s in sources.values()), sources
    assert wait_until(lambda: all(tail_sources(srv)[n]["last_seen"] > seen[n] for n in seen),
                      timeout=10), (tail_sources(srv), agent.stderr())
    later = tail_sources(srv)
    assert all(s["status"] == "ok" and s["interval_ms"] == 1000 for s in later.values()), later
    assert later[f"{HOST}:{jsonl}"]["rows"] == 2  # the info event is below logs.min_level
    assert len(error_rows()) == 4

    counts = agent.stop()
    assert counts["tails"] == 2 and counts["collections"] == 0, counts
    assert counts["tail_rows_sent"] == 4 and counts["tail_lines_bad"] == 0, counts


@pytest.mark.parametrize("args, status, needle", [
    (["--tail", "squid:/tmp/x.log"], 2, "nginx_timed"),
    (["--tail", "/var/log/x.log"], 2, "expected KIND:PATH"),
    (["--tail"], 2, "--tail needs a value"),
    (["--tail", "json:{tmp}/a.log", "--tail", "json:{tmp}/a.log"], 2, "given twice"),
    (["--tail", "plain:{tmp}"], 1, "is not a regular file"),
    (["--tail", "json:{tmp}/a.log", "--once"], 2, "--once"),
    (["--no-host"], 2, "nothing to do"),
    (["--tail", "plain:{tmp}/a.log", "--set", "logs.plain_pattern=^%{TIME}$"], 2,
     "tail 'plain:"),
])
def test_bad_tails_are_refused(run_cli, tmp_path, args, status, needle):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    cp = run_cli("agent", "--server", "127.0.0.1:1", "--spool", tmp_path / "s", *args)
    assert cp.returncode == status, cp.stderr
    assert needle in cp.stderr, cp.stderr
    assert not (tmp_path / "s").exists()


def test_help_names_tail(run_cli):
    cp = run_cli("agent", "--help")
    assert cp.returncode == 0
    for word in ("--tail KIND:PATH", "--no-host", "agent.tail_poll"):
        assert word in cp.stdout
