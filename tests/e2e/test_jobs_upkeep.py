"""The upkeep of scheduled jobs as docs/jobs.md describes it: definitions removed from the config,
builtin runs that fail on damaged data, the first runs of the interval builtins, cancelling a
run, and what `optimize` gives back to the file system (docs/backup-restore.md, "Database file
size").

What is checked:

* a command job whose definition is removed from the config keeps its scheduled_jobs row, marked
  removed (last_status removed, no next_run_at): job_status shows it removed (not failed, not
  missed, even days later), JobFailed stops firing for it, GET /api/v1/jobs and `opsdb jobs
  list` leave it out unless asked (?all=true, --all), its history stays readable, it cannot be
  run; an external job created by pings is left alone; a definition put back is a job again; a
  ping for a removed command job's name makes it an external job.
* a builtin run that fails on damaged data (an archive manifest that cannot be read) fails at
  once with the reason and is not retried (no retry_at), and JobFailed fires for it.
* the interval builtins (compaction, compression, retention) run soon after a server starts on
  a fresh database (after a tenth of their interval, and before two tenths), not one interval
  later, and a restart soon after a run does not run them again: their next run counts from the
  last start.
* a database made by opsdb asks for incremental vacuum before its first table, so the optimize
  job gives the pages of partitions retention dropped back to the file system; a database made
  without it keeps them (and `opsdb optimize` says so) until `opsdb optimize --vacuum`, which
  states the space it needs, shows progress, converts the file and shrinks it, keeps every row,
  and is refused while a server has the database open.
* cancelling: POST /api/v1/jobs/{name}/cancel and `opsdb jobs cancel` stop a command's process
  group and a builtin between its steps (compaction; the next run finishes the pass); the run is
  recorded as cancelled, is no failure and is not retried; 409 when nothing runs, 404 for an
  unknown job, 400 for an external one.

The alert tests replay the default group of job rules from a rule file at a 1 s interval, as
test_jobs.py does.
"""
import json
import re
import sqlite3
import time

import yaml

from conftest import now_ms, wait_until
from test_jobs import (FAR, active, cmd, default_jobs_group, jobs, jobs_yaml, ms_of, pid_alive,
                       quiesce, run_now, runs, start_jobs, state_row, status_row, wait_runs)


def fast_job_rules(tmp_path, run_cli):
    """A rule file with the default job rules evaluated every second; returns its name (the
    config file that names it must be in tmp_path)."""
    group = {**default_jobs_group(run_cli), "name": "jobs-fast", "interval": "1s"}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [group]}, sort_keys=False))
    return "alerting:\n  rule_files: [rules.yaml]\n  default_rules: off\n"


def write_config(tmp_path, text):
    path = tmp_path / "opsdb.yaml"
    path.write_text(text)
    return path


# =============================================================================================
# definitions removed from the config
# =============================================================================================


