#!/bin/bash
# bench/kv.sh [REQUESTS_PER_MIB]: redis-benchmark SET and GET against
# Plenum's RESP head and against redis-server (Debian, no persistence) in the
# same run, each case twice on each server, alternating, the better run of each
# counting: values of 1 KiB, 256 KiB, 1 MiB and 4 MiB,
# 8 and 32 connections, pipeline 1 and 16. Then an LMCache-style replay
# (8 MiB kv_bytes + 28 B metadata per chunk, redis-py) reading back from the
# DRAM tier and from the flash tier. Ratios (Plenum / redis-server) last.
set -eu
cd "$(dirname "$0")/.."
PER_MIB=${1:-1500} # requests of a 1 MiB case; smaller values scale up, capped
BIN=$PWD/build/plenum
[ -x "$BIN" ] || { echo "build first: make build"; exit 1; }
command -v redis-benchmark >/dev/null || { echo "needs redis-tools (scripts/deps.sh)"; exit 1; }
WORK=$(mktemp -d "${BENCH_DIR:-$PWD}/.bench.XXXXXX")
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

PPORT=19680
RPORT=19679
printf '[kv]\ndram_mb = 8192\nflash_mb = 65536\n' > "$WORK/plenum.ini"
"$BIN" server --data "$WORK/pl" --config "$WORK/plenum.ini" --admin 127.0.0.1:19681 \
    --resp 127.0.0.1:$PPORT --s3 off --nfs off --mountd off --portmap off --nbd off \
    --kafka off > "$WORK/pl.log" 2>&1 &
PIDS+=($!)
redis-server --port $RPORT --save '' --appendonly no --daemonize no \
    --dir "$WORK" > "$WORK/redis.log" 2>&1 &
PIDS+=($!)
for p in $PPORT $RPORT; do
    for _ in $(seq 100); do redis-cli -p $p ping >/dev/null 2>&1 && break; sleep 0.1; done
done

rps() { # port test size conns pipe n -> requests/s (CLIENT_THREADS: redis-benchmark --threads)
    redis-benchmark -p "$1" -t "$2" -d "$3" -c "$4" -P "$5" -n "$6" -r 1000 --csv -q \
        ${CLIENT_THREADS:+--threads $CLIENT_THREADS} 2>/dev/null |
        awk -F, -v t="$(echo "$2" | tr a-z A-Z)" '$1 ~ t {gsub(/"/, "", $2); print $2; exit}'
}

# One case on both servers, twice, alternating; the better run of each into
# a and b (single runs on two shared cores moved +-30 %).
pair() { # op size conns pipe n
    local x y
    a=0 b=0
    for _ in 1 2; do
        x=$(rps $PPORT "$@")
        y=$(rps $RPORT "$@")
        a=$(awk -v p="$a" -v q="$x" 'BEGIN {print (q > p ? q : p)}')
        b=$(awk -v p="$b" -v q="$y" 'BEGIN {print (q > p ? q : p)}')
    done
}

# Every GET should find its value, as in a cache that works: before each size
# both servers get all 1000 keys redis-benchmark's -r 1000 names, at that size
# (a SET run alone writes only about 60 % of them, and a miss is a tiny reply).
cat > "$WORK/prefill.py" <<'EOF'
import os
import sys
import redis
port, size = int(sys.argv[1]), int(sys.argv[2])
distinct = len(sys.argv) > 3  # each value its own bytes (nothing deduplicates)
r = redis.Redis(port=port, socket_timeout=300)
r.flushall()
blob = os.urandom(size) if distinct else b"x" * size
p = r.pipeline(transaction=False)
for i in range(1000):  # redis-benchmark -r 1000 names key:000000000000 .. key:000000000999
    p.set("key:%012d" % i, blob[:-8] + i.to_bytes(8, "little") if distinct else blob)
    if i % 16 == 15:
        p.execute()
p.execute()
EOF

printf '%-6s %-8s %5s %4s %12s %12s %10s %10s %6s\n' OP SIZE CONNS PIPE PLENUM_RPS REDIS_RPS \
    PLENUM_GBs REDIS_GBs RATIO
