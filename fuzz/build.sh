#!/bin/bash
# libFuzzer targets for the parsers of untrusted bytes (STYLE 22).
#
#   fuzz/build.sh                      build every target into build/fuzz/
#   fuzz/build.sh run [SECONDS] [NAME...]
#                                      build, then fuzz each target (or the NAMEs: lineproto,
#                                      json, csv, rfc3339, gunzip, sketch, chunk, colpack,
#                                      minutes, promtext, remote_write, accesslog, applog,
#                                      syslog, graphite, cron, rules, config, query) for
#                                      SECONDS (default 10);
#                                      exits non-zero when any target crashed
#
# Targets are built with clang (CLANG=...) and -fsanitize=fuzzer,address,undefined against the
# src/ sources (all but src/main.c, through a static archive so only what a target needs is
# linked). Each run starts from the seeds in fuzz/corpus/NAME/ and keeps what it finds in
# build/fuzz/corpus/NAME/ (the seeds stay as committed); a crashing input is written to
# build/fuzz/crashes/NAME/ — copy it to fuzz/crashes/ to keep it. Reproduce with
# build/fuzz/fuzz_NAME FILE. OPSDB_FUZZ_STRICT=1 also checks invariants known bugs break.
set -eu
cd "$(dirname "$0")/.."

CLANG=${CLANG:-clang}
OUT=build/fuzz
PKGS="sqlite3 libmicrohttpd jansson yaml-0.1 zlib libzstd libsodium libcurl libprotobuf-c snappy"
TARGETS="lineproto json csv rfc3339 gunzip sketch chunk colpack minutes promtext remote_write accesslog applog syslog graphite cron rules config query"
# the remote-write messages, compiled from src/*/*.proto with protoc-c (as the Makefile does)
GEN=$OUT/gen
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
# shellcheck disable=SC2086 # PKGS is a list of words
CFLAGS="-std=c11 -D_GNU_SOURCE -Isrc -I$GEN -g -O1 -fno-omit-frame-pointer -Wall -Wextra $(pkg-config --cflags $PKGS)"
# shellcheck disable=SC2086
LIBS="$(pkg-config --libs $PKGS) -lm -lpthread"

# Rebuilds only what changed: objects newer than their source (or any header), the archive when
# an object changed, a target when its source, fuzz_common.h or the archive is newer.
build() {
    mkdir -p "$OUT/obj" "$GEN"
    objs=""
    changed=""
    for proto in src/*/*.proto; do
        gen="$GEN/$(echo "$proto" | sed 's|^src/||; s|\.proto$|.pb-c.c|')"
        if [ ! -f "$gen" ] || [ "$proto" -nt "$gen" ]; then
            protoc-c -Isrc --c_out="$GEN" "$proto"
        fi
    done
    for src in src/*/*.c "$GEN"/*/*.pb-c.c; do
        obj="$OUT/obj/$(echo "$src" | tr / _ | sed 's/\.c$/.o/')"
        if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find src -name '*.h' -newer "$obj")" ]; then
            echo "cc $src"
            # shellcheck disable=SC2086
            $CLANG $CFLAGS $SAN -fsanitize=fuzzer-no-link -c -o "$obj" "$src"
            changed=1
        fi
        objs="$objs $obj"
    done
    # objects of sources that no longer exist must not stay in the archive
    for obj in "$OUT"/obj/*.o; do
        case " $objs " in *" $obj "*) ;; *) rm -f "$obj"; changed=1 ;; esac
    done
    if [ -n "$changed" ] || [ ! -f "$OUT/libopsdb.a" ]; then
        rm -f "$OUT/libopsdb.a.tmp"
        # shellcheck disable=SC2086
        ar rcs "$OUT/libopsdb.a.tmp" $objs
        mv "$OUT/libopsdb.a.tmp" "$OUT/libopsdb.a"
    fi
    for t in $TARGETS; do
        bin="$OUT/fuzz_$t"
        if [ -f "$bin" ] && [ "$bin" -nt "fuzz/fuzz_$t.c" ] && [ "$bin" -nt fuzz/fuzz_common.h ] &&
            [ "$bin" -nt "$OUT/libopsdb.a" ]; then
            continue
        fi
        echo "link fuzz_$t"
        # shellcheck disable=SC2086
        $CLANG $CFLAGS -Werror $SAN -fsanitize=fuzzer -o "$bin.tmp" "fuzz/fuzz_$t.c" \
            "$OUT/libopsdb.a" $LIBS
        mv "$bin.tmp" "$bin"
    done
}

run() {
    seconds=${1:-10}
    [ $# -gt 0 ] && shift
    names=${*:-$TARGETS}
    failed=""
    export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
    for t in $names; do
        mkdir -p "$OUT/corpus/$t" "$OUT/crashes/$t"
        dict=""
        [ -f "fuzz/$t.dict" ] && dict="-dict=fuzz/$t.dict"
        echo "== fuzz_$t for ${seconds}s"
        # shellcheck disable=SC2086
        if "$OUT/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
            -max_len=4096 -print_final_stats=1 $dict -artifact_prefix="$OUT/crashes/$t/" \
            "$OUT/corpus/$t" "fuzz/corpus/$t" >"$OUT/fuzz_$t.log" 2>&1; then
            grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|^Done' "$OUT/fuzz_$t.log" || true
        else
            echo "fuzz_$t FAILED (log: $OUT/fuzz_$t.log; input: $OUT/crashes/$t/)"
            grep -E 'ERROR|runtime error|invariant|SUMMARY' "$OUT/fuzz_$t.log" | head -5
            failed="$failed $t"
        fi
    done
    if [ -n "$failed" ]; then
        echo "fuzz: crashed:$failed"
        return 1
    fi
    echo "fuzz: no crashes"
}

case "${1:-build}" in
build) build ;;
run)
    shift
    build
    run "$@"
    ;;
*)
    echo "usage: fuzz/build.sh [build | run [SECONDS] [NAME...]]" >&2
    exit 2
    ;;
esac
