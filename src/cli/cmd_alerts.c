/*
 * opsdb alerts: check rule files before they go live, and talk to a running server's alert
 * engine (the live state lives there): list the active alerts, acknowledge one, reload.
 */
#include "alert/alert.h"
#include "cli/cli.h"
#include "query/query.h"
#include "store/store.h"

#include <math.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check(int nfiles, char **files, const struct config *cfg)
{
    int failed = 0;
    for (int i = 0; i < nfiles; i++) {
        struct alert_rules rules;
        struct err e;
        if (alert_rules_load(&rules, files[i], "", cfg->alert_interval_ms, &e) != 0) {
            fprintf(stderr, "%s\n", e.msg);
            failed++;
            continue;
        }
        size_t groups = 0;
        for (size_t k = 0; k < rules.n; k++)
            groups += k == 0 || strcmp(rules.rules[k].group, rules.rules[k - 1].group) != 0;
        printf("%s: ok, %zu group%s, %zu rule%s\n", files[i], groups, groups == 1 ? "" : "s",
               rules.n, rules.n == 1 ? "" : "s");
        alert_rules_free(&rules);
    }
    return failed ? 1 : 0;
}

/* opsdb alerts test TESTFILE...: rule unit tests. */
static int unit_tests(int nfiles, char **files, const struct config *cfg)
{
    struct alert_test_report total = {0};
    int broken = 0;
    log_set_level(LOG_WARN); /* each test's database is new: its migration is no news */
    for (int i = 0; i < nfiles; i++) {
        struct alert_test_report r = {0};
        struct err e;
        if (alert_rules_test(files[i], cfg, stdout, &r, &e) != 0) {
            fflush(stdout);
            fprintf(stderr, "opsdb: %s\n", e.msg);
            broken++;
        }
        total.tests += r.tests;
        total.failed += r.failed;
        total.checks += r.checks;
    }
    printf("%zu test%s, %zu passed, %zu failed%s\n", total.tests, total.tests == 1 ? "" : "s",
           total.tests - total.failed, total.failed,
           broken ? " (and a file that could not be run)" : "");
    return total.failed || broken ? 1 : 0;
}

/* One request to the server; prints the answer; non-zero exit for a failure. */
static int call(const struct config *cfg, const char *server, const char *method, const char *path,
                const char *body)
{
    return cli_http_call(cfg, server, method, path, body, body ? strlen(body) : 0, NULL, NULL);
}

/* opsdb alerts silence --matchers M [--for 2h] --by NAME [--comment TEXT] */
static int silence(const struct config *cfg, const char *server, const char *matchers,
                   const char *duration, const char *by, const char *comment)
{
    if (!matchers || !*by)
        return cli_usage(cli_command("alerts"), "alerts silence needs --matchers and --by");
    json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "matchers", matchers, "duration", duration,
                             "created_by", by, "comment", comment);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        return cli_fail("out of memory (or text that is not UTF-8)");
    int rc = call(cfg, server, "POST", "/api/v1/silences", text);
    free(text);
    return rc;
}

/* ---- backtest ------------------------------------------------------------------------------ */

struct replay {
    struct store_result events;
    struct store_result summary; /* per rule: counts by kind of event */
};

static void put_text(struct store_result *res, struct value *v, const char *s)
{
    if (!s)
        return;
    v->type = VAL_TEXT;
    v->len = (uint32_t)strlen(s);
    v->s = arena_strndup(&res->arena, s, v->len);
}

static void count(struct replay *r, const char *rule, const char *what)
{
    static const char *const kinds[] = {"firing",        "suppressed",      "resolved",
                                        "notify firing", "notify resolved", "notify dropped",
                                        "escalated"};
    struct value *row = NULL;
    for (size_t i = 0; i < r->summary.nrows && !row; i++) {
        struct value *x = r->summary.values + i * r->summary.ncols;
        if (strcmp(x[0].s, rule) == 0)
            row = x;
    }
    if (!row) {
        row = store_result_add_row(&r->summary);
        put_text(&r->summary, &row[0], rule);
        for (size_t k = 1; k < r->summary.ncols; k++)
            row[k] = (struct value){.i = 0, .type = VAL_INT};
    }
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        if (strcmp(kinds[k], what) == 0)
            row[1 + k].i++;
}

