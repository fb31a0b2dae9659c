/*
 * The jobs engine (jobs.h): one scheduler thread that starts what is due and notices what is
 * missed, one thread per running builtin or command job, and the pings of external jobs.
 *
 * State lives in memory under one lock; every change is also written — the job's row of
 * scheduled_jobs (upserted by name) and, when a run ends, a row of job_runs — through the
 * writer, after the lock is released (struct out).
 */
#include "jobs/command.h"
#include "jobs/defs.h"
#include "jobs/jobs.h"

#include "ingest/ingest.h"
#include "store/store.h"

#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OPEN_RUNS_MAX 16           /* external runs started and not yet ended, per job */
#define RETRY_FIRST_MS 60000       /* a failed run's first retry; doubled each time */
#define RETRY_MAX_MS (3600 * 1000) /* and at most this */
#define IDLE_WAKE_MS 60000
#define HISTORY_MAX 1000
#define CATCH_UP_DELAY_MS 60000 /* a builtin's catch-up run: at most this, and as much again */

enum run_status { RUN_OK, RUN_FAILED, RUN_MISSED, RUN_TIMEOUT, RUN_CANCELLED, NRUN_STATUS };
static const char *const run_status_names[] = {"ok", "failed", "missed", "timeout", "cancelled"};

struct open_run {
    char id[65];
    int64_t started_ms;
};

struct job {
    struct job_def d;
    bool removed; /* its definition is gone from the config: kept for its row and history */
    bool paused;
    bool running;        /* a builtin or command run's thread is on */
    bool queued;         /* overlap queue: run again when this run ends */
    atomic_bool cancel;  /* the running run should stop: asked for (jobs_cancel), or a stop */
    bool cancel_asked;   /* by jobs_cancel: a run that stops for it ends as cancelled */
    int64_t next_ms;     /* next start (builtin, command) or expected ping (external); or none */
    int64_t retry_at_ms; /* a failed run's retry; 0: none */
    int retry_attempt;
    int64_t started_ms; /* of the running run */
    char run_id[65];
    struct open_run open[OPEN_RUNS_MAX]; /* external */
    size_t nopen;
    int64_t consecutive_failures;
    int64_t last_run_ms, last_duration_ms, last_success_ms;
    char last_status[16]; /* a state of scheduled_jobs.last_status */
    uint64_t runs[NRUN_STATUS];
};

struct jobs {
    struct store *store;
    struct writer *writer;
    struct config cfg;
    struct jobs_builtin *builtins;
    size_t nbuiltins;
    struct job **jobs; /* pointers stay put while the array grows (auto-created jobs) */
    size_t n, cap;
    pthread_mutex_t lock;
    pthread_cond_t wake;    /* the scheduler: something changed */
    pthread_cond_t settled; /* jobs_free: a run ended */
    pthread_t thread;
    bool started, stopping;
    int threads; /* run threads alive */
};

/* Rows to write once the lock is released. */
struct out {
    struct batch state, runs;
};

static int64_t never(void)
{
    return INT64_MAX;
}

/* ---- rows ------------------------------------------------------------------------------------ */

static void out_init(struct out *o)
{
    batch_init(&o->state, schema_table("scheduled_jobs"));
    batch_init(&o->runs, schema_table("job_runs"));
}

static void put_text(struct batch *b, struct value *row, const char *col, const char *s, size_t n)
{
    int c = schema_column(b->table, col);
    if (c >= 0 && s)
        row[c] = (struct value){
            .s = arena_strndup(&b->arena, s, n), .len = (uint32_t)n, .type = VAL_TEXT};
}

static void put_str(struct batch *b, struct value *row, const char *col, const char *s)
{
    put_text(b, row, col, s, s ? strlen(s) : 0);
}

static void put_int(struct batch *b, struct value *row, const char *col, int64_t v)
{
    int c = schema_column(b->table, col);
    if (c >= 0)
        row[c] = (struct value){.i = v, .type = VAL_INT};
}

/* The job's row of scheduled_jobs as it is now. */
static void state_row(struct out *o, const struct job *x, int64_t now)
{
    struct batch *b = &o->state;
    struct value *row = batch_add_row(b);
    put_int(b, row, "ts", now);
    put_str(b, row, "name", x->d.name);
    put_str(b, row, "schedule", x->d.schedule);
    put_str(b, row, "kind", job_kind_name(x->d.kind));
    if (x->d.kind == JOB_COMMAND)
        put_str(b, row, "command", x->d.command);
    put_int(b, row, "timeout_s", x->d.timeout_ms / 1000);
    put_int(b, row, "grace_s", x->d.grace_ms / 1000);
    put_int(b, row, "enabled", !x->paused);
    if (x->last_run_ms)
        put_int(b, row, "last_run_at", x->last_run_ms);
    put_str(b, row, "last_status", x->last_status); /* paused is enabled = 0 */
    if (x->last_run_ms && !x->running)
        put_int(b, row, "last_duration_ms", x->last_duration_ms);
    if (x->next_ms != never())
        put_int(b, row, "next_run_at", x->next_ms);
    put_int(b, row, "consecutive_failures", x->consecutive_failures);
    put_int(b, row, "alert_after", x->d.alert_after);
}

struct run_end {
    int64_t started_ms, finished_ms; /* finished 0: a missed run */
    const char *run_id;
    enum run_status status;
    bool has_exit_code;
    int exit_code;
    const char *output;
    size_t output_len;
};

