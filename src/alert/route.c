/*
 * Routing and grouping (route.h): the routing tree's matching and keys, and the groups of a
 * router with Alertmanager's rule of when each is due. Split from the notifier's delivery
 * (notify.c) so that a replay runs the same decisions on its own clock.
 */
#include "alert/route.h"

#include <stdint.h>

/* String-keyed hash map (keys copied; values not owned). */
struct map_entry {
    struct map_entry *next;
    uint64_t hash;
    char *key;
    void *value;
};

struct map {
    struct map_entry **b;
    size_t nb, n;
};

struct idset {
    uint64_t *v; /* sorted hashes of alert ids */
    size_t n;
};

struct group {
    const struct route *route;
    char *id;  /* in r->groups: route index and label text */
    char *key; /* the payload's groupKey */
    json_t *group_labels;
    struct nalert **alerts; /* in arrival order */
    size_t nalerts, cap;
    struct map index;                     /* alert id -> position + 1 */
    int64_t next_flush_ms, last_flush_ms; /* the router's clock */
    bool waited;                          /* group_wait is over */
    bool dirty;                           /* changed since the last flush */
    /* the last notification, as Alertmanager's notification log keeps it */
    bool sent;
    int64_t sent_ms;
    struct idset sent_firing, sent_resolved;
};

struct router {
    const struct route *root;
    bool *send_resolved; /* by receiver */
    router_send_fn send;
    void *arg;
    struct map groups; /* group id -> struct group */
};

/* The value of label name, "" when absent (as Alertmanager's matchers see it). */
const char *label_value(json_t *labels, const char *name)
{
    const char *v = json_string_value(json_object_get(labels, name));
    return v ? v : "";
}

/* Appends s quoted as in Alertmanager's label sets: "...", with \ " and newlines escaped. */
static void put_quoted(struct buf *b, const char *s)
{
    buf_putc(b, '"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            buf_putc(b, '\\');
        if (*s == '\n')
            buf_append(b, "\\n", 2);
        else
            buf_putc(b, *s);
    }
    buf_putc(b, '"');
}

/* ---- a string-keyed hash map -------------------------------------------------------------- */

static struct map_entry **map_slot(const struct map *m, const char *key, uint64_t h)
{
    struct map_entry **e = &m->b[h & (m->nb - 1)];
    while (*e && !((*e)->hash == h && strcmp((*e)->key, key) == 0))
        e = &(*e)->next;
    return e;
}

static void *map_get(const struct map *m, const char *key)
{
    if (!m->nb)
        return NULL;
    struct map_entry *e = *map_slot(m, key, hash64(key, strlen(key), 0));
    return e ? e->value : NULL;
}

static void map_grow(struct map *m)
{
    size_t nb = m->nb ? m->nb * 2 : 16;
    struct map_entry **b = xcalloc(nb, sizeof *b);
    for (size_t i = 0; i < m->nb; i++) {
        for (struct map_entry *e = m->b[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
}

/* Inserts or replaces. */
static void map_put(struct map *m, const char *key, void *value)
{
    if (m->n >= m->nb)
        map_grow(m);
    uint64_t h = hash64(key, strlen(key), 0);
    struct map_entry **slot = map_slot(m, key, h);
    if (!*slot) {
        *slot = xcalloc(1, sizeof **slot);
        (*slot)->hash = h;
        (*slot)->key = xstrdup(key);
        m->n++;
    }
    (*slot)->value = value;
}

/* Removes key; returns its value (NULL when absent). */
static void *map_take(struct map *m, const char *key)
{
    if (!m->nb)
        return NULL;
    struct map_entry **slot = map_slot(m, key, hash64(key, strlen(key), 0));
    struct map_entry *e = *slot;
    if (!e)
        return NULL;
    void *value = e->value;
    *slot = e->next;
    free(e->key);
    free(e);
    m->n--;
    return value;
}

static void map_release(struct map *m)
{
    for (size_t i = 0; i < m->nb; i++) {
        for (struct map_entry *e = m->b[i], *next; e; e = next) {
            next = e->next;
            free(e->key);
            free(e);
        }
    }
    free(m->b);
    memset(m, 0, sizeof *m);
}

/* The values of m, for iterating while the map changes; free() the array. */
static void **map_values(const struct map *m, size_t *n)
{
    void **v = xcalloc(m->n, sizeof *v);
    *n = 0;
    for (size_t i = 0; i < m->nb; i++)
        for (struct map_entry *e = m->b[i]; e; e = e->next)
            v[(*n)++] = e->value;
    return v;
}

/* ---- alerts, matchers and routes ---------------------------------------------------------- */

void nalert_unref(struct nalert *a)
{
    if (!a || --a->refs > 0)
        return;
    free(a->id);
    free(a->incident);
    free(a->receiver);
    json_decref(a->labels);
    json_decref(a->annotations);
    free(a);
}

static bool matchers_match(const struct matchers *m, json_t *labels)
{
    for (size_t i = 0; i < m->n; i++) {
        const char *v = label_value(labels, m->v[i].name);
        bool ok = m->v[i].is_re ? regexec(&m->v[i].re, v, 0, NULL, 0) == 0
                                : strcmp(v, m->v[i].value) == 0;
        if (!ok)
            return false;
    }
    return true;
}

void route_matchers_release(struct matchers *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].name);
        free(m->v[i].value);
        if (m->v[i].is_re)
            regfree(&m->v[i].re);
    }
    free(m->v);
    memset(m, 0, sizeof *m);
}

