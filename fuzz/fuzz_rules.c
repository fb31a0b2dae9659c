/*
 * libFuzzer target: alert rule files (alert_rules_load_text), the YAML groups users write and
 * POST /api/v1/alerts/reload reads. The input is the file's text (up to a NUL byte). A file
 * either loads, every rule named, with a known table and labels and annotations that are JSON
 * objects, or fails with a message naming the file.
 */
#include "alert/alert.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_rule(const struct alert_rule *r)
{
    fuzz_check(r->name[0] != '\0', "a rule without a name");
    fuzz_check(r->group[0] != '\0', "rule %s without a group", r->name);
    fuzz_check(r->is_sql ? r->sql != NULL : schema_table(r->table) != NULL, "rule %s: table '%s'",
               r->name, r->table);
    fuzz_check(r->window_ms >= 0 && r->for_ms >= 0 && r->interval_ms > 0,
               "rule %s: window %lld, for %lld, interval %lld", r->name, (long long)r->window_ms,
               (long long)r->for_ms, (long long)r->interval_ms);
    fuzz_check(r->nby <= ALERT_BY_MAX, "rule %s: %zu by columns", r->name, r->nby);
    fuzz_check(r->labels_json && fuzz_json_object(r->labels_json, strlen(r->labels_json), true),
               "rule %s: labels %s", r->name, r->labels_json ? r->labels_json : "NULL");
    fuzz_check(r->annotations_json &&
                   fuzz_json_object(r->annotations_json, strlen(r->annotations_json), true),
               "rule %s: annotations %s", r->name,
               r->annotations_json ? r->annotations_json : "NULL");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    size_t len = strnlen((const char *)data, size);
    char *text = malloc(len + 1); /* exact size: a read past the end is reported */
    memcpy(text, data, len);
    text[len] = '\0';
    struct alert_rules rs;
    struct err e;
    err_clear(&e);
    int rc = alert_rules_load_text(&rs, "fuzz.yaml", text, 60000, &e);
    fuzz_check(rc == 0 ||
                   ((rc == E_INVALID || rc == E_LIMIT) && strncmp(e.msg, "fuzz.yaml", 9) == 0),
               "rc %d: '%s'", rc, e.msg);
    if (rc == 0)
        for (size_t i = 0; i < rs.n; i++)
            check_rule(&rs.rules[i]);
    alert_rules_free(&rs);
    free(text);
    return 0;
}
