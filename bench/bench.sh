#!/bin/sh
# bench/bench.sh - what `make bench` runs: dit.c against PyTorch on one GPU, one table.
#
#   make bench                       (or: sh bench/bench.sh, once bin/ is built)
#
# Steps (scratch files in bench/.work/, git-ignored; the log is bench/.work/bench-<time>.log):
#   1. checks: an NVIDIA GPU (nvidia-smi), PyTorch (python3 -c 'import torch'), the programs in bin/;
#      without a GPU or PyTorch it says what is missing and exits 0 (CI never runs this).
#   2. in the background, bench/torch_baseline.py: builds the random DiT-XL/2 in memory and starts the
#      torch.compile(max-autotune) of the 256 px / 1 image forward while step 3 runs on the CPU; once step 3
#      is done it times the compiled and the eager PyTorch cases, then compiles 256 px / 8 images if the
#      time left allows.
#   3. bench/make_xl.py: random DiT-XL/2 checkpoints (256, 512) and SD VAE; bin/dit-convert (timed, MB/s)
#      to f16 GGUF; bin/dit-quantize to q8_0 (timed).
#   4. bin/bench/bench_dit for f16 and q8_0 at 256 px (1 and 8 images) and 512 px (1 image): 250-step
#      samples with CFG 4.0 (fewer timed steps only if the budget requires; the table says so), VAE
#      decode, GPU memory.
#   5. bench/report.py: the table, the targets (met / missed), appended to bench/RESULTS.md under
#      "## Measurements"; with $OUT set (device machine) the log, table and JSON are copied there too.
#
# Environment:
#   BENCH_BUDGET_S=540      wall-clock budget in seconds for this script (the device allows 600 per command)
#   BENCH_COMPILE=1         1: torch.compile 256/1, and 256/8 when it fits (a max-autotune compile took
#                           ~240 s on an H100: two rarely fit in 540 s); 0: no torch.compile;
#                           only: the compiled 256/8 case alone (no checkpoints, no dit.c), merged into the
#                           table of the earlier run in bench/.work/results.json or BENCH_MERGE=FILE (with
#                           no earlier compiled 256/1 there, 256/1 is compiled too)
#   BENCH_COMPILE_EST_S=260 assumed seconds per max-autotune compile until one has been measured
#   BENCH_DIT_RESERVE_S=110 seconds kept for the dit.c runs and the report at the end
#   BENCH_TINY=1            CPU self-test: tiny models, CPU backend, no GPU needed; the table goes to
#                           bench/.work/RESULTS-tiny.md, never to bench/RESULTS.md
#   BENCH_NO_APPEND=1       print the table but leave bench/RESULTS.md alone
#
# On the lent GPU machine (no network): build here first (`make && make bin/bench/bench_dit`, nvcc 13 as
# there), then run `sh bench/bench.sh` there carrying bin/ (python3 there has torch, numpy). It copies
# bench.log, results.json, torch.json and RESULTS-append.md to $OUT; append RESULTS-append.md to
# bench/RESULTS.md here. Expected: ~6.5 min with one torch.compile; the compiled 256/8 case then comes from
# a second run, `BENCH_COMPILE=only sh bench/bench.sh` (~5 min; merges the first run's results.json when
# the machine still has bench/.work, else it also compiles 256/1 and `python3 bench/report.py --work DIR2
# --merge DIR1/results.json --out /tmp/merged --gpu NAME --driver D --cuda C` merges here).
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SELF")/.." || exit 2
W=bench/.work
mkdir -p "$W" || { echo "bench: error: cannot create $W"; exit 1; }

# ---- run the rest through tee, so everything lands in the log too
if [ -z "${BENCH_CHILD:-}" ]; then
    LOG="$W/bench-$(date -u +%Y%m%d-%H%M%S).log"
    rm -f "$W/.rc"
    BENCH_CHILD=1 BENCH_LOG="$LOG" sh "$SELF" "$@" 2>&1 | tee "$LOG"
    rc=$(cat "$W/.rc" 2>/dev/null || echo 1)
    if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then cp "$LOG" "$OUT/bench.log"; fi
    echo "bench: log in $LOG (exit status $rc)"
    exit "$rc"
