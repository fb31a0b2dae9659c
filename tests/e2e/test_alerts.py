"""The alert engine end to end: rule files, evaluation, the life of an alert, the API and the CLI.

What is checked, as read from src/alert/ (alert.h, rules.c, engine.c, eval.c),
src/http/http_alerts.c and src/cli/cmd_alerts.c:

* rule files: `opsdb alerts check FILE` prints "FILE: ok, N groups, M rules"; a mistake exits 1
  with "FILE:LINE: message", LINE being the line of the key at fault (rules.c: "refused with the
  file and line of the key at fault"), or of the rule when no key is (a missing threshold, both
  or neither of table and sql). `opsdb serve` refuses to start on the same files with the same
  message. Every expected line here is found in the rule text by a "# fault" marker.
* threshold rules on system_metrics: one alert per series that passes the filter and crosses;
  its labels are the series' labels + host + component + the rule's labels + alertname, its
  annotations expand {{ $labels.x }} and {{ $value }}. They are also evaluated as their table's
  rows commit, so `for: 0s` fires within a second of the ingest request even with a 1h group
  interval (and within about a second of a commit by another process, `opsdb ingest`). The window is now - window < ts <= now; aggregations over the raw samples: avg, min,
  max, sum, count, rate (increase of a counter, a drop counting as a reset from 0, per second of
  the samples' own span) and p50/p95/p99 (linear interpolation, rank p/100 * (n - 1)).
* event tables (api_usage): one alert per `by` group; a row with count = k weighs k (count,
  rate, percentiles); count with a metric counts rows where it is not NULL; rate = count per
  second of the window; filters are label matchers on columns.
* SQL rules: columns are labels, `value` the value; with a threshold the rows that compare are
  alerts, without one every row is. A failing SQL rule shows last_error and counts in
  opsdb_alert_evaluation_failures_total; the server goes on.
* states: pending (a "pending" row of alert_history when for > 0) -> firing ("firing" row) ->
  resolved ("resolved" row); a pending alert whose condition goes away leaves a resolved row and
  never a firing one; hysteresis (resolve_threshold applies once active), keep_firing_for,
  n_of_m (hit when the condition held in N of the last M evaluations); acknowledge via HTTP and
  the CLI; reload via HTTP and SIGHUP (a broken file keeps the old rules; a removed rule's alerts
  resolve); restart takes active alerts up again (same id, state and times, no second firing
  row).
* GET /api/v1/rules and the alert metrics of /metrics.

Every expected value is computed here from the rows the test sends. Timestamps are the current
time (rules look at windows ending now); the windows and intervals are short (1s-3s), and every
wait is bounded.
"""

import json
import math
import random
import re
import signal
import time

import pytest

from conftest import ServerStartError, assert_no_sanitizer_reports, now_ms, wait_until

SEED = 20250301

# ---- rule files ----------------------------------------------------------------------------


def yaml_value(v):
    """A value in YAML flow style: JSON is valid YAML for strings, numbers, lists and maps."""
    return json.dumps(v)


def rules_yaml(groups):
    """The text of a rule file for groups (dicts: name, optional interval, rules = list of
    dicts, keys in order), and the line of each rule's first key by (group, rule name)."""
    lines = ["# written by tests/e2e/test_alerts.py", "groups:"]
    where = {}
    for g in groups:
        lines.append(f"  - name: {yaml_value(g['name'])}")
        if "interval" in g:
            lines.append(f"    interval: {yaml_value(g['interval'])}")
        lines.append("    rules:")
        for r in g["rules"]:
            for i, (k, v) in enumerate(r.items()):
                if i == 0:
                    where[(g["name"], r.get("alert"))] = len(lines) + 1
                lines.append(("      - " if i == 0 else "        ") + f"{k}: {yaml_value(v)}")
    return "\n".join(lines) + "\n", where


def fault_line(text):
    """The 1-based line that carries the '# fault' marker (exactly one)."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if "# fault" in line]
    assert len(hits) == 1, f"the case must mark exactly one line:\n{text}"
    return hits[0]


class Alerting:
    """A server started with a config file in tmp_path/conf that names rules/main.yaml (a path
    relative to the config file's directory, which is not the server's working directory)."""

    def __init__(self, server_factory, tmp_path, groups, *args, db=None, start=True):
        self.conf_dir = tmp_path / "conf"
        (self.conf_dir / "rules").mkdir(parents=True, exist_ok=True)
        self.rules_path = self.conf_dir / "rules" / "main.yaml"
        self.write(groups)
        conf = self.conf_dir / "opsdb.yaml"
        conf.write_text("alerting:\n  rule_files: [rules/main.yaml]\n  default_rules: off\n")
        kw = {"db": db} if db else {}
        self.srv = server_factory("--config", conf, *args, start=start, **kw)

    def write(self, groups):
        self.groups = groups
        text, self.lines = rules_yaml(groups)
        self.rules_path.write_text(text)
        return text


def start_alerting(server_factory, tmp_path, groups, *args, **kw):
    return Alerting(server_factory, tmp_path, groups, *args, **kw)


# ---- reading the server --------------------------------------------------------------------


def get_alerts(srv, rule=None):
    r = srv.get("/api/v1/alerts")
    assert r.status_code == 200, r.text
    alerts = r.json()["alerts"]
    return [a for a in alerts if rule is None or a["rule"] == rule]


def one_alert(srv, rule, state=None):
    """The only alert of rule (in state, if given), or None."""
    got = [a for a in get_alerts(srv, rule) if state is None or a["state"] == state]
    assert len(got) <= 1, f"{rule}: several alerts {got}"
    return got[0] if got else None


def get_rules(srv):
    r = srv.get("/api/v1/rules")
    assert r.status_code == 200, r.text
    return r.json()


def rule_info(srv, name, group=None):
    for g in get_rules(srv)["groups"]:
        for r in g["rules"]:
            if r["name"] == name and (group is None or g["name"] == group):
                return r
    return None


def wait_evaluated(srv, name, after, timeout=5.0):
    """Waits until rule name has more than `after` evaluations; returns the rule's info."""
    info = wait_until(lambda: (lambda r: r if r and r["evaluations"] > after else None)(
        rule_info(srv, name)), timeout=timeout)
    assert info, f"rule {name} was not evaluated again within {timeout} s " \
                 f"({rule_info(srv, name)})"
    return info


def history(srv, alert_id=None, rule=None):
    """alert_history rows (ts order) of one alert or one rule."""
    cond = f"alert_id = '{alert_id}'" if alert_id else f"rule = '{rule}'"
    return srv.query(f"SELECT ts, alert_id, rule, severity, state, value, labels, summary, "
                     f"notified FROM alert_history WHERE {cond} ORDER BY ts, rowid")


def states(rows):
    return [r["state"] for r in rows]


def metric_lines(srv):
    r = srv.get("/metrics")
    assert r.status_code == 200
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def ingest(srv, table, rows):
    r = srv.ingest(table, rows)
    assert r.status_code == 200, f"ingest {table} -> {r.status_code} {r.text}"
    assert r.json()["rows"] == len(rows), r.text
    return r


def sample(ts, host, component, metric, value, **labels):
    return {"ts": ts, "host": host, "component": component, "metric": metric, "value": value,
            "labels": labels}


# ---- what the engine should compute --------------------------------------------------------


def percentile(values, p):
    """numpy.percentile(values, p), 'linear': rank p/100 * (n - 1) over the sorted values."""
    v = sorted(values)
    if not v:
        return None
    rank = p / 100.0 * (len(v) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (rank - lo)


def counter_rate(points):
    """Per-second increase of a counter over its samples [(ts, value)], a drop being a reset
    (the new value counts from 0), over the samples' own span; None for one sample."""
    pts = sorted(points)
    if len(pts) < 2 or pts[-1][0] == pts[0][0]:
        return None
    inc = 0.0
    for (_, a), (_, b) in zip(pts, pts[1:]):
        inc += b - a if b >= a else b
    return inc * 1000.0 / (pts[-1][0] - pts[0][0])


def series_agg(agg, points):
    vals = [v for _, v in points]
    return {
        "avg": lambda: sum(vals) / len(vals),
        "min": lambda: min(vals),
        "max": lambda: max(vals),
        "sum": lambda: sum(vals),
        "count": lambda: len(vals),
        "rate": lambda: counter_rate(points),
        "p50": lambda: percentile(vals, 50),
        "p95": lambda: percentile(vals, 95),
        "p99": lambda: percentile(vals, 99),
    }[agg]()


def matcher_ok(filter_text, fields):
    """Label matchers "k=v,k!=v,k=~re,k!~re" (regexes match the whole text) on fields."""
    for term in filter(None, filter_text.split(",")):
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)(=~|!~|!=|=)(.*)$", term)
        assert m, term
        key, op, want = m.groups()
        got = "" if fields.get(key) is None else str(fields[key])
        ok = {"=": got == want, "!=": got != want,
              "=~": re.fullmatch(want, got) is not None,
              "!~": re.fullmatch(want, got) is None}[op]
        if not ok:
            return False
    return True


