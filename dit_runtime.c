/* dit_runtime.c - second half of dit.c: model loading, the CPU fp32 reference (DiT forward, SD VAE decoder),
   the respaced diffusion schedule, Philox noise, the DDPM/DDIM samplers and the PNG writer.

   This is the oracle the CUDA backend is checked against, and the path CPU users run. It follows the
   official code exactly (shared/reference/dit-numerics.md, "§x.y" below); every op keeps PyTorch's order of
   fp32 operations where that is cheap, and states the formula in a comment.

   Letters as in dit.h: B rows (2N under CFG), N images, C latent channels, L latent side, p patch, g = L/p,
   T = g*g tokens, D hidden, H heads, hd = D/H, F mlp hidden, K steps, U distinct (t, y) rows of a batch.
   Activations are row-major float32 with the PyTorch shape in the comment next to them. The VAE runs
   channels-last (H*W, C) so that a 3x3 conv is one matmul over (tap, channel) rows.

   Weights stay in the mapped file in whatever type they have (f32, f16, bf16, q8_0, q4_0, q5_0, ...):
   the matmul dequantizes a 16-row panel of W at a time into a per-thread buffer, never the whole model. */
#include "dit.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __F16C__
#include <immintrin.h>
#endif

#ifdef DIT_CUDA
#include "ggml-cuda/dit-cuda.h"   /* dit_cuda_available/init/sample/free */
#endif

/* ==== Small helpers ==== */

static int n_threads(int threads)
{
#ifdef _OPENMP
    return threads > 0 ? threads : omp_get_max_threads();
#else
    (void)threads;
    return 1;
#endif
}

/* Threads worth using for an op of `work` flops (or element operations): a parallel region costs microseconds,
   and a time slice when the machine is oversubscribed, so small ops run on the calling thread. */
static int threads_for(int nt, double work)
{
    int t = (int)(work / 4e6);
    return t < 1 ? 1 : t < nt ? t : nt;
}

static int64_t tensor_numel(const dit_tensor *t)
{
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

/* Elements [e0, e0 + n) of a tensor as float32. e0 and n are multiples of the type's block size
   (the loader checked that every row length used here is). */
static void tensor_read(const dit_tensor *t, int64_t e0, int64_t n, float *dst)
{
    const uint8_t *src = (const uint8_t *)t->data + dit_row_bytes(t->type, e0);
    int64_t i = 0;
    if (t->type == DIT_TYPE_F16) {   /* exact conversion; F16C (x86-64-v3) does 8 at a time */
#ifdef __F16C__
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
#endif
        for (; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = dit_fp16_to_fp32(h);
        }
    } else if (t->type == DIT_TYPE_BF16) {   /* bf16 is the top half of an fp32 */
        for (; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            uint32_t u = (uint32_t)h << 16;
            memcpy(dst + i, &u, 4);
        }
    } else {
        dit_dequantize_row(t->type, src, dst, n);
    }
}

/* Whole tensor as a malloc'd float32 array (for the small ones: biases, norms, pos_embed). NULL: no memory. */
static float *tensor_f32(const dit_tensor *t)
{
    int64_t n = tensor_numel(t);
    float *v = malloc((size_t)n * sizeof(float));
    if (v) tensor_read(t, 0, n, v);
    return v;
}

static inline float silu(float x) { return x / (1.0f + expf(-x)); }

/* PyTorch's tanh GELU (ActivationGeluKernel): 0.5 x (1 + tanh(u)), u = kBeta (x + 0.044715 x^3), kBeta = sqrt(2/pi).
   Evaluated as x / (1 + exp(-2u)) (the same function: 0.5 (1 + tanh(u)) = sigmoid(2u)): one expf instead of
   tanhf, which costs about twice as much. The two differ by float rounding only; for large negative x this form
   is the more accurate one (no cancellation in 1 + tanh). */
static inline float gelu_tanh(float x)
{
    const float kBeta = 0.7978845608028654f, kKappa = 0.044715f;
    float u = kBeta * (x + kKappa * (x * x * x));
    return x / (1.0f + expf(-2.0f * u));
}

/* ==== Matmul: out (M, N) = a (M, K) @ W^T + b, W (N, K) of any supported type ====

   W is consumed in panels of MM_NR = 16 rows: a thread dequantizes its panel once into a (K, 16) buffer
   (transposed: 16 consecutive floats per k), then sweeps a block of rows of `a` through a 6 x 16 register
   tile: per k, 6 broadcasts of a, 2 vector loads of the panel, 12 FMAs into 12 ymm accumulators. GCC's
   vector extension spells the 8-wide vectors; -march=x86-64-v3 turns each `acc += a * b` into one vfmadd.
   Work items are (panel, row block) pairs, split statically so a thread keeps its panel across row blocks.
   Conv weights (N, cin, taps) are reordered to (N, taps, cin) while packing (`taps` > 1), to match the
   channels-last im2col rows of the VAE. Each output is one sequential fp32 FMA chain over k, whatever the
   thread count or the number of rows: results do not depend on batching or threads.
   Measured on the 2-core dev box (Xeon, Sapphire Rapids class, AVX2 build), DiT-XL/2 f16 weights, B = 2,
   one thread (CPU time, the box was shared): mm_tile ~76 GFLOP/s per core (the AVX2 FMA peak is 83 at the
   nominal 2.6 GHz); the whole forward 57 GFLOP/s per core (attention ~6%, panel packing ~5%). A naive loop
   (dot product per output, same flags) is 3.5 GFLOP/s. */
#define MM_MR 6
#define MM_NR 16
typedef float v8f __attribute__((vector_size(32)));

/* bp (K, 16) = rows n0 .. n0+nr-1 of W transposed (zeros past nr). rows: scratch (16 + 1, K). The rows are
   dequantized first, then transposed in blocks of 64 k so that the writes stay in L1. */
static void mm_pack(const dit_tensor *w, int64_t K, int taps, int64_t n0, int nr, float *rows, float *bp)
{
    float *tmp = rows + MM_NR * K;
    for (int j = 0; j < MM_NR; j++) {
        float *r = rows + j * K;
        if (j >= nr) {
            memset(r, 0, K * sizeof(float));
        } else if (taps == 1) {
            tensor_read(w, (n0 + j) * K, K, r);
        } else {   /* (cin, taps) -> (taps, cin) */
            const int64_t cin = K / taps;
            tensor_read(w, (n0 + j) * K, K, tmp);
            for (int64_t ic = 0; ic < cin; ic++)
                for (int tap = 0; tap < taps; tap++) r[tap * cin + ic] = tmp[ic * taps + tap];
        }
    }
    for (int64_t k0 = 0; k0 < K; k0 += 64) {
        const int64_t k1 = k0 + 64 < K ? k0 + 64 : K;
        for (int j = 0; j < MM_NR; j++)
            for (int64_t k = k0; k < k1; k++) bp[k * MM_NR + j] = rows[j * K + k];
    }
}

/* c[i][j] = sum_k a[i][k] * bp[k][j] + bias[j] for i < mr, j < nr (rows beyond mr recompute row 0) */
static void mm_tile(const float *a, int64_t lda, int mr, const float *bp, int64_t K, const float *bias, int nr,
                    float *c, int64_t ldc)
{
    v8f acc[MM_MR][2];
    memset(acc, 0, sizeof acc);
    const float *ar[MM_MR];
    for (int i = 0; i < MM_MR; i++) ar[i] = a + (i < mr ? i : 0) * lda;
    for (int64_t k = 0; k < K; k++) {
        v8f b0, b1;
        memcpy(&b0, bp + k * MM_NR, sizeof b0);
        memcpy(&b1, bp + k * MM_NR + 8, sizeof b1);
        for (int i = 0; i < MM_MR; i++) {
            v8f ai = (v8f){0} + ar[i][k];
            acc[i][0] += ai * b0;
            acc[i][1] += ai * b1;
        }
    }
    float tile[MM_MR][MM_NR];
    memcpy(tile, acc, sizeof tile);
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) c[i * ldc + j] = tile[i][j] + (bias ? bias[j] : 0.0f);
}

/* out (M, N) = a (M, K) @ W (N, K)^T + b (N). b may be NULL. taps: see above (1 for a Linear). */
static int matmul_taps(float *out, const float *a, int64_t M, const dit_tensor *w, const dit_tensor *b, int taps,
                       int nt)
{
    const int64_t N = w->ne[w->n_dims - 1], K = tensor_numel(w) / N;
    float *bias = NULL;
    if (b && b->data && !(bias = tensor_f32(b))) return dit_set_error(DIT_ERR_NOMEM, "out of memory (bias)");
    nt = threads_for(nt, 2.0 * M * N * K);
    const int64_t n_panels = (N + MM_NR - 1) / MM_NR;
    /* enough items for every thread; row blocks only when there are few panels (small N or one thread) */
    int64_t n_mblk = (n_panels >= 4 * nt) ? 1 : (4 * nt + n_panels - 1) / n_panels;
    int64_t mblk = (M + n_mblk - 1) / n_mblk;
    mblk = (mblk + MM_MR - 1) / MM_MR * MM_MR;
    n_mblk = (M + mblk - 1) / mblk;
    const int64_t items = n_panels * n_mblk;
    int err = 0;
#pragma omp parallel num_threads(nt)
    {
        int tid = 0, nth = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nth = omp_get_num_threads();
#endif
        float *bp = aligned_alloc(64, ((size_t)K * MM_NR * sizeof(float) + 63) / 64 * 64);
        float *row = malloc((size_t)(MM_NR + 1) * K * sizeof(float));
        if (!bp || !row) {
#pragma omp atomic write
            err = 1;
        } else {
            int64_t it0 = items * tid / nth, it1 = items * (tid + 1) / nth, packed = -1;
            for (int64_t it = it0; it < it1; it++) {
                int64_t pn = it / n_mblk, mb = it % n_mblk;
                int64_t n0 = pn * MM_NR;
                int nr = (int)(N - n0 < MM_NR ? N - n0 : MM_NR);
                if (pn != packed) {
                    mm_pack(w, K, taps, n0, nr, row, bp);
                    packed = pn;
                }
                int64_t m1 = (mb + 1) * mblk < M ? (mb + 1) * mblk : M;
                for (int64_t m = mb * mblk; m < m1; m += MM_MR) {
                    int mr = (int)(m1 - m < MM_MR ? m1 - m : MM_MR);
                    mm_tile(a + m * K, K, mr, bp, K, bias ? bias + n0 : NULL, nr, out + m * N + n0, N);
                }
            }
        }
        free(bp);
        free(row);
    }
    free(bias);
    return err ? dit_set_error(DIT_ERR_NOMEM, "out of memory (matmul panel)") : DIT_OK;
}

static int matmul(float *out, const float *a, int64_t M, const dit_tensor *w, const dit_tensor *b, int nt)
{
    return matmul_taps(out, a, M, w, b, 1, nt);
}

/* ==== DiT layers (§1) ==== */

/* §1.3: emb (256) = [cos(t f_k) | sin(t f_k)], f_k = exp(-ln(10000) k / 128), k < 128, all in fp32:
   freqs = exp(-math.log(10000) * arange(128, float32) / 128), args = float(t) * freqs. cos first. */
