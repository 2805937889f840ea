# Sourced by the benchmarks: the physical limit of the disk under DIR,
# measured in the same run as the peers.
#   disk_limits DIR SIZE_MIB  sets DISK_W (dd write with fdatasync, MB/s),
#                             DISK_R (dd read after dropping the page cache)
# Plenum's buffer keeps two mirrored copies of every acknowledged byte
# (DESIGN.md §3-4), and the embedded layout puts both on this one disk, so a
# durable write stream can reach at most DISK_W / 2 here.
disk_limits() { # dir size_mib
    local f="$1/.disk.$$"
    DISK_W=$(dd if=/dev/urandom of="$f.src" bs=1M count="$2" 2>/dev/null &&
        dd if="$f.src" of="$f" bs=1M conv=fdatasync 2>&1 | sed -n 's/.*s, \([0-9.]*\) \([MG]\)B\/s/\1 \2/p' |
        awk '{printf "%.1f", $2 == "G" ? $1 * 1000 : $1}')
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    DISK_R=$(dd if="$f" of=/dev/null bs=1M 2>&1 | sed -n 's/.*s, \([0-9.]*\) \([MG]\)B\/s/\1 \2/p' |
        awk '{printf "%.1f", $2 == "G" ? $1 * 1000 : $1}')
    rm -f "$f" "$f.src"
}

disk_print() { # after disk_limits
    printf '%-28s %12s MB/s write (fdatasync)  %s MB/s read; two durable mirrors: at most %s MB/s\n' \
        "disk (dd, same run)" "$DISK_W" "$DISK_R" "$(awk -v w="$DISK_W" 'BEGIN {printf "%.1f", w / 2}')"
}
