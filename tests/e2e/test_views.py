"""The seven views, checked against values computed independently in Python.

Every view gets a crafted, randomised (but seeded) input, ingested through the HTTP API as NDJSON
with epoch-millisecond timestamps around a fixed reference time REF (whole seconds, 30 minutes in
the past so that rows "after now" are still accepted by ingest.max_future). Each view is queried
with ?now=REF and its numeric columns are compared with what this file computes from the same
rows. The definitions that matter, as read from src/store/sqlite_views.c:

* window: a row is in the window when now - window < ts <= now (a row exactly at now - window is
  out, a row exactly at now is in). Views without a window (system_health, active_alerts,
  job_status) still ignore rows after now.
* percentiles: linear interpolation between closest ranks, rank = p/100 * (n - 1) over the sorted
  values (numpy's default); an api_usage row with count = k stands for k requests, so it is
  repeated k times. NULL latencies are left out of the percentiles and the mean but the row
  still counts as requests.
* rounding: requests_per_s and throughput_per_s to 3 decimals, rates to 6, pipeline
  mean_duration_ms to 1, handler latency_avg_ms to 3; api latency_avg_ms is not rounded. Rounded
  values are compared to the exact value within half a unit of the last decimal.
* system_health: per host/component, the latest sample (ts <= now) of every series; cpu, memory
  and disk are the max over the series of metric cpu_usage / memory_usage / disk_usage (e.g.
  several mounts); last_seen is the latest of those samples over all series (any metric),
  series the number of series with a sample <= now. status: stale when now - last_seen >
  120000 (2m), else critical when cpu >= 95 or memory >= 95 or disk >= 95, else warning when
  cpu >= 80 or memory >= 85 or disk >= 85, else ok (NULL metrics never trigger).
* error_summary: per fingerprint in the window (default 24h); count_1h counts ts > now - 1h;
  error_type and component are max() of the text, level the most severe one; first_seen is the earliest row of the
  fingerprint at any time; sample_message the message of its latest row <= now; hosts the
  number of distinct hosts in the window.
* pipeline_health: runs are (pipeline, run_id) groups of the rows in the window (default 24h); a
  run failed if any row failed, succeeded if one row succeeded and none failed; success_rate =
  succeeded runs / finished (succeeded or failed) runs, NULL when none finished; a run's
  duration is max(finished_at) - min(started_at), else max(duration_ms); mean_duration_ms is the
  mean over finished runs. last_status, last_success and freshness_ms look at all rows <= now,
  not only the window.
* handler_performance: sums in the window (default 15m); latency_avg_ms is the invocation
  weighted mean of duration_ms_avg (rows without it left out); latency_p95_ms the max interval
  p95; queue_depth the value of the latest row <= now at any time; queue_depth_max the window's.
* active_alerts: an alert's latest transition <= now when its state is not 'resolved'; since
  is that transition's ts, first_seen the alert's first transition.
* job_status: paused when disabled; else running when the latest run <= now is running; else
  missed when next_run_at + grace_s < now; else failed (latest run failed/timeout), missed, ok;
  else the job's own last_status, else 'never'.
"""

import csv
import io
import json
import math
import random
import time

import pytest
import requests


SEED = 20240611
VIEWS = ["system_health", "api_performance", "error_summary", "pipeline_health",
         "handler_performance", "active_alerts", "alert_quality", "job_status",
         "collection_status"]


# ---- helpers -------------------------------------------------------------------------------


def percentile(values, p):
    """numpy.percentile(values, p) with the default 'linear' method."""
    v = sorted(values)
    if not v:
        return None
    rank = p / 100.0 * (len(v) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (rank - lo)


def sum_or_none(values):
    vals = [v for v in values if v is not None]
    return sum(vals) if vals else None


def max_or_none(values):
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def min_or_none(values):
    vals = [v for v in values if v is not None]
    return min(vals) if vals else None


def check_number(where, got, want, digits=None):
    """Exact for integers and NULL; relative 1e-9 for reals; rounded values within half a unit."""
    if want is None or got is None:
        assert got == want, f"{where}: got {got!r}, want {want!r}"
        return
    assert isinstance(got, (int, float)), f"{where}: got {got!r} (not a number), want {want!r}"
    if digits is not None:
        tol = 0.5 * 10 ** -digits + 1e-9 * max(1.0, abs(want))
        assert abs(got - want) <= tol, f"{where}: got {got!r}, want {want!r} rounded to {digits}"
        assert round(got, digits) == got, f"{where}: {got!r} is not rounded to {digits} decimals"
    elif isinstance(want, int) and not isinstance(want, bool):
        assert got == want, f"{where}: got {got!r}, want {want!r}"
    else:
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), \
            f"{where}: got {got!r}, want {want!r}"


def compare_rows(view, got_rows, want, key, spec):
    """want: {key tuple: {column: value}}; spec: {column: digits, None, "text", "json" or
    "sketch" (a percentile merged from latency sketches: within 1% of the exact value)}."""
    got = {}
    for r in got_rows:
        k = tuple(r[c] for c in key)
        assert k not in got, f"{view}: duplicate row for {k}"
        got[k] = r
    assert sorted(got) == sorted(want), \
        f"{view}: rows {sorted(got)} differ from expected {sorted(want)}"
    for k, w in want.items():
        for col, digits in spec.items():
            where = f"{view}[{k}].{col}"
            if digits == "text":
                assert got[k][col] == w[col], f"{where}: got {got[k][col]!r}, want {w[col]!r}"
            elif digits == "json":
                g = got[k][col]
                assert (json.loads(g) if g is not None else None) == w[col], where
            elif digits == "sketch":  # merged latency sketches: within 1% of the exact value
                g = got[k][col]
                assert (g is None) == (w[col] is None), f"{where}: got {g!r}, want {w[col]!r}"
                if g is not None:
                    assert abs(g - w[col]) <= 0.01 * abs(w[col]) + 1e-9, \
                        f"{where}: got {g!r}, want {w[col]!r} within 1%"
            else:
                check_number(where, got[k][col], w[col], digits)


def in_window(ts, now_ms, window_ms):
    return now_ms - window_ms < ts <= now_ms


