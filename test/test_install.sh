#!/bin/sh
# Installs libyolo into a temporary prefix with `make install PREFIX=...`,
# then builds examples/detect.c the way a user would, through pkg-config:
# once against the shared library and once statically against libyolo.a
# (using the .pc's private requirements), and runs both on
# images/astronaut.png with weights/yolov7-tiny.bin (YOLO_WEIGHTS_DIR
# overrides weights/). Run from the repository root. Prints
# "N passed, N failed" and exits non-zero on any failure.
set -u

MAKE=${MAKE:-make}
CC=${CC:-cc}
WEIGHTS=${YOLO_WEIGHTS_DIR:-weights}/yolov7-tiny.bin
IMAGE=images/astronaut.png
passed=0
failed=0

ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; [ -n "${2:-}" ] && sed 's/^/     /' "$2"; }

finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit $?
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/libyolo-install.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
prefix=$tmp/prefix
log=$tmp/log

if [ ! -f "$WEIGHTS" ]; then
    echo "$WEIGHTS missing: run \`make weights\` first"
    bad "weights present"
    finish
fi

# A plain build whatever make this runs under: command-line variables of an
# outer make (BUILD=build-asan SANITIZE=...) would otherwise reach this one.
unset MAKEFLAGS MFLAGS MAKELEVEL
if $MAKE --no-print-directory install PREFIX="$prefix" >"$log" 2>&1 &&
    [ -f "$prefix/include/yolo.h" ] && [ -f "$prefix/lib/pkgconfig/libyolo.pc" ]; then
    ok "make install PREFIX=<tmp>"
else
    bad "make install PREFIX=<tmp>" "$log"
    finish
fi

PKG_CONFIG_PATH=$prefix/lib/pkgconfig
export PKG_CONFIG_PATH
cp examples/detect.c "$tmp/detect.c"

# Runs one built example and checks it printed detections with class names.
run_example() { # name binary [env assignment]
    name=$1
    bin=$2
    if ! env ${3:+"$3"} "$bin" "$WEIGHTS" "$IMAGE" >"$tmp/out" 2>&1; then
        bad "$name: runs" "$tmp/out"
        return
    fi
    n=$(sed -n 's/^\([0-9][0-9]*\) detections$/\1/p' "$tmp/out")
    lines=$(grep -c '^[^ ].* [0-9]\.[0-9][0-9][0-9] ' "$tmp/out")
    if [ -n "$n" ] && [ "$n" -gt 0 ] && [ "$lines" -eq "$n" ]; then
        ok "$name: $n detections printed"
    else
        bad "$name: prints its detections" "$tmp/out"
    fi
}

# Shared: the plain command a user types (pkg-config's output is meant to split).
# shellcheck disable=SC2046
if (cd "$tmp" && $CC detect.c $(pkg-config --cflags --libs libyolo) -o detect-shared) \
    >"$log" 2>&1; then
    ok "cc detect.c \$(pkg-config --cflags --libs libyolo)"
    if LD_LIBRARY_PATH=$prefix/lib ldd "$tmp/detect-shared" 2>/dev/null |
        grep -q "$prefix/lib/libyolo.so"; then
        ok "shared example uses the installed libyolo.so"
    else
        bad "shared example uses the installed libyolo.so"
    fi
    run_example "shared example" "$tmp/detect-shared" "LD_LIBRARY_PATH=$prefix/lib"
else
    bad "cc detect.c \$(pkg-config --cflags --libs libyolo)" "$log"
fi

# Static libyolo: only the .pc's Libs.private / Requires.private complete the link.
# shellcheck disable=SC2046
if (cd "$tmp" && $CC detect.c $(pkg-config --cflags libyolo) -L"$prefix/lib" \
    -Wl,-Bstatic -lyolo -Wl,-Bdynamic $(pkg-config --static --libs libyolo) -o detect-static) \
    >"$log" 2>&1 && ! ldd "$tmp/detect-static" | grep -q libyolo; then
    ok "static link with pkg-config --static"
    run_example "static example" "$tmp/detect-static"
else
    bad "static link with pkg-config --static" "$log"
fi

finish
