#!/bin/sh
# tests/test_sample.sh - bin/dit-sample end to end on the fixture models (CPU, a few seconds).
# Converts tests/fixtures/dit_s.pt (+ vae_s) and dit_px.pt with bin/dit-convert into a temporary directory,
# then checks: numerics of the --init-noise/--step-noise path against the float64 fixture (ddpm10_out),
# --decode, output naming, grids, PNG text, determinism, .npy input checks and error exits.
# Numeric comparisons use /usr/bin/python3 + numpy (the reference environment); they SKIP without it.
cd "$(dirname "$0")/.." || exit 2
export OMP_WAIT_POLICY=passive   # idle OpenMP workers must not spin on a shared 2-core test box
S=bin/dit-sample
F=tests/fixtures
T=$(mktemp -d /tmp/dit-test-sample-XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
ok() { echo "ok - $*"; }
nok() { echo "not ok - $*"; fail=1; }
check() { # check "what" command...  (passes when the command succeeds)
    what=$1; shift
    if "$@"; then ok "$what"; else nok "$what"; fi
}
checks() { # checks "what" 'condition && condition ...'  (eval'd: all the parts count, not just the first)
    what=$1
    if eval "$2"; then ok "$what"; else nok "$what"; fi
}
PY=/usr/bin/python3
HAVE_NP=0
$PY -c 'import numpy' 2>/dev/null && HAVE_NP=1

if [ ! -x $S ] || [ ! -x bin/dit-convert ]; then
    echo "ok - dit-sample tests # SKIP bin/dit-sample or bin/dit-convert not built"
    exit 0
fi
printf 'tench, Tinca tinca\ngoldfish\ngreat white shark\ntiger shark\nhammerhead\nelectric ray\nstingray\ncock\nhen\nostrich\n' >"$T/classes.txt"
if ! bin/dit-convert $F/dit_s.pt --vae $F/vae_s --heads 2 --class-names "$T/classes.txt" -o "$T/s.gguf" 2>"$T/err" ||
   ! bin/dit-convert $F/dit_px.pt --heads 1 -o "$T/px.gguf" 2>>"$T/err"; then
    echo "ok - dit-sample tests # SKIP bin/dit-convert failed: $(tail -1 "$T/err")"
    exit 0
fi
M="$T/s.gguf"

# runs dit-sample, keeps stdout+stderr in $T/log and the status in $rc
run() { $S "$@" >"$T/log" 2>&1; rc=$?; }
# expects exit status $1 and a single "dit-sample: error: ..." line containing $2
expect_error() {
    want=$1 pat=$2; shift 2
    run "$@"
    lines=$(grep -c . "$T/log")
    if [ $rc -eq "$want" ] && [ "$lines" -eq 1 ] && grep -q "^dit-sample: error: .*$pat" "$T/log"; then
        ok "exit $want: $(cat "$T/log")"
    else
        nok "expected exit $want with one error line matching '$pat', got $rc: $(head -3 "$T/log")"
    fi
}
# PNG width, height, colour type from the IHDR
png_info() { od -An -tu1 -j16 -N10 "$1" | awk '{printf "%d %d %d\n", $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8, $10}'; }

# ---- usage and argument errors
run --help
checks "--help exits 0 and shows the usage" '[ $rc -eq 0 ] && grep -q "^usage: dit-sample" "$T/log"'
expect_error 2 "no model" -o "$T/x.png"
expect_error 2 "unknown option" -m "$M" --frobnicate
expect_error 2 "close matches" -m "$M" --class goldfsh -o "$T/x.png"
expect_error 2 "out of range" -m "$M" --class 10 -o "$T/x.png"
expect_error 2 "sampler" -m "$M" --sampler euler
expect_error 2 "steps" -m "$M" --steps 0
expect_error 2 "spacing" -m "$M" --spacing 2000 -o "$T/x.png"
expect_error 1 "cannot open" -m "$T/missing.gguf"
printf 'GGUF' >"$T/trunc.gguf"
expect_error 2 "trunc.gguf" -m "$T/trunc.gguf"
check "no output file after the errors" [ ! -e "$T/x.png" ]

# ---- numerics: DDPM "10", labels 1,7, CFG 4, fixture noise == ddpm10_out (fp32 vs float64, tol 5e-5 as test_runtime)
# latent_vs GOT.npy FIXTURE WHAT: the last run's float32 latents against the float64 reference fixture
latent_vs() {
    if [ $HAVE_NP = 1 ] && [ $rc -eq 0 ]; then
        r=$($PY -c "
import numpy as np
a = np.load('$1'); b = np.load('$F/$2.npy')
d = float(np.abs(a.astype(np.float64) - b).max()); tol = 5e-5 * max(1.0, float(np.abs(b).max()))
print('%s max|diff| %.3g <= %.3g' % ('ok' if a.shape == b.shape and a.dtype == np.float32 and d <= tol else 'bad', d, tol))")
        case "$r" in ok*) ok "$3 == $2: ${r#ok }" ;; *) nok "$3 vs $2: $r" ;; esac
    else
        check "$3 runs (exit $rc)" [ $rc -eq 0 ]
    fi
}
run -m "$M" --class 1,7 --spacing 10 --init-noise $F/e2e_init.npy --step-noise $F/e2e_step_noise10.npy \
    --save-latent "$T/lat.npy" -o "$T/e2e.png" -q