class Clock:
    """Hands out distinct timestamps so 'latest row' is never a tie."""

    def __init__(self, rng):
        self.rng = rng
        self.used = set()

    def pick(self, lo_ms, hi_ms):
        for _ in range(1000):
            t = self.rng.randint(lo_ms, hi_ms)
            if t not in self.used:
                self.used.add(t)
                return t
        raise AssertionError("no free timestamp")

    def take(self, t):
        self.used.add(t)
        return t


# ---- the reference time and the input ------------------------------------------------------

REF_S = (int(time.time()) // 60) * 60 - 1800  # whole minute, 30 minutes ago (see the docstring)
NOW = REF_S * 1000
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR


def gen_api_usage(rng, clock):
    rows = []
    services = ["checkout", "search"]
    endpoints = ["/a", "/b", "/c/:id"]
    codes = [200, 200, 200, 201, 204, 301, 400, 404, 429, 500, 503]
    for _ in range(600):
        row = {
            "ts": clock.pick(NOW - 70 * MIN, NOW + 5 * MIN),
            "service": rng.choice(services),
            "method": rng.choice(["GET", "POST"]),
            "endpoint": rng.choice(endpoints),
            "status_code": rng.choice(codes),
        }
        if rng.random() < 0.9:
            row["latency_ms"] = round(rng.lognormvariate(3, 1), 3)
        if rng.random() < 0.8:
            row["request_bytes"] = rng.randint(0, 4000)
        row["response_bytes"] = rng.randint(0, 90000)
        if rng.random() < 0.25:
            row["count"] = rng.randint(2, 6)
        elif rng.random() < 0.5:
            row["count"] = 1  # otherwise left out: the default is 1
        rows.append(row)
    # window boundaries: exactly at now - 15m is out, exactly at now is in (also for 1h)
    for ts, lat in ((NOW - 15 * MIN, 1e6), (NOW - HOUR, 2e6), (clock.take(NOW), 7.5)):
        rows.append({"ts": ts, "service": "edge", "method": "GET", "endpoint": "/boundary",
                     "status_code": 200, "latency_ms": lat, "count": 3})
    # a group with no latency and no request bytes at all: NULL percentiles, mean and sum
    rows.append({"ts": clock.pick(NOW - 5 * MIN, NOW), "service": "edge", "method": "GET",
                 "endpoint": "/nolatency", "status_code": 502})
    return rows


def expect_api_performance(rows, window_ms=15 * MIN, now_ms=NOW):
    groups = {}
    for r in rows:
        if in_window(r["ts"], now_ms, window_ms):
            groups.setdefault((r.get("service", ""), r["endpoint"]), []).append(r)
    out = {}
    for k, g in groups.items():
        cnt = [r.get("count", 1) for r in g]
        total = sum(cnt)
        lat = [x for r in g if r.get("latency_ms") is not None
               for x in [r["latency_ms"]] * r.get("count", 1)]
        out[k] = {
            "requests": total,
            "requests_per_s": total * 1000.0 / window_ms,
            "rate_4xx": sum(c for r, c in zip(g, cnt) if 400 <= r["status_code"] <= 499) / total,
            "rate_5xx": sum(c for r, c in zip(g, cnt) if r["status_code"] >= 500) / total,
            "latency_p50_ms": percentile(lat, 50),
            "latency_p95_ms": percentile(lat, 95),
            "latency_p99_ms": percentile(lat, 99),
            "latency_avg_ms": sum(lat) / len(lat) if lat else None,
            "request_bytes": sum_or_none(r.get("request_bytes") for r in g),
            "response_bytes": sum_or_none(r.get("response_bytes") for r in g),
            "last_seen": max(r["ts"] for r in g),
        }
    return out


API_SPEC = {"requests": None, "requests_per_s": 3, "rate_4xx": 6, "rate_5xx": 6,
            "latency_p50_ms": "sketch", "latency_p95_ms": "sketch", "latency_p99_ms": "sketch",
            "latency_avg_ms": None, "request_bytes": None, "response_bytes": None,
            "last_seen": None}
LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "fatal"]


def gen_error_logs(rng, clock):
    rows = []
    hosts = ["web-1", "web-2", "db-1", ""]
    for f in range(12):
        fp = f"fp{f:04d}"
        for i in range(rng.randint(3, 40)):
            row = {"ts": clock.pick(NOW - 30 * HOUR, NOW + 10 * MIN),
                   "service": "svc", "component": rng.choice(["api", "worker", "db"]),
                   "host": rng.choice(hosts), "level": rng.choice(LEVELS),
                   "error_type": rng.choice(["ValueError", "KeyError", "Timeout"]),
                   "message": f"message {fp} #{i} {rng.randint(0, 10**6)}", "fingerprint": fp}
            if rng.random() < 0.3:
                del row["host"]  # default ''
            rows.append(row)
    # boundaries: at now - 24h out of the window (but still first_seen), at now - 1h in the
    # window but not in count_1h, at now in both
    for ts in (NOW - DAY, NOW - HOUR, NOW):
        rows.append({"ts": clock.take(ts), "component": "edge", "host": f"h{ts % 7}",
                     "level": "error", "error_type": "Edge", "message": f"edge at {ts}",
                     "fingerprint": "fpedge"})
    # no fingerprint given: derived from type, component and message, so one group
    for i in range(5):
        rows.append({"ts": clock.pick(NOW - 2 * HOUR, NOW), "component": "derived",
                     "level": "warning", "error_type": "DerivedError",
                     "message": "disk full on /var"})
    return rows


def expect_error_summary(rows, window_ms=DAY, now_ms=NOW):
    def fp_of(r):
        return r.get("fingerprint", "derived:" + r["error_type"])

    out = {}
    for fp in {fp_of(r) for r in rows}:
        every = [r for r in rows if fp_of(r) == fp]
        g = [r for r in every if in_window(r["ts"], now_ms, window_ms)]
        if not g:
            continue
        latest = max((r for r in every if r["ts"] <= now_ms), key=lambda r: r["ts"])
        out[fp] = {
            "error_type": max(r.get("error_type", "") for r in g),
            "component": max(r.get("component", "") for r in g),
            "level": max((r["level"] for r in g), key=LEVELS.index),
            "count_1h": sum(1 for r in g if r["ts"] > now_ms - HOUR),
            "count_window": len(g),
            "first_seen": min(r["ts"] for r in every),
            "last_seen": max(r["ts"] for r in g),
            "sample_message": latest["message"],
            "hosts": len({r.get("host", "") for r in g}),
        }
    return out


