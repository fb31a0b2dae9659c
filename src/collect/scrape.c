/*
 * Prometheus scrape jobs (scrape.h): the job list of the config file, read with every mistake
 * named by file and line, and a thread per target that fetches its page with libcurl, parses
 * it (ingest_parse_promtext) and hands the rows to the writer.
 */
#include "collect/scrape.h"
#include "core/ydoc.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_METRICS_PATH "/metrics"
#define ACCEPT_TEXT "text/plain;version=0.0.4;q=1,*/*;q=0.1"

/* ---- reading the jobs ---------------------------------------------------------------------- */

/* What a job gives all its targets. */
struct job {
    char name[128];
    char metrics_path[512];
    char scheme[8];
    char ca_file[4096]; /* tls_config.ca_file; "": the system's CAs */
    int64_t interval_ms, timeout_ms, body_limit_bytes, sample_limit;
    struct prom_label labels[SCRAPE_MAX_LABELS];
    size_t nlabels;
};

struct loader {
    struct ydoc y;
    const struct config *cfg;
    struct scrape_target *targets;
    size_t n;
};

static bool label_name_ok(const char *s)
{
    if (!*s || (s[0] >= '0' && s[0] <= '9') || strncmp(s, "__", 2) == 0)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return false;
    return true;
}

static int want_duration(struct loader *L, const yaml_node_t *v, const char *key, int64_t *ms)
{
    const char *s = ydoc_text(v);
    if (!s || !time_parse_duration(s, ms) || *ms < 100 || *ms > 86400000)
        return ydoc_fail(&L->y, v, "%s: expected a duration from 100ms to 1d, like 15s or 1m", key);
    return 0;
}

static int want_count(struct loader *L, const yaml_node_t *v, const char *key, int64_t *out)
{
    const char *s = ydoc_text(v);
    char *end;
    errno = 0;
    long long n = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || n < 1 || n > 10000000)
        return ydoc_fail(&L->y, v, "%s: expected a whole number from 1 to 10000000", key);
    *out = n;
    return 0;
}

static int want_text(struct loader *L, const yaml_node_t *v, const char *key, char *out,
                     size_t size)
{
    const char *s = ydoc_text(v);
    if (!s || !*s || strlen(s) >= size)
        return ydoc_fail(&L->y, v, "%s: expected a text of 1 to %zu bytes", key, size - 1);
    snprintf(out, size, "%s", s);
    return 0;
}

static int read_labels(struct loader *L, const yaml_node_t *map, struct job *j)
{
    if (map->type != YAML_MAPPING_NODE)
        return ydoc_fail(&L->y, map, "labels: expected a map of label names to values");
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = ydoc_node(&L->y, p->key), *v = ydoc_node(&L->y, p->value);
        const char *name = ydoc_text(k), *value = ydoc_text(v);
        if (!name || !label_name_ok(name) || strcmp(name, "job") == 0 ||
            strcmp(name, "instance") == 0)
            return ydoc_fail(
                &L->y, k,
                "labels: '%s' is not a label name a job may set ([a-zA-Z_][a-zA-Z0-9_]*, "
                "not __*, job or instance)",
                name ? name : "?");
        if (!value || strlen(value) > 1024)
            return ydoc_fail(&L->y, v, "labels: the value of %s must be a text of up to 1024 bytes",
                             name);
        if (j->nlabels == SCRAPE_MAX_LABELS)
            return ydoc_fail(&L->y, k, "labels: more than %d labels", SCRAPE_MAX_LABELS);
        j->labels[j->nlabels++] = (struct prom_label){name, value, strlen(name), strlen(value)};
    }
    return 0;
}

/* tls_config: {ca_file: FILE}, as Prometheus writes it: the CA certificates an https://
 * target's certificate is verified against. Verification cannot be turned off. */
static int read_tls_config(struct loader *L, const yaml_node_t *map, struct job *j)
{
    if (map->type != YAML_MAPPING_NODE)
        return ydoc_fail(&L->y, map, "tls_config: expected a map like {ca_file: /etc/ssl/ca.pem}");
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = ydoc_node(&L->y, p->key), *v = ydoc_node(&L->y, p->value);
        const char *key = ydoc_text(k);
        if (!key || strcmp(key, "ca_file") != 0)
            return ydoc_fail(&L->y, k,
                             "tls_config: unknown key '%s' (ca_file; certificates are always "
                             "verified)",
                             key ? key : "?");
        int rc = want_text(L, v, "tls_config.ca_file", j->ca_file, sizeof j->ca_file);
        struct err e;
        if (rc == 0 && tls_ca_file_check(j->ca_file, "tls_config.ca_file", &e) != 0)
            rc = ydoc_fail(&L->y, v, "job %s: %s", j->name[0] ? j->name : "?", e.msg);
        if (rc)
            return rc;
    }
    return 0;
}

