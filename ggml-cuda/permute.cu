// permute.cu - layout changes for multi-GPU exchanges: swap the two middle axes of a 4-axis array whose
// last axis is a contiguous block of bytes,
//   out[a, c, b, :] = in[a, b, c, :]        in (A, Bd, C, inner bytes) -> out (A, C, Bd, inner bytes)
// Sequence parallel uses it to pack rows for an all-to-all (tokens x heads -> peer-major) and to put the
// pieces received from the peers back in token order. Pure bandwidth: one 16-byte (or 4-byte) word per
// thread, reads and writes both coalesced along the inner block.
#include "common.cuh"

template <typename W>
static __global__ void swap12_kernel(const W *__restrict__ in, W *__restrict__ out, int64_t Bd, int64_t C,
                                     int64_t words, int64_t total) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;   // index into out
    if (i >= total) return;
    const int64_t w = i % words, r = i / words;   // r = (a*C + c)*Bd + b
    const int64_t b = r % Bd, ac = r / Bd, c = ac % C, a = ac / C;
    out[i] = in[((a * Bd + b) * C + c) * words + w];
}

int dit_op_swap12(const void *in, void *out, int64_t A, int64_t Bd, int64_t C, int64_t inner, cudaStream_t st) {
    if (inner % 4) return dit_set_error(DIT_ERR_INPUT, "cuda: swap12: block of %lld bytes", (long long)inner);
    const bool v16 = inner % 16 == 0 && (uintptr_t)in % 16 == 0 && (uintptr_t)out % 16 == 0;
    const int64_t words = inner / (v16 ? 16 : 4), total = A * Bd * C * words;
    if (total == 0) return DIT_OK;
    if (v16) swap12_kernel<<<cdiv(total, 256), 256, 0, st>>>((const uint4 *)in, (uint4 *)out, Bd, C, words, total);
    else swap12_kernel<<<cdiv(total, 256), 256, 0, st>>>((const uint32_t *)in, (uint32_t *)out, Bd, C, words, total);
    LAUNCH_CHECK();
    return DIT_OK;
}
