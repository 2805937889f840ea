#!/bin/bash
# bench/nfs.sh [SIZE_MIB]: nfs-cp SIZE into and out of an export, and nfs-cat
# of it, against Plenum's NFS head and against nfs-ganesha (VFS, exporting a
# plain directory on the same disk), same clients, same run. Ratios last
# (>1: Plenum faster).
#
# ganesha needs rpcbind while it starts and refuses 127.0.0.1 in a loopback-only
# namespace, so everything runs inside `unshare -n` with 10.255.255.1 on lo
# (PEERS.md). Page caches are dropped before each read; Plenum's destage is
# settled (plenum flush) before its reads and before ganesha's turn, so each
# side runs alone. The disk's own limits come last (bench/disk.sh).
set -eu
cd "$(dirname "$0")/.."
. bench/disk.sh
SIZE=${1:-1024}
if [ -z "${PL_BENCH_NS:-}" ]; then
    exec unshare -n env PL_BENCH_NS=1 "$0" "$@"
fi
BIN=$PWD/build/plenum
[ -x "$BIN" ] || { echo "build first: make build"; exit 1; }
for t in nfs-cp nfs-cat ganesha.nfsd rpcbind; do
    command -v $t >/dev/null || { echo "needs $t (scripts/deps.sh installs it)"; exit 1; }
done
ip link set lo up
ip addr add 10.255.255.1/32 dev lo
WORK=$(mktemp -d "${BENCH_DIR:-$PWD}/.bench.XXXXXX")
PIDS=()
cleanup() {
    kill "${PIDS[@]}" 2>/dev/null || true
    [ -f "$WORK/ganesha.pid" ] && kill "$(cat "$WORK/ganesha.pid")" 2>/dev/null || true
    pkill -x rpcbind 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s.%N; }
mbps() { awk -v b="$1" -v a="$2" -v c="$3" 'BEGIN {printf "%.1f", b / (c - a) / 1e6}'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
bytes=$((SIZE * 1048576))
head -c "$bytes" /dev/urandom > "$WORK/src"

run_client() { # name url-of-file [command that settles the server]
    local w r c
    drop
    t0=$(now); nfs-cp "$WORK/src" "$2" >/dev/null; t1=$(now)
    w=$(mbps "$bytes" "$t0" "$t1")
    [ -z "${3:-}" ] || $3
    drop
    t0=$(now); nfs-cp "$2" "$WORK/out" >/dev/null; t1=$(now)
    r=$(mbps "$bytes" "$t0" "$t1")
    cmp -s "$WORK/src" "$WORK/out" || { echo "$1: data differs"; exit 1; }
    rm -f "$WORK/out"
    drop
    t0=$(now); nfs-cat "$2" > /dev/null; t1=$(now)
    c=$(mbps "$bytes" "$t0" "$t1")
    W[$1]=$w R[$1]=$r C[$1]=$c
    printf '%-8s nfs-cp write %8s MB/s   nfs-cp read %8s MB/s   nfs-cat %8s MB/s\n' "$1" "$w" "$r" "$c"
}
declare -A W R C

# plenum: NFS, MOUNT on fixed ports, no portmapper needed with both in the URL
"$BIN" server --data "$WORK/pl" --admin 127.0.0.1:19001 --nfs 127.0.0.1:12049 \
    --mountd 127.0.0.1:12048 --portmap off --s3 off --nbd off >"$WORK/pl.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q "^  nfs " "$WORK/pl.log" && break; sleep 0.1; done
"$BIN" --data "$WORK/pl" mb pl://bench >/dev/null
settle() { "$BIN" --data "$WORK/pl" flush >/dev/null; }
run_client plenum "nfs://127.0.0.1/bench/f.bin?nfsport=12049&mountport=12048&version=3" settle
settle
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()

# nfs-ganesha, VFS over a plain directory on the same disk
mkdir -p "$WORK/export" "$WORK/ganesha"
cat > "$WORK/ganesha.conf" <<EOF
NFS_CORE_PARAM {
    Protocols = 3; Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false;
    NFS_Port = 22049; MNT_Port = 22048; mount_path_pseudo = true;
    Plugins_Dir = "/usr/lib/x86_64-linux-gnu/ganesha";
}
NFSV4 { Graceless = true; }
NFS_KRB5 { Active_krb5 = false; }
EXPORT {
    Export_Id = 1; Path = "$WORK/export"; Pseudo = "/export";
    Access_Type = RW; Squash = No_Root_Squash; SecType = sys; Protocols = 3;
    FSAL { Name = VFS; }
}
EOF
rpcbind -w 2>/dev/null || rpcbind
ganesha.nfsd -F -f "$WORK/ganesha.conf" -L "$WORK/ganesha.log" -p "$WORK/ganesha.pid" &
PIDS+=($!)
for _ in $(seq 100); do
    nfs-ls "nfs://10.255.255.1/export?nfsport=22049&mountport=22048&version=3" >/dev/null 2>&1 && break
    sleep 0.2
done
run_client ganesha "nfs://10.255.255.1/export/f.bin?nfsport=22049&mountport=22048&version=3"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "plenum / ganesha: write $(ratio "${W[plenum]}" "${W[ganesha]}")x," \
    "read $(ratio "${R[plenum]}" "${R[ganesha]}")x," \
    "nfs-cat $(ratio "${C[plenum]}" "${C[ganesha]}")x (>1: Plenum faster)"
disk_limits "$WORK" "$SIZE"
disk_print
echo "plenum write / (disk / 2): $(awk -v a="${W[plenum]}" -v w="$DISK_W" 'BEGIN {printf "%.2f", a / (w / 2)}')x"
