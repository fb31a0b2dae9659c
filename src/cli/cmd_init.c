/* opsdb init: creates the database or migrates it to this version's schema, and makes its first
 * admin user and token while it has none. */
#include "auth/auth.h"
#include "cli/cli.h"
#include "store/store.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#define ADMIN_TOKEN_ENV "OPSDB_ADMIN_TOKEN"

/* The user admin and a token of it, when no enabled admin exists; the token is printed once (not
 * when it came from OPSDB_ADMIN_TOKEN, which the caller knows). */
static int first_admin(struct store *s, struct err *e)
{
    bool exists;
    int rc = auth_admin_exists(s, &exists, e);
    if (rc || exists)
        return rc;
    char actor[128], token[AUTH_TOKEN_SIZE], id[AUTH_TOKEN_ID_LEN + 1];
    auth_cli_actor(actor, sizeof actor);
    struct auth_actor by = {actor, NULL, "cli"};
    struct auth_target t = {s, NULL};
    const char *given = getenv(ADMIN_TOKEN_ENV);
    struct auth_token_spec spec = {"admin", 0, NULL, "created by opsdb init",
                                   given && *given ? given : NULL};
    rc = auth_user_add(&t, &by, "admin", "admin", e);
    if (rc == E_CONFLICT)
        return err_set(e, E_CONFLICT,
                       "no admin user exists and the name admin is taken by a user of another "
                       "role: add one with opsdb user add NAME --role admin");
    if (rc == 0)
        rc = auth_token_create(&t, &by, &spec, token, id, e);
    if (rc)
        return rc;
    if (spec.given)
        printf("created user admin (role admin) with the token of %s (id %s)\n", ADMIN_TOKEN_ENV,
               id);
    else
        printf("created user admin (role admin) and its API token, shown this once (keep it; "
               "opsdb token create admin makes another):\n%s\n",
               token);
    sodium_memzero(token, sizeof token);
    return 0;
}

int cmd_init(int argc, char **argv)
{
    struct cli_common c = {0};
    for (int i = 1; i < argc; i++) {
        int rc = cli_common_flag(&c, argc, argv, &i);
        if (rc < 0)
            return 2;
        if (rc == 0)
            return cli_usage(cli_command("init"), "unexpected argument '%s'", argv[i]);
    }
    if (c.help)
        return cli_help("init");
    struct config cfg;
    struct store *s;
    int rc = cli_open_store(&c, &cfg, STORE_READWRITE, &s);
    if (rc)
        return rc;
    size_t ntables, nviews;
    schema_tables(&ntables);
    store_view_names(&nviews);
    printf("database %s is ready: schema version %d, %zu tables, %zu views\n", cfg.db,
           store_schema_version(s), ntables, nviews);
    struct err e;
    rc = first_admin(s, &e);
    store_close(&s);
    return rc ? cli_fail("%s", e.msg) : 0;
}
