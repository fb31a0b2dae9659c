/*
 * The column-pack codec: rows of an event table as one compressed blob, column after column. A
 * blob comes back from disk, so the decoder trusts nothing in it.
 *
 * Both versions start with a header and end with one zstd frame (with its content size and
 * checksum) that fills the rest of the blob; its content size lies within nrows * ncols ..
 * COLPACK_MAX_RAW_BYTES and the content is used up exactly. uv, zz and the int64 <-> uint64
 * mapping are as in varint.h. The encoder writes version 2, or version 1 when version 2 would
 * not fit the bounds; the decoder reads both (databases hold version 1 blocks).
 *
 * Version 1:
 *   header   8F 50          magic ('P' after a non-ASCII byte: text is never a block)
 *            01             version
 *            uv nrows       1..COLPACK_MAX_ROWS
 *            uv ncols       1..COLPACK_MAX_COLUMNS
 *   payload  for each column in turn:
 *            types    nrows bytes: 0 NULL, 1 integer, 2 real, 3 text
 *            values   in row order, for each non-NULL value:
 *                     integer  zz (v - the column's previous integer), the first against 0:
 *                              timestamps in order, ids and counts take a byte or two
 *                     real     8 bytes, little-endian, of bits ^ the previous real's bits
 *                     text     uv length, then the bytes
 *
 * Version 2 keeps that layout and adds three things that matter for logs: rows of one group
 * stored together, repeated texts stored once, and numbers and hex ids taken out of texts.
 *   header   8F 50 02, uv nrows, uv ncols as in version 1, then
 *            uv group       0, or g: column g - 1 groups the rows
 *            uv text_bytes  what the templated texts below expand to, <= COLPACK_MAX_RAW_BYTES
 *   payload  the group column first (when there is one), then the others in order; each:
 *            flags    1 byte: bit 0 the column is in group order (else row order), bit 1 its
 *                     texts are templated (else plain); the other bits 0. The group column
 *                     is plain, in row order.
 *            ref      templated only: uv 0, or r: templates may stand for column r - 1's text
 *                     of their row; that column comes earlier in the payload
 *            tokens   templated only: uv length, then the tokens of its texts, in order, used
 *                     up exactly
 *            types    nrows bytes as in version 1, in the column's order
 *            values   as in version 1, in the column's order, but for texts: uv 0, uv length,
 *                     the bytes: a text not seen before in this column; uv k: the k-th of them
 *                     (from 1) again. A templated column stores each text's template that way,
 *                     expanded with the next tokens: a template's byte 00 is a decimal number
 *                     (1 to 19 digits, no leading zero): a uv value among the tokens; 01 uv L
 *                     is a run of L lowercase hex digits (at least one a digit): (L + 1) / 2
 *                     bytes of nibbles, high first, among the tokens; 02 b is the byte b itself
 *                     (for bytes 00..03 of the text); 03 is the ref column's text of the row
 *                     (not empty); any other byte is itself. So each piece of a template
 *                     yields a byte of text or more: expanding costs what it writes.
 *   Group order: the group column's texts are numbered by first appearance (from 1; a row
 *   without a text is 0) and its rows sorted by that number, stably. So rows of one error,
 *   endpoint or handler lie together and their messages, stack traces and counters repeat
 *   each other closely, the way zstd finds best; which order each column takes and whether its
 *   texts are templated is chosen per block by compressing the candidates.
 * Keeping a column's type bytes together and its values together gives zstd long runs of the
 * same few patterns; a column of repeated strings becomes back-references.
 */
#include "store/colpack.h"
#include "store/varint.h"
#include "store/zstd_ctx.h"

#include <stdlib.h>
#include <string.h>
#include <zstd.h>

enum {
    MAGIC0 = 0x8f,
    MAGIC1 = 'P',
    VERSION1 = 1,
    VERSION2 = 2,
    HEADER_MAX = 3 + 4 * 10,
    ZSTD_LEVEL = 6,  /* cold data is packed once and read rarely: trade a little time for size */
    TRIAL_LEVEL = 1, /* what choosing between a column's codings compresses them with */
    TYPE_NULL = 0,
    TYPE_INT = 1,
    TYPE_REAL = 2,
    TYPE_TEXT = 3,
    FLAG_GROUP_ORDER = 1,
    FLAG_TEMPLATE = 2,
    TPL_DECIMAL = 0,
    TPL_HEX = 1,
    TPL_ESCAPE = 2,
    TPL_REF = 3,
    REF_MIN_BYTES = 8,    /* a shorter text is not worth a reference */
    REF_SAMPLE_ROWS = 64, /* rows a reference is looked for in */
    PICK_ROWS = 2048      /* rows a group column is picked on */
};

