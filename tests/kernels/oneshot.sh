#!/bin/sh
# One-shot latency of dit-sample on a random-weight DiT-XL/2 (256 px, f16): whole-process wall time and
# the -v phases, several runs. Usage (GPU machine, repo root, bin/ carried): sh tests/kernels/oneshot.sh OUT [BIN...]
out=${1:-/tmp/oneshot}; shift
bins="${*:-bin/dit-sample}"
mkdir -p "$out"
xl=/tmp/xl
if [ ! -f $xl/xl.gguf ]; then
    python3 bench/make_xl.py $xl --sizes 256 > /dev/null &&
    bin/dit-convert $xl/DiT-XL-2-256x256.pt --vae $xl/sd-vae-ft-mse -o $xl/xl.gguf --outtype f16 > /dev/null || exit 1
fi
cat $xl/xl.gguf > /dev/null   # in the page cache, as after a first run
for b in $bins; do
    for args in "--sampler dpm++2m" "--steps 250"; do
        for r in 1 2 3; do
            echo "=== $b $args run $r"
            s=$(date +%s%N)
            $b -m $xl/xl.gguf -c 207 -o "$out/a.png" -q -v $args 2>&1 | grep -E "upload|phases|^sample:"
            echo "process wall $(( ($(date +%s%N) - s) / 1000000 )) ms"
        done
    done
done