static void timestep_freq_embedding(float t, float *emb)
{
    const int half = 128;
    const float neg_log_max = (float)-log(10000.0);
    for (int k = 0; k < half; k++) {
        float e = neg_log_max * (float)k;
        e = e / (float)half;
        float arg = t * expf(e);
        emb[k] = cosf(arg);
        emb[half + k] = sinf(arg);
    }
}

/* LayerNorm over D (eps 1e-6, no affine, §1.6) then modulate (§1.6): y = LN(x) * (1 + scale) + shift.
   x, y (rows, D); rows of batch row b use shift/scale row uidx[b]. Statistics in double. */
static void layernorm_modulate(float *y, const float *x, int B, int T, int D, const float *mod, int64_t mod_stride,
                               const int *uidx, int shift_chunk, int scale_chunk, int nt)
{
#pragma omp parallel for num_threads(threads_for(nt, 10.0 * B * T * D)) schedule(static)
    for (int64_t r = 0; r < (int64_t)B * T; r++) {
        const float *xr = x + r * D;
        const float *mu = mod + uidx[r / T] * mod_stride;
        const float *shift = mu + (int64_t)shift_chunk * D, *scale = mu + (int64_t)scale_chunk * D;
        double s = 0.0, ss = 0.0;
        for (int i = 0; i < D; i++) s += xr[i];
        double mean = s / D;
        for (int i = 0; i < D; i++) ss += (xr[i] - mean) * (xr[i] - mean);
        float rstd = (float)(1.0 / sqrt(ss / D + 1e-6)), fmean = (float)mean;
        float *yr = y + r * D;
        for (int i = 0; i < D; i++) {
            float n = (xr[i] - fmean) * rstd;
            yr[i] = n * (1.0f + scale[i]) + shift[i];
        }
    }
}

/* Scaled dot-product attention of B*H heads: out_h[i] = sum_j softmax_j(scale * q_h[i] . k_h[j]) v_h[j].
   Row i of batch b, head h: q at q + b*bs + i*ld + h*hd (likewise k, v; out with its own ldo/bso).
   Max-subtracted softmax. Per head, k is transposed into kt (hd, T) so that both inner loops run over
   contiguous memory and vectorise without reassociating any sum: scores s[j] += q[d] * kt[d][j] (d in order),
   then o[d] += p[j] * v[j][d] (j in order). Work items are (head, block of 32 queries). */
static int attention(float *out, int64_t ldo, int64_t bso, const float *q, const float *k, const float *v, int64_t ld,
                     int64_t bs, int B, int T, int H, int hd, float scale, int nt)
{
    const int QB = 32, nqb = (T + QB - 1) / QB;
    const int64_t items = (int64_t)B * H * nqb;
    int err = 0;
    nt = threads_for(nt, 4.0 * B * H * T * T * hd);
#pragma omp parallel num_threads(nt)
    {
        int tid = 0, nth = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nth = omp_get_num_threads();
#endif
        float *kt = malloc((size_t)hd * T * sizeof(float)), *p = malloc((size_t)QB * T * sizeof(float));
        if (!kt || !p) {
#pragma omp atomic write
            err = 1;
        } else {
            int64_t it0 = items * tid / nth, it1 = items * (tid + 1) / nth, head = -1;
            for (int64_t it = it0; it < it1; it++) {
                const int64_t bh = it / nqb;
                const int b = (int)(bh / H), h = (int)(bh % H);
                const float *qb = q + b * bs + h * hd, *kb = k + b * bs + h * hd, *vb = v + b * bs + h * hd;
                if (bh != head) {   /* kt[d][j] = k[j][d] */
                    for (int j = 0; j < T; j++)
                        for (int d = 0; d < hd; d++) kt[(int64_t)d * T + j] = kb[j * ld + d];
                    head = bh;
                }
                const int i0 = (int)(it % nqb) * QB, nq = T - i0 < QB ? T - i0 : QB;
                /* scores of the block: p[i][j] = sum_d q[i][d] kt[d][j] (a row of kt serves all queries) */
                memset(p, 0, (size_t)nq * T * sizeof(float));
                int d = 0;
                for (; d + 4 <= hd; d += 4) {   /* 4 d at a time: one load/store of p per 4 FMAs, order kept */
                    const float *k0 = kt + (int64_t)d * T, *k1 = k0 + T, *k2 = k1 + T, *k3 = k2 + T;
                    for (int i = 0; i < nq; i++) {
                        const float *qi = qb + (int64_t)(i0 + i) * ld + d;
                        const float q0 = qi[0], q1 = qi[1], q2 = qi[2], q3 = qi[3];
                        float *pi = p + (int64_t)i * T;
                        for (int j = 0; j < T; j++) {
                            float acc = pi[j];
                            acc += q0 * k0[j];
                            acc += q1 * k1[j];
                            acc += q2 * k2[j];
                            acc += q3 * k3[j];
                            pi[j] = acc;
                        }
                    }
                }
                for (; d < hd; d++) {
                    const float *kd = kt + (int64_t)d * T;
                    for (int i = 0; i < nq; i++) {
                        const float qd = qb[(int64_t)(i0 + i) * ld + d];
                        float *pi = p + (int64_t)i * T;
                        for (int j = 0; j < T; j++) pi[j] += qd * kd[j];
                    }
                }
                /* softmax rows, normalised in place: p = exp(s*scale - max) / sum */
                for (int i = 0; i < nq; i++) {
                    float *pi = p + (int64_t)i * T, mx = -INFINITY, sum = 0.0f;
                    for (int j = 0; j < T; j++) {
                        pi[j] *= scale;
                        mx = pi[j] > mx ? pi[j] : mx;
                    }
                    for (int j = 0; j < T; j++) {
                        pi[j] = expf(pi[j] - mx);
                        sum += pi[j];
                    }
                    const float inv = 1.0f / sum;
                    for (int j = 0; j < T; j++) pi[j] *= inv;
                    float *o = out + b * bso + (int64_t)(i0 + i) * ldo + h * hd;
                    for (int d = 0; d < hd; d++) o[d] = 0.0f;
                }
                /* o[i] = sum_j p[i][j] v[j] (a row of v serves all queries) */
                int j = 0;
                for (; j + 4 <= T; j += 4) {   /* 4 j at a time, order kept */
                    const float *v0 = vb + (int64_t)j * ld, *v1 = v0 + ld, *v2 = v1 + ld, *v3 = v2 + ld;
                    for (int i = 0; i < nq; i++) {
                        const float *pi = p + (int64_t)i * T + j;
                        const float p0 = pi[0], p1 = pi[1], p2 = pi[2], p3 = pi[3];
                        float *o = out + b * bso + (int64_t)(i0 + i) * ldo + h * hd;
                        for (int e = 0; e < hd; e++) {
                            float acc = o[e];
                            acc += p0 * v0[e];
                            acc += p1 * v1[e];
                            acc += p2 * v2[e];
                            acc += p3 * v3[e];
                            o[e] = acc;
                        }
                    }
                }
                for (; j < T; j++) {
                    const float *vj = vb + (int64_t)j * ld;
                    for (int i = 0; i < nq; i++) {
                        const float pij = p[(int64_t)i * T + j];
                        float *o = out + b * bso + (int64_t)(i0 + i) * ldo + h * hd;
                        for (int e = 0; e < hd; e++) o[e] += pij * vj[e];
                    }
                }
            }
        }
        free(kt);
        free(p);
    }
    return err ? dit_set_error(DIT_ERR_NOMEM, "out of memory (attention)") : DIT_OK;
}

/* x (B, T, D) += gate (U, stride; chunk) * o (B, T, D), gate broadcast over tokens */
static void gated_residual(float *x, const float *o, int B, int T, int D, const float *mod, int64_t mod_stride,
                           const int *uidx, int gate_chunk, int nt)
{
#pragma omp parallel for num_threads(threads_for(nt, 2.0 * B * T * D)) schedule(static)
    for (int64_t r = 0; r < (int64_t)B * T; r++) {
        const float *gate = mod + uidx[r / T] * mod_stride + (int64_t)gate_chunk * D;
        for (int i = 0; i < D; i++) x[r * D + i] += gate[i] * o[r * D + i];
    }
}

/* ==== DiT forward (§1) ==== */

/* Optional copies of intermediates for the tests (dit__forward_taps); any pointer may be NULL. */
typedef struct {
    float *temb;    /* (B, D) t_embedder output */
    float *c;       /* (B, D) t_emb + y_emb */
    float *block0;  /* (B, T, D) output of block 0 */
} dit_taps;

