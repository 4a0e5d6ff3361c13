#!/bin/sh
# test_convert.sh - dit-convert and dit-info on the fixture checkpoints (CPU only, a few seconds).
#   fixtures: tests/fixtures/ (tests/ref/make_fixtures.py); bad and extra inputs: tests/bad_inputs/convert/
#   (make_bad.py there); the rest (truncations, LFS pointer, ...) is made here in a temporary directory.
# Checks: every fixture converts; formats/wrappers that hold the same weights give byte-identical files;
# tensor bytes equal the safetensors sources (tests/gguf_check.mjs, an independent reader); config KVs;
# VAE naming schemes; class names; every bad-input class (exit status, message names the file, no output
# left behind); @huggingface/gguf parses every written file and agrees with dit-info --json.
cd "$(dirname "$0")/.." || exit 2
B=${DIT_BIN:-bin}   # DIT_BIN: another directory holding the programs (e.g. a sanitizer build)
CONV=$B/dit-convert INFO=$B/dit-info FX=tests/fixtures BAD=tests/bad_inputs/convert
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok - $1"; }
notok() { echo "not ok - $1: $2"; fails=$((fails + 1)); }
for b in $CONV $INFO; do [ -x $b ] || { echo "not ok - $b is not built (run make)"; exit 1; }; done

# conv NAME ARGS...: converts into $T/NAME.gguf with a fixed general.name, records the file for gguf_check
GGUFS=""
conv() {
    n=$1; shift
    if $CONV "$@" --name fixture -o "$T/$n.gguf" 2>"$T/$n.err" && [ -f "$T/$n.gguf" ]; then
        GGUFS="$GGUFS $T/$n.gguf"
        ok "convert $n"
    else
        notok "convert $n" "$(tail -1 "$T/$n.err")"
    fi
}
# kv FILE KEY VALUE: dit-info --json has {"key":KEY,...,"value":VALUE}
kv() {
    if $INFO --json "$1" | grep -q "^{\"key\":\"$2\",.*\"value\":$3}"; then ok "$(basename "$1") $2 = $3"
    else notok "$(basename "$1") $2 = $3" "$($INFO --json "$1" | grep "\"key\":\"$2\"" | head -c 200)"; fi
}
same() {   # same WHAT A B: byte-identical files
    if cmp -s "$2" "$3"; then ok "$1"; else notok "$1" "$(basename "$2") and $(basename "$3") differ"; fi
}

# ---- every fixture converts
conv xs $FX/dit_xs.pt --heads 1
conv s $FX/dit_s.pt --heads 2
conv xs_legacy $FX/dit_xs_legacy.pt --heads 1
conv xs_st $FX/dit_xs.safetensors --heads 1
conv xs_train $FX/dit_xs_train.pt --heads 1
conv xs_model $FX/dit_xs_train.pt --heads 1 --use-model
conv xs_f64 $FX/dit_xs_f64.pt --heads 1
conv xs_f16 $FX/dit_xs_f16.pt --heads 1
conv xs_bf16 $FX/dit_xs_bf16.pt --heads 1
conv xs_to_f16 $FX/dit_xs.pt --heads 1 --outtype f16
conv xs_to_bf16 $FX/dit_xs.pt --heads 1 --outtype bf16
conv px $FX/dit_px.pt --heads 1
conv nc $FX/dit_xs_noncontig.pt --raw
conv xs_deflated $BAD/ok_deflated.pt --heads 1
conv tiny $BAD/ok_tiny.pt --heads 1
conv tiny_module $BAD/ok_module_prefix.pt --heads 1
conv tiny_train_args $BAD/ok_train_unknown_args.pt --heads 1
conv cls1000 $BAD/ok_1000_classes.safetensors --heads 1
conv vae_dir $FX/dit_xs.pt --heads 1 --vae $FX/vae_s
conv vae_file $FX/dit_xs.pt --heads 1 --vae $FX/vae_s/diffusion_pytorch_model.safetensors
conv vae_legacy $FX/dit_xs.pt --heads 1 --vae $FX/vae_s_legacy.safetensors
conv vae_ldm $FX/dit_xs.pt --heads 1 --vae $FX/vae_s_ldm.pt
conv vae_f32 $FX/dit_xs.pt --heads 1 --vae $FX/vae_s --outtype f32

# ---- the same weights through every container and wrapper give the same file, byte for byte
same "legacy torch.save == zip" $T/xs.gguf $T/xs_legacy.gguf
same "safetensors == zip" $T/xs.gguf $T/xs_st.gguf
same "train.py dict takes ema == plain state_dict" $T/xs.gguf $T/xs_train.gguf
same "float64 storages converted to the same float32 values" $T/xs.gguf $T/xs_f64.gguf
same "deflated zip entries == stored" $T/xs.gguf $T/xs_deflated.gguf
same "module. prefix stripped" $T/tiny.gguf $T/tiny_module.gguf
same "unknown class inside train.py args is ignored" $T/tiny.gguf $T/tiny_train_args.gguf
same "VAE: diffusers directory == its safetensors file" $T/vae_dir.gguf $T/vae_file.gguf
same "VAE: legacy attention names == diffusers names" $T/vae_dir.gguf $T/vae_legacy.gguf
same "VAE: LDM names (first_stage_model., reversed up blocks, 1x1 conv attention) == diffusers" $T/vae_dir.gguf $T/vae_ldm.gguf

# --use-model: exactly the three tensors the fixture changes in "model" differ from "ema"
$INFO --sums $T/xs_train.gguf >$T/ema.sums; $INFO --sums $T/xs_model.gguf >$T/model.sums
d=$(diff $T/ema.sums $T/model.sums | grep '^>' | cut -d' ' -f2 | sort | tr '\n' ' ')
if [ "$d" = "blocks.0.attn.qkv.weight final_layer.linear.weight y_embedder.embedding_table.weight " ]; then
    ok "--use-model takes \"model\": 3 tensors differ from \"ema\""
else notok "--use-model takes \"model\"" "differing tensors: '$d'"; fi

