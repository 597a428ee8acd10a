#!/bin/sh
# End-to-end test of bench/run: a real run on images/ with the synthetic
# yolov7-tiny into a temporary run folder, every output file parsed and
# checked (trace nesting, CSV headers, detections against build/yolo-dump),
# then bad inputs, a full disk, Ctrl-C and run-folder naming. Run from the
# repository root after `make bench/run weights`. Prints "N passed, N failed"
# (and skipped checks by name, never counted as passed); exit 1 if any failed.
# No check depends on the machine's speed or load (CI runs this suite again
# with every core busy): times are checked against the rules that produce them.
set -u
PY=${PYTHON:-/usr/bin/python3}
RUN=${BENCH_RUN:-./bench/run}
MODEL=${BENCH_MODEL:-weights/yolov7-tiny.bin}
IMAGES=${BENCH_IMAGES:-images}
DUMP=${YOLO_DUMP:-${YOLO_BUILD:-build}/yolo-dump}
T=$(mktemp -d /tmp/bench_e2e.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0 skip=0
ok() { pass=$((pass + 1)); echo "ok   - $1"; }
ko() { fail=$((fail + 1)); echo "FAIL - $1"; }
sk() { skip=$((skip + 1)); echo "SKIP - $1"; }
check() { # check NAME COMMAND...
    name=$1; shift
    if "$@" >"$T/check.out" 2>&1; then ok "$name"; else ko "$name"; sed 's/^/     /' "$T/check.out"; fi
}
# refuses NEEDLE COMMAND...: COMMAND fails, saying NEEDLE (a check that must catch a bad input)
refuses() {
    needle=$1; shift
    if "$@" >"$T/refuses.out" 2>&1; then echo "accepted"; return 1; fi
    grep -q -- "$needle" "$T/refuses.out" || { cat "$T/refuses.out"; return 1; }
}
# wait_for FILE PID: until FILE is written (bench/run writes run.json once its signal handlers
# are in place) or PID is gone; a slow machine only makes this wait longer (up to 20 minutes)
wait_for() {
    i=0
    while [ ! -s "$1" ] && kill -0 "$2" 2>/dev/null && [ $i -lt 12000 ]; do sleep 0.1; i=$((i + 1)); done
}
# expect_fail NAME NEEDLE [WANT_STATUS] -- ARGS: exit non-zero (or WANT) and NEEDLE on stderr
expect_fail() {
    name=$1 needle=$2 want=$3; shift 4
    "$RUN" "$@" >"$T/out" 2>"$T/err"; st=$?
    if [ "$st" -eq 0 ]; then ko "$name: exit 0"; return; fi
    if [ -n "$want" ] && [ "$st" -ne "$want" ]; then ko "$name: exit $st, want $want"; sed 's/^/     /' "$T/err"; return; fi
    if grep -q -- "$needle" "$T/err"; then ok "$name (exit $st)"; else ko "$name: no '$needle' in: $(cat "$T/err")"; fi
}

if [ ! -x "$RUN" ]; then ko "bench/run is built ($RUN missing)"; echo "$pass passed, $fail failed"; exit 1; fi
if [ ! -f "$MODEL" ]; then ko "model $MODEL exists (make weights)"; echo "$pass passed, $fail failed"; exit 1; fi
NIMG=$(find "$IMAGES" -type f \( -name '*.png' -o -name '*.jpg' -o -name '*.jpeg' \) | wc -l)

# ---- the main run -----------------------------------------------------------------------
R="$T/run"
"$RUN" "$MODEL" "$IMAGES" --run-dir "$R" --warmup 1 --runs 1 --quiet >"$T/main.out" 2>"$T/main.err"
st=$?
if [ $st -eq 0 ]; then ok "main run exits 0"; else ko "main run exits 0 (got $st)"; cat "$T/main.err"; fi
check "prints where the run folder is" grep -q "run folder: $R" "$T/main.out"
for f in run.json summary.json layer_timer.csv layer_types.csv steps_timer.csv energy.csv \
         memory.csv memory_phases.csv trace.json detections.json detections_coco.json; do
    check "$f exists" test -s "$R/$f"
done
check "no temporary files left" sh -c "! find '$R' -name '*.tmp*' | grep -q ."
check "one annotated image per input ($NIMG)" test "$(ls "$R/images" | grep -c '\.jpg$')" -eq "$NIMG"

cat >"$T/validate.py" <<'PYEOF'
import csv, decimal, json, math, sys
d = sys.argv[1]; nimg = int(sys.argv[2]); what = sys.argv[3]
def load(n): return json.load(open(f"{d}/{n}"))
# trace.json times are integer nanoseconds printed as microseconds with three
# decimals: read as decimals they are exact, so nesting is checked with no
# tolerance at all (as floats, ts + dur at ts ~1e7 us is off by ~1e-9)
def load_exact(n): return json.load(open(f"{d}/{n}"), parse_float=decimal.Decimal)
def nesting(xs):  # strict nesting per thread: a child ends no later than its parent
    by = {}
    for e in xs: by.setdefault((e["pid"], e["tid"]), []).append(e)
    for evs in by.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []
        for e in evs:
            while stack and stack[-1] <= e["ts"]: stack.pop()
            end = e["ts"] + e["dur"]
            assert not stack or end <= stack[-1], f"{e} overlaps its parent (ends {end - stack[-1]} us after it)"
            stack.append(end)
def header(n): return next(csv.reader(open(f"{d}/{n}")))
def rows(n): return list(csv.DictReader(open(f"{d}/{n}")))
if what == "json":
    for n in ["run.json", "summary.json", "detections.json", "detections_coco.json", "trace.json"]:
        load(n)
elif what == "run":
    r = load("run.json")
    assert r["completed"] is True and r["schema_version"] == 1, r
    for k in ["count", "batch", "img-size", "square", "conf", "iou", "multi-label", "warmup",
              "runs", "min-time", "threads", "pin", "run-dir", "save-raw", "quiet", "max-arena"]:
        assert k in r["options"], k
    assert len(r["model"]["sha256"]) == 64 and r["model"]["classes"] > 0
    assert r["model"]["gflops_at_img_size_square"] > 0
    for k in ["cpu_model", "kernel", "compiler", "libyolo_version", "fma_peak_gflop_per_s"]:
        assert r["machine"][k], k
    assert r["start_utc"].endswith("Z") and r["end_utc"].endswith("Z")
    assert r["isa"] in ("avx512", "avx2", "generic", "neon") and "isa" in r["options"], r["isa"]
    assert r["isa_chosen_by"] in ("--isa", "YOLO_ISA", "cpu"), r["isa_chosen_by"]
elif what == "isa":  # the run used the ISA asked for, chosen by whom, and that ISA's peak
    r = load("run.json"); s = load("summary.json"); isa, by = sys.argv[4], sys.argv[5]
    peak = {"avx512": "avx512f", "avx2": "avx2+fma", "generic": "sse mul+add"}[isa]
    assert r["isa"] == s["isa"] == isa and r["isa_chosen_by"] == by, (r["isa"], r["isa_chosen_by"])
    assert r["machine"]["fma_peak_isa"] == peak and r["machine"]["fma_peak_gflop_per_s"] > 0, r["machine"]
elif what == "summary":
    s = load("summary.json")
    assert s["latency_ms_median"] > 0 and s["throughput_img_per_s"] > 0
    assert s["images_timed"] == nimg, s["images_timed"]
    assert s["forward_samples"] == nimg and s["forward_ms_min"] <= s["forward_ms_p50"] <= s["forward_ms_max"]
    # coverage = layer times / forward times of the layer-timed passes, from the CSVs
    # (whatever the machine's load: layers nest inside their forward, so <= 1)
    lt = rows("layer_timer.csv"); lp = {x["pass"] for x in lt}
    fwd = sum(int(x["ns"]) for x in rows("steps_timer.csv") if x["step"] == "forward" and x["pass"] in lp)
    lay = sum(int(x["ns"]) for x in lt)
    assert 0 < lay <= fwd, (lay, fwd)
    assert abs(s["layer_coverage_ratio"] - lay / fwd) <= 1e-8 * lay / fwd, (s["layer_coverage_ratio"], lay, fwd)
    assert s["layer_timing_overhead_pct"] is not None
    if s["energy_source"] == "unavailable":
        # null, never 0, and a reason
        assert s["energy_j_per_image"] is None and s["energy_j_timed"] is None
        assert s["energy_unavailable_reason"]
    else:
        assert s["energy_j_timed"] > 0
elif what == "csv":
    assert header("layer_timer.csv") == ["pass", "batch", "layer", "source_index", "type", "out_n",
        "out_c", "out_h", "out_w", "flops", "ns", "start_us"]
    assert header("steps_timer.csv") == ["phase", "pass", "batch", "image_index", "image", "step",
        "parent", "start_us", "ns"]
    assert header("layer_types.csv")[:3] == ["type", "layers_per_forward", "calls"]
    assert header("energy.csv")[:6] == ["phase", "pass", "source", "seconds", "images", "energy_j"]
    assert header("memory.csv") == ["t_s", "phase", "rss_bytes"]
    assert header("memory_phases.csv")[0] == "phase"
    lt = rows("layer_timer.csv")
    r = load("run.json")
    assert len(lt) == nimg * r["model"]["layers"], (len(lt), nimg, r["model"]["layers"])
    types = rows("layer_types.csv")
    assert types[-1]["type"] == "ALL" and int(types[-1]["calls"]) == len(lt)
    assert sum(int(t["calls"]) for t in types[:-1]) == len(lt)
    st = rows("steps_timer.csv")
    assert {x["step"] for x in st} >= {"decode", "letterbox", "to_tensor", "forward", "postprocess", "nms", "scale_boxes", "batch"}
    assert len([x for x in st if x["step"] == "forward" and x["phase"] == "timed"]) == nimg
    e = rows("energy.csv")
    if e[0]["source"] == "unavailable":
        assert all(x["energy_j"] == "" for x in e), "unavailable energy must be empty, not 0"
    assert len(rows("memory.csv")) > 0
elif what == "trace":
    t = load_exact("trace.json")
    ev = t["traceEvents"]; assert isinstance(ev, list) and ev
    assert any(e["ph"] == "M" and e["name"] == "thread_name" for e in ev)
    assert any(e["ph"] == "C" for e in ev)
    xs = [e for e in ev if e["ph"] == "X"]
    for e in xs:
        assert {"name", "ph", "ts", "dur", "pid", "tid"} <= set(e), e
    assert {e["cat"] for e in xs} >= {"pass", "batch", "step", "layer"}
    nesting(xs)
    # every layer event lies inside a forward step
    fw = [(e["ts"], e["ts"] + e["dur"]) for e in xs if e["name"] == "forward"]
    for e in xs:
        if e["cat"] == "layer":
            assert any(a <= e["ts"] and e["ts"] + e["dur"] <= b for a, b in fw), e
elif what == "mintime":  # --runs 1 --min-time S, checked against the rule, not the machine's speed
    S = decimal.Decimal(sys.argv[4]); s = load("summary.json")
    # "go on with timed passes (at least R) until the timed phase has lasted S s": the loop
    # stops at its first check after S s, so the phase (printed to 0.1 ms) lasted >= S
    ph = [x for x in rows("memory_phases.csv") if x["phase"] == "timed"][0]
    assert decimal.Decimal(ph["end_s"]) - decimal.Decimal(ph["start_s"]) >= S - decimal.Decimal("0.0001"), ph
    # and it does not go on longer: a pass starts only while the phase is shorter than S,
    # so the passes before the last one ended less than S after the first one began
    p = sorted((e["ts"], e["ts"] + e["dur"]) for e in load_exact("trace.json")["traceEvents"]
               if e["ph"] == "X" and e["cat"] == "pass" and e["name"].endswith("(timed)"))
    assert len(p) == s["timed_passes"] >= 1, (len(p), s["timed_passes"])
    assert len(p) == 1 or p[-2][1] - p[0][0] < S * 1000000, (len(p), p[-2][1] - p[0][0])
elif what == "detections":
    dj = load("detections.json"); coco = load("detections_coco.json")
    assert len(dj["images"]) == nimg
    n = 0
    for im in dj["images"]:
        for det in im["detections"]:
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 <= x2 <= im["width"] and 0 <= y1 <= y2 <= im["height"], det
            assert 0 <= det["confidence"] <= 1 and det["class_name"]
            n += 1
    assert len(coco) == n
    valid = set(list(range(1, 12)) + list(range(13, 26)) + [27, 28] + list(range(31, 45)) +
                list(range(46, 66)) + [67, 70] + list(range(72, 83)) + list(range(84, 91)))
    for c in coco:
        assert c["category_id"] in valid and len(c["bbox"]) == 4 and c["bbox"][2] >= 0
elif what == "compare":  # detections.json image vs yolo-dump --det-out file
    name, ref = sys.argv[4], sys.argv[5]
    im = [i for i in load("detections.json")["images"] if i["file"] == name][0]
    ref = json.load(open(ref))
    mine = im["detections"]
    assert len(mine) == len(ref), (len(mine), len(ref))
    for a, b in zip(mine, ref):
        assert a["class_id"] == b["cls"], (a, b)
        # bench/run uses the library's default backend and yolo-dump the
        # GEMM one: float sums in another order move a confidence by ~1e-4
        # and a box by a few hundredths of a pixel; a wrong letterbox or
        # scaling moves it by whole pixels
        assert abs(a["confidence"] - b["conf"]) < 1e-3, (a, b)
        for u, v in zip(a["box"], [b["x1"], b["y1"], b["x2"], b["y2"]]):
            assert abs(u - v) < 0.1, (a, b)
elif what == "batchshape":  # images of one batch share the largest minimal letterbox shape
    b = int(sys.argv[4]); ims = load("detections.json")["images"]
    def minimal(w, h, s=640, stride=32):
        r = min(s / h, s / w); nw, nh = round(w * r), round(h * r)
        return nw + (s - nw) % stride, nh + (s - nh) % stride
    first = ims[:b]
    want = (max(minimal(i["width"], i["height"])[0] for i in first),
            max(minimal(i["width"], i["height"])[1] for i in first))
    got = {(i["input_width"], i["input_height"]) for i in first}
    assert got == {want}, (got, want)
    assert want != (640, 640), "test needs images that are not square"
    assert len({minimal(i["width"], i["height"]) for i in first}) > 1, "test needs mixed shapes"
elif what == "energy":  # a fake powercap tree whose counter runs at <= 6 W and wraps
    s = load("summary.json"); r = load("run.json")
    assert s["energy_source"] == "powercap" and s["energy_unavailable_reason"] is None, s
    for k in ["energy_j_timed", "energy_j_per_image", "images_per_j", "gflop_per_j", "power_w_mean_timed"]:
        assert s[k] is not None and s[k] > 0, (k, s[k])
    # the feeder adds 0.3 J at most every 50 ms, so the timed passes (all read inside the timed
    # phase) cannot count more than 0.3 J per 50 ms of it, plus one step; a busy machine only
    # makes the feeder slower (its wraps are counted: test_bench.c, test_powercap_many_wraps)
    ph = [x for x in rows("memory_phases.csv") if x["phase"] == "timed"][0]
    secs = float(ph["end_s"]) - float(ph["start_s"]) + 1e-4
    assert s["energy_j_timed"] <= 0.3 * (secs / 0.05 + 1) + 1e-9, (s["energy_j_timed"], secs)
    e = rows("energy.csv")
    assert all(x["package_j"] != "" and x["dram_j"] == "" for x in e), e
    assert [x for x in e if x["phase"] == "timed_total"], e
    assert r["energy"]["domains"][0]["kind"] == "package"
    t = load("trace.json")["traceEvents"]
    assert any(x["ph"] == "C" and x["name"] == "power_w" for x in t)
elif what == "incomplete":
    r = load("run.json")
    assert r["completed"] is False, r["completed"]
    if len(sys.argv) > 4: assert r["interrupted_by_signal"] == int(sys.argv[4]), r["interrupted_by_signal"]
PYEOF
V() { "$PY" "$T/validate.py" "$@"; }
check "all JSON files parse" V "$R" "$NIMG" json
check "run.json: options, model, machine, times, completed" V "$R" "$NIMG" run
check "summary.json: headline figures, energy null not 0" V "$R" "$NIMG" summary
check "CSV headers and row counts" V "$R" "$NIMG" csv
check "trace.json: events, strict nesting, counters, metadata" V "$R" "$NIMG" trace
# the nesting check itself, on hand-made traces at ts ~1.8e7 us (where ts + dur as floats is
# off by ~4e-9): a child that ends exactly where its parent ends nests; one 1 ns later does not
mktrace() { # DIR DUR_OF_THE_LAST_CHILD
    mkdir -p "$1"
    cat >"$1/trace.json" <<EOF
{"traceEvents": [
{"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": "pipeline"}},
{"name": "rss_mb", "cat": "counter", "ph": "C", "ts": 18000000.000, "pid": 1, "tid": 1, "args": {"rss_mb": 1}},
{"name": "pass 0 (timed)", "cat": "pass", "ph": "X", "ts": 18000000.000, "dur": 1000.000, "pid": 1, "tid": 1},
{"name": "batch 0", "cat": "batch", "ph": "X", "ts": 18000010.000, "dur": 980.000, "pid": 1, "tid": 1},
{"name": "forward", "cat": "step", "ph": "X", "ts": 18000020.000, "dur": 100.000, "pid": 1, "tid": 1},
{"name": "Conv", "cat": "layer", "ph": "X", "ts": 18000030.000, "dur": 50.000, "pid": 1, "tid": 1},
{"name": "postprocess", "cat": "step", "ph": "X", "ts": 18000194.936, "dur": 759.924, "pid": 1, "tid": 1},
{"name": "scale_boxes", "cat": "step", "ph": "X", "ts": 18000953.727, "dur": $2, "pid": 1, "tid": 1}]}
EOF
}
mktrace "$T/tr_edge" 1.133
mktrace "$T/tr_over" 1.134
check "trace nesting check: a child ending exactly with its parent at ts 1.8e7 us nests" V "$T/tr_edge" 0 trace
check "trace nesting check: a child ending 1 ns after its parent is refused" \
    refuses "overlaps its parent" V "$T/tr_over" 0 trace
