export NCCL_NVLS_ENABLE=0
xl=/tmp/xl512; F=$xl/xl.gguf
[ -f $F ] || { python3 bench/make_xl.py $xl --sizes 512 >/dev/null && bin/dit-convert $xl/DiT-XL-2-512x512.pt --vae $xl/sd-vae-ft-mse -o $F --outtype f16 >/dev/null; }
cat $F > /dev/null
for env in "X=1" "NCCL_CUMEM_ENABLE=0" "NCCL_RUNTIME_CONNECT=0"; do
for g in 1 2; do for r in 1 2; do echo "== $env gpus $g run $r"; echo "T start $(date +%s%3N)"; env $env bin/dit-sample-t -m $F -c 207 -o /tmp/a.png -q -v --sampler dpm++2m --gpus $g 2>&1 | grep -E "^T |upload|phases|timings"; echo "T end $(date +%s%3N)"; done; done; done