def test_a_removed_definition_is_marked_removed_and_no_longer_missed_or_alerted(
        server_factory, tmp_path, run_cli):
    rules = fast_job_rules(tmp_path, run_cli)
    defs = [cmd("gone", "exit 3", "@every 1h"), cmd("kept", "true", FAR)]
    conf = write_config(tmp_path, rules + jobs_yaml(defs))
    srv = server_factory("--config", conf, env={"OPSDB_ALERTING_DEFAULT_RULES": None})
    assert run_now(srv, "gone").status_code == 202
    wait_runs(srv, "gone", 1)
    assert srv.post("/api/v1/jobs/pinged/success").status_code == 200  # an external job
    assert wait_until(lambda: active(srv, "JobFailed", "gone"), timeout=8), \
        srv.get("/api/v1/alerts").text
    quiesce(srv)
    for name in ("gone", "kept", "pinged"):
        assert srv.post(f"/api/v1/jobs/{name}/resume").status_code == 200
    time.sleep(0.3)  # the resumed states reach the writer
    srv.stop()

    write_config(tmp_path, rules + jobs_yaml(defs[1:]))
    srv.start()
    row = state_row(srv, "gone")
    assert (row["last_status"], row["next_run_at"], row["kind"], row["command"]) == \
        ("removed", None, "command", "exit 3"), row
    assert status_row(srv, "gone")["status"] == "removed"
    later = (now_ms() + 3 * 86400_000) // 1000  # days on: a stale next_run_at would be missed
    r = srv.get("/api/v1/views/job_status", params={"now": later})
    assert r.status_code == 200, r.text
    view = {row["name"]: row for row in r.json()["rows"]}
    assert view["gone"]["status"] == "removed", view["gone"]
    assert view["pinged"]["status"] == "missed", view["pinged"]  # external: left alone

    # the alert it had resolves and does not come back
    assert wait_until(lambda: not active(srv, "JobFailed", "gone"), timeout=8), \
        srv.get("/api/v1/alerts").text
    time.sleep(2.5)  # two evaluations and more
    assert not active(srv, "JobFailed", "gone"), srv.get("/api/v1/alerts").text

    listed = jobs(srv)
    assert "gone" not in listed and {"kept", "pinged"} <= set(listed), sorted(listed)
    assert listed["pinged"]["kind"] == "external"
    r = srv.get("/api/v1/jobs", params={"all": "true"})
    assert r.status_code == 200, r.text
    every = {j["name"]: j for j in r.json()["jobs"]}
    assert (every["gone"]["status"], every["gone"]["next_run_at"]) == ("removed", None), every
    r = srv.get("/api/v1/jobs", params={"all": "yes"})
    assert r.status_code == 400 and "all" in r.json()["error"], r.text
    assert 'job="gone"' not in srv.get("/metrics").text

    cp = run_cli("jobs", "list", "--server", srv.url, "--format", "json")
    assert cp.returncode == 0, cp.stderr
    assert "gone" not in {j["name"] for j in json.loads(cp.stdout)["jobs"]}
    cp = run_cli("jobs", "list", "--all", "--server", srv.url)
    assert cp.returncode == 0 and "removed" in cp.stdout and "gone" in cp.stdout, cp.stdout
    cp = run_cli("jobs", "history", "gone", "--all", "--server", srv.url)
    assert cp.returncode == 2 and "--all" in cp.stderr, cp.stderr

    # its runs stay readable; it cannot be run or paused
    r = srv.get("/api/v1/jobs/gone/history")
    assert r.status_code == 200 and [x["status"] for x in r.json()["runs"]] == ["failed"], r.text
    assert run_now(srv, "gone").status_code == 404
    assert srv.post("/api/v1/jobs/gone/pause").status_code == 404
    time.sleep(1.5)
    assert len(runs(srv, "gone")) == 1

    # put back, it is a job again
    srv.stop()
    write_config(tmp_path, rules + jobs_yaml(defs))
    srv.start()
    assert jobs(srv)["gone"]["status"] != "removed"
    assert state_row(srv, "gone")["next_run_at"] is not None
    quiesce(srv)


def test_a_ping_for_a_removed_command_job_makes_it_an_external_job(server_factory, tmp_path):
    conf = write_config(tmp_path, jobs_yaml([cmd("reborn", "true", FAR)]))
    srv = server_factory("--config", conf)
    srv.stop()
    write_config(tmp_path, jobs_yaml([{"name": "other", "external": True}]))
    srv.start()
    assert state_row(srv, "reborn")["last_status"] == "removed"
    assert srv.post("/api/v1/jobs/reborn/success").status_code == 200
    listed = jobs(srv)
    assert listed["reborn"]["kind"] == "external" and listed["reborn"]["status"] == "ok", listed
    r = srv.get("/api/v1/jobs", params={"all": "true"})
    assert [j["name"] for j in r.json()["jobs"]].count("reborn") == 1, r.text
    assert wait_until(lambda: state_row(srv, "reborn")["kind"] == "external", timeout=3)
    quiesce(srv)


# =============================================================================================
# damaged data
# =============================================================================================


def test_a_builtin_failing_on_damaged_data_is_not_retried(server_factory, tmp_path, run_cli):
    archive = tmp_path / "archive"
    (archive / "api_usage").mkdir(parents=True)
    (archive / "api_usage" / "api_usage_p1.json").write_text("{not a manifest")
    conf = write_config(tmp_path, fast_job_rules(tmp_path, run_cli))
    srv = server_factory("--config", conf, "--set", f"storage.archive_dir={archive}",
                         env={"OPSDB_ALERTING_DEFAULT_RULES": None})
    assert run_now(srv, "archiving").status_code == 202
    row = wait_runs(srv, "archiving", 1)[0]
    assert row["status"] == "failed", row
    assert "cannot be read" in row["output"] and "not retried" in row["output"], row
    assert wait_until(lambda: "running_since" not in jobs(srv)["archiving"], timeout=5)
    j = jobs(srv)["archiving"]
    assert (j["status"], j["consecutive_failures"]) == ("failed", 1), j
    assert "retry_at" not in j, j  # a transient failure would be retried after a minute
    assert "not retried: the data is damaged" in srv.run_stderr()
    # the default rule fires for it as for any failed run
    assert wait_until(lambda: active(srv, "JobFailed", "archiving"), timeout=8), \
        srv.get("/api/v1/alerts").text
    quiesce(srv)


# =============================================================================================
# first runs of the interval builtins
# =============================================================================================

INTERVAL_S = 30  # storage.retention_interval and storage.compact_interval here
DELAY_MS = INTERVAL_S * 1000 // 10  # docs/jobs.md: after a tenth of the interval, and as much


def test_interval_builtins_run_soon_after_start_and_then_count_from_their_last_start(
        server_factory):
    started = now_ms()
    srv = server_factory("--set", f"storage.retention_interval={INTERVAL_S}s",
                         "--set", f"storage.compact_interval={INTERVAL_S}s")
    first = {}
    for name in ("retention", "compaction", "compression"):
        rows = wait_runs(srv, name, 1, timeout=2 * DELAY_MS / 1000 + 5)
        assert rows[0]["status"] == "ok", rows
        first[name] = rows[0]["ts"]
        assert DELAY_MS <= first[name] - started < 2 * DELAY_MS + 3000, \
            (name, first[name] - started)
    assert wait_until(lambda: all("running_since" not in jobs(srv)[n] for n in first), timeout=5)
    time.sleep(0.3)  # the states reach the writer
    srv.stop()

    restarted = now_ms()
    srv.start()
    listed = jobs(srv)
    for name, ts in first.items():
        # due one interval after the last start, not again at once, nor an interval from now
        assert ms_of(listed[name]["next_run_at"]) == ts + INTERVAL_S * 1000, (name, listed[name])
    time.sleep(2)
    for name, ts in first.items():
        assert runs(srv, name, f"ts >= {restarted}") == [], name
    quiesce(srv)


# =============================================================================================
# optimize gives free pages back; --vacuum converts an older file
# =============================================================================================

OLD_DAYS = 10  # the age of the rows that retention drops


def old_rows(n, marker):
    ts = now_ms() - OLD_DAYS * 86400_000
    return [{"ts": ts + i, "method": "GET", "endpoint": f"/{marker}/{i % 40}", "status_code": 200,
             "client_id": marker * 50} for i in range(n)]


