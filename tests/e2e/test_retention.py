"""`opsdb retention status|verify`: the data each table holds against its retention policy."""

import json

from conftest import now_ms

DAY = 86_400_000


def rows_of(cp):
    assert cp.returncode in (0, 1), cp.stderr
    return {r["table"]: r for r in json.loads(cp.stdout)["rows"]}


def test_status_and_verify(run_cli, tmp_path):
    db = tmp_path / "r.db"
    old = now_ms() - 2 * DAY
    api = "".join(json.dumps({"ts": old + i, "method": "GET", "endpoint": "/r",
                              "status_code": 200}) + "\n" for i in range(3))
    assert run_cli("ingest", "api_usage", "-", "--db", db, input=api).returncode == 0
    metric = json.dumps({"ts": old, "metric": "m", "host": "h", "value": 1}) + "\n"
    assert run_cli("ingest", "system_metrics", "-", "--db", db, input=metric).returncode == 0

    cp = run_cli("retention", "status", "--db", db, "--format", "json")
    assert cp.returncode == 0, cp.stderr
    t = rows_of(cp)
    assert set(t) == {"system_metrics", "api_usage", "error_logs", "pipeline_status",
                      "handler_metrics", "alert_history", "scheduled_jobs", "job_runs",
                      "notification_log", "silences", "incidents", "collection_sources",
                      "collection_gaps", "users", "api_tokens", "audit_log"}
    assert t["api_usage"]["rows"] == 3 and t["api_usage"]["status"] == "ok"
    assert t["api_usage"]["retention_days"] == 30
    assert t["system_metrics"]["rows"] == 1 and t["system_metrics"]["status"] == "ok"
    assert t["error_logs"]["status"] == "empty" and t["error_logs"]["oldest"] is None
    assert t["scheduled_jobs"]["status"] == "kept forever"
    assert t["api_usage"]["oldest"].endswith("Z") and t["api_usage"]["oldest"] < t["api_usage"]["newest"]
    assert run_cli("retention", "verify", "--db", db).returncode == 0

    # a shorter policy: the 2-day-old rows are now past it
    cp = run_cli("retention", "verify", "--db", db, "--set", "retention.api_usage=1d",
                 "--set", "retention.system_metrics=1d", "--format", "json")
    assert cp.returncode == 1
    assert "2 tables hold data older than their retention policy" in cp.stderr
    t = rows_of(cp)
    assert t["api_usage"]["status"] == "past policy"
    assert t["system_metrics"]["status"] == "past policy"
    assert t["error_logs"]["status"] == "empty"


def test_usage_errors(run_cli, tmp_path):
    assert run_cli("retention", "--db", tmp_path / "x.db").returncode == 2
    assert run_cli("retention", "purge", "--db", tmp_path / "x.db").returncode == 2
    cp = run_cli("retention", "status", "--db", tmp_path / "missing.db")
    assert cp.returncode == 1 and "does not exist" in cp.stderr


def test_data_dropped_inside_the_policy_is_missing(run_cli, tmp_path):
    """Retention applied with a shorter policy than the one configured later drops data that
    policy keeps: verify reports it as missing inside the policy (exit 1) until the horizon
    has moved past what was dropped; dropping only what is past the policy is compliant."""
    db = tmp_path / "m.db"
    now = now_ms()
    day0 = now - now % DAY
    api = "".join(json.dumps({"ts": day0 - d * DAY + 3_600_000, "method": "GET",
                              "endpoint": "/m", "status_code": 200}) + "\n" for d in range(1, 6))
    metric = "".join(json.dumps({"ts": day0 - d * DAY + 3_600_000, "metric": "m", "host": "h",
                                 "value": d}) + "\n" for d in range(1, 6))
    assert run_cli("ingest", "api_usage", "-", "--db", db, input=api).returncode == 0
    assert run_cli("ingest", "system_metrics", "-", "--db", db, input=metric).returncode == 0
    assert run_cli("compact", "--db", db, "--quiet").returncode == 0

    # dropping what a 10-day policy drops: nothing; status shows no dropped_until
    assert run_cli("retention", "apply", "--db", db, "--set", "retention.api_usage=10d").returncode == 0
    cp = run_cli("retention", "verify", "--db", db, "--set", "retention.api_usage=10d",
                 "--format", "json")
    assert cp.returncode == 0, cp.stderr
    assert rows_of(cp)["api_usage"]["dropped_until"] is None

    # a 3-day policy drops the days that end 3 days ago or earlier
    for table in ("api_usage", "system_metrics"):
        cp = run_cli("retention", "apply", "--db", db, "--set", f"retention.{table}=3d")
        assert cp.returncode == 0, cp.stderr
    cp = run_cli("retention", "verify", "--db", db, "--set", "retention.api_usage=3d",
                 "--set", "retention.system_metrics=3d", "--format", "json")
    assert cp.returncode == 0, cp.stderr
    t = rows_of(cp)
    for table in ("api_usage", "system_metrics"):
        assert t[table]["status"] == "ok", t[table]
        assert t[table]["dropped_until"] is not None
        assert t[table]["dropped_until"] <= t[table]["horizon"]

    # the configured policy is 30 days: what was dropped is missing inside it
    cp = run_cli("retention", "verify", "--db", db, "--format", "json")
    assert cp.returncode == 1
    assert "2 tables miss data inside the retention policy" in cp.stderr, cp.stderr
    t = rows_of(cp)
    assert t["api_usage"]["status"] == "missing inside policy"
    assert t["system_metrics"]["status"] == "missing inside policy"
    assert t["error_logs"]["status"] == "empty"
    # status reports the same and exits 0: it is a report, verify is the check
    cp = run_cli("retention", "status", "--db", db, "--format", "json")
    assert cp.returncode == 0
    assert rows_of(cp)["api_usage"]["status"] == "missing inside policy"
