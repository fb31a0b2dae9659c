"""Scheduled jobs as docs/jobs.md describes them: command jobs, external jobs and their pings,
definitions, restarts, alerts, /metrics and time zones.

What is checked (docs/jobs.md, the `opsdb jobs --help` text, docs/alerts.md's JobFailed and
JobMissed, docs/views.md's job_status and docs/schema.md's scheduled_jobs and job_runs):

* command jobs: every run a job_runs row (status ok or failed, exit_code, duration_ms as
  finished_at - ts, output as stdout and stderr together, only the last jobs.output_bytes
  bytes), OPSDB_JOB and OPSDB_RUN_ID added to opsdb's environment, opsdb's working directory, no
  stdin; a timeout stops the command (status timeout) and its whole process group, with SIGKILL
  5 s after a SIGTERM it ignores; a failed run with retries left shows its retry 1 min later as
  retry_at in GET /api/v1/jobs, a success clears it; overlap skip (no concurrent runs, a start
  falling in a run is dropped, POST /run answers 409) and queue (one run right after, however
  many starts fell in the run); jitter delays each start by at most its bound; POST /run and
  `opsdb jobs run` start a run now (202); pause and resume (no runs, no missed pings, status
  paused in GET /api/v1/jobs and job_status, the schedule goes on from the resume); `opsdb jobs
  history --limit`.
* downtime: a job whose start fell while the server was stopped runs once at the start, not
  once per missed start, and a job whose start did not fall does not; a restart keeps the paused
  flag, the failures in a row and the last run; a command cut by the stop is a failed run.
* external jobs: start and end pings paired by run_id (duration the time between, exit_code and
  the body's tail kept), a start without an end recorded as timeout past the job's timeout, an
  end ping closing the oldest open run, an end ping without a start is a run of no length, fail
  pings counted as failures in a row, a missed run per scheduled time past its grace and status
  missed until the next success; jobs created by a ping of an unknown name (expected daily, an
  hour of grace), 404 with jobs.auto_create=off; pinging a command job is 400; bad names, exit
  codes and run ids are 400 with an error naming the field; `opsdb jobs ping` with
  --start/--success/--fail, --exit-code, --run-id and --body-file (a file, its last 1 MiB, or
  stdin).
* definitions: each kind of mistake in jobs.definitions (and a bad jobs.timezone) makes `opsdb
  serve` refuse to start with the config file's name and line; the docs' own example starts.
* alerts: the default group default-jobs evaluates every minute (`opsdb alerts defaults`), too
  slow here, so its rules are replayed from a rule file at a 1 s interval: JobFailed fires only
  after alert_after failed runs in a row and resolves on a success; JobMissed fires for a missed
  external job.
* /metrics: opsdb_job_runs_total{job,status}, opsdb_job_consecutive_failures{job},
  opsdb_job_last_success_timestamp_seconds{job} and opsdb_job_running{job} as the runs make them.
* time zones: with jobs.timezone, a cron schedule's next_run_at is the local time the zone says
  (computed here with zoneinfo from /usr/share/zoneinfo).

Regressions of bugs these tests found: a stop that cut running commands used freed memory; a
paused job's last result was lost by a restart; jitter on an external job and a bad
jobs.timezone were refused without their line; jobs.timezone leaked into the commands'
environment as TZ; no builtin job was started.

Most command jobs run on one module server from the start (their runs overlap the other tests);
tests that restart or need other options start their own. Schedules are `@every 1s`, `@every 2s`
or a yearly cron time that never falls during a test (runs then started with POST /run); every
wait is bounded.
"""

import json
import os
import re
import shlex
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from conftest import ServerStartError, now_ms, sanitizer_reports, unique, wait_until

FAR = "0 0 1 1 *"  # a start that does not fall during a test: runs come from POST /run
OUTPUT_BYTES = 64  # jobs.output_bytes of the module server
RETRY_FIRST_MS = 60_000  # docs/jobs.md: retried after 1 min, 2 min, 4 min, ...
KILL_GRACE_MS = 5000  # docs/jobs.md: SIGTERM, then SIGKILL 5 s later
SLACK_MS = 400  # scheduling latency allowed on a busy 2-core machine
REPO = Path(__file__).resolve().parents[2]


# ---- configuration -------------------------------------------------------------------------


def jobs_yaml(defs, **jobs_keys):
    """A config file's jobs: section: the keys given and the definitions, one flow map each."""
    lines = ["jobs:"]
    for k, v in jobs_keys.items():
        lines.append(f"  {k}: {json.dumps(v)}")
    lines.append("  definitions:")
    for d in defs:
        lines.append(f"    - {json.dumps(d)}")
    return "\n".join(lines) + "\n"


def start_jobs(server_factory, defs, *args, env=None, extra="", start=True, **jobs_keys):
    return server_factory(*args, config=jobs_yaml(defs, **jobs_keys) + extra, env=env,
                          start=start)


def cmd(name, command, schedule="@every 1s", **kw):
    return {"name": name, "command": command, "schedule": schedule, **kw}


# ---- reading the server --------------------------------------------------------------------


def ms_of(text):
    """Epoch ms of an RFC 3339 time (None stays None)."""
    if text is None:
        return None
    return int(round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000))


def jobs(srv):
    """GET /api/v1/jobs as {name: job}."""
    r = srv.get("/api/v1/jobs")
    assert r.status_code == 200, r.text
    return {j["name"]: j for j in r.json()["jobs"]}


def job(srv, name):
    return jobs(srv)[name]


def runs(srv, name, where="1=1"):
    """The job's job_runs rows, oldest first."""
    return srv.query("SELECT ts, run_id, status, finished_at, duration_ms, exit_code, output "
                     f"FROM job_runs WHERE job = '{name}' AND ({where}) ORDER BY ts, rowid")


def wait_runs(srv, name, n, timeout=10.0, where="1=1"):
    """Waits until the job has at least n runs (matching where); returns them."""
    got = wait_until(lambda: (lambda r: r if len(r) >= n else None)(runs(srv, name, where)),
                     timeout=timeout, interval=0.1)
    assert got, f"{name}: want {n} runs, have {runs(srv, name)}"
    return got


def status_row(srv, name):
    rows = srv.query(f"SELECT * FROM job_status WHERE name = '{name}'")
    assert len(rows) == 1, rows
    return rows[0]


def state_row(srv, name):
    rows = srv.query(f"SELECT * FROM scheduled_jobs WHERE name = '{name}'")
    assert len(rows) == 1, rows
    return rows[0]


def metrics(srv):
    r = srv.get("/metrics")
    assert r.status_code == 200
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def ping(srv, name, kind, body=None, **params):
    return srv.post(f"/api/v1/jobs/{name}/{kind}", params=params or None, data=body)


def timed_ping(srv, name, kind, body=None, **params):
    """A ping that must succeed; returns (ms before it was sent, ms after it was answered)."""
    before = now_ms()
    r = ping(srv, name, kind, body, **params)
    after = now_ms()
    assert r.status_code == 200, r.text
    return before, after


