/*
 * The open connections, and room for new ones when http.max_connections fills up with
 * connections that do nothing (docs/security.md, "Limits").
 *
 * libmicrohttpd stops accepting at its connection limit, so a thousand clients that connect and
 * never send (or send a byte a minute) would keep everyone else out until http.connection_timeout
 * closes them. As nginx does with its keep-alive connections, the server instead takes back the
 * connection idle longest whenever fewer than a headroom of places is free: idle means no request
 * of it is being answered (it has sent nothing yet, is still sending its headers, or waits
 * between keep-alive requests). A request being answered is never cut. A keep-alive client whose
 * connection is taken back sees it closed and reconnects, as after the idle timeout.
 *
 * Room is made as each connection arrives, without waiting for an idle connection to age: once
 * libmicrohttpd stops accepting, no new connection would come to trigger it, and the clients
 * queued behind a flood would wait in the listen backlog. A client that connects and sends its
 * request at once is only taken back if a flood opens the headroom's worth of connections
 * between its connect and its request.
 *
 * The same list bounds how long a request may take to arrive (http.request_timeout): once a
 * second, connections idle for longer are closed, whatever trickle of bytes keeps
 * libmicrohttpd's own timeout (http.connection_timeout, reset by every byte) from firing. That
 * is what stops a slowloris client that sends a header byte every few seconds. (A body that
 * trickles in is timed by the request's handler, http_server.c.)
 *
 * Idle connections sit in a list in the order they became idle, so the one to take back, or to
 * time out, is its head. Taking back is shutdown(2) of the connection's socket: its thread then
 * reads the end of the stream and libmicrohttpd closes it as any connection the client closed. The
 * socket stays valid while it is in the list: libmicrohttpd reports the close (on_connection, which
 * takes the lock) before it closes the descriptor.
 */
#include "http/http_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

struct http_conn {
    struct http_conn *prev, *next; /* in the idle list while idle and not taken back */
    MHD_socket fd;
    int64_t idle_since_ms; /* monotonic */
    bool idle, evicted;
    void *tls; /* http_tls.c's state of the connection, or NULL */
};

struct http_conns {
    pthread_mutex_t lock;
    unsigned max, headroom;
    unsigned open;
    struct http_conn *idle_head, *idle_tail; /* idle longest first */
    uint64_t evicted, timed_out;
    struct http_tls *tls;
    int64_t request_timeout_ms;
    pthread_t reaper;
    pthread_cond_t wake;
    bool reaper_started, stopping;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Closes hc's connection (its thread sees the end of the stream). Under c->lock. */
static void take_back(struct http_conns *c, struct http_conn *hc);

/* Once a second: the connections idle longer than http.request_timeout are closed. */
static void *reap(void *arg)
{
    struct http_conns *c = arg;
    pthread_mutex_lock(&c->lock);
    while (!c->stopping) {
        int64_t now = mono_ms();
        while (c->idle_head && now - c->idle_head->idle_since_ms >= c->request_timeout_ms) {
            c->timed_out++;
            take_back(c, c->idle_head);
        }
        struct timespec until;
        time_deadline(&until, 1000);
        pthread_cond_timedwait(&c->wake, &c->lock, &until);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

int http_conns_new(struct http_conns **out, unsigned max_connections, int64_t request_timeout_ms,
                   struct http_tls *tls, struct err *e)
{
    struct http_conns *c = calloc(1, sizeof *c);
    if (!c)
        return err_set(e, E_NOMEM, "out of memory");
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->wake, NULL);
    c->request_timeout_ms = request_timeout_ms;
    c->max = max_connections;
    /* enough free places for a burst of new clients while the taken-back ones close */
    c->headroom = max_connections / 8;
    if (c->headroom < 2)
        c->headroom = 2;
    if (c->headroom > 64)
        c->headroom = 64;
    c->tls = tls;
    if (pthread_create(&c->reaper, NULL, reap, c) != 0) {
        http_conns_free(&c);
        return err_set(e, E_NOMEM, "cannot start the HTTP request-timeout thread");
    }
    c->reaper_started = true;
    *out = c;
    return 0;
}

void http_conns_free(struct http_conns **cp)
{
    struct http_conns *c = *cp;
    if (!c)
        return;
    if (c->reaper_started) {
        pthread_mutex_lock(&c->lock);
        c->stopping = true;
        pthread_cond_signal(&c->wake);
        pthread_mutex_unlock(&c->lock);
        pthread_join(c->reaper, NULL);
    }
    pthread_cond_destroy(&c->wake);
    pthread_mutex_destroy(&c->lock);
    free(c);
    *cp = NULL;
}

static void unlink_idle(struct http_conns *c, struct http_conn *hc)
{
    if (!hc->idle)
        return;
    if (hc->prev)
        hc->prev->next = hc->next;
    else
        c->idle_head = hc->next;
    if (hc->next)
        hc->next->prev = hc->prev;
    else
        c->idle_tail = hc->prev;
    hc->prev = hc->next = NULL;
    hc->idle = false;
}

static void append_idle(struct http_conns *c, struct http_conn *hc)
{
    hc->idle = true;
    hc->idle_since_ms = mono_ms();
    hc->prev = c->idle_tail;
    hc->next = NULL;
    if (c->idle_tail)
        c->idle_tail->next = hc;
    else
        c->idle_head = hc;
    c->idle_tail = hc;
}

/* Takes back the connection idle longest, unless it is the one that just arrived, when fewer
 * than the headroom of places is free. Under c->lock. */
static void make_room(struct http_conns *c, const struct http_conn *arrived)
{
    if (c->open + c->headroom <= c->max)
        return;
    struct http_conn *oldest = c->idle_head;
    if (!oldest || oldest == arrived)
        return;
    c->evicted++;
    take_back(c, oldest);
}

static void take_back(struct http_conns *c, struct http_conn *hc)
{
    unlink_idle(c, hc);
    hc->evicted = true;
    shutdown(hc->fd, SHUT_RDWR);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct http_conns *c = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        struct http_conn *hc = calloc(1, sizeof *hc);
        *socket_context = hc;
        if (!hc) /* not tracked: it is neither taken back nor served over TLS */
            return;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        hc->fd = ci ? ci->connect_fd : MHD_INVALID_SOCKET;
        if (c->tls)
            hc->tls = http_tls_conn_open(c->tls);
        pthread_mutex_lock(&c->lock);
        c->open++;
        if (hc->fd != MHD_INVALID_SOCKET)
            append_idle(c, hc);
        make_room(c, hc);
        pthread_mutex_unlock(&c->lock);
        return;
    }
    struct http_conn *hc = *socket_context;
    *socket_context = NULL;
    if (!hc)
        return;
    pthread_mutex_lock(&c->lock);
    unlink_idle(c, hc);
    c->open--;
    pthread_mutex_unlock(&c->lock);
    if (c->tls)
        http_tls_conn_closed(c->tls, conn, hc->tls);
    free(hc);
}

size_t http_conns_options(struct http_conns *c, struct MHD_OptionItem *out)
{
    out[0] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, c};
    return 1;
}

