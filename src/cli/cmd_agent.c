/*
 * opsdb agent: collects this host's metrics every interval and ships the log files given with
 * --tail, sending both to a server and keeping what the server does not take in a spool
 * (src/agent/). Runs until SIGINT or SIGTERM, or for one collection with --once, and ends with
 * a line of counts (what was sent, spooled, dropped) that scripts and tests read.
 */
#include "agent/agent.h"
#include "cli/cli.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

/* The agent's own flags: each sets one option, so the config file and OPSDB_* variables can say
 * the same, with the usual precedence. */
static const struct {
    const char *flag;
    const char *option;
} flags[] = {
    {"--server", "agent.server"},
    {"--token", "agent.token"},
    {"--interval", "agent.interval"},
    {"--spool", "agent.spool_dir"},
    {"--spool-max-bytes", "agent.spool_max_bytes"},
    {"--ca-file", "agent.ca_file"},
};

/* Handles an agent flag at argv[*i]: 1 taken, 0 not one, 2 after printing a usage error. */
static int agent_flag(struct cli_common *c, int argc, char **argv, int *i)
{
    const struct command *cmd = cli_command("agent");
    for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++) {
        size_t n = strlen(flags[k].flag);
        const char *a = argv[*i];
        if (strncmp(a, flags[k].flag, n) != 0 || (a[n] != '\0' && a[n] != '='))
            continue;
        const char *v = a[n] == '=' ? a + n + 1 : *i + 1 < argc ? argv[++*i] : NULL;
        if (!v || !*v || strncmp(v, "--", 2) == 0) /* no value: the next flag follows */
            return cli_usage(cmd, "%s needs a value", flags[k].flag);
        struct config scratch; /* the value is checked here, so a bad one is a usage error */
        struct err e;
        config_defaults(&scratch);
        if (config_set(&scratch, flags[k].option, v, &e) != 0)
            return cli_usage(cmd, "%s %s: %s", flags[k].flag, v, e.msg);
        if (c->nsets >= CLI_MAX_SETS)
            return cli_usage(cmd, "too many options");
        snprintf(c->set_name[c->nsets], sizeof c->set_name[0], "%s", flags[k].option);
        c->set_value[c->nsets++] = v;
        return 1;
    }
    return 0;
}

/* --tail KIND:PATH, repeatable: the values are joined into the one option agent.tail, which they
 * replace (a flag overrides the config file, as the other flags do). 1 taken, 0 not one, 2
 * after printing a usage error. */
static int tail_flag(struct cli_common *c, int argc, char **argv, int *i, char *tails, size_t size)
{
    const struct command *cmd = cli_command("agent");
    const char *a = argv[*i];
    if (strcmp(a, "--tail") != 0 && strncmp(a, "--tail=", 7) != 0)
        return 0;
    const char *v = a[6] == '=' ? a + 7 : *i + 1 < argc ? argv[++*i] : NULL;
    if (!v || !*v || strncmp(v, "--", 2) == 0)
        return cli_usage(cmd, "--tail needs a value: KIND:PATH");
    if (strchr(v, ','))
        return cli_usage(cmd, "--tail %s: a path with a comma cannot be tailed", v);
    size_t len = strlen(tails);
    if ((size_t)snprintf(tails + len, size - len, "%s%s", len ? "," : "", v) >= size - len)
        return cli_usage(cmd, "--tail: the files named are longer than %zu bytes in all", size - 1);
    if (len == 0) { /* the first --tail: one set, whose value is the whole list */
        if (c->nsets >= CLI_MAX_SETS)
            return cli_usage(cmd, "too many options");
        snprintf(c->set_name[c->nsets], sizeof c->set_name[0], "agent.tail");
        c->set_value[c->nsets++] = tails;
    }
    return 1;
}

/* Splits agent.tail (in place) into specs and checks each: 0, or the exit status after the
 * message (2: a bad spec; 1: a file that exists but cannot be read). */
