// attention.cu - fused multi-head attention for head dims 64 and 72 (DiT-S/B/L and DiT-XL):
//   o[b, m, h*hd + d] = sum_n softmax_n(q[b,m,h] . k[b,n,h] / sqrt(hd)) v[b,n,h,d]
// with qkv (B*T, 3D) laid out [q heads | k heads | v heads] (§1.7) and o (B*T, D) heads concatenated.
//
// Flash-style: the score matrix is never written. One CTA = 4 warps = 64 or 128 query rows of one
// (b, head) (16 or 32 per warp, see MT); it walks the keys in tiles of 64, double-buffered in shared
// memory with cp.async (rows past T are zero-filled and masked to -inf).
// Each warp keeps its rows of S = Q K^T, the running row max m and row sum l, and O in registers
// (mma.sync m16n8k16, fp16/bf16 operands, fp32 accumulators; K and V fragments by ldmatrix):
//   m' = max(m, rowmax(S)),  P = 2^((S - m') scale log2e),  l = l 2^((m-m') scale log2e) + rowsum(P),
//   O = O 2^((m-m') scale log2e) + P V
// and finally o = O / l. Where q, k and v live is described by dit_att_layout (common.cuh): one qkv buffer,
// or (sequence parallel, all-gather mode) this rank's q_tok queries and the gathered k|v rows of all ranks,
// which arrive as `segs` pieces of T/segs keys each: o then has q_tok rows per sequence.
// hd = 72 is padded to 80 (5 k-steps of 16) for Q K^T with zeros; P V uses 9 n-tiles of 8. P is rounded
// to the operand type before P V (as FlashAttention does).
// Shared rows are 72 elements (144 B): the 8 rows an ldmatrix reads start 4 banks apart (no conflicts).
// On an sm_90a build and GPU, grids of >= 1 CTA per SM (512 px, several images) run flash_attn_wgmma_kernel
// instead: the same algorithm with both products on wgmma, 128 query rows per CTA (see attention_mt).
#include "common.cuh"
#include "wgmma.cuh"

#define ATT_BQ 64       // query rows per CTA and m-tile per warp (4 warps x 16; x MT)
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

static __device__ __forceinline__ void ldmatrix_x4(uint32_t *r, const void *smem) {
    const uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}
static __device__ __forceinline__ void ldmatrix_x1(uint32_t *r, const void *smem) {
    const uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(s));
}
static __device__ __forceinline__ void ldmatrix_x4_trans(uint32_t *r, const void *smem) {
    const uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}

// Q fragments of query rows r0 and r0 + 8 (the A operand, row-major 16 x 16 per k-step, this lane's
// part), zero past hd and past the query rows
template <typename T, int HD, int KD>
static __device__ __forceinline__ void load_q_frags(uint32_t (*qa)[4], const T *qbase, int64_t q_ld, int q_tok,
                                                    int r0) {
    const int q = threadIdx.x % 4, r1 = r0 + 8;
#pragma unroll
    for (int kc = 0; kc < KD; kc++)
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int d = kc * 16 + half * 8 + 2 * q;
            uint32_t v0 = 0, v1 = 0;
            if (d < HD) {
                if (r0 < q_tok) v0 = *(const uint32_t *)(qbase + (int64_t)r0 * q_ld + d);
                if (r1 < q_tok) v1 = *(const uint32_t *)(qbase + (int64_t)r1 * q_ld + d);
            }
            qa[kc][half * 2] = v0;
            qa[kc][half * 2 + 1] = v1;
        }
}

