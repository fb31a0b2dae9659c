/*
 * opsdb serve: opens (creating or migrating) the database, starts the writer and the HTTP
 * server, and runs until SIGINT or SIGTERM, then drains: no acknowledged row is lost and no
 * queued row is left uncommitted. SIGHUP reopens the log file (log.file), reloads the alert
 * rules and receivers and rereads the HTTPS certificate (tls.cert, tls.key), and serving goes
 * on.
 */
#include "agent/agent.h"
#include "alert/alert.h"
#include "auth/auth.h"
#include "backup/backup.h"
#include "cli/cli.h"
#include "collect/graphite.h"
#include "collect/heartbeat.h"
#include "collect/scrape.h"
#include "collect/syslog.h"
#include "http/http.h"
#include "ingest/ingest.h"
#include "jobs/builtin.h"
#include "jobs/jobs.h"
#include "query/query.h"
#include "store/store.h"

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

/* The subsystems of a running server, owned here and passed explicitly (no globals). */
struct server {
    struct config cfg;
    struct store *store;
    struct fingerprint_rules *fingerprints;
    struct writer *writer;
    struct query_cache *cache;
    struct alert_engine *alerts;
    struct jobs *jobs;
    struct jobs_maintenance maintenance; /* what the builtin jobs work on */
    struct backup_jobs backups;
    struct heartbeats *heartbeats; /* which sources deliver data (collection_status) */
    struct self_collection *self;  /* this host's metrics and the server's health */
    struct scrapes *scrapes;       /* the Prometheus scrape jobs of the config file */
    /* the syslog and Graphite receivers (syslog.*, graphite.*); NULL when off */
    struct syslog_receiver *syslog;
    struct graphite_receiver *graphite;
    struct http_server *http;
    struct auth *auth;        /* tokens, roles and the audit log of the HTTP API */
    enum auth_mode auth_mode; /* resolved from auth.mode and the listen address */
};

/* After-commit hook: the committed tables' cached answers are stale from now on. */
static void invalidate_cache(void *arg, const struct batch *const *batches, size_t n)
{
    struct query_cache *cache = arg;
    size_t ntables;
    const struct table *tables = schema_tables(&ntables);
    if (n == 0) /* another process wrote: which tables is unknown */
        for (size_t t = 0; t < ntables; t++)
            query_cache_bump(cache, t);
    for (size_t i = 0; i < n; i++)
        query_cache_bump(cache, (size_t)(batches[i]->table - tables));
}

/* SIGHUP: what can be picked up again without a restart is, here, one line each. */
static void server_reload(struct server *srv)
{
    struct err e;
    if (srv->cfg.log_file[0] == '\0')
        log_info("SIGHUP: no log.file set, nothing to reopen");
    else if (log_reopen(&e) != 0)
        log_error("SIGHUP: %s; lines still go to the file open before", e.msg);
    else
        log_info("SIGHUP: log file reopened");
    if (alert_engine_reload(srv->alerts, &e) != 0)
        log_error("SIGHUP: the alert rules were not reloaded: %s; the rules loaded before still "
                  "run",
                  e.msg);
    if (http_tls_reload(srv->http, &e) != 0)
        log_error("SIGHUP: %s; new connections still get the certificate loaded before", e.msg);
}