def compare(op, value, threshold):
    return {">": value > threshold, ">=": value >= threshold, "<": value < threshold,
            "<=": value <= threshold, "==": value == threshold, "!=": value != threshold}[op]


def number_text(v):
    """A number as the server writes it in annotations (integers without a fraction)."""
    if float(v) == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def close(got, want):
    return got is not None and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


def between(values):
    """A threshold strictly between the two middle distinct values (some cross, some do not)."""
    v = sorted(set(values))
    assert len(v) >= 2, values
    k = len(v) // 2
    return (v[k - 1] + v[k]) / 2


# =============================================================================================
# 1. rule files
# =============================================================================================

HEAD = "groups:\n  - name: g\n    rules:\n"


# (id, rule file text with "# fault" on the line the message must name, message fragment,
#  xfail reason for the line or None)
CHECK_CASES = [
    ("unknown_key", HEAD + "      - alert: A\n        table: system_metrics\n"
     "        metric: cpu\n        thresold: 90  # fault\n", "unknown key 'thresold'", None),
    ("unknown_key_with_a_block_value", HEAD + "      - alert: A\n        table: system_metrics\n"
     "        metric: cpu\n        threshold: 90\n        extra:  # fault\n          x: 1\n",
     "unknown key 'extra'", None),
    ("missing_threshold", HEAD + "      - alert: A  # fault\n        table: system_metrics\n"
     "        metric: cpu\n        op: '>'\n", "rule A: threshold is required", None),
    ("bad_op", HEAD + "      - alert: A\n        table: system_metrics\n        metric: cpu\n"
     "        op: '=>'  # fault\n        threshold: 1\n", "op: '=>' is not one of", None),
    ("bad_for_duration", HEAD + "      - alert: A\n        table: system_metrics\n"
     "        metric: cpu\n        threshold: 1\n        for: 5x  # fault\n",
     "for: '5x' is not a duration", None),
    ("bad_window_duration", HEAD + "      - alert: A\n        table: system_metrics\n"
     "        window: soon  # fault\n        metric: cpu\n        threshold: 1\n",
     "window: 'soon' is not a duration", None),
    ("window_out_of_range", HEAD + "      - alert: A\n        table: system_metrics\n"
     "        metric: cpu\n        window: 40d  # fault\n        threshold: 1\n",
     "window must be between 1s and 31d", None),
    ("bad_interval", "groups:\n  - name: g\n    interval: 500ms  # fault\n    rules:\n"
     "      - alert: A\n        table: system_metrics\n        metric: cpu\n"
     "        threshold: 1\n", "interval: at least 1s", None),
    ("threshold_not_a_number", HEAD + "      - alert: A\n        table: system_metrics\n"
     "        metric: cpu\n        threshold: high  # fault\n", "threshold: 'high' is not a number",
     None),
    ("unknown_aggregation", HEAD + "      - alert: A\n        table: system_metrics\n"
     "        metric: cpu\n        aggregation: median  # fault\n        threshold: 1\n",
     "aggregation: 'median' is not one of", None),
    ("both_table_and_sql", HEAD + "      - alert: A  # fault\n        table: system_metrics\n"
     "        sql: SELECT 1 AS value\n        threshold: 1\n", "give either table", None),
    ("neither_table_nor_sql", HEAD + "      - alert: A  # fault\n        metric: cpu\n"
     "        threshold: 1\n", "give either table", None),
    ("unknown_table", HEAD + "      - alert: A\n        table: metrics  # fault\n"
     "        metric: cpu\n        threshold: 1\n", "table 'metrics' is not a table", None),
    ("unknown_metric_column", HEAD + "      - alert: A\n        table: api_usage\n"
     "        metric: latency  # fault\n        threshold: 1\n",
     "metric 'latency' is not a numeric column of api_usage", None),
    ("text_metric_column", HEAD + "      - alert: A\n        table: api_usage\n"
     "        metric: endpoint  # fault\n        threshold: 1\n",
     "metric 'endpoint' is not a numeric column", None),
    ("unknown_by_column", HEAD + "      - alert: A\n        table: api_usage\n"
     "        metric: latency_ms\n        by: [endpoint, route]  # fault\n        threshold: 1\n",
     "by: 'route' is not a column of api_usage", None),
    ("by_on_system_metrics", HEAD + "      - alert: A\n        table: system_metrics\n"
     "        metric: cpu\n        by: [host]  # fault\n        threshold: 1\n",
     "by is for event tables", None),
    ("unknown_filter_column", HEAD + "      - alert: A\n        table: api_usage\n"
     "        metric: latency_ms\n        filter: path=/x  # fault\n        threshold: 1\n",
     "filter: 'path' is not a column of api_usage", None),
    ("bad_filter_regex", HEAD + "      - alert: A\n        table: api_usage\n"
     "        metric: latency_ms\n        filter: endpoint=~(api  # fault\n        threshold: 1\n",
     "is not a valid regular expression", None),
    ("resolve_threshold_wrong_side_above", HEAD + "      - alert: A\n"
     "        table: system_metrics\n        metric: cpu\n        op: '>'\n        threshold: 90\n"
     "        resolve_threshold: 95  # fault\n", "must be on the quiet side of threshold 90", None),
    ("resolve_threshold_wrong_side_below", HEAD + "      - alert: A\n"
     "        table: system_metrics\n        metric: cpu\n        op: '<'\n"
     "        resolve_threshold: 5  # fault\n"
     "        threshold: 10\n", "must be on the quiet side of threshold 10", None),
    ("resolve_threshold_with_equality", HEAD + "      - alert: A\n        table: system_metrics\n"
     "        metric: cpu\n        op: '=='\n        threshold: 90\n"
     "        resolve_threshold: 80  # fault\n", "resolve_threshold needs op", None),
    ("n_of_m_n_above_m", HEAD + "      - alert: A\n        table: system_metrics\n"
     "        metric: cpu\n        threshold: 1\n        n_of_m: 3/2  # fault\n",
     "n_of_m: '3/2' is not N/M", None),
    ("n_of_m_not_a_fraction", HEAD + "      - alert: A\n        table: system_metrics\n"
     "        metric: cpu\n        threshold: 1\n        n_of_m: 2/3/4  # fault\n",
     "n_of_m: '2/3/4' is not N/M", None),
    ("labels_not_a_map", HEAD + "      - alert: A\n        table: system_metrics\n"
     "        metric: cpu\n        threshold: 1\n        labels: [team, ops]  # fault\n",
     "labels: expected a map", None),
    ("alertname_in_labels", HEAD + "      - alert: A\n        table: system_metrics\n"
     "        metric: cpu\n        threshold: 1\n        labels:\n          team: ops\n"
     "          alertname: B  # fault\n", "alertname is the rule's name", None),
    ("duplicate_group", HEAD + "      - alert: A\n        sql: SELECT 1 AS value\n"
     "  - name: g  # fault\n    rules:\n      - alert: B\n        sql: SELECT 2 AS value\n",
     "group 'g' is defined twice", None),
    ("bad_yaml", HEAD + "      - alert: A\n        table: system_metrics\n"
     "        metric: cpu: usage  # fault\n        threshold: 1\n",
     "mapping values are not allowed", None),
]


@pytest.fixture
def check_file(tmp_path):
    def write(name, text):
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        return path
    return write


def test_check_accepts_good_files(run_cli, check_file):
    groups = [
        {"name": "hosts", "interval": "30s", "rules": [
            {"alert": "HighCpu", "table": "system_metrics", "metric": "cpu_usage",
             "filter": "component!=batch,host=~web-.*", "aggregation": "max", "window": "5m",
             "op": ">", "threshold": 90, "resolve_threshold": 80, "for": "1m",
             "keep_firing_for": "2m", "labels": {"severity": "critical"},
             "annotations": {"summary": "cpu {{ $labels.host }} {{ $value }}"}},
            {"alert": "Traffic", "table": "api_usage", "by": ["endpoint", "service"],
             "aggregation": "rate", "op": "<", "threshold": 0.5, "n_of_m": "3/5"},
        ]},
        {"name": "sql", "rules": [
            {"alert": "Errors", "sql": "SELECT service, count(*) AS value FROM error_logs "
                                       "WHERE ts >= :window_start GROUP BY service",
             "op": ">=", "threshold": 10},
            {"alert": "AnyRow", "sql": "SELECT 1 AS x"},
            {"alert": "P99", "table": "api_usage", "metric": "latency_ms", "aggregation": "p99",
             "threshold": 500},
        ]},
    ]
    text, _ = rules_yaml(groups)
    good = check_file("good", text)
    empty = check_file("empty", "")
    cp = run_cli("alerts", "check", good, empty)
    assert cp.returncode == 0, cp.stderr
    nrules = sum(len(g["rules"]) for g in groups)
    assert cp.stdout.splitlines() == [
        f"{good}: ok, {len(groups)} groups, {nrules} rules",
        f"{empty}: ok, 0 groups, 0 rules",
    ]
    assert cp.stderr == ""


