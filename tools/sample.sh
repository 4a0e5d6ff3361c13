#!/bin/sh
# make sample: the bundled Fashion-MNIST DiT, one row per class, DPM-Solver++(2M) 10 steps with CFG 4 (as good
# as DDIM-50 or DDPM-250 here, README "Quality") -> samples/fashion.png
set -e
mkdir -p samples
model=models/dit-fashion-f32.gguf
[ -f "$model" ] || { echo "make sample: $model is missing (git lfs? re-clone)" >&2; exit 2; }
bin/dit-sample -m "$model" --class 0,1,2,3,4,5,6,7,8,9 -n 80 --rows-per-class \
    --sampler dpm++2m --steps 10 --cfg-scale 4.0 -s 0 -o samples/fashion.png -v
echo "wrote samples/fashion.png (one labelled row per class)"
