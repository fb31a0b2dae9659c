/*
 * agent/tail: following one log file as it grows, is rotated and is truncated, turning its new
 * lines into rows through the log parsers (ingest/ingest.h) and remembering how far it got.
 *
 * The caller (the agent) polls every second or so, ships the rows it got, and once they are
 * acknowledged or durably spooled commits: the offset reached is saved in the state directory,
 * so a restart resumes there without duplicates or gaps. A tail is used by one thread at a time.
 *
 * Rotation (docs/collection.md): rename + create — the file at the path has another inode: the
 * old file is read to its end through the descriptor still open (until the new file has data,
 * or the old one has been quiet logs.rotate_wait), then the new one from its start;
 * copytruncate — the file is shorter than the offset, or its first bytes changed: read again
 * from the start. A file that does not exist yet is waited for. The saved state names the file
 * by device, inode and a hash of its first bytes, so a different file at the same path is read
 * from its start, and a file rotated to PATH.1 while the agent was down is finished first.
 */
#ifndef OPSDB_AGENT_TAIL_H
#define OPSDB_AGENT_TAIL_H

#include "core/core.h"

struct tail;

struct tail_stats {
    uint64_t lines;           /* complete lines read */
    uint64_t lines_bad;       /* lines (or events) that made no row; each is logged */
    uint64_t lines_truncated; /* lines cut to logs.max_line_bytes */
    uint64_t rows;            /* rows handed out by tail_poll */
    uint64_t rotations;       /* files finished because a new file took the path */
    uint64_t truncations;     /* times the file was truncated (copytruncate) or replaced */
    int64_t offset;           /* the byte offset tail_commit would save */
    bool open;                /* the file exists and is being read */
    bool more;                /* the last poll stopped before the end of the file (it read
                                 TAIL_READ_MAX bytes, or out was full): poll again at once */
};

/* Bytes tail_poll reads from the file in one call at most. */
#define TAIL_READ_MAX (1 << 20)

/* Opens a tail for spec "KIND:PATH" (KIND: nginx, nginx_timed, apache, access, json or plain,
 * as for logparser_new), keeping its state in state_dir (created when missing) in a file named
 * after a hash of spec. The state of an earlier run is loaded; the file itself is opened by the
 * first poll (it may not exist yet). cfg's logs.* options are copied. E_INVALID for a bad spec
 * or log format, E_IO when state_dir cannot be made or the state file is unreadable; e says
 * why. Close with tail_close. */
int tail_open(struct tail **out, const char *spec, const char *state_dir, const struct config *cfg,
              struct err *e);
/* Closes the file and frees; *t becomes NULL. NULL is a no-op. Nothing is committed. */
void tail_close(struct tail **t);

/* The size out->max must have at least (8 x logs.max_line_bytes and room for a stack trace). */
size_t tail_out_min(const struct tail *t);

/* Reads what is new (at most TAIL_READ_MAX bytes, complete lines only; a last partial line
 * waits for its newline), parses it and appends the rows to out as NDJSON, one object per row
 * with column names as keys (derived columns, the fingerprint, are left to the receiver). Sets
 * *table to the rows' table ("api_usage" or "error_logs"; a static string) and *rows to the
 * number appended (0 when nothing is new or the file does not exist yet). Bad lines are
 * counted (tail_get_stats) and logged with their line numbers; they do not fail the poll.
 * Returns 0, or E_IO (reading failed; e says why; the next poll tries again) or E_LIMIT
 * (out->max is below tail_out_min). Stops early, leaving the rest for the next poll, when out
 * fills. */
int tail_poll(struct tail *t, struct buf *out, const char **table, size_t *rows, struct err *e);

/* Saves the position reached by the last poll (atomically: temp file, fsync, rename): the end
 * of the last complete line, or the start of an application log event still waiting for its
 * stack trace. Call it once the rows of the polls before are safe. 0 or E_IO. */
int tail_commit(struct tail *t, struct err *e);

struct heartbeats;
/* After every poll that read the file (also one that found nothing new), the tail notes a
 * heartbeat of source kind tail named "KIND:PATH" with the rows it handed out, expecting one
 * every interval_ms (the caller's poll interval); a file that is missing notes none, so its
 * absence shows as a gap (collect/heartbeat.h). h is borrowed and may be NULL (no heartbeats,
 * the default). */
void tail_set_heartbeats(struct tail *t, struct heartbeats *h, int64_t interval_ms);

/* "KIND:PATH", the tail's name in logs and heartbeats (source kind tail). */
const char *tail_name(const struct tail *t);
void tail_get_stats(const struct tail *t, struct tail_stats *out);

#endif