// One online-softmax update of this lane's rows g and g + 8 over NS n-tiles of raw scores s, keys from kbase
// (those >= T masked to -inf): the max commutes with the positive scale, which goes into one FMA per score,
// P = 2^(s*sl2 - m*sl2) left in s; l and O (ND n-tiles) rescaled to the new maxima. Key 0 is in the first
// update, so m is finite from there on (c = 0 at the first); once the row maxima settle, c = 1 and the warp
// skips the rescale (exact: x * 1 = x). pa: P packed as the A operand of P V (16 keys per k-step; the
// accumulator layout of S is the A-operand layout).
template <typename T, int NS, int ND>
static __device__ __forceinline__ void softmax_update(float (*s)[4], float *m, float *l, float (*oacc)[4],
                                                      uint32_t (*pa)[4], int kbase, int T_tok, float scale_log2) {
    const int q = threadIdx.x % 4;
    if (kbase + NS * 8 > T_tok) {
#pragma unroll
        for (int nt = 0; nt < NS; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++)
                if (kbase + nt * 8 + 2 * q + e >= T_tok) s[nt][e] = s[nt][2 + e] = -INFINITY;
    }
    float mx0 = m[0], mx1 = m[1];
#pragma unroll
    for (int nt = 0; nt < NS; nt++) {
        mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
        mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float c0 = exp2f((m[0] - mx0) * scale_log2), c1 = exp2f((m[1] - mx1) * scale_log2);
    const bool grew = __any_sync(0xffffffffu, mx0 != m[0] || mx1 != m[1]);
    m[0] = mx0;
    m[1] = mx1;
    const float o0 = -mx0 * scale_log2, o1 = -mx1 * scale_log2;
    float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
    for (int nt = 0; nt < NS; nt++) {
        s[nt][0] = exp2f(fmaf(s[nt][0], scale_log2, o0));
        s[nt][1] = exp2f(fmaf(s[nt][1], scale_log2, o0));
        s[nt][2] = exp2f(fmaf(s[nt][2], scale_log2, o1));
        s[nt][3] = exp2f(fmaf(s[nt][3], scale_log2, o1));
        rs0 += s[nt][0] + s[nt][1];
        rs1 += s[nt][2] + s[nt][3];
    }
    if (grew) {
        l[0] *= c0;
        l[1] *= c1;
#pragma unroll
        for (int i = 0; i < ND; i++) {
            oacc[i][0] *= c0;
            oacc[i][1] *= c0;
            oacc[i][2] *= c1;
            oacc[i][3] *= c1;
        }
    }
    l[0] += rs0;
    l[1] += rs1;
#pragma unroll
    for (int kc = 0; kc < NS / 2; kc++) {
        pa[kc][0] = mma_t<T>::pack(s[2 * kc][0], s[2 * kc][1]);
        pa[kc][1] = mma_t<T>::pack(s[2 * kc][2], s[2 * kc][3]);
        pa[kc][2] = mma_t<T>::pack(s[2 * kc + 1][0], s[2 * kc + 1][1]);
        pa[kc][3] = mma_t<T>::pack(s[2 * kc + 1][2], s[2 * kc + 1][3]);
    }
}

// o rows r0 and r0 + 8 (this lane's part) = O / l, the row sums first summed over the row's 4 lanes
template <typename T, int ND>
static __device__ __forceinline__ void store_o(T *ob, int D, int q_tok, int r0, const float (*oacc)[4],
                                               const float *l) {
    const int q = threadIdx.x % 4, r1 = r0 + 8;
    float l0 = l[0], l1 = l[1];
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = 1.0f / l0, i1 = 1.0f / l1;
#pragma unroll
    for (int nd = 0; nd < ND; nd++) {
        const int d = nd * 8 + 2 * q;
        if (r0 < q_tok) *(uint32_t *)(ob + (int64_t)r0 * D + d) = mma_t<T>::pack(oacc[nd][0] * i0, oacc[nd][1] * i0);
        if (r1 < q_tok) *(uint32_t *)(ob + (int64_t)r1 * D + d) = mma_t<T>::pack(oacc[nd][2] * i1, oacc[nd][3] * i1);
    }
}

// MT m-tiles (16 query rows each) per warp: every K and V fragment read from shared memory feeds MT mmas.
// With MT = 1 the kernel was bound by shared-memory reads (~19.5 KB per warp per 64-key tile against 76
// mmas); MT = 2 halves the bytes per mma, for grids with enough CTAs to fill the GPU (attention_cuda).
// The online softmax runs per 64 keys with MT = 1, per 32 with MT = 2 (s then stays 4 n-tiles per m-tile
// within 255 registers); 32 for both measured 7 % slower at MT = 1 (60.8 vs 56.7 us, 512 px).
template <typename T, int HD, int MT>
static __global__ void __launch_bounds__(ATT_WARPS * WARP, MT == 1 ? 3 : 2)
flash_attn_kernel(const T *__restrict__ qp, const T *__restrict__ kvp, T *__restrict__ o, dit_att_layout a,
                  float scale_log2) {
    constexpr int KD = (HD + 15) / 16;  // k-steps of Q K^T (hd 72: the last one half zeros)
    constexpr int ND = HD / 8;          // n-tiles of P V
    constexpr int CH = HD / 8;          // 16-byte chunks per row
    constexpr int KH = MT == 1 ? 64 : 32;   // keys per softmax update (MT 2: registers)
    constexpr int NS = KH / 8;          // n-tiles of S per update
    static_assert(HD % 8 == 0 && HD <= ATT_SROW, "head dim");
    __shared__ __align__(16) T Ks[2][ATT_BK][ATT_SROW];
    __shared__ __align__(16) T Vs[2][ATT_BK][ATT_SROW];

    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ATT_WARPS * 16 * MT;
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int g = lane >> 2;
    const int T_tok = a.T, H = a.H, q_tok = a.q_tok, D = H * HD, seg = T_tok / a.segs;
    const T *kvb = kvp + (int64_t)b * a.kv_b + h * HD;   // k of this head; v at + a.v_off
    const int row0 = q0 + warp * 16 * MT;                // this warp's first query row

    uint32_t qa[MT][KD][4];
    {
        const T *qbase = qp + (int64_t)b * a.q_b + h * HD;
#pragma unroll
        for (int mt = 0; mt < MT; mt++) load_q_frags<T, HD, KD>(qa[mt], qbase, a.q_ld, q_tok, row0 + mt * 16 + g);
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

    float oacc[MT][ND][4], m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int i = 0; i < ND; i++) oacc[mt][i][0] = oacc[mt][i][1] = oacc[mt][i][2] = oacc[mt][i][3] = 0.0f;
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.0f;
    }

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

#pragma unroll
        for (int kh = 0; kh < ATT_BK / KH; kh++) {
            // S = Q K^T: MT x 16 rows x KH keys. ldmatrix x4 gives the B fragments of two k-steps of one
            // n-tile (lanes 8i..8i+7 address matrix i: keys +0..7, dims 8i..8i+7 of the pair)
            float s[MT][NS][4];
#pragma unroll
            for (int nt = 0; nt < NS; nt++) {
#pragma unroll
                for (int mt = 0; mt < MT; mt++) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.0f;
                const T *krow = &Ks[buf][kh * KH + nt * 8 + (lane & 7)][0];
#pragma unroll
                for (int kc = 0; kc + 1 < KD; kc += 2) {
                    uint32_t kb[4];
                    ldmatrix_x4(kb, krow + kc * 16 + (lane >> 3) * 8);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        mma_t<T>::run(s[mt][nt], qa[mt][kc], kb);
                        mma_t<T>::run(s[mt][nt], qa[mt][kc + 1], kb + 2);
                    }
                }
                if (KD % 2) {   // the last k-step alone; hd 72: dims 64..71, then zeros
                    uint32_t kb[4] = { 0u, 0u, 0u, 0u };
                    if (HD - (KD - 1) * 16 == 8) ldmatrix_x1(kb, krow + (KD - 1) * 16);
                    else ldmatrix_x4(kb, krow + (KD - 1) * 16 + (lane >> 3 & 1) * 8);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) mma_t<T>::run(s[mt][nt], qa[mt][KD - 1], kb);
                }
            }
            uint32_t pa[MT][KH / 16][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                softmax_update<T, NS, ND>(s[mt], m[mt], l[mt], oacc[mt], pa[mt], j * ATT_BK + kh * KH, T_tok,
                                          scale_log2);
            // O += P V; ldmatrix x4 trans gives the B fragments of two n-tiles (lanes 16..31: the second)
#pragma unroll
            for (int kc = 0; kc < KH / 16; kc++) {
                const T *vrow = &Vs[buf][kh * KH + kc * 16 + (lane & 15)][0];
#pragma unroll
                for (int nd = 0; nd + 1 < ND; nd += 2) {
                    uint32_t vb[4];
                    ldmatrix_x4_trans(vb, vrow + (nd + (lane >> 4)) * 8);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        mma_t<T>::run(oacc[mt][nd], pa[mt][kc], vb);
                        mma_t<T>::run(oacc[mt][nd + 1], pa[mt][kc], vb + 2);
                    }
                }
                if (ND % 2) {
                    uint32_t vb[2];
                    ldmatrix_x2_trans(vb, vrow + (ND - 1) * 8);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) mma_t<T>::run(oacc[mt][ND - 1], pa[mt][kc], vb);
                }
            }
        }
        __syncthreads();   // the next iteration's prefetch overwrites this buffer
    }

    T *ob = o + (int64_t)b * q_tok * D + h * HD;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) store_o<T, ND>(ob, D, q_tok, row0 + mt * 16 + g, oacc[mt], l[mt]);
}