@pytest.mark.parametrize("case", [c[0] for c in CHECK_CASES])
def test_check_refuses_a_mistake_with_its_file(run_cli, check_file, case):
    _, text, fragment, _ = next(c for c in CHECK_CASES if c[0] == case)
    path = check_file(case, text)
    cp = run_cli("alerts", "check", path)
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    assert cp.stdout == ""
    lines = cp.stderr.splitlines()
    assert len(lines) == 1, cp.stderr
    assert re.match(rf"^{re.escape(str(path))}:\d+: ", lines[0]), lines[0]
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("case", [
    pytest.param(c[0], marks=[pytest.mark.xfail(strict=True, reason=c[3])] if c[3] else [])
    for c in CHECK_CASES])
def test_check_names_the_line_at_fault(run_cli, check_file, case):
    _, text, fragment, _ = next(c for c in CHECK_CASES if c[0] == case)
    path = check_file(case, text)
    cp = run_cli("alerts", "check", path)
    assert cp.returncode == 1
    assert cp.stderr.startswith(f"{path}:{fault_line(text)}: "), \
        f"want line {fault_line(text)}: {cp.stderr}"


def test_check_refuses_a_duplicate_of_an_empty_group(run_cli, check_file):
    text = ("groups:\n  - name: g\n    rules: []\n  - name: g  # fault\n    rules:\n"
            "      - alert: A\n        sql: SELECT 1 AS value\n")
    path = check_file("dup_empty", text)
    cp = run_cli("alerts", "check", path)
    assert cp.returncode == 1, cp.stdout
    assert cp.stderr.startswith(f"{path}:{fault_line(text)}: group 'g' is defined twice")


@pytest.mark.parametrize("case", ["missing_threshold", "resolve_threshold_wrong_side_above",
                                  "bad_yaml"])
def test_serve_refuses_a_bad_rule_file(server_factory, run_cli, check_file, case):
    _, text, fragment, _ = next(c for c in CHECK_CASES if c[0] == case)
    path = check_file(case, text)
    message = run_cli("alerts", "check", path).stderr.strip()
    assert message.startswith(f"{path}:") and fragment in message
    srv = server_factory("--set", f"alerting.rule_files={path}", start=False)
    with pytest.raises(ServerStartError):
        srv.start()
    assert srv.returncode not in (0, None)
    assert message in srv.run_stderr(), srv.run_stderr()[-3000:]


# =============================================================================================
# 2. a threshold rule with for: 0s
# =============================================================================================


def test_for_zero_fires_within_a_second_of_the_ingest(server_factory, tmp_path):
    rule = {"alert": "HighCpu", "table": "system_metrics", "metric": "cpu_usage",
            "filter": "component!=batch,host=~web-.*", "aggregation": "max", "window": "1m",
            "op": ">", "threshold": 90, "for": "0s",
            "labels": {"severity": "critical", "team": "ops"},
            "annotations": {"summary": "cpu on {{ $labels.host }}/{{ $labels.core }} is "
                                       "{{ $value }}",
                            "runbook": "see {{ $labels.nosuch }}|{{ $other }}"}}
    a = start_alerting(server_factory, tmp_path,
                       [{"name": "hosts", "interval": "1h", "rules": [rule]}])
    srv = a.srv
    assert get_alerts(srv) == []
    t = now_ms()
    rows = [
        sample(t, "web-1", "app", "cpu_usage", 97.25, core="0"),   # crosses
        sample(t, "web-1", "batch", "cpu_usage", 99.5, core="0"),  # filtered out: component
        sample(t, "db-1", "app", "cpu_usage", 99.75, core="1"),    # filtered out: host
        sample(t, "web-2", "app", "cpu_usage", 42.0, core="0"),    # below the threshold
        sample(t, "web-3", "app", "memory_usage", 99.0),           # another metric
    ]
    want = {}
    for r in rows:
        fields = {"host": r["host"], "component": r["component"], **r["labels"]}
        if (r["metric"] == rule["metric"] and matcher_ok(rule["filter"], fields)
                and compare(rule["op"], r["value"], rule["threshold"])):
            labels = {**r["labels"], "host": r["host"], "component": r["component"],
                      **rule["labels"], "alertname": rule["alert"]}
            want[json.dumps(labels, sort_keys=True)] = (labels, r["value"])
    assert len(want) == 1  # the case is built so; the filter's exclusions are the point
    ingest(srv, "system_metrics", rows)
    returned = time.monotonic()
    got = wait_until(lambda: get_alerts(srv), timeout=5, interval=0.02)
    elapsed = time.monotonic() - returned
    assert got, "no alert within 5 s"
    assert elapsed < 1.0, f"the alert showed {elapsed:.3f} s after the ingest returned"
    assert len(got) == len(want), got
    alert = got[0]
    labels, value = next(iter(want.values()))
    assert alert["labels"] == labels
    assert alert["state"] == "firing"
    assert alert["value"] == value
    assert alert["rule"] == "HighCpu" and alert["group"] == "hosts"
    summary = f"cpu on {labels['host']}/{labels['core']} is {number_text(value)}"
    assert alert["annotations"] == {"summary": summary, "runbook": "see |{{ $other }}"}
    assert alert["summary"] == summary
    assert alert["fired_at"] is not None and re.match(r"^\d{4}-\d\d-\d\dT", alert["fired_at"])
    assert re.fullmatch(r"[0-9a-f]{16}", alert["id"])

    rows_h = wait_until(lambda: history(srv, alert["id"]), timeout=5)
    assert states(rows_h) == ["firing"], rows_h
    h = rows_h[0]
    assert h["rule"] == "HighCpu" and h["severity"] == "critical" and h["value"] == value
    assert json.loads(h["labels"]) == labels and h["summary"] == summary
    assert t <= h["ts"] <= now_ms()

    # more samples above the threshold: evaluated again, still the one firing row
    before = rule_info(srv, "HighCpu")["evaluations"]
    ingest(srv, "system_metrics", [sample(now_ms(), "web-1", "app", "cpu_usage", 98.0, core="0")])
    wait_evaluated(srv, "HighCpu", before)
    assert [x["id"] for x in get_alerts(srv)] == [alert["id"]]
    assert get_alerts(srv)[0]["value"] == 98.0  # max over the window
    assert states(history(srv, rule="HighCpu")) == ["firing"]


def outside_ingest(srv, run_cli, rows):
    """Writes rows with `opsdb ingest` on the server's database (another process)."""
    cp = run_cli("ingest", "system_metrics", "--db", srv.db,
                 input="".join(json.dumps(r) + "\n" for r in rows))
    assert cp.returncode == 0, cp.stderr


OUTSIDE_RULE = {"alert": "Outside", "table": "system_metrics", "metric": "cpu", "window": "1m",
                "op": ">", "threshold": 90}


def test_rows_of_another_process_are_evaluated(server_factory, tmp_path, run_cli):
    """`opsdb ingest` on the server's database: the writer notices the outside commit (it looks
    once a second when idle) and wakes every threshold rule, with no interval to wait for."""
    a = start_alerting(server_factory, tmp_path, [{"name": "g", "interval": "1h",
                                                   "rules": [OUTSIDE_RULE]}])
    srv = a.srv
    time.sleep(1.5)  # past the writer's first look (see the next test)
    before = rule_info(srv, "Outside")["evaluations"]
    t = now_ms()
    outside_ingest(srv, run_cli, [sample(t, "h1", "c", "cpu", 91.5),
                                  sample(t, "h2", "c", "cpu", 12.0)])
    x = wait_until(lambda: one_alert(srv, "Outside"), timeout=4)
    assert x, rule_info(srv, "Outside")
    assert x["labels"]["host"] == "h1" and x["value"] == 91.5 and x["state"] == "firing"
    assert rule_info(srv, "Outside")["evaluations"] > before


def test_rows_of_another_process_right_after_start_are_evaluated(server_factory, tmp_path,
                                                                 run_cli):
    t0 = time.monotonic()
    a = start_alerting(server_factory, tmp_path, [{"name": "g", "interval": "1h",
                                                   "rules": [OUTSIDE_RULE]}])
    srv = a.srv
    outside_ingest(srv, run_cli, [sample(now_ms(), "h1", "c", "cpu", 91.5)])
    if time.monotonic() - t0 >= 1.0:  # the writer started after t0: it may have looked already
        pytest.skip("the outside commit came later than the writer's first look")
    x = wait_until(lambda: one_alert(srv, "Outside"), timeout=4)
    assert x, rule_info(srv, "Outside")
    assert x["value"] == 91.5


# =============================================================================================
# 3. states: for, hysteresis, keep_firing_for, n_of_m
# =============================================================================================


