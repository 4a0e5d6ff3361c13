// norm.cu - LayerNorm fused with the adaLN residual and modulation (DiT), GroupNorm (+SiLU) (VAE).
//
// resid_ln_mod, one CTA per token row m of batch row b = m / T, modulation row r = mod_row + b:
//   if y:  h[m] = h[m] + gate[r] * y[m]                       (x = x + gate * sublayer(...), M:120-121)
//   out[m] = ct( LN(h[m]) * (1 + scale[r]) + shift[r] )       (modulate(LN(x), shift, scale), M:19-20)
//   LN: mean, biased variance of the centred row, eps 1e-6, no affine, all fp32. y (the proj / fc2 GEMM
//   output, bias included) is ct like out: an fp32 y doubled the bytes of the GEMM's write and of this
//   read, for precision the fp16 GEMM operands around it do not have (8 images: 8.34 -> 8.04 ms/step).
// One float4 of the row per thread (D/4 threads, rounded up to warps: 288 for D 1152), so h is read once
// and written once. A CTA per row, not a warp: at M = 512 (256 px) a warp per row left ~4 warps per SM,
// too few loads in flight to hide L2 latency (~8 us a call); a CTA per row took the 256 px step from 1.90
// to 1.57 ms (bench/RESULTS.md).
#include "common.cuh"

#define LN_MAX_THREADS 512   // D <= 2048

template <typename T> __device__ __forceinline__ void store4(T *p, float a, float b, float c, float d);
template <> __device__ __forceinline__ void store4<__half>(__half *p, float a, float b, float c, float d) {
    __half2 lo = __floats2half2_rn(a, b), hi = __floats2half2_rn(c, d);
    uint2 u;
    u.x = *(uint32_t *)&lo;
    u.y = *(uint32_t *)&hi;
    *(uint2 *)p = u;
}
template <> __device__ __forceinline__ void store4<float>(float *p, float a, float b, float c, float d) {
    *(float4 *)p = make_float4(a, b, c, d);
}
template <> __device__ __forceinline__ void store4<__nv_bfloat16>(__nv_bfloat16 *p, float a, float b, float c, float d) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
    uint2 u;
    u.x = *(uint32_t *)&lo;
    u.y = *(uint32_t *)&hi;
    *(uint2 *)p = u;
}

// sum of v over the CTA, in a fixed order (warp sums, then the first warp over them); red holds 32 floats
__device__ __forceinline__ float block_sum(float v, float *red) {
    const int w = threadIdx.x / WARP, lane = threadIdx.x % WARP, nw = blockDim.x / WARP;
    v = warp_sum(v);
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();   // red is reused by the next call
    return v;
}

template <typename T> __device__ __forceinline__ float4 load4(const T *p) {
    const uint2 u = *(const uint2 *)p;
    const T *e = (const T *)&u;
    return make_float4(to_f32(e[0]), to_f32(e[1]), to_f32(e[2]), to_f32(e[3]));
}

template <typename T>
static __global__ void resid_ln_mod_kernel(const T *__restrict__ y, float *__restrict__ h, T *__restrict__ out,
                                           int D, int T_tok, const float *__restrict__ gate, int64_t gate_stride,
                                           const float *__restrict__ shift, const float *__restrict__ scale,
                                           int64_t mod_stride, const dit_cuda_state *__restrict__ state) {
    __shared__ float red[WARP];
    const int64_t row = blockIdx.x;
    const int i = threadIdx.x, live = i < D / 4;
    const int64_t mrow = state->mod_row + row / T_tok;
    float4 *h4 = (float4 *)(h + row * D);
    float4 v = make_float4(0, 0, 0, 0);
    if (live) {
        v = h4[i];
        if (y) {
            const float4 b = load4(y + row * D + 4 * i), g = ((const float4 *)(gate + mrow * gate_stride))[i];
            v = make_float4(v.x + g.x * b.x, v.y + g.y * b.y, v.z + g.z * b.z, v.w + g.w * b.w);
            h4[i] = v;
        }
    }
    const float mean = block_sum((v.x + v.y) + (v.z + v.w), red) / D;
    const float a = v.x - mean, b = v.y - mean, c = v.z - mean, d = v.w - mean;
    const float rstd = rsqrtf(block_sum(live ? (a * a + b * b) + (c * c + d * d) : 0.0f, red) / D + 1e-6f);
    if (!live) return;
    const float4 sh = ((const float4 *)(shift + mrow * mod_stride))[i], sc = ((const float4 *)(scale + mrow * mod_stride))[i];
    store4<T>(out + row * D + 4 * i, a * rstd * (1.0f + sc.x) + sh.x, b * rstd * (1.0f + sc.y) + sh.y,
              c * rstd * (1.0f + sc.z) + sh.z, d * rstd * (1.0f + sc.w) + sh.w);
}