/* One chunk of rows. x (B, C, L, L), t (B), y (B) -> out (B, out_channels, L, L). */
static int forward_rows(const dit_model *m, const float *x, const float *t, const int *y, int B, float *out, int nt,
                        const dit_taps *taps)
{
    const dit_config *cf = &m->cfg;
    const dit_weights *w = &m->w;
    const int C = cf->in_channels, L = cf->input_size, p = cf->patch, g = L / p, T = g * g;
    const int D = cf->hidden, H = cf->heads, F = cf->mlp_hidden, OC = cf->out_channels, P = C * p * p;
    const int64_t BT = (int64_t)B * T;
    int rc = DIT_OK;

    /* distinct (t, y) rows: adaLN vectors depend only on them (§7, "Cost") */
    int *uidx = malloc((size_t)B * sizeof(int)), *urow = malloc((size_t)B * sizeof(int)), U = 0;
    float *patches = malloc((size_t)BT * P * sizeof(float));    /* (B, T, C*p*p) */
    float *h = malloc((size_t)BT * D * sizeof(float));          /* (B, T, D) residual stream */
    float *xn = malloc((size_t)BT * D * sizeof(float));         /* (B, T, D) modulated LN */
    float *qkv = malloc((size_t)BT * 3 * D * sizeof(float));    /* (B, T, 3D) */
    float *att = malloc((size_t)BT * D * sizeof(float));        /* (B, T, D) */
    float *o = malloc((size_t)BT * D * sizeof(float));          /* (B, T, D) sub-layer output */
    float *f = malloc((size_t)BT * F * sizeof(float));          /* (B, T, F) */
    float *fin = malloc((size_t)BT * p * p * OC * sizeof(float)); /* (B, T, p*p*OC) */
    float *tfreq = malloc((size_t)B * 256 * sizeof(float));     /* (U, 256) */
    float *t1 = malloc((size_t)B * D * sizeof(float));          /* (U, D) */
    float *temb = malloc((size_t)B * D * sizeof(float));        /* (U, D) */
    float *c = malloc((size_t)B * D * sizeof(float));           /* (U, D) */
    float *mod = malloc((size_t)B * 6 * D * sizeof(float));     /* (U, 6D) */
    float *pos = NULL;
    if (!uidx || !urow || !patches || !h || !xn || !qkv || !att || !o || !f || !fin || !tfreq || !t1 || !temb || !c ||
        !mod || !(pos = tensor_f32(&w->pos_embed))) {
        rc = dit_set_error(DIT_ERR_NOMEM, "out of memory (forward, %d rows)", B);
        goto done;
    }
    for (int b = 0; b < B; b++) {
        if (y[b] < 0 || y[b] > cf->num_classes) {
            rc = dit_set_error(DIT_ERR_INPUT, "label %d out of range [0, %d]", y[b], cf->num_classes);
            goto done;
        }
        int u = 0;
        while (u < U && !(t[urow[u]] == t[b] && y[urow[u]] == y[b])) u++;
        if (u == U) urow[U++] = b;
        uidx[b] = u;
    }

    /* §1.1-1.2 patch embed: h[b, i*g+j, :] = W_x (D, C*p*p) . x[b, :, i*p:(i+1)*p, j*p:(j+1)*p] + b_x + pos[i*g+j] */
    for (int b = 0; b < B; b++)
        for (int i = 0; i < g; i++)
            for (int j = 0; j < g; j++) {
                float *pr = patches + ((int64_t)b * T + i * g + j) * P;
                for (int ch = 0; ch < C; ch++)
                    for (int kh = 0; kh < p; kh++)
                        for (int kw = 0; kw < p; kw++)
                            *pr++ = x[(((int64_t)b * C + ch) * L + i * p + kh) * L + j * p + kw];
            }
    if ((rc = matmul(h, patches, BT, &w->x_emb_w, &w->x_emb_b, nt))) goto done;
    for (int64_t r = 0; r < BT; r++)
        for (int d = 0; d < D; d++) h[r * D + d] += pos[(r % T) * D + d];

    /* §1.3-1.5 conditioning, per distinct row: c = t_emb + y_emb, t_emb = fc2(SiLU(fc1(freq(t)))) */
    for (int u = 0; u < U; u++) timestep_freq_embedding(t[urow[u]], tfreq + u * 256);
    if ((rc = matmul(t1, tfreq, U, &w->t_fc1_w, &w->t_fc1_b, nt))) goto done;
    for (int64_t i = 0; i < (int64_t)U * D; i++) t1[i] = silu(t1[i]);
    if ((rc = matmul(temb, t1, U, &w->t_fc2_w, &w->t_fc2_b, nt))) goto done;
    for (int u = 0; u < U; u++) {
        tensor_read(&w->y_table, (int64_t)y[urow[u]] * D, D, c + u * D);   /* y_emb row y (null = num_classes) */
        for (int d = 0; d < D; d++) c[u * D + d] += temb[u * D + d];
    }
    if (taps) {
        for (int b = 0; b < B; b++) {
            if (taps->temb) memcpy(taps->temb + b * D, temb + uidx[b] * D, D * sizeof(float));
            if (taps->c) memcpy(taps->c + b * D, c + uidx[b] * D, D * sizeof(float));
        }
    }
    for (int64_t i = 0; i < (int64_t)U * D; i++) c[i] = silu(c[i]);   /* every adaLN applies SiLU(c) first */

    /* §1.6 blocks */
    for (int l = 0; l < cf->depth; l++) {
        const dit_block *bl = &w->blocks[l];
        /* mod (U, 6D) = Linear(SiLU(c)): shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp */
        if ((rc = matmul(mod, c, U, &bl->ada_w, &bl->ada_b, nt))) goto done;
        /* x = x + gate_msa * proj(attn(modulate(LN(x), shift_msa, scale_msa))) */
        layernorm_modulate(xn, h, B, T, D, mod, 6 * D, uidx, 0, 1, nt);
        if ((rc = matmul(qkv, xn, BT, &bl->qkv_w, &bl->qkv_b, nt))) goto done;
        /* §1.7 qkv rows [q (H x hd) | k | v]; softmax(q k^T * hd^-0.5) v per head, heads concatenated */
        if ((rc = attention(att, D, (int64_t)T * D, qkv, qkv + D, qkv + 2 * D, 3 * D, (int64_t)T * 3 * D, B, T, H, D / H,
                            (float)pow((double)(D / H), -0.5), nt)))
            goto done;
        if ((rc = matmul(o, att, BT, &bl->proj_w, &bl->proj_b, nt))) goto done;
        gated_residual(h, o, B, T, D, mod, 6 * D, uidx, 2, nt);
        /* x = x + gate_mlp * fc2(GELU_tanh(fc1(modulate(LN(x), shift_mlp, scale_mlp)))) */
        layernorm_modulate(xn, h, B, T, D, mod, 6 * D, uidx, 3, 4, nt);
        if ((rc = matmul(f, xn, BT, &bl->fc1_w, &bl->fc1_b, nt))) goto done;
#pragma omp parallel for num_threads(threads_for(nt, 30.0 * BT * F)) schedule(static)
        for (int64_t i = 0; i < BT * F; i++) f[i] = gelu_tanh(f[i]);
        if ((rc = matmul(o, f, BT, &bl->fc2_w, &bl->fc2_b, nt))) goto done;
        gated_residual(h, o, B, T, D, mod, 6 * D, uidx, 5, nt);
        if (l == 0 && taps && taps->block0) memcpy(taps->block0, h, (size_t)BT * D * sizeof(float));
    }

    /* §1.9 final layer: [shift, scale] = Linear(SiLU(c)) (shift first); fin = Linear(modulate(LN(x), shift, scale)) */
    if ((rc = matmul(mod, c, U, &w->final_ada_w, &w->final_ada_b, nt))) goto done;
    layernorm_modulate(xn, h, B, T, D, mod, 2 * D, uidx, 0, 1, nt);
    if ((rc = matmul(fin, xn, BT, &w->final_w, &w->final_b, nt))) goto done;

    /* §1.10 unpatchify: fin[b, hi*g+wi, (pi*p+qi)*OC + ch] -> out[b, ch, hi*p+pi, wi*p+qi] (channel fastest) */
    for (int b = 0; b < B; b++)
        for (int hi = 0; hi < g; hi++)
            for (int wi = 0; wi < g; wi++) {
                const float *fr = fin + ((int64_t)b * T + hi * g + wi) * p * p * OC;
                for (int pi = 0; pi < p; pi++)
                    for (int qi = 0; qi < p; qi++)
                        for (int ch = 0; ch < OC; ch++)
                            out[(((int64_t)b * OC + ch) * L + hi * p + pi) * L + wi * p + qi] = fr[(pi * p + qi) * OC + ch];
            }

done:
    free(uidx); free(urow); free(patches); free(h); free(xn); free(qkv); free(att); free(o); free(f); free(fin);
    free(tfreq); free(t1); free(temb); free(c); free(mod); free(pos);
    return rc;
}

/* Rows are processed in chunks of at most ~4096 tokens to bound activation memory (B*T*F floats). */
static int forward_taps(const dit_model *m, const float *x, const float *t, const int *y, int B, float *out,
                        int threads, const dit_taps *taps)
{
    if (!m || !x || !t || !y || !out || B <= 0) return dit_set_error(DIT_ERR_INPUT, "dit_forward: bad arguments");
    const dit_config *cf = &m->cfg;
    const int T = (cf->input_size / cf->patch) * (cf->input_size / cf->patch);
    const size_t in_row = (size_t)cf->in_channels * cf->input_size * cf->input_size;
    const size_t out_row = (size_t)cf->out_channels * cf->input_size * cf->input_size;
    int chunk = 4096 / T > 0 ? 4096 / T : 1;
    if (taps) chunk = B;   /* taps hold whole-batch tensors */
    for (int b0 = 0; b0 < B; b0 += chunk) {
        int nb = B - b0 < chunk ? B - b0 : chunk;
        int rc = forward_rows(m, x + b0 * in_row, t + b0, y + b0, nb, out + b0 * out_row, n_threads(threads), taps);
        if (rc) return rc;
    }
    return DIT_OK;
}

int dit_forward(const dit_model *m, const float *x, const float *t, const int *y, int B, float *out, int threads)
{
    return forward_taps(m, x, t, y, B, out, threads, NULL);
}

/* Test hook (not in dit.h): dit_forward plus copies of t_emb, c and the block-0 output. */
int dit__forward_taps(const dit_model *m, const float *x, const float *t, const int *y, int B, float *out,
                      int threads, float *temb, float *c, float *block0);
int dit__forward_taps(const dit_model *m, const float *x, const float *t, const int *y, int B, float *out,
                      int threads, float *temb, float *c, float *block0)
{
    dit_taps taps = { temb, c, block0 };
    return forward_taps(m, x, t, y, B, out, threads, &taps);
}

/* §1.11 forward_with_cfg: the model runs on [x[:N]; x[:N]] with labels y (B = 2N); eps channels < cfg_channels
   of every row become g = u + s (c - u) (cond rows n < N, uncond rows N + n); all other channels keep each
   row's own pass. */
int dit_forward_with_cfg(const dit_model *m, const float *x, const float *t, const int *y, int B, float cfg_scale,
                         float *out, int threads)
{
    if (!m || B <= 0 || B % 2) return dit_set_error(DIT_ERR_INPUT, "dit_forward_with_cfg: batch must be 2N (got %d)", B);
    const dit_config *cf = &m->cfg;
    const int N = B / 2;
    const size_t in_row = (size_t)cf->in_channels * cf->input_size * cf->input_size;
    const size_t plane = (size_t)cf->input_size * cf->input_size, out_row = cf->out_channels * plane;
    float *xx = malloc((size_t)B * in_row * sizeof(float));
    if (!xx) return dit_set_error(DIT_ERR_NOMEM, "out of memory (cfg batch)");
    memcpy(xx, x, N * in_row * sizeof(float));
    memcpy(xx + N * in_row, x, N * in_row * sizeof(float));
    int rc = dit_forward(m, xx, t, y, B, out, threads);
    free(xx);
    if (rc) return rc;
    for (int n = 0; n < N; n++) {
        float *cond = out + n * out_row, *uncond = out + (N + n) * out_row;
        for (size_t i = 0; i < cf->cfg_channels * plane; i++) {
            float gd = uncond[i] + cfg_scale * (cond[i] - uncond[i]);
            cond[i] = uncond[i] = gd;
        }
    }
    return DIT_OK;
}

/* ==== Schedule (§3.2-3.3) ==== */

/* Forces a double to memory so that -ffp-contract=fast cannot fuse it into an FMA with the next operation:
   numpy rounds i*step before adding start, and the schedule must match numpy to the bit. */
static double round_f64(double x)
{
    volatile double v = x;
    return v;
}

/* np.linspace(1e-4, 0.02, 1000): step = (stop - start) / 999; beta_i = i * step + start; beta_999 = stop. */
static void linear_betas(double *betas)
{
    const double start = 0.0001, stop = 0.02;
    const double step = (stop - start) / 999.0;
    for (int i = 0; i < 1000; i++) betas[i] = round_f64((double)i * step) + start;
    betas[999] = stop;
}

/* space_timesteps(1000, spacing) (RS:12-62) -> keep[i] = 1 for the kept original timesteps. */
static int space_timesteps(const char *spacing, unsigned char keep[1000])
{
    const int num = 1000;
    memset(keep, 0, 1000);
    if (!spacing || !*spacing) spacing = "1000";
    if (!strncmp(spacing, "ddim", 4)) {
        char *end;
        errno = 0;
        long want = strtol(spacing + 4, &end, 10);
        if (end == spacing + 4 || *end || errno || want < 1)
            return dit_set_error(DIT_ERR_INPUT, "bad spacing '%s' (want ddimN)", spacing);
        for (int i = 1; i < num; i++)
            if ((num + i - 1) / i == want) {   /* len(range(0, 1000, i)) */
                for (int s = 0; s < num; s += i) keep[s] = 1;
                return DIT_OK;
            }
        return dit_set_error(DIT_ERR_INPUT, "cannot create exactly %ld steps with an integer stride", want);
    }
    long counts[DIT_MAX_STEPS];
    int n_sec = 0;
    const char *s = spacing;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || n_sec == DIT_MAX_STEPS || (*end && *end != ','))
            return dit_set_error(DIT_ERR_INPUT, "bad spacing '%s' (want N, N,M,... or ddimN)", spacing);
        counts[n_sec++] = v;
        if (!*end) break;
        s = end + 1;
    }
    int size_per = num / n_sec, extra = num % n_sec, start = 0;
    for (int i = 0; i < n_sec; i++) {
        int size = size_per + (i < extra ? 1 : 0);
        if (size < counts[i])
            return dit_set_error(DIT_ERR_INPUT, "spacing '%s': cannot divide section of %d steps into %ld", spacing,
                                 size, counts[i]);
        double frac_stride = counts[i] <= 1 ? 1.0 : (double)(size - 1) / (double)(counts[i] - 1);
        double cur = 0.0;
        for (long k = 0; k < counts[i]; k++) {
            keep[start + (int)nearbyint(cur)] = 1;   /* Python round(): half to even (default rounding mode) */
            cur += frac_stride;
        }
        start += size;
    }
    return DIT_OK;
}

