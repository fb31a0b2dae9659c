#!/usr/bin/env bash
# bench/peers.sh - opsdb next to its peers on the peers' own workload, in one run: the shared
# peer benchmark (../shared/bench-peers: VictoriaMetrics and SQLite with a (series, ts) index)
# and then opsdb, fed the same line-protocol batch files by the same sender (2 parallel curl
# processes, 10,000 lines per request), asked the same three questions.
#
#   bench/peers.sh            # 10M points (H=100 M=20 T=5000), about 5 minutes
#   H=10 T=500 bench/peers.sh # a smoke test
#
# Needs the Debian packages victoria-metrics, sqlite3, libsqlite3-dev (installed if missing).
# Results: bench/results/peers-<date>.md (ignored by git) and stdout.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
PEERS=${PEERS:-$ROOT/../shared/bench-peers}
OPSDB=${OPSDB:-$ROOT/opsdb}
H=${H:-100} M=${M:-20} T=${T:-5000}
# recent data: opsdb refuses rows older than its 30-day retention
START=${START:-$(($(date +%s) / 3600 * 3600 - 2 * 86400))}
WORK=${WORK:-$(mktemp -d /tmp/opsdb-peers.XXXXXX)}
PORT=${PORT:-18499}
QRUNS=5
export H M T START
export BIN=$WORK/bin RAW=$WORK/raw PEERBENCH_DATA=$WORK/data RUNS=1 QRUNS PAR=2

die() { echo "peers.sh: $*" >&2; exit 1; }
[ -x "$PEERS/run.sh" ] || [ -f "$PEERS/run.sh" ] || die "no peer benchmark at $PEERS"
[ -x "$OPSDB" ] || die "no opsdb binary at $OPSDB (run make)"
missing=""
for p in victoria-metrics sqlite3 libsqlite3-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

mkdir -p "$RAW" "$PEERBENCH_DATA/log"
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

echo "== peers (VictoriaMetrics, SQLite series+index with a 64 MiB cache) on H=$H M=$M T=$T" >&2
bash "$PEERS/run.sh" build gen vm sqlite_cache >&2

POINTS=$((H * M * T))
LAST=$((START + (T - 1) * 10))
HOUR_AGO=$((LAST - 3600))
BATCHES=$PEERBENCH_DATA/gen/batches

echo "== opsdb on the same batches" >&2
DB=$WORK/opsdb/x.db
mkdir -p "$WORK/opsdb"
"$OPSDB" serve --db "$DB" --listen "127.0.0.1:$PORT" --no-collect 2>"$WORK/opsdb/server.log" &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -fsS -o /dev/null "127.0.0.1:$PORT/healthz" 2>/dev/null && break; sleep 0.1; done
t0=$(date +%s.%N)
ls "$BATCHES"/lp.* | xargs -P 2 -I{} curl -sS -o /dev/null -w '%{http_code}\n' \
    --data-binary @{} "http://127.0.0.1:$PORT/write?precision=s" >"$WORK/opsdb/codes"