template <typename T>
static int resid_ln_mod_cuda(const T *y, float *h, T *out, int64_t M, int D, int T_tok, const float *gate,
                             int64_t gate_stride, const float *shift, const float *scale, int64_t mod_stride,
                             const dit_cuda_state *state, cudaStream_t st) {
    const int threads = cdiv(D / 4, WARP) * WARP;
    if (threads > LN_MAX_THREADS)
        return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: layernorm: hidden size %d > %d", D, 4 * LN_MAX_THREADS);
    if (M == 0) return DIT_OK;
    resid_ln_mod_kernel<T><<<(unsigned)M, threads, 0, st>>>(y, h, out, D, T_tok, gate, gate_stride, shift, scale,
                                                             mod_stride, state);
    LAUNCH_CHECK();
    return DIT_OK;
}

int dit_op_resid_ln_mod(const void *y, float *h, void *out, int ct, int64_t M, int D, int T, const float *gate,
                        int64_t gate_stride, const float *shift, const float *scale, int64_t mod_stride,
                        const dit_cuda_state *state, cudaStream_t st) {
    if (D % 4 != 0) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: layernorm: hidden size %d is not a multiple of 4", D);
    if (ct == DIT_TYPE_BF16)
        return resid_ln_mod_cuda((const __nv_bfloat16 *)y, h, (__nv_bfloat16 *)out, M, D, T, gate, gate_stride, shift, scale, mod_stride,
                                 state, st);
    return resid_ln_mod_cuda((const __half *)y, h, (__half *)out, M, D, T, gate, gate_stride, shift, scale, mod_stride, state, st);
}

// ---------------------------------------------------------------- GroupNorm (+SiLU), VAE
// x (HW, C) fp32 channels-last, one image; group g = channels [g*C/G, (g+1)*C/G) over all HW pixels.
// Two kernels, all fp32 math:
//   gn_stats:    P chunks of pixels, one CTA each: the chunk's group means, then the sums of squares about
//                them (two passes; the second reads the chunk again from L2) -> part[chunk][g] = (mean, M2).
//                The CTA that finishes last (a counter, reset by it for the next call) finalizes: a warp per
//                group merges the chunks' (mean, M2) exactly, in chunk order (no E[x^2] - E[x]^2
//                cancellation, the same bits every run) -> per channel a = rstd * gamma, b = beta - a * mean
//                (as PyTorch's CUDA GroupNorm). A separate one-CTA finalize kernel cost ~7 us a GroupNorm
//                (0.21 ms of a 256 px decode on an H200), mostly its launch and ramp.
//   gn_apply:    out = ct or fp32 (x * a + b), optionally SiLU, 4 channels per thread.
#define GN_THREADS 256
#define GN_MAX_C 1024
#define GN_MAX_G 256

// acc[c] = sum over the pixel lanes of thread (lane, c / 4)'s partial s, in lane order: the same bits on
// every run (shared-memory atomics made the decoded image vary from run to run by ~1e-3)
static __device__ void channel_sums(float4 *red, float *acc, float4 s, bool active, int nq, int lanes) {
    red[threadIdx.x] = active ? s : make_float4(0, 0, 0, 0);
    __syncthreads();
    for (int q = threadIdx.x; q < nq; q += GN_THREADS) {
        float4 t = make_float4(0, 0, 0, 0);
        for (int pl = 0; pl < lanes; pl++) {
            const float4 v = red[pl * nq + q];
            t.x += v.x; t.y += v.y; t.z += v.z; t.w += v.w;
        }
        acc[4 * q] = t.x; acc[4 * q + 1] = t.y; acc[4 * q + 2] = t.z; acc[4 * q + 3] = t.w;
    }
    __syncthreads();
}