// Hopper version (sm_90a): a CTA = 2 warpgroups x 64 query rows, keys in tiles of 64 (double-buffered
// cp.async, 128-byte-swizzled shared memory). Per tile, each warpgroup:
//   S (64 x 64) = Q K^T: wgmma RS m64n64k16, Q from registers (KD k-steps; hd 72: d 64..79 from a second
//                swizzled tile whose d 72..79 are zeros), K K-major from shared memory
//   online softmax on S in registers (softmax_update, as above; 16 rows per warp)
//   O (64 x HD) += P V: wgmma RS m64nHDk16, P from registers (S's accumulator layout is the A-operand
//                layout), V MN-major (transposed B): d 0..63 in one tile, 64..71 in the next, LBO apart
// The wgmma run asynchronously; the two warpgroups (and the second CTA per SM) overlap each other's softmax.
#define FW_BQ 128
#define FW_BK 64
#define FW_THREADS 256
#define FW_TILE (FW_BK * 128)                     // one swizzled 64-row tile, bytes
#define FW_STAGE (4 * FW_TILE)                    // K lo, K hi, V lo, V hi
#define FW_SMEM (2 * FW_STAGE + 1024)

template <typename T, int HD>
static __global__ void __launch_bounds__(FW_THREADS, 2)
flash_attn_wgmma_kernel(const T *__restrict__ qp, const T *__restrict__ kvp, T *__restrict__ o, dit_att_layout a,
                        float scale_log2) {
#ifdef DIT_WGMMA
    constexpr int KD = (HD + 15) / 16, ND = HD / 8, CH = HD / 8;
    extern __shared__ unsigned char fw_raw[];
    const uint32_t sbase = ((uint32_t)__cvta_generic_to_shared(fw_raw) + 1023) & ~1023u;
    const int b = blockIdx.z, h = blockIdx.y, tid = threadIdx.x, wg = tid / 128;
    const int warp = (tid % 128) / WARP, g = tid % WARP >> 2;
    const int T_tok = a.T, q_tok = a.q_tok, D = a.H * HD, seg = T_tok / a.segs;
    const T *kvb = kvp + (int64_t)b * a.kv_b + h * HD;
    const int row0 = blockIdx.x * FW_BQ + wg * 64 + warp * 16;   // this warp's first query row

    uint32_t qa[KD][4];
    load_q_frags<T, HD, KD>(qa, qp + (int64_t)b * a.q_b + h * HD, a.q_ld, q_tok, row0 + g);
    // the K hi tiles' d 72..79 (chunk 1) stay zero: QK^T's fifth k-step reads them
    if (HD > 64)
        for (int i = tid; i < 2 * FW_BK; i += FW_THREADS) {
            const int st = i / FW_BK, r = i % FW_BK;
            const uint32_t adr = sbase + st * FW_STAGE + FW_TILE + r * 128 + ((1 ^ (r & 7)) << 4);
            asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};" ::"r"(adr), "r"(0));
        }

    // key row r of the tile: 16-byte chunk c (d 8c .. 8c + 7) of K and V; chunk 8 (d 64..71) to the hi tiles
    auto load_tile = [&](int st, int k0) {
        const uint32_t s0 = sbase + st * FW_STAGE;
        for (int i = tid; i < FW_BK * CH; i += FW_THREADS) {
            const int r = i / CH, c = i % CH, key = k0 + r;
            const bool ok = key < T_tok;
            const int kk = ok ? key : 0;
            const T *src = kvb + (int64_t)(kk / seg) * a.kv_seg + (int64_t)(kk % seg) * a.kv_ld + c * 8;
            const uint32_t so = (c < 8 ? 0 : FW_TILE) + r * 128 + (((c & 7) ^ (r & 7)) << 4);
            cp_async16_s(s0 + so, src, ok);
            cp_async16_s(s0 + 2 * FW_TILE + so, src + a.v_off, ok);
        }
        asm volatile("cp.async.commit_group;");
    };

    float oacc[ND][4], m[2] = { -INFINITY, -INFINITY }, l[2] = { 0.0f, 0.0f };
