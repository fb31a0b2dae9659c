/*
 * Tailers: `opsdb agent --tail KIND:PATH`. Each tailed file has a thread of its own that reads
 * the file every agent.tail_poll (agent/tail.h), sends the rows through a shipper of its own,
 * and saves the file's offset only once ship_send has the rows safe (acknowledged by the server
 * or durably spooled). That order is what makes a restart neither lose nor repeat lines: rows
 * read but not yet safe are read again, rows safe are not.
 *
 * A thread per file because a file is independent of the host collection and of the other
 * files: a server that is slow to answer one batch delays that file only, and each file's
 * spool replays at its own pace. A tail keeps its spool and its offset in one directory under
 * the agent's spool, tail-<hash of KIND:PATH>, so forgetting a file is removing its directory.
 *
 * A file with nothing new says it is alive (POST /api/v1/heartbeat) once per agent interval, so
 * collection_status tells an idle file from a dead agent; a file that does not exist says
 * nothing, so its absence shows as a gap.
 */
#include "agent/agent_int.h"
#include "agent/tail.h"
#include "collect/heartbeat.h"
#include "ingest/ingest.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Polls in one wake-up while the file has more (a backlog is read in 1 MiB polls): bounded so
 * that a stop is not kept waiting by a file that grows as fast as it is read. */
#define POLLS_PER_WAKE 64

struct tailer {
    struct tail *tail;
    struct shipper *sh;
    char source[SOURCE_NAME_MAX + 1];
    struct buf body;      /* the rows of the last poll, NDJSON */
    const char *table;    /* their table (static) */
    bool pending;         /* body holds rows that are not safe yet */
    struct tail_stats at; /* the tail when it last committed */
    int64_t poll_ms, alive_ms, next_alive_ms;
    uint64_t sent_at_alive; /* batches the server had taken at the last heartbeat check */
    bool alive_refused;     /* a heartbeat was refused (an older server): logged once */
    bool was_open;
    char problem[sizeof(((struct err *)0)->msg)]; /* logged once, until it changes */
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop;
};

/* ---- names ------------------------------------------------------------------------------- */

/* The source name HOST:PATH (logs.host, else this machine's name), as the rows' host column.
 * E_INVALID when it is longer than a source name may be. */
static int source_name(const char *spec, const struct config *cfg, char *out, size_t size,
                       struct err *e)
{
    char host[256] = "";
    if (cfg->logs_host[0])
        snprintf(host, sizeof host, "%s", cfg->logs_host);
    else if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        snprintf(host, sizeof host, "localhost");
    const char *path = strchr(spec, ':');
    path = path ? path + 1 : spec;
    int n = snprintf(out, size, "%s:%s", host, path);
    if (n < 0 || (size_t)n > SOURCE_NAME_MAX || (size_t)n >= size)
        return err_set(e, E_INVALID,
                       "tail '%.200s': its source name %s:PATH is longer than %d bytes (name the "
                       "file by a shorter path, a symbolic link)",
                       spec, host, SOURCE_NAME_MAX);
    return 0;
}

