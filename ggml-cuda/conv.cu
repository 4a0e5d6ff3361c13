// conv.cu - VAE building blocks around the cuBLASLt GEMM (all activations NCHW fp32 unless noted):
//   im2col3:   cols[(y - y0) W + x][ci*9 + ky*3 + kx] = src[ci][y + ky - 1][x + kx - 1] (0 outside) in ct,
//              for output rows y in [y0, y0 + rows); with up = 1 the source is read at (y/2, x/2): the
//              nearest 2x upsample of Upsample2D fused into the gather (§5.2). Column order = the
//              flattened (cout, cin, 3, 3) conv weight.
//   conv_direct: fp32 direct convolution for the thin convs (post_quant_conv 4->4, conv_in 4->c, conv_out
//              c->3), where a GEMM would be all padding.
//   bias_add:  y[c][p] = res[c][p] + (y[c][p] + b[c])  (b, res optional);  add_transposed: x[c][p] += y[p][c] (attention output)
//   to_tokens: (C, HW) fp32 -> (HW, C) ct;  softmax_rows: ct(softmax(scale * x)) per row, fp32 math.
#include "common.cuh"

template <typename S, typename T>
static __global__ void im2col3_kernel(const S *__restrict__ src, T *__restrict__ cols, int C, int H, int W, int y0,
                                      int rows, int up) {
    const int64_t K = (int64_t)C * 9;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)rows * W * K) return;
    const int k = (int)(i % K);
    const int64_t pix = i / K;
    const int y = y0 + (int)(pix / W), x = (int)(pix % W);
    const int ci = k / 9, ky = (k / 3) % 3, kx = k % 3;
    const int sy = y + ky - 1, sx = x + kx - 1;
    float v = 0.0f;
    if (sy >= 0 && sy < H && sx >= 0 && sx < W) {
        const int Hs = H >> up, Ws = W >> up;
        v = to_f32(src[((int64_t)ci * Hs + (sy >> up)) * Ws + (sx >> up)]);
    }
    cols[i] = from_f32<T>(v);
}

// src_type: DIT_TYPE_F32 or ct; H, W: output (= conv input after the optional upsample) size
int dit_op_im2col3(const void *src, int src_type, void *cols, int ct, int C, int H, int W, int y0, int rows, int up,
                   cudaStream_t st) {
    const int64_t n = (int64_t)rows * W * C * 9;
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

static __global__ void conv_direct_kernel(const float *__restrict__ x, const float *__restrict__ w,
                                          const float *__restrict__ b, float *__restrict__ y, int cin, int cout, int H,
                                          int W, int k) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)cout * H * W) return;
    const int xx = (int)(i % W), yy = (int)((i / W) % H), co = (int)(i / ((int64_t)H * W));
    const int pad = k / 2;
    float acc = 0.0f;
    for (int ci = 0; ci < cin; ci++)
        for (int ky = 0; ky < k; ky++) {
            const int sy = yy + ky - pad;
            if (sy < 0 || sy >= H) continue;
            for (int kx = 0; kx < k; kx++) {
                const int sx = xx + kx - pad;
                if (sx < 0 || sx >= W) continue;
                acc += w[(((int64_t)co * cin + ci) * k + ky) * k + kx] * x[((int64_t)ci * H + sy) * W + sx];
            }
        }
    y[i] = acc + (b ? b[co] : 0.0f);
}

int dit_op_conv_direct(const float *x, const float *w, const float *b, float *y, int cin, int cout, int H, int W,
                       int k, cudaStream_t st) {
    conv_direct_kernel<<<cdiv((int64_t)cout * H * W, 256), 256, 0, st>>>(x, w, b, y, cin, cout, H, W, k);
    LAUNCH_CHECK();
    return DIT_OK;
}

static __global__ void bias_add_kernel(float *__restrict__ y, const float *__restrict__ b,
                                       const float *__restrict__ res, int C, int64_t HW) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= C * HW) return;
    float v = y[i] + (b ? b[i / HW] : 0.0f);
    if (res) v = res[i] + v;
    y[i] = v;
}

int dit_op_bias_add_nchw(float *y, const float *b, const float *res, int C, int HW, cudaStream_t st) {
    bias_add_kernel<<<cdiv((int64_t)C * HW, 256), 256, 0, st>>>(y, b, res, C, HW);
    LAUNCH_CHECK();
    return DIT_OK;
}

template <typename T>
static __global__ void to_tokens_kernel(const float *__restrict__ x, T *__restrict__ out, int C, int HW) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;   // output index p*C + c
    if (i >= (int64_t)C * HW) return;
    const int c = (int)(i % C);
    const int64_t p = i / C;
    out[i] = from_f32<T>(x[(int64_t)c * HW + p]);
}

int dit_op_to_tokens(const float *x, void *out, int ct, int C, int HW, cudaStream_t st) {
    const int grid = cdiv((int64_t)C * HW, 256);
    if (ct == DIT_TYPE_BF16) to_tokens_kernel<<<grid, 256, 0, st>>>(x, (__nv_bfloat16 *)out, C, HW);
    else to_tokens_kernel<<<grid, 256, 0, st>>>(x, (__half *)out, C, HW);
    LAUNCH_CHECK();
    return DIT_OK;
}

static __global__ void add_transposed_kernel(float *__restrict__ x, const float *__restrict__ y, int C, int64_t HW) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;   // x index c*HW + p
    if (i >= C * HW) return;
    const int64_t c = i / HW, p = i % HW;
    x[i] = x[i] + y[p * C + c];
}

int dit_op_add_transposed(float *x, const float *y, int C, int HW, cudaStream_t st) {
    add_transposed_kernel<<<cdiv((int64_t)C * HW, 256), 256, 0, st>>>(x, y, C, HW);
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