def test_for_goes_through_pending_and_a_vanished_condition_never_fires(server_factory, tmp_path):
    rules = [
        {"alert": "Slow", "table": "system_metrics", "metric": "load", "aggregation": "max",
         "window": "1m", "op": ">", "threshold": 5, "for": "2s"},
        # a 2s window: the sample ages out long before `for` is over
        {"alert": "Blip", "table": "system_metrics", "metric": "blip", "aggregation": "max",
         "window": "2s", "op": ">", "threshold": 5, "for": "30s"},
    ]
    a = start_alerting(server_factory, tmp_path, [{"name": "g", "interval": "1s", "rules": rules}])
    srv = a.srv
    t = now_ms()
    ingest(srv, "system_metrics", [sample(t, "h1", "c", "load", 7.5),
                                   sample(t, "h1", "c", "blip", 9.0)])
    pend = wait_until(lambda: one_alert(srv, "Slow", "pending"), timeout=3)
    assert pend, get_alerts(srv)
    assert pend["fired_at"] is None and pend["value"] == 7.5
    blip = wait_until(lambda: one_alert(srv, "Blip", "pending"), timeout=3)
    assert blip, get_alerts(srv)
    # the rules' state in /api/v1/rules while pending
    assert rule_info(srv, "Slow")["state"] == "pending"

    fired = wait_until(lambda: one_alert(srv, "Slow", "firing"), timeout=8)
    assert fired, get_alerts(srv)
    assert fired["id"] == pend["id"] and fired["active_since"] == pend["active_since"]
    h = wait_until(lambda: (lambda r: r if len(r) >= 2 else None)(history(srv, pend["id"])),
                   timeout=5)
    assert states(h) == ["pending", "firing"], h
    assert h[1]["ts"] - h[0]["ts"] >= 2000, h  # `for: 2s` between them

    # Blip's sample leaves its 2s window before `for` is over: resolved, never firing
    gone = wait_until(lambda: not get_alerts(srv, "Blip"), timeout=8)
    assert gone, get_alerts(srv, "Blip")
    hb = wait_until(lambda: (lambda r: r if len(r) >= 2 else None)(history(srv, blip["id"])),
                    timeout=5)
    assert states(hb) == ["pending", "resolved"], hb
    assert hb[1]["ts"] - hb[0]["ts"] < 30000
    assert rule_info(srv, "Slow")["state"] == "firing"
    assert rule_info(srv, "Blip")["state"] == "inactive"


def test_hysteresis_keeps_firing_above_resolve_threshold(server_factory, tmp_path):
    # min over a long window: each new lower sample sets the window's value at once
    base = {"table": "system_metrics", "metric": "temp", "aggregation": "min", "window": "5m",
            "op": ">", "threshold": 90}
    rules = [{"alert": "Hyst", **base, "resolve_threshold": 80}, {"alert": "Plain", **base}]
    a = start_alerting(server_factory, tmp_path, [{"name": "g", "interval": "1h", "rules": rules}])
    srv = a.srv
    t = now_ms()
    # h2 starts at 85: between the thresholds, which fires nothing while quiet
    ingest(srv, "system_metrics", [sample(t, "h1", "c", "temp", 95.0),
                                   sample(t, "h2", "c", "temp", 85.0)])
    both = wait_until(lambda: len(get_alerts(srv)) == 2 and get_alerts(srv), timeout=3)
    assert both, get_alerts(srv)
    assert {(x["rule"], x["labels"]["host"]) for x in both} == {("Hyst", "h1"), ("Plain", "h1")}
    hyst_id = one_alert(srv, "Hyst")["id"]
    plain_id = one_alert(srv, "Plain")["id"]

    ingest(srv, "system_metrics", [sample(t + 1, "h1", "c", "temp", 85.0)])
    assert wait_until(lambda: not get_alerts(srv, "Plain"), timeout=3), get_alerts(srv)
    h = one_alert(srv, "Hyst")
    assert h and h["state"] == "firing" and h["value"] == 85.0 and h["id"] == hyst_id
    assert states(wait_until(lambda: (lambda r: r if len(r) == 2 else None)(
        history(srv, plain_id)), timeout=3) or history(srv, plain_id)) == ["firing", "resolved"]

    ingest(srv, "system_metrics", [sample(t + 2, "h1", "c", "temp", 79.5)])
    assert wait_until(lambda: not get_alerts(srv, "Hyst"), timeout=3), get_alerts(srv)
    rows = wait_until(lambda: (lambda r: r if len(r) == 2 else None)(history(srv, hyst_id)),
                      timeout=3)
    assert rows and states(rows) == ["firing", "resolved"], history(srv, hyst_id)
    assert rows[1]["value"] == 79.5
    assert get_alerts(srv) == []


def test_keep_firing_for_holds_a_firing_alert(server_factory, tmp_path):
    base = {"table": "system_metrics", "metric": "errs", "aggregation": "min", "window": "5m",
            "op": ">", "threshold": 10}
    keep_s = 3
    rules = [{"alert": "Held", **base, "keep_firing_for": f"{keep_s}s"},
             {"alert": "Unheld", **base}]
    a = start_alerting(server_factory, tmp_path, [{"name": "g", "interval": "1s", "rules": rules}])
    srv = a.srv
    t = now_ms()
    ingest(srv, "system_metrics", [sample(t, "h1", "c", "errs", 50.0)])
    assert wait_until(lambda: len(get_alerts(srv)) == 2, timeout=3), get_alerts(srv)
    held_id = one_alert(srv, "Held")["id"]
    assert rule_info(srv, "Held")["keep_firing_for_s"] == keep_s

    t_drop = now_ms()
    ingest(srv, "system_metrics", [sample(t + 1, "h1", "c", "errs", 1.0)])
    assert wait_until(lambda: not get_alerts(srv, "Unheld"), timeout=3), get_alerts(srv)
    # the last hit was at most an interval (1s) before the drop: held at least 2s after it
    while now_ms() < t_drop + 1500:
        x = one_alert(srv, "Held")
        assert x and x["state"] == "firing", f"released {now_ms() - t_drop} ms after the drop"
        time.sleep(0.1)
    assert wait_until(lambda: not get_alerts(srv, "Held"), timeout=keep_s + 4), get_alerts(srv)
    rows = wait_until(lambda: (lambda r: r if len(r) == 2 else None)(history(srv, held_id)),
                      timeout=3)
    assert rows and states(rows) == ["firing", "resolved"], history(srv, held_id)
    assert rows[1]["ts"] - t_drop >= (keep_s - 1) * 1000 - 300, (rows, t_drop)


def test_n_of_m_counts_the_last_m_evaluations(server_factory, tmp_path):
    # a 1s window and a 1h interval: each ingest (1.2 s apart) is one evaluation that sees only
    # the sample just sent
    n, m = 2, 3
    rule = {"alert": "Flappy", "table": "system_metrics", "metric": "q", "aggregation": "max",
            "window": "1s", "op": ">", "threshold": 10, "n_of_m": f"{n}/{m}"}
    a = start_alerting(server_factory, tmp_path, [{"name": "g", "interval": "1h", "rules": [rule]}])
    srv = a.srv
    values = [20.0, 1.0, 30.0, 40.0, 2.0, 3.0]
    outcomes, expect_firing = [], []
    for v in values:
        outcomes.append(compare(">", v, 10))
        expect_firing.append(sum(outcomes[-m:]) >= n)
    assert True in expect_firing and expect_firing[0] is False  # the sequence shows both
    seen = []
    for i, v in enumerate(values):
        before = (rule_info(srv, "Flappy") or {}).get("evaluations", 0)
        sent = time.monotonic()
        ingest(srv, "system_metrics", [sample(now_ms(), "h", "c", "q", v)])
        info = wait_evaluated(srv, "Flappy", before, timeout=3)
        assert info["evaluations"] == before + 1, info
        x = one_alert(srv, "Flappy")
        seen.append(x is not None and x["state"] == "firing")
        if x:
            assert x["value"] == v
        time.sleep(max(0.0, 1.2 - (time.monotonic() - sent)))
    assert seen == expect_firing, (values, seen, expect_firing)
    rows = history(srv, rule="Flappy")
    # one firing row where the alert started firing, one resolved where it stopped
    want = []
    for prev, cur in zip([False] + expect_firing, expect_firing):
        if cur and not prev:
            want.append("firing")
        if prev and not cur:
            want.append("resolved")
    assert states(rows) == want, rows


# =============================================================================================
# 4. aggregations on system_metrics
# =============================================================================================

SERIES_AGGS = ["avg", "min", "max", "sum", "count", "rate", "p50", "p95", "p99"]


def test_series_aggregations_match_the_samples(server_factory, tmp_path):
    rng = random.Random(SEED)
    window_ms = 60_000
    rules = [{"alert": f"Agg_{agg}", "table": "system_metrics",
              "metric": "ctr" if agg == "rate" else "gauge", "aggregation": agg,
              "window": "1m", "op": ">", "threshold": -1e12} for agg in SERIES_AGGS]
    a = start_alerting(server_factory, tmp_path, [{"name": "aggs", "interval": "1h",
                                                   "rules": rules}])
    srv = a.srv
    t = now_ms()
    rows, inside = [], {}

    def add(ts, host, metric, v, counted):
        rows.append(sample(ts, host, "svc", metric, v))
        if counted:
            inside.setdefault((metric, host), []).append((ts, v))
    # samples in the last 40 s: inside the 1m window of any evaluation in the next 20 s
    for host in ("a", "b"):
        for off in sorted(rng.sample(range(0, 40_000), 25)):
            add(t - 40_000 + off, host, "gauge", round(rng.uniform(-50, 150), 3), True)
        ctr = rng.randint(0, 100)  # a counter with two resets
        for i, off in enumerate(sorted(rng.sample(range(0, 40_000), 12))):
            ctr = rng.randint(0, 30) if i in (4, 9) else ctr + rng.randint(0, 50)
            add(t - 40_000 + off, host, "ctr", float(ctr), True)
        for metric in ("gauge", "ctr"):  # out of the window on both sides
            add(t - window_ms - 30_000, host, metric, 1e6, False)
            add(t + 90_000, host, metric, 0.0, False)
    ingest(srv, "system_metrics", rows)
    want = {}
    for agg in SERIES_AGGS:
        metric = "ctr" if agg == "rate" else "gauge"
        for host in ("a", "b"):
            want[(f"Agg_{agg}", host)] = series_agg(agg, inside[(metric, host)])
    got = wait_until(lambda: (lambda al: al if len(al) == len(want) else None)(get_alerts(srv)),
                     timeout=5)
    assert got, (get_alerts(srv), want)
    assert int(time.time() * 1000) - t < 20_000  # the window reasoning above holds
    values = {(x["rule"], x["labels"]["host"]): x["value"] for x in got}
    assert sorted(values) == sorted(want)
    bad = {k: (values[k], w) for k, w in want.items() if not close(values[k], w)}
    assert not bad, f"(got, want): {bad}"
    assert values[("Agg_count", "a")] == 25