ERR_SPEC = {"error_type": "text", "component": "text", "level": "text", "count_1h": None,
            "count_window": None, "first_seen": None, "last_seen": None,
            "sample_message": "text", "hosts": None}


def gen_pipeline_status(rng, clock):
    rows = []
    for p in range(5):
        name = f"pipe{p}"
        for run in range(rng.randint(4, 14)):
            start = clock.pick(NOW - 28 * HOUR, NOW + 2 * MIN)
            rid = f"{name}-r{run}"
            rows.append({"ts": clock.take(start), "pipeline": name, "run_id": rid,
                         "status": "queued"})
            t = start + rng.randint(1, 5000)
            rows.append({"ts": clock.take(t), "pipeline": name, "run_id": rid,
                         "status": "running", "started_at": t})
            if p == 4:
                continue  # pipe4 never finishes a run: success_rate and freshness are NULL
            # a failing stage makes the whole run failed even when the run row succeeds later
            if rng.random() < 0.2:
                rows.append({"ts": clock.take(t + 100), "pipeline": name, "run_id": rid,
                             "stage": "load", "status": "failed", "message": "stage failed"})
            end = t + rng.randint(1000, 40 * MIN)
            fate = rng.random()
            if fate < 0.15:
                continue  # still running
            row = {"ts": clock.take(end), "pipeline": name, "run_id": rid,
                   "status": "succeeded" if fate < 0.75 else "failed",
                   "records_in": rng.randint(0, 10**6)}
            how = rng.random()
            if how < 0.6:
                row["finished_at"] = end
            elif how < 0.9:
                row["duration_ms"] = rng.randint(0, 10**6)  # no finished_at: duration_ms
            rows.append(row)
    return rows


def expect_pipeline_health(rows, window_ms=DAY):
    out = {}
    for name in sorted({r["pipeline"] for r in rows}):
        every = [r for r in rows if r["pipeline"] == name and r["ts"] <= NOW]
        runs = {}
        for r in rows:
            if r["pipeline"] == name and in_window(r["ts"], NOW, window_ms):
                runs.setdefault(r["run_id"], []).append(r)
        if not runs:
            continue
        finished, durations, succeeded, failed = 0, [], 0, 0
        for g in runs.values():
            f = any(r["status"] == "failed" for r in g)
            s = any(r["status"] == "succeeded" for r in g)
            fin, st = max_or_none(r.get("finished_at") for r in g), \
                min_or_none(r.get("started_at") for r in g)
            dur = fin - st if fin is not None and st is not None else \
                max_or_none(r.get("duration_ms") for r in g)
            failed += f
            succeeded += s and not f
            if s or f:
                finished += 1
                if dur is not None:
                    durations.append(dur)
        successes = [r["ts"] for r in every if r["status"] == "succeeded"]
        last_success = max(successes) if successes else None
        out[(name,)] = {
            "last_status": max(every, key=lambda r: r["ts"])["status"],
            "last_success": last_success,
            "runs": len(runs),
            "failed_runs": failed,
            "success_rate": succeeded / finished if finished else None,
            "mean_duration_ms": sum(durations) / len(durations) if durations else None,
            "freshness_ms": NOW - last_success if last_success is not None else None,
        }
    return out


PIPE_SPEC = {"last_status": "text", "last_success": None, "runs": None, "failed_runs": None,
             "success_rate": 6, "mean_duration_ms": 1, "freshness_ms": None}


def gen_handler_metrics(rng, clock):
    rows = []
    for h in range(4):
        for comp in ["c1", "c2"]:
            for _ in range(rng.randint(10, 60)):
                inv = rng.randint(0, 500)
                row = {"ts": clock.pick(NOW - 40 * MIN, NOW + 4 * MIN), "handler": f"h{h}",
                       "component": comp, "host": "node", "invocations": inv}
                if rng.random() < 0.8:
                    row["errors"] = rng.randint(0, inv)
                if rng.random() < 0.5:
                    row["retries"] = rng.randint(0, 20)
                if rng.random() < 0.85:
                    row["duration_ms_avg"] = round(rng.uniform(0.1, 900), 3)
                if rng.random() < 0.85:
                    row["duration_ms_p95"] = round(rng.uniform(1, 2000), 3)
                if rng.random() < 0.8:
                    row["queue_depth"] = rng.randint(0, 10000)
                rows.append(row)
    for ts, inv in ((NOW - 15 * MIN, 1000), (NOW, 7)):
        rows.append({"ts": clock.take(ts), "handler": "edge", "invocations": inv, "errors": 1,
                     "duration_ms_avg": 5.0, "queue_depth": inv})
    # only zero invocations: error_rate and latency_avg_ms are NULL (no division by zero)
    rows.append({"ts": clock.pick(NOW - 5 * MIN, NOW), "handler": "idle", "invocations": 0,
                 "duration_ms_avg": 1.0})
    return rows


def expect_handler_performance(rows, window_ms=15 * MIN, now_ms=NOW):
    groups = {}
    for r in rows:
        if in_window(r["ts"], now_ms, window_ms):
            groups.setdefault((r["handler"], r.get("component", "")), []).append(r)
    out = {}
    for k, g in groups.items():
        inv = sum(r["invocations"] for r in g)
        errors = sum(r.get("errors", 0) for r in g)
        with_avg = [r for r in g if r.get("duration_ms_avg") is not None]
        wsum = sum(r["invocations"] for r in with_avg)
        latest = max((r for r in rows if (r["handler"], r.get("component", "")) == k
                      and r["ts"] <= now_ms), key=lambda r: r["ts"])
        out[k] = {
            "invocations": inv,
            "throughput_per_s": inv * 1000.0 / window_ms,
            "errors": errors,
            "error_rate": errors / inv if inv else None,
            "retries": sum(r.get("retries", 0) for r in g),
            "latency_avg_ms": (sum(r["duration_ms_avg"] * r["invocations"] for r in with_avg)
                               / wsum) if wsum else None,
            "latency_p95_ms": max_or_none(r.get("duration_ms_p95") for r in g),
            "queue_depth": latest.get("queue_depth"),
            "queue_depth_max": max_or_none(r.get("queue_depth") for r in g),
            "last_seen": max(r["ts"] for r in g),
        }
    return out


