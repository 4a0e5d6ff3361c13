// conv.cu - VAE convolutions. Activations are channels-last (NHWC, one image): (H*W, C) row-major, which is
// also the (tokens, C) layout of the mid attention.
//   pad3:      xp[(py (W + 2) + px) C + ci] = in(y0 - 1 + py, px - 1)[ci], zero outside the image: the conv
//              input of output rows [y0, y0 + rows) written once, padded, in ct (the conv3_igemm operand).
//   conv3_igemm: the 3x3 conv as an implicit GEMM over pad3's rows (wgmma, sm_90a; see the kernel).
//   im2col3:   cols[(y - y0) W + x][t*C + ci] = in(y + ky - 1, x + kx - 1)[ci] (0 outside), t = 3 ky + kx,
//              in ct: the same input once per tap, for cuBLASLt (small convs, other GPUs). Each tap is a
//              contiguous run of C channels, 8 at a time (16-byte stores), scattered from each source pixel
//              to its 9 taps. Column order = the conv weight permuted to (cout, 3, 3, cin) at upload
//              (conv_w_tap_major).
//   in(y, x):  src fp32 or ct; with up = 1 read at (y/2, x/2): the nearest 2x upsample of Upsample2D fused in
//              (§5.2); with ab, an fp32 source goes through GroupNorm + SiLU on the way (ab: per-channel
//              scale and shift), so the normalized activation is never written (zero padding stays zero:
//              it pads the normalized tensor).
//   conv_direct: fp32 direct convolution for the thin convs (post_quant_conv 4->4, conv_in 4->c, and
//              conv_out c->3 without conv3_igemm), where a GEMM would be all padding; input and output
//              layouts NCHW or NHWC. Up to 4 output channels from channels-last input: a warp per pixel
//              (conv_thin).
//   softmax_rows: ct(softmax(scale * x)) per row, fp32 math.
#include "common.cuh"
#include "wgmma.cuh"

template <typename T> __device__ __forceinline__ uint4 pack8(const float *v) {
    uint4 u;
    T *h = (T *)&u;
#pragma unroll
    for (int j = 0; j < 8; j++) h[j] = from_f32<T>(v[j]);
    return u;
}

// 8 channels [8v, 8v + 8) of the conv input at (sy, sx) (after the optional upsample), in T: zero outside
// the image; an fp32 source goes through GroupNorm + SiLU when ab is set (per-channel scale, shift).
template <typename S, typename T>
static __device__ __forceinline__ uint4 conv_in8(const S *__restrict__ src, const float *__restrict__ ab, int C,
                                                 int H, int W, int sy, int sx, int v, int up) {
    if (sy < 0 || sy >= H || sx < 0 || sx >= W) return make_uint4(0, 0, 0, 0);
    const S *p = src + ((int64_t)(sy >> up) * (W >> up) + (sx >> up)) * C + v * 8;
    if (sizeof(S) != 4) return *(const uint4 *)p;
    const float4 a = ((const float4 *)p)[0], b = ((const float4 *)p)[1];
    float f[8] = { a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w };
    if (ab) {
        const float4 s0 = ((const float4 *)ab)[2 * v], s1 = ((const float4 *)ab)[2 * v + 1];
        const float4 h0 = ((const float4 *)(ab + C))[2 * v], h1 = ((const float4 *)(ab + C))[2 * v + 1];
        const float sc[8] = { s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w };
        const float sh[8] = { h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w };
#pragma unroll
        for (int j = 0; j < 8; j++) f[j] = silu_f(f[j] * sc[j] + sh[j]);
    }
    return pack8<T>(f);
}

