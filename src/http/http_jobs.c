/*
 * The job routes: the jobs and their state, one job's runs, run now, cancel, pause and resume, and
 * the pings external jobs send (start, success, fail; ?exit_code=, ?run_id=, the body is the log
 * tail), as Healthchecks.io takes them.
 */
#include "http/http_int.h"
#include "jobs/jobs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool jobs_on(struct http_server *srv, struct response *res)
{
    if (srv->deps.jobs)
        return true;
    respond_error(res, 404, "scheduled jobs are not running in this process", NULL);
    return false;
}

static void respond_err(struct response *res, const struct err *e)
{
    respond_error(res, status_for(e->code), e->msg, NULL);
}

void handle_jobs(struct http_server *srv, struct request *req, struct response *res)
{
    if (!jobs_on(srv, res))
        return;
    const char *all = request_arg(req, "all");
    if (all && strcmp(all, "true") != 0 && strcmp(all, "false") != 0) {
        respond_error(res, 400, "all: expected true or false", NULL);
        return;
    }
    jobs_list_json(srv->deps.jobs, all && strcmp(all, "true") == 0, &res->body);
}

void handle_job_history(struct http_server *srv, struct request *req, struct response *res)
{
    if (!jobs_on(srv, res))
        return;
    const char *arg = request_arg(req, "limit");
    long limit = 20;
    if (arg) {
        char *end;
        errno = 0;
        limit = strtol(arg, &end, 10);
        if (!*arg || *end || errno || limit < 1 || limit > 1000) {
            respond_error(res, 400, "limit: expected a whole number from 1 to 1000", NULL);
            return;
        }
    }
    struct err e;
    if (jobs_history_json(srv->deps.jobs, req->path_arg, (int)limit, &res->body, &e) != 0)
        respond_err(res, &e);
}

/* An action on a job's run that goes on after the answer: 202 {"job": name, what: true}. */
static void accepted(struct http_server *srv, struct request *req, struct response *res,
                     int (*act)(struct jobs *, const char *, struct err *), const char *what)
{
    struct err e;
    if (!jobs_on(srv, res))
        return;
    if (act(srv->deps.jobs, req->path_arg, &e) != 0) {
        respond_err(res, &e);
        return;
    }
    buf_printf(&res->body, "{\"job\":\"%s\",\"%s\":true}", req->path_arg, what);
    res->status = 202;
}

void handle_job_run(struct http_server *srv, struct request *req, struct response *res)
{
    accepted(srv, req, res, jobs_run_now, "started");
}

void handle_job_cancel(struct http_server *srv, struct request *req, struct response *res)
{
    accepted(srv, req, res, jobs_cancel, "cancelling");
}

static void pause_or_resume(struct http_server *srv, struct request *req, struct response *res,
                            bool pause)
{
    struct err e;
    if (!jobs_on(srv, res))
        return;
    if (jobs_pause(srv->deps.jobs, req->path_arg, pause, &e) != 0)
        respond_err(res, &e);
    else
        buf_printf(&res->body, "{\"job\":\"%s\",\"paused\":%s}", req->path_arg,
                   pause ? "true" : "false");
}

void handle_job_pause(struct http_server *srv, struct request *req, struct response *res)
{
    pause_or_resume(srv, req, res, true);
}

void handle_job_resume(struct http_server *srv, struct request *req, struct response *res)
{
    pause_or_resume(srv, req, res, false);
}

static void ping(struct http_server *srv, struct request *req, struct response *res,
                 enum jobs_ping_kind kind)
{
    if (!jobs_on(srv, res))
        return;
    struct jobs_ping p = {.kind = kind};
    const char *code = request_arg(req, "exit_code");
    if (code) {
        char *end;
        errno = 0;
        long v = strtol(code, &end, 10);
        if (!*code || *end || errno || v < -255 || v > 255) {
            respond_error(res, 400, "exit_code: expected a whole number from -255 to 255", NULL);
            return;
        }
        p.has_exit_code = true;
        p.exit_code = (int)v;
    }
    p.run_id = request_arg(req, "run_id");
    if (!p.run_id)
        p.run_id = request_arg(req, "rid"); /* Healthchecks' name for it */
    p.body = req->body.data;
    p.body_len = req->body.len;
    struct err e;
    if (jobs_ping(srv->deps.jobs, req->path_arg, &p, &e) != 0)
        respond_err(res, &e);
    else
        buf_printf(&res->body, "{\"job\":\"%s\",\"ok\":true}", req->path_arg);
}

void handle_job_start(struct http_server *srv, struct request *req, struct response *res)
{
    ping(srv, req, res, JOBS_PING_START);
}

void handle_job_success(struct http_server *srv, struct request *req, struct response *res)
{
    ping(srv, req, res, JOBS_PING_SUCCESS);
}

void handle_job_fail(struct http_server *srv, struct request *req, struct response *res)
{
    ping(srv, req, res, JOBS_PING_FAIL);
}
