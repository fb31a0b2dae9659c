"""Archives of event partitions (storage.archive_dir, storage.archive_retention, `opsdb archive`).

With storage.archive_dir set, retention writes every event partition it drops to
`<dir>/<table>/<partition>.ndjson.zst` (zstd NDJSON ordered by ts, column names as keys, NULLs
omitted, JSON columns as strings) plus a manifest `<partition>.json`, before the DROP; when it
cannot, nothing is dropped. What is checked here, against values computed in Python from the
rows sent (the archives are read with the `zstd` command and hashlib, not with opsdb):

* retention archives exactly the partitions it drops, of every event table, packed (cold) or
  not, each holding exactly the rows of its day, with a manifest whose fields are right;
* `archive list` matches the manifests, `archive verify` passes, and fails naming the archive
  and the reason for a flipped byte, a cut file, a missing file, a wrong row count and an
  unknown column;
* `archive restore` brings back exactly the rows, state restored, refuses a second time and a
  corrupt archive without leaving anything behind; retention leaves a restored partition alone;
  `archive unload` drops it again and refuses other partitions;
* an archive directory that cannot be written stops retention: nothing is dropped;
* storage.archive_retention removes old archives;
* the server archives by itself, and sees a restore made by the CLI on its database file;
* command-line errors.

Times are relative to the wall clock, so the module first steps away from a UTC midnight.
"""

import functools
import hashlib
import json
import random
import re
import shutil
import subprocess

import pytest

from conftest import is_sanitizer_build, now_ms, run_cli as conftest_run_cli, wait_until
from test_partitions import (DAY, EVENT_TABLES, LONG, MARKER, MIN, away_from_midnight,
                             check_row, cli_ingest, cli_query, cli_rows, day_of, expected_parts,
                             gen_events, part_name)
from test_views import API_SPEC, compare_rows, expect_api_performance, post_ndjson

SEED = 20261130
ZSTD = shutil.which("zstd")
NO_ZSTD = "the zstd command is missing: scripts/install-deps.sh test (Debian package zstd)"

COUNTS = {"api_usage": 1200, "error_logs": 300, "pipeline_status": 200, "handler_metrics": 300,
          "alert_history": 200, "job_runs": 200}
RETENTION_DAYS = 3
SHORT = [a for t in EVENT_TABLES for a in ("--set", f"retention.{t}={RETENTION_DAYS}d")]
# what a column not sent holds (schema.c); columns without a default stay NULL, omitted
DEFAULTS = {"api_usage": {"service": "", "host": "", "count": 1},
            "error_logs": {"service": "", "component": "", "host": "", "error_type": ""},
            "pipeline_status": {"stage": ""},
            "handler_metrics": {"component": "", "host": "", "errors": 0, "retries": 0},
            "alert_history": {"severity": "warning", "escalation_level": 0, "notified": 0},
            "job_runs": {}}
APPLY_ARCHIVED_RE = re.compile(r"^archived (\d+) partitions? to (.+) first; removed (\d+) "
                               r"archives? past storage\.archive_retention$")
LIST_KEYS = ("table", "partition", "from_ms", "to_ms", "rows", "bytes", "sha256")


# ---- helpers -------------------------------------------------------------------------------


def special_rows(now, taken):
    """Rows of error_logs, api_usage and alert_history with awkward values, all in the day of
    now - 4 days (archived): quotes, backslashes, tabs, newlines, CR, control characters,
    2-, 3- and 4-byte UTF-8, nested JSON context, an integral real, the largest integer."""
    def ts(k):
        t = now - 4 * DAY - 7_777 - k
        while t in taken:
            t -= 1
        taken.add(t)
        return t

    text = 'tab\there "quoted" back\\slash\nnew line\r\n\x01ctl\x1f \x7f ünïcødé 日本語 🚀'
    errors = [
        {"ts": ts(1), "level": "error", "message": text, "fingerprint": "fpx",
         "stack_trace": "Traceback:\n\tat f() \"x\"\n\tat g()\n", "host": "hôst",
         "context": {"k": 'v "q" \\ \t\n', "n": [1, 2.5, None, True, False], "u": "ü🚀",
                     "nested": {"a": {}, "b": []}},
         "trace_id": "sp-e1"},
        {"ts": ts(2), "level": "info", "message": " ", "fingerprint": "fpy", "trace_id": "sp-e2",
         "context": {}},
        {"ts": ts(3), "level": "fatal", "message": "'single' \"double\" `back`",
         "fingerprint": "fpz", "trace_id": "sp-e3", "error_type": "Ünicode\u2028Error"},
    ]
    apis = [
        {"ts": ts(4), "method": "POST", "endpoint": "/ü/\"q\"/\t", "status_code": 599,
         "latency_ms": 5.0, "request_bytes": 9 * 10**15 - 1, "response_bytes": 0,
         "client_id": "sp-a1", "service": "sv\\c", "count": 3},
        {"ts": ts(5), "method": "GET", "endpoint": "/x", "status_code": 100,
         "latency_ms": 0.1, "client_id": "sp-a2"},
    ]
    alerts = [
        {"ts": ts(6), "alert_id": "al\nx", "rule": "r", "state": "firing", "value": 1e-300,
         "labels": {"team": "ü", "q": "\"", "list": [1, {"x": None}]}, "summary": "sp-h1",
         "notified": 1, "escalation_level": 100},
    ]
    return {"error_logs": errors, "api_usage": apis, "alert_history": alerts}


