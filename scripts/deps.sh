#!/bin/sh
# Install what Plenum's build and tests need (Debian 12, run as root or with sudo).
# Idempotent and quiet when everything is already present.
set -e
PKGS="meson ninja-build pkg-config gcc clang clang-tidy libclang-rt-14-dev
liblmdb-dev lmdb-utils libzstd-dev libxxhash-dev libssl-dev libuv1-dev libjansson-dev
libhttp-parser-dev libcurl4-openssl-dev libcmocka-dev libxml2-dev libisal-dev zlib1g-dev
python3 python3-pytest python3-boto3 awscli s3cmd rclone wrk nginx curl
zstd borgbackup restic libnbd-bin python3-libnbd qemu-utils nbdkit fio libnfs-utils libnfs-dev nfs-ganesha nfs-ganesha-vfs rpcbind nfs-common iperf3
libfuse3-dev fuse3 git sqlite3 rsync liblz4-dev libsnappy-dev
kcat python3-kafka python3-confluent-kafka librdkafka-dev
redis-server redis-tools python3-redis"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# Node.js for the client libraries only npm has (node-redis: RESP3 from a
# library client); Debian's when the machine has none of its own.
command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
if [ -n "$missing" ]; then
    echo "deps: installing$missing"
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# The pinned packages of tests/integration/node (npm ls fails when one is
# missing or another version).
node_dir="$(dirname "$0")/../tests/integration/node"
if ! (cd "$node_dir" && npm ls --depth=0 >/dev/null 2>&1); then
    echo "deps: npm install in tests/integration/node"
    (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi
