/*
 * opsdb token: API tokens, written to the database (--db). A new token is printed once, alone
 * on standard output (TOKEN=$(opsdb token create ci) keeps it), and never again: only a hash of
 * it is kept.
 */
#include "auth/auth.h"
#include "cli/cli.h"
#include "query/query.h"
#include "store/store.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

struct options {
    const char *expires, *tables, *description;
    int fmt;
};

static int create(struct cli_common *c, const char *user, const struct options *o)
{
    int64_t ms = 0;
    if (o->expires && (!time_parse_duration(o->expires, &ms) || ms <= 0))
        return cli_usage(cli_command("token"),
                         "--expires '%s' is not a duration like 30d, 12h or 1w", o->expires);
    struct config cfg;
    struct store *s;
    char actor[128], token[AUTH_TOKEN_SIZE], id[AUTH_TOKEN_ID_LEN + 1];
    struct auth_actor by;
    struct auth_target t;
    int rc = cli_open_admin(c, &cfg, STORE_READWRITE, &s, actor, sizeof actor, &by, &t);
    if (rc)
        return rc;
    struct auth_token_spec spec = {user, ms ? time_now_ms() + ms : 0, o->tables, o->description,
                                   NULL};
    struct err e;
    rc = auth_token_create(&t, &by, &spec, token, id, &e);
    store_close(&s);
    if (rc)
        return cli_fail("%s", e.msg);
    printf("%s\n", token);
    fflush(stdout);
    sodium_memzero(token, sizeof token);
    fprintf(stderr,
            "opsdb: token %s of user %s created%s%s; it is shown this once: keep it now "
            "(revoke it with opsdb token revoke %s)\n",
            id, user, o->tables ? ", writing only " : "", o->tables ? o->tables : "", id);
    return 0;
}

static int revoke(struct cli_common *c, const char *id)
{
    struct config cfg;
    struct store *s;
    char actor[128];
    struct auth_actor by;
    struct auth_target t;
    int rc = cli_open_admin(c, &cfg, STORE_EXISTING, &s, actor, sizeof actor, &by, &t);
    if (rc)
        return rc;
    struct err e;
    rc = auth_token_revoke(&t, &by, id, &e);
    store_close(&s);
    if (rc)
        return cli_fail("%s", e.msg);
    printf("token %.*s revoked\n", AUTH_TOKEN_ID_LEN, strncmp(id, "opsdb_", 6) ? id : id + 6);
    return 0;
}

int cmd_token(int argc, char **argv)
{
    const struct command *cmd = cli_command("token");
    struct cli_common c = {0};
    struct options o = {0};
    const char *format = "table";
    const struct cli_flag flags[] = {{"--expires", &o.expires},
                                     {"--tables", &o.tables},
                                     {"--description", &o.description},
                                     {"--format", &format}};
    char *args[2];
    int nargs;
    int rc = cli_parse(cmd, &c, flags, sizeof flags / sizeof flags[0], argc, argv, args, 2, &nargs);
    if (rc)
        return rc;
    if (c.help)
        return cli_help("token");
    if ((o.fmt = query_format_parse(format)) < 0)
        return cli_usage(cmd, "--format must be table, json or csv");
    const char *sub = nargs ? args[0] : "";
    if (strcmp(sub, "create") == 0 && nargs == 2)
        return create(&c, args[1], &o);
    if (strcmp(sub, "list") == 0)
        return cli_list(&c, auth_token_list, nargs == 2 ? args[1] : NULL, o.fmt);
    if (strcmp(sub, "revoke") == 0 && nargs == 2)
        return revoke(&c, args[1]);
    return cli_usage(cmd, "expected create USER, list [USER] or revoke ID");
}
