#!/usr/bin/python3
"""Alert quality: how many of the default rules' notifications are about a real incident
(precision) and how many incidents get one (recall), on a generated week of the reference
workload with labelled incidents and harmless noise (the alerting issue's benchmark).

usage: bench/alert_quality.py [--days 7] [--warmup-days 1] [--hosts 20] [--api-rate 10]
                              [--seed 1] [--jobs 2] [--quick] [--fail-below 95]
                              [--opsdb ./opsdb] [--keep]

Data. bench/gen.c writes the reference workload (deterministic) for WARMUP + DAYS days ending at
the last whole hour, with HOSTS hosts and API_RATE requests/s (the reference's 50/s would make the
week 27M requests; the daily cycle, endpoints and mix are the same), and lists the incidents it
injects itself (--incidents): 10-minute CPU saturations, memory leaks above 90%, 12-minute service
incidents (5xx, 3x latency, error bursts), handler backlogs, failed pipeline runs. Only cpu_usage,
memory_usage and disk_usage of system_metrics are loaded (what the rules and system_health read).
This script adds, in the scored days, the incidents gen does not make, each labelled with its
target: hosts that stop reporting, disks filling up, memory pressure, one endpoint failing (5xx)
or slow, a burst of one known error, errors never seen before, a pipeline that stops running for
over a day, a handler whose errors rise; and noise no rule should page for: CPU, memory and
latency spikes shorter than the rules' `for`, deploys (a few seconds of 503s and errors on one
service), short queue spikes, and maintenance (one-off windows on a host, a weekly window on the
batch hosts) declared in the config, during which the hosts go quiet and busy.

Replay. A fresh database is loaded with `opsdb ingest`, then `opsdb alerts backtest` replays the
default rules (`opsdb alerts defaults`) with the config's maintenance windows and a receiver
with a route (group_wait 30s; the replay routes and groups, delivers nothing) over the scored
days, split into JOBS segments run side by side; each segment starts LEAD (1 h) early and keeps
only what happens after its start, so an alert's `for`, window and state have settled.

Scoring. An episode is a `notify firing` of an alert until its next `resolved`. It is relevant
when it overlaps an incident, widened by SLACK_BEFORE (2 min) before and SLACK_AFTER (15 min:
the rules' 5-minute windows, `for` up to 10 min and ErrorBurst's keep_firing_for 10 min) after,
of a kind the rule exists for (RULE_KINDS) and with the same target (host, service or endpoint,
error type, pipeline, handler). Precision = relevant episodes / all episodes; recall = incidents
that start in the scored days and at least one relevant episode caught / those incidents.
Prints a markdown report (overall, per rule, per incident kind, every false positive and every
missed incident) and writes it to bench/results/alert-quality-<time>.md. Exit status 0 unless the
run failed; with --fail-below P, 1 when precision or recall is below P%.
--quick: 1 scored day after a 1-day warm-up, 10 hosts.
"""
import argparse
import bisect
import csv
import datetime
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
METRICS = ("cpu_usage", "memory_usage", "disk_usage")

# which incident kinds each default rule is there for
RULE_KINDS = {
    "HostHighCPU": {"host_cpu"},
    "HostHighMemory": {"host_memory"},
    "HostDiskAlmostFull": {"host_disk"},
    "HostNotReporting": {"host_down"},
    "ApiHigh5xxRate": {"api_service", "api_5xx"},
    "ApiSlowP95": {"api_service", "api_latency"},
    "ErrorBurst": {"api_service", "error_burst"},
    "NewErrorFingerprint": {"new_error"},
    "PipelineFailed": {"pipeline_failed"},
    "PipelineNotFresh": {"pipeline_stale"},
    "HandlerErrorRate": {"handler_backlog", "handler_errors"},
    "HandlerQueueGrowing": {"handler_backlog"},
}

# endpoints of gen.c with enough traffic for the rules' `requests >= 20` at low rates
ENDPOINTS = [
    ("auth", "/v1/auth/token"), ("orders", "/v1/orders/{order_id}"), ("orders", "/v1/orders"),
    ("catalog", "/v1/products"), ("catalog", "/v1/products/{product_id}"),
    ("catalog", "/v1/products/search"), ("users", "/v1/users/{user_id}"),
    ("users", "/v1/users/{user_id}/notifications"), ("payments", "/v1/payments/{payment_id}"),
]
SERVICES = ["auth", "orders", "catalog", "payments", "users"]
HANDLERS = ["orders.created", "payments.captured", "email.send", "inventory.reserve",
            "search.reindex_product", "fraud.score", "users.signup", "analytics.event"]
PIPELINES = ["orders_etl", "billing_rollup", "inventory_sync", "search_index_build",
             "payments_reconcile", "fraud_features"]

