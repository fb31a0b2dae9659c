"""The PostgreSQL servers the tests start themselves (pgharness.py): a cluster answers, each test
gets a fresh database of the shared cluster, TLS with verify-full against a CA made here and a
plaintext connection refused, a streaming standby promoted after its primary is killed, a
pgbouncer in transaction mode, and nothing left running or on disk afterwards, even when a test
fails or its process is killed.

These tests use psql and the PostgreSQL programs only: no opsdb binary.
"""

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import unique, wait_until
from pgharness import (PG_USER, TMP_PREFIX, PgBouncer, PgError, multi_host_dsn, pg_bindir,
                       processes_under, reap_stale, run_psql, tmp_parent)
from pki import Pki

pytest_plugins = ["pgharness"]

HERE = Path(__file__).resolve().parent


def uid_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def refused(fn):
    """The PgError that fn() raises (the test fails when it raises none)."""
    with pytest.raises(PgError) as e:
        fn()
    return e.value


def test_a_cluster_starts_answers_and_restarts(pg_cluster):
    pg = pg_cluster
    assert int(pg.psql("SHOW server_version_num")) >= 150000
    assert pg.psql("SHOW fsync; SHOW listen_addresses; SHOW port").splitlines() == [
        "on", "127.0.0.1", str(pg.port)]
    if os.geteuid() == 0:  # PostgreSQL refuses root: the postmaster runs as postgres
        assert uid_of(pg.pid) == pwd.getpwnam(PG_USER).pw_uid
    # password authentication, also for the superuser
    err = refused(lambda: run_psql(pg.dsn(password="wrong"), "SELECT 1"))
    assert 'password authentication failed for user "postgres"' in err.stderr
    # a role and a database of its own
    pg.create_role("app")
    pg.create_db("appdb", owner="app")
    pg.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (7)", user="app", db="appdb")
    # a restart keeps the data and the port; a stopped server refuses connections
    port = pg.port
    assert pg.stop() == 0
    err = refused(lambda: pg.psql("SELECT 1"))
    assert "Connection refused" in err.stderr
    pg.start()
    assert pg.port == port
    assert pg.psql("SELECT x FROM t", user="app", db="appdb") == "7"


_shared_seen = []  # (postmaster pid, database) of each run of the test below


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_a_fresh_database(pg_db, run):
    assert pg_db.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == "0"
    pg_db.psql("CREATE TABLE leftover (x int); INSERT INTO leftover VALUES (1)")
    assert pg_db.psql("SELECT current_database()") == pg_db.name
    for pid, name in _shared_seen:
        assert pid == pg_db.cluster.pid, "the shared cluster was started twice"
        assert name != pg_db.name
        # the database of an earlier test is gone
        assert pg_db.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "0"
    _shared_seen.append((pg_db.cluster.pid, pg_db.name))


def test_tls_verify_full_with_the_test_ca_and_plaintext_refused(pg_cluster_tls, tmp_path):
    pg = pg_cluster_tls
    # verify-full against the CA made for this test: by address and by name
    for host in ("127.0.0.1", "localhost"):
        dsn = pg.dsn(host=host, sslmode="verify-full", sslrootcert=pg.ca_file)
        assert run_psql(dsn, "SELECT ssl, version FROM pg_stat_ssl "
                             "WHERE pid = pg_backend_pid()") == "t|TLSv1.3"
    # plaintext: no pg_hba.conf line allows it
    err = refused(lambda: pg.psql("SELECT 1", sslmode="disable"))
    assert ('no pg_hba.conf entry for host "127.0.0.1", user "postgres", database "postgres", '
            'no encryption') in err.stderr
    # verify-full does verify: a certificate from another CA is not accepted
    other = Pki(tmp_path / "other", "other-ca")
    err = refused(lambda: pg.psql("SELECT 1", sslmode="verify-full", sslrootcert=other.ca))
    assert "certificate verify failed" in err.stderr


def test_a_standby_replicates_and_is_promoted_after_the_primary_is_killed(pg_cluster):
    primary = pg_cluster
    primary.create_role("writer")
    primary.create_db("ops", owner="writer")
    primary.psql("CREATE TABLE rows (x int); INSERT INTO rows VALUES (1)", user="writer",
                 db="ops")
    standby = primary.standby()
    assert standby.port != primary.port
    assert standby.psql("SELECT pg_is_in_recovery()") == "t"
    primary.psql("INSERT INTO rows VALUES (2)", user="writer", db="ops")
    standby.wait_replayed(primary.current_lsn(), timeout=20)
    assert standby.psql("SELECT array_agg(x ORDER BY x) FROM rows", user="writer",
                        db="ops") == "{1,2}"
    err = refused(lambda: standby.psql("INSERT INTO rows VALUES (3)", user="writer", db="ops"))
    assert "cannot execute INSERT in a read-only transaction" in err.stderr
    # a multi-host string with target_session_attrs=read-write finds the primary...
    both = multi_host_dsn([primary, standby], "writer", "ops",
                          target_session_attrs="read-write", connect_timeout=5)
    assert run_psql(both, "SELECT inet_server_port()") == str(primary.port)
    # ...the primary dies (all its processes at once), the standby is promoted...
    postmaster = primary.pid
    primary.kill()
    assert primary.pid is None and not processes_under(primary.dir)
    assert not os.path.exists(f"/proc/{postmaster}")
    refused(lambda: primary.psql("SELECT 1"))
    started = time.monotonic()
    standby.promote(timeout=30)
    assert time.monotonic() - started < 30
    # ...and the same string now lands on it, which takes writes and kept every row
    assert run_psql(both, "SELECT inet_server_port()") == str(standby.port)
    run_psql(both, "INSERT INTO rows VALUES (3)")
    assert standby.psql("SELECT array_agg(x ORDER BY x) FROM rows", db="ops") == "{1,2,3}"