// One thread per (source pixel, 8 channels), scattering to the <= 9 column entries that read it: the value
// is loaded, normalized and converted once (a thread per column entry did the GroupNorm + SiLU 9 times
// over, ~0.3 ms of SFU work per 256 px decode). The source grid is padded by one pixel on each side and
// limited to the rows the chunk's output rows [y0, y0 + rows) read; padding threads write the zeros.
// C % 8 == 0.
template <typename S, typename T>
static __global__ void im2col3_kernel(const S *__restrict__ src, const float *__restrict__ ab, T *__restrict__ cols,
                                      int C, int H, int W, int y0, int rows, int up) {
    const unsigned CV = C / 8, WP = W + 2;
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;   // = ((sy - y0 + 1) * WP + sx + 1) * CV + v
    if (i >= (unsigned)(rows + 2) * WP * CV) return;
    const unsigned v = i % CV, r = i / CV;
    const int sy = y0 - 1 + (int)(r / WP), sx = (int)(r % WP) - 1;
    const uint4 out = conv_in8<S, T>(src, ab, C, H, W, sy, sx, v, up);
    // output pixel (sy + 1 - ky, sx + 1 - kx) reads this pixel as its tap t = 3 ky + kx
#pragma unroll
    for (int ky = 0; ky < 3; ky++) {
        const int y = sy + 1 - ky;
        if (y < y0 || y >= y0 + rows) continue;
#pragma unroll
        for (int kx = 0; kx < 3; kx++) {
            const int x = sx + 1 - kx;
            if (x < 0 || x >= W) continue;
            ((uint4 *)cols)[((int64_t)(y - y0) * W + x) * 9 * CV + (3 * ky + kx) * CV + v] = out;
        }
    }
}

// pad3: the same input as im2col3, written once: xp[(py * (W + 2) + px) C + ci] = input(y0 - 1 + py, px - 1)
// for py in [0, rows + 2), px in [0, W + 2), zero on the border (the implicit-GEMM conv's operand)
template <typename S, typename T>
static __global__ void pad3_kernel(const S *__restrict__ src, const float *__restrict__ ab, T *__restrict__ xp, int C,
                                   int H, int W, int y0, int rows, int up) {
    const unsigned CV = C / 8, WP = W + 2;
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (unsigned)(rows + 2) * WP * CV) return;
    const unsigned v = i % CV, r = i / CV;
    ((uint4 *)xp)[i] = conv_in8<S, T>(src, ab, C, H, W, y0 - 1 + (int)(r / WP), (int)(r % WP) - 1, v, up);
}

template <typename S, typename T>
static void launch_cols(int pad, int grid, cudaStream_t st, const void *src, const float *ab, void *out, int C, int H,
                        int W, int y0, int rows, int up) {
    if (pad) pad3_kernel<<<grid, 256, 0, st>>>((const S *)src, ab, (T *)out, C, H, W, y0, rows, up);
    else im2col3_kernel<<<grid, 256, 0, st>>>((const S *)src, ab, (T *)out, C, H, W, y0, rows, up);
}

// src_type: DIT_TYPE_F32 or ct; H, W: output (= conv input after the optional upsample) size; pad: write
// the padded rows for conv3_igemm instead of the im2col columns
int dit_op_conv_cols(const void *src, int src_type, const float *ab, void *out, int ct, int C, int H, int W, int y0,
                     int rows, int up, int pad, cudaStream_t st) {
    if (C % 8) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: im2col: %d channels (needs a multiple of 8)", C);
    if (ab && src_type != DIT_TYPE_F32) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: im2col: GroupNorm of a ct source");
    const int64_t n = (int64_t)(rows + 2) * (W + 2) * (C / 8);
    if (n >= ((int64_t)1 << 31)) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: im2col: %lld vectors", (long long)n);
    const int grid = cdiv(n, 256);
    const int f32 = src_type == DIT_TYPE_F32;
    if (ct == DIT_TYPE_BF16) {
        if (f32) launch_cols<float, __nv_bfloat16>(pad, grid, st, src, ab, out, C, H, W, y0, rows, up);
        else launch_cols<__nv_bfloat16, __nv_bfloat16>(pad, grid, st, src, ab, out, C, H, W, y0, rows, up);
    } else {
        if (f32) launch_cols<float, __half>(pad, grid, st, src, ab, out, C, H, W, y0, rows, up);
        else launch_cols<__half, __half>(pad, grid, st, src, ab, out, C, H, W, y0, rows, up);
    }
    LAUNCH_CHECK();
    return DIT_OK;
}

