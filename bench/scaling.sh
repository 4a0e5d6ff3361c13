#!/bin/sh
# bench/scaling.sh - the multi-GPU scaling table (`make bench` runs it after bench.sh when 2+ GPUs exist).
#
#   sh bench/scaling.sh [CASES...]      CASES: 256x1 512x1 256x8 512x8 (default: all)
#
# For each case: ms/step on 1 GPU and on 2 and 4 GPUs per plan (data, cfg, seq with either attention
# exchange, cfg+seq, and auto), as medians of 3 whole dit_sample calls of STEPS DDPM steps (CFG 4.0,
# random DiT-XL/2 weights, f16; bin/tests/test_cuda --bench --gpus), the speedup over 1 GPU, and the
# exchange time per step (NCCL kernels, or the peer-to-peer push and wait) from an op-by-op profile on
# GPU 0. Appends the table, dated with the GPU name, to bench/RESULTS.md (to $OUT/SCALING-append.md instead when $OUT is set: the device machine).
cd "$(dirname "$0")/.." || exit 2
export NCCL_NVLS_ENABLE=0   # NVLink multicast stays off
T=bin/tests/test_cuda
[ -x $T ] || { echo "scaling: bin/tests/test_cuda not built (make bin/tests/test_cuda)"; exit 0; }
G=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
[ "$G" -ge 2 ] || { echo "scaling: needs 2 or more GPUs ($G visible): skipped"; exit 0; }
cases="${*:-256x1 512x1 256x8 512x8}"
W=bench/.work
mkdir -p $W
log=$W/scaling.log
: >$log
run() { # run RES N GPUS FLAGS SEQMODE LABEL
    [ "$3" -le "$G" ] || return 0
    line=$(timeout 150 $T --bench --res $1 --n $2 --gpus $3 --parallel $4 --seq-mode $5 --steps ${STEPS:-50} --reps 3 2>&1 |
           tee -a $log | grep '^bench-par:')
    [ -n "$line" ] || line="bench-par: failed: $(tail -1 $log)"
    echo "$1 $2 $3 $6 | $line" | tee -a $W/scaling.rows
}
: >$W/scaling.rows
for c in $cases; do
    r=${c%x*} n=${c#*x}
    run $r $n 1 -1 0 "1 GPU"
    if [ "$n" -gt 1 ]; then
        run $r $n 2 1 0 data; run $r $n 4 1 0 data; run $r $n 4 3 0 data+cfg
    else
        run $r $n 2 2 0 cfg; run $r $n 2 4 1 "seq (all-to-all)"; run $r $n 2 4 2 "seq (all-gather)"
        run $r $n 4 6 1 "cfg+seq (all-to-all)"; run $r $n 4 6 2 "cfg+seq (all-gather)"
        run $r $n 4 4 1 "seq (all-to-all)"; run $r $n 4 4 2 "seq (all-gather)"
    fi
    run $r $n 2 0 0 auto; run $r $n 4 0 0 auto
done
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
md=$W/SCALING-append.md
{
    echo
    echo "### $(date -u +%Y-%m-%d) multi-GPU scaling, $G x $gpu (STEPS=${STEPS:-50} DDPM steps, CFG 4.0, random DiT-XL/2 f16)"
    echo
    echo "| case | GPUs | plan | ms/step | speedup vs 1 GPU | exchange ms/step (GPU 0 profile) | plan chosen |"
    echo "|---|---|---|---|---|---|---|"
    awk -F'|' '{
        split($1, a, " "); key = a[1] "x" a[2]; lab = $1; sub(/^[^ ]+ [^ ]+ [^ ]+ /, "", lab); sub(/ +$/, "", lab)
        ms = "failed"; nccl = ""; plan = ""
        if (match($2, /: [0-9.]+ ms\/step/)) { ms = sprintf("%.3f", substr($2, RSTART + 2, RLENGTH - 10)) }
        if (match($2, /exchanges [0-9.]+/)) nccl = substr($2, RSTART + 10, RLENGTH - 10)
        if (match($2, /\[[^]]*\]/)) plan = substr($2, RSTART + 1, RLENGTH - 2)
        if (a[3] == 1) one[key] = ms
        sp = (ms != "failed" && one[key] > 0) ? sprintf("%.2fx", one[key] / ms) : ""
        printf "| %s px, %s image%s | %s | %s | %s | %s | %s | %s |\n", a[1], a[2], (a[2] > 1 ? "s" : ""), a[3], lab, ms, sp, nccl, plan
    }' $W/scaling.rows
} >$md
cat $md
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    cp $md "$OUT/SCALING-append.md"; cp $log "$OUT/scaling.log"
else
    cat $md >>bench/RESULTS.md && echo "scaling: appended to bench/RESULTS.md"
fi
