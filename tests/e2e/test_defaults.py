"""What `make run` relies on: `opsdb serve` with no --db creates ./data/operational_data.db (and
its directory) in the working directory, in WAL mode, and serves on loopback."""

import signal
import subprocess
import time

import requests

from conftest import child_env, free_port, opsdb_bin_path, assert_no_sanitizer_reports


def test_serve_creates_the_default_database(tmp_path):
    port = free_port()
    proc = subprocess.Popen([opsdb_bin_path(), "serve", "--listen", f"127.0.0.1:{port}"],
                            cwd=tmp_path, env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.05)
        else:
            raise AssertionError("server did not become healthy")
        db = tmp_path / "data" / "operational_data.db"
        assert db.exists()
        r = requests.get(f"http://127.0.0.1:{port}/api/v1/query",
                         params={"sql": "PRAGMA table_info('api_usage')"}, timeout=10)
        assert r.status_code == 200 and r.json()["row_count"] > 5
        with open(db, "rb") as f:
            header = f.read(20)
        assert header[:16] == b"SQLite format 3\x00"
        assert header[18:20] == b"\x02\x02", "the database is not in WAL mode"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert_no_sanitizer_reports(err)
    assert "serving sqlite ./data/operational_data.db" in err
