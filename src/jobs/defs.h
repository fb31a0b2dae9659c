/*
 * Private to jobs/: job definitions (defs.c) — the builtin jobs the server gives, the
 * `jobs.definitions` list of the config file, and the external jobs pings created.
 *
 *   jobs:
 *     definitions:
 *       - {name: nightly-etl, command: "/usr/local/bin/etl", schedule: "30 2 * * *",
 *          timeout: 1h, overlap: skip, jitter: 1m, retries: 2}
 *       - {name: billing-export, external: true, schedule: "@daily", grace: 30m,
 *          alert_after: 3}
 */
#ifndef OPSDB_JOBS_DEFS_H
#define OPSDB_JOBS_DEFS_H

#include "jobs/cron.h"
#include "jobs/jobs.h"

#define JOB_NAME_MAX 128
#define JOB_COMMAND_MAX 4096

enum job_kind { JOB_BUILTIN, JOB_COMMAND, JOB_EXTERNAL };
enum job_overlap { OVERLAP_SKIP, OVERLAP_QUEUE };

struct job_def {
    char name[JOB_NAME_MAX + 1];
    enum job_kind kind;
    char schedule[256]; /* as written; "" or "off" = none (runs when asked, or only records
                         * pings) */
    struct cron cron;   /* when schedule is set */
    char command[JOB_COMMAND_MAX];
    int64_t timeout_ms; /* a command's limit; an external run's, start to end (0: none) */
    int64_t grace_ms;   /* an external job may report this late before it is missed */
    int64_t jitter_ms;  /* a random delay of up to this before each scheduled start */
    enum job_overlap overlap;
    int retries;     /* a failed run is retried this often, with backoff */
    int alert_after; /* consecutive failures before the default rule JobFailed fires */
    const struct jobs_builtin *builtin;
    bool auto_created; /* by a ping for an unknown name */
};

/* Reads the `jobs.definitions` list of the YAML file at config_path ("" or none: no jobs).
 * Errors name the file and line: a missing or bad name, schedule, command, duration, a name
 * given twice, or one of reserved (the builtins' names, nreserved of them). *out is malloc'd. */
int job_defs_load(const char *config_path, const char *const *reserved, size_t nreserved,
                  struct job_def **out, size_t *n, struct err *e);
/* A builtin's definition (E_INVALID naming it for a bad schedule). */
int job_def_builtin(struct job_def *d, const struct jobs_builtin *b, struct err *e);
/* The definition of an external job a ping created: checked every day, an hour of grace. */
void job_def_auto(struct job_def *d, const char *name);
/* Whether d has a schedule (else it runs only when asked, or only records pings). */
bool job_def_scheduled(const struct job_def *d);
/* [A-Za-z0-9_.-]{1,128} */
bool job_name_ok(const char *name);
const char *job_kind_name(enum job_kind k);

#endif