# errors of gen.c's templates (same text, so the same fingerprint): (service, component,
# level, error_type, message with {n} and {ip})
KNOWN_ERRORS = [
    ("orders", "db-client", "error", "SQLTransientConnectionException",
     "HikariPool-1 - connection is not available, request timed out after {n}ms"),
    ("auth", "db-client", "error", "DBConnectionError",
     "dial tcp {ip}:5432: connect: connection refused (pool size {n})"),
    ("catalog", "api", "error", "SearchBackendError",
     "elasticsearch query failed on shard {n} of index products: circuit_breaking_exception"),
    ("users", "worker", "error", "EmailDeliveryFailed",
     "smtp {ip}:587 responded 451 4.7.1 for message {n}: try again later"),
    ("payments", "api", "error", "GatewayTimeoutException",
     "payment provider did not answer within {n}ms for payment {n}"),
]
# errors gen.c never writes
NEW_ERRORS = [
    ("orders", "api", "error", "FeatureFlagError",
     "feature flag checkout_redesign evaluation failed for order {n}: unknown variant"),
    ("payments", "api", "error", "CertificateExpired",
     "x509: certificate has expired or is not yet valid for psp.example.net (payment {n})"),
    ("users", "worker", "error", "SerializationError",
     "cannot decode event users.signup v3: unknown field marketing_opt_in (offset {n})"),
    ("catalog", "api", "error", "ZeroDivisionError",
     "division by zero computing the discount of product {n}"),
    ("auth", "api", "fatal", "KeyRotationError", "signing key kid={n} not found in the keyset"),
    ("platform", "etl", "error", "ParquetSchemaError",
     "column order_total of part-{n}.parquet has type DECIMAL, expected DOUBLE"),
    ("orders", "worker", "error", "ConstraintViolation",
     "insert into shipments violates foreign key shipments_order_fk (order {n})"),
    ("users", "api", "error", "RegexTimeout", "email validation regex timed out for user {n}"),
]
# host roles of gen.c: they repeat every 20 hosts
ROLES = ["web"] * 8 + ["db"] * 4 + ["cache"] * 3 + ["batch"] * 3 + ["queue"] * 2


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def iso(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def short(ms):
    return iso(ms)[5:16].replace("T", " ")


def host_name(i):
    return f"host-{i:03d}"


class Minutes:
    """Overlays indexed by minute, so a row finds the few that touch it at once."""

    def __init__(self):
        self.by_min = {}

    def add(self, start, end, item):
        for m in range(start // MIN, (end - 1) // MIN + 1):
            self.by_min.setdefault(m, []).append((start, end, item))

    def at(self, ts):
        return [i for s, e, i in self.by_min.get(ts // MIN, ()) if s <= ts < e]


def plan(args, score_from, score_to, gen_incidents):
    """The injected incidents and noise of the scored days, the maintenance windows, and the
    overlays that make them in the data."""
    rng = random.Random(args.seed)
    days = (score_to - score_from) / DAY
    hosts = list(range(args.hosts))
    incidents, noise, maint = [], [], []
    ov = {"sys": Minutes(), "api": Minutes(), "handler": Minutes()}
    extra_errors, pipe_gaps = [], []
    taken = {}  # target -> intervals in use, so injected events do not overlap on one target

    def free(target, start, end):
        for s, e in taken.get(target, ()):
            if start < e + 30 * MIN and s < end + 30 * MIN:
                return False
        return True

    def slot(target, dur, margin=HOUR):
        for _ in range(200):
            start = rng.randrange(score_from + margin, score_to - dur - margin) // 1000 * 1000
            if free(target, start, start + dur):
                taken.setdefault(target, []).append((start, start + dur))
                return start
        return None

    def count(per_week):
        return max(1, round(per_week * days / 7))

    # gen's own incidents occupy their targets too
    for inc in gen_incidents:
        t = inc.get("host") or inc.get("handler") or inc.get("pipeline") or inc.get("service")
        taken.setdefault(t, []).append((inc["start"], inc["end"]))

    def host_pick():
        return host_name(rng.choice(hosts))

    for _ in range(count(6)):  # hosts that stop reporting
        h, dur = host_pick(), rng.randrange(20, 61) * MIN
        s = slot(h, dur)
        if s is not None:
            incidents.append({"kind": "host_down", "host": h, "start": s, "end": s + dur})
            ov["sys"].add(s, s + dur, ("drop", h))
    for _ in range(count(4)):  # a disk filling up, then cleaned
        h, dur = host_pick(), rng.randrange(60, 181) * MIN
        s = slot(h, dur)
        if s is not None:
            peak = rng.uniform(93, 98)
            incidents.append({"kind": "host_disk", "host": h, "start": s, "end": s + dur})
            ov["sys"].add(s - 30 * MIN, s + dur, ("ramp", h, "disk_usage", s - 30 * MIN, s, peak))
    for _ in range(count(4)):  # memory pressure
        h, dur = host_pick(), rng.randrange(30, 91) * MIN
        s = slot(h, dur)
        if s is not None:
            incidents.append({"kind": "host_memory", "host": h, "start": s, "end": s + dur})
            ov["sys"].add(s, s + dur, ("set", h, "memory_usage", rng.uniform(92, 97), 1.0))
    for _ in range(count(12)):  # CPU spikes shorter than HostHighCPU's for
        h, dur = host_pick(), rng.randrange(60, 241) * 1000
        s = slot(h, dur, margin=HOUR)
        if s is not None:
            noise.append({"kind": "cpu_spike", "host": h, "start": s, "end": s + dur})
            ov["sys"].add(s, s + dur, ("set", h, "cpu_usage", rng.uniform(96, 99.5), 0.5))
    for _ in range(count(6)):  # memory spikes shorter than HostHighMemory's for
        h, dur = host_pick(), rng.randrange(3, 7) * MIN
        s = slot(h, dur)
        if s is not None:
            noise.append({"kind": "memory_spike", "host": h, "start": s, "end": s + dur})
            ov["sys"].add(s, s + dur, ("set", h, "memory_usage", rng.uniform(92, 96), 0.5))
    # one-off maintenance: the host gets busy, then goes quiet, and is back before the end
    for k in range(count(4)):
        h, dur = host_pick(), rng.randrange(40, 91) * MIN
        s = slot(h, dur)
        if s is not None:
            maint.append({"name": f"maint-{k + 1}", "matchers": f"host={h}", "start": iso(s),
                          "end": iso(s + dur)})
            noise.append({"kind": "maintenance", "host": h, "start": s, "end": s + dur})
            ov["sys"].add(s + 2 * MIN, s + 15 * MIN, ("set", h, "cpu_usage", 96.0, 1.0))
            ov["sys"].add(s + 15 * MIN, s + dur - 8 * MIN, ("drop", h))
    # weekly patching of the batch hosts: each reboots (quiet 10-20 min) within the window
    weekday = datetime.datetime.fromtimestamp((score_from + DAY // 2) / 1000,
                                              datetime.timezone.utc).strftime("%a").lower()
    maint.append({"name": "batch-patching", "matchers": "component=batch", "weekdays": [weekday],
                  "from": "02:00", "to": "04:00"})
    day0 = score_from // DAY * DAY
    for d in range(day0, score_to, DAY):
        if datetime.datetime.fromtimestamp(d / 1000, datetime.timezone.utc).strftime(
                "%a").lower() != weekday or not score_from <= d + 2 * HOUR < score_to:
            continue
        for i in hosts:
            if ROLES[i % 20] != "batch":
                continue
            s = d + 2 * HOUR + rng.randrange(5, 60) * MIN
            dur = rng.randrange(10, 21) * MIN
            noise.append({"kind": "patching", "host": host_name(i), "start": s, "end": s + dur})
            ov["sys"].add(s, s + dur, ("drop", host_name(i)))

    for _ in range(count(4)):  # one endpoint failing
        svc, ep = rng.choice(ENDPOINTS)
        dur = rng.randrange(15, 31) * MIN
        s = slot(svc, dur)
        if s is not None:
            incidents.append({"kind": "api_5xx", "service": svc, "endpoint": ep, "start": s,
                              "end": s + dur})
            ov["api"].add(s, s + dur, ("5xx", svc, ep, rng.uniform(0.2, 0.5)))
    for _ in range(count(4)):  # one endpoint slow (a slow dependency)
        svc, ep = rng.choice(ENDPOINTS)
        dur = rng.randrange(20, 41) * MIN
        s = slot(svc, dur)
        if s is not None:
            incidents.append({"kind": "api_latency", "service": svc, "endpoint": ep, "start": s,
                              "end": s + dur})
            ov["api"].add(s, s + dur, ("slow", svc, ep, rng.uniform(1200, 2500)))
    for _ in range(count(6)):  # latency spikes shorter than ApiSlowP95's for
        svc, ep = rng.choice(ENDPOINTS)
        dur = rng.randrange(2, 5) * MIN
        s = slot(svc, dur)
        if s is not None:
            noise.append({"kind": "latency_spike", "service": svc, "endpoint": ep, "start": s,
                          "end": s + dur})
            ov["api"].add(s, s + dur, ("slow", svc, ep, rng.uniform(1200, 2500)))
    for _ in range(count(8)):  # deploys: seconds of 503s and a few errors of the service
        e = rng.choice(KNOWN_ERRORS)
        svc, dur = e[0], rng.randrange(5, 16) * 1000
        s = slot(svc, dur)
        if s is not None:
            noise.append({"kind": "deploy", "service": svc, "start": s, "end": s + dur})
            ov["api"].add(s, s + dur, ("down", svc))
            for _ in range(rng.randrange(10, 41)):
                extra_errors.append((s + rng.randrange(0, dur), e))

    for _ in range(count(4)):  # a burst of one known error
        e = rng.choice(KNOWN_ERRORS)
        dur = rng.randrange(10, 21) * MIN
        s = slot(e[3], dur)
        if s is not None:
            rate = rng.uniform(1, 3)
            incidents.append({"kind": "error_burst", "error_type": e[3], "component": e[1],
                              "start": s, "end": s + dur})
            for _ in range(int(rate * dur / 1000)):
                extra_errors.append((s + rng.randrange(0, dur), e))
    for e in rng.sample(NEW_ERRORS, min(len(NEW_ERRORS), count(4))):  # never seen before
        dur = rng.randrange(2, 11) * MIN
        s = slot(e[3], dur)
        if s is not None:
            times = sorted(s + rng.randrange(0, dur) for _ in range(rng.randrange(3, 31)))
            incidents.append({"kind": "new_error", "error_type": e[3], "component": e[1],
                              "start": times[0], "end": times[-1] + 1})
            extra_errors += [(t, e) for t in times]

    # a pipeline that stops running for over a day; its last success is then older than 24 h
    for _ in range(count(1.5)):
        p, dur = rng.choice(PIPELINES), rng.randrange(26, 31) * HOUR
        lo = max(score_from - 20 * HOUR, score_from - args.warmup_days * DAY + HOUR)
        s = rng.randrange(lo, score_to - dur - HOUR) // MIN * MIN if score_to - dur - HOUR > lo \
            else None
        if s is not None:  # gen's failed runs in the gap are not written (main drops them)
            taken.setdefault(p, []).append((s, s + dur))
            # stale from a day after its last success (just before s) until it runs again
            incidents.append({"kind": "pipeline_stale", "pipeline": p, "start": s + DAY,
                              "end": s + dur})
            pipe_gaps.append((p, s, s + dur))
    for _ in range(count(4)):  # a handler whose errors rise (a downstream rejecting)
        h, dur = rng.choice(HANDLERS), rng.randrange(15, 41) * MIN
        s = slot(h, dur)
        if s is not None:
            incidents.append({"kind": "handler_errors", "handler": h, "start": s, "end": s + dur})
            ov["handler"].add(s, s + dur, ("errors", h, rng.uniform(0.1, 0.3)))
    for _ in range(count(6)):  # a batch arrives and drains within a minute
        h, dur = rng.choice(HANDLERS), rng.randrange(20, 61) * 1000
        s = slot(h, dur)
        if s is not None:
            noise.append({"kind": "queue_spike", "handler": h, "start": s, "end": s + dur})
            ov["handler"].add(s, s + dur, ("queue", h, rng.randrange(1500, 3001)))
    return incidents, noise, maint, ov, extra_errors, pipe_gaps


# ---- data --------------------------------------------------------------------------------------

def filter_system(lines, ov, out):
    """Keeps the three metrics the rules read and applies the host overlays."""
    keys = tuple(f'"metric":"{m}"' for m in METRICS)
    for line in lines:
        if not (keys[0] in line or keys[1] in line or keys[2] in line):
            continue
        ts = int(line[6:19])
        mods = ov.at(ts)
        if mods:
            host = line[28:36]
            row = None
            for m in mods:
                if m[1] != host:
                    continue
                if m[0] == "drop":
                    row = False
                    break
                row = row or json.loads(line)
                if row["metric"] != m[2]:
                    continue
                if m[0] == "set":
                    row["value"] = round(m[3] + random.uniform(-m[4], m[4]), 2)
                elif m[0] == "ramp":  # up to the peak over [from, to], then at it
                    _, _, _, lo, hi, peak = m
                    f = min(1.0, (ts - lo) / (hi - lo))
                    row["value"] = round(max(row["value"], row["value"] + f * (peak -
                                                                             row["value"])), 2)
            if row is False:
                continue
            if row:
                line = json.dumps(row, separators=(",", ":")) + "\n"
        out.write(line)


def filter_api(lines, ov, out, rng):
    for line in lines:
        mods = ov.at(int(line[6:19]))
        if mods:
            row = json.loads(line)
            for m in mods:
                if m[0] == "down" and row["service"] == m[1]:
                    row["status_code"], row["latency_ms"] = 503, round(rng.uniform(1, 5), 2)
                elif m[0] == "5xx" and (row["service"], row["endpoint"]) == m[1:3] \
                        and rng.random() < m[3]:
                    row["status_code"] = rng.choice((500, 502, 503))
                elif m[0] == "slow" and (row["service"], row["endpoint"]) == m[1:3]:
                    row["latency_ms"] = round(rng.lognormvariate(0, 0.4) * m[3], 2)
            line = json.dumps(row, separators=(",", ":")) + "\n"
        out.write(line)


def filter_handler(lines, ov, out):
    for line in lines:
        mods = ov.at(int(line[6:19]))
        if mods:
            row = json.loads(line)
            for m in mods:
                if m[1] != row["handler"]:
                    continue
                if m[0] == "errors":
                    row["errors"] = round(row["invocations"] * m[2])
                    row["retries"] = row["errors"]
                elif m[0] == "queue":
                    row["queue_depth"] += m[2]
            line = json.dumps(row, separators=(",", ":")) + "\n"
        out.write(line)


def filter_pipeline(lines, gaps, out):
    for line in lines:
        row = json.loads(line)
        if any(row["pipeline"] == p and s <= row["ts"] < e for p, s, e in gaps):
            continue
        out.write(line)


def error_rows(extra, rng):
    rows = []
    for ts, (svc, comp, level, etype, text) in sorted(extra):
        msg = text.replace("{ip}", "10.%d.%d.%d" % (rng.randrange(4), rng.randrange(256),
                                                    rng.randrange(1, 255)))
        while "{n}" in msg:
            msg = msg.replace("{n}", str(rng.randrange(1, 99999)), 1)
        host = host_name(rng.randrange(8)) if comp != "etl" else host_name(15)
        rows.append(json.dumps({"ts": ts, "service": svc, "component": comp, "host": host,
                                "level": level, "error_type": etype, "message": msg,
                                "trace_id": "%032x" % rng.getrandbits(128)}))
    return "\n".join(rows) + "\n" if rows else ""


def load(args, tmp, db, gen, data_from, data_to, ov, extra_errors, pipe_gaps):
    rng = random.Random(args.seed + 1)
    random.seed(args.seed + 2)
    counts = {}
    for table in ("system_metrics", "api_usage", "error_logs", "pipeline_status",
                  "handler_metrics"):
        t0 = time.monotonic()
        for d in range(data_from, data_to, DAY):
            cmd = [gen, "--table", table, "--start", str(d // 1000),
                   "--end", str(min(d + DAY, data_to) // 1000), "--hosts", str(args.hosts),
                   "--api-rate", str(args.api_rate), "--seed", str(args.seed)]
            if table == "system_metrics":
                cmd += ["--metrics", "12"]  # cpu_usage .. disk_usage
            res = open(os.path.join(tmp, "ingest.out"), "w+")
            ing = subprocess.Popen([args.opsdb, "ingest", table, "-", "--db", db],
                                   stdin=subprocess.PIPE, stdout=res, stderr=res, text=True)
            g = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1 << 20)
            filt = {"system_metrics": lambda a, b: filter_system(a, ov["sys"], b),
                    "api_usage": lambda a, b: filter_api(a, ov["api"], b, rng),
                    "handler_metrics": lambda a, b: filter_handler(a, ov["handler"], b),
                    "pipeline_status": lambda a, b: filter_pipeline(a, pipe_gaps, b)}.get(table)
            try:
                if filt:
                    filt(g.stdout, ing.stdin)
                else:
                    shutil.copyfileobj(g.stdout, ing.stdin, 1 << 20)
                if table == "error_logs" and d + DAY >= data_to:
                    ing.stdin.write(error_rows(extra_errors, rng))
                ing.stdin.close()
            except BrokenPipeError:
                pass
            ing.wait()
            res.seek(0)
            out = res.read()
            res.close()
            if g.wait() != 0 or ing.returncode != 0:
                sys.exit(f"alert_quality: loading {table} failed: {out.strip()[-2000:]}")
            done = [x for x in out.split("\n") if x.startswith("ingested")]
            n = int(done[-1].split()[1]) if done else 0
            counts[table] = counts.get(table, 0) + n
        log(f"  {table}: {counts[table]:,} rows in {time.monotonic() - t0:.0f} s")
    return counts


# ---- replay ------------------------------------------------------------------------------------

def backtest(args, tmp, db, rules, config, segments):
    procs = []
    for k, (lo, hi) in enumerate(segments):
        out = open(os.path.join(tmp, f"backtest-{k}.csv"), "w")
        err = open(os.path.join(tmp, f"backtest-{k}.err"), "w")
        cmd = [args.opsdb, "alerts", "backtest", rules, "--from", str((lo - args.lead) // 1000),
               "--to", str(hi // 1000), "--db", db, "--config", config, "--format", "csv"]
        procs.append((subprocess.Popen(cmd, stdout=out, stderr=err), out, err, lo, hi, k))
    events = []
    for p, out, err, lo, hi, k in procs:
        rc = p.wait()
        out.close()
        err.close()
        if rc != 0:
            sys.exit("alert_quality: backtest failed: " +
                     open(os.path.join(tmp, f"backtest-{k}.err")).read()[-2000:])
        with open(os.path.join(tmp, f"backtest-{k}.csv")) as f:
            labels_at = 5
            for row in csv.reader(f):
                if row and row[0] == "time":
                    labels_at = row.index("labels")  # the columns by name, not position
                if not row or row[0] == "time":
                    continue
                if row[0] == "rule" and row[1] == "fired":
                    break
                ts = int(datetime.datetime.strptime(row[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                    tzinfo=datetime.timezone.utc).timestamp() * 1000)
                if lo <= ts < hi:
                    events.append((ts, row[1], row[2], row[3], row[labels_at]))
    events.sort(key=lambda e: e[0])
    return events


def episodes_of(events, end):
    """notify firing .. next resolved of the same alert."""
    open_, eps = {}, []
    for ts, what, rule, alert_id, labels in events:
        if what == "notify firing" and alert_id not in open_:
            ep = {"rule": rule, "alert_id": alert_id, "labels": json.loads(labels or "{}"),
                  "start": ts, "end": end}
            open_[alert_id] = ep
            eps.append(ep)
        elif what == "resolved" and alert_id in open_:
            open_.pop(alert_id)["end"] = ts
    return eps


def matches(ep, inc):
    lab, kind = ep["labels"], inc["kind"]
    if kind not in RULE_KINDS.get(ep["rule"], ()):
        return False
    if kind.startswith("host_"):
        return lab.get("host") == inc["host"]
    if kind == "api_service":
        if ep["rule"] == "ErrorBurst":
            return lab.get("error_type") in inc["error_types"]
        return lab.get("service") == inc["service"]
    if kind in ("api_5xx", "api_latency"):
        return (lab.get("service"), lab.get("endpoint")) == (inc["service"], inc["endpoint"])
    if kind in ("error_burst", "new_error"):
        return lab.get("error_type") == inc["error_type"]
    if kind.startswith("pipeline_"):
        return lab.get("pipeline") == inc["pipeline"]
    return lab.get("handler") == inc["handler"]


def target(x):
    for k in ("host", "endpoint", "error_type", "pipeline", "handler", "service"):
        if x.get(k):
            return (x.get("service", "") + " " if k == "endpoint" else "") + x[k]
    return json.dumps({k: v for k, v in x.items() if k not in ("alertname", "severity", "team")})


def score(args, eps, incidents, noise, score_from, score_to):
    before, after = args.slack_before, args.slack_after
    scored = [i for i in incidents if score_from <= i["start"] < score_to - HOUR]
    starts = sorted((i["start"] - before, n) for n, i in enumerate(incidents))
    for ep in eps:
        ep["incidents"] = []
        lo = bisect.bisect_right(starts, (ep["end"] + 1, -1))
        for _, n in starts[:lo]:
            inc = incidents[n]
            if inc["end"] + after >= ep["start"] and matches(ep, inc):
                ep["incidents"].append(inc)
                inc.setdefault("caught_by", []).append(ep)
        if not ep["incidents"]:  # what it fell on, for the list of false positives
            ep["noise"] = [z for z in noise if z["start"] - before <= ep["end"]
                           and z["end"] + after >= ep["start"]
                           and target(z) in target(ep["labels"])]
    return scored


def pct(a, b):
    return f"{100.0 * a / b:.1f}%" if b else "-"


def report(args, eps, scored, incidents, noise, counts, info):
    out = io.StringIO()
    w = lambda s="": print(s, file=out)  # noqa: E731
    relevant = [e for e in eps if e["incidents"]]
    caught = [i for i in scored if i.get("caught_by")]
    prec, rec = pct(len(relevant), len(eps)), pct(len(caught), len(scored))
    w(f"# Alert quality ({info['date']})")
    w()
    w(f"Command: `{info['command']}`; data {info['data']}; scored {info['scored']}; "
      f"rows: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()) + ".")
    w(f"Replay: {info['replay']}. Slack: {args.slack_before // MIN} min before an incident, "
      f"{args.slack_after // MIN} min after.")
    w()
    w("| measure | value | target |")
    w("|---|---:|---:|")
    w(f"| precision (relevant / notified episodes) | **{prec}** ({len(relevant)}/{len(eps)}) "
      f"| >= 95% |")
    w(f"| recall (incidents caught / incidents) | **{rec}** ({len(caught)}/{len(scored)}) "
      f"| >= 95% |")
    w(f"| noise injected (spikes, deploys, maintenance) | {len(noise)} | no alert |")
    w()
    w("| rule | episodes | relevant | precision | incidents it is for | caught | recall |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for rule in sorted(set(RULE_KINDS) | {e["rule"] for e in eps}):
        mine = [e for e in eps if e["rule"] == rule]
        rel = sum(1 for e in mine if e["incidents"])
        kinds = RULE_KINDS.get(rule, set())
        theirs = [i for i in scored if i["kind"] in kinds]
        got = sum(1 for i in theirs if any(e["rule"] == rule for e in i.get("caught_by", ())))
        w(f"| {rule} | {len(mine)} | {rel} | {pct(rel, len(mine))} | {len(theirs)} | {got} | "
          f"{pct(got, len(theirs))} |")
    w()
    w("| incident kind | incidents | caught | recall | by rules |")
    w("|---|---:|---:|---:|---|")
    for kind in sorted({i["kind"] for i in scored}):
        mine = [i for i in scored if i["kind"] == kind]
        got = [i for i in mine if i.get("caught_by")]
        rules = sorted({e["rule"] for i in got for e in i["caught_by"]})
        w(f"| {kind} | {len(mine)} | {len(got)} | {pct(len(got), len(mine))} | "
          f"{', '.join(rules)} |")
    w()
    fps = [e for e in eps if not e["incidents"]]
    w(f"## False positives ({len(fps)})")
    w()
    for e in fps:
        on = "; on " + ", ".join(f"{z['kind']} {short(z['start'])}-{short(z['end'])[6:]}"
                                 for z in e["noise"]) if e["noise"] else ""
        near = [i for i in incidents if target(i) in target(e["labels"])
                and i["start"] - 6 * HOUR <= e["start"] <= i["end"] + 6 * HOUR]
        nb = "; nearest incident of the target: " + ", ".join(
            f"{i['kind']} {short(i['start'])}-{short(i['end'])[6:]}" for i in near[:2]) \
            if near else ""
        w(f"- {short(e['start'])} .. {short(e['end'])} {e['rule']} {target(e['labels'])}{on}{nb}")
    w()
    missed = [i for i in scored if not i.get("caught_by")]
    w(f"## Missed incidents ({len(missed)})")
    w()
    for i in missed:
        other = [e for e in eps if target(i) in target(e["labels"])
                 and e["start"] <= i["end"] + args.slack_after
                 and e["end"] >= i["start"] - args.slack_before]
        seen = "; alerts on the target then: " + ", ".join(e["rule"] for e in other) \
            if other else ""
        extra = f" (peak {i['peak']})" if "peak" in i else ""
        w(f"- {short(i['start'])} .. {short(i['end'])} {i['kind']} {target(i)}{extra}{seen}")
    return out.getvalue(), len(relevant), len(eps), len(caught), len(scored)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=float, default=7, help="scored days (default 7)")
    ap.add_argument("--warmup-days", type=float, default=1,
                    help="data before the scored days, so errors and runs have a history")
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--api-rate", type=float, default=10, help="api_usage requests/s (gen)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--end", type=int, help="end of the data, epoch s (default: last whole hour)")
    ap.add_argument("--jobs", type=int, default=2, help="backtest segments run side by side")
    ap.add_argument("--lead", type=float, default=60, help="minutes a segment starts early")
    ap.add_argument("--slack-before", type=float, default=2, help="minutes (default 2)")
    ap.add_argument("--slack-after", type=float, default=15, help="minutes (default 15)")
    ap.add_argument("--fail-below", type=float, help="exit 1 when precision or recall < P%%")
    ap.add_argument("--quick", action="store_true", help="1 scored day, 10 hosts")
    ap.add_argument("--opsdb", default=os.path.join(ROOT, "opsdb"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    if args.quick:
        args.days, args.hosts = 1, 10
    args.lead, args.slack_before, args.slack_after = (int(args.lead * MIN),
                                                      int(args.slack_before * MIN),
                                                      int(args.slack_after * MIN))
    args.opsdb = os.path.abspath(args.opsdb)
    if not os.access(args.opsdb, os.X_OK):
        sys.exit(f"alert_quality: {args.opsdb} not found: run make first")
    t_start = time.monotonic()
    end = (args.end or int(time.time()) // 3600 * 3600 - 3600) * 1000
    score_from, score_to = end - int(args.days * DAY), end
    data_from = score_from - int(args.warmup_days * DAY)
    tmp = tempfile.mkdtemp(prefix="opsdb-alert-quality-")
    ok = False
    try:
        gen = os.path.join(tmp, "gen")
        subprocess.run([os.environ.get("CC", "gcc"), "-O2", "-std=c11", "-o", gen,
                        os.path.join(ROOT, "bench", "gen.c")], check=True)
        inc_path = os.path.join(tmp, "gen-incidents.ndjson")
        subprocess.run([gen, "--table", "pipeline_status", "--start", str(data_from // 1000),
                        "--end", str(end // 1000), "--hosts", str(args.hosts), "--seed",
                        str(args.seed), "--incidents", inc_path],
                       check=True, stdout=subprocess.DEVNULL)
        gen_incidents = [json.loads(x) for x in open(inc_path)]
        incidents, noise, maint, ov, extra_errors, gaps = plan(args, score_from, score_to,
                                                               gen_incidents)
        gen_incidents = [i for i in gen_incidents if not any(
            i.get("pipeline") == p and s <= i["start"] < e for p, s, e in gaps)]
        incidents = sorted(gen_incidents + incidents, key=lambda i: i["start"])
        with open(os.path.join(tmp, "incidents.json"), "w") as f:
            json.dump({"incidents": incidents, "noise": noise}, f, indent=1)
        log(f"alert_quality: {tmp}: {len(incidents)} incidents ({len(gen_incidents)} from gen), "
            f"{len(noise)} noise events, {len(maint)} maintenance windows")
        db, rules, config = (os.path.join(tmp, n) for n in ("aq.db", "rules.yaml", "opsdb.yaml"))
        subprocess.run([args.opsdb, "init", "--db", db], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        with open(rules, "w") as f:
            subprocess.run([args.opsdb, "alerts", "defaults"], check=True, stdout=f)
        with open(config, "w") as f:
            # a receiver and a route as a team would set them: the replay routes and groups the
            # notifications (nothing is delivered), so an alert resolved within group_wait is
            # not notified, as with the live notifier
            f.write("alerting:\n"
                    "  receivers: [{name: oncall, webhook: {url: \"http://127.0.0.1:9/hook\"}}]\n"
                    "  route: {receiver: oncall, group_by: [alertname, host, service, endpoint,"
                    " pipeline, handler], group_wait: 30s, group_interval: 5m,"
                    " repeat_interval: 4h}\n"
                    "  maintenance:\n")
            for m in maint:
                f.write("    - " + json.dumps(m) + "\n")
        t0 = time.monotonic()
        log(f"loading {iso(data_from)} .. {iso(end)}")
        counts = load(args, tmp, db, gen, data_from, end, ov, extra_errors, gaps)
        t_load = time.monotonic() - t0
        step = (score_to - score_from) // args.jobs // MIN * MIN
        cuts = [score_from + k * step for k in range(args.jobs)] + [score_to]
        segments = list(zip(cuts, cuts[1:]))
        t0 = time.monotonic()
        log(f"replaying {iso(score_from)} .. {iso(score_to)} in {len(segments)} segments")
        events = backtest(args, tmp, db, rules, config, segments)
        t_replay = time.monotonic() - t0
        eps = episodes_of(events, score_to)
        scored = score(args, eps, incidents, noise, score_from, score_to)
        info = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "bench/alert_quality.py" + (" " + " ".join(sys.argv[1:])
                                                    if sys.argv[1:] else ""),
            "data": f"{iso(data_from)} .. {iso(end)} ({args.hosts} hosts, "
                    f"{args.api_rate:g} requests/s, seed {args.seed})",
            "scored": f"{iso(score_from)} .. {iso(score_to)}",
            "replay": f"{len(segments)} segments, lead {args.lead // MIN} min, "
                      f"{sum(1 for e in events if e[1] == 'notify firing')} notifications, "
                      f"{sum(1 for e in events if e[1] == 'suppressed')} suppressed; "
                      f"load {t_load:.0f} s, replay {t_replay:.0f} s, "
                      f"total {time.monotonic() - t_start:.0f} s",
        }
        text, rel, n_eps, got, n_inc = report(args, eps, scored, incidents, noise, counts, info)
        print(text)
        os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
        path = os.path.join(ROOT, "bench", "results", "alert-quality-" +
                            datetime.datetime.now(datetime.timezone.utc).strftime(
                                "%Y%m%dT%H%M%SZ") + ".md")
        with open(path, "w") as f:
            f.write(text)
        log(f"report: {path}")
        ok = True
        if args.fail_below is not None and (rel < args.fail_below / 100 * n_eps or
                                            got < args.fail_below / 100 * n_inc):
            return 1
        return 0
    finally:
        if args.keep or not ok:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
