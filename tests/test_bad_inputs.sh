#!/bin/sh
# tests/test_bad_inputs.sh - the bad-input catalogue: every program against every kind of broken input.
#
# Each case runs one program (timeout 20 s) on a file made at test time from the good fixtures
# (tests/bad_inputs/mkbad.c, compiled here with cc; no Python) and checks the CLI contract:
#   - exit status 2 (bad input) or 1 (I/O), as the case says; never >= 128 (crash), never a timeout;
#   - exactly one line "dit-X: error: ..." on stderr, naming the file at fault;
#   - no sanitizer report (ASan, UBSan, LeakSanitizer) when the programs are built with SANITIZE=1;
#   - no partial output: the output directory holds neither the output nor a *.tmp.* file.
# "tolerated" cases (e.g. a zip whose declared sizes lie but whose bytes are fine) may also succeed;
# they must still not crash or hang. Programs not built yet are skipped: "ok - ... # SKIP".
# TAP lines on stdout; exit status 1 when a case failed.
cd "$(dirname "$0")/.." || exit 2
T=$(mktemp -d "${TMPDIR:-/tmp}/dit-bad.XXXXXX") || exit 2
trap 'chmod -R u+w "$T" 2>/dev/null; rm -rf "$T"' EXIT INT TERM
F=tests/fixtures
B=${DIT_BIN:-bin}   # DIT_BIN: another directory of the four programs (e.g. a sanitizer build)
CONV=$B/dit-convert QUANT=$B/dit-quantize SAMPLE=$B/dit-sample INFO=$B/dit-info
MK=$T/mkbad
fails=0
n_case=0

if ! cc -O1 -std=c11 -o "$MK" tests/bad_inputs/mkbad.c -lz 2>"$T/cc.log"; then
    echo "not ok - build tests/bad_inputs/mkbad.c: $(head -1 "$T/cc.log")"
    exit 1
fi
mkdir -p "$T/in" "$T/out"

# gen NAME MKBAD-ARGS...: makes $T/in/NAME; on failure prints a "not ok" (a fixture changed) and returns 1
gen() {
    name=$1
    shift
    if ! "$MK" "$@" >"$T/gen.log" 2>&1; then
        echo "not ok - generating $name: $(head -1 "$T/gen.log")"
        fails=$((fails + 1))
        return 1
    fi
}

# run WHAT CODES FILE PROG ARGS...: one case. CODES: allowed exit statuses ("2", "1", "12", "012").
# FILE: text the error line must contain. Outputs go to $O (a fresh empty directory per case).
run() {
    what=$1 codes=$2 file=$3 prog=$4
    shift 4
    n_case=$((n_case + 1))
    name=${prog##*/}
    if [ ! -x "$prog" ]; then
        echo "ok - $name: $what # SKIP $name not built"
        return 0
    fi
    # BAD_RSS=1: measure each case's peak memory with GNU time (printed on the "ok" line)
    tm=
    [ -n "${BAD_RSS:-}" ] && [ -x /usr/bin/time ] && tm="/usr/bin/time -f %M -o $T/rss"
    if [ -n "${FSIZE:-}" ]; then   # a full disk: file size limit, SIGXFSZ ignored so write() fails with EFBIG
        timeout 20 $tm sh -c 'trap "" XFSZ; ulimit -f "$0"; exec "$@"' "$FSIZE" "$prog" "$@" >"$T/stdout" 2>"$T/stderr" </dev/null
    else
        timeout 20 $tm "$prog" "$@" >"$T/stdout" 2>"$T/stderr" </dev/null
    fi
    rc=$?
    rss=
    [ -n "$tm" ] && rss=", maxrss $(tail -1 "$T/rss") KB"
    [ -n "$tm" ] && sed -i '/^Command exited with non-zero status/d' "$T/stderr"
    why=
    if [ $rc = 124 ]; then why="timed out after 20 s"
    elif [ $rc -ge 128 ]; then why="crashed (exit status $rc)"
    else
        case $codes in *$rc*) ;; *) why="exit status $rc, expected one of: $codes" ;; esac
    fi
    if grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|UndefinedBehaviorSanitizer' "$T/stderr"; then
        why="${why:+$why; }sanitizer report: $(grep -m1 -E 'ERROR: (Address|Leak)Sanitizer|runtime error:|UndefinedBehaviorSanitizer' "$T/stderr" | cut -c1-120)"
    fi
    if [ $rc != 0 ] && [ -z "$why" ]; then
        nerr=$(grep -c "^$name: error: " "$T/stderr")
        if [ "$nerr" != 1 ]; then
            why="$nerr lines '$name: error: ...' on stderr (want 1): $(tail -1 "$T/stderr" | cut -c1-120)"
        elif [ -n "$file" ] && ! grep "^$name: error: " "$T/stderr" | grep -q -F -- "$file"; then
            why="the error does not name $file: $(grep "^$name: error: " "$T/stderr" | cut -c1-160)"
        fi
        left=$(ls -A "$O" 2>/dev/null | grep -v -x -F "${KEEP:-/}" | tr '\n' ' ')
        [ -n "$left" ] && why="${why:+$why; }left output behind: $left"
    fi
    if [ -n "$why" ]; then
        echo "not ok - $name: $what: $why"
        fails=$((fails + 1))
    else
        echo "ok - $name: $what (exit $rc$rss)"
    fi
    return 0
}

