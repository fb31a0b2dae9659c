#!/bin/sh
# Runs every test against the sanitizer build and ends with one line "N passed, N failed".
# usage: scripts/run-tests.sh BUILD_DIR UNIT_TEST_BINARIES...
# Unit tests are cmocka programs; end-to-end tests are pytest files in tests/e2e that start the
# real binary (OPSDB_BIN) on free loopback ports.
set -u
build=$1
shift
cd "$(dirname "$0")/.."
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export OPSDB_BIN="${OPSDB_BIN:-$PWD/$build/opsdb}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

unit_pass=0
unit_fail=0
for t in "$@"; do
    name=$(basename "$t")
    if "$t" >"$out/$name.log" 2>&1; then
        status=ok
    else
        status=FAILED
    fi
    passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$out/$name.log" | tail -n 1)
    failed=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$out/$name.log" | tail -n 1)
    passed=${passed:-0}
    failed=${failed:-0}
    if [ "$status" = FAILED ] && [ "$failed" -eq 0 ]; then
        failed=1 # crashed or sanitizer report before cmocka's summary
    fi
    [ "$status" = FAILED ] && cat "$out/$name.log"
    echo "unit $name: $passed passed, $failed failed"
    unit_pass=$((unit_pass + passed))
    unit_fail=$((unit_fail + failed))
done

/usr/bin/python3 -m pytest -q -p no:cacheprovider --junitxml="$out/e2e.xml" tests/e2e ${PYTEST_ARGS:-} 2>&1
e2e=$(/usr/bin/python3 - "$out/e2e.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("0 1 0"); sys.exit()
s = root if root.tag == "testsuite" else root.find("testsuite")
tests, fails, errs, skips = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
print(tests - fails - errs - skips, fails + errs, skips)
PY
)
set -- $e2e
total_pass=$((unit_pass + $1))
total_fail=$((unit_fail + $2))
echo "unit: $unit_pass passed, $unit_fail failed; e2e: $1 passed, $2 failed, $3 skipped"
echo "$total_pass passed, $total_fail failed, $3 skipped"
[ "$total_fail" -eq 0 ] && [ "$total_pass" -gt 0 ]
