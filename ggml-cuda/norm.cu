// norm.cu - LayerNorm fused with the adaLN residual and modulation (DiT), GroupNorm (+SiLU) (VAE).
//
// resid_ln_mod, one warp per token row m of batch row b = m / T, modulation row r = mod_row + b:
//   if y:  h[m] = h[m] + gate[r] * y[m]                       (x = x + gate * sublayer(...), M:120-121)
//   out[m] = ct( LN(h[m]) * (1 + scale[r]) + shift[r] )       (modulate(LN(x), shift, scale), M:19-20)
//   LN: mean, biased variance of the centred row, eps 1e-6, no affine, all fp32.
// The row lives in registers (NV float4 per lane), so h is read once and written once.
#include "common.cuh"

#define LN_WARPS 4

template <typename T> __device__ __forceinline__ void store4(T *p, float a, float b, float c, float d);
template <> __device__ __forceinline__ void store4<__half>(__half *p, float a, float b, float c, float d) {
    __half2 lo = __floats2half2_rn(a, b), hi = __floats2half2_rn(c, d);
    uint2 u;
    u.x = *(uint32_t *)&lo;
    u.y = *(uint32_t *)&hi;
    *(uint2 *)p = u;
}
template <> __device__ __forceinline__ void store4<__nv_bfloat16>(__nv_bfloat16 *p, float a, float b, float c, float d) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
    uint2 u;
    u.x = *(uint32_t *)&lo;
    u.y = *(uint32_t *)&hi;
    *(uint2 *)p = u;
}

template <typename T, int NV>
static __global__ void resid_ln_mod_kernel(const float *__restrict__ y, float *__restrict__ h, T *__restrict__ out,
                                           int64_t M, int D, int T_tok, const float *__restrict__ gate,
                                           int64_t gate_stride, const float *__restrict__ shift,
                                           const float *__restrict__ scale, int64_t mod_stride,
                                           const dit_cuda_state *__restrict__ state) {
    const int64_t row = (int64_t)blockIdx.x * LN_WARPS + threadIdx.x / WARP;
    const int lane = threadIdx.x % WARP;
    if (row >= M) return;
    const int64_t mrow = state->mod_row + row / T_tok;
    const int D4 = D / 4;
    float4 *h4 = (float4 *)(h + row * D);
    float4 v[NV];
    float sum = 0.0f;
    if (y) {
        const float4 *y4 = (const float4 *)(y + row * D);
        const float4 *g4 = (const float4 *)(gate + mrow * gate_stride);
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int idx = lane + i * WARP;
            if (idx < D4) {
                const float4 a = h4[idx], b = y4[idx], g = g4[idx];
                v[i] = make_float4(a.x + g.x * b.x, a.y + g.y * b.y, a.z + g.z * b.z, a.w + g.w * b.w);
                h4[idx] = v[i];
                sum += (v[i].x + v[i].y) + (v[i].z + v[i].w);
            }
        }
    } else {
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int idx = lane + i * WARP;
            if (idx < D4) {
                v[i] = h4[idx];
                sum += (v[i].x + v[i].y) + (v[i].z + v[i].w);
            }
        }
    }
    const float mean = warp_sum(sum) / D;
    float sq = 0.0f;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const int idx = lane + i * WARP;
        if (idx < D4) {
            const float a = v[i].x - mean, b = v[i].y - mean, c = v[i].z - mean, d = v[i].w - mean;
            sq += (a * a + b * b) + (c * c + d * d);
        }
    }
    const float rstd = rsqrtf(warp_sum(sq) / D + 1e-6f);
    const float4 *s4 = (const float4 *)(shift + mrow * mod_stride);
    const float4 *c4 = (const float4 *)(scale + mrow * mod_stride);
    T *o = out + row * D;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const int idx = lane + i * WARP;
        if (idx < D4) {
            const float4 sh = s4[idx], sc = c4[idx];
            store4<T>(o + 4 * idx, (v[i].x - mean) * rstd * (1.0f + sc.x) + sh.x,
                      (v[i].y - mean) * rstd * (1.0f + sc.y) + sh.y, (v[i].z - mean) * rstd * (1.0f + sc.z) + sh.z,
                      (v[i].w - mean) * rstd * (1.0f + sc.w) + sh.w);
        }
    }
}

template <typename T, int NV>
static void resid_ln_mod_cuda(const float *y, float *h, T *out, int64_t M, int D, int T_tok, const float *gate,
                              int64_t gate_stride, const float *shift, const float *scale, int64_t mod_stride,
                              const dit_cuda_state *state, cudaStream_t st) {
    resid_ln_mod_kernel<T, NV><<<cdiv(M, LN_WARPS), LN_WARPS * WARP, 0, st>>>(y, h, out, M, D, T_tok, gate, gate_stride,
                                                                             shift, scale, mod_stride, state);
}

