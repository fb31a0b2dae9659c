/*
 * gen.c - deterministic generator of opsdb's reference benchmark workload.
 *
 * It writes the five operational tables as the benchmark (bench/run.sh) and anyone reproducing
 * a number need them: system_metrics (hosts x metrics every 10 s, as InfluxDB line protocol or
 * NDJSON), api_usage (~50 requests/s), error_logs (~0.5 events/s from 60 message templates),
 * pipeline_status (10 pipelines x 3 stages every 15 min) and handler_metrics (30 handlers every
 * 10 s), with daily and weekly load cycles and short incidents that show up in several tables
 * at once.
 *
 * Every random draw comes from a generator seeded by (seed, table, time slot), never from a
 * stream that runs through the whole output. So the same arguments give byte-identical output,
 * and a window's rows do not depend on where the window starts: [S, M] followed by [M, E] gives
 * exactly the rows of [S, E]. Samples on the 10 s grid are taken at S < t <= E, events at
 * S <= t < E. The few math functions needed are implemented here so that neither libm nor its
 * version changes a byte. C11 and libc only.
 *
 * --incidents FILE also lists the incidents injected into the window (with their kind, target
 * and times), for benchmarks that score what an alert caught; it changes no byte of the data.
 */
#define _POSIX_C_SOURCE 200809L

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF /* no fused multiply-add: same bytes on every CPU */
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define LINE_MAX_BYTES 65536
#define METRICS_MAX 1000
#define HOSTS_MAX 100000
#define PI 3.14159265358979323846
#define DAY_S 86400LL
#define PIPELINE_PERIOD_S 900LL

enum table_id {
    T_SYSTEM,
    T_API,
    T_ERRORS,
    T_PIPELINE,
    T_HANDLER,
    T_COUNT,
    /* streams that are not tables */
    T_HOSTPROF = 16,
    T_HOSTINC,
    T_SVCINC,
    T_HANDLERPROF,
};

static const char *const table_names[T_COUNT] = {
    "system_metrics", "api_usage", "error_logs", "pipeline_status", "handler_metrics",
};

enum format { FMT_NDJSON, FMT_LP };

struct options {
    double days;
    long long start_s; /* derived from --days unless --start is given */
    long long end_s;
    int hosts;
    int host_offset;
    int metrics;
    unsigned long long seed;
    int table; /* -1: all */
    enum format format;
    long long limit;
    const char *out_dir;
    long long batch;
    double api_rate;            /* api_usage requests per second before the load cycle */
    const char *incidents_path; /* --incidents: where to list the injected incidents */
};

/* ---------------------------------------------------------------- random numbers and math */

struct rng {
    uint64_t state;
};

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rng_next(struct rng *r)
{
    r->state += 0x9e3779b97f4a7c15ULL;
    return mix64(r->state);
}

/* A generator for one (seed, stream, a, b) slot, independent of every other slot. */
static struct rng rng_for(uint64_t seed, uint64_t stream, uint64_t a, uint64_t b)
{
    uint64_t h = mix64(seed + 0x632be59bd9b4e019ULL);
    h = mix64(h ^ (stream * 0x9e3779b97f4a7c15ULL));
    h = mix64(h ^ (a * 0xd6e8feb86659fd93ULL));
    h = mix64(h ^ (b * 0xa0761d6478bd642fULL));
    struct rng r = {h};
    return r;
}