check "detections.json / detections_coco.json consistent" V "$R" "$NIMG" detections

if [ -x "$DUMP" ]; then
    for img in $(cd "$IMAGES" && find . -type f \( -name '*.png' -o -name '*.jpg' \) | sed 's|^\./||' | sort); do
        if "$DUMP" "$MODEL" "$IMAGES/$img" --det-out "$T/ref.json" >/dev/null 2>"$T/dump.err"; then
            check "detections of $img match yolo-dump" V "$R" "$NIMG" compare "$img" "$T/ref.json"
        else
            ko "yolo-dump on $img: $(cat "$T/dump.err")"
        fi
    done
else
    sk "detections vs the library's own ($DUMP not built: run make $DUMP)"
fi

# ---- options and suite file ------------------------------------------------------------------
printf 'runs = 2\nwarmup = 3\ncount = 2\nno-images = true\nlayer-timing = false\n' >"$T/suite.conf"
"$RUN" "$MODEL" "$IMAGES" --config "$T/suite.conf" --warmup 0 --run-dir "$T/cfg" --quiet >/dev/null 2>"$T/err"
check "suite file run exits 0" test $? -eq 0
check "suite file values used, command line wins" "$PY" -c "
import json; r = json.load(open('$T/cfg/run.json'))['options']; s = json.load(open('$T/cfg/summary.json'))
assert r['runs'] == 2 and r['warmup'] == 0 and r['count'] == 2, r
assert s['timed_passes'] == 2 and s['warmup_passes'] == 0 and s['images_timed'] == 4, s"
check "--no-images writes no images/" test ! -e "$T/cfg/images"

