# VAE implicit-GEMM conv experiments (session 6): decode time per conv path
export LD_LIBRARY_PATH=$(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null):$LD_LIBRARY_PATH
nvidia-smi --query-gpu=name --format=csv,noheader
for mode in im2col auto; do for r in 256 512; do echo "mode $mode res $r: $(DIT_VAE_CONV=$mode timeout 60 bin/tests/test_cuda --bench --res $r --steps 5 --reps 3 --depth 2 | grep -o 'decode [0-9.]* ms')"; done; done