def file_size(path):
    """The database file and its write-ahead log, in bytes."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal"))
               if p.exists())


def sqlite_pragma(path, name):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        con.close()


def test_the_optimize_job_gives_the_pages_of_dropped_data_back(server_factory, tmp_db):
    keep = ("--set", "storage.retention_interval=0", "--set", "jobs.optimize=off")
    srv = server_factory(*keep, "--set", "retention.api_usage=30d")
    for _ in range(4):
        r = srv.ingest("api_usage", old_rows(5000, "fill"))
        assert r.status_code == 200, r.text
    srv.stop()
    assert sqlite_pragma(tmp_db, "auto_vacuum") == 2  # incremental, from the first table on
    full = file_size(tmp_db)
    assert full > 4_000_000, full

    srv = server_factory(*keep, "--set", f"retention.api_usage={OLD_DAYS - 5}d")
    assert run_now(srv, "retention").status_code == 202
    dropped = wait_runs(srv, "retention", 1)[0]
    assert dropped["status"] == "ok" and "(20000 rows)" in dropped["output"], dropped
    assert run_now(srv, "optimize").status_code == 202
    row = wait_runs(srv, "optimize", 1, timeout=30)[0]
    assert row["status"] == "ok" and "given back" in row["output"], row
    shrunk = file_size(tmp_db)
    assert shrunk < full / 4, (full, shrunk, row["output"])
    assert srv.count("api_usage") == 0
    quiesce(srv)


def test_optimize_vacuum_converts_and_shrinks_an_older_file(server_factory, tmp_db, run_cli):
    # a file made before this opsdb asked for incremental vacuum: its first table came first
    con = sqlite3.connect(tmp_db)
    con.execute("CREATE TABLE made_before (x)")
    con.commit()
    con.close()
    assert run_cli("init", "--db", tmp_db).returncode == 0
    rows = "\n".join(json.dumps(r) for r in old_rows(20000, "old"))
    cp = run_cli("ingest", "api_usage", "-", "--db", tmp_db, input=rows)
    assert cp.returncode == 0, cp.stderr
    cp = run_cli("retention", "apply", "--db", tmp_db, "--set",
                 f"retention.api_usage={OLD_DAYS - 5}d")
    assert cp.returncode == 0 and "20000 rows" in cp.stdout, cp.stdout + cp.stderr
    assert sqlite_pragma(tmp_db, "auto_vacuum") == 0
    full = file_size(tmp_db)

    # optimize alone cannot shrink it, and says what can
    cp = run_cli("optimize", "--db", tmp_db)
    assert cp.returncode == 0, cp.stderr
    assert "opsdb optimize --vacuum" in cp.stdout, cp.stdout
    assert file_size(tmp_db) >= full * 0.9

    # refused while a server has the file open
    srv = server_factory("--set", "jobs.optimize=off")
    cp = run_cli("optimize", "--vacuum", "--db", tmp_db)
    assert cp.returncode == 1 and "live" in cp.stderr and str(srv.proc.pid) in cp.stderr, \
        cp.stderr
    srv.stop()

    cp = run_cli("optimize", "--vacuum", "--db", tmp_db)
    assert cp.returncode == 0, cp.stderr
    assert "needs that much free space" in cp.stderr, cp.stderr  # the space it needs, up front
    assert "optimize: copying" in cp.stderr, cp.stderr  # a progress line
    assert "vacuumed" in cp.stdout, cp.stdout
    assert sqlite_pragma(tmp_db, "auto_vacuum") == 2
    assert file_size(tmp_db) < full / 4, (full, file_size(tmp_db))
    assert not list(tmp_db.parent.glob("*.vacuum-tmp*"))

    # the converted file serves as before, and from now on optimize gives pages back
    srv = server_factory("--set", "jobs.optimize=off", "--set", "storage.retention_interval=0",
                         "--set", f"retention.api_usage={OLD_DAYS + 5}d")
    assert srv.count("made_before") == 0
    r = srv.ingest("api_usage", old_rows(10000, "new"))
    assert r.status_code == 200, r.text
    srv.stop()
    filled = file_size(tmp_db)
    cp = run_cli("retention", "apply", "--db", tmp_db, "--set",
                 f"retention.api_usage={OLD_DAYS - 5}d")
    assert cp.returncode == 0, cp.stderr
    cp = run_cli("optimize", "--db", tmp_db)
    assert cp.returncode == 0 and "given back" in cp.stdout, cp.stdout
    assert file_size(tmp_db) < filled / 2, (filled, file_size(tmp_db))


def test_optimize_refuses_bad_arguments_and_a_missing_database(run_cli, tmp_path):
    cp = run_cli("optimize", "--full")
    assert cp.returncode == 2 and "--full" in cp.stderr, cp.stderr
    cp = run_cli("optimize", "--vacuum", "--db", tmp_path / "none.db")
    assert cp.returncode == 1 and "does not exist" in cp.stderr, cp.stderr
    assert not (tmp_path / "none.db").exists()


# =============================================================================================
# cancelling a run
# =============================================================================================


def cancel(srv, name):
    return srv.post(f"/api/v1/jobs/{name}/cancel")


def test_cancelling_a_command_run_stops_its_process_group(server_factory, tmp_path, run_cli):
    pid_file = tmp_path / "child.pid"
    srv = start_jobs(server_factory, [
        cmd("longrun", f"sleep 30 & echo $! > {pid_file}; wait", FAR, retries=2),
        {"name": "elsewhere", "external": True}])
    for attempt in (1, 2):
        pid_file.unlink(missing_ok=True)
        assert run_now(srv, "longrun").status_code == 202
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=5)
        child = int(pid_file.read_text())
        if attempt == 1:
            r = cancel(srv, "longrun")
            assert r.status_code == 202 and r.json() == {"job": "longrun", "cancelling": True}, \
                r.text
        else:
            cp = run_cli("jobs", "cancel", "longrun", "--server", srv.url)
            assert cp.returncode == 0, cp.stderr
        rows = wait_runs(srv, "longrun", attempt, timeout=10)
        assert rows[-1]["status"] == "cancelled", rows
        assert wait_until(lambda: not pid_alive(child), timeout=8), "the command's child lives on"
    j = jobs(srv)["longrun"]
    # a cancel is neither a failure nor retried
    assert (j["status"], j["consecutive_failures"]) == ("cancelled", 0), j
    assert "retry_at" not in j and "running_since" not in j, j
    assert status_row(srv, "longrun")["status"] == "cancelled"
    assert 'opsdb_job_runs_total{job="longrun",status="cancelled"} 2' in srv.get("/metrics").text

    # nothing to cancel: 409; no such job: 404; an external job runs elsewhere: 400
    r = cancel(srv, "longrun")
    assert r.status_code == 409 and "not running" in r.json()["error"], r.text
    assert cancel(srv, "nosuchjob").status_code == 404
    r = cancel(srv, "elsewhere")
    assert r.status_code == 400 and "external" in r.json()["error"], r.text
    cp = run_cli("jobs", "cancel", "longrun", "--server", srv.url)
    assert cp.returncode == 1 and "not running" in cp.stderr, cp.stderr
    quiesce(srv)


SERIES = 6000  # enough that a compaction pass takes many steps


def test_cancelling_a_builtin_run_stops_it_between_its_steps(server_factory):
    srv = server_factory("--set", "jobs.compaction=off")  # runs only when asked
    now = now_ms()
    lines = [f"upkeep,host=h{h} value={k} {now - day * 86400_000 + k * 60_000}"
             for day in (2, 3) for h in range(SERIES) for k in range(3)]
    for i in range(0, len(lines), 20_000):
        r = srv.post("/write", params={"precision": "ms"}, data="\n".join(lines[i:i + 20_000]))
        assert r.status_code == 204, r.text

    assert run_now(srv, "compaction").status_code == 202
    r = cancel(srv, "compaction")
    assert r.status_code == 202, r.text
    row = wait_runs(srv, "compaction", 1, timeout=30)[0]
    assert row["status"] == "cancelled", row
    assert "cancelled after" in row["output"] and "what they did is kept" in row["output"], row
    visited = int(re.search(r"(\d+) series visited", row["output"]).group(1))
    assert visited < SERIES, row["output"]
    j = jobs(srv)["compaction"]
    assert (j["status"], j["consecutive_failures"]) == ("cancelled", 0) and "retry_at" not in j, j

    # the next run finishes the pass where the cancelled one stopped
    assert run_now(srv, "compaction").status_code == 202
    rows = wait_runs(srv, "compaction", 2, timeout=120)
    assert rows[-1]["status"] == "ok", rows
    rest = int(re.search(r"(\d+) series visited", rows[-1]["output"]).group(1))
    assert visited + rest == SERIES, rows
    quiesce(srv)
