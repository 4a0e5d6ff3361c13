// conv.cu - VAE building blocks around the cuBLASLt GEMM. Activations are channels-last (NHWC, one image):
// (H*W, C) row-major, which is also the (tokens, C) layout of the mid attention.
//   im2col3:   cols[(y - y0) W + x][t*C + ci] = src[(y + ky - 1) W + x + kx - 1][ci] (0 outside), t = 3 ky + kx,
//              in ct, for output rows y in [y0, y0 + rows); src fp32 or ct. Each tap is a contiguous run of C
//              channels, copied 8 at a time (16-byte stores). With up = 1 the source is read at (y/2, x/2): the
//              nearest 2x upsample of Upsample2D fused into the gather (§5.2). Column order = the conv weight
//              permuted to (cout, 3, 3, cin) at upload (conv_w_tap_major).
//   conv_direct: fp32 direct convolution for the thin convs (post_quant_conv 4->4, conv_in 4->c, conv_out
//              c->3), where a GEMM would be all padding; input and output layouts NCHW or NHWC. Up to 4
//              output channels from channels-last input: a warp per pixel (conv_thin).
//   add:       y = a + b (fp32, the residual sums; y may alias a).
//   softmax_rows: ct(softmax(scale * x)) per row, fp32 math.
#include "common.cuh"

template <typename T> __device__ __forceinline__ uint4 pack8(const float *v) {
    uint4 u;
    T *h = (T *)&u;
#pragma unroll
    for (int j = 0; j < 8; j++) h[j] = from_f32<T>(v[j]);
    return u;
}

// one thread per (output pixel, tap, 8 channels); C % 8 == 0
template <typename S, typename T>
static __global__ void im2col3_kernel(const S *__restrict__ src, T *__restrict__ cols, int C, int H, int W, int y0,
                                      int rows, int up) {
    const unsigned CV = C / 8;
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;   // = ((pix * 9 + t) * CV + v) < 2^31
    if (i >= (unsigned)rows * W * 9 * CV) return;
    const unsigned v = i % CV, r = i / CV, t = r % 9, pix = r / 9;
    const int y = y0 + (int)(pix / W), x = (int)(pix % W);
    const int sy = y + t / 3 - 1, sx = x + t % 3 - 1;
    uint4 out = make_uint4(0, 0, 0, 0);
    if (sy >= 0 && sy < H && sx >= 0 && sx < W) {
        const S *p = src + ((int64_t)(sy >> up) * (W >> up) + (sx >> up)) * C + v * 8;
        if (sizeof(S) == 4) {
            const float4 a = ((const float4 *)p)[0], b = ((const float4 *)p)[1];
            const float f[8] = { a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w };
            out = pack8<T>(f);
        } else {
            out = *(const uint4 *)p;
        }
    }
    ((uint4 *)cols)[i] = out;
}

