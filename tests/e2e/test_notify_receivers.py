"""Receivers end to end: a real `opsdb serve` with a rule file and alerting.receivers fires an
alert from an ingested sample, and the notification reaches a real receiver started by the test:
an HTTP server (webhook, Alertmanager's payload version 4), an SMTP server (aiosmtpd, Debian's
python3-aiosmtpd) and a real Alertmanager (Debian's prometheus-alertmanager). Each delivery is
also read back from notification_log through the query API, like a user would.

The rule (RULES) fires while the average of cpu_usage over 10 minutes is above 90: one sample of
95 fires it at once (for: 0s, evaluated on commit), a later sample of 0 resolves it.
"""

import asyncio
import email
import email.policy
import email.utils
import shutil
import subprocess
import threading
import time
from datetime import datetime

import pytest
import requests

from conftest import free_port, now_ms, unique, wait_until

ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"

RULES = """\
groups:
  - name: e2e-notify
    interval: 1s
    rules:
      - alert: E2EHighCPU
        table: system_metrics
        metric: cpu_usage
        aggregation: avg
        window: 10m
        op: ">"
        threshold: 90
        for: 0s
        labels: {severity: critical, team: e2e}
        annotations: {summary: "cpu of {{ $labels.host }} is high"}
"""


def start_opsdb(server_factory, tmp_path, receivers, receiver, route_extra=""):
    """Starts opsdb with the rule file above, no default rules, the receivers (YAML flow text)
    and a route to receiver that groups by alertname, sends at once and changes after 1 s
    (route_extra: more keys of the route, e.g. ", repeat_interval: 1h")."""
    (tmp_path / "rules.yaml").write_text(RULES)
    return server_factory(config=(
        f"alerting:\n  rule_files: [rules.yaml]\n  default_rules: off\n"
        f"  receivers: {receivers}\n"
        f"  route: {{receiver: {receiver}, group_by: [alertname], group_wait: 0s, "
        f"group_interval: 1s{route_extra}}}\n"))


def cpu(srv, host, value):
    r = srv.ingest("system_metrics", [{"ts": now_ms(), "host": host, "component": "web",
                                       "metric": "cpu_usage", "value": value}])
    assert r.status_code == 200, r.text


def log_rows(srv, receiver):
    return srv.query("SELECT status, attempt, http_status, alerts, error, group_key "
                     f"FROM notification_log WHERE receiver = '{receiver}' ORDER BY ts, attempt")


def firing_alerts(srv, host):
    return [a for a in srv.get("/api/v1/alerts").json()["alerts"]
            if a["labels"].get("host") == host and a["state"] == "firing"]


def rfc3339_ms(text):
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


# ---- an HTTP receiver ----------------------------------------------------------------------

# ---- webhook ---------------------------------------------------------------------------------

def test_webhook_fires_logs_and_does_not_repeat_after_restart(server_factory, tmp_path,
                                                             webhook):
    url, rec = webhook
    host = unique("h")
    srv = start_opsdb(server_factory, tmp_path, f'[{{name: hook, webhook: {{url: "{url}/hook"}}}}]',
                      "hook", ", repeat_interval: 1h")
    t0 = time.monotonic()
    cpu(srv, host, 95)
    assert wait_until(lambda: rec.bodies("/hook"), timeout=2), "no webhook call within 2 s"
    assert time.monotonic() - t0 < 2.5
    body = rec.bodies("/hook")[0]
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == "hook"
    assert body["groupKey"] == '{}:{alertname="E2EHighCPU"}'
    assert body["groupLabels"] == {"alertname": "E2EHighCPU"}
    assert body["truncatedAlerts"] == 0
    (alert,) = body["alerts"]
    assert alert["status"] == "firing"
    assert alert["labels"] == {"alertname": "E2EHighCPU", "host": host, "component": "web",
                               "severity": "critical", "team": "e2e"}
    assert alert["annotations"] == {"summary": f"cpu of {host} is high"}
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    rows = wait_until(lambda: log_rows(srv, "hook"), timeout=5)
    assert [(r["status"], r["attempt"], r["http_status"], r["alerts"]) for r in rows] == \
        [("ok", 1, 200, 1)]
    assert rows[0]["group_key"] == body["groupKey"]

    # a restart while it still fires: taken up from alert_history, not notified again
    srv.restart()
    assert wait_until(lambda: firing_alerts(srv, host), timeout=5), "the alert did not come back"
    time.sleep(2.5)  # two evaluation intervals and more than group_interval
    assert firing_alerts(srv, host)
    assert len(rec.bodies("/hook")) == 1, "a second firing notification after the restart"

    # its resolution is still sent, by the notifier of the new process
    cpu(srv, host, 0)
    assert wait_until(lambda: len(rec.bodies("/hook")) == 2, timeout=5), "no resolved call"
    resolved = rec.bodies("/hook")[1]
    assert resolved["status"] == "resolved"
    assert resolved["alerts"][0]["status"] == "resolved"
    assert resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"