declare -a RATIOS
for size in 1024 262144 1048576 4194304; do
    n=$((PER_MIB * 1048576 / size))
    [ $n -gt 200000 ] && n=200000
    [ $n -lt 200 ] && n=200
    /usr/bin/python3 "$WORK/prefill.py" $PPORT $size
    /usr/bin/python3 "$WORK/prefill.py" $RPORT $size
    for conns in 8 32; do
        for pipe in 1 16; do
            # at least four rounds of every connection's pipeline: with fewer, a
            # pipelined large-value case measures its own start and end
            m=$((conns * pipe * 4 > n ? conns * pipe * 4 : n))
            for op in set get; do
                pair $op $size $conns $pipe $m
                ga=$(awk -v r="$a" -v s=$size 'BEGIN {printf "%.2f", r * s / 1e9}')
                gb=$(awk -v r="$b" -v s=$size 'BEGIN {printf "%.2f", r * s / 1e9}')
                ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
                printf '%-6s %-8s %5s %4s %12s %12s %10s %10s %5sx\n' "$op" "$size" "$conns" \
                    "$pipe" "$a" "$b" "$ga" "$gb" "$ratio"
                RATIOS+=("$op ${size}B c$conns P$pipe: ${ratio}x")
            done
        done
    done
done

# Unpipelined 1 MiB values again with a two-thread client: one redis-benchmark
# thread is the limit above (a profile shows it using a whole core, memmove
# and the kernel's copy to it, while the servers wait), so this is where the
# servers' own costs show.
echo
echo "1 MiB values, pipeline 1, redis-benchmark --threads 2:"
/usr/bin/python3 "$WORK/prefill.py" $PPORT 1048576
/usr/bin/python3 "$WORK/prefill.py" $RPORT 1048576
n=$((PER_MIB * 4)) # redis-benchmark --threads times in coarse steps: runs of seconds
for conns in 8 32; do
    for op in set get; do
        CLIENT_THREADS=2 pair $op 1048576 $conns 1 $n
        ga=$(awk -v r="$a" 'BEGIN {printf "%.2f", r * 1048576 / 1e9}')
        gb=$(awk -v r="$b" 'BEGIN {printf "%.2f", r * 1048576 / 1e9}')
        ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
        printf '%-6s %-8s %5s %4s %12s %12s %10s %10s %5sx\n' "$op" 1048576 "$conns" 1 \
            "$a" "$b" "$ga" "$gb" "$ratio"
        RATIOS+=("$op 1048576B c$conns P1 client threads 2: ${ratio}x")
    done
done

