/*
 * auth: roles and what they allow, the mode a listen address gets, the shape of tokens, table
 * scopes, the tables SQL hides, and against a real database the server's check (ok, forbidden,
 * revoked and disabled seen after the writer's hook, expired) and its audit rows.
 */
#include "unit_store.h"

#include "auth/auth.h"

static void roles(void **state)
{
    (void)state;
    assert_int_equal(auth_role_parse("admin"), AUTH_ADMIN);
    assert_int_equal(auth_role_parse("public"), AUTH_PUBLIC);
    assert_int_equal(auth_role_parse("Admin"), -1);
    assert_int_equal(auth_role_parse(""), -1);
    assert_int_equal(auth_role_parse(NULL), -1);
    assert_true(auth_role_allows(AUTH_ADMIN, AUTH_WRITER));
    assert_true(auth_role_allows(AUTH_READER, AUTH_PUBLIC));
    assert_true(auth_role_allows(AUTH_READER, AUTH_READER));
    assert_false(auth_role_allows(AUTH_WRITER, AUTH_READER));
    assert_false(auth_role_allows(AUTH_READER, AUTH_WRITER));
    assert_false(auth_role_allows(AUTH_WRITER, AUTH_ADMIN));
    assert_false(auth_role_allows(AUTH_PUBLIC, AUTH_READER));
}

static void modes(void **state)
{
    (void)state;
    const char *loopback[] = {"127.0.0.1:8470", "127.8.9.10:1", "localhost:80", "[::1]:8470"};
    const char *other[] = {"0.0.0.0:8470", "10.0.0.1:1", "[::]:8470",
                           "128.0.0.1:2",  "db-1:80",    "[::2]:8470"};
    for (size_t i = 0; i < sizeof loopback / sizeof *loopback; i++)
        assert_true(auth_listen_is_loopback(loopback[i]));
    for (size_t i = 0; i < sizeof other / sizeof *other; i++)
        assert_false(auth_listen_is_loopback(other[i]));
    enum auth_mode m;
    struct err e;
    assert_int_equal(auth_mode_resolve("auto", "127.0.0.1:1", false, &m, &e), 0);
    assert_int_equal(m, AUTH_MODE_OFF);
    assert_int_equal(auth_mode_resolve("auto", "0.0.0.0:1", false, &m, &e), 0);
    assert_int_equal(m, AUTH_MODE_REQUIRED);
    assert_int_equal(auth_mode_resolve("required", "127.0.0.1:1", false, &m, &e), 0);
    assert_int_equal(m, AUTH_MODE_REQUIRED);
    assert_int_equal(auth_mode_resolve("off", "0.0.0.0:1", false, &m, &e), E_INVALID);
    assert_non_null(strstr(e.msg, "--insecure"));
    assert_int_equal(auth_mode_resolve("off", "0.0.0.0:1", true, &m, &e), 0);
    assert_int_equal(m, AUTH_MODE_OFF);
    assert_int_equal(auth_mode_resolve("maybe", "127.0.0.1:1", false, &m, &e), E_INVALID);
}

static void token_shapes(void **state)
{
    (void)state;
    char id[AUTH_TOKEN_ID_LEN + 1], secret[AUTH_TOKEN_SECRET_LEN + 1];
    char good[AUTH_TOKEN_SIZE];
    snprintf(good, sizeof good, "opsdb_0123456789ab_%064d", 7);
    assert_true(auth_token_split(good, id, secret));
    assert_string_equal(id, "0123456789ab");
    assert_int_equal(strlen(secret), 64);
    const char *bad[] = {"",  "opsdb_", "Bearer x", "opsdb_0123456789ab", "opsdb_0123456789AB_0",
                         NULL};
    for (int i = 0; bad[i]; i++)
        assert_false(auth_token_split(bad[i], id, secret));
    char upper[AUTH_TOKEN_SIZE];
    snprintf(upper, sizeof upper, "%s", good);
    upper[30] = 'G';
    assert_false(auth_token_split(upper, id, secret));
    char longer[AUTH_TOKEN_SIZE + 1];
    snprintf(longer, sizeof longer, "%s0", good);
    assert_false(auth_token_split(longer, id, secret));
    char h1[65], h2[65];
    auth_secret_hash("a", h1);
    auth_secret_hash("b", h2);
    assert_int_equal(strlen(h1), 64);
    assert_string_not_equal(h1, h2);
    auth_secret_hash("a", h2);
    assert_string_equal(h1, h2);
}