fi

RC=0
trap 'echo $RC > "$W/.rc"' EXIT
T0=$(date +%s)
BUDGET=${BENCH_BUDGET_S:-540}
COMPILE=${BENCH_COMPILE:-1}
COMPILE_EST=${BENCH_COMPILE_EST_S:-260}
RESERVE=${BENCH_DIT_RESERVE_S:-110}
TINY=${BENCH_TINY:-0}
FAILED=""
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET - $(elapsed) )); }
say() { printf '[bench %4ss] %s\n' "$(elapsed)" "$*"; }
fail() { say "FAILED: $*"; FAILED="${FAILED:+$FAILED; }$*"; RC=1; }
fnow() { date +%s.%N; }
fsub() { awk "BEGIN { printf \"%.3f\", $1 - $2 }"; }
fsize() { stat -c %s "$1" 2>/dev/null || wc -c <"$1"; }

case "$COMPILE" in 0|1|only) ;; *) echo "bench: error: BENCH_COMPILE must be 0, 1 or only (got '$COMPILE')"; RC=2; exit 2 ;; esac

# ---- 1. checks
if [ "$TINY" = 1 ]; then
    say "BENCH_TINY=1: CPU self-test with tiny models (no GPU; results go to $W/RESULTS-tiny.md)"
    GPU_NAME="cpu (tiny self-test)"; DRIVER="-"; CUDA_VER="-"
    BACKEND=cpu; SIZE_ARGS="--tiny"; CK=DiT-tiny-2; VAEDIR=sd-vae-tiny; CONVERT_ARGS="--heads 2"; SAVE_STEPS=20
    RESULTS="$W/RESULTS-tiny.md"
else
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        echo "bench: nvidia-smi not found: no NVIDIA GPU here, nothing to time."
        echo "bench: make bench needs one GPU and PyTorch (CPU-only self-test: BENCH_TINY=1 sh bench/bench.sh)."
        exit 0
    fi
    GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
    if [ -z "$GPU_NAME" ]; then
        echo "bench: nvidia-smi lists no GPU: nothing to time (make bench needs one GPU)."
        exit 0
    fi
    DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
    CUDA_VER=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n 1)
    BACKEND=cuda; SIZE_ARGS=""; CK=DiT-XL-2; VAEDIR=sd-vae-ft-mse; CONVERT_ARGS=""; SAVE_STEPS=250
    RESULTS=bench/RESULTS.md
fi
[ "${BENCH_NO_APPEND:-0}" = 1 ] && RESULTS=""
if ! TORCH_INFO=$("$PY" -c 'import torch; print(torch.__version__, "cuda" if torch.cuda.is_available() else "no-cuda")' 2>/dev/null); then
    echo "bench: $PY cannot import torch: PyTorch is needed for the checkpoints and the baselines; nothing to time."
    exit 0
fi
say "GPU: $GPU_NAME (driver ${DRIVER:-?}, CUDA ${CUDA_VER:-?}); torch $TORCH_INFO; budget ${BUDGET} s"
if [ "$TINY" != 1 ]; then
    case "$TORCH_INFO" in *no-cuda*) echo "bench: torch has no CUDA here: PyTorch baselines cannot run on the GPU; nothing to compare."; exit 0 ;; esac
    BUSY=$(nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null | wc -l)
    [ "$BUSY" -gt 0 ] && say "warning: $BUSY other process(es) use the GPU: timings will be disturbed"
