#!/bin/sh
# tests/test_parallel.sh - multi-process sampling: two dit-sample processes, one GPU each, as a user
# would start them (README "Several GPUs"). Needs 2 GPUs and a CUDA build; SKIPs otherwise.
# Checks: the id through a file and over TCP give the latents of one GPU (2e-2 x max|ref|, the bound of
# tests/test_cuda.c's plan tests); rank 1 writes no files; a rank whose peer never comes stops with an
# error within its timeout instead of hanging.
cd "$(dirname "$0")/.." || exit 2
S=bin/dit-sample
T=$(mktemp -d /tmp/dit-test-par-XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
ok() { echo "ok - $*"; }
nok() { echo "not ok - $*"; fail=1; }
skip_all() { echo "ok - multi-process sampling # SKIP $*"; exit 0; }

[ -x $S ] && [ -x bin/dit-convert ] || skip_all "bin/dit-sample not built"
nm $S 2>/dev/null | grep -q dit_cuda_init_parallel || skip_all "this build has no CUDA backend"
n_gpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
[ "$n_gpu" -ge 2 ] || skip_all "needs 2 GPUs, $n_gpu visible"
PY=
for p in python3 /usr/bin/python3; do $p -c 'import numpy' 2>/dev/null && PY=$p && break; done
[ -n "$PY" ] || skip_all "no python3 with numpy to compare latents"
bin/dit-convert tests/fixtures/dit_s.pt --vae tests/fixtures/vae_s --heads 2 -o "$T/s.gguf" >/dev/null 2>&1 ||
    skip_all "bin/dit-convert failed"
export NCCL_NVLS_ENABLE=0

same() { # same NAME A.npy B.npy
    r=$($PY -c "
import numpy as np
a = np.load('$2'); b = np.load('$3')
d = float(np.abs(a.astype(np.float64) - b).max()); tol = 2e-2 * max(1.0, float(np.abs(b).max()))
print('%s max|diff| %.3g <= %.3g' % ('ok' if a.shape == b.shape and d <= tol else 'bad', d, tol))" 2>&1)
    case "$r" in ok*) ok "$1: ${r#ok }" ;; *) nok "$1: $r" ;; esac
}

ARGS="-m $T/s.gguf --class 1,7,3 --steps 10 -s 5 -q"
timeout 120 $S $ARGS --save-latent "$T/one.npy" -o "$T/one.png" || nok "one GPU run"

# two processes; $1 = how they share the NCCL id (env assignments), $2 = parallel plan, $3 = label.
# r1.* are never removed: no run may leave one; the id file is looked for after every run
two() {
    rm -f "$T/r0.png" "$T/id"
    env $1 DIT_RANK=1 DIT_WORLD_SIZE=2 DIT_LOCAL_RANK=1 timeout 120 $S $ARGS --parallel "$2" --save-latent "$T/r1.npy" \
        -o "$T/r1.png" 2>"$T/err1" &
    pid=$!
    env $1 DIT_RANK=0 DIT_WORLD_SIZE=2 DIT_LOCAL_RANK=0 timeout 120 $S $ARGS --parallel "$2" --save-latent "$T/r0.npy" \
        -o "$T/r0.png" 2>"$T/err0"
    rc0=$?
    wait $pid
    rc1=$?
    [ -e "$T/id" ] && id_left=1
    if [ $rc0 -eq 0 ] && [ $rc1 -eq 0 ]; then
        same "2 processes, $3, --parallel $2 == one GPU" "$T/r0.npy" "$T/one.npy"
    else
        nok "2 processes, $3, --parallel $2: exit $rc0/$rc1: $(tail -1 "$T/err0") / $(tail -1 "$T/err1")"
    fi
}
id_left=0
for plan in cfg seq data; do two "DIT_NCCL_ID_FILE=$T/id" $plan "id file"; done
two "DIT_MASTER=127.0.0.1:29517" cfg "id over TCP"
[ -e "$T/r1.png" ] || [ -e "$T/r1.npy" ] && nok "rank 1 wrote files" || ok "rank 1 wrote no files"
[ $id_left = 1 ] && nok "rank 0 left the id file behind" || ok "rank 0 removed the id file"

# rank 0 alone: its peer never comes; it must end with an error, not hang
start=$(date +%s)
DIT_NCCL_ID_FILE="$T/id" DIT_RANK=0 DIT_WORLD_SIZE=2 DIT_LOCAL_RANK=0 timeout 60 $S $ARGS --nccl-timeout 5 \
    -o "$T/x.png" 2>"$T/err"
rc=$?
dt=$(( $(date +%s) - start ))
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $dt -lt 40 ] && [ "$(wc -l <"$T/err")" -le 2 ] && [ ! -e "$T/x.png" ]; then
    ok "rank 0 without its peer: exit $rc after ${dt} s: $(tail -1 "$T/err")"
else
    nok "rank 0 without its peer: exit $rc after ${dt} s: $(tail -2 "$T/err")"
fi
exit $fail
