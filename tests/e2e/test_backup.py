"""Backups (`opsdb backup create|list|verify|prune|check`) and `opsdb restore`, as a user runs
them: a backup taken while a server ingests holds every row acknowledged before it began and
does not stop ingestion; the manifest's counts are the copy's; list, verify and prune behave
and name what is wrong; restore refuses to replace a database without --force and a live one
at all, keeps the old database aside, and the restored database serves at once.
"""

import json
import time

from conftest import now_ms
from test_durability import BATCH_ROWS, Load, batch_counts

def ndjson(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


def api_rows(n, tag):
    ts = now_ms() - 60_000
    return ndjson({"ts": ts - i, "method": "GET", "endpoint": f"/{tag}", "status_code": 200,
                   "latency_ms": 1.0 + i, "client_id": tag} for i in range(n))


def ingest(run_cli, db, n, tag):
    cp = run_cli("ingest", "api_usage", "-", "--db", db, input=api_rows(n, tag))
    assert cp.returncode == 0, cp.stderr


def count(run_cli, db, table="api_usage", where="1=1"):
    cp = run_cli("query", f"SELECT count(*) AS n FROM {table} WHERE {where}", "--db", db,
                 "--format", "json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)["rows"][0]["n"]


def backup_list(run_cli, backups):
    cp = run_cli("backup", "list", "--to", backups, "--format", "json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)["rows"]


def create(run_cli, db, backups):
    cp = run_cli("backup", "create", "--db", db, "--to", backups, timeout=300)
    assert cp.returncode == 0, cp.stderr
    name = cp.stdout.split()[1].rstrip(":")
    assert name.startswith("opsdb-"), cp.stdout
    return name


def manifest(backups, name):
    return json.loads((backups / f"{name}.json").read_text())


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_help_and_usage_errors(run_cli, tmp_path):
    for args, command in ((["backup", "--help"], "backup"), (["restore", "--help"], "restore"),
                          (["help", "backup"], "backup")):
        cp = run_cli(*args)
        assert cp.returncode == 0 and cp.stdout.startswith(f"usage: opsdb {command}"), cp
    for args, needle in ((["backup"], "give an action"),
                         (["backup", "frob"], "unknown action 'frob'"),
                         (["backup", "prune", "--keep", "0"], "--keep"),
                         (["backup", "list", "extra"], "takes no backup names"),
                         (["backup", "list", "--format", "xml"], "--format"),
                         (["restore"], "give the backup"),
                         (["restore", "a", "b"], "one backup")):
        cp = run_cli(*args, "--to" if args[0] == "backup" else "--from", tmp_path)
        assert cp.returncode == 2, (args, cp.stderr)
        assert needle in cp.stderr, (args, cp.stderr)


def test_backup_while_ingesting_holds_every_acknowledged_row(server_factory, run_cli, tmp_path):
    srv = server_factory()
    backups = tmp_path / "backups"
    load = Load(srv, writers=4, lineproto_every=2, prefix="b").start()
    load.wait_acked(40)
    with load.lock:
        acked_before = dict(load.acked)
    t0 = time.monotonic()
    name = create(run_cli, srv.db, backups)
    backup_s = time.monotonic() - t0
    with load.lock:
        acked_during = len(load.acked) - len(acked_before)
    time.sleep(0.3)
    load.finish()
    assert not load.refused, list(load.refused.items())[:5]
    # ingestion went on: batches were acknowledged while the backup ran (or it was very quick)
    assert acked_during > 0 or backup_s < 0.5, (acked_during, backup_s)
    print(f"backup took {backup_s:.2f} s; {acked_during} batches acknowledged meanwhile")

    m = manifest(backups, name)
    assert m["format"] == "opsdb-backup-1" and m["name"] == name
    assert m["schema_version"] > 0 and len(m["sha256"]) == 64 and m["bytes"] > 0

    restored = tmp_path / "restored.db"
    cp = run_cli("restore", name, "--from", backups, "--db", restored, timeout=300)
    assert cp.returncode == 0, cp.stderr
    # counts in the manifest are the copy's
    for table, rows in m["tables"].items():
        assert count(run_cli, restored, table) == rows, table
    assert sum(m["tables"].values()) == m["rows"]
    # every batch acknowledged before the backup began is in it, whole; none is partial
    counts = batch_counts(server_factory(db=restored))
    whole = (BATCH_ROWS, BATCH_ROWS)
    missing = [k for k in acked_before if counts.get(k) != whole]
    assert not missing, f"acknowledged before the backup, not in it: {missing[:10]}"
    partial = {k: v for k, v in counts.items() if v != whole}
    assert not partial, f"partial batches in the backup: {list(partial.items())[:10]}"


def test_list_verify_prune(run_cli, tmp_path):
    db, backups = tmp_path / "x.db", tmp_path / "backups"
    ingest(run_cli, db, 50, "one")
    names = []
    for i in range(3):
        ingest(run_cli, db, 10, f"more{i}")
        names.append(create(run_cli, db, backups))
        time.sleep(0.01)
    rows = backup_list(run_cli, backups)
    assert [r["name"] for r in rows] == names[::-1]  # newest first
    assert [r["rows"] for r in rows] == [80, 70, 60]
    assert all(r["verified"] == "never" and r["verified_at"] is None for r in rows)

    cp = run_cli("backup", "verify", "--to", backups)  # the newest
    assert cp.returncode == 0, cp.stderr
    assert f"ok      {names[-1]}" in cp.stdout and "1 backup verified" in cp.stdout
    cp = run_cli("backup", "verify", "--to", backups, "--all")
    assert cp.returncode == 0 and "3 backups verified" in cp.stdout, cp
    rows = backup_list(run_cli, backups)
    assert all(r["verified"] == "ok" and r["verified_at"] for r in rows), rows
    assert manifest(backups, names[0])["verify_ok"] is True

    cp = run_cli("backup", "prune", "--to", backups, "--keep", "2")
    assert cp.returncode == 0 and "removed 1 backup" in cp.stdout, cp
    assert [r["name"] for r in backup_list(run_cli, backups)] == names[:0:-1]
    assert not (backups / f"{names[0]}.db.zst").exists()
    cp = run_cli("backup", "prune", "--to", backups, "--set", "backup.keep=1")
    assert cp.returncode == 0 and [r["name"] for r in backup_list(run_cli, backups)] == \
        [names[-1]], cp


def test_verify_names_what_is_wrong(run_cli, tmp_path):
    db, backups = tmp_path / "x.db", tmp_path / "backups"
    ingest(run_cli, db, 200, "v")
    good, flipped, cut, counted, orphan = (create(run_cli, db, backups) for _ in range(5))

    flip_byte(backups / f"{flipped}.db.zst", manifest(backups, flipped)["bytes"] // 2)
    data = backups / f"{cut}.db.zst"
    data.write_bytes(data.read_bytes()[:-100])
    m = manifest(backups, counted)
    m["tables"]["api_usage"] += 1
    (backups / f"{counted}.json").write_text(json.dumps(m))
    (backups / f"{orphan}.json").unlink()  # a compressed file without its manifest

    expect = {flipped: "does not decompress", cut: "the manifest says",
              counted: "api_usage holds 200 rows, the manifest says 201"}
    for name, why in expect.items():
        cp = run_cli("backup", "verify", name, "--to", backups)
        assert cp.returncode == 1, cp
        assert f"FAILED  {name}" in cp.stdout and why in cp.stdout, cp.stdout
    rows = {r["name"]: r for r in backup_list(run_cli, backups)}
    assert orphan not in rows  # not whole: not listed
    assert rows[flipped]["verified"].startswith("FAILED: ") and \
        "does not decompress" in rows[flipped]["verified"]
    assert rows[good]["verified"] == "never"
    cp = run_cli("backup", "verify", good, "--to", backups)
    assert cp.returncode == 0, cp

    cp = run_cli("restore", str(backups / f"{orphan}.db.zst"), "--db", tmp_path / "o.db")
    assert cp.returncode == 1 and "has no manifest" in cp.stderr, cp.stderr
    cp = run_cli("restore", flipped, "--from", backups, "--db", tmp_path / "f.db")
    assert cp.returncode == 1 and "does not decompress" in cp.stderr, cp.stderr
    assert not (tmp_path / "f.db").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left

    (backups / f"{good}.json").write_text("{not json")
    cp = run_cli("backup", "list", "--to", backups, "--format", "json")
    assert cp.returncode == 1 and "cannot be read" in cp.stderr, cp
    problems = {r["name"]: r["problem"] for r in json.loads(cp.stdout)["rows"]}
    assert "is not JSON" in problems[good] and problems[cut] is None, problems
    cp = run_cli("backup", "verify", good, "--to", backups)
    assert cp.returncode == 1 and "not JSON" in cp.stdout, cp
    cp = run_cli("backup", "verify", "nosuch", "--to", backups)
    assert cp.returncode == 1 and "no backup named 'nosuch'" in cp.stderr, cp

    for action in ("list", "verify", "prune"):
        cp = run_cli("backup", action, "--to", tmp_path / "nowhere")
        assert cp.returncode == 1, cp
        assert "nowhere" in cp.stderr and "No such file or directory" in cp.stderr, cp.stderr
    cp = run_cli("restore", "latest", "--from", tmp_path / "nowhere", "--db", tmp_path / "n.db")
    assert cp.returncode == 1 and "No such file or directory" in cp.stderr, cp.stderr
    cp = run_cli("backup", "create", "--db", tmp_path / "missing.db", "--to", backups)
    assert cp.returncode == 1 and "does not exist" in cp.stderr, cp.stderr


def test_restore_needs_force_and_keeps_the_old_database(run_cli, tmp_path):
    db, backups = tmp_path / "x.db", tmp_path / "backups"
    ingest(run_cli, db, 30, "before")
    name = create(run_cli, db, backups)
    ingest(run_cli, db, 12, "after")

    cp = run_cli("restore", "latest", "--from", backups, "--db", db)
    assert cp.returncode == 1 and "needs --force" in cp.stderr, cp.stderr
    assert count(run_cli, db) == 42  # unchanged

    cp = run_cli("restore", "latest", "--from", backups, "--db", db, "--force")
    assert cp.returncode == 0, cp.stderr
    assert f"restored {name} (30 rows" in cp.stdout
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("x.db.before-restore-")
             and not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1 and f"kept as {aside[0]}" in cp.stdout, (cp.stdout, aside)
    assert count(run_cli, db) == 30
    assert count(run_cli, aside[0]) == 42  # whole, with what its write-ahead log held


def test_restore_refuses_a_live_database(server_factory, run_cli, tmp_path):
    backups = tmp_path / "backups"
    srv = server_factory()
    assert srv.ingest("api_usage", [{"ts": now_ms() - 1000, "method": "GET", "endpoint": "/l",
                                     "status_code": 200}]).status_code == 200
    create(run_cli, srv.db, backups)
    cp = run_cli("restore", "latest", "--from", backups, "--db", srv.db, "--force")
    assert cp.returncode == 1, cp
    assert "is live" in cp.stderr and f"process {srv.proc.pid}" in cp.stderr, cp.stderr
    assert srv.count("api_usage") == 1  # the server serves on
    srv.stop()
    cp = run_cli("restore", "latest", "--from", backups, "--db", srv.db, "--force")
    assert cp.returncode == 0, cp.stderr


def test_restored_database_serves_at_once(server_factory, run_cli, tmp_path):
    db, backups = tmp_path / "x.db", tmp_path / "backups"
    ingest(run_cli, db, 25, "serve")
    cp = run_cli("ingest", "error_logs", "-", "--db", db,
                 input=ndjson({"ts": now_ms() - 5000 - i, "service": "s", "level": "error",
                               "message": f"boom {i}"} for i in range(7)))
    assert cp.returncode == 0, cp.stderr
    create(run_cli, db, backups)
    other = tmp_path / "elsewhere" / "deep" / "restored.db"
    cp = run_cli("restore", "latest", "--from", backups, "--db", other)
    assert cp.returncode == 0, cp.stderr
    t0 = time.monotonic()
    srv = server_factory(db=other)
    started_s = time.monotonic() - t0
    assert srv.count("api_usage") == 25 and srv.count("error_logs") == 7
    assert "migrating" not in srv.run_stderr()
    r = srv.get("/api/v1/views/error_summary")
    assert r.status_code == 200, r.text
    print(f"restored database served after {started_s:.2f} s")


def test_check_reports_the_database_sound(run_cli, tmp_path):
    db = tmp_path / "x.db"
    ingest(run_cli, db, 5, "check")
    cp = run_cli("backup", "check", "--db", db)
    assert cp.returncode == 0 and "is sound" in cp.stdout, cp
