#!/usr/bin/env bash
# bench/run.sh - opsdb's reference benchmark: HTTP ingestion rate per table and format, latency
# of the seven views at ~1M and ~10M rows, and the server's peak memory.
#
#   bench/run.sh [--quick] [--keep]
#
# --quick  small sizes (a smoke test, under a minute); --keep  keep the temporary directory.
# Environment: OPSDB (server binary, default ./opsdb next to bench/), PORT (default: a free one),
# CACHE (off: the answer cache is off so views are computed every time; on keeps it),
# SEED (default 1), END (data end, epoch seconds; default now rounded down to 10 s),
# TMPDIR (where the database and batch files go; the full run needs ~2 GB).
#
# The data is made by bench/gen.c (deterministic). Phase 1 loads the window that brings the
# database to ~1M rows, phase 2 the following window up to ~10M rows, so data always arrives in
# time order; each phase's views are asked with ?now= set to the end of the data loaded so far.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
OPSDB=${OPSDB:-$ROOT/opsdb}
SEED=${SEED:-1}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
COMMAND="bench/run.sh${*:+ $*}"

QUICK=0
KEEP=0
for arg in "$@"; do
    case $arg in
    --quick) QUICK=1 ;;
    --keep) KEEP=1 ;;
    -h | --help)
        sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "run.sh: unknown argument $arg (use --quick, --keep)" >&2
        exit 2
        ;;
    esac
done

if [ $QUICK = 1 ]; then
    PHASE_ROWS=(25000 150000)
    VIEW_RUNS=10
else
    PHASE_ROWS=(1000000 10000000)
    VIEW_RUNS=20
fi
LP_BATCH=10000     # lines per /write request (each line = one host, 20 points)
NDJSON_BATCH=10000 # rows per /api/v1/ingest request
SENDERS=2
VIEWS=(system_health api_performance error_summary pipeline_health handler_performance
    active_alerts job_status)
# Mean rows per second of data in the reference workload (100 hosts x 20 metrics / 10 s, 50 API
# requests, 0.5 error events, 30 handlers / 10 s, 10 pipelines x ~7 state changes / 15 min);
# the windows are then fitted to the row targets with bench/gen itself.
ROWS_PER_S=253.6

die() {
    echo "run.sh: $*" >&2
    exit 1
}

# ---------------------------------------------------------------- build and start

"${CC:-gcc}" -O2 -Wall -Wextra -Werror -std=c11 -o "$BENCH_DIR/gen" "$BENCH_DIR/gen.c" ||
    die "cannot build bench/gen"