checks "DDPM-10 with --init-noise/--step-noise runs (exit $rc)" '[ $rc -eq 0 ] && [ -f "$T/lat.npy" ] && [ -f "$T/e2e_001.png" ]'
latent_vs "$T/lat.npy" ddpm10_out "--save-latent"
# batches: one image per dit_sample call takes its slice of --init-noise and its column of --step-noise (K, n, ...)
run -m "$M" --class 1,7 --spacing 10 --init-noise $F/e2e_init.npy --step-noise $F/e2e_step_noise10.npy \
    --save-latent "$T/lat_b1.npy" -o "$T/b1.png" -q --batch 1
latent_vs "$T/lat_b1.npy" ddpm10_out "--batch 1 with --init-noise/--step-noise (each batch its slice and column)"
# batches with Philox noise: image i keeps stream (seed, i), and the CPU's rows do not interact: bitwise (a GPU's
# GEMMs may sum differently at another row count: test_cuda compares batches there)
run -m "$M" -n 5 -s 3 --sampler ddpm --steps 4 --save-latent "$T/lat_n5.npy" -o "$T/n5.png" -q --backend cpu
run -m "$M" -n 5 -s 3 --sampler ddpm --steps 4 --save-latent "$T/lat_n5b.npy" -o "$T/n5b.png" -q --backend cpu --batch 2
checks "CPU: -n 5 --batch 2 == -n 5: latents and the 5 PNGs, bitwise (exit $rc)" 'cmp -s "$T/lat_n5.npy" "$T/lat_n5b.npy" &&
    cmp -s "$T/n5.png" "$T/n5b.png" && cmp -s "$T/n5_004.png" "$T/n5b_004.png" && [ ! -e "$T/n5b_005.png" ]'
expect_error 2 "batch" -m "$M" --batch 0 -o "$T/x.png"
# --first-image: images 3 and 4 of the job alone == those of the whole run (names, labels, noise; CPU: bitwise)
run -m "$M" -n 2 -s 3 --sampler ddpm --steps 4 -o "$T/n5s.png" -q --backend cpu --first-image 3
checks "--first-image 3 -n 2 == images 3 and 4 of -n 5: the same PNG files, bitwise (exit $rc)" '[ $rc -eq 0 ] &&
    [ ! -e "$T/n5s.png" ] && cmp -s "$T/n5_003.png" "$T/n5s_003.png" && cmp -s "$T/n5_004.png" "$T/n5s_004.png"'
