/*
 * opsdb: the operational data database. main() dispatches to one command from the table below;
 * each lives in src/cli/cmd_<name>.c.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

static const struct command commands[] = {
    {"init", "create or migrate the database",
     "usage: opsdb init [--db PATH]\n\n"
     "Creates the database (tables, indexes, views) or migrates it to this version's schema.\n"
     "Idempotent: running it again changes nothing.\n"
     "While the database has no admin user, it adds the user admin and prints its API token\n"
     "once; with OPSDB_ADMIN_TOKEN set (opsdb_<12 hex>_<64 hex>, for automation) that token\n"
     "is used and not printed (docs/security.md).\n",
     cmd_init},
    {"serve", "run the HTTP server (ingestion, views, SQL, metrics)",
     "usage: opsdb serve [--db PATH] [--listen HOST:PORT] [--no-collect]\n"
     "                   [--auth required|off|auto] [--insecure]\n"
     "                   [--tls-cert FILE --tls-key FILE]\n\n"
     "Opens (creating or migrating) the database and serves the HTTP API on --listen\n"
     "(default 127.0.0.1:8470) until SIGINT or SIGTERM; queued rows are committed before exit.\n"
     "Log lines go to stderr, or with --set log.file=PATH only to that file, which is rotated\n"
     "by log.max_size and log.max_age and reopened on SIGHUP (see docs/logging.md).\n"
     "  --listen HOST:PORT  address to listen on (port 0: any free port, logged at start)\n"
     "  --no-collect        do not collect this host's metrics and the server's own health\n"
     "                      (collected every collection.interval by default; docs/collection.md)\n"
     "  --auth MODE         whether requests need a token (auth.mode): required, off, or auto\n"
     "                      (default): off on a loopback address, required on any other\n"
     "  --insecure          allows --auth off on an address that is not loopback\n"
     "  --tls-cert FILE     serve HTTPS only (TLS 1.2 and 1.3) with this PEM certificate chain\n"
     "                      (tls.cert); needs --tls-key\n"
     "  --tls-key FILE      the certificate's private key, PEM (tls.key); both files are\n"
     "                      reread on SIGHUP, a bad new pair keeps the old one\n"
     "Tokens: opsdb user add, opsdb token create (docs/security.md).\n",
     cmd_serve},
    {"ingest", "load NDJSON, CSV or JSON rows into a table",
     "usage: opsdb ingest TABLE [FILE|-] [--format ndjson|csv|json|LOGFORMAT] [--precision ms]\n\n"
     "Loads rows into TABLE in one transaction: every row is validated, and when any row is\n"
     "bad nothing is written and the bad rows are listed. FILE '-' (default) is stdin.\n"
     "  --format     ndjson (default), csv (a header line names the columns; default for\n"
     "               *.csv files) or json (one array)\n"
     "  --precision  unit of numeric timestamps: ns, us, ms (default) or s\n"
     "Log files (docs/collection.md): --format nginx, nginx_timed, apache or access\n"
     "(logs.access_format) into api_usage, json-log or plain-log (logs.plain_pattern) into\n"
     "error_logs. Lines that make no row are listed (with their line numbers) and skipped;\n"
     "when no line makes a row, nothing is written and the exit status is 1.\n",
     cmd_ingest},
    {"query", "run read-only SQL",
     "usage: opsdb query SQL [--format table|json|csv]\n\n"
     "Runs one read-only SQL statement against the database, with the query.timeout and\n"
     "query.max_rows limits. Views and percentile(x, p) are available.\n",
     cmd_query},
    {"view", "show a view",
     "usage: opsdb view NAME [--window 15m] [--now TIME] [--filter COL=VALUE]...\n"
     "                       [--order 'COL desc'] [--limit N] [--format table|json|csv]\n\n"
     "Views: system_health, api_performance, error_summary, pipeline_health,\n"
     "handler_performance, active_alerts, alert_quality, job_status, collection_status\n"
     "(see docs/views.md).\n"
     "  --window  length of the window ending at --now (default per view)\n"
     "  --now     end of the window: epoch seconds or RFC 3339 (default: now)\n",
     cmd_view},
    {"series", "time-bucketed samples of one metric",
     "usage: opsdb series --metric NAME [--filter MATCHERS] [--from TIME] [--to TIME]\n"
     "                    [--step DURATION] [--agg avg|min|max|sum|count|last]\n"
     "                    [--resolution auto|raw|1m|1h] [--format table|json|csv]\n\n"
     "Buckets the samples of one system_metrics metric by --step and aggregates them, per\n"
     "series. --filter takes label matchers: host=web-1,component!=db,host=~web-.*\n"
     "(regular expressions match whole values). --from/--to: epoch seconds or RFC 3339\n"
     "(default: the last hour); the range is rounded out to whole steps. With --resolution\n"
     "auto (default) the 1m or 1h rollups answer when their buckets divide the step: the\n"
     "numbers of the raw samples (up to floating-point rounding), read from far fewer rows.\n",
     cmd_series},
    {"retention", "retention policies: what is held against them, and dropping what is past",
     "usage: opsdb retention status|verify|apply [--format table|json|csv]\n\n"
     "status: per table the retention policy (retention.<table> in days; 0 keeps forever),\n"
     "the oldest and newest data held, the rows, the horizon (now - policy) and a status:\n"
     "ok, empty, kept forever, or past policy when data older than the horizon (plus one\n"
     "partition, which goes whole) is held.\n"
     "verify: the same, and exits 1 when any table is past its policy.\n"
     "apply: drops what is past policy now, as the server does every\n"
     "storage.retention_interval: event partitions whole (DROP TABLE), days of compressed\n"
     "metric chunks, and rollup buckets past storage.rollup_1m_retention and\n"
     "storage.rollup_1h_retention. One transaction; prints what it dropped.\n"
     "Ingestion refuses rows older than the policy.\n",
     cmd_retention},
    {"partitions", "every table's partitions: time range, rows, bytes, state",
     "usage: opsdb partitions [--format table|json|csv]\n\n"
     "Lists the partitions of every table: the time partitions of the event tables (one\n"
     "table each, partition.<table> wide, created as rows arrive and dropped whole by\n"
     "retention), the days of compressed system_metrics chunks (state cold) and the raw\n"
     "system_metrics samples not yet compressed (state hot). from_ms/to_ms: epoch ms, to\n"
     "exclusive; bytes: pages on disk with indexes (for chunks: the compressed bytes).\n",
     cmd_partitions},
    {"archive", "list, verify, restore or unload archived partitions",
     "usage: opsdb archive list|verify [PARTITION...]|restore PARTITION|unload PARTITION\n"
     "                     [--dir DIR] [--format table|json|csv]\n\n"
     "With storage.archive_dir set, retention writes every event partition it drops to\n"
     "DIR/<table>/<partition>.ndjson.zst (zstd NDJSON, one row per line, column names as keys,\n"
     "readable with `zstdcat`) and a manifest <partition>.json (table, time range, rows,\n"
     "bytes, sha256) before the drop.\n"
     "  list       the archives in DIR (default storage.archive_dir)\n"
     "  verify     checks size, sha256 and every row of each archive (or of those named)\n"
     "             against its manifest; exits 1 when any fails\n"
     "  restore    brings an archive back as a partition of its table (state restored) in one\n"
     "             transaction, for an investigation: queries and views read it again and\n"
     "             retention leaves it alone; its rows are not added to the rollups again\n"
     "  unload     drops a restored partition again (the archive stays)\n",
     cmd_archive},
    {"backup", "take, list, verify and prune backups of the database",
     "usage: opsdb backup create|list|verify [NAME...|--all]|prune [--keep N]|check\n"
     "                    [--to DIR] [--format table|json|csv] [--quiet]\n\n"
     "A backup is a consistent copy of the whole database taken while it is in use (ingestion\n"
     "goes on), compressed with zstd into DIR/opsdb-<UTC time>.db.zst, with a manifest\n"
     "DIR/opsdb-<UTC time>.json (time, schema version, rows per table, sizes, sha256) written\n"
     "last: a backup is listed only once it is whole. See docs/backup-restore.md.\n"
     "  create   takes a backup of --db into DIR; progress goes to stderr\n"
     "  list     the backups in DIR, newest first, with when each was last verified and the\n"
     "           result; exits 1 when a manifest cannot be read\n"
     "  verify   restores a backup into a temporary file in DIR and checks it whole: sizes\n"
     "           and sha256 against the manifest, the integrity check, the rows of every\n"
     "           table; records the time and result in the manifest. Verifies the newest\n"
     "           backup, the backups NAME... (names from list, or .json files), or --all;\n"
     "           exits 1 when any fails, naming why\n"
     "  prune    removes all but the newest --keep N backups (default backup.keep, 7), and\n"
     "           temporary files that stopped backups left over an hour ago\n"
     "  check    runs the integrity check on the database itself (--db); exits 1 when it\n"
     "           is damaged\n"
     "  --to DIR  the backup directory (default backup.dir, ./data/backups)\n"
     "  --quiet   no progress lines\n",
     cmd_backup},
    {"restore", "restore a backup as the database",
     "usage: opsdb restore BACKUP [--db PATH] [--force] [--from DIR] [--quiet]\n\n"
     "Restores BACKUP — latest (the newest in DIR), a name from `opsdb backup list`, or a\n"
     "backup's .json or .db.zst file — as the database at --db (default db). The backup is\n"
     "decompressed into a temporary file beside PATH and checked whole (sha256, integrity\n"
     "check, rows per table against the manifest) before anything is replaced; then the\n"
     "database at PATH, if any, is kept aside as PATH.before-restore-<UTC time> (with its\n"
     "write-ahead log) and the restored file is renamed into place. `opsdb serve --db PATH`\n"
     "serves it at once.\n"
     "A database at PATH is replaced only with --force. A live database — one a process (a\n"
     "running opsdb serve) has open — is never replaced: stop the server first.\n"
     "  --from DIR  the backup directory (default backup.dir, ./data/backups)\n"
     "  --force     replace the database at PATH (it is kept aside)\n"
     "  --quiet     no progress lines\n",
     cmd_restore},
    {"alerts", "check alert rule files; list, acknowledge and reload a server's alerts",
     "usage: opsdb alerts check FILE...|defaults\n"
     "       opsdb alerts test TESTFILE...\n"
     "       opsdb alerts list|rules|reload [--server URL]\n"
     "       opsdb alerts ack ID [--by NAME] [--server URL]\n"
     "       opsdb alerts silence --matchers M [--for 2h] --by NAME [--comment TEXT]\n"
     "       opsdb alerts silences|expire ID [--server URL]\n"
     "       opsdb alerts backtest FILE... --from TIME --to TIME [--format table|json|csv]\n\n"
     "  check   reads rule files as the server would and prints each file's groups and rules,\n"
     "          or the first error with its file and line; exits 1 when any file is bad\n"
     "  test    runs rule unit tests: each test's input rows go into a fresh temporary\n"
     "          database, its rule files are replayed over them, and the alerts firing at each\n"
     "          eval_time are compared with the expected ones; prints each test's result and\n"
     "          exits 1 when any failed (the file format: docs/alerts.md, Rule unit tests)\n"
     "  defaults  prints the default rule set (alerting.default_rules), a rule file to copy\n"
     "  list    the pending, firing and acknowledged alerts of the server (JSON)\n"
     "  rules   the server's rule groups, each rule with its state and last evaluation\n"
     "  reload  makes the server read its rule files and receivers again (as SIGHUP does)\n"
     "  ack     acknowledges a firing alert by its id (from list): it stays active but is\n"
     "          marked acknowledged in alert_history\n"
     "  silence  suppresses the alerts whose labels match all of M (label matchers as in the\n"
     "          series API, e.g. host=db-1,severity=~warning|info) for --for: they are recorded\n"
     "          as suppressed and not notified; prints the silence's id\n"
     "  silences  lists the silences (active, pending, expired); expire ID ends one now\n"
     "  backtest  replays the rules of FILE over the stored data between --from and --to (epoch\n"
     "          seconds or RFC 3339; read from --db, nothing written): each group on its "
     "interval,\n"
     "          with for, hysteresis, n_of_m, the silences of that time, maintenance windows,\n"
     "          inhibition, flapping and escalation from --config, and the notifications\n"
     "          through --config's receivers and route (grouping, group_wait, group_interval,\n"
     "          repeat_interval) on the replay's clock, sending nothing; prints every transition\n"
     "          and every alert of each notification (its receiver, first|update|repeat|resolved,\n"
     "          group), or notify dropped with why (no receivers configured), then a count per\n"
     "          rule — the way to tune a threshold and a route\n"
     "  --server  the server's address (default: the configured listen address)\n"
     "  --token   the API token sent to the server (default: $OPSDB_TOKEN)\n"
     "Rule syntax: docs/alerts.md.\n",
     cmd_alerts},
    {"jobs",
     "list, run, cancel, pause and resume a server's scheduled jobs; ping as an external job",
     "usage: opsdb jobs list [--all] [--format table|json|csv] [--server URL]\n"
     "       opsdb jobs run|cancel|pause|resume NAME [--server URL]\n"
     "       opsdb jobs history NAME [--limit 20] [--server URL]\n"
     "       opsdb jobs ping NAME --start|--success|--fail [--exit-code N] [--run-id ID]\n"
     "                          [--body-file FILE|-] [--server URL]\n\n"
     "  list     every job: kind (builtin, command, external), schedule, status (ok, running,\n"
     "           failed, missed, paused, never), next and last run, failures in a row; --all\n"
     "           adds the jobs whose definitions were removed from the config (status\n"
     "           removed: never run, missed or alerted on; their history stays)\n"
     "  run      starts a builtin or command job now (409 while it runs and its overlap is skip)\n"
     "  cancel   stops the running run of a builtin or command job (409 when none runs): a\n"
     "           command's process group gets SIGTERM, a builtin stops after its current step;\n"
     "           the run is recorded as cancelled (not a failure, not retried)\n"
     "  pause    no runs and no missed pings until resume\n"
     "  history  the job's last runs (job_runs): start, end, status, exit code, output\n"
     "  ping     reports for an external job, as a cron line would to Healthchecks:\n"
     "           --start when it begins, --success or --fail when it ends; --run-id pairs\n"
     "           the two of one run; --body-file sends its log tail (the last 1 MiB; '-' is\n"
     "           stdin); a name not yet known creates the job (jobs.auto_create)\n"
     "  --server  the server's address (default: the configured listen address)\n"
     "  --token   the API token sent to the server (default: $OPSDB_TOKEN)\n"
     "Jobs, schedules and the jobs.definitions syntax: docs/jobs.md.\n",
     cmd_jobs},
    {"compact", "compact old metric chunks and compress event partitions now",
     "usage: opsdb compact [--older-than DURATION] [--quiet]\n\n"
     "Rewrites each past UTC day of system_metrics whose samples are all older than\n"
     "storage.compress_after (2h) from its chunk per ingestion request into one compressed\n"
     "chunk per series, a few hundred series per transaction, and packs the event partitions "
     "(api_usage, error_logs, ...) whose whole window is older\n"
     "than storage.compress_events_after (1d) into zstd column blocks, one partition per\n"
     "transaction. --older-than DURATION applies one age to both. Queries, views and the\n"
     "series API read them as before. The server does the same every\n"
     "storage.compact_interval; this command is for doing it now (after a bulk load, before a\n"
     "backup). Progress goes to stderr.\n",
     cmd_compact},
    {"optimize", "optimize the database file; --vacuum shrinks and converts an older one",
     "usage: opsdb optimize [--vacuum] [--quiet]\n\n"
     "Without a server on the database (--db): what the builtin job optimize does on a\n"
     "server (`opsdb jobs run optimize`) — refreshes the query planner's statistics, gives\n"
     "the free pages that dropped data left back to the file system, and truncates the\n"
     "write-ahead log — and prints the file's size before and after.\n"
     "Databases created by this opsdb give free pages back (auto_vacuum incremental); one\n"
     "created by an opsdb before it keeps them inside the file until --vacuum.\n"
     "  --vacuum  rewrites the whole database into a compact copy beside it, in the layout\n"
     "            that gives free pages back, then renames the copy over it (the database\n"
     "            is as it was until then). Needs free space for the copy, about the size\n"
     "            of the data, in the database's file system: stated before it starts, and\n"
     "            refused when there is not enough. Progress goes to stderr.\n"
     "  --quiet   no progress lines\n"
     "Refused while a process (a running opsdb serve) has the database open.\n",
     cmd_optimize},
    {"schema", "print the schema",
     "usage: opsdb schema [--markdown]\n\nPrints the tables and columns; --markdown prints the "
     "reference that is docs/schema.md.\n",
     cmd_schema},
    {"config", "print the configuration reference",
     "usage: opsdb config [--markdown]\n\nPrints every option with its default (docs/config.md).\n",
     cmd_config},
    {"version", "print the version", "usage: opsdb version\n", cmd_version},
    {"agent", "collect this host's metrics and send them to a server",
     "usage: opsdb agent --server URL [--token T] [--interval 10s] [--spool DIR]\n"
     "                   [--spool-max-bytes N] [--ca-file FILE] [--once]\n"
     "                   [--tail KIND:PATH]... [--no-host]\n\n"
     "Collects this host's metrics from /proc and /sys (cpu, memory, swap, load, disk I/O,\n"
     "filesystems, network, processes, uptime) every --interval and sends them as one NDJSON\n"
     "POST to URL/api/v1/ingest/system_metrics, with the host name as X-Opsdb-Source. While\n"
     "the server does not answer, batches are kept in the spool (written atomically; kept over\n"
     "a restart) and sent oldest first once it answers again, retrying with a backoff up to\n"
     "agent.retry_max; a batch the server refuses (4xx) is dropped with its reason logged.\n"
     "Runs until SIGINT or SIGTERM, then logs its counts (rows_sent=, spool_batches=, ...).\n"
     "Metric names and labels: docs/collection.md.\n"
     "  --server URL         the opsdb server (agent.server)\n"
     "  --token T            bearer token (agent.token; OPSDB_AGENT_TOKEN keeps it out of ps)\n"
     "  --interval D         time between collections, 1s or more (agent.interval, 10s)\n"
     "  --spool DIR          directory of the spool (agent.spool_dir, ./data/agent-spool)\n"
     "  --spool-max-bytes N  bound of the spool, e.g. 64MiB (agent.spool_max_bytes); past it\n"
     "                       the oldest batches are dropped\n"
     "  --ca-file FILE       CA certificates (PEM) an https:// server is verified against\n"
     "                       (agent.ca_file; default: the system's); verification is always on\n"
     "  --once               one collection (rates over one second), sent, then exit: 0 when\n"
     "                       the server took it, 1 when it was spooled or refused\n"
     "  --tail KIND:PATH     also ship a log file as it grows (agent.tail; repeatable): KIND\n"
     "                       nginx, nginx_timed, apache or access (rows of api_usage), json or\n"
     "                       plain (error_logs). Read every agent.tail_poll (1s), rotation and\n"
     "                       truncation followed, the offset saved once the rows are safe, so a\n"
     "                       restart neither repeats nor loses lines; a missing file is waited\n"
     "                       for. Its spool and offset: DIR/tail-<hash>/\n"
     "  --no-host            do not collect this host's metrics: ship only the --tail files\n"
     "                       (agent.host off)\n",
     cmd_agent},
    {"user", "add, list, disable and enable the users of the HTTP API",
     "usage: opsdb user add NAME --role admin|writer|reader [--password-stdin]\n"
     "       opsdb user passwd NAME [--remove]\n"
     "       opsdb user list [--format table|json|csv]\n"
     "       opsdb user disable|enable NAME\n\n"
     "Users of the HTTP API (table users); a request acts as the user of its token. Roles:\n"
     "admin (every route), writer (ingestion, job pings, heartbeats, acks and silences) and\n"
     "reader (views, series, SQL, /metrics, alerts); writer and reader do not include each\n"
     "other. A disabled user's tokens are refused at once, also by a running server.\n"
     "Changes are recorded in audit_log (docs/security.md).\n\n"
     "A password lets the user sign in to the dashboard (POST /api/v1/session); API clients\n"
     "use tokens. It is read from standard input, never from the command line: with\n"
     "--password-stdin, user add reads the first line of stdin; user passwd asks twice on a\n"
     "terminal and otherwise reads the first line. It has 8 to 1024 bytes and is stored as an\n"
     "argon2id hash only. passwd --remove takes the password away; changing or removing it\n"
     "ends the user's sessions opened with the old one.\n",
     cmd_user},
    {"token", "create, list and revoke API tokens",
     "usage: opsdb token create USER [--expires DURATION] [--tables T1,T2] [--description TEXT]\n"
     "       opsdb token list [USER] [--format table|json|csv]\n"
     "       opsdb token revoke ID\n\n"
     "  create   makes a token acting for USER with USER's role and prints it, alone on\n"
     "           standard output, this once: only a hash of it is kept\n"
     "           --expires     refused after this long (30d, 12h, 1w); default: never\n"
     "           --tables      writes only these tables (a writer's agent or log shipper);\n"
     "                         job_runs, silences, alert_history allow job pings, silences, acks\n"
     "           --description what it is for, shown by list\n"
     "  list     ids, users, roles, tables, state (active, expired, revoked, disabled),\n"
     "           expiry and last use; never a token\n"
     "  revoke   refuses the token from now on (a running server within a second)\n"
     "Clients send it as Authorization: Bearer TOKEN (also Token TOKEN, or Basic with the\n"
     "token as password); see docs/security.md.\n",
     cmd_token},
};

const struct command *cli_commands(size_t *count)
{
    *count = sizeof commands / sizeof commands[0];
    return commands;
}

static int usage(FILE *out)
{
    fprintf(out, "usage: opsdb COMMAND [options]   (opsdb COMMAND --help for each)\n\n"
                 "opsdb stores, checks and serves operational data: host metrics, API usage,\n"
                 "error logs, pipeline runs, handler metrics, alerts and jobs.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    return out == stdout ? 0 : 2;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0)
        return usage(stdout);
    if (strcmp(name, "help") == 0)
        return argc > 2 ? cli_help(argv[2]) : usage(stdout);
    if (strcmp(name, "--version") == 0)
        name = "version";
    const struct command *cmd = cli_command(name);
    if (!cmd) {
        fprintf(stderr, "opsdb: no command '%s'\n", name);
        return usage(stderr);
    }
    return cmd->run(argc - 1, argv + 1);
}
