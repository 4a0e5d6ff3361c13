#!/bin/sh
# Builds bin/tests/test_cuda from objects of its own (build/cuda-private): build/ is shared, and an object
# compiled there with CUDA=0 (no -DDIT_CUDA) would silently turn off the GPU path of dit_sample.
set -e
cd "$(dirname "$0")/../.."
make -s CUDA=1 BUILD=build/cuda-private bin/tests/test_cuda bin/dit-convert bin/dit-quantize
nm build/cuda-private/dit.o | grep -q dit_cuda_sample || { echo "build_cuda: dit.o has no CUDA path" >&2; exit 1; }
