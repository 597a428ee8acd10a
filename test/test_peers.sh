#!/bin/sh
# Checks that the peer comparison (bench/peers) runs and reports: a quick run
# (yolov7-tiny, 640x640, batch 1, threads 1 and 2) prints one table per thread
# count with a row for every system, timed or with the reason it is not, and
# the targets line; peers.csv and peers.json agree with it; every system that
# ran agreed with libyolo. Then the failure paths, through the script's test
# hook PEERS_FAULT: a peer (pytorch) whose outputs are off by a pixel is
# reported as DISAGREE, left out of the targets, and the run exits 1; a peer
# whose worker dies, or that is not installed (a simulated pip failure), stays
# in the table with its reason and the run exits 0. Last, --isa avx2 (where the
# CPU has AVX2): libyolo forced, PyTorch and OpenVINO capped and native, ONNX
# Runtime native, and the cap check of each capped peer printed.
# Timing is not judged here (that is what bench/peers is for). Needs
# weights/yolov7-tiny.{pt,bin} (`make weights`); builds BUILD/libyolo.so if
# missing. The first run creates build/peers-venv and pip-installs the pinned
# onnxruntime and openvino; without network those rows say why and the run
# still passes. Run from the repository root. Prints "N passed, N failed".
set -u
BUILD=${BUILD:-build}
PY=${PYTHON:-/usr/bin/python3}
LIB=$BUILD/libyolo.so
T=$(mktemp -d "${TMPDIR:-/tmp}/peers_test.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT INT TERM
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   - $1"; }
ko() { fail=$((fail + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && [ -f "$2" ] && sed 's/^/     /' "$2"; }
finish() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit $?; }
check() { # check NAME COMMAND...
    name=$1; shift
    if "$@" >"$T/check.out" 2>&1; then ok "$name"; else ko "$name" "$T/check.out"; fi
}

for f in weights/yolov7-tiny.pt weights/yolov7-tiny.bin; do
    if [ ! -f "$f" ]; then ko "$f exists (make weights)"; finish; fi
done
if [ ! -f "$LIB" ]; then
    (unset MAKEFLAGS MFLAGS MAKELEVEL; ${MAKE:-make} --no-print-directory BUILD="$BUILD" lib) \
        >"$T/make.out" 2>&1 || { ko "make lib" "$T/make.out"; finish; }
fi

check "bench/peers is executable" test -x bench/peers
check "--help exits 0" bench/peers --no-venv --help
bench/peers --no-venv --threads 0 >"$T/bad.out" 2>&1
if [ $? -eq 2 ]; then ok "bad option exits 2"; else ko "bad option exits 2" "$T/bad.out"; fi

# ---- the quick run ------------------------------------------------------------------------
Q=$T/quick
bench/peers --quick --lib "$LIB" --out "$Q" >"$T/quick.out" 2>"$T/quick.err"
st=$?
if [ $st -eq 0 ]; then ok "quick run exits 0"; else ko "quick run exits 0 (got $st)" "$T/quick.err"; cat "$T/quick.out"; fi
cat "$T/quick.out"
for t in 1 2; do
    check "table for threads $t" grep -q "^== yolov7-tiny  input 640x640 (HxW)  batch 1  threads $t " "$T/quick.out"
done
check "two targets lines" test "$(grep -c '^targets: ' "$T/quick.out")" -eq 2
for s in libyolo pytorch onnxruntime openvino; do
    check "a row for $s in both tables" test "$(grep -c "^$s " "$T/quick.out")" -eq 2
done
check "libyolo is timed (baseline row)" grep -q '^libyolo .*(baseline)$' "$T/quick.out"
check "the unfused reference was checked" grep -q '^reference .*check only.* ok ' "$T/quick.out"

cat >"$T/validate.py" <<'PYEOF'
import csv, json, sys
out, what = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(out + '/peers.csv')))
doc = json.load(open(out + '/peers.json'))
if what == 'csv':
    timed = [r for r in rows if r['status'] == 'ok']
    assert {(r['system'], r['threads']) for r in rows if r['system'] != 'reference'} == \
        {(s, t) for s in ('libyolo', 'pytorch', 'onnxruntime', 'openvino') for t in ('1', '2')}, rows
    for r in timed:
        mn, md, p90 = float(r['min_ms']), float(r['median_ms']), float(r['p90_ms'])
        assert 0 < mn <= md <= p90, r
        assert int(r['runs']) == 3, r
        assert float(r['cpu_per_wall']) > 0, r
        if r['system'] != 'libyolo':
            assert r['agree_ok'] == '1', r
            lib = [x for x in timed if x['system'] == 'libyolo' and x['threads'] == r['threads']][0]
            q = float(lib['median_ms']) / md
            assert abs(float(r['libyolo_over_this']) - q) < 1e-3 * q, (r, q)
    for r in rows:
        if r['status'] not in ('ok', 'check only'):
            assert r['reason'].strip(), r          # never a silent gap
    assert any(r['system'] == 'libyolo' and r['status'] == 'ok' for r in rows)
