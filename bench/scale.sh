#!/usr/bin/env bash
# bench/scale.sh - the reference workload scaled to 30 days and ~100M metric points, measured
# against VictoriaMetrics on the same data in the same run (the storage issue's targets).
#
#   bench/scale.sh [--quick] [--keep]
#
# Full: 30 days x 20 hosts x 20 metrics every 10 s = 103.7M points of system_metrics as line
# protocol, plus api_usage, error_logs, pipeline_status, handler_metrics for the same 30 days as
# NDJSON (~138M rows, 128M of them api_usage); checks first for the ~25 GB it needs in $TMPDIR;
# an hour or more on 2 cores.
# --quick: 2 days x 5 hosts (1.7M points) and the last 6 h of the other tables, 5 runs per
# query; a smoke test of the script, under 2 minutes. --keep: keep the temporary directory.
#
# Environment: OPSDB (server binary, default ./opsdb), DAYS (whole days), HOSTS, NDJSON_DAYS
# (window of the NDJSON tables, fractions allowed), RUNS (per query), SEED (default 1), END (end
# of the data, epoch seconds; default now rounded down to 10 s), PORT, VM_PORT, TMPDIR,
# COMPACT_TIMEOUT (s to wait for the server's compaction), FORCE=1 (run despite low disk space).
# Summary: stdout and bench/results/scale-<date>.md; progress on stderr; exit status 1 when
# any request failed (the temporary directory is then kept).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
OPSDB=${OPSDB:-$ROOT/opsdb}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
COMMAND="bench/scale.sh${*:+ $*}"

QUICK=0
KEEP=0
for arg in "$@"; do
    case $arg in
    --quick) QUICK=1 ;;
    --keep) KEEP=1 ;;
    -h | --help)
        sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "scale.sh: unknown argument $arg (use --quick, --keep, --help)" >&2
        exit 2
        ;;
    esac
done

if [ $QUICK = 1 ]; then
    DAYS=${DAYS:-2} HOSTS=${HOSTS:-5} NDJSON_DAYS=${NDJSON_DAYS:-0.25} RUNS=${RUNS:-5}
    COMPACT_TIMEOUT=${COMPACT_TIMEOUT:-90}
else
    DAYS=${DAYS:-30} HOSTS=${HOSTS:-20} NDJSON_DAYS=${NDJSON_DAYS:-$DAYS} RUNS=${RUNS:-20}
    COMPACT_TIMEOUT=${COMPACT_TIMEOUT:-1800}
fi
SEED=${SEED:-1}
METRICS=20
LP_BATCH=10000     # lines per /write request (one line = one host at one time = 20 points)
NDJSON_BATCH=10000 # rows per /api/v1/ingest request
SENDERS=2
SLICE_S=86400 # the NDJSON tables are generated, sent and deleted one day at a time
COMPRESS_AFTER_S=7200
NDJSON_TABLES=(api_usage error_logs pipeline_status handler_metrics)
DATA_TABLES=(system_metrics "${NDJSON_TABLES[@]}")
VIEWS_PLAIN=(system_health active_alerts job_status)
VIEWS_WINDOW=(api_performance error_summary pipeline_health handler_performance)
WINDOWS=(15m 24h 30d)
WINDOW_S=(900 86400 2592000)
STEPS=(10s 1m 1h) # <= ~1,500 buckets per series
HOST=host-001     # the one series: system_cpu_usage of this host
METRIC=system_cpu_usage # line protocol measurement "system", field cpu_usage (opsdb and VM alike)

die() {
    echo "scale.sh: $*" >&2
    exit 1
}
log() { echo "scale.sh: $*" >&2; }

[[ $DAYS =~ ^[1-9][0-9]*$ ]] || die "DAYS=$DAYS must be a whole number of days >= 1"
[[ $HOSTS =~ ^[1-9][0-9]*$ ]] || die "HOSTS=$HOSTS must be a positive integer"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS=$RUNS must be a positive integer"
awk -v d="$NDJSON_DAYS" -v m="$DAYS" 'BEGIN { exit !(d + 0 > 0 && d + 0 <= m + 0) }' ||
    die "NDJSON_DAYS=$NDJSON_DAYS must be > 0 and <= DAYS ($DAYS)"

# ---------------------------------------------------------------- tools

for tool in curl gcc awk du df; do
    command -v "$tool" >/dev/null || die "needs $tool"
done
if [ ! -x "$OPSDB" ]; then
    [ "$OPSDB" = "$ROOT/opsdb" ] || die "no server binary at $OPSDB"
    log "no $OPSDB: building it (make opsdb)"
    make -C "$ROOT" opsdb >&2 || die "make opsdb failed"
fi
missing=""
command -v victoria-metrics >/dev/null || missing="$missing victoria-metrics"
command -v sqlite3 >/dev/null || missing="$missing sqlite3"
if [ -n "$missing" ]; then
    log "installing the Debian packages$missing"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; } ||
        die "cannot install$missing (Debian packages; install them and run again)"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/opsdb-scale.XXXXXX")