/* Alertmanager's routing: a route that matches hands the alert to its first matching child
 * (and the later ones while the matching child says continue), or takes it itself when no
 * child does. Writes the routes that take it to out (room for ROUTES_MAX); returns how many. */
size_t route_tree_match(const struct route *rt, json_t *labels, const struct route **out)
{
    if (!matchers_match(&rt->match, labels))
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < rt->nroutes; i++) {
        size_t k = route_tree_match(&rt->routes[i], labels, out + n);
        n += k;
        if (k && !rt->routes[i].cont)
            break;
    }
    if (n == 0)
        out[n++] = rt;
    return n;
}

/* The names of obj's members, sorted; with alertname_first, alertname comes first (as in
 * Alertmanager's templates). The names are obj's; free() the array. */
const char **label_names_sorted(json_t *obj, bool alertname_first, size_t *n)
{
    size_t nkeys = json_object_size(obj), k = 0;
    const char **keys = xcalloc(nkeys, sizeof *keys);
    const char *name;
    json_t *v;
    json_object_foreach(obj, name, v)
    {
        keys[k++] = name;
    }
    for (size_t i = 1; i < nkeys; i++) /* insertion sort: a handful of labels */
        for (size_t j = i; j > 0; j--) {
            bool first = alertname_first && strcmp(keys[j], "alertname") == 0;
            if (!first && strcmp(keys[j - 1], keys[j]) <= 0)
                break;
            const char *t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
        }
    *n = nkeys;
    return keys;
}

/* The group's label set as text ({a="1", b="2"}, names sorted) and, when group_labels is not
 * NULL, as an object. */
static void group_labels_of(const struct route *rt, json_t *labels, struct buf *text,
                            json_t **group_labels)
{
    json_t *g = json_object();
    if (rt->group_by_all) {
        json_object_update(g, labels);
    } else {
        for (size_t i = 0; i < rt->ngroup_by; i++) {
            json_t *v = json_object_get(labels, rt->group_by[i]);
            if (v)
                json_object_set(g, rt->group_by[i], v);
        }
    }
    size_t nkeys;
    const char **keys = label_names_sorted(g, false, &nkeys);
    buf_putc(text, '{');
    for (size_t i = 0; i < nkeys; i++) {
        buf_printf(text, "%s%s=", i ? ", " : "", keys[i]);
        put_quoted(text, json_string_value(json_object_get(g, keys[i])));
    }
    buf_putc(text, '}');
    free(keys);
    if (group_labels)
        *group_labels = g;
    else
        json_decref(g);
}

/* Alertmanager's groupKey: route key, colon, group labels. */
char *route_group_key(const struct route *rt, json_t *labels, json_t **group_labels)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    buf_printf(&b, "%s:", rt->key);
    group_labels_of(rt, labels, &b, group_labels);
    char *key = xstrdup(b.data ? b.data : "");
    buf_release(&b);
    return key;
}