/* A run that ended: its row, and the job's state after it. */
static void run_ended(struct jobs *j, struct job *x, const struct run_end *r, struct out *o)
{
    struct batch *b = &o->runs;
    struct value *row = batch_add_row(b);
    put_int(b, row, "ts", r->started_ms);
    put_str(b, row, "job", x->d.name);
    if (r->run_id && *r->run_id)
        put_str(b, row, "run_id", r->run_id);
    put_str(b, row, "status", run_status_names[r->status]);
    if (r->finished_ms) {
        put_int(b, row, "finished_at", r->finished_ms);
        put_int(b, row, "duration_ms", r->finished_ms - r->started_ms);
    }
    if (r->has_exit_code)
        put_int(b, row, "exit_code",
                r->exit_code < -255  ? -255
                : r->exit_code > 255 ? 255
                                     : r->exit_code);
    size_t keep = (size_t)j->cfg.jobs_output_bytes;
    if (r->output && r->output_len)
        put_text(b, row, "output", r->output + (r->output_len > keep ? r->output_len - keep : 0),
                 r->output_len > keep ? keep : r->output_len);
    x->runs[r->status]++;
    x->last_run_ms = r->started_ms;
    x->last_duration_ms = r->finished_ms ? r->finished_ms - r->started_ms : 0;
    if (r->status == RUN_OK) {
        x->consecutive_failures = 0;
        x->last_success_ms = r->finished_ms;
        snprintf(x->last_status, sizeof x->last_status, "ok");
    } else if (r->status == RUN_CANCELLED) { /* asked for: neither a success nor a failure */
        snprintf(x->last_status, sizeof x->last_status, "cancelled");
    } else {
        x->consecutive_failures++;
        snprintf(x->last_status, sizeof x->last_status, "%s",
                 r->status == RUN_MISSED ? "missed" : "failed");
    }
    state_row(o, x, r->finished_ms ? r->finished_ms : time_now_ms());
}

static void out_flush(struct jobs *j, struct out *o)
{
    struct err e;
    if (o->runs.nrows && writer_submit(j->writer, &o->runs, &e) != 0)
        log_error("jobs: writing %zu job_runs rows failed: %s", o->runs.nrows, e.msg);
    if (o->state.nrows && writer_submit(j->writer, &o->state, &e) != 0)
        log_error("jobs: writing %zu scheduled_jobs rows failed: %s", o->state.nrows, e.msg);
    batch_release(&o->runs);
    batch_release(&o->state);
}

/* ---- schedules ------------------------------------------------------------------------------ */

static uint64_t jitter_of(const struct job *x)
{
    return x->d.jitter_ms > 0
               ? randombytes_uniform(
                     (uint32_t)(x->d.jitter_ms > UINT32_MAX ? UINT32_MAX : x->d.jitter_ms))
               : 0;
}

/* When a catch-up run starts: now plus the job's jitter; for a builtin (which has none) after a
 * tenth of its interval (at most CATCH_UP_DELAY_MS) plus as much again at random, so that the
 * server serves first (agents flushing their spools after a restart) and the builtins due at
 * start do not all start at once. */
static int64_t catch_up_at(const struct job *x, int64_t now)
{
    if (x->d.kind != JOB_BUILTIN)
        return now + (int64_t)jitter_of(x);
    int64_t delay = CATCH_UP_DELAY_MS;
    if (x->d.cron.every_ms > 0 && x->d.cron.every_ms / 10 < delay)
        delay = x->d.cron.every_ms / 10;
    return now + delay + (delay > 0 ? (int64_t)randombytes_uniform((uint32_t)delay) : 0);
}

/* The next time after after_ms the schedule says, plus jitter; never without a schedule. */
static int64_t next_after(const struct job *x, int64_t after_ms)
{
    if (!job_def_scheduled(&x->d))
        return never();
    int64_t t = cron_next(&x->d.cron, after_ms);
    return t == never() ? t : t + (int64_t)jitter_of(x);
}

/* The job of that name, a removed one too when removed is true. */
static struct job *find_job(struct jobs *j, const char *name, bool removed)
{
    for (size_t i = 0; i < j->n; i++)
        if (strcmp(j->jobs[i]->d.name, name) == 0 && (removed || !j->jobs[i]->removed))
            return j->jobs[i];
    return NULL;
}

/* A job that is defined (not removed). */
static struct job *find(struct jobs *j, const char *name)
{
    return find_job(j, name, false);
}

/* A new job, in the place of a removed one of the same name if there is one. */
static struct job *add_job(struct jobs *j, const struct job_def *d)
{
    struct job *old = find_job(j, d->name, true);
    if (old) { /* only a removed one: names of defined jobs are unique */
        memset(old, 0, sizeof *old);
        old->d = *d;
        old->next_ms = never();
        snprintf(old->last_status, sizeof old->last_status, "never");
        return old;
    }
    if (j->n == j->cap) {
        size_t cap = j->cap ? 2 * j->cap : 16;
        struct job **more = realloc(j->jobs, cap * sizeof *more);
        if (!more)
            return NULL;
        j->jobs = more;
        j->cap = cap;
    }
    struct job *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->d = *d;
    x->next_ms = never();
    snprintf(x->last_status, sizeof x->last_status, "never");
    j->jobs[j->n++] = x;
    return x;
}

/* ---- runs ------------------------------------------------------------------------------------ */

struct run_arg {
    struct jobs *j;
    struct job *x;
};

static void new_run_id(char out[65])
{
    unsigned char raw[8];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(out, 17, raw, sizeof raw);
}

static int64_t backoff_ms(int attempt)
{
    int64_t ms = RETRY_FIRST_MS;
    for (int i = 0; i < attempt && ms < RETRY_MAX_MS; i++)
        ms *= 2;
    return ms < RETRY_MAX_MS ? ms : RETRY_MAX_MS;
}