def run_now(srv, name):
    return srv.post(f"/api/v1/jobs/{name}/run")


def quiesce(srv, timeout=8.0):
    """Pauses every job and waits until none runs, so that the stop that follows cuts no run:
    a stop that cuts runs is a test of its own (test_a_stop_that_cuts_running_commands_is_clean)
    and fails on a sanitizer report."""
    for name in jobs(srv):
        r = srv.post(f"/api/v1/jobs/{name}/pause")
        assert r.status_code == 200, r.text
    assert wait_until(lambda: all(j["status"] == "paused" and "running_since" not in j
                                  for j in jobs(srv).values()), timeout=timeout, interval=0.1)
    time.sleep(0.3)  # the rows of the last runs reach the writer


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


# =============================================================================================
# the module server: command jobs that run from its start
# =============================================================================================

CHATTY_LINES = 40
ENV_MARK = "m-42"  # a variable of the module server's environment


def chatty_output():
    """What the job chatty writes (stdout and stderr, in order)."""
    return "".join(f"line {i}\n" if i % 2 == 0 else f"err {i}\n" for i in range(CHATTY_LINES))


def module_defs(tmp):
    q = shlex.quote
    return [
        cmd("envjob", 'echo "job=$OPSDB_JOB run=$OPSDB_RUN_ID"; echo to-stderr >&2'),
        cmd("failjob", "echo failing; exit 3"),
        cmd("chatty", f"i=0; while [ $i -lt {CHATTY_LINES} ]; do "
                      'if [ $((i % 2)) -eq 0 ]; then echo "line $i"; else echo "err $i" >&2; fi; '
                      "i=$((i + 1)); done"),
        cmd("slow", "sleep 0.4"),
        cmd("skipper", "sleep 1.3", overlap="skip"),
        cmd("queuer", "sleep 1.3", overlap="queue"),
        cmd("manual-skip", "sleep 1.5", FAR),
        cmd("manual-queue", "sleep 1.2", FAR, overlap="queue"),
        cmd("timeout-job", f"sleep 30 & echo $! > {q(str(tmp / 'child.pid'))}; sleep 30", FAR,
            timeout="1s"),
        cmd("stubborn", f"trap '' TERM; echo $$ > {q(str(tmp / 'stubborn.pid'))}; sleep 30", FAR,
            timeout="1s"),
        cmd("jittery", "true", jitter="600ms"),
        cmd("pausable", "true"),
        cmd("retrying", f"test -e {q(str(tmp / 'flag'))}", FAR, retries=2),
        cmd("noretry", "exit 1", FAR),
        cmd("cli-run", "echo from-cli", FAR),
        cmd("where", 'pwd; cat; echo "stdin at its end; MARK=$JOBTEST_MARK"', FAR, timeout="5s"),
        {"name": "ext-late", "external": True, "schedule": "@every 2s", "grace": "1s"},
        {"name": "ext-paused", "external": True, "schedule": "@every 1s"},
        {"name": "ext-timeout", "external": True, "timeout": "1s"},
    ]


@pytest.fixture(scope="module")
def mod(module_server_factory, tmp_path_factory):
    """The module server (jobs.output_bytes=64) with module_defs; .started_ms is when it was
    asked to start, .tmp the directory the jobs write pid files to. The two timeout jobs are
    started at once: their runs take seconds and overlap the other tests."""
    tmp = tmp_path_factory.mktemp("jobfiles")
    srv = module_server_factory("--set", f"jobs.output_bytes={OUTPUT_BYTES}",
                                config=jobs_yaml(module_defs(tmp)), start=False,
                                env={"JOBTEST_MARK": ENV_MARK})
    srv.tmp = tmp
    srv.started_ms = now_ms()
    srv.start()
    srv.timeout_runs = {}
    for name in ("timeout-job", "stubborn"):
        before = now_ms()
        r = run_now(srv, name)
        assert r.status_code == 202, r.text
        srv.timeout_runs[name] = before
    yield srv
    quiesce(srv, timeout=15)


# ---- command runs --------------------------------------------------------------------------


def test_each_run_is_a_row_with_status_exit_code_duration_and_output(mod):
    ok = wait_runs(mod, "envjob", 2)
    for row in ok[:2]:
        assert row["status"] == "ok" and row["exit_code"] == 0, row
        assert row["duration_ms"] == row["finished_at"] - row["ts"], row
        # stdout and stderr kept together; the run's own name and id in its environment
        want = f"job=envjob run={row['run_id']}\nto-stderr\n"
        assert row["output"] == want, row
    assert ok[0]["run_id"] != ok[1]["run_id"]

    failed = wait_runs(mod, "failjob", 2)
    for row in failed[:2]:
        assert (row["status"], row["exit_code"], row["output"]) == ("failed", 3, "failing\n")
        assert row["duration_ms"] == row["finished_at"] - row["ts"], row

    for row in wait_runs(mod, "slow", 2)[:2]:
        assert row["status"] == "ok" and row["duration_ms"] >= 400, row
        assert row["duration_ms"] == row["finished_at"] - row["ts"], row

    # the history route shows the same rows, newest first, limited
    r = mod.get("/api/v1/jobs/failjob/history", params={"limit": 2})
    assert r.status_code == 200, r.text
    hist = r.json()
    assert hist["job"] == "failjob" and len(hist["runs"]) == 2
    newest = runs(mod, "failjob")[::-1]
    by_id = {x["run_id"]: x for x in newest}
    assert [ms_of(x["started_at"]) for x in hist["runs"]] == \
        sorted((ms_of(x["started_at"]) for x in hist["runs"]), reverse=True)
    for x in hist["runs"]:
        row = by_id[x["run_id"]]
        assert (ms_of(x["started_at"]), x["status"], ms_of(x["finished_at"]), x["duration_ms"],
                x["exit_code"], x["output"]) == (row["ts"], row["status"], row["finished_at"],
                                                 row["duration_ms"], row["exit_code"],
                                                 row["output"])


def test_a_command_runs_in_the_working_directory_with_no_stdin(mod):
    assert run_now(mod, "where").status_code == 202
    row = wait_runs(mod, "where", 1)[0]
    want = f"{os.path.realpath(mod.workdir)}\nstdin at its end; MARK={ENV_MARK}\n"
    assert (row["status"], row["output"]) == ("ok", want[-OUTPUT_BYTES:]), row


def test_output_keeps_the_last_output_bytes(mod):
    full = chatty_output()
    assert len(full) > OUTPUT_BYTES
    for row in wait_runs(mod, "chatty", 2)[:2]:
        assert row["status"] == "ok", row
        assert row["output"] == full[-OUTPUT_BYTES:], row