void route_release(struct route *rt)
{
    for (size_t i = 0; i < rt->nroutes; i++)
        route_release(&rt->routes[i]);
    free(rt->routes);
    free(rt->key);
    for (size_t i = 0; i < rt->ngroup_by; i++)
        free(rt->group_by[i]);
    free(rt->group_by);
    route_matchers_release(&rt->match);
}

/* Alertmanager's route key: the parent's, "/", and this route's matchers. */
char *route_key(const struct route *parent, const struct route *rt)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    buf_printf(&b, "%s%s{", parent ? parent->key : "", parent ? "/" : "");
    for (size_t i = 0; i < rt->match.n; i++) {
        buf_printf(&b, "%s%s%s", i ? "," : "", rt->match.v[i].name,
                   rt->match.v[i].is_re ? "=~" : "=");
        put_quoted(&b, rt->match.v[i].value);
    }
    buf_putc(&b, '}');
    char *key = xstrdup(b.data);
    buf_release(&b);
    return key;
}

/* ---- groups (the dispatcher's) ------------------------------------------------------------ */

static void idset_release(struct idset *s)
{
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t id_hash(const struct nalert *a)
{
    return hash64(a->id, strlen(a->id), 0x6f707364);
}

/* True when every id of a is in b. */
static bool idset_subset(const struct idset *a, const struct idset *b)
{
    for (size_t i = 0; i < a->n; i++)
        if (!bsearch(&a->v[i], b->v, b->n, sizeof *b->v, u64_cmp))
            return false;
    return true;
}

/* Adds h to s, which stays sorted. */
static void idset_add(struct idset *s, uint64_t h)
{
    if (s->n && bsearch(&h, s->v, s->n, sizeof *s->v, u64_cmp))
        return;
    s->v = xrealloc(s->v, (s->n + 1) * sizeof *s->v);
    size_t i = s->n++;
    for (; i > 0 && s->v[i - 1] > h; i--)
        s->v[i] = s->v[i - 1];
    s->v[i] = h;
}

static void group_free(struct group *g)
{
    for (size_t i = 0; i < g->nalerts; i++)
        nalert_unref(g->alerts[i]);
    free(g->alerts);
    map_release(&g->index);
    json_decref(g->group_labels);
    idset_release(&g->sent_firing);
    idset_release(&g->sent_resolved);
    free(g->id);
    free(g->key);
    free(g);
}

static struct group *group_get(struct router *r, const struct route *rt, json_t *labels,
                               int64_t now)
{
    json_t *group_labels;
    char *key = route_group_key(rt, labels, &group_labels);
    size_t idlen = strlen(key) + 24;
    char *id = xcalloc(1, idlen);
    snprintf(id, idlen, "%zu:%s", rt->index, key);
    struct group *g = map_get(&r->groups, id);
    if (g) {
        free(id);
        free(key);
        json_decref(group_labels);
        return g;
    }
    g = xcalloc(1, sizeof *g);
    g->route = rt;
    g->id = id;
    g->key = key;
    g->group_labels = group_labels;
    g->next_flush_ms = now + rt->group_wait_ms;
    map_put(&r->groups, id, g);
    return g;
}

/* Puts a in g's list (replacing the alert of the same id); returns whether that changed whether
 * it fires (true for an alert new to g). */
static bool group_file(struct group *g, struct nalert *a)
{
    uintptr_t pos = (uintptr_t)map_get(&g->index, a->id);
    a->refs++;
    if (pos) {
        bool changed = g->alerts[pos - 1]->firing != a->firing;
        nalert_unref(g->alerts[pos - 1]);
        g->alerts[pos - 1] = a;
        return changed;
    }
    if (g->nalerts == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 4;
        g->alerts = xrealloc(g->alerts, g->cap * sizeof *g->alerts);
    }
    g->alerts[g->nalerts++] = a;
    map_put(&g->index, a->id, (void *)(uintptr_t)g->nalerts);
    return true;
}

/* Files a in g; a change (a new alert, or one that fired or resolved) after the group's first
 * send is sent group_interval after the last flush. A resolved alert this router never saw
 * firing was notified by an earlier one (before a restart or a reload: the engine posts resolved
 * only for alerts it notified), so the group counts it as sent, and its resolution goes out. */
static void group_add(struct group *g, struct nalert *a)
{
    bool is_new = !map_get(&g->index, a->id);
    if (a->muted) {
        if (!is_new)
            group_file(g, a); /* left out of what the next flush sends, then let go */
        return;
    }
    bool changed = group_file(g, a);
    if (is_new && !a->firing) {
        idset_add(&g->sent_firing, id_hash(a));
        g->sent = true;
    }
    if (changed && g->waited) {
        g->dirty = true;
        int64_t at = g->last_flush_ms + g->route->group_interval_ms;
        if (at < g->next_flush_ms)
            g->next_flush_ms = at;
    }
}

/* Files the firing a in g as carried by g's last notification, sent at sent_ms: the group's
 * next look is its repeat, unless a change already brought it forward. */
static void group_restore(struct group *g, struct nalert *a, int64_t sent_ms, int64_t now)
{
    group_file(g, a);
    idset_add(&g->sent_firing, id_hash(a));
    if (!g->sent || sent_ms > g->sent_ms)
        g->sent_ms = sent_ms;
    g->sent = true;
    if (g->dirty)
        return;
    g->waited = true;
    g->last_flush_ms = g->sent_ms;
    g->next_flush_ms = g->sent_ms + g->route->repeat_interval_ms;
    if (g->next_flush_ms < now)
        g->next_flush_ms = now; /* overdue while opsdb was down: now */
}

/* Alertmanager's rule (notify.go, DedupStage.needsUpdate): send when an alert fires that the
 * last notification did not carry, when all are resolved and it carried firing ones, when one
 * resolved that it did not carry (with send_resolved), or when repeat_interval has passed. */
static bool needs_update(const struct group *g, bool send_resolved, const struct idset *firing,
                         const struct idset *resolved, int64_t now)
{
    if (!g->sent)
        return firing->n > 0;
    if (!idset_subset(firing, &g->sent_firing))
        return true;
    if (firing->n == 0)
        return g->sent_firing.n > 0;
    if (send_resolved && !idset_subset(resolved, &g->sent_resolved))
        return true;
    return now - g->sent_ms >= g->route->repeat_interval_ms;
}

/* What a notification needs_update() decided on is, against g's last one. */
static enum router_send_kind send_kind(const struct group *g, bool send_resolved,
                                       const struct idset *firing, const struct idset *resolved)
{
    if (!g->sent)
        return SEND_FIRST;
    if (firing->n == 0)
        return SEND_RESOLVED;
    if (idset_subset(firing, &g->sent_firing) &&
        (!send_resolved || idset_subset(resolved, &g->sent_resolved)))
        return SEND_REPEAT;
    return SEND_UPDATE;
}

/* Hands the router's callback the group's notification when needs_update says so, then lets
 * its resolved alerts go. */
static void group_flush(struct router *r, struct group *g, int64_t now)
{
    bool send_resolved = r->send_resolved[g->route->receiver];
    struct nalert **list = xcalloc(g->nalerts, sizeof *list);
    struct idset firing = {xcalloc(g->nalerts, sizeof(uint64_t)), 0};
    struct idset resolved = {xcalloc(g->nalerts, sizeof(uint64_t)), 0};
    size_t nlist = 0;
    for (size_t i = 0; i < g->nalerts; i++) {
        struct nalert *a = g->alerts[i];
        if (a->muted)
            continue;
        struct idset *set = a->firing ? &firing : &resolved;
        set->v[set->n++] = id_hash(a);
        if (a->firing || send_resolved)
            list[nlist++] = a;
    }
    qsort(firing.v, firing.n, sizeof *firing.v, u64_cmp);
    qsort(resolved.v, resolved.n, sizeof *resolved.v, u64_cmp);
    if (nlist && needs_update(g, send_resolved, &firing, &resolved, now)) {
        struct router_send s = {g->route->receiver,
                                g->key,
                                g->group_labels,
                                list,
                                nlist,
                                send_kind(g, send_resolved, &firing, &resolved),
                                now};
        r->send(r->arg, &s);
        idset_release(&g->sent_firing);
        idset_release(&g->sent_resolved);
        g->sent_firing = firing;
        g->sent_resolved = resolved;
        firing = resolved = (struct idset){NULL, 0};
        g->sent = true;
        g->sent_ms = now;
    }
    idset_release(&firing);
    idset_release(&resolved);
    free(list);
    /* resolved alerts have had their one notification; muted ones leave unsent */
    size_t kept = 0;
    for (size_t i = 0; i < g->nalerts; i++) {
        if (g->alerts[i]->firing)
            g->alerts[kept++] = g->alerts[i];
        else
            nalert_unref(g->alerts[i]);
    }
    g->nalerts = kept;
    map_release(&g->index);
    for (size_t i = 0; i < kept; i++)
        map_put(&g->index, g->alerts[i]->id, (void *)(uintptr_t)(i + 1));
    g->waited = true;
    g->dirty = false;
    g->last_flush_ms = now;
    /* next: the repeat; while nothing was sent yet, group_interval, as Alertmanager looks again
     * at every group_interval */
    int64_t interval_later = now + g->route->group_interval_ms;
    g->next_flush_ms = g->sent ? g->sent_ms + g->route->repeat_interval_ms : interval_later;
    if (g->next_flush_ms < interval_later)
        g->next_flush_ms = interval_later;
}

/* ---- the router ---------------------------------------------------------------------------- */

const char *router_send_kind_name(enum router_send_kind k)
{
    static const char *const names[] = {"first", "update", "repeat", "resolved"};
    return names[k];
}

struct router *router_new(const struct route *root, const bool *send_resolved, size_t nreceivers,
                          router_send_fn fn, void *arg)
{
    struct router *r = xcalloc(1, sizeof *r);
    r->root = root;
    r->send_resolved = xcalloc(nreceivers, sizeof *r->send_resolved);
    if (nreceivers)
        memcpy(r->send_resolved, send_resolved, nreceivers * sizeof *send_resolved);
    r->send = fn;
    r->arg = arg;
    return r;
}

void router_free(struct router **rp)
{
    struct router *r = *rp;
    if (!r)
        return;
    *rp = NULL;
    size_t ng;
    void **groups = map_values(&r->groups, &ng);
    for (size_t i = 0; i < ng; i++)
        group_free(groups[i]);
    free(groups);
    map_release(&r->groups);
    free(r->send_resolved);
    free(r);
}

bool router_add(struct router *r, struct nalert *a, int64_t now_ms)
{
    const struct route *hit[ROUTES_MAX];
    size_t nhit = r->root ? route_tree_match(r->root, a->labels, hit) : 0;
    for (size_t i = 0; i < nhit; i++)
        group_add(group_get(r, hit[i], a->labels, now_ms), a);
    return nhit > 0;
}

bool router_restore(struct router *r, struct nalert *a, int64_t now_ms,
                    int64_t (*sent_at)(void *arg, size_t receiver, const char *group_key,
                                       const struct nalert *a),
                    void *arg)
{
    const struct route *hit[ROUTES_MAX];
    size_t nhit = r->root && a->firing ? route_tree_match(r->root, a->labels, hit) : 0;
    for (size_t i = 0; i < nhit; i++) {
        struct group *g = group_get(r, hit[i], a->labels, now_ms);
        group_restore(g, a, sent_at(arg, hit[i]->receiver, g->key, a), now_ms);
    }
    return nhit > 0;
}

int64_t router_flush(struct router *r, int64_t now_ms, bool stopping)
{
    size_t ng;
    struct group **gs = (struct group **)map_values(&r->groups, &ng);
    int64_t next = INT64_MAX;
    for (size_t i = 0; i < ng; i++) {
        struct group *g = gs[i];
        if (g->next_flush_ms <= now_ms || (stopping && (!g->waited || g->dirty)))
            group_flush(r, g, now_ms);
        if (g->nalerts == 0) {
            map_take(&r->groups, g->id);
            group_free(g);
        } else if (g->next_flush_ms < next) {
            next = g->next_flush_ms;
        }
    }
    free(gs);
    return next;
}

int64_t router_next_due(const struct router *r)
{
    int64_t next = INT64_MAX;
    for (size_t i = 0; i < r->groups.nb; i++)
        for (struct map_entry *e = r->groups.b[i]; e; e = e->next) {
            const struct group *g = e->value;
            if (g->next_flush_ms < next)
                next = g->next_flush_ms;
        }
    return next;
}