/* One key of a job; targets are read after the job's other keys (see read_job). */
static int job_key(struct loader *L, const char *key, const yaml_node_t *v, struct job *j)
{
    if (strcmp(key, "job_name") == 0)
        return want_text(L, v, key, j->name, sizeof j->name);
    if (strcmp(key, "scrape_interval") == 0)
        return want_duration(L, v, key, &j->interval_ms);
    if (strcmp(key, "scrape_timeout") == 0)
        return want_duration(L, v, key, &j->timeout_ms);
    if (strcmp(key, "sample_limit") == 0)
        return want_count(L, v, key, &j->sample_limit);
    if (strcmp(key, "body_size_limit") == 0 || strcmp(key, "body_limit") == 0) {
        int rc = want_count(L, v, key, &j->body_limit_bytes);
        return rc                           ? rc
               : j->body_limit_bytes < 1024 ? ydoc_fail(&L->y, v, "%s: at least 1024 bytes", key)
                                            : 0;
    }
    if (strcmp(key, "metrics_path") == 0) {
        int rc = want_text(L, v, key, j->metrics_path, sizeof j->metrics_path);
        return rc                          ? rc
               : j->metrics_path[0] != '/' ? ydoc_fail(&L->y, v, "metrics_path: must start with /")
                                           : 0;
    }
    if (strcmp(key, "scheme") == 0) {
        const char *s = ydoc_text(v);
        if (!s || (strcmp(s, "http") != 0 && strcmp(s, "https") != 0))
            return ydoc_fail(&L->y, v, "scheme: expected http or https");
        snprintf(j->scheme, sizeof j->scheme, "%s", s);
        return 0;
    }
    if (strcmp(key, "labels") == 0)
        return read_labels(L, v, j);
    if (strcmp(key, "tls_config") == 0)
        return read_tls_config(L, v, j);
    if (strcmp(key, "targets") == 0 || strcmp(key, "static_configs") == 0)
        return 0;
    return ydoc_fail(&L->y, v,
                     "unknown key '%s' in a scrape job (job_name, targets, static_configs, "
                     "metrics_path, scheme, scrape_interval, scrape_timeout, labels, "
                     "sample_limit, body_size_limit, tls_config)",
                     key);
}

/* Splits a target into its URL and instance: host:port, or an http(s) URL (whose path, when it
 * has none, is the job's metrics_path). */
static bool target_url(const struct job *j, const char *t, struct scrape_target *out)
{
    const char *host = t;
    bool url = strncmp(t, "http://", 7) == 0 || strncmp(t, "https://", 8) == 0;
    if (url)
        host = strstr(t, "://") + 3;
    size_t host_len = strcspn(host, "/?#");
    const char *colon = memrchr(host, ':', host_len);
    if (host_len == 0 || host_len >= sizeof out->instance || strpbrk(t, " \t\n\"\\") ||
        (!url && (!colon || colon == host || host[host_len] != '\0')))
        return false;
    size_t port_len = url ? 1 : host_len - (size_t)(colon + 1 - host);
    if (!url && (port_len == 0 || port_len > 5 || strspn(colon + 1, "0123456789") != port_len))
        return false;
    snprintf(out->instance, sizeof out->instance, "%.*s", (int)host_len, host);
    int n = url && host[host_len] ? snprintf(out->url, sizeof out->url, "%s", t)
            : url                 ? snprintf(out->url, sizeof out->url, "%s%s", t, j->metrics_path)
                  : snprintf(out->url, sizeof out->url, "%s://%s%s", j->scheme, t, j->metrics_path);
    return n > 0 && (size_t)n < sizeof out->url;
}