static uint64_t bits_of(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double double_of(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* Bytes the version 1 form takes, or 0 with e set when it cannot be packed. */
static size_t raw_size(const struct value *cells, size_t nrows, size_t ncols, struct err *e)
{
    size_t size = nrows * ncols;
    for (size_t c = 0; c < ncols; c++) {
        uint64_t prev = 0;
        for (size_t r = 0; r < nrows; r++) {
            const struct value *v = &cells[r * ncols + c];
            uint8_t tmp[10];
            switch (v->type) {
            case VAL_NULL:
                break;
            case VAL_INT:
                size += put_uvarint(tmp, zigzag(u64_of(v->i) - prev));
                prev = u64_of(v->i);
                break;
            case VAL_REAL:
                size += 8;
                break;
            case VAL_TEXT:
                size += put_uvarint(tmp, v->len) + v->len;
                break;
            default:
                err_set(e, E_INVALID, "row %zu, column %zu: a value of unknown type %u", r, c,
                        v->type);
                return 0;
            }
            if (size > COLPACK_MAX_RAW_BYTES) {
                err_set(e, E_LIMIT, "%zu rows take more than %u bytes unpacked", nrows,
                        COLPACK_MAX_RAW_BYTES);
                return 0;
            }
        }
    }
    return size;
}

static size_t put_column_v1(uint8_t *p, const struct value *cells, size_t nrows, size_t ncols,
                            size_t c)
{
    static const uint8_t tags[] = {TYPE_NULL, TYPE_INT, TYPE_REAL, TYPE_TEXT};
    size_t len = 0;
    for (size_t r = 0; r < nrows; r++)
        p[len++] = tags[cells[r * ncols + c].type];
    uint64_t prev_int = 0, prev_real = 0;
    for (size_t r = 0; r < nrows; r++) {
        const struct value *v = &cells[r * ncols + c];
        if (v->type == VAL_INT) {
            len += put_uvarint(p + len, zigzag(u64_of(v->i) - prev_int));
            prev_int = u64_of(v->i);
        } else if (v->type == VAL_REAL) {
            uint64_t x = bits_of(v->d) ^ prev_real;
            prev_real = bits_of(v->d);
            for (int i = 0; i < 8; i++)
                p[len++] = (uint8_t)(x >> (8 * i));
        } else if (v->type == VAL_TEXT) {
            len += put_uvarint(p + len, v->len);
            if (v->len) /* an empty text may point nowhere (s NULL): memcpy must not see it */
                memcpy(p + len, v->s, v->len);
            len += v->len;
        }
    }
    return len;
}

/* ---------------------------------------------------------------------------------------------
 * Growable byte streams and a table of distinct texts for the version 2 encoder, and the group
 * order both sides derive.
 */

struct stream {
    uint8_t *p;
    size_t len, cap;
    bool failed; /* an allocation failed: the stream holds garbage */
};

/* Room for n more bytes; false (and failed set) when there is no memory. */
static bool need(struct stream *s, size_t n)
{
    if (s->failed)
        return false;
    if (s->cap - s->len >= n)
        return true;
    size_t cap = s->cap ? s->cap : 4096;
    while (cap - s->len < n)
        cap *= 2;
    uint8_t *p = realloc(s->p, cap);
    if (!p) {
        s->failed = true;
        return false;
    }
    s->p = p;
    s->cap = cap;
    return true;
}

static void put_byte(struct stream *s, uint8_t b)
{
    if (need(s, 1))
        s->p[s->len++] = b;
}

static void put_uv(struct stream *s, uint64_t v)
{
    if (need(s, 10))
        s->len += put_uvarint(s->p + s->len, v);
}

static void put_bytes(struct stream *s, const void *p, size_t n)
{
    if (n && need(s, n)) {
        memcpy(s->p + s->len, p, n);
        s->len += n;
    }
}

struct span {
    const uint8_t *p;
    uint32_t len;
};

/* Distinct texts numbered by first appearance: an open-addressing table of at most max
 * entries (a block's rows), so it never grows. */
struct dict {
    uint32_t *slots; /* entry + 1, 0 free */
    size_t mask;
    struct span *entries;
    size_t n;
};

static bool dict_init(struct dict *d, size_t max)
{
    size_t cap = 16;
    while (cap < 2 * max)
        cap *= 2;
    d->slots = calloc(cap, sizeof *d->slots);
    d->entries = malloc(max * sizeof *d->entries);
    d->mask = cap - 1;
    d->n = 0;
    return d->slots && d->entries;
}

static void dict_release(struct dict *d)
{
    free(d->slots);
    free(d->entries);
}

static void dict_clear(struct dict *d)
{
    memset(d->slots, 0, (d->mask + 1) * sizeof *d->slots);
    d->n = 0;
}

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15u ^ n, w;
    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdu;
        h ^= h >> 32;
    }
    w = 0;
    if (n)
        memcpy(&w, p, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53u;
    return h ^ (h >> 29);
}

/* The number of text (p, len) in d, adding it when new (*added set); the caller keeps p valid. */
static uint32_t dict_add(struct dict *d, const uint8_t *p, uint32_t len, bool *added)
{
    size_t i = hash_bytes(p, len) & d->mask;
    for (; d->slots[i]; i = (i + 1) & d->mask) {
        const struct span *x = &d->entries[d->slots[i] - 1];
        if (x->len == len && (len == 0 || memcmp(x->p, p, len) == 0)) {
            *added = false;
            return d->slots[i] - 1;
        }
    }
    d->entries[d->n] = (struct span){p, len};
    d->slots[i] = (uint32_t)++d->n;
    *added = true;
    return (uint32_t)(d->n - 1);
}

/* Writes the decimal digits of u at out (room for 20); returns how many. */
static size_t put_decimal(uint8_t *out, uint64_t u)
{
    char digits[20];
    size_t n = 0;
    do
        digits[n++] = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)digits[n - 1 - i];
    return n;
}

/* Group order: the rows sorted by their group numbers gid (0..n), stably; NULL without memory.
 * The caller frees it. */
static uint32_t *group_order(const uint32_t *gid, size_t n)
{
    uint32_t *start = calloc(n + 2, sizeof *start), *perm = malloc(n * sizeof *perm);
    if (start && perm) {
        for (size_t r = 0; r < n; r++)
            start[gid[r] + 1]++;
        for (size_t g = 1; g < n + 2; g++)
            start[g] += start[g - 1];
        for (size_t r = 0; r < n; r++)
            perm[start[gid[r]]++] = (uint32_t)r;
    } else {
        free(perm);
        perm = NULL;
    }
    free(start);
    return perm;
}

/* ---------------------------------------------------------------------------------------------
 * Version 2 encoding.
 */

/* Where one row's template and tokens lie in a templated column's streams. */
struct piece {
    size_t tpl_at, tpl_len, tok_at, tok_len;
};

/* One token of a template: its kind, hex digits, and in the first row of the template where its
 * bytes lie among the row's tokens and whether every row has the same. */
struct slot {
    uint8_t kind;
    uint64_t hex_digits;
    size_t at, len;
    bool constant;
};

struct enc {
    const struct value *cells;
    size_t nrows, ncols;
    int group;                /* column, or -1 */
    uint32_t *perm;           /* group order: the k-th row; NULL without a group */
    struct dict dict;         /* a column's distinct texts or templates */
    struct stream tpl;        /* a templated column's templates ... */
    struct stream tok;        /* ... and tokens */
    struct piece *pieces;     /* each row's template and tokens in tpl and tok (nrows) */
    struct stream tpl2, tok2; /* what inline_constants rewrites them into */
    uint32_t *tid;            /* each row's template number (nrows) */
    struct slot *slots;       /* one template's tokens */
    size_t slots_cap;
    struct stream trial; /* a candidate column */
    struct stream best;  /* the best candidate so far */
    struct stream zbuf;  /* a candidate compressed */
    size_t text_bytes;   /* of the templated columns chosen so far */
};

static const struct value *enc_cell(const struct enc *x, size_t k, size_t c, bool grouped)
{
    size_t row = grouped ? x->perm[k] : k;
    return &x->cells[row * x->ncols + c];
}

/* Numbers the group column's texts by first appearance (a row without text is 0) and puts the
 * rows in group order. */
static bool group_rows(struct enc *x)
{
    uint32_t *gid = malloc(x->nrows * sizeof *gid);
    if (!gid)
        return false;
    dict_clear(&x->dict);
    for (size_t r = 0; r < x->nrows; r++) {
        const struct value *v = &x->cells[r * x->ncols + (size_t)x->group];
        bool added;
        gid[r] =
            v->type == VAL_TEXT ? 1 + dict_add(&x->dict, (const uint8_t *)v->s, v->len, &added) : 0;
    }
    x->perm = group_order(gid, x->nrows);
    free(gid);
    return x->perm != NULL;
}