int agent_tail_check(const char *spec, const struct config *cfg, struct err *e)
{
    const char *colon = strchr(spec, ':');
    if (!colon || colon == spec || !colon[1])
        return err_set(e, E_INVALID, "tail '%.200s': expected KIND:PATH with KIND one of %s", spec,
                       logparser_kinds());
    char kind[32], source[SOURCE_NAME_MAX + 1];
    snprintf(kind, sizeof kind, "%.*s", (int)(colon - spec), spec);
    struct logparser *p = NULL;
    int rc = logparser_new(&p, cfg, kind, colon + 1, e);
    logparser_free(&p);
    if (rc != 0) {
        char why[sizeof e->msg];
        snprintf(why, sizeof why, "%s", e->msg);
        return err_set(e, rc, "tail '%.200s': %.300s", spec, why);
    }
    if ((rc = source_name(spec, cfg, source, sizeof source, e)) != 0)
        return rc;
    struct stat st;
    if (stat(colon + 1, &st) != 0)
        return errno == ENOENT ? 0 : err_set(e, E_IO, "tail '%s': %s", spec, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return err_set(e, E_IO, "tail '%s': %s is not a regular file", spec, colon + 1);
    if (access(colon + 1, R_OK) != 0)
        return err_set(e, E_IO, "tail '%s': cannot read %s: %s", spec, colon + 1, strerror(errno));
    return 0;
}

/* ---- one wake-up ------------------------------------------------------------------------- */

/* Logs a problem once until it changes (NULL: the problem is over). */
static void note_problem(struct tailer *t, const char *msg)
{
    if (msg && strcmp(msg, t->problem) != 0)
        log_warn("agent: tail %s: %s (tried again every poll)", tail_name(t->tail), msg);
    snprintf(t->problem, sizeof t->problem, "%s", msg ? msg : "");
}

/* Reads what is new; true when body then holds rows to send (also after a read that failed
 * part way: the rows before the failure are counted in the tail's position). */
static bool read_rows(struct tailer *t)
{
    struct err e;
    size_t rows = 0;
    t->body.len = 0;
    int rc = tail_poll(t->tail, &t->body, &t->table, &rows, &e);
    note_problem(t, rc != 0 ? e.msg : NULL);
    t->pending = rows > 0;
    return t->pending;
}

/* Sends body; true when its rows are safe, or refused (the shipper logged why; sent again they
 * would be refused again). False when they could not even be spooled: body stays pending and
 * goes with the next poll, so nothing after it is read or committed before it. */
static bool send_rows(struct tailer *t)
{
    struct err e;
    int rc = ship_send(t->sh, t->table, t->body.data, t->body.len, &e);
    if (rc != 0 && rc != E_INVALID)
        return false;
    t->pending = false;
    return true;
}

/* Saves the offset when the tail moved since it last did (rows sent, bad lines skipped, a
 * rotation followed). */
static void commit(struct tailer *t)
{
    struct tail_stats now;
    tail_get_stats(t->tail, &now);
    if (now.offset == t->at.offset && now.lines == t->at.lines && now.rows == t->at.rows &&
        now.rotations == t->at.rotations && now.truncations == t->at.truncations)
        return;
    struct err e;
    if (tail_commit(t->tail, &e) != 0) {
        log_warn("agent: tail %s: %s (a restart would read these lines again)", tail_name(t->tail),
                 e.msg);
        return;
    }
    t->at = now;
}

/* Once per agent interval: when the server has taken no rows of the file since the last time,
 * tells it the file is alive. */
static void say_alive(struct tailer *t)
{
    int64_t now = agent_mono_ms();
    if (now < t->next_alive_ms)
        return;
    t->next_alive_ms = now + t->alive_ms;
    struct ship_stats ss;
    struct tail_stats ts;
    ship_get_stats(t->sh, &ss);
    tail_get_stats(t->tail, &ts);
    bool delivered = ss.batches_sent != t->sent_at_alive;
    t->sent_at_alive = ss.batches_sent;
    struct err e;
    if (!delivered && ts.open && ship_alive(t->sh, &e) == E_INVALID && !t->alive_refused) {
        log_warn("agent: tail %s: the server refused its heartbeat (not logged again): %s",
                 tail_name(t->tail), e.msg);
        t->alive_refused = true;
    }
}

/* Logs when the file appears and disappears (waited for, as tail.h does). */
static void note_open(struct tailer *t)
{
    struct tail_stats ts;
    tail_get_stats(t->tail, &ts);
    if (ts.open && !t->was_open)
        log_info("agent: tail %s: reading from byte %" PRId64, tail_name(t->tail), ts.offset);
    else if (!ts.open && t->was_open)
        log_info("agent: tail %s: the file is gone; waiting for it to appear", tail_name(t->tail));
    t->was_open = ts.open;
}

static bool stopping(struct tailer *t)
{
    pthread_mutex_lock(&t->lock);
    bool stop = t->stop;
    pthread_mutex_unlock(&t->lock);
    return stop;
}

/* Reads, sends and commits while a poll leaves more to read (a backlog), then says it is alive
 * when due and replays the spool when a try is due. */
static void wake_up(struct tailer *t)
{
    for (int i = 0; i < POLLS_PER_WAKE && !stopping(t); i++) {
        bool rows = t->pending || read_rows(t);
        if (rows && !send_rows(t))
            return;
        commit(t);
        struct tail_stats ts;
        tail_get_stats(t->tail, &ts);
        if (!ts.more)
            break;
    }
    note_open(t);
    say_alive(t);
    if (ship_retry_in_ms(t->sh) == 0)
        ship_flush(t->sh, NULL);
}

/* ---- the thread -------------------------------------------------------------------------- */

static struct timespec mono_at(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    return ts;
}

static void *tailer_thread(void *arg)
{
    struct tailer *t = arg;
    int64_t next = agent_mono_ms();
    pthread_mutex_lock(&t->lock);
    while (!t->stop) {
        pthread_mutex_unlock(&t->lock);
        wake_up(t);
        int64_t now = agent_mono_ms();
        next += t->poll_ms;
        if (next <= now)
            next = now + t->poll_ms; /* behind: the next poll reads what came meanwhile */
        int64_t retry = ship_retry_in_ms(t->sh);
        int64_t until = retry >= 0 && now + retry < next ? now + retry : next;
        struct timespec at = mono_at(until);
        pthread_mutex_lock(&t->lock);
        while (!t->stop && pthread_cond_timedwait(&t->wake, &t->lock, &at) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

/* ---- start and stop ---------------------------------------------------------------------- */

/* Opens the tail's shipper and its tail in dir <spool>/tail-<hash>. */
static int open_parts(struct tailer *t, const struct tailer_opts *o, struct err *e)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/tail-%016llx", o->ship.spool_dir,
             (unsigned long long)hash64(o->spec, strlen(o->spec), 0));
    int rc = source_name(o->spec, o->cfg, t->source, sizeof t->source, e);
    struct ship_opts so = o->ship;
    so.spool_dir = dir;
    so.source_name = t->source;
    so.source_kind = "tail";
    so.interval_ms = o->interval_ms;
    if (rc == 0)
        rc = shipper_new(&t->sh, &so, e);
    if (rc == 0)
        rc = tail_open(&t->tail, o->spec, dir, o->cfg, e);
    if (rc == 0)
        buf_init(&t->body, tail_out_min(t->tail));
    return rc;
}

int tailer_start(struct tailer **out, const struct tailer_opts *o, struct err *e)
{
    *out = NULL;
    struct tailer *t = calloc(1, sizeof *t);
    if (!t)
        return err_set(e, E_NOMEM, "out of memory");
    t->poll_ms = o->poll_ms;
    t->alive_ms = o->interval_ms;
    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&t->wake, &attr);
    pthread_condattr_destroy(&attr);
    int rc = open_parts(t, o, e);
    if (rc == 0 && pthread_create(&t->thread, NULL, tailer_thread, t) != 0)
        rc = err_set(e, E_NOMEM, "cannot start the thread of tail %s", o->spec);
    t->started = rc == 0;
    if (rc != 0) {
        tailer_free(&t);
        return rc;
    }
    log_info("agent: tail %s: shipping its rows as source %s (kind tail), reading it every "
             "%.3g s",
             o->spec, t->source, (double)o->poll_ms / 1000.0);
    *out = t;
    return 0;
}

void tailer_ask_stop(struct tailer *t)
{
    pthread_mutex_lock(&t->lock);
    t->stop = true;
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->lock);
}

void tailer_stop(struct tailer *t)
{
    if (!t || !t->started)
        return;
    tailer_ask_stop(t);
    pthread_join(t->thread, NULL);
    t->started = false;
}

void tailer_get_stats(struct tailer *t, struct tail_stats *ts, struct ship_stats *ss)
{
    tail_get_stats(t->tail, ts);
    ship_get_stats(t->sh, ss);
}

const char *tailer_name(const struct tailer *t)
{
    return tail_name(t->tail);
}

void tailer_free(struct tailer **tp)
{
    struct tailer *t = *tp;
    if (!t)
        return;
    tailer_stop(t);
    tail_close(&t->tail);
    shipper_free(&t->sh);
    buf_release(&t->body);
    pthread_cond_destroy(&t->wake);
    pthread_mutex_destroy(&t->lock);
    free(t);
    *tp = NULL;
}