/* GaussianDiffusion.__init__ arrays (GD:166-201) from betas, all float64, numpy's order of operations. */
static void schedule_from_betas(dit_schedule *s)
{
    const int K = s->K;
    double cum = 1.0;
    for (int k = 0; k < K; k++) {
        s->alphas_cumprod_prev[k] = cum;
        cum *= 1.0 - s->betas[k];
        s->alphas_cumprod[k] = cum;
    }
    double post_var[DIT_MAX_STEPS];
    for (int k = 0; k < K; k++) {
        double ac = s->alphas_cumprod[k], acp = s->alphas_cumprod_prev[k], b = s->betas[k];
        s->sqrt_recip_alphas_cumprod[k] = sqrt(1.0 / ac);
        s->sqrt_recipm1_alphas_cumprod[k] = sqrt(1.0 / ac - 1);
        post_var[k] = b * (1.0 - acp) / (1.0 - ac);
        s->posterior_mean_coef1[k] = b * sqrt(acp) / (1.0 - ac);
        s->posterior_mean_coef2[k] = (1.0 - acp) * sqrt(1.0 - b) / (1.0 - ac);
    }
    /* log(append(post_var[1], post_var[1:])): entry 0 := entry 1 (its own value is 0) */
    for (int k = 0; k < K; k++) s->posterior_log_variance_clipped[k] = log(post_var[k == 0 && K > 1 ? 1 : k]);
}

int dit_schedule_init(dit_schedule *s, const char *spacing)
{
    unsigned char keep[1000];
    if (!s) return dit_set_error(DIT_ERR_INPUT, "dit_schedule_init: NULL schedule");
    memset(s, 0, sizeof *s);
    int rc = space_timesteps(spacing, keep);
    if (rc) return rc;
    double betas[1000], last = 1.0, cum = 1.0;
    linear_betas(betas);
    /* SpacedDiffusion (RS:73-87): beta'_k = 1 - abar_i / abar_last for kept i, then everything recomputed */
    for (int i = 0; i < 1000; i++) {
        cum *= 1.0 - betas[i];
        if (keep[i]) {
            s->betas[s->K] = 1 - cum / last;
            s->timestep_map[s->K++] = i;
            last = cum;
        }
    }
    if (s->K == 0) return dit_set_error(DIT_ERR_INPUT, "spacing '%s' keeps no steps", spacing ? spacing : "");
    schedule_from_betas(s);
    return DIT_OK;
}

/* ==== Noise: Philox4x32-10 + Box-Muller (dit.h) ==== */

/* Random123 Philox4x32-10: per round (hi, lo) = M0 * c0, M1 * c2 (32x32 -> 64);
   c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0); key += (W0, W1) between rounds. */
static void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0;
        c1 = (uint32_t)p1;
        c2 = n2;
        c3 = (uint32_t)p0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* Test hook (not in dit.h): one raw Philox4x32-10 block, for the Random123 known-answer test. */
void dit__philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
void dit__philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    philox4x32_10(ctr, key, out);
}

/* u = (w + 0.5) / 2^32 (exact in double); r = sqrt(-2 ln u_a); (r cos(2 pi u_b), r sin(2 pi u_b)) */
void dit_randn(uint64_t seed, uint32_t image, uint32_t step, float *out, size_t n)
{
    const uint32_t key[2] = { (uint32_t)seed, (uint32_t)(seed >> 32) };
    const double two_pi = 6.283185307179586;   /* 2 * M_PI, exact doubling of the double pi */
    for (size_t j = 0; j * 4 < n; j++) {
        uint32_t ctr[4] = { (uint32_t)j, image, step, 0x44695421u }, w[4];
        philox4x32_10(ctr, key, w);
        float z[4];
        for (int pr = 0; pr < 2; pr++) {
            double ua = ((double)w[2 * pr] + 0.5) / 4294967296.0, ub = ((double)w[2 * pr + 1] + 0.5) / 4294967296.0;
            double r = sqrt(-2.0 * log(ua)), th = two_pi * ub;
            z[2 * pr] = (float)(r * cos(th));
            z[2 * pr + 1] = (float)(r * sin(th));
        }
        for (size_t e = 0; e < 4 && 4 * j + e < n; e++) out[4 * j + e] = z[e];
    }
}

/* ==== Model loading ==== */

/* Integer KV (u32, i32 in range, or bool). Absent: default when not required. */
static int kv_int(const dit_gguf *g, const char *key, int required, int def, int *out)
{
    uint32_t v;
    int b;
    if (dit_gguf_get_u32(g, key, &v) == 0) {
        if (v > (uint32_t)INT32_MAX)
            return dit_set_error(DIT_ERR_INPUT, "%s: %s = %u is out of range", dit_gguf_path(g), key, v);
        *out = (int)v;
        return DIT_OK;
    }
    if (dit_gguf_get_bool(g, key, &b) == 0) {
        *out = b;
        return DIT_OK;
    }
    if (dit_gguf_find_kv(g, key) >= 0)
        return dit_set_error(DIT_ERR_INPUT, "%s: %s is not an unsigned integer", dit_gguf_path(g), key);
    if (required) return dit_set_error(DIT_ERR_INPUT, "%s: missing key %s", dit_gguf_path(g), key);
    *out = def;
    return DIT_OK;
}

/* Points t at the tensor `name` and checks its shape, given in PyTorch order (outermost first; nd <= 4).
   Absent tensors are an error unless optional (then t->data stays NULL). */
static int bind_shape(dit_model *m, dit_tensor *t, const char *name, int optional, int nd, const int64_t *dims)
{
    const dit_gguf_tensor *gt = dit_gguf_find_tensor(m->file, name);
    memset(t, 0, sizeof *t);
    if (!gt) {
        if (optional) return DIT_OK;
        return dit_set_error(DIT_ERR_INPUT, "%s: missing tensor %s", dit_gguf_path(m->file), name);
    }
    int64_t want[4] = { 1, 1, 1, 1 };
    for (int i = 0; i < nd; i++) want[i] = dims[nd - 1 - i];
    if (gt->ne[0] != want[0] || gt->ne[1] != want[1] || gt->ne[2] != want[2] || gt->ne[3] != want[3]) {
        char got[96], exp[96];
        int n = 0, e = 0;
        for (int i = gt->n_dims - 1; i >= 0; i--) n += snprintf(got + n, sizeof got - n, "%s%lld", n ? ", " : "", (long long)gt->ne[i]);
        for (int i = 0; i < nd; i++) e += snprintf(exp + e, sizeof exp - e, "%s%lld", e ? ", " : "", (long long)dims[i]);
        return dit_set_error(DIT_ERR_INPUT, "%s: tensor %s has shape (%s), expected (%s)", dit_gguf_path(m->file), name,
                             got, exp);
    }
    const int bs = dit_type_block_size(gt->type);
    if (!dit_type_is_supported(gt->type) || bs <= 0)
        return dit_set_error(DIT_ERR_INPUT, "%s: tensor %s has unsupported type %s (%d)", dit_gguf_path(m->file), name,
                             dit_type_name(gt->type) ? dit_type_name(gt->type) : "unknown", gt->type);
    if (gt->ne[0] % bs)
        return dit_set_error(DIT_ERR_INPUT, "%s: tensor %s: row of %lld is not a multiple of the %s block (%d)",
                             dit_gguf_path(m->file), name, (long long)gt->ne[0], dit_type_name(gt->type), bs);
    t->type = gt->type;
    t->n_dims = gt->n_dims;
    memcpy(t->ne, gt->ne, sizeof t->ne);
    t->data = gt->data;
    t->name = gt->name;
    return DIT_OK;
}

#define SHAPE(...) (int)(sizeof((int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t)), (int64_t[]){ __VA_ARGS__ }

static int bind(dit_model *m, dit_tensor *t, const char *name, int nd, const int64_t *dims)
{
    return bind_shape(m, t, name, 0, nd, dims);
}

