/*
 * gzip/zlib request bodies, decoded with a hard limit on the decoded size so a small compressed
 * body cannot expand past http.max_body_bytes (a "zip bomb" is a 413, not an outage).
 */
#include "ingest/ingest.h"

#include <zlib.h>

int ingest_gunzip(const char *data, size_t len, struct buf *out, struct err *e)
{
    z_stream z = {0};
    if (inflateInit2(&z, 15 + 32) != Z_OK) /* +32: gzip or zlib header, detected */
        return err_set(e, E_NOMEM, "cannot start gzip decoding");
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)len;
    unsigned char chunk[64 * 1024];
    int rc = 0, zr;
    do {
        z.next_out = chunk;
        z.avail_out = sizeof chunk;
        zr = inflate(&z, Z_NO_FLUSH);
        if (zr != Z_OK && zr != Z_STREAM_END) {
            rc = err_set(e, E_INVALID, "the gzip body is corrupt: %s", z.msg ? z.msg : "bad data");
            break;
        }
        if (buf_append(out, chunk, sizeof chunk - z.avail_out) != 0) {
            rc = err_set(e, E_LIMIT, "the decoded body is larger than the limit of %zu bytes",
                         out->max);
            break;
        }
        if (zr == Z_OK && z.avail_in == 0 && z.avail_out != 0) {
            rc = err_set(e, E_INVALID, "the gzip body is truncated");
            break;
        }
        if (zr == Z_STREAM_END && z.avail_in > 0) {
            /* concatenated gzip members (as `cat a.gz b.gz` makes) are one body */
            if (inflateReset(&z) != Z_OK) {
                rc = err_set(e, E_INVALID, "the gzip body is corrupt after its first member");
                break;
            }
            zr = Z_OK;
        }
    } while (zr != Z_STREAM_END);
    inflateEnd(&z);
    if (rc == 0 && !out->data)
        buf_append(out, "", 0);
    return rc;
}