# ---- batches and raw predictions ---------------------------------------------------------------
"$RUN" "$MODEL" "$IMAGES" --batch 2 --count 2 --warmup 0 --runs 1 --no-layer-timing --no-images --save-raw --run-dir "$T/b2" --quiet >/dev/null 2>"$T/err"
check "--batch 2 --save-raw run exits 0" test $? -eq 0
check "--save-raw: .npy per image with rows x (5+classes)" "$PY" -c "
import json, glob, numpy as np
d = json.load(open('$T/b2/detections.json'))['images']; r = json.load(open('$T/b2/run.json'))
f = sorted(glob.glob('$T/b2/raw/*.npy')); assert len(f) == len(d) == 2, f
a = np.load(f[0]); assert a.dtype == np.float32 and a.shape[1] == 5 + r['model']['classes'], a.shape
assert d[0]['input_width'] == d[1]['input_width'] and d[0]['input_height'] == d[1]['input_height']"

# ---- the ISA of the library's kernels: --isa, the suite file, YOLO_ISA --------------------------
F1="--count 1 --warmup 0 --runs 1 --no-layer-timing --no-images --quiet"
ISAS=$("$DUMP" --list-isas 2>/dev/null)
[ -n "$ISAS" ] || ko "yolo-dump --list-isas names the ISAs this CPU runs ($DUMP)"
for isa in $ISAS; do
    "$RUN" "$MODEL" "$IMAGES" --isa "$isa" $F1 --run-dir "$T/isa-$isa" >/dev/null 2>"$T/err"
    check "--isa $isa exits 0" test $? -eq 0
    check "--isa $isa: run.json and summary.json say $isa, the FMA peak is $isa's" V "$T/isa-$isa" 0 isa "$isa" --isa