// conv3_igemm: 3x3 conv as an implicit GEMM over pad3's rows, no columns written. Output pixel (y, x) is
// virtual row r = y (W + 2) + x of the padded grid, and its tap (ky, kx) is padded row r + ky (W + 2) + kx,
// so every tap of a tile of consecutive virtual rows is a contiguous run of rows: a plain GEMM A tile at
// a per-tap row offset. Rows with x >= W (two per image row) are computed and dropped; the last ones read
// up to 2 rows past the padded grid (allocated, never used for a kept output).
//   y[(y W + x) N + n] (+)= bias[n] + sum_{t, ci} xp[r + off_t][ci] w[n][t C + ci]     (w: (N, 9, C))
// Hopper wgmma (sm_90a): CTA tile 128 x BN, two warpgroups of m64nBNk16, fp32 accumulators in registers;
// k-tiles of 64 channels of one tap (9 C / 64 of them) in a 4-stage cp.async ring, stored with the 128-byte
// swizzle the wgmma shared-memory descriptors name (16-byte chunk c of row r at chunk c ^ (r % 8)).
// Tile kt + 2 is loaded while tile kt is multiplied and tile kt - 1's wgmma may still run; a stage is
// refilled only after every warp has waited for the wgmma that read it (the barrier of the next tile).
// BN = 128 writes channels-last pairs (N even); BN = 8 (conv_out, N <= 8) writes NCHW planes ycs apart.
// (An mma.sync m16n8k16 version of this kernel ran at ~146 TFLOP/s on an H200, latency-bound at 2 warps
// per scheduler: cuBLASLt's wgmma kernels did the im2col GEMMs at ~400-500.) Needs C % 64 == 0.
#define IG_BM 128
#define IG_BK 64                                   // 128-byte rows
#define IG_THREADS 256
#define IG_STAGES 4                                // 3 (2 CTAs per SM), 5 and 6: all slower
#define IG_STAGE_BYTES(BN) ((IG_BM + (BN)) * IG_BK * 2)
#define IG_SMEM(BN) (IG_STAGES * IG_STAGE_BYTES(BN) + 1024)   // + alignment of the swizzle atoms

// accumulators -> y for the tile at (m0, n0); see conv3_igemm_kernel
template <int BN>
static __device__ __forceinline__ void igemm_epilogue(const float *d, float *__restrict__ y,
                                                      const float *__restrict__ bias, int m0, int n0, int Mv, int WP,
                                                      int W, int N, int acc, int64_t ycs) {
    // accumulator j of this thread: row 16 warp + lane / 4 (+ 8 for j % 4 >= 2), column 8 (j / 4) +
    // 2 (lane % 4) + j % 2 (wgmma.cuh), in the tile of warpgroup threadIdx.x / 128.
    // With acc, a row's residual pairs are all loaded before the first store (loads and stores to y in one
    // loop ran one DRAM latency after another: +37 us on a 256 px 128-channel conv)
    const int lane = threadIdx.x % WARP, q = lane & 3;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int r = m0 + threadIdx.x / 128 * 64 + (threadIdx.x % 128) / WARP * 16 + (lane >> 2) + 8 * h;
        const int py = r / WP, px = r % WP;
        if (r >= Mv || px >= W) continue;
        const int nn = N - n0 - 2 * q;   // columns left in this row from this thread's first: pair j when 8 j < nn
        if (BN == 8) {                   // NCHW planes
            float *yp = y + (int64_t)py * W + px;
            if (nn > 0) yp[(int64_t)(n0 + 2 * q) * ycs] = d[2 * h] + (bias ? bias[n0 + 2 * q] : 0.0f);
            if (nn > 1) yp[(int64_t)(n0 + 2 * q + 1) * ycs] = d[2 * h + 1] + (bias ? bias[n0 + 2 * q + 1] : 0.0f);
            continue;
        }
        float *yr = y + ((int64_t)py * W + px) * N + n0 + 2 * q;
        float2 v[BN / 8];
#pragma unroll
        for (int j = 0; j < BN / 8; j++) {
            v[j] = make_float2(d[4 * j + 2 * h], d[4 * j + 2 * h + 1]);
            if (bias && 8 * j < nn) v[j].x += bias[n0 + 8 * j + 2 * q], v[j].y += bias[n0 + 8 * j + 2 * q + 1];
        }
        if (acc) {
            float2 o[BN / 8];
#pragma unroll
            for (int j = 0; j < BN / 8; j++)
                o[j] = 8 * j < nn ? *(const float2 *)(yr + 8 * j) : make_float2(0.0f, 0.0f);
#pragma unroll
            for (int j = 0; j < BN / 8; j++) v[j].x += o[j].x, v[j].y += o[j].y;
        }
#pragma unroll
        for (int j = 0; j < BN / 8; j++)
            if (8 * j < nn) *(float2 *)(yr + 8 * j) = v[j];
    }
}

