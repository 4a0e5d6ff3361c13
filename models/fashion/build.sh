#!/bin/sh
# The user's path from the training checkpoint to the shipped files:
#   sh models/fashion/build.sh fashion_dit.pt   ->  models/dit-fashion-f32.gguf (+ f16/q8_0/q4_0 in build/fashion/)
# dit-convert takes the train.py dict's "ema"; the 192-wide model is no official DiT size, so --heads 3.
set -e
ckpt=${1:?usage: build.sh CHECKPOINT.pt}
out=build/fashion
mkdir -p "$out"
bin/dit-convert "$ckpt" --heads 3 --class-names models/fashion/classes.txt --name dit-fashion -o "$out/dit-fashion-f32.gguf"
for t in f16 q8_0 q4_0; do
    bin/dit-quantize "$out/dit-fashion-f32.gguf" "$out/dit-fashion-$t.gguf" "$t" >/dev/null
done
cp "$out/dit-fashion-f32.gguf" models/dit-fashion-f32.gguf
ls -l "$out" models/dit-fashion-f32.gguf
