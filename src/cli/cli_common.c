/*
 * What every command shares: the common flags, building the configuration in its precedence
 * order, and the shape of error messages and exit codes (1 runtime failure, 2 usage error).
 */
#include "auth/auth.h"
#include "cli/cli.h"
#include "query/query.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "opsdb: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 1;
}

int cli_usage(const struct command *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "opsdb %s: ", cmd ? cmd->name : "");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nrun 'opsdb %s --help' for usage\n", cmd ? cmd->name : "");
    va_end(ap);
    return 2;
}

static int add_set(struct cli_common *c, const char *name, size_t name_len, const char *value)
{
    if (c->nsets >= CLI_MAX_SETS)
        return cli_fail("too many --set flags (at most %d)", CLI_MAX_SETS);
    if (name_len >= sizeof c->set_name[0])
        return cli_fail("option name '%.*s...' is too long", 40, name);
    snprintf(c->set_name[c->nsets], sizeof c->set_name[0], "%.*s", (int)name_len, name);
    c->set_value[c->nsets++] = value;
    return 0;
}

int cli_common_flag(struct cli_common *c, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    static const char *const shorthands[] = {"--db",      "db",      "--listen", "listen",
                                             "--ca-file", "ca_file", NULL};
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
        c->help = true;
        return 1;
    }
    for (int k = 0; shorthands[k]; k += 2) {
        size_t n = strlen(shorthands[k]);
        if (strncmp(a, shorthands[k], n) == 0 && (a[n] == '\0' || a[n] == '=')) {
            const char *v = a[n] == '=' ? a + n + 1 : (*i + 1 < argc ? argv[++*i] : NULL);
            if (!v)
                return cli_fail("%s needs a value", shorthands[k]), -1;
            return add_set(c, shorthands[k + 1], strlen(shorthands[k + 1]), v) == 0 ? 1 : -1;
        }
    }
    if (strcmp(a, "--config") == 0 || strncmp(a, "--config=", 9) == 0) {
        const char *v = a[8] == '=' ? a + 9 : (*i + 1 < argc ? argv[++*i] : NULL);
        if (!v)
            return cli_fail("--config needs a file"), -1;
        c->config_path = v;
        return 1;
    }
    if (strcmp(a, "--set") == 0) {
        const char *v = *i + 1 < argc ? argv[++*i] : NULL;
        const char *eq = v ? strchr(v, '=') : NULL;
        if (!eq || eq == v)
            return cli_fail("--set needs name=value, e.g. --set query.timeout=10s"), -1;
        return add_set(c, v, (size_t)(eq - v), eq + 1) == 0 ? 1 : -1;
    }
    return 0;
}

/* Handles argv[*i] when it is one of flags: 1 taken, 0 not one, -1 without its value. */
static int own_flag(const struct cli_flag *flags, size_t nflags, int argc, char **argv, int *i)
{
    for (size_t k = 0; k < nflags; k++) {
        size_t n = strlen(flags[k].name);
        const char *a = argv[*i];
        if (strncmp(a, flags[k].name, n) != 0 || (a[n] != '\0' && a[n] != '='))
            continue;
        const char *v = a[n] == '=' ? a + n + 1 : *i + 1 < argc ? argv[++*i] : NULL;
        if (!v)
            return -1;
        *flags[k].value = v;
        return 1;
    }
    return 0;
}

int cli_parse(const struct command *cmd, struct cli_common *c, const struct cli_flag *flags,
              size_t nflags, int argc, char **argv, char **args, int max, int *nargs)
{
    *nargs = 0;
    for (int i = 1; i < argc; i++) {
        int rc = cli_common_flag(c, argc, argv, &i);
        if (rc < 0)
            return 2;
        if (rc == 1)
            continue;
        const char *a = argv[i];
        rc = own_flag(flags, nflags, argc, argv, &i);
        if (rc < 0)
            return cli_usage(cmd, "%s needs a value", a);
        if (rc == 1)
            continue;
        if (a[0] == '-' && a[1])
            return cli_usage(cmd, "unknown flag '%s'", a);
        if (*nargs == max)
            return cli_usage(cmd, "unexpected argument '%s'", a);
        args[(*nargs)++] = argv[i];
    }
    return 0;
}

int cli_load_config(struct cli_common *c, struct config *cfg)
{
    struct err e;
    config_defaults(cfg);
    if (c->config_path && config_load_file(cfg, c->config_path, &e) != 0)
        return cli_fail("%s", e.msg);
    for (size_t i = 0; i < c->nsets; i++)
        if (config_set(cfg, c->set_name[i], c->set_value[i], &e) != 0)
            return cli_fail("%s", e.msg);
    if (config_apply_env(cfg, &e) != 0)
        return cli_fail("%s", e.msg);
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    for (int l = 0; l < 4; l++)
        if (strcmp(cfg->log_level, levels[l]) == 0)
            log_set_level((enum log_level)l);
    return 0;
}