template <typename T, int BN>
static __global__ void __launch_bounds__(IG_THREADS, 1)
conv3_igemm_kernel(const T *__restrict__ xp, const T *__restrict__ w, const float *__restrict__ bias,
                   float *__restrict__ y, int C, int N, int rows, int W, int acc, int64_t ycs) {
#ifdef DIT_WGMMA
    extern __shared__ unsigned char ig_raw[];
    const uint32_t sbase = ((uint32_t)__cvta_generic_to_shared(ig_raw) + 1023) & ~1023u;
    const int WP = W + 2, Mv = rows * WP;
    const int m0 = blockIdx.x * IG_BM, n0 = blockIdx.y * BN;
    const int tid = threadIdx.x, wg = tid / 128;
    const int CK = C / IG_BK, KT = 9 * CK;   // k-tiles per tap, in all

    // stage s: A rows at sbase + s STAGE, B rows after them; each row 128 B, swizzled
    auto load = [&](int s, int kt) {
        const int t = kt / CK, c0 = (kt % CK) * IG_BK, off = (t / 3) * WP + t % 3;
        const uint32_t sa = sbase + s * IG_STAGE_BYTES(BN), sb = sa + IG_BM * 128;
#pragma unroll
        for (int j = 0; j < IG_BM * 8 / IG_THREADS; j++) {   // A: 16-byte chunk c of row r
            const int i = tid + j * IG_THREADS, r = i / 8, c = i % 8;
            const bool ok = m0 + r < Mv;
            const T *g = xp + (int64_t)(ok ? m0 + r + off : 0) * C + c0 + c * 8;
            cp_async16_s(sa + r * 128 + ((c ^ (r & 7)) << 4), g, ok);
        }
#pragma unroll
        for (int j = 0; j < (BN * 8 + IG_THREADS - 1) / IG_THREADS; j++) {   // B
            const int i = tid + j * IG_THREADS, r = i / 8, c = i % 8;
            const bool ok = n0 + r < N;
            const T *g = w + (int64_t)(ok ? n0 + r : 0) * 9 * C + t * C + c0 + c * 8;
            if (BN * 8 % IG_THREADS == 0 || i < BN * 8)
                cp_async16_s(sb + r * 128 + ((c ^ (r & 7)) << 4), g, ok);
        }
    };
    float d[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; i++) d[i] = 0.0f;
#pragma unroll
    for (int s = 0; s < IG_STAGES - 2; s++) {
        if (s < KT) load(s, s);
        asm volatile("cp.async.commit_group;");
    }
    for (int kt = 0; kt < KT; kt++) {
        asm volatile("cp.async.wait_group %0;" ::"n"(IG_STAGES - 3));   // tile kt has landed (this thread's part)
        wg_proxy_fence();                                                // ... visible to the wgmma (async proxy)
        __syncthreads();                                                 // ... all of it; wgmma(kt - 2) done
        if (kt + IG_STAGES - 2 < KT) load((kt + IG_STAGES - 2) % IG_STAGES, kt + IG_STAGES - 2);
        asm volatile("cp.async.commit_group;");
        const uint32_t sa = sbase + (kt % IG_STAGES) * IG_STAGE_BYTES(BN), sb = sa + IG_BM * 128;
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < IG_BK / 16; kk++)   // k16 step: + 32 bytes inside the swizzled rows
            wgmma_ss<T, BN>::run(d, wg_desc(sa + wg * 64 * 128 + kk * 32, 16), wg_desc(sb + kk * 32, 16));
        wg_commit();
        wg_wait<1>();
    }
    wg_wait<0>();
    asm volatile("cp.async.wait_group 0;");
    igemm_epilogue<BN>(d, y, bias, m0, n0, Mv, WP, W, N, acc, ycs);
