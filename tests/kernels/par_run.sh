#!/bin/sh
# One device call on a machine with several GPUs: the multi-GPU checks, then bench/scaling.sh.
# Usage (repo root on the GPU machine, bin/ built with CUDA and carried):
#   sh tests/kernels/par_run.sh OUTDIR [tests] [256x1] [512x1] [256x8] [512x8]
# Writes OUTDIR/log (everything) and prints the TAP lines and the scaling rows.
out=${1:-/tmp/dit-par}; shift
mkdir -p "$out"
what="${*:-tests 256x1 512x1 256x8 512x8}"
export NCCL_NVLS_ENABLE=0
cases=$(echo " $what " | sed 's/ tests / /')
{
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
nvidia-smi topo -m
case " $what " in *" tests "*)
    echo "=== test_cuda --parallel"; t0=$(date +%s)
    timeout 400 bin/tests/test_cuda --parallel; echo "test_cuda --parallel rc=$? ($(( $(date +%s) - t0 )) s)"
    echo "=== tests/test_parallel.sh"; t0=$(date +%s)
    timeout 300 sh tests/test_parallel.sh; echo "test_parallel.sh rc=$? ($(( $(date +%s) - t0 )) s)" ;;
esac
[ -n "$(echo $cases)" ] && OUT="$out" sh bench/scaling.sh $cases
} > "$out/log" 2>&1
grep -E "^not ok|^ok|^[0-9]+ [0-9]+ [0-9]+ |rc=|error" "$out/log"