HANDLER_SPEC = {"invocations": None, "throughput_per_s": 3, "errors": None, "error_rate": 6,
                "retries": None, "latency_avg_ms": 3, "latency_p95_ms": None,
                "queue_depth": None, "queue_depth_max": None, "last_seen": None}
ALERT_STATES = ["pending", "firing", "acknowledged", "escalated", "suppressed", "resolved"]


def gen_alert_history(rng, clock):
    rows = []
    for a in range(20):
        aid = f"alert-{a}"
        for _ in range(rng.randint(1, 6)):
            row = {"ts": clock.pick(NOW - 6 * HOUR, NOW + 10 * MIN), "alert_id": aid,
                   "rule": f"rule{a % 4}", "fingerprint": f"afp{a}",
                   "state": rng.choice(ALERT_STATES), "value": round(rng.uniform(0, 100), 4),
                   "labels": {"host": f"h{a}", "team": rng.choice(["ops", "db"])},
                   "summary": f"alert {a} summary", "escalation_level": rng.randint(0, 3),
                   "notified": rng.choice([True, False])}
            if rng.random() < 0.3:
                row["severity"] = rng.choice(["info", "critical", "page"])  # else 'warning'
            rows.append(row)
    # a transition exactly at now counts; one after now does not hide the one before
    rows.append({"ts": clock.take(NOW), "alert_id": "edge-now", "rule": "edge",
                 "state": "firing", "value": 1.0})
    rows.append({"ts": clock.take(NOW - MIN), "alert_id": "edge-later", "rule": "edge",
                 "state": "firing", "value": 2.0})
    rows.append({"ts": clock.take(NOW + MIN), "alert_id": "edge-later", "rule": "edge",
                 "state": "resolved", "value": 0.0})
    return rows


def expect_active_alerts(rows):
    out = {}
    for aid in {r["alert_id"] for r in rows}:
        every = [r for r in rows if r["alert_id"] == aid]
        upto = [r for r in every if r["ts"] <= NOW]
        if not upto:
            continue
        last = max(upto, key=lambda r: r["ts"])
        if last["state"] == "resolved":
            continue
        out[(aid,)] = {
            "rule": last["rule"], "fingerprint": last.get("fingerprint"),
            "severity": last.get("severity", "warning"), "state": last["state"],
            "value": last.get("value"), "labels": last.get("labels"),
            "summary": last.get("summary"), "escalation_level": last.get("escalation_level", 0),
            "notified": int(last.get("notified", False)), "since": last["ts"],
            "first_seen": min(r["ts"] for r in every),
        }
    return out


ALERT_SPEC = {"rule": "text", "fingerprint": "text", "severity": "text", "state": "text",
              "value": None, "labels": "json", "summary": "text", "escalation_level": None,
              "notified": None, "since": None, "first_seen": None}


def gen_jobs(rng, clock):
    """scheduled_jobs rows (one per name) and job_runs, covering every branch of the status."""
    jobs, runs = [], []
    cases = [
        # name, enabled, next_run_at offset (None: NULL), grace_s, last_status, run statuses
        ("paused", False, -DAY, 60, "ok", ["running"]),
        ("running", True, -DAY, 60, None, ["ok", "running"]),
        ("overdue", True, -10 * MIN, 300, "ok", ["ok"]),        # 10m late, grace 5m: missed
        ("in-grace", True, -4 * MIN, 300, None, ["ok"]),         # 4m late, grace 5m: ok
        ("failed", True, 5 * MIN, 300, None, ["ok", "failed"]),
        ("timeout", True, 5 * MIN, 300, None, ["timeout"]),
        ("run-missed", True, None, 300, None, ["missed"]),
        ("ok", True, HOUR, 300, "failed", ["failed", "ok"]),
        ("future-run", True, HOUR, 300, None, ["ok", "@failed"]),  # '@': after now, ignored
        ("own-status", True, None, 300, "failed", []),            # no runs: its last_status
        ("never", True, None, 300, None, []),
        ("no-grace", True, -1000, 0, None, ["ok"]),              # 1 s late, grace 0: missed
        # jobs opsdb runs itself are missed 5 minutes late (opsdb was down), whatever grace_s
        ("cmd-late", True, -4 * MIN, 0, None, ["ok"]),
        ("cmd-down", True, -6 * MIN, 0, None, ["ok"]),
    ]
    external = {"overdue", "in-grace", "no-grace"}  # grace_s is how late their pings may be
    for name, enabled, next_off, grace, last_status, statuses in cases:
        kind = "external" if name in external else "command"
        job = {"ts": NOW - DAY, "name": name, "kind": kind, "schedule": "@every 1h",
               **({"command": "true"} if kind == "command" else {}), "grace_s": grace,
               "enabled": enabled,
               "last_run_at": NOW - 2 * DAY, "last_duration_ms": 1234,
               "consecutive_failures": rng.randint(0, 3)}
        if next_off is not None:
            job["next_run_at"] = NOW + next_off
        if last_status is not None:
            job["last_status"] = last_status
        jobs.append(job)
        t = NOW - 3 * HOUR
        for st in statuses:
            after = st.startswith("@")
            t = clock.pick(NOW + MIN, NOW + 5 * MIN) if after else clock.pick(t + 1, t + HOUR)
            run = {"ts": t, "job": name, "run_id": f"{name}-{t}", "status": st.lstrip("@"),
                   "duration_ms": rng.randint(0, 10**5)}
            if rng.random() < 0.7:
                run["exit_code"] = rng.randint(0, 2)
            runs.append(run)
    return jobs, runs