def expected_line(table, row):
    """The archive line of a row sent: what was sent, plus the defaults of the columns not
    sent (NULLs are omitted)."""
    want = dict(DEFAULTS[table])
    want.update(row)
    return want


def check_line(where, got, want):
    """An archive line against the row sent: the same keys; integers as JSON integers, text as
    strings, reals as numbers of the same value, JSON columns as strings holding the object."""
    assert set(got) == set(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
    for k, w in want.items():
        g = got[k]
        if isinstance(w, dict):
            assert isinstance(g, str), f"{where}.{k}: a JSON column must be a string, got {g!r}"
            assert json.loads(g) == w, f"{where}.{k}: {g!r} != {w!r}"
        elif isinstance(w, float):
            assert type(g) in (int, float) and g == w, f"{where}.{k}: {g!r} != {w!r}"
        elif isinstance(w, int):
            assert type(g) is int and g == w, f"{where}.{k}: {g!r} != {w!r}"
        else:
            assert isinstance(g, str) and g == w, f"{where}.{k}: {g!r} != {w!r}"


def zst_path(arch, table, part):
    return arch / table / f"{part}.ndjson.zst"


def manifest_path(arch, table, part):
    return arch / table / f"{part}.json"


def read_manifest(arch, table, part):
    return json.loads(manifest_path(arch, table, part).read_text())


def decompress(path):
    """The NDJSON lines of an archive, read with the zstd command."""
    assert ZSTD, NO_ZSTD
    cp = subprocess.run([ZSTD, "-q", "-d", "-c", str(path)], capture_output=True, timeout=30)
    assert cp.returncode == 0, cp.stderr.decode()
    text = cp.stdout.decode("utf-8")
    assert text.endswith("\n"), "the archive does not end with a newline"
    return [json.loads(line) for line in text.split("\n")[:-1]]


def compress(path, lines):
    """Writes NDJSON lines to path as zstd, with the zstd command."""
    assert ZSTD, NO_ZSTD
    body = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode()
    cp = subprocess.run([ZSTD, "-q", "--check", "-c", "-"], input=body, capture_output=True,
                        timeout=30)
    assert cp.returncode == 0, cp.stderr.decode()
    path.write_bytes(cp.stdout)


def file_facts(path):
    data = path.read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


def stray_files(root):
    """Files under root that are not a whole archive or manifest (temp files)."""
    return sorted(str(p) for p in root.rglob("*")
                  if p.is_file() and (p.name.startswith(".") or ".tmp" in p.name))


def all_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def dropped_parts(data, at):
    """{table: {partition start}} that retention at `at` drops (whole window past policy)."""
    return {t: {s for s in expected_parts(rows) if s + DAY <= at - RETENTION_DAYS * DAY}
            for t, rows in data.items()}


def copy_db(src, dst_dir):
    """Copies a database file (with -wal/-shm if any) into dst_dir; returns the new path."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    for p in src.parent.glob(src.name + "*"):
        shutil.copy2(p, dst_dir / p.name)
    return dst_dir / src.name


def schema_names(run, db):
    return sorted(x["name"] for x in cli_query(run, db, "SELECT name FROM sqlite_schema"))


def catalogue_rows(run, db):
    return cli_query(run, db, "SELECT name, table_name, start_ts, end_ts, rows, state FROM "
                              "opsdb_partitions ORDER BY table_name, start_ts")


def window_rows(run, db, table, lo, hi):
    return cli_query(run, db, f"SELECT * FROM {table} WHERE ts >= {lo} AND ts < {hi} "
                              f"ORDER BY ts")


def listing(run, arch):
    cp = run("archive", "list", "--dir", arch, "--format", "json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)["rows"]


def verify(run, arch, *names):
    cp = run("archive", "verify", *names, "--dir", arch)
    return cp.returncode, cp.stdout, cp.stderr


# ---- one database, retention applied with archives ------------------------------------------


@pytest.fixture(scope="module")
def archived(tmp_path_factory, opsdb_bin):
    """~5 days of every event table (plus rows with awkward values) ingested with a long
    retention, then `retention apply` at 3 days with storage.archive_dir set. The database and
    the archive directory are left as they are: tests that change them work on copies."""
    run = functools.partial(conftest_run_cli, bin_path=opsdb_bin)
    base = tmp_path_factory.mktemp("archived")
    db, arch = base / "a.db", base / "arch"
    away_from_midnight(40)
    now = now_ms()
    data = gen_events(SEED, now - 5 * DAY + 10 * MIN, now - MIN, COUNTS)
    taken = {r["ts"] for rows in data.values() for r in rows}
    for table, rows in special_rows(now, taken).items():
        data[table] += rows
    rng = random.Random(SEED)
    for table, rows in data.items():
        shuffled = rows[:]
        rng.shuffle(shuffled)
        cli_ingest(run, db, table, shuffled)
    # the older of the two days retention drops is packed (cold), the newer stays hot
    cp = run("compact", "--db", db, "--older-than", "4d", "--quiet", *LONG)
    assert cp.returncode == 0, cp.stderr
    before_tables = {t: cli_query(run, db, f"SELECT * FROM {t} ORDER BY ts") for t in data}
    catalogue0 = catalogue_rows(run, db)
    schema0 = schema_names(run, db)
    schema_version = int(run("schema", "--db", db).stdout.split("\n")[0].split()[-1])

    t0 = now_ms()
    cp = run("retention", "apply", "--db", db, *SHORT, "--set", f"storage.archive_dir={arch}")
    t1 = now_ms()
    assert cp.returncode == 0, cp.stderr
    drops = dropped_parts(data, t0)
    assert drops == dropped_parts(data, t1), "a partition crossed its horizon during the apply"
    return {"run": run, "db": db, "arch": arch, "data": data, "drops": drops, "t0": t0, "t1": t1,
            "stdout": cp.stdout, "before": before_tables, "catalogue0": catalogue0,
            "schema_version": schema_version, "schema0": schema0}


def archived_names(a):
    return {(t, part_name(t, s)) for t, starts in a["drops"].items() for s in starts}


# ---- 1. retention writes the archives --------------------------------------------------------


def test_retention_archives_exactly_the_dropped_partitions(archived):
    a = archived
    run, db, arch, data, drops = a["run"], a["db"], a["arch"], a["data"], a["drops"]
    want_names = archived_names(a)
    assert all(len(drops[t]) == 2 for t in EVENT_TABLES), drops  # the test archives something
    lines = a["stdout"].strip().split("\n")
    assert len(lines) == 2, a["stdout"]
    m = APPLY_ARCHIVED_RE.match(lines[1])
    assert m, lines[1]
    assert (int(m.group(1)), m.group(2), int(m.group(3))) == (len(want_names), str(arch), 0)
    assert lines[0].startswith(f"dropped {len(want_names)} partitions ("), lines[0]

    # exactly two files per dropped partition, nothing else
    want_files = sorted(f"{t}/{p}{ext}" for t, p in want_names
                        for ext in (".json", ".ndjson.zst"))
    assert [f for f in all_files(arch) if "/" in f] == want_files
    assert stray_files(arch) == []

    # one cold and one hot partition of each table went; the database holds every other
    # partition as before, and no table of those dropped
    states = {(c["table_name"], c["name"]): c["state"] for c in a["catalogue0"]}
    for table, starts in drops.items():
        assert [states[table, part_name(table, s)] for s in sorted(starts)] == ["cold", "hot"]
        assert part_name(table, min(starts)) + "_packed" in a["schema0"]
    cat = catalogue_rows(run, db)
    assert [c for c in a["catalogue0"] if (c["table_name"], c["name"]) not in want_names] == cat
    names = set(schema_names(run, db))
    assert not {n for _t, p in want_names for n in (p, p + "_packed")} & names
    for table, starts in drops.items():
        for s in starts:
            part = part_name(table, s)
            man = read_manifest(arch, table, part)
            want_rows = sorted((r for r in data[table] if day_of(r["ts"]) == s),
                               key=lambda r: r["ts"])
            size, sha = file_facts(zst_path(arch, table, part))
            assert man == {"format": "opsdb-archive-1", "table": table, "partition": part,
                           "from_ms": s, "to_ms": s + DAY, "rows": len(want_rows),
                           "bytes": size, "sha256": sha,
                           "created_at_ms": man["created_at_ms"],
                           "schema_version": a["schema_version"],
                           "data": f"{part}.ndjson.zst"}, part
            assert a["t0"] <= man["created_at_ms"] <= a["t1"], man
            got = decompress(zst_path(arch, table, part))
            assert len(got) == len(want_rows), part
            for i, (g, w) in enumerate(zip(got, want_rows)):
                check_line(f"{part} line {i + 1}", g, expected_line(table, w))
            # and what the database held before, NULLs omitted
            held = [{k: v for k, v in r.items() if v is not None}
                    for r in a["before"][table] if s <= r["ts"] < s + DAY]
            assert got == held, part
            assert cli_query(run, db, f"SELECT count(*) AS n FROM {table} WHERE ts >= {s} AND "
                                      f"ts < {s + DAY}") == [{"n": 0}]
    # the awkward rows were among them
    specials = [r for t in ("error_logs", "api_usage", "alert_history") for r in data[t]
                if str(r[MARKER[t]]).startswith("sp-")]
    assert len(specials) == 6
    assert all(day_of(r["ts"]) in drops[t] for t in ("error_logs", "api_usage", "alert_history")
               for r in data[t] if str(r[MARKER[t]]).startswith("sp-"))


def test_archives_are_listed_in_partitions(archived):
    a = archived
    run, db, arch = a["run"], a["db"], a["arch"]
    parts = cli_rows(run, db, "partitions", "--set", f"storage.archive_dir={arch}")
    got = sorted((p["table"], p["partition"], p["from_ms"], p["to_ms"], p["rows"], p["bytes"])
                 for p in parts if p["state"] == "archived")
    want = []
    for table, part in archived_names(a):
        man = read_manifest(arch, table, part)
        want.append((table, part, man["from_ms"], man["to_ms"], man["rows"],
                     zst_path(arch, table, part).stat().st_size))
    assert got == sorted(want)
    # without the directory configured: only what the database holds
    assert all(p["state"] != "archived" for p in cli_rows(run, db, "partitions"))


# ---- 2. list and verify ----------------------------------------------------------------------


def test_list_matches_the_manifests_and_verify_passes(archived):
    a = archived
    run, arch = a["run"], a["arch"]
    want = []
    for table, part in archived_names(a):
        man = read_manifest(arch, table, part)
        want.append({**{k: man[k] for k in LIST_KEYS}, "problem": None})
    want.sort(key=lambda x: (x["table"], x["from_ms"]))
    assert listing(run, arch) == want
    rc, out, err = verify(run, arch)
    assert rc == 0, out + err
    lines = out.strip().split("\n")
    assert sorted(lines[:-1]) == sorted(
        f"ok      {x['partition']}  {x['rows']} rows  {x['bytes']} bytes" for x in want)
    assert lines[-1] == f"{len(want)} archives verified"
    # only the ones named
    rc, out, err = verify(run, arch, want[0]["partition"], want[-1]["partition"])
    assert rc == 0, out + err
    assert out.strip().split("\n")[-1] == "2 archives verified"


def flip_middle(arch, table, part):
    p = zst_path(arch, table, part)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


def flip_last(arch, table, part):
    """The last byte belongs to the frame's content checksum."""
    p = zst_path(arch, table, part)
    data = bytearray(p.read_bytes())
    data[-1] ^= 0x01
    p.write_bytes(bytes(data))


def truncate(arch, table, part):
    p = zst_path(arch, table, part)
    data = p.read_bytes()
    p.write_bytes(data[:len(data) // 2])


def delete(arch, table, part):
    zst_path(arch, table, part).unlink()


def wrong_rows(arch, table, part):
    p = manifest_path(arch, table, part)
    man = json.loads(p.read_text())
    man["rows"] += 1
    p.write_text(json.dumps(man))


def unknown_column(arch, table, part):
    """A valid file with one more line that has a column the table lacks; the manifest's
    rows, bytes and sha256 fixed up, so only the row check can fail."""
    lines = decompress(zst_path(arch, table, part))
    extra = dict(lines[-1], ts=lines[-1]["ts"] + 1, no_such_column="x")
    compress(zst_path(arch, table, part), lines + [extra])
    p = manifest_path(arch, table, part)
    man = json.loads(p.read_text())
    man["bytes"], man["sha256"] = file_facts(zst_path(arch, table, part))
    man["rows"] += 1
    p.write_text(json.dumps(man))


CORRUPTIONS = {
    # a flipped byte inside the data: zstd, the JSON lines or the sha256 notice it, whichever
    # comes first
    "flipped-byte": (flip_middle, r"archive {p}(,| is|:).*(corrupt|not a JSON object|has no "
                                  r"column|wrong type|cut short|sha256)"),
    "flipped-checksum": (flip_last, r"archive {p} is corrupt: .*checksum"),
    "truncated": (truncate, r"archive {p} is cut short"),
    "deleted": (delete, r"archive {p}: cannot open .*{p}\.ndjson\.zst: No such file"),
    "wrong-rows": (wrong_rows, r"archive {p}: {n} rows, the manifest says {n1}"),
    "unknown-column": (unknown_column, r"archive {p}, line {n1}: {t} has no column "
                                       r"'no_such_column'"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_verify_names_a_corrupt_archive_and_why(archived, tmp_path, kind):
    a = archived
    run = a["run"]
    arch = tmp_path / "arch"
    shutil.copytree(a["arch"], arch)
    table = "api_usage"
    start = max(a["drops"][table])
    part = part_name(table, start)
    n = read_manifest(arch, table, part)["rows"]
    corrupt, reason = CORRUPTIONS[kind]
    corrupt(arch, table, part)
    reason = reason.format(p=part, n=n, n1=n + 1, t=table)

    rc, out, err = verify(run, arch)
    assert rc == 1, out + err
    failed = [x for x in out.strip().split("\n") if x.startswith("FAILED")]
    assert len(failed) == 1, out
    assert re.match(rf"FAILED  {part}  {reason}", failed[0]), failed[0]
    oks = [x for x in out.strip().split("\n") if x.startswith("ok ")]
    assert len(oks) == len(archived_names(a)) - 1, out
    assert "1 archive failed verification" in err, err
    # named alone
    rc, out, err = verify(run, arch, part)
    assert rc == 1 and out.startswith(f"FAILED  {part}  "), out + err
    # another archive named alone still passes
    other = part_name(table, min(a["drops"][table]))
    rc, out, err = verify(run, arch, other)
    assert rc == 0 and out.startswith(f"ok      {other}  "), out + err


@pytest.mark.parametrize("layout", ["empty", "table-dir"])
def test_an_empty_archive_directory_is_listed(run_cli, tmp_path, layout):
    """An archive directory that exists but holds no archive yet (the server creates
    <dir>/<table>/ before the first manifest lands)."""
    arch = tmp_path / "arch"
    (arch / "api_usage" if layout == "table-dir" else arch).mkdir(parents=True)
    cp = run_cli("archive", "list", "--dir", arch, "--format", "json")
    assert cp.returncode == 0 and json.loads(cp.stdout)["rows"] == [], cp.stderr
    cp = run_cli("archive", "verify", "--dir", arch)
    assert cp.returncode == 0 and cp.stdout == "0 archives verified\n", cp.stderr


def test_verify_of_an_unknown_partition_fails(archived):
    rc, out, err = verify(archived["run"], archived["arch"], "api_usage_p19700101")
    assert rc == 1, out + err
    assert f"no archive of a partition named 'api_usage_p19700101' in {archived['arch']}" in err


# ---- 3. restore and unload -------------------------------------------------------------------


def test_restore_unload_cycle(archived, tmp_path):
    a = archived
    run, data = a["run"], a["data"]
    db = copy_db(a["db"], tmp_path / "db")
    arch = tmp_path / "arch"
    shutil.copytree(a["arch"], arch)
    dir_opt = ["--set", f"storage.archive_dir={arch}"]
    table = "api_usage"
    start = max(a["drops"][table])  # a whole day
    part, end = part_name(table, start), start + DAY
    sent = sorted((r for r in data[table] if day_of(r["ts"]) == start), key=lambda r: r["ts"])
    original = [r for r in a["before"][table] if start <= r["ts"] < end]
    assert len(sent) == len(original) > 100
    assert window_rows(run, db, table, start, end) == []
    schema0 = schema_names(run, db)
    cat0 = catalogue_rows(run, db)

    cp = run("archive", "restore", part, "--db", db, *dir_opt)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.startswith(f"restored {len(sent)} rows of {part} into {table} (state "
                                f"restored"), cp.stdout
    got = window_rows(run, db, table, start, end)
    assert got == original
    for g, w in zip(got, sent):
        check_row(f"{part}[{w['client_id']}]", g, w)
    # the whole table: every row kept plus the day restored, each once
    marks = [x["client_id"] for x in cli_query(run, db, f"SELECT client_id FROM {table}")]
    kept = {r["client_id"] for r in data[table] if day_of(r["ts"]) not in a["drops"][table]}
    assert sorted(marks) == sorted(kept | {r["client_id"] for r in sent})
    cat1 = catalogue_rows(run, db)
    mine = [c for c in cat1 if c["name"] == part]
    assert mine == [{"name": part, "table_name": table, "start_ts": start, "end_ts": end,
                     "rows": len(sent), "state": "restored"}]
    assert [c for c in cat1 if c["name"] != part] == cat0
    parts = {p["partition"]: p for p in cli_rows(run, db, "partitions", *dir_opt)}
    assert (parts[part]["state"], parts[part]["rows"], parts[part]["from_ms"],
            parts[part]["to_ms"]) == ("restored", len(sent), start, end)
    assert isinstance(parts[part]["bytes"], int) and parts[part]["bytes"] > 0
    assert {p for p, x in parts.items() if x["state"] == "archived"} == \
        {p for _t, p in archived_names(a)} - {part}
    schema1 = schema_names(run, db)
    assert set(schema1) > set(schema0) and part in schema1

    # a second restore is refused and changes nothing
    cp = run("archive", "restore", part, "--db", db, *dir_opt)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert f"opsdb: {part} cannot be restored: partition {part} of {table}, which covers part " \
           f"of its window, is in the database (nothing was restored)" in cp.stderr, cp.stderr
    assert catalogue_rows(run, db) == cat1 and schema_names(run, db) == schema1
    assert window_rows(run, db, table, start, end) == original

    # retention leaves it alone, and it does not count against the policy
    zst_before = file_facts(zst_path(arch, table, part))
    cp = run("retention", "apply", "--db", db, *SHORT, *dir_opt)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.startswith("dropped 0 partitions (0 rows)"), cp.stdout
    assert catalogue_rows(run, db) == cat1
    assert file_facts(zst_path(arch, table, part)) == zst_before
    cp = run("retention", "verify", "--db", db, *SHORT)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    status = {r["table"]: r for r in cli_rows(run, db, "retention", "status", *SHORT)}
    assert status[table]["rows"] == len(kept)

    # unload: only a restored partition
    live = [c["name"] for c in cat0 if c["table_name"] == table][-1]
    cp = run("archive", "unload", live, "--db", db, *dir_opt)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert f"opsdb: {live} is not a restored partition (its state is hot): only partitions " \
           f"brought back by `opsdb archive restore` can be unloaded" in cp.stderr, cp.stderr
    cp = run("archive", "unload", "api_usage_p19991231", "--db", db, *dir_opt)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert "no partition named 'api_usage_p19991231' is in the database" in cp.stderr
    assert catalogue_rows(run, db) == cat1

    cp = run("archive", "unload", part, "--db", db, *dir_opt)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == f"unloaded {part} (its archive stays)"
    assert window_rows(run, db, table, start, end) == []
    assert catalogue_rows(run, db) == cat0 and schema_names(run, db) == schema0
    parts = {p["partition"]: p for p in cli_rows(run, db, "partitions", *dir_opt)}
    assert parts[part]["state"] == "archived"
    rc, out, err = verify(run, arch, part)
    assert rc == 0, out + err
    # and back again
    cp = run("archive", "restore", part, "--db", db, *dir_opt)
    assert cp.returncode == 0, cp.stderr
    assert window_rows(run, db, table, start, end) == original


@pytest.mark.parametrize("kind", ["wrong-rows", "unknown-column", "truncated", "flipped-byte",
                                  "deleted"])
def test_restore_of_a_corrupt_archive_leaves_nothing(archived, tmp_path, kind):
    a = archived
    run = a["run"]
    db = copy_db(a["db"], tmp_path / "db")
    arch = tmp_path / "arch"
    shutil.copytree(a["arch"], arch)
    table = "error_logs"
    start = min(a["drops"][table])
    part = part_name(table, start)
    CORRUPTIONS[kind][0](arch, table, part)
    schema0, cat0 = schema_names(run, db), catalogue_rows(run, db)

    cp = run("archive", "restore", part, "--db", db, "--dir", arch)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert re.search(rf"opsdb: .*{part}.*\(nothing was restored\)$", cp.stderr.strip()), \
        cp.stderr
    assert cp.stdout == ""
    assert catalogue_rows(run, db) == cat0
    assert schema_names(run, db) == schema0
    assert window_rows(run, db, table, start, start + DAY) == []
    assert stray_files(tmp_path) == []


def test_new_rows_make_a_restored_partition_live_again(archived, tmp_path, run_cli):
    """A row that arrives for the window of a restored partition lands in that partition, which
    then holds data that is in no archive: it becomes an ordinary (hot) partition again, under
    the retention policy, and `archive unload` refuses it rather than lose the row."""
    a = archived
    db = copy_db(a["db"], tmp_path / "db")
    arch = a["arch"]  # only read
    table = "error_logs"
    start = max(a["drops"][table])
    part = part_name(table, start)
    cp = run_cli("archive", "restore", part, "--db", db, "--dir", arch)
    assert cp.returncode == 0, cp.stderr
    late = {"ts": start + 4321, "level": "error", "message": "late", "trace_id": "late-1"}
    cli_ingest(run_cli, db, table, [late])
    assert cli_query(run_cli, db, f"SELECT rows, state FROM opsdb_partitions WHERE name = "
                                  f"'{part}'") == [{"rows": read_manifest(arch, table, part)
                                                    ["rows"] + 1, "state": "hot"}]
    cp = run_cli("archive", "unload", part, "--db", db, "--dir", arch)
    assert cp.returncode == 1 and "is not a restored partition" in cp.stderr, cp.stderr
    got = cli_query(run_cli, db, f"SELECT trace_id FROM {table} WHERE trace_id = 'late-1'")
    assert got == [{"trace_id": "late-1"}]


# ---- 4. an archive that cannot be written stops the drop -------------------------------------


@pytest.fixture
def small_db(tmp_path, run_cli):
    away_from_midnight(20)
    now = now_ms()
    data = gen_events(SEED + 1, now - 5 * DAY + 10 * MIN, now - MIN,
                      {"api_usage": 200, "error_logs": 100, "job_runs": 100})
    db = tmp_path / "s.db"
    for table, rows in data.items():
        cli_ingest(run_cli, db, table, rows)
    return db, data


def assert_nothing_dropped(run, db, data, cat0):
    assert catalogue_rows(run, db) == cat0
    for table, rows in data.items():
        mark = MARKER[table]
        got = cli_query(run, db, f"SELECT {mark} FROM {table}")
        assert sorted(x[mark] for x in got) == sorted(r[mark] for r in rows), table


def test_archive_dir_under_a_file_stops_retention(small_db, tmp_path, run_cli):
    db, data = small_db
    cat0 = catalogue_rows(run_cli, db)
    (tmp_path / "file").write_text("not a directory\n")
    arch = tmp_path / "file" / "arch"
    files0 = all_files(tmp_path)
    cp = run_cli("retention", "apply", "--db", db, *SHORT, "--set", f"storage.archive_dir={arch}")
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert cp.stderr.strip() == f"opsdb: retention not applied (nothing was dropped): archive: " \
                                f"cannot create the directory {arch}: Not a directory", cp.stderr
    assert "dropped" not in cp.stdout, cp.stdout
    assert_nothing_dropped(run_cli, db, data, cat0)
    assert all_files(tmp_path) == files0
    assert stray_files(tmp_path) == []


def test_archive_failure_in_a_later_table_drops_nothing(small_db, tmp_path, run_cli):
    """api_usage is archived before error_logs, whose directory is a file: the whole apply
    fails, every partition stays, and what was written is whole (no temp file, every manifest
    verifies). Once the directory is fixed, the apply archives everything."""
    db, data = small_db
    cat0 = catalogue_rows(run_cli, db)
    arch = tmp_path / "arch"
    arch.mkdir()
    (arch / "error_logs").write_text("in the way\n")
    cp = run_cli("retention", "apply", "--db", db, *SHORT, "--set", f"storage.archive_dir={arch}")
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert re.search(rf"^opsdb: retention not applied \(nothing was dropped\): archive: cannot "
                     rf"create {arch}/error_logs/\S*: Not a directory$", cp.stderr.strip()), \
        cp.stderr
    assert_nothing_dropped(run_cli, db, data, cat0)
    assert stray_files(tmp_path) == []
    rc, out, err = verify(run_cli, arch)
    assert rc == 0, out + err
    # no archive is listed as 'archived' while its partition is in the database
    parts = cli_rows(run_cli, db, "partitions", "--set", f"storage.archive_dir={arch}")
    assert all(p["state"] != "archived" for p in parts), parts

    (arch / "error_logs").unlink()
    now = now_ms()
    cp = run_cli("retention", "apply", "--db", db, *SHORT, "--set", f"storage.archive_dir={arch}")
    assert cp.returncode == 0, cp.stderr
    drops = dropped_parts(data, now)
    want = sorted((t, part_name(t, s)) for t, starts in drops.items() for s in starts)
    assert len(want) >= 3
    assert sorted((x["table"], x["partition"]) for x in listing(run_cli, arch)) == want
    rc, out, err = verify(run_cli, arch)
    assert rc == 0, out + err
    for table, part in want:
        start = read_manifest(arch, table, part)["from_ms"]
        assert [r[MARKER[table]] for r in sorted(data[table], key=lambda r: r["ts"])
                if day_of(r["ts"]) == start] == \
            [x[MARKER[table]] for x in decompress(zst_path(arch, table, part))]


def test_a_failed_archive_expiry_does_not_misreport_the_drop(small_db, tmp_path, run_cli):
    """An unreadable manifest in the archive directory makes the removal of old archives
    (storage.archive_retention) fail. Whatever retention then does, what it says must be
    true: exit 0 with what it dropped, or an error with nothing dropped."""
    db, data = small_db
    cat0 = catalogue_rows(run_cli, db)
    arch = tmp_path / "arch"
    (arch / "api_usage").mkdir(parents=True)
    (arch / "api_usage" / "notes.json").write_text("{not a manifest\n")
    now = now_ms()
    cp = run_cli("retention", "apply", "--db", db, *SHORT, "--set", f"storage.archive_dir={arch}",
                 "--set", "storage.archive_retention=30d")
    cat = catalogue_rows(run_cli, db)
    gone = len(cat0) - len(cat)
    assert gone == sum(len(x) for x in dropped_parts(data, now).values()) or gone == 0
    if cp.returncode == 0:
        assert cp.stdout.startswith(f"dropped {gone} partitions"), cp.stdout
    else:
        assert gone == 0, f"'{cp.stderr.strip()}', yet {gone} partitions were dropped"


def test_an_unreadable_manifest_is_named(archived, tmp_path, run_cli):
    arch = tmp_path / "arch"
    shutil.copytree(archived["arch"], arch)
    bad = arch / "job_runs" / "job_runs_p20000101.json"
    bad.write_text('{"format": "opsdb-archive-1"\n')
    rc, out, err = verify(run_cli, arch)
    assert rc == 1, out + err
    # named, and the other archives are still checked
    assert f"FAILED  job_runs_p20000101  archive manifest {bad}: " in out, out + err
    assert out.count("\nok      ") + out.startswith("ok      ") >= 2, out
    assert "1 archive failed verification" in err, err
    cp = run_cli("archive", "list", "--dir", arch, "--format", "json")
    assert cp.returncode == 1 and "1 manifest cannot be read" in cp.stderr, cp.stderr
    rows = json.loads(cp.stdout)["rows"]
    assert [r["partition"] for r in rows if r["problem"]] == ["job_runs_p20000101"]


# ---- 5. storage.archive_retention ------------------------------------------------------------


def test_archive_retention_removes_old_archives(archived, tmp_path):
    a = archived
    run = a["run"]
    db = copy_db(a["db"], tmp_path / "db")
    arch = tmp_path / "arch"
    shutil.copytree(a["arch"], arch)
    mans = {p: read_manifest(arch, t, p) for t, p in archived_names(a)}
    opts = [*SHORT, "--set", f"storage.archive_dir={arch}",
            "--set", "storage.archive_retention=4d"]
    t0 = now_ms()
    cp = run("retention", "apply", "--db", db, *opts)
    t1 = now_ms()
    assert cp.returncode == 0, cp.stderr

    def gone_at(t):
        return {p for p, m in mans.items() if m["to_ms"] <= t - 4 * DAY}

    gone = gone_at(t0)
    assert gone == gone_at(t1)
    assert 0 < len(gone) < len(mans)
    lines = cp.stdout.strip().split("\n")
    assert lines[0].startswith("dropped 0 partitions"), cp.stdout
    assert lines[1] == f"archived 0 partitions to {arch} first; removed {len(gone)} archives " \
                       f"past storage.archive_retention", cp.stdout
    left = sorted(p for p in mans if p not in gone)
    assert sorted(x["partition"] for x in listing(run, arch)) == left
    for p, m in mans.items():
        for path in (manifest_path(arch, m["table"], p), zst_path(arch, m["table"], p)):
            assert path.exists() == (p not in gone), path
    rc, out, err = verify(run, arch)
    assert rc == 0 and out.strip().endswith(f"{len(left)} archives verified"), out + err
    archived_now = {p["partition"] for p in cli_rows(run, db, "partitions", *opts)
                    if p["state"] == "archived"}
    assert archived_now == set(left)
    # a second apply has nothing more to remove: no second line
    cp = run("retention", "apply", "--db", db, *opts)
    assert cp.returncode == 0 and len(cp.stdout.strip().split("\n")) == 1, cp.stdout


# ---- 6. the server -----------------------------------------------------------------------------


def test_server_archives_and_sees_a_restore_by_the_cli(server_factory, run_cli, tmp_path):
    away_from_midnight(30)
    now = now_ms()
    data = gen_events(SEED + 2, now - 5 * DAY + 10 * MIN, now - MIN,
                      {"api_usage": 1500, "error_logs": 300})
    loader = server_factory(*LONG)
    for table, rows in data.items():
        for i in range(0, len(rows), 500):
            post_ndjson(loader, table, rows[i:i + 500])
    loader.stop()

    arch = tmp_path / "arch"
    srv = server_factory(*SHORT, "--set", "storage.retention_interval=1s",
                         "--set", f"storage.archive_dir={arch}",
                         "--set", "query.max_rows=100000")
    drops = dropped_parts(data, now_ms())
    want = {(t, part_name(t, s)) for t, starts in drops.items() for s in starts}
    assert len(want) == 4

    def listed_now():
        return {(x["table"], x["partition"]) for x in listing(run_cli, arch)}

    # the files first (listing a directory without any manifest yet meets the bug of
    # test_an_empty_archive_directory_is_listed)
    assert wait_until(lambda: all(manifest_path(arch, t, p).exists() for t, p in want),
                      timeout=20, interval=0.2), (all_files(arch), srv.run_stderr()[-3000:])
    assert listed_now() == want
    assert wait_until(lambda: "retention dropped" in srv.run_stderr(), timeout=5)
    rc, out, err = verify(run_cli, arch)
    assert rc == 0, out + err
    for table, starts in drops.items():
        for s in starts:
            assert srv.count(table, f"ts >= {s} AND ts < {s + DAY}") == 0
            lines = decompress(zst_path(arch, table, part_name(table, s)))
            assert [x[MARKER[table]] for x in lines] == [
                r[MARKER[table]] for r in sorted(data[table], key=lambda r: r["ts"])
                if day_of(r["ts"]) == s]

    # a window of 50 s inside one minute of the archived day: raw rows only
    table = "api_usage"
    start = max(drops[table])
    part = part_name(table, start)
    sent = [r for r in data[table] if day_of(r["ts"]) == start]
    pick = next(r["ts"] for r in sent if 5_000 < r["ts"] % MIN < 50_000)
    old_now = pick - pick % MIN + 55_000
    params = {"now": f"{old_now / 1000:.3f}", "window": "50s"}
    want_view = expect_api_performance(data[table], 50_000, old_now)
    assert want_view
    r = srv.get("/api/v1/views/api_performance", params=params)
    assert r.status_code == 200 and r.json()["rows"] == [], r.text

    cp = run_cli("archive", "restore", part, "--db", srv.db, "--dir", arch)
    assert cp.returncode == 0, cp.stderr
    where = f"ts >= {start} AND ts < {start + DAY}"
    assert wait_until(lambda: srv.count(table, where) == len(sent), timeout=5), \
        srv.count(table, where)
    got = srv.query(f"SELECT client_id FROM {table} WHERE {where}")
    assert sorted(x["client_id"] for x in got) == sorted(r["client_id"] for r in sent)

    def view_rows():
        r = srv.get("/api/v1/views/api_performance", params=params)
        assert r.status_code == 200, r.text
        return r.json()["rows"]

    assert wait_until(lambda: view_rows() != [], timeout=5)
    compare_rows("api_performance", view_rows(), want_view, ("service", "endpoint"), API_SPEC)
    state = srv.query(f"SELECT state, rows FROM opsdb_partitions WHERE name = '{part}'")
    assert state == [{"state": "restored", "rows": len(sent)}]

    # the server's retention (every second) leaves the restored partition alone
    wait_until(lambda: False, timeout=2.5, interval=0.5)
    assert srv.count(table, where) == len(sent)
    assert "retention failed" not in srv.run_stderr(), srv.run_stderr()[-3000:]
    assert listed_now() == want

    cp = run_cli("archive", "unload", part, "--db", srv.db, "--dir", arch)
    assert cp.returncode == 0, cp.stderr
    assert wait_until(lambda: srv.count(table, where) == 0, timeout=5)
    assert wait_until(lambda: view_rows() == [], timeout=5)


# ---- 7. command-line errors --------------------------------------------------------------------


USAGE_CASES = [
    ((), "give an action: list, verify, restore or unload"),
    (("frob", "--dir", "{arch}"), "unknown action 'frob': list, verify, restore or unload"),
    (("restore", "--dir", "{arch}"), "restore takes one partition name (see `opsdb archive "
                                     "list`)"),
    (("restore", "a_p20260101", "b_p20260101", "--dir", "{arch}"), "restore takes one "
                                                                   "partition name"),
    (("unload", "--dir", "{arch}"), "unload takes one partition name"),
    (("list", "x", "--dir", "{arch}"), "list takes no partition names"),
    (("list",), "no archive directory: set storage.archive_dir or give --dir DIR"),
    (("verify",), "no archive directory: set storage.archive_dir or give --dir DIR"),
    (("restore", "api_usage_p20260101"), "set storage.archive_dir or give --dir"),
    (("list", "--dir", "{arch}", "--format", "xml"), "--format must be table, json or csv"),
    (("list", "--bogus"), "unknown option '--bogus'"),
]


@pytest.mark.parametrize("args,message", USAGE_CASES,
                         ids=[" ".join(a) or "no-action" for a, _ in USAGE_CASES])
def test_usage_errors_exit_2(run_cli, tmp_path, args, message):
    arch = tmp_path / "arch"
    cp = run_cli("archive", *[x.format(arch=arch) for x in args], "--db", tmp_path / "x.db")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert cp.stderr.startswith("opsdb archive: ") and message in cp.stderr, cp.stderr
    assert "run 'opsdb archive --help' for usage" in cp.stderr
    assert cp.stdout == ""
    assert not (tmp_path / "x.db").exists()


def test_runtime_errors_exit_1(archived, run_cli, tmp_path):
    arch = archived["arch"]
    db = copy_db(archived["db"], tmp_path / "db")
    cp = run_cli("archive", "restore", "api_usage_p19700101", "--db", db, "--dir", arch)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert cp.stderr.strip() == (f"opsdb: no archive of a partition named 'api_usage_p19700101' "
                                 f"in {arch}"), cp.stderr
    # the archive directory from the configuration
    cp = run_cli("archive", "list", "--set", f"storage.archive_dir={arch}", "--format", "json")
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout)["rows"] == listing(run_cli, arch)
    # a directory that is a file
    (tmp_path / "f").write_text("x")
    cp = run_cli("archive", "list", "--dir", tmp_path / "f")
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert f"archive directory {tmp_path / 'f'} does not exist (or is not a directory)" in \
        cp.stderr, cp.stderr
    # a directory that does not exist (a typo must not verify "0 archives")
    for action in ("list", "verify"):
        cp = run_cli("archive", action, "--dir", tmp_path / "typo")
        assert cp.returncode == 1 and "does not exist" in cp.stderr, cp.stdout + cp.stderr
    # a restore into a database that does not exist
    part = sorted(p for _t, p in archived_names(archived))[0]
    cp = run_cli("archive", "restore", part, "--db", tmp_path / "none.db", "--dir", arch)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert cp.stderr.startswith("opsdb: "), cp.stderr
    assert not (tmp_path / "none.db").exists()
    # help
    cp = run_cli("archive", "--help")
    assert cp.returncode == 0 and cp.stdout.startswith("usage: opsdb archive list|verify")