/* A builtin's run: its summary, and its error, into output; why gets the error for the log.
 * Returns the run's result. */
static int run_builtin(const struct job_def *d, const atomic_bool *cancel, struct buf *output,
                       char why[512])
{
    struct err e = {0};
    int rc = d->builtin->run(d->builtin->arg, cancel, output, &e);
    if (rc) {
        buf_printf(output, "%s%s%s", output->len ? "\n" : "", e.msg,
                   rc == E_CORRUPT ? "\nnot retried: the data is damaged" : "");
        snprintf(why, 512, "%s", e.msg);
    }
    return rc;
}

/* A command's run: its output into output, its exit status into r. */
static void run_command(struct jobs *j, const struct job_def *d, const char *run_id,
                        atomic_bool *cancel, struct command_result *cr, struct buf *output,
                        struct run_end *r)
{
    char name_env[200], id_env[100];
    snprintf(name_env, sizeof name_env, "OPSDB_JOB=%s", d->name);
    snprintf(id_env, sizeof id_env, "OPSDB_RUN_ID=%s", run_id);
    /* TZ as opsdb found it: jobs.timezone is the schedules' zone, not the command's */
    const char *tz = cron_original_zone();
    char tz_env[300];
    snprintf(tz_env, sizeof tz_env, "TZ%s%s", tz ? "=" : "", tz ? tz : "");
    const char *env[] = {name_env, id_env, tz_env, NULL};
    struct err e;
    if (command_run(d->command, env, d->timeout_ms, (size_t)j->cfg.jobs_output_bytes, cancel, cr,
                    &e) != 0) {
        buf_printf(output, "%s", e.msg);
        r->status = RUN_FAILED;
        return;
    }
    r->has_exit_code = true;
    r->exit_code = cr->exit_code;
    r->status = cr->timed_out ? RUN_TIMEOUT : cr->exit_code == 0 ? RUN_OK : RUN_FAILED;
    if (cr->output_dropped)
        buf_printf(output, "[%zu bytes before these]\n", cr->output_dropped);
    buf_append(output, cr->output, cr->output_len);
}

/* The log line of a run that did not end well (rc: a builtin's result). */
static void log_end(const struct job_def *d, const struct run_end *r, int rc, const char *why,
                    const struct buf *output)
{
    if (r->status == RUN_CANCELLED) {
        log_info("job %s cancelled (run %s)", d->name, r->run_id);
    } else if (why[0]) {
        log_warn("job %s failed (run %s): %s%s", d->name, r->run_id, why,
                 rc == E_CORRUPT ? " (not retried: the data is damaged)" : "");
    } else { /* a command: its output's last line says most */
        size_t end = output->len;
        while (end && (output->data[end - 1] == '\n' || output->data[end - 1] == ' '))
            end--;
        size_t start = end;
        while (start && output->data[start - 1] != '\n' && end - start < 300)
            start--;
        log_warn("job %s %s (run %s, exit %d)%s%.*s", d->name, run_status_names[r->status],
                 r->run_id, r->exit_code, end > start ? ": " : "", (int)(end - start),
                 output->data ? output->data + start : "");
    }
}

static void *run_main(void *arg)
{
    struct run_arg *ra = arg;
    struct jobs *j = ra->j;
    struct job *x = ra->x;
    free(ra);
    pthread_mutex_lock(&j->lock);
    struct job_def d = x->d;
    char run_id[65];
    snprintf(run_id, sizeof run_id, "%s", x->run_id);
    int64_t started = x->started_ms;
    pthread_mutex_unlock(&j->lock);

    struct run_end r = {.started_ms = started, .run_id = run_id};
    struct buf output;
    buf_init(&output, 1 << 20);
    struct command_result cr = {0};
    char why[512] = ""; /* a builtin's error, for the log */
    int rc = 0;         /* a builtin's */
    if (d.kind == JOB_BUILTIN) {
        rc = run_builtin(&d, &x->cancel, &output, why);
        r.status = rc ? RUN_FAILED : RUN_OK;
    } else {
        run_command(j, &d, run_id, &x->cancel, &cr, &output, &r);
    }
    r.output = output.data;
    r.output_len = output.len;

    struct out o;
    out_init(&o);
    pthread_mutex_lock(&j->lock);
    /* stopped because jobs_cancel asked: cancelled; stopped by the server's stop: failed */
    if (x->cancel_asked && (rc == E_CANCELLED || cr.cancelled))
        r.status = RUN_CANCELLED;
    x->cancel_asked = false;
    r.finished_ms = time_now_ms();
    if (r.finished_ms < r.started_ms)
        r.finished_ms = r.started_ms;
    x->running = false;
    run_ended(j, x, &r, &o);
    /* a retry meets damaged data (E_CORRUPT) again; a cancelled run is not to run */
    bool retry = r.status != RUN_OK && r.status != RUN_CANCELLED && rc != E_CORRUPT;
    if (retry && x->retry_attempt < d.retries && !j->stopping) {
        x->retry_at_ms = r.finished_ms + backoff_ms(x->retry_attempt);
        x->retry_attempt++;
    } else {
        x->retry_at_ms = 0;
        x->retry_attempt = 0;
    }
    if (r.status != RUN_OK)
        log_end(&d, &r, rc, why, &output);
    pthread_cond_broadcast(&j->wake);
    pthread_mutex_unlock(&j->lock);
    out_flush(j, &o);
    buf_release(&output);
    command_result_release(&cr);
    /* last: jobs_free() waits for this, and then the writer and the alert engine may go */
    pthread_mutex_lock(&j->lock);
    j->threads--;
    pthread_cond_broadcast(&j->settled);
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

/* Starts x on a thread of its own (under the lock). */
static int start_run(struct jobs *j, struct job *x, int64_t now, struct out *o, struct err *e)
{
    struct run_arg *ra = malloc(sizeof *ra);
    if (!ra)
        return err_set(e, E_NOMEM, "out of memory");
    *ra = (struct run_arg){j, x};
    x->running = true;
    x->started_ms = now;
    new_run_id(x->run_id);
    atomic_store(&x->cancel, false);
    x->cancel_asked = false;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int rc = pthread_create(&t, &attr, run_main, ra);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        free(ra);
        x->running = false;
        return err_set(e, E_NOMEM, "cannot start a thread for job %s", x->d.name);
    }
    j->threads++;
    snprintf(x->last_status, sizeof x->last_status, "running");
    x->last_run_ms = now;
    state_row(o, x, now);
    return 0;
}

