#!/bin/sh
# with-cpu-hog.sh COMMAND [ARGS...]: runs COMMAND while one busy loop per
# online CPU keeps every core busy, and exits with COMMAND's status. The
# loops are plain shell (no package needed), run at this script's priority,
# and are stopped on every way out: COMMAND ending, this script being
# interrupted or terminated, and, should it be killed outright, by each loop
# noticing that this script is gone.
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 64; }
n=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
me=$$
hogs=""
stop_hogs() {
    [ -n "$hogs" ] && kill $hogs 2>/dev/null
    hogs=""
}
trap stop_hogs EXIT
trap 'stop_hogs; exit 129' HUP
trap 'stop_hogs; exit 130' INT
trap 'stop_hogs; exit 143' TERM
i=0
while [ $i -lt "$n" ]; do
    (
        trap - EXIT HUP INT TERM
        while kill -0 $me 2>/dev/null; do
            k=0
            while [ $k -lt 200000 ]; do k=$((k + 1)); done
        done
    ) &
    hogs="$hogs $!"
    i=$((i + 1))
done
echo "with-cpu-hog: $n busy loop(s) running (pids$hogs) while: $*"
start=$(date +%s)
"$@"
st=$?
stop_hogs
echo "with-cpu-hog: busy loops stopped; '$*' took $(($(date +%s) - start)) s and exited $st"
exit $st