static void on_event(void *arg, const struct alert_trace *t)
{
    struct replay *r = arg;
    struct value *row = store_result_add_row(&r->events);
    char when[40];
    time_format_rfc3339(t->ts_ms, when, sizeof when);
    put_text(&r->events, &row[0], when);
    put_text(&r->events, &row[1], t->what);
    put_text(&r->events, &row[2], t->rule ? t->rule : "");
    put_text(&r->events, &row[3], t->alert_id);
    if (!isnan(t->value))
        row[4] = (struct value){.d = t->value, .type = VAL_REAL};
    put_text(&r->events, &row[5], t->receiver);
    put_text(&r->events, &row[6], t->send);
    put_text(&r->events, &row[7], t->labels_json);
    put_text(&r->events, &row[8], t->group_key);
    put_text(&r->events, &row[9], t->note);
    count(r, t->rule ? t->rule : "", t->what);
}

/* opsdb alerts backtest FILE... --from T --to T: what the rules would have done. */
static int backtest(struct cli_common *c, int nfiles, char **files, const char *from,
                    const char *to, int fmt)
{
    int64_t from_ms, to_ms;
    if (!from || !to || !time_parse_point(from, &from_ms) || !time_parse_point(to, &to_ms))
        return cli_usage(cli_command("alerts"), "alerts backtest needs --from and --to (epoch "
                                                "seconds or RFC 3339)");
    struct config cfg;
    struct store *s = NULL;
    int rc = cli_open_store(c, &cfg, STORE_READONLY, &s);
    if (rc)
        return rc;
    char list[sizeof cfg.alert_rule_files] = "";
    for (int i = 0, len = 0; i < nfiles; i++) {
        char path[4096];
        if (!realpath(files[i], path) || strchr(path, ','))
            return store_close(&s), cli_fail("cannot read rule file %s", files[i]);
        len += snprintf(list + len, sizeof list - (size_t)len, "%s%s", i ? "," : "", path);
        if ((size_t)len >= sizeof list)
            return store_close(&s), cli_fail("too many rule files");
    }
    snprintf(cfg.alert_rule_files, sizeof cfg.alert_rule_files, "%s", list);
    snprintf(cfg.alert_default_rules, sizeof cfg.alert_default_rules, "off"); /* the files alone */
    struct replay r;
    store_result_init(&r.events);
    store_result_init(&r.summary);
    static const char *const ecols[] = {"time",     "event", "rule",   "alert_id", "value",
                                        "receiver", "send",  "labels", "group",    "note"};
    static const char *const scols[] = {"rule",     "fired",           "suppressed",
                                        "resolved", "notified_firing", "notified_resolved",
                                        "dropped",  "escalated"};
    store_result_set_columns(&r.events, 10, ecols);
    store_result_set_columns(&r.summary, 8, scols);
    struct alert_backtest_stats st = {0};
    struct err e;
    fprintf(stderr, "replaying %s .. %s\n", from, to);
    rc = alert_backtest(s, &cfg, from_ms, to_ms, on_event, &r, &st, &e);
    if (rc == 0) {
        cli_write_result(&r.events, fmt);
        if (fmt == FORMAT_TABLE)
            printf("\n");
        cli_write_result(&r.summary, fmt);
        fprintf(stderr, "%zu rules, %lld evaluations\n", st.rules, (long long)st.evaluations);
        size_t dropped = 0;
        for (size_t i = 0; i < r.summary.nrows; i++)
            dropped += (size_t)r.summary.values[i * r.summary.ncols + 6].i;
        if (dropped)
            fprintf(stderr,
                    "%zu notifications dropped, as the server would drop them (the note says "
                    "why: without receivers and a route in --config, every one)\n",
                    dropped);
    }
    store_result_release(&r.events);
    store_result_release(&r.summary);
    store_close(&s);
    return rc ? cli_fail("%s", e.msg) : 0;
}

