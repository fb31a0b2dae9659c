"""The procedures in the docs run as written: every fenced block marked ```sh runnable in the
pages below is run, the page's blocks in order as one bash script (set -euo pipefail), in a
fresh directory, with `opsdb` on PATH (the binary under test) and OPSDB_LISTEN set to a free
loopback port, so that `opsdb serve` and `curl http://${OPSDB_LISTEN:-127.0.0.1:8470}/...` in
a page talk to the same server. A page may hold no other ```sh or ```bash block: a command in
the docs that is not run here is a command nobody checks.

Each page starts from the state its introduction describes (the SETUP functions below); what the
script leaves is then checked, and any server it left running is stopped with SIGTERM.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import assert_no_sanitizer_reports, child_env, free_port, now_ms

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^ *```(\S*)( runnable)?\n(.*?)^ *```", re.M | re.S)
ROWS = 300


def runnable_blocks(page):
    """The runnable blocks of a page, in order; fails on a shell block that is not runnable."""
    blocks = []
    for lang, runnable, body in BLOCK.findall((ROOT / page).read_text()):
        if lang in ("sh", "bash", "shell", "console"):
            assert runnable, f"{page}: a ```{lang} block is not marked runnable:\n{body}"
            indent = min(len(l) - len(l.lstrip()) for l in body.splitlines() if l.strip())
            blocks.append("\n".join(l[indent:] for l in body.splitlines()))
    assert blocks, f"{page} has no runnable block"
    return blocks


def seed(run_cli, work):
    """./data/operational_data.db with ROWS api_usage rows."""
    rows = "".join(f'{{"ts": {now_ms() - 60_000 - i}, "method": "GET", "endpoint": "/docs", '
                   f'"status_code": 200}}\n' for i in range(ROWS))
    cp = run_cli("ingest", "api_usage", "-", "--db", work / "data/operational_data.db",
                 input=rows)
    assert cp.returncode == 0, cp.stderr


def setup_backup_restore(run_cli, work):
    seed(run_cli, work)


def setup_disaster_recovery(run_cli, work):
    seed(run_cli, work)
    cp = run_cli("backup", "create", "--db", work / "data/operational_data.db", "--to",
                 work / "data/backups")
    assert cp.returncode == 0, cp.stderr
    db = work / "data/operational_data.db"
    os.truncate(db, os.path.getsize(db) // 2)


def check_backup_restore(run_cli, work, out):
    assert f'"n":{ROWS}' in out.replace(" ", ""), out  # the restored database served the count
    assert len(list((work / "data/backups").glob("opsdb-*.json"))) == 2
    assert list((work / "data").glob("operational_data.db.before-restore-*"))
    assert (work / "restored/operational_data.db").is_file()


def check_disaster_recovery(run_cli, work, out):
    assert "the database is damaged" in out, out
    assert list((work / "data").glob("operational_data.db.before-restore-*"))
    cp = run_cli("query", "SELECT count(*) AS n FROM api_usage", "--db",
                 work / "data/operational_data.db", "--format", "csv")
    assert cp.returncode == 0 and cp.stdout.split() == ["n", str(ROWS)], cp
    assert (work / "drill/operational_data.db").is_file()


def setup_security(run_cli, work):
    (work / "data").mkdir()


def check_security(run_cli, work, out):
    sent = re.search(r"agent: stopped: .*? rows_sent=(\d+)", out)
    assert sent and int(sent.group(1)) > 0, out  # the agent verified the server and shipped
    n = re.search(r'"n":\s*(\d+)', out)
    assert n and int(n.group(1)) == int(sent.group(1)), out  # read back over HTTPS
    assert (work / "server.pem").is_file() and (work / "ca.pem").is_file()


PAGES = {
    "docs/backup-restore.md": (setup_backup_restore, check_backup_restore),
    "docs/disaster-recovery.md": (setup_disaster_recovery, check_disaster_recovery),
    "docs/security.md": (setup_security, check_security),
}


def stop_group(pgid):
    """SIGTERM to what the script left running, then wait (bounded) until it is gone."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(600):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(pgid, signal.SIGKILL)
    pytest.fail("a process the page started did not stop on SIGTERM")


@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_runs_as_written(page, opsdb_bin, run_cli, tmp_path):
    setup, check = PAGES[page]
    work, bindir = tmp_path / "work", tmp_path / "bin"
    work.mkdir()
    bindir.mkdir()
    (bindir / "opsdb").symlink_to(opsdb_bin)
    setup(run_cli, work)
    script = "set -euo pipefail\n" + "\n".join(runnable_blocks(page)) + "\n"
    (tmp_path / "page.sh").write_text(script)
    env = child_env({"OPSDB_LISTEN": f"127.0.0.1:{free_port()}",
                     "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"})
    out_path = tmp_path / "page.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(["bash", str(tmp_path / "page.sh")], cwd=work, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=300)
        finally:
            stop_group(proc.pid)
    text = out_path.read_text(errors="replace")
    assert rc == 0, f"{page}: the script failed ({rc}):\n{script}\n--- output ---\n{text[-5000:]}"
    assert_no_sanitizer_reports(text, page)
    check(run_cli, work, text)
