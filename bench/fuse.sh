#!/bin/bash
# bench/fuse.sh [SIZE_MIB]: dd SIZE into and out of a `plenum mount` and of a
# plain directory on the same disk, same run. libfuse's passthrough example is
# not ours to ship, so the peer is the raw directory: the ratio says what the
# FUSE head and the store cost on top of the disk (>1: Plenum faster).
# Writes end with fsync (conv=fsync); caches are dropped before each read, and
# Plenum's destage is settled (unmount, plenum flush, mount) before its read.
# Then fio writes 4 KiB blocks at random offsets of a 256 MiB file and fsyncs
# (a database's or a build's small writes).
set -eu
cd "$(dirname "$0")/.."
SIZE=${1:-1024}
BIN=$PWD/build/plenum
[ -x "$BIN" ] || { echo "build first: make build"; exit 1; }
command -v fusermount3 >/dev/null || { echo "needs fuse3 (scripts/deps.sh installs it)"; exit 1; }
command -v fio >/dev/null || { echo "needs fio (scripts/deps.sh installs it)"; exit 1; }
WORK=$(mktemp -d "${BENCH_DIR:-$PWD}/.bench.XXXXXX")
MPID=
cleanup() {
    [ -n "$MPID" ] && kill "$MPID" 2>/dev/null && wait "$MPID" 2>/dev/null || true
    mountpoint -q "$WORK/mnt" && fusermount3 -uz "$WORK/mnt" || true
    rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s.%N; }
mbps() { awk -v b="$1" -v a="$2" -v c="$3" 'BEGIN {printf "%.1f", b / (c - a) / 1e6}'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
bytes=$((SIZE * 1048576))
head -c "$bytes" /dev/urandom > "$WORK/src"
declare -A W R X
RND_MB=256

dd_write() { # name dir
    drop
    t0=$(now); dd if="$WORK/src" of="$2/f.bin" bs=1M conv=fsync status=none; t1=$(now)
    W[$1]=$(mbps "$bytes" "$t0" "$t1")
}
dd_read() { # name dir
    drop
    t0=$(now); dd if="$2/f.bin" of=/dev/null bs=1M status=none; t1=$(now)
    R[$1]=$(mbps "$bytes" "$t0" "$t1")
    cmp -s "$WORK/src" "$2/f.bin" || { echo "$1: data differs"; exit 1; }
    printf '%-8s dd write %8s MB/s   dd read %8s MB/s\n' "$1" "${W[$1]}" "${R[$1]}"
}
rnd_write() { # name dir: fio 4 KiB random writes, fsync at the end
    local t0 t1
    drop
    t0=$(now)
    fio --name=r --filename="$2/rnd.bin" --rw=randwrite --bs=4k --size="${RND_MB}M" \
        --end_fsync=1 --output-format=terse >/dev/null
    t1=$(now)
    X[$1]=$(mbps $((RND_MB * 1048576)) "$t0" "$t1")
    printf '%-8s fio randwrite 4k %s MiB + fsync %8s MB/s\n' "$1" "$RND_MB" "${X[$1]}"
}
mount_start() {
    "$BIN" --data "$WORK/pl" mount bench "$WORK/mnt" >"$WORK/mount.log" 2>&1 &
    MPID=$!
    for _ in $(seq 100); do mountpoint -q "$WORK/mnt" && break; sleep 0.1; done
    mountpoint -q "$WORK/mnt" || { cat "$WORK/mount.log"; exit 1; }
}
mount_stop() {
    kill "$MPID"; wait "$MPID" 2>/dev/null || true; MPID=
}

"$BIN" --data "$WORK/pl" mb pl://bench >/dev/null
mkdir -p "$WORK/mnt" "$WORK/raw"
dd_write raw "$WORK/raw"
dd_read raw "$WORK/raw"
mount_start
dd_write plenum "$WORK/mnt"
# the read measures the read path, not a destage running beside it
mount_stop
"$BIN" --data "$WORK/pl" flush >/dev/null
mount_start
dd_read plenum "$WORK/mnt"
rnd_write plenum "$WORK/mnt"
mount_stop
rnd_write raw "$WORK/raw"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "plenum mount / raw directory: write $(ratio "${W[plenum]}" "${W[raw]}")x," \
    "read $(ratio "${R[plenum]}" "${R[raw]}")x, random 4 KiB writes" \
    "$(ratio "${X[plenum]}" "${X[raw]}")x (>1: Plenum faster)"
