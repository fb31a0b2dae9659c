/*
 * The router (src/alert/route.c) on a clock the test sets: which notifications are due when, with
 * which alerts and of which kind — group_wait gathering alerts into one notification,
 * group_interval for changes, repeat_interval while nothing changes, resolutions, routes with
 * continue, alerts taken up from a previous run (router_restore) that repeat on the old
 * schedule and resolve in their group without a first notification again, and muted alerts
 * leaving their groups unsent.
 */
#include "unit.h"

#include "alert/route.h"

#define SENDS_MAX 32

struct sent {
    size_t receiver;
    char key[256];
    enum router_send_kind kind;
    int64_t at_ms;
    size_t nalerts;
    char ids[4][16];
    bool firing[4];
};

static struct sent sends[SENDS_MAX];
static size_t nsends;

static void on_send(void *arg, const struct router_send *s)
{
    (void)arg;
    assert_true(nsends < SENDS_MAX);
    struct sent *x = &sends[nsends++];
    x->receiver = s->receiver;
    snprintf(x->key, sizeof x->key, "%s", s->group_key);
    x->kind = s->kind;
    x->at_ms = s->at_ms;
    x->nalerts = s->nalerts;
    for (size_t i = 0; i < s->nalerts && i < 4; i++) {
        snprintf(x->ids[i], sizeof x->ids[i], "%s", s->alerts[i]->id);
        x->firing[i] = s->alerts[i]->firing;
    }
}

/* An alert of rule name on host, firing or resolved. The caller holds one reference. */
static struct nalert *alert(const char *id, const char *name, const char *host, bool firing)
{
    struct nalert *a = xcalloc(1, sizeof *a);
    a->refs = 1;
    a->id = xstrdup(id);
    a->firing = firing;
    a->labels = json_pack("{s:s, s:s}", "alertname", name, "host", host);
    a->annotations = json_object();
    return a;
}

static void post(struct router *r, const char *id, const char *name, const char *host, bool firing,
                 int64_t now)
{
    struct nalert *a = alert(id, name, host, firing);
    assert_true(router_add(r, a, now));
    nalert_unref(a);
}

/* Runs the router until until_ms, each flush at the time it is due. */
static void run_until(struct router *r, int64_t until_ms)
{
    for (int64_t due = router_next_due(r); due <= until_ms; due = router_next_due(r))
        router_flush(r, due, false);
}

/* The root route: receiver 0, group_by alertname, group_wait 30 s, group_interval 5 m,
 * repeat_interval 1 h. */
static void root_route(struct route *rt)
{
    memset(rt, 0, sizeof *rt);
    rt->key = xstrdup("{}");
    rt->group_by = xcalloc(2, sizeof *rt->group_by);
    rt->group_by[0] = xstrdup("alertname");
    rt->ngroup_by = 1;
    rt->group_wait_ms = 30000;
    rt->group_interval_ms = 300000;
    rt->repeat_interval_ms = 3600000;
}

static int setup(void **state)
{
    (void)state;
    nsends = 0;
    memset(sends, 0, sizeof sends);
    return 0;
}

static void assert_send(size_t i, enum router_send_kind kind, int64_t at_ms, size_t nalerts)
{
    assert_true(i < nsends);
    assert_int_equal(sends[i].kind, kind);
    assert_int_equal(sends[i].at_ms, at_ms);
    assert_int_equal(sends[i].nalerts, nalerts);
}