/* printf-style name, then bind */
static int bindf(dit_model *m, dit_tensor *t, int nd, const int64_t *dims, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int bindf(dit_model *m, dit_tensor *t, int nd, const int64_t *dims, const char *fmt, ...)
{
    char name[DIT_GGUF_MAX_NAME + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return bind(m, t, name, nd, dims);
}

/* A Linear (out, in) weight + bias pair "<prefix>.weight" / "<prefix>.bias". */
static int bind_linear(dit_model *m, dit_tensor *w, dit_tensor *b, const char *prefix, int64_t out, int64_t in)
{
    int rc = bindf(m, w, SHAPE(out, in), "%s.weight", prefix);
    return rc ? rc : bindf(m, b, SHAPE(out), "%s.bias", prefix);
}

/* A Conv2d (out, in, k, k) weight + bias pair. */
static int bind_conv(dit_model *m, dit_tensor *w, dit_tensor *b, const char *prefix, int64_t out, int64_t in, int k)
{
    int rc = bindf(m, w, SHAPE(out, in, k, k), "%s.weight", prefix);
    return rc ? rc : bindf(m, b, SHAPE(out), "%s.bias", prefix);
}

/* GroupNorm affine weight + bias (C). */
static int bind_norm(dit_model *m, dit_tensor *w, dit_tensor *b, const char *prefix, int64_t C)
{
    int rc = bindf(m, w, SHAPE(C), "%s.weight", prefix);
    return rc ? rc : bindf(m, b, SHAPE(C), "%s.bias", prefix);
}

/* The mid-block attention Linears may also come as 1x1 conv weights (c, c, 1, 1) (LDM layout). */
static int bind_attn_linear(dit_model *m, dit_tensor *w, dit_tensor *b, const char *prefix, int64_t C)
{
    char name[DIT_GGUF_MAX_NAME + 64];
    snprintf(name, sizeof name, "%s.weight", prefix);
    const dit_gguf_tensor *gt = dit_gguf_find_tensor(m->file, name);
    if (gt && gt->ne[0] == 1 && gt->ne[1] == 1) return bind_conv(m, w, b, prefix, C, C, 1);
    return bind_linear(m, w, b, prefix, C, C);
}

static int bind_resnet(dit_model *m, dit_vae_resnet *r, const char *prefix, int cin, int cout)
{
    char p[160];
    int rc;
    r->in_ch = cin;
    r->out_ch = cout;
    snprintf(p, sizeof p, "%s.norm1", prefix);
    if ((rc = bind_norm(m, &r->norm1_w, &r->norm1_b, p, cin))) return rc;
    snprintf(p, sizeof p, "%s.conv1", prefix);
    if ((rc = bind_conv(m, &r->conv1_w, &r->conv1_b, p, cout, cin, 3))) return rc;
    snprintf(p, sizeof p, "%s.norm2", prefix);
    if ((rc = bind_norm(m, &r->norm2_w, &r->norm2_b, p, cout))) return rc;
    snprintf(p, sizeof p, "%s.conv2", prefix);
    if ((rc = bind_conv(m, &r->conv2_w, &r->conv2_b, p, cout, cout, 3))) return rc;
    memset(&r->short_w, 0, sizeof r->short_w);
    memset(&r->short_b, 0, sizeof r->short_b);
    if (cin != cout) {
        snprintf(p, sizeof p, "%s.conv_shortcut", prefix);
        if ((rc = bind_conv(m, &r->short_w, &r->short_b, p, cout, cin, 1))) return rc;
    }
    return DIT_OK;
}

static int load_config(dit_model *m)
{
    dit_gguf *g = m->file;
    dit_config *c = &m->cfg;
    const char *path = dit_gguf_path(g);
    int rc;
    if ((rc = kv_int(g, "dit.depth", 1, 0, &c->depth)) || (rc = kv_int(g, "dit.hidden_size", 1, 0, &c->hidden)) ||
        (rc = kv_int(g, "dit.num_heads", 1, 0, &c->heads)) || (rc = kv_int(g, "dit.patch_size", 1, 0, &c->patch)) ||
        (rc = kv_int(g, "dit.input_size", 1, 0, &c->input_size)) ||
        (rc = kv_int(g, "dit.in_channels", 1, 0, &c->in_channels)) ||
        (rc = kv_int(g, "dit.learn_sigma", 0, 1, &c->learn_sigma)) ||
        (rc = kv_int(g, "dit.out_channels", 0, c->in_channels * (c->learn_sigma ? 2 : 1), &c->out_channels)) ||
        (rc = kv_int(g, "dit.num_classes", 1, 0, &c->num_classes)) ||
        (rc = kv_int(g, "dit.mlp_hidden", 0, 4 * c->hidden, &c->mlp_hidden)) ||
        (rc = kv_int(g, "dit.cfg_channels", 0, c->in_channels == 4 ? 3 : c->in_channels, &c->cfg_channels)))
        return rc;
    const char *bad = NULL;
    if (c->depth < 1 || c->depth > 1024) bad = "dit.depth";
    else if (c->hidden < 1 || c->hidden > 65536) bad = "dit.hidden_size";
    else if (c->heads < 1 || c->hidden % c->heads) bad = "dit.num_heads (must divide dit.hidden_size)";
    else if (c->patch < 1 || c->input_size < 1 || c->input_size > 4096 || c->input_size % c->patch)
        bad = "dit.input_size / dit.patch_size (the patch must divide the input)";
    else if (c->in_channels < 1 || c->in_channels > 64) bad = "dit.in_channels";
    else if (c->out_channels != c->in_channels * (c->learn_sigma ? 2 : 1))
        bad = "dit.out_channels (must be in_channels, times 2 with learn_sigma)";
    else if (c->num_classes < 1 || c->num_classes > 1000000) bad = "dit.num_classes";
    else if (c->mlp_hidden < 1 || c->mlp_hidden > 1 << 20) bad = "dit.mlp_hidden";
    else if (c->cfg_channels < 0 || c->cfg_channels > c->in_channels) bad = "dit.cfg_channels";
    if (bad) return dit_set_error(DIT_ERR_INPUT, "%s: bad value of %s", path, bad);

    /* the VAE is present when its tensors are */
    c->has_vae = dit_gguf_find_tensor(g, "vae.decoder.conv_in.weight") != NULL;
    if (!c->has_vae) return DIT_OK;
    int64_t nb = dit_gguf_get_arr_n(g, "vae.block_out_channels");
    if (nb < 1 || nb > DIT_VAE_MAX_BLOCKS)
        return dit_set_error(DIT_ERR_INPUT, "%s: vae.block_out_channels must have 1..%d entries", path,
                             DIT_VAE_MAX_BLOCKS);
    c->vae_n_blocks = (int)nb;
    for (int i = 0; i < nb; i++) {
        uint32_t v;
        if (dit_gguf_get_arr_u32(g, "vae.block_out_channels", i, &v) || v < 1 || v > 65536)
            return dit_set_error(DIT_ERR_INPUT, "%s: bad vae.block_out_channels[%d]", path, i);
        c->vae_block_out[i] = (int)v;
    }
    if ((rc = kv_int(g, "vae.layers_per_block", 0, 2, &c->vae_layers_per_block)) ||
        (rc = kv_int(g, "vae.norm_num_groups", 0, 32, &c->vae_groups)) ||
        (rc = kv_int(g, "vae.latent_channels", 0, 4, &c->vae_latent_channels)) ||
        (rc = kv_int(g, "vae.out_channels", 0, 3, &c->vae_out_channels)))
        return rc;
    c->vae_scaling_factor = 0.18215f;
    if (dit_gguf_find_kv(g, "vae.scaling_factor") >= 0 && dit_gguf_get_f32(g, "vae.scaling_factor", &c->vae_scaling_factor))
        return dit_set_error(DIT_ERR_INPUT, "%s: vae.scaling_factor is not a number", path);
    if (c->vae_layers_per_block + 1 > DIT_VAE_MAX_RESNETS || c->vae_layers_per_block < 0) bad = "vae.layers_per_block";
    else if (c->vae_latent_channels != c->in_channels) bad = "vae.latent_channels (must equal dit.in_channels)";
    else if (c->vae_out_channels != 1 && c->vae_out_channels != 3) bad = "vae.out_channels (1 or 3)";
    else if (!(c->vae_scaling_factor > 0.0f) || !isfinite(c->vae_scaling_factor)) bad = "vae.scaling_factor";
    else if (c->vae_groups < 1) bad = "vae.norm_num_groups";
    for (int i = 0; !bad && i < nb; i++)
        if (c->vae_block_out[i] % c->vae_groups) bad = "vae.block_out_channels (must be multiples of norm_num_groups)";
    if (bad) return dit_set_error(DIT_ERR_INPUT, "%s: bad value of %s", path, bad);
    return DIT_OK;
}

static int load_dit_tensors(dit_model *m)
{
    const dit_config *c = &m->cfg;
    dit_weights *w = &m->w;
    const int64_t D = c->hidden, F = c->mlp_hidden, p = c->patch, g = c->input_size / c->patch;
    int rc;
    if ((rc = bind(m, &w->pos_embed, "pos_embed", SHAPE(1, g * g, D))) ||
        (rc = bind_conv(m, &w->x_emb_w, &w->x_emb_b, "x_embedder.proj", D, c->in_channels, (int)p)) ||
        (rc = bind_linear(m, &w->t_fc1_w, &w->t_fc1_b, "t_embedder.mlp.0", D, 256)) ||
        (rc = bind_linear(m, &w->t_fc2_w, &w->t_fc2_b, "t_embedder.mlp.2", D, D)) ||
        (rc = bind(m, &w->y_table, "y_embedder.embedding_table.weight", SHAPE(c->num_classes + 1, D))) ||
        (rc = bind_linear(m, &w->final_ada_w, &w->final_ada_b, "final_layer.adaLN_modulation.1", 2 * D, D)) ||
        (rc = bind_linear(m, &w->final_w, &w->final_b, "final_layer.linear", p * p * c->out_channels, D)))
        return rc;
    if (!(w->blocks = calloc((size_t)c->depth, sizeof *w->blocks)))
        return dit_set_error(DIT_ERR_NOMEM, "out of memory (blocks)");
    for (int l = 0; l < c->depth; l++) {
        dit_block *b = &w->blocks[l];
        char pre[64];
#define BLK(field_w, field_b, sub, out, in) \
        (snprintf(pre, sizeof pre, "blocks.%d.%s", l, sub), bind_linear(m, &b->field_w, &b->field_b, pre, out, in))
        if ((rc = BLK(qkv_w, qkv_b, "attn.qkv", 3 * D, D)) || (rc = BLK(proj_w, proj_b, "attn.proj", D, D)) ||
            (rc = BLK(fc1_w, fc1_b, "mlp.fc1", F, D)) || (rc = BLK(fc2_w, fc2_b, "mlp.fc2", D, F)) ||
            (rc = BLK(ada_w, ada_b, "adaLN_modulation.1", 6 * D, D)))
            return rc;
#undef BLK
    }
    return DIT_OK;
}

static int load_vae_tensors(dit_model *m)
{
    const dit_config *c = &m->cfg;
    dit_vae *v = &m->vae;
    const int nb = c->vae_n_blocks, z = c->vae_latent_channels;
    int rev[DIT_VAE_MAX_BLOCKS];
    for (int i = 0; i < nb; i++) rev[i] = c->vae_block_out[nb - 1 - i];
    int rc;
    char p[160];
    if ((rc = bind_conv(m, &v->pq_w, &v->pq_b, "vae.post_quant_conv", z, z, 1)) ||
        (rc = bind_conv(m, &v->conv_in_w, &v->conv_in_b, "vae.decoder.conv_in", rev[0], z, 3)) ||
        (rc = bind_resnet(m, &v->mid[0], "vae.decoder.mid_block.resnets.0", rev[0], rev[0])) ||
        (rc = bind_resnet(m, &v->mid[1], "vae.decoder.mid_block.resnets.1", rev[0], rev[0])) ||
        (rc = bind_norm(m, &v->attn_norm_w, &v->attn_norm_b, "vae.decoder.mid_block.attentions.0.group_norm", rev[0])) ||
        (rc = bind_attn_linear(m, &v->attn_q_w, &v->attn_q_b, "vae.decoder.mid_block.attentions.0.to_q", rev[0])) ||
        (rc = bind_attn_linear(m, &v->attn_k_w, &v->attn_k_b, "vae.decoder.mid_block.attentions.0.to_k", rev[0])) ||
        (rc = bind_attn_linear(m, &v->attn_v_w, &v->attn_v_b, "vae.decoder.mid_block.attentions.0.to_v", rev[0])) ||
        (rc = bind_attn_linear(m, &v->attn_o_w, &v->attn_o_b, "vae.decoder.mid_block.attentions.0.to_out.0", rev[0])))
        return rc;
    int prev = rev[0];
    for (int i = 0; i < nb; i++) {
        for (int j = 0; j <= c->vae_layers_per_block; j++) {
            snprintf(p, sizeof p, "vae.decoder.up_blocks.%d.resnets.%d", i, j);
            if ((rc = bind_resnet(m, &v->up[i][j], p, j == 0 ? prev : rev[i], rev[i]))) return rc;
        }
        memset(&v->up_conv_w[i], 0, sizeof v->up_conv_w[i]);
        memset(&v->up_conv_b[i], 0, sizeof v->up_conv_b[i]);
        if (i != nb - 1) {
            snprintf(p, sizeof p, "vae.decoder.up_blocks.%d.upsamplers.0.conv", i);
            if ((rc = bind_conv(m, &v->up_conv_w[i], &v->up_conv_b[i], p, rev[i], rev[i], 3))) return rc;
        }
        prev = rev[i];
    }
    if ((rc = bind_norm(m, &v->norm_out_w, &v->norm_out_b, "vae.decoder.conv_norm_out", c->vae_block_out[0])) ||
        (rc = bind_conv(m, &v->conv_out_w, &v->conv_out_b, "vae.decoder.conv_out", c->vae_out_channels,
                        c->vae_block_out[0], 3)))
        return rc;
    return DIT_OK;
}

void dit_model_free(dit_model *m)
{
    if (!m) return;
    if (m->class_names) {
        for (int i = 0; i < m->cfg.n_class_names; i++) free((void *)m->class_names[i]);
        free((void *)m->class_names);
    }
    free((void *)m->name);
    free(m->w.blocks);
#ifdef DIT_CUDA
    dit_cuda_free(m);
#endif
    dit_gguf_close(m->file);
    free(m);
}

dit_model *dit_model_load(const char *path)
{
    dit_gguf *g = dit_gguf_open(path);
    if (!g) return NULL;
    dit_model *m = calloc(1, sizeof *m);
    if (!m) {
        dit_gguf_close(g);
        dit_set_error(DIT_ERR_NOMEM, "out of memory");
        return NULL;
    }
    m->file = g;
    if (load_config(m) || load_dit_tensors(m) || (m->cfg.has_vae && load_vae_tensors(m))) goto fail;

    /* class names: optional string array, one per class */
    int64_t nc = dit_gguf_get_arr_n(g, "dit.class_names");
    if (nc > 0) {
        if (nc != m->cfg.num_classes) {
            dit_set_error(DIT_ERR_INPUT, "%s: dit.class_names has %lld entries, dit.num_classes is %d", path,
                          (long long)nc, m->cfg.num_classes);
            goto fail;
        }
        if (!(m->class_names = calloc((size_t)nc, sizeof(char *)))) goto nomem;
        m->cfg.n_class_names = (int)nc;
        for (int64_t i = 0; i < nc; i++) {
            const char *s = dit_gguf_get_arr_str(g, "dit.class_names", i);
            if (!s) {
                dit_set_error(DIT_ERR_INPUT, "%s: dit.class_names is not a string array", path);
                goto fail;
            }
            if (!(m->class_names[i] = strdup(s))) goto nomem;
        }
    }
    const char *name = dit_gguf_get_str(g, "general.name");
    if (name && *name) {
        m->name = strdup(name);
    } else {   /* file stem */
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        size_t n = strlen(base);
        if (n > 5 && !strcmp(base + n - 5, ".gguf")) n -= 5;
        m->name = strndup(base, n);
    }
    if (!m->name) goto nomem;
    return m;
nomem:
    dit_set_error(DIT_ERR_NOMEM, "out of memory");
fail:
    dit_model_free(m);
    return NULL;
}

size_t dit_latent_floats(const dit_model *m)
{
    return (size_t)m->cfg.in_channels * m->cfg.input_size * m->cfg.input_size;
}

int dit_image_channels(const dit_model *m)
{
    return m->cfg.has_vae ? m->cfg.vae_out_channels : m->cfg.in_channels;
}

/* the VAE upsamples by 2 in every up block but the last */
int dit_image_size(const dit_model *m)
{
    return m->cfg.has_vae ? m->cfg.input_size << (m->cfg.vae_n_blocks - 1) : m->cfg.input_size;
}

size_t dit_image_floats(const dit_model *m)
{
    return (size_t)dit_image_channels(m) * dit_image_size(m) * dit_image_size(m);
}

/* ==== Class names ==== */

/* case-insensitive, '_' == ' ' */
static int name_char(int ch)
{
    ch = tolower((unsigned char)ch);
    return ch == '_' ? ' ' : ch;
}

/* does s match the text t[0..n) exactly (prefix = 0) or as a prefix (prefix = 1)? */
static int name_match(const char *s, const char *t, size_t n, int prefix)
{
    size_t i = 0;
    for (; s[i] && i < n; i++)
        if (name_char(s[i]) != name_char(t[i])) return 0;
    return !s[i] && (prefix || i == n);
}

/* Visits the full name and every comma-separated synonym ("tench, Tinca tinca") of class i. */
static int class_match(const char *name, const char *s, int prefix)
{
    if (name_match(s, name, strlen(name), prefix)) return 1;
    for (const char *a = name; *a;) {
        while (*a == ' ' || *a == ',') a++;
        size_t n = strcspn(a, ",");
        while (n && a[n - 1] == ' ') n--;
        if (n && name_match(s, a, n, prefix)) return 1;
        a += strcspn(a, ",");
    }
    return 0;
}

static int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64) la = 64;
    if (lb > 64) lb = 64;
    int d[65];
    for (size_t j = 0; j <= lb; j++) d[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int prev = d[0];
        d[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int cur = d[j];
            int sub = prev + (name_char(a[i - 1]) != name_char(b[j - 1]));
            int best = d[j] + 1 < d[j - 1] + 1 ? d[j] + 1 : d[j - 1] + 1;
            d[j] = sub < best ? sub : best;
            prev = cur;
        }
    }
    return d[lb];
}