done
printf 'isa = generic\n' >"$T/isa.conf"
"$RUN" "$MODEL" "$IMAGES" --config "$T/isa.conf" $F1 --run-dir "$T/isa-conf" >/dev/null 2>"$T/err"
check "isa = generic in a suite file" V "$T/isa-conf" 0 isa generic --isa
YOLO_ISA=generic "$RUN" "$MODEL" "$IMAGES" $F1 --run-dir "$T/isa-env" >/dev/null 2>"$T/err"
check "YOLO_ISA=generic without --isa: generic, chosen by YOLO_ISA" V "$T/isa-env" 0 isa generic YOLO_ISA
expect_fail "--isa neon on this CPU" "ISA neon .* the CPU lacks it" 1 -- "$MODEL" "$IMAGES" --isa neon --run-dir "$T/x9"
YOLO_ISA=sse9 "$RUN" "$MODEL" "$IMAGES" --run-dir "$T/x10" >/dev/null 2>"$T/err"
check "YOLO_ISA=sse9: exit 1 and the library's message" sh -c "test $? -eq 1 && grep -q 'YOLO_ISA=sse9 names no ISA' '$T/err'"
expect_fail "--isa that is not an ISA" "not an ISA" 64 -- "$MODEL" "$IMAGES" --isa sse
check "no run folder left by a refused ISA" test ! -e "$T/x9" -a ! -e "$T/x10"