/* ---- the scheduler ----------------------------------------------------------------------------
 */

/* An external job that did not report by its deadline, and runs open past their timeout. */
static int64_t watch_external(struct jobs *j, struct job *x, int64_t now, struct out *o)
{
    int64_t wake = never();
    for (size_t i = 0; i < x->nopen;) {
        struct open_run *r = &x->open[i];
        if (x->d.timeout_ms > 0 && now >= r->started_ms + x->d.timeout_ms) {
            char why[120];
            int n = snprintf(why, sizeof why, "no end ping within the timeout (%llds)",
                             (long long)(x->d.timeout_ms / 1000));
            run_ended(
                j, x,
                &(struct run_end){r->started_ms, now, r->id, RUN_TIMEOUT, false, 0, why, (size_t)n},
                o);
            x->open[i] = x->open[--x->nopen];
            continue;
        }
        if (x->d.timeout_ms > 0 && r->started_ms + x->d.timeout_ms < wake)
            wake = r->started_ms + x->d.timeout_ms;
        i++;
    }
    if (x->next_ms == never())
        return wake;
    int64_t deadline = x->next_ms + x->d.grace_ms;
    if (now < deadline)
        return deadline < wake ? deadline : wake;
    char why[160], at[40];
    time_format_rfc3339(deadline, at, sizeof at);
    int n = snprintf(why, sizeof why, "no ping by %s (schedule %s, grace %llds)", at, x->d.schedule,
                     (long long)(x->d.grace_ms / 1000));
    run_ended(j, x, &(struct run_end){x->next_ms, 0, NULL, RUN_MISSED, false, 0, why, (size_t)n},
              o);
    x->next_ms = next_after(x, x->next_ms);
    if (x->next_ms <= now) /* slots missed one after the other: the next one still to come */
        x->next_ms = next_after(x, now);
    state_row(o, x, now);
    return x->next_ms == never() ? wake : x->next_ms + x->d.grace_ms;
}

/* A builtin or command job: started when due. */
static int64_t run_due(struct jobs *j, struct job *x, int64_t now, struct out *o)
{
    bool retry = x->retry_at_ms && now >= x->retry_at_ms;
    bool scheduled = x->next_ms != never() && now >= x->next_ms;
    if (scheduled)
        x->next_ms = next_after(x, now);
    if (retry)
        x->retry_at_ms = 0;
    if (retry || scheduled) {
        struct err e;
        if (x->running && x->d.overlap == OVERLAP_QUEUE)
            x->queued = true;
        else if (x->running)
            log_info("job %s is still running: this start is skipped (overlap: skip)", x->d.name);
        else if (start_run(j, x, now, o, &e) != 0)
            log_error("jobs: %s", e.msg);
        if (!x->running)
            state_row(o, x, now);
    }
    if (!x->running && x->queued) {
        x->queued = false;
        struct err e;
        if (start_run(j, x, now, o, &e) != 0)
            log_error("jobs: %s", e.msg);
    }
    int64_t wake = x->next_ms;
    if (x->retry_at_ms && x->retry_at_ms < wake)
        wake = x->retry_at_ms;
    return wake;
}

