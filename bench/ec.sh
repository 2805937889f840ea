#!/bin/bash
# bench/ec.sh [STRIP_MIB] [DECODE_PIECE_KIB] [SECONDS]: stripe encode and
# degraded decode through our erasure-coding path vs a bare ISA-L loop on
# the same buffers, for 4+2, 8+3 and 20+4. Ratio last.
set -eu
cd "$(dirname "$0")/.."
[ -x build/ec_bench ] || { echo "build first: make build"; exit 1; }
echo "strip ${1:-4} MiB, decode in ${2:-1024} KiB pieces (as rebuilds do), ${3:-1} s per run, best of 3"
build/ec_bench "${1:-4}" "${2:-1024}" "${3:-1}"
echo "--- degraded reads reconstruct 64 KiB cells:"
build/ec_bench "${1:-4}" 64 "${3:-1}" | grep -E "decode|worst"
