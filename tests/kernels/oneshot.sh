#!/bin/sh
# One-shot latency of dit-sample on a random-weight DiT-XL/2 (f16): whole-process wall time and the -v
# phases, 3 runs per case. Usage (GPU machine, repo root, bin/ carried):
#   sh tests/kernels/oneshot.sh OUT [BIN...]
# RES=512 for 512 px; CASES="args;args;..." (default "--sampler dpm++2m;--steps 250"), e.g.
#   RES=512 CASES="--steps 250;--steps 250 --gpus 2" sh tests/kernels/oneshot.sh /tmp/o
out=${1:-/tmp/oneshot}; shift
bins="${*:-bin/dit-sample}"
res=${RES:-256}
cases=${CASES:-"--sampler dpm++2m;--steps 250"}
mkdir -p "$out"
xl=/tmp/xl$res
export NCCL_NVLS_ENABLE=0
if [ ! -f $xl/xl.gguf ]; then
    python3 bench/make_xl.py $xl --sizes $res > /dev/null &&
    bin/dit-convert $xl/DiT-XL-2-${res}x${res}.pt --vae $xl/sd-vae-ft-mse -o $xl/xl.gguf --outtype f16 > /dev/null || exit 1
fi
cat $xl/xl.gguf > /dev/null   # in the page cache, as after a first run
for b in $bins; do
    echo "$cases" | tr ';' '\n' | while read -r args; do
        for r in 1 2 3; do
            echo "=== $b $res px $args run $r"
            s=$(date +%s%N)
            $b -m $xl/xl.gguf -c 207 -o "$out/a.png" -q -v $args 2>&1 | grep -E "upload|phases|^sample:|^parallel|timings"
            echo "process wall $(( ($(date +%s%N) - s) / 1000000 )) ms"
        done
    done
done