def test_a_timeout_stops_the_command_and_its_process_group(mod):
    tmp = mod.tmp
    rows = wait_runs(mod, "timeout-job", 1, timeout=8)
    row = rows[0]
    assert row["status"] == "timeout", row
    # stopped by the SIGTERM at 1 s, long before its sleep 30 ends
    assert 1000 <= row["duration_ms"] < 1000 + KILL_GRACE_MS, row
    child = int((tmp / "child.pid").read_text())
    assert wait_until(lambda: not pid_alive(child), timeout=3), \
        f"the command's background child {child} still runs"
    j = job(mod, "timeout-job")
    assert j["status"] == "failed" and j["timeout_s"] == 1, j

    # a command that ignores SIGTERM gets SIGKILL 5 s later
    rows = wait_runs(mod, "stubborn", 1, timeout=1 + KILL_GRACE_MS / 1000 + 6)
    row = rows[0]
    assert row["status"] == "timeout", row
    assert 1000 + KILL_GRACE_MS <= row["duration_ms"] < 1000 + KILL_GRACE_MS + 3000, row
    pid = int((tmp / "stubborn.pid").read_text())
    assert not pid_alive(pid)


def test_a_failed_run_with_retries_left_shows_its_retry(mod):
    flag = mod.tmp / "flag"
    assert not flag.exists()
    assert run_now(mod, "retrying").status_code == 202
    row = wait_runs(mod, "retrying", 1)[0]
    assert row["status"] == "failed" and row["exit_code"] == 1, row
    j = wait_until(lambda: (lambda x: x if "retry_at" in x else None)(job(mod, "retrying")),
                   timeout=3)
    assert j, job(mod, "retrying")
    # the first retry one minute after the failed run ended
    assert abs(ms_of(j["retry_at"]) - (row["finished_at"] + RETRY_FIRST_MS)) <= 5, \
        (j["retry_at"], row)
    assert j["consecutive_failures"] == 1

    # without retries there is none
    assert run_now(mod, "noretry").status_code == 202
    assert wait_runs(mod, "noretry", 1)[0]["status"] == "failed"
    assert "retry_at" not in job(mod, "noretry")

    # a success ends the retries
    flag.write_text("")
    assert run_now(mod, "retrying").status_code == 202
    rows = wait_runs(mod, "retrying", 2)
    assert rows[1]["status"] == "ok", rows
    j = wait_until(lambda: (lambda x: x if "retry_at" not in x else None)(job(mod, "retrying")),
                   timeout=3)
    assert j and j["consecutive_failures"] == 0 and j["status"] == "ok", job(mod, "retrying")


def no_overlap(rows):
    return all(b["ts"] >= a["finished_at"] for a, b in zip(rows, rows[1:]))


def test_overlap_skip_drops_a_start_that_falls_in_a_run(mod):
    rows = wait_runs(mod, "skipper", 3, timeout=12)
    assert no_overlap(rows), rows
    # each run (1.3 s) covers the next start (1 s later): that start is dropped and the next
    # run waits for the start after, not for the end of this one
    gaps = [b["ts"] - a["finished_at"] for a, b in zip(rows, rows[1:])]
    assert all(g >= 300 for g in gaps), gaps
    assert all(b["ts"] - a["ts"] >= 1900 for a, b in zip(rows, rows[1:])), rows

    # run now: 202, then 409 while it runs
    before = len(runs(mod, "manual-skip"))
    r = run_now(mod, "manual-skip")
    assert r.status_code == 202, r.text
    r = run_now(mod, "manual-skip")
    assert r.status_code == 409, r.text
    assert "error" in r.json()
    j = job(mod, "manual-skip")
    assert j["status"] == "running" and "running_since" in j, j
    rows = wait_runs(mod, "manual-skip", before + 1, timeout=6)
    time.sleep(0.5)
    assert len(runs(mod, "manual-skip")) == before + 1


def test_overlap_queue_runs_once_right_after(mod):
    rows = wait_runs(mod, "queuer", 3, timeout=12)
    assert no_overlap(rows), rows
    # a start fell in each run: the next run starts as this one ends
    gaps = [b["ts"] - a["finished_at"] for a, b in zip(rows, rows[1:])]
    assert all(0 <= g < 500 for g in gaps), gaps

    # three run-now requests while the first runs: one run more, right after
    before = len(runs(mod, "manual-queue"))
    for _ in range(3):
        r = run_now(mod, "manual-queue")
        assert r.status_code == 202, r.text
    rows = wait_runs(mod, "manual-queue", before + 2, timeout=8)
    first, second = rows[before], rows[before + 1]
    assert 0 <= second["ts"] - first["finished_at"] < 500, rows
    time.sleep(1.8)  # a third run would have started and ended by now
    assert len(runs(mod, "manual-queue")) == before + 2


def test_jitter_delays_each_start_within_its_bound(mod):
    jitter_ms, every_ms = 600, 1000
    rows = wait_runs(mod, "jittery", 7, timeout=20)
    first_delay = rows[0]["ts"] - mod.started_ms
    assert first_delay >= every_ms, first_delay
    gaps = [b["ts"] - a["ts"] for a, b in zip(rows, rows[1:])]
    assert all(every_ms <= g <= every_ms + jitter_ms + SLACK_MS for g in gaps), gaps
    # uniform delays up to 600 ms: six all under 150 ms would be a 1 in 4,000 chance
    assert max(gaps) > every_ms + 150, gaps


def test_pause_and_resume(mod, run_cli):
    wait_runs(mod, "pausable", 1)
    cp = run_cli("jobs", "pause", "pausable", "--server", mod.url)
    assert cp.returncode == 0, cp.stderr
    assert ping(mod, "ext-paused", "success").status_code == 200
    r = mod.post("/api/v1/jobs/ext-paused/pause")
    assert r.status_code == 200, r.text
    time.sleep(0.3)  # a run started just before the pause ends
    n = len(runs(mod, "pausable"))
    missed = len(runs(mod, "ext-paused", "status = 'missed'"))
    j = job(mod, "pausable")
    assert j["status"] == "paused" and j["paused"] is True, j
    assert status_row(mod, "pausable")["status"] == "paused"
    assert state_row(mod, "pausable")["enabled"] == 0
    assert job(mod, "ext-paused")["status"] == "paused"
    time.sleep(2.5)  # two starts of each, and past the external job's next ping
    assert len(runs(mod, "pausable")) == n, "a paused job ran"
    assert len(runs(mod, "ext-paused", "status = 'missed'")) == missed, "a paused job missed"
    assert status_row(mod, "ext-paused")["status"] == "paused"

    resumed = now_ms()
    cp = run_cli("jobs", "resume", "pausable", "--server", mod.url)
    assert cp.returncode == 0, cp.stderr
    j = job(mod, "pausable")
    assert j["paused"] is False and j["status"] != "paused", j
    # the schedule goes on from the resume
    assert resumed + 1000 <= ms_of(j["next_run_at"]) <= now_ms() + 1000, (resumed, j)
    rows = wait_runs(mod, "pausable", n + 1, timeout=3)
    assert rows[n]["ts"] >= resumed + 1000 - 5, (resumed, rows[n])
    assert state_row(mod, "pausable")["enabled"] == 1
    r = mod.post("/api/v1/jobs/ext-paused/resume")
    assert r.status_code == 200, r.text