static bool is_hex_digit(uint8_t b)
{
    return (b >= '0' && b <= '9') || (b >= 'a' && b <= 'f');
}

static uint8_t nibble(uint8_t b)
{
    return (uint8_t)(b <= '9' ? b - '0' : b - 'a' + 10);
}

/* The token of hex digits s[0..n) (at least one a decimal digit) into x's template and tokens:
 * a decimal number when it is one, else a hex run. */
static void put_token(struct enc *x, const uint8_t *s, size_t n)
{
    bool decimal = n <= 19 && (s[0] != '0' || n == 1);
    for (size_t i = 0; decimal && i < n; i++)
        decimal = s[i] <= '9';
    if (decimal) {
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++)
            v = v * 10 + (uint64_t)(s[i] - '0');
        put_byte(&x->tpl, TPL_DECIMAL);
        put_uv(&x->tok, v);
        return;
    }
    put_byte(&x->tpl, TPL_HEX);
    put_uv(&x->tpl, n);
    for (size_t i = 0; i < n; i += 2)
        put_byte(&x->tok, (uint8_t)(nibble(s[i]) << 4 | (i + 1 < n ? nibble(s[i + 1]) : 0)));
}

/* Splits text s[0..n) into its template and tokens; ref (or NULL) is the text the template's
 * first copy of it stands for. */
static void split_text(struct enc *x, const uint8_t *s, size_t n, const struct value *ref)
{
    const uint8_t *at = NULL;
    if (ref && ref->type == VAL_TEXT && ref->len >= REF_MIN_BYTES && ref->len <= n)
        at = memmem(s, n, ref->s, ref->len);
    size_t i = 0;
    while (i < n) {
        if (s + i == at) {
            put_byte(&x->tpl, TPL_REF);
            i += ref->len;
            continue;
        }
        size_t j = i;
        bool digit = false;
        while (j < n && is_hex_digit(s[j]) && s + j != at)
            digit |= s[j++] <= '9';
        if (j > i && digit) {
            put_token(x, s + i, j - i);
        } else if (j > i) {
            put_bytes(&x->tpl, s + i, j - i);
        } else {
            if (s[i] <= TPL_REF)
                put_byte(&x->tpl, TPL_ESCAPE);
            put_byte(&x->tpl, s[i]);
            j = i + 1;
        }
        i = j;
    }
}