# fresh output directory for the next case
newout() { O=$T/out/$n_case; rm -rf "$O"; mkdir -p "$O"; }

# ---------------------------------------------------------------- plain files any program may be given
printf 'version https://git-lfs.github.com/spec/v1\noid sha256:4f3a0c1e2d5b6a798897a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5\nsize 2700000000\n' >"$T/in/lfs-pointer"
printf '<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n' >"$T/in/html-page"
: >"$T/in/empty"
tail -c 2048 "$F/fwd_x.npy" >"$T/in/random"   # float32 noise: random-looking, but the same every run
mkdir -p "$T/in/a-directory"

# ---------------------------------------------------------------- dit-convert
newout
run "missing checkpoint" 12 "$T/in/nope.pt" $CONV "$T/in/nope.pt" --heads 1 -o "$O/o.gguf"
for k in empty lfs-pointer html-page random a-directory; do
    newout
    run "checkpoint is $k" 2 "$T/in/$k" $CONV "$T/in/$k" --heads 1 -o "$O/o.gguf"
done

# torch zip
Z=$F/dit_xs.pt
zsize=$(wc -c <"$Z")
for cut in 0 30 100 50% 90% $((zsize - 22)) $((zsize - 1)); do
    gen "zip-trunc-$cut" trunc "$Z" "$T/in/zip-trunc-$cut.pt" "$cut" || continue
    newout
    run "torch zip truncated at $cut" 2 "zip-trunc-$cut.pt" $CONV "$T/in/zip-trunc-$cut.pt" --heads 1 -o "$O/o.gguf"
done
gen zip-crc flip "$Z" "$T/in/zip-crc.pt" 100 0x41 && {   # byte 100 lies in data.pkl: its CRC fails
    newout; run "torch zip with a byte of data.pkl flipped" 2 "zip-crc.pt" $CONV "$T/in/zip-crc.pt" --heads 1 -o "$O/o.gguf"; }
