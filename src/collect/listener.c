/*
 * collect/listener: one thread polls a UDP socket, a TCP listening socket and the connections,
 * and cuts their bytes into messages (see listener.h). One thread is enough: parsing a message
 * costs far less than receiving it, and the receivers' rows go to the writer through a sink
 * that batches them on its own thread. Memory is bounded: max_connections buffers of
 * max_message_bytes each, plus one datagram buffer.
 */
#include "collect/listener.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define UDP_MAX_BYTES 65536   /* the largest datagram */
#define OCTET_COUNT_DIGITS 9  /* an RFC 6587 MSG-LEN longer than this is no length */
#define POLL_INTERVAL_MS 1000 /* idle connections are looked for this often */

struct conn {
    int fd;
    char peer[LISTENER_PEER_MAX];
    char *buf;
    size_t len;
    size_t skip;        /* bytes of a cut octet-counted message still to drop */
    bool skipping_line; /* the rest of a cut line is dropped up to its end */
    int64_t last_ms;    /* last bytes received */
};

struct listener {
    struct listener_config cfg;
    char name[32], udp_addr[128], tcp_addr[128];
    int udp_fd, tcp_fd, wake[2];
    int udp_port, tcp_port;
    struct conn *conns; /* max_connections of them; fd -1 is a free slot */
    char *datagram;
    pthread_t thread;
    bool started;
    pthread_mutex_t lock; /* guards stats */
    struct listener_stats stats;
    struct listener_ratelog log;
};

void listener_log(struct listener_ratelog *rl, const char *name, const char *peer, const char *fmt,
                  ...)
{
    int64_t now = time_now_ms();
    if (now - rl->window_start_ms >= 60000) {
        rl->window_start_ms = now;
        rl->written = 0;
    }
    if (rl->written >= LISTENER_LOG_BURST) {
        rl->held_back++;
        return;
    }
    rl->written++;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (rl->held_back)
        log_warn("%s: %s: %s (and %u more like it in the last minute, not logged)", name, peer, msg,
                 rl->held_back);
    else
        log_warn("%s: %s: %s", name, peer, msg);
    rl->held_back = 0;
}

void listener_peer_address(const char *peer, char *out, size_t size)
{
    const char *colon = strrchr(peer, ':');
    size_t len = colon ? (size_t)(colon - peer) : strlen(peer);
    if (len >= 2 && peer[0] == '[' && peer[len - 1] == ']') {
        peer++;
        len -= 2;
    }
    snprintf(out, size, "%.*s", (int)len, peer);
}

static void count(struct listener *l, uint64_t *field, uint64_t n)
{
    pthread_mutex_lock(&l->lock);
    *field += n;
    pthread_mutex_unlock(&l->lock);
}

/* ---- sockets -------------------------------------------------------------------------------- */

static void peer_text(const struct sockaddr_storage *ss, char *out, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
        snprintf(out, size, "%s:%d", host, port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
        snprintf(out, size, "[%s]:%d", host, port);
    } else {
        snprintf(out, size, "unknown");
    }
}