# =============================================================================================
# 5. an event-table rule
# =============================================================================================


def gen_api_rows(rng, t, window_ms):
    """api_usage rows around t: in the window, before it, after t; some pre-counted, some
    without latency, some on endpoints or methods the filter leaves out."""
    rows = []
    endpoints = ["/api/users", "/api/orders", "/api/search", "/api/login", "/health", "/metrics"]
    for _ in range(220):
        ep = rng.choice(endpoints)
        row = {"ts": t - rng.randint(0, window_ms - 5_000), "service": rng.choice(["a", "b"]),
               "method": rng.choice(["GET", "GET", "POST", "OPTIONS"]), "endpoint": ep,
               "status_code": rng.choice([200, 200, 201, 404, 500, 503])}
        scale = {"/api/users": 40, "/api/orders": 120, "/api/search": 300}.get(ep, 80)
        if rng.random() < 0.9:
            row["latency_ms"] = round(rng.lognormvariate(math.log(scale), 0.6), 3)
        if rng.random() < 0.3:
            row["count"] = rng.randint(2, 7)
        rows.append(row)
    for ep in endpoints:  # outside the window: before it, and after now
        rows.append({"ts": t - window_ms - 20_000, "method": "GET", "endpoint": ep,
                     "status_code": 200, "latency_ms": 9e6, "count": 50})
        rows.append({"ts": t + 120_000, "method": "GET", "endpoint": ep, "status_code": 200,
                     "latency_ms": 8e6, "count": 50})
    return rows


def expect_event_rule(rows, rule, t, window_ms):
    """{by values: value} of an event rule over the rows in (t - window, t]."""
    groups = {}
    for r in rows:
        if not (t - window_ms < r["ts"] <= t) or not matcher_ok(rule.get("filter", ""), r):
            continue
        key = tuple(str(r.get(c, "")) for c in rule["by"])
        groups.setdefault(key, []).append(r)
    out = {}
    metric = rule.get("metric")
    for key, g in groups.items():
        weighted = [(r.get(metric) if metric else 1, r.get("count", 1)) for r in g]
        weighted = [(v, w) for v, w in weighted if v is not None]
        agg = rule["aggregation"]
        if agg in ("count", "rate"):
            n = sum(w for _, w in weighted)
            out[key] = n if agg == "count" else n / (window_ms / 1000)
        elif agg.startswith("p"):
            expanded = [v for v, w in weighted for _ in range(w)]
            if expanded:
                out[key] = percentile(expanded, int(agg[1:]))
        else:
            raise AssertionError(agg)
    return out


def test_event_rule_one_alert_per_group(server_factory, tmp_path):
    rng = random.Random(SEED + 5)
    window_ms = 60_000
    t = now_ms()
    rows = gen_api_rows(rng, t, window_ms)
    flt = "endpoint=~/api/.*,method!=OPTIONS"
    base = {"table": "api_usage", "by": ["endpoint"], "filter": flt, "window": "1m", "op": ">"}
    rules = [
        {"alert": "LatencyP95", **base, "metric": "latency_ms", "aggregation": "p95",
         "labels": {"severity": "page"}, "annotations": {"summary": "{{ $labels.endpoint }}"}},
        {"alert": "Timed", **base, "metric": "latency_ms", "aggregation": "count"},
        {"alert": "Requests", **base, "aggregation": "count"},
    ]
    want = {}
    for r in rules:
        r_all = dict(r, threshold=0)
        values = expect_event_rule(rows, r_all, t, window_ms)
        r["threshold"] = between(values.values())
        want[r["alert"]] = {k: v for k, v in values.items() if v > r["threshold"]}
        assert 0 < len(want[r["alert"]]) < len(values), (r, values)  # some cross, some not
    a = start_alerting(server_factory, tmp_path, [{"name": "api", "interval": "1h",
                                                   "rules": rules}])
    srv = a.srv
    # shifted to the time of the ingest: the window is the server's (now - 1m, now]
    shift = now_ms() - t
    for row in rows:
        row["ts"] += shift
    ingest(srv, "api_usage", rows)
    total = sum(len(w) for w in want.values())
    got = wait_until(lambda: (lambda al: al if len(al) >= total else None)(get_alerts(srv)),
                     timeout=5)
    assert got, (get_alerts(srv), want)
    for name, w in want.items():
        mine = {(x["labels"]["endpoint"],): x for x in got if x["rule"] == name}
        assert sorted(mine) == sorted(w), (name, sorted(mine), w)
        for k, x in mine.items():
            assert close(x["value"], w[k]), (name, k, x["value"], w[k])
            assert x["state"] == "firing"
            want_labels = {"endpoint": k[0], "alertname": name,
                           **next(r for r in rules if r["alert"] == name).get("labels", {})}
            assert x["labels"] == want_labels
    assert all(x["summary"] == x["labels"]["endpoint"] for x in got if x["rule"] == "LatencyP95")
    assert len(got) == total


def test_event_rule_rate_is_per_second_of_the_window(server_factory, tmp_path):
    rng = random.Random(SEED + 7)
    window_ms = 60_000
    t = now_ms()
    rows = gen_api_rows(rng, t, window_ms)
    rule = {"alert": "Busy", "table": "api_usage", "by": ["endpoint"], "aggregation": "rate",
            "filter": "endpoint=~/api/.*,method!=OPTIONS", "window": "1m", "op": ">",
            "threshold": -1}
    want = expect_event_rule(rows, rule, t, window_ms)
    assert any(v != int(v) for v in want.values())
    a = start_alerting(server_factory, tmp_path, [{"name": "api", "interval": "1h",
                                                   "rules": [rule]}])
    srv = a.srv
    shift = now_ms() - t
    for row in rows:
        row["ts"] += shift
    ingest(srv, "api_usage", rows)
    got = wait_until(lambda: (lambda al: al if len(al) == len(want) else None)(get_alerts(srv)),
                     timeout=5)
    assert got, (get_alerts(srv), want)
    values = {(x["labels"]["endpoint"],): x["value"] for x in got}
    bad = {k: (values.get(k), w) for k, w in want.items() if not close(values.get(k), w)}
    assert not bad, f"(got, want): {bad}"


def test_event_rule_filter_equality_on_an_integer_column(server_factory, tmp_path):
    t = now_ms()
    codes = [200, 500, 500, 404, 503, 500, 200]
    rows = [{"ts": t - 100 * i, "method": "GET", "endpoint": f"/e{i % 2}", "status_code": c,
             "latency_ms": 1.0} for i, c in enumerate(codes)]
    rules = [
        {"alert": "Regex500", "table": "api_usage", "by": ["endpoint"], "aggregation": "count",
         "filter": "status_code=~500", "window": "1m", "op": ">", "threshold": 0},
        {"alert": "Eq500", "table": "api_usage", "by": ["endpoint"], "aggregation": "count",
         "filter": "status_code=500", "window": "1m", "op": ">", "threshold": 0},
        {"alert": "Not500", "table": "api_usage", "by": ["endpoint"], "aggregation": "count",
         "filter": "status_code!=500", "window": "1m", "op": ">", "threshold": 0},
    ]
    a = start_alerting(server_factory, tmp_path, [{"name": "codes", "interval": "1h",
                                                   "rules": rules}])
    srv = a.srv
    ingest(srv, "api_usage", rows)
    want = {}
    for r in rules:
        want[r["alert"]] = expect_event_rule(rows, dict(r), t + 10, 60_000)
    assert wait_until(lambda: get_alerts(srv, "Regex500"), timeout=3)
    time.sleep(0.3)
    for name, w in want.items():
        got = {(x["labels"]["endpoint"],): x["value"] for x in get_alerts(srv, name)}
        assert got == w, (name, got, w)


# =============================================================================================
# 6. SQL rules
# =============================================================================================