# non-contiguous views (transposed, offset views into one storage) gathered into C order: equal to the
# expected .npy values (raw f32 after the .npy header) and to the dit_xs tensors
n=0; bad=""
for npy in $FX/dit_xs_noncontig_expected/*.npy; do
    name=$(basename "$npy" .npy)
    hl=$(od -An -tu2 -j8 -N2 "$npy" | tr -d ' ')
    tail -c +$((10 + hl + 1)) "$npy" >$T/want.bin
    $INFO --dump "$name" $T/nc.gguf >$T/got.bin 2>/dev/null
    if cmp -s $T/want.bin $T/got.bin; then n=$((n + 1)); else bad="$bad $name"; fi
done
if [ -z "$bad" ] && [ $n -ge 6 ]; then ok "non-contiguous views: $n tensors equal the expected .npy bytes"
else notok "non-contiguous views" "differ:$bad ($n equal)"; fi
$INFO --sums $T/nc.gguf >$T/nc.sums
if [ "$(grep -c -F -x -f $T/nc.sums $T/ema.sums)" = 6 ]; then ok "non-contiguous views equal the dit_xs tensors"
else notok "non-contiguous views equal the dit_xs tensors" "$(cat $T/nc.sums)"; fi

# f16 / bf16 checkpoints keep their 2-D weights' bit patterns (all 11 of dit_xs), equal to our RNE rounding of the
# f32 weights (the fixtures were cast by torch, also RNE); their 1-D tensors and pos_embed are f32
for ty in f16 bf16; do
    $INFO --sums $T/xs_$ty.gguf >$T/a.sums; $INFO --sums $T/xs_to_$ty.gguf >$T/b.sums
    na=$(grep -c " $ty " $T/a.sums); common=$(grep " $ty " $T/a.sums | grep -c -F -x -f $T/b.sums)
    if [ "$na" -eq 11 ] && [ "$na" = "$common" ] && ! grep -v " $ty " $T/a.sums | grep -v "^pos_embed " | grep -q "\[[0-9]*, "; then
        ok "$ty checkpoint: $na 2-D+ weights kept as $ty, bit-identical to our rounding of the f32 weights"
    else notok "$ty checkpoint keeps $ty weights" "$na $ty tensors, $common identical"; fi
done

# ---- tensor bytes equal the safetensors sources (independent reader in node)
NODE_OK=0
if command -v node >/dev/null 2>&1; then
    if [ ! -d tests/node_modules/@huggingface/gguf ]; then
        if command -v npm >/dev/null 2>&1; then
            (cd tests && npm install --no-audit --no-fund --no-package-lock --silent >"$T/npm.log" 2>&1)
        fi
    fi
    if [ -d tests/node_modules/@huggingface/gguf ]; then NODE_OK=1
    else echo "ok - gguf_check # SKIP @huggingface/gguf not installed ($(command -v npm >/dev/null && tail -1 "$T/npm.log" | head -c 150 || echo no npm))"; fi
else
    echo "ok - gguf_check # SKIP node is not installed"
fi
if [ $NODE_OK = 1 ]; then
    node tests/gguf_check.mjs --safetensors $FX/dit_xs.safetensors "" $T/xs.gguf || fails=$((fails + 1))
    node tests/gguf_check.mjs --safetensors $FX/vae_s/diffusion_pytorch_model.safetensors vae. $T/vae_dir.gguf || fails=$((fails + 1))
    node tests/gguf_check.mjs --safetensors $FX/vae_s_legacy.safetensors vae. $T/vae_f32.gguf || fails=$((fails + 1))
    node tests/gguf_check.mjs --safetensors $BAD/ok_1000_classes.safetensors "" $T/cls1000.gguf || fails=$((fails + 1))
fi

# ---- config KVs
for k in "general.architecture \"dit\"" "general.alignment 32" "general.file_type 0" "dit.depth 2" \
         "dit.hidden_size 144" "dit.num_heads 2" "dit.patch_size 2" "dit.input_size 8" "dit.in_channels 4" \
         "dit.out_channels 8" "dit.learn_sigma true" "dit.num_classes 10" "dit.mlp_hidden 576" "dit.cfg_channels 3" \
         "general.name \"fixture\""; do
    kv $T/s.gguf $k
done
kv $T/px.gguf dit.in_channels 1; kv $T/px.gguf dit.out_channels 2; kv $T/px.gguf dit.cfg_channels 1
kv $T/px.gguf dit.hidden_size 64
kv $T/xs_f16.gguf general.file_type 1; kv $T/xs_bf16.gguf general.file_type 32; kv $T/xs_to_f16.gguf general.file_type 1
kv $T/vae_dir.gguf vae.block_out_channels "\[32,32,32,64\]"; kv $T/vae_dir.gguf vae.layers_per_block 2
kv $T/vae_dir.gguf vae.norm_num_groups 32; kv $T/vae_dir.gguf vae.latent_channels 4; kv $T/vae_dir.gguf vae.out_channels 3
kv $T/vae_dir.gguf vae.scaling_factor 0.182150006
$CONV $FX/dit_xs.pt --heads 1 --cfg-channels 4 -o $T/cfg4.gguf 2>/dev/null && kv $T/cfg4.gguf dit.cfg_channels 4
if $CONV $FX/dit_xs.pt -o $T/auto.gguf 2>$T/err; then notok "hidden 72 without --heads is refused" "exit 0"
else grep -q -- "--heads" $T/err && ok "hidden 72 without --heads: asks for --heads" || notok "asks for --heads" "$(cat $T/err)"; fi
# default output name: beside the checkpoint, stem + .gguf; general.name = stem
cp $FX/dit_xs.pt $T/My-DiT.pt && $CONV $T/My-DiT.pt --heads 1 2>/dev/null && kv $T/My-DiT.gguf general.name '"My-DiT"'

# tensor names, types and shapes (PyTorch order in dit-info)
$INFO -v $T/vae_dir.gguf >$T/vae.txt
for pat in "pos_embed  *f32  *\[1, 16, 72\]" "blocks.0.attn.qkv.weight  *f32  *\[216, 72\]" \
           "vae.decoder.up_blocks.0.resnets.0.conv1.weight  *f16  *\[64, 64, 3, 3\]" \
           "vae.decoder.up_blocks.1.resnets.0.conv_shortcut.weight  *f16  *\[32, 64, 1, 1\]" \
           "vae.decoder.mid_block.attentions.0.to_q.weight  *f16  *\[64, 64\]" \
           "vae.decoder.mid_block.attentions.0.to_out.0.bias  *f32  *\[64\]" \
           "vae.decoder.up_blocks.2.upsamplers.0.conv.weight  *f16  *\[32, 32, 3, 3\]" \
           "vae.post_quant_conv.weight  *f16  *\[4, 4, 1, 1\]" "vae.decoder.conv_norm_out.bias  *f32  *\[32\]"; do
    grep -q "$pat" $T/vae.txt && ok "dit-info lists $(echo "$pat" | cut -d' ' -f1)" || notok "dit-info lists $pat" "not found"
done
if grep -q -e "vae\.encoder\." -e "vae\.quant_conv\." -e "query" -e "up_blocks\.3\.upsamplers" $T/vae.txt; then
    notok "VAE: encoder, quant_conv, legacy names and a last-block upsampler are absent" "$(grep -e encoder -e quant_conv -e query -e up_blocks.3.upsamplers $T/vae.txt | head -3)"
else ok "VAE: encoder, quant_conv, legacy names and a last-block upsampler are absent"; fi

# class names: ImageNet for 1000 classes (abridged without -v, full with -v), --class-names otherwise
$INFO $T/cls1000.gguf >$T/c.txt; $INFO -v $T/cls1000.gguf >$T/cv.txt
if grep -q 'dit.class_names .*str\[1000\] \["tench", "goldfish"' $T/c.txt && ! grep -q 'toilet tissue' $T/c.txt \
   && grep -q '"golden retriever", "Labrador retriever"' $T/cv.txt && grep -q '"toilet tissue"\]' $T/cv.txt; then
    ok "1000 classes: ImageNet names embedded (207 = golden retriever); arrays abridged unless -v"
else notok "ImageNet class names" "$(grep class_names $T/c.txt | head -c 200)"; fi
printf 'zero\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n' >$T/names.txt
$CONV $FX/dit_xs.pt --heads 1 --class-names $T/names.txt -o $T/names.gguf 2>/dev/null
kv $T/names.gguf dit.class_names '\["zero","one","two","three","four","five","six","seven","eight","nine"\]'
if $INFO --json $T/xs.gguf | grep -q class_names; then notok "10 classes without --class-names: no names" "found"
else ok "10 classes without --class-names: no names KV"; fi

# ---- bad inputs: exit status, one line naming the file, no output (nor temporary) file left behind
# bad STATUS WHAT PATTERN FILE ARGS...
bad() {
    st=$1 what=$2 pat=$3 file=$4; shift 4
    rm -f $T/out.gguf
    $CONV "$file" "$@" -o $T/out.gguf >$T/bad.out 2>$T/bad.err
    rc=$?
    msg=$(cat $T/bad.err)
    left=$(ls $T/out.gguf* 2>/dev/null)
    if [ $rc -ne "$st" ]; then notok "$what" "exit $rc, expected $st ($msg)"
    elif [ "$(wc -l <$T/bad.err)" -ne 1 ] || ! grep -q "^dit-convert: error: " $T/bad.err; then notok "$what" "not one error line: $msg"
    elif LC_ALL=C grep -q '[[:cntrl:]]' $T/bad.err; then notok "$what" "control characters in the message"
    elif ! grep -q -F "$file" $T/bad.err && ! grep -q -F "$ERRFILE" $T/bad.err; then notok "$what" "message does not name the file: $msg"
    elif ! grep -q -e "$pat" $T/bad.err; then notok "$what" "message lacks '$pat': $msg"
    elif [ -n "$left" ]; then notok "$what" "left $left behind"
    else ok "$what: exit $st, $(echo "$msg" | cut -c21- | head -c 150)"; fi
    ERRFILE=/nonexistent/
}
ERRFILE=/nonexistent/
head -c 200000 $FX/dit_xs.pt >$T/trunc_zip.pt
head -c 100000 $FX/dit_xs_legacy.pt >$T/trunc_legacy.pt
head -c 300000 $FX/dit_xs.safetensors >$T/trunc.safetensors
head -c 5000 $FX/dit_xs.safetensors >$T/trunc_header.safetensors
printf 'version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 2700000000\n' >$T/lfs.pt
printf 'these are not the weights you are looking for\n' >$T/text.pt
printf '<!DOCTYPE html><html><body>Not Found</body></html>\n' >$T/page.pt
: >$T/empty.pt
mkdir -p $T/adir
bad 2 "truncated zip" "end-of-central-directory" $T/trunc_zip.pt --heads 1
bad 2 "truncated legacy torch.save" "truncated" $T/trunc_legacy.pt --heads 1
bad 2 "truncated safetensors" "truncated" $T/trunc.safetensors --heads 1
bad 2 "safetensors truncated inside the header" "truncated" $T/trunc_header.safetensors --heads 1
bad 2 "Git LFS pointer" "Git LFS pointer.*git lfs pull" $T/lfs.pt
bad 2 "text file" "not a checkpoint" $T/text.pt
bad 2 "HTML page" "HTML" $T/page.pt
bad 2 "empty file" "empty" $T/empty.pt
bad 2 "directory" "directory" $T/adir
bad 2 "missing file" "cannot open" $T/no_such_file.pt
bad 2 "GGUF given as the checkpoint" "already a GGUF" $T/xs.gguf
bad 2 "pickle global os.system" "refusing pickle global 'posix.system'" $BAD/global_os_system.pt --heads 1
bad 2 "pickle global builtins.eval" "refusing pickle global '__builtin__.eval'" $BAD/global_builtins_eval.pt --heads 1
bad 2 "unknown class in the weights" "__main__.Foo" $BAD/global_unknown_in_weights.pt --heads 1
bad 2 "pickled nn.Module" "torch.nn.modules.linear.Linear" $BAD/pickled_module.pt --heads 1
bad 2 "missing tensor" "missing tensor 'blocks.0.mlp.fc2.bias' (expected shape \[8\]" $BAD/missing_tensor.pt --heads 1
bad 2 "misshapen tensor" "'blocks.0.attn.proj.weight' has shape \[8, 7\], expected \[8, 8\]" $BAD/misshapen_tensor.pt --heads 1
bad 2 "unexpected tensor" "unexpected tensor 'extra.weight'" $BAD/extra_tensor.pt --heads 1
bad 2 "int64 weight" "'blocks.0.attn.proj.weight' has dtype int64" $BAD/int64_weight.pt --heads 1
bad 2 "expanded (stride 0) view" "more elements than its storage" $BAD/expanded_view.pt --heads 1
bad 2 "pickle protocol 1" "protocol 2-5" $BAD/pickle_protocol1.pt
bad 2 "unsupported pickle opcode (EXT1)" "unsupported opcode.*0x82" $BAD/pickle_ext1.pt
bad 2 "memo index over the limit" "memo index over the limit" $BAD/memo_index_huge.pt
bad 2 "memo index far out of sequence" "memo index out of sequence" $BAD/memo_index_sparse.pt
bad 2 "empty tuple as the whole pickle" "holds a tuple, not a state_dict" $BAD/pickle_empty_tuple.pt
bad 2 "pickle string longer than the file (legacy)" "ends early" $BAD/legacy_huge_string.pt
bad 2 "global with control bytes in its name" "refusing pickle global 'builtins.ev\\\\x1b\[2Jal\\\\x01'" $BAD/global_control_chars.pt
bad 2 "storage entry missing from the zip" "data/0' is missing" $BAD/missing_storage_entry.pt
bad 2 "storage smaller than its tensor" "holds 8 bytes" $BAD/storage_too_small.pt
bad 2 "safetensors gap" "InvalidOffset" $BAD/st_gap.safetensors
bad 2 "safetensors overlap" "InvalidOffset" $BAD/st_overlap.safetensors
bad 2 "safetensors size mismatch" "TensorInvalidInfo" $BAD/st_wrong_size.safetensors
bad 2 "safetensors trailing bytes" "MetadataIncompleteBuffer" $BAD/st_trailing_bytes.safetensors
bad 2 "safetensors header over 100 MB" "HeaderTooLarge" $BAD/st_header_too_large.safetensors
bad 2 "safetensors bad JSON" "bad JSON" $BAD/st_bad_json.safetensors
bad 2 "safetensors duplicate tensor" "appears twice" $BAD/st_dup_key.safetensors
bad 2 "--use-model on a plain state_dict" "no \"model\"" $FX/dit_xs.pt --heads 1 --use-model
bad 2 "VAE passed as the DiT" "VAE, not a DiT" $FX/vae_s_legacy.safetensors
ERRFILE=$FX/vae_s; bad 2 "VAE that does not fit (latent 4, DiT in_channels 1)" "does not fit" $FX/dit_px.pt --heads 1 --vae $FX/vae_s
ERRFILE=$FX/dit_xs.pt; bad 2 "DiT passed as the VAE" "no VAE decoder" $FX/dit_xs.pt --heads 1 --vae $FX/dit_xs.pt
mkdir -p $T/vae_bad && cp $FX/vae_s/diffusion_pytorch_model.safetensors $T/vae_bad/
sed 's/"layers_per_block": 2/"layers_per_block": 1/' $FX/vae_s/config.json >$T/vae_bad/config.json
ERRFILE=$T/vae_bad; bad 2 "VAE config.json that disagrees with the weights" "layers_per_block 1 but the weights have 2" $FX/dit_xs.pt --heads 1 --vae $T/vae_bad
head -3 $T/names.txt >$T/names3.txt
ERRFILE=$T/names3.txt; bad 2 "--class-names with the wrong count" "has 3 names, the model has 10" $FX/dit_xs.pt --heads 1 --class-names $T/names3.txt
printf 'zero\none\n\377\376\n' >$T/names_latin1.txt
ERRFILE=$T/names_latin1.txt; bad 2 "--class-names that is not UTF-8" "line 3 is not valid UTF-8" $FX/dit_xs.pt --heads 1 --class-names $T/names_latin1.txt
# I/O failures: exit 1
ERRFILE=/nonexistent/
rc=0; $CONV $FX/dit_xs.pt --heads 1 -o /nonexistent/dir/x.gguf 2>$T/err || rc=$?
[ $rc = 1 ] && grep -q "/nonexistent/dir/x.gguf" $T/err && ok "unwritable output directory: exit 1" || notok "unwritable output directory" "exit $rc: $(cat $T/err)"
# full disk, simulated with a file size limit (SIGXFSZ ignored so the write fails with EFBIG)
rm -f $T/full.gguf*
rc=0; (trap '' XFSZ; ulimit -f 64; exec $CONV $FX/dit_s.pt --heads 2 -o $T/full.gguf) 2>$T/err || rc=$?
if [ $rc = 1 ] && grep -q "write failed" $T/err && [ -z "$(ls $T/full.gguf* 2>/dev/null)" ]; then
    ok "disk full (file size limit): exit 1, no output left"
else notok "disk full (file size limit)" "exit $rc, left: $(ls $T/full.gguf* 2>/dev/null): $(cat $T/err)"; fi
# dit-info on a damaged file: the reader's message, exit 2
head -c 3000 $T/xs.gguf >$T/damaged.gguf
rc=0; $INFO $T/damaged.gguf >/dev/null 2>$T/err || rc=$?
[ $rc = 2 ] && grep -q "^dit-info: error: $T/damaged.gguf" $T/err && ok "dit-info on a truncated GGUF: exit 2" || notok "dit-info on a truncated GGUF" "exit $rc: $(cat $T/err)"

# ---- @huggingface/gguf parses every written file and agrees with dit-info; negative control first
if [ $NODE_OK = 1 ]; then
    if node tests/gguf_check.mjs $INFO $T/damaged.gguf >$T/neg.txt 2>&1; then notok "gguf_check rejects a truncated file" "$(cat $T/neg.txt)"
    else ok "gguf_check rejects a truncated file"; fi
    cp $T/xs.gguf $T/flip.gguf && printf '\377' | dd of=$T/flip.gguf bs=1 seek=5000 conv=notrunc 2>/dev/null
    if node tests/gguf_check.mjs --safetensors $FX/dit_xs.safetensors "" $T/flip.gguf >$T/neg.txt 2>&1; then
        notok "safetensors comparison catches a changed byte" "$(cat $T/neg.txt)"
    else ok "safetensors comparison catches a changed byte"; fi
    node tests/gguf_check.mjs $INFO $GGUFS || fails=$((fails + 1))
fi

[ $fails -eq 0 ]
