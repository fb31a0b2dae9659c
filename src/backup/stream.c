/*
 * The compressed file of a backup: the database copy through zstd (with its frame checksum), in
 * both directions, in fixed-size pieces whatever the database's size, hashing what is read and
 * what is written so that a manifest can name both files by their sha256.
 */
#include "backup/backup_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

/* Level 3 (zstd's default) compresses a database copy several times over at well over 100 MB/s
 * on one core, leaving the other to ingestion. */
#define BACKUP_ZSTD_LEVEL 3

struct pass {
    int in, out;
    const char *src, *dst;
    crypto_hash_sha256_state sha_in, sha_out;
    uint8_t *inb, *outb;
    size_t in_cap, out_cap;
    struct stream_stats *st;
    int64_t total;
};

static void hex_of(crypto_hash_sha256_state *sha, char hex[65])
{
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(sha, digest);
    sodium_bin2hex(hex, 65, digest, sizeof digest);
}

static int pass_open(struct pass *p, const char *src, const char *dst, size_t in_cap,
                     size_t out_cap, struct stream_stats *st, struct err *e)
{
    memset(p, 0, sizeof *p);
    memset(st, 0, sizeof *st);
    p->in = p->out = -1;
    p->src = src;
    p->dst = dst;
    p->st = st;
    if (sodium_init() < 0)
        return err_set(e, E_IO, "backup: libsodium could not be initialised");
    struct stat sb;
    if ((p->in = open(src, O_RDONLY | O_CLOEXEC)) < 0 || fstat(p->in, &sb) != 0)
        return err_set(e, errno == ENOENT ? E_NOTFOUND : E_IO, "cannot read %s: %s", src,
                       strerror(errno));
    p->total = (int64_t)sb.st_size;
    if ((p->out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640)) < 0)
        return err_set(e, E_IO, "cannot create %s: %s", dst, strerror(errno));
    p->in_cap = in_cap;
    p->out_cap = out_cap;
    p->inb = malloc(in_cap);
    p->outb = malloc(out_cap);
    if (!p->inb || !p->outb)
        return err_set(e, E_NOMEM, "out of memory");
    crypto_hash_sha256_init(&p->sha_in);
    crypto_hash_sha256_init(&p->sha_out);
    return 0;
}

static int pass_write(struct pass *p, size_t len, struct err *e)
{
    if (len == 0)
        return 0;
    if (file_write_all(p->out, p->outb, len) != 0)
        return err_set(e, E_IO, "writing %s: %s", p->dst, strerror(errno));
    crypto_hash_sha256_update(&p->sha_out, p->outb, len);
    p->st->bytes_out += (int64_t)len;
    return 0;
}

/* Reads the next piece of src: its length, 0 at the end, -1 on error or when progress says to
 * stop (e set). */
static ssize_t pass_read(struct pass *p, const char *step, backup_progress progress, void *arg,
                         struct err *e)
{
    for (;;) {
        ssize_t got = read(p->in, p->inb, p->in_cap);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            err_set(e, E_IO, "reading %s: %s", p->src, strerror(errno));
            return -1;
        }
        crypto_hash_sha256_update(&p->sha_in, p->inb, (unsigned long long)got);
        p->st->bytes_in += got;
        if (progress && got > 0 && (p->st->bytes_in & ((64 << 20) - 1)) < got &&
            progress(arg, step, p->st->bytes_in, p->total) != 0) { /* every 64 MiB */
            err_set(e, E_CANCELLED, "%s %s: cancelled", step, p->src);
            return -1;
        }
        return got;
    }
}

static int pass_close(struct pass *p, int rc, struct err *e)
{
    if (rc == 0 && fsync(p->out) != 0)
        rc = err_set(e, E_IO, "syncing %s: %s", p->dst, strerror(errno));
    if (p->in >= 0)
        close(p->in);
    if (p->out >= 0) {
        close(p->out);
        if (rc)
            unlink(p->dst);
    }
    free(p->inb);
    free(p->outb);
    if (rc == 0) {
        hex_of(&p->sha_in, p->st->sha_in);
        hex_of(&p->sha_out, p->st->sha_out);
    }
    return rc;
}

int stream_compress(const char *src, const char *dst, backup_progress progress, void *arg,
                    struct stream_stats *st, struct err *e)
{
    struct pass p;
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    int rc = pass_open(&p, src, dst, ZSTD_CStreamInSize(), ZSTD_CStreamOutSize(), st, e);
    if (rc == 0 && !cctx)
        rc = err_set(e, E_NOMEM, "out of memory for a zstd stream");
    if (rc == 0) {
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, BACKUP_ZSTD_LEVEL);
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
        ZSTD_CCtx_setPledgedSrcSize(cctx, (unsigned long long)p.total);
    }
    bool last = false;
    while (rc == 0 && !last) {
        ssize_t got = pass_read(&p, "compressing", progress, arg, e);
        if (got < 0) {
            rc = e->code;
            break;
        }
        last = got == 0;
        ZSTD_inBuffer in = {p.inb, (size_t)got, 0};
        for (;;) {
            ZSTD_outBuffer out = {p.outb, p.out_cap, 0};
            size_t left =
                ZSTD_compressStream2(cctx, &out, &in, last ? ZSTD_e_end : ZSTD_e_continue);
            if (ZSTD_isError(left)) {
                rc = err_set(e, E_IO, "compressing %s: %s", src, ZSTD_getErrorName(left));
                break;
            }
            if ((rc = pass_write(&p, out.pos, e)) != 0)
                break;
            if (last ? left == 0 : in.pos == in.size)
                break;
        }
    }
    ZSTD_freeCCtx(cctx);
    return pass_close(&p, rc, e);
}

int stream_decompress(const char *src, const char *dst, backup_progress progress, void *arg,
                      struct stream_stats *st, struct err *e)
{
    struct pass p;
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    int rc = pass_open(&p, src, dst, ZSTD_DStreamInSize(), ZSTD_DStreamOutSize(), st, e);
    if (rc == 0 && !dctx)
        rc = err_set(e, E_NOMEM, "out of memory for a zstd stream");
    size_t frame_left = 1; /* 0 once a frame ended exactly */
    ssize_t got = 0;
    while (rc == 0 && (got = pass_read(&p, "decompressing", progress, arg, e)) > 0) {
        ZSTD_inBuffer in = {p.inb, (size_t)got, 0};
        /* a full output buffer may leave output inside zstd, unless the frame just ended (a
         * call after the end would start reading another frame) */
        bool full = true;
        while (rc == 0 && (in.pos < in.size || (full && frame_left != 0))) {
            ZSTD_outBuffer out = {p.outb, p.out_cap, 0};
            frame_left = ZSTD_decompressStream(dctx, &out, &in);
            if (ZSTD_isError(frame_left))
                rc = err_set(e, E_CORRUPT, "%s does not decompress: %s", src,
                             ZSTD_getErrorName(frame_left));
            else
                rc = pass_write(&p, out.pos, e);
            full = out.pos == out.size;
        }
    }
    if (rc == 0 && got < 0)
        rc = e->code;
    if (rc == 0 && frame_left != 0)
        rc = err_set(e, E_CORRUPT, "%s is cut short (the compressed stream does not end)", src);
    ZSTD_freeDCtx(dctx);
    return pass_close(&p, rc, e);
}