elif what == 'json':
    assert len(doc['rows']) == len(rows) and len(doc['tables']) == 2
    m = doc['meta']
    assert set(m['tolerance_vs_libyolo']) == {'box_px', 'obj', 'cls'}
    assert m['versions']['libyolo'] and m['images']
    for r in doc['rows']:
        if r['status'] == 'ok':
            assert len(r['times_ms']) == r['runs'] == 3, r
elif what == 'isa':          # --isa avx2: the rows and their isa column
    got = {r['system']: r['isa'] for r in rows if r['system'] != 'reference'}
    assert got == {'libyolo': 'avx2', 'pytorch@avx2': 'avx2', 'pytorch': 'native',
                   'onnxruntime': 'native', 'openvino@avx2': 'avx2', 'openvino': 'native'}, got
    assert doc['meta']['isa'] == 'avx2' and doc['meta']['isa_caps']['ONEDNN_MAX_CPU_ISA'] == 'AVX2'
elif what == 'status':       # status of SYSTEM: prints it and the reason
    for r in rows:
        if r['system'] == sys.argv[3]:
            print(r['status'], r['reason'])
PYEOF
check "peers.csv: every system and thread count, sane statistics, agreement" "$PY" "$T/validate.py" "$Q" csv
check "peers.json: rows, tables, meta, raw times" "$PY" "$T/validate.py" "$Q" json

# ---- failure paths: the rows stay, with the reason ------------------------------------------
F="--quick --threads 1 --runs 1 --no-reference --lib $LIB"
PEERS_FAULT=pytorch:wrong bench/peers $F --out "$T/wrong" >"$T/wrong.out" 2>&1
st=$?
if [ $st -eq 1 ]; then ok "wrong outputs: exit 1"; else ko "wrong outputs: exit 1 (got $st)" "$T/wrong.out"; fi
check "wrong outputs: the row says DISAGREE" grep -q '^pytorch .*DISAGREE 1\.' "$T/wrong.out"
check "wrong outputs: not counted in the targets" sh -c "grep '^targets: ' '$T/wrong.out' | grep -vq 'libyolo/pytorch'"

PEERS_FAULT=pytorch:crash bench/peers $F --out "$T/crash" >"$T/crash.out" 2>&1
st=$?
if [ $st -eq 0 ]; then ok "crashing peer: exit 0"; else ko "crashing peer: exit 0 (got $st)" "$T/crash.out"; fi
check "crashing peer: the row gives the reason" grep -q '^pytorch .*unavailable: .*worker exited (status 3)' "$T/crash.out"
check "crashing peer: libyolo is still timed" grep -q '^libyolo .*(baseline)$' "$T/crash.out"

VPY=build/peers-venv/bin/python
if [ -x "$VPY" ]; then
    PEERS_INSTALL_PROBLEMS='{"openvino": "simulated pip failure"}' "$VPY" bench/peers $F \
        --out "$T/missing" >"$T/missing.out" 2>&1
    st=$?
    if [ $st -eq 0 ]; then ok "uninstallable peer: exit 0"; else ko "uninstallable peer: exit 0 (got $st)" "$T/missing.out"; fi
    check "uninstallable peer: the row gives the reason" \
        grep -q '^openvino .*unavailable: not installed: simulated pip failure' "$T/missing.out"
else
    ko "build/peers-venv was created by the quick run"
fi

# ---- --isa avx2: libyolo forced, peers capped where they can be, and native ---------------------
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
    bench/peers $F --isa avx2 --out "$T/isa" >"$T/isa.out" 2>&1
    st=$?
    if [ $st -eq 0 ]; then ok "--isa avx2: exit 0"; else ko "--isa avx2: exit 0 (got $st)" "$T/isa.out"; fi
    for s in 'libyolo@avx2' 'pytorch@avx2' pytorch onnxruntime 'openvino@avx2' openvino; do
        check "--isa avx2: a row for $s" grep -q "^$s " "$T/isa.out"
    done
    check "--isa avx2: says who is capped and that ONNX Runtime cannot be" \
        grep -q '^isa: libyolo forced to avx2; pytorch@avx2, openvino@avx2 capped (ONEDNN_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell); native: pytorch, onnxruntime, openvino (ONNX Runtime cannot be capped)' "$T/isa.out"
    check "--isa avx2: a cap check of each capped peer" \
        grep -q '^cap check: pytorch@avx2 .*; openvino@avx2 ' "$T/isa.out"
    if grep -q '^pytorch@avx2 .* ok ' "$T/isa.out"; then
        check "--isa avx2: PyTorch's oneDNN and OpenBLAS really capped" \
            grep -q '^cap check: pytorch@avx2 oneDNN avx2, OpenBLAS Haswell (native: .*): capped;' "$T/isa.out"
    fi
    check "--isa avx2: peers.csv isa column, peers.json meta" "$PY" "$T/validate.py" "$T/isa" isa
else
    echo "SKIP - --isa avx2: this CPU lacks AVX2 + FMA"
fi
finish
