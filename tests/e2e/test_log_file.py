"""opsdb serve with its own log file (docs/logging.md): --set log.file=PATH sends the log lines
there and not to stderr; the file is rotated by log.max_size into gzip copies PATH.1.gz (newest),
PATH.2.gz, ... bounded by log.keep, without losing or splitting a line; SIGHUP reopens the file
(logrotate's postrotate), O_APPEND makes copytruncate safe, and a log file that cannot be opened
stops the start with a message naming it.

Every SIGHUP makes the server write one line ("SIGHUP: log file reopened"), which is how these
tests produce log lines one at a time.
"""

import gzip
import os
import re
import signal
import time
from datetime import datetime

from conftest import wait_until

LINE_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) (debug|info|warn|error) (.+)$")
HUP_LINE = "SIGHUP: log file reopened"


class _Stopping:
    """Equal to the line logged on SIGTERM."""

    def __eq__(self, other):
        return isinstance(other, str) and other.startswith("SIGTERM: stopping")

    def __repr__(self):
        return "<SIGTERM: stopping ...>"


ANY_STOPPING = _Stopping()


def log_args(path, max_size="0", keep="7", max_age="0"):
    return ("--set", f"log.file={path}", "--set", f"log.max_size={max_size}",
            "--set", f"log.keep={keep}", "--set", f"log.max_age={max_age}")


def rotated_paths(path):
    """PATH.1.gz, PATH.2.gz, ... that exist, newest first, up to the first missing one."""
    out = []
    for n in range(1, 10000):
        p = f"{path}.{n}.gz"
        if not os.path.exists(p):
            return out
        out.append(p)
    return out


def read_parts(path):
    """[(name, text)] from the oldest rotated copy to the current file. The copies are read with
    the gzip module, so a copy that is not valid gzip raises. Retries when a copy is renamed by a
    rotation between the listing and the read."""
    for _attempt in range(50):
        try:
            parts = []
            for p in reversed(rotated_paths(path)):
                with open(p, "rb") as f:
                    raw = f.read()
                assert raw[:2] == b"\x1f\x8b", f"{p} is not gzip"
                parts.append((os.path.basename(p), gzip.decompress(raw).decode()))
            with open(path, encoding="utf-8") as f:
                parts.append((os.path.basename(path), f.read()))
            return parts
        except FileNotFoundError:
            time.sleep(0.02)
    raise AssertionError(f"could not read {path} and its copies")


def parse_lines(text, name="log"):
    """[(timestamp text, level, message)] of text; fails on a line that is not whole."""
    assert text == "" or text.endswith("\n"), f"{name}: the last line is split: {text[-200:]!r}"
    out = []
    for line in text.splitlines():
        m = LINE_RE.match(line)
        assert m, f"{name}: not a whole log line: {line!r}"
        out.append(m.groups())
    return out


def hup_times(path):
    """The distinct timestamps of the SIGHUP lines seen so far (a line can briefly be in both
    PATH.1.gz and PATH while a rotation finishes; the last, possibly partial, line is skipped)."""
    seen = set()
    for _name, text in read_parts(path):
        for line in text.splitlines():
            if line.endswith(HUP_LINE):
                seen.add(line.split(" ", 1)[0])
    return seen


def send_hups(server, path, count):
    """Sends SIGHUP count times, each after the line of the one before is in the log (signals
    sent while one is pending would merge). Waits on the newest line, since with a small
    log.keep the oldest ones are deleted."""
    def newest():
        return max((ts(t) for t in hup_times(path)), default=datetime.min)

    for i in range(count):
        before = newest()
        server.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: newest() > before, timeout=10), \
            f"SIGHUP {i + 1}: no new line in {path}"
        time.sleep(0.003)  # the next line gets a later timestamp


