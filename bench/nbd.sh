#!/bin/bash
# bench/nbd.sh [SIZE_MIB]: nbdcopy SIZE into and out of a volume, Plenum's NBD
# head vs `nbdkit file` serving a plain file on the same disk, same client,
# same run. Ratios last (>1: Plenum faster).
set -eu
cd "$(dirname "$0")/.."
SIZE=${1:-1024}
BIN=$PWD/build/plenum
[ -x "$BIN" ] || { echo "build first: make build"; exit 1; }
for t in nbdcopy nbdkit; do
    command -v $t >/dev/null || { echo "needs $t (apt-get install libnbd-bin nbdkit)"; exit 1; }
done
WORK=$(mktemp -d "${BENCH_DIR:-$PWD}/.bench.XXXXXX")
PIDS=()
trap 'kill ${PIDS[@]} 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
mbps() { awk -v b="$1" -v a="$2" -v c="$3" 'BEGIN {printf "%.1f", b / (c - a) / 1e6}'; }
bytes=$((SIZE * 1048576))
head -c "$bytes" /dev/urandom > "$WORK/src"

# plenum
pp=$(port); ap=$(port)
"$BIN" server --data "$WORK/pl" --admin "127.0.0.1:$ap" --nbd "127.0.0.1:$pp" --s3 off --nfs off \
    --mountd off --kafka off --pg off --resp off >"$WORK/pl.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do grep -q "nbd " "$WORK/pl.log" && break; sleep 0.1; done
"$BIN" --data "$WORK/pl" volume create bench --size "${SIZE}M" >/dev/null
sync
t0=$(now); nbdcopy "$WORK/src" "nbd://127.0.0.1:$pp/bench"; t1=$(now)
pw=$(mbps "$bytes" "$t0" "$t1")
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(now); nbdcopy "nbd://127.0.0.1:$pp/bench" "$WORK/out"; t1=$(now)
pr=$(mbps "$bytes" "$t0" "$t1")
cmp -s "$WORK/src" "$WORK/out" || { echo "plenum: data differs"; exit 1; }
rm -f "$WORK/out"

# nbdkit file
kp=$(port)
truncate -s "$bytes" "$WORK/kit.img"
nbdkit -f -p "$kp" -i 127.0.0.1 file "$WORK/kit.img" &
PIDS+=($!)
sleep 0.5
sync
t0=$(now); nbdcopy "$WORK/src" "nbd://127.0.0.1:$kp"; t1=$(now)
kw=$(mbps "$bytes" "$t0" "$t1")
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(now); nbdcopy "nbd://127.0.0.1:$kp" "$WORK/out"; t1=$(now)
kr=$(mbps "$bytes" "$t0" "$t1")
cmp -s "$WORK/src" "$WORK/out" || { echo "nbdkit: data differs"; exit 1; }

printf '%-28s %12s %12s %7s\n' test plenum_MB/s nbdkit_MB/s ratio
printf '%-28s %12s %12s %6sx\n' "nbdcopy write ${SIZE} MiB" "$pw" "$kw" "$(awk -v a="$pw" -v b="$kw" 'BEGIN{printf "%.2f", a/b}')"
printf '%-28s %12s %12s %6sx\n' "nbdcopy read ${SIZE} MiB" "$pr" "$kr" "$(awk -v a="$pr" -v b="$kr" 'BEGIN{printf "%.2f", a/b}')"