static void table_scopes(void **state)
{
    (void)state;
    struct auth_principal p = {.authenticated = true, .role = AUTH_WRITER};
    assert_true(auth_may_write_table(&p, "error_logs"));
    snprintf(p.tables, sizeof p.tables, "api_usage,error_logs");
    assert_true(auth_may_write_table(&p, "api_usage"));
    assert_true(auth_may_write_table(&p, "error_logs"));
    assert_false(auth_may_write_table(&p, "api"));
    assert_false(auth_may_write_table(&p, "usage"));
    assert_false(auth_may_write_table(&p, "error_logs2"));
    assert_false(auth_may_write_table(&p, "system_metrics"));
    p.role = AUTH_READER;
    assert_false(auth_may_write_table(&p, "api_usage"));
}

/* The tables SQL hides from a reader are exactly the schema's auth tables. */
static void hidden_tables_are_the_auth_tables(void **state)
{
    (void)state;
    size_t n, hidden = 0;
    const struct table *t = schema_tables(&n);
    const char *const *h = auth_hidden_tables(AUTH_READER);
    for (size_t i = 0; i < n; i++) {
        bool listed = false;
        for (const char *const *x = h; *x; x++)
            listed |= strcmp(*x, t[i].name) == 0;
        assert_int_equal(listed, t[i].access == ACCESS_AUTH);
        hidden += listed;
    }
    size_t listed = 0;
    bool dbstat = false;
    while (h[listed])
        dbstat |= strcmp(h[listed++], "dbstat") == 0;
    /* and SQLite's page statistics, which tell the auth tables' sizes */
    assert_true(dbstat);
    assert_int_equal(hidden + 1, listed);
    assert_null(auth_hidden_tables(AUTH_ADMIN));
}

static enum auth_result check(struct auth *a, const char *token, enum auth_role need)
{
    struct auth_principal who;
    return auth_check(a, token, need, &who);
}

