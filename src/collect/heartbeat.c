/*
 * collect/heartbeat: the sources' heartbeats (see heartbeat.h). Heartbeats arrive from many
 * threads (HTTP requests, listeners, scrapers) far more often than anyone reads them, so they
 * only touch a hash table in memory; a thread writes the sources that changed, and the gaps
 * found, through the writer every second (the view must not call a live source silent).
 */
#include "collect/heartbeat.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLUSH_MS 1000        /* how stale collection_sources may be */
#define MIN_SILENCE_MS 30000 /* a source with an interval may be silent this long at least */
#define NBUCKETS 4096

struct source {
    struct source *next; /* hash chain */
    enum source_kind kind;
    char name[SOURCE_NAME_MAX + 1];
    int64_t first_seen_ms, last_seen_ms, interval_ms, silence_ms;
    uint64_t rows, gaps;
    bool changed; /* not yet written */
};

struct gap {
    enum source_kind kind;
    char name[SOURCE_NAME_MAX + 1];
    int64_t from_ms, to_ms, downtime_ms;
};

struct heartbeats {
    struct writer *writer;
    const struct config *cfg;
    const struct column *kinds; /* collection_sources.kind: the names of the kinds */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    bool started, stopping, full_warned;
    struct source *buckets[NBUCKETS];
    size_t nsources;
    struct gap *gaps; /* found since the last write */
    size_t ngaps, cap_gaps;
};

static const struct column *kind_column(void)
{
    const struct table *t = schema_table("collection_sources");
    return &t->columns[schema_column(t, "kind")];
}

const char *source_kind_name(enum source_kind kind)
{
    const char *const *names = kind_column()->allowed;
    for (int i = 0; names[i]; i++)
        if (i == (int)kind)
            return names[i];
    return NULL;
}

int source_kind_parse(const char *name)
{
    const char *const *names = kind_column()->allowed;
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

static size_t bucket_of(enum source_kind kind, const char *name)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)kind; /* FNV-1a */
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return (size_t)(h % NBUCKETS);
}

/* The source, created when new (NULL when the table is full). Called with the lock held. */
static struct source *source_get(struct heartbeats *h, enum source_kind kind, const char *name)
{
    size_t b = bucket_of(kind, name);
    for (struct source *x = h->buckets[b]; x; x = x->next)
        if (x->kind == kind && strcmp(x->name, name) == 0)
            return x;
    if (h->nsources >= (size_t)h->cfg->collection_max_sources) {
        if (!h->full_warned)
            log_warn("collection: %zu sources are known (collection.max_sources): heartbeats of "
                     "new ones, such as %s:%s, are not kept",
                     h->nsources, source_kind_name(kind), name);
        h->full_warned = true;
        return NULL;
    }
    struct source *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->kind = kind;
    snprintf(x->name, sizeof x->name, "%s", name);
    x->next = h->buckets[b];
    h->buckets[b] = x;
    h->nsources++;
    return x;
}

static int64_t silence_of(const struct heartbeats *h, int64_t interval_ms)
{
    if (interval_ms <= 0)
        return h->cfg->collection_silence_ms;
    return 3 * interval_ms > MIN_SILENCE_MS ? 3 * interval_ms : MIN_SILENCE_MS;
}

static void gap_add(struct heartbeats *h, const struct source *x, int64_t now_ms)
{
    if (h->ngaps == h->cap_gaps) {
        size_t cap = h->cap_gaps ? 2 * h->cap_gaps : 16;
        struct gap *g = realloc(h->gaps, cap * sizeof *g);
        if (!g)
            return;
        h->gaps = g;
        h->cap_gaps = cap;
    }
    struct gap *g = &h->gaps[h->ngaps++];
    g->kind = x->kind;
    snprintf(g->name, sizeof g->name, "%s", x->name);
    g->from_ms = x->last_seen_ms;
    g->to_ms = now_ms;
    int64_t down = now_ms - x->last_seen_ms - x->interval_ms;
    g->downtime_ms = down > 0 ? down : 0;
}

void heartbeat_note(struct heartbeats *h, enum source_kind kind, const char *name,
                    int64_t interval_ms, uint64_t rows)
{
    if (!h || !name || !source_kind_name(kind))
        return;
    int64_t now = time_now_ms();
    pthread_mutex_lock(&h->lock);
    struct source *x = source_get(h, kind, name);
    if (x) {
        if (interval_ms > 0)
            x->interval_ms = interval_ms;
        x->silence_ms = silence_of(h, x->interval_ms);
        if (!x->first_seen_ms)
            x->first_seen_ms = now;
        else if (now - x->last_seen_ms > x->silence_ms) {
            gap_add(h, x, now);
            x->gaps++;
        }
        if (now > x->last_seen_ms)
            x->last_seen_ms = now;
        x->rows += rows;
        x->changed = true;
    }
    pthread_mutex_unlock(&h->lock);
}

/* ---- writing --------------------------------------------------------------------------------- */

static void set_int(struct batch *b, struct value *row, const char *column, int64_t v)
{
    row[schema_column(b->table, column)] = (struct value){.i = v, .type = VAL_INT};
}

static void set_text(struct batch *b, struct value *row, const char *column, const char *s)
{
    size_t len = strlen(s);
    row[schema_column(b->table, column)] = (struct value){
        .s = arena_strndup(&b->arena, s, len), .len = (uint32_t)len, .type = VAL_TEXT};
}

static void set_source(struct batch *b, struct value *row, enum source_kind kind, const char *name)
{
    char key[SOURCE_NAME_MAX + 32];
    snprintf(key, sizeof key, "%s:%s", source_kind_name(kind), name);
    set_text(b, row, "source", key);
}

