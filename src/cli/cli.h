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
/* A command's own flag that takes a value (--name VALUE or --name=VALUE). */
struct cli_flag {
    const char *name;
    const char **value; /* set to the value, borrowed from argv */
};
/* Parses argv[1..argc): common flags into c, the command's flags into their values, and the
 * other arguments into args (at most max; *nargs gets how many). Returns 0, or 2 after printing
 * a usage error (an unknown flag, a flag without its value, too many arguments). */
int cli_parse(const struct command *cmd, struct cli_common *c, const struct cli_flag *flags,
              size_t nflags, int argc, char **argv, char **args, int max, int *nargs);
/* Builds the configuration; prints the error and returns non-zero on failure. */
int cli_load_config(struct cli_common *c, struct config *cfg);
struct store;
struct store_result;
/* Builds the configuration and opens the store in mode (an enum store_mode); prints the error
 * and returns non-zero on failure. The caller closes *s with store_close(). */
int cli_open_store(struct cli_common *c, struct config *cfg, int mode, struct store **s);
struct auth_actor;
struct auth_target;
/* Opens the store in mode (an enum store_mode) for a change to users or tokens made by this
 * CLI user: by (its actor in actor, at least 128 bytes, "cli:<system user>") and t are filled
 * for auth/'s functions. Prints the error and returns non-zero on failure. */
int cli_open_admin(struct cli_common *c, struct config *cfg, int mode, struct store **s,
                   char *actor, size_t size, struct auth_actor *by, struct auth_target *t);
/* A listing read from the database into res (arg: the command's filter, may be NULL). */
typedef int (*cli_list_fn)(struct store *s, const char *arg, struct store_result *res,
                           struct err *e);
/* Opens the store read-only, runs fn and prints its rows in format fmt (an enum
 * query_format); returns the exit status. */
int cli_list(struct cli_common *c, cli_list_fn fn, const char *arg, int fmt);
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
/* The variable whose token cli_http_call sends (Authorization: Bearer) when it is set: the
 * commands' --token flag sets it too, so that the token stays out of ps when it comes from the
 * environment and one code path sends it either way. */
#define CLI_TOKEN_ENV "OPSDB_TOKEN"
/* Handles --token T at argv[*i] (advancing *i): sets CLI_TOKEN_ENV; 1 taken, 0 not it. */
int cli_token_flag(int argc, char **argv, int *i);

/* Progress of a long step on stderr ("backup: compressing 40% (1.2 of 3.0 GB)"): a line a
 * step, updated in place on a terminal and every 5 s otherwise. Zero-initialise with what (the
 * command's name); cli_progress_step is a backup_progress (it never stops the work). */
struct cli_progress {
    const char *what;
    bool quiet;
    char step[32];
    double last_s; /* CLOCK_MONOTONIC seconds of the last line */
    bool open;     /* a terminal line waits for its end */
};
int cli_progress_step(void *arg, const char *step, int64_t done, int64_t total);
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
int cmd_optimize(int argc, char **argv);
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
int cmd_user(int argc, char **argv);
int cmd_token(int argc, char **argv);

#define OPSDB_VERSION "0.1.0"

#endif
