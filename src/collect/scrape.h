/*
 * collect/scrape: Prometheus scrape jobs. opsdb pulls the /metrics page of each configured
 * target on the target's interval, as Prometheus does, and stores its samples in
 * system_metrics, beside `up`, `scrape_duration_seconds` and `scrape_samples_scraped` of each
 * scrape. The jobs are the list `scrape.configs` of the config file (or a list right under
 * `scrape:`), shaped like Prometheus' scrape_configs:
 *
 *   scrape:
 *     interval: 15s              # default of every job (scrape.* options, docs/config.md)
 *     configs:
 *       - job_name: node
 *         scrape_interval: 5s
 *         scrape_timeout: 2s
 *         metrics_path: /metrics
 *         targets: ["10.0.0.5:9100", "http://10.0.0.6:9100/metrics"]
 *         labels: {env: prod}
 *         tls_config: {ca_file: /etc/opsdb/ca.pem}   # https:// targets are always verified
 *
 * Every target has a thread of its own: a slow target delays nobody else.
 */
#ifndef OPSDB_COLLECT_SCRAPE_H
#define OPSDB_COLLECT_SCRAPE_H

#include "collect/heartbeat.h"
#include "core/core.h"
#include "ingest/ingest.h"

/* Targets of all jobs together, at most. */
#define SCRAPE_MAX_TARGETS 1000
/* Labels a job may give its targets, at most (job and instance come on top). */
#define SCRAPE_MAX_LABELS 32

/* One target of a scrape job, as read from the configuration. */
struct scrape_target {
    char job[128];
    char url[1024];     /* what is fetched */
    char instance[256]; /* host:port of url: the instance label */
    int64_t interval_ms, timeout_ms;
    int64_t body_limit_bytes, sample_limit;
    struct prom_label labels[SCRAPE_MAX_LABELS]; /* the job's labels (strings owned by the list) */
    size_t nlabels;
    char *ca_file; /* tls_config.ca_file (owned by the list); NULL: the system's CAs */
};

/* Reads the scrape jobs of the YAML file at path (NULL or "": none) with cfg's scrape.*
 * options as defaults. Errors are E_INVALID "path:line: why" (an unknown key, a job without
 * job_name or targets, a job name given twice, a target that is no host:port or http(s) URL, a
 * bad duration, a timeout longer than the interval, a bad label, a tls_config.ca_file that is no
 * readable PEM file of certificates) or E_IO for a file that cannot
 * be read. *out is an array of *n targets; free it with scrape_targets_free(out, n). */
int scrape_targets_load(const char *path, const struct config *cfg, struct scrape_target **out,
                        size_t *n, struct err *e);
void scrape_targets_free(struct scrape_target **targets, size_t n);

struct scrapes;

/* Loads the scrape jobs of cfg->config_path (see scrape_targets_load, whose errors it returns)
 * and starts a thread per target that writes through w. w, cfg and hb (NULL: no heartbeats)
 * are borrowed and must outlive the scrapes. A failing target is logged when it goes down and
 * when it comes back, not at every scrape; a successful scrape notes a heartbeat
 * (SOURCE_SCRAPE, its URL). No jobs: nothing runs, and *out is still to be freed. */
int scrapes_new(struct scrapes **out, const struct config *cfg, struct writer *w,
                struct heartbeats *hb, struct err *e);
/* Stops the threads (a scrape under way is cut short), frees; *s becomes NULL. NULL is a
 * no-op. */
void scrapes_free(struct scrapes **s);

#endif