int cmd_alerts(int argc, char **argv)
{
    struct cli_common c = {0};
    const char *server = NULL, *by = "", *matchers = NULL, *duration = "2h", *comment = "";
    const char *from = NULL, *to = NULL;
    int fmt = FORMAT_TABLE;
    int nargs = 0;
    char **args = calloc((size_t)argc + 1, sizeof *args);
    if (!args)
        return cli_fail("out of memory");
    int rc = 0;
    for (int i = 1; i < argc && rc == 0; i++) {
        int common = cli_common_flag(&c, argc, argv, &i);
        if (common < 0)
            rc = 2;
        else if (common == 1)
            continue;
        else if (strcmp(argv[i], "--server") == 0 && i + 1 < argc)
            server = argv[++i];
        else if (cli_token_flag(argc, argv, &i))
            continue;
        else if (strcmp(argv[i], "--by") == 0 && i + 1 < argc)
            by = argv[++i];
        else if (strcmp(argv[i], "--matchers") == 0 && i + 1 < argc)
            matchers = argv[++i];
        else if (strcmp(argv[i], "--for") == 0 && i + 1 < argc)
            duration = argv[++i];
        else if (strcmp(argv[i], "--comment") == 0 && i + 1 < argc)
            comment = argv[++i];
        else if (strcmp(argv[i], "--from") == 0 && i + 1 < argc)
            from = argv[++i];
        else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc)
            to = argv[++i];
        else if (strcmp(argv[i], "--format") == 0 && i + 1 < argc &&
                 (fmt = query_format_parse(argv[i + 1])) >= 0)
            i++;
        else if (argv[i][0] == '-')
            rc = cli_usage(cli_command("alerts"), "unknown flag '%s'", argv[i]);
        else
            args[nargs++] = argv[i];
    }
    if (rc == 0 && c.help)
        rc = -1;
    struct config cfg;
    if (rc == 0)
        rc = cli_load_config(&c, &cfg);
    if (rc == 0 && !server)
        server = cfg.listen;
    const char *sub = nargs ? args[0] : "";
    if (rc == 0 && strcmp(sub, "check") == 0) {
        rc = nargs < 2 ? cli_usage(cli_command("alerts"), "alerts check needs a rule file")
                       : check(nargs - 1, args + 1, &cfg);
    } else if (rc == 0 && strcmp(sub, "test") == 0) {
        rc = nargs < 2 ? cli_usage(cli_command("alerts"), "alerts test needs a test file")
                       : unit_tests(nargs - 1, args + 1, &cfg);
    } else if (rc == 0 && strcmp(sub, "backtest") == 0) {
        rc = nargs < 2 ? cli_usage(cli_command("alerts"), "alerts backtest needs a rule file")
                       : backtest(&c, nargs - 1, args + 1, from, to, fmt);
    } else if (rc == 0 && strcmp(sub, "defaults") == 0 && nargs == 1) {
        fputs(alert_default_rules(), stdout);
    } else if (rc == 0 && strcmp(sub, "list") == 0 && nargs == 1) {
        rc = call(&cfg, server, "GET", "/api/v1/alerts", NULL);
    } else if (rc == 0 && strcmp(sub, "rules") == 0 && nargs == 1) {
        rc = call(&cfg, server, "GET", "/api/v1/rules", NULL);
    } else if (rc == 0 && strcmp(sub, "reload") == 0 && nargs == 1) {
        rc = call(&cfg, server, "POST", "/api/v1/alerts/reload", "");
    } else if (rc == 0 && strcmp(sub, "silences") == 0 && nargs == 1) {
        rc = call(&cfg, server, "GET", "/api/v1/silences", NULL);
    } else if (rc == 0 && strcmp(sub, "silence") == 0 && nargs == 1) {
        rc = silence(&cfg, server, matchers, duration, by, comment);
    } else if (rc == 0 && strcmp(sub, "expire") == 0 && nargs == 2) {
        char path[300];
        if (strlen(args[1]) > 64 || strchr(args[1], '/') || strchr(args[1], '?')) {
            rc = cli_usage(cli_command("alerts"), "'%s' is not a silence id", args[1]);
        } else {
            snprintf(path, sizeof path, "/api/v1/silences/%s", args[1]);
            rc = call(&cfg, server, "DELETE", path, NULL);
        }
    } else if (rc == 0 && strcmp(sub, "ack") == 0 && nargs == 2) {
        char path[300], body[300];
        if (strlen(args[1]) > 128 || strchr(args[1], '/') || strchr(args[1], '?')) {
            rc = cli_usage(cli_command("alerts"), "'%s' is not an alert id", args[1]);
        } else {
            snprintf(path, sizeof path, "/api/v1/alerts/%s/ack", args[1]);
            snprintf(body, sizeof body, "{\"by\":\"%.*s\"}", (int)strcspn(by, "\"\\"), by);
            rc = call(&cfg, server, "POST", path, body);
        }
    } else if (rc == 0) {
        rc = cli_usage(cli_command("alerts"),
                       "expected check FILE..., test FILE..., defaults, list, "
                       "rules, "
                       "reload, ack ID, silence, silences or expire ID");
    }
    free(args);
    return rc == -1 ? cli_help("alerts") : rc;
}