static struct http_conn *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        conn ? MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT) : NULL;
    return ci ? ci->socket_context : NULL;
}

void http_conns_busy(struct http_conns *c, struct MHD_Connection *conn)
{
    struct http_conn *hc = conn_of(conn);
    if (!hc)
        return;
    pthread_mutex_lock(&c->lock);
    unlink_idle(c, hc);
    pthread_mutex_unlock(&c->lock);
}

void http_conns_idle(struct http_conns *c, struct MHD_Connection *conn)
{
    struct http_conn *hc = conn_of(conn);
    if (!hc)
        return;
    pthread_mutex_lock(&c->lock);
    if (!hc->idle && !hc->evicted && hc->fd != MHD_INVALID_SOCKET)
        append_idle(c, hc);
    pthread_mutex_unlock(&c->lock);
}

void http_conns_count_timeout(struct http_conns *c)
{
    pthread_mutex_lock(&c->lock);
    c->timed_out++;
    pthread_mutex_unlock(&c->lock);
}

void *http_conns_tls_state(struct MHD_Connection *conn)
{
    struct http_conn *hc = conn_of(conn);
    return hc ? hc->tls : NULL;
}

void http_conns_metrics(struct http_conns *c, struct buf *out)
{
    pthread_mutex_lock(&c->lock);
    unsigned open = c->open;
    uint64_t evicted = c->evicted, timed_out = c->timed_out;
    pthread_mutex_unlock(&c->lock);
    buf_printf(out,
               "# HELP opsdb_http_connections_open HTTP connections open now.\n"
               "# TYPE opsdb_http_connections_open gauge\n"
               "opsdb_http_connections_open %u\n"
               "# HELP opsdb_http_connections_taken_back_total Idle HTTP connections closed to "
               "make room for new ones near http.max_connections.\n"
               "# TYPE opsdb_http_connections_taken_back_total counter\n"
               "opsdb_http_connections_taken_back_total %llu\n"
               "# HELP opsdb_http_requests_timed_out_total Connections closed because their "
               "request did not arrive whole within http.request_timeout.\n"
               "# TYPE opsdb_http_requests_timed_out_total counter\n"
               "opsdb_http_requests_timed_out_total %llu\n",
               open, (unsigned long long)evicted, (unsigned long long)timed_out);
}