def ts(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


def test_rotation_keeps_every_line_whole_and_gzipped(server_factory, tmp_path):
    log = tmp_path / "opsdb.log"
    server = server_factory(*log_args(log, max_size="400", keep="100"))
    assert log.exists()
    hups = 30
    send_hups(server, log, hups)
    server.stop()
    parts = read_parts(log)
    assert len(parts) >= 4, [n for n, _ in parts]  # ~60-byte lines, 400-byte files
    lines = []
    for name, text in parts:
        assert len(text.encode()) <= 400, f"{name} holds {len(text.encode())} bytes, limit 400"
        if name.endswith(".gz"):
            assert text, f"{name} is empty"
        lines += parse_lines(text, name)
    messages = [m for _t, _l, m in lines]
    assert messages.count(HUP_LINE) == hups
    assert sum("serving" in m for m in messages) == 1
    assert messages[-1] == "stopped"
    stamps = [ts(t) for t, _l, _m in lines]
    assert stamps == sorted(stamps), "lines are out of order across the copies"
    # with a file, nothing goes to stderr
    assert "serving" not in server.stderr_text() and HUP_LINE not in server.stderr_text()
    assert not list(tmp_path.glob("opsdb.log.*.tmp"))


def test_keep_bounds_the_rotated_copies(server_factory, tmp_path):
    log = tmp_path / "opsdb.log"
    (tmp_path / "opsdb.log.7.gz").write_bytes(gzip.compress(b"left by a larger log.keep\n"))
    server = server_factory(*log_args(log, max_size="200", keep="2"))
    send_hups(server, log, 20)
    server.stop()
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("opsdb.log"))
    assert names == ["opsdb.log", "opsdb.log.1.gz", "opsdb.log.2.gz"]
    parts = read_parts(log)
    newest_before = None
    for name, text in parts:  # .2.gz, .1.gz, the file: each newer than the one before
        stamps = [ts(t) for t, _l, _m in parse_lines(text, name)]
        assert stamps, f"{name} is empty"
        if newest_before is not None:
            assert stamps[0] >= newest_before, f"{name} is older than the copy before it"
        newest_before = stamps[-1]
    assert parse_lines(parts[-1][1])[-1][2] == "stopped"


def test_sighup_after_mv_writes_a_fresh_file(server_factory, tmp_path):
    log = tmp_path / "opsdb.log"
    moved = tmp_path / "opsdb.log.moved"
    server = server_factory(*log_args(log))
    mask = os.umask(0)
    os.umask(mask)
    assert log.stat().st_mode & 0o777 == 0o640 & ~mask
    os.rename(log, moved)  # what logrotate does before its postrotate
    server.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: log.exists() and HUP_LINE in log.read_text(), timeout=10), \
        f"no fresh {log} after SIGHUP:\n{server.run_stderr()[-2000:]}"
    r = server.get("/healthz")
    assert r.status_code == 200  # still serving
    server.stop()
    old = [m for _t, _l, m in parse_lines(moved.read_text(), moved.name)]
    new = [m for _t, _l, m in parse_lines(log.read_text(), log.name)]
    assert any("serving" in m for m in old) and HUP_LINE not in old
    assert new[0] == HUP_LINE and new[-1] == "stopped"


def test_copytruncate_is_safe(server_factory, tmp_path):
    """logrotate's copytruncate empties the file under the server and sends no signal: the
    O_APPEND writes of the same descriptor go on at the new end, with no hole of zero bytes
    where the old content was."""
    log = tmp_path / "opsdb.log"
    server = server_factory(*log_args(log))
    assert wait_until(lambda: "serving" in log.read_text(), timeout=10)
    os.truncate(log, 0)
    server.stop()  # its two lines go through the descriptor opened at start
    data = log.read_bytes()
    assert b"\0" not in data, data[:200]
    assert [m for _t, _l, m in parse_lines(data.decode())] == [ANY_STOPPING, "stopped"]


def test_unopenable_log_file_stops_the_start(run_cli, tmp_path, tmp_db):
    bad = tmp_path / "no-such-dir" / "opsdb.log"
    cp = run_cli("serve", "--db", tmp_db, "--listen", "127.0.0.1:0", "--set", f"log.file={bad}",
                 timeout=30)
    assert cp.returncode != 0
    assert str(bad) in cp.stderr and "No such file or directory" in cp.stderr, cp.stderr
    assert not tmp_db.exists()  # nothing started


def test_serve_help_names_log_file(run_cli):
    cp = run_cli("serve", "--help")
    assert cp.returncode == 0
    assert "--set log.file=PATH" in cp.stdout and "SIGHUP" in cp.stdout