# local header, central directory, ZIP64 end record, ZIP64 locator (tolerated: the classic end record
# still holds the right values for a small file), end record
for sig in 'PK\x03\x04:2' 'PK\x01\x02:2' 'PK\x06\x06:2' 'PK\x06\x07:012' 'PK\x05\x06:2'; do
    codes=${sig#*:} sig=${sig%:*}
    k=$(echo "$sig" | tr -d 'PK\\x')
    gen "zip-sig$k" flipat "$Z" "$T/in/zip-sig$k.pt" "$sig" 0x20 || continue
    newout
    tol=
    [ "$codes" = 012 ] && tol="tolerated: "
    run "${tol}torch zip with a damaged $sig record" $codes "zip-sig$k.pt" $CONV "$T/in/zip-sig$k.pt" --heads 1 -o "$O/o.gguf"
done
pk() {   # pk NAME WHAT FROM TO: edits data.pkl of the zip fixture
    gen "$1" zip "$Z" "$T/in/$1.pt" --replace data.pkl "$3" "$4" || return 0
    newout
    run "torch zip: $2" 2 "$1.pt" $CONV "$T/in/$1.pt" --heads 1 -o "$O/o.gguf"
}
pk pkl-os-system "pickle naming os.system" 'collections\nOrderedDict\n' 'os\nsystem\n'
pk pkl-eval "pickle naming builtins.eval" 'collections\nOrderedDict\n' 'builtins\neval\n'
pk pkl-posix "pickle naming posix.system" 'collections\nOrderedDict\n' 'posix\nsystem\n'
pk pkl-unknown-fn "tensors rebuilt by an unknown class" 'torch._utils\n_rebuild_tensor_v2\n' 'mymodule\nrebuild\n'
pk pkl-unknown-dict "state dict of an unknown class" 'collections\nOrderedDict\n' 'mymodule\nMyDict\n'
pk pkl-storage-type "unknown storage type" 'torch\nFloatStorage\n' 'torch\nQInt8Storage\n'
pk pkl-numel-huge "storage declaring 2^40 elements" 'cpu\x71\x07M\x80\x04' 'cpu\x71\x07\x8a\x08\x00\x00\x00\x00\x00\x01\x00\x00'
pk pkl-numel-overflow "storage declaring 2^62 elements" 'cpu\x71\x07M\x80\x04' 'cpu\x71\x07\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x40'
pk pkl-dims-overflow "tensor dims whose product overflows" 'K\x01K\x10KH\x87' '\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x40K\x10KH\x87'
pk pkl-view-outside "tensor view reaching past its storage" 'M\x80\x04KHK\x01\x87' 'M\x80\x04KIK\x01\x87'
pk pkl-negative-offset "negative storage offset" 'QK\x00K\x01K\x10KH' 'QJ\xff\xff\xff\xffK\x01K\x10KH'
pk pkl-opcode "unsupported pickle opcode" 'collections\nOrderedDict\n' 'collections\nOrderedDict\n\xff'
pk pkl-no-stop "pickle without STOP" 'u.' 'u'
gen zip-pkl-usize zip "$Z" "$T/in/zip-pkl-usize.pt" --usize data.pkl 0x100000000000 && {
    newout; run "zip bomb: data.pkl declares 16 TiB" 2 "zip-pkl-usize.pt" $CONV "$T/in/zip-pkl-usize.pt" --heads 1 -o "$O/o.gguf"; }
gen zip-pkl-bomb zip "$Z" "$T/in/zip-pkl-bomb.pt" --bomb data.pkl 200 && {
    newout; run "zip bomb: data.pkl inflating to 200 MiB of zeros (under the 256 MB cap)" 2 "zip-pkl-bomb.pt" $CONV "$T/in/zip-pkl-bomb.pt" --heads 1 -o "$O/o.gguf"; }
gen zip-st-usize zip "$Z" "$T/in/zip-st-usize.pt" --deflate --usize data/0 0x10000000000 && {
    newout; run "tolerated: deflated storage entry declaring 1 TiB" 012 "zip-st-usize.pt" $CONV "$T/in/zip-st-usize.pt" --heads 1 -o "$O/o.gguf"; }
gen zip-st-bomb zip "$Z" "$T/in/zip-st-bomb.pt" --bomb data/1 64 && {
    newout; run "tolerated: storage entry inflating to 64 MiB of zeros" 012 "zip-st-bomb.pt" $CONV "$T/in/zip-st-bomb.pt" --heads 1 -o "$O/o.gguf"; }
gen zip-overlap zip "$Z" "$T/in/zip-overlap.pt" --overlap data/0 data/1 && {
    newout; run "tolerated: two zip entries sharing bytes" 012 "zip-overlap.pt" $CONV "$T/in/zip-overlap.pt" --heads 1 -o "$O/o.gguf"; }

# legacy torch.save
L=$F/dit_xs_legacy.pt
for cut in 14 100 50% -1; do
    [ "$cut" = -1 ] && cut=$(($(wc -c <"$L") - 1))
    gen "legacy-trunc-$cut" trunc "$L" "$T/in/legacy-trunc-$cut.pt" "$cut" || continue
    newout
    run "legacy torch.save truncated at $cut" 2 "legacy-trunc-$cut.pt" $CONV "$T/in/legacy-trunc-$cut.pt" --heads 1 -o "$O/o.gguf"
done
gen legacy-magic flip "$L" "$T/in/legacy-magic.pt" 6 0x01 && {
    newout; run "legacy torch.save with a bad magic number" 2 "legacy-magic.pt" $CONV "$T/in/legacy-magic.pt" --heads 1 -o "$O/o.gguf"; }
gen legacy-os replace "$L" "$T/in/legacy-os.pt" 'collections\nOrderedDict\n' 'os\nsystem\n' && {
    newout; run "legacy torch.save naming os.system" 2 "legacy-os.pt" $CONV "$T/in/legacy-os.pt" --heads 1 -o "$O/o.gguf"; }
gen legacy-proto replace "$L" "$T/in/legacy-proto.pt" 'M\xe9\x03.' 'M\xea\x03.' && {
    newout; run "legacy torch.save protocol 1002" 2 "legacy-proto.pt" $CONV "$T/in/legacy-proto.pt" --heads 1 -o "$O/o.gguf"; }

# safetensors
S=$F/dit_xs.safetensors
for cut in 4 8 100 50% -1; do
    [ "$cut" = -1 ] && cut=$(($(wc -c <"$S") - 1))
    gen "st-trunc-$cut" trunc "$S" "$T/in/st-trunc-$cut.safetensors" "$cut" || continue
    newout
    run "safetensors truncated at $cut" 2 "st-trunc-$cut.safetensors" $CONV "$T/in/st-trunc-$cut.safetensors" --heads 1 -o "$O/o.gguf"
done
st() {   # st NAME WHAT FROM TO: edits the JSON header
    gen "$1" st "$S" "$T/in/$1.safetensors" "$3" "$4" || return 0
    newout
    run "safetensors: $2" 2 "$1.safetensors" $CONV "$T/in/$1.safetensors" --heads 1 -o "$O/o.gguf"
}
st st-overlap "overlapping data_offsets" '"shape":[72],"data_offsets":[9216,9504]' '"shape":[72],"data_offsets":[9212,9500]'
st st-past-end "data past the end of the file" '"shape":[1,16,72],"data_offsets":[0,4608]' '"shape":[1,16,7200000],"data_offsets":[0,460800000]'
st st-mismatch "data_offsets disagreeing with the shape" '"shape":[1,16,72],"data_offsets":[0,4608]' '"shape":[1,16,71],"data_offsets":[0,4608]'
st st-dims-overflow "dims whose product overflows" '"shape":[1,16,72]' '"shape":[4294967296,4294967296,72]'
st st-dup-name "duplicate tensor names" '"x_embedder.proj.bias"' '"x_embedder.proj.weight"'
st st-dtype "unknown dtype" '"dtype":"F32"' '"dtype":"Q99"'
st st-neg-offset "negative data offset" '"data_offsets":[0,4608]' '"data_offsets":[-4608,0]'
st st-float-offset "fractional data offset" '"data_offsets":[0,4608]' '"data_offsets":[0.5,4608]'
st st-json "broken JSON" '"dtype":"F32"' '"dtype":F32"'
deep=$(printf '%0300d' 0 | tr 0 '[')
st st-deep "JSON nested 300 deep" '"format":"pt"' "\"format\":$deep"
gen st-hdr-huge st-hdrlen "$S" "$T/in/st-hdr-huge.safetensors" 0xffffffffffffffff && {
    newout; run "safetensors header length 2^64-1" 2 "st-hdr-huge.safetensors" $CONV "$T/in/st-hdr-huge.safetensors" --heads 1 -o "$O/o.gguf"; }
gen st-hdr-eof st-hdrlen "$S" "$T/in/st-hdr-eof.safetensors" eof+1 && {
    newout; run "safetensors header longer than the file" 2 "st-hdr-eof.safetensors" $CONV "$T/in/st-hdr-eof.safetensors" --heads 1 -o "$O/o.gguf"; }

# the VAE and the class names
V=$F/vae_s
mkvae() { rm -rf "$T/in/$1"; mkdir -p "$T/in/$1"; cp "$V/config.json" "$V/diffusion_pytorch_model.safetensors" "$T/in/$1/"; }
newout
run "--vae missing" 12 "$T/in/no-vae" $CONV "$Z" --heads 1 --vae "$T/in/no-vae" -o "$O/o.gguf"
mkvae vae-cfg-trunc && head -c 100 "$V/config.json" >"$T/in/vae-cfg-trunc/config.json" && {
    newout; run "--vae with a truncated config.json" 2 "config.json" $CONV "$Z" --heads 1 --vae "$T/in/vae-cfg-trunc" -o "$O/o.gguf"; }
mkvae vae-cfg-deep && { printf '{"block_out_channels": %s' "$(printf '%0100000d' 0 | tr 0 '[')" >"$T/in/vae-cfg-deep/config.json"; } && {
    newout; run "--vae with config.json nested 100000 deep" 2 "config.json" $CONV "$Z" --heads 1 --vae "$T/in/vae-cfg-deep" -o "$O/o.gguf"; }
mkvae vae-cfg-lfs && cp "$T/in/lfs-pointer" "$T/in/vae-cfg-lfs/config.json" && {
    newout; run "--vae whose config.json is a Git LFS pointer" 2 "config.json" $CONV "$Z" --heads 1 --vae "$T/in/vae-cfg-lfs" -o "$O/o.gguf"; }
mkvae vae-st-trunc && gen vae-st-trunc trunc "$V/diffusion_pytorch_model.safetensors" "$T/in/vae-st-trunc/diffusion_pytorch_model.safetensors" 50% && {
    newout; run "--vae with truncated weights" 2 "diffusion_pytorch_model.safetensors" $CONV "$Z" --heads 1 --vae "$T/in/vae-st-trunc" -o "$O/o.gguf"; }
mkvae vae-st-lfs && cp "$T/in/lfs-pointer" "$T/in/vae-st-lfs/diffusion_pytorch_model.safetensors" && {
    newout; run "--vae whose weights are a Git LFS pointer" 2 "diffusion_pytorch_model.safetensors" $CONV "$Z" --heads 1 --vae "$T/in/vae-st-lfs" -o "$O/o.gguf"; }
newout
run "--class-names missing" 12 "$T/in/no-names.txt" $CONV "$Z" --heads 1 --class-names "$T/in/no-names.txt" -o "$O/o.gguf"
printf 'a\nb\nc\n' >"$T/in/names-3.txt"
newout
run "--class-names with 3 names for 10 classes" 2 "names-3.txt" $CONV "$Z" --heads 1 --class-names "$T/in/names-3.txt" -o "$O/o.gguf"

# bad arguments
newout; run "argument --outtype q9" 2 "" $CONV "$Z" --heads 1 --outtype q9 -o "$O/o.gguf"
newout; run "argument --heads 0" 2 "" $CONV "$Z" --heads 0 -o "$O/o.gguf"
newout; run "argument --heads 5 (does not divide 72)" 2 "" $CONV "$Z" --heads 5 -o "$O/o.gguf"
gen ldm-trunc trunc "$F/vae_s_ldm.pt" "$T/in/ldm-trunc.pt" 50% && {
    newout; run "--vae LDM checkpoint truncated" 2 "ldm-trunc.pt" $CONV "$Z" --heads 1 --vae "$T/in/ldm-trunc.pt" -o "$O/o.gguf"; }
newout; run "--vae given a DiT checkpoint" 2 "" $CONV "$Z" --heads 1 --vae "$Z" -o "$O/o.gguf"

# output side
newout
run "output in a missing directory" 1 "$T/in/missing-dir/o.gguf" $CONV "$Z" --heads 1 -o "$T/in/missing-dir/o.gguf"
newout
run "output where writing is refused (/sys)" 1 "/sys/dit-bad-input-test.gguf" $CONV "$Z" --heads 1 -o /sys/dit-bad-input-test.gguf
newout
mkdir -p "$O/o.gguf"
KEEP=o.gguf run "output path is a directory" 1 "o.gguf" $CONV "$Z" --heads 1 -o "$O/o.gguf"
newout
FSIZE=100 run "disk full while writing (ulimit -f 100)" 1 "o.gguf" $CONV "$Z" --heads 1 -o "$O/o.gguf"

# ---------------------------------------------------------------- GGUF inputs (dit-info, dit-quantize, dit-sample)
G=$T/in/good.gguf
if [ -x "$CONV" ] && "$CONV" "$Z" --heads 1 --vae "$V" -o "$G" >/dev/null 2>"$T/conv.log"; then
    have_gguf=1
else
    have_gguf=0
    if [ -x "$CONV" ]; then
        echo "not ok - making a good GGUF with dit-convert from the fixtures: $(tail -1 "$T/conv.log")"
        fails=$((fails + 1))
    fi
fi

# gguf_case NAME WHAT MKBAD-ARGS...: makes $T/in/NAME.gguf from the good file, runs every GGUF reader on it
gguf_progs() {   # gguf_progs NAME WHAT
    f=$T/in/$1.gguf
    newout; run "$2" 2 "$1.gguf" $INFO "$f"
    newout; run "$2" 2 "$1.gguf" $QUANT "$f" "$O/o.gguf" q8_0
    newout; run "$2" 2 "$1.gguf" $SAMPLE -m "$f" -o "$O/o.png" --steps 2 -q -n 1 -c 0
}
gguf_case() {
    name=$1 what=$2
    shift 2
    if [ $have_gguf = 0 ]; then
        for p in $INFO $QUANT $SAMPLE; do
            n_case=$((n_case + 1))
            echo "ok - ${p##*/}: $what # SKIP needs bin/dit-convert to make the good GGUF"
        done
        return 0
    fi
    gen "$name" "$@" || return 0
    gguf_progs "$name" "$what"
}
# args_for PROG INPUT: the command line of a GGUF reader, output into $O
args_for() {
    case $1 in
        */dit-quantize) echo "$2 $O/o.gguf q8_0" ;;
        */dit-sample) echo "-m $2 -o $O/o.png --steps 2 -q -n 1 -c 0" ;;
        *) echo "$2" ;;
    esac
}
for k in empty lfs-pointer html-page random a-directory nope.gguf; do
    codes=2
    [ $k = nope.gguf ] && codes=12
    for p in $INFO $QUANT $SAMPLE; do
        newout
        # shellcheck disable=SC2046
        run "input is $k" $codes "$T/in/$k" $p $(args_for $p "$T/in/$k")
    done