template <typename T>
static int resid_ln_mod_dispatch(const float *y, float *h, T *out, int64_t M, int D, int T_tok, const float *gate,
                                 int64_t gate_stride, const float *shift, const float *scale, int64_t mod_stride,
                                 const dit_cuda_state *state, cudaStream_t st) {
    const int nv = cdiv(D / 4, WARP);
    if (nv <= 2) resid_ln_mod_cuda<T, 2>(y, h, out, M, D, T_tok, gate, gate_stride, shift, scale, mod_stride, state, st);
    else if (nv <= 4) resid_ln_mod_cuda<T, 4>(y, h, out, M, D, T_tok, gate, gate_stride, shift, scale, mod_stride, state, st);
    else if (nv <= 8) resid_ln_mod_cuda<T, 8>(y, h, out, M, D, T_tok, gate, gate_stride, shift, scale, mod_stride, state, st);
    else if (nv <= 12) resid_ln_mod_cuda<T, 12>(y, h, out, M, D, T_tok, gate, gate_stride, shift, scale, mod_stride, state, st);
    else if (nv <= 16) resid_ln_mod_cuda<T, 16>(y, h, out, M, D, T_tok, gate, gate_stride, shift, scale, mod_stride, state, st);
    else return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: layernorm: hidden size %d > 2048", D);
    LAUNCH_CHECK();
    return DIT_OK;
}

int dit_op_resid_ln_mod(const float *y, float *h, void *out, int ct, int64_t M, int D, int T, const float *gate,
                        int64_t gate_stride, const float *shift, const float *scale, int64_t mod_stride,
                        const dit_cuda_state *state, cudaStream_t st) {
    if (D % 4 != 0) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: layernorm: hidden size %d is not a multiple of 4", D);
    if (ct == DIT_TYPE_BF16)
        return resid_ln_mod_dispatch(y, h, (__nv_bfloat16 *)out, M, D, T, gate, gate_stride, shift, scale, mod_stride,
                                     state, st);
    return resid_ln_mod_dispatch(y, h, (__half *)out, M, D, T, gate, gate_stride, shift, scale, mod_stride, state, st);
}

// ---------------------------------------------------------------- GroupNorm (+SiLU), VAE
// x (N, C, HW) fp32; group g of image n = channels [g*C/G, (g+1)*C/G), contiguous in memory.
// One CTA per (n, g): mean, then variance of the centred values (two passes, fp32 with per-thread
// partial sums), then y = x * a + b with a = rstd * gamma, b = beta - a * mean per channel, as PyTorch's
// CUDA GroupNorm, optionally followed by SiLU.
#define GN_THREADS 512

static __device__ float block_sum(float v, float *sh) {
    v = warp_sum(v);
    const int w = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    float t = lane < (int)(blockDim.x / WARP) ? sh[lane] : 0.0f;
    return warp_sum(t);
}

template <typename T>
static __global__ void group_norm_kernel(const float *__restrict__ x, T *__restrict__ out,
                                         const float *__restrict__ w, const float *__restrict__ b, int C, int HW,
                                         int groups, float eps, int silu) {
    __shared__ float sh[32];
    const int n = blockIdx.x / groups, g = blockIdx.x % groups;
    const int cg = C / groups;
    const int64_t len = (int64_t)cg * HW;
    const float *xg = x + ((int64_t)n * C + (int64_t)g * cg) * HW;
    T *og = out + ((int64_t)n * C + (int64_t)g * cg) * HW;
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) s += xg[i];
    const float mean = block_sum(s, sh) / (float)len;
    float q = 0.0f;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
        const float d = xg[i] - mean;
        q += d * d;
    }
    const float rstd = rsqrtf(block_sum(q, sh) / (float)len + eps);
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
        const int ch = g * cg + (int)(i / HW);
        const float a = rstd * w[ch];
        const float bb = b[ch] - a * mean;
        float v = xg[i] * a + bb;
        if (silu) v = silu_f(v);
        og[i] = from_f32<T>(v);
    }
}

int dit_op_group_norm(const float *x, void *out, int out_type, const float *w, const float *b, int N, int C, int HW,
                      int groups, float eps, int silu, cudaStream_t st) {
    if (groups <= 0 || C % groups != 0)
        return dit_set_error(DIT_ERR_INPUT, "cuda: group norm: %d channels, %d groups", C, groups);
    const int grid = N * groups;
    if (out_type == DIT_TYPE_F32)
        group_norm_kernel<<<grid, GN_THREADS, 0, st>>>(x, (float *)out, w, b, C, HW, groups, eps, silu);
    else if (out_type == DIT_TYPE_BF16)
        group_norm_kernel<<<grid, GN_THREADS, 0, st>>>(x, (__nv_bfloat16 *)out, w, b, C, HW, groups, eps, silu);
    else
        group_norm_kernel<<<grid, GN_THREADS, 0, st>>>(x, (__half *)out, w, b, C, HW, groups, eps, silu);
    LAUNCH_CHECK();
    return DIT_OK;
}