// src_type: DIT_TYPE_F32 or ct; H, W: output (= conv input after the optional upsample) size
int dit_op_im2col3(const void *src, int src_type, void *cols, int ct, int C, int H, int W, int y0, int rows, int up,
                   cudaStream_t st) {
    if (C % 8) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: im2col: %d channels (needs a multiple of 8)", C);
    const int64_t n = (int64_t)rows * W * 9 * (C / 8);
    if (n >= ((int64_t)1 << 31)) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: im2col: %lld vectors", (long long)n);
    const int grid = cdiv(n, 256);
    if (ct == DIT_TYPE_BF16) {
        if (src_type == DIT_TYPE_F32)
            im2col3_kernel<<<grid, 256, 0, st>>>((const float *)src, (__nv_bfloat16 *)cols, C, H, W, y0, rows, up);
        else
            im2col3_kernel<<<grid, 256, 0, st>>>((const __nv_bfloat16 *)src, (__nv_bfloat16 *)cols, C, H, W, y0, rows, up);
    } else {
        if (src_type == DIT_TYPE_F32)
            im2col3_kernel<<<grid, 256, 0, st>>>((const float *)src, (__half *)cols, C, H, W, y0, rows, up);
        else
            im2col3_kernel<<<grid, 256, 0, st>>>((const __half *)src, (__half *)cols, C, H, W, y0, rows, up);
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

// few output channels (conv_out c->3), channels-last x: one warp per output pixel, lanes over the input
// channels (4 each, coalesced), the weights staged in shared memory as (k*k, cin, cout); warp-sum per co
#define THIN_MAX_CO 4
#define THIN_WARPS 8
static __global__ void conv_thin_kernel(const float *__restrict__ x, const float *__restrict__ w,
                                        const float *__restrict__ b, float *__restrict__ y, int cin, int cout, int H,
                                        int W, int k, int64_t ycs, int64_t yps) {
    extern __shared__ float ws[];
    const int kk = k * k, nw = kk * cin * cout, pad = k / 2, lane = threadIdx.x % WARP;
    for (int i = threadIdx.x; i < nw; i += blockDim.x) {
        const int co = i % cout, ci = (i / cout) % cin, t = i / (cout * cin);
        ws[i] = w[((int64_t)co * cin + ci) * kk + t];
    }
    __syncthreads();
    const int64_t HW = (int64_t)H * W;
    for (int64_t p = (int64_t)blockIdx.x * THIN_WARPS + threadIdx.x / WARP; p < HW; p += (int64_t)gridDim.x * THIN_WARPS) {
        const int yy = (int)(p / W), xx = (int)(p % W);
        float acc[THIN_MAX_CO] = { 0.0f, 0.0f, 0.0f, 0.0f };
        for (int t = 0; t < kk; t++) {
            const int sy = yy + t / k - pad, sx = xx + t % k - pad;
            if (sy < 0 || sy >= H || sx < 0 || sx >= W) continue;   // the same for the whole warp
            const float *xp = x + ((int64_t)sy * W + sx) * cin;
            for (int ci = lane * 4; ci < cin; ci += WARP * 4) {
                const float4 v = *(const float4 *)(xp + ci);
                const float *wt = ws + ((int64_t)t * cin + ci) * cout;
#pragma unroll
                for (int co = 0; co < THIN_MAX_CO; co++)
                    if (co < cout)
                        acc[co] += v.x * wt[co] + v.y * wt[cout + co] + v.z * wt[2 * cout + co] + v.w * wt[3 * cout + co];
            }
        }
#pragma unroll
        for (int co = 0; co < THIN_MAX_CO; co++) {
            const float s = warp_sum(acc[co]);
            if (lane == 0 && co < cout) y[co * ycs + p * yps] = s + (b ? b[co] : 0.0f);
        }
    }
}

// x (H*W, cin) channels-last; y (H*W, cout) when y_nhwc, else (cout, H*W)
int dit_op_conv_direct(const float *x, const float *w, const float *b, float *y, int cin, int cout, int H, int W,
                       int k, int y_nhwc, cudaStream_t st) {
    const int64_t HW = (int64_t)H * W;
    const size_t smem = (size_t)k * k * cin * cout * sizeof(float);
    if (cin % 4 == 0 && cout <= THIN_MAX_CO && smem <= 48 * 1024) {
        const int grid = cdiv(HW, THIN_WARPS) < 1024 ? cdiv(HW, THIN_WARPS) : 1024;
        conv_thin_kernel<<<grid, THIN_WARPS * WARP, smem, st>>>(x, w, b, y, cin, cout, H, W, k, y_nhwc ? 1 : HW,
                                                                y_nhwc ? cout : 1);
        LAUNCH_CHECK();
        return DIT_OK;
    }
    conv_direct_kernel<<<cdiv((int64_t)cout * HW, 256), 256, 0, st>>>(
        x, w, b, y, cin, cout, H, W, k, 1, cin, y_nhwc ? 1 : HW, y_nhwc ? cout : 1);
    LAUNCH_CHECK();
    return DIT_OK;
}

static __global__ void add_kernel(float *y, const float *a, const float *__restrict__ b, int64_t n4) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    const float4 u = ((const float4 *)a)[i], v = ((const float4 *)b)[i];
    ((float4 *)y)[i] = make_float4(u.x + v.x, u.y + v.y, u.z + v.z, u.w + v.w);
}

// n % 4 == 0
int dit_op_add(float *y, const float *a, const float *b, int64_t n, cudaStream_t st) {
    if (n % 4) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: add: %lld elements", (long long)n);
    add_kernel<<<cdiv(n / 4, 256), 256, 0, st>>>(y, a, b, n / 4);
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