# ---- email -----------------------------------------------------------------------------------

class SMTPRecorder:
    """aiosmtpd handler: records each message; refuses recipients at refuse.example with 550,
    and answers DATA for slow.example only after 2.5 s."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = []  # (mail_from, rcpt_tos, bytes)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refuse.example"):
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if any(a.endswith("@slow.example") for a in envelope.rcpt_tos):
            await asyncio.sleep(2.5)
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                                  envelope.original_content or envelope.content))
        return "250 Message accepted for delivery"

    def received(self):
        with self.lock:
            return list(self.messages)


@pytest.fixture
def smtp_server():
    """A real SMTP server on 127.0.0.1 (aiosmtpd); yields (port, recorder)."""
    from aiosmtpd.controller import Controller

    rec = SMTPRecorder()
    controller = Controller(rec, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, rec
    controller.stop()


def test_email_message_headers_recipients_and_body(server_factory, tmp_path, smtp_server):
    port, rec = smtp_server
    host = unique("h")
    srv = start_opsdb(server_factory, tmp_path,
                      f'[{{name: mail, email: {{to: "a@example.com, b@example.com", '
                      f'from: "opsdb@localhost", smtp: "127.0.0.1:{port}", timeout: 5s}}}}]',
                      "mail")
    before = now_ms()
    cpu(srv, host, 95)
    assert wait_until(rec.received, timeout=5), "no message within 5 s"
    (mail_from, rcpt_tos, raw), = rec.received()
    assert mail_from == "opsdb@localhost"
    assert rcpt_tos == ["a@example.com", "b@example.com"]
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"] == "opsdb@localhost"
    assert msg["To"] == "a@example.com, b@example.com"
    # Alertmanager's subject: status, group label values, the other common label values
    assert msg["Subject"] == f"[FIRING:1] E2EHighCPU (web {host} critical e2e)"
    sent = email.utils.parsedate_to_datetime(msg["Date"])
    assert abs(sent.timestamp() * 1000 - before) < 60_000
    assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith("@localhost>")
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    text = msg.get_content()
    assert "[FIRING] E2EHighCPU" in text
    assert f"host = {host}" in text
    assert "severity = critical" in text
    assert f"summary = cpu of {host} is high" in text
    started = [line for line in text.splitlines() if line.startswith("Started: ")]
    assert len(started) == 1 and abs(rfc3339_ms(started[0][9:]) - before) < 60_000
    rows = wait_until(lambda: log_rows(srv, "mail"), timeout=5)
    assert [(r["status"], r["attempt"], r["alerts"], r["error"]) for r in rows] == \
        [("ok", 1, 1, None)]

    cpu(srv, host, 0)
    assert wait_until(lambda: len(rec.received()) == 2, timeout=5), "no resolved message"
    msg = email.message_from_bytes(rec.received()[1][2], policy=email.policy.default)
    assert msg["Subject"] == f"[RESOLVED] E2EHighCPU (web {host} critical e2e)"
    assert "[RESOLVED] E2EHighCPU" in msg.get_content()
    assert "Ended: " in msg.get_content()


def test_email_refused_and_timed_out_are_failed_attempts(server_factory, tmp_path, smtp_server):
    port, rec = smtp_server
    smtp = f'from: "opsdb@localhost", smtp: "127.0.0.1:{port}"'
    srv = start_opsdb(server_factory, tmp_path,
                      f'[{{name: refused, max_attempts: 1, email: {{to: "x@refuse.example", '
                      f'{smtp}}}}}, '
                      f'{{name: slow, max_attempts: 1, email: {{to: "x@slow.example", {smtp}, '
                      f'timeout: 1s}}}}]',
                      "refused", ", routes: [{receiver: refused, continue: true}, "
                      "{receiver: slow}]")
    cpu(srv, unique("h"), 95)
    refused = wait_until(lambda: log_rows(srv, "refused"), timeout=5)
    assert [(r["status"], r["attempt"]) for r in refused] == [("failed", 1)]
    assert refused[0]["error"].startswith("SMTP 550 5.1.1 <x@refuse.example>: mailbox unavailable")
    slow = wait_until(lambda: log_rows(srv, "slow"), timeout=5)
    assert [(r["status"], r["attempt"], r["error"]) for r in slow] == \
        [("failed", 1, "timed out after 1000 ms")]
    assert not [m for m in rec.received() if "x@refuse.example" in m[1]]


# ---- Alertmanager ----------------------------------------------------------------------------

@pytest.fixture
def alertmanager(tmp_path, webhook):
    """A real Alertmanager on 127.0.0.1 (no clustering) whose own route sends to the test's HTTP
    receiver at /am (send_resolved), with resolve_timeout 1h; yields (url, recorder)."""
    if not shutil.which(ALERTMANAGER_BIN):
        pytest.fail(f"{ALERTMANAGER_BIN} is missing: scripts/install-deps.sh test installs it")
    hook_url, rec = webhook
    cfg = tmp_path / "alertmanager.yml"
    cfg.write_text("global: {resolve_timeout: 1h}\n"
                   "route: {receiver: hook, group_by: [alertname], group_wait: 0s, "
                   "group_interval: 1s, repeat_interval: 1h}\n"
                   f'receivers: [{{name: hook, webhook_configs: [{{url: "{hook_url}/am", '
                   "send_resolved: true}]}]\n")
    port = free_port()
    log = open(tmp_path / "alertmanager.log", "wb")
    proc = subprocess.Popen([ALERTMANAGER_BIN, f"--config.file={cfg}",
                             f"--storage.path={tmp_path / 'alertmanager-data'}",
                             f"--web.listen-address=127.0.0.1:{port}",
                             "--cluster.listen-address="],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def ready():
        try:
            return requests.get(url + "/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        if not wait_until(ready, timeout=10):
            pytest.fail("alertmanager did not get ready:\n" +
                        (tmp_path / "alertmanager.log").read_text(errors="replace"))
        yield url, rec
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def am_alerts(url, host):
    r = requests.get(url + "/api/v2/alerts", timeout=5,
                     params={"filter": f'host="{host}"', "silenced": "true",
                             "inhibited": "true", "unprocessed": "true"})
    assert r.status_code == 200, r.text
    return r.json()


def test_alertmanager_receives_alerts_and_their_end(server_factory, tmp_path, alertmanager):
    am_url, rec = alertmanager
    host = unique("h")
    srv = start_opsdb(server_factory, tmp_path,
                      f'[{{name: am, alertmanager: {{url: "{am_url}", timeout: 5s}}}}]', "am")
    before = now_ms()
    cpu(srv, host, 95)
    got = wait_until(lambda: am_alerts(am_url, host), timeout=5)
    assert got, "the alert did not reach Alertmanager"
    (alert,) = got
    assert alert["labels"] == {"alertname": "E2EHighCPU", "host": host, "component": "web",
                               "severity": "critical", "team": "e2e"}
    assert alert["annotations"] == {"summary": f"cpu of {host} is high"}
    assert abs(rfc3339_ms(alert["startsAt"]) - before) < 60_000
    # firing: opsdb sends no endsAt, so Alertmanager sets its own, resolve_timeout (1h) ahead
    assert rfc3339_ms(alert["endsAt"]) > now_ms() + 30 * 60_000
    rows = wait_until(lambda: log_rows(srv, "am"), timeout=5)
    assert [(r["status"], r["attempt"], r["http_status"], r["alerts"]) for r in rows] == \
        [("ok", 1, 200, 1)]

    cpu(srv, host, 0)
    # resolved: opsdb sends endsAt, the resolve time; Alertmanager lists an ended alert no more
    # and notifies its own receiver of the resolution with that endsAt
    assert wait_until(lambda: not am_alerts(am_url, host), timeout=5), \
        "Alertmanager still lists the alert as active"
    ended = srv.query("SELECT ts FROM alert_history WHERE state = 'resolved' "
                      f"AND labels LIKE '%{host}%'")
    assert len(ended) == 1

    def resolved_at_am():
        return [a for b in rec.bodies("/am") for a in b["alerts"]
                if a["labels"].get("host") == host and a["status"] == "resolved"]

    resolved = wait_until(resolved_at_am, timeout=5)
    assert resolved, "Alertmanager did not notify the resolution"
    assert abs(rfc3339_ms(resolved[0]["endsAt"]) - ended[0]["ts"]) < 1000
    rows = wait_until(lambda: len(log_rows(srv, "am")) == 2 and log_rows(srv, "am"), timeout=5)
    assert [r["status"] for r in rows] == ["ok", "ok"]