# ---- run folder naming: never overwrite -------------------------------------------------------
mkdir "$T/cwd"
ABSRUN=$(cd "$(dirname "$RUN")" && pwd)/$(basename "$RUN")
ABSMODEL=$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")
ABSIMG=$(cd "$IMAGES" && pwd)
for i in 1 2; do
    (cd "$T/cwd" && "$ABSRUN" "$ABSMODEL" "$ABSIMG" --count 1 --warmup 0 --runs 1 --no-layer-timing --no-images --quiet >/dev/null 2>&1)
done
check "two default runs get two outputs/<run_id> folders" test "$(ls "$T/cwd/outputs" | wc -l)" -eq 2
check "run_id is UTC time plus model name" sh -c "ls '$T/cwd/outputs' | grep -Eq '^[0-9]{8}T[0-9]{6}Z_'"
expect_fail "--run-dir of an earlier run refused" "already holds a run" 1 -- "$MODEL" "$IMAGES" --run-dir "$R" --quiet

# ---- bad inputs -----------------------------------------------------------------------------------
mkdir "$T/empty"
head -c 5000 /dev/urandom >"$T/corrupt.bin"
head -c 4096 "$MODEL" >"$T/truncated.bin"
expect_fail "missing image folder" "No such file" 1 -- "$MODEL" "$T/nope" --run-dir "$T/x1"
expect_fail "empty image folder" "no PNG or JPEG" 1 -- "$MODEL" "$T/empty" --run-dir "$T/x2"
expect_fail "corrupt model" "cannot load model" 1 -- "$T/corrupt.bin" "$IMAGES" --run-dir "$T/x3"
expect_fail "truncated model" "cannot load model" 1 -- "$T/truncated.bin" "$IMAGES" --run-dir "$T/x4"
expect_fail "missing model" "cannot load model" 1 -- "$T/none.bin" "$IMAGES" --run-dir "$T/x5"
expect_fail "bad option value" "out of range" 64 -- "$MODEL" "$IMAGES" --batch 0
expect_fail "unknown option" "unknown option" 64 -- "$MODEL" "$IMAGES" --frobnicate
expect_fail "img-size not a multiple of the stride" "not a multiple" 64 -- "$MODEL" "$IMAGES" --img-size 100 --run-dir "$T/x6"
expect_fail "run dir that cannot be created" "cannot create run dir" 1 -- "$MODEL" "$IMAGES" --run-dir /dev/null/run
check "no run folder left by failures before the run" test ! -e "$T/x1" -a ! -e "$T/x3" -a ! -e "$T/x6"

