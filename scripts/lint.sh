#!/bin/bash
# Lint: the layer rules of DESIGN.md §1 (checked on #include lines), banned
# libc calls, and clang-tidy with the checks in .clang-tidy. Prints one line
# per suite: "lint NAME ok" or "lint NAME FAILED" and the findings.
set -u
cd "$(dirname "$0")/.."
fail=0

# folder -> project headers it may include (besides its own folder)
allowed() {
    case "$1" in
        src/base) echo "base plenum/err.h" ;;
        src/meta) echo "base meta plenum/err.h" ;;
        src/data) echo "base data plenum/err.h" ;;
        src/store) echo "base meta data store plenum" ;;
        src/proto/*) echo "base plenum $1 src/proto/http src/proto/tsrv src/proto/wb src/broker src/kv" ;;  # heads: store API, services, base, the shared HTTP codec, TCP server and write-back, themselves
        src/broker) echo "base plenum broker" ;;  # a service: the store API and base
        src/kv) echo "base plenum kv" ;;          # a service too
        src/cmd) echo "*" ;;
        *) echo "*" ;;
    esac
}
bad=""
for f in $(git ls-files 'src/*.c' 'src/*.h'); do
    dir=$(dirname "$f")
    allow=$(allowed "$dir")
    [ "$allow" = "*" ] && continue
    while IFS= read -r inc; do
        ok=0
        for a in $allow; do
            a=${a#src/}
            case "$inc" in "$a"/*|"$a") ok=1 ;; esac
        done
        case "$inc" in "${dir#src/}"/*) ok=1 ;; esac
        [ $ok = 1 ] || bad="$bad\n  $f includes \"$inc\""
    done < <(grep -oE '^#include "[^"]+"' "$f" | sed 's/#include "\(.*\)"/\1/')
done
if [ -n "$bad" ]; then echo "lint layers FAILED"; printf "$bad\n"; fail=1; else echo "lint layers ok"; fi

banned=$(git grep -nE '\b(strcpy|strcat|sprintf|vsprintf|strtok|gmtime|localtime|gets)\s*\(' -- 'src/*.c' 'src/*.h' || true)
if [ -n "$banned" ]; then echo "lint banned FAILED"; echo "$banned"; fail=1; else echo "lint banned ok"; fi

if command -v clang-tidy >/dev/null && [ -f build/compile_commands.json ]; then
    out=$(clang-tidy -p build --quiet --extra-arg=-Wno-unknown-warning-option \
        $(git ls-files 'src/*.c') 2>&1 | grep -E "(warning|error):" || true)
    if [ -n "$out" ]; then echo "lint clang-tidy FAILED"; echo "$out"; fail=1; else echo "lint clang-tidy ok"; fi
else
    echo "lint clang-tidy skipped (no clang-tidy or no build)"
fi
exit $fail
