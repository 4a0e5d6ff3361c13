// attention.cu - fused multi-head attention for head dims 64 and 72 (DiT-S/B/L and DiT-XL):
//   o[b, m, h*hd + d] = sum_n softmax_n(q[b,m,h] . k[b,n,h] / sqrt(hd)) v[b,n,h,d]
// with qkv (B*T, 3D) laid out [q heads | k heads | v heads] (§1.7) and o (B*T, D) heads concatenated.
//
// Flash-style: the score matrix is never written. One CTA = 4 warps = 64 query rows of one (b, head);
// it walks the keys in tiles of 64, double-buffered in shared memory with cp.async (rows past T are
// zero-filled and masked to -inf). Each warp keeps its 16 rows of S = Q K^T, the running row max m and
// row sum l, and O in registers (mma.sync m16n8k16, fp16/bf16 operands, fp32 accumulators):
//   m' = max(m, rowmax(S)),  P = 2^(S*scale*log2e - m'),  l = l 2^(m-m') + rowsum(P),  O = O 2^(m-m') + P V
// and finally o = O / l. Where q, k and v live is described by dit_att_layout (common.cuh): one qkv buffer,
// or (sequence parallel, all-gather mode) this rank's q_tok queries and the gathered k|v rows of all ranks,
// which arrive as `segs` pieces of T/segs keys each: o then has q_tok rows per sequence.
// hd = 72 is padded to 80 (5 k-steps of 16) for Q K^T with zeros; P V uses 9 n-tiles of 8. P is rounded
// to the operand type before P V (as FlashAttention does).
// Shared rows are 72 elements (144 B): the 32-bit K loads and the ldmatrix.trans V loads of a warp hit
// 32 different banks.
#include "common.cuh"

#define ATT_BQ 64       // query rows per CTA (4 warps x 16)
#define ATT_BK 64       // keys per tile
#define ATT_WARPS 4
#define ATT_SROW 72     // shared row stride in elements

template <typename T> struct mma_t;
template <> struct mma_t<__half> {
    static __device__ __forceinline__ void run(float *c, const uint32_t *a, const uint32_t *b) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __half2 v = __floats2half2_rn(lo, hi);
        return *(uint32_t *)&v;
    }
};
template <> struct mma_t<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float *c, const uint32_t *a, const uint32_t *b) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *(uint32_t *)&v;
    }
};

static __device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid) {
    const uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    const int n = valid ? 16 : 0;   // 0 source bytes: the 16 bytes are zero-filled
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(n));
}
static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> static __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
}
static __device__ __forceinline__ void ldmatrix_x2_trans(uint32_t *r, const void *smem) {
    const uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(s));
}