# unreadable and truncated images are skipped, named, and the run goes on with exit 2
mkdir "$T/mixed"
FIRST=$(find "$IMAGES" -type f -name '*.png' | sort | head -1)
cp "$FIRST" "$T/mixed/good.png"
JPG=$(find "$IMAGES" -type f -name '*.jpg' | sort | head -1)
head -c 3000 "$JPG" >"$T/mixed/truncated.jpg"
printf '\211PNG\r\n\032\n garbage' >"$T/mixed/broken.png"
"$RUN" "$MODEL" "$T/mixed" --run-dir "$T/mixedrun" --warmup 0 --runs 1 --no-layer-timing --quiet >/dev/null 2>"$T/err"
st=$?
check "skipped images give exit 2 (got $st)" test $st -eq 2
check "warning names the truncated image" grep -q "skipping .*truncated.jpg" "$T/err"
check "warning names the broken image" grep -q "skipping .*broken.png" "$T/err"
check "the run went on with the good image" "$PY" -c "
import json; s = json.load(open('$T/mixedrun/summary.json')); assert s['images_timed'] == 1 and s['images_skipped'] == 2, s"

# ---- a full disk (file size limit): clear message, non-zero, no partial files ------------------------
( ulimit -f 40; exec "$RUN" "$MODEL" "$IMAGES" --run-dir "$T/full" --warmup 0 --runs 1 --quiet ) >/dev/null 2>"$T/err"
st=$?
check "file size limit: exit non-zero (got $st)" test $st -ne 0
check "file size limit: message names the file" grep -q "cannot write .*File too large" "$T/err"
check "file size limit: no temporary files left" sh -c "! find '$T/full' -name '*.tmp*' | grep -q ."
check "file size limit: every file present is complete JSON/CSV" "$PY" -c "
import json, os, glob
for f in glob.glob('$T/full/*.json'): json.load(open(f))
assert not os.path.exists('$T/full/layer_timer.csv') or open('$T/full/layer_timer.csv').read().endswith('\n')"

# ---- SIGINT: stop after the current batch, write what is complete, mark incomplete -------------
"$RUN" "$MODEL" "$IMAGES" --run-dir "$T/int" --warmup 0 --runs 1000 --quiet >/dev/null 2>"$T/err" &
pid=$!
wait_for "$T/int/run.json" $pid
sleep 2
kill -INT $pid
wait $pid
st=$?
check "SIGINT: exit 130 (got $st)" test $st -eq 130
check "SIGINT: run.json says incomplete, signal 2" V "$T/int" 0 incomplete 2
check "SIGINT: summary.json and trace.json written" "$PY" -c "
import json; json.load(open('$T/int/summary.json')); json.load(open('$T/int/trace.json'))"

# ---- more options --------------------------------------------------------------------------------
check "--quiet: stdout is only the run folder line" test "$(wc -l <"$T/main.out")" -eq 1
F="--warmup 0 --runs 1 --no-layer-timing --no-images --quiet"
"$RUN" "$MODEL" "$IMAGES" --batch 4 --count 8 $F --run-dir "$T/b4" >/dev/null 2>"$T/err"
check "--batch 4 --count 8 (repeat) exits 0" test $? -eq 0
check "--batch 4 --count 8: 8 images in 2 forwards" "$PY" -c "
import json; s = json.load(open('$T/b4/summary.json'))
assert s['images_timed'] == 8 and s['forward_samples'] == 2 and s['decode_samples'] == 8, s
assert abs(s['time_ms_per_image'] * 8 - s['batch_ms_mean'] * 2) < 1e-6 * s['batch_ms_mean'], s"
# landscape images of two aspect ratios: the batch canvas is the larger minimal shape and not
# the square (a square or portrait image would make it the square)
mkdir "$T/wide"
"$PY" -c "
import json, shutil, struct, zlib, numpy as np
for i in json.load(open('$R/detections.json'))['images']:
    if i['width'] > i['height']: shutil.copy('$IMAGES/' + i['file'], '$T/wide/')