/* Adds a target for each entry of the list node. */
static int add_targets(struct loader *L, const struct job *j, const yaml_node_t *list,
                       const struct job *group)
{
    if (list->type != YAML_SEQUENCE_NODE)
        return ydoc_fail(&L->y, list, "targets: expected a list of host:port or URLs");
    for (yaml_node_item_t *it = list->data.sequence.items.start; it < list->data.sequence.items.top;
         it++) {
        const yaml_node_t *v = ydoc_node(&L->y, *it);
        const char *t = ydoc_text(v);
        if (L->n == SCRAPE_MAX_TARGETS)
            return ydoc_fail(&L->y, v, "more than %d scrape targets", SCRAPE_MAX_TARGETS);
        struct scrape_target *st = &L->targets[L->n];
        memset(st, 0, sizeof *st);
        if (!t || !target_url(j, t, st))
            return ydoc_fail(&L->y, v,
                             "targets: '%s' is neither host:port nor an http:// or https:// URL",
                             t ? t : "(not a text)");
        snprintf(st->job, sizeof st->job, "%s", j->name);
        st->interval_ms = j->interval_ms;
        st->timeout_ms = j->timeout_ms;
        st->body_limit_bytes = j->body_limit_bytes;
        st->sample_limit = j->sample_limit;
        const struct job *sources[2] = {j, group};
        for (size_t s = 0; s < 2; s++)
            for (size_t i = 0; sources[s] && i < sources[s]->nlabels; i++) {
                const struct prom_label *l = &sources[s]->labels[i];
                if (st->nlabels == SCRAPE_MAX_LABELS)
                    return ydoc_fail(&L->y, v, "more than %d labels", SCRAPE_MAX_LABELS);
                st->labels[st->nlabels++] = (struct prom_label){strdup(l->name), strdup(l->value),
                                                                l->name_len, l->value_len};
            }
        st->ca_file = j->ca_file[0] ? strdup(j->ca_file) : NULL;
        L->n++;
    }
    return 0;
}

/* static_configs: [{targets: [...], labels: {...}}], as Prometheus writes them. */
static int add_static_configs(struct loader *L, const struct job *j, const yaml_node_t *list)
{
    if (list->type != YAML_SEQUENCE_NODE)
        return ydoc_fail(&L->y, list, "static_configs: expected a list of {targets, labels}");
    for (yaml_node_item_t *it = list->data.sequence.items.start; it < list->data.sequence.items.top;
         it++) {
        const yaml_node_t *g = ydoc_node(&L->y, *it);
        struct job group = {.nlabels = 0};
        const yaml_node_t *targets = ydoc_map_get(&L->y, g, "targets");
        const yaml_node_t *labels = ydoc_map_get(&L->y, g, "labels");
        if (!targets)
            return ydoc_fail(&L->y, g, "static_configs: each entry needs targets");
        int rc = labels ? read_labels(L, labels, &group) : 0;
        if (rc == 0)
            rc = add_targets(L, j, targets, &group);
        if (rc)
            return rc;
    }
    return 0;
}

static int read_job(struct loader *L, const yaml_node_t *n)
{
    struct job j = {.interval_ms = L->cfg->scrape_interval_ms,
                    .timeout_ms = -1,
                    .body_limit_bytes = L->cfg->scrape_body_limit_bytes,
                    .sample_limit = L->cfg->scrape_sample_limit,
                    .metrics_path = DEFAULT_METRICS_PATH,
                    .scheme = "http"};
    if (n->type != YAML_MAPPING_NODE)
        return ydoc_fail(&L->y, n, "a scrape job must be a map (job_name, targets, ...)");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *key = ydoc_text(ydoc_node(&L->y, p->key));
        int rc = key ? job_key(L, key, ydoc_node(&L->y, p->value), &j)
                     : ydoc_fail(&L->y, n, "a scrape job's keys must be text");
        if (rc)
            return rc;
    }
    if (!j.name[0])
        return ydoc_fail(&L->y, n, "a scrape job needs a job_name");
    for (size_t i = 0; i < L->n; i++)
        if (strcmp(L->targets[i].job, j.name) == 0)
            return ydoc_fail(&L->y, n, "job_name %s is given twice", j.name);
    if (j.timeout_ms < 0)
        j.timeout_ms =
            L->cfg->scrape_timeout_ms < j.interval_ms ? L->cfg->scrape_timeout_ms : j.interval_ms;
    if (j.timeout_ms > j.interval_ms)
        return ydoc_fail(&L->y, n, "job %s: scrape_timeout is longer than scrape_interval", j.name);
    const yaml_node_t *targets = ydoc_map_get(&L->y, n, "targets");
    const yaml_node_t *statics = ydoc_map_get(&L->y, n, "static_configs");
    if (!targets && !statics)
        return ydoc_fail(&L->y, n, "job %s has no targets", j.name);
    int rc = targets ? add_targets(L, &j, targets, NULL) : 0;
    return rc ? rc : statics ? add_static_configs(L, &j, statics) : 0;
}