GEN=$BENCH_DIR/gen
[ -x "$OPSDB" ] || die "no server binary at $OPSDB: run make in $ROOT or set OPSDB=path"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/opsdb-bench.XXXXXX")
SERVER_PID=
cleanup() {
    local rc=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ $KEEP = 1 ] || [ $rc != 0 ]; then
        echo "run.sh: kept $TMP (server log: $TMP/server.log)" >&2
    else
        rm -rf "$TMP"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=${PORT:-$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
BASE=http://127.0.0.1:$PORT

# The answer cache would serve runs 2..N of each view from memory; it is off (CACHE=on keeps it)
# so the view latencies measure the queries.
CACHE_ARGS=(--set query.cache_bytes=0)
[ "${CACHE:-off}" = on ] && CACHE_ARGS=()
"$OPSDB" serve --db "$TMP/bench.db" --listen "127.0.0.1:$PORT" --no-collect "${CACHE_ARGS[@]}" \
    >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
up=0
for _ in $(seq 300); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        tail -n 20 "$TMP/server.log" >&2
        die "server exited during start (log above)"
    fi
    if curl -fsS -o /dev/null "$BASE/healthz" 2>/dev/null; then up=1; break; fi
    sleep 0.1
done
[ $up = 1 ] || die "server did not answer $BASE/healthz within 30 s"

# ---------------------------------------------------------------- helpers

now_s() { date +%s.%N; }

mem_kib() { # VmHWM|VmRSS of the server, KiB
    awk -v k="$1:" '$1 == k { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0
}

db_mib() {
    du -cm "$TMP"/bench.db* 2>/dev/null | awk 'END { print $1 }'
}

# Each load goes through bench/send.py: SENDERS kept-alive connections, one line per file
# "<http code> <seconds> <file>", the answer in <file>.resp.

RESULTS_INGEST=$TMP/ingest.tsv # phase table format batch files rows seconds errors
RESULTS_VIEWS=$TMP/views.tsv   # phase view status first_ms p50_ms p95_ms max_ms bytes
FAILURES=$TMP/failures.txt
: >"$RESULTS_INGEST"
: >"$RESULTS_VIEWS"
: >"$FAILURES"
TOTAL_ROWS=0

# send PHASE TABLE FORMAT DIR: posts every file of DIR with SENDERS parallel senders.
send() {
    local phase=$1 table=$2 format=$3 dir=$4 url ctype ok rows seconds errors files t0 t1
    if [ "$format" = lp ]; then
        url="$BASE/write?precision=ms" ctype=text/plain ok=204
    else
        url="$BASE/api/v1/ingest/$table" ctype=application/x-ndjson ok=200
    fi
    files=$(find "$dir" -name '*.lp' -o -name '*.ndjson' | wc -l)
    [ "$files" -gt 0 ] || return 0
    t0=$(now_s)
    find "$dir" \( -name '*.lp' -o -name '*.ndjson' \) -print0 | sort -z |
        xargs -0 "$PY" "$BENCH_DIR/send.py" "$url" "$ctype" "$SENDERS" >"$dir/codes"
    t1=$(now_s)
    seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    errors=$(awk -v ok="$ok" '$1 != ok' "$dir/codes" | wc -l)
    # rows the server acknowledged: NDJSON answers count them; a 204 to /write acknowledges
    # every point of the file.
    rows=$(
        awk -v ok="$ok" '$1 == ok { print $3 }' "$dir/codes" |
            while read -r f; do
                if [ "$format" = lp ]; then
                    awk '{ n += split($2, fields, ",") } END { printf "%.0f\n", n }' "$f"
                else
                    awk 'match($0, /"rows"[ \t]*:[ \t]*[0-9]+/) {
                        s = substr($0, RSTART, RLENGTH); sub(/.*:[ \t]*/, "", s); print s }' "$f.resp"
                fi
            done | awk '{ n += $1 } END { printf "%.0f\n", n }'
    )
    awk -v ok="$ok" '$1 != ok' "$dir/codes" | head -n 3 | while read -r code _ f; do
        {
            echo "phase $phase, $table ($format): POST $url ($(basename "$f")) -> $code"
            head -c 400 "$f.resp" 2>/dev/null
            head -c 200 "$f.curlerr" 2>/dev/null
            echo
        } >>"$FAILURES"
    done
    TOTAL_ROWS=$((TOTAL_ROWS + rows))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$table" "$format" \
        "$(if [ "$format" = lp ]; then echo "$LP_BATCH lines"; else echo "$NDJSON_BATCH rows"; fi)" \
        "$files" "$rows" "$seconds" "$errors" >>"$RESULTS_INGEST"
    printf '  %-16s %-6s %9s rows %8ss %s errors\n' "$table" "$format" "$rows" "$seconds" "$errors" >&2
    rm -f "$dir"/*.lp "$dir"/*.ndjson
}

# views PHASE NOW_S: times every view VIEW_RUNS times.
views() {
    local phase=$1 now=$2 view out
    for view in "${VIEWS[@]}"; do
        out=$TMP/view-$phase-$view
        : >"$out.times"
        for _ in $(seq "$VIEW_RUNS"); do
            curl -sS -o "$out.body" -w '%{http_code} %{time_total} %{size_download}\n' \
                "$BASE/api/v1/views/$view?now=$now" >>"$out.times" 2>>"$out.curlerr" ||
                echo "000 0 0" >>"$out.times"
        done
        "$PY" - "$phase" "$view" "$out.times" >>"$RESULTS_VIEWS" <<'EOF'
import sys
phase, view, path = sys.argv[1:4]
runs = [line.split() for line in open(path) if line.strip()]
codes = sorted({r[0] for r in runs})
ms = [float(r[1]) * 1000 for r in runs]
srt = sorted(ms)
def pct(p):  # nearest rank
    k = max(0, min(len(srt) - 1, -(-len(srt) * p // 100) - 1))
    return srt[int(k)]
print("\t".join([phase, view, ",".join(codes), "%.1f" % ms[0], "%.1f" % pct(50),
                 "%.1f" % pct(95), "%.1f" % srt[-1], runs[-1][2]]))
EOF
        if ! grep -q '^200 ' "$out.times" || grep -qv '^200 ' "$out.times"; then
            {
                echo "phase $phase: GET /api/v1/views/$view?now=$now -> $(cut -d' ' -f1 "$out.times" | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
                head -c 400 "$out.body"
                echo
            } >>"$FAILURES"
        fi
        tail -n 1 "$RESULTS_VIEWS" | awk -F'\t' '{ printf "  %-20s %s p50 %s ms p95 %s ms\n", $2, $3, $5, $6 }' >&2
    done
}

MEM=$TMP/memory.tsv # phase rows vmhwm_kib vmrss_kib db_mib
: >"$MEM"

# ---------------------------------------------------------------- phases

END=${END:-$(($(date +%s) / 10 * 10))}
[ $((END % 10)) = 0 ] || die "END=$END is not a multiple of 10 s"

rows_in() { # START END: rows of the whole workload in that window (system_metrics by arithmetic)
    local start=$1 end=$2 n t
    n=$(((end - start) * 200)) # 2000 samples every 10 s; start and end are multiples of 10
    for t in api_usage error_logs pipeline_status handler_metrics; do
        n=$((n + $("$GEN" --seed "$SEED" --table $t --start "$start" --end "$end" | wc -l)))
    done
    echo $n
}

fit_window() { # TARGET_ROWS ANCHOR before|after: seconds (multiple of 10) holding ~TARGET rows
    local target=$1 anchor=$2 side=$3 w n _
    w=$(awk -v r="$target" -v s=$ROWS_PER_S 'BEGIN { printf "%d", r / s / 10 + 0.5 }')
    w=$((w * 10))
    for _ in 1 2; do # the daily and weekly cycles move the rate by up to 2x; refine twice
        if [ "$side" = before ]; then n=$(rows_in $((anchor - w)) "$anchor"); else
            n=$(rows_in "$anchor" $((anchor + w))); fi
        w=$(awk -v w="$w" -v r="$target" -v n="$n" 'BEGIN { printf "%d", w * r / n / 10 + 0.5 }')
        w=$((w * 10))
    done
    echo $w
}

W_TOTAL=$(fit_window "${PHASE_ROWS[1]}" "$END" before)
START=$((END - W_TOTAL))
W1=$(fit_window "${PHASE_ROWS[0]}" "$START" after)
[ "$W1" -lt "$W_TOTAL" ] || W1=$((W_TOTAL / 10))
PHASE_END=($((START + W1)) "$END")
PHASE_START=("$START" $((START + W1)))

for phase in 1 2; do
    p_start=${PHASE_START[$((phase - 1))]}
    p_end=${PHASE_END[$((phase - 1))]}
    echo "phase $phase: data $(date -u -d "@$p_start" +%FT%TZ) .. $(date -u -d "@$p_end" +%FT%TZ)" >&2
    d=$TMP/phase$phase
    mkdir -p "$d"
    common=(--seed "$SEED" --start "$p_start" --end "$p_end")
    # system_metrics: hosts 0-49 as line protocol, hosts 50-99 as NDJSON (no duplicate series)
    "$GEN" "${common[@]}" --table system_metrics --format lp --hosts 50 \
        --out-dir "$d/system_lp" --batch $LP_BATCH >/dev/null
    "$GEN" "${common[@]}" --table system_metrics --hosts 50 --host-offset 50 \
        --out-dir "$d/system_ndjson" --batch $NDJSON_BATCH >/dev/null
    for t in api_usage error_logs pipeline_status handler_metrics; do
        "$GEN" "${common[@]}" --table $t --out-dir "$d/$t" --batch $NDJSON_BATCH >/dev/null
    done
    send $phase system_metrics lp "$d/system_lp"
    send $phase system_metrics ndjson "$d/system_ndjson"
    for t in api_usage error_logs pipeline_status handler_metrics; do
        send $phase $t ndjson "$d/$t"
    done
    printf '%s\t%s\t%s\t%s\t%s\n' $phase $TOTAL_ROWS "$(mem_kib VmHWM)" "$(mem_kib VmRSS)" \
        "$(db_mib)" >>"$MEM"
    echo "  database holds $TOTAL_ROWS acknowledged rows" >&2
    views $phase "$p_end"
done

# ---------------------------------------------------------------- report

mkdir -p "$BENCH_DIR/results"
REPORT=$BENCH_DIR/results/last-run.md
VERSION=$("$OPSDB" version 2>/dev/null | head -n 1 || true)
"$PY" - "$RESULTS_INGEST" "$RESULTS_VIEWS" "$MEM" "$FAILURES" <<EOF >"$REPORT"
import sys
ingest, views, mem, failures = sys.argv[1:5]
rows = lambda p: [l.rstrip("\n").split("\t") for l in open(p) if l.strip()]
print("# opsdb benchmark")
print()
print("- date: $(date -u +%FT%TZ)")
print("- command: \`$COMMAND\`")
print("- machine: $(uname -m), $(nproc) CPUs, $(uname -sr)")
print("- server: \`$OPSDB\` ${VERSION:+($VERSION)}")
print("- data: bench/gen --seed $SEED, ends $(date -u -d "@$END" +%FT%TZ) (END=$END)")
print()
print("## Ingestion over HTTP ($SENDERS parallel senders)")
print()
print("| phase | table | format | batch | requests | rows (points) | seconds | rows/s | failed requests |")
print("|---|---|---|---|---:|---:|---:|---:|---:|")
totals = {}
for phase, table, fmt, batch, files, n, secs, errs in rows(ingest):
    rate = int(n) / float(secs) if float(secs) > 0 else 0
    print(f"| {phase} | {table} | {fmt} | {batch} | {files} | {int(n):,} | {float(secs):.2f} | {rate:,.0f} | {errs} |")
    t = totals.setdefault(phase, [0, 0, 0.0, 0])
    t[0] += int(files); t[1] += int(n); t[2] += float(secs); t[3] += int(errs)
for phase, (files, n, secs, errs) in totals.items():
    rate = n / secs if secs > 0 else 0
    print(f"| {phase} | **all** | | | {files} | {n:,} | {secs:.2f} | **{rate:,.0f}** | {errs} |")
print()
m = rows(mem)
print("## View latency ($VIEW_RUNS runs each, \`GET /api/v1/views/NAME?now=END\`)")
print()
hdr = "| view |"
sep = "|---|"
for phase, n, *_ in m:
    hdr += f" @{int(n):,} rows: HTTP | first ms | p50 ms | p95 ms |"
    sep += "---|---:|---:|---:|"
print(hdr)
print(sep)
by = {}
for phase, view, codes, first, p50, p95, mx, size in rows(views):
    by.setdefault(view, {})[phase] = (codes, first, p50, p95, mx)
for view, ph in by.items():
    line = f"| {view} |"
    for phase, *_ in m:
        c = ph.get(phase, ("-",) * 5)
        line += " " + " | ".join(c[:4]) + " |"
    print(line)
print()
print("## Server memory and database size")
print()
print("| after phase | rows acknowledged | peak RSS (VmHWM) MiB | RSS MiB | database files MiB |")
print("|---|---:|---:|---:|---:|")
for phase, n, hwm, rss, db in m:
    print(f"| {phase} | {int(n):,} | {int(hwm or 0) / 1024:.1f} | {int(rss or 0) / 1024:.1f} | {db} |")
f = open(failures).read().strip()
if f:
    print()
    print("## Failures (first responses)")
    print()
    print("\`\`\`")
    print(f)
    print("\`\`\`")
EOF
cat "$REPORT"
if [ -s "$FAILURES" ]; then
    echo "run.sh: some requests failed (see Failures above)" >&2
    exit 1
fi