def test_sql_rules_and_their_failures(server_factory, tmp_path):
    window = "1m"
    rules = [
        {"alert": "HotEndpoint",
         "sql": "SELECT endpoint, service, count(*) AS value FROM api_usage "
                "WHERE ts >= :window_start AND ts <= :now GROUP BY endpoint, service",
         "window": window, "op": ">", "threshold": 2,
         "annotations": {"summary": "{{ $labels.endpoint }} has {{ $value }}"}},
        {"alert": "EveryHost",
         "sql": "SELECT host, count(*) AS value FROM api_usage "
                "WHERE ts >= :window_start AND ts <= :now GROUP BY host",
         "window": window},
        {"alert": "NoValue", "sql": "SELECT DISTINCT service FROM api_usage "
                                    "WHERE ts >= :window_start AND ts <= :now"},
        {"alert": "BadColumn", "sql": "SELECT nosuch AS value FROM api_usage", "op": ">",
         "threshold": 0},
        {"alert": "Writes", "sql": "DELETE FROM api_usage"},
        {"alert": "MissingValue", "sql": "SELECT 1 AS v", "op": ">", "threshold": 0},
    ]
    a = start_alerting(server_factory, tmp_path, [{"name": "sql", "interval": "1s",
                                                   "rules": rules}])
    srv = a.srv
    t = now_ms()
    rng = random.Random(SEED + 6)
    rows = [{"ts": t - rng.randint(0, 20_000), "service": rng.choice(["s1", "s2"]),
             "host": rng.choice(["h1", "h2", "h3"]), "method": "GET",
             "endpoint": rng.choice(["/a", "/b", "/c"]), "status_code": 200} for _ in range(25)]
    ingest(srv, "api_usage", rows)
    groups, hosts = {}, {}
    for r in rows:
        groups[(r["endpoint"], r["service"])] = groups.get((r["endpoint"], r["service"]), 0) + 1
        hosts[r["host"]] = hosts.get(r["host"], 0) + 1
    hot = {k: v for k, v in groups.items() if v > 2}
    assert 0 < len(hot) < len(groups)

    def settled():
        al = get_alerts(srv)
        n = {name: sum(1 for x in al if x["rule"] == name) for name in
             ("HotEndpoint", "EveryHost", "NoValue")}
        return al if n == {"HotEndpoint": len(hot), "EveryHost": len(hosts),
                           "NoValue": len({r["service"] for r in rows})} else None
    al = wait_until(settled, timeout=5)
    assert al, get_alerts(srv)
    got_hot = {(x["labels"]["endpoint"], x["labels"]["service"]): x for x in al
               if x["rule"] == "HotEndpoint"}
    assert {k: x["value"] for k, x in got_hot.items()} == hot
    for (ep, svc), x in got_hot.items():
        assert x["labels"] == {"endpoint": ep, "service": svc, "alertname": "HotEndpoint"}
        assert x["summary"] == f"{ep} has {hot[(ep, svc)]}"
    got_hosts = {x["labels"]["host"]: x["value"] for x in al if x["rule"] == "EveryHost"}
    assert got_hosts == hosts  # every row, even a count of 1, without a threshold
    for x in al:
        if x["rule"] == "NoValue":
            assert x["value"] is None and set(x["labels"]) == {"service", "alertname"}

    # the failing rules: their error, failures counted, nothing written, the server goes on
    fails0 = metric_lines(srv)["opsdb_alert_evaluation_failures_total"]
    errors = {n: rule_info(srv, n) for n in ("BadColumn", "Writes", "MissingValue")}
    assert "nosuch" in (errors["BadColumn"]["last_error"] or ""), errors["BadColumn"]
    assert "read-only" in (errors["Writes"]["last_error"] or ""), errors["Writes"]
    assert "value" in (errors["MissingValue"]["last_error"] or ""), errors["MissingValue"]
    for n, info in errors.items():
        assert info["failures"] >= 1 and info["failures"] == info["evaluations"], info
    for n in ("HotEndpoint", "EveryHost", "NoValue"):
        assert rule_info(srv, n)["last_error"] is None
    assert wait_until(lambda: metric_lines(srv)["opsdb_alert_evaluation_failures_total"]
                      > fails0, timeout=4)
    assert srv.count("api_usage") == len(rows)
    assert srv.get("/healthz").status_code == 200
    assert srv.running


# =============================================================================================
# 7. acknowledge
# =============================================================================================


def test_acknowledge_through_http_and_the_cli(server_factory, tmp_path, run_cli):
    base = {"table": "system_metrics", "metric": "disk", "aggregation": "min", "window": "5m",
            "op": ">", "threshold": 90}
    rules = [{"alert": "DiskFull", **base}, {"alert": "DiskSoon", **base, "for": "1h"}]
    a = start_alerting(server_factory, tmp_path, [{"name": "g", "interval": "1s", "rules": rules}])
    srv = a.srv
    server_arg = f"127.0.0.1:{srv.port}"
    t = now_ms()
    ingest(srv, "system_metrics", [sample(t, "h1", "c", "disk", 95.0),
                                   sample(t, "h2", "c", "disk", 96.0)])
    assert wait_until(lambda: len(get_alerts(srv, "DiskFull")) == 2
                      and len(get_alerts(srv, "DiskSoon")) == 2, timeout=3), get_alerts(srv)
    by_host = {x["labels"]["host"]: x for x in get_alerts(srv, "DiskFull")}
    pending = get_alerts(srv, "DiskSoon")[0]
    assert pending["state"] == "pending"

    r = srv.post(f"/api/v1/alerts/{by_host['h1']['id']}/ack", json={"by": "ann"})
    assert r.status_code == 200 and r.json() == {"acknowledged": by_host["h1"]["id"]}, r.text
    x = next(x for x in get_alerts(srv) if x["id"] == by_host["h1"]["id"])
    assert x["state"] == "acknowledged" and x["fired_at"] == by_host["h1"]["fired_at"]
    rows = wait_until(lambda: (lambda h: h if len(h) == 2 else None)(
        history(srv, by_host["h1"]["id"])), timeout=3)
    assert rows and states(rows) == ["firing", "acknowledged"], history(srv, by_host["h1"]["id"])

    r = srv.post("/api/v1/alerts/0123456789abcdef/ack", json={"by": "ann"})
    assert r.status_code == 404 and "0123456789abcdef" in r.json()["error"], r.text
    r = srv.post(f"/api/v1/alerts/{pending['id']}/ack", json={"by": "ann"})
    assert r.status_code == 400 and "pending" in r.json()["error"], r.text
    r = srv.post(f"/api/v1/alerts/{by_host['h2']['id']}/ack", json={"by": 5})
    assert r.status_code == 400 and "error" in r.json(), r.text
    assert {x["state"] for x in get_alerts(srv, "DiskSoon")} == {"pending"}  # nothing changed
    assert states(history(srv, pending["id"])) == ["pending"]

    # the CLI: list, rules, ack
    cp = run_cli("alerts", "list", "--server", server_arg)
    assert cp.returncode == 0, cp.stderr
    listed = json.loads(cp.stdout)["alerts"]
    assert {x["id"]: x["state"] for x in listed} == {x["id"]: x["state"] for x in get_alerts(srv)}
    cp = run_cli("alerts", "rules", "--server", server_arg)
    assert cp.returncode == 0, cp.stderr
    assert [r["name"] for g in json.loads(cp.stdout)["groups"] for r in g["rules"]] == \
        ["DiskFull", "DiskSoon"]
    cp = run_cli("alerts", "ack", by_host["h2"]["id"], "--by", "bob", "--server", server_arg)
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout) == {"acknowledged": by_host["h2"]["id"]}
    assert {x["state"] for x in get_alerts(srv, "DiskFull")} == {"acknowledged"}
    cp = run_cli("alerts", "ack", "fedcba9876543210", "--server", server_arg)
    assert cp.returncode != 0 and "404" in cp.stderr, (cp.returncode, cp.stderr)

    # acknowledged alerts stay so through evaluations, count as firing, and resolve as usual
    before = rule_info(srv, "DiskFull")["evaluations"]
    wait_evaluated(srv, "DiskFull", before + 1)
    assert {x["state"] for x in get_alerts(srv, "DiskFull")} == {"acknowledged"}
    info = rule_info(srv, "DiskFull")
    assert info["state"] == "firing" and info["firing"] == 2 and info["pending"] == 0
    m = metric_lines(srv)
    assert m['opsdb_alerts{state="acknowledged"}'] == 2
    assert m['opsdb_alerts{state="pending"}'] == 2
    ingest(srv, "system_metrics", [sample(t + 1, "h1", "c", "disk", 50.0)])
    assert wait_until(lambda: [x["labels"]["host"] for x in get_alerts(srv, "DiskFull")] == ["h2"],
                      timeout=4), get_alerts(srv)
    rows = wait_until(lambda: (lambda h: h if len(h) == 3 else None)(
        history(srv, by_host["h1"]["id"])), timeout=3)
    assert rows and states(rows) == ["firing", "acknowledged", "resolved"]


# =============================================================================================
# 8. reload
# =============================================================================================


def cpu_rule(name, threshold, **kw):
    return {"alert": name, "table": "system_metrics", "metric": "cpu", "aggregation": "max",
            "window": "5m", "op": ">", "threshold": threshold, **kw}