def test_pgbouncer_in_transaction_mode(pg_db, tmp_path):
    pg = pg_db.cluster
    role = unique("app").lower()
    pg.create_role(role)
    pg.psql(f'ALTER DATABASE "{pg_db.name}" OWNER TO "{role}"')
    bouncer = PgBouncer(pg, pool_mode="transaction", pool_size=1).start()
    try:
        assert bouncer.port not in (pg.port, None)
        bouncer.psql("CREATE TABLE hits (n int); INSERT INTO hits SELECT generate_series(1, 5)",
                     user=role, db=pg_db.name)
        assert bouncer.psql("SELECT sum(n) FROM hits", user=role, db=pg_db.name) == "15"
        pools = [line.split("|") for line in bouncer.admin("SHOW POOLS").splitlines()]
        mine = [p for p in pools if p[0] == pg_db.name and p[1] == role]
        assert mine and mine[0][-1] == "transaction", pools
        # transaction pooling: with one server connection, a second client runs its query while
        # the first stays connected between two transactions (in session mode it would wait
        # until the first disconnects), and both use the same server process
        ready = tmp_path / "first-is-idle"
        script = tmp_path / "first.sql"
        script.write_text(f"SELECT pg_backend_pid();\n\\! touch {ready} && sleep 3\n"
                          "SELECT pg_backend_pid();\n")
        first = subprocess.Popen(
            [pg_bindir() / "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", script,
             "-d", bouncer.dsn(role, pg_db.name)], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_until(ready.exists, timeout=15), "the first client never paused"
            second = bouncer.psql("SELECT pg_backend_pid()", user=role, db=pg_db.name,
                                  timeout=10)
            assert first.poll() is None, "the first client should still be connected"
            out, err = first.communicate(timeout=20)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(10)
        assert first.returncode == 0, err
        assert out.split() == [second, second], (out, second)
    finally:
        bouncer.cleanup()
    assert not processes_under(bouncer.dir) and not bouncer.dir.exists()


INNER_TESTS = """
import os
import time
from pathlib import Path

pytest_plugins = ["pgharness"]


def test_fails_with_servers_running(pg_cluster, pg_db):
    pg_cluster.standby()
    assert False, "fails on purpose"


def test_is_killed(pg_cluster):
    Path(os.environ["READY_FILE"]).write_text(str(pg_cluster.pid))
    time.sleep(120)
"""


def test_nothing_is_left_after_a_failing_test_or_a_killed_run(tmp_path):
    # the inner runs keep their servers under a folder of their own (the postgres user must
    # reach it: not in tmp_path, which is root's alone)
    parent = Path(tempfile.mkdtemp(prefix="opsdb-pgtest-", dir=tmp_parent()))
    os.chmod(parent, 0o755)
    try:
        (tmp_path / "test_inner.py").write_text(INNER_TESTS)
        env = {**os.environ, "OPSDB_PG_TMPDIR": str(parent), "PYTHONPATH": str(HERE),
               "READY_FILE": str(tmp_path / "ready")}
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")]
        # a test that fails with a cluster, a standby and the shared cluster running
        cp = subprocess.run([*argv[:-1], f"{argv[-1]}::test_fails_with_servers_running"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert cp.returncode == 1 and "1 failed" in cp.stdout, cp.stdout + cp.stderr
        assert "fails on purpose" in cp.stdout
        assert not processes_under(parent) and not list(parent.iterdir())
        # a run killed with SIGKILL while its server runs: the server dies with it, and the
        # next run removes what was left on disk
        inner = subprocess.Popen([*argv[:-1], f"{argv[-1]}::test_is_killed"], env=env,
                                 cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            assert wait_until((tmp_path / "ready").exists, timeout=90), inner.stdout.peek()
            postmaster = int((tmp_path / "ready").read_text())
            assert processes_under(parent)
            inner.kill()
            inner.wait(10)
        finally:
            if inner.poll() is None:
                inner.kill()
                inner.wait(10)
        assert wait_until(lambda: not processes_under(parent), timeout=15), \
            f"postmaster {postmaster} outlived its test run"
        left = sorted(parent.glob(TMP_PREFIX + "*"))
        assert left, "the killed run's directories"
        assert sorted(reap_stale(parent)) == left
        assert not list(parent.iterdir())
    finally:
        for pid in processes_under(parent):
            os.kill(pid, 9)
        shutil.rmtree(parent, ignore_errors=True)