template <typename T, int HD>
static __global__ void __launch_bounds__(ATT_WARPS * WARP)
flash_attn_kernel(const T *__restrict__ qp, const T *__restrict__ kvp, T *__restrict__ o, dit_att_layout a,
                  float scale_log2) {
    constexpr int KD = (HD + 15) / 16;  // k-steps of Q K^T
    constexpr int ND = HD / 8;          // n-tiles of P V
    constexpr int NS = ATT_BK / 8;      // n-tiles of S
    constexpr int CH = HD / 8;          // 16-byte chunks per row
    static_assert(HD % 8 == 0 && HD <= ATT_SROW, "head dim");
    __shared__ __align__(16) T Ks[2][ATT_BK][ATT_SROW];
    __shared__ __align__(16) T Vs[2][ATT_BK][ATT_SROW];

    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ATT_BQ;
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int g = lane >> 2, q = lane & 3;
    const int T_tok = a.T, H = a.H, q_tok = a.q_tok, D = H * HD, seg = T_tok / a.segs;
    const T *kvb = kvp + (int64_t)b * a.kv_b + h * HD;   // k of this head; v at + a.v_off

    // Q fragments (A operand, row-major 16 x 16 per k-step), zero past hd and past the query rows
    uint32_t qa[KD][4];
    {
        const int r0 = q0 + warp * 16 + g, r1 = r0 + 8;
        const T *qbase = qp + (int64_t)b * a.q_b + h * HD;
#pragma unroll
        for (int kc = 0; kc < KD; kc++) {
#pragma unroll
            for (int half = 0; half < 2; half++) {
                const int d = kc * 16 + half * 8 + 2 * q;
                uint32_t v0 = 0, v1 = 0;
                if (d < HD) {
                    if (r0 < q_tok) v0 = *(const uint32_t *)(qbase + (int64_t)r0 * a.q_ld + d);
                    if (r1 < q_tok) v1 = *(const uint32_t *)(qbase + (int64_t)r1 * a.q_ld + d);
                }
                qa[kc][half * 2 + 0] = v0;
                qa[kc][half * 2 + 1] = v1;
            }
        }
    }

    auto load_tile = [&](int buf, int k0) {
        for (int i = threadIdx.x; i < ATT_BK * CH; i += ATT_WARPS * WARP) {
            const int r = i / CH, c = i % CH;
            const int key = k0 + r;
            const bool ok = key < T_tok;
            const int kk = ok ? key : 0;
            const T *src = kvb + (int64_t)(kk / seg) * a.kv_seg + (int64_t)(kk % seg) * a.kv_ld + c * 8;
            cp_async16(&Ks[buf][r][c * 8], src, ok);
            cp_async16(&Vs[buf][r][c * 8], src + a.v_off, ok);
        }
        cp_async_commit();
    };

    float oacc[ND][4];
#pragma unroll
    for (int i = 0; i < ND; i++) oacc[i][0] = oacc[i][1] = oacc[i][2] = oacc[i][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

    const int ntiles = (T_tok + ATT_BK - 1) / ATT_BK;
    load_tile(0, 0);
    for (int j = 0; j < ntiles; j++) {
        const int buf = j & 1;
        if (j + 1 < ntiles) {
            load_tile(buf ^ 1, (j + 1) * ATT_BK);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();

        // S = Q K^T for this warp's 16 rows x 64 keys
        float s[NS][4];
#pragma unroll
        for (int nt = 0; nt < NS; nt++) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
            for (int kc = 0; kc < KD; kc++) {
                const int d = kc * 16 + 2 * q;
                uint32_t kb[2];
                kb[0] = *(const uint32_t *)&Ks[buf][nt * 8 + g][d];
                kb[1] = d + 8 < HD ? *(const uint32_t *)&Ks[buf][nt * 8 + g][d + 8] : 0u;
                mma_t<T>::run(s[nt], qa[kc], kb);
            }
        }
        // mask keys past T, then the online softmax (rows g and g+8 of the warp)
        const int kbase = j * ATT_BK;
        float mx0 = m0, mx1 = m1;
#pragma unroll
        for (int nt = 0; nt < NS; nt++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const bool ok = kbase + nt * 8 + 2 * q + e < T_tok;
                s[nt][e] = ok ? s[nt][e] * scale_log2 : -INFINITY;
                s[nt][2 + e] = ok ? s[nt][2 + e] * scale_log2 : -INFINITY;
                mx0 = fmaxf(mx0, s[nt][e]);
                mx1 = fmaxf(mx1, s[nt][2 + e]);
            }
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        const float c0 = exp2f(m0 - mx0), c1 = exp2f(m1 - mx1);
        m0 = mx0;
        m1 = mx1;
        float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
        for (int nt = 0; nt < NS; nt++) {
            s[nt][0] = exp2f(s[nt][0] - mx0);
            s[nt][1] = exp2f(s[nt][1] - mx0);
            s[nt][2] = exp2f(s[nt][2] - mx1);
            s[nt][3] = exp2f(s[nt][3] - mx1);
            rs0 += s[nt][0] + s[nt][1];
            rs1 += s[nt][2] + s[nt][3];
        }
        l0 = l0 * c0 + rs0;
        l1 = l1 * c1 + rs1;
#pragma unroll
        for (int i = 0; i < ND; i++) {
            oacc[i][0] *= c0;
            oacc[i][1] *= c0;
            oacc[i][2] *= c1;
            oacc[i][3] *= c1;
        }
        // O += P V: P's accumulator layout is the A-operand layout of the next mma
#pragma unroll
        for (int kc = 0; kc < ATT_BK / 16; kc++) {
            uint32_t pa[4];
            pa[0] = mma_t<T>::pack(s[2 * kc][0], s[2 * kc][1]);
            pa[1] = mma_t<T>::pack(s[2 * kc][2], s[2 * kc][3]);
            pa[2] = mma_t<T>::pack(s[2 * kc + 1][0], s[2 * kc + 1][1]);
            pa[3] = mma_t<T>::pack(s[2 * kc + 1][2], s[2 * kc + 1][3]);
#pragma unroll
            for (int nd = 0; nd < ND; nd++) {
                uint32_t vb[2];
                ldmatrix_x2_trans(vb, &Vs[buf][kc * 16 + (lane & 15)][nd * 8]);
                mma_t<T>::run(oacc[nd], pa, vb);
            }
        }
        __syncthreads();   // the next iteration's prefetch overwrites this buffer
    }

    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = 1.0f / l0, i1 = 1.0f / l1;
    const int r0 = q0 + warp * 16 + g, r1 = r0 + 8;
    T *ob = o + (int64_t)b * q_tok * D + h * HD;
#pragma unroll
    for (int nd = 0; nd < ND; nd++) {
        const int d = nd * 8 + 2 * q;
        if (r0 < q_tok) *(uint32_t *)(ob + (int64_t)r0 * D + d) = mma_t<T>::pack(oacc[nd][0] * i0, oacc[nd][1] * i0);
        if (r1 < q_tok) *(uint32_t *)(ob + (int64_t)r1 * D + d) = mma_t<T>::pack(oacc[nd][2] * i1, oacc[nd][3] * i1);
    }
}

template <typename T>
static int attention_cuda(const T *q, const T *kv, T *o, const dit_att_layout *a, int hd, cudaStream_t st) {
    if (a->segs < 1 || a->T % a->segs) return dit_set_error(DIT_ERR_INPUT, "cuda: attention: %d keys in %d pieces", a->T, a->segs);
    const dim3 grid(cdiv(a->q_tok, ATT_BQ), a->H, a->B);
    const float scale_log2 = 1.4426950408889634f / sqrtf((float)hd);
    if (hd == 72)
        flash_attn_kernel<T, 72><<<grid, ATT_WARPS * WARP, 0, st>>>(q, kv, o, *a, scale_log2);
    else if (hd == 64)
        flash_attn_kernel<T, 64><<<grid, ATT_WARPS * WARP, 0, st>>>(q, kv, o, *a, scale_log2);
    else return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: attention: head dim %d (supported: 64, 72)", hd);
    LAUNCH_CHECK();
    return DIT_OK;
}

int dit_op_attention_ex(const void *q, const void *kv, void *o, int ct, const dit_att_layout *a, int hd,
                        cudaStream_t st) {
    if (ct == DIT_TYPE_BF16)
        return attention_cuda((const __nv_bfloat16 *)q, (const __nv_bfloat16 *)kv, (__nv_bfloat16 *)o, a, hd, st);
    return attention_cuda((const __half *)q, (const __half *)kv, (__half *)o, a, hd, st);
}

int dit_op_attention(const void *qkv, void *o, int ct, int B, int T, int H, int hd, cudaStream_t st) {
    const int64_t D = (int64_t)H * hd, es = 2;   // ct elements are 2 bytes
    dit_att_layout a = { B, T, H, T, 1, 3 * D, T * 3 * D, 3 * D, T * 3 * D, 0, D };
    return dit_op_attention_ex(qkv, (const char *)qkv + D * es, o, ct, &a, hd, st);
}
