// quant.cu - ggml block formats kept as raw blocks in GPU memory, dequantized right before a GEMM.
//
// Blocks of 32 weights (ggml-quants.c layouts; d, m are fp16):
//   q4_0 { d; qs[16] }         w[j] = ((qs[j] & 15) - 8) d,  w[j+16] = ((qs[j] >> 4) - 8) d      18 B
//   q4_1 { d; m; qs[16] }      w[j] = (qs[j] & 15) d + m,    w[j+16] = (qs[j] >> 4) d + m        20 B
//   q5_0 { d; qh[4]; qs[16] }  fifth bit of w[j] = bit j of qh, of w[j+16] = bit j+16; minus 16  22 B
//   q5_1 { d; m; qh[4]; qs[16] } as q5_0 without the -16, plus m                                 24 B
//   q8_0 { d; qs[32] int8 }    w[j] = qs[j] d                                                    34 B
// One thread per 8 weights: a warp covers 8 consecutive blocks, reads and writes coalesced. The result is
// w = float(q) * float(d) (+ float(m)) rounded once to the output type, as dit_dequantize_row + cast.
#include "common.cuh"

#define DEQUANT_BLOCK_SIZE 256

static __device__ __forceinline__ float ld_half(const uint8_t *p) {
    return __half2float(__ushort_as_half((unsigned short)(p[0] | (p[1] << 8))));
}

template <int TYPE> __device__ __forceinline__ float dequant_one(const uint8_t *blk, int j) {
    if (TYPE == DIT_TYPE_Q8_0) {
        return (float)(int8_t)blk[2 + j] * ld_half(blk);
    } else if (TYPE == DIT_TYPE_Q4_0) {
        const int q = j < 16 ? (blk[2 + j] & 15) : (blk[2 + j - 16] >> 4);
        return (float)(q - 8) * ld_half(blk);
    } else if (TYPE == DIT_TYPE_Q4_1) {
        const int q = j < 16 ? (blk[4 + j] & 15) : (blk[4 + j - 16] >> 4);
        return (float)q * ld_half(blk) + ld_half(blk + 2);
    } else if (TYPE == DIT_TYPE_Q5_0) {
        const uint32_t qh = blk[2] | (blk[3] << 8) | (blk[4] << 16) | ((uint32_t)blk[5] << 24);
        const int lo = j < 16 ? (blk[6 + j] & 15) : (blk[6 + j - 16] >> 4);
        const int q = lo | (((qh >> j) & 1) << 4);
        return (float)(q - 16) * ld_half(blk);
    } else { // Q5_1
        const uint32_t qh = blk[4] | (blk[5] << 8) | (blk[6] << 16) | ((uint32_t)blk[7] << 24);
        const int lo = j < 16 ? (blk[8 + j] & 15) : (blk[8 + j - 16] >> 4);
        const int q = lo | (((qh >> j) & 1) << 4);
        return (float)q * ld_half(blk) + ld_half(blk + 2);
    }
}

// 8 consecutive weights (a quarter block) per thread, written with one 16-byte store (fp16/bf16)
template <int TYPE, int BYTES, typename T>
static __global__ void dequant_kernel(const uint8_t *__restrict__ src, T *__restrict__ dst, int64_t n8) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n8) return;
    const uint8_t *blk = src + (t >> 2) * BYTES;
    const int j0 = (int)(t & 3) * 8;
    struct __align__(16) { T v[8]; } o;
#pragma unroll
    for (int j = 0; j < 8; j++) o.v[j] = from_f32<T>(dequant_one<TYPE>(blk, j0 + j));
    if (sizeof(T) == 2) {
        *(uint4 *)(dst + 8 * t) = *(const uint4 *)&o;
    } else {
#pragma unroll
        for (int j = 0; j < 8; j++) dst[8 * t + j] = o.v[j];
    }
}

template <typename T>
static int dequant_cuda(int type, const void *blocks, int64_t n, T *out, cudaStream_t st) {
    const int64_t n8 = n / 8;
    const int grid = cdiv(n8, DEQUANT_BLOCK_SIZE);
    const uint8_t *src = (const uint8_t *)blocks;
    switch (type) {
    case DIT_TYPE_Q8_0: dequant_kernel<DIT_TYPE_Q8_0, 34, T><<<grid, DEQUANT_BLOCK_SIZE, 0, st>>>(src, out, n8); break;
    case DIT_TYPE_Q4_0: dequant_kernel<DIT_TYPE_Q4_0, 18, T><<<grid, DEQUANT_BLOCK_SIZE, 0, st>>>(src, out, n8); break;
    case DIT_TYPE_Q4_1: dequant_kernel<DIT_TYPE_Q4_1, 20, T><<<grid, DEQUANT_BLOCK_SIZE, 0, st>>>(src, out, n8); break;
    case DIT_TYPE_Q5_0: dequant_kernel<DIT_TYPE_Q5_0, 22, T><<<grid, DEQUANT_BLOCK_SIZE, 0, st>>>(src, out, n8); break;
    case DIT_TYPE_Q5_1: dequant_kernel<DIT_TYPE_Q5_1, 24, T><<<grid, DEQUANT_BLOCK_SIZE, 0, st>>>(src, out, n8); break;
    default: return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: dequantize: unsupported type %d", type);
    }
    LAUNCH_CHECK();
    return DIT_OK;
}

int dit_op_dequant(int type, const void *blocks, int64_t rows, int64_t cols, void *out, int out_type,
                   cudaStream_t st) {
    if (cols % 32 != 0) return dit_set_error(DIT_ERR_INPUT, "cuda: dequantize: %lld columns", (long long)cols);
    const int64_t n = rows * cols;
    switch (out_type) {
    case DIT_TYPE_F32: return dequant_cuda(type, blocks, n, (float *)out, st);
    case DIT_TYPE_F16: return dequant_cuda(type, blocks, n, (__half *)out, st);
    case DIT_TYPE_BF16: return dequant_cuda(type, blocks, n, (__nv_bfloat16 *)out, st);
    }
    return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: dequantize: output type %d", out_type);
}