/* Moves what changed into the two batches. Called with the lock held. */
static void take_changed(struct heartbeats *h, struct batch *sources, struct batch *gaps,
                         int64_t now_ms)
{
    for (size_t i = 0; i < NBUCKETS; i++)
        for (struct source *x = h->buckets[i]; x; x = x->next) {
            if (!x->changed)
                continue;
            x->changed = false;
            struct value *row = batch_add_row(sources);
            set_int(sources, row, "ts", now_ms);
            set_source(sources, row, x->kind, x->name);
            set_text(sources, row, "kind", source_kind_name(x->kind));
            set_text(sources, row, "name", x->name);
            set_int(sources, row, "first_seen", x->first_seen_ms);
            set_int(sources, row, "last_seen", x->last_seen_ms);
            set_int(sources, row, "interval_ms", x->interval_ms);
            set_int(sources, row, "silence_ms", x->silence_ms);
            set_int(sources, row, "rows", (int64_t)x->rows);
            set_int(sources, row, "gaps", (int64_t)x->gaps);
        }
    for (size_t i = 0; i < h->ngaps; i++) {
        const struct gap *g = &h->gaps[i];
        struct value *row = batch_add_row(gaps);
        set_int(gaps, row, "ts", g->from_ms);
        set_source(gaps, row, g->kind, g->name);
        set_int(gaps, row, "ended_at", g->to_ms);
        set_int(gaps, row, "downtime_ms", g->downtime_ms);
    }
    h->ngaps = 0;
}

static void flush(struct heartbeats *h)
{
    struct batch sources, gaps;
    batch_init(&sources, schema_table("collection_sources"));
    batch_init(&gaps, schema_table("collection_gaps"));
    pthread_mutex_lock(&h->lock);
    take_changed(h, &sources, &gaps, time_now_ms());
    pthread_mutex_unlock(&h->lock);
    struct err e;
    /* gaps first: a source row is never newer than the gaps it counts */
    if (gaps.nrows && writer_submit(h->writer, &gaps, &e) != 0)
        log_error("collection: writing %zu collection_gaps rows failed: %s", gaps.nrows, e.msg);
    if (sources.nrows && writer_submit(h->writer, &sources, &e) != 0)
        log_error("collection: writing %zu collection_sources rows failed: %s", sources.nrows,
                  e.msg);
    batch_release(&sources);
    batch_release(&gaps);
}

static void *flush_loop(void *arg)
{
    struct heartbeats *h = arg;
    pthread_mutex_lock(&h->lock);
    while (!h->stopping) {
        struct timespec until;
        time_deadline(&until, FLUSH_MS);
        pthread_cond_timedwait(&h->wake, &h->lock, &until);
        if (h->stopping)
            break;
        pthread_mutex_unlock(&h->lock);
        flush(h);
        pthread_mutex_lock(&h->lock);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

/* ---- life -------------------------------------------------------------------------------------
 */

static int64_t int_of(const struct value *v)
{
    return v->type == VAL_INT ? v->i : v->type == VAL_REAL ? (int64_t)v->d : 0;
}

/* The sources of earlier runs, so that their first heartbeat now records the silence since. */
static int load(struct heartbeats *h, struct store *s, struct err *e)
{
    struct store_query q = {"SELECT kind, name, first_seen, last_seen, interval_ms, rows, gaps"
                            " FROM collection_sources",
                            NULL,
                            0,
                            0,
                            0,
                            false};
    struct store_result res;
    struct store_reader *rd = store_reader_get(s);
    int rc = store_reader_query(rd, &q, &res, e);
    store_reader_put(s, rd);
    if (rc)
        return rc;
    for (size_t i = 0; i < res.nrows; i++) {
        const struct value *row = res.values + i * res.ncols;
        int kind = row[0].type == VAL_TEXT ? source_kind_parse(row[0].s) : -1;
        if (kind < 0 || row[1].type != VAL_TEXT)
            continue;
        struct source *x = source_get(h, (enum source_kind)kind, row[1].s);
        if (!x)
            break;
        x->first_seen_ms = int_of(&row[2]);
        x->last_seen_ms = int_of(&row[3]);
        x->interval_ms = int_of(&row[4]);
        x->silence_ms = silence_of(h, x->interval_ms);
        x->rows = (uint64_t)int_of(&row[5]);
        x->gaps = (uint64_t)int_of(&row[6]);
    }
    store_result_release(&res);
    return 0;
}

int heartbeats_new(struct heartbeats **out, struct store *s, struct writer *w,
                   const struct config *cfg, struct err *e)
{
    struct heartbeats *h = calloc(1, sizeof *h);
    if (!h)
        return err_set(e, E_NOMEM, "out of memory");
    h->writer = w;
    h->cfg = cfg;
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->wake, NULL);
    int rc = load(h, s, e);
    if (rc == 0 && pthread_create(&h->thread, NULL, flush_loop, h) != 0)
        rc = err_set(e, E_NOMEM, "collection: cannot start the heartbeat thread");
    h->started = rc == 0;
    *out = h;
    if (rc)
        heartbeats_free(out);
    return rc;
}

void heartbeats_free(struct heartbeats **hp)
{
    struct heartbeats *h = *hp;
    if (!h)
        return;
    if (h->started) {
        pthread_mutex_lock(&h->lock);
        h->stopping = true;
        pthread_cond_signal(&h->wake);
        pthread_mutex_unlock(&h->lock);
        pthread_join(h->thread, NULL);
        flush(h);
    }
    for (size_t i = 0; i < NBUCKETS; i++)
        for (struct source *x = h->buckets[i], *next; x; x = next) {
            next = x->next;
            free(x);
        }
    free(h->gaps);
    pthread_cond_destroy(&h->wake);
    pthread_mutex_destroy(&h->lock);
    free(h);
    *hp = NULL;
}