/* Templates and tokens of column c's texts in the given order, each row's in pieces. */
static void split_column(struct enc *x, size_t c, bool grouped, int ref)
{
    x->tpl.len = x->tok.len = 0;
    for (size_t k = 0; k < x->nrows; k++) {
        const struct value *v = enc_cell(x, k, c, grouped);
        struct piece *pc = &x->pieces[k];
        pc->tpl_at = x->tpl.len;
        pc->tok_at = x->tok.len;
        if (v->type == VAL_TEXT)
            split_text(x, (const uint8_t *)v->s, v->len,
                       ref >= 0 ? enc_cell(x, k, (size_t)ref, grouped) : NULL);
        pc->tpl_len = x->tpl.len - pc->tpl_at;
        pc->tok_len = x->tok.len - pc->tok_at;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Constant tokens back into their templates: a token that has one value in every row of its
 * template (a port, the line of a fixed stack frame, the 1 of /v1/) costs a byte or more a row
 * as a token and nothing as text of a template the rows share.
 */

/* The tokens of template t[0..len) (made by split_text) into x->slots; returns how many, or
 * SIZE_MAX without memory. */
static size_t template_slots(struct enc *x, const uint8_t *t, size_t len)
{
    if (x->slots_cap < len) {
        struct slot *p = realloc(x->slots, len * sizeof *p);
        if (!p)
            return SIZE_MAX;
        x->slots = p;
        x->slots_cap = len;
    }
    size_t n = 0;
    for (struct reader r = {t, len, 0}; r.pos < r.len;) {
        uint8_t b = r.p[r.pos++];
        uint64_t digits = 0;
        if (b == TPL_ESCAPE)
            r.pos++;
        else if (b == TPL_DECIMAL || (b == TPL_HEX && get_uvarint(&r, &digits)))
            x->slots[n++] = (struct slot){b, digits, 0, 0, true};
    }
    return n;
}

/* Bytes of the token of slot sl at tok (a varint, or the nibbles of its hex digits). */
static size_t token_len(const struct slot *sl, const uint8_t *tok)
{
    size_t len = 1;
    if (sl->kind == TPL_HEX)
        return (size_t)(sl->hex_digits + 1) / 2;
    while (tok[len - 1] & 0x80)
        len++;
    return len;
}

/* Where each token of a row lies among its tokens tok, into the slots' at and len (first) or
 * compared with them (not first: constant cleared where they differ). */
static void match_slots(struct slot *slots, size_t n, const uint8_t *first, const uint8_t *tok,
                        bool is_first)
{
    size_t at = 0;
    for (size_t j = 0; j < n; j++) {
        size_t len = token_len(&slots[j], tok + at);
        if (is_first) {
            slots[j].at = at;
            slots[j].len = len;
        } else if (slots[j].len != len || memcmp(first + slots[j].at, tok + at, len) != 0) {
            slots[j].constant = false;
        }
        at += len;
    }
}

/* Template t with its constant tokens written as text, appended to x->tpl2; the tokens' bytes
 * are those of the template's first row (first). */
static void put_refined(struct enc *x, const uint8_t *t, size_t len, const uint8_t *first)
{
    static const char hex[] = "0123456789abcdef";
    size_t j = 0;
    for (struct reader r = {t, len, 0}; r.pos < r.len;) {
        size_t start = r.pos;
        uint8_t b = r.p[r.pos++];
        uint64_t digits = 0;
        if (b == TPL_ESCAPE)
            r.pos++;
        else if (b == TPL_HEX)
            get_uvarint(&r, &digits);
        if ((b != TPL_DECIMAL && b != TPL_HEX) || !x->slots[j++].constant) {
            put_bytes(&x->tpl2, t + start, r.pos - start);
            continue;
        }
        const struct slot *sl = &x->slots[j - 1];
        struct reader v = {first + sl->at, sl->len, 0};
        uint8_t text[20];
        if (b == TPL_DECIMAL && get_uvarint(&v, &digits))
            put_bytes(&x->tpl2, text, put_decimal(text, digits));
        for (size_t i = 0; b == TPL_HEX && i < digits; i++)
            put_byte(&x->tpl2, (uint8_t)hex[v.p[i / 2] >> (i % 2 ? 0 : 4) & 15]);
    }
}

/* The tokens of a row that are not constant, appended to x->tok2. */
static void put_varying(struct enc *x, const struct slot *slots, size_t n, const uint8_t *tok)
{
    size_t at = 0;
    for (size_t j = 0; j < n; j++) {
        size_t len = token_len(&slots[j], tok + at);
        if (!slots[j].constant)
            put_bytes(&x->tok2, tok + at, len);
        at += len;
    }
}

/* Rewrites the pieces of a templated column (split_column) with the tokens that are constant
 * in every row of a template shared by two rows or more written into the template: templates
 * into tpl2 and tokens into tok2, which then take the place of tpl and tok. */
static bool inline_constants(struct enc *x, size_t c, bool grouped)
{
    dict_clear(&x->dict);
    for (size_t k = 0; k < x->nrows; k++) {
        const struct piece *pc = &x->pieces[k];
        bool added;
        x->tid[k] =
            enc_cell(x, k, c, grouped)->type == VAL_TEXT
                ? 1 + dict_add(&x->dict, x->tpl.p + pc->tpl_at, (uint32_t)pc->tpl_len, &added)
                : 0;
    }
    uint32_t *order = group_order(x->tid, x->nrows); /* the rows of each template together */
    bool ok = order != NULL;
    x->tpl2.len = x->tok2.len = 0;
    for (size_t i = 0, end; ok && i < x->nrows; i = end) {
        uint32_t t = x->tid[order[i]];
        for (end = i; end < x->nrows && x->tid[order[end]] == t;)
            end++;
        const struct piece p0 = x->pieces[order[i]];
        const uint8_t *tpl = x->tpl.p + p0.tpl_at, *first = x->tok.p + p0.tok_at;
        size_t ns = t ? template_slots(x, tpl, p0.tpl_len) : 0;
        if (ns == SIZE_MAX) {
            ok = false;
            break;
        }
        for (size_t r = i; r < end; r++)
            match_slots(x->slots, ns, first, x->tok.p + x->pieces[order[r]].tok_at, r == i);
        for (size_t j = 0; end - i < 2 && j < ns; j++)
            x->slots[j].constant = false; /* one row: its tokens are its own */
        size_t at = x->tpl2.len;
        put_refined(x, tpl, p0.tpl_len, first);
        for (size_t r = i; r < end; r++) {
            struct piece *pc = &x->pieces[order[r]];
            size_t tok_at = x->tok2.len;
            put_varying(x, x->slots, ns, x->tok.p + pc->tok_at);
            *pc = (struct piece){at, x->tpl2.len - at, tok_at, x->tok2.len - tok_at};
        }
    }
    ok = ok && !x->tpl2.failed && !x->tok2.failed;
    free(order);
    struct stream tmp = x->tpl;
    x->tpl = x->tpl2;
    x->tpl2 = tmp;
    tmp = x->tok;
    x->tok = x->tok2;
    x->tok2 = tmp;
    return ok;
}

/* Writes column c to out in the given order, its texts plain or templated. */
static void put_column_v2(struct enc *x, size_t c, bool grouped, bool templated, int ref,
                          struct stream *out)
{
    static const uint8_t tags[] = {TYPE_NULL, TYPE_INT, TYPE_REAL, TYPE_TEXT};
    out->len = 0;
    put_byte(out, (uint8_t)((grouped ? FLAG_GROUP_ORDER : 0) | (templated ? FLAG_TEMPLATE : 0)));
    if (templated) {
        split_column(x, c, grouped, ref);
        out->failed |= !inline_constants(x, c, grouped);
        put_uv(out, (uint64_t)(ref + 1));
        put_uv(out, x->tok.len);
        for (size_t k = 0; k < x->nrows; k++)
            put_bytes(out, x->tok.p + x->pieces[k].tok_at, x->pieces[k].tok_len);
    }
    out->failed |= x->tpl.failed || x->tok.failed;
    if (!need(out, x->nrows))
        return;
    for (size_t k = 0; k < x->nrows; k++)
        out->p[out->len++] = tags[enc_cell(x, k, c, grouped)->type];
    uint64_t prev_int = 0, prev_real = 0;
    dict_clear(&x->dict);
    for (size_t k = 0; k < x->nrows; k++) {
        const struct value *v = enc_cell(x, k, c, grouped);
        if (v->type == VAL_INT) {
            put_uv(out, zigzag(u64_of(v->i) - prev_int));
            prev_int = u64_of(v->i);
        } else if (v->type == VAL_REAL) {
            uint64_t bits = bits_of(v->d), d = bits ^ prev_real;
            prev_real = bits;
            for (int i = 0; i < 8; i++)
                put_byte(out, (uint8_t)(d >> (8 * i)));
        } else if (v->type == VAL_TEXT) {
            const uint8_t *p = templated ? x->tpl.p + x->pieces[k].tpl_at : (const uint8_t *)v->s;
            uint32_t len = templated ? (uint32_t)x->pieces[k].tpl_len : v->len;
            bool added;
            uint32_t n = dict_add(&x->dict, p, len, &added);
            put_uv(out, added ? 0 : n + 1);
            if (added) {
                put_uv(out, len);
                put_bytes(out, p, len);
            }
        }
    }
}

/* The earlier column (in payload order) whose texts column c's texts contain the most bytes of,
 * for templates to refer to; -1 when none is worth it. */
static int pick_ref(const struct enc *x, size_t c)
{
    int best = -1;
    size_t best_bytes = 0;
    for (size_t a = 0; a < x->ncols; a++) {
        if (a == c || (a > c && (int)a != x->group) || (int)c == x->group)
            continue;
        size_t bytes = 0, seen = 0, hits = 0;
        for (size_t r = 0; r < x->nrows && seen < REF_SAMPLE_ROWS; r++) {
            const struct value *v = &x->cells[r * x->ncols + c], *w = &x->cells[r * x->ncols + a];
            if (v->type != VAL_TEXT)
                continue;
            seen++;
            if (w->type == VAL_TEXT && w->len >= REF_MIN_BYTES && w->len <= v->len &&
                memmem(v->s, v->len, w->s, w->len)) {
                hits++;
                bytes += w->len;
            }
        }
        if (hits > seen / 8 && bytes > best_bytes) {
            best = (int)a;
            best_bytes = bytes;
        }
    }
    return best;
}

static size_t text_bytes_of(const struct enc *x, size_t c)
{
    size_t sum = 0;
    for (size_t r = 0; r < x->nrows; r++)
        sum += x->cells[r * x->ncols + c].type == VAL_TEXT ? x->cells[r * x->ncols + c].len : 0;
    return sum;
}

/* Compressed size of the trial stream; SIZE_MAX when it could not be compressed. */
static size_t trial_size(struct enc *x)
{
    size_t bound = ZSTD_compressBound(x->trial.len);
    ZSTD_CCtx *cctx = zstd_thread_cctx(TRIAL_LEVEL);
    if (x->trial.failed || !cctx || !need(&x->zbuf, bound))
        return SIZE_MAX;
    size_t z = ZSTD_compress2(cctx, x->zbuf.p, bound, x->trial.p, x->trial.len);
    return ZSTD_isError(z) ? SIZE_MAX : z;
}

/* Appends column c to payload in the coding that compresses best. */
static void put_best_column(struct enc *x, size_t c, struct stream *payload)
{
    bool has_text = false;
    for (size_t r = 0; r < x->nrows && !has_text; r++)
        has_text = x->cells[r * x->ncols + c].type == VAL_TEXT;
    int orders = x->perm && (int)c != x->group ? 2 : 1, codings = has_text && (int)c != x->group;
    int ref = codings ? pick_ref(x, c) : -1;
    size_t best = SIZE_MAX;
    bool best_templated = false;
    x->best.len = 0;
    for (int grouped = 0; grouped < orders; grouped++) {
        for (int templated = 0; templated <= codings; templated++) {
            put_column_v2(x, c, grouped, templated, ref, &x->trial);
            size_t size = x->trial.len > COLPACK_MAX_RAW_BYTES ? SIZE_MAX /* cannot be used */
                          : orders + codings > 1               ? trial_size(x)
                                                               : 0;
            if (size < best || x->best.len == 0) {
                struct stream t = x->best;
                x->best = x->trial;
                x->trial = t;
                best = size;
                best_templated = templated;
            }
        }
    }
    put_bytes(payload, x->best.p, x->best.len);
    payload->failed |= x->best.failed;
    if (best_templated)
        x->text_bytes += text_bytes_of(x, c);
}

static void enc_release(struct enc *x)
{
    dict_release(&x->dict);
    free(x->perm);
    free(x->tpl.p);
    free(x->tok.p);
    free(x->pieces);
    free(x->tpl2.p);
    free(x->tok2.p);
    free(x->tid);
    free(x->slots);
    free(x->trial.p);
    free(x->best.p);
    free(x->zbuf.p);
}

/* The version 2 payload of the rows into payload (whose failed says there was no memory). */
static void encode_v2(struct enc *x, struct stream *payload)
{
    x->pieces = malloc(x->nrows * sizeof *x->pieces);
    x->tid = malloc(x->nrows * sizeof *x->tid);
    /* the streams always have memory: offsets into them are taken even when nothing was put */
    bool streams = need(&x->tpl, 1) && need(&x->tok, 1) && need(&x->tpl2, 1) && need(&x->tok2, 1);
    if (!dict_init(&x->dict, x->nrows) || !x->pieces || !x->tid || !streams ||
        (x->group >= 0 && !group_rows(x))) {
        payload->failed = true;
        return;
    }
    if (x->group >= 0)
        put_best_column(x, (size_t)x->group, payload);
    for (size_t c = 0; c < x->ncols && !payload->failed; c++)
        if ((int)c != x->group)
            put_best_column(x, c, payload);
}

/* Header and zstd frame of a payload appended to out; rc as colpack_encode. */
static int put_blob(const uint8_t *header, size_t hlen, const uint8_t *payload, size_t len,
                    size_t nrows, struct buf *out, struct err *e)
{
    size_t zcap = hlen + ZSTD_compressBound(len);
    uint8_t *blob = malloc(zcap);
    ZSTD_CCtx *cctx = zstd_thread_cctx(ZSTD_LEVEL);
    if (!blob || !cctx) {
        free(blob);
        return err_set(e, E_NOMEM, "no memory to pack %zu rows (%zu bytes)", nrows, len);
    }
    memcpy(blob, header, hlen);
    size_t z = ZSTD_compress2(cctx, blob + hlen, zcap - hlen, payload, len);
    int rc = 0;
    if (ZSTD_isError(z)) /* with a bound-sized output only allocation can fail */
        rc = err_set(e, E_NOMEM, "compressing %zu rows failed: %s", nrows, ZSTD_getErrorName(z));
    else if ((rc = buf_append(out, blob, hlen + z)) == E_LIMIT)
        err_set(e, rc, "no room for a block of %zu bytes in the output (%zu of %zu bytes used)",
                hlen + z, out->len, out->max);
    else if (rc)
        err_set(e, rc, "no memory to append a block of %zu bytes", hlen + z);
    free(blob);
    return rc;
}

static int encode_v1(const struct value *cells, size_t nrows, size_t ncols, size_t raw_len,
                     struct buf *out, struct err *e)
{
    uint8_t *raw = malloc(raw_len), header[HEADER_MAX];
    if (!raw)
        return err_set(e, E_NOMEM, "no memory to pack %zu rows (%zu bytes)", nrows, raw_len);
    size_t used = 0, hlen = 0;
    for (size_t c = 0; c < ncols; c++)
        used += put_column_v1(raw + used, cells, nrows, ncols, c);
    header[hlen++] = MAGIC0;
    header[hlen++] = MAGIC1;
    header[hlen++] = VERSION1;
    hlen += put_uvarint(header + hlen, nrows);
    hlen += put_uvarint(header + hlen, ncols);
    int rc = put_blob(header, hlen, raw, used, nrows, out, e);
    free(raw);
    return rc;
}

int colpack_encode(const struct value *cells, size_t nrows, size_t ncols, int group,
                   struct buf *out, struct err *e)
{
    if (nrows == 0 || nrows > COLPACK_MAX_ROWS || ncols == 0 || ncols > COLPACK_MAX_COLUMNS)
        return err_set(e, E_INVALID, "a block holds 1..%u rows of 1..%u columns, not %zu of %zu",
                       COLPACK_MAX_ROWS, COLPACK_MAX_COLUMNS, nrows, ncols);
    if (group < -1 || group >= (int)ncols)
        return err_set(e, E_INVALID, "the group column %d is not one of the %zu columns", group,
                       ncols);
    size_t raw_len = raw_size(cells, nrows, ncols, e);
    if (raw_len == 0)
        return e->code;
    struct enc x = {.cells = cells, .nrows = nrows, .ncols = ncols, .group = group};
    struct stream payload = {0};
    encode_v2(&x, &payload);
    int rc;
    if (payload.failed) {
        rc = err_set(e, E_NOMEM, "no memory to pack %zu rows (%zu bytes)", nrows, raw_len);
    } else if (payload.len > COLPACK_MAX_RAW_BYTES || x.text_bytes > COLPACK_MAX_RAW_BYTES) {
        rc = encode_v1(cells, nrows, ncols, raw_len, out, e); /* escapes made it too big */
    } else {
        uint8_t header[HEADER_MAX];
        size_t hlen = 0;
        header[hlen++] = MAGIC0;
        header[hlen++] = MAGIC1;
        header[hlen++] = VERSION2;
        hlen += put_uvarint(header + hlen, nrows);
        hlen += put_uvarint(header + hlen, ncols);
        hlen += put_uvarint(header + hlen, (uint64_t)(group + 1));
        hlen += put_uvarint(header + hlen, x.text_bytes);
        rc = put_blob(header, hlen, payload.p, payload.len, nrows, out, e);
    }
    free(payload.p);
    enc_release(&x);
    return rc;
}

/* Compressed bytes of the rows' version 2 payload with this group; SIZE_MAX on failure. */
static size_t packed_size(const struct value *cells, size_t nrows, size_t ncols, int group)
{
    struct enc x = {.cells = cells, .nrows = nrows, .ncols = ncols, .group = group};
    struct stream payload = {0};
    encode_v2(&x, &payload);
    size_t size = SIZE_MAX, bound = ZSTD_compressBound(payload.len);
    ZSTD_CCtx *cctx = zstd_thread_cctx(ZSTD_LEVEL);
    if (!payload.failed && cctx && need(&x.zbuf, bound)) {
        size_t z = ZSTD_compress2(cctx, x.zbuf.p, bound, payload.p, payload.len);
        size = ZSTD_isError(z) ? SIZE_MAX : z;
    }
    free(payload.p);
    enc_release(&x);
    return size;
}

/* Whether column c's texts could group the rows: some, and at most one distinct per 4 rows. */
static bool could_group(const struct value *cells, size_t nrows, size_t ncols, size_t c)
{
    struct dict d;
    bool ok = dict_init(&d, nrows), added;
    for (size_t r = 0; ok && r < nrows; r++) {
        const struct value *v = &cells[r * ncols + c];
        if (v->type == VAL_TEXT)
            dict_add(&d, (const uint8_t *)v->s, v->len, &added);
    }
    ok = ok && d.n >= 2 && d.n <= nrows / 4;
    dict_release(&d);
    return ok;
}

int colpack_pick_group(const struct value *cells, size_t nrows, size_t ncols)
{
    struct err e;
    if (nrows > PICK_ROWS) /* enough to tell, and the candidates cost an encoding each */
        nrows = PICK_ROWS;
    if (nrows == 0 || nrows > COLPACK_MAX_ROWS || ncols == 0 || ncols > COLPACK_MAX_COLUMNS ||
        raw_size(cells, nrows, ncols, &e) == 0)
        return -1;
    int best = -1;
    size_t best_size = packed_size(cells, nrows, ncols, -1);
    for (size_t c = 0; c < ncols; c++) {
        if (!could_group(cells, nrows, ncols, c))
            continue;
        size_t size = packed_size(cells, nrows, ncols, (int)c);
        if (size < best_size) {
            best = (int)c;
            best_size = size;
        }
    }
    return best;
}

/* ---------------------------------------------------------------------------------------------
 * Decoding.
 */

void colpack_block_init(struct colpack_block *b)
{
    memset(b, 0, sizeof *b);
}

void colpack_block_release(struct colpack_block *b)
{
    free(b->cells);
    free(b->raw);
    colpack_block_init(b);
}

static int corrupt(struct err *e, const char *what)
{
    return err_set(e, E_INVALID, "the packed block is corrupt: %s", what);
}

/* An integer or a real of a column at r into v, against the column's previous ones. */
static int get_number(struct reader *r, uint8_t type, uint64_t *prev_int, uint64_t *prev_real,
                      struct value *v, struct err *e)
{
    uint64_t u;
    if (type == TYPE_INT) {
        if (!get_zz(r, &u))
            return corrupt(e, "an integer is cut short");
        *prev_int += u;
        v->type = VAL_INT;
        v->i = i64_of(*prev_int);
        return 0;
    }
    if (r->len - r->pos < 8)
        return corrupt(e, "a real is cut short");
    u = 0;
    for (int i = 0; i < 8; i++)
        u |= (uint64_t)r->p[r->pos++] << (8 * i);
    *prev_real ^= u;
    v->type = VAL_REAL;
    v->d = double_of(*prev_real);
    return 0;
}

static int decode_column_v1(struct reader *r, struct colpack_block *b, size_t c, struct err *e)
{
    size_t nrows = b->nrows, ncols = b->ncols;
    if (r->len - r->pos < nrows)
        return corrupt(e, "a column's types are cut short");
    const uint8_t *types = r->p + r->pos;
    r->pos += nrows;
    uint64_t prev_int = 0, prev_real = 0, u;
    for (size_t row = 0; row < nrows; row++) {
        struct value *v = &b->cells[row * ncols + c];
        int rc = 0;
        switch (types[row]) {
        case TYPE_NULL:
            v->type = VAL_NULL;
            break;
        case TYPE_INT:
        case TYPE_REAL:
            rc = get_number(r, types[row], &prev_int, &prev_real, v, e);
            break;
        case TYPE_TEXT:
            if (!get_uvarint(r, &u) || u > r->len - r->pos)
                return corrupt(e, "a text is cut short");
            v->type = VAL_TEXT;
            v->s = (const char *)r->p + r->pos;
            v->len = (uint32_t)u;
            r->pos += (size_t)u;
            break;
        default:
            return corrupt(e, "a value has an unknown type");
        }
        if (rc)
            return rc;
    }
    return 0;
}

/* What a version 2 block is decoded with. */
struct dec {
    struct colpack_block *b;
    struct reader r; /* the payload */
    uint8_t *text;   /* where templated texts expand to */
    size_t text_len, text_pos;
    struct span *dict; /* a column's distinct texts (or templates), nrows of them at most */
    size_t ndict;
    uint32_t *gid;  /* the group of each row */
    uint32_t *perm; /* group order: the k-th row; NULL without a group */
    bool decoded[COLPACK_MAX_COLUMNS];
};

/* The text at the cursor: new (added to the column's dict) or one seen before. */
static int get_text(struct dec *d, uint32_t *number, struct value *v, struct err *e)
{
    size_t *ndict = &d->ndict;
    struct reader *r = &d->r;
    uint64_t u, len;
    if (!get_uvarint(r, &u))
        return corrupt(e, "a text is cut short");
    if (u == 0) {
        if (!get_uvarint(r, &len) || len > r->len - r->pos)
            return corrupt(e, "a text is cut short");
        d->dict[*ndict] = (struct span){r->p + r->pos, (uint32_t)len};
        r->pos += (size_t)len;
        u = ++*ndict;
    } else if (u > *ndict) {
        return corrupt(e, "a text refers to one not seen before");
    }
    v->type = VAL_TEXT;
    v->s = (const char *)d->dict[u - 1].p;
    v->len = d->dict[u - 1].len;
    *number = (uint32_t)u;
    return 0;
}

/* Room for n more expanded bytes; out of it the block lies about text_bytes. */
static bool text_room(const struct dec *d, size_t used, size_t n)
{
    return n <= d->text_len - d->text_pos - used;
}

/* Bytes of t from pos that are template bytes standing for themselves (above TPL_REF). */
static size_t literal_run(const uint8_t *t, size_t pos, size_t len)
{
    size_t i = pos;
    for (; len - i >= 8; i += 8) { /* 8 at a time: does any byte lie below 4? */
        uint64_t w;
        memcpy(&w, t + i, 8);
        if ((w - 0x0404040404040404u) & ~w & 0x8080808080808080u)
            break;
    }
    while (i < len && t[i] > TPL_REF)
        i++;
    return i - pos;
}

/* One token or escape of template t (its marker c already read) expanded at out + *used. */
static int expand_token(struct dec *d, uint8_t c, struct reader *t, struct reader *tok,
                        const struct value *w, size_t *used, struct err *e)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t *out = d->text + d->text_pos;
    uint64_t u;
    if (c == TPL_DECIMAL) {
        if (!get_uvarint(tok, &u))
            return corrupt(e, "a number in a text is cut short");
        if (!text_room(d, *used, 20)) { /* rarely so near the end: measure it exactly */
            uint8_t tmp[20];
            size_t n = put_decimal(tmp, u);
            if (!text_room(d, *used, n))
                return corrupt(e, "its texts are longer than declared");
            memcpy(out + *used, tmp, n);
            *used += n;
        } else {
            *used += put_decimal(out + *used, u);
        }
    } else if (c == TPL_HEX) {
        if (!get_uvarint(t, &u) || u == 0 || u > COLPACK_MAX_RAW_BYTES ||
            (u + 1) / 2 > tok->len - tok->pos)
            return corrupt(e, "a hex run in a text is cut short or too long");
        if (!text_room(d, *used, (size_t)u))
            return corrupt(e, "its texts are longer than declared");
        const uint8_t *nibbles = tok->p + tok->pos;
        uint8_t *o = out + *used;
        for (size_t i = 0; i < u / 2; i++) {
            o[2 * i] = (uint8_t)hex[nibbles[i] >> 4];
            o[2 * i + 1] = (uint8_t)hex[nibbles[i] & 15];
        }
        if (u % 2)
            o[u - 1] = (uint8_t)hex[nibbles[u / 2] >> 4];
        *used += (size_t)u;
        tok->pos += (size_t)(u + 1) / 2;
    } else if (c == TPL_REF) {
        if (!w || w->type != VAL_TEXT || w->len == 0) /* each template byte must yield bytes */
            return corrupt(e, "a text refers to a text it cannot have");
        if (!text_room(d, *used, w->len))
            return corrupt(e, "its texts are longer than declared");
        if (w->len)
            memcpy(out + *used, w->s, w->len);
        *used += w->len;
    } else { /* TPL_ESCAPE */
        if (t->pos == t->len)
            return corrupt(e, "a text ends in an escape");
        if (!text_room(d, *used, 1))
            return corrupt(e, "its texts are longer than declared");
        out[(*used)++] = t->p[t->pos++];
    }
    return 0;
}

/* Expands the template in v (a span of the payload) for this row, reading its tokens from tok;
 * w is the row's text of the column the templates refer to (NULL without one). */
static int expand(struct dec *d, struct reader *tok, const struct value *w, struct value *v,
                  struct err *e)
{
    struct reader t = {(const uint8_t *)v->s, v->len, 0};
    uint8_t *out = d->text + d->text_pos;
    size_t used = 0;
    while (t.pos < t.len) {
        size_t n = literal_run(t.p, t.pos, t.len);
        if (n) {
            if (!text_room(d, used, n))
                return corrupt(e, "its texts are longer than declared");
            memcpy(out + used, t.p + t.pos, n);
            used += n;
            t.pos += n;
            continue;
        }
        uint8_t c = t.p[t.pos++];
        int rc = expand_token(d, c, &t, tok, w, &used, e);
        if (rc)
            return rc;
    }
    v->s = (const char *)out;
    v->len = (uint32_t)used;
    d->text_pos += used;
    return 0;
}

/* The flags, reference and tokens of column c; -1 with e set when they are wrong. */
static int get_column_head(struct dec *d, size_t c, bool is_group, int *ref, struct reader *tok,
                           struct err *e)
{
    uint64_t u;
    if (d->r.pos >= d->r.len)
        return corrupt(e, "a column's flags are cut short"), -1;
    uint8_t flags = d->r.p[d->r.pos++];
    if (flags & ~(FLAG_GROUP_ORDER | FLAG_TEMPLATE))
        return corrupt(e, "a column has unknown flags"), -1;
    if (is_group && flags)
        return corrupt(e, "the group column is not plain and in row order"), -1;
    if ((flags & FLAG_GROUP_ORDER) && !d->perm)
        return corrupt(e, "a column is in group order without a group"), -1;
    *ref = -1;
    if (flags & FLAG_TEMPLATE) {
        if (!get_uvarint(&d->r, &u))
            return corrupt(e, "a column's reference is cut short"), -1;
        if (u > d->b->ncols || (u > 0 && (!d->decoded[u - 1] || u - 1 == c)))
            return corrupt(e, "a column refers to a column not decoded before it"), -1;
        *ref = (int)u - 1;
        if (!get_uvarint(&d->r, &u) || u > d->r.len - d->r.pos)
            return corrupt(e, "a column's tokens are cut short"), -1;
        *tok = (struct reader){d->r.p + d->r.pos, (size_t)u, 0};
        d->r.pos += (size_t)u;
    }
    return flags;
}

/* The value of type t of row row in column c (the k-th of the column), its text's template
 * expanded when tok (the column's tokens) is given; *number is the text's in the column. */
static int get_value(struct dec *d, uint8_t t, size_t row, size_t c, struct reader *tok, int ref,
                     uint64_t prev[2], uint32_t *number, struct err *e)
{
    struct colpack_block *b = d->b;
    struct value *v = &b->cells[row * b->ncols + c];
    *number = 0;
    if (t == TYPE_NULL) {
        v->type = VAL_NULL;
        return 0;
    }
    if (t == TYPE_INT || t == TYPE_REAL)
        return get_number(&d->r, t, &prev[0], &prev[1], v, e);
    if (t != TYPE_TEXT)
        return corrupt(e, "a value has an unknown type");
    int rc = get_text(d, number, v, e);
    if (rc == 0 && tok)
        rc = expand(d, tok, ref >= 0 ? &b->cells[row * b->ncols + (size_t)ref] : NULL, v, e);
    return rc;
}

static int decode_column_v2(struct dec *d, size_t c, bool is_group, struct err *e)
{
    struct colpack_block *b = d->b;
    struct reader tok = {NULL, 0, 0};
    int ref, flags = get_column_head(d, c, is_group, &ref, &tok, e);
    if (flags < 0)
        return e->code;
    if (d->r.len - d->r.pos < b->nrows)
        return corrupt(e, "a column's types are cut short");
    const uint8_t *types = d->r.p + d->r.pos;
    const uint32_t *order = flags & FLAG_GROUP_ORDER ? d->perm : NULL;
    d->r.pos += b->nrows;
    uint64_t prev[2] = {0, 0}; /* the column's previous integer and real */
    d->ndict = 0;
    for (size_t k = 0; k < b->nrows; k++) {
        size_t row = order ? order[k] : k;
        if (order && k + 8 < b->nrows) /* rows out of order: fetch the cell ahead */
            __builtin_prefetch(&b->cells[order[k + 8] * b->ncols + c], 1);
        uint32_t number;
        int rc = get_value(d, types[k], row, c, flags & FLAG_TEMPLATE ? &tok : NULL, ref, prev,
                           &number, e);
        if (rc)
            return rc;
        if (is_group)
            d->gid[row] = number;
    }
    if (tok.pos != tok.len)
        return corrupt(e, "a column's tokens are left over");
    d->decoded[c] = true;
    return 0;
}

static int decode_payload_v2(struct dec *d, int group, struct err *e)
{
    struct colpack_block *b = d->b;
    d->dict = malloc(b->nrows * sizeof *d->dict);
    d->gid = calloc(b->nrows, sizeof *d->gid);
    if (!d->dict || !d->gid)
        return err_set(e, E_NOMEM, "no memory to unpack %zu rows", b->nrows);
    int rc = 0;
    if (group >= 0) {
        rc = decode_column_v2(d, (size_t)group, true, e);
        if (rc == 0 && !(d->perm = group_order(d->gid, b->nrows)))
            rc = err_set(e, E_NOMEM, "no memory to unpack %zu rows", b->nrows);
    }
    for (size_t c = 0; c < b->ncols && rc == 0; c++)
        if ((int)c != group)
            rc = decode_column_v2(d, c, false, e);
    if (rc == 0 && d->text_pos != d->text_len)
        rc = corrupt(e, "its texts are shorter than declared");
    return rc;
}

/* The header after magic and version: counts, and for version 2 group and text bytes. */
static int get_header(struct reader *h, int version, uint64_t *nrows, uint64_t *ncols,
                      uint64_t *group, uint64_t *text_len, struct err *e)
{
    *group = *text_len = 0;
    if (!get_uvarint(h, nrows) || !get_uvarint(h, ncols) ||
        (version == VERSION2 && (!get_uvarint(h, group) || !get_uvarint(h, text_len))))
        return corrupt(e, "its header is cut short");
    if (*nrows == 0 || *nrows > COLPACK_MAX_ROWS || *ncols == 0 || *ncols > COLPACK_MAX_COLUMNS)
        return corrupt(e, "its row or column count is out of bounds");
    if (*group > *ncols || *text_len > COLPACK_MAX_RAW_BYTES)
        return corrupt(e, "its group column or text size is out of bounds");
    return 0;
}

/* The frame after the header: checked, and its content size into *size. */
static int check_frame(const uint8_t *z, size_t zlen, uint64_t cells, unsigned long long *size,
                       struct err *e)
{
    size_t frame_len = ZSTD_findFrameCompressedSize(z, zlen);
    if (ZSTD_isError(frame_len) || frame_len != zlen)
        return corrupt(e, "its payload is truncated or followed by other bytes");
    /* the frame header descriptor follows the 4-byte magic; bit 2 says a checksum ends it */
    if (zlen < 5 || !(z[4] & 0x04))
        return corrupt(e, "its payload is a zstd frame without a checksum");
    *size = ZSTD_getFrameContentSize(z, zlen);
    if (*size == ZSTD_CONTENTSIZE_UNKNOWN || *size == ZSTD_CONTENTSIZE_ERROR || *size < cells ||
        *size > COLPACK_MAX_RAW_BYTES)
        return corrupt(e, "its payload does not declare a size its rows can take");
    return 0;
}

static int decode_columns(struct colpack_block *b, int version, size_t size, size_t text_len,
                          int group, struct err *e)
{
    struct reader r = {b->raw, size, 0};
    int rc = 0;
    if (version == VERSION1) {
        for (size_t c = 0; c < b->ncols && rc == 0; c++)
            rc = decode_column_v1(&r, b, c, e);
    } else {
        struct dec d = {.b = b, .r = r, .text = b->raw + size, .text_len = text_len};
        rc = decode_payload_v2(&d, group, e);
        r = d.r;
        free(d.dict);
        free(d.gid);
        free(d.perm);
    }
    if (rc == 0 && r.pos != r.len)
        rc = corrupt(e, "bytes are left over after the last column");
    return rc;
}

int colpack_decode(const void *blob, size_t len, struct colpack_block *b, struct err *e)
{
    colpack_block_release(b);
    struct reader h = {blob, len, 3};
    const uint8_t *p = blob;
    uint64_t nrows = 0, ncols = 0, group = 0, text_len = 0;
    unsigned long long size = 0;
    if (len < 3 || p[0] != MAGIC0 || p[1] != MAGIC1)
        return err_set(e, E_INVALID, "not a packed block (bad magic)");
    if (p[2] != VERSION1 && p[2] != VERSION2)
        return err_set(e, E_INVALID, "a packed block of unknown version %u", p[2]);
    int rc = get_header(&h, p[2], &nrows, &ncols, &group, &text_len, e);
    if (rc == 0)
        rc = check_frame(p + h.pos, len - h.pos, nrows * ncols, &size, e);
    if (rc)
        return rc;
    b->nrows = (size_t)nrows;
    b->ncols = (size_t)ncols;
    b->raw = malloc((size_t)(size + text_len) + 1); /* + 1: not 0 bytes with no texts */
    b->cells = malloc(b->nrows * b->ncols * sizeof *b->cells);
    if (!b->raw || !b->cells) {
        rc = err_set(e, E_NOMEM, "no memory to unpack %zu rows", b->nrows);
        goto fail;
    }
    ZSTD_DCtx *dctx = zstd_thread_dctx();
    size_t got = dctx ? ZSTD_decompressDCtx(dctx, b->raw, (size_t)size, p + h.pos, len - h.pos) : 0;
    if (!dctx) {
        rc = err_set(e, E_NOMEM, "no memory for a zstd context to unpack %zu rows", b->nrows);
        goto fail;
    }
    if (ZSTD_isError(got) || got != size) {
        rc = corrupt(e, ZSTD_isError(got) ? ZSTD_getErrorName(got) : "its payload is short");
        goto fail;
    }
    rc = decode_columns(b, p[2], got, (size_t)text_len, (int)group - 1, e);
    if (rc == 0)
        return 0;
fail:
    colpack_block_release(b);
    return rc;
}
