# wgmma attention experiments (session 6): correctness, opbench, step times per kernel variant
export LD_LIBRARY_PATH=$(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null):$LD_LIBRARY_PATH
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 100 bin/tests/test_cuda 2>&1 | grep -E "attention|^not ok|passed|FAILED" | cut -c1-160
for mt in ${MTS:-1 2 3}; do
  echo "ATT_MT=$mt: 256 px $(DIT_CUDA_ATT_MT=$mt timeout 60 bin/tests/test_cuda --bench --res 256 --steps 50 --reps 5 | grep -o '[0-9.]* ms/step'), 512 px $(DIT_CUDA_ATT_MT=$mt timeout 60 bin/tests/test_cuda --bench --res 512 --steps 20 --reps 3 | grep -o '[0-9.]* ms/step'), 8 images: $(DIT_CUDA_ATT_MT=$mt timeout 60 bin/tests/test_cuda --bench --res 256 --n 8 --steps 10 --reps 3 | grep -o '[0-9.]* ms/step')"
done