SERVER_PID=
VM_PID=
FAILED=0
stop_pid() { # PID SECONDS: SIGTERM, wait, then SIGKILL
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < $2 * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    stop_pid "$SERVER_PID" 120
    stop_pid "$VM_PID" 60
    if [ $KEEP = 1 ] || [ $rc != 0 ]; then
        log "kept $TMP ($(du -sh "$TMP" 2>/dev/null | cut -f1); opsdb log: $TMP/server.log, VictoriaMetrics log: $TMP/vm.log)"
    else
        rm -rf "$TMP"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

GEN=$TMP/gen
"${CC:-gcc}" -O2 -Wall -Wextra -Werror -std=c11 -o "$GEN" "$BENCH_DIR/gen.c" || die "cannot build bench/gen.c"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=${PORT:-$(free_port)}
VM_PORT=${VM_PORT:-$(free_port)}
[ "$PORT" != "$VM_PORT" ] || VM_PORT=$(free_port)
BASE=http://127.0.0.1:$PORT
VM_BASE=http://127.0.0.1:$VM_PORT

VARS=$TMP/vars.tsv # key value: everything the report prints
: >"$VARS"
rec() { printf '%s\t%s\n' "$1" "$2" >>"$VARS"; }
now_s() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.3f", b - a }'; }
kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
fsize() { local f s=0; for f in "$@"; do [ -f "$f" ] && s=$((s + $(stat -c %s "$f"))); done; echo $s; }
sql() { "$PY" "$BENCH_DIR/scale_query.py" sql "$BASE" "$1"; }
urlenc() { "$PY" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

END=${END:-$(($(date +%s) / 10 * 10))}
[ $((END % 10)) = 0 ] || die "END=$END is not a multiple of 10 s"
START=$((END - DAYS * 86400))
ND_START=$(awk -v e="$END" -v d="$NDJSON_DAYS" 'BEGIN { printf "%d", int((e - d * 86400) / 10) * 10 }')
POINTS_EXPECTED=$((HOSTS * METRICS * 8640 * DAYS))
RET_DAYS=$((DAYS + 10)) # keep the load inside every table's retention policy
RET_ARGS=()
for t in "${DATA_TABLES[@]}"; do RET_ARGS+=(--set "retention.$t=${RET_DAYS}d"); done
# system_health reads cpu_usage etc.; line protocol stores them as system_cpu_usage etc.
HEALTH_ARGS=(--set health.cpu_metric=system_cpu_usage --set health.memory_metric=system_memory_usage
    --set health.disk_metric=system_disk_usage)
# event partitions are packed after the load (5b), timed and measured hot against packed
SERVE_ARGS=(--no-collect --set query.cache_bytes=0 --set storage.compact_interval=10s
    --set storage.compress_after=2h --set storage.compress_events_after=0 "${RET_ARGS[@]}"
    "${HEALTH_ARGS[@]}")

rec date "$(date -u +%FT%TZ)"
rec command "$COMMAND"
rec env "DAYS=$DAYS HOSTS=$HOSTS NDJSON_DAYS=$NDJSON_DAYS RUNS=$RUNS SEED=$SEED END=$END"
rec quick $QUICK
rec machine "$(nproc) CPUs, $(awk '/^MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo), $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(uname -sr)"
rec opsdb_version "$("$OPSDB" version 2>/dev/null | head -n 1 || true)"
rec vm_version "$(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null || echo unknown)"
rec days "$DAYS"
rec hosts "$HOSTS"
rec ndjson_days "$NDJSON_DAYS"
rec runs "$RUNS"
rec start "$START"
rec end "$END"
rec nd_start "$ND_START"

# ---------------------------------------------------------------- disk space

# Estimated from one generated hour of every table: the line-protocol files (kept for
# VictoriaMetrics), one day of NDJSON files at a time, opsdb's database (~15 bytes per point
# with the rollups, ~60 per NDJSON row), VictoriaMetrics (~2 bytes per point), 25% margin.
need=$(
    {
        "$GEN" --seed "$SEED" --table system_metrics --format lp --hosts "$HOSTS" \
            --start $((END - 3600)) --end "$END" | wc -c | sed 's/^/lp /'
        for t in "${NDJSON_TABLES[@]}"; do
            "$GEN" --seed "$SEED" --table "$t" --start $((END - 3600)) --end "$END" | wc -lc | sed "s/^/$t /"
        done
    } | awk -v days="$DAYS" -v nd="$NDJSON_DAYS" -v pts="$POINTS_EXPECTED" '
        $1 == "lp" { lp = $2 * 24 * days; next }
        { rows += $2 * 24 * nd * 1.5; b = $3 * 24 * (nd < 1 ? nd : 1) * 1.5; if (b > slice) slice = b }
        END { printf "%.0f\n", (lp + slice + pts * 15 + rows * 60 + pts * 2 + pts / days * 40) * 1.25 }'
)
avail=$(df -B1 --output=avail "$TMP" | tail -n 1 | tr -d ' ')
gib() { awk -v b="$1" 'BEGIN { printf "%.1f GiB", b / 1073741824 }'; }
log "disk: needs about $(gib "$need") in $(dirname "$TMP"), $(gib "$avail") available"
rec disk "needs about $(gib "$need"), $(gib "$avail") available in $(dirname "$TMP")"
if [ "$avail" -lt "$need" ] && [ "${FORCE:-0}" != 1 ]; then
    die "not enough disk space in $(dirname "$TMP") (set TMPDIR elsewhere, or FORCE=1)"
fi

# ---------------------------------------------------------------- helpers

# send URL CTYPE OKCODE DIR: posts every batch file of DIR with SENDERS kept-alive senders
# (bench/send.py); sets SEND_SECS, SEND_FILES, SEND_ERRORS; codes in DIR/codes.
send() {
    local url=$1 ctype=$2 ok=$3 dir=$4 t0
    SEND_FILES=$(find "$dir" \( -name '*.lp' -o -name '*.ndjson' \) | wc -l)
    SEND_SECS=0 SEND_ERRORS=0
    : >"$dir/codes"
    [ "$SEND_FILES" -gt 0 ] || return 0
    t0=$(now_s)
    find "$dir" \( -name '*.lp' -o -name '*.ndjson' \) -print0 | sort -z |
        xargs -0 "$PY" "$BENCH_DIR/send.py" "$url" "$ctype" "$SENDERS" >"$dir/codes"
    SEND_SECS=$(elapsed "$t0")
    SEND_ERRORS=$(awk -v ok="$ok" '$1 != ok' "$dir/codes" | wc -l)
    if [ "$SEND_ERRORS" != 0 ]; then
        FAILED=1
        awk -v ok="$ok" '$1 != ok' "$dir/codes" | head -n 3 | while read -r code _ f; do
            {
                echo "POST $url ($(basename "$f")) -> $code"
                head -c 400 "$f.resp" 2>/dev/null || true
                echo
            } >>"$TMP/failures.txt"
        done
    fi
}

lp_points_failed() { # DIR OKCODE: points in the files the server did not acknowledge
    awk -v ok="$2" '$1 != ok { print $3 }' "$1/codes" | while read -r f; do
        awk '{ n += split($2, fields, ",") } END { printf "%.0f\n", n }' "$f"
    done | awk '{ n += $1 } END { printf "%.0f\n", n }'
}

ndjson_rows_acked() { # DIR: rows the server acknowledged ("rows": N in each 200 answer)
    awk '$1 == 200 { print $3 }' "$1/codes" | while read -r f; do
        awk 'match($0, /"rows"[ \t]*:[ \t]*[0-9]+/) {
            s = substr($0, RSTART, RLENGTH); sub(/.*:[ \t]*/, "", s); print s }' "$f.resp"
    done | awk '{ n += $1 } END { printf "%.0f\n", n }'
}

start_opsdb() { # DB LOG EXTRA_ARGS...: starts the server, waits for /healthz
    local db=$1 logf=$2 i
    shift 2
    "$OPSDB" serve --db "$db" --listen "127.0.0.1:$PORT" "${SERVE_ARGS[@]}" "$@" >>"$logf" 2>&1 &
    SERVER_PID=$!
    for i in $(seq 600); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            tail -n 20 "$logf" >&2
            SERVER_PID=
            die "opsdb exited during start (log above)"
        fi
        curl -fsS -o /dev/null "$BASE/healthz" 2>/dev/null && return 0
        sleep 0.1
    done
    die "opsdb did not answer $BASE/healthz within 60 s"
}
stop_opsdb() { stop_pid "$SERVER_PID" 300; SERVER_PID=; }

db_pages() { # DB PREFIX: page counts through the sqlite3 shell (PRAGMAs are refused on the SQL route)
    local out
    out=$(sqlite3 -readonly "$1" 'PRAGMA page_count; PRAGMA freelist_count; PRAGMA page_size;' | tr '\n' ' ')
    set -- "$2" $out
    rec "$1_page_count" "$2"
    rec "$1_freelist_count" "$3"
    rec "$1_page_size" "$4"
    rec "$1_used_bytes" $((($2 - $3) * $4))
}
db_objects() { # DB FILE: bytes per table and index (dbstat), "name<TAB>bytes"
    sqlite3 -readonly -separator $'\t' "$1" \
        "SELECT name, sum(pgsize) FROM dbstat WHERE aggregate = 1 GROUP BY name ORDER BY 2 DESC" >"$2" ||
        log "dbstat not available in this sqlite3 shell"
}

# ---------------------------------------------------------------- 1. generate

log "data: system_metrics $(date -u -d "@$START" +%FT%TZ) .. $(date -u -d "@$END" +%FT%TZ), $HOSTS hosts x $METRICS metrics / 10 s = $POINTS_EXPECTED points; NDJSON tables from $(date -u -d "@$ND_START" +%FT%TZ)"
log "== generating system_metrics as line protocol"
t0=$(now_s)
"$GEN" --seed "$SEED" --table system_metrics --format lp --hosts "$HOSTS" --start "$START" --end "$END" \
    --out-dir "$TMP/lp" --batch $LP_BATCH >"$TMP/gen-lp.txt" || die "bench/gen failed for system_metrics"
rec gen_lp_secs "$(elapsed "$t0")"
LP_POINTS=$(sed -nE 's/.* points=([0-9]+).*/\1/p' "$TMP/gen-lp.txt")
[ -n "$LP_POINTS" ] || die "bench/gen printed no point count: $(cat "$TMP/gen-lp.txt")"
rec lp_points_generated "$LP_POINTS"
rec lp_bytes "$(du -sb "$TMP/lp" | cut -f1)"
log "  $(cat "$TMP/gen-lp.txt") in $(du -sh "$TMP/lp" | cut -f1)"

# ---------------------------------------------------------------- 2a. hot: one day, no compaction

log "== hot bytes per point: the first day on a fresh database with compaction off"
"$GEN" --seed "$SEED" --table system_metrics --format lp --hosts "$HOSTS" --start "$START" \
    --end $((START + 86400)) --out-dir "$TMP/hot_lp" --batch $LP_BATCH >"$TMP/gen-hot.txt" ||
    die "bench/gen failed for the hot day"
HOT_POINTS=$(sed -nE 's/.* points=([0-9]+).*/\1/p' "$TMP/gen-hot.txt")
start_opsdb "$TMP/hot.db" "$TMP/hot-server.log" --set storage.compress_after=0
send "$BASE/write?precision=ms" text/plain 204 "$TMP/hot_lp"
HOT_POINTS=$((HOT_POINTS - $(lp_points_failed "$TMP/hot_lp" 204)))
rec hot_points "$HOT_POINTS"
rec hot_secs "$SEND_SECS"
rec hot_errors "$SEND_ERRORS"
rec hot_file_bytes "$(fsize "$TMP/hot.db" "$TMP/hot.db-wal")"
db_pages "$TMP/hot.db" hot
db_objects "$TMP/hot.db" "$TMP/objects-hot.tsv"
rec hot_vmhwm_kib "$(kib "$SERVER_PID" VmHWM)"
log "  $HOT_POINTS points in ${SEND_SECS}s (compaction off), $(fsize "$TMP/hot.db" "$TMP/hot.db-wal") bytes"
stop_opsdb
rm -rf "$TMP/hot_lp" "$TMP"/hot.db*

# ---------------------------------------------------------------- 2b. line protocol, compaction on

DB=$TMP/scale.db
log "== opsdb: system_metrics over line protocol (compaction every 10 s, compress_after 2h)"
start_opsdb "$DB" "$TMP/server.log"
MAIN_HWM=0
send "$BASE/write?precision=ms" text/plain 204 "$TMP/lp"
LP_ACKED=$((LP_POINTS - $(lp_points_failed "$TMP/lp" 204)))
rec lp_points "$LP_ACKED"
rec lp_secs "$SEND_SECS"
rec lp_files "$SEND_FILES"
rec lp_errors "$SEND_ERRORS"
rec lp_vmhwm_kib "$(kib "$SERVER_PID" VmHWM)"
log "  $LP_ACKED points in ${SEND_SECS}s, $SEND_ERRORS failed requests"

# ---------------------------------------------------------------- 3. compaction caught up?

log "== waiting for the server's compaction (past days older than 2 h still in a chunk per request; at most ${COMPACT_TIMEOUT}s)"
t0=$(now_s)
caught_up=0
while :; do
    cut_ms=$((($(date +%s) - COMPRESS_AFTER_S - 60) * 1000)) # a minute of slack for the interval
    n=$(sql "SELECT count(*) AS n FROM (SELECT 1 FROM system_metrics_chunks GROUP BY series_id, day HAVING max(end_ts) < $cut_ms AND count(*) > (sum(count) + 65535) / 65536)" 2>/dev/null || true)
    if [ "$n" = 0 ]; then caught_up=1; break; fi
    if awk -v s="$(elapsed "$t0")" -v m="$COMPACT_TIMEOUT" 'BEGIN { exit !(s > m) }'; then break; fi
    sleep 2
done
rec compact_wait_secs "$(elapsed "$t0")"
if [ $caught_up = 1 ]; then
    rec compact_mode "the server's compaction (every 10 s during the load)"
    log "  caught up after $(elapsed "$t0")s"
else
    log "  not caught up after ${COMPACT_TIMEOUT}s ($n series-days older than 2 h not compacted): stopping the server, opsdb compact --older-than 2h"
    MAIN_HWM=$(kib "$SERVER_PID" VmHWM)
    stop_opsdb
    t1=$(now_s)
    "$OPSDB" compact --db "$DB" --older-than 2h "${RET_ARGS[@]}" 2>"$TMP/compact.log" ||
        die "opsdb compact failed: $(tail -n 5 "$TMP/compact.log")"
    rec compact_cli_secs "$(elapsed "$t1")"
    rec compact_mode "server compaction timed out after ${COMPACT_TIMEOUT}s; then opsdb compact --older-than 2h"
    start_opsdb "$DB" "$TMP/server.log"
fi

# ---------------------------------------------------------------- 3b. cold bytes per point

log "== cold bytes per point (the database holds system_metrics only)"
rec cold_file_bytes "$(fsize "$DB" "$DB-wal")"
db_pages "$DB" cold
db_objects "$DB" "$TMP/objects-cold.tsv"
read -r chunk_bytes chunk_points chunk_rows minutes_bytes < <(sqlite3 -readonly -separator ' ' "$DB" \
    "SELECT coalesce(sum(length(data)), 0), coalesce(sum(count), 0), count(*), coalesce(sum(length(minutes)), 0) FROM system_metrics_chunks")
rec chunk_bytes "$chunk_bytes"
rec minutes_bytes "$minutes_bytes"
rec chunk_points "$chunk_points"
rec chunk_rows "$chunk_rows"
rec raw_samples "$(sqlite3 -readonly "$DB" 'SELECT count(*) FROM system_metrics_samples')"
log "  file+wal $(fsize "$DB" "$DB-wal") bytes; chunks $chunk_bytes bytes for $chunk_points points"

# ---------------------------------------------------------------- 2c. the NDJSON tables

for t in "${NDJSON_TABLES[@]}"; do
    log "== opsdb: $t as NDJSON, one day of data at a time"
    rows=0 secs=0 files=0 errors=0 gen_secs=0
    s=$ND_START
    while [ "$s" -lt "$END" ]; do
        e=$((s + SLICE_S))
        [ "$e" -le "$END" ] || e=$END
        d=$TMP/nd/$t
        rm -rf "$d"
        t0=$(now_s)
        mkdir -p "$TMP/nd"
        "$GEN" --seed "$SEED" --table "$t" --start "$s" --end "$e" --out-dir "$d" --batch $NDJSON_BATCH \
            >/dev/null || die "bench/gen failed for $t ($s..$e)"
        gen_secs=$(awk -v a="$gen_secs" -v b="$(elapsed "$t0")" 'BEGIN { printf "%.3f", a + b }')
        send "$BASE/api/v1/ingest/$t" application/x-ndjson 200 "$d"
        rows=$((rows + $(ndjson_rows_acked "$d")))
        secs=$(awk -v a="$secs" -v b="$SEND_SECS" 'BEGIN { printf "%.3f", a + b }')
        files=$((files + SEND_FILES))
        errors=$((errors + SEND_ERRORS))
        rm -rf "$d"
        s=$e
    done
    rec "nd_${t}_rows" "$rows"
    rec "nd_${t}_secs" "$secs"
    rec "nd_${t}_files" "$files"
    rec "nd_${t}_errors" "$errors"
    rec "nd_${t}_gen_secs" "$gen_secs"
    log "  $rows rows in ${secs}s of sending, $errors failed requests"
done
rec total_file_bytes "$(fsize "$DB" "$DB-wal")"

# ---------------------------------------------------------------- 4. query latencies

log "== opsdb query latency, $RUNS runs each (answer cache off)"
SPEC=$TMP/opsdb-queries.tsv
: >"$SPEC"
for v in "${VIEWS_PLAIN[@]}"; do
    printf 'view %s\t/api/v1/views/%s?now=%s\n' "$v" "$v" "$END" >>"$SPEC"
done
for v in "${VIEWS_WINDOW[@]}"; do
    for w in "${WINDOWS[@]}"; do
        printf 'view %s %s\t/api/v1/views/%s?now=%s&window=%s\n' "$v" "$w" "$v" "$END" "$w" >>"$SPEC"
    done
done
VM_SPEC=$TMP/vm-queries.tsv
: >"$VM_SPEC"
for i in 0 1 2; do
    w=${WINDOWS[$i]} ws=${WINDOW_S[$i]} st=${STEPS[$i]}
    from=$((END - ws))
    printf 'series one %s\t/api/v1/series?metric=%s&filter=%s&from=%s&to=%s&step=%s\n' \
        "$w" "$METRIC" "$(urlenc "host=$HOST")" "$from" "$END" "$st" >>"$SPEC"
    printf 'series top %s\t/api/v1/series?metric=%s&agg=max&from=%s&to=%s&step=%s\n' \
        "$w" "$METRIC" "$from" "$END" "$st" >>"$SPEC"
    printf 'series one %s\t/api/v1/query_range?query=%s&start=%s&end=%s&step=%s&nocache=1\n' "$w" \
        "$(urlenc "avg_over_time($METRIC{host=\"$HOST\"}[$st])")" "$from" "$END" "$st" >>"$VM_SPEC"
    printf 'series top %s\t/api/v1/query_range?query=%s&start=%s&end=%s&step=%s&nocache=1\n' "$w" \
        "$(urlenc "max by (host) (max_over_time($METRIC[$st]))")" "$from" "$END" "$st" >>"$VM_SPEC"
done
: >"$TMP/opsdb-latency.tsv"
"$PY" "$BENCH_DIR/scale_query.py" time "$BASE" "$RUNS" "$SPEC" "$TMP/opsdb-latency.tsv" "$TMP/bodies-opsdb"
awk -F'\t' '$2 != "200"' "$TMP/opsdb-latency.tsv" | while IFS=$'\t' read -r name codes _; do
    {
        echo "opsdb $name -> $codes"
        head -c 400 "$TMP/bodies-opsdb/$name.body" || true
        echo
    } >>"$TMP/failures.txt"
done
[ "$(awk -F'\t' '$2 != "200"' "$TMP/opsdb-latency.tsv" | wc -l)" = 0 ] || FAILED=1

# ---------------------------------------------------------------- 5. peak RSS

hwm=$(kib "$SERVER_PID" VmHWM)
[ "${hwm:-0}" -le "$MAIN_HWM" ] || MAIN_HWM=$hwm
rec vmhwm_kib "$MAIN_HWM"
rec vmrss_kib "$(kib "$SERVER_PID" VmRSS)"
log "  peak RSS $((MAIN_HWM / 1024)) MiB"
stop_opsdb

# ---------------------------------------------------------------- 5b. packing event partitions

log "== packing the event partitions that ended a day or more before the data end (server stopped)"
"$OPSDB" partitions --db "$DB" --format json "${RET_ARGS[@]}" >"$TMP/parts-hot.json" 2>"$TMP/parts.err" ||
    die "opsdb partitions failed: $(tail -n 5 "$TMP/parts.err")"
t0=$(now_s)
"$OPSDB" compact --db "$DB" --older-than "$(($(date +%s) - END + 86400))s" --quiet "${RET_ARGS[@]}" \
    >"$TMP/pack.log" 2>&1 || die "opsdb compact (packing) failed: $(tail -n 5 "$TMP/pack.log")"
rec pack_secs "$(elapsed "$t0")"
"$OPSDB" partitions --db "$DB" --format json "${RET_ARGS[@]}" >"$TMP/parts-cold.json" 2>"$TMP/parts.err" ||
    die "opsdb partitions failed: $(tail -n 5 "$TMP/parts.err")"
rec packed_file_bytes "$(fsize "$DB" "$DB-wal")"
log "  $(tail -n 1 "$TMP/pack.log") in $(elapsed "$t0")s"

# ---------------------------------------------------------------- 6. retention of one day

RETENTION_HELP=$("$OPSDB" retention --help 2>&1 || true)
if grep -qw apply <<<"$RETENTION_HELP"; then
    log "== retention apply: one day past the policy, per table (server stopped)"
    rec retention_available 1
    "$OPSDB" retention status --db "$DB" --format json "${RET_ARGS[@]}" >"$TMP/retention-before.json" 2>&1 || true
    # catch up first (untimed): minute rollups older than their 7-day policy plus one day go now,
    # so the timed runs below drop one day of everything, rollups included, as a steady-state
    # server does every day, and not the backlog of a 30-day bulk load
    keep=()
    for u in "${DATA_TABLES[@]}"; do keep+=(--set "retention.$u=0"); done
    "$OPSDB" retention apply --db "$DB" "${keep[@]}" --set storage.rollup_1m_retention=8d \
        >"$TMP/retention-catch-up.log" 2>&1 || true
    log "  catch-up (untimed): $(cat "$TMP/retention-catch-up.log")"
    for t in "${DATA_TABLES[@]}"; do
        if [ "$t" = system_metrics ]; then span=$DAYS; else span=$NDJSON_DAYS; fi
        cut=$(awk -v s="$span" 'BEGIN { printf "%d", int(s) - 1 }')
        if [ "$cut" -lt 1 ]; then
            rec "ret_${t}" "skipped: the table holds less than 2 days"
            continue
        fi
        args=()
        for u in "${DATA_TABLES[@]}"; do
            if [ "$u" = "$t" ]; then args+=(--set "retention.$u=${cut}d"); else args+=(--set "retention.$u=0"); fi
        done
        t0=$(now_s)
        rc=0
        "$OPSDB" retention apply --db "$DB" "${args[@]}" >"$TMP/retention-$t.log" 2>&1 || rc=$?
        secs=$(elapsed "$t0")
        vrc=0
        "$OPSDB" retention verify --db "$DB" "${args[@]}" >"$TMP/retention-verify-$t.log" 2>&1 || vrc=$?
        rec "ret_${t}" "$secs $rc $vrc ${cut}d"
        log "  $t: retention.$t=${cut}d applied in ${secs}s (exit $rc; verify exit $vrc)"
        [ $rc = 0 ] || { FAILED=1; echo "opsdb retention apply ($t) exited $rc: $(tail -c 400 "$TMP/retention-$t.log")" >>"$TMP/failures.txt"; }
    done
    "$OPSDB" retention status --db "$DB" --format json "${RET_ARGS[@]}" >"$TMP/retention-after.json" 2>&1 || true
else
    log "retention apply: not available in this build"
    rec retention_available 0
fi

# ---------------------------------------------------------------- 7. VictoriaMetrics

log "== VictoriaMetrics on the same line-protocol files"
mkdir -p "$TMP/vm"
victoria-metrics -httpListenAddr="127.0.0.1:$VM_PORT" -storageDataPath="$TMP/vm" \
    -retentionPeriod=100y -loggerLevel=ERROR >"$TMP/vm.log" 2>&1 &
VM_PID=$!
up=0
for _ in $(seq 300); do
    kill -0 "$VM_PID" 2>/dev/null || { tail -n 20 "$TMP/vm.log" >&2; VM_PID=; die "victoria-metrics exited during start"; }
    if curl -fsS -o /dev/null "$VM_BASE/health" 2>/dev/null; then up=1; break; fi
    sleep 0.1
done
[ $up = 1 ] || die "victoria-metrics did not answer $VM_BASE/health within 30 s"
send "$VM_BASE/write?precision=ms" text/plain 204 "$TMP/lp"
rec vm_points "$((LP_POINTS - $(lp_points_failed "$TMP/lp" 204)))"
rec vm_secs "$SEND_SECS"
rec vm_errors "$SEND_ERRORS"
log "  $LP_POINTS points in ${SEND_SECS}s, $SEND_ERRORS failed requests"
curl -fsS -o /dev/null "$VM_BASE/internal/force_flush" || log "force_flush failed"
rec vm_ingest_vmhwm_kib "$(kib "$VM_PID" VmHWM)"
t0=$(now_s)
curl -fsS -o /dev/null "$VM_BASE/internal/force_merge" || log "force_merge failed"
sleep 1
for _ in $(seq "$COMPACT_TIMEOUT"); do
    merges=$(curl -fsS "$VM_BASE/metrics" 2>/dev/null || true)
    grep -q '^vm_active_force_merges 0' <<<"$merges" && break
    sleep 1
done
rec vm_merge_secs "$(elapsed "$t0")"
rec vm_bytes "$(du -sb "$TMP/vm" | cut -f1)"
log "  $(du -sb "$TMP/vm" | cut -f1) bytes after force_merge"
log "== VictoriaMetrics query latency, $RUNS runs each (nocache=1)"
: >"$TMP/vm-latency.tsv"
"$PY" "$BENCH_DIR/scale_query.py" time "$VM_BASE" "$RUNS" "$VM_SPEC" "$TMP/vm-latency.tsv" "$TMP/bodies-vm"
[ "$(awk -F'\t' '$2 != "200"' "$TMP/vm-latency.tsv" | wc -l)" = 0 ] || FAILED=1
rec vm_vmhwm_kib "$(kib "$VM_PID" VmHWM)"
stop_pid "$VM_PID" 60
VM_PID=

# ---------------------------------------------------------------- 8. report

mkdir -p "$BENCH_DIR/results"
REPORT=$BENCH_DIR/results/scale-$(date -u +%Y%m%dT%H%M%SZ).md
"$PY" - "$TMP" <<'EOF' >"$REPORT"
import json, os, sys
tmp = sys.argv[1]
V = {}
for line in open(os.path.join(tmp, "vars.tsv")):
    k, _, v = line.rstrip("\n").partition("\t")
    V[k] = v
def tsv(name):
    p = os.path.join(tmp, name)
    return [l.rstrip("\n").split("\t") for l in open(p) if l.strip()] if os.path.exists(p) else []
f = lambda k: float(V.get(k) or 0)
i = lambda k: int(float(V.get(k) or 0))
def rate(n, s): return n / s if s > 0 else 0.0
def ratio(a, b): return a / b if b > 0 else float("nan")
def mib(kib): return kib / 1024.0
quick = V.get("quick") == "1"

print(f"# opsdb at scale ({V['date']})")
print()
print(f"- command: `{V['command']}` ({V['env']})")
print(f"- machine: {V['machine']}")
print(f"- opsdb: {V.get('opsdb_version') or '?'}; VictoriaMetrics {V.get('vm_version')}")
print(f"- data: bench/gen, system_metrics {V['days']} days x {V['hosts']} hosts x 20 metrics every 10 s "
      f"as line protocol ({i('lp_points_generated'):,} points, {i('lp_bytes') / 1e9:.2f} GB of files); "
      f"api_usage, error_logs, pipeline_status, handler_metrics over the last {V['ndjson_days']} days as "
      f"NDJSON; data end {V['end']} (epoch s)")
print(f"- disk: {V.get('disk')}")
if quick:
    print("- **quick run**: a smoke test far below the 100M points the targets are set for; "
          "its ratios and latencies say nothing about them")
print()

lp_rate = rate(i("lp_points"), f("lp_secs"))
vm_rate = rate(i("vm_points"), f("vm_secs"))
print("## Ingestion over HTTP (2 kept-alive senders, 10,000 lines or rows per request)")
print()
print("| store | table | format | requests | rows (points) | seconds | rows/s | failed requests |")
print("|---|---|---|---:|---:|---:|---:|---:|")
print(f"| opsdb, compaction off (first day, fresh db) | system_metrics | lp | | {i('hot_points'):,} | "
      f"{f('hot_secs'):.2f} | {rate(i('hot_points'), f('hot_secs')):,.0f} | {i('hot_errors')} |")
print(f"| opsdb, compaction every 10 s | system_metrics | lp | {i('lp_files')} | {i('lp_points'):,} | "
      f"{f('lp_secs'):.2f} | **{lp_rate:,.0f}** | {i('lp_errors')} |")
for t in ("api_usage", "error_logs", "pipeline_status", "handler_metrics"):
    n, s = i(f"nd_{t}_rows"), f(f"nd_{t}_secs")
    print(f"| opsdb, compaction every 10 s | {t} | ndjson | {i(f'nd_{t}_files')} | {n:,} | {s:.2f} | "
          f"**{rate(n, s):,.0f}** | {i(f'nd_{t}_errors')} |")
print(f"| VictoriaMetrics | system_metrics | lp | {i('lp_files')} | {i('vm_points'):,} | {f('vm_secs'):.2f} | "
      f"**{vm_rate:,.0f}** | {i('vm_errors')} |")
print()
print(f"opsdb/VM line-protocol ingestion: **{ratio(lp_rate, vm_rate):.2f}x**. NDJSON files were generated "
      "one day at a time between sends; only the sending is timed. error_logs and pipeline_status "
      "come in a few requests per day, so their rates measure request overhead.")
print()

pts = i("lp_points")
hot = i("hot_points")
vm_bpp = ratio(i("vm_bytes"), i("vm_points"))
cold_used = ratio(i("cold_used_bytes"), pts)
cold_file = ratio(i("cold_file_bytes"), pts)
print("## Bytes per point (system_metrics)")
print()
print("| state | file + WAL | used pages ((page_count - freelist) x page_size) | chunks alone |")
print("|---|---:|---:|---:|")
print(f"| hot: first day, compaction off ({hot:,} points) | {ratio(i('hot_file_bytes'), hot):.2f} | "
      f"{ratio(i('hot_used_bytes'), hot):.2f} | |")
print(f"| cold: all {pts:,} points after compaction ({i('raw_samples'):,} raw samples left) | "
      f"{cold_file:.2f} | {cold_used:.2f} | {ratio(i('chunk_bytes'), i('chunk_points')):.3f} "
      f"({i('chunk_bytes'):,} bytes, {i('chunk_points'):,} points, {i('chunk_rows'):,} chunks; "
      f"their minute rollups {ratio(i('minutes_bytes'), i('chunk_points')):.3f} more) |")
print(f"| VictoriaMetrics after force_merge (du -sb of its data dir) | {vm_bpp:.2f} | | |")
print()
print(f"opsdb/VM once cold: **{ratio(cold_used, vm_bpp):.2f}x** on used pages, {ratio(cold_file, vm_bpp):.2f}x on "
      f"the files. Compaction: {V.get('compact_mode')}, waited {f('compact_wait_secs'):.1f} s after the load"
      + (f", opsdb compact took {f('compact_cli_secs'):.1f} s" if 'compact_cli_secs' in V else "") + ".")
print()
hot_obj = {r[0]: int(r[1]) for r in tsv("objects-hot.tsv") if len(r) == 2}
cold_obj = {r[0]: int(r[1]) for r in tsv("objects-cold.tsv") if len(r) == 2}
if hot_obj or cold_obj:
    print("Bytes per point by table and index (dbstat; objects under 0.01 bytes/point left out):")
    print()
    print("| object | hot | cold |")
    print("|---|---:|---:|")
    for name in sorted(set(hot_obj) | set(cold_obj), key=lambda n: -max(ratio(hot_obj.get(n, 0), hot), ratio(cold_obj.get(n, 0), pts))):
        h, c = ratio(hot_obj.get(name, 0), hot), ratio(cold_obj.get(name, 0), pts)
        if max(h, c) >= 0.01:
            print(f"| {name} | {h:.2f} | {c:.2f} |")
    print()
print(f"Whole database after all tables: {i('total_file_bytes') / 1e9:.2f} GB (file + WAL).")
print()

def parts(name):
    try:
        return {r["partition"]: r for r in json.load(open(os.path.join(tmp, name)))["rows"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
hot_parts, cold_parts = parts("parts-hot.json"), parts("parts-cold.json")
packed = {}
for name, c in cold_parts.items():
    h = hot_parts.get(name)
    if c.get("state") == "cold" and h and h.get("state") == "hot" and c["table"] != "system_metrics":
        t = packed.setdefault(c["table"], [0, 0, 0, 0])
        t[0] += 1
        t[1] += h["rows"]
        t[2] += h["bytes"] or 0
        t[3] += c["bytes"] or 0
log_ratio = float("nan")
if packed:
    print("## Event partitions packed (column-wise zstd), after the load")
    print()
    print("| table | partitions | rows | bytes as rows with indexes | bytes packed | smaller by | bytes/row packed |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for t, (n, rows, hb, cb) in sorted(packed.items()):
        print(f"| {t} | {n} | {rows:,} | {hb:,} | {cb:,} | **{ratio(hb, cb):.1f}x** | {ratio(cb, rows):.1f} |")
        if t == "error_logs":
            log_ratio = ratio(hb, cb)
    print()
    print(f"`opsdb compact --older-than` (the data end minus one day), server stopped: "
          f"{f('pack_secs'):.1f} s. Bytes from `opsdb partitions` (dbstat pages of each partition "
          f"and its indexes, or of its blocks). Database after packing: "
          f"{i('packed_file_bytes') / 1e9:.2f} GB (file + WAL; freed pages stay in the file until a VACUUM).")
    print()

lat = {r[0]: r for r in tsv("opsdb-latency.tsv")}
vml = {r[0]: r for r in tsv("vm-latency.tsv")}
print(f"## Query latency ({V['runs']} runs each, one kept-alive connection, answer cache off; ms)")
print()
print("| query | HTTP | first | p50 | p95 | max | answer |")
print("|---|---|---:|---:|---:|---:|---|")
for name, r in lat.items():
    print(f"| {name} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[7]} |")
print()
print("Series: metric system_cpu_usage, one series = host-001 (avg per step), top = all hosts "
      "(max per step); steps 10s over 15m, 1m over 24h, 1h over 30d.")
print()
print("| series query | opsdb p50 | opsdb p95 | VM p50 | VM p95 | opsdb/VM p50 | opsdb answer | VM answer |")
print("|---|---:|---:|---:|---:|---:|---|---|")
series_ratios = []
for name, v in vml.items():
    o = lat.get(name)
    if not o:
        continue
    rr = ratio(float(o[3]), float(v[3]))
    series_ratios.append((name, rr))
    print(f"| {name} | {o[3]} | {o[4]} | {v[3]} | {v[4]} | {rr:.2f} | {o[7]} | {v[7]} |")
print()
print("VictoriaMetrics: `/api/v1/query_range` with `avg_over_time(system_cpu_usage{host=\"host-001\"}[STEP])` "
      "and `max by (host) (max_over_time(system_cpu_usage[STEP]))`, nocache=1.")
print()

print("## Memory")
print()
print(f"opsdb peak RSS (VmHWM) **{mib(i('vmhwm_kib')):.1f} MiB** (after the line-protocol load "
      f"{mib(i('lp_vmhwm_kib')):.1f} MiB; the compaction-off server {mib(i('hot_vmhwm_kib')):.1f} MiB); "
      f"VictoriaMetrics {mib(i('vm_vmhwm_kib')):.1f} MiB.")
print()

print("## Retention of one day")
print()
ret_secs = None
if V.get("retention_available") == "1":
    def status(name):
        try:
            return {r["table"]: r for r in json.load(open(os.path.join(tmp, name)))["rows"]}
        except (OSError, ValueError, KeyError, TypeError):
            return {}
    before, after = status("retention-before.json"), status("retention-after.json")
    print("| table | policy applied | seconds | exit | verify exit | rows before | rows after | oldest after |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    ret_secs = 0.0
    for t in ("system_metrics", "api_usage", "error_logs", "pipeline_status", "handler_metrics"):
        val = V.get(f"ret_{t}", "")
        b, a = before.get(t, {}), after.get(t, {})
        if val.startswith("skipped"):
            print(f"| {t} | {val} | | | | {b.get('rows', '')} | {a.get('rows', '')} | {a.get('oldest') or ''} |")
            continue
        secs, rc, vrc, cut = val.split(" ")
        ret_secs += float(secs)
        print(f"| {t} | {cut} | {float(secs):.3f} | {rc} | {vrc} | {b.get('rows', '')} | {a.get('rows', '')} | {a.get('oldest') or ''} |")
    print()
    print(f"`opsdb retention apply --db ... --set retention.TABLE=(days held - 1)d` per table, the server "
          f"stopped, the other tables set to 0 (keep forever). About one day is past the policy (plus the "
          f"time since the data end). Total: **{ret_secs:.3f} s**.")
else:
    print("retention apply: not available in this build")
print()

print("## Targets (storage issue)")
print()
def met(ok): return "**met**" if ok else "not met"
print("| target | measured | |")
print("|---|---|---|")
r = ratio(lp_rate, vm_rate)
print(f"| ingestion >= 1.0x VM, rollups and compaction on | {r:.2f}x ({lp_rate:,.0f} vs {vm_rate:,.0f} points/s) | {met(r >= 1.0)} |")
r1, r2 = ratio(cold_used, vm_bpp), ratio(cold_file, vm_bpp)
print(f"| <= 0.8x VM bytes per point once cold | {r1:.2f}x on used pages ({cold_used:.2f} vs {vm_bpp:.2f}), {r2:.2f}x on the files | "
      f"{met(r1 <= 0.8)} (used pages){'' if r2 <= 0.8 else '; files: not met'} |")
worst = max(series_ratios, key=lambda x: x[1]) if series_ratios else ("-", float("nan"))
print(f"| one-series and top-k latency matched (opsdb p50 <= VM p50) | worst {worst[0]}: {worst[1]:.2f}x | "
      f"{met(bool(series_ratios) and all(x[1] <= 1.0 for x in series_ratios))} |")
long = [r for n, r in lat.items() if n.startswith("view ") or n.endswith(" 30d")]
slow = max(long, key=lambda r: float(r[4])) if long else None
ok = bool(long) and all(float(r[4]) < 100 and r[1] == "200" for r in long)
print(f"| every view and every 30-day series query < 100 ms (p95) | slowest {slow[0]}: p95 {slow[4]} ms, p50 {slow[3]} ms | {met(ok)} |"
      if slow else "| every view and every 30-day series query < 100 ms | - | not met |")
if ret_secs is None:
    print("| retention of a day < 1 s | not available in this build | - |")
else:
    print(f"| retention of a day < 1 s | {ret_secs:.3f} s (all tables) | {met(ret_secs < 1.0)} |")
print(f"| logs >= 10x smaller once cold | error_logs {log_ratio:.1f}x | {met(log_ratio >= 10)} |")
print(f"| peak RSS < 512 MiB | {mib(i('vmhwm_kib')):.1f} MiB | {met(mib(i('vmhwm_kib')) < 512)} |")
fail = os.path.join(tmp, "failures.txt")
if os.path.exists(fail) and open(fail).read().strip():
    print()
    print("## Failures (first answers)")
    print()
    print("```")
    print(open(fail).read().strip())
    print("```")
EOF
cat "$REPORT"
log "written to $REPORT"
if [ $FAILED = 1 ]; then
    die "some requests failed (see Failures above)"
fi