done
for cut in 3 23 24 100 1000 50% 99%; do
    gguf_case "g-trunc-$cut" "GGUF truncated at $cut" trunc "$G" "$T/in/g-trunc-$cut.gguf" "$cut"
done
gguf_case g-magic "GGUF with a bad magic" flip "$G" "$T/in/g-magic.gguf" 0 0x20
gguf_case g-version "GGUF version 1" flip "$G" "$T/in/g-version.gguf" 4 0x02
gguf_case g-endian "GGUF with a big-endian version" flip "$G" "$T/in/g-endian.gguf" 7 0x03
gguf_case g-nt "GGUF declaring 2^63-1 tensors" gguf "$G" "$T/in/g-nt.gguf" count-tensors 0x7fffffffffffffff
gguf_case g-nkv "GGUF declaring 2^64-1 metadata keys" gguf "$G" "$T/in/g-nkv.gguf" count-kv 0xffffffffffffffff
gguf_case g-keylen "GGUF key length 2^63" gguf "$G" "$T/in/g-keylen.gguf" key-len 0x8000000000000000
gguf_case g-strlen "GGUF string length 2^64-256" gguf "$G" "$T/in/g-strlen.gguf" str-len 0xffffffffffffff00
gguf_case g-arrcount "GGUF array of 2^48 elements" gguf "$G" "$T/in/g-arrcount.gguf" arr-count 0x1000000000000
gguf_case g-dims "GGUF dims whose product overflows" gguf "$G" "$T/in/g-dims.gguf" dims pos_embed 4294967296 4294967296 72
gguf_case g-dims0 "GGUF dims 0 x 2^62 (no bytes, product overflows)" gguf "$G" "$T/in/g-dims0.gguf" dims pos_embed 0 4611686018427387904
gguf_case g-dims00 "GGUF tensor of 0 x 2^40 x 2^40 elements (no bytes, the count overflows int64)" gguf "$G" "$T/in/g-dims00.gguf" reshape pos_embed 0 1099511627776 1099511627776
gguf_case g-ndims "GGUF tensor with 5 dims" gguf "$G" "$T/in/g-ndims.gguf" ndims pos_embed 5
gguf_case g-type "GGUF unknown tensor type" gguf "$G" "$T/in/g-type.gguf" type pos_embed 99
gguf_case g-block "GGUF q8_0 row of 72 (not a multiple of 32)" gguf "$G" "$T/in/g-block.gguf" type pos_embed 8
gguf_case g-offset "GGUF tensor offset past the end" gguf "$G" "$T/in/g-offset.gguf" offset vae.decoder.conv_out.bias 0x10000000000
gguf_case g-overlap "GGUF overlapping tensors" gguf "$G" "$T/in/g-overlap.gguf" overlap x_embedder.proj.bias
gguf_case g-dupname "GGUF duplicate tensor names" gguf "$G" "$T/in/g-dupname.gguf" rename x_embedder.proj.bias pos_embed
gguf_case g-dupkey "GGUF duplicate metadata keys" gguf "$G" "$T/in/g-dupkey.gguf" dup-key
gguf_case g-longname "GGUF tensor name of 100 bytes" gguf "$G" "$T/in/g-longname.gguf" rename pos_embed "$(printf '%0100d' 0)"
gguf_case g-align "GGUF alignment 3" gguf "$G" "$T/in/g-align.gguf" align 3
gguf_case g-align64 "GGUF alignment 64 with data laid out at 32" gguf "$G" "$T/in/g-align64.gguf" align 64