def test_cli_run_history_and_list(mod, run_cli):
    before = now_ms()
    cp = run_cli("jobs", "run", "cli-run", "--server", mod.url)
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout)["job"] == "cli-run"
    rows = wait_runs(mod, "cli-run", 1)
    assert rows[0]["ts"] >= before and rows[0]["output"] == "from-cli\n", rows
    for _ in range(2):
        n = len(runs(mod, "cli-run"))
        assert run_now(mod, "cli-run").status_code == 202
        wait_runs(mod, "cli-run", n + 1)
    all_rows = runs(mod, "cli-run")
    cp = run_cli("jobs", "history", "cli-run", "--limit", "2", "--server", mod.url)
    assert cp.returncode == 0, cp.stderr
    hist = json.loads(cp.stdout)["runs"]
    assert [h["run_id"] for h in hist] == [r["run_id"] for r in all_rows[::-1][:2]]

    cp = run_cli("jobs", "list", "--format", "json", "--server", mod.url)
    assert cp.returncode == 0, cp.stderr
    listed = {j["name"]: j for j in json.loads(cp.stdout)["jobs"]}
    assert set(listed) >= {d["name"] for d in module_defs(mod.tmp)}
    assert listed["cli-run"]["kind"] == "command" and listed["ext-late"]["kind"] == "external"

    # 409 through the CLI: a non-zero exit with the server's answer
    assert run_now(mod, "manual-skip").status_code in (202, 409)
    cp = run_cli("jobs", "run", "manual-skip", "--server", mod.url)
    assert cp.returncode != 0 and "409" in cp.stderr, (cp.returncode, cp.stderr)


def test_metrics_of_command_jobs(mod):
    wait_runs(mod, "failjob", 1)
    m = metrics(mod)
    # read the rows after the metrics: a run may end between the two
    failed = len(runs(mod, "failjob", "status = 'failed'"))
    got = m['opsdb_job_runs_total{job="failjob",status="failed"}']
    assert failed - 1 <= got <= failed, (got, failed)
    assert m['opsdb_job_runs_total{job="failjob",status="ok"}'] == 0
    assert m['opsdb_job_consecutive_failures{job="failjob"}'] >= 1
    for name in ("envjob", "failjob", "ext-late"):
        assert f'opsdb_job_running{{job="{name}"}}' in m
    # a long run shows as running
    r = run_now(mod, "manual-skip")
    if r.status_code == 202:
        assert metrics(mod)['opsdb_job_running{job="manual-skip"}'] == 1
    else:
        assert r.status_code == 409
    wait_until(lambda: job(mod, "manual-skip")["status"] != "running", timeout=4)
    assert metrics(mod)['opsdb_job_running{job="manual-skip"}'] == 0


# ---- external jobs on the module server ------------------------------------------------------


def test_an_external_job_that_does_not_ping_is_missed_once_per_start(mod):
    every_ms, grace_ms = 2000, 1000
    rows = wait_runs(mod, "ext-late", 2, timeout=12, where="status = 'missed'")
    for row in rows:
        assert row["finished_at"] is None and row["duration_ms"] is None, row
    # one missed run per scheduled time, each its own start
    starts = [r["ts"] for r in rows]
    assert all(b - a == every_ms for a, b in zip(starts, starts[1:])), starts
    assert starts[0] - mod.started_ms >= every_ms
    assert now_ms() >= starts[-1] + grace_ms
    j = job(mod, "ext-late")
    assert j["status"] == "missed" and j["consecutive_failures"] >= len(rows), j
    assert status_row(mod, "ext-late")["status"] == "missed"

    # a success: ok again, failures reset, the next ping expected a period later
    before, after = timed_ping(mod, "ext-late", "success")
    j = job(mod, "ext-late")
    assert j["status"] == "ok" and j["consecutive_failures"] == 0, j
    assert before + every_ms <= ms_of(j["next_run_at"]) <= after + every_ms, j
    assert status_row(mod, "ext-late")["status"] == "ok"


def test_an_external_run_without_an_end_ping_times_out(mod):
    timeout_ms = 1000
    start = timed_ping(mod, "ext-timeout", "start", run_id="never-ends")
    rows = wait_runs(mod, "ext-timeout", 1, timeout=5)
    row = rows[0]
    assert (row["status"], row["run_id"]) == ("timeout", "never-ends"), row
    assert start[0] <= row["ts"] <= start[1], (start, row)
    assert timeout_ms <= row["duration_ms"] <= timeout_ms + SLACK_MS, row
    assert row["duration_ms"] == row["finished_at"] - row["ts"], row
    j = job(mod, "ext-timeout")
    assert j["status"] == "failed" and j["consecutive_failures"] == 1, j
    assert status_row(mod, "ext-timeout")["status"] == "failed"


def test_pinging_a_command_job_is_a_400(mod):
    for kind in ("start", "success", "fail"):
        r = ping(mod, "envjob", kind)
        assert r.status_code == 400, (kind, r.text)
        assert "envjob" in r.json()["error"]


def test_run_now_of_an_external_job_is_refused(mod):
    r = run_now(mod, "ext-late")
    assert 400 <= r.status_code < 500, r.text


# =============================================================================================
# external jobs: pings
# =============================================================================================


@pytest.fixture(scope="module")
def pings(module_server_factory):
    """A server with the default jobs options but jobs.output_bytes=64 and no definitions:
    every job is created by its first ping."""
    return module_server_factory("--set", f"jobs.output_bytes={OUTPUT_BYTES}")


def test_start_and_end_pings_pair_by_run_id(pings):
    name = unique("pair")
    a0 = timed_ping(pings, name, "start", run_id="run-a")
    b0 = timed_ping(pings, name, "start", rid="run-b")  # Healthchecks' name works too
    assert job(pings, name)["status"] == "running"
    time.sleep(0.3)
    a1 = timed_ping(pings, name, "success", body="alpha done\n", run_id="run-a", exit_code=0)
    time.sleep(0.2)
    body_b = "".join(f"b-line {i}\n" for i in range(30))
    b1 = timed_ping(pings, name, "fail", body=body_b, run_id="run-b", exit_code=7)
    rows = {r["run_id"]: r for r in runs(pings, name)}
    assert set(rows) == {"run-a", "run-b"}, rows
    for rid, start, end, status, code, out in (
            ("run-a", a0, a1, "ok", 0, "alpha done\n"),
            ("run-b", b0, b1, "failed", 7, body_b[-OUTPUT_BYTES:])):
        row = rows[rid]
        assert (row["status"], row["exit_code"], row["output"]) == (status, code, out), row
        assert start[0] <= row["ts"] <= start[1], (start, row)
        assert end[0] <= row["finished_at"] <= end[1], (end, row)
        assert row["duration_ms"] == row["finished_at"] - row["ts"], row
        assert end[0] - start[1] <= row["duration_ms"] <= end[1] - start[0], row
    j = job(pings, name)
    assert j["status"] == "failed" and j["consecutive_failures"] == 1, j