int dit_class_from_name(const dit_model *m, const char *s)
{
    if (!s || !*s) return dit_set_error(DIT_ERR_INPUT, "empty class name"), -1;
    const int nc = m->cfg.num_classes;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end != s && !*end && !errno) {
        if (v < 0 || v >= nc) return dit_set_error(DIT_ERR_INPUT, "class %ld out of range [0, %d)", v, nc), -1;
        return (int)v;
    }
    if (!m->class_names)
        return dit_set_error(DIT_ERR_INPUT, "class '%s': this model has no class names (give an index 0..%d)", s,
                             nc - 1), -1;
    for (int i = 0; i < nc; i++)
        if (class_match(m->class_names[i], s, 0)) return i;
    int found = -1, n_found = 0;
    for (int i = 0; i < nc; i++)
        if (class_match(m->class_names[i], s, 1)) {
            if (n_found++ == 0) found = i;
        }
    if (n_found == 1) return found;
    /* error naming close matches: prefix hits if ambiguous, else the 5 nearest names by edit distance */
    char list[512];
    size_t n = 0;
    list[0] = 0;
    if (n_found > 1) {
        int shown = 0;
        for (int i = 0; i < nc && shown < 5; i++)
            if (class_match(m->class_names[i], s, 1)) {
                n += snprintf(list + n, sizeof list - n, "%s%s (%d)", shown ? "; " : "", m->class_names[i], i);
                if (n >= sizeof list) n = sizeof list - 1;
                shown++;
            }
        dit_set_error(DIT_ERR_INPUT, "class '%s' is ambiguous (%d matches): %s%s", s, n_found, list,
                      n_found > 5 ? "; ..." : "");
        return -1;
    }
    int best[5], bd[5], nb = 0;
    for (int i = 0; i < nc; i++) {
        int d = edit_distance(s, m->class_names[i]);
        if (nb == 5 && d >= bd[4]) continue;
        int k = nb < 5 ? nb++ : 4;
        while (k > 0 && bd[k - 1] > d) {
            best[k] = best[k - 1];
            bd[k] = bd[k - 1];
            k--;
        }
        best[k] = i;
        bd[k] = d;
    }
    for (int k = 0; k < nb; k++) {
        n += snprintf(list + n, sizeof list - n, "%s%s (%d)", k ? "; " : "", m->class_names[best[k]], best[k]);
        if (n >= sizeof list) n = sizeof list - 1;
    }
    dit_set_error(DIT_ERR_INPUT, "unknown class '%s'; close matches: %s", s, list);
    return -1;
}

/* ==== Sampling (§3.5-3.7, §7) ==== */

static int all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

dit_sample_params dit_sample_params_default(void)
{
    dit_sample_params p;
    memset(&p, 0, sizeof p);
    p.sampler = DIT_SAMPLER_DDPM;
    p.steps = 250;
    p.cfg_scale = 4.0f;
    p.n = 1;
    p.backend = DIT_BACKEND_AUTO;
    return p;
}

/* x[n] <- one reverse step of chain n at respaced step k, from the CFG model output mo (2N, OC, L, L) (row n).
   All tensor math fp32; every schedule coefficient is the float64 entry rounded once to fp32 (GD:870). */
static void sampler_step(const dit_model *m, const dit_sample_params *p, const dit_schedule *s, int k, float *x,
                         const float *mo, int n, const float *noise)
{
    const int C = m->cfg.in_channels, OC = m->cfg.out_channels;
    const size_t plane = (size_t)m->cfg.input_size * m->cfg.input_size, CLL = C * plane;
    const float *eps = mo + (size_t)n * OC * plane, *v = eps + CLL;   /* (C, L, L) each; v only with learn_sigma */
    float *xn = x + (size_t)n * CLL;
    const float sr = (float)s->sqrt_recip_alphas_cumprod[k], srm1 = (float)s->sqrt_recipm1_alphas_cumprod[k];
    const int clip = p->clip_denoised;
    if (p->sampler == DIT_SAMPLER_DDIM) {
        /* §3.7: x0 as DDPM; eps' = (sqrt_recip x - x0) / sqrt_recipm1;
           x = x0 sqrt(abar_prev) + sqrt(1 - abar_prev - sigma^2) eps' + (k != 0) sigma noise,
           sigma = eta sqrt((1 - abar_prev) / (1 - abar)) sqrt(1 - abar / abar_prev) (coefficients in double) */
        const double ab = s->alphas_cumprod[k], abp = s->alphas_cumprod_prev[k];
        const double sigma = (double)p->eta * sqrt((1 - abp) / (1 - ab)) * sqrt(1 - ab / abp);
        const float a1 = (float)sqrt(abp), a2 = (float)sqrt(1 - abp - sigma * sigma), sg = (float)sigma;
        const int add_noise = k != 0 && p->eta != 0.0f;
        for (size_t e = 0; e < CLL; e++) {
            float x0 = sr * xn[e] - srm1 * eps[e];
            if (clip) x0 = x0 < -1.0f ? -1.0f : x0 > 1.0f ? 1.0f : x0;
            const float eps2 = (sr * xn[e] - x0) / srm1;
            float xv = x0 * a1 + a2 * eps2;
            xn[e] = add_noise ? xv + sg * noise[e] : xv;
        }
        return;
    }
    /* §3.5-3.6 DDPM: x0 = sqrt_recip x - sqrt_recipm1 eps (GD:334-339; clamped only with clip_denoised);
       mean = coef1 x0 + coef2 x; LEARNED_RANGE: frac = (v + 1) / 2, logvar = frac log(beta'_k) + (1 - frac) post_logvar_k
       (without learn_sigma: FIXED_LARGE, log(append(post_var[1], betas[1:]))[k]);
       x = mean + ((k != 0) exp(0.5 logvar)) noise */
    const float c1 = (float)s->posterior_mean_coef1[k], c2 = (float)s->posterior_mean_coef2[k];
    const float max_log = (float)log(s->betas[k]), min_log = (float)s->posterior_log_variance_clipped[k];
    const double var1 = s->K > 1 ? s->betas[1] * (1.0 - s->alphas_cumprod_prev[1]) / (1.0 - s->alphas_cumprod[1]) : s->betas[0];
    const float fixed_log = (float)log(k == 0 ? var1 : s->betas[k]);
    const int learned = m->cfg.learn_sigma;
    for (size_t e = 0; e < CLL; e++) {
        float x0 = sr * xn[e] - srm1 * eps[e];
        if (clip) x0 = x0 < -1.0f ? -1.0f : x0 > 1.0f ? 1.0f : x0;
        const float mean = c1 * x0 + c2 * xn[e];
        float lv = fixed_log;
        if (learned) {
            const float frac = (v[e] + 1.0f) / 2.0f;
            lv = frac * max_log + (1.0f - frac) * min_log;
        }
        xn[e] = k != 0 ? mean + expf(0.5f * lv) * noise[e] : mean;   /* the mask multiplies by exactly 1 or 0 */
    }
}

