/* opsdb user: the users of the HTTP API and their roles, written to the database (--db). */
#include "auth/auth.h"
#include "cli/cli.h"
#include "query/query.h"
#include "store/store.h"

#include <stdio.h>
#include <string.h>

/* add, disable, enable: one change with its audit row. */
static int change(struct cli_common *c, const char *sub, const char *name, const char *role)
{
    struct config cfg;
    struct store *s;
    char actor[128];
    struct auth_actor by;
    struct auth_target t;
    int rc = cli_open_admin(c, &cfg, STORE_READWRITE, &s, actor, sizeof actor, &by, &t);
    if (rc)
        return rc;
    struct err e;
    if (strcmp(sub, "add") == 0)
        rc = auth_user_add(&t, &by, name, role, &e);
    else
        rc = auth_user_set_disabled(&t, &by, name, strcmp(sub, "disable") == 0, &e);
    if (rc == 0 && strcmp(sub, "add") == 0)
        printf("user %s added with role %s; create a token with: opsdb token create %s\n", name,
               role, name);
    else if (rc == 0)
        printf("user %s %sd\n", name, sub);
    store_close(&s);
    return rc ? cli_fail("%s", e.msg) : 0;
}

static int users(struct store *s, const char *arg, struct store_result *res, struct err *e)
{
    (void)arg;
    return auth_user_list(s, res, e);
}

int cmd_user(int argc, char **argv)
{
    const struct command *cmd = cli_command("user");
    struct cli_common c = {0};
    const char *role = NULL, *format = "table";
    const struct cli_flag flags[] = {{"--role", &role}, {"--format", &format}};
    char *args[2];
    int nargs;
    int rc = cli_parse(cmd, &c, flags, 2, argc, argv, args, 2, &nargs);
    if (rc)
        return rc;
    if (c.help)
        return cli_help("user");
    int fmt = query_format_parse(format);
    if (fmt < 0)
        return cli_usage(cmd, "--format must be table, json or csv");
    const char *sub = nargs ? args[0] : "";
    if (strcmp(sub, "list") == 0 && nargs == 1)
        return cli_list(&c, users, NULL, fmt);
    if (strcmp(sub, "add") == 0 && nargs == 2 && !role)
        return cli_usage(cmd, "user add %s needs --role admin|writer|reader", args[1]);
    if ((strcmp(sub, "add") == 0 || strcmp(sub, "disable") == 0 || strcmp(sub, "enable") == 0) &&
        nargs == 2)
        return change(&c, sub, args[1], role);
    return cli_usage(cmd, "expected add NAME --role ROLE, list, disable NAME or enable NAME");
}