def expect_job_status(jobs, runs):
    out = {}
    for j in jobs:
        mine = [r for r in runs if r["job"] == j["name"] and r["ts"] <= NOW]
        lr = max(mine, key=lambda r: r["ts"]) if mine else {}
        lst = lr.get("status")
        nxt = j.get("next_run_at")
        if not j.get("enabled", True):
            status = "paused"
        elif lst == "running" or j.get("last_status") == "running":
            status = "running"
        elif nxt is not None and nxt + (j.get("grace_s", 300) * 1000 if j["kind"] == "external"
                                        else 300_000) < NOW:
            status = "missed"  # a job opsdb runs itself: 5 minutes late (opsdb was down)
        elif lst in ("failed", "timeout"):
            status = "failed"
        elif lst in ("missed", "ok"):
            status = lst
        else:
            status = j.get("last_status") or "never"
        out[(j["name"],)] = {
            "status": status, "enabled": int(j.get("enabled", True)),
            "last_run_at": lr.get("ts", j.get("last_run_at")),
            "last_duration_ms": lr.get("duration_ms", j.get("last_duration_ms")),
            "last_result": lst, "last_exit_code": lr.get("exit_code"), "next_run_at": nxt,
            "consecutive_failures": j.get("consecutive_failures", 0),
            "kind": j["kind"], "schedule": j.get("schedule"),
            "alert_after": j.get("alert_after", 1),
        }
    return out


JOB_SPEC = {"status": "text", "enabled": None, "last_run_at": None, "last_duration_ms": None,
            "last_result": "text", "last_exit_code": None, "next_run_at": None,
            "consecutive_failures": None, "kind": "text", "schedule": "text",
            "alert_after": None}


HEALTH_DEFAULTS = {"cpu_warning": 80, "cpu_critical": 95, "memory_warning": 85,
                   "memory_critical": 95, "disk_warning": 85, "disk_critical": 95,
                   "stale_after_ms": 2 * MIN, "cpu_metric": "cpu_usage",
                   "memory_metric": "memory_usage", "disk_metric": "disk_usage"}


def gen_system_metrics(rng):
    """Samples per series; the latest sample <= now of each crafted host hits a threshold (or
    the stale limit) exactly, and samples after now must be ignored."""
    mounts = [{"mount": "/"}, {"mount": "/var"}]
    # host: (component, cpu, memory, [disk per mount], latest-sample offset from now)
    crafted = {
        "ok-edge": ("", 79.999, 84.999, [84.999, 10.0], -5000),
        "cpu-warn": ("", 80.0, 10.0, [10.0, 10.0], -5000),
        "mem-warn": ("web", 10.0, 85.0, [10.0, 10.0], -5000),
        "disk-warn": ("", 10.0, 10.0, [50.0, 85.0], -5000),  # the worst mount decides
        "cpu-crit": ("", 95.0, 10.0, [10.0, 10.0], -5000),
        "mem-crit": ("db", 94.9, 95.0, [10.0, 10.0], -5000),
        "disk-crit": ("", 10.0, 10.0, [95.0, 1.0], -5000),
        "fresh-edge": ("", 99.0, 10.0, [10.0, 10.0], -2 * MIN),      # age == 2m: not stale
        "stale-edge": ("", 99.0, 10.0, [10.0, 10.0], -2 * MIN - 1),  # age > 2m: stale
        "at-now": ("", 96.0, 10.0, [10.0, 10.0], 0),
        "cpu-60": ("", 60.0, 10.0, [10.0, 10.0], -5000),  # warning when cpu_warning is 50
    }
    for i in range(12):
        crafted[f"host-{i:02d}"] = (rng.choice(["", "web", "db"]), round(rng.uniform(0, 100), 3),
                                    round(rng.uniform(0, 100), 3),
                                    [round(rng.uniform(0, 100), 3) for _ in mounts],
                                    -rng.randint(0, 5 * MIN))
    series = {}  # (host, component, metric, labels json) -> {ts: value}

    def add(key, ts, value):
        series.setdefault(key, {})[ts] = value

    for host, (comp, cpu, mem, disks, off) in crafted.items():
        last = NOW + off
        plan = [("cpu_usage", {}, cpu), ("memory_usage", {}, mem), ("load1", {}, 1.5)]
        plan += [("disk_usage", m, d) for m, d in zip(mounts, disks)]
        for metric, labels, value in plan:
            key = (host, comp, metric, json.dumps(labels, sort_keys=True))
            for _ in range(rng.randint(2, 8)):  # older samples with any value
                add(key, rng.randint(NOW - 30 * MIN, last - 1), round(rng.uniform(0, 100), 3))
            add(key, last, value)
            for _ in range(rng.randint(0, 3)):  # after now: ignored
                add(key, rng.randint(NOW + 1, NOW + 4 * MIN), 100.0)
    # a host that reports only an unrelated metric: cpu, memory and disk are NULL, status ok
    add(("only-load", "", "load1", "{}"), NOW - 1000, 0.5)
    # samples only after now: the host does not appear at all
    add(("future-host", "", "cpu_usage", "{}"), NOW + MIN, 50.0)
    rows = []
    for (host, comp, metric, labels), points in series.items():
        for ts, value in points.items():
            row = {"ts": ts, "host": host, "metric": metric, "value": value,
                   "labels": json.loads(labels)}
            if comp:
                row["component"] = comp  # else the default ''
            rows.append(row)
    rng.shuffle(rows)
    return rows


def expect_system_health(rows, th=None):
    th = dict(HEALTH_DEFAULTS, **(th or {}))
    latest = {}  # series -> (ts, value) of the latest sample <= now
    for r in rows:
        if r["ts"] > NOW:
            continue
        key = (r["host"], r.get("component", ""), r["metric"], json.dumps(r["labels"]))
        if key not in latest or r["ts"] > latest[key][0]:
            latest[key] = (r["ts"], r["value"])
    out = {}
    for (host, comp, metric, _), (ts, value) in latest.items():
        o = out.setdefault((host, comp), {"cpu": None, "memory": None, "disk": None,
                                          "last_seen": ts, "series": 0})
        o["series"] += 1
        o["last_seen"] = max(o["last_seen"], ts)
        for name in ("cpu", "memory", "disk"):
            if metric == th[name + "_metric"]:
                o[name] = value if o[name] is None else max(o[name], value)

    def ge(v, limit):
        return v is not None and v >= limit

    for o in out.values():
        o["age_ms"] = NOW - o["last_seen"]
        if o["age_ms"] > th["stale_after_ms"]:
            o["status"] = "stale"
        elif (ge(o["cpu"], th["cpu_critical"]) or ge(o["memory"], th["memory_critical"])
              or ge(o["disk"], th["disk_critical"])):
            o["status"] = "critical"
        elif (ge(o["cpu"], th["cpu_warning"]) or ge(o["memory"], th["memory_warning"])
              or ge(o["disk"], th["disk_warning"])):
            o["status"] = "warning"
        else:
            o["status"] = "ok"
    return out


