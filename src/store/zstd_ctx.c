/*
 * Per-thread zstd contexts (zstd_ctx.h), kept in thread-specific slots whose destructors free
 * them when a thread exits.
 */
#include "store/zstd_ctx.h"

#include <pthread.h>

static pthread_key_t cctx_key, dctx_key;
static pthread_once_t keys_once = PTHREAD_ONCE_INIT;

static void free_cctx(void *p)
{
    ZSTD_freeCCtx(p);
}

static void free_dctx(void *p)
{
    ZSTD_freeDCtx(p);
}

static void make_keys(void)
{
    pthread_key_create(&cctx_key, free_cctx);
    pthread_key_create(&dctx_key, free_dctx);
}

ZSTD_CCtx *zstd_thread_cctx(int level)
{
    pthread_once(&keys_once, make_keys);
    ZSTD_CCtx *c = pthread_getspecific(cctx_key);
    if (!c) {
        if (!(c = ZSTD_createCCtx()))
            return NULL;
        if (pthread_setspecific(cctx_key, c) != 0) {
            ZSTD_freeCCtx(c);
            return NULL;
        }
    }
    size_t rc = ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters);
    if (!ZSTD_isError(rc))
        rc = ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
    if (!ZSTD_isError(rc))
        rc = ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    return ZSTD_isError(rc) ? NULL : c;
}

ZSTD_DCtx *zstd_thread_dctx(void)
{
    pthread_once(&keys_once, make_keys);
    ZSTD_DCtx *d = pthread_getspecific(dctx_key);
    if (!d) {
        if (!(d = ZSTD_createDCtx()))
            return NULL;
        if (pthread_setspecific(dctx_key, d) != 0) {
            ZSTD_freeDCtx(d);
            return NULL;
        }
    }
    return d;
}