static int server_start(struct server *srv)
{
    struct err e;
    if (store_open(&srv->store, &srv->cfg, STORE_READWRITE, &e) != 0)
        return cli_fail("%s", e.msg);
    srv->fingerprints = config_fingerprint_rules(&srv->cfg, &e);
    if (!srv->fingerprints)
        return cli_fail("%s", e.msg);
    if (writer_new(&srv->writer, srv->store, &srv->cfg, &e) != 0)
        return cli_fail("%s", e.msg);
    srv->cache = query_cache_new((size_t)srv->cfg.query_cache_bytes);
    writer_on_commit(srv->writer, invalidate_cache, srv->cache);
    if (auth_new(&srv->auth, srv->store, srv->writer, srv->auth_mode, &e) != 0)
        return cli_fail("%s", e.msg);
    writer_on_commit(srv->writer, auth_on_commit, srv->auth);
    auth_set_session_ttl(srv->auth, srv->cfg.auth_session_ttl_ms);
    if (alert_engine_new(&srv->alerts, srv->store, srv->writer, &srv->cfg, &e) != 0)
        return cli_fail("%s", e.msg);
    writer_on_commit(srv->writer, alert_engine_on_commit, srv->alerts);
    if (alert_engine_start(srv->alerts, &e) != 0)
        return cli_fail("%s", e.msg);
    /* the maintenance the writer did on its own timers runs as builtin jobs, each run recorded */
    srv->maintenance =
        (struct jobs_maintenance){.w = srv->writer, .s = srv->store, .cfg = &srv->cfg};
    srv->backups = (struct backup_jobs){srv->store, &srv->cfg};
    struct jobs_builtin builtins[JOBS_BUILTIN_MAX + 2];
    size_t n = jobs_builtins(&srv->maintenance, builtins, JOBS_BUILTIN_MAX);
    n += backup_jobs(&srv->backups, builtins + n, 2);
    if (jobs_new(&srv->jobs, srv->store, srv->writer, &srv->cfg, builtins, n, &e) != 0)
        return cli_fail("%s", e.msg);
    writer_set_maintenance(srv->writer, false);
    if (jobs_start(srv->jobs, &e) != 0)
        return cli_fail("%s", e.msg);
    if (heartbeats_new(&srv->heartbeats, srv->store, srv->writer, &srv->cfg, &e) != 0)
        return cli_fail("%s", e.msg);
    if (strcmp(srv->cfg.collection_self, "on") == 0 &&
        self_collection_start(&srv->self, srv->writer, srv->heartbeats, &srv->cfg, &e) != 0)
        return cli_fail("%s", e.msg);
    if (scrapes_new(&srv->scrapes, &srv->cfg, srv->writer, srv->heartbeats, &e) != 0)
        return cli_fail("%s", e.msg);
    if (syslog_receiver_start(&srv->syslog, &srv->cfg, srv->writer, srv->fingerprints,
                              srv->heartbeats, &e) != 0)
        return cli_fail("%s", e.msg);
    if (graphite_receiver_start(&srv->graphite, &srv->cfg, srv->writer, srv->heartbeats, &e) != 0)
        return cli_fail("%s", e.msg);
    struct http_deps deps = {&srv->cfg,   srv->store,    srv->writer, srv->fingerprints,
                             srv->cache,  srv->alerts,   srv->jobs,   srv->heartbeats,
                             srv->syslog, srv->graphite, srv->auth};
    if (http_start(&srv->http, &deps, &e) != 0)
        return cli_fail("%s", e.msg);
    return 0;
}

static void server_stop(struct server *srv)
{
    /* no more messages; their pending rows are written (and their heartbeats noted) */
    syslog_receiver_stop(&srv->syslog);
    graphite_receiver_stop(&srv->graphite);
    http_stop(&srv->http);             /* no new requests; running ones finish */
    jobs_free(&srv->jobs);             /* running commands stop; their rows are written */
    self_collection_stop(&srv->self);  /* a collection under way is written */
    scrapes_free(&srv->scrapes);       /* a scrape under way is cut short */
    heartbeats_free(&srv->heartbeats); /* its last rows go through the writer */
    alert_engine_free(&srv->alerts);   /* its last rows go through the writer */
    auth_free(&srv->auth);             /* its audit rows go through the writer */
    writer_free(&srv->writer);         /* commits what is queued */
    query_cache_free(&srv->cache);
    fingerprint_rules_free(&srv->fingerprints);
    store_close(&srv->store);
}

/* --tls-cert FILE and --tls-key FILE set tls.cert and tls.key (so the config file and
 * OPSDB_TLS_* say the same): 1 taken, 0 not one of them, -1 after printing a usage error. */
