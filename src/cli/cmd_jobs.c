/*
 * opsdb jobs: a running server's scheduled jobs — list them, run one now or cancel its run, pause
 * and resume,
 * show a job's runs, and ping as an external job does (the way a cron line reports to
 * Healthchecks with curl).
 */
#include "cli/cli.h"
#include "query/query.h"
#include "store/store.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PING_BODY_MAX (1 << 20)

static bool name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 128)
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("_.-", *p)))
            return false;
    return true;
}

static void put_json(struct store_result *res, struct value *v, json_t *j)
{
    char num[32];
    const char *s = NULL;
    if (json_is_string(j))
        s = json_string_value(j);
    else if (json_is_integer(j))
        s = (snprintf(num, sizeof num, "%lld", (long long)json_integer_value(j)), num);
    else if (json_is_boolean(j))
        s = json_is_true(j) ? "yes" : "no";
    if (!s)
        return;
    v->type = VAL_TEXT;
    v->len = (uint32_t)strlen(s);
    v->s = arena_strndup(&res->arena, s, v->len);
}

/* The answer of GET /api/v1/jobs (with removed jobs when all) as a table (or as it came, for
 * --format json). */
static int list(const struct config *cfg, const char *server, int fmt, bool all)
{
    struct buf answer;
    buf_init(&answer, 64 << 20);
    int rc = cli_http_call(cfg, server, "GET", all ? "/api/v1/jobs?all=true" : "/api/v1/jobs", NULL,
                           0, NULL, &answer);
    if (rc == 0 && fmt == FORMAT_JSON)
        printf("%.*s\n", (int)answer.len, answer.data ? answer.data : "");
    if (rc || fmt == FORMAT_JSON) {
        buf_release(&answer);
        return rc;
    }
    json_t *doc = json_loadb(answer.data ? answer.data : "", answer.len, 0, NULL);
    buf_release(&answer);
    json_t *jobs = json_object_get(doc, "jobs");
    if (!json_is_array(jobs)) {
        json_decref(doc);
        return cli_fail("the server's answer has no job list");
    }
    static const char *const cols[] = {
        "name", "kind", "schedule", "status", "next_run_at", "last_run_at", "consecutive_failures"};
    struct store_result res;
    store_result_init(&res);
    store_result_set_columns(&res, 7, cols);
    size_t i;
    json_t *x;
    json_array_foreach(jobs, i, x)
    {
        struct value *row = store_result_add_row(&res);
        for (size_t c = 0; c < 7; c++)
            put_json(&res, &row[c], json_object_get(x, cols[c]));
    }
    cli_write_result(&res, fmt);
    store_result_release(&res);
    json_decref(doc);
    return 0;
}

/* The body of a ping: a file's or stdin's last PING_BODY_MAX bytes. */
static int read_body(const char *path, struct buf *out)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f)
        return cli_fail("cannot read %s: %s", path, strerror(errno));
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        buf_append(out, chunk, n);
        if (out->len > 2 * PING_BODY_MAX) { /* keep the tail */
            memmove(out->data, out->data + out->len - PING_BODY_MAX, PING_BODY_MAX);
            out->len = PING_BODY_MAX;
        }
    }
    if (out->len > PING_BODY_MAX) {
        memmove(out->data, out->data + out->len - PING_BODY_MAX, PING_BODY_MAX);
        out->len = PING_BODY_MAX;
    }
    if (f != stdin)
        fclose(f);
    return 0;
}