void scrape_targets_free(struct scrape_target **targets, size_t n)
{
    for (size_t i = 0; *targets && i < n; i++) {
        for (size_t k = 0; k < (*targets)[i].nlabels; k++) {
            free((char *)(*targets)[i].labels[k].name);
            free((char *)(*targets)[i].labels[k].value);
        }
        free((*targets)[i].ca_file);
    }
    free(*targets);
    *targets = NULL;
}

int scrape_targets_load(const char *path, const struct config *cfg, struct scrape_target **out,
                        size_t *n, struct err *e)
{
    *out = NULL;
    *n = 0;
    if (!path || !*path)
        return 0;
    struct loader L = {.cfg = cfg};
    int rc = ydoc_load_file(&L.y, path, e);
    const yaml_node_t *list = rc == 0 ? ydoc_map_get(&L.y, ydoc_root(&L.y), "scrape") : NULL;
    if (list && list->type == YAML_MAPPING_NODE)
        list = ydoc_map_get(&L.y, list, "configs");
    if (list && list->type != YAML_SEQUENCE_NODE)
        rc = ydoc_fail(&L.y, list, "scrape.configs: expected a list of scrape jobs");
    if (rc == 0 && list) {
        L.targets = calloc(SCRAPE_MAX_TARGETS, sizeof *L.targets);
        if (!L.targets)
            abort();
        for (yaml_node_item_t *it = list->data.sequence.items.start;
             rc == 0 && it < list->data.sequence.items.top; it++)
            rc = read_job(&L, ydoc_node(&L.y, *it));
    }
    ydoc_release(&L.y);
    if (rc) {
        scrape_targets_free(&L.targets, L.n);
        return rc;
    }
    *out = L.targets;
    *n = L.n;
    return 0;
}

/* ---- scraping -------------------------------------------------------------------------------- */

/* One target's thread and what it remembers between scrapes. */
struct runner {
    struct scrapes *owner;
    const struct scrape_target *t;
    pthread_t thread;
    bool started;
    int up;                 /* of the last scrape; -1 before the first */
    bool store_failing;     /* the writer refused the last scrape's rows */
    struct rejects rejects; /* scratch of the parse (large: kept off the thread's stack) */
};

struct scrapes {
    const struct config *cfg;
    struct writer *w;
    struct heartbeats *hb;
    struct scrape_target *targets;
    size_t ntargets;
    struct runner *runners;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* on CLOCK_MONOTONIC */
    bool stopping;       /* guarded by lock; read unlocked by a transfer's progress callback */
};

/* The page of one scrape, bounded by the target's body limit. */
struct page {
    struct buf body;
    bool too_large;
    struct scrapes *owner;
};

static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct page *p = arg;
    if (buf_append(&p->body, data, size * n) != 0) {
        p->too_large = true;
        return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
    }
    return size * n;
}

/* Cuts a transfer short when the server stops. */
static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    struct page *p = arg;
    return __atomic_load_n(&p->owner->stopping, __ATOMIC_RELAXED) ? 1 : 0;
}

/* Fetches the target's page into p; 0, or -1 with the reason in why. */
static int fetch(CURL *c, const struct scrape_target *t, struct page *p, char *why, size_t size)
{
    char errbuf[CURL_ERROR_SIZE] = "", timeout_header[96];
    snprintf(timeout_header, sizeof timeout_header, "X-Prometheus-Scrape-Timeout-Seconds: %.3f",
             (double)t->timeout_ms / 1000);
    struct curl_slist *headers = curl_slist_append(NULL, "Accept: " ACCEPT_TEXT);
    headers = curl_slist_append(headers, timeout_header);
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, t->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 3L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)t->timeout_ms);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "gzip");
    curl_easy_setopt(c, CURLOPT_USERAGENT, "opsdb-scrape");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, p);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, p);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    tls_client_setup(c, t->ca_file);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    if (p->too_large)
        snprintf(why, size, "the page is larger than %lld bytes (body_size_limit)",
                 (long long)t->body_limit_bytes);
    else if (rc != CURLE_OK)
        snprintf(why, size, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
    else if (status != 200)
        snprintf(why, size, "HTTP status %ld", status);
    else
        return 0;
    return -1;
}

