#!/bin/sh
# make quality: scores the bundled model's samples with the bundled Fashion-MNIST classifier.
# QUALITY_N images per class (default 100); QUALITY_TYPES weight types (default f32 f16 q8_0 q4_0);
# each type with DDIM-50, and f32 also with DDPM-250 and DPM++2M-10/25. Needs dataset-fashion-mnist for the
# real-data rows.
set -e
n=${QUALITY_N:-100}
types=${QUALITY_TYPES:-"f32 f16 q8_0 q4_0"}
mkdir -p build/fashion
for t in $types; do
    m=build/fashion/dit-fashion-$t.gguf
    [ "$t" = f32 ] && m=models/dit-fashion-f32.gguf
    [ -f "$m" ] || bin/dit-quantize models/dit-fashion-f32.gguf "$m" "$t" >/dev/null
    echo "== $t, ddim-50"
    bin/dit-quality -m "$m" -c models/fashion-classifier.gguf -n "$n" --sampler ddim --steps 50 $QUALITY_ARGS
done
echo "== f32, ddpm-250"
bin/dit-quality -m models/dit-fashion-f32.gguf -c models/fashion-classifier.gguf -n "$n" --sampler ddpm --steps 250 $QUALITY_ARGS
for k in 10 25; do
    echo "== f32, dpm++2m-$k"
    bin/dit-quality -m models/dit-fashion-f32.gguf -c models/fashion-classifier.gguf -n "$n" --sampler dpm++2m --steps $k $QUALITY_ARGS
done