fi
if [ "$COMPILE" != only ]; then
    for p in bin/dit-convert bin/dit-quantize bin/bench/bench_dit; do
        [ -x "$p" ] || { echo "bench: error: $p is missing: run 'make bench' (or 'make' and 'make bin/bench/bench_dit') first"; RC=1; exit 1; }
    done
    # CUDA libraries the binaries were linked with but the loader cannot find (a machine whose CUDA
    # libraries come with PyTorch's nvidia-* wheels): add those wheels' lib folders
    if ldd bin/bench/bench_dit 2>/dev/null | grep -q "not found"; then
        NVLIBS=$("$PY" -c 'import glob, os, nvidia
print(":".join(sorted({os.path.dirname(f) for p in nvidia.__path__ for f in glob.glob(p + "/**/lib/*.so*", recursive=True)})))' 2>/dev/null)
        if [ -n "$NVLIBS" ]; then
            export LD_LIBRARY_PATH="$NVLIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            say "CUDA libraries from PyTorch's nvidia wheels added to LD_LIBRARY_PATH"
        fi
        ldd bin/bench/bench_dit | grep "not found" && say "warning: libraries still missing (above)"
    fi
    if [ "$BACKEND" = cuda ] && ! bin/bench/bench_dit --info; then
        echo "bench: error: bin/bench/bench_dit cannot use the GPU (CPU-only build, or no GPU visible): rebuild with nvcc present"
        RC=1; exit 1
    fi
fi

# ---- plan
MERGE_FILE=""
if [ "$COMPILE" = only ]; then
    if [ -n "${BENCH_MERGE:-}" ]; then MERGE_FILE=$BENCH_MERGE
    elif [ -f "$W/results.json" ]; then MERGE_FILE="$W/results.json"; fi
    [ -n "$MERGE_FILE" ] && [ ! -f "$MERGE_FILE" ] && { echo "bench: error: BENCH_MERGE=$MERGE_FILE: no such file"; RC=2; exit 2; }
fi
TORCH_DEADLINE=$(( T0 + BUDGET - RESERVE ))
[ "$COMPILE" = only ] && TORCH_DEADLINE=$(( T0 + BUDGET - 10 ))
if [ "$TINY" = 1 ]; then
    TORCH_CASES="eager256x1,eager256x8,eager512x1,loop256x1,vae256x1"
    TORCH_ARGS="--tiny --device cpu --reps 3 --warmup 1 --loop-steps 10 --loop-reps 1"
else
    case "$COMPILE" in
        0) TORCH_CASES="eager256x1,eager256x8,eager512x1,loop256x1,vae256x1" ;;
        1) TORCH_CASES="compile256x1,loopc256x1,eager256x1,eager256x8,eager512x1,loop256x1,vae256x1,compile256x8" ;;
        only)   # 256/8, plus 256/1 when the earlier run being merged has no compiled 256/1
            TORCH_CASES="compile256x8,compile256x1,loopc256x1"
            if [ -n "$MERGE_FILE" ] && "$PY" -c 'import json, sys; c = json.load(open(sys.argv[1])).get("torch", {}); sys.exit(0 if "ms" in c.get("compile256x1", {}) else 1)' "$MERGE_FILE" 2>/dev/null; then
                TORCH_CASES="compile256x8"
            fi ;;
    esac
    TORCH_ARGS="--device cuda --reps 20 --warmup 5 --loop-reps 2"
fi
TD=$(( TORCH_DEADLINE - T0 ))
say "plan (time from now; estimates for one H100; the budget is enforced, the estimates are not):"
if [ "$COMPILE" = only ]; then
    say "  t=0:   PyTorch torch.compile max-autotune, cases $TORCH_CASES (~${COMPILE_EST} s per compile), each"
    say "         started only if it can end by t=${TD} s; nothing else (BENCH_COMPILE=only)${MERGE_FILE:+; merged with $MERGE_FILE}"
else
    say "  t=0:   [cpu] make_xl ~35 s, 2 conversions ~25 s, 2 quantizations ~15 s"
    if [ "$COMPILE" = 1 ] && [ "$TINY" != 1 ]; then
        say "  t=0:   [gpu] PyTorch builds the model and compiles 256/1 (~${COMPILE_EST} s) meanwhile"
        say "  t~$(( COMPILE_EST + 10 )): [gpu] PyTorch times compiled 256/1 + its 250-step loop, then eager 256/1, 256/8, 512/1,"
        say "         the eager 250-step loop (1 warm-up + 2 timed) and the VAE: ~50 s"
        say "  t~$(( COMPILE_EST + 60 )): [gpu] PyTorch compiles 256/8 only if it can end by t=${TD} s, i.e. only if a compile"
        say "         takes <= ~$(( (TD - COMPILE_EST - 60) * 10 / 11 )) s; if not: BENCH_COMPILE=only sh bench/bench.sh afterwards"
    else
        say "  t~75:  [gpu] PyTorch eager 256/1, 256/8, 512/1, 250-step loop (1 warm-up + 2 timed), VAE: ~50 s"
    fi
    say "  t~${TD}: [gpu] dit.c f16 + q8_0 at 256/1, 256/8, 512/1 + VAE decode (~70 s): the last ${RESERVE} s are kept for it"
    say "  then the report; the whole run ends by t=${BUDGET} s"