# Where the two cores go in that case (GET 1 MiB, 8 connections, two client
# threads): the client's and each server's CPU seconds per GB, once each.
# With the wire's own cost to a sender (iperf3, below) they bound what any
# server can reach here: cores / (client + wire).
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
cpu_case() { # pid port requests -> "GB/s client_s/GB server_s/GB"
    local c0 c1 cu
    c0=$(cpu_of "$1")
    TIMEFORMAT='%U %S'
    cu=$( { time redis-benchmark -p "$2" -t get -d 1048576 -c 8 -n "$3" -r 1000 --threads 2 \
        --csv -q > "$WORK/cpu.csv" 2>/dev/null; } 2>&1 )
    c1=$(cpu_of "$1")
    awk -F, -v cu="$cu" -v sv=$((c1 - c0)) -v hz="$HZ" -v n="$3" '
        $1 ~ /GET/ {gsub(/"/, "", $2); r = $2}
        END {gb = n * 1048576 / 1e9; split(cu, c, " ")
             printf "%.2f %.3f %.3f", r * 1048576 / 1e9, (c[1] + c[2]) / gb, sv / hz / gb}' \
        "$WORK/cpu.csv"
}
read -r PCG PCC PCS <<< "$(cpu_case "${PIDS[0]}" $PPORT "$n")"
read -r RCG RCC RCS <<< "$(cpu_case "${PIDS[1]}" $RPORT "$n")"

# LMCache's pattern, and reads from each tier
cat > "$WORK/replay.py" <<'EOF'
import hashlib, os, sys, time
import redis
port, chunks, mb = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
r = redis.Redis(port=port, socket_timeout=300)
blob = os.urandom(mb << 20)
key = lambda i, k: f"llama@1@0@{i:x}@bfloat16{k}"
for i in range(chunks):
    r.set(key(i, "kv_bytes"), blob)
    r.set(key(i, "metadata"), b"m" * 28)
def read(rng):
    t = time.time()
    n = 0
    for i in rng:
        assert r.exists(key(i, "metadata"))
        r.get(key(i, "metadata"))
        n += len(r.get(key(i, "kv_bytes")))
    return n / (time.time() - t) / 1e9
print(f"{read(range(chunks - 8, chunks)):.2f}")  # the newest: DRAM
EOF
/usr/bin/python3 "$WORK/replay.py" $PPORT 32 8 > "$WORK/dram.txt"
# a small DRAM tier: the same chunks now come from flash
redis-cli -p $PPORT flushall >/dev/null
"$BIN" --data "$WORK/pl" kv config 64 0 >/dev/null
cat >> "$WORK/replay.py" <<'EOF'
sync = os.system("sync")
print(f"{read(range(0, 16)):.2f}")  # the oldest: demoted to flash
EOF
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
/usr/bin/python3 "$WORK/replay.py" $PPORT 32 8 > "$WORK/flash.txt"
RD=$(/usr/bin/python3 "$WORK/replay.py" $RPORT 32 8 | sed -n 1p)
PD=$(head -1 "$WORK/dram.txt")
PF=$(tail -1 "$WORK/flash.txt")
echo
echo "LMCache replay (8 MiB kv_bytes + 28 B metadata, redis-py, one connection):"
echo "  plenum DRAM tier  $PD GB/s"
echo "  plenum flash tier $PF GB/s"
echo "  redis-server      $RD GB/s"
redis-cli -p $PPORT info plenum | grep -E 'kv_(hits|demotions|promotions|evictions)' | tr -d '\r'

# The flash tier with a faster client: 1000 distinct 1 MiB values through a
# 64 MiB DRAM tier (so they are on flash), page cache dropped, then
# redis-benchmark GETs them (8 connections); every GET must hit.
/usr/bin/python3 "$WORK/prefill.py" $PPORT 1048576 distinct
for _ in $(seq 100); do
    redis-cli -p $PPORT info plenum | grep -q '^kv_demote_pending_bytes:0' && break; sleep 0.1
done
kvinfo() { redis-cli -p $PPORT info plenum | tr -d '\r' | sed -n "s/^kv_$1://p"; }
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
f0=$(kvinfo hits_flash); m0=$(kvinfo misses)
FR=$(rps $PPORT get 1048576 8 1 2000)
f1=$(kvinfo hits_flash); m1=$(kvinfo misses)
FG=$(awk -v r="$FR" 'BEGIN {printf "%.2f", r * 1048576 / 1e9}')
echo
echo "flash tier, redis-benchmark GET 1 MiB, 8 connections, page cache dropped:"
echo "  $FR req/s = $FG GB/s ($((f1 - f0)) of 2000 from flash, $((m1 - m0)) misses)"

# The wire itself: loopback TCP, 8 streams of 1 MiB writes (iperf3)
LOOP=-
if command -v iperf3 >/dev/null; then
    iperf3 -s -p 19682 -1 >/dev/null 2>&1 &
    sleep 0.3
    read -r LOOP WIRE <<< "$(iperf3 -c 127.0.0.1 -p 19682 -P 8 -l 1M -t 3 -J 2>/dev/null |
        /usr/bin/python3 -c 'import json, sys
e = json.load(sys.stdin)["end"]; s = e["sum_sent"]; gb = s["bytes"] / 1e9
print("%.2f %.3f" % (s["bits_per_second"] / 8e9,
                     e["cpu_utilization_percent"]["host_total"] / 100 * s["seconds"] / gb))')"
    LOOP=${LOOP:--}
fi
echo "loopback TCP (iperf3, 8 streams, 1 MiB writes): $LOOP GB/s, the ceiling for either server"
echo
echo "CPU per GB, GET 1 MiB, 8 connections, redis-benchmark --threads 2 (one run each):"
printf '  plenum        %5s GB/s   client %s s/GB   server %s s/GB\n' "$PCG" "$PCC" "$PCS"
printf '  redis-server  %5s GB/s   client %s s/GB   server %s s/GB\n' "$RCG" "$RCC" "$RCS"
echo "  loopback TCP, what sending costs (iperf3's sender): ${WIRE:--} s/GB"
if [ -n "${WIRE:-}" ]; then
    awk -v c="$(nproc)" -v pc="$PCC" -v rc="$RCC" -v w="$WIRE" -v r="$RCG" 'BEGIN {
        cl = pc < rc ? pc : rc; lim = c / (cl + w)
        printf "  ceiling on %d cores, client and a server that costs no more than the wire: %.2f GB/s = %.2fx redis-server (aim 1.4x)\n", c, lim, lim / r}'
fi

echo
echo "ratios (plenum / redis-server):"
for r in "${RATIOS[@]}"; do echo "  $r"; done
echo "  LMCache replay from DRAM: $(awk -v a="$PD" -v b="$RD" 'BEGIN {printf "%.2f", a / b}')x, from flash: $(awk -v a="$PF" -v b="$RD" 'BEGIN {printf "%.2f", a / b}')x"