// a warp per group: mean = sum n_i m_i / n, M2 = sum (M2_i + n_i (m_i - mean)^2), lanes over the chunks.
// Each lane loads its <= DIT_GN_CHUNKS / 32 partials of GN_FIN_G groups at once: run by the 8 warps of the
// last stats CTA, a group at a time was a chain of L2 round trips (~6 us a GroupNorm).
#define GN_PER_LANE (DIT_GN_CHUNKS / WARP)
#define GN_FIN_G 4
static_assert(DIT_GN_CHUNKS % WARP == 0, "chunks per lane");
static __device__ void gn_finalize(const float2 *part, float *__restrict__ ab, const float *__restrict__ w,
                                   const float *__restrict__ b, int C, int HW, int G, int ppc, int P, float eps) {
    __shared__ float gm[GN_MAX_G], gr[GN_MAX_G];
    const int cg = C / G, lane = threadIdx.x % WARP, nw = blockDim.x / WARP;
    float cnt[GN_PER_LANE];
#pragma unroll
    for (int j = 0; j < GN_PER_LANE; j++) {
        const int i = lane + j * WARP;
        cnt[j] = i < P ? (float)(min(HW, (i + 1) * ppc) - i * ppc) * cg : 0.0f;
    }
    const float n = (float)HW * cg;
    for (int g0 = threadIdx.x / WARP * GN_FIN_G; g0 < G; g0 += nw * GN_FIN_G) {
        float2 pm[GN_FIN_G][GN_PER_LANE];
#pragma unroll
        for (int k = 0; k < GN_FIN_G; k++)
#pragma unroll
            for (int j = 0; j < GN_PER_LANE; j++) {
                const int i = lane + j * WARP;   // __ldcg: L2, where the other CTAs' partials are
                pm[k][j] = i < P && g0 + k < G ? __ldcg(part + (int64_t)i * G + g0 + k) : make_float2(0.0f, 0.0f);
            }
#pragma unroll
        for (int k = 0; k < GN_FIN_G; k++) {
            float s = 0.0f;
#pragma unroll
            for (int j = 0; j < GN_PER_LANE; j++) s += cnt[j] * pm[k][j].x;
            const float mean = warp_sum(s) / n;
            float q = 0.0f;
#pragma unroll
            for (int j = 0; j < GN_PER_LANE; j++) {
                const float d = pm[k][j].x - mean;
                q += pm[k][j].y + cnt[j] * d * d;
            }
            q = warp_sum(q);
            if (lane == 0 && g0 + k < G) {
                gm[g0 + k] = mean;
                gr[g0 + k] = rsqrtf(q / n + eps);
            }
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float a = gr[c / cg] * w[c];
        ab[c] = a;
        ab[C + c] = b[c] - a * gm[c / cg];
    }
}

static __global__ void gn_stats_kernel(const float *__restrict__ x, float2 *part, int C, int HW, int G, int ppc,
                                       unsigned int *count, float *__restrict__ ab, const float *__restrict__ w,
                                       const float *__restrict__ b, float eps) {
    __shared__ float acc[GN_MAX_C];
    __shared__ float gmean[GN_MAX_G];
    __shared__ float4 red[GN_THREADS];
    const int nq = C / 4, lanes = GN_THREADS / nq, q = threadIdx.x % nq, pl = threadIdx.x / nq, cg = C / G;
    const int p0 = blockIdx.x * ppc, p1 = min(HW, p0 + ppc);
    const bool active = pl < lanes;
    float4 s = make_float4(0, 0, 0, 0);
    if (active)
#pragma unroll 8
        for (int p = p0 + pl; p < p1; p += lanes) {   // unrolled: 8 loads in flight per thread
            const float4 v = ((const float4 *)(x + (int64_t)p * C))[q];
            s.x += v.x; s.y += v.y; s.z += v.z; s.w += v.w;
        }
    channel_sums(red, acc, s, active, nq, lanes);
    const float cnt = (float)(p1 - p0) * cg;
    for (int g = threadIdx.x; g < G; g += GN_THREADS) {
        float t = 0.0f;
        for (int c = g * cg; c < (g + 1) * cg; c++) t += acc[c];
        gmean[g] = t / cnt;
    }
    __syncthreads();
    const float m0 = gmean[(4 * q) / cg], m1 = gmean[(4 * q + 1) / cg], m2 = gmean[(4 * q + 2) / cg],
                m3 = gmean[(4 * q + 3) / cg];
    s = make_float4(0, 0, 0, 0);
    if (active)
#pragma unroll 8
        for (int p = p0 + pl; p < p1; p += lanes) {
            const float4 v = ((const float4 *)(x + (int64_t)p * C))[q];
            const float a = v.x - m0, b = v.y - m1, c = v.z - m2, d = v.w - m3;
            s.x += a * a; s.y += b * b; s.z += c * c; s.w += d * d;
        }
    channel_sums(red, acc, s, active, nq, lanes);
    for (int g = threadIdx.x; g < G; g += GN_THREADS) {
        float t = 0.0f;
        for (int c = g * cg; c < (g + 1) * cg; c++) t += acc[c];
        part[(int64_t)blockIdx.x * G + g] = make_float2(gmean[g], t);
    }
    __shared__ bool last;
    __threadfence();   // this CTA's partials visible device-wide before it is counted
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(count, 1u) == gridDim.x - 1;
        if (last) *count = 0;   // every other CTA has counted: ready for the next GroupNorm
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    gn_finalize(part, ab, w, b, C, HW, G, ppc, gridDim.x, eps);
}

template <typename T>
static __global__ void gn_apply_kernel(const float *__restrict__ x, T *__restrict__ out, const float *__restrict__ ab,
                                       int C, int64_t n4, int silu) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    const int c = (int)((i * 4) % C);
    const float4 v = ((const float4 *)x)[i];
    float y[4] = { v.x * ab[c] + ab[C + c], v.y * ab[c + 1] + ab[C + c + 1], v.z * ab[c + 2] + ab[C + c + 2],
                   v.w * ab[c + 3] + ab[C + c + 3] };
    if (silu)
        for (int j = 0; j < 4; j++) y[j] = silu_f(y[j]);
    store4<T>(out + 4 * i, y[0], y[1], y[2], y[3]);
}