def test_an_end_ping_without_run_id_closes_the_oldest_open_run(pings):
    name = unique("oldest")
    first = timed_ping(pings, name, "start")
    time.sleep(0.05)
    second = timed_ping(pings, name, "start")
    end1 = timed_ping(pings, name, "success")
    rows = runs(pings, name)
    assert len(rows) == 1 and first[0] <= rows[0]["ts"] <= first[1], (first, rows)
    end2 = timed_ping(pings, name, "success")
    rows = runs(pings, name)
    assert len(rows) == 2 and second[0] <= rows[1]["ts"] <= second[1], (second, rows)
    assert end1[0] <= rows[0]["finished_at"] <= end1[1]
    assert end2[0] <= rows[1]["finished_at"] <= end2[1]
    assert job(pings, name)["status"] == "ok"


def test_an_end_ping_without_a_start_is_a_run_of_no_length(pings):
    name = unique("nostart")
    t = timed_ping(pings, name, "success", body="quick")
    t2 = timed_ping(pings, name, "fail", exit_code=-3, run_id="lonely")
    rows = runs(pings, name)
    assert [(r["status"], r["duration_ms"], r["exit_code"], r["output"]) for r in rows] == \
        [("ok", 0, None, "quick"), ("failed", 0, -3, None)], rows
    for row, (lo, hi) in zip(rows, (t, t2)):
        assert lo <= row["ts"] == row["finished_at"] <= hi, row
    assert rows[1]["run_id"] == "lonely"


def test_fail_pings_count_failures_in_a_row(pings):
    name = unique("fails")
    sent = ["success", "fail", "fail", "success", "fail", "fail", "fail"]
    expect = []
    n = 0
    for kind in sent:
        timed_ping(pings, name, kind, exit_code=0 if kind == "success" else 1)
        n = 0 if kind == "success" else n + 1
        expect.append(n)
        j = job(pings, name)
        assert j["consecutive_failures"] == n, (sent, j)
        assert j["status"] == ("ok" if kind == "success" else "failed")
    assert state_row(pings, name)["consecutive_failures"] == expect[-1]
    assert status_row(pings, name)["consecutive_failures"] == expect[-1]
    m = metrics(pings)
    assert m[f'opsdb_job_runs_total{{job="{name}",status="ok"}}'] == sent.count("success")
    assert m[f'opsdb_job_runs_total{{job="{name}",status="failed"}}'] == sent.count("fail")
    assert m[f'opsdb_job_consecutive_failures{{job="{name}"}}'] == expect[-1]
    assert m[f'opsdb_job_running{{job="{name}"}}'] == 0
    last_ok = [r for r in runs(pings, name) if r["status"] == "ok"][-1]
    got = m[f'opsdb_job_last_success_timestamp_seconds{{job="{name}"}}']
    assert abs(got - last_ok["finished_at"] / 1000) < 0.002, (got, last_ok)
    timed_ping(pings, name, "start", run_id="r1")
    assert metrics(pings)[f'opsdb_job_running{{job="{name}"}}'] == 1
    timed_ping(pings, name, "success", run_id="r1")
    assert metrics(pings)[f'opsdb_job_running{{job="{name}"}}'] == 0


def test_a_ping_of_an_unknown_name_creates_an_external_job(pings):
    name = unique("auto")
    before, after = timed_ping(pings, name, "success")
    j = job(pings, name)
    # expected daily, an hour of grace
    assert j["kind"] == "external" and j["auto_created"] is True, j
    assert j["grace_s"] == 3600, j
    assert before + 86_400_000 <= ms_of(j["next_run_at"]) <= after + 86_400_000, j
    row = state_row(pings, name)
    assert (row["kind"], row["grace_s"]) == ("external", 3600), row
    # names of 128 characters are fine
    longest = (unique("len") + "x" * 128)[:128]
    timed_ping(pings, longest, "start")
    assert job(pings, longest)["status"] == "running"


def test_the_server_lists_its_builtin_maintenance_jobs(pings):
    """docs/jobs.md: `opsdb serve` runs a scheduler that starts opsdb's own maintenance
    (builtin jobs: compaction, retention, ...)."""
    builtins = [j for j in jobs(pings).values() if j["kind"] == "builtin"]
    assert builtins, jobs(pings)


BAD_PINGS = [
    # (name, params, the field the error names)
    ("bad name", {}, "name"),
    ("x" * 129, {}, "name"),
    ("é", {}, "name"),
    ("ok-name", {"exit_code": "256"}, "exit_code"),
    ("ok-name", {"exit_code": "-256"}, "exit_code"),
    ("ok-name", {"exit_code": "x"}, "exit_code"),
    ("ok-name", {"exit_code": ""}, "exit_code"),
    ("ok-name", {"exit_code": "1.5"}, "exit_code"),
    ("ok-name", {"run_id": "r" * 200}, "run_id"),
    ("ok-name", {"run_id": ""}, "run_id"),
]


def test_bad_pings_are_400_naming_the_field(pings):
    failures = []
    for name, params, field in BAD_PINGS:
        for kind in ("start", "success", "fail"):
            r = ping(pings, name, kind, **params)
            try:
                err = r.json().get("error", "")
            except ValueError:
                err = ""
            if r.status_code != 400 or field not in err:
                failures.append((name[:20], params and {k: v[:20] for k, v in params.items()},
                                 kind, r.status_code, r.text[:200]))
    assert not failures, failures
    assert "ok-name" not in jobs(pings), "a refused ping created its job"


def test_cli_ping(pings, run_cli, tmp_path):
    name = unique("cliping")
    server = ["--server", pings.url]
    t0 = now_ms()
    cp = run_cli("jobs", "ping", name, "--start", "--run-id", "c1", *server)
    assert cp.returncode == 0, cp.stderr
    log = tmp_path / "backup.log"
    text = "".join(f"backup step {i}\n" for i in range(20))
    log.write_text(text)
    cp = run_cli("jobs", "ping", name, "--fail", "--exit-code", "4", "--run-id", "c1",
                 "--body-file", log, *server)
    assert cp.returncode == 0, cp.stderr
    t1 = now_ms()
    rows = runs(pings, name)
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row["run_id"], row["status"], row["exit_code"], row["output"]) == \
        ("c1", "failed", 4, text[-OUTPUT_BYTES:]), row
    assert t0 <= row["ts"] <= row["finished_at"] <= t1

    # the body from stdin
    cp = run_cli("jobs", "ping", name, "--success", "--body-file", "-", *server,
                 input="all good\n")
    assert cp.returncode == 0, cp.stderr
    rows = runs(pings, name)
    assert (rows[-1]["status"], rows[-1]["output"], rows[-1]["duration_ms"]) == \
        ("ok", "all good\n", 0), rows
    assert job(pings, name)["consecutive_failures"] == 0

    # a body larger than the 1 MiB the CLI sends: its tail
    big = tmp_path / "big.log"
    big_text = "".join(f"{i:07d}\n" for i in range(200_000))  # 1.6 MB
    big.write_text(big_text)
    cp = run_cli("jobs", "ping", name, "--success", "--body-file", big, *server)
    assert cp.returncode == 0, cp.stderr
    assert runs(pings, name)[-1]["output"] == big_text[-OUTPUT_BYTES:]

    # the documented crontab line's failing branch: --exit-code $?
    cp = run_cli("jobs", "ping", name, "--fail", "--exit-code", "300", *server)
    assert cp.returncode != 0 and "exit-code" in cp.stderr, cp.stderr
    cp = run_cli("jobs", "ping", name, "--exit-code", "1", *server)
    assert cp.returncode != 0
    assert len(runs(pings, name)) == 3