fi

# ---- 2. PyTorch in the background (it waits for $W/.prep-done before timing anything)
# results of an earlier run must not pass for this run's (an earlier run's table comes in only through
# the merge file of BENCH_COMPILE=only)
rm -f "$W/.prep-done" "$W/torch.json" "$W/torch.log" "$W/prep.txt" "$W"/dit-*.json "$W"/img-*.npy
TIMEOUT=""
command -v timeout >/dev/null 2>&1 && TIMEOUT="timeout -k 10 $(( TORCH_DEADLINE - $(date +%s) + 20 ))"
# shellcheck disable=SC2086
$TIMEOUT "$PY" bench/torch_baseline.py --out "$W/torch.json" --cases "$TORCH_CASES" $TORCH_ARGS \
    --deadline "$TORCH_DEADLINE" --compile-est "$COMPILE_EST" --wait-file "$W/.prep-done" >"$W/torch.log" 2>&1 &
TORCH_PID=$!
trap 'kill "$TORCH_PID" 2>/dev/null; echo "bench: interrupted"; RC=130; exit 130' INT TERM
say "PyTorch baseline started (pid $TORCH_PID, log $W/torch.log)"

# ---- 3. checkpoints, conversion, quantization
PREP_OK=0
if [ "$COMPILE" != only ]; then
    PREP_OK=1
    STAMP=$(cat bench/make_xl.py tests/ref/dit_ref.py | cksum | cut -d' ' -f1)
    if [ -f "$W/$CK-256x256.pt" ] && [ -f "$W/$CK-512x512.pt" ] && [ -f "$W/$VAEDIR/config.json" ] \
            && [ "$(cat "$W/xl.stamp" 2>/dev/null)" = "$STAMP$TINY" ]; then
        say "checkpoints: reusing $W/$CK-*.pt (same make_xl.py)"
    else
        say "checkpoints: python3 bench/make_xl.py $W $SIZE_ARGS"
        rm -f "$W/xl.stamp"
        # shellcheck disable=SC2086
        "$PY" bench/make_xl.py "$W" $SIZE_ARGS
        rc=$?
        if [ $rc -eq 0 ]; then echo "$STAMP$TINY" >"$W/xl.stamp"; else fail "make_xl.py (exit $rc)"; PREP_OK=0; fi
    fi
    : >"$W/prep.txt"
    for s in 256 512; do
        [ "$PREP_OK" = 1 ] || break
        ck="$W/$CK-${s}x${s}.pt"
        out="$W/dit-$s-f16.gguf"
        q8="$W/dit-$s-q8_0.gguf"
        rm -f "$out" "$q8"
        in_bytes=$(( $(fsize "$ck") + $(fsize "$W/$VAEDIR/diffusion_pytorch_model.safetensors") ))
        say "convert: bin/dit-convert $ck --vae $W/$VAEDIR -o $out --outtype f16 $CONVERT_ARGS"
        t0=$(fnow)
        # shellcheck disable=SC2086
        bin/dit-convert "$ck" --vae "$W/$VAEDIR" -o "$out" --outtype f16 $CONVERT_ARGS
        rc=$?
        if [ $rc -ne 0 ]; then fail "dit-convert $ck (exit $rc)"; PREP_OK=0; break; fi
        dt=$(fsub "$(fnow)" "$t0")
        mbs=$(awk "BEGIN { printf \"%.0f\", $in_bytes / 1e6 / $dt }")
        say "convert: $s px: $(awk "BEGIN { printf \"%.0f\", $in_bytes / 1e6 }") MB in $dt s = $mbs MB/s -> $(( $(fsize "$out") / 1000000 )) MB"
        echo "convert_$s $dt $in_bytes $(fsize "$out")" >>"$W/prep.txt"
        say "quantize: bin/dit-quantize $out $q8 q8_0"
        t0=$(fnow)
        bin/dit-quantize "$out" "$q8" q8_0
        rc=$?
        if [ $rc -ne 0 ]; then
            fail "dit-quantize $out (exit $rc)"; rm -f "$q8"
        else
            dt=$(fsub "$(fnow)" "$t0")
            say "quantize: $s px: $dt s -> $(( $(fsize "$q8") / 1000000 )) MB"
            echo "quantize_$s $dt $(fsize "$out") $(fsize "$q8")" >>"$W/prep.txt"
        fi
    done