# model-level faults: a valid GGUF that is not a usable model (only dit-quantize and dit-sample read it as one)
model_case() {
    name=$1 what=$2
    shift 2
    if [ $have_gguf = 0 ]; then
        for p in $QUANT $SAMPLE; do n_case=$((n_case + 1)); echo "ok - ${p##*/}: $what # SKIP needs bin/dit-convert"; done
        return 0
    fi
    gen "$name" "$@" || return 0
    f=$T/in/$name.gguf
    newout; run "$what" 2 "$name.gguf" $SAMPLE -m "$f" -o "$O/o.png" --steps 2 -q -n 1 -c 0
}
model_case m-drop "model without pos_embed" gguf "$G" "$T/in/m-drop.gguf" drop pos_embed
model_case m-shape "model whose pos_embed has the wrong shape" gguf "$G" "$T/in/m-shape.gguf" reshape pos_embed 72 17 1
model_case m-depth "model claiming depth 1000000" gguf "$G" "$T/in/m-depth.gguf" set-u32 dit.depth 1000000
model_case m-heads "model with 7 heads for hidden 72" gguf "$G" "$T/in/m-heads.gguf" set-u32 dit.num_heads 7
model_case m-hidden "model with hidden size 0" gguf "$G" "$T/in/m-hidden.gguf" set-u32 dit.hidden_size 0
model_case m-hidden-huge "model with hidden size 2^32-1" gguf "$G" "$T/in/m-hidden-huge.gguf" set-u32 dit.hidden_size 0xffffffff
model_case m-input "model with input size 2^31" gguf "$G" "$T/in/m-input.gguf" set-u32 dit.input_size 0x80000000
model_case m-inch "model with 2^30+1 input channels (doubled by learn_sigma)" gguf "$G" "$T/in/m-inch.gguf" set-u32 dit.in_channels 0x40000001
model_case m-hidden-2p30 "model with hidden size 2^30 (4 x hidden overflows int)" gguf "$G" "$T/in/m-hidden-2p30.gguf" set-u32 dit.hidden_size 0x40000000
model_case m-nokey "model without dit.depth" gguf "$G" "$T/in/m-nokey.gguf" del-kv dit.depth
model_case m-arch "model whose dit.depth is a string" gguf "$G" "$T/in/m-arch.gguf" set-str dit.depth deep