#else
    __trap();   // not an sm_90a build: dit_wgmma_ok() keeps the host from launching this
#endif
}

template <typename T, int BN>
static int igemm_launch(const void *xp, const void *w, const float *bias, float *y, int acc, int C, int N, int rows,
                        int W, int64_t ycs, cudaStream_t st) {
    static unsigned long long smem_set;
    TRY(dit_smem_opt_in((const void *)conv3_igemm_kernel<T, BN>, IG_SMEM(BN), &smem_set));
    const dim3 grid(cdiv((int64_t)rows * (W + 2), IG_BM), cdiv(N, BN));
    conv3_igemm_kernel<T, BN><<<grid, IG_THREADS, IG_SMEM(BN), st>>>((const T *)xp, (const T *)w, bias, y, C, N,
                                                                     rows, W, acc, ycs);
    LAUNCH_CHECK();
    return DIT_OK;
}

// xp: pad3's rows (dit_conv3_xp_elems); w (N, 9, C) ct; y (rows W, N) fp32 channels-last, or with ycs > 0
// (N <= 8, no acc) NCHW planes ycs elements apart
int dit_op_conv3_igemm(const void *xp, int ct, const void *w, const float *bias, float *y, int acc, int C, int N,
                       int rows, int W, int64_t ycs, cudaStream_t st) {
    if (C % IG_BK || (ycs ? N > 8 || acc : N % 2))
        return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: implicit conv: %d -> %d channels%s", C, N, ycs ? " NCHW" : "");
    const int bf = ct == DIT_TYPE_BF16;
    if (ycs) return bf ? igemm_launch<__nv_bfloat16, 8>(xp, w, bias, y, 0, C, N, rows, W, ycs, st)
                       : igemm_launch<__half, 8>(xp, w, bias, y, 0, C, N, rows, W, ycs, st);
    return bf ? igemm_launch<__nv_bfloat16, 128>(xp, w, bias, y, acc, C, N, rows, W, 0, st)
              : igemm_launch<__half, 128>(xp, w, bias, y, acc, C, N, rows, W, 0, st);
}

// y (+)= conv3x3(in) + b for one image, w (cout, 9, cin) ct, in chunks of output rows whose operand fits in
// buf (buf_elems of ct): pad3 + conv3_igemm (implicit; NCHW output planes when y_nchw) or im2col + cuBLASLt
int dit_op_conv3x3(struct dit_cuda *c, const dit_cuda_lin *w, const void *src, int src_type, const float *ab,
                   void *buf, size_t buf_elems, int cin, int H, int W, int up, float *y, int acc, int y_nchw,
                   int implicit, cudaStream_t st) {
    const int cout = (int)w->n_out;
    if (y_nchw && !implicit)
        return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: vae: NCHW output of a %d-channel conv", cout);
    // the most output rows whose operand fits (dit_conv3_xp_elems for the implicit GEMM)
    const int64_t fit = implicit ? ((int64_t)buf_elems / cin - 2) / (W + 2) - 2
                                 : (int64_t)buf_elems / ((int64_t)W * 9 * cin);
    const int rows = fit < H ? (int)fit : H;
    if (rows < 1) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: vae: image row too wide for the column buffer");
    for (int y0 = 0; y0 < H; y0 += rows) {
        const int r = H - y0 < rows ? H - y0 : rows;
        float *d = y + (int64_t)y0 * W * (y_nchw ? 1 : cout);
        TRY(dit_op_conv_cols(src, src_type, ab, buf, c->ct, cin, H, W, y0, r, up, implicit, st));
        if (implicit)
            TRY(dit_op_conv3_igemm(buf, c->ct, w->w, w->b, d, acc, cin, cout, r, W, y_nchw ? (int64_t)H * W : 0, st));
        else TRY(acc ? dit_op_linear_acc(c, w, buf, (int64_t)r * W, d, st)
                     : dit_op_linear(c, w, buf, (int64_t)r * W, d, DIT_TYPE_F32, EPI_BIAS, st));
    }
    return DIT_OK;
}