/* Binds "host:port" ("[v6]:port") for type; returns the socket, or -1 with e filled. */
static int bind_address(const char *name, const char *addr, int type, int *port, struct err *e)
{
    char host[128];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof host || !colon[1])
        return err_set(e, E_INVALID, "%s: listen address '%s' is not host:port", name, addr), -1;
    snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host) - 2);
        host[strlen(host) - 2] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = type, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(host, colon + 1, &hints, &ai);
    if (gai != 0)
        return err_set(e, E_INVALID, "%s: listen address '%s': %s", name, addr, gai_strerror(gai)),
               -1;
    int fd = socket(ai->ai_family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
        (type == SOCK_STREAM && listen(fd, 128) != 0)) {
        err_set(e, E_IO, "%s: cannot listen on %s %s: %s (is another program using the port?)",
                name, type == SOCK_STREAM ? "tcp" : "udp", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

/* ---- framing -------------------------------------------------------------------------------- */

static void deliver(struct listener *l, const char *peer, const char *data, size_t len,
                    bool truncated)
{
    pthread_mutex_lock(&l->lock);
    l->stats.messages++;
    l->stats.truncated += truncated;
    pthread_mutex_unlock(&l->lock);
    l->cfg.on_message(l->cfg.arg, peer, data, len, truncated);
}

static bool is_terminator(const struct listener *l, char c)
{
    return c == '\n' || (c == '\0' && l->cfg.framing == LISTENER_SYSLOG);
}

/* An octet-counted message at d: 1 when one was handed on (or cut), 0 when more bytes are
 * needed, -1 when the count is no number. *used: the bytes consumed. */
static int octet_counted(struct listener *l, struct conn *c, const char *d, size_t len,
                         size_t *used)
{
    size_t i = 0, n = 0;
    while (i < len && i < OCTET_COUNT_DIGITS + 1 && d[i] >= '0' && d[i] <= '9')
        n = n * 10 + (size_t)(d[i++] - '0');
    if (i == len && i <= OCTET_COUNT_DIGITS)
        return 0;
    if (i > OCTET_COUNT_DIGITS || d[i] != ' ' || n == 0)
        return -1;
    size_t max = l->cfg.max_message_bytes, take = n < max ? n : max;
    if (len - i - 1 < take)
        return 0;
    deliver(l, c->peer, d + i + 1, take, n > take);
    c->skip = n - take;
    *used = i + 1 + take;
    return 1;
}

/* Hands on every complete message in c's buffer and keeps the rest; false when the stream is
 * broken and must be closed. flush: the sender closed, so a last unterminated line counts. */
static bool frame(struct listener *l, struct conn *c, bool flush)
{
    size_t pos = 0, max = l->cfg.max_message_bytes;
    while (pos < c->len) {
        const char *d = c->buf + pos;
        size_t left = c->len - pos, used = 0;
        if (c->skip || c->skipping_line) {
            const char *end = c->skipping_line ? memchr(d, '\n', left) : NULL;
            used = c->skip ? (c->skip < left ? c->skip : left) : end ? (size_t)(end - d) + 1 : left;
            c->skip -= c->skip ? used : 0;
            c->skipping_line = c->skipping_line && !end;
        } else if (is_terminator(l, d[0]) || d[0] == '\r') {
            used = 1; /* separators between messages */
        } else if (l->cfg.framing == LISTENER_SYSLOG && d[0] >= '0' && d[0] <= '9') {
            int rc = octet_counted(l, c, d, left, &used);
            if (rc < 0)
                return false;
            if (rc == 0)
                break;
        } else {
            size_t end = 0;
            while (end < left && !is_terminator(l, d[end]))
                end++;
            if (end < left || flush) {
                deliver(l, c->peer, d, end < max ? end : max, end > max);
                used = end < left ? end + 1 : end;
            } else if (left >= max) {
                deliver(l, c->peer, d, max, true);
                c->skipping_line = true;
                used = max;
            } else {
                break;
            }
        }
        pos += used;
    }
    memmove(c->buf, c->buf + pos, c->len - pos);
    c->len -= pos;
    return true;
}

/* ---- connections ---------------------------------------------------------------------------- */

static void conn_close(struct listener *l, struct conn *c)
{
    close(c->fd);
    c->fd = -1;
    c->len = c->skip = 0;
    c->skipping_line = false;
    pthread_mutex_lock(&l->lock);
    l->stats.connections_open--;
    pthread_mutex_unlock(&l->lock);
}

static void accept_one(struct listener *l)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept4(l->tcp_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
        return;
    char peer[LISTENER_PEER_MAX];
    peer_text(&ss, peer, sizeof peer);
    for (size_t i = 0; i < l->cfg.max_connections; i++) {
        struct conn *c = &l->conns[i];
        if (c->fd >= 0)
            continue;
        c->fd = fd;
        c->last_ms = time_now_ms();
        snprintf(c->peer, sizeof c->peer, "%s", peer);
        pthread_mutex_lock(&l->lock);
        l->stats.connections_accepted++;
        l->stats.connections_open++;
        pthread_mutex_unlock(&l->lock);
        return;
    }
    close(fd);
    count(l, &l->stats.connections_refused, 1);
    listener_log(&l->log, l->name, peer,
                 "connection refused: %zu connections are open, the limit (%s.max_connections)",
                 l->cfg.max_connections, l->name);
}

static void read_conn(struct listener *l, struct conn *c)
{
    size_t cap = l->cfg.max_message_bytes + OCTET_COUNT_DIGITS + 2;
    assert(c->len < cap); /* frame() always makes room: a full buffer holds a whole message */
    ssize_t n = read(c->fd, c->buf + c->len, cap - c->len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0) {
        c->len += (size_t)n;
        c->last_ms = time_now_ms();
        count(l, &l->stats.bytes, (uint64_t)n);
    }
    if (!frame(l, c, n <= 0)) {
        count(l, &l->stats.framing_errors, 1);
        listener_log(&l->log, l->name, c->peer,
                     "octet count '%.10s' is not a length; closing the connection", c->buf);
        conn_close(l, c);
        return;
    }
    if (n <= 0)
        conn_close(l, c);
}

static void read_datagram(struct listener *l)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    ssize_t n = recvfrom(l->udp_fd, l->datagram, UDP_MAX_BYTES, 0, (struct sockaddr *)&ss, &sl);
    if (n <= 0)
        return;
    char peer[LISTENER_PEER_MAX];
    peer_text(&ss, peer, sizeof peer);
    count(l, &l->stats.bytes, (uint64_t)n);
    size_t max = l->cfg.max_message_bytes, len = (size_t)n;
    if (l->cfg.framing == LISTENER_SYSLOG) { /* one datagram, one message */
        deliver(l, peer, l->datagram, len < max ? len : max, len > max);
        return;
    }
    for (size_t pos = 0; pos < len;) {
        const char *d = l->datagram + pos, *nl = memchr(d, '\n', len - pos);
        size_t line = nl ? (size_t)(nl - d) : len - pos;
        if (line)
            deliver(l, peer, d, line < max ? line : max, line > max);
        pos += line + 1;
    }
}

static void close_idle(struct listener *l)
{
    int64_t now = time_now_ms();
    for (size_t i = 0; i < l->cfg.max_connections; i++) {
        struct conn *c = &l->conns[i];
        if (c->fd >= 0 && now - c->last_ms > l->cfg.idle_timeout_ms) {
            frame(l, c, true);
            conn_close(l, c);
        }
    }
}

static void *run(void *arg)
{
    struct listener *l = arg;
    size_t cap = l->cfg.max_connections + 3;
    struct pollfd *fds = calloc(cap, sizeof *fds);
    size_t *which = calloc(cap, sizeof *which);
    if (!fds || !which)
        abort();
    for (;;) {
        size_t n = 0;
        fds[n++] = (struct pollfd){l->wake[0], POLLIN, 0};
        if (l->udp_fd >= 0)
            fds[n++] = (struct pollfd){l->udp_fd, POLLIN, 0};
        if (l->tcp_fd >= 0)
            fds[n++] = (struct pollfd){l->tcp_fd, POLLIN, 0};
        size_t first_conn = n;
        for (size_t i = 0; i < l->cfg.max_connections; i++)
            if (l->conns[i].fd >= 0) {
                which[n] = i;
                fds[n++] = (struct pollfd){l->conns[i].fd, POLLIN, 0};
            }
        if (poll(fds, (nfds_t)n, POLL_INTERVAL_MS) < 0 && errno != EINTR)
            break;
        if (fds[0].revents)
            break;
        for (size_t i = 1; i < first_conn; i++)
            if (fds[i].revents && fds[i].fd == l->udp_fd)
                read_datagram(l);
            else if (fds[i].revents)
                accept_one(l);
        for (size_t i = first_conn; i < n; i++)
            if (fds[i].revents)
                read_conn(l, &l->conns[which[i]]);
        close_idle(l);
    }
    free(fds);
    free(which);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static int open_sockets(struct listener *l, struct err *e)
{
    if (!l->udp_addr[0] && !l->tcp_addr[0])
        return err_set(e, E_INVALID, "%s: neither a udp nor a tcp address to listen on", l->name);
    if (l->udp_addr[0]) {
        l->udp_fd = bind_address(l->name, l->udp_addr, SOCK_DGRAM, &l->udp_port, e);
        if (l->udp_fd < 0)
            return e->code;
        int size = 4 << 20; /* room for bursts while a message is handled */
        setsockopt(l->udp_fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
    if (l->tcp_addr[0]) {
        l->tcp_fd = bind_address(l->name, l->tcp_addr, SOCK_STREAM, &l->tcp_port, e);
        if (l->tcp_fd < 0)
            return e->code;
    }
    return pipe2(l->wake, O_CLOEXEC) == 0
               ? 0
               : err_set(e, E_IO, "%s: cannot create a pipe: %s", l->name, strerror(errno));
}

int listener_start(struct listener **out, const struct listener_config *cfg, struct err *e)
{
    struct listener *l = calloc(1, sizeof *l);
    if (!l)
        return err_set(e, E_NOMEM, "out of memory");
    l->cfg = *cfg;
    snprintf(l->name, sizeof l->name, "%s", cfg->name);
    snprintf(l->udp_addr, sizeof l->udp_addr, "%s", cfg->udp ? cfg->udp : "");
    snprintf(l->tcp_addr, sizeof l->tcp_addr, "%s", cfg->tcp ? cfg->tcp : "");
    l->cfg.name = l->name;
    l->cfg.udp = l->udp_addr;
    l->cfg.tcp = l->tcp_addr;
    l->udp_fd = l->tcp_fd = l->wake[0] = l->wake[1] = -1;
    pthread_mutex_init(&l->lock, NULL);
    size_t buf_bytes = cfg->max_message_bytes + OCTET_COUNT_DIGITS + 2;
    l->conns = calloc(cfg->max_connections, sizeof *l->conns);
    l->datagram = malloc(UDP_MAX_BYTES);
    int rc = !l->conns || !l->datagram ? err_set(e, E_NOMEM, "out of memory") : 0;
    for (size_t i = 0; !rc && i < cfg->max_connections; i++) {
        l->conns[i].fd = -1;
        l->conns[i].buf = malloc(buf_bytes);
        if (!l->conns[i].buf)
            rc = err_set(e, E_NOMEM, "out of memory");
    }
    if (!rc)
        rc = open_sockets(l, e);
    if (!rc && pthread_create(&l->thread, NULL, run, l) != 0)
        rc = err_set(e, E_IO, "%s: cannot start a thread", l->name);
    l->started = rc == 0;
    if (rc) {
        listener_stop(&l);
        return rc;
    }
    if (l->udp_fd >= 0)
        log_info("%s: listening on udp %s (port %d)", l->name, l->udp_addr, l->udp_port);
    if (l->tcp_fd >= 0)
        log_info("%s: listening on tcp %s (port %d)", l->name, l->tcp_addr, l->tcp_port);
    *out = l;
    return 0;
}

int listener_port(const struct listener *l, bool tcp)
{
    return tcp ? l->tcp_port : l->udp_port;
}

void listener_get_stats(struct listener *l, struct listener_stats *out)
{
    pthread_mutex_lock(&l->lock);
    *out = l->stats;
    pthread_mutex_unlock(&l->lock);
}

void listener_stop(struct listener **lp)
{
    struct listener *l = *lp;
    if (!l)
        return;
    if (l->started) {
        ssize_t w = write(l->wake[1], "x", 1);
        (void)w;
        pthread_join(l->thread, NULL);
    }
    for (size_t i = 0; l->conns && i < l->cfg.max_connections; i++) {
        if (l->conns[i].fd >= 0)
            close(l->conns[i].fd);
        free(l->conns[i].buf);
    }
    int fds[] = {l->udp_fd, l->tcp_fd, l->wake[0], l->wake[1]};
    for (size_t i = 0; i < 4; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(l->conns);
    free(l->datagram);
    pthread_mutex_destroy(&l->lock);
    free(l);
    *lp = NULL;
}