# NaN / Inf weights: sampling must fail naming NaN and the step, and write no image
for v in nan inf; do
    if [ $have_gguf = 0 ]; then n_case=$((n_case + 1)); echo "ok - dit-sample: $v weights # SKIP needs bin/dit-convert"; continue; fi
    gen "w-$v" gguf "$G" "$T/in/w-$v.gguf" fill x_embedder.proj.bias "$v" || continue
    newout
    run "$v weights (x_embedder.proj.bias)" 12 "w-$v.gguf" $SAMPLE -m "$T/in/w-$v.gguf" -o "$O/o.png" --steps 2 -q -n 1 -c 0
    if [ -x "$SAMPLE" ] && [ $rc != 0 ] && ! grep "^dit-sample: error: " "$T/stderr" | grep -qi 'nan'; then
        echo "not ok - dit-sample: $v weights: the error does not say NaN: $(grep -m1 'error' "$T/stderr" | cut -c1-160)"
        fails=$((fails + 1))
    elif [ -x "$SAMPLE" ] && [ $rc != 0 ] && ! grep "^dit-sample: error: " "$T/stderr" | grep -qi 'step'; then
        echo "not ok - dit-sample: $v weights: the error does not name the step: $(grep -m1 'error' "$T/stderr" | cut -c1-160)"
        fails=$((fails + 1))
    fi
