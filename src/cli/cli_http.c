/*
 * Requests from the CLI to a running server (the commands that act on live state: alerts, jobs).
 */
#include "cli/cli.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ANSWER_MAX (64 << 20)

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
    struct buf *b = arg;
    if (b->len + size * n > ANSWER_MAX)
        return 0;
    buf_append(b, data, size * n);
    return size * n;
}

int cli_http_call(const struct config *cfg, const char *server, const char *method,
                  const char *path, const char *body, size_t body_len, const char *content_type,
                  struct buf *answer_out)
{
    char url[1024];
    const char *scheme = cfg->tls_cert[0] ? "https://" : "http://";
    snprintf(url, sizeof url, "%s%s%s", strncmp(server, "http", 4) ? scheme : "", server, path);
    if (cfg->ca_file[0]) {
        struct err e;
        if (tls_ca_file_check(cfg->ca_file, "--ca-file", &e) != 0)
            return cli_fail("%s", e.msg);
    }
    CURL *c = curl_easy_init();
    if (!c)
        return cli_fail("cannot start an HTTP client");
    char curl_error[CURL_ERROR_SIZE] = "";
    tls_client_setup(c, cfg->ca_file);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_error);
    struct buf answer;
    buf_init(&answer, ANSWER_MAX);
    char type[160];
    snprintf(type, sizeof type, "Content-Type: %s",
             content_type ? content_type : "application/json");
    struct curl_slist *headers = curl_slist_append(NULL, type);
    const char *token = getenv(CLI_TOKEN_ENV);
    char bearer[600] = "";
    if (token && *token &&
        (size_t)snprintf(bearer, sizeof bearer, "Authorization: Bearer %s", token) < sizeof bearer)
        headers = curl_slist_append(headers, bearer);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &answer);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)body_len);
    }
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    explicit_bzero(bearer, sizeof bearer);
    int exit_code = 0;
    if (rc != CURLE_OK)
        exit_code = cli_fail("cannot reach the server at %s: %s (is `opsdb serve` running there? "
                             "--server URL)",
                             url, curl_error[0] ? curl_error : curl_easy_strerror(rc));
    else if (status < 200 || status > 299)
        exit_code = cli_fail("the server answered %ld: %.*s", status, (int)answer.len,
                             answer.data ? answer.data : "");
    else if (answer_out)
        buf_append(answer_out, answer.data ? answer.data : "", answer.len);
    else
        printf("%.*s\n", (int)answer.len, answer.data ? answer.data : "");
    buf_release(&answer);
    return exit_code;
}

int cli_token_flag(int argc, char **argv, int *i)
{
    if (strcmp(argv[*i], "--token") != 0 || *i + 1 >= argc)
        return 0;
    setenv(CLI_TOKEN_ENV, argv[++*i], 1);
    return 1;
}