def test_unknown_names_are_404_with_auto_create_off(server_factory):
    srv = start_jobs(server_factory, [{"name": "known", "external": True}],
                     "--set", "jobs.auto_create=off")
    for kind in ("start", "success", "fail"):
        r = ping(srv, "unknown-job", kind)
        assert r.status_code == 404, (kind, r.text)
        assert "error" in r.json()
    assert "unknown-job" not in jobs(srv)
    timed_ping(srv, "known", "success")
    assert job(srv, "known")["status"] == "ok"
    # without a schedule it is never missed
    assert job(srv, "known")["next_run_at"] is None


# =============================================================================================
# downtime
# =============================================================================================


def test_a_start_missed_while_down_runs_once_at_restart(server_factory):
    every_s, down_s = 2, 7
    srv = start_jobs(server_factory, [cmd("tick", "true", f"@every {every_s}s"),
                                      cmd("yearly", "true", FAR)])
    wait_runs(srv, "tick", 1, timeout=5)
    # stopped just after a run ended (the next starts 2 s later): the stop cuts no run
    assert wait_until(lambda: job(srv, "tick")["status"] == "ok", timeout=3)
    srv.stop()
    time.sleep(down_s)  # three starts of tick fall while it is down
    restarted = now_ms()
    srv.start()
    rows = wait_runs(srv, "tick", 1, timeout=3, where=f"ts >= {restarted}")
    first = rows[0]["ts"]
    assert first - restarted < 1500, (restarted, rows)
    # once, not once per missed start: the next run comes a period after the catch-up
    time.sleep(max(0.0, (first + every_s * 1000 - 300 - now_ms()) / 1000))
    rows = runs(srv, "tick", f"ts >= {restarted}")
    assert len(rows) == 1, rows
    rows = wait_runs(srv, "tick", 2, timeout=3, where=f"ts >= {restarted}")
    assert rows[1]["ts"] - first >= every_s * 1000, rows
    assert runs(srv, "yearly") == [], "a job whose start did not fall ran at restart"
    quiesce(srv)


def test_a_restart_keeps_paused_flag_failures_and_last_run(server_factory):
    srv = start_jobs(server_factory, [cmd("flaky", "exit 3", FAR, alert_after=5),
                                      cmd("steady", "true", FAR)])
    for i in range(2):
        assert run_now(srv, "flaky").status_code == 202
        wait_runs(srv, "flaky", i + 1)
    assert run_now(srv, "steady").status_code == 202
    wait_runs(srv, "steady", 1)
    assert wait_until(lambda: job(srv, "flaky")["consecutive_failures"] == 2
                      and job(srv, "steady")["status"] == "ok", timeout=3)
    assert srv.post("/api/v1/jobs/flaky/pause").status_code == 200
    before = jobs(srv)
    time.sleep(0.3)  # the last state rows reach the writer
    srv.restart()

    j = job(srv, "flaky")
    assert (j["paused"], j["status"], j["consecutive_failures"], j["last_run_at"]) == \
        (True, "paused", 2, before["flaky"]["last_run_at"]), j
    row = state_row(srv, "flaky")
    assert (row["enabled"], row["consecutive_failures"]) == (0, 2), row
    assert status_row(srv, "flaky")["status"] == "paused"
    j = job(srv, "steady")
    assert (j["paused"], j["status"], j["consecutive_failures"], j["last_run_at"]) == \
        (False, "ok", 0, before["steady"]["last_run_at"]), j

    # failures in a row go on counting from where they were
    assert srv.post("/api/v1/jobs/flaky/resume").status_code == 200
    assert run_now(srv, "flaky").status_code == 202
    wait_runs(srv, "flaky", 3)
    assert wait_until(lambda: job(srv, "flaky")["consecutive_failures"] == 3, timeout=3), \
        job(srv, "flaky")


def test_a_stop_that_cuts_running_commands_is_clean(server_factory, tmp_path):
    names = [f"long{i}" for i in range(4)]
    srv = start_jobs(server_factory, [
        cmd(n, f"echo $$ > {shlex.quote(str(tmp_path / n))}; sleep 30", FAR) for n in names])
    for n in names:
        assert run_now(srv, n).status_code == 202
    assert wait_until(lambda: all((tmp_path / n).exists() and (tmp_path / n).read_text().strip()
                                  for n in names), timeout=5)
    pids = [int((tmp_path / n).read_text()) for n in names]
    t = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    try:
        rc = srv.proc.wait(timeout=KILL_GRACE_MS / 1000 + 5)
    except subprocess.TimeoutExpired:
        rc = "no exit within 10 s"
    took = time.monotonic() - t
    srv.kill9()
    reports = sanitizer_reports(srv.run_stderr())
    srv.start()
    assert (rc, reports) == (0, []), reports
    # documented: the commands get SIGTERM and each is recorded as a failed run
    assert took < KILL_GRACE_MS / 1000 + 5, "the stop waited for the commands"
    assert not [p for p in pids if pid_alive(p)], "a command outlived the server"
    for n in names:
        assert [r["status"] for r in runs(srv, n)] == ["failed"], (n, runs(srv, n))
        assert job(srv, n)["consecutive_failures"] == 1


def test_a_job_paused_over_a_restart_shows_its_last_result_when_resumed(server_factory):
    srv = start_jobs(server_factory, [cmd("flaky", "exit 3", FAR)])
    assert run_now(srv, "flaky").status_code == 202
    wait_runs(srv, "flaky", 1)
    assert wait_until(lambda: job(srv, "flaky")["status"] == "failed", timeout=3)
    assert srv.post("/api/v1/jobs/flaky/pause").status_code == 200
    srv.restart()
    assert srv.post("/api/v1/jobs/flaky/resume").status_code == 200
    assert status_row(srv, "flaky")["status"] == "failed"  # the view reads job_runs
    j = job(srv, "flaky")
    assert (j["status"], j["consecutive_failures"]) == ("failed", 1), j


# =============================================================================================
# definitions
# =============================================================================================

GOOD = '    - name: good\n      command: "true"\n      schedule: "@every 1h"\n'