t1=$(date +%s.%N)
bad=$(grep -vc '^204$' "$WORK/opsdb/codes" || true)
[ "$bad" = 0 ] || die "$bad batches were refused (see $WORK/opsdb/codes)"
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
rate=$(awk -v n="$POINTS" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
hwm=$(awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$SERVER_PID/status")

q() { # name sql: median ms of QRUNS runs after one warm-up
    local ts=() i
    curl -fsS -o "$WORK/opsdb/$1.json" --get --data-urlencode "sql=$2" "127.0.0.1:$PORT/api/v1/query"
    for i in $(seq 1 "$QRUNS"); do
        ts+=("$(curl -fsS -o /dev/null -w '%{time_total}' --get --data-urlencode "sql=$2" \
            "127.0.0.1:$PORT/api/v1/query")")
    done
    printf '%s\n' "${ts[@]}" | sort -g | awk '{ a[NR] = $1 * 1000 } END { printf "%.2f", a[int((NR + 1) / 2)] }'
}
metric=system_metrics_cpu_usage
q1=$(q q1 "SELECT ts / 60000 * 60000 AS b, avg(value) FROM system_metrics WHERE host = 'host-042' AND metric = '$metric' GROUP BY b ORDER BY b")
q2=$(q q2 "SELECT host, max(value) AS m FROM system_metrics WHERE metric = '$metric' AND ts > ${HOUR_AGO}000 AND ts <= ${LAST}000 GROUP BY host ORDER BY m DESC LIMIT 10")
q3=$(q q3 "SELECT count(*) AS n FROM system_metrics")
q3_rows=$(sed -E 's/.*"n":([0-9]+).*/\1/' "$WORK/opsdb/q3.json")
q1_rows=$(sed -E 's/.*"row_count":([0-9]+).*/\1/' "$WORK/opsdb/q1.json")
kill "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=
bytes=$(du -cb "$DB"* | tail -1 | cut -f1)
bpp=$(awk -v b="$bytes" -v n="$POINTS" 'BEGIN { printf "%.1f", b / n }')

field() { # file pattern key: the value of key= on the last line of file matching pattern
    grep -h "$2" "$1" 2>/dev/null | tail -1 | sed -nE "s/.*(^| )$3=([^ ]+).*/\\2/p"
}
vm_rate=$(field "$RAW/vm.txt" median_points_per_s median_points_per_s)
vm_bpp=$(field "$RAW/vm.txt" bytes_per_point= bytes_per_point)
vm_rss=$(field "$RAW/vm.txt" vmhwm_kib vmhwm_kib | awk '{ printf "%.0f", $1 / 1024 }')
vm_q1=$(field "$RAW/vm.txt" Q1_ms= Q1_ms) vm_q2=$(field "$RAW/vm.txt" Q1_ms= Q2_ms)
vm_q3=$(field "$RAW/vm.txt" Q1_ms= Q3_ms)
sq_rate=$(field "$RAW/sqlite.txt" median_points_per_s median_points_per_s)
sq_bpp=$(field "$RAW/sqlite.txt" median_points_per_s bytes_per_point)
sq_rss=$(field "$RAW/sqlite.txt" maxrss_kib maxrss_kib | awk '{ printf "%.0f", $1 / 1024 }')
sq_q1=$(field "$RAW/sqlite_queries.txt" "analyzed Q1_ms" Q1_ms)
sq_q2=$(field "$RAW/sqlite_queries.txt" "analyzed Q2_ms" Q2_ms)
sq_q3=$(field "$RAW/sqlite_queries.txt" "analyzed Q3_ms" Q3_ms)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

mkdir -p "$BENCH_DIR/results"
out=$BENCH_DIR/results/peers-$(date -u +%Y%m%dT%H%M%SZ).md
{
    echo "# opsdb and its peers, one run ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, $(uname -m))"
    echo
    echo "Workload: ../shared/bench-peers gen, H=$H M=$M T=$T = $POINTS points, START=$START;"
    echo "line protocol in batches of 10,000 lines, 2 parallel curl senders for every HTTP store."
    echo
    echo "| store | ingest points/s | ratio to opsdb | bytes/point | peak RSS MiB | Q1 ms | Q2 ms | Q3 ms |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    echo "| opsdb \`/write\` (group commit, fsync per commit) | $rate | 1.00 | $bpp | $hwm | $q1 | $q2 | $q3 |"
    echo "| VictoriaMetrics \`/write\` | $vm_rate | $(ratio "$vm_rate" "$rate") | $vm_bpp | $vm_rss | $vm_q1 | $vm_q2 | $vm_q3 |"
    echo "| SQLite series+index, 64 MiB cache, C loader | $sq_rate | $(ratio "$sq_rate" "$rate") | $sq_bpp | $sq_rss | $sq_q1 | $sq_q2 | $sq_q3 |"
    echo
    echo "Q1: one host's cpu per minute over the whole range (opsdb: $q1_rows buckets); Q2: top 10"
    echo "hosts by max cpu in the last hour; Q3: count of all points (opsdb: $q3_rows). opsdb's"
    echo "queries: median of $QRUNS after a warm-up, through HTTP /api/v1/query."
    echo
    echo "Raw peer results:"
    echo '```'
    cat "$RAW"/vm.txt "$RAW"/sqlite.txt "$RAW"/sqlite_queries.txt 2>/dev/null
    echo '```'
} | tee "$out"
echo "written to $out" >&2
