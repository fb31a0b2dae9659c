"""Disaster recovery, rehearsed: a server ingesting under load is backed up, crashes (kill -9)
and loses no acknowledged row; then its database file is damaged (cut short, or bytes flipped
in every page), the damage is found (`opsdb backup check`, and the server refuses or fails),
and the documented procedure (docs/disaster-recovery.md) brings it back from the latest backup.

Each run prints what was measured: RPO, the data acknowledged after the backup began and lost
with the damaged file (with a daily backup, up to a day), and RTO, the time from the start of
the restore to the server answering /readyz again on the restored database. Crash durability
itself (kill -9 in many rounds, SIGTERM, back-pressure) is tested in test_durability.py; this
file adds the backup and the damaged file to the crash.
"""

import os
import time

import pytest
import requests

from test_durability import BATCH_ROWS, Load, batch_counts, check_batches

PAGE_BYTES = 4096


def damage(db, how):
    """Cuts the file to half its size, or flips the first byte of every page after the first
    (the b-tree page type: no page reads as a page any more)."""
    size = os.path.getsize(db)
    if how == "truncate":
        os.truncate(db, size // 2)
        return
    with open(db, "r+b") as f:
        for page in range(1, size // PAGE_BYTES):
            f.seek(page * PAGE_BYTES)
            b = f.read(1)
            f.seek(page * PAGE_BYTES)
            f.write(bytes([b[0] ^ 0xFF]))


def wait_ready(url, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/readyz", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_damaged_database_recovered_from_the_latest_backup(server_factory, run_cli, tmp_path,
                                                           how):
    backups = tmp_path / "backups"
    srv = server_factory()
    load = Load(srv, writers=4, lineproto_every=2, prefix=how).start()
    load.wait_acked(30)
    with load.lock:
        acked_before_backup = dict(load.acked)
    cp = run_cli("backup", "create", "--db", srv.db, "--to", backups, timeout=300)
    assert cp.returncode == 0, cp.stderr
    backup_done = time.monotonic()
    load.wait_acked(len(acked_before_backup) + 40)  # ingestion goes on after the backup
    srv.kill9()  # a crash under load
    crashed = time.monotonic()
    load.finish()
    assert not load.refused, list(load.refused.items())[:5]

    # after the crash every acknowledged batch is there, whole
    srv.restart()
    counts = batch_counts(srv)
    check_batches(counts, load.acked, {}, load.unknown)
    srv.stop()
    cp = run_cli("backup", "check", "--db", srv.db)
    assert cp.returncode == 0, cp.stderr

    # the file is damaged: the check says so
    damage(srv.db, how)
    cp = run_cli("backup", "check", "--db", srv.db)
    assert cp.returncode == 1 and "is damaged" in cp.stderr, cp

    # the procedure of docs/disaster-recovery.md: restore the latest backup over it, serve
    t0 = time.monotonic()
    cp = run_cli("restore", "latest", "--from", backups, "--db", srv.db, "--force", timeout=300)
    assert cp.returncode == 0, cp.stderr
    restored = time.monotonic()
    srv.start()
    assert wait_ready(srv.url)
    rto_s = time.monotonic() - t0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(srv.db.name + ".before-restore-")]
    assert aside, "the damaged database is kept aside"

    counts = batch_counts(srv)
    whole = (BATCH_ROWS, BATCH_ROWS)
    missing = [k for k in acked_before_backup if counts.get(k) != whole]
    assert not missing, f"acknowledged before the backup, lost: {missing[:10]}"
    assert all(v == whole for v in counts.values()), "a partial batch in the backup"
    lost = [k for k in load.acked if k not in counts]
    assert len(counts) + len(lost) == len(load.acked)
    print(f"\n[{how}] RPO: {len(lost)} of {len(load.acked)} acknowledged batches "
          f"({len(lost) * BATCH_ROWS} rows) lost, those acknowledged in the "
          f"{crashed - backup_done:.2f} s between the end of the backup and the crash "
          f"(and during it); RTO: {rto_s:.2f} s from the restore to /readyz "
          f"(restore {restored - t0:.2f} s, start {rto_s - (restored - t0):.2f} s)")
    # the restored database takes rows again at once
    assert srv.ingest("api_usage", [{"ts": int(time.time() * 1000) - 1000, "method": "GET",
                                     "endpoint": "/after", "status_code": 200}]).status_code \
        == 200
    assert srv.count("api_usage", "endpoint = '/after'") == 1
