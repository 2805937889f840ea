#!/bin/bash
# The whole truth: unit tests, the same under ASan+UBSan, integration tests with
# real clients against a real server. Ends with one line "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
RESULTS=$(mktemp -d)
trap 'rm -rf --one-file-system "$RESULTS"' EXIT
UNITS="base data meta store snap version ec events batch kv vcache wb"

run_units() { # $1 build dir, $2 label
    for t in $UNITS; do
        PLENUM_TEST_BIG=${BIG:-0} CMOCKA_MESSAGE_OUTPUT=TAP timeout 900 "$1/test_$t" > "$RESULTS/$2-$t.tap" 2>"$RESULTS/$2-$t.err"
        rc=$?
        ok=$(grep -c '^ok ' "$RESULTS/$2-$t.tap")
        bad=$(grep -c '^not ok ' "$RESULTS/$2-$t.tap")
        if [ $rc -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi  # crashed before reporting
        echo "$ok $bad" >> "$RESULTS/counts"
        printf '  %-6s %-8s %3d passed, %d failed\n' "$2" "$t" "$ok" "$bad"
        if [ "$bad" -ne 0 ]; then
            grep -B2 -A8 '^not ok' "$RESULTS/$2-$t.tap" | head -40
            tail -30 "$RESULTS/$2-$t.err"
        fi
    done
}

junit_counts() { # pytest's junit file -> "passed failed" into the counts
    /usr/bin/python3 - "$1" >> "$RESULTS/counts" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    r = ET.parse(sys.argv[1]).getroot()
    s = r if r.tag == "testsuite" else r.find("testsuite")
    t, f, e, sk = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    print(t - f - e - sk, f + e)
except Exception:
    print(0, 1)
PY
}

# the integration tests remove each test's data as they go; the largest test
# stores about 5 GiB at a time
echo "== free disk: $(df -h --output=avail "${TMPDIR:-/tmp}" | tail -1 | tr -d ' ') in ${TMPDIR:-/tmp}"
echo "== unit tests"
BIG=1 run_units build unit

echo "== unit tests under ASan+UBSan"
if [ ! -f build-asan/build.ninja ]; then
    meson setup build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
if ninja -C build-asan >/dev/null; then
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        run_units build-asan asan
else
    echo "ASan build failed"; echo "0 1" >> "$RESULTS/counts"
fi

echo "== fuzz targets (corpus replay + ${FUZZ_SECONDS:-10}s each)"
if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang meson setup build-fuzz --buildtype=debugoptimized -Dfuzz=true -Dtests=false \
        -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
if ninja -C build-fuzz >/dev/null; then
    for f in tests/fuzz/fuzz_*.c; do
        t=$(basename "$f" .c); name=${t#fuzz_}
        work="$RESULTS/corpus-$name"; mkdir -p "$work"
        cp tests/fuzz/corpus/"$name"/* "$work"/ 2>/dev/null
        if build-fuzz/"$t" -max_total_time="${FUZZ_SECONDS:-10}" -timeout=10 -rss_limit_mb=2048 \
            "$work" > "$RESULTS/$t.log" 2>&1; then
            echo "1 0" >> "$RESULTS/counts"; printf '  fuzz   %-8s ok (%s)\n' "$name" \
                "$(grep -o 'Done [0-9]* runs' "$RESULTS/$t.log")"
        else
            echo "0 1" >> "$RESULTS/counts"; echo "  fuzz   $name FAILED"; tail -30 "$RESULTS/$t.log"
        fi
    done
else
    echo "fuzz build failed"; echo "0 1" >> "$RESULTS/counts"
fi

echo "== lint (layers, banned calls, clang-tidy)"
scripts/lint.sh > "$RESULTS/lint.out" 2>&1
cat "$RESULTS/lint.out"
echo "$(grep -c '^lint .* ok$' "$RESULTS/lint.out") $(grep -c '^lint .* FAILED$' "$RESULTS/lint.out")" >> "$RESULTS/counts"

echo "== integration tests (real server, real clients)"
PLENUM_BIN="$ROOT/build/plenum" PLENUM_BUILD="$ROOT/build" /usr/bin/python3 -m pytest -q \
    -p no:cacheprovider --basetemp="$RESULTS/it" --junitxml="$RESULTS/pytest.xml" tests/integration 2>&1 | tail -25
junit_counts "$RESULTS/pytest.xml"

echo "== S3, NBD, protection, NFS, FUSE, Kafka, event and RESP tests against the ASan+UBSan server (leaks fail the stop)"
PLENUM_BIN="$ROOT/build-asan/plenum" PLENUM_BUILD="$ROOT/build" \
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider --basetemp="$RESULTS/it-asan" \
    --junitxml="$RESULTS/pytest-asan.xml" \
    tests/integration/test_s3.py tests/integration/test_s3_clients.py \
    tests/integration/test_nbd.py tests/integration/test_protection.py \
    tests/integration/test_nfs.py tests/integration/test_fuse.py tests/integration/test_kafka.py \
    tests/integration/test_events.py tests/integration/test_resp.py 2>&1 | tail -5
junit_counts "$RESULTS/pytest-asan.xml"

read -r P F <<< "$(awk '{p+=$1; f+=$2} END {print p+0, f+0}' "$RESULTS/counts")"
echo "$P passed, $F failed"
[ "$F" -eq 0 ]
