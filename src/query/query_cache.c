/*
 * The answer cache. Dashboards ask the same views and series again and again, mostly of data
 * that did not change; an answer is kept until a commit touches a table it read, so repeated
 * questions cost a hash lookup. Entries form one LRU list under a byte budget; the key is the
 * request (route and sorted parameters), the validity the tables' commit epochs.
 */
#include "query/query.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    struct entry *lru_prev, *lru_next; /* most recently used at the head */
    struct entry *chain;               /* next in the hash slot */
    uint64_t hash;
    uint32_t tables_mask;
    uint64_t epochs[QUERY_CACHE_TABLES];
    int64_t expires_ms;
    size_t key_len, body_len;
    char *key, *body;
};

#define SLOTS 4096

struct query_cache {
    pthread_mutex_t lock;
    size_t max_bytes;
    uint64_t epochs[QUERY_CACHE_TABLES];
    struct entry *slots[SLOTS];
    struct entry *lru_head, *lru_tail;
    struct query_cache_stats stats;
};

static size_t entry_bytes(const struct entry *e)
{
    return sizeof *e + e->key_len + e->body_len;
}

struct query_cache *query_cache_new(size_t max_bytes)
{
    struct query_cache *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    pthread_mutex_init(&c->lock, NULL);
    c->max_bytes = max_bytes;
    return c;
}

static void lru_unlink(struct query_cache *c, struct entry *e)
{
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        c->lru_head = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        c->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_push_front(struct query_cache *c, struct entry *e)
{
    e->lru_next = c->lru_head;
    e->lru_prev = NULL;
    if (c->lru_head)
        c->lru_head->lru_prev = e;
    c->lru_head = e;
    if (!c->lru_tail)
        c->lru_tail = e;
}

/* Unlinks e from everything and frees it. Lock held. */
static void drop(struct query_cache *c, struct entry *e)
{
    struct entry **p = &c->slots[e->hash % SLOTS];
    while (*p != e)
        p = &(*p)->chain;
    *p = e->chain;
    lru_unlink(c, e);
    c->stats.bytes -= entry_bytes(e);
    c->stats.entries--;
    free(e->key);
    free(e->body);
    free(e);
}

void query_cache_free(struct query_cache **cp)
{
    struct query_cache *c = *cp;
    if (!c)
        return;
    while (c->lru_head)
        drop(c, c->lru_head);
    pthread_mutex_destroy(&c->lock);
    free(c);
    *cp = NULL;
}

void query_cache_bump(struct query_cache *c, size_t table_index)
{
    if (table_index >= QUERY_CACHE_TABLES)
        return;
    pthread_mutex_lock(&c->lock);
    c->epochs[table_index]++;
    pthread_mutex_unlock(&c->lock);
}

void query_cache_epochs(struct query_cache *c, uint64_t epochs[QUERY_CACHE_TABLES])
{
    pthread_mutex_lock(&c->lock);
    memcpy(epochs, c->epochs, sizeof c->epochs);
    pthread_mutex_unlock(&c->lock);
}

static struct entry *find(struct query_cache *c, const char *key, size_t len, uint64_t h)
{
    for (struct entry *e = c->slots[h % SLOTS]; e; e = e->chain)
        if (e->hash == h && e->key_len == len && memcmp(e->key, key, len) == 0)
            return e;
    return NULL;
}

static bool still_valid(const struct query_cache *c, const struct entry *e)
{
    if (e->expires_ms && time_now_ms() >= e->expires_ms)
        return false;
    for (size_t t = 0; t < QUERY_CACHE_TABLES; t++)
        if ((e->tables_mask & (1u << t)) && e->epochs[t] != c->epochs[t])
            return false;
    return true;
}

bool query_cache_get(struct query_cache *c, const char *key, struct buf *out)
{
    size_t len = strlen(key);
    uint64_t h = hash64(key, len, 0);
    bool hit = false;
    pthread_mutex_lock(&c->lock);
    struct entry *e = find(c, key, len, h);
    if (e && !still_valid(c, e)) {
        drop(c, e);
        e = NULL;
    }
    if (e && buf_append(out, e->body, e->body_len) == 0) {
        lru_unlink(c, e);
        lru_push_front(c, e);
        hit = true;
    }
    if (hit)
        c->stats.hits++;
    else
        c->stats.misses++;
    pthread_mutex_unlock(&c->lock);
    return hit;
}

void query_cache_put(struct query_cache *c, const char *key, uint32_t tables_mask,
                     const uint64_t epochs[QUERY_CACHE_TABLES], int64_t expires_ms,
                     const char *body, size_t len)
{
    size_t key_len = strlen(key);
    if (sizeof(struct entry) + key_len + len > c->max_bytes / 4)
        return; /* one answer may take at most a quarter of the budget */
    struct entry *e = calloc(1, sizeof *e);
    if (!e)
        return;
    e->key = malloc(key_len);
    e->body = malloc(len ? len : 1);
    if (!e->key || !e->body) {
        free(e->key);
        free(e->body);
        free(e);
        return;
    }
    memcpy(e->key, key, key_len);
    memcpy(e->body, body, len);
    e->key_len = key_len;
    e->body_len = len;
    e->hash = hash64(key, key_len, 0);
    e->tables_mask = tables_mask;
    e->expires_ms = expires_ms;
    memcpy(e->epochs, epochs, sizeof e->epochs);
    pthread_mutex_lock(&c->lock);
    struct entry *old = find(c, key, key_len, e->hash);
    if (old)
        drop(c, old);
    while (c->lru_tail && c->stats.bytes + entry_bytes(e) > c->max_bytes) {
        drop(c, c->lru_tail);
        c->stats.evictions++;
    }
    e->chain = c->slots[e->hash % SLOTS];
    c->slots[e->hash % SLOTS] = e;
    lru_push_front(c, e);
    c->stats.bytes += entry_bytes(e);
    c->stats.entries++;
    pthread_mutex_unlock(&c->lock);
}

void query_cache_get_stats(struct query_cache *c, struct query_cache_stats *out)
{
    pthread_mutex_lock(&c->lock);
    *out = c->stats;
    pthread_mutex_unlock(&c->lock);
}