#pragma unroll
    for (int i = 0; i < ND; i++) oacc[i][0] = oacc[i][1] = oacc[i][2] = oacc[i][3] = 0.0f;
    const int ntiles = (T_tok + FW_BK - 1) / FW_BK;
    load_tile(0, 0);
    for (int j = 0; j < ntiles; j++) {
        const uint32_t s0 = sbase + (j & 1) * FW_STAGE;
        asm volatile("cp.async.wait_group 0;");
        wg_proxy_fence();
        __syncthreads();   // tile j is in; every warpgroup is done with tile j - 1, whose stage is refilled next
        if (j + 1 < ntiles) load_tile((j + 1) & 1, (j + 1) * FW_BK);

        float s[8][4];
#pragma unroll
        for (int i = 0; i < 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
        wg_fence();
#pragma unroll
        for (int kc = 0; kc < KD; kc++)
            wgmma_rs<T, 64, 0>::run(&s[0][0], qa[kc], wg_desc(kc < 4 ? s0 + kc * 32 : s0 + FW_TILE, 16));
        wg_commit();
        wg_wait<0>();

        uint32_t pa[4][4];
        softmax_update<T, 8, ND>(s, m, l, oacc, pa, j * FW_BK, T_tok, scale_log2);
        wg_fence();
#pragma unroll
        for (int kc = 0; kc < 4; kc++)   // k16 step = 16 key rows = 2048 bytes; the hi tile FW_TILE after lo
            wgmma_rs<T, HD, 1>::run(&oacc[0][0], pa[kc], wg_desc(s0 + 2 * FW_TILE + kc * 2048, FW_TILE));
        wg_commit();
        wg_wait<0>();
    }

    store_o<T, ND>(o + (int64_t)b * q_tok * D + h * HD, D, q_tok, row0 + g, oacc, l);
#else
    __trap();   // not an sm_90a build: dit_wgmma_ok() keeps the host from launching this
#endif
}

