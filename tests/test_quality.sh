#!/bin/sh
# The bundled Fashion-MNIST DiT must still draw the class it is asked for, and every class must vary:
# a broken sampler, embedding, quantizer or CFG fails here. 5 images per class, DDIM-10 on the CPU (and the
# f32 model with DPM++2M-10 and without the CFG batch too).
# Thresholds: conditional accuracy >= 80% (measured 100% at this size and 97.9% with 100 images per
# class and DDIM-50; the classifier itself scores 88.8% on real test images), and a mean within-class
# RMS pixel distance >= 0.05 in [-1, 1] units for every class (measured >= 0.27; a collapsed class is ~0).
# Each check has a negative control that must fail, so the checks can fail.
cd "$(dirname "$0")/.." || exit 2
# Under the sanitizers (make SANITIZE=1 test) the same checks run on 2 images per class, f32 only.
N=5; [ "${DIT_SANITIZE:-}" = 1 ] && N=2
Q="bin/dit-quality -m models/dit-fashion-f32.gguf -c models/fashion-classifier.gguf -n $N --sampler ddim --steps 10 --backend cpu --data /nonexistent"
fail=0
ok() { echo "ok - $1"; }
bad() { echo "not ok - $1"; fail=1; }
out=$($Q --min-accuracy 0.8 --min-diversity 0.05 2>&1); rc=$?
acc=$(echo "$out" | sed -n 's/^conditional accuracy *//p')
div=$(echo "$out" | sed -n 's/^min class diversity *//p')
[ $rc -eq 0 ] && ok "bundled model: conditional accuracy $acc (>= 80%), min class diversity $div (>= 0.05)" \
              || bad "bundled model: rc $rc, accuracy $acc, diversity $div: $(echo "$out" | tail -2 | tr '\n' ' ')"
$Q --min-accuracy 0.8 --label-shift 1 >/dev/null 2>&1
[ $? -eq 3 ] && ok "negative control: asking for the wrong class fails the accuracy check" || bad "label-shift control did not fail"
$Q --min-diversity 0.05 --same-noise >/dev/null 2>&1
[ $? -eq 3 ] && ok "negative control: identical noise per image (collapsed classes) fails the diversity check" || bad "same-noise control did not fail"
for v in "--sampler dpm++2m --steps 10 --cfg-scale 4" "--sampler ddim --steps 10 --no-cfg"; do
    # shellcheck disable=SC2086
    out=$(bin/dit-quality -m models/dit-fashion-f32.gguf -c models/fashion-classifier.gguf -n $N $v --backend cpu \
          --data /nonexistent --min-accuracy 0.6 --min-diversity 0.05 2>&1); rc=$?
    [ $rc -eq 0 ] && ok "bundled model, $v: conditional accuracy $(echo "$out" | sed -n 's/^conditional accuracy *//p')" \
                  || bad "bundled model, $v: rc $rc: $(echo "$out" | tail -2 | tr '\n' ' ')"
done
types="q8_0 q4_0"; [ "${DIT_SANITIZE:-}" = 1 ] && types=""
for t in $types; do
    m=$(mktemp -d)/fashion-$t.gguf
    bin/dit-quantize models/dit-fashion-f32.gguf "$m" $t >/dev/null 2>&1
    out=$(bin/dit-quality -m "$m" -c models/fashion-classifier.gguf -n $N --sampler ddim --steps 10 --backend cpu --data /nonexistent --min-accuracy 0.8 --min-diversity 0.05 2>&1); rc=$?
    [ $rc -eq 0 ] && ok "$t model: conditional accuracy $(echo "$out" | sed -n 's/^conditional accuracy *//p')" || bad "$t model: rc $rc"
    rm -rf "$(dirname "$m")"
done
exit $fail
