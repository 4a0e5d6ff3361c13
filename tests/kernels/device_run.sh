#!/bin/sh
# One device call: GPU tests, timings, sanitizers. Usage (on the GPU machine, repo root, bin/ built):
#   sh tests/kernels/device_run.sh OUTDIR [tests|opbench|bench|benchall|san|all]...
# Build first with `make CUDA=1 all bin/tests/test_cuda` (CUDA objects live in build/, apart) and carry bin/.
# Writes OUTDIR/log (everything) and prints a short summary last.
out=${1:-/tmp/dit-out}; shift
mkdir -p "$out"
log="$out/log"
what="${*:-all}"
has() { case " $what " in *" $1 "*|*" all "*) return 0 ;; esac; return 1; }
{
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv
if ! ldd bin/tests/test_cuda | grep -q "cublasLt.*=> /"; then
    d=$(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null)
    export LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH"
fi
ldd bin/tests/test_cuda | grep -E "cublas|cudart|not found"
if has tests; then
    echo "=== tests"; t0=$(date +%s); timeout 200 bin/tests/test_cuda; echo "test_cuda rc=$? ($(( $(date +%s) - t0 )) s)"
fi
if has opbench; then
    echo "=== opbench"; timeout 60 bin/tests/test_cuda --opbench
fi
if has bench; then
    echo "=== bench"
    timeout 60 bin/tests/test_cuda --bench --res 256 --steps 100 --reps 5 --profile "$out/trace256.json" -v
    timeout 60 bin/tests/test_cuda --bench --res 512 --steps 50 --reps 3 --profile "$out/trace512.json" -v
fi
if has benchall; then
    echo "=== bench (all)"
    timeout 60 bin/tests/test_cuda --bench --res 256 --type q8_0 --steps 100 --reps 5
    timeout 60 bin/tests/test_cuda --bench --res 512 --type q8_0 --steps 50 --reps 3
    timeout 60 bin/tests/test_cuda --bench --res 256 --n 8 --steps 20 --reps 3
    DIT_CUDA_GRAPH=0 timeout 60 bin/tests/test_cuda --bench --res 256 --steps 50 --reps 3
fi
if has san; then
    echo "=== compute-sanitizer"
    t0=$(date +%s)
    timeout 150 compute-sanitizer --tool memcheck --leak-check no bin/tests/test_cuda --quick > "$out/memcheck.log" 2>&1
    echo "memcheck rc=$? ($(( $(date +%s) - t0 )) s)"; grep -E "^not ok|ERROR SUMMARY" "$out/memcheck.log"
    t0=$(date +%s)
    timeout 150 compute-sanitizer --tool racecheck --racecheck-report all bin/tests/test_cuda --race > "$out/racecheck.log" 2>&1
    echo "racecheck rc=$? ($(( $(date +%s) - t0 )) s)"; grep -E "^not ok|RACECHECK SUMMARY|ERROR SUMMARY" "$out/racecheck.log"
fi
} > "$log" 2>&1
grep -E "^not ok|^bench:|^opbench:|rc=|ERROR SUMMARY|RACECHECK SUMMARY|^# (all passed|FAILED)" "$log"
