/*
 * Private to store/: the integer encodings the codecs share (chunk.c, colpack.c) — unsigned
 * LEB128 varints (at most 10 bytes), zigzag for signed values, int64 <-> uint64 without
 * implementation-defined conversions, and a bounds-checked cursor over untrusted bytes.
 */
#ifndef OPSDB_STORE_VARINT_H
#define OPSDB_STORE_VARINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A bounds-checked cursor over untrusted bytes. */
struct reader {
    const uint8_t *p;
    size_t len, pos;
};

static inline uint64_t u64_of(int64_t v)
{
    return (uint64_t)v;
}

static inline int64_t i64_of(uint64_t u)
{
    return u <= INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
}

static inline uint64_t zigzag(uint64_t v)
{
    return (v << 1) ^ (0 - (v >> 63));
}

static inline uint64_t unzigzag(uint64_t u)
{
    return (u >> 1) ^ (0 - (u & 1));
}

/* Writes v at p (room for 10 bytes); returns the bytes written. */
static inline size_t put_uvarint(uint8_t *p, uint64_t v)
{
    size_t i = 0;
    for (; v >= 0x80; v >>= 7)
        p[i++] = (uint8_t)(v | 0x80);
    p[i++] = (uint8_t)v;
    return i;
}

/* False at the end of the input or on a varint longer than 64 bits. */
static inline bool get_uvarint(struct reader *r, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (r->pos >= r->len)
            return false;
        uint8_t b = r->p[r->pos++];
        if (shift == 63 && b > 1)
            return false;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

static inline bool get_zz(struct reader *r, uint64_t *v)
{
    uint64_t u;
    if (!get_uvarint(r, &u))
        return false;
    *v = unzigzag(u);
    return true;
}

#endif