static void wait_interval_repeat_resolve(void **state)
{
    (void)state;
    struct route rt;
    root_route(&rt);
    bool send_resolved = true;
    struct router *r = router_new(&rt, &send_resolved, 1, on_send, NULL);
    post(r, "a1", "Cpu", "h1", true, 1000);
    post(r, "a2", "Cpu", "h2", true, 11000); /* inside group_wait: the same notification */
    assert_int_equal(router_next_due(r), 31000);
    run_until(r, 31000);
    assert_int_equal(nsends, 1);
    assert_send(0, SEND_FIRST, 31000, 2);
    assert_string_equal(sends[0].key, "{}:{alertname=\"Cpu\"}");
    assert_string_equal(sends[0].ids[0], "a1");
    assert_string_equal(sends[0].ids[1], "a2");
    /* group_interval later nothing changed: no notification, next look at the repeat */
    run_until(r, 31000 + 300000);
    assert_int_equal(nsends, 1);
    assert_int_equal(router_next_due(r), 31000 + 3600000);
    run_until(r, 31000 + 3600000);
    assert_int_equal(nsends, 2);
    assert_send(1, SEND_REPEAT, 31000 + 3600000, 2);
    /* a2 resolves: sent group_interval after the last flush, as an update */
    int64_t t = 31000 + 3600000 + 1000;
    post(r, "a2", "Cpu", "h2", false, t);
    assert_int_equal(router_next_due(r), 31000 + 3600000 + 300000);
    run_until(r, t + 300000);
    assert_int_equal(nsends, 3);
    assert_send(2, SEND_UPDATE, 31000 + 3600000 + 300000, 2);
    assert_true(sends[2].firing[0]);
    assert_false(sends[2].firing[1]);
    /* a1 resolves: the last notification of the group, a resolution; then the group is gone */
    t = 31000 + 3600000 + 300000 + 1000;
    post(r, "a1", "Cpu", "h1", false, t);
    run_until(r, t + 300000);
    assert_int_equal(nsends, 4);
    assert_send(3, SEND_RESOLVED, 31000 + 3600000 + 600000, 1);
    assert_int_equal(router_next_due(r), INT64_MAX);
    router_free(&r);
    route_release(&rt);
}

static void without_send_resolved(void **state)
{
    (void)state;
    struct route rt;
    root_route(&rt);
    bool send_resolved = false;
    struct router *r = router_new(&rt, &send_resolved, 1, on_send, NULL);
    post(r, "a1", "Cpu", "h1", true, 0);
    run_until(r, 30000);
    post(r, "a1", "Cpu", "h1", false, 40000);
    run_until(r, 10 * 3600000LL);
    assert_int_equal(nsends, 1); /* the resolution is not sent, and nothing repeats */
    assert_send(0, SEND_FIRST, 30000, 1);
    router_free(&r);
    route_release(&rt);
}

/* Alerts a previous run sent: their group repeats repeat_interval after that send, their
 * resolution is an update of that group, and no first notification goes out. */
static int64_t sent_at(void *arg, size_t receiver, const char *group_key, const struct nalert *a)
{
    (void)receiver, (void)a;
    assert_string_equal(group_key, "{}:{alertname=\"Disk\"}");
    return *(const int64_t *)arg;
}

static void restored_alerts(void **state)
{
    (void)state;
    struct route rt;
    root_route(&rt);
    bool send_resolved = true;
    struct router *r = router_new(&rt, &send_resolved, 1, on_send, NULL);
    int64_t last_sent = 100000, now = 900000;
    for (int i = 0; i < 2; i++) {
        struct nalert *a = alert(i ? "d2" : "d1", "Disk", i ? "h2" : "h1", true);
        assert_true(router_restore(r, a, now, sent_at, &last_sent));
        nalert_unref(a);
    }
    assert_int_equal(router_next_due(r), last_sent + 3600000);
    run_until(r, last_sent + 3600000 - 1);
    assert_int_equal(nsends, 0);
    run_until(r, last_sent + 3600000);
    assert_int_equal(nsends, 1);
    assert_send(0, SEND_REPEAT, last_sent + 3600000, 2);
    post(r, "d1", "Disk", "h1", false, last_sent + 3600000 + 5000);
    post(r, "d2", "Disk", "h2", false, last_sent + 3600000 + 6000);
    run_until(r, 10 * 3600000LL);
    assert_int_equal(nsends, 2);
    assert_send(1, SEND_RESOLVED, last_sent + 3600000 + 300000, 2);
    /* overdue: a repeat that fell due while opsdb was down goes out now */
    struct nalert *a = alert("d3", "Disk", "h3", true);
    int64_t long_ago = 0;
    now = 20 * 3600000LL;
    assert_true(router_restore(r, a, now, sent_at, &long_ago));
    nalert_unref(a);
    assert_int_equal(router_next_due(r), now);
    router_free(&r);
    route_release(&rt);
}

