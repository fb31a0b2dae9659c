"""The life of an alert past its rule: suppression, flapping, escalation, incidents, backtest.

What is checked, as docs/alerts.md and docs/views.md describe it and as read from src/alert/
(engine.c, suppress.c, escalate.c, incident.c), src/http/http_alerts.c, src/cli/cmd_alerts.c and
the view alert_quality (src/store/sqlite_views.c):

* silences: POST/GET/DELETE /api/v1/silences and `opsdb alerts silence|silences|expire`; a
  silenced firing alert is a `suppressed` row of alert_history naming the silence, its comment
  and author, and is not sent to the webhook; when the silence ends a `firing` row follows and
  the webhook gets it; a pending silence does not suppress before its start; silences outlive a
  restart; bad input is a 400 naming the field.
* maintenance windows (once and weekly) and their config errors (file:line, serve refuses).
* inhibition with inhibit_rules and dependencies, and the target firing once the source resolves.
* flapping: notified once with the reason, then suppressed; opsdb_alert_flapping_total.
* escalation steps: `escalated` rows with their level and severity, the step's receiver
  notified; an acknowledged alert does not escalate; steps count from the first notification
  (not from a firing held by a maintenance window); a step naming an unknown receiver is refused
  with its line at start and at reload.
* incidents: correlation by host, probable cause, related error fingerprints and failed pipeline
  runs, the incident id in the webhook payload, resolution with the last alert; kept in the
  incidents table and taken up again after a restart.
* the view alert_quality and opsdb_alert_relevance{rule}, computed here from alert_history.
* `opsdb alerts backtest`: events computed here by replaying the rule over the samples sent,
  with a silence of that time, and with maintenance windows and escalation steps of --config;
  notifications dropped without receivers, and with a route: grouped, repeated and resolved at
  the times group_wait, repeat_interval and group_interval give.
* a reload reads the maintenance windows again and keeps the silences.

Regressions of bugs these tests found: a held flapping alert released at its next evaluation;
quick_ms of alert_quality that nothing could set; an expired silence gone from GET after a
restart; an acknowledged alert under a silence unacknowledged by a restart; an escalated
severity lost on restart.

Every expectation is computed from what the test sends or reads back; windows and intervals are
short (1s-3s) and every wait is bounded.
"""

import json
import re
import time
from datetime import datetime, timezone

import pytest

from conftest import ServerStartError, now_ms, wait_until
from test_alerts import get_alerts, metric_lines, sample

# ---- starting a server ----------------------------------------------------------------------


def yv(v):
    """A value in YAML flow style (JSON is YAML)."""
    return json.dumps(v)


def rules_text(rules, interval="1s", group="life"):
    lines = ["groups:", f"  - name: {group}", f"    interval: {interval}", "    rules:"]
    for r in rules:
        for i, (k, v) in enumerate(r.items()):
            lines.append(("      - " if i == 0 else "        ") + f"{k}: {yv(v)}")
    return "\n".join(lines) + "\n"


def config_text(hook_url=None, extra=""):
    """The config: the rule file rules.yaml beside it, no default rules, webhook receivers A
    (the route's) and B at hook_url/a and /b, every label set its own group sent at once, and
    `extra` (lines of the alerting: section, indented by two spaces)."""
    text = "alerting:\n  rule_files: [rules.yaml]\n  default_rules: off\n"
    if hook_url:
        text += (f'  receivers: [{{name: A, webhook: {{url: "{hook_url}/a"}}}}, '
                 f'{{name: B, webhook: {{url: "{hook_url}/b"}}}}]\n'
                 "  route: {receiver: A, group_by: ['...'], group_wait: 0s, "
                 "group_interval: 100ms, repeat_interval: 1h}\n")
    return text + extra


def start(server_factory, tmp_path, rules, *args, hook_url=None, extra="", interval="1s",
          start=True):
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "rules.yaml").write_text(rules_text(rules, interval))
    path = conf / "opsdb.yaml"
    path.write_text(config_text(hook_url, extra))
    srv = server_factory("--config", path, *args, start=start)
    srv.conf_path = path
    return srv


def cpu_rule(name, metric, threshold=90, agg="max", window="5m", **kw):
    return {"alert": name, "table": "system_metrics", "metric": metric, "aggregation": agg,
            "window": window, "op": ">", "threshold": threshold, **kw}


def put(srv, *samples):
    r = srv.ingest("system_metrics", list(samples))
    assert r.status_code == 200 and r.json()["rows"] == len(samples), r.text


def point(host, metric, value, component="c", ts=None):
    return sample(now_ms() if ts is None else ts, host, component, metric, value)


# ---- reading the server ---------------------------------------------------------------------


def hist(srv, where):
    """alert_history rows matching an SQL condition, in the order they were written."""
    return srv.query("SELECT ts, alert_id, rule, severity, state, value, labels, summary, "
                     "escalation_level, notified FROM alert_history "
                     f"WHERE {where} ORDER BY ts, rowid")


def host_rows(srv, rule, host):
    return [r for r in hist(srv, f"rule = '{rule}'")
            if json.loads(r["labels"]).get("host") == host]


def wait_rows(srv, rule, host, want_states, timeout=5.0):
    """Waits until the states of the alert's rows start with want_states; returns the rows."""
    rows = wait_until(lambda: (lambda h: h if [x["state"] for x in h][:len(want_states)]
                               == want_states else None)(host_rows(srv, rule, host)),
                      timeout=timeout)
    assert rows, (f"{rule}/{host}: want {want_states}, have "
                  f"{[(x['state'], x['summary']) for x in host_rows(srv, rule, host)]}")
    return rows


def silences(srv):
    r = srv.get("/api/v1/silences")
    assert r.status_code == 200, r.text
    return {s["id"]: s for s in r.json()["silences"]}


def ms_of(text):
    """Epoch ms of an RFC 3339 time."""
    return int(round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000))


def rfc3339(ms):
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] \
        + "Z"


def hook_alerts(rec, path, host=None, status=None):
    """The alerts the webhook at path received: (status, labels, startsAt ms, incident)."""
    out = []
    for body in rec.bodies(path):
        for a in body["alerts"]:
            if host is not None and a["labels"].get("host") != host:
                continue
            if status is not None and a["status"] != status:
                continue
            out.append((a["status"], a["labels"], ms_of(a["startsAt"]), body.get("incident")))
    return out


# =============================================================================================
# 1. silences
# =============================================================================================

SIL_RULE = cpu_rule("SilCpu", "sil_cpu", annotations={"summary": "cpu of {{ $labels.host }}"})


def silenced_summary(host, sid, comment, by):
    return f"cpu of {host} - silenced by {sid} ({comment}, by {by})"


# (case, body, the field the error names first, or None); "past", "later", ... are times
BAD_SILENCES = [
    ("bad_regex", {"matchers": "host=~(db", "duration": "1h", "created_by": "ann"}, "matchers"),
    ("empty_matchers", {"matchers": "", "duration": "1h", "created_by": "ann"}, "matchers"),
    ("no_created_by", {"matchers": "host=a", "duration": "1h"}, "created_by"),
    ("empty_created_by", {"matchers": "host=a", "duration": "1h", "created_by": ""},
     "created_by"),
    ("ends_in_the_past", {"matchers": "host=a", "ends_at": "past", "created_by": "ann"},
     "ends_at"),
    ("no_end", {"matchers": "host=a", "created_by": "ann"}, "ends_at"),
    ("bad_duration", {"matchers": "host=a", "duration": "soon", "created_by": "ann"},
     "duration"),
    ("ends_before_start", {"matchers": "host=a", "starts_at": "later", "ends_at": "sooner",
                           "created_by": "ann"}, "ends_at"),
    ("bad_starts_at", {"matchers": "host=a", "starts_at": "yesterday", "duration": "1h",
                       "created_by": "ann"}, "starts_at"),
    ("comment_too_long", {"matchers": "host=a", "duration": "1h", "created_by": "ann",
                          "comment": "x" * 1024}, "comment"),
    ("created_by_not_text", {"matchers": "host=a", "duration": "1h", "created_by": 7},
     "created_by"),
    ("not_json", "not json", None),
    ("not_an_object", "[1, 2]", None),
]


def test_silence_bad_input_is_a_400_naming_the_field(server_factory, tmp_path):
    srv = start(server_factory, tmp_path, [SIL_RULE])
    now_s = now_ms() // 1000
    times = {"past": now_s - 60, "later": now_s + 7200, "sooner": now_s + 3600}
    failures = []
    for case, body, field in BAD_SILENCES:
        if isinstance(body, dict):
            body = {k: times.get(v, v) for k, v in body.items()}
            r = srv.post("/api/v1/silences", json=body)
        else:
            r = srv.post("/api/v1/silences", data=body,
                         headers={"Content-Type": "application/json"})
        error = r.json().get("error", "") if r.headers.get("Content-Type", "").startswith(
            "application/json") else None
        if r.status_code != 400 or error is None or (
                field and not re.match(rf"^{field}\b", error)):
            failures.append((case, r.status_code, r.text))
    assert not failures, failures
    assert silences(srv) == {}, "a refused silence was kept"


