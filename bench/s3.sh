#!/bin/bash
# bench/s3.sh [SIZE_MIB] [SECONDS]: the S3 head beside nginx, same client, same run.
#   GET  SIZE_MIB object, 4 parallel streams (wrk -c4), MB/s
#   GET  4 KiB object, 32 connections (wrk -c32), requests/s
#   PUT  SIZE_MIB object, 4 parallel uploads (curl -T), MB/s
# Plenum is reached through presigned URLs (SigV4 is verified on every
# request); nginx serves static files and takes PUTs with its DAV module.
# Reduction stays on (the store deduplicates and compresses as always).
set -eu
cd "$(dirname "$0")/.."
SIZE=${1:-1024}
SECS=${2:-10}
BIN=$PWD/build/plenum
command -v nginx >/dev/null && command -v wrk >/dev/null || {
    echo "needs nginx and wrk: apt-get install nginx wrk"; exit 1; }
W=$(mktemp -d "${BENCH_DIR:-$PWD}/.bench-s3.XXXXXX")
cleanup() {
    [ -f "$W/nginx.pid" ] && kill "$(cat "$W/nginx.pid")" 2>/dev/null || true
    [ -n "${PL_PID:-}" ] && kill "$PL_PID" 2>/dev/null && wait "$PL_PID" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
S3P=$(port); ADP=$(port); NGP=$(port)
export PLENUM_ROOT_ACCESS_KEY=BENCHACCESSKEY000001 PLENUM_ROOT_SECRET_KEY=bench-secret-key-0123456789
"$BIN" server --data "$W/data" --s3 127.0.0.1:$S3P --admin 127.0.0.1:$ADP >"$W/plenum.log" 2>&1 &
PL_PID=$!
mkdir -p "$W/www/up" "$W/ngx_tmp"
cat > "$W/nginx.conf" <<NGX
user root;
worker_processes 2;
daemon off;
pid $W/nginx.pid;
error_log $W/nginx.err;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    client_max_body_size 0;
    client_body_temp_path $W/ngx_tmp;
    server {
        listen 127.0.0.1:$NGP;
        root $W/www;
        location /up/ { dav_methods PUT; create_full_put_path on; }
    }
}
NGX
setsid -f nginx -c "$W/nginx.conf" -p "$W"
head -c $((SIZE * 1048576)) /dev/urandom > "$W/www/big"
head -c 4096 /dev/urandom > "$W/www/small"
sleep 1
URLS=$(/usr/bin/python3 - "$S3P" "$W" <<'PY'
import sys, boto3
from botocore.config import Config
port, w = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}",
                  aws_access_key_id="BENCHACCESSKEY000001",
                  aws_secret_access_key="bench-secret-key-0123456789", region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
s3.create_bucket(Bucket="bench")
s3.upload_file(f"{w}/www/big", "bench", "big")
s3.upload_file(f"{w}/www/small", "bench", "small")
g = lambda k: s3.generate_presigned_url("get_object", Params={"Bucket": "bench", "Key": k}, ExpiresIn=3600)
p = lambda k: s3.generate_presigned_url("put_object", Params={"Bucket": "bench", "Key": k}, ExpiresIn=3600)
print(g("big"), g("small"), *[p(f"put{i}") for i in range(4)])
PY
)
read -r PBIG PSMALL PUT0 PUT1 PUT2 PUT3 <<< "$URLS"

wrk_mbps() { wrk -t2 -c"$2" -d"${SECS}s" "$1" | awk '/Transfer\/sec/ {v=$2; u=substr(v,length(v)-1); n=substr(v,1,length(v)-2); m=(u=="GB"?1024:(u=="MB"?1:(u=="KB"?1/1024:1))); printf "%.1f", n*m*1.048576}'; }
wrk_rps() { wrk -t2 -c"$2" -d"${SECS}s" "$1" | awk '/Requests\/sec/ {printf "%.0f", $2}'; }
put4() { # $@: four URLs; prints MB/s for 4 x SIZE
    local t0 t1
    t0=$(date +%s.%N)
    for u in "$@"; do curl -s -o "$W/put.out" -w "%{http_code}" -T "$W/www/big" "$u" | grep -q "^20[01]$" || { echo "PUT failed: $(head -c 300 "$W/put.out")" >&2; } & done
    wait
    t1=$(date +%s.%N)
    awk -v s="$SIZE" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", 4 * s * 1.048576 / (b - a)}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; }

ng_get=$(wrk_mbps "http://127.0.0.1:$NGP/big" 4);   pl_get=$(wrk_mbps "$PBIG" 4)
ng_ops=$(wrk_rps "http://127.0.0.1:$NGP/small" 32); pl_ops=$(wrk_rps "$PSMALL" 32)
ng_put=$(put4 "http://127.0.0.1:$NGP/up/p0" "http://127.0.0.1:$NGP/up/p1" "http://127.0.0.1:$NGP/up/p2" "http://127.0.0.1:$NGP/up/p3")
pl_put=$(put4 "$PUT0" "$PUT1" "$PUT2" "$PUT3")
printf '%-28s %12s %12s %8s\n' test plenum nginx ratio
printf '%-28s %12s %12s %8s\n' "GET ${SIZE}MiB x4 (MB/s)" "$pl_get" "$ng_get" "$(ratio "$pl_get" "$ng_get")"
printf '%-28s %12s %12s %8s\n' "GET 4KiB c32 (req/s)" "$pl_ops" "$ng_ops" "$(ratio "$pl_ops" "$ng_ops")"
printf '%-28s %12s %12s %8s\n' "PUT ${SIZE}MiB x4 (MB/s)" "$pl_put" "$ng_put" "$(ratio "$pl_put" "$ng_put")"