HEALTH_SPEC = {"cpu": None, "memory": None, "disk": None, "last_seen": None, "age_ms": None,
               "series": None, "status": "text"}


# ---- the database under test ---------------------------------------------------------------


def post_ndjson(srv, table, rows):
    body = "".join(json.dumps(r) + "\n" for r in rows)
    r = srv.post(f"/api/v1/ingest/{table}", data=body.encode(),
                 headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, f"ingest {table}: {r.status_code} {r.text[:2000]}"
    assert r.json()["rows"] == len(rows), r.text


def gen_collection(rng):
    """Sources of collection_sources and their gaps around NOW: ok, silent, not yet seen (after
    NOW), with gaps inside, across and outside the 24 h and 30 d windows and one after NOW."""
    sec = 1000
    sources = [
        # (source, first_seen, last_seen, interval_ms, silence_ms)
        ("agent:web-1", NOW - 40 * DAY, NOW - 5 * sec, 10_000, 30_000),
        ("tail:web-1:/var/log/a.log", NOW - 2 * HOUR, NOW - 10 * MIN, 10_000, 30_000),
        ("syslog:router-1", NOW - 3 * DAY, NOW - MIN, 0, 300_000),
        ("scrape:http://db-1:9100/metrics", NOW - 20 * DAY, NOW - 26 * HOUR, 15_000, 45_000),
        ("agent:later", NOW + MIN, NOW + 2 * MIN, 10_000, 30_000),
    ]
    rows = []
    for source, first, last, interval, silence in sources:
        kind, name = source.split(":", 1)
        rows.append({"ts": last, "source": source, "kind": kind, "name": name,
                     "first_seen": first, "last_seen": last, "interval_ms": interval,
                     "silence_ms": silence, "rows": rng.randrange(1, 10**6),
                     "gaps": rng.randrange(0, 5)})
    gaps = []
    for source, start, length in (("agent:web-1", NOW - 34 * DAY, HOUR),
                                  ("agent:web-1", NOW - 29 * DAY, 3 * HOUR),
                                  ("agent:web-1", NOW - DAY - 30 * MIN, HOUR),
                                  ("agent:web-1", NOW - 2 * HOUR, 17 * MIN + 123),
                                  ("agent:web-1", NOW + 10, MIN),
                                  ("syslog:router-1", NOW - 2 * DAY, 6 * HOUR),
                                  ("tail:web-1:/var/log/a.log", NOW - HOUR, 20 * MIN)):
        interval = next(s[3] for s in sources if s[0] == source)
        gaps.append({"ts": start, "source": source, "ended_at": start + length,
                     "downtime_ms": max(0, length - interval)})
    return rows, gaps


def expect_collection_status(sources, gaps):
    """{(source,): row} as docs/views.md defines collection_status at NOW."""
    def down(src, window):
        total = sum(max(0, min(g["ended_at"], NOW) - max(g["ended_at"] - g["downtime_ms"],
                                                          NOW - window))
                    for g in gaps if g["source"] == src["source"] and
                    g["ended_at"] > NOW - window and g["ts"] <= NOW)
        if NOW - src["last_seen"] > src["silence_ms"]:
            total += max(0, NOW - max(src["last_seen"] + src["interval_ms"], NOW - window))
        return total

    def uptime(src, window):
        observed = max(1, NOW - max(src["first_seen"], NOW - window))
        return round(100 * (1 - down(src, window) / observed), 3)

    want = {}
    for s in sources:
        if s["first_seen"] > NOW:
            continue
        silent = NOW - s["last_seen"] > s["silence_ms"]
        want[(s["source"],)] = {
            **s, "status": "silent" if silent else "ok", "silent_for_ms": NOW - s["last_seen"],
            "gaps_24h": sum(1 for g in gaps if g["source"] == s["source"]
                            and g["ended_at"] > NOW - DAY and g["ts"] <= NOW) + silent,
            "uptime_24h": uptime(s, DAY), "uptime_30d": uptime(s, 30 * DAY)}
    return want


COLLECTION_SPEC = {"kind": "text", "name": "text", "status": "text", "last_seen": None,
                   "silent_for_ms": None, "interval_ms": None, "silence_ms": None, "rows": None,
                   "first_seen": None, "gaps": None, "gaps_24h": None, "uptime_24h": 3,
                   "uptime_30d": 3}


def make_input():
    rng = random.Random(SEED)
    clock = {t: Clock(rng) for t in ["api", "err", "pipe", "handler", "alert", "job"]}
    jobs, runs = gen_jobs(rng, clock["job"])
    sources, gaps = gen_collection(rng)
    return {
        "system_metrics": gen_system_metrics(rng),
        "api_usage": gen_api_usage(rng, clock["api"]),
        "error_logs": gen_error_logs(rng, clock["err"]),
        "pipeline_status": gen_pipeline_status(rng, clock["pipe"]),
        "handler_metrics": gen_handler_metrics(rng, clock["handler"]),
        "alert_history": gen_alert_history(rng, clock["alert"]),
        "scheduled_jobs": jobs,
        "job_runs": runs,
        "collection_sources": sources,
        "collection_gaps": gaps,
    }


def load(srv, data):
    for table, rows in data.items():
        post_ndjson(srv, table, rows)


@pytest.fixture(scope="module")
def data():
    return make_input()


@pytest.fixture(scope="module")
def srv(module_server_factory, data):
    s = module_server_factory()
    load(s, data)
    return s


def view(srv, name, expect_status=200, **params):
    params.setdefault("now", REF_S)
    r = srv.get(f"/api/v1/views/{name}", params=params)
    assert r.status_code == expect_status, f"GET view {name} {params}: {r.status_code} {r.text}"
    return r


def view_rows(srv, name, **params):
    body = view(srv, name, **params).json()
    assert body["view"] == name
    assert body["row_count"] == len(body["rows"])
    return body["rows"]


def derived_key(rows):
    """error_summary: name the group whose fingerprint the server derived like the reference."""
    for r in rows:
        if r["error_type"] == "DerivedError":
            assert len(r["fingerprint"]) == 16 and all(c in "0123456789abcdef"
                                                       for c in r["fingerprint"]), r
            r["fingerprint"] = "derived:DerivedError"
    return rows


# ---- the views, column by column -----------------------------------------------------------


def test_system_health(srv, data):
    rows = view_rows(srv, "system_health")
    want = expect_system_health(data["system_metrics"])
    # the crafted hosts land where they were meant to (a check on this file's reference too)
    status = {k[0]: v["status"] for k, v in want.items()}
    assert status["ok-edge"] == "ok" and status["cpu-warn"] == "warning"
    assert status["disk-crit"] == "critical" and status["stale-edge"] == "stale"
    assert status["fresh-edge"] == "critical" and "future-host" not in status
    compare_rows("system_health", rows, want, ("host", "component"), HEALTH_SPEC)
    # the window parameter does not apply to this view
    assert sorted(map(str, view_rows(srv, "system_health", window="1m"))) == \
        sorted(map(str, rows))


@pytest.mark.parametrize("window,window_ms", [(None, 15 * MIN), ("1h", HOUR), ("5m", 5 * MIN)])
def test_api_performance(srv, data, window, window_ms):
    params = {"window": window} if window else {}
    rows = view_rows(srv, "api_performance", **params)
    want = expect_api_performance(data["api_usage"], window_ms)
    compare_rows("api_performance", rows, want, ("service", "endpoint"), API_SPEC)


@pytest.mark.parametrize("window,window_ms", [(None, DAY), ("2h", 2 * HOUR)])
def test_error_summary(srv, data, window, window_ms):
    params = {"window": window} if window else {}
    rows = derived_key(view_rows(srv, "error_summary", **params))
    want = {(k,): v for k, v in expect_error_summary(data["error_logs"], window_ms).items()}
    compare_rows("error_summary", rows, want, ("fingerprint",), ERR_SPEC)


@pytest.mark.parametrize("window,window_ms", [(None, DAY), ("6h", 6 * HOUR)])
def test_pipeline_health(srv, data, window, window_ms):
    params = {"window": window} if window else {}
    rows = view_rows(srv, "pipeline_health", **params)
    want = expect_pipeline_health(data["pipeline_status"], window_ms)
    assert want[("pipe4",)]["success_rate"] is None  # never finished
    compare_rows("pipeline_health", rows, want, ("pipeline",), PIPE_SPEC)


@pytest.mark.parametrize("window,window_ms", [(None, 15 * MIN), ("30m", 30 * MIN)])
def test_handler_performance(srv, data, window, window_ms):
    params = {"window": window} if window else {}
    rows = view_rows(srv, "handler_performance", **params)
    want = expect_handler_performance(data["handler_metrics"], window_ms)
    compare_rows("handler_performance", rows, want, ("handler", "component"), HANDLER_SPEC)


def test_active_alerts(srv, data):
    rows = view_rows(srv, "active_alerts")
    want = expect_active_alerts(data["alert_history"])
    assert ("edge-now",) in want and ("edge-later",) in want
    compare_rows("active_alerts", rows, want, ("alert_id",), ALERT_SPEC)


def test_job_status(srv, data):
    # the server's own builtin jobs are left out: the data's jobs are the cases
    rows = [r for r in view_rows(srv, "job_status") if r["kind"] != "builtin"]
    want = expect_job_status(data["scheduled_jobs"], data["job_runs"])
    for name, status in [("paused", "paused"), ("running", "running"), ("overdue", "missed"),
                         ("in-grace", "ok"), ("failed", "failed"), ("timeout", "failed"),
                         ("run-missed", "missed"), ("ok", "ok"), ("future-run", "ok"),
                         ("own-status", "failed"), ("never", "never"), ("no-grace", "missed"),
                         ("cmd-late", "ok"), ("cmd-down", "missed")]:
        assert want[(name,)]["status"] == status, name
    compare_rows("job_status", rows, want, ("name",), JOB_SPEC)


# ---- parameters ----------------------------------------------------------------------------


def test_window_boundaries(srv):
    """Rows at now - window are out, rows at now are in (3 requests per row)."""
    def boundary(**p):
        rows = view_rows(srv, "api_performance", endpoint="/boundary", **p)
        assert len(rows) == 1, rows
        return rows[0]

    assert boundary()["requests"] == 3  # the row at now - 15m is out
    assert boundary(window="1h")["requests"] == 6  # now - 15m in, now - 1h out
    assert boundary(window="1h")["latency_p99_ms"] < 2e6
    assert boundary(window="15m1ms")["requests"] == 6
    # now one millisecond earlier: the row at REF is out, the one at REF - 15m comes in
    early = boundary(now=f"{REF_S - 0.001:.3f}")
    assert early["requests"] == 3 and abs(early["latency_p50_ms"] - 1e6) <= 1e4, early
    handler = view_rows(srv, "handler_performance", handler="edge")
    assert [r["invocations"] for r in handler] == [7]


def test_now_as_rfc3339(srv):
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(REF_S))
    assert view_rows(srv, "api_performance", now=stamp) == view_rows(srv, "api_performance")


