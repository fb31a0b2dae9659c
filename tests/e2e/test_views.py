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
  error_type, component and level are max() of the text; first_seen is the earliest row of the
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

import pytest
import requests


SEED = 20240611
VIEWS = ["system_health", "api_performance", "error_summary", "pipeline_health",
         "handler_performance", "active_alerts", "job_status"]


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
    """want: {key tuple: {column: value}}; spec: {column: digits or None or 'text'}."""
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