static int split_tails(const struct command *cmd, struct config *cfg, const char **specs, size_t *n)
{
    *n = 0;
    char *save = NULL;
    for (char *p = strtok_r(cfg->agent_tail, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        while (*p == ' ' || *p == '\t')
            p++;
        size_t len = strlen(p);
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            p[--len] = '\0';
        if (!*p)
            continue;
        if (*n >= AGENT_TAILS_MAX)
            return cli_usage(cmd, "more than %d files to tail", AGENT_TAILS_MAX);
        for (size_t k = 0; k < *n; k++)
            if (strcmp(specs[k], p) == 0)
                return cli_usage(cmd, "--tail %s is given twice", p);
        struct err e;
        int rc = agent_tail_check(p, cfg, &e);
        if (rc == E_INVALID)
            return cli_usage(cmd, "%s", e.msg);
        if (rc != 0)
            return cli_fail("%s", e.msg);
        specs[(*n)++] = p;
    }
    return 0;
}

static void print_summary(const struct agent_stats *st, size_t ntails)
{
    const struct ship_stats *s = &st->ship, *t = &st->tail_ship;
    log_info("agent: stopped: collections=%" PRIu64 " rows_collected=%" PRIu64 " rows_sent=%" PRIu64
             " batches_sent=%" PRIu64 " batches_replayed=%" PRIu64 " batches_spooled=%" PRIu64
             " batches_refused=%" PRIu64 " rows_refused=%" PRIu64 " batches_dropped=%" PRIu64
             " rows_dropped=%" PRIu64 " spool_batches=%" PRIu64 " spool_bytes=%" PRIu64
             " tails=%zu tail_lines=%" PRIu64 " tail_lines_bad=%" PRIu64 " tail_rows=%" PRIu64
             " tail_rows_sent=%" PRIu64 " tail_batches_spooled=%" PRIu64
             " tail_rows_refused=%" PRIu64 " tail_rows_dropped=%" PRIu64
             " tail_spool_batches=%" PRIu64,
             st->collections, st->rows_collected, s->rows_sent, s->batches_sent,
             s->batches_replayed, s->batches_spooled, s->batches_refused, s->rows_refused,
             s->batches_dropped, s->rows_dropped, s->spool_batches, s->spool_bytes, ntails,
             st->tail_lines, st->tail_lines_bad, st->tail_rows, t->rows_sent, t->batches_spooled,
             t->rows_refused, t->rows_dropped, t->spool_batches);
}

int cmd_agent(int argc, char **argv)
{
    const struct command *cmd = cli_command("agent");
    struct cli_common c = {0};
    bool once = false;
    char tails[sizeof((struct config *)0)->agent_tail]; /* --tail values, joined */
    tails[0] = '\0';
    for (int i = 1; i < argc; i++) {
        /* the agent's flags first: its --ca-file is agent.ca_file, not the CLI's ca_file */
        int rc = agent_flag(&c, argc, argv, &i);
        if (rc == 0)
            rc = tail_flag(&c, argc, argv, &i, tails, sizeof tails);
        if (rc == 2)
            return 2;
        if (rc == 1)
            continue;
        if ((rc = cli_common_flag(&c, argc, argv, &i)) < 0)
            return 2;
        if (rc == 1)
            continue;
        if (strcmp(argv[i], "--once") == 0)
            once = true;
        else if (strcmp(argv[i], "--no-host") == 0) {
            if (c.nsets >= CLI_MAX_SETS)
                return cli_usage(cmd, "too many options");
            snprintf(c.set_name[c.nsets], sizeof c.set_name[0], "agent.host");
            c.set_value[c.nsets++] = "off";
        } else
            return cli_usage(cmd, "unexpected argument '%s'", argv[i]);
    }
    if (c.help)
        return cli_help("agent");
    struct config cfg;
    int rc = cli_load_config(&c, &cfg);
    if (rc)
        return rc;
    if (!cfg.agent_server[0])
        return cli_usage(cmd, "no server: give --server URL (or agent.server in the config)");
    const char *specs[AGENT_TAILS_MAX];
    size_t ntails;
    if ((rc = split_tails(cmd, &cfg, specs, &ntails)) != 0)
        return rc;
    bool host = strcmp(cfg.agent_host, "on") == 0;
    if (!host && ntails == 0)
        return cli_usage(cmd, "nothing to do: --no-host (agent.host off) and no --tail");
    if (once && (!host || ntails))
        return cli_usage(cmd, "--once sends one collection of this host; it does not take "
                              "--tail or --no-host");
    struct agent_opts o = {
        .ship = {.server = cfg.agent_server,
                 .token = cfg.agent_token,
                 .spool_dir = cfg.agent_spool_dir,
                 .spool_max_bytes = cfg.agent_spool_max_bytes,
                 .retry_max_ms = cfg.agent_retry_max_ms,
                 .timeout_ms = cfg.agent_timeout_ms,
                 .ca_file = cfg.agent_ca_file},
        .interval_ms = cfg.agent_interval_ms,
        .once = once,
        .host = host,
        .tails = specs,
        .ntails = ntails,
        .tail_poll_ms = cfg.agent_tail_poll_ms,
        .cfg = &cfg,
    };
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigprocmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct agent_stats st;
    struct err e;
    rc = agent_run(&o, &stop, &st, &e);
    if (rc == 0 || st.collections)
        print_summary(&st, ntails);
    if (rc == E_INVALID)
        return 1; /* the shipper logged the server's reason */
    return rc ? cli_fail("%s", e.msg) : 0;
}