def test_reload_over_http(server_factory, tmp_path, run_cli):
    a = start_alerting(server_factory, tmp_path, [
        {"name": "g1", "interval": "1s", "rules": [cpu_rule("Old", 90), cpu_rule("Kept", 80)]}])
    srv = a.srv
    t = now_ms()
    ingest(srv, "system_metrics", [sample(t, "h1", "c", "cpu", 95.0)])
    assert wait_until(lambda: one_alert(srv, "Old", "firing") and one_alert(srv, "Kept"),
                      timeout=3), get_alerts(srv)
    old_id = one_alert(srv, "Old")["id"]
    kept_id = one_alert(srv, "Kept")["id"]

    # Old goes, New comes, Kept stays (and keeps its alert)
    a.write([{"name": "g1", "interval": "1s", "rules": [cpu_rule("Kept", 80),
                                                        cpu_rule("New", 50)]},
             {"name": "g2", "interval": "2s", "rules": [cpu_rule("Other", 99)]}])
    r = srv.post("/api/v1/alerts/reload")
    assert r.status_code == 200 and r.json() == {"reloaded": True}, r.text

    def names():
        return {(g["name"], x["name"]) for g in get_rules(srv)["groups"] for x in g["rules"]}
    want = {("g1", "Kept"), ("g1", "New"), ("g2", "Other")}
    assert wait_until(lambda: names() == want, timeout=3), names()
    assert wait_until(lambda: one_alert(srv, "New", "firing"), timeout=3), get_alerts(srv)
    assert get_alerts(srv, "Old") == []
    assert one_alert(srv, "Kept")["id"] == kept_id
    rows = wait_until(lambda: (lambda h: h if len(h) == 2 else None)(history(srv, old_id)),
                      timeout=3)
    assert rows and states(rows) == ["firing", "resolved"], history(srv, old_id)
    assert states(history(srv, kept_id)) == ["firing"]
    groups = {g["name"]: g["interval_s"] for g in get_rules(srv)["groups"]}
    assert groups == {"g1": 1, "g2": 2}

    # a broken file: 400 naming file and line; the rules loaded before go on
    text = a.rules_path.read_text().replace("threshold: 99\n", "threshold: 99\n"
                                            "        thresold: 1  # fault\n")
    a.rules_path.write_text(text)
    r = srv.post("/api/v1/alerts/reload")
    assert r.status_code == 400, r.text
    assert f"{a.rules_path}:{fault_line(text)}: unknown key 'thresold'" in r.json()["error"], \
        r.text
    cp = run_cli("alerts", "reload", "--server", f"127.0.0.1:{srv.port}")
    assert cp.returncode != 0 and "400" in cp.stderr and "thresold" in cp.stderr
    before = rule_info(srv, "New")["evaluations"]
    wait_evaluated(srv, "New", before + 1)
    assert names() == want
    assert one_alert(srv, "New", "firing") and one_alert(srv, "Kept", "firing")
    assert metric_lines(srv)["opsdb_alert_rules"] == 3

    # fixed again, through the CLI
    a.write([{"name": "g1", "interval": "1s", "rules": [cpu_rule("Kept", 80)]}])
    cp = run_cli("alerts", "reload", "--server", f"127.0.0.1:{srv.port}")
    assert cp.returncode == 0 and json.loads(cp.stdout) == {"reloaded": True}, cp.stderr
    assert wait_until(lambda: names() == {("g1", "Kept")}, timeout=3), names()
    assert wait_until(lambda: get_alerts(srv, "New") == [], timeout=3)
    assert one_alert(srv, "Kept")["id"] == kept_id


def test_reload_on_sighup(server_factory, tmp_path):
    a = start_alerting(server_factory, tmp_path, [
        {"name": "g", "interval": "1s", "rules": [cpu_rule("Before", 90)]}])
    srv = a.srv
    ingest(srv, "system_metrics", [sample(now_ms(), "h1", "c", "cpu", 95.0)])
    assert wait_until(lambda: one_alert(srv, "Before", "firing"), timeout=3)
    before_id = one_alert(srv, "Before")["id"]

    a.write([{"name": "g", "interval": "1s", "rules": [cpu_rule("After", 60)]}])
    srv.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: rule_info(srv, "After") and not rule_info(srv, "Before"),
                      timeout=3), get_rules(srv)
    assert wait_until(lambda: one_alert(srv, "After", "firing") and not get_alerts(srv, "Before"),
                      timeout=3), get_alerts(srv)
    rows = wait_until(lambda: (lambda h: h if len(h) == 2 else None)(history(srv, before_id)),
                      timeout=3)
    assert rows and states(rows) == ["firing", "resolved"]

    # a broken file on SIGHUP: logged with file and line, the rules stay
    text = a.rules_path.read_text() + "  - name: g  # fault\n    rules: []\n"
    a.rules_path.write_text(text)
    srv.proc.send_signal(signal.SIGHUP)
    where = f"{a.rules_path}:{fault_line(text)}: group 'g' is defined twice"
    assert wait_until(lambda: where in srv.run_stderr(), timeout=3), srv.run_stderr()[-2000:]
    before = rule_info(srv, "After")["evaluations"]
    wait_evaluated(srv, "After", before + 1)
    assert [x["name"] for g in get_rules(srv)["groups"] for x in g["rules"]] == ["After"]
    assert srv.running and one_alert(srv, "After", "firing")


# =============================================================================================
# 9. restart
# =============================================================================================


def test_restart_takes_up_the_active_alerts(server_factory, tmp_path):
    rules = [cpu_rule("Hot", 90, **{"for": "1s"}),
             cpu_rule("Acked", 85, labels={"severity": "info"})]
    a = start_alerting(server_factory, tmp_path, [{"name": "g", "interval": "1s", "rules": rules}])
    srv = a.srv
    ingest(srv, "system_metrics", [sample(now_ms(), "h1", "c", "cpu", 95.0)])
    assert wait_until(lambda: one_alert(srv, "Hot", "firing") and one_alert(srv, "Acked",
                                                                           "firing"), timeout=5)
    acked = one_alert(srv, "Acked")
    assert srv.post(f"/api/v1/alerts/{acked['id']}/ack", json={"by": "ann"}).status_code == 200
    before = {x["id"]: x for x in get_alerts(srv)}
    hist_before = {i: states(history(srv, i)) for i in before}
    assert hist_before[one_alert(srv, "Hot")["id"]] == ["pending", "firing"]
    assert wait_until(lambda: states(history(srv, acked["id"])) == ["firing", "acknowledged"],
                      timeout=3)
    hist_before[acked["id"]] = ["firing", "acknowledged"]

    srv.restart()  # SIGTERM (checked: exit 0, no sanitizer report), then the same database
    assert "2 active alerts taken up" in srv.run_stderr()
    after = {x["id"]: x for x in get_alerts(srv)}
    assert sorted(after) == sorted(before)
    for i, x in before.items():
        assert after[i]["state"] == x["state"], (x, after[i])
        assert after[i]["labels"] == x["labels"] and after[i]["value"] == x["value"]
        assert after[i]["annotations"] == x["annotations"]
    hot = one_alert(srv, "Hot")
    assert hot["active_since"] == before[hot["id"]]["active_since"]
    assert hot["fired_at"] == before[hot["id"]]["fired_at"]
    # evaluated again after the restart: no new transition
    for name in ("Hot", "Acked"):
        wait_evaluated(srv, name, 1)
    assert {x["id"]: x["state"] for x in get_alerts(srv)} == \
        {i: x["state"] for i, x in before.items()}
    assert {i: states(history(srv, i)) for i in before} == hist_before


def test_restart_keeps_fired_at_of_an_acknowledged_alert(server_factory, tmp_path):
    a = start_alerting(server_factory, tmp_path, [
        {"name": "g", "interval": "1s", "rules": [cpu_rule("Acked", 85)]}])
    srv = a.srv
    ingest(srv, "system_metrics", [sample(now_ms(), "h1", "c", "cpu", 95.0)])
    x = wait_until(lambda: one_alert(srv, "Acked", "firing"), timeout=3)
    assert x
    time.sleep(0.3)  # the acknowledgement comes visibly later than the firing
    assert srv.post(f"/api/v1/alerts/{x['id']}/ack", json={}).status_code == 200
    assert wait_until(lambda: len(history(srv, x["id"])) == 2, timeout=3)
    srv.restart()
    y = one_alert(srv, "Acked")
    assert y["id"] == x["id"] and y["state"] == "acknowledged"
    assert y["fired_at"] == x["fired_at"], (x["fired_at"], y["fired_at"])