static int sample_cpu(dit_model *m, const dit_sample_params *p, const dit_schedule *s, float *x)
{
    const dit_config *cf = &m->cfg;
    const int N = p->n, K = s->K;
    const size_t CLL = dit_latent_floats(m);
    const size_t out_row = (size_t)cf->out_channels * cf->input_size * cf->input_size;
    int rc = DIT_OK;
    float *mo = malloc(2 * N * out_row * sizeof(float));   /* (2N, OC, L, L) CFG model output */
    float *tt = malloc(2 * N * sizeof(float));              /* (2N) model timesteps */
    int *yy = malloc(2 * N * sizeof(int));                  /* (2N) labels: [y; null] */
    float *noise = malloc(CLL * sizeof(float));             /* (C, L, L) one image's noise */
    if (!mo || !tt || !yy || !noise) {
        rc = dit_set_error(DIT_ERR_NOMEM, "out of memory (sampler, %d images)", N);
        goto done;
    }
    /* x_T: init_noise, else Philox step 0 of image n */
    for (int n = 0; n < N; n++) {
        if (p->init_noise) memcpy(x + n * CLL, p->init_noise + n * CLL, CLL * sizeof(float));
        else dit_randn(p->seed, (uint32_t)n, 0, x + n * CLL, CLL);
        yy[n] = p->labels[n];
        yy[N + n] = cf->num_classes;
    }
    for (int i = 0; i < K; i++) {
        const int k = K - 1 - i;   /* respaced index; the model sees timestep_map[k] (§3.4) */
        for (int b = 0; b < 2 * N; b++) tt[b] = (float)s->timestep_map[k];
        /* CFG model call as sample.py: forward_with_cfg on [x; x] (it reads x[:N] only) */
        if ((rc = dit_forward_with_cfg(m, x, tt, yy, 2 * N, p->cfg_scale, mo, p->threads))) goto done;
        const int need_noise = k != 0 && (p->sampler == DIT_SAMPLER_DDPM || p->eta != 0.0f);
        for (int n = 0; n < N; n++) {
            const float *nz = noise;
            if (need_noise) {
                if (p->step_noise) nz = p->step_noise + ((size_t)i * N + n) * CLL;
                else dit_randn(p->seed, (uint32_t)n, (uint32_t)(i + 1), noise, CLL);
            }
            sampler_step(m, p, s, k, x, mo, n, nz);
        }
        if (!all_finite(x, (size_t)N * CLL)) {
            rc = dit_set_error(DIT_ERR_NUMERIC, "%s: NaN or Inf in latents at step %d/%d (t=%d)", dit_gguf_path(m->file),
                               i + 1, K, s->timestep_map[k]);
            goto done;
        }
        if (p->progress) p->progress(i + 1, K, p->progress_user);
    }
done:
    free(mo);
    free(tt);
    free(yy);
    free(noise);
    return rc;
}

int dit_sample(dit_model *m, const dit_sample_params *p, float *out)
{
    if (!m || !p || !out) return dit_set_error(DIT_ERR_INPUT, "dit_sample: NULL argument");
    if (p->n < 1 || !p->labels) return dit_set_error(DIT_ERR_INPUT, "dit_sample: need n >= 1 images and their labels");
    for (int i = 0; i < p->n; i++)
        if (p->labels[i] < 0 || p->labels[i] > m->cfg.num_classes)
            return dit_set_error(DIT_ERR_INPUT, "label %d out of range [0, %d]", p->labels[i], m->cfg.num_classes);
    if (p->sampler != DIT_SAMPLER_DDPM && p->sampler != DIT_SAMPLER_DDIM)
        return dit_set_error(DIT_ERR_INPUT, "unknown sampler %d", p->sampler);
    if (!isfinite(p->cfg_scale) || !isfinite(p->eta) || p->eta < 0.0f)
        return dit_set_error(DIT_ERR_INPUT, "bad cfg scale or eta");
    const size_t CLL = dit_latent_floats(m);
    if (p->init_noise && !all_finite(p->init_noise, (size_t)p->n * CLL))
        return dit_set_error(DIT_ERR_INPUT, "dit_sample: init_noise holds NaN or Inf");
    char spacing[32];
    if (!p->spacing) {
        if (p->steps < 1 || p->steps > 1000) return dit_set_error(DIT_ERR_INPUT, "steps must be 1..1000 (got %d)", p->steps);
        snprintf(spacing, sizeof spacing, "%s%d", p->sampler == DIT_SAMPLER_DDIM ? "ddim" : "", p->steps);
    }
    dit_schedule s;
    int rc = dit_schedule_init(&s, p->spacing ? p->spacing : spacing);
    if (rc) return rc;
    if (p->step_noise && !all_finite(p->step_noise, (size_t)s.K * p->n * CLL))
        return dit_set_error(DIT_ERR_INPUT, "dit_sample: step_noise holds NaN or Inf");
#ifdef DIT_CUDA
    if (p->backend == DIT_BACKEND_CUDA || (p->backend == DIT_BACKEND_AUTO && dit_cuda_available() > 0)) {
        if (!m->cuda && (rc = dit_cuda_init(m, 0))) return rc;   /* weights uploaded once, kept in m->cuda */
        return dit_cuda_sample(m, p, &s, out);
    }
#else
    if (p->backend == DIT_BACKEND_CUDA)
        return dit_set_error(DIT_ERR_UNSUPPORTED, "this build has no CUDA backend (build with nvcc, or use the CPU)");
#endif
    return sample_cpu(m, p, &s, out);
}

/* ==== SD VAE decoder (§5), channels-last fp32 ==== */

/* GroupNorm(G, C, eps 1e-6) with affine (RN:266), then SiLU when act: y = silu((x - mean_g) rstd_g gamma + beta).
   x, y (HW, C). Two passes in double (mean, then centered variance); per-thread partial sums. */
static int group_norm(float *y, const float *x, int64_t HW, int C, int G, const dit_tensor *gw, const dit_tensor *gb,
                      int act, int nt)
{
    const int cg = C / G;
    nt = threads_for(nt, 10.0 * HW * C);
    double *part = calloc((size_t)nt * G, sizeof(double)), *mean = calloc(G, sizeof(double));
    float *gamma = tensor_f32(gw), *beta = tensor_f32(gb), *fm = malloc(C * sizeof(float)), *fr = malloc(C * sizeof(float));
    int rc = DIT_OK;
    if (!part || !mean || !gamma || !beta || !fm || !fr) {
        rc = dit_set_error(DIT_ERR_NOMEM, "out of memory (group norm)");
        goto done;
    }
    for (int pass = 0; pass < 2; pass++) {
        memset(part, 0, (size_t)nt * G * sizeof(double));
#pragma omp parallel num_threads(nt)
        {
            int tid = 0;
#ifdef _OPENMP
            tid = omp_get_thread_num();
#endif
            double *a = part + (size_t)tid * G;
#pragma omp for schedule(static)
            for (int64_t px = 0; px < HW; px++)
                for (int c = 0; c < C; c++) {
                    double d = pass ? x[px * C + c] - mean[c / cg] : x[px * C + c];
                    a[c / cg] += pass ? d * d : d;
                }
        }
        for (int g = 0; g < G; g++) {
            double s = 0.0;
            for (int t = 0; t < nt; t++) s += part[(size_t)t * G + g];
            s /= (double)HW * cg;
            if (pass == 0) {
                mean[g] = s;
            } else {
                for (int c = g * cg; c < (g + 1) * cg; c++) {
                    fm[c] = (float)mean[g];
                    fr[c] = (float)(1.0 / sqrt(s + 1e-6));
                }
            }
        }
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t px = 0; px < HW; px++)
        for (int c = 0; c < C; c++) {
            float v = (x[px * C + c] - fm[c]) * fr[c] * gamma[c] + beta[c];
            y[px * C + c] = act ? silu(v) : v;
        }
done:
    free(part); free(mean); free(gamma); free(beta); free(fm); free(fr);
    return rc;
}

/* Conv2d 3x3, stride 1, pad 1, channels-last: out (H*W, cout) = im2col(in) (H*W, 9 cin) @ W'^T + b, with the im2col
   row of a pixel ordered (tap = ky*3 + kx, channel) and W' the weight reordered to match while packing.
   Rows go in chunks so the im2col buffer stays <= 32 MB. */
static int conv3x3(float *out, const float *in, int H, int W, int cin, const dit_tensor *w, const dit_tensor *b, int nt)
{
    const int64_t HW = (int64_t)H * W, K = 9 * (int64_t)cin, cout = w->ne[3];
    int64_t chunk = ((int64_t)8 << 20) / K;
    if (chunk < 64) chunk = 64;
    if (chunk > HW) chunk = HW;
    float *col = malloc((size_t)chunk * K * sizeof(float));
    if (!col) return dit_set_error(DIT_ERR_NOMEM, "out of memory (conv im2col)");
    int rc = DIT_OK;
    for (int64_t p0 = 0; p0 < HW && !rc; p0 += chunk) {
        const int64_t mc = HW - p0 < chunk ? HW - p0 : chunk;
#pragma omp parallel for num_threads(threads_for(nt, (double)mc * K)) schedule(static)
        for (int64_t r = 0; r < mc; r++) {
            const int y = (int)((p0 + r) / W), x = (int)((p0 + r) % W);
            float *dst = col + r * K;
            for (int ky = 0; ky < 3; ky++)
                for (int kx = 0; kx < 3; kx++, dst += cin) {
                    const int sy = y + ky - 1, sx = x + kx - 1;
                    if (sy < 0 || sy >= H || sx < 0 || sx >= W) memset(dst, 0, cin * sizeof(float));
                    else memcpy(dst, in + ((int64_t)sy * W + sx) * cin, cin * sizeof(float));
                }
        }
        rc = matmul_taps(out + p0 * cout, col, mc, w, b, 9, nt);
    }
    free(col);
    return rc;
}

/* ResnetBlock2D (§5.3): h = conv1(SiLU(GN1(x))); h = conv2(SiLU(GN2(h))); out = shortcut(x) + h,
   shortcut = 1x1 conv when cin != cout. x (HW, cin) -> *out (HW, cout), malloc'd. */