fi
touch "$W/.prep-done"

# ---- wait for PyTorch (it stops starting work at its deadline; the timeout kills a compile that overruns)
if kill -0 "$TORCH_PID" 2>/dev/null; then
    say "waiting for the PyTorch baseline (compiling / timing; $(( TORCH_DEADLINE - $(date +%s) )) s to its deadline) ..."
fi
wait "$TORCH_PID"
TRC=$?
sed 's/^/    /' "$W/torch.log"
if [ "$TRC" -ne 0 ]; then
    if [ "$TRC" -eq 124 ] || [ "$TRC" -eq 137 ]; then fail "torch_baseline.py stopped at its deadline (a compile overran; partial results kept)"
    else fail "torch_baseline.py (exit $TRC; see above)"; fi
fi

# ---- 4. dit.c
if [ "$PREP_OK" = 1 ]; then
    # units of the remaining time: 256 px runs (1 and 8 images) 2 each, 512 px runs 1 each
    units_left=6; jobs_left=4
    for job in "f16 256 1,8 2" "q8_0 256 1,8 2" "f16 512 1 1" "q8_0 512 1 1"; do
        # shellcheck disable=SC2086
        set -- $job
        ty=$1; s=$2; ns=$3; u=$4
        g="$W/dit-$s-$ty.gguf"
        [ -f "$g" ] || { fail "$g missing (conversion failed)"; units_left=$(( units_left - u )); jobs_left=$(( jobs_left - 1 )); continue; }
        # this run's share of the time left, after ~8 s per run for loading and CUDA set-up and 10 s for the report
        secs=$(( ( $(left) - 10 - 8 * jobs_left ) * u / units_left ))
        [ "$secs" -lt 5 ] && secs=5
        save=""
        [ "$s" = 256 ] && save="--save $W/img-$ty-$s.npy --save-steps $SAVE_STEPS"
        say "dit.c: bin/bench/bench_dit $g -n $ns --steps 250 --max-seconds $secs --backend $BACKEND"
        # shellcheck disable=SC2086
        bin/bench/bench_dit "$g" -n "$ns" --steps 250 --max-seconds "$secs" --backend "$BACKEND" \
            --label "$ty" --json "$W/dit-$ty-$s.json" $save
        rc=$?
        [ $rc -ne 0 ] && fail "bench_dit $g (exit $rc)"
        units_left=$(( units_left - u )); jobs_left=$(( jobs_left - 1 ))
    done
fi

# ---- 5. report
say "report"
MERGE=""
if [ -n "$MERGE_FILE" ]; then
    cp "$MERGE_FILE" "$W/merge-source.json" 2>/dev/null   # results.json is rewritten below
    MERGE="--merge $W/merge-source.json"
fi
# shellcheck disable=SC2086
if ! "$PY" bench/report.py --work "$W" --gpu "$GPU_NAME" --driver "${DRIVER:-?}" --cuda "${CUDA_VER:-?}" \
        --elapsed "$(elapsed)" --budget "$BUDGET" --failed "$FAILED" ${RESULTS:+--append "$RESULTS"} $MERGE; then
    fail "report.py"
fi
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    cp "$W/results.json" "$W/RESULTS-append.md" "$W/torch.json" "$OUT/" 2>/dev/null && say "copied results.json, RESULTS-append.md, torch.json to \$OUT"
fi
say "done in $(elapsed) s (budget $BUDGET s)${FAILED:+; failures: $FAILED}"