int cli_open_store(struct cli_common *c, struct config *cfg, int mode, struct store **s)
{
    int rc = cli_load_config(c, cfg);
    if (rc)
        return rc;
    struct err e;
    if (store_open(s, cfg, (enum store_mode)mode, &e) != 0)
        return cli_fail("%s", e.msg);
    return 0;
}

int cli_open_admin(struct cli_common *c, struct config *cfg, int mode, struct store **s,
                   char *actor, size_t size, struct auth_actor *by, struct auth_target *t)
{
    int rc = cli_open_store(c, cfg, mode, s);
    if (rc)
        return rc;
    auth_cli_actor(actor, size);
    *by = (struct auth_actor){actor, NULL, "cli"};
    *t = (struct auth_target){*s, NULL};
    return 0;
}

int cli_list(struct cli_common *c, cli_list_fn fn, const char *arg, int fmt)
{
    struct config cfg;
    struct store *s;
    int rc = cli_open_store(c, &cfg, STORE_READONLY, &s);
    if (rc)
        return rc;
    struct store_result r;
    struct err e;
    rc = fn(s, arg, &r, &e);
    if (rc == 0)
        cli_write_result(&r, fmt);
    store_result_release(&r);
    store_close(&s);
    return rc ? cli_fail("%s", e.msg) : 0;
}

void cli_write(const struct buf *b)
{
    if (b->len && fwrite(b->data, 1, b->len, stdout) != b->len)
        perror("opsdb: writing output");
}

const struct command *cli_command(const char *name)
{
    size_t n;
    const struct command *cmds = cli_commands(&n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(cmds[i].name, name) == 0)
            return &cmds[i];
    return NULL;
}

int cli_help(const char *name)
{
    const struct command *c = cli_command(name);
    if (!c)
        return cli_fail("no command '%s' (run 'opsdb --help')", name);
    printf("%s", c->usage);
    printf("\nCommon options:\n"
           "  --db PATH          database file (default ./data/operational_data.db)\n"
           "  --config FILE      YAML configuration file (see docs/config.md)\n"
           "  --set NAME=VALUE   set one configuration option, e.g. --set query.timeout=10s\n"
           "  --ca-file FILE     CA certificates (PEM) an https:// --server is verified against\n"
           "                     (ca_file; default: the system's CAs)\n"
           "  --help             this help\n"
           "Environment variables OPSDB_<OPTION> (e.g. OPSDB_DB) override flags and file.\n");
    return 0;
}

void cli_write_result(const struct store_result *res, int format)
{
    struct buf out;
    buf_init(&out, (size_t)1 << 30);
    if (format == FORMAT_JSON) {
        query_write_json(res, NULL, &out);
        buf_putc(&out, '\n');
    } else if (format == FORMAT_CSV) {
        query_write_csv(res, &out);
    } else {
        query_write_table(res, &out);
    }
    cli_write(&out);
    buf_release(&out);
}

static double monotonic_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int cli_progress_step(void *arg, const char *step, int64_t done, int64_t total)
{
    struct cli_progress *p = arg;
    if (p->quiet)
        return 0;
    bool tty = isatty(STDERR_FILENO), same = strcmp(p->step, step) == 0;
    double now = monotonic_s();
    if (same && now - p->last_s < (tty ? 0.5 : 5.0))
        return 0;
    if (!same && p->open)
        fputc('\n', stderr);
    snprintf(p->step, sizeof p->step, "%s", step);
    p->last_s = now;
    if (strcmp(step, "counting") == 0 || strcmp(step, "checking") == 0)
        fprintf(stderr, "%s%s: %s%s", tty ? "\r" : "", p->what, step, tty ? "" : "\n");
    else if (total > 0)
        fprintf(stderr, "%s%s: %s %.0f%% (%.1f of %.1f MB)%s", tty ? "\r" : "", p->what, step,
                100.0 * (double)done / (double)total, (double)done / 1e6, (double)total / 1e6,
                tty ? "" : "\n");
    else
        fprintf(stderr, "%s%s: %s %.1f MB%s", tty ? "\r" : "", p->what, step, (double)done / 1e6,
                tty ? "" : "\n");
    p->open = tty;
    return 0;
}

void cli_progress_end(struct cli_progress *p)
{
    if (p->open)
        fputc('\n', stderr);
    p->open = false;
}