// w (cout, cin, 9) -> (cout, 9, cin), 16-bit elements
static __global__ void conv_w_tap_major_kernel(const uint16_t *__restrict__ src, uint16_t *__restrict__ dst, int cin,
                                               int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;   // dst index (co * 9 + t) * cin + ci
    if (i >= n) return;
    const int ci = (int)(i % cin), t = (int)((i / cin) % 9);
    const int64_t co = i / ((int64_t)cin * 9);
    dst[i] = src[(co * cin + ci) * 9 + t];
}

int dit_op_conv_w_tap_major(const void *src, void *dst, int cout, int cin, cudaStream_t st) {
    const int64_t n = (int64_t)cout * cin * 9;
    conv_w_tap_major_kernel<<<cdiv(n, 256), 256, 0, st>>>((const uint16_t *)src, (uint16_t *)dst, cin, n);
    LAUNCH_CHECK();
    return DIT_OK;
}

// one thread per (pixel, co); element (c, p) of x at x[c * xcs + p * xps], of y at y[c * ycs + p * yps]
static __global__ void conv_direct_kernel(const float *__restrict__ x, const float *__restrict__ w,
                                          const float *__restrict__ b, float *__restrict__ y, int cin, int cout, int H,
                                          int W, int k, int64_t xcs, int64_t xps, int64_t ycs, int64_t yps) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)cout * H * W) return;
    const int co = (int)(i % cout);
    const int64_t p = i / cout;
    const int xx = (int)(p % W), yy = (int)(p / W);
    const int pad = k / 2;
    float acc = 0.0f;
    for (int ky = 0; ky < k; ky++) {
        const int sy = yy + ky - pad;
        if (sy < 0 || sy >= H) continue;
        for (int kx = 0; kx < k; kx++) {
            const int sx = xx + kx - pad;
            if (sx < 0 || sx >= W) continue;
            const float *xp = x + ((int64_t)sy * W + sx) * xps;
            const float *wp = w + (int64_t)co * cin * k * k + ky * k + kx;
            for (int ci = 0; ci < cin; ci++) acc += wp[(int64_t)ci * k * k] * xp[ci * xcs];
        }
    }
    y[co * ycs + p * yps] = acc + (b ? b[co] : 0.0f);
}

// few output channels (conv_out c->3), channels-last x, cin <= 128: one warp per output pixel, lane l
// holds input channels 4l..4l+3 and their weights (K*K taps x 4 x 4 co) in registers; the K*K taps' loads
// are issued together (zero outside the image); warp-sum per co. (Weights in shared memory, read per
// pixel with 4-way bank conflicts, and one tap load at a time: 152 us for the 256 px conv_out.)
#define THIN_MAX_CO 4
#define THIN_WARPS 8
template <int K>
static __global__ void __launch_bounds__(THIN_WARPS * WARP)
conv_thin_kernel(const float *__restrict__ x, const float *__restrict__ w, const float *__restrict__ b,
                 float *__restrict__ y, int cin, int cout, int H, int W, int64_t ycs, int64_t yps) {
    const int lane = threadIdx.x % WARP, ci = 4 * lane, pad = K / 2;
    const bool live = ci < cin;
    float wr[K * K][4][THIN_MAX_CO];
#pragma unroll
    for (int t = 0; t < K * K; t++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int co = 0; co < THIN_MAX_CO; co++)
                wr[t][j][co] = live && co < cout ? w[((int64_t)co * cin + ci + j) * K * K + t] : 0.0f;
    const int64_t HW = (int64_t)H * W, step = (int64_t)gridDim.x * THIN_WARPS;
    // the taps of pixel p, zero outside the image
    auto load = [&](float4 *v, int64_t p) {
        const int yy = (int)(p / W), xx = (int)(p % W);
#pragma unroll
        for (int t = 0; t < K * K; t++) {
            const int sy = yy + t / K - pad, sx = xx + t % K - pad;
            v[t] = live && p < HW && sy >= 0 && sy < H && sx >= 0 && sx < W
                       ? *(const float4 *)(x + ((int64_t)sy * W + sx) * cin + ci) : make_float4(0, 0, 0, 0);
        }
    };
    float4 v[K * K], nv[K * K];
    int64_t p = (int64_t)blockIdx.x * THIN_WARPS + threadIdx.x / WARP;
    load(v, p);
    for (; p < HW; p += step) {
        load(nv, p + step);   // the next pixel's loads fly while this one is summed
        float acc[THIN_MAX_CO] = { 0.0f, 0.0f, 0.0f, 0.0f };
#pragma unroll
        for (int t = 0; t < K * K; t++)
#pragma unroll
            for (int co = 0; co < THIN_MAX_CO; co++)
                acc[co] += v[t].x * wr[t][0][co] + v[t].y * wr[t][1][co] + v[t].z * wr[t][2][co] + v[t].w * wr[t][3][co];
#pragma unroll
        for (int co = 0; co < THIN_MAX_CO; co++) {
            const float s = warp_sum(acc[co]);
            if (lane == 0 && co < cout) y[co * ycs + p * yps] = s + (b ? b[co] : 0.0f);
        }
#pragma unroll
        for (int t = 0; t < K * K; t++) v[t] = nv[t];
    }
}