static double rng_unit(struct rng *r)
{
    return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

static long long rng_range(struct rng *r, long long lo, long long hi)
{
    return lo + (long long)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

/* Approximately standard normal (Irwin-Hall, 12 uniforms): no libm, tails cut at +-6. */
static double rng_normal(struct rng *r)
{
    double sum = 0;
    for (int i = 0; i < 12; i++)
        sum += rng_unit(r);
    return sum - 6.0;
}

static double my_exp(double x)
{
    if (x < -700) return 0;
    if (x > 700) x = 700;
    const double ln2 = 0.69314718055994530942;
    long k = (long)(x / ln2 + (x < 0 ? -0.5 : 0.5));
    double rem = x - (double)k * ln2, term = 1, sum = 1;
    for (int i = 1; i < 20; i++) {
        term *= rem / i;
        sum += term;
    }
    for (; k > 0; k--)
        sum *= 2;
    for (; k < 0; k++)
        sum *= 0.5;
    return sum;
}

static double my_sin(double x)
{
    long long turns = (long long)(x / (2 * PI));
    x -= (double)turns * 2 * PI;
    if (x > PI) x -= 2 * PI;
    if (x < -PI) x += 2 * PI;
    if (x > PI / 2) x = PI - x;
    if (x < -PI / 2) x = -PI - x;
    double x2 = x * x, term = x, sum = x;
    for (int i = 1; i < 10; i++) {
        term *= -x2 / ((2 * i) * (2 * i + 1));
        sum += term;
    }
    return sum;
}

static double lognormal(struct rng *r, double median, double sigma)
{
    return median * my_exp(sigma * rng_normal(r));
}

/* Knuth's method; fine for the small rates used here (lambda < 200). */
static int poisson(struct rng *r, double lambda)
{
    double limit = my_exp(-lambda), p = 1;
    int k = 0;
    do {
        k++;
        p *= rng_unit(r);
    } while (p > limit && k < 10000);
    return k - 1;
}

static double clamp(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static long long floor_div(long long a, long long b)
{
    long long q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Load factor around 1.0: daily cycle peaking 15:00 UTC, weekends lower. */
static double diurnal(long long t_s)
{
    long long day = floor_div(t_s, DAY_S);
    double frac = (double)(t_s - day * DAY_S) / DAY_S;
    long long weekday = ((day + 4) % 7 + 7) % 7; /* 0 = Sunday */
    double week = (weekday == 0 || weekday == 6) ? 0.80 : 1.08;
    return week * (1.0 + 0.45 * my_sin(2 * PI * (frac - 0.375)));
}

static void civil_from_epoch(long long t_s, int *y, int *mo, int *d, int *h, int *mi)
{
    long long days = floor_div(t_s, DAY_S), sod = t_s - days * DAY_S;
    days += 719468;
    long long era = floor_div(days, 146097);
    long long doe = days - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *mo = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*mo <= 2));
    *h = (int)(sod / 3600);
    *mi = (int)(sod % 3600 / 60);
}

/* ---------------------------------------------------------------- output */

struct line {
    char data[LINE_MAX_BYTES];
    size_t len;
};

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("gen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void lput(struct line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void lput(struct line *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(l->data + l->len, sizeof(l->data) - l->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(l->data) - l->len)
        die("line longer than %d bytes", LINE_MAX_BYTES);
    l->len += (size_t)n;
}

/* Appends s as a JSON string, quotes included. */
static void lput_json_str(struct line *l, const char *s)
{
    lput(l, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            lput(l, "\\%c", c);
        else if (c == '\n')
            lput(l, "\\n");
        else if (c == '\t')
            lput(l, "\\t");
        else if (c < 0x20)
            lput(l, "\\u%04x", c);
        else
            lput(l, "%c", c);
    }
    lput(l, "\"");
}

/* Writes whole lines to stdout or to numbered batch files; counts rows and points. */
struct out {
    const struct options *opt;
    const char *table;
    const char *ext;
    FILE *fp;
    int file_index;
    long long lines_in_file;
    long long rows;
    long long points;
    int files;
};

static void out_open_next(struct out *o)
{
    char path[4096];
    if (o->fp && fclose(o->fp) != 0) die("cannot write batch file: %s", strerror(errno));
    int n = snprintf(path, sizeof(path), "%s/%s-%06d.%s", o->opt->out_dir, o->table,
                     o->file_index++, o->ext);
    if (n < 0 || (size_t)n >= sizeof(path)) die("output path too long");
    o->fp = fopen(path, "w");
    if (!o->fp) die("cannot create %s: %s", path, strerror(errno));
    setvbuf(o->fp, NULL, _IOFBF, 1 << 20);
    o->lines_in_file = 0;
    o->files++;
}

/* Returns 0 when the row was written, 1 when --limit is reached (nothing written). */
static int out_line(struct out *o, struct line *l, long long points)
{
    long long limit = o->opt->limit;
    if (limit >= 0) {
        if (o->opt->format == FMT_LP ? o->points + points > limit : o->rows >= limit) return 1;
    }
    if (o->opt->out_dir && (!o->fp || o->lines_in_file >= o->opt->batch)) out_open_next(o);
    FILE *fp = o->opt->out_dir ? o->fp : stdout;
    l->data[l->len++] = '\n';
    if (fwrite(l->data, 1, l->len, fp) != l->len) die("write failed: %s", strerror(errno));
    l->len = 0;
    o->lines_in_file++;
    o->rows++;
    o->points += points;
    return 0;
}

static void out_finish(struct out *o)
{
    if (o->fp && fclose(o->fp) != 0) die("cannot write batch file: %s", strerror(errno));
    o->fp = NULL;
    if (!o->opt->out_dir && fflush(stdout) != 0) die("write failed: %s", strerror(errno));
    if (o->opt->out_dir)
        printf("%s format=%s rows=%lld points=%lld files=%d\n", o->table, o->ext, o->rows,
               o->points, o->files);
}

/* ---------------------------------------------------------------- shared world */

/* Host roles repeat every 20 hosts: 8 web, 4 db, 3 cache, 3 batch, 2 queue. */
static const char *host_component(int host)
{
    int slot = host % 20;
    if (slot < 8) return "web";
    if (slot < 12) return "db";
    if (slot < 15) return "cache";
    if (slot < 18) return "batch";
    return "queue";
}

static void host_name(int host, char *buf, size_t size)
{
    snprintf(buf, size, "host-%03d", host);
}

static const char *const services[] = {"auth", "orders", "catalog", "payments", "users"};
#define SERVICE_COUNT 5

/* A web host serving service v (web hosts are dealt out to services round robin). */
static int service_host(int service, struct rng *r, int hosts)
{
    int web_total = (hosts / 20) * 8 + (hosts % 20 < 8 ? hosts % 20 : 8);
    if (web_total < SERVICE_COUNT) return (int)rng_range(r, 0, hosts - 1);
    int per_service = web_total / SERVICE_COUNT;
    int k = service + SERVICE_COUNT * (int)rng_range(r, 0, per_service - 1); /* k-th web host */
    return (k / 8) * 20 + k % 8;
}

/* A batch or queue host (role "worker"), chosen by index. */
static int worker_host(int index, int hosts)
{
    int worker_total = (hosts / 20) * 5 + (hosts % 20 > 15 ? hosts % 20 - 15 : 0);
    if (worker_total == 0) return index % hosts;
    int k = index % worker_total;
    return (k / 5) * 20 + 15 + k % 5;
}

#define SERVICE_INCIDENT_S (12 * 60)

/* Per (service, hour): 3% of hours hold a 12-minute incident (5xx, slow, error bursts).
 * Returns 1 and its start (epoch seconds) when the hour holds one. */
static int service_incident_start(uint64_t seed, int service, long long hour, long long *start)
{
    struct rng r = rng_for(seed, T_SVCINC, (uint64_t)service, (uint64_t)hour);
    if (rng_unit(&r) >= 0.03) return 0;
    *start = hour * 3600 + rng_range(&r, 0, 47) * 60;
    return 1;
}

static int service_incident(uint64_t seed, int service, long long t_s)
{
    long long start;
    if (!service_incident_start(seed, service, floor_div(t_s, 3600), &start)) return 0;
    return t_s >= start && t_s < start + SERVICE_INCIDENT_S;
}

/* ---------------------------------------------------------------- system_metrics */

/* Percentages are 0..100. NDJSON rows carry these names as the metric, so cpu_usage,
 * memory_usage and disk_usage are what the system_health view reads by default; line protocol
 * sends them as fields of measurement "system", which the server names system_<field>. */
static const char *const metric_names[] = {
    "cpu_usage",
    "cpu_user",
    "cpu_system",
    "cpu_iowait",
    "load1",
    "load5",
    "load15",
    "memory_usage",
    "memory_used_bytes",
    "memory_available_bytes",
    "swap_usage",
    "disk_usage",
    "disk_read_bytes_per_s",
    "disk_write_bytes_per_s",
    "net_rx_bytes_per_s",
    "net_tx_bytes_per_s",
    "tcp_connections",
    "processes",
    "open_fds",
    "uptime_s",
};
#define BASE_METRICS 20

static const char *const regions[] = {"eu-west-1", "eu-central-1", "us-east-1", "us-west-2"};

struct host_profile {
    double cpu_base;
    int cores;
    double mem_total;
    double mem_base_pct;
    double disk_base_pct;
    double net_scale;
    long long phase_s;
    int leaks;
};

static struct host_profile host_profile_of(uint64_t seed, int host)
{
    struct rng r = rng_for(seed, T_HOSTPROF, (uint64_t)host, 0);
    struct host_profile p;
    static const int cores[] = {4, 8, 16, 32};
    static const double mem_gib[] = {8, 16, 32, 64};
    p.cpu_base = 0.12 + 0.33 * rng_unit(&r);
    p.cores = cores[rng_range(&r, 0, 3)];
    p.mem_total = mem_gib[rng_range(&r, 0, 3)] * 1073741824.0;
    p.mem_base_pct = 35 + 35 * rng_unit(&r);
    p.disk_base_pct = 20 + 45 * rng_unit(&r);
    p.net_scale = 2e5 + 4e6 * rng_unit(&r);
    p.phase_s = rng_range(&r, 0, 30 * DAY_S);
    p.leaks = rng_unit(&r) < 0.1;
    return p;
}

#define HOST_INCIDENT_S (10 * 60)

/* Per (host, hour): 2% of hours hold a 10-minute CPU saturation. Returns 1 and its start
 * (epoch seconds) when the hour holds one. */
static int host_incident_start(uint64_t seed, int host, long long hour, long long *start)
{
    struct rng r = rng_for(seed, T_HOSTINC, (uint64_t)host, (uint64_t)hour);
    if (rng_unit(&r) >= 0.02) return 0;
    *start = hour * 3600 + rng_range(&r, 0, 49) * 60;
    return 1;
}

static int host_incident(uint64_t seed, int host, long long t_s)
{
    long long start;
    if (!host_incident_start(seed, host, floor_div(t_s, 3600), &start)) return 0;
    return t_s >= start && t_s < start + HOST_INCIDENT_S;
}

static double frac_of(long long t, long long period)
{
    return (double)(t - floor_div(t, period) * period) / (double)period;
}

/* All metric values of one host at one sample time. */
static void host_sample(const struct options *o, int host, long long t_s, double *v)
{
    struct host_profile p = host_profile_of(o->seed, host);
    struct rng r = rng_for(o->seed, T_SYSTEM, (uint64_t)host, (uint64_t)floor_div(t_s, 10));
    const char *comp = host_component(host);
    double cycle = comp[0] == 'b' ? 2.0 - diurnal(t_s) : diurnal(t_s); /* batch: nights */
    double load = p.cpu_base * cycle * (1 + 0.08 * rng_normal(&r));
    double cpu = clamp(100 * load + 3 * rng_normal(&r), 0.5, 99.5);
    if (host_incident(o->seed, host, t_s)) cpu = clamp(93 + 2 * rng_normal(&r), 85, 100);
    double iowait_share = comp[0] == 'd' ? 0.18 : 0.05;
    double busy = cpu / 100;
    v[0] = cpu;
    v[1] = cpu * (0.93 - iowait_share - 0.2);
    v[2] = cpu * 0.2;
    v[3] = cpu * iowait_share;
    v[4] = clamp(p.cores * busy * (1 + 0.15 * rng_normal(&r)), 0, 4.0 * p.cores);
    v[5] = clamp(p.cores * busy * (1 + 0.06 * rng_normal(&r)), 0, 4.0 * p.cores);
    v[6] = clamp(p.cores * busy * (1 + 0.02 * rng_normal(&r)), 0, 4.0 * p.cores);
    double leak = p.leaks ? 20 * frac_of(t_s + p.phase_s, 3 * DAY_S) : 0;
    v[7] = clamp(p.mem_base_pct + 8 * busy + leak + 0.5 * rng_normal(&r), 1, 99.5);
    v[8] = p.mem_total * v[7] / 100;
    v[9] = p.mem_total - v[8];
    v[10] = v[7] > 90 ? (v[7] - 90) * 3 : clamp(0.3 * rng_unit(&r), 0, 1);
    v[11] = clamp(p.disk_base_pct + 15 * frac_of(t_s + p.phase_s, 14 * DAY_S), 1, 99);
    v[12] = lognormal(&r, 2e5 + 4e6 * busy, 0.6);
    v[13] = lognormal(&r, 5e5 + (comp[0] == 'd' ? 8e6 : 2e6) * busy, 0.6);
    v[14] = lognormal(&r, p.net_scale * (0.2 + busy), 0.3);
    v[15] = lognormal(&r, p.net_scale * (0.3 + 1.5 * busy), 0.3);
    v[16] =
        (double)(long long)(20 + (comp[0] == 'w' ? 2500 : 300) * busy * (1 + 0.1 * rng_normal(&r)));
    v[17] = (double)(140 + rng_range(&r, 0, 60) + (long long)(100 * busy));
    v[18] = (double)(900 + (long long)(18000 * busy) + rng_range(&r, 0, 200));
    v[19] = (double)((t_s + p.phase_s) % (30 * DAY_S) + 60);
    for (int m = BASE_METRICS; m < o->metrics; m++)
        v[m] = clamp(50 + 30 * my_sin(2 * PI * frac_of(t_s + m * 977, DAY_S)) + 5 * rng_normal(&r),
                     0, 100);
    for (int m = 0; m < o->metrics; m++)
        if (v[m] < 0) v[m] = 0;
}

static void metric_name(int m, char *buf, size_t size)
{
    if (m < BASE_METRICS)
        snprintf(buf, size, "%s", metric_names[m]);
    else
        snprintf(buf, size, "custom_%02d", m - BASE_METRICS + 1);
}

static void put_value(struct line *l, int m, double v)
{
    /* byte counts, counts and uptime as integers; percentages and loads with 2 decimals */
    if ((m >= 8 && m <= 9) || (m >= 12 && m <= 19))
        lput(l, "%.0f", v);
    else
        lput(l, "%.2f", v);
}

static int gen_system(const struct options *o, struct out *out)
{
    struct line *l = malloc(sizeof(*l));
    double v[METRICS_MAX];
    char host[32], name[64];
    int stop = 0;
    if (!l) die("out of memory");
    l->len = 0;
    long long start_s = o->start_s;
    long long t = floor_div(start_s, 10) * 10 + 10;
    for (; t <= o->end_s && !stop; t += 10) {
        for (int h = o->host_offset; h < o->host_offset + o->hosts && !stop; h++) {
            host_sample(o, h, t, v);
            host_name(h, host, sizeof(host));
            const char *comp = host_component(h);
            if (o->format == FMT_LP) {
                lput(l, "system,host=%s,component=%s ", host, comp);
                for (int m = 0; m < o->metrics; m++) {
                    metric_name(m, name, sizeof(name));
                    lput(l, "%s%s=", m ? "," : "", name);
                    put_value(l, m, v[m]);
                }
                lput(l, " %lld", t * 1000);
                stop = out_line(out, l, o->metrics);
                continue;
            }
            for (int m = 0; m < o->metrics && !stop; m++) {
                metric_name(m, name, sizeof(name));
                lput(l,
                     "{\"ts\":%lld,\"host\":\"%s\",\"component\":\"%s\",\"metric\":\"%s\","
                     "\"value\":",
                     t * 1000, host, comp, name);
                put_value(l, m, v[m]);
                lput(l, ",\"labels\":{\"region\":\"%s\",\"env\":\"prod\"}}", regions[h % 4]);
                stop = out_line(out, l, 1);
            }
        }
    }
    free(l);
    return 0;
}

/* ---------------------------------------------------------------- api_usage */

struct endpoint {
    int service;
    const char *method;
    const char *path;
    double weight;
    double latency_ms;
    int ok_status;
    double request_bytes;
    double response_bytes;
};

static const struct endpoint endpoints[] = {
    {0, "POST", "/v1/auth/login", 6, 45, 200, 180, 512},
    {0, "POST", "/v1/auth/token/refresh", 10, 12, 200, 200, 420},
    {0, "POST", "/v1/auth/logout", 2, 8, 204, 40, 0},
    {0, "GET", "/v1/auth/session", 12, 4, 200, 0, 350},
    {0, "GET", "/v1/auth/.well-known/jwks.json", 3, 2, 200, 0, 1800},
    {0, "POST", "/v1/auth/password/reset", 0.3, 120, 202, 90, 64},
    {0, "POST", "/v1/auth/mfa/verify", 1, 30, 200, 60, 220},
    {0, "GET", "/v1/auth/permissions/{user_id}", 5, 9, 200, 0, 900},
    {1, "GET", "/v1/orders", 8, 35, 200, 0, 6400},
    {1, "GET", "/v1/orders/{order_id}", 10, 14, 200, 0, 2100},
    {1, "POST", "/v1/orders", 3, 95, 201, 1400, 1900},
    {1, "PATCH", "/v1/orders/{order_id}", 1, 60, 200, 300, 1900},
    {1, "DELETE", "/v1/orders/{order_id}", 0.3, 40, 204, 0, 0},
    {1, "GET", "/v1/orders/{order_id}/items", 4, 18, 200, 0, 3500},
    {1, "POST", "/v1/orders/{order_id}/cancel", 0.4, 80, 200, 50, 400},
    {1, "GET", "/v1/orders/{order_id}/tracking", 2, 150, 200, 0, 1200},
    {2, "GET", "/v1/products", 14, 28, 200, 0, 12000},
    {2, "GET", "/v1/products/{product_id}", 16, 9, 200, 0, 2800},
    {2, "GET", "/v1/products/search", 9, 70, 200, 0, 9000},
    {2, "GET", "/v1/categories", 4, 6, 200, 0, 4000},
    {2, "GET", "/v1/categories/{category_id}/products", 5, 32, 200, 0, 10000},
    {2, "PUT", "/v1/products/{product_id}", 0.5, 55, 200, 2500, 2800},
    {2, "POST", "/v1/products", 0.2, 70, 201, 2600, 2800},
    {2, "GET", "/v1/products/{product_id}/reviews", 3, 22, 200, 0, 5200},
    {3, "POST", "/v1/payments", 2.5, 320, 201, 900, 700},
    {3, "GET", "/v1/payments/{payment_id}", 3, 15, 200, 0, 650},
    {3, "POST", "/v1/payments/{payment_id}/capture", 2, 280, 200, 100, 600},
    {3, "POST", "/v1/payments/{payment_id}/refund", 0.3, 350, 200, 150, 600},
    {3, "GET", "/v1/payments/methods", 2, 11, 200, 0, 1400},
    {3, "POST", "/v1/payments/webhooks/stripe", 1.5, 25, 204, 3000, 0},
    {3, "GET", "/v1/invoices/{invoice_id}", 1, 40, 200, 0, 3000},
    {3, "GET", "/v1/invoices", 0.8, 60, 200, 0, 8000},
    {4, "GET", "/v1/users/{user_id}", 11, 7, 200, 0, 1100},
    {4, "PATCH", "/v1/users/{user_id}", 1, 35, 200, 400, 1100},
    {4, "POST", "/v1/users", 0.6, 90, 201, 700, 1100},
    {4, "GET", "/v1/users/{user_id}/preferences", 5, 6, 200, 0, 600},
    {4, "PUT", "/v1/users/{user_id}/preferences", 0.7, 20, 200, 500, 600},
    {4, "GET", "/v1/users/{user_id}/notifications", 6, 25, 200, 0, 4200},
    {4, "POST", "/v1/users/{user_id}/avatar", 0.2, 400, 200, 250000, 300},
    {4, "GET", "/healthz", 4, 1, 200, 0, 15},
};
#define ENDPOINT_COUNT ((int)(sizeof(endpoints) / sizeof(endpoints[0])))

static int pick_weighted_endpoint(struct rng *r)
{
    static double total = 0;
    if (total == 0)
        for (int i = 0; i < ENDPOINT_COUNT; i++)
            total += endpoints[i].weight;
    double x = rng_unit(r) * total;
    for (int i = 0; i < ENDPOINT_COUNT; i++) {
        x -= endpoints[i].weight;
        if (x < 0) return i;
    }
    return ENDPOINT_COUNT - 1;
}

static int pick_status(struct rng *r, const struct endpoint *e, int incident)
{
    static const int c4[] = {400, 401, 403, 404, 404, 404, 409, 422, 429, 401};
    static const int c5[] = {500, 500, 500, 502, 503, 503, 504};
    double p5 = incident ? 0.12 : 0.008, p4 = 0.045;
    if (e->path[1] == 'v' && strstr(e->path, "login")) p4 = 0.09;
    double x = rng_unit(r);
    if (x < p5) return c5[rng_range(r, 0, 6)];
    if (x < p5 + p4) return c4[rng_range(r, 0, 9)];
    return e->ok_status;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static void api_row(const struct options *o, struct rng *r, long long ts_ms, struct line *l)
{
    const struct endpoint *e = &endpoints[pick_weighted_endpoint(r)];
    int incident = service_incident(o->seed, e->service, ts_ms / 1000);
    int status = pick_status(r, e, incident);
    double latency = lognormal(r, e->latency_ms * (incident ? 3 : 1), 0.55);
    double req = e->request_bytes > 0 ? lognormal(r, e->request_bytes, 0.4) : 0;
    double resp = e->response_bytes > 0 ? lognormal(r, e->response_bytes, 0.5) : 0;
    if (status >= 400) {
        resp = (double)rng_range(r, 60, 260);
        latency *= status == 504 ? 0 : (status >= 500 ? 1.5 : 0.3);
        if (status == 504) latency = 30000 + 400 * rng_unit(r);
        if (status == 503) latency = 1 + 4 * rng_unit(r);
    }
    double u = rng_unit(r);
    long long client = (long long)(400 * u * u * u); /* a few clients send most requests */
    char host[32];
    host_name(service_host(e->service, r, o->hosts), host, sizeof(host));
    lput(l,
         "{\"ts\":%lld,\"service\":\"%s\",\"method\":\"%s\",\"endpoint\":\"%s\","
         "\"status_code\":%d,\"latency_ms\":%.2f,\"request_bytes\":%.0f,\"response_bytes\":%.0f,"
         "\"client_id\":\"client-%04lld\",\"host\":\"%s\"}",
         ts_ms, services[e->service], e->method, e->path, status, clamp(latency, 0.05, 1e6), req,
         resp, client, host);
}

static int gen_api(const struct options *o, struct out *out)
{
    struct line *l = malloc(sizeof(*l));
    long long offsets[1000];
    if (!l) die("out of memory");
    l->len = 0;
    long long start_s = o->start_s;
    for (long long s = start_s; s < o->end_s; s++) {
        struct rng r = rng_for(o->seed, T_API, (uint64_t)s, 0);
        int n = poisson(&r, o->api_rate * diurnal(s));
        if (n > 1000) n = 1000;
        for (int i = 0; i < n; i++)
            offsets[i] = rng_range(&r, 0, 999);
        qsort(offsets, (size_t)n, sizeof(offsets[0]), cmp_ll);
        for (int i = 0; i < n; i++) {
            api_row(o, &r, s * 1000 + offsets[i], l);
            if (out_line(out, l, 1)) {
                free(l);
                return 0;
            }
        }
    }
    free(l);
    return 0;
}

/* ---------------------------------------------------------------- error_logs */

enum stack_kind { ST_NONE, ST_GO, ST_JAVA, ST_PYTHON, ST_NODE };

struct error_template {
    int service; /* index into services; 5 = platform (batch hosts) */
    const char *component;
    const char *level;
    const char *error_type;
    int stack;
    double weight;
    const char *text;
};

/* Placeholders: {id} 8 hex, {uuid}, {n} 1..99999, {small} 1..20, {ms} 100..30000, {ip},
 * {port}, {pct}. They vary per event; the rest of the text is what fingerprinting keeps. */
static const struct error_template templates[] = {
    {0, "api", "warning", "InvalidCredentials", ST_NONE, 8,
     "login failed for user u_{n}: invalid password (attempt {small})"},
    {0, "api", "warning", "TokenExpired", ST_NONE, 6, "token {id} expired {n} seconds ago"},
    {0, "api", "error", "JWKSFetchError", ST_GO, 1,
     "failed to fetch JWKS from https://idp.internal/keys: timeout after {ms}ms"},
    {0, "api", "warning", "RateLimited", ST_NONE, 3,
     "rate limit exceeded for client client-{n}: {n} requests in 60s"},
    {0, "db-client", "error", "DBConnectionError", ST_GO, 1.5,
     "dial tcp {ip}:5432: connect: connection refused (pool size {small})"},
    {0, "api", "fatal", "PanicRecovered", ST_GO, 0.1,
     "panic: runtime error: invalid memory address or nil pointer dereference [session {id}]"},
    {0, "cache-client", "warning", "CacheTimeout", ST_NONE, 2,
     "redis GET session:{id} timed out after {ms}ms"},
    {0, "api", "info", "MFAChallengeFailed", ST_NONE, 1,
     "mfa challenge for user u_{n} failed: code mismatch"},
    {0, "api", "error", "LDAPBindError", ST_GO, 0.5,
     "ldap bind failed for dn uid=u_{n},ou=people: result code 49"},
    {0, "api", "warning", "AccountLocked", ST_NONE, 1,
     "account u_{n} locked after {small} failed attempts"},
    {1, "api", "error", "OrderNotFoundException", ST_JAVA, 4,
     "order {n} not found for customer {n}"},
    {1, "api", "error", "OptimisticLockException", ST_JAVA, 2,
     "row was updated by another transaction: orders id={n} version {small}"},
    {1, "worker", "error", "InventoryReservationFailed", ST_JAVA, 2,
     "could not reserve {small} units of sku SKU-{n} for order {n}: insufficient stock"},
    {1, "api", "warning", "SlowQuery", ST_NONE, 3,
     "query on orders took {ms}ms (threshold 500ms), rows examined {n}"},
    {1, "db-client", "error", "SQLTransientConnectionException", ST_JAVA, 1.5,
     "HikariPool-1 - connection is not available, request timed out after {ms}ms"},
    {1, "worker", "error", "KafkaProducerException", ST_JAVA, 1,
     "failed to send record to topic orders.created partition {small}: timeout after {ms}ms"},
    {1, "api", "fatal", "OutOfMemoryError", ST_JAVA, 0.05, "java heap space (heap used {pct}%)"},
    {1, "api", "warning", "ValidationException", ST_NONE, 4,
     "invalid order payload: field items[{small}].quantity must be positive"},
    {1, "api", "error", "ShippingProviderError", ST_JAVA, 1,
     "tracking lookup for shipment {id} failed: HTTP 502 from carrier api"},
    {1, "worker", "debug", "RetryScheduled", ST_NONE, 2,
     "retry {small}/5 scheduled for order {n} in {ms}ms"},
    {1, "api", "error", "NullPointerException", ST_JAVA, 1,
     "cannot invoke getAddress() because customer {n} has no default address"},
    {2, "api", "error", "SearchBackendError", ST_PYTHON, 2,
     "elasticsearch query failed on shard {small} of index products: circuit_breaking_exception"},
    {2, "api", "warning", "ImageMissing", ST_NONE, 3,
     "product {n} references missing image {uuid}.jpg"},
    {2, "api", "error", "KeyError", ST_PYTHON, 1.5, "'price_{small}' missing in product {n}"},
    {2, "worker", "error", "IndexingError", ST_PYTHON, 1,
     "failed to index {n} documents, first error on product {n}: mapper_parsing_exception"},
    {2, "api", "warning", "SlowRequest", ST_NONE, 2,
     "GET /v1/products/search took {ms}ms for query of {small} terms"},
    {2, "cache-client", "error", "ConnectionError", ST_PYTHON, 1,
     "Error 111 connecting to {ip}:6379. Connection refused."},
    {2, "api", "error", "IntegrityError", ST_PYTHON, 0.5,
     "duplicate key value violates unique constraint \"products_sku_key\" (sku SKU-{n})"},
    {2, "api", "info", "CacheEviction", ST_NONE, 1,
     "evicted {n} keys from category cache after price change of product {n}"},
    {2, "worker", "error", "TimeoutError", ST_PYTHON, 1,
     "thumbnail generation for image {uuid} timed out after {ms}ms"},
    {2, "api", "fatal", "WorkerCrash", ST_PYTHON, 0.05,
     "gunicorn worker pid {n} exited with signal 9 (rss {n} KiB)"},
    {3, "api", "error", "PaymentDeclined", ST_NONE, 4,
     "payment {id} declined by issuer: insufficient_funds (amount {n} cents)"},
    {3, "api", "error", "GatewayTimeoutException", ST_JAVA, 2,
     "payment provider did not answer within {ms}ms for payment {id}"},
    {3, "api", "warning", "DuplicateWebhook", ST_NONE, 2,
     "ignored duplicate webhook event {id} for payment {id}"},
    {3, "api", "error", "SignatureVerificationException", ST_JAVA, 0.5,
     "webhook signature mismatch from {ip} (timestamp skew {n}s)"},
    {3, "worker", "error", "ReconciliationMismatch", ST_NONE, 1,
     "ledger mismatch for account {n}: expected {n} got {n} cents"},
    {3, "api", "fatal", "LedgerWriteFailed", ST_JAVA, 0.05,
     "could not persist ledger entry {uuid}: disk quota exceeded"},
    {3, "db-client", "error", "DeadlockLoserDataAccessException", ST_JAVA, 1,
     "deadlock detected while capturing payment {id} (process {n})"},
    {3, "api", "warning", "FraudCheckSlow", ST_NONE, 1.5,
     "fraud score for payment {id} took {ms}ms, proceeding without score"},
    {3, "api", "error", "RefundRejected", ST_NONE, 0.5,
     "refund of {n} cents for payment {id} rejected: charge already refunded"},
    {3, "api", "debug", "IdempotencyHit", ST_NONE, 1,
     "idempotency key {uuid} replayed, returning stored response"},
    {4, "api", "error", "TypeError", ST_NODE, 2,
     "Cannot read properties of undefined (reading 'locale') for user {n}"},
    {4, "api", "warning", "ValidationError", ST_NONE, 4,
     "\"email\" must be a valid email (user {n})"},
    {4, "api", "error", "MongoServerError", ST_NODE, 1,
     "E11000 duplicate key error collection: users index: email_1 dup key (user {n})"},
    {4, "api", "error", "UploadTooLarge", ST_NONE, 1,
     "avatar upload of {n} bytes exceeds limit of 5242880 bytes for user {n}"},
    {4, "worker", "error", "EmailDeliveryFailed", ST_NODE, 1.5,
     "smtp {ip}:587 responded 451 4.7.1 for message {id}: try again later"},
    {4, "api", "warning", "DeprecatedApiUsed", ST_NONE, 2,
     "client client-{n} called deprecated /v1/users/{n}/settings"},
    {4, "api", "fatal", "UnhandledPromiseRejection", ST_NODE, 0.05,
     "unhandled rejection in notification fan-out for user {n}: ECONNRESET"},
    {4, "cache-client", "error", "RedisTimeout", ST_NODE, 1,
     "Command timed out after {ms}ms: HGETALL prefs:{n}"},
    {4, "api", "info", "SessionRevoked", ST_NONE, 1, "revoked {small} sessions of user {n}"},
    {5, "scheduler", "error", "JobTimeout", ST_PYTHON, 1,
     "job nightly_export_{small} exceeded timeout of {n}s"},
    {5, "etl", "error", "SchemaMismatch", ST_PYTHON, 1,
     "column count mismatch in batch {id}: expected {small} got {small}"},
    {5, "etl", "warning", "LateData", ST_NONE, 2,
     "received {n} late events older than {small} hours for partition {n}"},
    {5, "queue", "error", "ConsumerLagHigh", ST_NONE, 1.5,
     "consumer group billing-{small} lag {n} messages on partition {small}"},
    {5, "queue", "warning", "MessageRedelivered", ST_NONE, 3,
     "message {uuid} redelivered {small} times, moving to dead letter queue"},
    {5, "etl", "error", "S3UploadError", ST_GO, 1,
     "upload of s3://warehouse/exports/part-{n}.parquet failed: SlowDown (retry {small})"},
    {5, "gateway", "error", "UpstreamConnectError", ST_NONE, 2,
     "upstream connect error or disconnect/reset before headers, upstream {ip}:{port}"},
    {5, "gateway", "warning", "TLSHandshakeError", ST_NONE, 1,
     "TLS handshake error from {ip}:{port}: remote error: tls: bad certificate"},
    {5, "scheduler", "fatal", "DiskFull", ST_NONE, 0.05,
     "no space left on device while writing /var/lib/etl/tmp/{uuid} ({pct}% used)"},
    {5, "etl", "debug", "CheckpointWritten", ST_NONE, 1,
     "checkpoint {n} written after {ms}ms ({n} records)"},
};
#define TEMPLATE_COUNT ((int)(sizeof(templates) / sizeof(templates[0])))

static void expand_template(struct line *dst, const char *t, struct rng *r)
{
    while (*t) {
        const char *close = *t == '{' ? strchr(t, '}') : NULL;
        if (!close) {
            lput(dst, "%c", *t++);
            continue;
        }
        size_t n = (size_t)(close - t - 1);
        const char *k = t + 1;
        if (n == 2 && !strncmp(k, "id", n))
            /* leading digit: an id of letters only would not look like an id */
            lput(dst, "%08llx", (unsigned long long)(rng_next(r) % 0xa0000000ULL));
        else if (n == 4 && !strncmp(k, "uuid", n)) {
            uint64_t a = rng_next(r), b = rng_next(r);
            lput(dst, "%08llx-%04llx-4%03llx-%04llx-%012llx", (unsigned long long)(a >> 32),
                 (unsigned long long)((a >> 16) & 0xffff), (unsigned long long)(a & 0xfff),
                 (unsigned long long)(0x8000 | (b >> 48 & 0x3fff)),
                 (unsigned long long)(b & 0xffffffffffffULL));
        } else if (n == 1 && *k == 'n')
            lput(dst, "%lld", rng_range(r, 1, 99999));
        else if (n == 5 && !strncmp(k, "small", n))
            lput(dst, "%lld", rng_range(r, 1, 20));
        else if (n == 2 && !strncmp(k, "ms", n))
            lput(dst, "%lld", rng_range(r, 100, 30000));
        else if (n == 2 && !strncmp(k, "ip", n)) {
            long long b = rng_range(r, 0, 3), c = rng_range(r, 0, 255), d = rng_range(r, 1, 254);
            lput(dst, "10.%lld.%lld.%lld", b, c, d);
        } else if (n == 4 && !strncmp(k, "port", n))
            lput(dst, "%lld", rng_range(r, 1024, 65535));
        else if (n == 3 && !strncmp(k, "pct", n))
            lput(dst, "%lld", rng_range(r, 90, 100));
        else {
            lput(dst, "%c", *t++);
            continue;
        }
        t = close + 1;
    }
}

static void stack_trace(struct line *dst, const struct error_template *e, const char *message,
                        struct rng *r)
{
    const char *svc = e->service < SERVICE_COUNT ? services[e->service] : "platform";
    /* one draw per statement: argument evaluation order differs between compilers */
    long long line = rng_range(r, 20, 400);
    long long goroutine = rng_range(r, 1, 5000), addr = rng_range(r, 0, 0xffffff);
    switch (e->stack) {
    case ST_GO:
        lput(dst,
             "goroutine %lld [running]:\nmain.(*Server).handle(0xc000%06llx)\n\t/src/%s/server.go:"
             "%lld +0x1a4\nnet/http.HandlerFunc.ServeHTTP(...)\n\t/usr/local/go/src/net/http/"
             "server.go:2136 +0x29",
             goroutine, addr, svc, line);
        break;
    case ST_JAVA:
        lput(dst,
             "com.example.%s.%s: %s\n\tat com.example.%s.Service.process(Service.java:%lld)\n\tat "
             "com.example.%s.Controller.handle(Controller.java:41)\n\tat "
             "java.base/java.lang.Thread.run(Thread.java:833)",
             svc, e->error_type, message, svc, line, svc);
        break;
    case ST_PYTHON:
        lput(dst,
             "Traceback (most recent call last):\n  File \"/app/%s/handlers.py\", line %lld, in "
             "handle\n    result = self.process(request)\n  File \"/app/%s/service.py\", line 87, "
             "in process\n    raise %s(msg)\n%s: %s",
             svc, line, svc, e->error_type, e->error_type, message);
        break;
    case ST_NODE:
        lput(dst,
             "%s: %s\n    at process (/app/%s/src/service.js:%lld:11)\n    at async handle "
             "(/app/%s/src/routes.js:23:5)",
             e->error_type, message, svc, line, svc);
        break;
    default:
        break;
    }
}

static int pick_template(struct rng *r, int service)
{
    double total = 0;
    for (int i = 0; i < TEMPLATE_COUNT; i++)
        if (service < 0 || templates[i].service == service) total += templates[i].weight;
    double x = rng_unit(r) * total;
    for (int i = 0; i < TEMPLATE_COUNT; i++) {
        if (service >= 0 && templates[i].service != service) continue;
        x -= templates[i].weight;
        if (x < 0) return i;
    }
    return TEMPLATE_COUNT - 1;
}

static void error_row(const struct options *o, struct rng *r, long long ts_ms, int incident_svc,
                      struct line *l, struct line *tmp)
{
    int ti = pick_template(r, incident_svc);
    if (incident_svc >= 0) /* an incident produces the errors, not the chatter */
        for (int tries = 0; tries < 8 && templates[ti].level[0] != 'e'; tries++)
            ti = pick_template(r, incident_svc);
    const struct error_template *e = &templates[ti];
    const char *svc = e->service < SERVICE_COUNT ? services[e->service] : "platform";
    int host_index = e->service < SERVICE_COUNT && strcmp(e->component, "worker") != 0
                         ? service_host(e->service, r, o->hosts)
                         : worker_host((int)rng_range(r, 0, 999), o->hosts);
    char host[32];
    host_name(host_index, host, sizeof(host));
    tmp->len = 0;
    expand_template(tmp, e->text, r);
    tmp->data[tmp->len] = '\0';
    lput(l,
         "{\"ts\":%lld,\"service\":\"%s\",\"component\":\"%s\",\"host\":\"%s\",\"level\":\"%s\","
         "\"error_type\":\"%s\",\"message\":",
         ts_ms, svc, e->component, host, e->level, e->error_type);
    lput_json_str(l, tmp->data);
    if (e->stack != ST_NONE && rng_unit(r) < 0.4) {
        size_t mlen = tmp->len;
        char message[1024];
        snprintf(message, sizeof(message), "%.*s", (int)mlen, tmp->data);
        tmp->len = 0;
        stack_trace(tmp, e, message, r);
        tmp->data[tmp->len] = '\0';
        lput(l, ",\"stack_trace\":");
        lput_json_str(l, tmp->data);
    }
    unsigned long long trace_hi = rng_next(r), trace_lo = rng_next(r);
    lput(l, ",\"trace_id\":\"%016llx%016llx\"}", trace_hi, trace_lo);
}

struct event {
    long long ts_ms;
    int incident_svc;
};

static int cmp_event(const void *a, const void *b)
{
    const struct event *x = a, *y = b;
    if (x->ts_ms != y->ts_ms) return (x->ts_ms > y->ts_ms) - (x->ts_ms < y->ts_ms);
    return (x->incident_svc > y->incident_svc) - (x->incident_svc < y->incident_svc);
}

static int gen_errors(const struct options *o, struct out *out)
{
    struct line *l = malloc(sizeof(*l)), *tmp = malloc(sizeof(*tmp));
    struct event ev[256];
    if (!l || !tmp) die("out of memory");
    l->len = 0;
    long long start_s = o->start_s;
    for (long long s = start_s; s < o->end_s; s++) {
        struct rng r = rng_for(o->seed, T_ERRORS, (uint64_t)s, 0);
        int n = 0, base = poisson(&r, 0.5 * diurnal(s));
        for (int i = 0; i < base && n < 200; i++)
            ev[n++] = (struct event){s * 1000 + rng_range(&r, 0, 999), -1};
        for (int v = 0; v < SERVICE_COUNT; v++) {
            if (!service_incident(o->seed, v, s)) continue;
            int burst = poisson(&r, 1.5);
            for (int i = 0; i < burst && n < 256; i++)
                ev[n++] = (struct event){s * 1000 + rng_range(&r, 0, 999), v};
        }
        qsort(ev, (size_t)n, sizeof(ev[0]), cmp_event);
        for (int i = 0; i < n; i++) {
            error_row(o, &r, ev[i].ts_ms, ev[i].incident_svc, l, tmp);
            if (out_line(out, l, 1)) goto out;
        }
    }
out:
    free(tmp);
    free(l);
    return 0;
}

/* ---------------------------------------------------------------- pipeline_status */

static const char *const pipelines[] = {
    "orders_etl",         "billing_rollup",         "inventory_sync",
    "user_events_export", "clickstream_sessionize", "search_index_build",
    "payments_reconcile", "marketing_attribution",  "fraud_features",
    "warehouse_snapshot",
};
#define PIPELINE_COUNT 10
static const char *const stages[] = {"extract", "transform", "load"};
static const char *const statuses[] = {"queued", "running", "succeeded",
                                       "failed", "skipped", "cancelled"};
enum { S_QUEUED, S_RUNNING, S_SUCCEEDED, S_FAILED, S_SKIPPED, S_CANCELLED };

static const char *const failure_messages[] = {
    "source database timed out after 300s",
    "schema drift: unexpected column in upstream table",
    "out of memory in worker",
    "destination rejected batch: quota exceeded",
    "upstream file missing",
};

struct pipe_row {
    long long ts_ms;
    int pipeline;
    int stage;
    int status;
    long long slot;
    long long started_ms, finished_ms; /* -1: not set */
    long long records_in, records_out, records_failed;
    int failure;
};

static void pipe_push(struct pipe_row *rows, int *n, struct pipe_row row)
{
    rows[(*n)++] = row;
}

/* The state changes of one run of pipeline p scheduled in 15-minute slot k. */
static void pipeline_run(const struct options *o, int p, long long slot, struct pipe_row *rows,
                         int *n)
{
    struct rng r = rng_for(o->seed, T_PIPELINE, (uint64_t)p, (uint64_t)slot);
    long long t = (slot * PIPELINE_PERIOD_S + p * 37) * 1000 + rng_range(&r, 0, 2000);
    double fail_p = p == 3 ? 0.08 : 0.015; /* user_events_export is flaky */
    long long scale = 10000LL << (p % 6);
    long long records =
        (long long)(scale * diurnal(slot * PIPELINE_PERIOD_S) * (0.8 + 0.4 * rng_unit(&r)));
    static const long long dur_lo[] = {30000, 60000, 20000}, dur_hi[] = {150000, 360000, 120000};
    struct pipe_row base = {t, p, 0, S_QUEUED, slot, -1, -1, -1, -1, -1, 0};
    pipe_push(rows, n, base);
    t += rng_range(&r, 1000, 30000);
    int failed = 0;
    for (int s = 0; s < 3; s++) {
        struct pipe_row row = base;
        row.stage = s;
        if (failed) {
            row.ts_ms = t;
            row.status = S_SKIPPED;
            pipe_push(rows, n, row);
            continue;
        }
        row.ts_ms = t;
        row.status = S_RUNNING;
        row.started_ms = t;
        pipe_push(rows, n, row);
        long long dur = rng_range(&r, dur_lo[s], dur_hi[s]);
        double x = rng_unit(&r);
        row.ts_ms = t + dur;
        row.finished_ms = t + dur;
        row.records_in = records;
        if (x < fail_p) {
            row.status = S_FAILED;
            row.failure = (int)rng_range(&r, 0, 4);
            row.records_failed = records / (long long)rng_range(&r, 2, 50);
            row.records_out = records - row.records_failed;
            failed = 1;
        } else if (x < fail_p + 0.003) {
            row.status = S_CANCELLED;
            row.records_failed = 0;
            row.records_out = 0;
            failed = 1;
        } else {
            row.status = S_SUCCEEDED;
            row.records_failed = rng_unit(&r) < 0.2 ? rng_range(&r, 1, 50) : 0;
            row.records_out = records - row.records_failed - (s == 1 ? records / 20 : 0);
        }
        records = row.records_out;
        pipe_push(rows, n, row);
        t += dur + rng_range(&r, 200, 3000);
    }
}

static int cmp_pipe(const void *a, const void *b)
{
    const struct pipe_row *x = a, *y = b;
    if (x->ts_ms != y->ts_ms) return (x->ts_ms > y->ts_ms) - (x->ts_ms < y->ts_ms);
    if (x->pipeline != y->pipeline) return x->pipeline - y->pipeline;
    if (x->slot != y->slot) return (x->slot > y->slot) - (x->slot < y->slot);
    if (x->stage != y->stage) return x->stage - y->stage;
    return x->status - y->status;
}

static void pipe_json(const struct pipe_row *row, struct line *l)
{
    int y, mo, d, h, mi;
    civil_from_epoch(row->slot * PIPELINE_PERIOD_S, &y, &mo, &d, &h, &mi);
    lput(l,
         "{\"ts\":%lld,\"pipeline\":\"%s\",\"run_id\":\"%s-%04d%02d%02dT%02d%02d\","
         "\"stage\":\"%s\",\"status\":\"%s\"",
         row->ts_ms, pipelines[row->pipeline], pipelines[row->pipeline], y, mo, d, h, mi,
         stages[row->stage], statuses[row->status]);
    if (row->started_ms >= 0) lput(l, ",\"started_at\":%lld", row->started_ms);
    if (row->finished_ms >= 0)
        lput(l, ",\"finished_at\":%lld,\"duration_ms\":%lld", row->finished_ms,
             row->finished_ms - row->started_ms);
    if (row->records_in >= 0)
        lput(l, ",\"records_in\":%lld,\"records_out\":%lld,\"records_failed\":%lld",
             row->records_in, row->records_out, row->records_failed);
    switch (row->status) {
    case S_QUEUED:
        lput(l, ",\"message\":\"run scheduled\"");
        break;
    case S_RUNNING:
        lput(l, ",\"message\":\"stage started\"");
        break;
    case S_SUCCEEDED:
        lput(l, ",\"message\":\"processed %lld records\"", row->records_in);
        break;
    case S_FAILED:
        lput(l, ",\"message\":\"%s\"", failure_messages[row->failure]);
        break;
    case S_SKIPPED:
        lput(l, ",\"message\":\"skipped after upstream stage failure\"");
        break;
    default:
        lput(l, ",\"message\":\"cancelled by operator\"");
        break;
    }
    lput(l, "}");
}

static int gen_pipeline(const struct options *o, struct out *out)
{
    struct line *l = malloc(sizeof(*l));
    struct pipe_row rows[2 * PIPELINE_COUNT * 8];
    if (!l) die("out of memory");
    l->len = 0;
    long long start_ms = o->start_s * 1000, end_ms = o->end_s * 1000;
    long long k0 = floor_div(start_ms / 1000, PIPELINE_PERIOD_S);
    long long k1 = floor_div(o->end_s - 1, PIPELINE_PERIOD_S);
    for (long long k = k0; k <= k1; k++) {
        int n = 0;
        for (int p = 0; p < PIPELINE_COUNT; p++) {
            pipeline_run(o, p, k - 1, rows, &n);
            pipeline_run(o, p, k, rows, &n);
        }
        qsort(rows, (size_t)n, sizeof(rows[0]), cmp_pipe);
        long long lo = k * PIPELINE_PERIOD_S * 1000, hi = lo + PIPELINE_PERIOD_S * 1000;
        for (int i = 0; i < n; i++) {
            long long ts = rows[i].ts_ms;
            if (ts < lo || ts >= hi || ts < start_ms || ts >= end_ms) continue;
            pipe_json(&rows[i], l);
            if (out_line(out, l, 1)) goto out;
        }
    }
out:
    free(l);
    return 0;
}

/* ---------------------------------------------------------------- handler_metrics */

static const char *const handlers[] = {
    "orders.created",
    "orders.updated",
    "orders.cancelled",
    "orders.shipped",
    "payments.authorized",
    "payments.captured",
    "payments.refunded",
    "payments.webhook",
    "users.signup",
    "users.profile_updated",
    "users.deleted",
    "email.send",
    "email.bounce",
    "sms.send",
    "push.send",
    "search.reindex_product",
    "search.reindex_category",
    "inventory.reserve",
    "inventory.release",
    "inventory.restock",
    "catalog.price_changed",
    "catalog.image_resize",
    "analytics.pageview",
    "analytics.event",
    "fraud.score",
    "billing.invoice_generate",
    "billing.dunning",
    "audit.log_write",
    "cache.invalidate",
    "export.report_build",
};
#define HANDLER_COUNT 30

static const char *handler_component(int i)
{
    if (i >= 22 && i <= 23) return "stream";
    if (i == 7) return "webhook";
    if (i == 25 || i == 26 || i == 29) return "cron";
    return "consumer";
}

struct handler_profile {
    double rate_per_10s;
    double duration_ms;
    long long offset_ms;
    int host;
};

static struct handler_profile handler_profile_of(const struct options *o, int i)
{
    struct rng r = rng_for(o->seed, T_HANDLERPROF, (uint64_t)i, 0);
    struct handler_profile p;
    double u = rng_unit(&r);
    p.rate_per_10s = 5 + 600 * u * u;
    double u1 = rng_unit(&r), u2 = rng_unit(&r);
    p.duration_ms = 2 + 200 * u1 * u2;
    p.offset_ms = rng_range(&r, 0, 9999);
    p.host = worker_host(i, o->hosts);
    return p;
}

#define BACKLOG_S (20 * 60)

/* Per (handler, hour): 4% of hours build a backlog that peaks after 10 minutes. Returns 1, its
 * start (epoch seconds) and its peak queue depth when the hour holds one. */
static int handler_backlog_start(const struct options *o, int i, long long hour, long long *start,
                                 double *peak)
{
    struct rng r = rng_for(o->seed, T_HANDLERPROF, (uint64_t)i + 1000, (uint64_t)hour);
    if (rng_unit(&r) >= 0.04) return 0;
    *start = hour * 3600 + rng_range(&r, 0, 39) * 60;
    *peak = 2000 + 20000 * rng_unit(&r);
    return 1;
}

static double handler_backlog(const struct options *o, int i, long long t_s)
{
    long long start;
    double peak;
    if (!handler_backlog_start(o, i, floor_div(t_s, 3600), &start, &peak)) return 0;
    long long into = t_s - start;
    if (into < 0 || into >= BACKLOG_S) return 0;
    return into < 600 ? peak * (double)into / 600 : peak * (double)(1200 - into) / 600;
}

static void handler_row(const struct options *o, int i, const struct handler_profile *p,
                        long long slot, struct line *l)
{
    struct rng r = rng_for(o->seed, T_HANDLER, (uint64_t)i, (uint64_t)slot);
    long long t_s = slot * 10;
    double load = diurnal(t_s);
    double backlog = handler_backlog(o, i, t_s);
    int invocations = poisson(&r, clamp(p->rate_per_10s * load, 0, 180));
    if (p->rate_per_10s * load > 180) /* beyond Knuth's comfort: scale a poisson(180) draw */
        invocations = (int)((double)invocations * p->rate_per_10s * load / 180);
    int errors = 0, retries = 0;
    double err_p = backlog > 0 ? 0.05 : 0.004;
    for (int k = 0; k < invocations && k < 2000; k++)
        errors += rng_unit(&r) < err_p;
    for (int k = 0; k < errors; k++)
        retries += (int)rng_range(&r, 0, 2);
    double avg = lognormal(&r, p->duration_ms * (backlog > 0 ? 2.5 : 1), 0.2);
    double p95 = avg * (1.8 + 1.4 * rng_unit(&r));
    if (invocations == 0) avg = p95 = 0;
    long long depth =
        (long long)(backlog + (double)rng_range(&r, 0, (long long)(p->rate_per_10s / 4) + 1));
    char host[32];
    host_name(p->host, host, sizeof(host));
    lput(l,
         "{\"ts\":%lld,\"handler\":\"%s\",\"component\":\"%s\",\"host\":\"%s\",\"invocations\":%d,"
         "\"errors\":%d,\"retries\":%d,\"duration_ms_avg\":%.2f,\"duration_ms_p95\":%.2f,"
         "\"queue_depth\":%lld}",
         t_s * 1000 + p->offset_ms, handlers[i], handler_component(i), host, invocations, errors,
         retries, avg, p95, depth);
}

static int gen_handler(const struct options *o, struct out *out)
{
    struct line *l = malloc(sizeof(*l));
    struct handler_profile prof[HANDLER_COUNT];
    int order[HANDLER_COUNT];
    if (!l) die("out of memory");
    l->len = 0;
    for (int i = 0; i < HANDLER_COUNT; i++) {
        prof[i] = handler_profile_of(o, i);
        order[i] = i;
    }
    for (int i = 1; i < HANDLER_COUNT; i++) /* report order within a 10 s slot */
        for (int j = i; j > 0 && prof[order[j]].offset_ms < prof[order[j - 1]].offset_ms; j--) {
            int tmp = order[j];
            order[j] = order[j - 1];
            order[j - 1] = tmp;
        }
    long long start_ms = o->start_s * 1000, end_ms = o->end_s * 1000;
    for (long long slot = floor_div(start_ms, 10000); slot * 10000 < end_ms; slot++) {
        for (int k = 0; k < HANDLER_COUNT; k++) {
            int i = order[k];
            long long ts = slot * 10000 + prof[i].offset_ms;
            if (ts < start_ms || ts >= end_ms) continue;
            handler_row(o, i, &prof[i], slot, l);
            if (out_line(out, l, 1)) goto out;
        }
    }
out:
    free(l);
    return 0;
}

/* ---------------------------------------------------------------- incident list */

/* --incidents FILE: the incidents the generator injects into the window, one NDJSON object per
 * line, so that a benchmark can tell an alert that caught one from noise (bench/alert_quality.py).
 * Writing it draws from generators of its own: the data written is the same with or without it.
 * Times are epoch milliseconds, [start, end); every incident overlapping the window is listed. */

static void incident_line(FILE *fp, const char *kind, long long start_s, long long end_s,
                          const char *fields)
{
    fprintf(fp, "{\"kind\":\"%s\",\"start\":%lld,\"end\":%lld,%s}\n", kind, start_s * 1000,
            end_s * 1000, fields);
}

/* Expected memory use of a host at t (gen's host_sample without its noise). */
static double memory_expected(const struct options *o, int host, long long t_s)
{
    struct host_profile p = host_profile_of(o->seed, host);
    const char *comp = host_component(host);
    double cycle = comp[0] == 'b' ? 2.0 - diurnal(t_s) : diurnal(t_s);
    double busy =
        host_incident(o->seed, host, t_s) ? 0.93 : clamp(p.cpu_base * cycle, 0.005, 0.995);
    double leak = p.leaks ? 20 * frac_of(t_s + p.phase_s, 3 * DAY_S) : 0;
    return p.mem_base_pct + 8 * busy + leak;
}

static void incidents_hosts(const struct options *o, FILE *fp)
{
    char fields[256], host[32];
    long long h0 = floor_div(o->start_s - HOST_INCIDENT_S, 3600), h1 = floor_div(o->end_s, 3600);
    for (int h = o->host_offset; h < o->host_offset + o->hosts; h++) {
        host_name(h, host, sizeof(host));
        snprintf(fields, sizeof(fields), "\"host\":\"%s\",\"component\":\"%s\"", host,
                 host_component(h));
        for (long long hour = h0; hour <= h1; hour++) {
            long long st;
            if (host_incident_start(o->seed, h, hour, &st) && st + HOST_INCIDENT_S > o->start_s &&
                st < o->end_s)
                incident_line(fp, "host_cpu", st, st + HOST_INCIDENT_S, fields);
        }
        /* a leaking host is under memory pressure while its expected use is above 90% */
        if (!host_profile_of(o->seed, h).leaks) continue;
        long long from = -1, t = floor_div(o->start_s, 60) * 60;
        for (; t < o->end_s + 60; t += 60) {
            int high = t < o->end_s && memory_expected(o, h, t) > 90;
            if (high && from < 0) from = t;
            if (!high && from >= 0) {
                incident_line(fp, "host_memory", from, t, fields);
                from = -1;
            }
        }
    }
}

static void incidents_services(const struct options *o, FILE *fp)
{
    char fields[1024];
    long long h0 = floor_div(o->start_s - SERVICE_INCIDENT_S, 3600);
    long long h1 = floor_div(o->end_s, 3600);
    for (int v = 0; v < SERVICE_COUNT; v++) {
        /* the error types of the service, whose events burst during its incidents */
        size_t len = (size_t)snprintf(fields, sizeof(fields),
                                      "\"service\":\"%s\",\"error_types\":[", services[v]);
        for (int i = 0, first = 1; i < TEMPLATE_COUNT; i++) {
            if (templates[i].service != v) continue;
            len += (size_t)snprintf(fields + len, sizeof(fields) - len, "%s\"%s\"",
                                    first ? "" : ",", templates[i].error_type);
            first = 0;
        }
        snprintf(fields + len, sizeof(fields) - len, "]");
        for (long long hour = h0; hour <= h1; hour++) {
            long long st;
            if (service_incident_start(o->seed, v, hour, &st) &&
                st + SERVICE_INCIDENT_S > o->start_s && st < o->end_s)
                incident_line(fp, "api_service", st, st + SERVICE_INCIDENT_S, fields);
        }
    }
}

static void incidents_handlers(const struct options *o, FILE *fp)
{
    char fields[256], host[32];
    long long h0 = floor_div(o->start_s - BACKLOG_S, 3600), h1 = floor_div(o->end_s, 3600);
    for (int i = 0; i < HANDLER_COUNT; i++) {
        host_name(handler_profile_of(o, i).host, host, sizeof(host));
        for (long long hour = h0; hour <= h1; hour++) {
            long long st;
            double peak;
            if (!handler_backlog_start(o, i, hour, &st, &peak) || st + BACKLOG_S <= o->start_s ||
                st >= o->end_s)
                continue;
            snprintf(fields, sizeof(fields),
                     "\"handler\":\"%s\",\"component\":\"%s\",\"host\":\"%s\",\"peak\":%.0f",
                     handlers[i], handler_component(i), host, peak);
            incident_line(fp, "handler_backlog", st, st + BACKLOG_S, fields);
        }
    }
}

/* A failed stage fails its run; the pipeline stays failed until the next run (15 minutes). */
static void incidents_pipelines(const struct options *o, FILE *fp)
{
    struct pipe_row rows[16];
    char fields[256];
    long long k0 = floor_div(o->start_s, PIPELINE_PERIOD_S) - 1;
    long long k1 = floor_div(o->end_s - 1, PIPELINE_PERIOD_S);
    for (long long k = k0; k <= k1; k++)
        for (int p = 0; p < PIPELINE_COUNT; p++) {
            int n = 0;
            pipeline_run(o, p, k, rows, &n);
            for (int i = 0; i < n; i++) {
                long long ts_s = floor_div(rows[i].ts_ms, 1000);
                if (rows[i].status != S_FAILED || ts_s < o->start_s || ts_s >= o->end_s) continue;
                int y, mo, d, h, mi;
                civil_from_epoch(k * PIPELINE_PERIOD_S, &y, &mo, &d, &h, &mi);
                snprintf(fields, sizeof(fields),
                         "\"pipeline\":\"%s\",\"run_id\":\"%s-%04d%02d%02dT%02d%02d\","
                         "\"stage\":\"%s\"",
                         pipelines[p], pipelines[p], y, mo, d, h, mi, stages[rows[i].stage]);
                incident_line(fp, "pipeline_failed", ts_s, ts_s + PIPELINE_PERIOD_S, fields);
            }
        }
}

static void write_incidents(const struct options *o)
{
    FILE *fp = fopen(o->incidents_path, "w");
    if (!fp) die("cannot create %s: %s", o->incidents_path, strerror(errno));
    incidents_hosts(o, fp);
    incidents_services(o, fp);
    incidents_handlers(o, fp);
    incidents_pipelines(o, fp);
    if (fclose(fp) != 0) die("cannot write %s: %s", o->incidents_path, strerror(errno));
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *fp)
{
    fputs("usage: gen [options]\n"
          "Writes opsdb's reference benchmark workload, deterministically.\n"
          "  --table NAME     system_metrics (default), api_usage, error_logs, pipeline_status,\n"
          "                   handler_metrics, or all (needs --out-dir)\n"
          "  --format F       ndjson (default) or lp (InfluxDB line protocol, system_metrics\n"
          "                   only: one line per host and timestamp, ms timestamps)\n"
          "  --days D         length of the window in days, fractions allowed (default 7)\n"
          "  --end EPOCH_S    end of the window (default: now rounded down to 10 s)\n"
          "  --start EPOCH_S  start of the window (overrides --days)\n"
          "  --hosts N        hosts (default 100)\n"
          "  --host-offset N  number of the first host for system_metrics (default 0)\n"
          "  --metrics N      metrics per host, 1..1000 (default 20)\n"
          "  --seed N         random seed (default 1)\n"
          "  --limit N        stop after N rows (ndjson) or N points (lp, whole lines only)\n"
          "  --out-dir DIR    write files DIR/<table>-NNNNNN.<ext> of --batch lines each and\n"
          "                   print one summary line per table instead of the data\n"
          "  --batch N        lines per file with --out-dir (default 10000)\n"
          "  --api-rate R     api_usage requests per second before the daily and weekly cycle,\n"
          "                   0.01..100 (default 50)\n"
          "  --incidents FILE also list the incidents injected into the window (CPU\n"
          "                   saturations, memory leaks above 90%, service incidents, handler\n"
          "                   backlogs, failed pipeline runs) in FILE, one JSON object a line;\n"
          "                   the data written does not change\n",
          fp);
}

static long long parse_ll(const char *name, const char *s, long long lo, long long hi)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        die("%s %s is not an integer in %lld..%lld", name, s, lo, hi);
    return v;
}

static void parse_args(int argc, char **argv, struct options *o)
{
    *o = (struct options){7, -1, -1, 100, 0, 20, 1, T_SYSTEM, FMT_NDJSON, -1, NULL, 10000,
                          50.0, NULL};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            usage(stderr);
            die("unknown option or missing value: %s", a);
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--days")) {
            char *end;
            o->days = strtod(v, &end);
            if (end == v || *end || !(o->days > 0 && o->days <= 3660))
                die("--days %s is not a number in (0, 3660]", v);
        } else if (!strcmp(a, "--start"))
            o->start_s = parse_ll(a, v, 0, 253402300799LL);
        else if (!strcmp(a, "--end"))
            o->end_s = parse_ll(a, v, 0, 253402300799LL);
        else if (!strcmp(a, "--hosts"))
            o->hosts = (int)parse_ll(a, v, 1, HOSTS_MAX);
        else if (!strcmp(a, "--host-offset"))
            o->host_offset = (int)parse_ll(a, v, 0, HOSTS_MAX);
        else if (!strcmp(a, "--metrics"))
            o->metrics = (int)parse_ll(a, v, 1, METRICS_MAX);
        else if (!strcmp(a, "--seed"))
            o->seed = (unsigned long long)parse_ll(a, v, 0, INT64_MAX);
        else if (!strcmp(a, "--limit"))
            o->limit = parse_ll(a, v, 0, INT64_MAX);
        else if (!strcmp(a, "--batch"))
            o->batch = parse_ll(a, v, 1, INT64_MAX);
        else if (!strcmp(a, "--out-dir"))
            o->out_dir = v;
        else if (!strcmp(a, "--incidents"))
            o->incidents_path = v;
        else if (!strcmp(a, "--api-rate")) {
            char *end;
            o->api_rate = strtod(v, &end);
            if (end == v || *end || !(o->api_rate >= 0.01 && o->api_rate <= 100))
                die("--api-rate %s is not a number in 0.01..100", v);
        }
        else if (!strcmp(a, "--format")) {
            if (!strcmp(v, "lp"))
                o->format = FMT_LP;
            else if (!strcmp(v, "ndjson"))
                o->format = FMT_NDJSON;
            else
                die("--format %s: use lp or ndjson", v);
        } else if (!strcmp(a, "--table")) {
            o->table = -2;
            for (int t = 0; t < T_COUNT; t++)
                if (!strcmp(v, table_names[t])) o->table = t;
            if (!strcmp(v, "all")) o->table = -1;
            if (o->table == -2)
                die("--table %s: use system_metrics, api_usage, error_logs, pipeline_status, "
                    "handler_metrics or all",
                    v);
        } else {
            usage(stderr);
            die("unknown option: %s", a);
        }
    }
    if (o->end_s < 0) o->end_s = (long long)time(NULL) / 10 * 10;
    if (o->start_s < 0) o->start_s = o->end_s - (long long)(o->days * DAY_S);
    if (o->start_s >= o->end_s) die("--start %lld is not before --end %lld", o->start_s, o->end_s);
    if (o->format == FMT_LP && o->table != T_SYSTEM)
        die("--format lp is only for --table system_metrics");
    if (o->table == -1 && !o->out_dir) die("--table all needs --out-dir");
}

int main(int argc, char **argv)
{
    static int (*const generators[T_COUNT])(const struct options *, struct out *) = {
        gen_system, gen_api, gen_errors, gen_pipeline, gen_handler,
    };
    struct options o;
    parse_args(argc, argv, &o);
    if (o.out_dir && mkdir(o.out_dir, 0777) != 0 && errno != EEXIST)
        die("cannot create %s: %s", o.out_dir, strerror(errno));
    if (!o.out_dir) setvbuf(stdout, NULL, _IOFBF, 1 << 20);
    if (o.incidents_path) write_incidents(&o);
    for (int t = 0; t < T_COUNT; t++) {
        if (o.table != -1 && o.table != t) continue;
        struct out out = {
            &o, table_names[t], o.format == FMT_LP ? "lp" : "ndjson", NULL, 0, 0, 0, 0, 0};
        generators[t](&o, &out);
        out_finish(&out);
    }
    return 0;
}
