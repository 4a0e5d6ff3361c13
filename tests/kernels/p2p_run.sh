#!/bin/sh
# One device call for the peer-to-peer all-gather: the multi-GPU tests, then ms/step per plan.
# Usage (GPU machine, repo root, bin/ carried): sh tests/kernels/p2p_run.sh [tests] [CASE...]
#   CASE = RES:N:GPUS:FLAGS:SEQMODE[:P2P]  (FLAGS as test_cuda --parallel: -1 one GPU, 0 auto, data 1,
#   cfg 2, seq 4; SEQMODE 1 Ulysses, 2 all-gather; P2P 0 forces NCCL)
export NCCL_NVLS_ENABLE=0
if [ "$1" = tests ]; then
    shift
    log=${OUT:-/tmp}/par.log   # kept under $OUT: it comes back from the device
    t0=$(date +%s); timeout 400 bin/tests/test_cuda --parallel > $log 2>&1; rc=$?
    echo "test_cuda --parallel rc=$rc ($(( $(date +%s) - t0 )) s): $(grep -c '^ok' $log) ok"
    grep -E "^not ok|^# " $log | cut -c1-240
    [ $rc -eq 0 ] || tail -15 $log | cut -c1-400   # a crash: its last words
fi
for c in "$@"; do
    IFS=: read -r res n g fl sm pp <<E
$c
E
    DIT_PAR_P2P=${pp:-1} timeout 150 bin/tests/test_cuda --bench --res $res --n $n --gpus $g --parallel $fl \
        --seq-mode $sm --steps 50 --reps 3 2>&1 | grep -E "bench-par|error" | sed "s/^/[$c] /" | cut -c1-260
done