def test_filters(srv, data):
    want = expect_api_performance(data["api_usage"])
    rows = view_rows(srv, "api_performance", endpoint="/a")
    assert rows and {r["endpoint"] for r in rows} == {"/a"}
    compare_rows("api_performance?endpoint=/a", rows,
                 {k: v for k, v in want.items() if k[1] == "/a"}, ("service", "endpoint"),
                 API_SPEC)
    rows = view_rows(srv, "api_performance", endpoint="/b", service="checkout")
    assert [(r["service"], r["endpoint"]) for r in rows] == [("checkout", "/b")]
    # a number-looking value is compared as a number
    some = next(iter(want.values()))["requests"]
    rows = view_rows(srv, "api_performance", requests=str(some))
    assert rows and all(r["requests"] == some for r in rows)
    assert len(rows) == sum(1 for v in want.values() if v["requests"] == some)
    health = expect_system_health(data["system_metrics"])
    rows = view_rows(srv, "system_health", status="critical")
    assert sorted(r["host"] for r in rows) == sorted(k[0] for k, v in health.items()
                                                     if v["status"] == "critical")
    assert view_rows(srv, "api_performance", endpoint="/no-such") == []


def test_order_and_limit(srv, data):
    want = expect_api_performance(data["api_usage"])
    top = sorted((v["requests"] for v in want.values()), reverse=True)
    rows = view_rows(srv, "api_performance", order="requests desc", limit=3)
    assert [r["requests"] for r in rows] == top[:3]
    rows = view_rows(srv, "api_performance", order="requests")
    assert [r["requests"] for r in rows] == sorted(top)
    rows = view_rows(srv, "api_performance", order="requests asc", limit=1)
    assert [r["requests"] for r in rows] == [min(top)]
    assert len(view_rows(srv, "job_status", limit=2)) == 2
    for bad in ({"order": "nope desc"}, {"order": "requests sideways"}, {"limit": "0"},
                {"limit": "x"}, {"order": "requests; DROP TABLE api_usage"}):
        r = view(srv, "api_performance", expect_status=400, **bad)
        assert r.json()["error"], r.text