// 1, 2: the mma.sync kernel with 16 or 32 query rows per warp; 3: the wgmma kernel (128 rows per CTA).
// 32 rows (or wgmma where it runs) where that still leaves a CTA per SM (measured: 512 px, T 1024 x 16
// heads x 2); 16 where the grid would be too small (256 px, 1 image: 64 CTAs of 128 rows).
// DIT_CUDA_ATT_MT=1|2|3 forces one (3 falls back to 2 where wgmma does not run).
static int attention_mt(int64_t q_tok, int H, int B) {
    const char *ev = getenv("DIT_CUDA_ATT_MT");
    int mt = 0;
    if (ev && ev[0] >= '1' && ev[0] <= '3') mt = ev[0] - '0';
    if (!mt) {
        int dev = 0, sms = 132;
        if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
            sms = 132;
        mt = (int64_t)cdiv(q_tok, ATT_BQ * 2) * H * B >= sms ? 3 : 1;
    }
    return mt == 3 && !dit_wgmma_ok() ? 2 : mt;
}

template <typename T, int HD>
static int attention_launch(int mt, const T *q, const T *kv, T *o, const dit_att_layout *a, float scale_log2,
                            cudaStream_t st) {
    if (mt == 3) {
        static unsigned long long smem_set;
        TRY(dit_smem_opt_in((const void *)flash_attn_wgmma_kernel<T, HD>, FW_SMEM, &smem_set));
        const dim3 grid(cdiv(a->q_tok, FW_BQ), a->H, a->B);
        flash_attn_wgmma_kernel<T, HD><<<grid, FW_THREADS, FW_SMEM, st>>>(q, kv, o, *a, scale_log2);
        return DIT_OK;
    }
    const int bq = ATT_BQ * mt;
    const dim3 grid(cdiv(a->q_tok, bq), a->H, a->B);
    if (mt == 2) flash_attn_kernel<T, HD, 2><<<grid, ATT_WARPS * WARP, 0, st>>>(q, kv, o, *a, scale_log2);
    else flash_attn_kernel<T, HD, 1><<<grid, ATT_WARPS * WARP, 0, st>>>(q, kv, o, *a, scale_log2);
    return DIT_OK;
}

template <typename T>
static int attention_cuda(const T *q, const T *kv, T *o, const dit_att_layout *a, int hd, cudaStream_t st) {
    if (a->segs < 1 || a->T % a->segs) return dit_set_error(DIT_ERR_INPUT, "cuda: attention: %d keys in %d pieces", a->T, a->segs);
    const float scale_log2 = 1.4426950408889634f / sqrtf((float)hd);
    const int mt = attention_mt(a->q_tok, a->H, a->B);
    if (hd == 72) TRY((attention_launch<T, 72>(mt, q, kv, o, a, scale_log2, st)));
    else if (hd == 64) TRY((attention_launch<T, 64>(mt, q, kv, o, a, scale_log2, st)));
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