int dit_op_group_norm_ab(const float *x, const float *w, const float *b, int C, int HW, int groups, float eps,
                         float2 *part, unsigned int *count, float *ab, cudaStream_t st) {
    if (groups <= 0 || groups > GN_MAX_G || C % groups != 0 || C % 4 != 0 || C > GN_MAX_C)
        return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: group norm: %d channels, %d groups", C, groups);
    const int ppc = cdiv(HW, cdiv(HW, 16) < DIT_GN_CHUNKS ? cdiv(HW, 16) : DIT_GN_CHUNKS);   // >= 16 pixels a chunk
    const int P = cdiv(HW, ppc);
    gn_stats_kernel<<<P, GN_THREADS, 0, st>>>(x, part, C, HW, groups, ppc, count, ab, w, b, eps);
    LAUNCH_CHECK();
    return DIT_OK;
}

int dit_op_group_norm(const float *x, void *out, int out_type, const float *w, const float *b, int C, int HW,
                      int groups, float eps, int silu, float2 *part, unsigned int *count, float *ab, cudaStream_t st) {
    TRY(dit_op_group_norm_ab(x, w, b, C, HW, groups, eps, part, count, ab, st));
    const int64_t n4 = (int64_t)HW * C / 4;
    if (out_type == DIT_TYPE_F32)
        gn_apply_kernel<<<cdiv(n4, 256), 256, 0, st>>>(x, (float *)out, ab, C, n4, silu);
    else if (out_type == DIT_TYPE_BF16)
        gn_apply_kernel<<<cdiv(n4, 256), 256, 0, st>>>(x, (__nv_bfloat16 *)out, ab, C, n4, silu);
    else
        gn_apply_kernel<<<cdiv(n4, 256), 256, 0, st>>>(x, (__half *)out, ab, C, n4, silu);
    LAUNCH_CHECK();
    return DIT_OK;
}