def csv_value(text):
    if text == "":
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def test_collection_status(srv, data):
    rows = view_rows(srv, "collection_status")
    want = expect_collection_status(data["collection_sources"], data["collection_gaps"])
    status = {k[0]: v["status"] for k, v in want.items()}
    assert status == {"agent:web-1": "ok", "tail:web-1:/var/log/a.log": "silent",
                      "syslog:router-1": "ok", "scrape:http://db-1:9100/metrics": "silent"}
    assert all(0 < want[("agent:web-1",)][u] < 100 for u in ("uptime_24h", "uptime_30d"))
    compare_rows("collection_status", rows, want, ("source",), COLLECTION_SPEC)
    # the window parameter does not apply to this view
    assert view_rows(srv, "collection_status", window="1m") == rows


@pytest.mark.parametrize("name", VIEWS)
def test_csv_matches_json(srv, name):
    rows = view_rows(srv, name)
    r = view(srv, name, format="csv")
    assert r.headers["Content-Type"].startswith("text/csv"), r.headers
    parsed = list(csv.reader(io.StringIO(r.text)))
    header, body = parsed[0], parsed[1:]
    assert rows, f"{name} has no rows to compare"
    assert header == list(rows[0].keys())
    assert len(body) == len(rows)
    for line, row in zip(body, rows):
        for col, text in zip(header, line):
            v = row[col]
            if isinstance(v, float) or isinstance(v, int):
                assert csv_value(text) == v, (name, col, text, v)
            elif v is None:
                assert text == "", (name, col, text)
            else:
                assert text == v, (name, col, text, v)


def test_errors(srv):
    r = view(srv, "no_such_view", expect_status=404)
    assert "no_such_view" in r.json()["error"]
    r = view(srv, "api_performance", expect_status=400, no_such_column="x")
    assert "no_such_column" in r.json()["error"]
    for window in ("abc", "0", "-5m", "15q", ""):
        r = view(srv, "api_performance", expect_status=400, window=window)
        assert "window" in r.json()["error"], (window, r.text)
    for now in ("yesterday", "2024-13-01T00:00:00Z"):
        r = view(srv, "api_performance", expect_status=400, now=now)
        assert "now" in r.json()["error"]
    view(srv, "api_performance", expect_status=400, format="table")
    view(srv, "api_performance", expect_status=400, format="xml")
    listing = srv.get("/api/v1/views").json()
    assert [v["name"] for v in listing["views"]] == VIEWS


# ---- the CLI sees the same rows ------------------------------------------------------------


@pytest.mark.parametrize("name,args,params", [
    (name, [], {}) for name in VIEWS] + [
    ("api_performance", ["--window", "1h", "--filter", "endpoint=/a"],
     {"window": "1h", "endpoint": "/a"}),
    ("handler_performance", ["--order", "invocations desc", "--limit", "3"],
     {"order": "invocations desc", "limit": "3"}),
])
def test_cli_view_matches_api(srv, run_cli, name, args, params):
    api = view_rows(srv, name, **params)
    cp = run_cli("view", name, "--now", REF_S, "--format", "json", "--db", srv.db, *args)
    assert cp.returncode == 0, cp.stderr
    body = json.loads(cp.stdout)
    assert body["view"] == name and body["columns"] == list(api[0].keys())
    assert body["rows"] == api


# ---- configuration -------------------------------------------------------------------------


def test_health_thresholds_configurable(module_server_factory, data):
    s = module_server_factory("--set", "health.cpu_warning=50", "--set", "health.stale_after=10m")
    post_ndjson(s, "system_metrics", data["system_metrics"])
    rows = view_rows(s, "system_health")
    th = {"cpu_warning": 50, "stale_after_ms": 10 * MIN}
    want = expect_system_health(data["system_metrics"], th)
    assert want[("cpu-60", "")]["status"] == "warning"
    assert want[("stale-edge", "")]["status"] == "critical"
    assert expect_system_health(data["system_metrics"])[("cpu-60", "")]["status"] == "ok"
    compare_rows("system_health (cpu_warning=50)", rows, want, ("host", "component"), HEALTH_SPEC)
    s.stop()


def test_health_metric_names_configurable(module_server_factory, data):
    s = module_server_factory("--set", "health.cpu_metric=load1",
                              "--set", "health.disk_metric=cpu_usage")
    post_ndjson(s, "system_metrics", data["system_metrics"])
    want = expect_system_health(data["system_metrics"],
                                {"cpu_metric": "load1", "disk_metric": "cpu_usage"})
    assert want[("cpu-crit", "")]["cpu"] == 1.5 and want[("cpu-crit", "")]["disk"] == 95.0
    compare_rows("system_health (renamed metrics)", view_rows(s, "system_health"), want,
                 ("host", "component"), HEALTH_SPEC)
    s.stop()


def test_active_alerts_same_millisecond_transitions(module_server_factory):
    s = module_server_factory()
    t = NOW - MIN
    post_ndjson(s, "alert_history", [
        {"ts": t, "alert_id": "fire-resolve", "rule": "r", "state": "firing"},
        {"ts": t, "alert_id": "fire-resolve", "rule": "r", "state": "resolved"},
        {"ts": t, "alert_id": "pending-firing", "rule": "r", "state": "pending"},
        {"ts": t, "alert_id": "pending-firing", "rule": "r", "state": "firing"}])
    rows = view_rows(s, "active_alerts")
    s.stop()
    assert [(r["alert_id"], r["state"]) for r in rows] == [("pending-firing", "firing")], rows
