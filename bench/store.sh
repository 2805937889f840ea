#!/bin/bash
# bench/store.sh [SIZE_MIB] [REPS]: the store API beside dd on the same disk.
# For each data kind: write SIZE through the store (mirrored buffer, fsync
# before every acknowledgment) and dd the same size with conv=fsync; then read
# both back with the page cache dropped (when the kernel lets us). Runs
# alternate, medians are reported, and the ratio comes last.
set -eu
cd "$(dirname "$0")/.."
SIZE=${1:-2048}
REPS=${2:-3}
BIN=build/store_bench
[ -x "$BIN" ] || { echo "build first: make build"; exit 1; }
WORK=$(mktemp -d "${BENCH_DIR:-$PWD}/.bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

drop() { sync; if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then echo cold; else echo warm; fi; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.1f", b / s / 1e6}'; }

head -c $((SIZE * 1048576)) /dev/urandom > "$WORK/src"
bytes=$((SIZE * 1048576))
printf '%-7s %-6s %10s %10s %7s  %s\n' kind phase plenum_MB/s dd_MB/s ratio cache
for kind in random text dup90; do
    pw=(); pr=(); dw=(); dr=(); cache=warm
    for rep in $(seq "$REPS"); do
        rm -rf "$WORK/store" "$WORK/dd"
        pw+=("$($BIN "$WORK/store" "$SIZE" "$kind" write | awk '{print $3}')")
        cache=$(drop)
        pr+=("$($BIN "$WORK/store" "$SIZE" "$kind" read | awk '/ read /{print $3}')")
        s=$( { /usr/bin/time -f %e dd if="$WORK/src" of="$WORK/dd" bs=4M conv=fsync 2>&1 >/dev/null; } | tail -1)
        dw+=("$(mbps $bytes "$s")")
        drop >/dev/null
        s=$( { /usr/bin/time -f %e dd if="$WORK/dd" of=/dev/null bs=4M 2>&1 >/dev/null; } | tail -1)
        dr+=("$(mbps $bytes "$s")")
    done
    for ph in write read; do
        if [ $ph = write ]; then p=$(printf '%s\n' "${pw[@]}" | median); d=$(printf '%s\n' "${dw[@]}" | median)
        else p=$(printf '%s\n' "${pr[@]}" | median); d=$(printf '%s\n' "${dr[@]}" | median); fi
        printf '%-7s %-6s %10s %10s %7s  %s\n' "$kind" "$ph" "$p" "$d" \
            "$(awk -v a="$p" -v b="$d" 'BEGIN {printf "%.2fx", a / b}')" "$cache"
    done
done
