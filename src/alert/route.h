/*
 * Private to alert/: Alertmanager's routing and grouping (route.c) — which notification carries
 * which alerts, and when it is due — without any delivery. The routing tree (alerting.route)
 * takes each alert to the routes whose matchers it matches; each route files it in a group (the
 * route and the values of its group_by labels), and a group is due group_wait after it appears,
 * group_interval after its last send when it changed, and repeat_interval after its last send
 * while it fires unchanged.
 *
 * Deterministic: time is a parameter (any clock, as long as one router is driven by one), and
 * a due notification is handed to a callback. The live notifier (notify.c) drives a router from
 * its dispatcher thread with the monotonic clock and queues what is due for the receivers'
 * threads; a replay (opsdb alerts backtest) drives one with the replay's clock and traces it.
 *
 * Not thread safe: one thread owns a router. The routes and alerts it is given are read only.
 */
#ifndef OPSDB_ALERT_ROUTE_H
#define OPSDB_ALERT_ROUTE_H

#include "core/core.h"

#include <jansson.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define ROUTES_MAX 256 /* routes of the tree, and routes one alert can take */

/* ---- allocation: the notifier's memory is small and fixed; running out of it ends opsdb ---- */

static inline void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "opsdb: out of memory in the notifier\n");
        abort();
    }
    return p;
}

static inline void *xrealloc(void *p, size_t size)
{
    p = realloc(p, size ? size : 1);
    if (!p) {
        fprintf(stderr, "opsdb: out of memory in the notifier\n");
        abort();
    }
    return p;
}

static inline char *xstrdup(const char *s)
{
    size_t len = strlen(s);
    char *d = xcalloc(1, len + 1);
    memcpy(d, s, len);
    return d;
}

/* ---- alerts, matchers, routes -------------------------------------------------------------- */

/* One state change, copied from a notify_alert (notify.c). Shared (refs) by the groups that hold
 * it; the thread that owns the router alone touches refs. */
struct nalert {
    struct nalert *next; /* in the notifier's queue */
    int refs;
    char *id, *incident;
    char *receiver; /* an escalation step's receiver; NULL: routed */
    bool firing;
    bool muted; /* withdrawn (notify_alert status "muted"): leaves its groups unsent */
    json_t *labels, *annotations;
    double value; /* the value of the transition (a replay shows it) */
    int64_t starts_ms, ends_ms;
    int64_t sent_ms;      /* notifier_restore(): when a previous run notified it (epoch ms); 0: a
                           * state change */
    char fingerprint[17]; /* of the labels, as Alertmanager's alert fingerprint */
};

/* Drops a reference; frees a with the last one. NULL is a no-op. */
void nalert_unref(struct nalert *a);

struct matcher {
    char *name, *value;
    bool is_re;
    regex_t re; /* is_re: ^(value)$ */
};

struct matchers {
    struct matcher *v;
    size_t n;
};

void route_matchers_release(struct matchers *m);

struct route {
    size_t index;    /* depth-first: groups are keyed by it */
    char *key;       /* Alertmanager's route key, e.g. {}/{severity="critical"} */
    size_t receiver; /* the index of its receiver in the notifier's list */
    char **group_by;
    size_t ngroup_by;
    bool group_by_all; /* group_by: ['...'] */
    int64_t group_wait_ms, group_interval_ms, repeat_interval_ms;
    bool cont; /* continue: later siblings are tried too */
    struct matchers match;
    struct route *routes;
    size_t nroutes;
    yaml_node_t *routes_node; /* while parsing: children wait for the parent's settings */
};

/* Alertmanager's route key of rt under parent (NULL: the root): the parent's, "/", and rt's
 * matchers. free() it. */
char *route_key(const struct route *parent, const struct route *rt);
/* Frees what rt holds (not rt itself), its children's too. */
void route_release(struct route *rt);
/* Alertmanager's routing: a route that matches hands the alert to its first matching child
 * (and the later ones while the matching child says continue), or takes it itself when no
 * child does. Writes the routes that take it to out (room for ROUTES_MAX); returns how many. */
size_t route_tree_match(const struct route *rt, json_t *labels, const struct route **out);
/* Alertmanager's groupKey of the alert with labels on route rt: route key, colon, group
 * labels; free() it. With group_labels not NULL, also the group labels as an object (the
 * caller's reference). */
char *route_group_key(const struct route *rt, json_t *labels, json_t **group_labels);

/* The value of label name, "" when absent (as Alertmanager's matchers see it). */
const char *label_value(json_t *labels, const char *name);
/* The names of obj's members, sorted; with alertname_first, alertname comes first (as in
 * Alertmanager's templates). The names are obj's; free() the array. */
const char **label_names_sorted(json_t *obj, bool alertname_first, size_t *n);

/* ---- the router ---------------------------------------------------------------------------- */

/* What a notification is, by what the group's last one carried: its first, an update (alerts
 * fired or resolved since), a repeat (nothing changed, repeat_interval passed) or a resolution
 * (every alert in it resolved). */
enum router_send_kind { SEND_FIRST, SEND_UPDATE, SEND_REPEAT, SEND_RESOLVED };
const char *router_send_kind_name(enum router_send_kind k);

/* One notification that is due: lent to the callback for the call. */
struct router_send {
    size_t receiver;              /* the index of the route's receiver */
    const char *group_key;        /* Alertmanager's groupKey */
    json_t *group_labels;         /* an object */
    struct nalert *const *alerts; /* firing ones, and resolved ones with send_resolved */
    size_t nalerts;
    enum router_send_kind kind;
    int64_t at_ms; /* the router's clock */
};
typedef void (*router_send_fn)(void *arg, const struct router_send *s);

struct router;

/* A router over the tree root (NULL: no route; root must outlive the router), for receivers
 * whose send_resolved are the nreceivers flags given (copied). Due notifications go to fn. */
struct router *router_new(const struct route *root, const bool *send_resolved, size_t nreceivers,
                          router_send_fn fn, void *arg);
/* Frees the groups and what they hold; NULL is a no-op. */
void router_free(struct router **r);
/* Files the routed (not escalation) state change a, at now_ms, in the groups of the routes that
 * take it (each takes a reference). False when no route takes it: the caller drops it. A muted
 * a takes the alert out of the groups that carry it, at their next flush, without a send (as
 * Alertmanager leaves muted alerts out of its notifications). */
bool router_add(struct router *r, struct nalert *a, int64_t now_ms);
/* Files the firing alert a as what a previous run already sent (after a restart): in each group
 * of the routes that take it, as carried by the group's last notification, which went out at
 * sent_at(arg, receiver, group key, a) (the router's clock). No notification is due for it
 * until the group's repeat_interval from then, or a change. False when no route takes it. */
bool router_restore(struct router *r, struct nalert *a, int64_t now_ms,
                    int64_t (*sent_at)(void *arg, size_t receiver, const char *group_key,
                                       const struct nalert *a),
                    void *arg);
/* Hands fn every notification due at now_ms (when stopping: also what group_wait and
 * group_interval still hold), lets the resolved alerts go and frees the groups left empty.
 * Returns when the next one is due (INT64_MAX: none). */
int64_t router_flush(struct router *r, int64_t now_ms, bool stopping);
/* When the next notification is due (INT64_MAX: none). */
int64_t router_next_due(const struct router *r);

#endif
