#!/bin/bash
# bench/reduce.sh: data reduction on real software releases, side by side.
#
# Dataset: successive releases of large npm packages nobody here wrote
# (typescript, next), fetched with `npm pack` and unpacked to plain .tar
# files (cached in $BENCH_CACHE, default bench/.cache/npm), at least 1 GiB.
# Each tool ingests the same directory in the same run:
#   plenum (similarity off, then on): `plenum cp -r` into a server on a fresh
#   data directory, then `plenum flush`. Writes are acknowledged from the
#   mirrored buffer and compression and deltas happen at destage (in the
#   background while cp runs), so the ingest time runs until the flush
#   returns with everything reduced on stripes; the rate at which writes were
#   acknowledged is printed too.
#   borg 1.2 (zstd,3, default chunker), restic 0.14 (default compression)
#   zstd -3 of the concatenated tars (compression alone, no dedup)
# For each: bytes kept, reduction ratio (logical / kept), ingest MB/s.
# Plenum's "kept" is its stored bytes (one copy, after dedup, compression and
# deltas), the number borg's and restic's repositories are comparable to;
# protection (the mirrored buffer, then K+M stripes) comes on top. Ratios last.
set -eu
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/build/plenum
[ -x "$BIN" ] || { echo "build first: make build"; exit 1; }
for t in npm borg restic zstd; do
    command -v $t >/dev/null || { echo "needs $t (scripts/deps.sh installs it)"; exit 1; }
done
CACHE=${BENCH_CACHE:-$ROOT/bench/.cache/npm}
WORK=$(mktemp -d "${BENCH_DIR:-$ROOT}/.bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$CACHE"

PKGS="typescript@5.0.2 typescript@5.0.3 typescript@5.0.4 typescript@5.1.3 typescript@5.1.5
typescript@5.1.6 typescript@5.2.2 typescript@5.3.2 typescript@5.3.3 typescript@5.4.2
typescript@5.4.3 typescript@5.4.4 typescript@5.4.5 typescript@5.5.2 typescript@5.5.3
typescript@5.5.4 next@14.0.0 next@14.0.1 next@14.0.2 next@14.0.3 next@14.0.4 next@14.1.0
next@14.1.1 next@14.1.3"
n=0
for p in $PKGS; do
    n=$((n + 1))
    tar="$CACHE/${p/@/-}.tar"
    [ -s "$tar" ] && continue
    echo "fetching $p ($n)" >&2
    (cd "$WORK" && npm pack --silent "$p" >/dev/null 2>&1)
    gunzip -c "$WORK"/*.tgz > "$tar.tmp" && mv "$tar.tmp" "$tar"
    rm -f "$WORK"/*.tgz
done
DATA=$CACHE
logical=$(du -sb --apparent-size "$DATA" | cut -f1)
echo "dataset: $(ls "$DATA" | wc -l) tar files, $((logical / 1048576)) MiB"

now() { date +%s.%N; }
rate() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.1f", b / s / 1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
declare -A KEPT SPEED ACK
sync

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
run_plenum() { # name similarity
    rm -rf "$WORK/pl"
    local t0 t1 ap pid
    ap=$(port)
    printf '[store]\nsimilarity = %s\n' "$2" >"$WORK/plenum.ini"
    # a server, as deployed: its background thread destages while cp writes
    "$BIN" server --config "$WORK/plenum.ini" --data "$WORK/pl" --admin "127.0.0.1:$ap" \
        --s3 off --nbd off >"$WORK/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do [ -s "$WORK/pl/server.json" ] && break; sleep 0.1; done
    "$BIN" --data "$WORK/pl" mb pl://bench >/dev/null
    t0=$(now)
    "$BIN" --data "$WORK/pl" cp -r "$DATA" pl://bench/ >/dev/null 2>&1
    ACK[$1]=$(rate "$logical" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN{print b-a}')")
    "$BIN" --data "$WORK/pl" flush >/dev/null 2>&1
    t1=$(now)
    KEPT[$1]=$("$BIN" --data "$WORK/pl" stats --json | python3 -c \
        'import json,sys; print(json.load(sys.stdin)["stored_bytes"])')
    SPEED[$1]=$(rate "$logical" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")
    if [ "$2" = on ]; then
        "$BIN" --data "$WORK/pl" stats | sed -n '/dedup ratio/,/reduction/p' | sed 's/^/  /'
    fi
    kill "$pid"
    wait "$pid" || true
}

run_plenum plenum-nosim off
run_plenum plenum on

export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
borg init -e none "$WORK/borg" >/dev/null 2>&1
t0=$(now)
borg create --compression zstd,3 "$WORK/borg::a" "$DATA" >/dev/null 2>&1
t1=$(now)
KEPT[borg]=$(du -sb "$WORK/borg" | cut -f1)
SPEED[borg]=$(rate "$logical" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")

export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$WORK/restic"
restic init -q >/dev/null
t0=$(now)
restic backup -q "$DATA" >/dev/null
t1=$(now)
KEPT[restic]=$(du -sb "$WORK/restic" | cut -f1)
SPEED[restic]=$(rate "$logical" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")

t0=$(now)
KEPT[zstd-3]=$(cat "$DATA"/*.tar | zstd -3 -q -c | wc -c)
t1=$(now)
SPEED[zstd-3]=$(rate "$logical" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")

printf '%-14s %14s %10s %12s\n' tool kept_bytes ratio ingest_MB/s
for t in plenum plenum-nosim borg restic zstd-3; do
    printf '%-14s %14s %9sx %12s\n' "$t" "${KEPT[$t]}" "$(ratio "$logical" "${KEPT[$t]}")" "${SPEED[$t]}"
done
echo "plenum acknowledged (before destage): ${ACK[plenum]} MB/s, similarity off ${ACK[plenum-nosim]} MB/s"
best=$(( KEPT[borg] < KEPT[restic] ? KEPT[borg] : KEPT[restic] ))
echo "similarity adds: $(ratio "${KEPT[plenum-nosim]}" "${KEPT[plenum]}")x (plenum off/on)"
echo "reduction vs best of borg/restic: $(ratio "$best" "${KEPT[plenum]}")x (>1 is better)"
fast=$(awk -v a="${SPEED[borg]}" -v b="${SPEED[restic]}" 'BEGIN {print (a > b ? a : b)}')
echo "ingest vs faster of borg/restic: $(ratio "${SPEED[plenum]}" "$fast")x (>1 is better)"