// x (H*W, cin) channels-last; y (H*W, cout) when y_nhwc, else (cout, H*W)
int dit_op_conv_direct(const float *x, const float *w, const float *b, float *y, int cin, int cout, int H, int W,
                       int k, int y_nhwc, cudaStream_t st) {
    const int64_t HW = (int64_t)H * W;
    if (cin % 4 == 0 && cin <= 4 * WARP && cout <= THIN_MAX_CO && (k == 1 || k == 3)) {
        const int grid = cdiv(HW, THIN_WARPS) < 1024 ? cdiv(HW, THIN_WARPS) : 1024;
        const int64_t ycs = y_nhwc ? 1 : HW, yps = y_nhwc ? cout : 1;
        if (k == 3) conv_thin_kernel<3><<<grid, THIN_WARPS * WARP, 0, st>>>(x, w, b, y, cin, cout, H, W, ycs, yps);
        else conv_thin_kernel<1><<<grid, THIN_WARPS * WARP, 0, st>>>(x, w, b, y, cin, cout, H, W, ycs, yps);
        LAUNCH_CHECK();
        return DIT_OK;
    }
    conv_direct_kernel<<<cdiv((int64_t)cout * HW, 256), 256, 0, st>>>(
        x, w, b, y, cin, cout, H, W, k, 1, cin, y_nhwc ? 1 : HW, y_nhwc ? cout : 1);
    LAUNCH_CHECK();
    return DIT_OK;
}

#define SOFTMAX_THREADS 256
template <typename T>
static __global__ void softmax_rows_kernel(const float *__restrict__ x, T *__restrict__ out, int cols, float scale) {
    __shared__ float sh[32];
    const float *xr = x + (int64_t)blockIdx.x * cols;
    T *o = out + (int64_t)blockIdx.x * cols;
    const int w = threadIdx.x / WARP, lane = threadIdx.x % WARP, nw = blockDim.x / WARP;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) mx = fmaxf(mx, xr[j] * scale);
    mx = warp_max(mx);
    if (lane == 0) sh[w] = mx;
    __syncthreads();
    mx = warp_max(lane < nw ? sh[lane] : -INFINITY);
    __syncthreads();
    float s = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) s += expf(xr[j] * scale - mx);
    s = warp_sum(s);
    if (lane == 0) sh[w] = s;
    __syncthreads();
    s = warp_sum(lane < nw ? sh[lane] : 0.0f);
    const float inv = 1.0f / s;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) o[j] = from_f32<T>(expf(xr[j] * scale - mx) * inv);
}

int dit_op_softmax_rows(const float *x, void *out, int ct, int64_t rows, int cols, float scale, cudaStream_t st) {
    if (ct == DIT_TYPE_BF16) softmax_rows_kernel<<<(unsigned)rows, SOFTMAX_THREADS, 0, st>>>(x, (__nv_bfloat16 *)out, cols, scale);
    else softmax_rows_kernel<<<(unsigned)rows, SOFTMAX_THREADS, 0, st>>>(x, (__half *)out, cols, scale);
    LAUNCH_CHECK();
    return DIT_OK;
}