# --npz (sample_ddp.py's file for ADM's FID suite): a valid ZIP (CRC checked), arr_0 uint8 (N, H, W, C) equal to
# the PNG pixel rule applied to the images (the pixel-space model's final latents), across batches
run -m "$T/px.gguf" -n 5 --steps 3 --sampler ddim --npz "$T/s.npz" --save-latent "$T/pl.npy" -o "$T/p.png" -q --batch 2
if [ $HAVE_NP = 1 ] && [ $rc -eq 0 ]; then
    r=$($PY -c "
import numpy as np, zipfile
z = zipfile.ZipFile('$T/s.npz'); assert z.testzip() is None and z.namelist() == ['arr_0.npy']
a = np.load('$T/s.npz')['arr_0']; x = np.load('$T/pl.npy')
v = ((np.clip(np.nan_to_num(x, nan=-1.0), -1, 1) + np.float32(1)) / np.float32(2)) * np.float32(255) + np.float32(0.5)
want = np.clip(v, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
print('ok' if a.dtype == np.uint8 and a.shape == want.shape and (a == want).all() else 'bad %s %s' % (a.shape, want.shape))" 2>&1)
    case "$r" in ok) ok "--npz: valid ZIP, arr_0 (5, H, W, C) uint8 == the images' pixels, 3 batches" ;; *) nok "--npz: $r" ;; esac
else
    check "--npz runs (exit $rc)" [ $rc -eq 0 ]
fi
mkdir "$T/only" && (cd "$T/only" && "$OLDPWD/$S" -m "$T/px.gguf" -n 2 --steps 2 --npz s.npz -q >/dev/null 2>&1)
check "--npz without -o: the .npz and no PNG" [ "$(ls "$T/only")" = s.npz ]
expect_error 2 "--grid needs -o" -m "$T/px.gguf" -n 2 --steps 2 --npz "$T/g.npz" --grid
expect_error 1 "no-dir/x.npz: cannot create output file" -m "$T/px.gguf" -n 2 --steps 2 --npz "$T/no-dir/x.npz"
run -m "$M" --class all -n 11 --steps 2 --sampler ddim --grid -o "$T/all.png" -q --backend cpu
check "--class all: labels 0..9, then 0 again (PNG text)" grep -aq 'classes: tench, Tinca tinca (0), goldfish (1), .*ostrich (9), tench, Tinca tinca (0)$' "$T/all.png"
run -m "$M" --class 1,7 --sampler ddim --steps 10 --init-noise $F/e2e_init.npy --save-latent "$T/lat_ddim.npy" -o "$T/ddim.png" -q
latent_vs "$T/lat_ddim.npy" ddim10_out "--sampler ddim --steps 10"
run -m "$M" --class 1,7 --sampler dpm++2m --steps 10 --init-noise $F/e2e_init.npy --save-latent "$T/lat_dpm.npy" -o "$T/dpm.png" -q
latent_vs "$T/lat_dpm.npy" dpmpp2m10_out "--sampler dpm++2m --steps 10"
w=$($S -m "$M" --class 1 --sampler dpm++2m --steps 10 --step-noise $F/e2e_step_noise10.npy -n 2 -o "$T/w.png" -q 2>&1)
case "$w" in *"warning: --step-noise is not used: dpm++2m draws no noise"*) ok "--step-noise with dpm++2m: a warning that it is unused" ;;
    *) nok "--step-noise with dpm++2m: no warning: $w" ;; esac
run -m "$M" --class 1,7 --spacing 10 --no-cfg --init-noise $F/e2e_init.npy --step-noise $F/e2e_step_noise10.npy \
    --save-latent "$T/lat_nocfg.npy" -o "$T/nocfg.png" -q
latent_vs "$T/lat_nocfg.npy" ddpm10_nocfg_out "--no-cfg"
check "PNG text of --no-cfg: CFG scale: 1.0, CFG batch: off" grep -aq 'CFG scale: 1.0, CFG batch: off, Spacing' "$T/nocfg.png"
check "PNG text of dpm++2m: Steps: 10, Sampler: dpm++2m" grep -aq '^Steps: 10, Sampler: dpm++2m, CFG scale: 4.0, Init noise' "$T/dpm.png"
check "PNG text: class, steps, sampler, CFG, spacing, noise files, seed, image index, size, model" \
    sh -c "grep -aq 'class: cock (7)\$' '$T/e2e_001.png' && grep -aq '^Steps: 10, Sampler: ddpm, CFG scale: 4.0, Spacing: 10, Init noise: $F/e2e_init.npy, Step noise: $F/e2e_step_noise10.npy, Seed: 0, Image: 1, Size: 64x64, Model: dit_s, Version: dit.c' '$T/e2e_001.png'"