# (case, definitions text with "# fault" on the line the message must name, message part)
BAD_DEFINITIONS = [
    ("unknown_key", '    - name: a\n      command: "true"\n      schedule: "@hourly"\n'
                    "      colour: red  # fault\n", "unknown key 'colour' in a job"),
    ("cron_hour", '    - name: a\n      command: "true"\n'
                  '      schedule: "30 25 * * *"  # fault\n',
     "schedule: cron hour: '25' is out of range 0-23"),
    ("cron_minute", '    - name: a\n      command: "true"\n'
                    '      schedule: "60 * * * *"  # fault\n',
     "schedule: cron minute: '60' is out of range 0-59"),
    ("cron_month", '    - name: a\n      command: "true"\n'
                   '      schedule: "0 0 1 13 *"  # fault\n', "cron month: '13'"),
    ("cron_weekday", '    - name: a\n      command: "true"\n'
                     '      schedule: "0 0 * * funday"  # fault\n', "cron day of week"),
    ("cron_fields", '    - name: a\n      command: "true"\n'
                    '      schedule: "0 0 * *"  # fault\n', "schedule: cron: "),
    ("every_too_short", '    - name: a\n      command: "true"\n'
                        '      schedule: "@every 500ms"  # fault\n', "schedule: "),
    ("bad_macro", '    - name: a\n      command: "true"\n'
                  '      schedule: "@fortnightly"  # fault\n', "schedule: "),
    ("missing_name", '    - command: "true"  # fault\n      schedule: "@hourly"\n',
     "a job needs a name"),
    ("bad_name", '    - name: "two words"  # fault\n      command: "true"\n'
                 '      schedule: "@hourly"\n', "name: "),
    ("both_kinds", '    - name: a  # fault\n      command: "true"\n      external: true\n'
                   '      schedule: "@hourly"\n', "give either command"),
    ("neither_kind", '    - name: a  # fault\n      schedule: "@hourly"\n',
     "give either command"),
    ("duplicate", GOOD + '    - name: good  # fault\n      external: true\n',
     "job good: the name is given twice"),
    ("bad_timeout", '    - name: a\n      command: "true"\n      schedule: "@hourly"\n'
                    "      timeout: soon  # fault\n", "timeout: expected a duration"),
    ("bad_grace", '    - name: a\n      external: true\n      grace: 5 minutes  # fault\n',
     "grace: expected a duration"),
    ("bad_overlap", '    - name: a\n      command: "true"\n      schedule: "@hourly"\n'
                    "      overlap: parallel  # fault\n", "overlap: expected skip or queue"),
    ("bad_retries", '    - name: a\n      command: "true"\n      schedule: "@hourly"\n'
                    "      retries: many  # fault\n", "retries: "),
    ("bad_alert_after", '    - name: a\n      external: true\n      alert_after: 0  # fault\n',
     "alert_after: "),
    ("command_without_schedule", '    - name: a  # fault\n      command: "true"\n',
     "a command job needs a schedule"),
    ("not_a_map", "    - just-a-name  # fault\n", "a job definition must be a map"),
]


def check_refused(server_factory, tmp_path, case, text, message):
    """Starts a server on the config text; returns a failure description or None."""
    d = tmp_path / case
    d.mkdir()
    srv = server_factory(config=text, db=d / "x.db", start=False)
    line = next(i + 1 for i, x in enumerate(text.splitlines()) if "# fault" in x)
    try:
        srv.start()
    except ServerStartError:
        err = srv.run_stderr()
        # definitions say file:line: (as rule files do), options file: line N: (config.c)
        at = (f"{srv.config_path}:{line}: ", f"{srv.config_path}: line {line}: ")
        if not any(a in err for a in at) or message not in err:
            return (case, f"want {srv.config_path.name}:{line}: ...{message}...", err[-500:])
        return None
    srv.stop()
    return (case, "started")


def test_a_bad_definition_names_its_line_and_serve_refuses(server_factory, tmp_path):
    failures = []
    for case, body, message in BAD_DEFINITIONS:
        text = "jobs:\n  definitions:\n" + body
        failure = check_refused(server_factory, tmp_path, case, text, message)
        if failure:
            failures.append(failure)
    assert not failures, failures


def test_jitter_on_an_external_job_names_the_jitter_line(server_factory, tmp_path):
    text = ("jobs:\n  definitions:\n    - name: a\n      external: true\n"
            '      schedule: "@hourly"\n      jitter: 5s  # fault\n')
    failure = check_refused(server_factory, tmp_path, "jitter", text, "jitter")
    assert failure is None, failure


def test_jitter_on_an_external_job_is_refused(server_factory, tmp_path):
    srv = server_factory(config="jobs:\n  definitions:\n    - name: a\n      external: true\n"
                                '      schedule: "@hourly"\n      jitter: 5s\n', start=False)
    with pytest.raises(ServerStartError):
        srv.start()
    err = srv.run_stderr()
    assert re.search(re.escape(str(srv.config_path)) + r":\d+: .*jitter", err), err[-500:]


def test_a_bad_timezone_names_its_line_and_serve_refuses(server_factory, tmp_path):
    text = "jobs:\n  timezone: Mars/Olympus_Mons  # fault\n  definitions:\n" + GOOD
    failure = check_refused(server_factory, tmp_path, "timezone", text, "jobs.timezone")
    assert failure is None, failure


def test_a_bad_timezone_is_refused(server_factory, tmp_path):
    for zone in ("Mars/Olympus_Mons", "../etc/passwd"):
        d = tmp_path / zone.replace("/", "_").replace(".", "_")
        d.mkdir()
        srv = server_factory("--set", f"jobs.timezone={zone}", db=d / "x.db", start=False)
        with pytest.raises(ServerStartError):
            srv.start()
        assert "jobs.timezone" in srv.run_stderr(), srv.run_stderr()[-500:]