static int vae_resnet(float **out, const float *x, int H, int W, const dit_vae_resnet *r, int G, int nt)
{
    const int64_t HW = (int64_t)H * W;
    const int cin = r->in_ch, cout = r->out_ch, cmax = cin > cout ? cin : cout;
    float *t = malloc((size_t)HW * cmax * sizeof(float)), *h = malloc((size_t)HW * cout * sizeof(float));
    float *o = malloc((size_t)HW * cout * sizeof(float));
    int rc;
    if (!t || !h || !o) {
        rc = dit_set_error(DIT_ERR_NOMEM, "out of memory (VAE resnet at %dx%d)", H, W);
        goto fail;
    }
    if ((rc = group_norm(t, x, HW, cin, G, &r->norm1_w, &r->norm1_b, 1, nt)) ||
        (rc = conv3x3(h, t, H, W, cin, &r->conv1_w, &r->conv1_b, nt)) ||
        (rc = group_norm(t, h, HW, cout, G, &r->norm2_w, &r->norm2_b, 1, nt)) ||
        (rc = conv3x3(o, t, H, W, cout, &r->conv2_w, &r->conv2_b, nt)))
        goto fail;
    if (r->short_w.data) {
        if ((rc = matmul(h, x, HW, &r->short_w, &r->short_b, nt))) goto fail;
        for (int64_t i = 0; i < HW * cout; i++) o[i] = h[i] + o[i];
    } else {
        for (int64_t i = 0; i < HW * cout; i++) o[i] = x[i] + o[i];
    }
    free(t);
    free(h);
    *out = o;
    return DIT_OK;
fail:
    free(t);
    free(h);
    free(o);
    return rc;
}

/* Mid-block attention (§5.4): x (HW, C) += to_out(softmax(q k^T / sqrt(C)) v), q, k, v = Linear(GN(x)); one head. */
static int vae_attention(float *x, int64_t HW, int C, const dit_vae *v, int G, int nt)
{
    float *xn = malloc((size_t)HW * C * sizeof(float)), *q = malloc((size_t)HW * C * sizeof(float));
    float *k = malloc((size_t)HW * C * sizeof(float)), *vv = malloc((size_t)HW * C * sizeof(float));
    int rc;
    if (!xn || !q || !k || !vv) {
        rc = dit_set_error(DIT_ERR_NOMEM, "out of memory (VAE attention)");
        goto done;
    }
    if ((rc = group_norm(xn, x, HW, C, G, &v->attn_norm_w, &v->attn_norm_b, 0, nt)) ||
        (rc = matmul(q, xn, HW, &v->attn_q_w, &v->attn_q_b, nt)) ||
        (rc = matmul(k, xn, HW, &v->attn_k_w, &v->attn_k_b, nt)) ||
        (rc = matmul(vv, xn, HW, &v->attn_v_w, &v->attn_v_b, nt)) ||
        (rc = attention(xn, C, 0, q, k, vv, C, 0, 1, (int)HW, 1, C, (float)(1.0 / sqrt((double)C)), nt)) ||
        (rc = matmul(q, xn, HW, &v->attn_o_w, &v->attn_o_b, nt)))
        goto done;
    for (int64_t i = 0; i < HW * C; i++) x[i] += q[i];
done:
    free(xn); free(q); free(k); free(vv);
    return rc;
}

/* One latent (C, L, L) -> image (out_ch, S, S), S = L * 2^(blocks-1) (§5.2). */
static int vae_decode_one(const dit_model *m, const float *z, float *img, int nt)
{
    const dit_config *cf = &m->cfg;
    const dit_vae *v = &m->vae;
    const int G = cf->vae_groups, nb = cf->vae_n_blocks, zc = cf->vae_latent_channels;
    int H = cf->input_size, W = cf->input_size, C = cf->vae_block_out[nb - 1];
    int rc = DIT_OK;
    float *x = malloc((size_t)H * W * zc * sizeof(float)), *y = NULL, *t = NULL;
    if (!x || !(y = malloc((size_t)H * W * zc * sizeof(float)))) goto nomem;
    /* latents / scaling_factor, as PyTorch computes it: x * (1/sf) with the fp32 reciprocal (§6 pitfall 14);
       CHW -> HWC */
    const float inv = 1.0f / cf->vae_scaling_factor;
    for (int c = 0; c < zc; c++)
        for (int i = 0; i < H * W; i++) x[(int64_t)i * zc + c] = z[(int64_t)c * H * W + i] * inv;
    if ((rc = matmul(y, x, (int64_t)H * W, &v->pq_w, &v->pq_b, nt))) goto done;   /* post_quant_conv 1x1 */
    free(x);
    if (!(x = malloc((size_t)H * W * C * sizeof(float)))) goto nomem;
    if ((rc = conv3x3(x, y, H, W, zc, &v->conv_in_w, &v->conv_in_b, nt))) goto done;   /* conv_in */
    free(y);
    y = NULL;
    /* mid: resnet, attention, resnet */
    if ((rc = vae_resnet(&y, x, H, W, &v->mid[0], G, nt))) goto done;
    free(x);
    x = y;
    y = NULL;
    if ((rc = vae_attention(x, (int64_t)H * W, C, v, G, nt))) goto done;
    if ((rc = vae_resnet(&y, x, H, W, &v->mid[1], G, nt))) goto done;
    free(x);
    x = y;
    y = NULL;
    /* up blocks: layers_per_block + 1 resnets, then nearest x2 + conv 3x3 except in the last block */
    for (int i = 0; i < nb; i++) {
        for (int j = 0; j <= cf->vae_layers_per_block; j++) {
            if ((rc = vae_resnet(&y, x, H, W, &v->up[i][j], G, nt))) goto done;
            free(x);
            x = y;
            y = NULL;
            C = v->up[i][j].out_ch;
        }
        if (v->up_conv_w[i].data) {
            if (!(t = malloc((size_t)4 * H * W * C * sizeof(float)))) goto nomem;
            for (int yy = 0; yy < 2 * H; yy++)
                for (int xx = 0; xx < 2 * W; xx++)
                    memcpy(t + ((int64_t)yy * 2 * W + xx) * C, x + ((int64_t)(yy / 2) * W + xx / 2) * C, C * sizeof(float));
            H *= 2;
            W *= 2;
            free(x);
            if (!(x = malloc((size_t)H * W * C * sizeof(float)))) goto nomem;
            if ((rc = conv3x3(x, t, H, W, C, &v->up_conv_w[i], &v->up_conv_b[i], nt))) goto done;
            free(t);
            t = NULL;
        }
    }
    /* conv_norm_out (GN + SiLU) and conv_out */
    const int oc = cf->vae_out_channels;
    if (!(t = malloc((size_t)H * W * C * sizeof(float))) || !(y = malloc((size_t)H * W * oc * sizeof(float)))) goto nomem;
    if ((rc = group_norm(t, x, (int64_t)H * W, C, G, &v->norm_out_w, &v->norm_out_b, 1, nt)) ||
        (rc = conv3x3(y, t, H, W, C, &v->conv_out_w, &v->conv_out_b, nt)))
        goto done;
    for (int c = 0; c < oc; c++)   /* HWC -> CHW */
        for (int64_t i = 0; i < (int64_t)H * W; i++) img[(int64_t)c * H * W + i] = y[i * oc + c];
    goto done;
nomem:
    rc = dit_set_error(DIT_ERR_NOMEM, "out of memory (VAE decode)");
done:
    free(x);
    free(y);
    free(t);
    return rc;
}

int dit_decode(dit_model *m, const float *latents, int n, float *images, int threads)
{
    if (!m || !latents || !images || n < 1) return dit_set_error(DIT_ERR_INPUT, "dit_decode: bad arguments");
    const size_t lat = dit_latent_floats(m), img = dit_image_floats(m);
    for (int i = 0; i < n; i++)
        if (!all_finite(latents + i * lat, lat))
            return dit_set_error(DIT_ERR_INPUT, "dit_decode: latents of image %d hold NaN or Inf", i);
    if (!m->cfg.has_vae) {
        memcpy(images, latents, (size_t)n * lat * sizeof(float));
        return DIT_OK;
    }
    for (int i = 0; i < n; i++) {
        int rc = vae_decode_one(m, latents + i * lat, images + i * img, n_threads(threads));
        if (rc) return rc;
    }
    return DIT_OK;
}

/* ==== PNG ==== */

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#pragma GCC diagnostic pop

typedef struct {
    unsigned char *p;
    size_t n, cap;
    int err;
} png_buf;

static void png_buf_write(void *ctx, void *data, int size)
{
    png_buf *b = ctx;
    if (b->err || size <= 0) return;
    if (b->n + size > b->cap) {
        size_t cap = (b->n + size) * 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            b->err = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, size);
    b->n += size;
}

/* torchvision save_image(normalize=True, value_range=(-1, 1)): clamp(-1, 1), (x + 1) / 2 (make_grid), then
   mul(255).add_(0.5).clamp_(0, 255).to(uint8): each op rounded separately in fp32, then truncation. */
static unsigned char pixel_u8(float x)
{
    if (!(x >= -1.0f)) x = -1.0f;   /* also NaN -> -1 -> 0 */
    if (x > 1.0f) x = 1.0f;
    volatile float v = (x + 1.0f) / 2.0f;   /* volatile: no FMA contraction of *255 + 0.5 */
    v = v * 255.0f;
    float u = v + 0.5f;
    u = u < 0.0f ? 0.0f : u > 255.0f ? 255.0f : u;
    return (unsigned char)u;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

int dit_png_write(const char *path, const float *img, int C, int H, int W, const char *parameters)
{
    if (!path || !img || (C != 1 && C != 3) || H < 1 || W < 1 || (int64_t)H * W > (1 << 28))
        return dit_set_error(DIT_ERR_INPUT, "dit_png_write: bad image (C=%d, %dx%d)", C, H, W);
    unsigned char *px = malloc((size_t)H * W * C);
    if (!px) return dit_set_error(DIT_ERR_NOMEM, "out of memory (PNG %dx%d)", W, H);
    for (int c = 0; c < C; c++)   /* CHW float -> HWC bytes */
        for (int64_t i = 0; i < (int64_t)H * W; i++) px[i * C + c] = pixel_u8(img[(int64_t)c * H * W + i]);
    png_buf b = { 0 };
    int ok = stbi_write_png_to_func(png_buf_write, &b, W, H, C, px, W * C);
    free(px);
    if (!ok || b.err || b.n < 33 || memcmp(b.p + 12, "IHDR", 4)) {
        free(b.p);
        return dit_set_error(DIT_ERR_NOMEM, "%s: PNG encoding failed", path);
    }
    /* tEXt chunk "parameters\0<text>" right after IHDR (8 signature + 25 IHDR bytes), as sd.cpp / A1111 */
    unsigned char *chunk = NULL;
    size_t clen = 0;
    if (parameters) {
        const size_t tl = strlen(parameters), dl = 11 + tl;
        if (dl > 0x7fffffff || !(chunk = malloc(12 + dl))) {
            free(b.p);
            return dit_set_error(DIT_ERR_NOMEM, "out of memory (PNG text)");
        }
        put_be32(chunk, (uint32_t)dl);
        memcpy(chunk + 4, "tEXtparameters", 15);   /* type, keyword and its NUL */
        memcpy(chunk + 19, parameters, tl);
        put_be32(chunk + 8 + dl, (uint32_t)crc32(crc32(0L, Z_NULL, 0), chunk + 4, (uInt)(4 + dl)));
        clen = 12 + dl;
    }
    dit_atomic_file a;
    int rc = dit_atomic_open(&a, path);
    if (rc == DIT_OK) {
        if (fwrite(b.p, 1, 33, a.f) != 33 || (clen && fwrite(chunk, 1, clen, a.f) != clen) ||
            fwrite(b.p + 33, 1, b.n - 33, a.f) != b.n - 33) {
            dit_atomic_abort(&a);
            rc = dit_set_error(DIT_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        } else {
            rc = dit_atomic_commit(&a);
        }
    }
    free(b.p);
    free(chunk);
    return rc;
}
