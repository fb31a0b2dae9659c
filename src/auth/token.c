/*
 * The shape of a token and what a principal may write. A token is opsdb_<id>_<secret>: the id
 * is looked up, the secret only ever hashed (BLAKE2b-256, libsodium's generic hash) and
 * compared in constant time.
 */
#include "auth/auth.h"

#include <sodium.h>
#include <string.h>

static bool all_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

bool auth_token_split(const char *token, char id[AUTH_TOKEN_ID_LEN + 1],
                      char secret[AUTH_TOKEN_SECRET_LEN + 1])
{
    if (!token || strlen(token) != AUTH_TOKEN_SIZE - 1 || strncmp(token, "opsdb_", 6) != 0 ||
        token[6 + AUTH_TOKEN_ID_LEN] != '_')
        return false;
    const char *i = token + 6, *s = i + AUTH_TOKEN_ID_LEN + 1;
    if (!all_hex(i, AUTH_TOKEN_ID_LEN) || !all_hex(s, AUTH_TOKEN_SECRET_LEN))
        return false;
    memcpy(id, i, AUTH_TOKEN_ID_LEN);
    id[AUTH_TOKEN_ID_LEN] = '\0';
    memcpy(secret, s, AUTH_TOKEN_SECRET_LEN);
    secret[AUTH_TOKEN_SECRET_LEN] = '\0';
    return true;
}

void auth_secret_hash(const char *secret, char out[65])
{
    unsigned char h[32];
    crypto_generichash(h, sizeof h, (const unsigned char *)secret, strlen(secret), NULL, 0);
    sodium_bin2hex(out, 65, h, sizeof h);
    sodium_memzero(h, sizeof h);
}

bool auth_may_write_table(const struct auth_principal *p, const char *table)
{
    if (p->role != AUTH_WRITER && p->role != AUTH_ADMIN)
        return false;
    if (!p->tables[0])
        return true;
    size_t n = strlen(table);
    for (const char *s = p->tables; *s;) {
        size_t len = strcspn(s, ",");
        if (len == n && strncmp(s, table, n) == 0)
            return true;
        s += len + (s[len] == ',');
    }
    return false;
}
