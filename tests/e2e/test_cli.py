"""The command line as users meet it: help, usage errors, init, ingest, query, view, schema,
version, configuration precedence, and bulk loads with a progress line.

Exit codes (src/cli/cli_common.c): 0 success, 1 runtime failure, 2 usage error.
"""

import csv
import io
import json
import re
import signal
import subprocess
import time

import pytest

from conftest import child_env
from test_migration import CURRENT_VERSION

COMMANDS = ["init", "serve", "ingest", "query", "view", "schema", "config", "version", "backup",
            "restore"]
NOW_S = int(time.time()) - 600  # timestamps must lie within retention and not in the future
NOW_MS = NOW_S * 1000


def api_row(i, **kw):
    row = {"ts": NOW_MS - i * 1000, "service": "svc", "method": "GET",
           "endpoint": f"/e/{i % 5}", "status_code": 200, "latency_ms": 1.5 + i}
    row.update(kw)
    return row


def ndjson(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def db(tmp_path, run_cli):
    path = tmp_path / "cli.db"
    cp = run_cli("init", "--db", path)
    assert cp.returncode == 0, cp.stderr
    return path


def count(run_cli, db, table="api_usage", where="1=1"):
    cp = run_cli("query", f"SELECT count(*) AS n FROM {table} WHERE {where}", "--db", db,
                 "--format", "json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)["rows"][0]["n"]


# ---- help and usage errors -----------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_help(run_cli, command):
    for args in ([command, "--help"], [command, "-h"], ["help", command]):
        cp = run_cli(*args)
        assert cp.returncode == 0, (args, cp.stderr)
        assert cp.stdout.startswith(f"usage: opsdb {command}"), cp.stdout
        assert "--db PATH" in cp.stdout and "--config FILE" in cp.stdout  # common options


def test_top_level_help(run_cli):
    cp = run_cli("--help")
    assert cp.returncode == 0 and cp.stdout.startswith("usage: opsdb COMMAND")
    for command in COMMANDS:
        assert re.search(rf"^  {command}\s+\S", cp.stdout, re.M), command
    cp = run_cli()
    assert cp.returncode == 2 and "usage: opsdb" in cp.stderr


def test_unknown_command(run_cli):
    cp = run_cli("frobnicate")
    assert cp.returncode == 2
    assert "no command 'frobnicate'" in cp.stderr and "usage: opsdb" in cp.stderr
    cp = run_cli("help", "frobnicate")
    assert cp.returncode != 0 and "frobnicate" in cp.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option(run_cli, command, tmp_path):
    cp = run_cli(command, "--no-such-option", "--db", tmp_path / "never.db")
    assert cp.returncode == 2, cp.stderr
    assert "'--no-such-option'" in cp.stderr and f"opsdb {command} --help" in cp.stderr
    assert not (tmp_path / "never.db").exists()


@pytest.mark.parametrize("args,needle", [
    (["ingest"], "name the table"),
    (["ingest", "no_such_table", "-"], "no table 'no_such_table'"),
    (["ingest", "api_usage", "-", "--format", "xml"], "--format"),
    (["ingest", "api_usage", "-", "--precision", "h"], "--precision"),
    (["ingest", "api_usage", "-", "--format"], "needs a value"),
    (["query"], "missing SQL"),
    (["query", "SELECT 1", "--format", "yaml"], "--format"),
    (["view", "api_performance", "--window", "soon"], "--window"),
    (["view", "api_performance", "--now", "later"], "--now"),
    (["view", "api_performance", "--limit", "0"], "--limit"),
    (["view", "api_performance", "--filter", "novalue"], "--filter"),
    (["view"], "name a view"),
    (["init", "extra"], "unexpected argument 'extra'"),
    (["init", "--set", "novalue"], "--set needs name=value"),
])
def test_usage_errors(run_cli, args, needle, tmp_path):
    # the database comes from the environment (a --db flag first: see the leak test below)
    cp = run_cli(*args, env={"OPSDB_DB": tmp_path / "u.db"})
    assert cp.returncode == 2, (args, cp.returncode, cp.stderr)
    assert needle in cp.stderr, (args, cp.stderr)
    assert not (tmp_path / "u.db").exists()


def sanitized(path):
    return b"__asan_init" in open(path, "rb").read()


# Regression (fixed in 48f5815): init, query and serve returned on a usage error or --help
# without cli_common_release(), leaking the --db/--set names (exit status 1 under ASan).
@pytest.mark.parametrize("args,status", [
    (["init", "--db", "DB", "extra"], 2),
    (["init", "--db", "DB", "--set", "novalue"], 2),
    (["init", "--db", "DB", "--help"], 0),
    (["query", "--db", "DB"], 2),
    (["query", "--db", "DB", "SELECT 1", "--format", "yaml"], 2),
    (["query", "--db", "DB", "--help"], 0),
    (["serve", "--db", "DB", "--bogus"], 2),
    (["serve", "--db", "DB", "--help"], 0),
])
def test_usage_error_after_db_flag_does_not_leak(run_cli, opsdb_bin, tmp_path, args, status):
    if not sanitized(opsdb_bin):
        pytest.skip("needs the sanitizer build to see the leak")
    args = [str(tmp_path / "u.db") if a == "DB" else a for a in args]
    cp = run_cli(*args, check_sanitizers=False)
    assert "LeakSanitizer" not in cp.stderr, cp.stderr
    assert cp.returncode == status, cp.stderr


def test_runtime_errors_exit_1(run_cli, tmp_path):
    cp = run_cli("query", "SELECT 1", "--db", tmp_path / "missing.db")
    assert cp.returncode == 1 and "does not exist" in cp.stderr and "opsdb init" in cp.stderr
    cp = run_cli("init", "--set", "no.such.option=1", "--db", tmp_path / "x.db")
    assert cp.returncode == 1 and "no.such.option" in cp.stderr
    cp = run_cli("ingest", "api_usage", tmp_path / "missing.ndjson", "--db", tmp_path / "x.db")
    assert cp.returncode == 1 and "missing.ndjson" in cp.stderr


# ---- init ----------------------------------------------------------------------------------


def schema_dump(run_cli, db):
    cp = run_cli("query", "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name",
                 "--db", db, "--format", "json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)["rows"]


def test_init_is_idempotent(run_cli, tmp_path):
    path = tmp_path / "data" / "i.db"  # the parent directory is created
    cp = run_cli("init", "--db", path)
    assert cp.returncode == 0, cp.stderr
    assert f"schema version {CURRENT_VERSION}," in cp.stdout and "16 tables, 9 views" in cp.stdout
    migrations = run_cli("query", "SELECT * FROM opsdb_migrations", "--db", path,
                         "--format", "json").stdout
    cp = run_cli("ingest", "api_usage", "-", "--db", path, input=ndjson([api_row(1)]))
    assert cp.returncode == 0, cp.stderr
    first = schema_dump(run_cli, path)  # with the partition the row made
    for _ in range(2):
        cp = run_cli("init", "--db", path)
        assert cp.returncode == 0, cp.stderr
        assert "migrat" not in cp.stderr, cp.stderr  # nothing to migrate the second time
    assert schema_dump(run_cli, path) == first
    assert run_cli("query", "SELECT * FROM opsdb_migrations", "--db", path,
                   "--format", "json").stdout == migrations
    assert count(run_cli, path) == 1
    names = {r["name"] for r in first}
    for name in ("api_usage", "system_metrics_series", "system_metrics_samples", "job_runs",
                 "system_health", "job_status", "opsdb_migrations", "opsdb_partitions"):
        assert name in names, name
    # the row's day partition, with the table's indexes
    assert any(n.startswith("api_usage_p") and n.endswith("_endpoint_ts") for n in names), names


# ---- ingest --------------------------------------------------------------------------------


def test_ingest_ndjson_file_and_stdin(run_cli, db, tmp_path):
    f = tmp_path / "rows.ndjson"
    f.write_text(ndjson(api_row(i) for i in range(10)))
    cp = run_cli("ingest", "api_usage", f, "--db", db)
    assert cp.returncode == 0, cp.stderr
    assert re.match(r"ingested 10 rows into api_usage in [\d.]+ s", cp.stdout), cp.stdout
    cp = run_cli("ingest", "api_usage", "-", "--db", db,
                 input=ndjson(api_row(i, service="stdin") for i in range(7)))
    assert cp.returncode == 0, cp.stderr
    cp = run_cli("ingest", "api_usage", "--db", db,  # no FILE: stdin too
                 input=ndjson(api_row(i, service="stdin2") for i in range(3)))
    assert cp.returncode == 0, cp.stderr
    assert count(run_cli, db) == 20
    assert count(run_cli, db, where="service = 'stdin'") == 7
    cp = run_cli("query", f"SELECT ts, latency_ms, count FROM api_usage WHERE service = 'svc' "
                          f"ORDER BY ts DESC LIMIT 1", "--db", db, "--format", "json")
    assert json.loads(cp.stdout)["rows"] == [{"ts": NOW_MS, "latency_ms": 1.5, "count": 1}]


def test_ingest_json_array(run_cli, db, tmp_path):
    f = tmp_path / "rows.json"
    f.write_text(json.dumps([api_row(i, service="arr") for i in range(4)]))
    cp = run_cli("ingest", "api_usage", f, "--format", "json", "--db", db)
    assert cp.returncode == 0, cp.stderr
    assert count(run_cli, db, where="service = 'arr'") == 4


def test_ingest_csv(run_cli, db, tmp_path):
    text = ("ts,service,method,endpoint,status_code,latency_ms,client_id\n"
            f"{NOW_MS},csv,GET,/a,200,2.5,alice\n"
            f"{NOW_MS - 1000},csv,POST,\"/b,with,commas\",201,,\"bob \"\"the\"\" builder\"\n")
    f = tmp_path / "rows.csv"  # the .csv suffix chooses the format
    f.write_text(text)
    cp = run_cli("ingest", "api_usage", f, "--db", db)
    assert cp.returncode == 0, cp.stderr
    cp = run_cli("ingest", "api_usage", "-", "--format", "csv", "--db", db,
                 input=text.replace(",csv,", ",csv-stdin,"))
    assert cp.returncode == 0, cp.stderr
    cp = run_cli("query", "SELECT endpoint, latency_ms, client_id FROM api_usage "
                          "WHERE service = 'csv' ORDER BY ts", "--db", db, "--format", "json")
    assert json.loads(cp.stdout)["rows"] == [
        {"endpoint": "/b,with,commas", "latency_ms": None, "client_id": 'bob "the" builder'},
        {"endpoint": "/a", "latency_ms": 2.5, "client_id": "alice"}]
    assert count(run_cli, db, where="service = 'csv-stdin'") == 2


@pytest.mark.parametrize("precision,scale", [("s", 1), ("ms", 1000), ("us", 10**6),
                                             ("ns", 10**9)])
def test_ingest_precision(run_cli, db, precision, scale):
    rows = [api_row(0, ts=NOW_S * scale + 0, service=f"p-{precision}")]
    cp = run_cli("ingest", "api_usage", "-", "--precision", precision, "--db", db,
                 input=ndjson(rows))
    assert cp.returncode == 0, cp.stderr
    cp = run_cli("query", f"SELECT ts FROM api_usage WHERE service = 'p-{precision}'",
                 "--db", db, "--format", "json")
    assert json.loads(cp.stdout)["rows"] == [{"ts": NOW_MS}]


def test_ingest_one_bad_row_writes_nothing(run_cli, db, tmp_path):
    rows = [api_row(i) for i in range(500)]
    rows[316]["status_code"] = 999  # line 317
    f = tmp_path / "bad.ndjson"
    f.write_text(ndjson(rows))
    cp = run_cli("ingest", "api_usage", f, "--db", db)
    assert cp.returncode == 1
    assert "line 317" in cp.stderr and "status_code 999" in cp.stderr, cp.stderr
    assert "nothing was written" in cp.stderr
    assert count(run_cli, db) == 0
    # CSV: the header is line 1, so the same row is line 318
    f = tmp_path / "bad.csv"
    f.write_text("ts,method,endpoint,status_code\n" + "".join(
        f"{r['ts']},GET,/x,{r['status_code']}\n" for r in rows))
    cp = run_cli("ingest", "api_usage", f, "--db", db)
    assert cp.returncode == 1 and "line 318" in cp.stderr, cp.stderr
    assert count(run_cli, db) == 0
    # a line that is not JSON at all
    cp = run_cli("ingest", "api_usage", "-", "--db", db,
                 input=ndjson(rows[:3]) + "{not json\n" + ndjson(rows[3:6]))
    assert cp.returncode == 1 and "line 4" in cp.stderr, cp.stderr
    assert count(run_cli, db) == 0


def big_rows(n_bytes, bad_line=None):
    """NDJSON of padded api_usage rows (long text fields keep the row count, and so the run
    time, low) of at least n_bytes; returns (text, rows)."""
    out, size, i = [], 0, 0
    pad = "x" * 240
    while size < n_bytes:
        i += 1
        line = json.dumps({"ts": NOW_MS - i, "service": "big" + pad, "method": "GET",
                           "endpoint": f"/big/{i % 10}", "client_id": pad, "host": pad,
                           "status_code": 999 if i == bad_line else 200}) + "\n"
        out.append(line)
        size += len(line)
    return "".join(out), i


def test_ingest_large_file_progress(run_cli, db, tmp_path):
    text, n = big_rows(9 * 1024 * 1024)
    f = tmp_path / "big.data"  # no suffix: --format decides
    f.write_text(text)
    cp = run_cli("ingest", "api_usage", f, "--format", "ndjson", "--db", db, timeout=120)
    assert cp.returncode == 0, cp.stderr
    progress = [l for l in cp.stderr.splitlines() if l.startswith("ingest:")]
    assert progress, f"no progress line on stderr: {cp.stderr!r}"
    m = re.search(r"ingest: ([\d.]+) of ([\d.]+) MB \(100%\), (\d+) rows", progress[-1])
    assert m, progress
    assert int(m.group(3)) == n
    assert abs(float(m.group(2)) - len(text) / 1e6) < 0.1
    assert f"ingested {n} rows" in cp.stdout
    assert count(run_cli, db) == n


def test_ingest_large_file_bad_row_in_a_later_chunk(run_cli, db, tmp_path):
    """Files are read in 8 MB chunks; a bad row past the first chunk is named by its line in
    the file, and the rows of the first chunk (already written) are rolled back."""
    text, n = big_rows(10 * 1024 * 1024, bad_line=12000)
    assert len(text.encode()[:text.index('"status_code": 999')]) > 8 * 1024 * 1024
    f = tmp_path / "big.ndjson"
    f.write_text(text)
    cp = run_cli("ingest", "api_usage", f, "--db", db, timeout=120)
    assert cp.returncode == 1
    assert "rejected line 12000: status_code 999" in cp.stderr, cp.stderr
    assert count(run_cli, db) == 0
    # the same through CSV, where every chunk after the first gets the header again
    lines = ["ts,service,method,endpoint,status_code,client_id,host"]
    for i in range(1, 14000):
        lines.append(f"{NOW_MS - i},{'s' * 250},GET,/c,{999 if i == 12500 else 200},"
                     f"{'c' * 250},{'h' * 250}")
    assert len("\n".join(lines[:12500]).encode()) > 8 * 1024 * 1024  # past the first chunk
    f = tmp_path / "big.csv"
    f.write_text("\n".join(lines) + "\n")
    cp = run_cli("ingest", "api_usage", f, "--db", db, timeout=120)
    assert cp.returncode == 1
    assert "rejected line 12501: status_code 999" in cp.stderr, cp.stderr
    assert count(run_cli, db) == 0


# ---- query and view ------------------------------------------------------------------------


@pytest.fixture
def loaded(run_cli, db):
    rows = [api_row(i, endpoint=["/a", "/bb", "/a-much-longer-endpoint"][i % 3],
                    status_code=[200, 404, 500][i % 3]) for i in range(30)]
    cp = run_cli("ingest", "api_usage", "-", "--db", db, input=ndjson(rows))
    assert cp.returncode == 0, cp.stderr
    return db


def test_query_formats(run_cli, loaded):
    sql = ("SELECT endpoint, count(*) AS n, avg(latency_ms) AS lat FROM api_usage "
           "GROUP BY endpoint ORDER BY endpoint")
    cp = run_cli("query", sql, "--db", loaded, "--format", "json")
    assert cp.returncode == 0, cp.stderr
    body = json.loads(cp.stdout)
    assert body["columns"] == ["endpoint", "n", "lat"] and body["row_count"] == 3
    rows = body["rows"]
    assert [r["n"] for r in rows] == [10, 10, 10]
    cp = run_cli("query", sql, "--db", loaded, "--format", "csv")
    assert cp.returncode == 0
    parsed = list(csv.reader(io.StringIO(cp.stdout)))
    assert parsed[0] == ["endpoint", "n", "lat"]
    assert [[r["endpoint"], str(r["n"]), r["lat"]] for r in rows] == \
        [[a, b, float(c)] for a, b, c in parsed[1:]]
    for args in ([], ["--format", "table"]):
        cp = run_cli("query", sql, "--db", loaded, *args)
        assert cp.returncode == 0
        check_table(cp.stdout, ["endpoint", "n", "lat"], rows)


def check_table(text, columns, rows):
    """An aligned table: a header, a dashes line, then one line per row; text columns start at
    their column, numbers end at its right edge, two spaces between columns."""
    lines = text.splitlines()
    assert lines[-1] == f"({len(rows)} row{'' if len(rows) == 1 else 's'})", lines[-1]
    header, dashes, body = lines[0], lines[1], lines[2:-1]
    spans = [m.span() for m in re.finditer(r"-+", dashes)]
    assert len(spans) == len(columns), dashes
    for (s, e), col in zip(spans, columns):
        assert header[s:e].rstrip() == col, (header, col)
    for i in range(1, len(spans)):
        assert spans[i][0] == spans[i - 1][1] + 2, dashes
    assert len(body) == len(rows)
    for line, row in zip(body, rows):
        for (s, e), col in zip(spans, columns):
            v = row[col]
            cell = line[s:e]
            assert line[e:e + 2].strip() == "", (line, col)  # the gap is blank
            if v is None:
                assert cell.strip() == ""
            elif isinstance(v, (int, float)):
                assert cell == cell.rstrip() and float(cell) == v, (line, col, cell)
                assert cell.startswith(" ") or len(cell.strip()) == e - s
            else:
                assert cell.rstrip() == v and not cell.startswith(" "), (line, col, cell)


def test_query_denies_writes(run_cli, loaded):
    for sql, why in [("DELETE FROM api_usage", "denied"),
                     ("INSERT INTO api_usage (ts, method, endpoint, status_code) "
                      "VALUES (1, 'GET', '/', 200)", "denied"),
                     ("UPDATE api_usage SET status_code = 201", "denied"),
                     ("DROP TABLE api_usage", "denied"),
                     ("CREATE TABLE t (x)", "denied"),
                     ("PRAGMA user_version = 7", "denied"),
                     ("ATTACH DATABASE 'other.db' AS other", "denied"),
                     ("SELECT 1; DELETE FROM api_usage", "one statement"),
                     ("SELECT * FROM no_such_table", "no such table")]:
        cp = run_cli("query", sql, "--db", loaded)
        assert cp.returncode == 1, (sql, cp.stdout)
        assert why in cp.stderr, (sql, cp.stderr)
    assert count(run_cli, loaded) == 30
    cp = run_cli("query", "PRAGMA user_version", "--db", loaded, "--format", "json")
    assert cp.returncode == 1 and "PRAGMA" in cp.stderr  # only pragmas that read the schema
    cp = run_cli("query", "PRAGMA table_info(api_usage)", "--db", loaded, "--format", "json")
    assert cp.returncode == 0 and "count" in [r["name"] for r in json.loads(cp.stdout)["rows"]]


# Regression (fixed in 48f5815): the table-valued form was 'query failed: not authorized'.
def test_query_pragma_table_valued_function(run_cli, db):
    cp = run_cli("query", "SELECT name FROM pragma_table_info('api_usage')", "--db", db,
                 "--format", "json")
    assert cp.returncode == 0, cp.stderr
    assert "count" in [r["name"] for r in json.loads(cp.stdout)["rows"]]


def test_view_table_is_aligned(run_cli, loaded):
    cp = run_cli("view", "api_performance", "--db", loaded, "--now", NOW_S, "--window", "1h",
                 "--order", "endpoint")
    assert cp.returncode == 0, cp.stderr
    cp_json = run_cli("view", "api_performance", "--db", loaded, "--now", NOW_S, "--window",
                      "1h", "--order", "endpoint", "--format", "json")
    body = json.loads(cp_json.stdout)
    assert body["row_count"] == 3
    check_table(cp.stdout, body["columns"], body["rows"])
    cp = run_cli("view", "no_such_view", "--db", loaded)
    assert cp.returncode == 1 and "no view named 'no_such_view'" in cp.stderr
    cp = run_cli("view", "api_performance", "--db", loaded, "--filter", "nope=1")
    assert cp.returncode == 1 and "nope" in cp.stderr


def test_schema_and_version(run_cli):
    cp = run_cli("version")
    assert cp.returncode == 0
    assert re.fullmatch(r"opsdb \d+\.\d+\.\d+ \(schema version \d+\)\n", cp.stdout), cp.stdout
    assert run_cli("--version").stdout == cp.stdout
    cp = run_cli("schema")
    assert cp.returncode == 0
    assert cp.stdout.startswith(f"schema version {CURRENT_VERSION}\n")
    assert re.search(r"^api_usage: ts\* .*endpoint\* .*count$", cp.stdout, re.M), cp.stdout
    for table in ("system_metrics", "api_usage", "error_logs", "pipeline_status",
                  "handler_metrics", "alert_history", "scheduled_jobs", "job_runs"):
        assert re.search(rf"^{table}: ts\*", cp.stdout, re.M), table
    md = run_cli("schema", "--markdown")
    assert md.returncode == 0 and md.stdout.startswith("# Schema reference")
    assert "## job_runs" in md.stdout and "`api_usage_endpoint_ts`" in md.stdout
    cfg = run_cli("config", "--markdown")
    assert cfg.returncode == 0 and "| `health.cpu_warning` | `80` |" in cfg.stdout


# ---- configuration -------------------------------------------------------------------------


def test_env_overrides_db(run_cli, tmp_path):
    env_db, flag_db = tmp_path / "from-env.db", tmp_path / "from-flag.db"
    cp = run_cli("init", env={"OPSDB_DB": env_db})
    assert cp.returncode == 0, cp.stderr
    assert str(env_db) in cp.stdout and env_db.exists()
    # environment variables override flags and the file (see opsdb init --help)
    cp = run_cli("init", "--db", flag_db, env={"OPSDB_DB": env_db})
    assert cp.returncode == 0 and str(env_db) in cp.stdout and not flag_db.exists()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"db: {tmp_path / 'from-file.db'}\n")
    cp = run_cli("init", "--config", cfg)
    assert cp.returncode == 0 and (tmp_path / "from-file.db").exists()
    cp = run_cli("init", "--config", cfg, "--db", flag_db)  # the flag beats the file
    assert cp.returncode == 0 and flag_db.exists()


def test_env_overrides_query_limit(run_cli, loaded):
    sql = "SELECT * FROM api_usage"
    cp = run_cli("query", sql, "--db", loaded, "--set", "query.max_rows=100")
    assert cp.returncode == 0
    cp = run_cli("query", sql, "--db", loaded, "--set", "query.max_rows=100",
                 env={"OPSDB_QUERY_MAX_ROWS": "5"})
    assert cp.returncode == 1 and "row limit of 5" in cp.stderr, cp.stderr


def test_config_file_bad_key_names_file_line_and_key(run_cli, tmp_path):
    cfg = tmp_path / "opsdb.yaml"
    cfg.write_text("db: x.db\nquery:\n  timeout: 3s\n  no_such_key: 1\n")
    cp = run_cli("init", "--config", cfg)
    assert cp.returncode == 1
    assert str(cfg) in cp.stderr and "line 4" in cp.stderr and "query.no_such_key" in \
        cp.stderr, cp.stderr


# Regression (fixed in 48f5815): config.c passed e->msg as an argument of err_set() on the same
# e (overlapping vsnprintf): 'line 3: line 3: option ...', with 'unknown' lost.
@pytest.mark.parametrize("text,needles", [
    ("query:\n  timeout: 3s\n  no_such_key: 1\n",
     ["line 3: unknown option 'query.no_such_key'"]),
    ("query:\n  timeout: soon\n", ["line 2: option query.timeout: 'soon' is not a duration"]),
])
def test_config_file_error_message_is_whole(run_cli, tmp_path, text, needles):
    cfg = tmp_path / "opsdb.yaml"
    cfg.write_text(text)
    cp = run_cli("init", "--config", cfg, "--db", tmp_path / "x.db")
    assert cp.returncode == 1
    for needle in needles:
        assert needle in cp.stderr, cp.stderr
    assert cp.stderr.count("line ") == 1, cp.stderr


# Regression (fixed in 48f5815): 'environment OPSDB_QUERY_TIMEOUT: environment
# OPSDB_QUERY_TIMEOUT: t a duration'.
def test_env_error_message_is_whole(run_cli, tmp_path):
    cp = run_cli("init", "--db", tmp_path / "x.db", env={"OPSDB_QUERY_TIMEOUT": "soon"})
    assert cp.returncode == 1
    assert "environment OPSDB_QUERY_TIMEOUT: option query.timeout: 'soon' is not a duration" \
        in cp.stderr, cp.stderr


def test_config_file_errors(run_cli, tmp_path):
    cp = run_cli("init", "--config", tmp_path / "missing.yaml")
    assert cp.returncode == 1 and "missing.yaml" in cp.stderr
    bad = tmp_path / "broken.yaml"
    bad.write_text("db: [\n")
    cp = run_cli("init", "--config", bad)
    assert cp.returncode == 1 and "broken.yaml" in cp.stderr and "line" in cp.stderr
    cp = run_cli("init", "--db", tmp_path / "x.db", "--set", "query.max_rows=0")
    assert cp.returncode == 1 and "query.max_rows" in cp.stderr


# ---- serve ---------------------------------------------------------------------------------


# Regression (fixed in 48f5815): MHD_OPTION_LISTENING_ADDRESS_REUSE (SO_REUSEPORT) let a second
# server bind the same port, and the kernel split connections between the two databases.
def test_serve_on_a_port_in_use_fails(server, opsdb_bin, tmp_path):
    proc = subprocess.Popen([opsdb_bin, "serve", "--db", str(tmp_path / "second.db"),
                             "--listen", f"127.0.0.1:{server.port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=child_env())
    try:
        rc = proc.wait(timeout=3)  # a failed bind exits at once
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"a second server is serving on port {server.port} too:\n{err[-2000:]}")
    err = proc.stderr.read()
    proc.stderr.close()
    assert rc == 1 and "cannot listen" in err, err