/* The labels the scraper gives a target's samples: job, instance, the job's labels; returns
 * their count (out has room for SCRAPE_MAX_LABELS + 3, one left for __name__). */
static size_t target_labels(const struct scrape_target *t, struct prom_label *out)
{
    size_t n = 0;
    out[n++] = (struct prom_label){"job", t->job, 3, strlen(t->job)};
    out[n++] = (struct prom_label){"instance", t->instance, 8, strlen(t->instance)};
    for (size_t i = 0; i < t->nlabels; i++)
        out[n++] = t->labels[i];
    return n;
}

/* Parses the page into b; 0, or -1 with the reason in why. r is the caller's scratch. */
static int parse_page(const struct scrape_target *t, const struct ingest_ctx *ctx,
                      const struct page *p, int64_t ts_ms, struct batch *b, struct rejects *r,
                      struct prom_stats *st, char *why, size_t size)
{
    struct prom_label labels[SCRAPE_MAX_LABELS + 3];
    struct prom_text_opts opts = {ts_ms, labels, target_labels(t, labels)};
    rejects_init(r, "line");
    int rc =
        ingest_parse_promtext(ctx, p->body.data ? p->body.data : "", p->body.len, &opts, b, r, st);
    if (rc == E_LIMIT)
        snprintf(why, size, "the page has more than %lld samples (sample_limit)",
                 (long long)t->sample_limit);
    else if (rc != 0)
        snprintf(why, size, "the page is not in the Prometheus text format: line %zu: %s",
                 r->n ? r->items[0].row : 0, r->n ? r->items[0].reason : "?");
    return rc ? -1 : 0;
}

/* up, scrape_duration_seconds, scrape_samples_scraped and scrape_samples_nonfinite of one
 * scrape, labelled like the target's samples. */
static void add_report(const struct scrape_target *t, const struct ingest_ctx *ctx, struct batch *b,
                       struct rejects *r, int64_t ts_ms, bool up, double seconds,
                       const struct prom_stats *st)
{
    const char *names[] = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                           "scrape_samples_nonfinite"};
    double values[] = {up ? 1 : 0, seconds, up ? (double)st->samples : 0,
                       up ? (double)st->nonfinite : 0};
    struct prom_label labels[SCRAPE_MAX_LABELS + 3];
    size_t n = target_labels(t, labels);
    rejects_init(r, "row");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        labels[n] = (struct prom_label){"__name__", names[i], 8, strlen(names[i])};
        ingest_prom_sample(ctx, b, labels, n + 1, ts_ms, values[i], 0, r, NULL);
    }
}

/* Logs what changed since the last scrape: down (with why), up again, the store refusing. */
static void note_state(struct runner *run, bool up, const char *why, int store_rc,
                       const struct err *store_err)
{
    const struct scrape_target *t = run->t;
    if (!up && run->up != 0)
        log_warn("scrape of %s (job %s) failed: %s; up is 0 until it succeeds", t->url, t->job,
                 why);
    else if (up && run->up == 0)
        log_info("scrape of %s (job %s) succeeds again", t->url, t->job);
    run->up = up;
    if (store_rc != 0 && !run->store_failing)
        log_error("scrape of %s (job %s): the database did not take the rows: %s", t->url, t->job,
                  store_err->msg);
    else if (store_rc == 0 && run->store_failing)
        log_info("scrape of %s (job %s): the database takes the rows again", t->url, t->job);
    run->store_failing = store_rc != 0;
}

