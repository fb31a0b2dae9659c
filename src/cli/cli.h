/*
 * cli: one file per command. Each command parses its own flags and calls the subsystems; the
 * table in main.c lists them.
 */
#ifndef OPSDB_CLI_H
#define OPSDB_CLI_H

#include "core/core.h"

struct command {
    const char *name;
    const char *summary;
    const char *usage; /* full --help text */
    int (*run)(int argc, char **argv);
};

const struct command *cli_commands(size_t *count);

/* Flags every command takes: --db, --config, --set name=value (repeatable), --help. The
 * configuration is built as: defaults, the YAML file, then these flags, then OPSDB_* variables. */
#define CLI_MAX_SETS 64
struct cli_common {
    const char *config_path;
    size_t nsets;
    char set_name[CLI_MAX_SETS][96]; /* fixed: nothing to free on any exit path */
    const char *set_value[CLI_MAX_SETS];
    bool help;
};

/* Handles a common flag at argv[*i] (advancing *i past its value); returns 1 if it was one, 0 if
 * not, -1 (after printing why) if it was malformed. */
int cli_common_flag(struct cli_common *c, int argc, char **argv, int *i);
/* Builds the configuration; prints the error and returns non-zero on failure. */
int cli_load_config(struct cli_common *c, struct config *cfg);
struct store;
/* Builds the configuration and opens the store in mode (an enum store_mode); prints the error
 * and returns non-zero on failure. The caller closes *s with store_close(). */
int cli_open_store(struct cli_common *c, struct config *cfg, int mode, struct store **s);
/* Prints "opsdb: <message>" to stderr; returns 1 (the exit code for runtime failures). */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints the usage error and the hint to --help; returns 2. */
int cli_usage(const struct command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const struct command *cli_command(const char *name);
/* Prints the command's --help text; returns 0. */
int cli_help(const char *name);
/* Writes a buffer to stdout. */
void cli_write(const struct buf *b);
struct store_result;
/* Writes a result to stdout as a table, JSON or CSV (an enum query_format). */
void cli_write_result(const struct store_result *res, int format);
/* One request to a running server (server: host:port or a URL; host:port is https:// when cfg
 * serves HTTPS (tls.cert), else http://; body may be NULL; content_type NULL: JSON). An https://
 * server's certificate is verified against cfg->ca_file (--ca-file; "": the system's CAs). The
 * answer's body goes to answer (when not NULL) or is printed; no answer or a non-2xx one is a
 * message on stderr and exit status 1 (returned). */
int cli_http_call(const struct config *cfg, const char *server, const char *method,
                  const char *path, const char *body, size_t body_len, const char *content_type,
                  struct buf *answer);

/* Progress of a long step on stderr ("backup: compressing 40% (1.2 of 3.0 GB)"): a line a
 * step, updated in place on a terminal and every 5 s otherwise. Zero-initialise with what (the
 * command's name); cli_progress_step is a backup_progress. */
struct cli_progress {
    const char *what;
    bool quiet;
    char step[32];
    double last_s; /* CLOCK_MONOTONIC seconds of the last line */
    bool open;     /* a terminal line waits for its end */
};
void cli_progress_step(void *arg, const char *step, int64_t done, int64_t total);
/* Ends the last line. */
void cli_progress_end(struct cli_progress *p);

int cmd_init(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_ingest(int argc, char **argv);
int cmd_query(int argc, char **argv);
int cmd_view(int argc, char **argv);
int cmd_series(int argc, char **argv);
int cmd_retention(int argc, char **argv);
int cmd_compact(int argc, char **argv);
int cmd_archive(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_alerts(int argc, char **argv);
int cmd_jobs(int argc, char **argv);
int cmd_partitions(int argc, char **argv);
int cmd_schema(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_version(int argc, char **argv);
int cmd_agent(int argc, char **argv);

#define OPSDB_VERSION "0.1.0"

#endif
