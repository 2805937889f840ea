#!/bin/bash
# bench/kafka.sh [COUNT_100B] [COUNT_1K]: librdkafka's rdkafka_performance
# producing 100 B and 1 KiB messages (acks=-1) to one partition of Plenum's
# Kafka head and of librdkafka's in-memory mock cluster, same run; then
# consuming the 1 KiB messages back from Plenum (page cache dropped first).
# Reports Plenum's CPU seconds per GB and the disk's limit for two durable
# copies (bench/disk.sh). rdkafka_performance is built from the source
# librdkafka-dev ships, against the public library, with a small shim for the
# two internal headers it includes (bench/kafka/rd.h). The producer runs with
# librdkafka's default linger.ms (5): the tool's own default (1000) holds the
# last partial batch a second, a tail that was half of the mock's run time.
# Ratios last.
set -eu
cd "$(dirname "$0")/.."
. bench/disk.sh
N100=${1:-4000000}
N1K=${2:-2000000}
BIN=$PWD/build/plenum
SRC=/usr/share/doc/librdkafka-dev/examples/rdkafka_performance.c
[ -x "$BIN" ] || { echo "build first: make build"; exit 1; }
[ -f "$SRC" ] || { echo "needs librdkafka-dev (scripts/deps.sh installs it)"; exit 1; }
WORK=$(mktemp -d "${BENCH_DIR:-$PWD}/.bench.XXXXXX")
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/src" "$WORK/ex"
cp bench/kafka/rd.h "$WORK/src/rd.h"
echo '#include "rd.h"' > "$WORK/src/rdtime.h"
cp "$SRC" "$WORK/ex/"
gcc -O2 -w -o "$WORK/perf" "$WORK/ex/rdkafka_performance.c" -I"$WORK/src" \
    -I/usr/include/librdkafka -lrdkafka -lpthread
gcc -O2 -o "$WORK/mock" bench/kafka/mock_cluster.c -lrdkafka
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, clock ticks
HZ=$(getconf CLK_TCK)
rate() { sed -n 's/.* \([0-9]*\) msgs\/s.*/\1/p' | tail -1; }
mbs() { sed -n 's/.*(\([0-9.]*\) MB\/s).*/\1/p' | tail -1; }

produce() { # bootstrap size count -> msgs/s; the producer's CPU seconds into $WORK/pcpu
    local t
    TIMEFORMAT='%U %S'
    t=$( { time "$WORK/perf" -P -t bench -p 0 -b "$1" -s "$2" -c "$3" -a -1 -X linger.ms=5 \
        > "$WORK/pout" 2>&1; } 2>&1 )
    awk -v t="$t" 'BEGIN {split(t, c, " "); print c[1] + c[2]}' > "$WORK/pcpu"
    rate < "$WORK/pout"
}

# the disk first, while nothing else writes back
disk_limits "$WORK" 1024

# the mock cluster
"$WORK/mock" > "$WORK/mock.addr" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$WORK/mock.addr" ] && break; sleep 0.1; done
MOCK=$(cat "$WORK/mock.addr")
M100=$(produce "$MOCK" 100 "$N100")
MC100=$(cat "$WORK/pcpu")
M1K=$(produce "$MOCK" 1024 "$N1K")
MC1K=$(cat "$WORK/pcpu")
printf 'mock     produce 100 B %9s msg/s   1 KiB %9s msg/s\n' "$M100" "$M1K"

# plenum
"$BIN" server --data "$WORK/pl" --admin 127.0.0.1:19401 --kafka 127.0.0.1:19492 --s3 off \
    --nfs off --mountd off --portmap off --nbd off > "$WORK/pl.log" 2>&1 &
SPID=$!
PIDS+=($SPID)
for _ in $(seq 100); do grep -q "^  kafka " "$WORK/pl.log" && break; sleep 0.1; done
"$BIN" --data "$WORK/pl" topic create bench >/dev/null
c0=$(cpu $SPID)
P100=$(produce 127.0.0.1:19492 100 "$N100")
c1=$(cpu $SPID)
P1K=$(produce 127.0.0.1:19492 1024 "$N1K")
c2=$(cpu $SPID)
drop
CONS=$("$WORK/perf" -C -t bench -p 0 -b 127.0.0.1:19492 -o "$N100" -c "$N1K" -e \
    -X fetch.max.bytes=52428800 -X max.partition.fetch.bytes=10485760 2>&1 | mbs)
c3=$(cpu $SPID)
cpg() { awk -v t="$1" -v hz="$HZ" -v b="$2" 'BEGIN {printf "%.2f", t / hz / (b / 1e9)}'; }
disk_print
printf 'plenum   produce 100 B %9s msg/s   1 KiB %9s msg/s   consume 1 KiB %8s MB/s\n' \
    "$P100" "$P1K" "$CONS"
echo "plenum CPU s/GB: produce 100 B $(cpg $((c1 - c0)) $((N100 * 100))), 1 KiB" \
    "$(cpg $((c2 - c1)) $((N1K * 1024))), consume 1 KiB $(cpg $((c3 - c2)) $((N1K * 1024)))"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "plenum / mock cluster produce (acks=-1, durable vs in memory): 100 B" \
    "$(ratio "$P100" "$M100")x, 1 KiB $(ratio "$P1K" "$M1K")x; consume 1 KiB" \
    "$(ratio "$CONS" 1000)x of 1 GB/s"

# What two cores allow: the producer's own CPU per GB at the mock's rate,
# plus SHA-256 of every byte, which a broker that deduplicates must do before
# it acknowledges (DESIGN.md §3; one core's rate from openssl), with nothing
# else (no chunking, copies, syncs or commits) on the broker's side.
SHA=$(openssl speed -evp sha256 -bytes 65536 -seconds 1 2>/dev/null |
    awk '$1 == "sha256" {v = $NF; sub(/k$/, "", v); printf "%.3f", 1e9 / (v * 1000)}')
awk -v c="$(nproc)" -v sha="$SHA" -v m1="$M100" -v m2="$M1K" -v p1="$MC100" -v p2="$MC1K" \
    -v n1="$N100" -v n2="$N1K" 'BEGIN {
    g1 = n1 * 100 / 1e9; g2 = n2 * 1024 / 1e9; q1 = p1 / g1; q2 = p2 / g2
    l1 = c / (q1 + sha) * 1e9 / 100; l2 = c / (q2 + sha) * 1e9 / 1024
    printf "producer CPU s/GB at the mock: 100 B %.2f, 1 KiB %.2f; SHA-256 on one core here: %.3f s/GB\n", q1, q2, sha
    printf "ceiling on %d cores, producer + SHA-256 only: 100 B %.0f msg/s (%.2fx the mock), 1 KiB %.0f msg/s (%.2fx the mock)\n", c, l1, l1 / m1, l2, l2 / m2}'