static void scrape_once(struct runner *run, CURL *c)
{
    const struct scrape_target *t = run->t;
    struct scrapes *s = run->owner;
    int64_t ts_ms = time_now_ms(), t0 = mono_ms();
    struct page p = {.owner = s};
    buf_init(&p.body, (size_t)t->body_limit_bytes);
    struct ingest_ctx ctx;
    ingest_ctx_init(&ctx, s->cfg, NULL, PREC_MS);
    ctx.max_rows = (size_t)t->sample_limit;
    struct batch b;
    batch_init(&b, schema_table("system_metrics"));
    struct prom_stats st = {0};
    char why[400] = "";
    bool up = fetch(c, t, &p, why, sizeof why) == 0 &&
              parse_page(t, &ctx, &p, ts_ms, &b, &run->rejects, &st, why, sizeof why) == 0;
    if (!up) { /* a failed scrape stores none of its page, as Prometheus does */
        batch_release(&b);
        batch_init(&b, schema_table("system_metrics"));
    }
    size_t page_rows = b.nrows;
    add_report(t, &ctx, &b, &run->rejects, ts_ms, up, (double)(mono_ms() - t0) / 1000, &st);
    /* a scrape the server's stop cut short says nothing about the target: not stored */
    bool cut = !up && __atomic_load_n(&s->stopping, __ATOMIC_RELAXED);
    struct err e;
    err_clear(&e);
    int rc = cut ? 0 : writer_submit(s->w, &b, &e);
    if (!cut)
        note_state(run, up, why, rc, &e);
    if (up && rc == 0)
        heartbeat_note(s->hb, SOURCE_SCRAPE, t->url, t->interval_ms, page_rows);
    batch_release(&b);
    buf_release(&p.body);
}

/* Sleeps until the monotonic time until_ms or the stop; returns false at the stop. */
static bool sleep_until(struct scrapes *s, int64_t until_ms)
{
    pthread_mutex_lock(&s->lock);
    while (!s->stopping && mono_ms() < until_ms) {
        struct timespec ts = {.tv_sec = until_ms / 1000, .tv_nsec = (until_ms % 1000) * 1000000};
        pthread_cond_timedwait(&s->wake, &s->lock, &ts);
    }
    bool go_on = !s->stopping;
    pthread_mutex_unlock(&s->lock);
    return go_on;
}

static void *runner_main(void *arg)
{
    struct runner *run = arg;
    const struct scrape_target *t = run->t;
    CURL *c = curl_easy_init();
    if (!c) {
        log_error("scrape of %s (job %s): cannot start libcurl; not scraped", t->url, t->job);
        return NULL;
    }
    /* targets start spread over the interval (by their URL), so they are not all fetched at
     * the same instant, and each keeps its phase */
    int64_t next =
        mono_ms() + (int64_t)(hash64(t->url, strlen(t->url), 0) % (uint64_t)t->interval_ms);
    while (sleep_until(run->owner, next)) {
        scrape_once(run, c);
        int64_t now = mono_ms();
        while (next <= now)
            next += t->interval_ms; /* a scrape longer than the interval skips a turn */
    }
    curl_easy_cleanup(c);
    return NULL;
}

int scrapes_new(struct scrapes **out, const struct config *cfg, struct writer *w,
                struct heartbeats *hb, struct err *e)
{
    struct scrapes *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(e, E_NOMEM, "out of memory");
    s->cfg = cfg;
    s->w = w;
    s->hb = hb;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&s->wake, &a);
    pthread_condattr_destroy(&a);
    *out = s;
    int rc = scrape_targets_load(cfg->config_path, cfg, &s->targets, &s->ntargets, e);
    if (rc || s->ntargets == 0)
        return rc;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    s->runners = calloc(s->ntargets, sizeof *s->runners);
    if (!s->runners)
        return err_set(e, E_NOMEM, "out of memory");
    for (size_t i = 0; i < s->ntargets; i++) {
        struct runner *run = &s->runners[i];
        *run = (struct runner){.owner = s, .t = &s->targets[i], .up = -1};
        if (pthread_create(&run->thread, NULL, runner_main, run) != 0)
            return err_set(e, E_NOMEM, "cannot start the scrape thread of %s", run->t->url);
        run->started = true;
    }
    log_info("scraping %zu target(s) of the config's scrape jobs", s->ntargets);
    return 0;
}

void scrapes_free(struct scrapes **sp)
{
    struct scrapes *s = *sp;
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    __atomic_store_n(&s->stopping, true, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->lock);
    for (size_t i = 0; s->runners && i < s->ntargets; i++)
        if (s->runners[i].started)
            pthread_join(s->runners[i].thread, NULL);
    free(s->runners);
    scrape_targets_free(&s->targets, s->ntargets);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    free(s);
    *sp = NULL;
}
