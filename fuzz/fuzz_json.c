/*
 * libFuzzer target: JSON bodies (ingest_parse_json) for any table, plus a differential check of
 * the JSON scanner (json_scan.c) against jansson on the same bytes taken as one JSON text.
 * Input: a selector byte (fuzz_common.h: table, precision, forced NDJSON), then the body.
 */
#include "fuzz_common.h"
#include "ingest/ingest_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t depth_of(const char *s, size_t len)
{
    size_t depth = 0, max = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                max = depth;
        } else if ((c == '}' || c == ']') && depth) {
            depth--;
        }
    }
    return max;
}

/* The scanner must accept what jansson accepts and (outside of invalid UTF-8 and numbers
 * jansson cannot hold) refuse what jansson refuses. */
static void differential(const char *body, size_t size)
{
    struct json_cursor c;
    struct buf scratch;
    buf_init(&scratch, 1 << 26);
    json_cursor_init(&c, body, size);
    bool scan_ok = json_skip_value(&c, &scratch) && json_at_end(&c);
    buf_release(&scratch);
    json_error_t jerr;
    json_t *j = json_loadb(body, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    bool jansson_ok = j != NULL;
    json_decref(j);
    if (scan_ok == jansson_ok)
        return;
    if (jansson_ok) {
        /* jansson takes a NUL byte for the end of the input ("2<NUL>" is 2) */
        if (memchr(body, '\0', size))
            return;
        /* the scanner limits nesting; nothing else may differ */
        fuzz_check(depth_of(body, size) > 31, "json_scan refuses what jansson accepts: %s",
                   c.error ? c.error : "trailing data");
        return;
    }
    /* jansson checks UTF-8 and the range of numbers (the scanner leaves those to the columns)
     * and refuses \u0000 in member names */
    if (strstr(jerr.text, "UTF-8") || strstr(jerr.text, "too big") || strstr(jerr.text, "NUL") ||
        strstr(jerr.text, "overflow") || !fuzz_utf8_valid(body, size))
        return;
    fuzz_check(false, "json_scan accepts what jansson refuses: %s", jerr.text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    if (size == 0)
        return 0;
    struct fuzz_selector sel = fuzz_select(data[0]);
    size--;
    char *body = malloc(size ? size : 1);
    memcpy(body, data + 1, size);
    struct batch b;
    batch_init(&b, sel.table);
    struct rejects *r = malloc(sizeof *r);
    rejects_init(r, "row");
    int rc = ingest_parse_json(sel.ctx, body, size, sel.ndjson, &b, r);
    fuzz_check_batch(sel.ctx, rc, &b, r, true);
    batch_release(&b);
    free(r);
    differential(body, size);
    free(body);
    return 0;
}
