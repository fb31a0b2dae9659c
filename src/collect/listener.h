/*
 * collect/listener: a UDP socket and a TCP listening socket served by one thread, cutting what
 * senders send into messages for a protocol (syslog, Graphite). It owns the network side of a
 * receiver: binding, bounded connections and buffers, framing, and rate-limited reports of
 * what was wrong with whom. What a message means is the caller's (on_message).
 */
#ifndef OPSDB_COLLECT_LISTENER_H
#define OPSDB_COLLECT_LISTENER_H

#include "core/core.h"

/* How a TCP stream is cut into messages. A UDP datagram is always one message. */
enum listener_framing {
    LISTENER_LINES,  /* LF-terminated lines (Graphite) */
    LISTENER_SYSLOG, /* per message: RFC 6587 octet counting ("LEN SP MSG") when it starts with
                        a digit, else up to LF or NUL (non-transparent framing) */
};

/* Longest sender address text, "[v6]:port" with room to spare. */
#define LISTENER_PEER_MAX 64

/* on_message: one message from peer ("127.0.0.1:5000"). data is not NUL-terminated and is only
 * valid during the call; truncated tells that the sender's message was longer than
 * max_message_bytes and was cut. Called on the listener's thread only, one at a time. */
typedef void (*listener_message_fn)(void *arg, const char *peer, const char *data, size_t len,
                                    bool truncated);

struct listener_config {
    const char *name;      /* "syslog", "graphite": in log lines */
    const char *udp, *tcp; /* "host:port" to bind (port 0: any free port); "" or NULL: off */
    enum listener_framing framing;
    size_t max_message_bytes; /* longer messages are cut (and flagged truncated); with
                                 LISTENER_LINES a datagram is cut into lines first */
    size_t max_connections;   /* TCP connections open at once; more are closed at accept */
    int64_t idle_timeout_ms;  /* a TCP connection silent this long is closed */
    listener_message_fn on_message;
    void *arg;
};

/* What the listener saw, for /metrics. Counters only grow. */
struct listener_stats {
    uint64_t messages;             /* handed to on_message */
    uint64_t bytes;                /* received, UDP and TCP */
    uint64_t truncated;            /* messages cut at max_message_bytes */
    uint64_t connections_accepted; /* TCP */
    uint64_t connections_refused;  /* TCP: over max_connections */
    uint64_t connections_open;     /* a gauge: TCP connections open now */
    uint64_t framing_errors;       /* TCP: an octet count that is no number: the stream is
                                      closed, since where the next message starts is unknown */
};

struct listener;

/* Binds cfg->udp and cfg->tcp (either may be off, not both) and starts the thread. cfg is
 * copied (its strings too). E_INVALID for an address that is not host:port, E_IO when a bind
 * fails (the message names the address and the reason). */
int listener_start(struct listener **out, const struct listener_config *cfg, struct err *e);
/* The port bound for TCP (tcp true) or UDP; 0 when that one is off. */
int listener_port(const struct listener *l, bool tcp);
void listener_get_stats(struct listener *l, struct listener_stats *out);
/* Closes the sockets and every connection, joins the thread, frees; *l becomes NULL. Messages
 * being handled finish first. NULL is a no-op. */
void listener_stop(struct listener **l);

/* The address part of a peer text ("127.0.0.1:5000" -> "127.0.0.1", "[::1]:5000" -> "::1"). */
void listener_peer_address(const char *peer, char *out, size_t size);

/* A warning about a sender ("NAME: PEER: ..."), at most LISTENER_LOG_BURST lines a minute per
 * rl, so that a flood of bad input cannot flood the log; the lines held back are counted in
 * the next one written. rl starts zeroed; one thread at a time per rl. */
#define LISTENER_LOG_BURST 10
struct listener_ratelog {
    int64_t window_start_ms;
    unsigned written, held_back;
};
void listener_log(struct listener_ratelog *rl, const char *name, const char *peer, const char *fmt,
                  ...) __attribute__((format(printf, 4, 5)));

#endif