def test_the_documented_example_starts(server_factory):
    text = (REPO / "docs" / "jobs.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    defs = yaml.safe_load(example)["jobs"]["definitions"]
    srv = server_factory(config=example)
    listed = jobs(srv)
    for d in defs:
        j = listed[d["name"]]
        assert j["kind"] == ("external" if d.get("external") else "command"), j
        assert j["schedule"] == d["schedule"], j
        assert j["alert_after"] == d.get("alert_after", 1), j
        if "command" in d:
            assert (j["command"], j["overlap"]) == (d["command"], d.get("overlap", "skip")), j
        if "grace" in d:
            assert j["grace_s"] == int(d["grace"].rstrip("m")) * 60, j
        if "timeout" in d:
            assert j["timeout_s"] == int(d["timeout"].rstrip("h")) * 3600, j
        assert j["status"] == "never", j


# =============================================================================================
# alerts
# =============================================================================================


def default_jobs_group(run_cli):
    cp = run_cli("alerts", "defaults")
    assert cp.returncode == 0, cp.stderr
    groups = yaml.safe_load(cp.stdout)["groups"]
    return next(g for g in groups if any(r["alert"] == "JobFailed" for r in g["rules"]))


def test_default_job_rules_evaluate_every_minute(run_cli):
    """The default rules of jobs are in a group evaluated every minute: the alert tests below
    replay them from a rule file at 1 s."""
    group = default_jobs_group(run_cli)
    assert group["interval"] == "1m", group
    assert {r["alert"] for r in group["rules"]} == {"JobFailed", "JobMissed"}


def active(srv, rule, job_name):
    r = srv.get("/api/v1/alerts")
    assert r.status_code == 200, r.text
    return [a for a in r.json()["alerts"] if a["rule"] == rule
            and a["labels"].get("job") == job_name and a["state"] in ("firing", "pending")]


def test_job_failed_and_job_missed_alerts(server_factory, tmp_path, run_cli):
    group = default_jobs_group(run_cli)
    group = {**group, "name": "jobs-fast", "interval": "1s"}
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "rules.yaml").write_text(yaml.safe_dump({"groups": [group]}, sort_keys=False))
    flag = tmp_path / "fixed"
    alert_after = 2
    text = ("alerting:\n  rule_files: [rules.yaml]\n  default_rules: off\n"
            + jobs_yaml([cmd("breaks", f"test -e {shlex.quote(str(flag))}", FAR,
                             alert_after=alert_after),
                         {"name": "reports", "external": True, "schedule": "@every 1s"}]))
    (conf / "opsdb.yaml").write_text(text)
    srv = server_factory("--config", conf / "opsdb.yaml",
                         env={"OPSDB_ALERTING_DEFAULT_RULES": None})

    # the external job that does not report is missed: JobMissed
    assert wait_until(lambda: active(srv, "JobMissed", "reports"), timeout=6), \
        (job(srv, "reports"), srv.get("/api/v1/alerts").text)

    # failures in a row: JobFailed only at alert_after
    for n in range(1, alert_after + 1):
        assert run_now(srv, "breaks").status_code == 202
        wait_runs(srv, "breaks", n)
        assert wait_until(lambda: job(srv, "breaks")["consecutive_failures"] == n, timeout=3)
        if n < alert_after:
            time.sleep(2.5)  # two evaluations and more
            assert not active(srv, "JobFailed", "breaks"), srv.get("/api/v1/alerts").text
    got = wait_until(lambda: [a for a in active(srv, "JobFailed", "breaks")
                              if a["state"] == "firing"], timeout=6)
    assert got, srv.get("/api/v1/alerts").text
    assert got[0]["value"] == alert_after, got

    # a success resolves it
    flag.write_text("")
    assert run_now(srv, "breaks").status_code == 202
    assert wait_until(lambda: not active(srv, "JobFailed", "breaks"), timeout=6), \
        srv.get("/api/v1/alerts").text
    assert not active(srv, "JobMissed", "breaks")
    quiesce(srv)


# =============================================================================================
# time zones
# =============================================================================================


def next_local(now, zone, minute, hour, weekday=None):
    """The first local minute:hour (on weekday, 0 Monday, if given) after now, as epoch ms;
    the schedules here never fall in a daylight saving change."""
    local = now.astimezone(zone)
    day = local.date()
    for _ in range(9):
        t = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        if t > local and (weekday is None or t.weekday() == weekday):
            return int(t.timestamp() * 1000)
        day += timedelta(days=1)
    raise AssertionError("no time found")


TZ_SCHEDULES = [("afternoon", "30 14 * * *", dict(minute=30, hour=14)),
                ("monday", "5 9 * * mon", dict(minute=5, hour=9, weekday=0)),
                ("midnight", "@daily", dict(minute=0, hour=0))]


@pytest.mark.parametrize("zone_name", ["Asia/Kolkata", "America/New_York", "UTC"])
def test_cron_schedules_are_read_in_jobs_timezone(server_factory, zone_name):
    zone = ZoneInfo(zone_name)
    defs = [cmd(name, "true", sched) for name, sched, _ in TZ_SCHEDULES]
    args = () if zone_name == "UTC" else ("--set", f"jobs.timezone={zone_name}")
    before = datetime.now(timezone.utc)
    srv = start_jobs(server_factory, defs, *args)
    listed = jobs(srv)
    after = datetime.now(timezone.utc)
    for name, sched, when in TZ_SCHEDULES:
        want = {next_local(before, zone, **when), next_local(after, zone, **when)}
        got = ms_of(listed[name]["next_run_at"])
        assert got in want, (zone_name, sched, listed[name]["next_run_at"],
                             [datetime.fromtimestamp(w / 1000, zone).isoformat() for w in want])
        assert status_row(srv, name)["next_run_at"] == got


def test_a_command_gets_the_environment_of_opsdb(server_factory):
    srv = start_jobs(server_factory, [cmd("showtz", 'echo "TZ=${TZ-unset} HOME=$HOME"', FAR)],
                     "--set", "jobs.timezone=Asia/Kolkata", env={"TZ": None})
    assert run_now(srv, "showtz").status_code == 202
    row = wait_runs(srv, "showtz", 1)[0]
    assert row["output"] == f"TZ=unset HOME={os.environ.get('HOME', '')}\n", row


# ---- builtin jobs ----------------------------------------------------------------------------


def test_builtin_jobs_run_as_jobs_and_record_their_runs(server_factory, tmp_path, run_cli):
    """The builtin jobs are listed with their schedules from the config keys; `run` starts one
    and its summary is the run's output: a backup lands in backup.dir and backup_verify
    records its verification in the manifest, which `opsdb backup list` shows; integrity_check
    and optimize report on the database."""
    backups = tmp_path / "backups"
    srv = server_factory("--set", f"backup.dir={backups}", "--set", "jobs.optimize=off",
                         "--set", "storage.compact_interval=7m")
    listed = jobs(srv)
    want = {"compaction": "@every 420000ms", "compression": "@every 420000ms",
            "retention": "@every 3600000ms", "archiving": "15 2 * * *",
            "integrity_check": "30 3 * * *", "optimize": "off", "backup": "@daily",
            "backup_verify": "30 0 * * *"}
    assert {n: listed[n]["schedule"] for n in want} == want
    assert all(listed[n]["kind"] == "builtin" for n in want)
    assert listed["optimize"]["next_run_at"] is None  # off: runs only when asked
    r = srv.ingest("api_usage", [{"ts": now_ms() - 1000, "method": "GET", "endpoint": "/b",
                                  "status_code": 200}])
    assert r.status_code == 200, r.text

    for name in ("backup", "backup_verify", "integrity_check", "optimize"):
        run_now(srv, name)
        done = wait_runs(srv, name, 1, timeout=60)
        assert done[0]["status"] == "ok", done
    out = {n: runs(srv, n)[0]["output"] for n in ("backup", "backup_verify", "integrity_check")}
    cp = run_cli("backup", "list", "--to", backups, "--format", "json")
    assert cp.returncode == 0, cp.stderr
    listing = json.loads(cp.stdout)["rows"]
    assert len(listing) == 1
    name = listing[0]["name"]
    assert out["backup"].startswith(f"{name}: ") and "rows" in out["backup"], out
    assert out["backup_verify"].startswith(f"{name} is sound"), out
    assert listing[0]["verified_at"] and listing[0]["verified"] in ("ok", 1, True), listing[0]
    assert out["integrity_check"].startswith("ok: quick_check of "), out
    assert metrics(srv)['opsdb_job_runs_total{job="backup",status="ok"}'] == 1