/* A child route with its own receiver and group_wait takes what it matches; the root takes the
 * rest. */
static void routes_with_continue(void **state)
{
    (void)state;
    struct route rt;
    root_route(&rt);
    rt.routes = xcalloc(1, sizeof *rt.routes);
    rt.nroutes = 1;
    struct route *child = &rt.routes[0];
    root_route(child);
    free(child->key);
    child->index = 1;
    child->receiver = 1;
    child->group_wait_ms = 0;
    child->match.v = xcalloc(1, sizeof *child->match.v);
    child->match.v[0] = (struct matcher){xstrdup("host"), xstrdup("h1"), false, {0}};
    child->match.n = 1;
    child->key = route_key(&rt, child);
    assert_string_equal(child->key, "{}/{host=\"h1\"}");
    bool send_resolved[2] = {true, true};
    struct router *r = router_new(&rt, send_resolved, 2, on_send, NULL);
    post(r, "a1", "Cpu", "h1", true, 0);
    post(r, "a2", "Cpu", "h2", true, 0);
    run_until(r, 30000);
    assert_int_equal(nsends, 2);
    assert_int_equal(sends[0].receiver, 1);
    assert_string_equal(sends[0].key, "{}/{host=\"h1\"}:{alertname=\"Cpu\"}");
    assert_send(0, SEND_FIRST, 0, 1);
    assert_int_equal(sends[1].receiver, 0);
    assert_send(1, SEND_FIRST, 30000, 1);
    assert_string_equal(sends[1].ids[0], "a2");
    router_free(&r);
    route_release(&rt);
}

/* Withdraws alert id (notify_alert status "muted"). */
static void mute(struct router *r, const char *id, const char *host, int64_t now)
{
    struct nalert *m = alert(id, "Cpu", host, false);
    m->muted = true;
    router_add(r, m, now);
    nalert_unref(m);
}

/* A muted alert leaves the group's notifications: the repeat carries only the other one, a
 * group left with none repeats no more, and the alert firing again is new to the group. */
static void muted_alerts_leave_their_groups(void **state)
{
    (void)state;
    struct route rt;
    root_route(&rt);
    bool send_resolved = false;
    struct router *r = router_new(&rt, &send_resolved, 1, on_send, NULL);
    post(r, "a2", "Cpu", "h2", true, 1000);
    post(r, "a1", "Cpu", "h1", true, 1000);
    run_until(r, 31000);
    assert_send(0, SEND_FIRST, 31000, 2);
    mute(r, "a2", "h2", 40000);
    run_until(r, 31000 + 3600000);
    assert_int_equal(nsends, 2);
    assert_send(1, SEND_REPEAT, 31000 + 3600000, 1);
    assert_string_equal(sends[1].ids[0], "a1");
    /* a1 muted too: nothing is sent, and the group goes */
    mute(r, "a1", "h1", 31000 + 3600000 + 1000);
    run_until(r, 31000 + 3 * 3600000);
    assert_int_equal(nsends, 2);
    assert_int_equal(router_next_due(r), INT64_MAX);
    /* unmuted: fires anew, a first notification after group_wait */
    int64_t t = 31000 + 3 * 3600000 + 5000;
    post(r, "a1", "Cpu", "h1", true, t);
    run_until(r, t + 30000);
    assert_int_equal(nsends, 3);
    assert_send(2, SEND_FIRST, t + 30000, 1);
    /* a withdrawal of an alert no group carries changes nothing */
    mute(r, "a9", "h9", t + 31000);
    run_until(r, t + 31000 + 300000);
    assert_int_equal(nsends, 3);
    router_free(&r);
    route_release(&rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(muted_alerts_leave_their_groups, setup),
        cmocka_unit_test_setup(wait_interval_repeat_resolve, setup),
        cmocka_unit_test_setup(without_send_resolved, setup),
        cmocka_unit_test_setup(restored_alerts, setup),
        cmocka_unit_test_setup(routes_with_continue, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