int cmd_jobs(int argc, char **argv)
{
    struct cli_common c = {0};
    const char *server = NULL, *kind = NULL, *exit_code = NULL, *run_id = NULL, *body = NULL;
    const char *limit = "20";
    int fmt = FORMAT_TABLE, nargs = 0;
    bool all = false;
    char *args[3] = {0};
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
        else if (strcmp(argv[i], "--start") == 0 || strcmp(argv[i], "--success") == 0 ||
                 strcmp(argv[i], "--fail") == 0) {
            if (kind)
                rc = cli_usage(cli_command("jobs"), "give one of --start, --success or --fail");
            kind = argv[i] + 2;
        } else if (strcmp(argv[i], "--exit-code") == 0 && i + 1 < argc)
            exit_code = argv[++i];
        else if (strcmp(argv[i], "--run-id") == 0 && i + 1 < argc)
            run_id = argv[++i];
        else if (strcmp(argv[i], "--body-file") == 0 && i + 1 < argc)
            body = argv[++i];
        else if (strcmp(argv[i], "--all") == 0)
            all = true;
        else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc)
            limit = argv[++i];
        else if (strcmp(argv[i], "--format") == 0 && i + 1 < argc &&
                 (fmt = query_format_parse(argv[i + 1])) >= 0)
            i++;
        else if (argv[i][0] == '-' && strcmp(argv[i], "-") != 0)
            rc = cli_usage(cli_command("jobs"), "unknown flag '%s'", argv[i]);
        else if (nargs < 3)
            args[nargs++] = argv[i];
        else
            rc = cli_usage(cli_command("jobs"), "too many arguments");
    }
    if (rc == 0 && c.help)
        return cli_help("jobs");
    struct config cfg;
    if (rc == 0)
        rc = cli_load_config(&c, &cfg);
    if (rc)
        return rc;
    if (!server)
        server = cfg.listen;
    const char *sub = nargs ? args[0] : "";
    if (strcmp(sub, "list") == 0 && nargs == 1)
        return list(&cfg, server, fmt, all);
    if (all)
        return cli_usage(cli_command("jobs"), "--all is an option of jobs list");
    bool named = strcmp(sub, "run") == 0 || strcmp(sub, "cancel") == 0 ||
                 strcmp(sub, "pause") == 0 || strcmp(sub, "resume") == 0 ||
                 strcmp(sub, "history") == 0 || strcmp(sub, "ping") == 0;
    if (!named)
        return cli_usage(cli_command("jobs"), "expected list, run NAME, cancel NAME, pause NAME, "
                                              "resume NAME, history NAME or ping NAME");
    if (nargs != 2)
        return cli_usage(cli_command("jobs"), "jobs %s needs a job name", sub);
    if (!name_ok(args[1]))
        return cli_usage(cli_command("jobs"),
                         "'%s' is not a job name (1 to 128 letters, digits, _ . or -)", args[1]);
    char path[512];
    if (strcmp(sub, "history") == 0) {
        char *end;
        long n = strtol(limit, &end, 10);
        if (!*limit || *end || n < 1 || n > 1000)
            return cli_usage(cli_command("jobs"), "--limit: expected 1 to 1000");
        snprintf(path, sizeof path, "/api/v1/jobs/%s/history?limit=%ld", args[1], n);
        return cli_http_call(&cfg, server, "GET", path, NULL, 0, NULL, NULL);
    }
    if (strcmp(sub, "ping") != 0) {
        snprintf(path, sizeof path, "/api/v1/jobs/%s/%s", args[1], sub);
        return cli_http_call(&cfg, server, "POST", path, "", 0, NULL, NULL);
    }
    if (!kind)
        return cli_usage(cli_command("jobs"), "jobs ping needs --start, --success or --fail");
    int len = snprintf(path, sizeof path, "/api/v1/jobs/%s/%s", args[1], kind);
    char sep = '?';
    if (exit_code) {
        char *end;
        long v = strtol(exit_code, &end, 10);
        if (!*exit_code || *end || v < -255 || v > 255)
            return cli_usage(cli_command("jobs"), "--exit-code: expected -255 to 255");
        len += snprintf(path + len, sizeof path - (size_t)len, "%cexit_code=%ld", sep, v);
        sep = '&';
    }
    if (run_id) {
        if (!name_ok(run_id) || strlen(run_id) > 64)
            return cli_usage(cli_command("jobs"), "--run-id: 1 to 64 letters, digits, _ . or -");
        snprintf(path + len, sizeof path - (size_t)len, "%crun_id=%s", sep, run_id);
    }
    struct buf text;
    buf_init(&text, 4 * PING_BODY_MAX);
    rc = body ? read_body(body, &text) : 0;
    if (rc == 0)
        rc = cli_http_call(&cfg, server, "POST", path, text.data ? text.data : "", text.len,
                           "text/plain", NULL);
    buf_release(&text);
    return rc;
}