# a 600x200 RGB PNG written with zlib alone (no imaging package needed)
px = np.random.default_rng(0).integers(0, 255, (200, 600, 3), dtype=np.uint8)
raw = b''.join(b'\\0' + row.tobytes() for row in px)
chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
open('$T/wide/strip.png', 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 600, 200, 8, 2, 0, 0, 0))
    + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))" 2>"$T/err"
NW=$(ls "$T/wide" | wc -l)
"$RUN" "$MODEL" "$T/wide" --batch "$NW" $F --run-dir "$T/bw" >/dev/null 2>"$T/err"
check "--batch $NW of non-square images exits 0" test $? -eq 0
check "--batch: one letterbox shape per batch, the largest minimal one" V "$T/bw" 0 batchshape "$NW"
"$RUN" "$MODEL" "$IMAGES" --count 3 $F --run-dir "$T/c3" >/dev/null 2>"$T/err"
check "--count 3 subsamples 3 distinct images" "$PY" -c "
import json; d = json.load(open('$T/c3/detections.json'))['images']; s = json.load(open('$T/c3/summary.json'))
assert s['images_timed'] == 3 and len({i['file'] for i in d}) == 3, (s['images_timed'], d)"
mkdir "$T/rect"; cp "$(find "$IMAGES" -type f -name '*.jpg' | sort | head -1)" "$T/rect/"
"$RUN" "$MODEL" "$T/rect" --square $F --run-dir "$T/sq" >/dev/null 2>"$T/err"
check "--square: the network input is img-size square" "$PY" -c "
import json; i = json.load(open('$T/sq/detections.json'))['images'][0]
assert (i['input_width'], i['input_height']) == (640, 640) and i['width'] != i['height'], i"
# small passes (one image at 160 px), so that on most machines 1 s takes several of them; the
# check holds however long a pass takes
"$RUN" "$MODEL" "$IMAGES" --count 1 --img-size 160 --min-time 1 $F --run-dir "$T/mt" >/dev/null 2>"$T/err"
check "--min-time 1 --runs 1 exits 0" test $? -eq 0
check "--min-time 1 with --runs 1: passes go on until the timed phase has lasted 1 s, not longer" \
    V "$T/mt" 0 mintime 1
"$RUN" "$MODEL" "$IMAGES" --count 1 --pin 0 $F --run-dir "$T/pin" >/dev/null 2>"$T/err"
check "--pin 0: the process may use CPU 0 only" "$PY" -c "
import json; m = json.load(open('$T/pin/run.json'))['machine']
assert m['pinned_cpus'] == '0' and m['cpus_allowed'] == 1, m"
expect_fail "--pin of a CPU list that is not one" "not a CPU list" 64 -- "$MODEL" "$IMAGES" --pin 3-1

# ---- terminal output: summary, progress bar only on a terminal ------------------------------------
"$RUN" "$MODEL" "$IMAGES" --count 2 --batch 2 --warmup 0 --runs 1 --no-images --run-dir "$T/tty0" >"$T/sum.out" 2>"$T/sum.err"
check "summary printed to stdout" "$PY" -c "
t = open('$T/sum.out').read()
for k in ['Time per layer type', 'total ms', 'GFLOP/s', 'Pipeline steps', 'p99', 'per image or per batch',
          'Per image: throughput', 'Per batch of 2 images', 'Layer callback: forward overhead',
          'FMA peak', 'Energy', 'Memory: peak RSS', 'library: arena', 'Counters']:
    assert k in t, k
assert t.rstrip().splitlines()[-1] == 'run folder: $T/tty0'"
check "no progress bar when stderr is not a terminal" sh -c "! grep -q \"\$(printf '\r')\" '$T/sum.err'"
if command -v script >/dev/null 2>&1; then
    script -qc "'$RUN' '$MODEL' '$IMAGES' --count 2 --warmup 0 --runs 1 --no-layer-timing --no-images --run-dir '$T/tty1' >/dev/null" "$T/tty.log" >/dev/null 2>&1
    if [ -s "$T/tty.log" ]; then
        check "a progress bar when stderr is a terminal" grep -q "pass 1/1 timed" "$T/tty.log"
    else
        sk "progress bar on a terminal (script(1) could not open a pseudo-terminal here)"
    fi
else
    sk "progress bar on a terminal (no script(1))"
fi

