/*
 * Roles and the server's mode: which role a route needs, what a role may do, and whether a
 * server checks tokens at all (off only where nobody but this machine can connect, unless the
 * operator insists).
 */
#include "auth/auth.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

static const char *const role_names[] = {"public", "reader", "writer", "admin"};

int auth_role_parse(const char *name)
{
    for (int i = 0; name && i < (int)(sizeof role_names / sizeof role_names[0]); i++)
        if (strcmp(name, role_names[i]) == 0)
            return i;
    return -1;
}

const char *auth_role_name(enum auth_role r)
{
    return role_names[r];
}

bool auth_role_allows(enum auth_role have, enum auth_role need)
{
    return need == AUTH_PUBLIC || have == AUTH_ADMIN || have == need;
}

/* dbstat (SQLite's page statistics) tells how large each of them is, and so how many users and
 * tokens there are: hidden with them. */
static const char *const auth_tables[] = {"users", "api_tokens", "audit_log", "dbstat", NULL};
/* per role, what the SQL route does not let it read */
static const char *const *const hidden_tables[] = {
    [AUTH_PUBLIC] = auth_tables,
    [AUTH_READER] = auth_tables,
    [AUTH_WRITER] = auth_tables,
    [AUTH_ADMIN] = NULL,
};

const char *const *auth_hidden_tables(enum auth_role r)
{
    return hidden_tables[r];
}

bool auth_listen_is_loopback(const char *listen)
{
    char host[128];
    const char *colon = strrchr(listen, ':');
    size_t len = colon ? (size_t)(colon - listen) : strlen(listen);
    if (len >= sizeof host)
        return false;
    memcpy(host, listen, len);
    host[len] = '\0';
    if (strcmp(host, "localhost") == 0)
        return true;
    if (len > 2 && host[0] == '[' && host[len - 1] == ']') {
        memmove(host, host + 1, len - 2);
        host[len - 2] = '\0';
    }
    unsigned char addr[16];
    if (inet_pton(AF_INET, host, addr) == 1)
        return addr[0] == 127;
    static const unsigned char v6_loopback[16] = {[15] = 1};
    return inet_pton(AF_INET6, host, addr) == 1 && memcmp(addr, v6_loopback, 16) == 0;
}

int auth_mode_resolve(const char *configured, const char *listen, bool insecure,
                      enum auth_mode *out, struct err *e)
{
    bool loopback = auth_listen_is_loopback(listen);
    if (strcmp(configured, "required") == 0) {
        *out = AUTH_MODE_REQUIRED;
    } else if (strcmp(configured, "auto") == 0) {
        *out = loopback ? AUTH_MODE_OFF : AUTH_MODE_REQUIRED;
    } else if (strcmp(configured, "off") == 0) {
        if (!loopback && !insecure)
            return err_set(e, E_INVALID,
                           "refusing to serve %s without authentication: anyone who can reach "
                           "it could read and write everything; create a token (opsdb token "
                           "create) and keep auth.mode required, or add --insecure if this "
                           "network is trusted",
                           listen);
        *out = AUTH_MODE_OFF;
    } else {
        return err_set(e, E_INVALID, "auth.mode '%s' is not one of auto, required, off",
                       configured);
    }
    return 0;
}