check "64x64 RGB PNGs" [ "$(png_info "$T/e2e.png")" = "64 64 2" ]

# ---- --decode: the saved latents give the same PNGs as the sampling run
run -m "$M" --decode "$T/lat.npy" -o "$T/dec.png" --no-metadata
checks "--decode writes one PNG per latent (exit $rc)" '[ $rc -eq 0 ] && [ -f "$T/dec.png" ] && [ -f "$T/dec_001.png" ] && [ ! -e "$T/dec_002.png" ]'
if [ $HAVE_NP = 1 ]; then
    r=$($PY -c "
import zlib, struct
def pixels(p):
    d = open(p, 'rb').read(); i = 8; idat = b''
    while i < len(d):
        n, t = struct.unpack('>I4s', d[i:i+8]); i += 8
        if t == b'IDAT': idat += d[i:i+n]
        i += n + 4
    return zlib.decompress(idat)
print('same' if pixels('$T/dec.png') == pixels('$T/e2e.png') else 'different')")
    check "--decode pixels == the sampling run's pixels" [ "$r" = same ]
fi
check "--no-metadata: no tEXt chunk" sh -c "! grep -aq tEXt '$T/dec.png'"

# ---- Philox noise, determinism, naming
run -m "$M" --class goldfish -n 3 -s 5 --steps 4 --sampler ddim -o "$T/a.png" -q
checks "3 images -> a.png a_001.png a_002.png (exit $rc)" '[ $rc -eq 0 ] && [ -f "$T/a.png" ] && [ -f "$T/a_001.png" ] && [ -f "$T/a_002.png" ]'
run -m "$M" --class goldfish -n 1 -s 5 --steps 4 --sampler ddim -o "$T/b.png" -q
check "image 0 of a batch == the same image alone (same bytes)" cmp -s "$T/a.png" "$T/b.png"
run -m "$M" --class goldfish -n 1 -s 6 --steps 4 --sampler ddim -o "$T/c.png" -q
check "another seed gives another image" sh -c "! cmp -s '$T/b.png' '$T/c.png'"
check "DDIM text: Steps: 4, Sampler: ddim, Seed: 5, Image: 2" grep -aq "Steps: 4, Sampler: ddim, CFG scale: 4.0, Seed: 5, Image: 2," "$T/a_002.png"
run -m "$M" --class 3 -n 1 --steps 4 --sampler ddim --eta 0.5 --cfg-scale 1.5 -o "$T/e.png" -q
check "eta and CFG in the text" grep -aq "Sampler: ddim, Eta: 0.5, CFG scale: 1.5," "$T/e.png"
expect_error 2 "eta" -m "$M" --eta 0.5 -o "$T/x.png"

# ---- grids (make_grid: padding 2): 3 images in one row -> 3*66+2 x 68; rows per class: 2 classes x 2 -> 134 x 134
run -m "$M" --class 1 -n 3 --steps 2 --grid -o "$T/g.png" -q
checks "--grid: one 200x68 PNG (exit $rc)" '[ $rc -eq 0 ] && [ "$(png_info "$T/g.png")" = "200 68 2" ] && [ ! -e "$T/g_001.png" ]'
run -m "$M" --class 1 -n 5 --steps 2 --grid --nrow 2 -o "$T/g2.png" -q
check "--grid --nrow 2, 5 images: 3 rows -> 134x200" [ "$(png_info "$T/g2.png")" = "134 200 2" ]
run -m "$M" --class 1,2 -n 4 --steps 2 --rows-per-class --no-labels -o "$T/g3.png" -q
check "--rows-per-class, 2 classes x 2 images -> 134x134" [ "$(png_info "$T/g3.png")" = "134 134 2" ]
check "grid text lists the classes" grep -aq "classes: goldfish (1), great white shark (2), goldfish (1), great white shark (2)" "$T/g3.png"
if [ $HAVE_NP = 1 ]; then   # the grid cells hold the single images: cell (0,1) of g.png == image 1 of a run with -n 3
    run -m "$M" --class 1 -n 3 --steps 2 -o "$T/h.png" -q
    r=$($PY -c "
import zlib, struct
def rgb(p):
    d = open(p, 'rb').read(); i = 8; idat = b''; w = h = 0
    while i < len(d):
        n, t = struct.unpack('>I4s', d[i:i+8]); i += 8
        if t == b'IHDR': w, h = struct.unpack('>II', d[i:i+8])
        if t == b'IDAT': idat += d[i:i+n]
        i += n + 4
    raw = zlib.decompress(idat); s = 3 * w; rows = []; prev = bytearray(s)
    for y in range(h):
        f = raw[y*(s+1)]; line = bytearray(raw[y*(s+1)+1:(y+1)*(s+1)])
        for x in range(s):
            a = line[x-3] if x >= 3 else 0; b = prev[x]; c = prev[x-3] if x >= 3 else 0
            if f == 1: line[x] = (line[x] + a) & 255
            elif f == 2: line[x] = (line[x] + b) & 255
            elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p0 = a + b - c; pa, pb, pc = abs(p0-a), abs(p0-b), abs(p0-c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line)); prev = line
    return w, h, rows
gw, gh, g = rgb('$T/g.png'); w, h, im = rgb('$T/h_001.png')
cell = [g[2 + y][3 * (2 + 66):3 * (2 + 66 + 64)] for y in range(64)]
pad = all(v == 0 for v in g[0]) and all(v == 0 for v in g[1])
print('same' if cell == im and pad else 'different')")
    check "grid cell 1 == image 1 written alone; padding black" [ "$r" = same ]
fi

# ---- pixel-space model: grayscale PNG, no VAE
run -m "$T/px.gguf" --class 3 -n 2 --steps 3 -o "$T/px.png" -q
checks "pixel model: 8x8 grayscale PNGs (exit $rc)" '[ $rc -eq 0 ] && [ "$(png_info "$T/px.png")" = "8 8 0" ] && [ -f "$T/px_001.png" ]'

# ---- .npy inputs: dtype, shape, order, truncation -> exit 2 naming the file; missing -> exit 1
if [ $HAVE_NP = 1 ]; then
    $PY -c "
import numpy as np
x = np.load('$F/e2e_init.npy')
np.save('$T/i64.npy', x.astype(np.int64)); np.save('$T/f16.npy', x.astype(np.float16))
np.save('$T/shape.npy', x[:1]); np.save('$T/fortran.npy', np.asfortranarray(x.transpose(0, 1, 3, 2)))
np.save('$T/big.npy', x.astype('>f4'))
open('$T/trunc.npy', 'wb').write(open('$F/e2e_init.npy', 'rb').read()[:-100])
np.save('$T/steps_shape.npy', np.load('$F/e2e_step_noise10.npy')[:9])"
    expect_error 2 "i64.npy: dtype must be float32" -m "$M" --class 1,7 --spacing 10 --init-noise "$T/i64.npy" -o "$T/x.png"
    expect_error 2 "f16.npy: dtype" -m "$M" --class 1,7 --spacing 10 --init-noise "$T/f16.npy" -o "$T/x.png"
    expect_error 2 "big.npy: dtype" -m "$M" --class 1,7 --spacing 10 --init-noise "$T/big.npy" -o "$T/x.png"
    expect_error 2 "shape.npy: --init-noise has shape (1, 4, 8, 8), expected (2, 4, 8, 8)" -m "$M" --class 1,7 --init-noise "$T/shape.npy" -o "$T/x.png"
    expect_error 2 "fortran.npy: Fortran" -m "$M" --class 1,7 --init-noise "$T/fortran.npy" -o "$T/x.png"
    expect_error 2 "trunc.npy: .npy data is" -m "$M" --class 1,7 --init-noise "$T/trunc.npy" -o "$T/x.png"
    expect_error 2 "steps_shape.npy: --step-noise has shape (9, 2, 4, 8, 8), expected (10, 2, 4, 8, 8)" -m "$M" --class 1,7 --spacing 10 --step-noise "$T/steps_shape.npy" -o "$T/x.png"
    expect_error 2 "shape.npy: latents must have shape" -m "$T/px.gguf" --decode "$T/shape.npy" -o "$T/x.png"
    check "no output file after the .npy errors" [ ! -e "$T/x.png" ]
else
    ok ".npy input checks # SKIP no numpy"
fi
expect_error 1 "missing.npy: cannot open" -m "$M" --class 1 --init-noise "$T/missing.npy" -o "$T/x.png"

# ---- output errors: missing directory -> exit 1, nothing left behind
expect_error 1 "nodir/y.png" -m "$M" --class 1 --steps 2 -o "$T/nodir/y.png" -q
expect_error 1 "save.npy" -m "$M" --class 1 --steps 2 --save-latent "$T/nodir/save.npy" -o "$T/z.png" -q
check "no temporary files left in the output directory" sh -c "! ls -A '$T' | grep -q -i -e tmp -e '~'"

# ---- backend
run -m "$M" --class 1 --steps 2 --backend cuda -o "$T/cu.png" -q
if [ $rc -eq 0 ]; then
    ok "--backend cuda ran on a GPU"
else
    check "--backend cuda without a GPU or CUDA build: one error line, non-zero exit ($rc)" \
        sh -c "[ \$(grep -c . '$T/log') -eq 1 ] && grep -q '^dit-sample: error: ' '$T/log'"
fi
run -m "$M" --class 1 --steps 2 --backend cpu -v -o "$T/v.png" -q
check "-v prints the model and the stage timings" grep -q "^timings: load .* s, sample .* s, decode .* s, write .* s" "$T/log"

# ---- grid row labels: class names in white 5x9 text (tools/font.h, scale 1 + size/64) in a black margin of
# scale * (2 + 6 * longest label) columns left of the grid; the grid itself is the same as with --no-labels.
# 64 px RGB: scale 2, "great white shark" > 16 characters -> "great white sha.", margin 2 * (2 + 6 * 16) = 196.
run -m "$M" --class 0,1,2 -n 6 --steps 2 --rows-per-class --save-latent "$T/lab.npy" -o "$T/lab.png" -q
checks "--rows-per-class labels: 196 + 134 x 200 RGB PNG (exit $rc)" '[ $rc -eq 0 ] && [ "$(png_info "$T/lab.png")" = "330 200 2" ]'
run -m "$M" --class 0,1,2 -n 6 --steps 2 --rows-per-class --no-labels --save-latent "$T/nolab.npy" -o "$T/nolab.png" -q
checks "--no-labels: the plain 134x200 grid (exit $rc)" '[ $rc -eq 0 ] && [ "$(png_info "$T/nolab.png")" = "134 200 2" ]'
check "labels do not change the sampled latents" cmp -s "$T/lab.npy" "$T/nolab.npy"
# rows (1, 2) and (2, 1): "goldfish,great white shark" -> "goldfish,great." (no ' ' before the '.'), and
# "great white shark,goldfish" -> "great white sha."
run -m "$M" --class 1,2,2,1 --steps 2 --grid --nrow 2 --labels -o "$T/glab.png" -q
checks "--grid --labels: a row label lists the row's classes (exit $rc)" '[ $rc -eq 0 ] && [ "$(png_info "$T/glab.png")" = "330 134 2" ]'
run -m "$M" --class 1,2,2,1 --steps 2 --grid --nrow 2 -o "$T/gnolab.png" -q
# 8 px grayscale pixel model without class names: the labels are the indices, scale 1, margin 1 * (2 + 6) = 8
run -m "$T/px.gguf" --class 3,5 -n 4 --steps 2 --rows-per-class -o "$T/plab.png" -q
checks "pixel model labels: 8 + 22 x 22 grayscale PNG (exit $rc)" '[ $rc -eq 0 ] && [ "$(png_info "$T/plab.png")" = "30 22 0" ]'
run -m "$T/px.gguf" --class 3,5 -n 4 --steps 2 --rows-per-class --no-labels -o "$T/pnolab.png" -q
expect_error 2 "--labels applies to --grid" -m "$M" --class 1 --labels -o "$T/x.png"
expect_error 2 "--labels: --decode" -m "$M" --decode "$T/lab.npy" --grid --labels -o "$T/x.png"
check "no output file after the label errors" [ ! -e "$T/x.png" ]
if [ $HAVE_NP = 1 ]; then
    # labelled PNG == margin (expected text drawn from the tools/font.h bitmaps, 255 in every channel on 0) ++ the
    # unlabelled grid, byte for byte; each row's label has white pixels (an empty font would not pass)
    r=$($PY - "$T" <<'EOF'
import re, struct, sys, zlib
import numpy as np
T = sys.argv[1]
def png(p):   # 8-bit gray or RGB PNG -> uint8 (H, W, C)
    d = open(p, 'rb').read(); i = 8; idat = b''
    while i < len(d):
        n, t = struct.unpack('>I4s', d[i:i+8]); i += 8
        if t == b'IHDR': w, h, _, ct = struct.unpack('>IIBB', d[i:i+10])
        if t == b'IDAT': idat += d[i:i+n]
        i += n + 4
    c = 3 if ct == 2 else 1; s = w * c; raw = zlib.decompress(idat); prev = bytearray(s); out = []
    for y in range(h):
        f = raw[y*(s+1)]; line = bytearray(raw[y*(s+1)+1:(y+1)*(s+1)])
        for x in range(s):
            a = line[x-c] if x >= c else 0; b = prev[x]; q = prev[x-c] if x >= c else 0
            p0 = a + b - q; pa, pb, pc = abs(p0-a), abs(p0-b), abs(p0-q)
            line[x] = (line[x] + [0, a, b, (a + b) // 2, a if pa <= pb and pa <= pc else b if pb <= pc else q][f]) & 255
        out.append(bytes(line)); prev = line
    return np.frombuffer(b''.join(out), np.uint8).reshape(h, w, c)
font = [[int(v, 16) for v in g.split(', ')] for g in re.findall(r'\{ ((?:0x[0-9A-F]{2}, ){8}0x[0-9A-F]{2}) \}', open('tools/font.h').read())]
assert len(font) == 95
def check(lab, nolab, labels, S):
    L, P = png(lab), png(nolab); k = 1 + S // 64; M = k * (2 + 6 * max(map(len, labels)))
    if L.shape != (P.shape[0], P.shape[1] + M, P.shape[2]): return '%s: shape %s vs %s + %d' % (lab, L.shape, P.shape, M)
    if not np.array_equal(L[:, M:], P): return lab + ': the grid differs from --no-labels'
    want = np.zeros((L.shape[0], M), np.uint8)
    for r, text in enumerate(labels):
        y0 = r * (S + 2) + 2 + (S - 7 * k) // 2
        if (L[r*(S+2)+2:(r+1)*(S+2), :M] == 255).sum() < 10 * k * k: return '%s: row %d label %r is not drawn' % (lab, r, text)
        for j, ch in enumerate(text):
            for y in range(9 * k):
                for x in range(5 * k):
                    if font[ord(ch) - 32][y // k] >> (4 - x // k) & 1: want[y0 + y, 2 * k + 6 * k * j + x] = 255
    for c in range(L.shape[2]):
        if not np.array_equal(L[:, :M, c], want): return '%s: margin channel %d != the expected text' % (lab, c)
    return ''
err = check(T + '/lab.png', T + '/nolab.png', ['tench', 'goldfish', 'great white sha.'], 64) or \
      check(T + '/glab.png', T + '/gnolab.png', ['goldfish,great.', 'great white sha.'], 64) or \
      check(T + '/plab.png', T + '/pnolab.png', ['3', '5'], 8)
print(err or 'same')
EOF
)
    check "labelled grids == font.h text in the margin + the --no-labels grid (RGB and gray, names, indices, truncation)${r#same}" [ "$r" = same ]
else
    ok "label pixels # SKIP no numpy"
fi

exit $fail
