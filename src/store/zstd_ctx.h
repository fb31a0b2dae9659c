/*
 * Private to store/: one zstd compression and one decompression context per thread, made on
 * first use and freed when the thread ends. Creating a context costs more than compressing a
 * small chunk (ingestion writes one per series and batch), so the codecs borrow these instead.
 *
 * The compression context comes reset, with the given level and the content checksum on.
 * NULL when memory is short. The caller must not keep a context past its call.
 */
#ifndef OPSDB_STORE_ZSTD_CTX_H
#define OPSDB_STORE_ZSTD_CTX_H

#include <zstd.h>

ZSTD_CCtx *zstd_thread_cctx(int level);
ZSTD_DCtx *zstd_thread_dctx(void);

#endif
