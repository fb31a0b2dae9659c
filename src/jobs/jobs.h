/*
 * jobs/: scheduled jobs — opsdb's own maintenance (builtin jobs), the user's commands, and the
 * user's external jobs that report by pings (the way Healthchecks.io watches cron jobs).
 *
 * Every job has a schedule (cron.h) in jobs.timezone. The engine starts builtin and command jobs
 * when they are due (with jitter, an overlap policy, and one catch-up run after downtime),
 * expects a ping from external jobs by their schedule plus a grace period (else they are
 * missed), writes every run as a job_runs row and each job's live state as its scheduled_jobs
 * row. Definitions come from the builtin list the server gives and from the `jobs.definitions`
 * list of the config file; a ping for an unknown name creates an external job when
 * jobs.auto_create is on.
 */
#ifndef OPSDB_JOBS_H
#define OPSDB_JOBS_H

#include "core/core.h"

#include <stdatomic.h>

struct store;
struct writer;

/* A builtin job: a piece of opsdb's own maintenance. */
struct jobs_builtin {
    const char *name;     /* "compaction", "retention", ... */
    const char *what;     /* one line for listings */
    const char *schedule; /* cron text (cron.h), or "off": runs only when asked */
    int64_t every_ms;     /* instead of schedule when > 0: a fixed interval (below 1 s allowed) */
    /* One run: a summary of what it did into output (bounded by the engine), 0, or an error
     * (the run fails and is retried with backoff, unless it is E_CORRUPT: damaged data). A run
     * done in steps looks at *cancel between them and, once it is true, stops and returns
     * E_CANCELLED (what the steps did is kept). Called on a thread of its own; arg is the
     * builtin's. */
    int (*run)(void *arg, const atomic_bool *cancel, struct buf *output, struct err *e);
    void *arg;
};

struct jobs;

/* Reads the definitions (the builtins given, copied; the config file's jobs.definitions) and
 * the jobs' last state from scheduled_jobs. E_INVALID naming the file and line (or the builtin)
 * for a bad definition, or for a jobs.timezone that is not a time zone. s and w must outlive
 * the engine. */
int jobs_new(struct jobs **out, struct store *s, struct writer *w, const struct config *cfg,
             const struct jobs_builtin *builtins, size_t nbuiltins, struct err *e);
/* Starts the scheduler thread. */
int jobs_start(struct jobs *j, struct err *e);
/* Stops the scheduler, stops the running runs (commands get SIGTERM, builtins stop after their
 * step; recorded as failed) and waits for every run to end (its row written), then frees. */
void jobs_free(struct jobs **j);

/* ---- what the API and the CLI do ------------------------------------------------------------ */

enum jobs_ping_kind { JOBS_PING_START, JOBS_PING_SUCCESS, JOBS_PING_FAIL };

struct jobs_ping {
    enum jobs_ping_kind kind;
    bool has_exit_code;
    int exit_code;
    const char *run_id; /* pairs a start with its end; NULL: the job's oldest open run */
    const char *body;   /* the job's log tail (kept bounded); may be NULL */
    size_t body_len;
};

/* An external job reports. E_NOTFOUND for an unknown name when jobs.auto_create is off,
 * E_INVALID for a name that is not [A-Za-z0-9_.-]{1,128} or a job opsdb runs itself. */
int jobs_ping(struct jobs *j, const char *name, const struct jobs_ping *p, struct err *e);
/* Starts a builtin or command job now (E_NOTFOUND; E_CONFLICT when it is running and its
 * overlap policy is skip; queued when it is queue). An external job cannot be run (E_INVALID). */
int jobs_run_now(struct jobs *j, const char *name, struct err *e);
/* Asks the running run of a builtin or command job to stop: a command's process group gets
 * SIGTERM (SIGKILL 5 s later), a builtin stops after the step it is in (a builtin of one step
 * ends as it would). The run is recorded as cancelled (not a failure, not retried) and a run
 * queued after it is dropped. Returns once asked, not once stopped. E_NOTFOUND, E_CONFLICT when
 * it is not running, E_INVALID for an external job (it runs elsewhere). */
int jobs_cancel(struct jobs *j, const char *name, struct err *e);
/* Pauses (no runs, no missed) or resumes a job (E_NOTFOUND). */
int jobs_pause(struct jobs *j, const char *name, bool pause, struct err *e);
/* {"jobs": [...]}: each job's definition and live state (status ok, running, failed, missed,
 * paused or never; next_run_at, last_run_at, last_duration_ms, last_result,
 * consecutive_failures). With removed, also the builtin and command jobs whose definitions are
 * gone from the config (status removed); they are never run, missed or alerted on. */
void jobs_list_json(struct jobs *j, bool removed, struct buf *out);
/* {"job": name, "runs": [...]}: its last limit job_runs rows, newest first (a removed job's too;
 * E_NOTFOUND). */
int jobs_history_json(struct jobs *j, const char *name, int limit, struct buf *out, struct err *e);
/* Prometheus text lines: opsdb_job_runs_total{job,status}, opsdb_job_consecutive_failures{job},
 * opsdb_job_last_success_timestamp_seconds{job}, opsdb_job_running{job}. */
void jobs_metrics(struct jobs *j, struct buf *out);

#endif