static void *scheduler_main(void *arg)
{
    struct jobs *j = arg;
    pthread_mutex_lock(&j->lock);
    while (!j->stopping) {
        int64_t now = time_now_ms(), wake = now + IDLE_WAKE_MS;
        struct out o;
        out_init(&o);
        for (size_t i = 0; i < j->n; i++) {
            struct job *x = j->jobs[i];
            if (x->paused || x->removed)
                continue;
            int64_t t =
                x->d.kind == JOB_EXTERNAL ? watch_external(j, x, now, &o) : run_due(j, x, now, &o);
            if (t < wake)
                wake = t;
        }
        if (o.state.nrows || o.runs.nrows) {
            pthread_mutex_unlock(&j->lock);
            out_flush(j, &o);
            pthread_mutex_lock(&j->lock);
            continue; /* time went on while writing */
        }
        out_flush(j, &o);
        if (wake > now && !j->stopping) {
            struct timespec until;
            time_deadline(&until, wake - now);
            pthread_cond_timedwait(&j->wake, &j->lock, &until);
        }
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

/* ---- setting up --------------------------------------------------------------------------- */

static int read_rows(struct jobs *j, const char *sql, struct store_result *res, struct err *e)
{
    struct store_query q = {sql, NULL, 0, j->cfg.query_timeout_ms, HISTORY_MAX * 10, false};
    struct store_reader *rd = store_reader_get(j->store);
    int rc = store_reader_query(rd, &q, res, e);
    store_reader_put(j->store, rd);
    return rc;
}

/* A builtin or command job whose row is in scheduled_jobs but whose definition is gone: kept
 * as removed (never scheduled, run, missed or alerted on; its history stays readable), its row
 * marked so in o unless it was already. */
static void add_removed(struct jobs *j, const struct value *row, int64_t now, struct out *o)
{
    struct job_def d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "%.*s", (int)row[0].len, row[0].s);
    d.kind = strcmp(row[1].s, "builtin") == 0 ? JOB_BUILTIN : JOB_COMMAND;
    if (row[2].type == VAL_TEXT)
        snprintf(d.schedule, sizeof d.schedule, "%.*s", (int)row[2].len, row[2].s);
    if (row[10].type == VAL_TEXT)
        snprintf(d.command, sizeof d.command, "%.*s", (int)row[10].len, row[10].s);
    d.grace_ms = row[3].type == VAL_INT ? row[3].i * 1000 : 0;
    d.timeout_ms = row[11].type == VAL_INT ? row[11].i * 1000 : 0;
    d.alert_after = row[12].type == VAL_INT ? (int)row[12].i : 1;
    struct job *x = add_job(j, &d);
    if (!x)
        return;
    x->removed = true;
    snprintf(x->last_status, sizeof x->last_status, "removed");
    if (row[6].type == VAL_TEXT && strcmp(row[6].s, "removed") == 0)
        return;
    log_info("job %s is no longer defined: marked removed (its runs stay in job_runs)", d.name);
    state_row(o, x, now);
}

/* The jobs' last state from scheduled_jobs: paused, failures, last run; one catch-up run for a
 * job whose start fell while opsdb was down; external jobs pings created come back; the rows
 * of definitions since removed are marked removed (rows for o). */
static void restore(struct jobs *j, int64_t now, struct out *o)
{
    struct store_result res;
    struct err e;
    if (read_rows(j,
                  "SELECT name, kind, schedule, grace_s, enabled, last_run_at, last_status,"
                  " last_duration_ms, next_run_at, consecutive_failures, command, timeout_s,"
                  " alert_after FROM scheduled_jobs",
                  &res, &e) != 0) {
        log_error("jobs: reading scheduled_jobs failed: %s", e.msg);
        store_result_release(&res);
        return;
    }
    for (size_t i = 0; i < res.nrows; i++) {
        const struct value *row = res.values + i * res.ncols;
        if (row[0].type != VAL_TEXT || row[1].type != VAL_TEXT)
            continue;
        struct job *x = find(j, row[0].s);
        if (!x && strcmp(row[1].s, "external") == 0 && job_name_ok(row[0].s)) {
            struct job_def d;
            job_def_auto(&d, row[0].s);
            x = add_job(j, &d);
        }
        if (!x) {
            if (job_name_ok(row[0].s))
                add_removed(j, row, now, o);
            continue;
        }
        x->paused = row[4].type == VAL_INT && row[4].i == 0;
        x->last_run_ms = row[5].type == VAL_INT ? row[5].i : 0;
        if (row[6].type == VAL_TEXT && strcmp(row[6].s, "paused") != 0 &&
            strcmp(row[6].s, "running") != 0 && strcmp(row[6].s, "removed") != 0)
            snprintf(x->last_status, sizeof x->last_status, "%s", row[6].s);
        else if (row[6].type == VAL_TEXT && strcmp(row[6].s, "running") == 0)
            snprintf(x->last_status, sizeof x->last_status, "failed"); /* cut by the stop */
        x->last_duration_ms = row[7].type == VAL_INT ? row[7].i : 0;
        x->consecutive_failures = row[9].type == VAL_INT ? row[9].i : 0;
        int64_t stored_next = row[8].type == VAL_INT ? row[8].i : 0;
        if (x->d.kind == JOB_EXTERNAL && stored_next)
            x->next_ms = stored_next; /* pings due while down are still expected */
        else if (stored_next && stored_next < now && job_def_scheduled(&x->d))
            x->next_ms = catch_up_at(x, now); /* one catch-up run */
    }
    store_result_release(&res);
}

/* A builtin on an interval (compaction, retention, ...) counts from its last start, kept over
 * restarts: one that never ran, or whose last start is an interval or more ago, runs soon after
 * start, not a whole interval later. (A command job's first run comes one interval after it is
 * defined, as `@every` says.) */
static void first_runs(struct jobs *j, int64_t now)
{
    for (size_t i = 0; i < j->n; i++) {
        struct job *x = j->jobs[i];
        if (x->d.kind != JOB_BUILTIN || x->d.cron.every_ms <= 0 || !job_def_scheduled(&x->d))
            continue;
        int64_t due = x->last_run_ms ? x->last_run_ms + x->d.cron.every_ms : now;
        x->next_ms = due <= now ? catch_up_at(x, now) : due;
    }
}

int jobs_new(struct jobs **out, struct store *s, struct writer *w, const struct config *cfg,
             const struct jobs_builtin *builtins, size_t nbuiltins, struct err *e)
{
    int rc = cron_set_zone(cfg->jobs_timezone, e);
    if (rc)
        return rc;
    struct jobs *j = calloc(1, sizeof *j);
    if (!j)
        return err_set(e, E_NOMEM, "out of memory");
    j->store = s;
    j->writer = w;
    j->cfg = *cfg;
    pthread_mutex_init(&j->lock, NULL);
    pthread_cond_init(&j->wake, NULL);
    pthread_cond_init(&j->settled, NULL);
    j->builtins = calloc(nbuiltins + 1, sizeof *j->builtins);
    const char **names = calloc(nbuiltins + 1, sizeof *names);
    if (!j->builtins || !names)
        rc = err_set(e, E_NOMEM, "out of memory");
    for (size_t i = 0; rc == 0 && i < nbuiltins; i++) {
        j->builtins[i] = builtins[i];
        names[i] = builtins[i].name;
        struct job_def d;
        rc = job_def_builtin(&d, &j->builtins[i], e);
        if (rc == 0 && !add_job(j, &d))
            rc = err_set(e, E_NOMEM, "out of memory");
    }
    j->nbuiltins = nbuiltins;
    struct job_def *defs = NULL;
    size_t ndefs = 0;
    if (rc == 0)
        rc = job_defs_load(cfg->config_path, names, nbuiltins, &defs, &ndefs, e);
    for (size_t i = 0; rc == 0 && i < ndefs; i++)
        if (!add_job(j, &defs[i]))
            rc = err_set(e, E_NOMEM, "out of memory");
    free(defs);
    free(names);
    if (rc) {
        jobs_free(&j);
        return rc;
    }
    int64_t now = time_now_ms();
    for (size_t i = 0; i < j->n; i++)
        j->jobs[i]->next_ms = next_after(j->jobs[i], now);
    struct out o;
    out_init(&o);
    restore(j, now, &o);
    first_runs(j, now);
    for (size_t i = 0; i < j->n; i++)
        if (!j->jobs[i]->removed)
            state_row(&o, j->jobs[i], now);
    out_flush(j, &o);
    *out = j;
    return 0;
}

int jobs_start(struct jobs *j, struct err *e)
{
    if (pthread_create(&j->thread, NULL, scheduler_main, j) != 0)
        return err_set(e, E_NOMEM, "cannot start the jobs thread");
    j->started = true;
    return 0;
}

void jobs_free(struct jobs **jp)
{
    struct jobs *j = *jp;
    if (!j)
        return;
    pthread_mutex_lock(&j->lock);
    j->stopping = true;
    for (size_t i = 0; i < j->n; i++)
        atomic_store(&j->jobs[i]->cancel, true);
    pthread_cond_broadcast(&j->wake);
    pthread_mutex_unlock(&j->lock);
    if (j->started)
        pthread_join(j->thread, NULL);
    pthread_mutex_lock(&j->lock);
    while (j->threads > 0) /* each writes its run's row */
        pthread_cond_wait(&j->settled, &j->lock);
    pthread_mutex_unlock(&j->lock);
    for (size_t i = 0; i < j->n; i++)
        free(j->jobs[i]);
    free(j->jobs);
    free(j->builtins);
    pthread_mutex_destroy(&j->lock);
    pthread_cond_destroy(&j->wake);
    pthread_cond_destroy(&j->settled);
    free(j);
    *jp = NULL;
}

/* ---- pings, run now, pause ------------------------------------------------------------------ */

int jobs_ping(struct jobs *j, const char *name, const struct jobs_ping *p, struct err *e)
{
    if (!job_name_ok(name))
        return err_set(e, E_INVALID,
                       "'%.60s' is not a job name (1 to %d letters, digits, _ . or -)", name,
                       JOB_NAME_MAX);
    if (p->run_id && (strlen(p->run_id) > 64 || !*p->run_id))
        return err_set(e, E_INVALID, "run_id: at most 64 bytes");
    struct out o;
    out_init(&o);
    int64_t now = time_now_ms();
    int rc = 0;
    pthread_mutex_lock(&j->lock);
    struct job *x = find(j, name);
    if (!x && strcmp(j->cfg.jobs_auto_create, "on") == 0) {
        struct job_def d;
        job_def_auto(&d, name);
        if ((x = add_job(j, &d)) != NULL) {
            x->next_ms = next_after(x, now);
            log_info("job %s created by its first ping (jobs.auto_create)", name);
        }
    }
    if (!x)
        rc = err_set(e, E_NOTFOUND,
                     "no job '%s' (define it in jobs.definitions, or set jobs.auto_create: on)",
                     name);
    else if (x->d.kind != JOB_EXTERNAL)
        rc = err_set(e, E_INVALID,
                     "job %s is a %s job opsdb runs itself; pings are for external "
                     "jobs",
                     name, job_kind_name(x->d.kind));
    if (rc == 0 && p->kind == JOBS_PING_START) {
        size_t k = 0;
        while (k < x->nopen && !(p->run_id && strcmp(x->open[k].id, p->run_id) == 0))
            k++;
        if (k == x->nopen) { /* a new run; the oldest open one goes when there are too many */
            if (x->nopen == OPEN_RUNS_MAX) {
                memmove(x->open, x->open + 1, (OPEN_RUNS_MAX - 1) * sizeof *x->open);
                x->nopen--;
                k = x->nopen;
            }
            x->nopen++;
        }
        if (p->run_id)
            snprintf(x->open[k].id, sizeof x->open[k].id, "%s", p->run_id);
        else
            new_run_id(x->open[k].id);
        x->open[k].started_ms = now;
        snprintf(x->last_status, sizeof x->last_status, "running");
        x->last_run_ms = now;
        state_row(&o, x, now);
    } else if (rc == 0) {
        /* the run it ends: by run id, else the oldest open one, else a run of no length */
        size_t k = 0;
        while (k < x->nopen && p->run_id && strcmp(x->open[k].id, p->run_id) != 0)
            k++;
        struct open_run r = {"", now};
        if (k < x->nopen) {
            r = x->open[k];
            x->open[k] = x->open[--x->nopen];
        } else if (p->run_id) {
            snprintf(r.id, sizeof r.id, "%s", p->run_id);
        }
        bool ok = p->kind == JOBS_PING_SUCCESS;
        run_ended(j, x,
                  &(struct run_end){r.started_ms, now, r.id, ok ? RUN_OK : RUN_FAILED,
                                    p->has_exit_code, p->exit_code, p->body, p->body_len},
                  &o);
        x->next_ms = next_after(x, now);
        /* run_ended wrote the state before the next expected ping moved: write it again */
        o.state.nrows--;
        state_row(&o, x, now);
    }
    pthread_cond_broadcast(&j->wake);
    pthread_mutex_unlock(&j->lock);
    out_flush(j, &o);
    return rc;
}

/* The builtin or command job of that name (under the lock), or NULL with e set: E_NOTFOUND, or
 * E_INVALID for an external job (why: what cannot be done with it). */
static struct job *find_run_by_opsdb(struct jobs *j, const char *name, const char *why,
                                     struct err *e)
{
    struct job *x = find(j, name);
    if (!x)
        err_set(e, E_NOTFOUND, "no job '%.128s' (GET /api/v1/jobs lists them)", name);
    else if (x->d.kind == JOB_EXTERNAL)
        err_set(e, E_INVALID, "job %s is external: it runs elsewhere%s", name, why);
    return x && x->d.kind != JOB_EXTERNAL ? x : NULL;
}

int jobs_run_now(struct jobs *j, const char *name, struct err *e)
{
    struct out o;
    out_init(&o);
    int rc = 0;
    pthread_mutex_lock(&j->lock);
    struct job *x = find_run_by_opsdb(j, name, " and reports by pings", e);
    if (!x)
        rc = e->code;
    else if (x->running && x->d.overlap == OVERLAP_SKIP)
        rc = err_set(e, E_CONFLICT,
                     "job %s is running (since its run %s started); its overlap "
                     "policy is skip",
                     name, x->run_id);
    else if (x->running)
        x->queued = true;
    else
        rc = start_run(j, x, time_now_ms(), &o, e);
    pthread_cond_broadcast(&j->wake);
    pthread_mutex_unlock(&j->lock);
    out_flush(j, &o);
    return rc;
}

int jobs_cancel(struct jobs *j, const char *name, struct err *e)
{
    int rc = 0;
    pthread_mutex_lock(&j->lock);
    struct job *x = find_run_by_opsdb(j, name, ", and opsdb cannot stop it", e);
    if (!x)
        rc = e->code;
    else if (!x->running)
        rc = err_set(e, E_CONFLICT, "job %s is not running: there is no run to cancel", name);
    if (rc == 0) {
        x->cancel_asked = true;
        x->queued = false;
        atomic_store(&x->cancel, true);
        log_info("job %s: cancel of run %s asked for", name, x->run_id);
    }
    pthread_mutex_unlock(&j->lock);
    return rc;
}

int jobs_pause(struct jobs *j, const char *name, bool pause, struct err *e)
{
    struct out o;
    out_init(&o);
    int rc = 0;
    int64_t now = time_now_ms();
    pthread_mutex_lock(&j->lock);
    struct job *x = find(j, name);
    if (!x) {
        rc = err_set(e, E_NOTFOUND, "no job '%.128s' (GET /api/v1/jobs lists them)", name);
    } else if (x->paused != pause) {
        x->paused = pause;
        if (!pause) /* from now on: what fell due while paused is neither run nor missed */
            x->next_ms = next_after(x, now);
        state_row(&o, x, now);
    }
    pthread_cond_broadcast(&j->wake);
    pthread_mutex_unlock(&j->lock);
    out_flush(j, &o);
    return rc;
}

/* ---- what is shown ------------------------------------------------------------------------ */

static json_t *time_json(int64_t ms)
{
    char t[40];
    if (!ms || ms == never())
        return json_null();
    time_format_rfc3339(ms, t, sizeof t);
    return json_string(t);
}

static const char *status_of(const struct job *x, int64_t now)
{
    if (x->removed)
        return "removed";
    if (x->paused)
        return "paused";
    if (x->running || x->nopen)
        return "running";
    if (x->d.kind == JOB_EXTERNAL && x->next_ms != never() && now >= x->next_ms + x->d.grace_ms)
        return "missed";
    return x->last_status;
}

void jobs_list_json(struct jobs *j, bool removed, struct buf *out)
{
    json_t *list = json_array();
    int64_t now = time_now_ms();
    pthread_mutex_lock(&j->lock);
    for (size_t i = 0; i < j->n; i++) {
        const struct job *x = j->jobs[i];
        if (x->removed && !removed)
            continue;
        json_t *o = json_pack(
            "{s:s, s:s, s:s, s:s, s:o, s:o, s:I, s:I, s:b, s:I, s:s}", "name", x->d.name, "kind",
            job_kind_name(x->d.kind), "schedule", x->d.schedule, "status", status_of(x, now),
            "next_run_at", time_json(x->paused ? 0 : x->next_ms), "last_run_at",
            time_json(x->last_run_ms), "last_duration_ms", (json_int_t)x->last_duration_ms,
            "consecutive_failures", (json_int_t)x->consecutive_failures, "paused", x->paused,
            "alert_after", (json_int_t)x->d.alert_after, "overlap",
            x->d.overlap == OVERLAP_QUEUE ? "queue" : "skip");
        if (x->d.kind == JOB_BUILTIN)
            json_object_set_new(o, "what", json_string(x->d.builtin->what));
        if (x->d.kind == JOB_COMMAND)
            json_object_set_new(o, "command", json_string(x->d.command));
        if (x->d.timeout_ms)
            json_object_set_new(o, "timeout_s", json_integer(x->d.timeout_ms / 1000));
        if (x->d.kind == JOB_EXTERNAL)
            json_object_set_new(o, "grace_s", json_integer(x->d.grace_ms / 1000));
        if (x->running)
            json_object_set_new(o, "running_since", time_json(x->started_ms));
        if (x->retry_at_ms)
            json_object_set_new(o, "retry_at", time_json(x->retry_at_ms));
        if (x->d.auto_created)
            json_object_set_new(o, "auto_created", json_true());
        json_array_append_new(list, o);
    }
    pthread_mutex_unlock(&j->lock);
    json_t *doc = json_pack("{s:o}", "jobs", list);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (text)
        buf_append(out, text, strlen(text));
    free(text);
}

int jobs_history_json(struct jobs *j, const char *name, int limit, struct buf *out, struct err *e)
{
    pthread_mutex_lock(&j->lock);
    bool known = find_job(j, name, true) != NULL;
    pthread_mutex_unlock(&j->lock);
    if (!known)
        return err_set(e, E_NOTFOUND, "no job '%.128s' (GET /api/v1/jobs lists them)", name);
    if (limit < 1 || limit > HISTORY_MAX)
        return err_set(e, E_INVALID, "limit: expected 1 to %d", HISTORY_MAX);
    struct store_param params[] = {{"job", true, 0, name}, {"limit", false, limit, NULL}};
    struct store_query q = {"SELECT ts, run_id, status, finished_at, duration_ms, exit_code,"
                            " output FROM job_runs WHERE job = :job ORDER BY ts DESC LIMIT :limit",
                            params,
                            2,
                            j->cfg.query_timeout_ms,
                            HISTORY_MAX,
                            false};
    struct store_result res;
    struct store_reader *rd = store_reader_get(j->store);
    int rc = store_reader_query(rd, &q, &res, e);
    store_reader_put(j->store, rd);
    if (rc) {
        store_result_release(&res);
        return rc;
    }
    json_t *runs = json_array();
    for (size_t i = 0; i < res.nrows; i++) {
        const struct value *row = res.values + i * res.ncols;
        json_t *r = json_object();
        json_object_set_new(r, "started_at", time_json(row[0].type == VAL_INT ? row[0].i : 0));
        json_object_set_new(r, "run_id",
                            row[1].type == VAL_TEXT ? json_stringn(row[1].s, row[1].len)
                                                    : json_null());
        json_object_set_new(r, "status",
                            row[2].type == VAL_TEXT ? json_stringn(row[2].s, row[2].len)
                                                    : json_null());
        json_object_set_new(r, "finished_at", time_json(row[3].type == VAL_INT ? row[3].i : 0));
        json_object_set_new(r, "duration_ms",
                            row[4].type == VAL_INT ? json_integer(row[4].i) : json_null());
        json_object_set_new(r, "exit_code",
                            row[5].type == VAL_INT ? json_integer(row[5].i) : json_null());
        json_object_set_new(r, "output",
                            row[6].type == VAL_TEXT ? json_stringn(row[6].s, row[6].len)
                                                    : json_null());
        json_array_append_new(runs, r);
    }
    store_result_release(&res);
    json_t *doc = json_pack("{s:s, s:o}", "job", name, "runs", runs);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (text)
        buf_append(out, text, strlen(text));
    free(text);
    return 0;
}

void jobs_metrics(struct jobs *j, struct buf *out)
{
    buf_printf(out, "# HELP opsdb_job_runs_total Runs of each job by how they ended.\n"
                    "# TYPE opsdb_job_runs_total counter\n");
    pthread_mutex_lock(&j->lock);
    for (size_t i = 0; i < j->n; i++)
        for (int s = 0; s < NRUN_STATUS && !j->jobs[i]->removed; s++)
            buf_printf(out, "opsdb_job_runs_total{job=\"%s\",status=\"%s\"} %llu\n",
                       j->jobs[i]->d.name, run_status_names[s],
                       (unsigned long long)j->jobs[i]->runs[s]);
    buf_printf(out, "# HELP opsdb_job_consecutive_failures Failed or missed runs in a row.\n"
                    "# TYPE opsdb_job_consecutive_failures gauge\n");
    for (size_t i = 0; i < j->n; i++)
        if (!j->jobs[i]->removed)
            buf_printf(out, "opsdb_job_consecutive_failures{job=\"%s\"} %lld\n", j->jobs[i]->d.name,
                       (long long)j->jobs[i]->consecutive_failures);
    buf_printf(out, "# HELP opsdb_job_last_success_timestamp_seconds When each job last "
                    "succeeded (0: not since opsdb started).\n"
                    "# TYPE opsdb_job_last_success_timestamp_seconds gauge\n");
    for (size_t i = 0; i < j->n; i++)
        if (!j->jobs[i]->removed)
            buf_printf(out, "opsdb_job_last_success_timestamp_seconds{job=\"%s\"} %.3f\n",
                       j->jobs[i]->d.name, (double)j->jobs[i]->last_success_ms / 1000);
    buf_printf(out, "# HELP opsdb_job_running Whether each job is running.\n"
                    "# TYPE opsdb_job_running gauge\n");
    for (size_t i = 0; i < j->n; i++)
        if (!j->jobs[i]->removed)
            buf_printf(out, "opsdb_job_running{job=\"%s\"} %d\n", j->jobs[i]->d.name,
                       j->jobs[i]->running || j->jobs[i]->nopen ? 1 : 0);
    pthread_mutex_unlock(&j->lock);
}