done

# dit-quantize: arguments and the output side
if [ $have_gguf = 1 ]; then
    newout; run "unknown type q9_9" 2 "q9_9" $QUANT "$G" "$O/o.gguf" q9_9
    newout; run "--tensor-type with a broken regex" 2 "" $QUANT "$G" "$O/o.gguf" q8_0 --tensor-type '[=f16'
    newout; run "--tensor-type with an unknown type" 2 "" $QUANT "$G" "$O/o.gguf" q8_0 --tensor-type 'blocks=q3_x'
    newout; run "input and output are the same file" 12 "" $QUANT "$G" "$G" q8_0
    newout; run "output in a missing directory" 1 "$T/in/missing-dir/o.gguf" $QUANT "$G" "$T/in/missing-dir/o.gguf" q8_0
    newout; run "output where writing is refused (/sys)" 1 "/sys/dit-bad-input-test.gguf" $QUANT "$G" /sys/dit-bad-input-test.gguf q8_0
    newout; mkdir -p "$O/o.gguf"
    KEEP=o.gguf run "output path is a directory" 1 "o.gguf" $QUANT "$G" "$O/o.gguf" q8_0
    newout
    FSIZE=100 run "disk full while writing (ulimit -f 100)" 1 "o.gguf" $QUANT "$G" "$O/o.gguf" q8_0
    # dit-info: stdout that cannot be written (a long listing, and one shorter than the stdio buffer)
    "$CONV" "$Z" --heads 1 -o "$T/in/small.gguf" >/dev/null 2>&1
    for f in "$G" "$T/in/small.gguf"; do
        n_case=$((n_case + 1))
        what="dit-info: stdout is a full disk (/dev/full), $(wc -c <"$f") byte file"
        if [ ! -x "$INFO" ]; then echo "ok - $what # SKIP dit-info not built"; continue; fi
        timeout 20 "$INFO" "$f" >/dev/full 2>"$T/stderr"
        rc=$?
        if [ $rc = 1 ] && [ "$(grep -c '^dit-info: error: ' "$T/stderr")" = 1 ]; then echo "ok - $what (exit 1)"
        else
            echo "not ok - $what: exit status $rc, $(grep -c '^dit-info: error: ' "$T/stderr") error lines (want 1 and 1)"
            fails=$((fails + 1))
        fi
    done
    newout; run "--dump of a tensor that does not exist" 2 "no.such.tensor" $INFO "$G" --dump no.such.tensor
    # dit-sample: .npy inputs (model: C = 4, L = 8; one image)
    S1="$SAMPLE -m $G --steps 2 -q -n 1 -c 0"
    npy() {   # npy NAME WHAT DESCR FORTRAN SHAPE NBYTES
        gen "$1" npy "$T/in/$1.npy" "$3" "$4" "$5" "$6" || return 0
        for opt in --init-noise --decode; do
            newout
            # shellcheck disable=SC2086
            run "$opt: $2" 2 "$1.npy" $S1 $opt "$T/in/$1.npy" -o "$O/o.png"
        done
    }
    npy n-i8 "int64 data" '<i8' 0 "1, 4, 8, 8" 2048
    npy n-f2 "float16 data" '<f2' 0 "1, 4, 8, 8" 512
    npy n-be "big-endian float32" '>f4' 0 "1, 4, 8, 8" 1024
    npy n-fortran "Fortran order" '<f4' 1 "1, 4, 8, 8" 1024
    npy n-shape "shape (1, 3, 8, 8) for 4 channels" '<f4' 0 "1, 3, 8, 8" 768
    npy n-rank "shape (4, 8, 8) without the batch dim" '<f4' 0 "4, 8, 8" 1024
    npy n-count "2 images for -n 1" '<f4' 0 "2, 4, 8, 8" 2048
    npy n-short "data shorter than the shape" '<f4' 0 "1, 4, 8, 8" 1000
    npy n-long "data longer than the shape" '<f4' 0 "1, 4, 8, 8" 1028
    npy n-huge "shape of 2^40 images" '<f4' 0 "1099511627776, 4, 8, 8" 1024
    npy n-overflow "shape whose product overflows" '<f4' 0 "4294967296, 4294967296, 8, 8" 1024
    gen n-trunc trunc "$F/fwd_x.npy" "$T/in/n-trunc.npy" 50 && for opt in --init-noise --decode; do
        newout; run "$opt: .npy cut inside its header" 2 "n-trunc.npy" $S1 $opt "$T/in/n-trunc.npy" -o "$O/o.png"; done
    for opt in --init-noise --step-noise --decode; do
        newout; run "$opt: a Git LFS pointer" 2 "lfs-pointer" $S1 $opt "$T/in/lfs-pointer" -o "$O/o.png"
        newout; run "$opt: missing file" 12 "nope.npy" $S1 $opt "$T/in/nope.npy" -o "$O/o.png"
    done
    gen n-steps npy "$T/in/n-steps.npy" '<f4' 0 "3, 1, 4, 8, 8" 3072 && {
        newout; run "--step-noise: 3 steps of noise for --steps 2" 2 "n-steps.npy" $S1 --step-noise "$T/in/n-steps.npy" -o "$O/o.png"; }
    gen n-nan npy "$T/in/n-nan.npy" '<f4' 0 "1, 4, 8, 8" nan:1024 && {
        newout; run "--init-noise: NaN noise" 12 "" $S1 --init-noise "$T/in/n-nan.npy" -o "$O/o.png"
        if [ -x "$SAMPLE" ] && [ $rc != 0 ] && ! grep "^dit-sample: error: " "$T/stderr" | grep -qi 'nan'; then
            echo "not ok - dit-sample: --init-noise: NaN noise: the error does not say NaN: $(grep -m1 'error' "$T/stderr" | cut -c1-160)"
            fails=$((fails + 1))
        fi; }
    gen n-nan-lat npy "$T/in/n-nan-lat.npy" '<f4' 0 "1, 4, 8, 8" nan:1024 && {
        newout; run "--decode: NaN latents (no black image)" 12 "" $S1 --decode "$T/in/n-nan-lat.npy" -o "$O/o.png"
        if [ -x "$SAMPLE" ] && [ $rc != 0 ] && ! grep "^dit-sample: error: " "$T/stderr" | grep -qi 'nan'; then
            echo "not ok - dit-sample: --decode: NaN latents: the error does not say NaN: $(grep -m1 'error' "$T/stderr" | cut -c1-160)"
            fails=$((fails + 1))
        fi; }
    # dit-sample: bad arguments
    for a in "-c no-such-class" "-c 10" "-c -1" "--steps 0" "--spacing abc" "--spacing ddim0" "-s -1" \
             "--cfg-scale nan" "--eta inf" "--sampler euler" "-n 0" "--nrow 0" "--gpus 0" "--gpus x" \
             "--gpus 65" "--parallel ring" "--parallel cfg+tp" "--seq-mode ring" "--nccl-timeout 0" \
             "--spacing linspace1000" "--sampler dpm++2m --eta 1" "--no-cfg --cfg-scale 4"; do
        newout
        # shellcheck disable=SC2086
        run "argument $a" 2 "" $SAMPLE -m "$G" -o "$O/o.png" --steps 2 -q $a
    done
    # dit-sample: the output side
    newout; run "output in a missing directory" 1 "$T/in/missing-dir/o.png" $S1 -o "$T/in/missing-dir/o.png"
    newout; run "output where writing is refused (/sys)" 1 "/sys/dit-bad-input-test.png" $S1 -o /sys/dit-bad-input-test.png
    newout; mkdir -p "$O/o.png"
    KEEP=o.png run "output path is a directory" 1 "o.png" $S1 -o "$O/o.png"
    newout
    FSIZE=8 run "disk full while writing the PNG (ulimit -f 8)" 1 "o.png" $S1 -o "$O/o.png"
    newout; run "--save-latent in a missing directory" 1 "$T/in/missing-dir/l.npy" $S1 -o "$O/o.png" --save-latent "$T/in/missing-dir/l.npy"
fi

echo "# $n_case cases, $fails failed"
[ $fails = 0 ]