def test_restart_keeps_active_since_of_an_alert_that_fired_twice(server_factory, tmp_path):
    rule = {"alert": "Again", "table": "system_metrics", "metric": "cpu", "aggregation": "max",
            "window": "1s", "op": ">", "threshold": 90}
    a = start_alerting(server_factory, tmp_path, [{"name": "g", "interval": "1s",
                                                   "rules": [rule]}])
    srv = a.srv
    ingest(srv, "system_metrics", [sample(now_ms(), "h1", "c", "cpu", 95.0)])
    first = wait_until(lambda: one_alert(srv, "Again", "firing"), timeout=3)
    assert first
    assert wait_until(lambda: not get_alerts(srv, "Again"), timeout=4)  # out of its 1s window
    ingest(srv, "system_metrics", [sample(now_ms(), "h1", "c", "cpu", 96.0)])
    second = wait_until(lambda: one_alert(srv, "Again", "firing"), timeout=3)
    assert second and second["id"] == first["id"]
    assert second["active_since"] != first["active_since"]
    assert wait_until(lambda: states(history(srv, first["id"])) ==
                      ["firing", "resolved", "firing"], timeout=3)
    srv.stop()
    srv.start()
    y = one_alert(srv, "Again")
    assert y is not None and y["id"] == first["id"]
    assert y["active_since"] == second["active_since"], (first, second, y)


def test_restart_with_one_alert_name_in_two_groups(server_factory, tmp_path):
    groups = [
        {"name": "first", "interval": "1s", "rules": [
            {"alert": "Shared", "table": "system_metrics", "metric": "unused", "window": "1m",
             "threshold": 0}]},
        {"name": "second", "interval": "1s", "rules": [cpu_rule("Shared", 90)]},
    ]
    a = start_alerting(server_factory, tmp_path, groups)
    srv = a.srv
    ingest(srv, "system_metrics", [sample(now_ms(), "h1", "c", "cpu", 95.0)])
    x = wait_until(lambda: one_alert(srv, "Shared", "firing"), timeout=3)
    assert x and x["group"] == "second"
    assert srv.post(f"/api/v1/alerts/{x['id']}/ack", json={"by": "ann"}).status_code == 200
    assert wait_until(lambda: len(history(srv, x["id"])) == 2, timeout=3)
    srv.restart()
    for g in ("first", "second"):
        info = rule_info(srv, "Shared", g)
        wait_evaluated(srv, "Shared", info["evaluations"] + 1)
    y = one_alert(srv, "Shared")
    assert y and y["group"] == "second" and y["state"] == "acknowledged", y
    assert states(history(srv, x["id"])) == ["firing", "acknowledged"]


# =============================================================================================
# 10. GET /api/v1/rules and /metrics
# =============================================================================================


def test_rules_endpoint_and_metrics(server_factory, tmp_path):
    groups = [
        {"name": "hosts", "interval": "1s", "rules": [
            {"alert": "CpuHigh", "table": "system_metrics", "metric": "cpu",
             "filter": "host=~h.*", "aggregation": "p95", "window": "2m", "op": ">=",
             "threshold": 90, "resolve_threshold": 70, "for": "0s", "keep_firing_for": "1m",
             "n_of_m": "1/2", "labels": {"severity": "critical"},
             "annotations": {"summary": "{{ $labels.host }}"}},
            {"alert": "CpuPending", "table": "system_metrics", "metric": "cpu",
             "op": ">", "threshold": 50, "for": "1h"},
        ]},
        {"name": "api", "interval": "3s", "rules": [
            {"alert": "Quiet", "table": "api_usage", "by": ["service", "endpoint"],
             "aggregation": "rate", "window": "1m", "op": "<", "threshold": 0.5},
            {"alert": "Sql", "sql": "SELECT 1 AS value WHERE 0", "op": "!=", "threshold": 3},
            {"alert": "SqlAll", "sql": "SELECT 'x' AS k WHERE 0"},
        ]},
    ]
    a = start_alerting(server_factory, tmp_path, groups)
    srv = a.srv
    ingest(srv, "system_metrics", [sample(now_ms(), "h1", "c", "cpu", 95.0)])
    assert wait_until(lambda: one_alert(srv, "CpuHigh", "firing")
                      and one_alert(srv, "CpuPending", "pending"), timeout=3), get_alerts(srv)
    got = get_rules(srv)
    assert [g["name"] for g in got["groups"]] == [g["name"] for g in groups]
    durations = {"0s": 0, "1s": 1, "3s": 3, "1m": 60, "2m": 120, "5m": 300, "1h": 3600}
    for g_want, g in zip(groups, got["groups"]):
        assert g["interval_s"] == durations[g_want["interval"]]
        assert [r["name"] for r in g["rules"]] == [r["alert"] for r in g_want["rules"]]
        for want, r in zip(g_want["rules"], g["rules"]):
            where = r["name"]
            assert r["file"] == str(a.rules_path), where
            assert r["line"] == a.lines[(g_want["name"], want["alert"])], where
            assert r["kind"] == ("sql" if "sql" in want else "threshold"), where
            if "sql" in want:
                assert r["sql"] == want["sql"] and "table" not in r, where
            else:
                assert r["table"] == want["table"], where
                assert r["metric"] == want.get("metric", ""), where
                assert r["filter"] == want.get("filter", ""), where
                assert r["aggregation"] == want.get("aggregation", "avg"), where
                assert r["by"] == want.get("by", []), where
            has_t = "threshold" in want
            assert r["op"] == want.get("op", ">"), where
            assert r["threshold"] == want.get("threshold"), where
            assert r["resolve_threshold"] == want.get("resolve_threshold",
                                                      want.get("threshold")), where
            assert (r["threshold"] is None) == (not has_t), where
            assert r["window_s"] == durations[want.get("window", "5m")], where
            assert r["for_s"] == durations.get(want.get("for", "0s")), where
            assert r["keep_firing_for_s"] == durations.get(want.get("keep_firing_for", "0s"))
            assert r["n_of_m"] == want.get("n_of_m"), where
            assert r["labels"] == want.get("labels", {}), where
            assert r["annotations"] == want.get("annotations", {}), where
            assert r["last_error"] is None, (where, r["last_error"])
            assert r["evaluations"] >= 1 and r["failures"] == 0, where
            assert isinstance(r["last_evaluation"], int) and r["last_evaluation"] > 0, where
            assert r["last_duration_ms"] >= 0, where
    by_name = {r["name"]: r for g in got["groups"] for r in g["rules"]}
    assert (by_name["CpuHigh"]["state"], by_name["CpuHigh"]["firing"]) == ("firing", 1)
    assert (by_name["CpuPending"]["state"], by_name["CpuPending"]["pending"]) == ("pending", 1)
    assert by_name["Sql"]["state"] == "inactive"

    m = metric_lines(srv)
    assert m["opsdb_alert_rules"] == sum(len(g["rules"]) for g in groups)
    al = get_alerts(srv)
    for st in ("pending", "firing", "acknowledged"):
        assert m[f'opsdb_alerts{{state="{st}"}}'] == sum(1 for x in al if x["state"] == st), st
    assert m["opsdb_alert_evaluations_total"] >= sum(r["evaluations"] for r in by_name.values())
    assert m["opsdb_alert_evaluation_failures_total"] == 0
    assert wait_until(lambda: metric_lines(srv)["opsdb_alert_transitions_total"]
                      == srv.count("alert_history"), timeout=3)


def test_no_rules_means_empty_answers(server_factory):
    server = server_factory("--set", "alerting.default_rules=off")
    assert get_rules(server) == {"groups": []}
    assert get_alerts(server) == []
    assert metric_lines(server)["opsdb_alert_rules"] == 0


def test_the_default_rules_run_from_the_first_start(server_factory, run_cli):
    """With no configuration the default rule set runs: its groups and rules as `opsdb alerts
    defaults` prints them, every one evaluated without an error."""
    text = run_cli("alerts", "defaults").stdout
    want_groups = re.findall(r"^  - name: (\S+)$", text, re.M)
    want_rules = re.findall(r"^      - alert: (\S+)$", text, re.M)
    assert len(want_groups) == 8 and len(want_rules) == 17
    server = server_factory(env={"OPSDB_ALERTING_DEFAULT_RULES": None})
    rules = wait_until(lambda: (r := get_rules(server)) and all(
        x["evaluations"] > 0 for g in r["groups"] for x in g["rules"]) and r, timeout=10)
    assert [g["name"] for g in rules["groups"]] == want_groups
    assert [x["name"] for g in rules["groups"] for x in g["rules"]] == want_rules
    assert all(x["last_error"] is None for g in rules["groups"] for x in g["rules"]), rules


def test_many_alerts_fire_in_one_evaluation(server_factory, tmp_path):
    """An evaluation that fires many alerts at once queues a notification per alert; the queue
    grows while it is filled (a regression: its entries pointed into themselves and moved), and
    every alert fires once, the server stays healthy and stops without a sanitizer report."""
    n = 60
    numbers = ",".join(str(i) for i in range(n))
    a = start_alerting(server_factory, tmp_path, [{"name": "many", "interval": "1s", "rules": [
        {"alert": "Many", "sql": f"SELECT value AS item FROM json_each('[{numbers}]')"}]}])
    srv = a.srv
    alerts = wait_until(lambda: len(get_alerts(srv, "Many")) == n and get_alerts(srv, "Many"),
                        timeout=10)
    assert alerts and sorted(int(x["labels"]["item"]) for x in alerts) == list(range(n))
    assert {x["state"] for x in alerts} == {"firing"}
    assert srv.get("/healthz").status_code == 200
    srv.stop()
    assert_no_sanitizer_reports(srv.run_stderr())