def test_silences_suppress_expire_and_survive_a_restart(server_factory, tmp_path, webhook,
                                                        run_cli):
    url, rec = webhook
    srv = start(server_factory, tmp_path, [SIL_RULE], hook_url=url)
    server_arg = f"127.0.0.1:{srv.port}"

    # a silence for one hour on host hs, given with duration
    t0 = now_ms()
    r = srv.post("/api/v1/silences", json={"matchers": "host=hs", "duration": "1h",
                                           "created_by": "ann", "comment": "disk swap"})
    assert r.status_code == 200, r.text
    sid = r.json()["id"]
    t1 = now_ms()
    s = silences(srv)[sid]
    assert (s["matchers"], s["created_by"], s["comment"], s["state"]) == \
        ("host=hs", "ann", "disk swap", "active")
    starts, ends = ms_of(s["starts_at"]), ms_of(s["ends_at"])
    assert t0 <= starts <= t1 and ends - starts == 3600_000, s

    # a pending one on host hp: starts in 3 s (epoch seconds), ends in an hour (RFC 3339)
    p_start = (now_ms() // 1000 + 3) * 1000
    p_end = p_start + 3600_000
    r = srv.post("/api/v1/silences", json={"matchers": "host=~hp|hq", "starts_at": p_start // 1000,
                                           "ends_at": rfc3339(p_end), "created_by": "bob",
                                           "comment": "later"})
    assert r.status_code == 200, r.text
    pid = r.json()["id"]
    p = silences(srv)[pid]
    assert p["state"] == "pending" and (ms_of(p["starts_at"]), ms_of(p["ends_at"])) == \
        (p_start, p_end), p

    # a short one on host hx: it ends on its own after 2 s
    r = srv.post("/api/v1/silences", json={"matchers": "host=hx", "duration": "2s",
                                           "created_by": "dan", "comment": "short"})
    assert r.status_code == 200, r.text
    xid = r.json()["id"]
    x_end = ms_of(silences(srv)[xid]["ends_at"])

    # hs is silenced, ho is not, hp's silence has not begun
    put(srv, point("hs", "sil_cpu", 95), point("ho", "sil_cpu", 96), point("hp", "sil_cpu", 97),
        point("hx", "sil_cpu", 95))
    rows_hs = wait_rows(srv, "SilCpu", "hs", ["suppressed"])
    assert rows_hs[0]["summary"] == silenced_summary("hs", sid, "disk swap", "ann")
    assert rows_hs[0]["notified"] == 0 and rows_hs[0]["value"] == 95
    rows_ho = wait_rows(srv, "SilCpu", "ho", ["firing"])
    assert rows_ho[0]["summary"] == "cpu of ho" and rows_ho[0]["notified"] == 1
    rows_hp = wait_rows(srv, "SilCpu", "hp", ["firing"])
    assert rows_hp[0]["ts"] < p_start, "the pending silence acted before its start"
    assert wait_until(lambda: hook_alerts(rec, "/a", "ho") and hook_alerts(rec, "/a", "hp"),
                      timeout=3), rec.bodies()
    assert hook_alerts(rec, "/a", "ho")[0][2] == rows_ho[0]["ts"]  # startsAt: when it fired

    # once the pending silence begins, hp (still firing) is recorded as suppressed
    rows_hp = wait_rows(srv, "SilCpu", "hp", ["firing", "suppressed"],
                        timeout=max(0, p_start - now_ms()) / 1000 + 3)
    assert rows_hp[1]["ts"] >= p_start, rows_hp
    assert rows_hp[1]["summary"] == silenced_summary("hp", pid, "later", "bob")
    assert silences(srv)[pid]["state"] == "active"

    # hx: suppressed while its silence lasted, firing (and sent) once it ended on its own
    rows_hx = wait_rows(srv, "SilCpu", "hx", ["suppressed", "firing"],
                        timeout=max(0, x_end - now_ms()) / 1000 + 3)
    assert rows_hx[0]["summary"] == silenced_summary("hx", xid, "short", "dan")
    assert rows_hx[0]["ts"] < x_end <= rows_hx[1]["ts"], (rows_hx, x_end)
    assert wait_until(lambda: hook_alerts(rec, "/a", "hx", "firing"), timeout=3)
    # startsAt: when it began to fire, suppressed at first
    assert [h[2] for h in hook_alerts(rec, "/a", "hx")] == [rows_hx[0]["ts"]]
    assert silences(srv)[xid]["state"] == "expired"

    # the silence ends through DELETE: a firing row follows and the webhook gets hs
    assert hook_alerts(rec, "/a", "hs") == [], "a silenced alert was sent"
    r = srv.request("DELETE", f"/api/v1/silences/{sid}")
    assert r.status_code == 200 and r.json() == {"expired": sid}, r.text
    t_expired = now_ms()
    rows_hs = wait_rows(srv, "SilCpu", "hs", ["suppressed", "firing"], timeout=3)
    assert rows_hs[1]["summary"] == "cpu of hs" and rows_hs[1]["notified"] == 1
    assert rows_hs[1]["ts"] >= t_expired - 50
    got = wait_until(lambda: hook_alerts(rec, "/a", "hs", "firing"), timeout=3)
    assert got and got[0][1]["host"] == "hs"
    s = silences(srv)[sid]
    assert s["state"] == "expired" and ms_of(s["ends_at"]) <= now_ms()
    r = srv.request("DELETE", "/api/v1/silences/0011223344556677")
    assert r.status_code == 404 and "0011223344556677" in r.json()["error"], r.text

    # the CLI: silence, silences, expire
    cp = run_cli("alerts", "silence", "--matchers", "host=hc", "--for", "1h", "--by", "ann",
                 "--comment", "x", "--server", server_arg)
    assert cp.returncode == 0, cp.stderr
    cid = json.loads(cp.stdout)["id"]
    cp = run_cli("alerts", "silences", "--server", server_arg)
    assert cp.returncode == 0, cp.stderr
    listed = {x["id"]: x for x in json.loads(cp.stdout)["silences"]}
    assert set(listed) == {sid, pid, cid, xid}
    c = listed[cid]
    assert (c["matchers"], c["created_by"], c["comment"], c["state"]) == ("host=hc", "ann", "x",
                                                                          "active")
    assert ms_of(c["ends_at"]) - ms_of(c["starts_at"]) == 3600_000
    # an id replaces that silence
    r = srv.post("/api/v1/silences", json={"id": cid, "matchers": "host=~hc|hd",
                                           "duration": "30m", "created_by": "ann",
                                           "comment": "x"})
    assert r.status_code == 200 and r.json() == {"id": cid}, r.text
    c = silences(srv)[cid]
    assert c["matchers"] == "host=~hc|hd" and c["state"] == "active"
    assert ms_of(c["ends_at"]) - ms_of(c["starts_at"]) == 1800_000
    assert len(silences(srv)) == len(listed)
    assert srv.scalar(f"SELECT count(*) AS n FROM silences WHERE id = '{cid}'") == 1
    put(srv, point("hc", "sil_cpu", 98))
    rows_hc = wait_rows(srv, "SilCpu", "hc", ["suppressed"])
    assert rows_hc[0]["summary"] == silenced_summary("hc", cid, "x", "ann")
    cp = run_cli("alerts", "expire", cid, "--server", server_arg)
    assert cp.returncode == 0 and json.loads(cp.stdout) == {"expired": cid}, cp.stderr
    wait_rows(srv, "SilCpu", "hc", ["suppressed", "firing"], timeout=3)
    assert wait_until(lambda: hook_alerts(rec, "/a", "hc", "firing"), timeout=3)
    cp = run_cli("alerts", "expire", "0011223344556677", "--server", server_arg)
    assert cp.returncode != 0 and "404" in cp.stderr, (cp.returncode, cp.stderr)
    cp = run_cli("alerts", "silence", "--matchers", "host=hz", "--server", server_arg)
    assert cp.returncode != 0 and "needs --matchers and --by" in cp.stderr, cp.stderr
    cp = run_cli("alerts", "silence", "--matchers", "host=hz", "--by", "ann", "--for", "soon",
                 "--server", server_arg)
    assert cp.returncode != 0 and "400" in cp.stderr and "duration" in cp.stderr, cp.stderr
    assert "host=hz" not in [x["matchers"] for x in silences(srv).values()]

    # a restart: the silences still in force come back from the table, and apply
    r = srv.post("/api/v1/silences", json={"matchers": "host=hr", "duration": "2h",
                                           "created_by": "carl", "comment": "restart"})
    assert r.status_code == 200, r.text
    rid = r.json()["id"]
    before = silences(srv)
    srv.restart()
    after = silences(srv)
    for i in (pid, rid):
        assert after[i] == before[i], (before[i], after.get(i))
    put(srv, point("hr", "sil_cpu", 99), point("hq", "sil_cpu", 99))
    rows_hr = wait_rows(srv, "SilCpu", "hr", ["suppressed"])
    assert rows_hr[0]["summary"] == silenced_summary("hr", rid, "restart", "carl")
    rows_hq = wait_rows(srv, "SilCpu", "hq", ["suppressed"])
    assert rows_hq[0]["summary"] == silenced_summary("hq", pid, "later", "bob")
    time.sleep(0.5)
    for h in ("hs", "hc"):
        assert [x[0] for x in hook_alerts(rec, "/a", h)] == ["firing"], (h, rec.bodies())
    for h in ("hp",):
        assert [x[0] for x in hook_alerts(rec, "/a", h)] == ["firing"], (h, rec.bodies())
    for h in ("hr", "hq"):
        assert hook_alerts(rec, "/a", h) == [], (h, rec.bodies())


def test_an_expired_silence_is_still_listed_after_a_restart(server_factory, tmp_path):
    srv = start(server_factory, tmp_path, [SIL_RULE])
    r = srv.post("/api/v1/silences", json={"matchers": "host=old", "duration": "1h",
                                           "created_by": "ann", "comment": "done"})
    assert r.status_code == 200, r.text
    sid = r.json()["id"]
    assert srv.request("DELETE", f"/api/v1/silences/{sid}").status_code == 200
    before = silences(srv)
    assert before[sid]["state"] == "expired"
    srv.restart()
    assert srv.scalar(f"SELECT count(*) AS n FROM silences WHERE id = '{sid}'") == 1
    assert silences(srv) == before


def test_an_acknowledged_alert_stays_acknowledged_under_a_silence_across_a_restart(
        server_factory, tmp_path):
    srv = start(server_factory, tmp_path, [SIL_RULE])
    put(srv, point("ha", "sil_cpu", 95))
    wait_rows(srv, "SilCpu", "ha", ["firing"])
    x = get_alerts(srv, "SilCpu")[0]
    assert srv.post(f"/api/v1/alerts/{x['id']}/ack", json={"by": "ann"}).status_code == 200
    wait_rows(srv, "SilCpu", "ha", ["firing", "acknowledged"])
    r = srv.post("/api/v1/silences", json={"matchers": "host=ha", "duration": "1h",
                                           "created_by": "ann", "comment": "quiet"})
    assert r.status_code == 200, r.text
    wait_rows(srv, "SilCpu", "ha", ["firing", "acknowledged", "suppressed"], timeout=3)
    assert [a["state"] for a in get_alerts(srv, "SilCpu")] == ["acknowledged"]
    srv.restart()
    assert [a["state"] for a in get_alerts(srv, "SilCpu")] == ["acknowledged"]


# =============================================================================================
# 2. maintenance windows
# =============================================================================================

WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def weekday_name(ms):
    return WEEKDAYS[(datetime.fromtimestamp(ms / 1000, timezone.utc).weekday() + 1) % 7]


def hhmm(ms):
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%H:%M")


def test_maintenance_windows_suppress_matching_alerts(server_factory, tmp_path, webhook):
    url, rec = webhook
    t = now_ms()
    # weekly: from two minutes ago to three minutes ahead (UTC); a window that crosses midnight
    # belongs to the weekday of its evening, the day of `from`
    w_from, w_to = t - 120_000, t + 180_000
    others = [d for d in WEEKDAYS if d != weekday_name(w_from)]
    windows = [
        {"name": "once-now", "matchers": "host=m1", "start": rfc3339(t - 60_000),
         "end": rfc3339(t + 3600_000)},
        {"name": "weekly-now", "matchers": "host=~m2|m9", "weekdays": [weekday_name(w_from)],
         "from": hhmm(w_from), "to": hhmm(w_to)},
        {"name": "weekly-other-days", "matchers": "host=m3", "weekdays": others,
         "from": hhmm(w_from), "to": hhmm(w_to)},
        {"name": "once-over", "matchers": "host=m4", "start": rfc3339(t - 7200_000),
         "end": rfc3339(t - 3600_000)},
        {"name": "once-later", "matchers": "host=m5", "start": rfc3339(t + 3600_000),
         "end": rfc3339(t + 7200_000)},
    ]
    extra = "  maintenance:\n" + "".join(f"    - {yv(w)}\n" for w in windows)
    srv = start(server_factory, tmp_path, [SIL_RULE], hook_url=url, extra=extra)

    def expect(host):
        """The window that covers host now, computed from the windows sent."""
        now = now_ms()
        for w in windows:
            if not re.fullmatch(w["matchers"].split("=", 1)[1].lstrip("~"), host):
                continue
            if "start" in w and ms_of(w["start"]) <= now < ms_of(w["end"]):
                return w["name"]
            if "weekdays" in w:
                day_ms = now % 86400_000
                f = int(w["from"][:2]) * 3600_000 + int(w["from"][3:]) * 60_000
                to = int(w["to"][:2]) * 3600_000 + int(w["to"][3:]) * 60_000
                today, yesterday = weekday_name(now), weekday_name(now - 86400_000)
                if f < to and today in w["weekdays"] and f <= day_ms < to:
                    return w["name"]
                if f > to and ((today in w["weekdays"] and day_ms >= f)
                               or (yesterday in w["weekdays"] and day_ms < to)):
                    return w["name"]
        return None

    hosts = ["m1", "m2", "m3", "m4", "m5", "m6", "m9"]
    want = {h: expect(h) for h in hosts}
    assert want == {"m1": "once-now", "m2": "weekly-now", "m3": None, "m4": None, "m5": None,
                    "m6": None, "m9": "weekly-now"}  # the case is built so
    put(srv, *[point(h, "sil_cpu", 95) for h in hosts])
    for h, name in want.items():
        rows = wait_rows(srv, "SilCpu", h, ["suppressed" if name else "firing"])
        if name:
            assert rows[0]["summary"] == f"cpu of {h} - maintenance window {name}", rows
            assert rows[0]["notified"] == 0
        else:
            assert rows[0]["summary"] == f"cpu of {h}" and rows[0]["notified"] == 1, rows
    quiet = [h for h, name in want.items() if not name]
    assert wait_until(lambda: all(hook_alerts(rec, "/a", h) for h in quiet), timeout=3), \
        rec.bodies()
    time.sleep(0.3)
    for h, name in want.items():
        if name:
            assert hook_alerts(rec, "/a", h) == [], (h, rec.bodies())


# (case, the maintenance list with "# fault" on the line the message names, message)
BAD_WINDOWS = [
    ("bad_time_of_day", "    - name: w\n      matchers: host=a\n      weekdays: [mon]\n"
     "      from: \"25:00\"  # fault\n      to: \"02:00\"\n",
     "from: expected a time of day HH:MM (UTC)"),
    ("bad_weekday", "    - name: w\n      matchers: host=a\n"
     "      weekdays: [mon, someday]  # fault\n      from: \"01:00\"\n      to: \"02:00\"\n",
     "weekdays: 'someday' is not one of sun, mon, tue, wed, thu, fri, sat"),
    ("end_before_start", "    - name: w  # fault\n      matchers: host=a\n"
     "      start: \"2030-01-02T00:00:00Z\"\n      end: \"2030-01-01T00:00:00Z\"\n",
     "maintenance window w: end must come after start"),
    ("bad_matchers", "    - name: w\n      matchers: \"host=~(a\"  # fault\n"
     "      start: \"2030-01-01T00:00:00Z\"\n      end: \"2030-01-02T00:00:00Z\"\n",
     "matchers: "),
    ("unknown_key", "    - name: w\n      matchers: host=a\n      start: \"2030-01-01T00:00:00Z\"\n"
     "      end: \"2030-01-02T00:00:00Z\"\n      until: never  # fault\n",
     "unknown key 'until' in a maintenance window"),
    ("both_kinds", "    - name: w  # fault\n      matchers: host=a\n"
     "      start: \"2030-01-01T00:00:00Z\"\n      end: \"2030-01-02T00:00:00Z\"\n"
     "      weekdays: [mon]\n      from: \"01:00\"\n      to: \"02:00\"\n",
     "give either start and end (once) or weekdays, from and to"),
]


def test_a_bad_maintenance_window_names_its_line_and_serve_refuses(server_factory, tmp_path):
    failures = []
    for case, body, message in BAD_WINDOWS:
        d = tmp_path / case
        d.mkdir()
        srv = start(server_factory, d, [SIL_RULE], extra="  maintenance:\n" + body, start=False)
        text = srv.conf_path.read_text()
        line = next(i + 1 for i, x in enumerate(text.splitlines()) if "# fault" in x)
        try:
            srv.start()
            failures.append((case, "started"))
            srv.stop()
            continue
        except ServerStartError:
            pass
        err = srv.run_stderr()
        if f"{srv.conf_path}:{line}: " not in err or message not in err:
            failures.append((case, f"want {srv.conf_path}:{line}: {message}", err[-600:]))
    assert not failures, failures


def test_a_silenced_notified_alert_is_withdrawn_from_its_group(server_factory, tmp_path,
                                                                webhook):
    """An alert notified, then silenced, leaves its group's notifications: no repeats while
    silenced, notified again when the silence ends, and no resolution while silenced (as
    Alertmanager leaves muted alerts out)."""
    url, rec = webhook
    rule = cpu_rule("MuteCpu", "mute_cpu", agg="min", window="60s")
    extra = (f'  receivers: [{{name: A, webhook: {{url: "{url}/a"}}}}]\n'
             "  route: {receiver: A, group_by: ['...'], group_wait: 0s, group_interval: 100ms, "
             "repeat_interval: 1s}\n")
    srv = start(server_factory, tmp_path, [rule], extra=extra)
    put(srv, point("mu", "mute_cpu", 95))
    assert wait_until(lambda: len(hook_alerts(rec, "/a", "mu", "firing")) >= 2, timeout=5), \
        "repeats every second while firing"
    r = srv.post("/api/v1/silences", json={"matchers": "host=mu", "duration": "1h",
                                           "created_by": "ann", "comment": "quiet"})
    assert r.status_code == 200, r.text
    sid = r.json()["id"]
    wait_rows(srv, "MuteCpu", "mu", ["firing", "suppressed"], timeout=3)
    time.sleep(0.5)  # a repeat already queued may still arrive
    n = len(hook_alerts(rec, "/a", "mu"))
    time.sleep(2.5)  # two repeat intervals and more
    assert len(hook_alerts(rec, "/a", "mu")) == n, "repeats went on under the silence"

    # the silence ends: notified again
    r = srv.request("DELETE", f"/api/v1/silences/{sid}")
    assert r.status_code == 200, r.text
    rows = wait_rows(srv, "MuteCpu", "mu", ["firing", "suppressed", "firing"], timeout=3)
    assert rows[2]["notified"] == 1
    assert wait_until(lambda: len(hook_alerts(rec, "/a", "mu")) > n, timeout=3)

    # silenced again, then resolved: no resolution is sent
    r = srv.post("/api/v1/silences", json={"matchers": "host=mu", "duration": "1h",
                                           "created_by": "ann", "comment": "again"})
    assert r.status_code == 200, r.text
    wait_rows(srv, "MuteCpu", "mu", ["firing", "suppressed", "firing", "suppressed"], timeout=3)
    time.sleep(0.5)
    n = len(hook_alerts(rec, "/a", "mu"))
    put(srv, point("mu", "mute_cpu", 10))
    wait_rows(srv, "MuteCpu", "mu", ["firing", "suppressed", "firing", "suppressed", "resolved"],
              timeout=3)
    time.sleep(1.5)
    assert hook_alerts(rec, "/a", "mu", "resolved") == []
    assert len(hook_alerts(rec, "/a", "mu")) == n


def test_a_reload_reads_the_maintenance_windows_again_and_keeps_the_silences(
        server_factory, tmp_path, webhook):
    url, rec = webhook
    srv = start(server_factory, tmp_path, [SIL_RULE], hook_url=url)
    r = srv.post("/api/v1/silences", json={"matchers": "host=rs", "duration": "1h",
                                           "created_by": "ann", "comment": "kept"})
    assert r.status_code == 200, r.text
    sid = r.json()["id"]
    put(srv, point("rm", "sil_cpu", 95), point("rs", "sil_cpu", 95))
    wait_rows(srv, "SilCpu", "rm", ["firing"])
    wait_rows(srv, "SilCpu", "rs", ["suppressed"])
    before = silences(srv)

    # a window on rm added to the config: rm is suppressed after the reload
    t = now_ms()
    window = {"name": "reloaded", "matchers": "host=rm", "start": rfc3339(t - 1000),
              "end": rfc3339(t + 3600_000)}
    srv.conf_path.write_text(config_text(url, f"  maintenance:\n    - {yv(window)}\n"))
    r = srv.post("/api/v1/alerts/reload")
    assert r.status_code == 200 and r.json() == {"reloaded": True}, r.text
    rows = wait_rows(srv, "SilCpu", "rm", ["firing", "suppressed"], timeout=3)
    assert rows[1]["summary"] == "cpu of rm - maintenance window reloaded"
    assert silences(srv) == before

    # removed again: rm fires (and is sent) again; the silence of rs still holds
    srv.conf_path.write_text(config_text(url))
    r = srv.post("/api/v1/alerts/reload")
    assert r.status_code == 200, r.text
    rows = wait_rows(srv, "SilCpu", "rm", ["firing", "suppressed", "firing"], timeout=3)
    assert rows[2]["notified"] == 1
    assert wait_until(lambda: len(hook_alerts(rec, "/a", "rm", "firing")) == 2, timeout=3), \
        rec.bodies()
    time.sleep(1.2)  # an evaluation or more after the reload
    assert [r["state"] for r in host_rows(srv, "SilCpu", "rs")] == ["suppressed"]
    assert silences(srv)[sid] == before[sid]
    assert hook_alerts(rec, "/a", "rs") == []


# =============================================================================================
# 3. inhibition
# =============================================================================================

INHIBIT_CONFIG = ("  inhibit_rules:\n"
                  "    - {source_matchers: \"severity=critical\", "
                  "target_matchers: \"severity=warning\", equal: [component]}\n"
                  "  dependencies: {db: [api]}\n")


def test_inhibition_by_a_critical_alert_and_its_dependents(server_factory, tmp_path,
                                                           webhook):
    url, rec = webhook
    rules = [
        # min over a long window: a lower sample resolves it at once
        cpu_rule("InhCrit", "inh_crit", agg="min", labels={"severity": "critical"},
                 annotations={"summary": "{{ $labels.component }} down"}),
        cpu_rule("InhWarn", "inh_warn", labels={"severity": "warning"},
                 annotations={"summary": "{{ $labels.component }} slow on {{ $labels.host }}"}),
    ]
    srv = start(server_factory, tmp_path, rules, hook_url=url, extra=INHIBIT_CONFIG)
    deps = {"db": ["api"]}
    source = {"host": "s1", "component": "db"}
    put(srv, point(source["host"], "inh_crit", 95, source["component"]))
    wait_rows(srv, "InhCrit", "s1", ["firing"])

    targets = {"t-db": "db", "t-api": "api", "t-web": "web", "t-worker": "worker"}
    put(srv, *[point(h, "inh_warn", 95, comp) for h, comp in targets.items()])

    def inhibited(comp):
        return comp == source["component"] or comp in deps.get(source["component"], [])
    want = {h: inhibited(c) for h, c in targets.items()}
    assert sorted(h for h, x in want.items() if x) == ["t-api", "t-db"]  # the case is built so
    for h, comp in targets.items():
        rows = wait_rows(srv, "InhWarn", h, ["suppressed" if want[h] else "firing"])
        summary = f"{comp} slow on {h}"
        if want[h]:
            assert rows[0]["summary"] == \
                f"{summary} - inhibited by InhCrit on component {source['component']}", rows
            assert rows[0]["notified"] == 0
        else:
            assert rows[0]["summary"] == summary and rows[0]["notified"] == 1, rows
    assert wait_until(lambda: all(hook_alerts(rec, "/a", h) for h, x in want.items() if not x),
                      timeout=3), rec.bodies()
    assert hook_alerts(rec, "/a", "s1", "firing")
    for h, x in want.items():
        if x:
            assert hook_alerts(rec, "/a", h) == [], (h, rec.bodies())

    # the source resolves: the targets it held fire and are notified
    put(srv, point(source["host"], "inh_crit", 10, source["component"]))
    wait_rows(srv, "InhCrit", "s1", ["firing", "resolved"], timeout=3)
    for h, x in want.items():
        if not x:
            continue
        rows = wait_rows(srv, "InhWarn", h, ["suppressed", "firing"], timeout=4)
        assert rows[1]["summary"] == f"{targets[h]} slow on {h}" and rows[1]["notified"] == 1
        assert wait_until(lambda: hook_alerts(rec, "/a", h, "firing"), timeout=3), \
            (h, rec.bodies())
    for h, x in want.items():
        if not x:  # nothing changed for them
            assert [r["state"] for r in host_rows(srv, "InhWarn", h)] == ["firing"]


# =============================================================================================
# 4. flapping
# =============================================================================================

FLAP_TRANSITIONS, FLAP_WINDOW_S = 2, 60
FLAP_RULE = cpu_rule("FlapCpu", "flap", threshold=50, window="1s",
                     annotations={"summary": "flap on {{ $labels.host }}"})
FLAP_ARGS = ("--set", f"alerting.flapping_transitions={FLAP_TRANSITIONS}",
             "--set", f"alerting.flapping_window={FLAP_WINDOW_S // 60}m")


def flap_rows(srv):
    return host_rows(srv, "FlapCpu", "f1")


def flap_once(srv, i, hold_s=0.0):
    """Cycle i (from 0): a high sample fires the alert (the i+1-th firing or suppressed row),
    held hold_s seconds by more high samples, then a low one after the 1s window resolves it."""
    def count(states):
        return sum(1 for r in flap_rows(srv) if r["state"] in states)
    put(srv, point("f1", "flap", 95))
    assert wait_until(lambda: count(("firing", "suppressed")) >= i + 1, timeout=3), flap_rows(srv)
    for _ in range(int(hold_s / 0.25)):
        time.sleep(0.25)
        put(srv, point("f1", "flap", 95))
    time.sleep(1.05)  # the high samples leave the 1s window
    put(srv, point("f1", "flap", 5))
    assert wait_until(lambda: count(("resolved",)) == i + 1, timeout=3), flap_rows(srv)
    time.sleep(0.3)


def expected_flaps(rows):
    """(state, summary) of each row as the engine should write it, from the rows' times."""
    want, announced = [], False
    for r in rows:
        changes = sum(1 for x in rows if r["ts"] - FLAP_WINDOW_S * 1000 < x["ts"] <= r["ts"])
        if r["state"] == "resolved":
            want.append(("resolved", "flap on f1"))
            continue
        if changes > FLAP_TRANSITIONS:
            note = f"flap on f1 - flapping: {changes} state changes within {FLAP_WINDOW_S} s"
            want.append(("suppressed" if announced else "firing", note))
            announced = True
        else:
            want.append(("firing", "flap on f1"))
    return want


def test_a_flapping_alert_is_notified_once_then_held(server_factory, tmp_path, webhook):
    """A 1h group interval: the rule runs only as samples commit, so each high sample fires
    the alert and each low one resolves it, nothing in between."""
    url, rec = webhook
    srv = start(server_factory, tmp_path, [FLAP_RULE], *FLAP_ARGS, hook_url=url, interval="1h")
    cycles = 4
    for i in range(cycles):
        flap_once(srv, i)
    rows = flap_rows(srv)
    assert [(r["state"], r["summary"]) for r in rows] == expected_flaps(rows)
    assert [r["state"] for r in rows] == ["firing", "resolved"] * 2 + ["suppressed", "resolved"] \
        * (cycles - 2)  # the case is built so
    fired = [r["ts"] for r in rows if r["state"] == "firing"]
    held = [r["ts"] for r in rows if r["state"] == "suppressed"]
    assert [r["notified"] for r in rows if r["state"] != "resolved"] == \
        [1] * len(fired) + [0] * len(held)
    assert metric_lines(srv)["opsdb_alert_flapping_total"] == 1

    # the webhook: each notified firing once (startsAt = when it fired), nothing of the held ones
    time.sleep(0.3)
    sent = hook_alerts(rec, "/a", "f1")
    assert sorted({s[2] for s in sent if s[0] == "firing"}) == fired, sent
    assert not [s for s in sent if s[2] in held], sent


def test_a_held_flapping_alert_stays_held_while_it_fires(server_factory, tmp_path,
                                                         webhook):
    """A 1s group interval: the third firing, held as flapping, stays high for 2.5 s of
    evaluations; it must stay suppressed and unsent until it resolves."""
    url, rec = webhook
    srv = start(server_factory, tmp_path, [FLAP_RULE], *FLAP_ARGS, hook_url=url)
    for i in range(3):
        flap_once(srv, i, hold_s=2.5 if i == 2 else 0.0)
    rows = flap_rows(srv)
    held = [r["ts"] for r in rows if r["state"] == "suppressed"]
    assert len(held) == 1, rows
    time.sleep(0.3)
    sent = hook_alerts(rec, "/a", "f1", "firing")
    assert [(r["state"], r["summary"]) for r in rows] == expected_flaps(rows) and \
        not [s for s in sent if s[2] in held], \
        ([(r["state"], r["summary"], r["notified"]) for r in rows], sent)


# =============================================================================================
# 5. escalation
# =============================================================================================

ESC_STEPS = [{"after": 1000, "receiver": "B"}, {"after": 2000, "severity": "page"}]
ESC_CONFIG = ("  escalations:\n    - name: esc\n      matchers: \"alertname=EscCpu\"\n"
              "      steps:\n        - {after: 1s, receiver: B}\n"
              "        - {after: 2s, severity: page}\n")


def test_an_unacknowledged_alert_escalates_step_by_step(server_factory, tmp_path,
                                                        webhook):
    url, rec = webhook
    rule = cpu_rule("EscCpu", "esc", labels={"severity": "warning"},
                    annotations={"summary": "esc on {{ $labels.host }}"})
    srv = start(server_factory, tmp_path, [rule], hook_url=url, extra=ESC_CONFIG)
    put(srv, point("e1", "esc", 95), point("e2", "esc", 95))
    acked = wait_until(lambda: [x for x in get_alerts(srv, "EscCpu")
                                if x["labels"]["host"] == "e2" and x["state"] == "firing"],
                       timeout=3)
    assert acked, get_alerts(srv)
    r = srv.post(f"/api/v1/alerts/{acked[0]['id']}/ack", json={"by": "ann"})
    assert r.status_code == 200, r.text
    fired_e2 = ms_of(acked[0]["fired_at"])
    assert now_ms() - fired_e2 < ESC_STEPS[0]["after"], "acknowledged too late for the case"

    # e1: a row per step, its level and severity; step 1 notifies B directly
    rows = wait_rows(srv, "EscCpu", "e1", ["firing", "escalated", "escalated"], timeout=6)
    fired = rows[0]["ts"]
    want = [("firing", 0, "warning", "esc on e1")]
    severity = "warning"
    for level, st in enumerate(ESC_STEPS, 1):
        severity = st.get("severity", severity)
        note = f"escalated to level {level}" + \
            (f", notifying {st['receiver']}" if "receiver" in st else "") + \
            (f", severity {st['severity']}" if "severity" in st else "")
        want.append(("escalated", level, severity, f"esc on e1 - {note}"))
    assert [(r["state"], r["escalation_level"], r["severity"], r["summary"]) for r in rows] \
        == want
    for r, st in zip(rows[1:], ESC_STEPS):
        # due `after` the firing, done by the first evaluation (1s interval) from then
        assert st["after"] <= r["ts"] - fired < st["after"] + 1500, (st, r["ts"] - fired)
    assert rows[1]["ts"] < rows[2]["ts"]
    got = wait_until(lambda: hook_alerts(rec, "/b", "e1"), timeout=3)
    assert got and [(s, l["severity"], t) for s, l, t, _ in got] == [("firing", "warning", fired)]
    bodies = [b for b in rec.bodies("/b") if b["alerts"][0]["labels"]["host"] == "e1"]
    assert bodies[0]["receiver"] == "B"
    assert bodies[0]["groupKey"] == f"escalation/B/{rows[0]['alert_id']}"

    # e2, acknowledged before its first step was due, never escalates
    while now_ms() < fired_e2 + ESC_STEPS[-1]["after"] + 1200:
        time.sleep(0.1)
    assert [r["state"] for r in host_rows(srv, "EscCpu", "e2")] == ["firing", "acknowledged"]
    assert hook_alerts(rec, "/b", "e2") == []
    x = [a for a in get_alerts(srv, "EscCpu") if a["labels"]["host"] == "e2"]
    assert x and x[0]["state"] == "acknowledged"
    # the severity step names no receiver: the alert, now of severity page, goes through the
    # route again (to A); B was notified once only
    assert wait_until(lambda: [l["severity"] for _, l, _, _ in hook_alerts(rec, "/a", "e1")]
                      == ["warning", "page"], timeout=3), hook_alerts(rec, "/a", "e1")
    assert len(hook_alerts(rec, "/b")) == 1, rec.bodies("/b")


def test_an_escalated_severity_survives_a_restart(server_factory, tmp_path, webhook):
    url, rec = webhook
    rule = cpu_rule("EscCpu", "esc", agg="min", labels={"severity": "warning"},
                    annotations={"summary": "esc on {{ $labels.host }}"})
    srv = start(server_factory, tmp_path, [rule], hook_url=url, extra=ESC_CONFIG)
    put(srv, point("e1", "esc", 95))
    rows = wait_rows(srv, "EscCpu", "e1", ["firing", "escalated", "escalated"], timeout=6)
    assert rows[2]["severity"] == "page"
    srv.restart()
    put(srv, point("e1", "esc", 5))  # min over the window: resolves it
    rows = wait_rows(srv, "EscCpu", "e1", ["firing", "escalated", "escalated", "resolved"],
                     timeout=4)
    # resolved under the raised severity, and in the groups notified before the escalation
    got = wait_until(lambda: len(r := hook_alerts(rec, "/a", "e1", "resolved")) >= 2 and r,
                     timeout=3)
    assert got, rec.bodies("/a")
    assert (rows[3]["severity"], rows[3]["escalation_level"]) == ("page", 2)
    assert sorted(a[1]["severity"] for a in got) == ["page", "warning"]


def test_an_escalation_to_an_unknown_receiver_is_refused_with_its_line(server_factory, tmp_path,
                                                                      webhook):
    url, _ = webhook
    bad = ESC_CONFIG.replace("receiver: B}", "receiver: Bee}  # fault")
    srv = start(server_factory, tmp_path, [cpu_rule("EscCpu", "esc")], hook_url=url, extra=bad,
                start=False)
    line = next(i + 1 for i, x in enumerate(srv.conf_path.read_text().splitlines())
                if "# fault" in x)
    with pytest.raises(ServerStartError):
        srv.start()
    assert f"{srv.conf_path}:{line}: escalation esc: receiver 'Bee' is not one of " \
        "alerting.receivers" in srv.run_stderr(), srv.run_stderr()[-600:]

    # a reload with the typo keeps what runs, and says why
    srv.conf_path.write_text(config_text(url, ESC_CONFIG))
    srv.start()
    srv.conf_path.write_text(config_text(url, bad))
    r = srv.post("/api/v1/alerts/reload")
    assert r.status_code == 400, r.text
    assert f"{srv.conf_path}:{line}: escalation esc: receiver 'Bee'" in r.text
    put(srv, point("e9", "esc", 95))
    rows = wait_rows(srv, "EscCpu", "e9", ["firing", "escalated", "escalated"], timeout=6)
    assert "notifying B" in rows[1]["summary"]


# =============================================================================================
# 6. incidents
# =============================================================================================

CORRELATION_MS = 600_000  # alerting.correlation_window's default, 10m


def incidents(srv):
    r = srv.get("/api/v1/incidents")
    assert r.status_code == 200, r.text
    return r.json()["incidents"]


def expected_related(errors, failed, inc):
    """related of an incident, computed from the rows as read back: error fingerprints of its
    hosts and components and failed runs of its pipelines, from a correlation window before it
    opened to its end (now while open)."""
    lo = ms_of(inc["opened_at"]) - CORRELATION_MS
    hi = ms_of(inc["resolved_at"]) if inc["resolved_at"] else now_ms()
    keys = set(inc["keys"]["host"]) | set(inc["keys"]["component"])
    fps = {}
    for e in errors:
        if lo <= e["ts"] <= hi and (e["host"] in keys or e["component"] in keys):
            f = fps.setdefault(e["fingerprint"], {"fingerprint": e["fingerprint"], "events": 0,
                                                  "last_seen": 0, "error_type": e["error_type"],
                                                  "component": e["component"]})
            f["events"] += 1
            f["last_seen"] = max(f["last_seen"], e["ts"])
    runs = {}
    for p in failed:
        if lo <= p["ts"] <= hi and p["pipeline"] in inc["keys"]["pipeline"]:
            k = (p["pipeline"], p["run_id"])
            runs[k] = max(runs.get(k, 0), p["ts"])
    return ({f["fingerprint"]: f for f in fps.values()},
            {k: at for k, at in runs.items()})


def test_incidents_survive_a_restart_and_go_on(server_factory, tmp_path, webhook):
    """Incidents are rows of the incidents table: after a restart the API lists the same
    incident, an alert on the same host joins it, a restored alert resolves in it, and the
    table's row follows every change."""
    url, rec = webhook
    rules = [cpu_rule("RsCpu", "rs_cpu", agg="min"), cpu_rule("RsMem", "rs_mem", agg="min")]
    srv = start(server_factory, tmp_path, rules, hook_url=url)
    put(srv, point("h7", "rs_cpu", 95, "web"))
    a1 = wait_rows(srv, "RsCpu", "h7", ["firing"])[0]
    assert wait_until(lambda: len(incidents(srv)) == 1, timeout=3)
    before = incidents(srv)[0]
    row = wait_until(lambda: srv.query("SELECT * FROM incidents"), timeout=3)
    assert len(row) == 1 and row[0]["id"] == before["id"] and row[0]["state"] == "open"
    assert row[0]["probable_cause"] == a1["alert_id"] and row[0]["opened_at"] == a1["ts"]
    assert json.loads(row[0]["keys"]) == before["keys"]
    assert json.loads(row[0]["alerts"]) == before["alerts"]

    srv.restart()
    after = incidents(srv)
    assert [(i["id"], i["state"], i["opened_at"], i["keys"], i["alerts"]) for i in after] == \
        [(before["id"], "open", before["opened_at"], before["keys"], before["alerts"])]

    # a new alert on h7 joins it; the restored one resolves in it
    put(srv, point("h7", "rs_mem", 95, "db"))
    a2 = wait_rows(srv, "RsMem", "h7", ["firing"])[0]
    put(srv, point("h7", "rs_cpu", 10, "web"))
    r1 = wait_rows(srv, "RsCpu", "h7", ["firing", "resolved"], timeout=3)[1]
    now = incidents(srv)
    assert len(now) == 1 and now[0]["id"] == before["id"] and now[0]["state"] == "open"
    assert [(m["alert_id"], m["resolved_at"] and ms_of(m["resolved_at"]))
            for m in now[0]["alerts"]] == [(a1["alert_id"], r1["ts"]), (a2["alert_id"], None)]
    assert now[0]["keys"]["component"] == ["web", "db"]
    # the new alert's notification carries the incident
    assert wait_until(lambda: [inc for s, l, _, inc in hook_alerts(rec, "/a")
                               if s == "firing" and l["alertname"] == "RsMem"]
                      == [before["id"]], timeout=3)
    put(srv, point("h7", "rs_mem", 10, "db"))
    r2 = wait_rows(srv, "RsMem", "h7", ["firing", "resolved"], timeout=3)[1]
    row = wait_until(lambda: [x for x in srv.query("SELECT * FROM incidents")
                              if x["state"] == "resolved"], timeout=3)
    assert row and row[0]["id"] == before["id"] and row[0]["resolved_at"] == r2["ts"]
    assert len(json.loads(row[0]["alerts"])) == 2

    srv.restart()
    done = incidents(srv)
    assert [(i["id"], i["state"], ms_of(i["resolved_at"])) for i in done] == \
        [(before["id"], "resolved", r2["ts"])]


def test_incidents_correlate_alerts_and_what_relates_to_them(server_factory, tmp_path,
                                                            webhook):
    url, rec = webhook
    rules = [
        cpu_rule("IncCpu", "inc_cpu", agg="min"),
        cpu_rule("IncMem", "inc_mem", agg="min"),
        cpu_rule("IncDisk", "inc_disk"),
        {"alert": "IncPipe", "window": "10m", "op": ">", "threshold": 0,
         "sql": "SELECT pipeline, count(*) AS value FROM pipeline_status WHERE status = 'failed'"
                " AND pipeline = 'etl-a' AND ts >= :window_start AND ts <= :now"
                " GROUP BY pipeline"},
    ]
    srv = start(server_factory, tmp_path, rules, hook_url=url)
    t = now_ms()
    errs = [  # (seconds ago, host, component, type, message)
        (60, "i1", "web", "Timeout", "timeout calling db"),
        (30, "i1", "web", "Timeout", "timeout calling db"),
        (45, "z", "cache", "Miss", "cache miss storm"),
        (40, "z", "other", "Other", "unrelated"),
        (2400, "i1", "web", "Old", "long before the incident"),
        (20, "i2", "batch", "Oom", "out of memory"),
    ]
    r = srv.ingest("error_logs", [{"ts": t - s * 1000, "host": h, "component": c, "level": "error",
                                   "error_type": ty, "message": m} for s, h, c, ty, m in errs])
    assert r.status_code == 200, r.text
    runs = [  # (seconds ago, pipeline, run, stage, status, message)
        (120, "etl-a", "r1", "load", "running", None),
        (100, "etl-a", "r1", "load", "failed", "boom"),
        (50, "etl-a", "r2", "extract", "failed", "no input"),
        (20, "etl-a", "r3", "", "succeeded", None),
        (60, "etl-b", "q1", "load", "failed", "other pipeline"),
    ]
    r = srv.ingest("pipeline_status", [
        {"ts": t - s * 1000, "pipeline": p, "run_id": run, "stage": st, "status": status,
         **({"message": m} if m else {})} for s, p, run, st, status, m in runs])
    assert r.status_code == 200, r.text
    errors = srv.query("SELECT ts, host, component, error_type, fingerprint FROM error_logs")
    failed = srv.query("SELECT ts, pipeline, run_id FROM pipeline_status "
                       "WHERE status = 'failed'")
    assert len(errors) == len(errs) and len({e["fingerprint"] for e in errors}) >= 4

    # two rules on host i1 (IncCpu first), one on host i2
    put(srv, point("i1", "inc_cpu", 95, "web"))
    a1 = wait_rows(srv, "IncCpu", "i1", ["firing"])[0]
    put(srv, point("i1", "inc_mem", 95, "cache"))
    a2 = wait_rows(srv, "IncMem", "i1", ["firing"])[0]
    put(srv, point("i2", "inc_cpu", 95, "batch"))
    b1 = wait_rows(srv, "IncCpu", "i2", ["firing"])[0]
    pipe = wait_until(lambda: hist(srv, "rule = 'IncPipe'"), timeout=3)
    assert pipe and pipe[0]["state"] == "firing"
    assert a1["ts"] < a2["ts"] < b1["ts"]

    def by_alert():
        return {m["alert_id"]: inc for inc in incidents(srv) for m in inc["alerts"]}
    assert wait_until(lambda: len(by_alert()) == 4, timeout=3), incidents(srv)
    incs = by_alert()
    inc1, inc2, inc3 = incs[a1["alert_id"]], incs[b1["alert_id"]], incs[pipe[0]["alert_id"]]
    assert incs[a2["alert_id"]]["id"] == inc1["id"]
    assert len({inc1["id"], inc2["id"], inc3["id"]}) == 3 and len(incidents(srv)) == 3
    assert [(m["alert_id"], m["rule"], ms_of(m["fired_at"]), m["resolved_at"])
            for m in inc1["alerts"]] == [(a1["alert_id"], "IncCpu", a1["ts"], None),
                                         (a2["alert_id"], "IncMem", a2["ts"], None)]
    assert inc1["probable_cause"]["alert_id"] == a1["alert_id"]
    assert inc1["probable_cause"]["rule"] == "IncCpu"
    assert ms_of(inc1["probable_cause"]["fired_at"]) == a1["ts"]
    assert inc1["keys"] == {"host": ["i1"], "component": ["web", "cache"], "pipeline": []}
    assert inc2["keys"] == {"host": ["i2"], "component": ["batch"], "pipeline": []}
    assert inc3["keys"] == {"host": [], "component": [], "pipeline": ["etl-a"]}
    assert ms_of(inc1["opened_at"]) == a1["ts"] and ms_of(inc2["opened_at"]) == b1["ts"]
    for inc in (inc1, inc2, inc3):
        assert inc["state"] == "open" and inc["resolved_at"] is None
        want_fps, want_runs = expected_related(errors, failed, inc)
        got_fps = {f["fingerprint"]: f for f in inc["related"]["error_fingerprints"]}
        assert sorted(got_fps) == sorted(want_fps), (inc["keys"], got_fps, want_fps)
        for fp, w in want_fps.items():
            g = got_fps[fp]
            assert (g["events"], g["last_seen"], g["error_type"], g["component"]) == \
                (w["events"], w["last_seen"], w["error_type"], w["component"]), (g, w)
        got_runs = {(x["pipeline"], x["run_id"]): x["failed_at"]
                    for x in inc["related"]["failed_pipeline_runs"]}
        assert got_runs == want_runs, (inc["keys"], got_runs, want_runs)
    assert len(inc1["related"]["error_fingerprints"]) == 2  # the case is built so
    assert len(inc3["related"]["failed_pipeline_runs"]) == 2
    assert [x["run_id"] for x in inc3["related"]["failed_pipeline_runs"]] == ["r2", "r1"]
    assert {x["run_id"]: (x["stage"], x["message"])
            for x in inc3["related"]["failed_pipeline_runs"]} == \
        {"r1": ("load", "boom"), "r2": ("extract", "no input")}

    # the webhook payloads carry the incident of their alert
    def sent_incidents():
        return {(l["alertname"], l.get("host", l.get("pipeline"))): inc
                for s, l, _, inc in hook_alerts(rec, "/a") if s == "firing"}
    want = {("IncCpu", "i1"): inc1["id"], ("IncMem", "i1"): inc1["id"],
            ("IncCpu", "i2"): inc2["id"], ("IncPipe", "etl-a"): inc3["id"]}
    assert wait_until(lambda: sent_incidents() == want, timeout=3), (sent_incidents(), want)

    # the incident resolves with its last alert
    put(srv, point("i1", "inc_cpu", 10, "web"))
    wait_rows(srv, "IncCpu", "i1", ["firing", "resolved"], timeout=3)
    assert next(i for i in incidents(srv) if i["id"] == inc1["id"])["state"] == "open"
    put(srv, point("i1", "inc_mem", 10, "cache"))
    r2 = wait_rows(srv, "IncMem", "i1", ["firing", "resolved"], timeout=3)[1]
    r1 = host_rows(srv, "IncCpu", "i1")[1]
    now = {i["id"]: i for i in incidents(srv)}
    done = now[inc1["id"]]
    assert done["state"] == "resolved" and ms_of(done["resolved_at"]) == r2["ts"], done
    assert [ms_of(m["resolved_at"]) for m in done["alerts"]] == [r1["ts"], r2["ts"]]
    assert now[inc2["id"]]["state"] == "open" and now[inc3["id"]]["state"] == "open"
    want_fps, _ = expected_related(errors, failed, done)
    assert sorted(f["fingerprint"] for f in done["related"]["error_fingerprints"]) == \
        sorted(want_fps)
    assert wait_until(lambda: {l["alertname"]: inc for s, l, _, inc in hook_alerts(rec, "/a", "i1")
                               if s == "resolved"} == {"IncCpu": inc1["id"],
                                                       "IncMem": inc1["id"]}, timeout=3), \
        hook_alerts(rec, "/a", "i1")

    # the same host fires again: a new incident, the resolved one stays as it was
    put(srv, point("i1", "inc_disk", 96, "web"))
    again = wait_rows(srv, "IncDisk", "i1", ["firing"], timeout=3)[0]
    now = incidents(srv)
    opened = [i for i in now if any(m["alert_id"] == again["alert_id"] and
                                    m["resolved_at"] is None for m in i["alerts"])]
    assert len(opened) == 1 and opened[0]["id"] not in (inc1["id"], inc2["id"], inc3["id"])
    assert opened[0]["state"] == "open" and ms_of(opened[0]["opened_at"]) == again["ts"]
    assert next(i for i in now if i["id"] == inc1["id"]) == done


# =============================================================================================
# 7. the view alert_quality
# =============================================================================================

QUICK_MS_DEFAULT = 300_000


def expected_quality(rows, now, window_ms, quick_ms=QUICK_MS_DEFAULT):
    """alert_quality computed from alert_history rows (ts, rid, alert_id, rule, state) as
    docs/views.md defines it: an episode starts with a firing or suppressed row in the window
    that follows no row, a pending or a resolved row of its alert, and ends with the next
    resolved row; relevant when acknowledged before that end, still active, or lasting at
    least quick_ms."""
    rows = sorted((r for r in rows if r["ts"] <= now), key=lambda r: (r["ts"], r["rid"]))
    by_alert = {}
    for r in rows:
        by_alert.setdefault(r["alert_id"], []).append(r)
    per_rule = {}
    for alert_rows in by_alert.values():
        for i, s in enumerate(alert_rows):
            if s["state"] not in ("firing", "suppressed") or not now - window_ms < s["ts"]:
                continue
            if i and alert_rows[i - 1]["state"] not in ("resolved", "pending"):
                continue
            later = alert_rows[i:]
            ended = next((r["ts"] for r in later if r["state"] == "resolved"), None)
            acked = any(r["state"] == "acknowledged" and (ended is None or r["ts"] <= ended)
                        and not any(x["state"] == "resolved" and s["ts"] <= x["ts"] < r["ts"]
                                    for x in later) for r in later)
            relevant = acked or ended is None or ended - s["ts"] >= quick_ms
            q = per_rule.setdefault(s["rule"], {"alerts": 0, "relevant": 0, "acknowledged": 0,
                                                "active": 0, "durations": []})
            q["alerts"] += 1
            q["relevant"] += relevant
            q["acknowledged"] += acked
            q["active"] += ended is None
            q["durations"].append((ended if ended is not None else now) - s["ts"])
    out = {}
    for rule, q in per_rule.items():
        out[rule] = {"rule": rule, "alerts": q["alerts"], "relevant": q["relevant"],
                     "noisy": q["alerts"] - q["relevant"],
                     "relevance": round(q["relevant"] / q["alerts"], 4),
                     "acknowledged": q["acknowledged"], "active": q["active"],
                     "mean_duration_ms": int(sum(q["durations"]) / len(q["durations"]))}
    return out


# hand-written history of rule QHand: (alert, minutes ago, state)
HAND = [
    ("h1", 40, "firing"), ("h1", 30, "resolved"),                        # 10 min: relevant
    ("h2", 20, "pending"), ("h2", 19, "firing"), ("h2", 18, "resolved"),  # 1 min: noisy
    ("h3", 15, "firing"), ("h3", 14.5, "acknowledged"), ("h3", 14, "resolved"),  # acknowledged
    ("h4", 10, "firing"), ("h4", 9, "resolved"), ("h4", 8, "firing"),     # noisy, then active
    ("h5", 7, "suppressed"), ("h5", 6.5, "firing"), ("h5", 6, "resolved"),  # one episode, noisy
    ("h6", 120, "firing"), ("h6", 119, "resolved"),                      # outside a 1h window
    ("h7", 50, "acknowledged"), ("h7", 45, "resolved"), ("h7", 44, "firing"),
    ("h7", 43.5, "resolved"),                                            # an old ack: noisy
]


def quality_rows(srv):
    return srv.query("SELECT rowid AS rid, ts, alert_id, rule, state FROM alert_history")


def view_quality(srv, **params):
    r = srv.get("/api/v1/views/alert_quality", params=params)
    assert r.status_code == 200, r.text
    return {x["rule"]: x for x in r.json()["rows"]}


def quality_case(server_factory, tmp_path):
    """A server whose alert_history holds hand-written episodes (QHand) and episodes of real
    alerts: QShort (a 1s window: resolves on its own, noisy), QLong on qb (acknowledged, then
    resolved), ql (still active) and qm (resolved unacknowledged)."""
    rules = [cpu_rule("QShort", "q_short", window="1s"), cpu_rule("QLong", "q_long", agg="min")]
    srv = start(server_factory, tmp_path, rules)
    t = now_ms()
    r = srv.ingest("alert_history", [
        {"ts": t - int(m * 60_000), "alert_id": f"hand-{a}", "rule": "QHand", "state": st,
         "labels": {"host": a}} for a, m, st in HAND])
    assert r.status_code == 200, r.text
    put(srv, point("qa", "q_short", 95), *[point(h, "q_long", 95) for h in ("qb", "ql", "qm")])
    qb = wait_until(lambda: [x for x in get_alerts(srv, "QLong") if x["labels"]["host"] == "qb"
                             and x["state"] == "firing"], timeout=3)
    assert qb, get_alerts(srv)
    assert srv.post(f"/api/v1/alerts/{qb[0]['id']}/ack", json={"by": "ann"}).status_code == 200
    wait_rows(srv, "QLong", "qb", ["firing", "acknowledged"])
    put(srv, point("qb", "q_long", 10), point("qm", "q_long", 10))
    for rule, host, states in [("QShort", "qa", ["firing", "resolved"]),
                               ("QLong", "qb", ["firing", "acknowledged", "resolved"]),
                               ("QLong", "qm", ["firing", "resolved"]),
                               ("QLong", "ql", ["firing"])]:
        wait_rows(srv, rule, host, states, timeout=4)
    return srv


def test_alert_quality_matches_alert_history(server_factory, tmp_path):
    srv = quality_case(server_factory, tmp_path)
    now = now_ms()
    got = view_quality(srv, window="1h", now=rfc3339(now))
    want = expected_quality(quality_rows(srv), now, 3600_000)
    assert sorted(want) == ["QHand", "QLong", "QShort"]
    assert want["QHand"]["alerts"] == 7 and 0 < want["QHand"]["relevant"] < 7  # built so
    assert got == want
    # the default window, 7 days, also counts h6
    got7 = view_quality(srv, now=rfc3339(now))
    assert got7 == expected_quality(quality_rows(srv), now, 7 * 86400_000)
    assert got7["QHand"]["alerts"] == want["QHand"]["alerts"] + 1

    # opsdb_alert_relevance{rule}: the relevance over the last 7 days
    m = metric_lines(srv)
    want7 = expected_quality(quality_rows(srv), now_ms(), 7 * 86400_000)
    relevance = {k[len('opsdb_alert_relevance{rule="'):-2]: v for k, v in m.items()
                 if k.startswith("opsdb_alert_relevance{")}
    assert relevance == pytest.approx({r: q["relevance"] for r, q in want7.items()}, abs=1e-9)


def test_alert_quality_takes_quick_ms(server_factory, tmp_path):
    srv = quality_case(server_factory, tmp_path)
    now = now_ms()
    quick_ms = 50_000  # QHand's 1-minute episodes become relevant, the 30-second one not
    r = srv.get("/api/v1/views/alert_quality",
                params={"window": "1h", "now": rfc3339(now), "quick_ms": quick_ms})
    want = expected_quality(quality_rows(srv), now, 3600_000, quick_ms)
    assert want != expected_quality(quality_rows(srv), now, 3600_000)  # the case is built so
    assert r.status_code == 200, r.text
    assert {x["rule"]: x for x in r.json()["rows"]} == want


# =============================================================================================
# 8. opsdb alerts backtest
# =============================================================================================

BT_RULE = {"alert": "BT", "table": "system_metrics", "metric": "bt", "aggregation": "max",
           "window": "2s", "op": ">", "threshold": 80, "resolve_threshold": 60, "for": "2s",
           "annotations": {"summary": "bt on {{ $labels.host }}"}}
BT_INTERVAL_MS = 2000
# one sample a second from the start of the replay
BT_VALUES = {"b1": [10, 10, 10, 10, 90, 50, 50, 10, 10, 10,    # pending, gone before `for`
                    85, 70, 65, 62, 61, 55, 40, 10, 10, 10,    # fires, held by hysteresis
                    95, 95, 95, 95, 95, 95, 95, 95, 30, 30,    # fires; the silence begins
                    10, 10, 10, 10, 99, 99, 99, 99, 10, 10,    # fires under the silence
                    10, 10],
             "b2": [10] * 42}
BT_SILENCE_AT_S = 25  # the silence starts this many seconds into the replay


def replay(host, values, t0, t_from, t_to, suppressions=(), steps=()):
    """The events the engine should trace for BT_RULE over one series' samples (values[k] at
    t0 + k s), evaluated every BT_INTERVAL_MS from t_from to t_to, through pending (for),
    hysteresis, suppressions [(start, end, reason)] (silences, maintenance windows) and
    escalation steps [(after ms since first notified, receiver or None, severity or None)].
    Each event is (time,
    event, value, note, severity label of a notification); in one evaluation the rows come
    first, then the notifications."""
    r = BT_RULE
    samples = [(t0 + k * 1000, v) for k, v in enumerate(values)]
    window_ms, for_ms = 2000, 2000
    summary = f"bt on {host}"
    state, since, notified_at, value, events = "inactive", None, None, None, []
    suppressed = notified = False
    level, severity = 0, None
    next_due = 0
    for t in range(t_from, t_to + 1, 1000):
        if t < next_due:
            continue
        next_due = t + BT_INTERVAL_MS
        rows, notes = [], []
        inside = [v for ts, v in samples if t - window_ms < ts <= t]
        if inside:
            value = max(inside)
        active = state != "inactive"
        hit = bool(inside) and value > (r["resolve_threshold"] if active else r["threshold"])
        why = next((w for lo, hi, w in suppressions if lo <= t < hi), None)
        if hit:
            if state == "inactive":
                state, since = "pending", t
                rows.append((t, "pending", value, summary, None))
            changed = False
            if state == "pending" and t - since >= for_ms:
                state, changed = "firing", True
            elif state == "firing" and (why is not None) != suppressed:
                changed = True
            if changed:
                suppressed = why is not None
                if suppressed:  # withdrawn: no resolution while suppressed
                    notified = False
                    rows.append((t, "suppressed", value, f"{summary} - {why}", None))
                else:
                    notified = True
                    notified_at = t if notified_at is None else notified_at
                    rows.append((t, "firing", value, summary, None))
                    notes.append((t, "notify firing", value, None, severity))
            if state == "firing" and not suppressed and level < len(steps) \
                    and t - notified_at >= steps[level][0]:
                after, receiver, raised = steps[level]
                level += 1
                severity = raised or severity
                note = f"escalated to level {level}" + \
                    (f", notifying {receiver}" if receiver else "") + \
                    (f", severity {raised}" if raised else "")
                rows.append((t, "escalated", value, f"{summary} - {note}", None))
                notes.append((t, "notify firing", value, receiver, severity))
        else:
            if state == "firing":
                rows.append((t, "resolved", value, summary, None))
                if notified:
                    notes.append((t, "notify resolved", value, None, severity))
                if notified and severity:  # raised by an escalation: the first groups too
                    notes.append((t, "notify resolved", value, None, None))
            elif state == "pending":
                rows.append((t, "resolved", value, summary, None))
            state, suppressed, notified, level, severity = "inactive", False, False, 0, None
            notified_at = None
        events += rows + notes
    return events


NO_RECEIVER = ("no receiver is configured: add alerting.receivers and alerting.route to the "
               "config file")


def dropped(events):
    """replay()'s events as the backtest shows them with a --config without receivers: the
    notifier drops every notification, as a server would, and the note says why."""
    out = []
    for t, event, value, receiver, severity in events:
        if event.startswith("notify"):
            event = "notify dropped"
            receiver = (f"escalation to receiver '{receiver}', which is not defined: add it to "
                        "alerting.receivers or name another in the escalation step"
                        if receiver else NO_RECEIVER)
        out.append((t, event, value, receiver, severity))
    return out


def traced(events):
    """The backtest's events in the shape replay() gives."""
    return [(ms_of(e["time"]), e["event"], e["value"], e["note"],
             json.loads(e["labels"]).get("severity") if e["event"].startswith("notify")
             else None) for e in events["rows"]]


def json_documents(text):
    """The JSON documents printed one after another."""
    dec, docs, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        doc, i = dec.raw_decode(text, i)
        docs.append(doc)
    return docs


def test_backtest_replays_a_rule_over_past_samples(server_factory, tmp_path, run_cli):
    srv = server_factory("--set", "alerting.default_rules=off")
    t0 = (now_ms() // 1000 - 20 * 60) * 1000  # 20 minutes ago, on a second
    for host, values in BT_VALUES.items():
        put(srv, *[sample(t0 + k * 1000, host, "c", "bt", v) for k, v in enumerate(values)])
    s_start = t0 + BT_SILENCE_AT_S * 1000
    r = srv.post("/api/v1/silences", json={"matchers": "host=b1", "starts_at": s_start // 1000,
                                           "ends_at": rfc3339(now_ms() + 3600_000),
                                           "created_by": "ann", "comment": "backtest"})
    assert r.status_code == 200, r.text
    sil = silences(srv)[r.json()["id"]]
    silence = (ms_of(sil["starts_at"]), ms_of(sil["ends_at"]),
               f"silenced by {sil['id']} (backtest, by ann)")
    rules = tmp_path / "bt.yaml"
    rules.write_text(rules_text([BT_RULE], interval=f"{BT_INTERVAL_MS // 1000}s"))
    t_from, t_to = t0, t0 + (len(BT_VALUES["b1"]) - 1) * 1000

    cp = run_cli("alerts", "backtest", rules, "--from", t_from // 1000, "--to", t_to // 1000,
                 "--db", srv.db, "--format", "json")
    assert cp.returncode == 0, cp.stderr
    events, summary = json_documents(cp.stdout)
    model = replay("b1", BT_VALUES["b1"], t0, t_from, t_to, [silence])
    for k in ("pending", "firing", "suppressed", "notify firing", "notify resolved"):
        assert k in [w[1] for w in model], (k, model)  # the case is built so
    want = dropped(model)  # no --config: no receivers
    kinds = [w[1] for w in want]
    got = traced(events)
    assert got == want, "\n".join(f"{g} | {w}" for g, w in zip(got, want)) + \
        f"\n{len(got)} events, want {len(want)}"
    b1 = {"alertname": "BT", "component": "c", "host": "b1"}
    assert all(json.loads(e["labels"]) == b1 and e["rule"] == "BT" for e in events["rows"])
    assert len({e["alert_id"] for e in events["rows"]}) == 1
    counts = {"fired": "firing", "suppressed": "suppressed", "resolved": "resolved",
              "notified_firing": "notify firing", "notified_resolved": "notify resolved",
              "dropped": "notify dropped", "escalated": "escalated"}
    assert summary["rows"] == [{"rule": "BT", **{c: kinds.count(k) for c, k in counts.items()}}]
    evaluations = len(range(t_from, t_to + 1, BT_INTERVAL_MS))
    assert f"1 rules, {evaluations} evaluations" in cp.stderr, cp.stderr
    assert f"{kinds.count('notify dropped')} notifications dropped" in cp.stderr, cp.stderr
    # a replay writes nothing
    assert srv.count("alert_history") == 0
    assert srv.count("silences") == 1

    # bad arguments: a message and a non-zero exit
    for args, message in [
        (["--from", t_to // 1000, "--to", t_from // 1000], "--to must come after --from"),
        (["--from", t_from // 1000, "--to", t_from // 1000], "--to must come after --from"),
        (["--to", t_to // 1000], "needs --from and --to"),
        (["--from", "yesterday", "--to", t_to // 1000], "needs --from and --to"),
    ]:
        cp = run_cli("alerts", "backtest", rules, *args, "--db", srv.db)
        assert cp.returncode != 0 and message in cp.stderr, (args, cp.returncode, cp.stderr)
    missing = tmp_path / "nosuch.yaml"
    cp = run_cli("alerts", "backtest", missing, "--from", t_from // 1000, "--to", t_to // 1000,
                 "--db", srv.db)
    assert cp.returncode != 0 and f"cannot read rule file {missing}" in cp.stderr, cp.stderr
    cp = run_cli("alerts", "backtest", "--from", t_from // 1000, "--to", t_to // 1000,
                 "--db", srv.db)
    assert cp.returncode != 0 and "needs a rule file" in cp.stderr, cp.stderr
    assert srv.count("alert_history") == 0


def backtest_with_config(tmp_path, run_cli, host, values, window, steps):
    """Writes values (one a second from half an hour ago) of host's series with `opsdb ingest`,
    then replays BT_RULE over them with a --config that has the maintenance window (name,
    start offset ms, end offset ms) and the escalation steps [(after ms, receiver or None,
    severity or None)]. Returns t0, the events replay() computes (notifications as the engine
    makes them), the events as traced() (those notifications dropped: no receiver is
    configured) and the backtest's summary."""
    db = tmp_path / "bt.db"
    t0 = (now_ms() // 1000 - 30 * 60) * 1000
    cp = run_cli("ingest", "system_metrics", "--db", db, input="".join(
        json.dumps(sample(t0 + k * 1000, host, "db", "bt", v)) + "\n"
        for k, v in enumerate(values)))
    assert cp.returncode == 0, cp.stderr
    name, lo, hi = window
    yaml_steps = ", ".join(
        "{" + ", ".join([f"after: {after // 1000}s"] + ([f"receiver: {rcv}"] if rcv else []) +
                        ([f"severity: {sev}"] if sev else [])) + "}"
        for after, rcv, sev in steps)
    conf = tmp_path / "replay.yaml"
    conf.write_text(
        "alerting:\n  maintenance:\n"
        f"    - {{name: {name}, matchers: \"host={host}\", start: \"{rfc3339(t0 + lo)}\", "
        f"end: \"{rfc3339(t0 + hi)}\"}}\n"
        "  escalations:\n    - name: replay-esc\n      matchers: \"alertname=BT\"\n"
        f"      steps: [{yaml_steps}]\n")
    rules = tmp_path / "bt.yaml"
    rules.write_text(rules_text([BT_RULE], interval=f"{BT_INTERVAL_MS // 1000}s"))
    t_to = t0 + (len(values) - 1) * 1000
    cp = run_cli("alerts", "backtest", rules, "--from", t0 // 1000, "--to", t_to // 1000,
                 "--db", db, "--config", conf, "--format", "json")
    assert cp.returncode == 0, cp.stderr
    events, summary = json_documents(cp.stdout)
    model = replay(host, values, t0, t0, t_to,
                   [(t0 + lo, t0 + hi, f"maintenance window {name}")], steps)
    want = dropped(model)  # the config has no receivers, so B is not defined either
    got = traced(events)
    assert got == want, "\n".join(f"{g} | {w}" for g, w in zip(got, want)) + \
        f"\n{len(got)} events, want {len(want)}"
    return t0, model, got, summary


def test_backtest_escalates_from_the_first_notification_not_the_firing(tmp_path, run_cli):
    """An alert that fires inside a maintenance window is first notified when the window ends;
    its escalation steps count from then, not from the firing nobody was told of."""
    t0, model, got, _ = backtest_with_config(tmp_path, run_cli, "b4", [95] * 30 + [10] * 4,
                                             ("early", 0, 12_000),
                                             [(4000, "B", None), (8000, None, "page")])
    suppressed_at = next(t for t, e, *_ in got if e == "suppressed")
    notified_at = next(t for t, e, *_ in got if e == "firing")
    first_note = next(t for t, e, *_ in model if e == "notify firing")
    escalated = [t for t, e, *_ in got if e == "escalated"]
    assert suppressed_at < t0 + 12_000 <= notified_at == first_note
    assert len(escalated) == 2
    assert escalated[0] - notified_at >= 4000 and escalated[1] - notified_at >= 8000


def test_backtest_applies_maintenance_windows_and_escalations_of_the_config(tmp_path, run_cli):
    """No server: the samples are written with `opsdb ingest`, and the replay reads the
    maintenance windows and escalation steps from --config."""
    _, model, _, summary = backtest_with_config(tmp_path, run_cli, "b3", [95] * 30 + [10] * 6,
                                                ("replay-mw", 10_000, 20_000),
                                                [(3000, "B", None), (6000, None, "page")])
    kinds = [w[1] for w in model]
    assert kinds.count("escalated") == 2 and "suppressed" in kinds and \
        ("notify firing", "page") in [(w[1], w[4]) for w in model]  # the case is built so
    assert summary["rows"][0]["escalated"] == 2
    assert summary["rows"][0]["suppressed"] == 1
    assert summary["rows"][0]["dropped"] == kinds.count("notify firing") + \
        kinds.count("notify resolved")
    assert summary["rows"][0]["notified_firing"] == 0


def test_backtest_routes_and_groups_notifications_as_the_notifier(tmp_path, run_cli):
    """With receivers and a route in --config, the replay's notifications are those the
    notifier's routes and groups would have sent, at their times: group_wait gathers the alerts
    of two hosts into one first notification, repeat_interval repeats it while they fire, and
    their resolution is one more; each alert of a notification is one event naming the
    receiver, the kind of send and the group."""
    db = tmp_path / "bt.db"
    t0 = (now_ms() // 1000 - 30 * 60) * 1000
    values = {"r1": [95] * 42 + [10] * 18,
              "r2": [10] * 4 + [95] * 38 + [10] * 18}
    cp = run_cli("ingest", "system_metrics", "--db", db, input="".join(
        json.dumps(sample(t0 + k * 1000, host, "db", "bt", v)) + "\n"
        for host, vs in values.items() for k, v in enumerate(vs)))
    assert cp.returncode == 0, cp.stderr
    conf = tmp_path / "replay.yaml"
    conf.write_text(
        "alerting:\n"
        "  receivers: [{name: ops, webhook: {url: \"http://127.0.0.1:9/never-called\"}}]\n"
        "  route: {receiver: ops, group_by: [alertname], group_wait: 10s, group_interval: 5s,"
        " repeat_interval: 20s}\n")
    rules = tmp_path / "bt.yaml"
    rules.write_text(rules_text([BT_RULE], interval=f"{BT_INTERVAL_MS // 1000}s"))
    t_to = t0 + 59_000
    cp = run_cli("alerts", "backtest", rules, "--from", t0 // 1000, "--to", t_to // 1000,
                 "--db", db, "--config", conf, "--format", "json")
    assert cp.returncode == 0, cp.stderr
    events, summary = json_documents(cp.stdout)
    # the rule: pending at the first evaluation over 80, firing one `for` (2 s) later, resolved
    # at the first evaluation whose 2 s window is all 10: r1 fires at +2 s, r2 at +6 s, both
    # resolve at +44 s. The group {alertname="BT"} appears at +2 s: first send group_wait
    # later (+12 s) with both, a repeat repeat_interval later (+32 s), and the resolution at
    # once at +44 s (group_interval since the last send is over).
    transitions = [(ms_of(e["time"]) - t0, e["event"], json.loads(e["labels"])["host"])
                   for e in events["rows"] if not e["event"].startswith("notify")]
    assert transitions == [(0, "pending", "r1"), (2000, "firing", "r1"),
                           (4000, "pending", "r2"), (6000, "firing", "r2"),
                           (44000, "resolved", "r1"), (44000, "resolved", "r2")], transitions
    group = '{}:{alertname="BT"}'
    notes = [(ms_of(e["time"]) - t0, e["event"], json.loads(e["labels"])["host"],
              e["receiver"], e["send"], e["group"])
             for e in events["rows"] if e["event"].startswith("notify")]
    assert notes == [
        (12000, "notify firing", "r1", "ops", "first", group),
        (12000, "notify firing", "r2", "ops", "first", group),
        (32000, "notify firing", "r1", "ops", "repeat", group),
        (32000, "notify firing", "r2", "ops", "repeat", group),
        (44000, "notify resolved", "r1", "ops", "resolved", group),
        (44000, "notify resolved", "r2", "ops", "resolved", group),
    ], notes
    assert summary["rows"] == [{"rule": "BT", "fired": 2, "suppressed": 0, "resolved": 2,
                                "notified_firing": 4, "notified_resolved": 2, "dropped": 0,
                                "escalated": 0}]
    assert "dropped" not in cp.stderr, cp.stderr

    # the same replay, table format: the receiver, the kind of send and the group are columns
    cp = run_cli("alerts", "backtest", rules, "--from", t0 // 1000, "--to", t_to // 1000,
                 "--db", db, "--config", conf)
    assert cp.returncode == 0, cp.stderr
    header = cp.stdout.splitlines()[0].split()
    assert header[:7] == ["time", "event", "rule", "alert_id", "value", "receiver", "send"], \
        header


# =============================================================================================
# 9. the notifier after a restart
# =============================================================================================

RS_REPEAT_S = 4


@pytest.mark.parametrize("how", ["restart", "reload"])
def test_a_restart_keeps_the_repeats_of_a_firing_alert_and_resolves_it_once(
        server_factory, tmp_path, webhook, how):
    """An alert notified before a restart (or a reload, which makes a new notifier) is known to
    the notifier after it: no firing notification again, the next repeat repeat_interval after
    the last send (as notification_log shows it), and the resolution once, in the same
    group."""
    url, rec = webhook
    rule = cpu_rule("RsCpu", "rs_cpu", threshold=80, agg="min", window="60s")
    extra = (f'  receivers: [{{name: A, webhook: {{url: "{url}/a"}}}}]\n'
             "  route: {receiver: A, group_by: ['...'], group_wait: 0s, group_interval: 100ms, "
             f"repeat_interval: {RS_REPEAT_S}s}}\n")
    srv = start(server_factory, tmp_path, [rule], extra=extra)

    def posts():
        with rec.lock:
            return [(t, body) for t, path, _, body in rec.requests if path == "/a"]

    put(srv, point("rs", "rs_cpu", 95))
    first = wait_until(lambda: posts(), timeout=5)
    assert first and first[0][1]["status"] == "firing", first
    key = first[0][1]["groupKey"]
    assert [a["labels"]["host"] for a in first[0][1]["alerts"]] == ["rs"]
    assert wait_until(lambda: srv.count("notification_log") >= 1, timeout=5)
    if how == "restart":
        srv.restart()
    else:
        r = srv.post("/api/v1/alerts/reload")
        assert r.status_code == 200, r.text
    restarted = time.monotonic()
    last_send = posts()[-1][0]
    assert restarted - last_send < RS_REPEAT_S - 1, f"the {how} took too long for this test"

    # the repeat comes repeat_interval after the last send, not at once and not never
    repeat = wait_until(lambda: posts()[len(first):], timeout=RS_REPEAT_S + 3)
    assert repeat, f"no repeat after the {how}"
    at, body = repeat[0]
    assert RS_REPEAT_S - 0.5 <= at - last_send <= RS_REPEAT_S + 1.5, (at - last_send, body)
    assert body["status"] == "firing" and body["groupKey"] == key, body
    assert len(repeat) == 1, repeat
    assert [a["state"] for a in get_alerts(srv, "RsCpu")] == ["firing"]

    # resolved: one notification, to the same group
    n_before = len(posts())
    put(srv, point("rs", "rs_cpu", 10))
    resolved = wait_until(lambda: posts()[n_before:], timeout=5)
    assert resolved and resolved[0][1]["status"] == "resolved", resolved
    assert resolved[0][1]["groupKey"] == key, resolved
    time.sleep(1.0)
    assert [b["status"] for _, b in posts()[n_before:]] == ["resolved"], posts()[n_before:]