static int tls_flag(struct cli_common *c, int argc, char **argv, int *i)
{
    static const char *const flags[][2] = {{"--tls-cert", "tls.cert"}, {"--tls-key", "tls.key"}};
    for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++) {
        size_t n = strlen(flags[k][0]);
        const char *a = argv[*i];
        if (strncmp(a, flags[k][0], n) != 0 || (a[n] != '\0' && a[n] != '='))
            continue;
        const char *v = a[n] == '=' ? a + n + 1 : *i + 1 < argc ? argv[++*i] : NULL;
        if (!v || !*v)
            return cli_usage(cli_command("serve"), "%s needs a file", flags[k][0]), -1;
        if (c->nsets >= CLI_MAX_SETS)
            return cli_usage(cli_command("serve"), "too many options"), -1;
        snprintf(c->set_name[c->nsets], sizeof c->set_name[0], "%s", flags[k][1]);
        c->set_value[c->nsets++] = v;
        return 1;
    }
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    struct cli_common c = {0};
    bool no_collect = false, insecure = false;
    for (int i = 1; i < argc; i++) {
        int rc = cli_common_flag(&c, argc, argv, &i);
        if (rc < 0)
            return 2;
        if (rc == 1)
            continue;
        if (strcmp(argv[i], "--no-collect") == 0) {
            no_collect = true;
            continue;
        }
        if (strcmp(argv[i], "--insecure") == 0) {
            insecure = true;
            continue;
        }
        if (strcmp(argv[i], "--auth") == 0) { /* auth.mode, in the order of the --set flags */
            if (i + 1 >= argc || c.nsets >= CLI_MAX_SETS)
                return cli_usage(cli_command("serve"), "--auth needs required, off or auto");
            snprintf(c.set_name[c.nsets], sizeof c.set_name[0], "auth.mode");
            c.set_value[c.nsets++] = argv[++i];
            continue;
        }
        if ((rc = tls_flag(&c, argc, argv, &i)) != 0) {
            if (rc < 0)
                return 2;
            continue;
        }
        return cli_usage(cli_command("serve"), "unexpected argument '%s'", argv[i]);
    }
    if (c.help)
        return cli_help("serve");
    struct server srv = {0};
    int rc = cli_load_config(&c, &srv.cfg);
    if (rc)
        return rc;
    if (no_collect)
        snprintf(srv.cfg.collection_self, sizeof srv.cfg.collection_self, "off");
    struct err e;
    if (auth_mode_resolve(srv.cfg.auth_mode, srv.cfg.listen, insecure, &srv.auth_mode, &e) != 0)
        return cli_fail("%s", e.msg);
    if (log_open_file(&srv.cfg, &e) != 0)
        return cli_fail("%s", e.msg);
    /* signals are taken by sigwait below; every thread started from here inherits the mask */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* a thread per connection would otherwise get a malloc arena each, and freed request memory
     * would stay spread over them: two arenas keep peak RSS near what is really in use */
    mallopt(M_ARENA_MAX, 2);
    /* request bodies and batches are large and short-lived: keep them in the heap, reused from
     * request to request (mmap per request costs a page fault per 4 KiB), with fixed thresholds
     * so glibc's adaptive ones do not let the heap grow without bound */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 128 << 20);
    if ((rc = server_start(&srv)) != 0) {
        server_stop(&srv);
        log_close_file();
        return rc;
    }
    log_info("opsdb %s serving %s on %s://%s (port %d), authentication %s", OPSDB_VERSION,
             store_describe(srv.store), srv.cfg.tls_cert[0] ? "https" : "http", srv.cfg.listen,
             http_port(srv.http), srv.auth_mode == AUTH_MODE_REQUIRED ? "required" : "off");
    int sig = SIGTERM;
    while (sigwait(&signals, &sig) == 0 && sig == SIGHUP)
        server_reload(&srv);
    log_info("%s: stopping (finishing requests and committing queued rows)",
             sig == SIGINT ? "SIGINT" : "SIGTERM");
    server_stop(&srv);
    log_info("stopped");
    log_close_file();
    return 0;
}
