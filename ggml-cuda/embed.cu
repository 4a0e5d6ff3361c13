// embed.cu - DiT input and output glue, all fp32:
//   patch_embed:  h[b, m, :] = (W x_patch(b, m) + b) + pos[m]    Conv2d(C, D, p, stride p) as a linear
//                 (tokens t0 .. t0+Tl-1 only: a sequence-parallel rank embeds its own slice)
//                 map over the patch flattened (c, kh, kw); token m = i*g + j (§1.1, §1.2). Row b of the
//                 network batch reads image b % n_img (forward_with_cfg runs [x[:N]; x[:N]], §1.11).
//   cond_finish:  c[r] = t_emb[r] + y_table[label[r % B]];  sc[r] = ct(SiLU(c[r]))   (§1.4, §1.5)
//   unpatchify:   out[b, c, hi*p+pi, wi*p+qi] = fout[b, hi*g+wi, (pi*p + qi)*oc + c]  (§1.10)
// The sinusoidal timestep features are computed on the host (exact cos/sin of the fp32 arguments,
// as the CPU path): fast-math cosf is not accurate for arguments up to 999.
#include "common.cuh"

#define EMBED_THREADS 128

static __global__ void patch_embed_kernel(const float *__restrict__ x, int n_img, const float *__restrict__ w,
                                          const float *__restrict__ bias, const float *__restrict__ pos,
                                          float *__restrict__ h, int C, int L, int p, int D, int t0, int Tl) {
    extern __shared__ float patch[];   // C * p * p
    const int g = L / p;
    const int m = t0 + blockIdx.x, b = blockIdx.y;
    const int i = m / g, j = m % g, K = C * p * p;
    const float *img = x + (int64_t)(b % n_img) * C * L * L;
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        const int c = k / (p * p), kh = (k / p) % p, kw = k % p;
        patch[k] = img[((int64_t)c * L + i * p + kh) * L + j * p + kw];
    }
    __syncthreads();
    float *hr = h + ((int64_t)b * Tl + blockIdx.x) * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        const float *wr = w + (int64_t)d * K;
        float acc = 0.0f;
        int k = 0;
        if (K % 4 == 0)   // the row's loads issued together (K = 16 for DiT: one at a time took 24 us a step)
#pragma unroll 4
            for (; k < K; k += 4) {
                const float4 q = *(const float4 *)(wr + k);
                acc += q.x * patch[k] + q.y * patch[k + 1] + q.z * patch[k + 2] + q.w * patch[k + 3];
            }
        for (; k < K; k++) acc += wr[k] * patch[k];
        hr[d] = (acc + bias[d]) + pos[(int64_t)m * D + d];
    }
}

int dit_op_patch_embed(const float *x, int n_img, const float *w, const float *b, const float *pos, float *h, int B,
                       int C, int L, int p, int D, int t0, int Tl, cudaStream_t st) {
    const dim3 grid(Tl, B);
    patch_embed_kernel<<<grid, EMBED_THREADS, C * p * p * sizeof(float), st>>>(x, n_img, w, b, pos, h, C, L, p, D, t0,
                                                                               Tl);
    LAUNCH_CHECK();
    return DIT_OK;
}

template <typename T>
static __global__ void cond_finish_kernel(float *__restrict__ c, const float *__restrict__ y_table,
                                          const int *__restrict__ labels, int B, T *__restrict__ sc, int R, int D) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)R * D) return;
    const int r = (int)(i / D), d = (int)(i % D);
    const float v = c[i] + y_table[(int64_t)labels[r % B] * D + d];
    c[i] = v;
    sc[i] = from_f32<T>(silu_f(v));
}

int dit_op_cond_finish(float *c, const float *y_table, const int *labels, int B, void *sc, int ct, int R, int D,
                       cudaStream_t st) {
    const int grid = cdiv((int64_t)R * D, 256);
    if (ct == DIT_TYPE_BF16)
        cond_finish_kernel<<<grid, 256, 0, st>>>(c, y_table, labels, B, (__nv_bfloat16 *)sc, R, D);
    else
        cond_finish_kernel<<<grid, 256, 0, st>>>(c, y_table, labels, B, (__half *)sc, R, D);
    LAUNCH_CHECK();
    return DIT_OK;
}

static __global__ void silu_kernel(float *x, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = silu_f(x[i]);
}

int dit_op_silu_inplace(float *x, int64_t n, cudaStream_t st) {
    silu_kernel<<<cdiv(n, 256), 256, 0, st>>>(x, n);
    LAUNCH_CHECK();
    return DIT_OK;
}

static __global__ void unpatchify_kernel(const float *__restrict__ fout, float *__restrict__ out, int oc, int L, int p,
                                         int64_t n) {
    const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= n) return;
    const int xx = (int)(e % L), yy = (int)((e / L) % L), c = (int)((e / ((int64_t)L * L)) % oc);
    const int64_t b = e / ((int64_t)L * L * oc);
    const int g = L / p, T = g * g, F = p * p * oc;
    const int m = (yy / p) * g + xx / p, f = ((yy % p) * p + xx % p) * oc + c;
    out[e] = fout[(b * T + m) * F + f];
}

int dit_op_unpatchify(const float *fout, float *out, int B, int oc, int L, int p, cudaStream_t st) {
    const int64_t n = (int64_t)B * oc * L * L;
    unpatchify_kernel<<<cdiv(n, 256), 256, 0, st>>>(fout, out, oc, L, p, n);
    LAUNCH_CHECK();
    return DIT_OK;
}

template <typename T> static __global__ void to_ct_kernel(const float *__restrict__ x, T *__restrict__ y, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = from_f32<T>(x[i]);
}

int dit_op_to_ct(const float *x, void *out, int ct, int64_t n, cudaStream_t st) {
    if (ct == DIT_TYPE_BF16) to_ct_kernel<<<cdiv(n, 256), 256, 0, st>>>(x, (__nv_bfloat16 *)out, n);
    else to_ct_kernel<<<cdiv(n, 256), 256, 0, st>>>(x, (__half *)out, n);
    LAUNCH_CHECK();
    return DIT_OK;
}
