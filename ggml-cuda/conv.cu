// conv.cu - VAE building blocks around the cuBLASLt GEMM. Activations are channels-last (NHWC, one image):
// (H*W, C) row-major, which is also the (tokens, C) layout of the mid attention.
//   im2col3:   cols[(y - y0) W + x][t*C + ci] = src[(y + ky - 1) W + x + kx - 1][ci] (0 outside), t = 3 ky + kx,
//              in ct, for output rows y in [y0, y0 + rows); src fp32 or ct. Each tap is a contiguous run of C
//              channels, 8 at a time (16-byte stores), scattered from each source pixel to its 9 taps. With
//              up = 1 the source is read at (y/2, x/2): the nearest 2x upsample of Upsample2D fused in
//              (§5.2). Column order = the conv weight permuted to (cout, 3, 3, cin) at upload
//              (conv_w_tap_major). With ab, an fp32 source goes through
//              GroupNorm + SiLU on the way (ab: per-channel scale and shift), so the normalized activation
//              is never written (zero padding stays zero: it pads the normalized tensor).
//   conv_direct: fp32 direct convolution for the thin convs (post_quant_conv 4->4, conv_in 4->c, conv_out
//              c->3), where a GEMM would be all padding; input and output layouts NCHW or NHWC. Up to 4
//              output channels from channels-last input: a warp per pixel (conv_thin).
//   softmax_rows: ct(softmax(scale * x)) per row, fp32 math.
#include "common.cuh"

template <typename T> __device__ __forceinline__ uint4 pack8(const float *v) {
    uint4 u;
    T *h = (T *)&u;
#pragma unroll
    for (int j = 0; j < 8; j++) h[j] = from_f32<T>(v[j]);
    return u;
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
    uint4 out = make_uint4(0, 0, 0, 0);
    if (sy >= 0 && sy < H && sx >= 0 && sx < W) {
        const S *p = src + ((int64_t)(sy >> up) * (W >> up) + (sx >> up)) * C + v * 8;
        if (sizeof(S) == 4) {
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
            out = pack8<T>(f);
        } else {
            out = *(const uint4 *)p;
        }
    }
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

// src_type: DIT_TYPE_F32 or ct; H, W: output (= conv input after the optional upsample) size
int dit_op_im2col3(const void *src, int src_type, const float *ab, void *cols, int ct, int C, int H, int W, int y0,
                   int rows, int up, cudaStream_t st) {
    if (C % 8) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: im2col: %d channels (needs a multiple of 8)", C);
    if (ab && src_type != DIT_TYPE_F32) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: im2col: GroupNorm of a ct source");
    const int64_t n = (int64_t)(rows + 2) * (W + 2) * (C / 8);
    if (n >= ((int64_t)1 << 31)) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: im2col: %lld vectors", (long long)n);
    const int grid = cdiv(n, 256);
    if (ct == DIT_TYPE_BF16) {
        if (src_type == DIT_TYPE_F32)
            im2col3_kernel<<<grid, 256, 0, st>>>((const float *)src, ab, (__nv_bfloat16 *)cols, C, H, W, y0, rows, up);
        else
            im2col3_kernel<<<grid, 256, 0, st>>>((const __nv_bfloat16 *)src, ab, (__nv_bfloat16 *)cols, C, H, W, y0, rows, up);
    } else {
        if (src_type == DIT_TYPE_F32)
            im2col3_kernel<<<grid, 256, 0, st>>>((const float *)src, ab, (__half *)cols, C, H, W, y0, rows, up);
        else
            im2col3_kernel<<<grid, 256, 0, st>>>((const __half *)src, ab, (__half *)cols, C, H, W, y0, rows, up);
    }
    LAUNCH_CHECK();
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