# ---- energy from a fake powercap tree: a package counter at 6 W that wraps every 1 J ----------------
P="$T/powercap/intel-rapl:0"
mkdir -p "$P" "$T/powercap/intel-rapl-mmio:0"
echo package-0 >"$P/name"; echo 1000000 >"$P/max_energy_range_uj"; echo 0 >"$P/energy_uj"
echo package-0 >"$T/powercap/intel-rapl-mmio:0/name"; echo 5 >"$T/powercap/intel-rapl-mmio:0/energy_uj"
# one process (no fork per step), each value replaced atomically, >= 50 ms apart
"$PY" -c "
import os, sys, time
zone, stop = sys.argv[1], sys.argv[2]
v = 0
while not os.path.exists(stop):
    v = (v + 300000) % 1000000
    with open(zone + '/e.tmp', 'w') as f: f.write('%d\\n' % v)
    os.replace(zone + '/e.tmp', zone + '/energy_uj')
    time.sleep(0.05)" "$P" "$T/powercap/stop" &
feeder=$!
BENCH_POWERCAP_ROOT="$T/powercap" "$RUN" "$MODEL" "$IMAGES" --count 2 --warmup 1 --runs 1 --min-time 1 --no-images --energy-interval 10 --quiet --run-dir "$T/en" >/dev/null 2>"$T/err"
st=$?
touch "$T/powercap/stop"; wait $feeder
check "fake powercap run exits 0 (got $st)" test $st -eq 0
check "energy: J, J/image, images/J, GFLOP/J, W; at most 6 W; mmio skipped; power track" V "$T/en" 0 energy

# ---- a --no-fuse export shows Conv2d, BatchNorm2d and the activation apart -------------------------
PT=${MODEL%.bin}.pt
if [ -f "$PT" ] && [ -f tools/export.py ] && "$PY" tools/export.py --no-fuse "$PT" "$T/nofuse.bin" >/dev/null 2>"$T/err"; then
    "$RUN" "$T/nofuse.bin" "$IMAGES" --count 1 --warmup 0 --runs 1 --no-images --quiet --run-dir "$T/nf" >/dev/null 2>"$T/err"
    check "--no-fuse layer_types.csv: Conv2d, BatchNorm2d, activation rows" "$PY" -c "
import csv, json; act = json.load(open('$T/nf/run.json'))['model']['activation'].split('(')[0]
t = {r['type'] for r in csv.DictReader(open('$T/nf/layer_types.csv'))}
assert {'Conv2d', 'BatchNorm2d', act} <= t, (t, act)"
else
    sk "--no-fuse layer types (no $PT or the export failed: $(cat "$T/err" 2>/dev/null | tail -1))"
fi

# ---- more bad inputs ---------------------------------------------------------------------------------
mkdir "$T/other"; echo text >"$T/other/notes.txt"
expect_fail "folder with only other files" "only other files" 1 -- "$MODEL" "$T/other" --run-dir "$T/x7"
cp "$MODEL" "$T/v9.bin"; printf '\011' | dd of="$T/v9.bin" bs=1 seek=8 conv=notrunc 2>/dev/null
expect_fail "wrong model format version" "version 9" 1 -- "$T/v9.bin" "$IMAGES" --run-dir "$T/x8"
printf 'runs = 2\nbogus = 1\n' >"$T/bad.conf"
expect_fail "unknown key in a suite file names file and line" "bad.conf:2: unknown key" 64 -- "$MODEL" "$IMAGES" --config "$T/bad.conf"
expect_fail "missing suite file" "cannot read config file" 64 -- "$MODEL" "$IMAGES" --config "$T/none.conf"
check "no run folder left by these failures" test ! -e "$T/x7" -a ! -e "$T/x8"
expect_fail "--max-arena 1: the first forward is refused, naming the size and the limit" \
    "needs [0-9]* bytes of activation memory .*limit of 1048576 bytes" 1 -- \
    "$MODEL" "$IMAGES" --max-arena 1 --count 1 --warmup 0 --runs 1 --no-images --quiet --run-dir "$T/arena"

# ---- SIGTERM: like SIGINT, exit 143 ------------------------------------------------------------------
"$RUN" "$MODEL" "$IMAGES" --run-dir "$T/term" --warmup 0 --runs 1000 --no-images --quiet >/dev/null 2>"$T/err" &
pid=$!
wait_for "$T/term/run.json" $pid
sleep 2
kill -TERM $pid
wait $pid
st=$?
check "SIGTERM: exit 143 (got $st)" test $st -eq 143
check "SIGTERM: run.json says incomplete, signal 15" V "$T/term" 0 incomplete 15
check "SIGTERM: no temporary files left" sh -c "! find '$T/term' -name '*.tmp*' | grep -q ."

# ---- --help / --version ------------------------------------------------------------------------
check "--help exits 0 and lists options" sh -c "'$RUN' --help | grep -q -- '--min-time'"
check "--version" sh -c "'$RUN' --version | grep -q libyolo"

echo
if [ $skip -gt 0 ]; then
    echo "$pass passed, $fail failed, $skip skipped"
else
    echo "$pass passed, $fail failed"
fi
[ $fail -eq 0 ]