static void server_check(void **state)
{
    (void)state;
    struct ut_db d;
    ut_db_init(&d, "auth");
    ut_db_start(&d);
    struct auth_actor by = {"cli:test", NULL, "cli"};
    struct auth_target cli = {d.store, NULL};
    struct err e;
    assert_int_equal(auth_user_add(&cli, &by, "w", "writer", &e), 0);
    assert_int_equal(auth_user_add(&cli, &by, "w", "reader", &e), E_CONFLICT);
    assert_int_equal(auth_user_add(&cli, &by, "r", "reader", &e), 0);
    char w[AUTH_TOKEN_SIZE], r[AUTH_TOKEN_SIZE], x[AUTH_TOKEN_SIZE];
    char wid[AUTH_TOKEN_ID_LEN + 1], rid[AUTH_TOKEN_ID_LEN + 1], xid[AUTH_TOKEN_ID_LEN + 1];
    struct auth_token_spec spec = {"w", 0, "api_usage", NULL, NULL};
    assert_int_equal(auth_token_create(&cli, &by, &spec, w, wid, &e), 0);
    spec = (struct auth_token_spec){"r", 0, NULL, NULL, NULL};
    assert_int_equal(auth_token_create(&cli, &by, &spec, r, rid, &e), 0);
    spec = (struct auth_token_spec){"r", time_now_ms() + 300, NULL, NULL, NULL};
    assert_int_equal(auth_token_create(&cli, &by, &spec, x, xid, &e), 0);
    char y[AUTH_TOKEN_SIZE], yid[AUTH_TOKEN_ID_LEN + 1];
    spec = (struct auth_token_spec){"nobody", 0, NULL, NULL, NULL};
    assert_int_equal(auth_token_create(&cli, &by, &spec, y, yid, &e), E_NOTFOUND);
    spec = (struct auth_token_spec){"w", 0, "users", NULL, NULL};
    assert_int_equal(auth_token_create(&cli, &by, &spec, y, yid, &e), E_INVALID);
    spec = (struct auth_token_spec){"r", 0, "api_usage", NULL, NULL};
    assert_int_equal(auth_token_create(&cli, &by, &spec, y, yid, &e), E_INVALID);

    struct auth *a;
    assert_int_equal(auth_new(&a, d.store, d.w, AUTH_MODE_REQUIRED, &e), 0);
    writer_on_commit(d.w, auth_on_commit, a);
    struct auth_principal who;
    assert_int_equal(auth_check(a, w, AUTH_WRITER, &who), AUTH_OK);
    assert_string_equal(who.user, "w");
    assert_string_equal(who.token_id, wid);
    assert_string_equal(who.tables, "api_usage");
    assert_int_equal(check(a, w, AUTH_READER), AUTH_FORBIDDEN);
    assert_int_equal(check(a, r, AUTH_READER), AUTH_OK);
    assert_int_equal(check(a, NULL, AUTH_READER), AUTH_NO_TOKEN);
    assert_int_equal(check(a, NULL, AUTH_PUBLIC), AUTH_OK);
    assert_int_equal(check(a, "opsdb_x", AUTH_READER), AUTH_MALFORMED);
    char forged[AUTH_TOKEN_SIZE];
    snprintf(forged, sizeof forged, "%s", r);
    forged[AUTH_TOKEN_SIZE - 2] = forged[AUTH_TOKEN_SIZE - 2] == '0' ? '1' : '0';
    assert_int_equal(check(a, forged, AUTH_READER), AUTH_UNKNOWN);

    /* a revoke by the server itself (through the writer) is seen at once */
    struct auth_target server = {d.store, d.w};
    assert_int_equal(auth_token_revoke(&server, &by, rid, &e), 0);
    assert_int_equal(check(a, r, AUTH_READER), AUTH_REVOKED);
    assert_int_equal(auth_token_revoke(&server, &by, rid, &e), 0); /* again: no error */
    assert_int_equal(auth_token_revoke(&server, &by, "000000000000", &e), E_NOTFOUND);
    /* a change the hook hears of as another process's (n == 0) */
    assert_int_equal(auth_user_set_disabled(&cli, &by, "w", true, &e), 0);
    auth_on_commit(a, NULL, 0);
    assert_int_equal(check(a, w, AUTH_WRITER), AUTH_DISABLED);
    usleep(400 * 1000);
    assert_int_equal(check(a, x, AUTH_READER), AUTH_EXPIRED);

    auth_audit(a, &(struct auth_audit){.actor = "-",
                                       .action = "GET /x",
                                       .outcome = "denied",
                                       .status = 401,
                                       .detail = "no token"});
    struct auth_stats st;
    auth_get_stats(a, &st);
    assert_true(st.results[AUTH_OK] >= 3);
    assert_int_equal(st.results[AUTH_REVOKED], 1);
    auth_free(&a); /* writes the queued row and the tokens' last use */
    assert_int_equal(ut_db_int(&d, "SELECT count(*) FROM audit_log WHERE action = 'GET /x' AND "
                                   "status = 401 AND outcome = 'denied'"),
                     1);
    assert_int_equal(ut_db_int(&d, "SELECT count(*) FROM audit_log WHERE action = 'token.revoke'"),
                     1);
    assert_true(ut_db_int(&d, "SELECT last_used_at FROM api_tokens WHERE id = '%s'", wid) > 0);
    /* the revoke stayed: writing the last use did not undo it */
    assert_true(ut_db_int(&d, "SELECT revoked_at FROM api_tokens WHERE id = '%s'", rid) > 0);
    ut_db_remove(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(roles),
        cmocka_unit_test(modes),
        cmocka_unit_test(token_shapes),
        cmocka_unit_test(table_scopes),
        cmocka_unit_test(hidden_tables_are_the_auth_tables),
        cmocka_unit_test(server_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
