/* test_cuda.c - the CUDA backend (ggml-cuda/) against the CPU runtime and the float64 fixtures.

   bin/tests/test_cuda [--quick | --race | --parallel] [MODELDIR]
     Per-op checks (Philox, dequantize, GEMM + epilogues, attention, VAE convs, sampler step) against CPU code in
     this file, then end to end against the CPU path (dit_forward, dit_sample DDPM/DDIM, dit_decode)
     on the fixture models (converted with bin/dit-convert, as test_runtime does, or read from
     MODELDIR) and on random-weight models of DiT-B and DiT-XL width. --quick: fixtures only (for
     compute-sanitizer memcheck); --race: attention, one forward, a 3-step sample and a decode (racecheck);
     --parallel: the several-GPU checks alone (every plan == one GPU; faults). Prints "ok - cuda # SKIP
     ..." and exits 0 without a GPU or a CUDA build; the several-GPU checks skip with fewer than 2 GPUs.

   bin/tests/test_cuda --opbench
     Per-op timings on DiT-XL shapes: GEMM epilogue / bias-type variants (heuristic vs autotuned),
     attention at T 256 and 1024, LayerNorm + modulate, q8_0 dequantize.

   bin/tests/test_cuda --bench [--res 256|512] [--type f16|bf16|q8_0|q5_0|q4_0] [--n N] [--steps K]
                       [--reps R] [--depth D] [--model FILE.gguf] [--profile TRACE.json] [-v]
     Timing harness (no pass/fail): DiT-XL/2 shapes with random weights (or FILE.gguf), CFG batch 2N,
     graph replay; prints ms/step (median of R runs of K steps), the adaLN precompute, weight and peak
     memory, and the VAE decode time when the model has a VAE. --profile writes a Chrome trace of one
     op-by-op step (and a per-op table with -v).
     With --gpus G [--parallel FLAGS] [--seq-mode 1|2] (FLAGS: DIT_PAR_* bits, data 1, cfg 2, seq 4; none:
     auto): ms/step of whole dit_sample calls on G GPUs, and the NCCL time per step from a profile
     (GPU 0's per-op table with -v).

   bin/tests/test_cuda --churn N
     Stress (2+ GPUs): N rounds of group setup, a 2-step sample and teardown over the 2-GPU plans.

   Tolerances (fp16 operands, fp32 accumulation; one fp16 rounding is 2^-11 = 4.9e-4 relative):
     Philox normals     1e-6 absolute    double math both sides, one rounding to fp32
     dequantize         1e-6 x max|w|    same formula, FMA contraction may differ by 1 ulp
     GEMM (+GELU)       2e-3 x sum|x||w| exact fp16 inputs on both sides: only fp32 accumulation order
                                         and the fp16 output rounding of the GELU path remain
     attention          4e-3 x max|o|    P and the output are rounded to fp16 (2 x 4.9e-4) plus the
                                         fp16 rounding of q, k, v done identically on both sides
     sampler step       2e-5 x max(1,|x|) fp32 both sides, FMA contraction and exp in double vs expf
     forward vs CPU     3e-2 x max|ref|  every GEMM input (activations and weights) is rounded to fp16:
                                         ~7e-4 per product, through 2-4 blocks plus LayerNorm
                                         amplification; bf16 operands (2^-8 = 3.9e-3): 1e-1
     10-step samplers   5e-2 x max|ref|  the forward error, carried through 10 steps
     VAE conv 3x3       1e-3 x max|ref|  same fp16 operands both sides (the GPU's SiLU may round an input
                                         1 ulp the other way): fp32 accumulation order remains
     VAE decode         3e-2 x max|ref|  fp16 conv operands through ~20 convolutions
     several GPUs       2e-2 x max|ref|  against one GPU: same fp16 roundings, but GEMMs of other row
                                         counts may take other cuBLASLt algorithms (see test_parallel)
   Each check prints the measured error, so the margin is visible. Timings are never asserted. */
#include "dit.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef DIT_CUDA
#include <execinfo.h>
#include <signal.h>
#include "ggml-cuda/dit-cuda.h"

#include "tap.h"   /* ok(), skip(), fix(), mpath(), failures, FIX, moddir, tmpdir */

/* ---------------------------------------------------------------- random numbers, comparisons */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void)   /* [0, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static float frand(float a) { return (float)((2.0 * urand() - 1.0) * a); }   /* uniform [-a, a) */
static float f16r(float x) { return dit_fp16_to_fp32(dit_fp32_to_fp16(x)); }

typedef struct {
    double max_abs, max_ref, rel_l2;
    int nonfinite;
} cmp_t;

static cmp_t compare(const float *a, const float *ref, size_t n)
{
    cmp_t c = { 0, 0, 0, 0 };
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) { c.nonfinite++; continue; }
        double d = fabs((double)a[i] - ref[i]);
        if (d > c.max_abs) c.max_abs = d;
        if (fabs(ref[i]) > c.max_ref) c.max_ref = fabs(ref[i]);
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    c.rel_l2 = den > 0 ? sqrt(num / den) : sqrt(num);
    return c;
}

/* |a - ref| <= tol * max(1, max|ref|) elementwise, all finite */
static void check_close(const char *what, const float *a, const float *ref, size_t n, double tol)
{
    cmp_t c = compare(a, ref, n);
    const double lim = tol * (c.max_ref > 1 ? c.max_ref : 1);
    ok(c.nonfinite == 0 && c.max_abs <= lim, "%s: max |err| %.3g (limit %.3g, max |ref| %.3g, rel L2 %.3g)%s", what,
       c.max_abs, lim, c.max_ref, c.rel_l2, c.nonfinite ? ", NON-FINITE" : "");
}

/* ---------------------------------------------------------------- per-op tests */
static void test_philox(void)
{
    const uint64_t seeds[3] = { 0, 42, 0x123456789abcdefull };
    const size_t n = 1001;   /* not a multiple of 4: the last group is partial */
    float *g = malloc(n * 4), *c = malloc(n * 4);
    double worst = 0;
    int rc = DIT_OK;
    for (int s = 0; s < 3 && rc == DIT_OK; s++)
        for (uint32_t img = 0; img < 3 && rc == DIT_OK; img += 2)
            for (uint32_t step = 0; step < 300 && rc == DIT_OK; step += 137) {
                rc = dit_cuda_test_randn(seeds[s], img, step, g, n);
                dit_randn(seeds[s], img, step, c, n);
                for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)g[i] - c[i]));
            }
    ok(rc == DIT_OK && worst <= 1e-6, "Philox4x32-10 + Box-Muller on the GPU == dit_randn (max |diff| %.3g)%s%s", worst,
       rc ? ": " : "", rc ? dit_last_error() : "");
    free(g);
    free(c);
}

static void test_dequant(void)
{
    const int types[5] = { DIT_TYPE_Q8_0, DIT_TYPE_Q4_0, DIT_TYPE_Q5_0, DIT_TYPE_Q4_1, DIT_TYPE_Q5_1 };
    const int64_t rows = 37, cols = 96;
    float *w = malloc(rows * cols * 4), *ref = malloc(rows * cols * 4), *got = malloc(rows * cols * 4);
    void *q = malloc(dit_row_bytes(DIT_TYPE_Q8_0, cols) * rows);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = frand(1.0f) + (i % 7 == 0 ? 0.3f : 0.0f);
    for (int t = 0; t < 5; t++) {
        const size_t rb = dit_row_bytes(types[t], cols);
        for (int64_t r = 0; r < rows; r++) {
            dit_quantize_row(types[t], w + r * cols, (char *)q + r * rb, cols);
            dit_dequantize_row(types[t], (char *)q + r * rb, ref + r * cols, cols);
        }
        int rc = dit_cuda_test_dequant(types[t], q, rows, cols, got);
        cmp_t c = compare(got, ref, rows * cols);
        ok(rc == DIT_OK && c.nonfinite == 0 && c.max_abs <= 1e-6 * c.max_ref,
           "dequantize %s on the GPU == dit_dequantize_row (max |diff| %.3g)", dit_type_name(types[t]), c.max_abs);
    }
    free(w); free(ref); free(got); free(q);
}

/* max over the outputs of |y - (x W^T + b, GELU)| / (|b| + sum |x w|), in double; NaN propagates */
static double linear_err(const float *x, const float *w, const float *b, const float *y, int M, int N, int K, int gelu)
{
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = b[j], mag = fabs(b[j]);
            for (int k = 0; k < K; k++) {
                s += (double)x[i * K + k] * w[j * K + k];
                mag += fabs((double)x[i * K + k] * w[j * K + k]);
            }
            if (gelu) s = 0.5 * s * (1.0 + tanh(0.7978845608028654 * (s + 0.044715 * s * s * s)));
            const double e = fabs(y[i * N + j] - s) / mag;
            if (!(e <= worst)) worst = e;
        }
    return worst;
}

static void test_linear(void)
{
    const int M = 77, N = 136, K = 264;
    float *x = malloc(M * K * 4), *w = malloc(N * K * 4), *b = malloc(N * 4), *y = malloc(M * N * 4);
    for (int i = 0; i < M * K; i++) x[i] = f16r(frand(2.0f));
    for (int i = 0; i < N * K; i++) w[i] = f16r(frand(0.2f));
    for (int i = 0; i < N; i++) b[i] = frand(1.0f);
    for (int gelu = 0; gelu < 2; gelu++) {
        const int rc = dit_cuda_test_linear(x, w, b, M, N, K, DIT_TYPE_F16, gelu, y);
        const double worst = linear_err(x, w, b, y, M, N, K, gelu);
        ok(rc == DIT_OK && worst <= 2e-3, "cuBLASLt fp16 GEMM + bias%s == double reference (max err / sum|x w| %.3g)",
           gelu ? " + tanh-GELU" : "", worst);
    }
    /* the fp32 kernel (timestep MLP): each output is ~K/32 fmas per lane, 5 shuffle adds and the bias, so its
       error is at most ~(K/32 + 7) 2^-24 sum|x w| (1e-6 here); 2e-6 allows twice that */
    for (int i = 0; i < M * K; i++) x[i] = frand(2.0f);
    for (int i = 0; i < N * K; i++) w[i] = frand(0.2f);
    const int rc = dit_cuda_test_linear(x, w, b, M, N, K, DIT_TYPE_F32, 0, y);
    const double worst = linear_err(x, w, b, y, M, N, K, 0);
    ok(rc == DIT_OK && worst <= 2e-6, "fp32 linear kernel + bias == double reference (max err / sum|x w| %.3g)", worst);
    free(x); free(w); free(b); free(y);
}

static float bf16r(float x) { return dit_bf16_to_fp32(dit_fp32_to_bf16(x)); }

/* tolerance 4e-3 x max|o| (fp16), 3e-2 (bf16: 2^-8 per rounding instead of 2^-11) */
static void test_attention(int B, int T, int H, int hd, int ct)
{
    const int D = H * hd;
    const size_t nq = (size_t)B * T * 3 * D, no = (size_t)B * T * D;
    float *qkv = malloc(nq * 4), *o = malloc(no * 4), *ref = malloc(no * 4);
    double *s = malloc(T * sizeof(double));
    for (size_t i = 0; i < nq; i++) qkv[i] = (ct == DIT_TYPE_BF16 ? bf16r : f16r)(frand(2.5f));
    const double scale = 1.0 / sqrt((double)hd);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                const float *q = qkv + ((size_t)b * T + i) * 3 * D + h * hd;
                double mx = -1e300, sum = 0;
                for (int j = 0; j < T; j++) {
                    const float *k = qkv + ((size_t)b * T + j) * 3 * D + D + h * hd;
                    double d = 0;
                    for (int e = 0; e < hd; e++) d += (double)q[e] * k[e];
                    s[j] = d * scale;
                    if (s[j] > mx) mx = s[j];
                }
                for (int j = 0; j < T; j++) sum += (s[j] = exp(s[j] - mx));
                for (int e = 0; e < hd; e++) {
                    double acc = 0;
                    for (int j = 0; j < T; j++) acc += s[j] * qkv[((size_t)b * T + j) * 3 * D + 2 * D + h * hd + e];
                    ref[((size_t)b * T + i) * D + h * hd + e] = (float)(acc / sum);
                }
            }
    /* every kernel variant: mma.sync with 16 and 32 query rows per warp, wgmma (the launcher picks one by
       grid size and GPU) */
    const double tol = ct == DIT_TYPE_BF16 ? 3e-2 : 4e-3;
    for (int mt = 1; mt <= 3; mt++) {
        const char *name[3] = { "16 rows per warp", "32 rows per warp", "wgmma" };
        char what[160];
        snprintf(what, sizeof what, "flash attention %s B %d T %d H %d hd %d, %s", dit_type_name(ct), B, T, H, hd,
                 name[mt - 1]);
        if (mt == 3 && !dit_cuda_has_wgmma()) {
            skip(what, "no wgmma here (an sm_90a build on a compute capability 9.0 GPU)");
            continue;
        }
        setenv("DIT_CUDA_ATT_MT", mt == 1 ? "1" : mt == 2 ? "2" : "3", 1);
        int rc = dit_cuda_test_attention(qkv, B, T, H, hd, ct, o);
        unsetenv("DIT_CUDA_ATT_MT");
        cmp_t c = compare(o, ref, no);
        ok(rc == DIT_OK && c.nonfinite == 0 && c.max_abs <= tol * c.max_ref,
           "%s == double reference (max |err| %.3g, max |ref| %.3g)%s", what, c.max_abs, c.max_ref,
           c.nonfinite ? ", NON-FINITE or unwritten" : "");
    }
    free(qkv); free(o); free(ref); free(s);
}

/* VAE 3x3 conv (padding 1) of SiLU(x * a + b) (gn) over the nearest 2^up upsample of x, both GPU paths
   (implicit GEMM, im2col + cuBLASLt) against a double reference on the same fp16-rounded operands */
static int conv3_ours_only;   /* --race: cuBLASLt's own kernels report benign WAR hazards (same value written) */
static void test_conv3(int cin, int cout, int H, int W, int up, int gn, int acc, int ct, int chunk_rows)
{
    float (*rnd)(float) = ct == DIT_TYPE_BF16 ? bf16r : f16r;
    const int h = H >> up, wd = W >> up;
    const size_t nx = (size_t)h * wd * cin, nw = (size_t)cout * cin * 9, ny = (size_t)H * W * cout;
    float *x = malloc(nx * 4), *w = malloc(nw * 4), *b = malloc(cout * 4), *ab = malloc(2 * cin * 4);
    float *in = malloc((size_t)H * W * cin * 4), *y0 = malloc(ny * 4), *ref = malloc(ny * 4), *y = malloc(ny * 4);
    const float ws = sqrtf(3.0f / (9 * cin));
    for (size_t i = 0; i < nx; i++) x[i] = frand(2.0f);
    for (size_t i = 0; i < nw; i++) w[i] = rnd(frand(ws));
    for (int i = 0; i < cout; i++) b[i] = frand(0.1f);
    for (int i = 0; i < cin; i++) { ab[i] = 1.0f + frand(0.3f); ab[cin + i] = frand(0.2f); }
    for (size_t i = 0; i < ny; i++) y0[i] = acc ? frand(1.0f) : 0.0f;
    for (int yy = 0; yy < H; yy++)   /* the conv input as the GPU rounds it */
        for (int xx = 0; xx < W; xx++)
            for (int c = 0; c < cin; c++) {
                float v = x[((size_t)(yy >> up) * wd + (xx >> up)) * cin + c];
                if (gn) { v = v * ab[c] + ab[cin + c]; v = v / (1.0f + expf(-v)); }
                in[((size_t)yy * W + xx) * cin + c] = rnd(v);
            }
    for (int yy = 0; yy < H; yy++)
        for (int xx = 0; xx < W; xx++)
            for (int co = 0; co < cout; co++) {
                double s = b[co];
                for (int t = 0; t < 9; t++) {
                    const int sy = yy + t / 3 - 1, sx = xx + t % 3 - 1;
                    if (sy < 0 || sy >= H || sx < 0 || sx >= W) continue;
                    const float *ip = in + ((size_t)sy * W + sx) * cin, *wp = w + (size_t)co * cin * 9 + t;
                    for (int c = 0; c < cin; c++) s += (double)ip[c] * wp[(size_t)c * 9];
                }
                const size_t o = ((size_t)yy * W + xx) * cout + co;
                ref[o] = (float)(s + y0[o]);
            }
    for (int implicit = 1; implicit >= conv3_ours_only; implicit--) {
        memcpy(y, y0, ny * 4);
        if (implicit && !dit_cuda_has_wgmma()) {
            skip("VAE conv3x3 implicit GEMM", "no wgmma here (an sm_90a build on a compute capability 9.0 GPU)");
            continue;
        }
        int rc = dit_cuda_test_conv3(x, w, b, gn ? ab : NULL, cin, cout, H, W, up, acc, implicit, ct, chunk_rows, y);
        cmp_t c = compare(y, ref, ny);
        ok(rc == DIT_OK && c.nonfinite == 0 && c.max_abs <= 1e-3 * c.max_ref,
           "VAE conv3x3 %s %s %d -> %d, %dx%d%s%s%s%s == double reference (max |err| %.3g, max |ref| %.3g)%s",
           implicit ? "implicit GEMM" : "im2col + cuBLASLt", dit_type_name(ct), cin, cout, H, W,
           up ? ", 2x upsample" : "", gn ? ", GroupNorm + SiLU" : "", acc ? ", += residual" : "",
           chunk_rows ? ", in chunks of rows" : "", c.max_abs, c.max_ref,
           rc ? dit_last_error() : c.nonfinite ? ", NON-FINITE or unwritten" : "");
    }
    free(x); free(w); free(b); free(ab); free(in); free(y0); free(ref); free(y);
}

/* CPU reference of one sampler iteration (§3.5-3.7, §1.11 guidance), fp32 as dit_runtime.c */
static void cpu_sampler_step(const dit_model *m, const dit_sample_params *p, const dit_schedule *s, int i,
                             const float *mo, float *x, const float *noise_all)
{
    const int C = m->cfg.in_channels, OC = m->cfg.out_channels, N = p->n, K = s->K, k = K - 1 - i;
    const size_t plane = (size_t)m->cfg.input_size * m->cfg.input_size, CLL = C * plane;
    const float sr = (float)s->sqrt_recip_alphas_cumprod[k], srm1 = (float)s->sqrt_recipm1_alphas_cumprod[k];
    const float c1 = (float)s->posterior_mean_coef1[k], c2 = (float)s->posterior_mean_coef2[k];
    const float max_log = (float)log(s->betas[k]), min_log = (float)s->posterior_log_variance_clipped[k];
    float *nz = malloc(CLL * 4);
    for (int n = 0; n < N; n++) {
        if (noise_all) memcpy(nz, noise_all + ((size_t)i * N + n) * CLL, CLL * 4);
        else dit_randn(p->seed, n, i + 1, nz, CLL);
        const float *cond = mo + (size_t)n * OC * plane, *unc = mo + (size_t)(N + n) * OC * plane;
        for (size_t e = 0; e < CLL; e++) {
            const int ch = (int)(e / plane);
            float eps = cond[e];
            if (ch < m->cfg.cfg_channels) eps = unc[e] + p->cfg_scale * (cond[e] - unc[e]);
            float *xp = x + n * CLL + e;
            float x0 = sr * *xp - srm1 * eps;
            if (p->sampler == DIT_SAMPLER_DPMPP_2M) {   /* first or last step only: no x0 of a step before */
                double A, B0, B1;
                dit_dpmpp2m_coefs(s, k, &A, &B0, &B1);
                *xp = (float)A * *xp + (float)B0 * x0;
            } else if (p->sampler == DIT_SAMPLER_DDIM) {
                double ab = s->alphas_cumprod[k], abp = s->alphas_cumprod_prev[k];
                double sg = (double)p->eta * sqrt((1 - abp) / (1 - ab)) * sqrt(1 - ab / abp);
                float eps2 = (sr * *xp - x0) / srm1;
                float xv = x0 * (float)sqrt(abp) + (float)sqrt(1 - abp - sg * sg) * eps2;
                if (k != 0 && p->eta != 0.0f) xv += (float)sg * nz[e];
                *xp = xv;
            } else {
                float mean = c1 * x0 + c2 * *xp;
                float frac = (cond[CLL + e] + 1.0f) / 2.0f;
                float lv = frac * max_log + (1.0f - frac) * min_log;
                *xp = k != 0 ? mean + expf(0.5f * lv) * nz[e] : mean;
            }
        }
    }
    free(nz);
}

static void test_sampler_step(dit_model *m)
{
    static dit_schedule s;
    const int N = 2, C = m->cfg.in_channels, OC = m->cfg.out_channels, L = m->cfg.input_size;
    const size_t CLL = (size_t)C * L * L;
    int labels[2] = { 1, 7 };
    float *mo = malloc(2 * N * OC * L * L * 4), *x = malloc(N * CLL * 4), *xg = malloc(N * CLL * 4);
    float *noise = malloc(10 * N * CLL * 4);
    for (size_t i = 0; i < 10 * N * CLL; i++) noise[i] = frand(2.0f);
    const struct { int sampler; const char *spacing; float eta; int user_noise; int i; } cases[] = {
        { DIT_SAMPLER_DDPM, "10", 0.0f, 0, 3 }, { DIT_SAMPLER_DDPM, "10", 0.0f, 1, 9 },
        { DIT_SAMPLER_DDIM, "ddim10", 0.0f, 0, 2 }, { DIT_SAMPLER_DDIM, "10", 1.0f, 1, 5 },
        { DIT_SAMPLER_DDIM, "10", 0.7f, 0, 0 }, { DIT_SAMPLER_DPMPP_2M, "linspace10", 0.0f, 0, 0 },
        { DIT_SAMPLER_DPMPP_2M, "10", 0.0f, 0, 9 },
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        dit_schedule_init(&s, cases[t].spacing);
        dit_sample_params p = dit_sample_params_default();
        p.n = N; p.labels = labels; p.sampler = cases[t].sampler; p.eta = cases[t].eta; p.seed = 1234 + t;
        p.cfg_scale = 3.5f;
        p.step_noise = cases[t].user_noise ? noise : NULL;
        for (size_t i = 0; i < (size_t)2 * N * OC * L * L; i++) mo[i] = frand(1.5f);
        for (size_t i = 0; i < N * CLL; i++) xg[i] = x[i] = frand(3.0f);
        int rc = dit_cuda_test_sampler(m, &p, &s, cases[t].i, mo, xg);
        cpu_sampler_step(m, &p, &s, cases[t].i, mo, x, p.step_noise);
        char what[160];
        snprintf(what, sizeof what, "sampler kernel %s eta %.1f iteration %d, %s noise == CPU step%s%s",
                 dit_sampler_name(cases[t].sampler), cases[t].eta, cases[t].i,
                 cases[t].user_noise ? "user" : "Philox", rc ? ": " : "", rc ? dit_last_error() : "");
        check_close(what, xg, x, N * CLL, 2e-5);
    }
    free(mo); free(x); free(xg); free(noise);
}

/* ---------------------------------------------------------------- end to end on the fixtures */
static void forward_vs_cpu(dit_model *m, const char *what, const float *x, const float *t, const int *y, int B,
                           double tol)
{
    const size_t n = (size_t)B * m->cfg.out_channels * m->cfg.input_size * m->cfg.input_size;
    float *g = malloc(n * 4), *c = malloc(n * 4);
    int rc = dit_cuda_forward(m, x, t, y, B, g);
    int rc2 = dit_forward(m, x, t, y, B, c, 0);
    if (rc || rc2) ok(0, "%s: %s", what, dit_last_error());
    else check_close(what, g, c, n, tol);
    free(g);
    free(c);
}

/* a GPU sample against ref (NULL: the CPU's); the GPU sample's return code */
static int sample_vs(dit_model *m, const char *what, dit_sample_params p, const float *ref, double tol)
{
    const size_t n = (size_t)p.n * dit_latent_floats(m);
    float *g = malloc(n * 4), *c = malloc(n * 4);
    p.backend = DIT_BACKEND_CUDA;
    int rc = dit_sample(m, &p, g);
    if (rc) {
        ok(0, "%s: %s", what, dit_last_error());
    } else if (ref) {
        check_close(what, g, ref, n, tol);
    } else {
        p.backend = DIT_BACKEND_CPU;
        rc = dit_sample(m, &p, c);
        if (rc) ok(0, "%s: CPU: %s", what, dit_last_error());
        else check_close(what, g, c, n, tol);
        rc = DIT_OK;   /* the GPU's sample ran */
    }
    free(g);
    free(c);
    return rc;
}

static void test_fixture_dit_s(void)
{
    dit_model *m = dit_model_load(mpath("dit_s.gguf"));
    ok(m != NULL, "load dit_s.gguf: %s", m ? "ok" : dit_last_error());
    if (!m) return;
    int rc = dit_cuda_init(m, 0);
    dit_cuda_info info;
    if (rc == DIT_OK) dit_cuda_get_info(m, &info);
    ok(rc == DIT_OK, "dit_cuda_init(dit_s): %s", rc ? dit_last_error() : info.device_name);
    if (rc) { dit_model_free(m); return; }
    ok(info.compute_type == DIT_TYPE_F16, "f32 file computes with fp16 GEMM operands (%s)", dit_type_name(info.compute_type));
    printf("# cuBLASLt GELU epilogue is the tanh form: %s; weights %.2f MB, arena %.2f MB\n",
           info.gelu_epilogue ? "yes (used)" : "no (own kernel)", info.weight_bytes / 1e6, info.arena_bytes / 1e6);

    float *fx = fix("fwd_x", 2 * 4 * 64), *ft = fix("fwd_t", 2), *fy = fix("fwd_y", 2), *fo = fix("fwd_out", 2 * 8 * 64);
    float *cx = fix("cfg_t", 4), *cy = fix("cfg_y", 4);
    if (fx && ft && fy && fo && cx && cy) {
        int y[2] = { (int)fy[0], (int)fy[1] };
        forward_vs_cpu(m, "dit_s forward (t 3, 999) GPU == CPU dit_forward", fx, ft, y, 2, 3e-2);
        float out[2 * 8 * 64];
        rc = dit_cuda_forward(m, fx, ft, y, 2, out);
        if (rc) ok(0, "dit_s forward: %s", dit_last_error());
        else check_close("dit_s forward GPU == float64 PyTorch fwd_out", out, fo, 2 * 8 * 64, 3e-2);
        /* B = 4 rows with distinct (t, y): the modulation row per batch row */
        float x4[4 * 4 * 64];
        memcpy(x4, fx, sizeof(float) * 2 * 4 * 64);
        memcpy(x4 + 2 * 4 * 64, fx, sizeof(float) * 2 * 4 * 64);
        int y4[4] = { (int)cy[0], (int)cy[1], (int)cy[2], (int)cy[3] };
        forward_vs_cpu(m, "dit_s forward B 4 (mixed t, null label) GPU == CPU", x4, cx, y4, 4, 3e-2);
    }
    free(fx); free(ft); free(fy); free(fo); free(cx); free(cy);

    test_sampler_step(m);

    /* whole samplers, user noise (fixtures) and Philox (CPU path) */
    float *init = fix("e2e_init", 2 * 256), *sn10 = fix("e2e_step_noise10", 10 * 2 * 256);
    float *lab = fix("e2e_labels", 2);
    float *r_ddpm = fix("ddpm10_out", 512), *r_ddim = fix("ddim10_out", 512), *r_eta = fix("ddim10_eta1_out", 512);
    float *r_phil = fix("philox_ddpm10_out", 512), *pinit = fix("philox_init", 512);
    float *r_dpm = fix("dpmpp2m10_out", 512), *r_nocfg = fix("ddpm10_nocfg_out", 512);
    if (init && sn10 && lab && r_ddpm && r_ddim && r_eta && r_phil && pinit && r_dpm && r_nocfg) {
        int labels[2] = { (int)lab[0], (int)lab[1] };
        dit_sample_params p = dit_sample_params_default();
        p.n = 2; p.labels = labels; p.steps = 10; p.init_noise = init; p.step_noise = sn10;
        sample_vs(m, "dit_s DDPM 10 steps, cfg 4, user noise: GPU == float64 ddpm10_out", p, r_ddpm, 5e-2);
        sample_vs(m, "dit_s DDPM 10 steps: GPU == CPU dit_sample", p, NULL, 5e-2);
        p.sampler = DIT_SAMPLER_DDIM; p.spacing = "ddim10"; p.eta = 0.0f; p.step_noise = NULL;
        sample_vs(m, "dit_s DDIM 10 steps eta 0: GPU == float64 ddim10_out", p, r_ddim, 5e-2);
        p.eta = 1.0f; p.step_noise = sn10;
        sample_vs(m, "dit_s DDIM 10 steps eta 1, user noise: GPU == float64 ddim10_eta1_out", p, r_eta, 5e-2);
        p.sampler = DIT_SAMPLER_DPMPP_2M; p.spacing = NULL; p.eta = 0.0f; p.step_noise = NULL;
        sample_vs(m, "dit_s DPM++2M 10 steps (linspace10): GPU == float64 dpmpp2m10_out", p, r_dpm, 5e-2);
        p.init_noise = NULL; p.steps = 25; p.seed = 5;   /* graph replays with the second-order term */
        sample_vs(m, "dit_s DPM++2M 25 steps, Philox seed 5: GPU == CPU dit_sample", p, NULL, 5e-2);
        p.sampler = DIT_SAMPLER_DDPM; p.steps = 10; p.init_noise = init; p.step_noise = sn10; p.no_cfg = 1;
        p.cfg_scale = 1.0f;
        sample_vs(m, "dit_s DDPM 10 steps without the CFG batch: GPU == float64 ddpm10_nocfg_out", p, r_nocfg, 5e-2);
        dit_sample_params q = dit_sample_params_default();
        q.n = 2; q.labels = labels; q.steps = 10; q.seed = 42;
        sample_vs(m, "dit_s DDPM 10 steps, Philox seed 42 (GPU noise): GPU == float64 philox_ddpm10_out", q, r_phil,
                  5e-2);
        q.seed = 7; q.steps = 25;
        sample_vs(m, "dit_s DDPM 25 steps, Philox seed 7: GPU == CPU dit_sample", q, NULL, 5e-2);

        /* determinism, graph replay == eager, modulation chunks */
        const size_t n = 2 * 256;
        float *a = malloc(n * 4), *b = malloc(n * 4);
        q.backend = DIT_BACKEND_CUDA;
        int r1 = dit_sample(m, &q, a), r2 = dit_sample(m, &q, b);
        ok(!r1 && !r2 && memcmp(a, b, n * 4) == 0, "two GPU runs are bitwise identical");
        setenv("DIT_CUDA_MOD_MB", "0.0001", 1);   /* one step per modulation chunk */
        r2 = dit_sample(m, &q, b);
        unsetenv("DIT_CUDA_MOD_MB");
        /* other GEMM row counts pick other cuBLASLt algorithms (another summation order), amplified by 25
           DDPM steps: measured 2.6e-5 x max|ref| on an H100 */
        check_close("modulation precomputed one step per chunk == all steps in one chunk", b, a, n, 2e-4);
        /* graph vs eager in two inits: GEMM autotuning off, so both pick the same algorithms */
        setenv("DIT_CUDA_TUNE", "0", 1);
        dit_cuda_free(m);
        r1 = dit_sample(m, &q, a);
        dit_cuda_free(m);
        setenv("DIT_CUDA_GRAPH", "0", 1);
        r2 = dit_sample(m, &q, b);   /* re-initializes without graphs */
        unsetenv("DIT_CUDA_GRAPH");
        unsetenv("DIT_CUDA_TUNE");
        ok(!r1 && !r2 && memcmp(a, b, n * 4) == 0, "eager steps == CUDA graph replay, bitwise");
        dit_cuda_free(m);
        free(a);
        free(b);
    } else {
        ok(0, "sampler fixtures missing");
    }
    free(init); free(sn10); free(lab); free(r_ddpm); free(r_ddim); free(r_eta); free(r_phil); free(pinit); free(r_dpm); free(r_nocfg);

    /* VAE */
    float *vi = fix("vae_in", 256), *vo = fix("vae_out", 3 * 64 * 64);
    if (vi && vo && m->cfg.has_vae) {
        float *g = malloc(3 * 64 * 64 * 4), *c = malloc(3 * 64 * 64 * 4);
        rc = dit_cuda_decode(m, vi, 1, g);
        int rc2 = dit_decode(m, vi, 1, c, 0);
        if (rc || rc2) ok(0, "VAE decode: %s", dit_last_error());
        else {
            check_close("VAE decode GPU == CPU dit_decode", g, c, 3 * 64 * 64, 3e-2);
            check_close("VAE decode GPU == float64 vae_out", g, vo, 3 * 64 * 64, 3e-2);
            /* later decodes replay a CUDA graph (captured on this call): same bits as the eager decode above,
               and each image's own latents (image 1 is another latent) */
            float *l3 = malloc(3 * 256 * 4), *g3 = malloc(3 * 3 * 64 * 64 * 4);
            for (int i = 0; i < 256; i++) { l3[i] = l3[512 + i] = vi[i]; l3[256 + i] = -0.5f * vi[i]; }
            rc = dit_cuda_decode(m, l3, 3, g3);
            rc2 = rc ? rc : dit_decode(m, l3 + 256, 1, c, 0);
            if (rc || rc2) ok(0, "VAE decode, graph: %s", dit_last_error());
            else {
                double d0 = 0, d2 = 0;
                for (int i = 0; i < 3 * 64 * 64; i++) {
                    d0 = fmax(d0, fabs(g3[i] - g[i]));
                    d2 = fmax(d2, fabs(g3[2 * 3 * 64 * 64 + i] - g3[i]));
                }
                ok(memcmp(g3, g, 3 * 64 * 64 * 4) == 0 && memcmp(g3 + 2 * 3 * 64 * 64, g, 3 * 64 * 64 * 4) == 0,
                   "VAE decode: graph replay == eager decode, bitwise (max |diff| %.3g; image 2 vs 0: %.3g)", d0, d2);
                check_close("VAE decode: graph replay, another latent == CPU", g3 + 3 * 64 * 64, c, 3 * 64 * 64, 3e-2);
            }
            free(l3);
            free(g3);
            /* the fixture's convs are too small for auto to pick the implicit GEMM: forced here (its 64-channel
               convs; 32 channels take im2col), eagerly and then from the captured graph */
            if (!dit_cuda_has_wgmma()) {
                skip("VAE decode, implicit-GEMM convs", "no wgmma (an sm_90a build on a compute capability 9.0 GPU)");
            } else {
                float *g2 = malloc(3 * 64 * 64 * 4);
                dit_cuda_free(m);
                setenv("DIT_VAE_CONV", "implicit", 1);
                rc = dit_cuda_decode(m, vi, 1, g);
                if (!rc) rc = dit_cuda_decode(m, vi, 1, g2);
                unsetenv("DIT_VAE_CONV");
                dit_cuda_free(m);
                if (rc) ok(0, "VAE decode, implicit-GEMM convs: %s", dit_last_error());
                else {
                    check_close("VAE decode, implicit-GEMM convs: GPU == float64 vae_out", g, vo, 3 * 64 * 64, 3e-2);
                    ok(memcmp(g, g2, 3 * 64 * 64 * 4) == 0,
                       "VAE decode, implicit-GEMM convs: graph replay == eager, bitwise");
                }
                free(g2);
            }
            if (!m->cuda && dit_cuda_init(m, 0)) ok(0, "cuda init: %s", dit_last_error());   /* the checks below */
        }
        free(g);
        free(c);
    } else {
        ok(0, "VAE fixture missing or dit_s.gguf has no VAE");
    }
    free(vi); free(vo);

    /* profiling trace of one forward */
    char tp[300];
    snprintf(tp, sizeof tp, "%s/trace.json", tmpdir);
    float *x = calloc(2 * 256, 4), *o = malloc(2 * 512 * 4);
    float t[2] = { 10, 500 };
    int y[2] = { 0, 10 };
    for (int i = 0; i < 512; i++) x[i] = frand(1.0f);
    rc = dit_cuda_profile_begin(m);
    if (!rc) rc = dit_cuda_forward(m, x, t, y, 2, o);
    FILE *sum = tmpfile();
    if (!rc) rc = dit_cuda_profile_end(m, tp, sum);
    long sz = sum ? ftell(sum) : 0;
    FILE *f = fopen(tp, "r");
    char head[64] = { 0 };
    if (f) { if (!fgets(head, sizeof head, f)) head[0] = 0; fclose(f); }
    ok(!rc && strstr(head, "traceEvents") && sz > 100, "--profile: Chrome trace (%s) and per-op summary (%ld bytes)%s%s",
       head[0] ? "written" : "missing", sz, rc ? ": " : "", rc ? dit_last_error() : "");
    if (sum) fclose(sum);
    free(x); free(o);
    dit_model_free(m);
}

static void test_fixture_other(const char *file, const char *what, const char *xname, int C, double tol)
{
    dit_model *m = dit_model_load(mpath(file));
    if (!m) { ok(0, "load %s: %s", file, dit_last_error()); return; }
    const int L = m->cfg.input_size;
    float *x = fix(xname, (size_t)2 * C * L * L), *t = fix("fwd_t", 2), *fy = fix("fwd_y", 2);
    if (x && t && fy) {
        int y[2] = { (int)fy[0], (int)fy[1] };
        forward_vs_cpu(m, what, x, t, y, 2, tol);
    }
    free(x); free(t); free(fy);
    dit_model_free(m);
}

/* ---------------------------------------------------------------- random-weight models */
typedef struct {
    dit_model m;
    void *mem[512];
    int n_mem;
} rmodel;

static void rt(rmodel *r, dit_tensor *t, const char *name, int type, int64_t n0, int64_t n1, int64_t n2, float a)
{
    const int64_t n = n0 * n1 * n2;
    t->type = type;
    t->n_dims = n2 > 1 ? 3 : n1 > 1 ? 2 : 1;
    t->ne[0] = n0; t->ne[1] = n1; t->ne[2] = n2; t->ne[3] = 1;
    t->name = name;
    float *f = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) f[i] = frand(a);
    if (type == DIT_TYPE_F32) {
        t->data = f;
        r->mem[r->n_mem++] = f;
        return;
    }
    void *d = malloc(dit_row_bytes(type, n0) * (size_t)(n / n0));
    if (type == DIT_TYPE_F16 || type == DIT_TYPE_BF16) {
        uint16_t *h = d;
        for (int64_t i = 0; i < n; i++) h[i] = type == DIT_TYPE_F16 ? dit_fp32_to_fp16(f[i]) : dit_fp32_to_bf16(f[i]);
    } else {
        const size_t rb = dit_row_bytes(type, n0);
        for (int64_t rr = 0; rr < n / n0; rr++) dit_quantize_row(type, f + rr * n0, (char *)d + rr * rb, n0);
    }
    free(f);
    t->data = d;
    r->mem[r->n_mem++] = d;
}

/* DiT with random weights: uniform(+-sqrt(3/in)) matrices (unit-variance outputs), small adaLN so the
   modulation stays O(0.1), label table and biases O(0.1). wtype for the block / final matrices. */
static rmodel *random_dit(int depth, int D, int heads, int L, int wtype)
{
    rmodel *r = calloc(1, sizeof *r);
    dit_model *m = &r->m;
    dit_config *k = &m->cfg;
    k->depth = depth; k->hidden = D; k->heads = heads; k->patch = 2; k->input_size = L; k->in_channels = 4;
    k->out_channels = 8; k->learn_sigma = 1; k->num_classes = 1000; k->mlp_hidden = 4 * D; k->cfg_channels = 3;
    m->name = "random";
    const int T = (L / 2) * (L / 2), F = 4 * D;
    dit_weights *w = &m->w;
    const float sD = sqrtf(3.0f / D), sF = sqrtf(3.0f / F);
    rt(r, &w->pos_embed, "pos_embed", DIT_TYPE_F32, D, T, 1, 0.5f);
    rt(r, &w->x_emb_w, "x_emb_w", DIT_TYPE_F32, 2, 2, 4 * D, sqrtf(3.0f / 16));
    w->x_emb_w.ne[2] = 4; w->x_emb_w.ne[3] = D; w->x_emb_w.n_dims = 4;
    rt(r, &w->x_emb_b, "x_emb_b", DIT_TYPE_F32, D, 1, 1, 0.1f);
    rt(r, &w->t_fc1_w, "t_fc1_w", DIT_TYPE_F32, 256, D, 1, sqrtf(3.0f / 256));
    rt(r, &w->t_fc1_b, "t_fc1_b", DIT_TYPE_F32, D, 1, 1, 0.1f);
    rt(r, &w->t_fc2_w, "t_fc2_w", DIT_TYPE_F32, D, D, 1, sD);
    rt(r, &w->t_fc2_b, "t_fc2_b", DIT_TYPE_F32, D, 1, 1, 0.1f);
    rt(r, &w->y_table, "y_table", DIT_TYPE_F32, D, 1001, 1, 0.1f);
    w->blocks = calloc(depth, sizeof(dit_block));
    r->mem[r->n_mem++] = w->blocks;
    for (int l = 0; l < depth; l++) {
        dit_block *b = &w->blocks[l];
        rt(r, &b->qkv_w, "qkv_w", wtype, D, 3 * D, 1, sD);
        rt(r, &b->qkv_b, "qkv_b", DIT_TYPE_F32, 3 * D, 1, 1, 0.1f);
        rt(r, &b->proj_w, "proj_w", wtype, D, D, 1, sD);
        rt(r, &b->proj_b, "proj_b", DIT_TYPE_F32, D, 1, 1, 0.1f);
        rt(r, &b->fc1_w, "fc1_w", wtype, D, F, 1, sD);
        rt(r, &b->fc1_b, "fc1_b", DIT_TYPE_F32, F, 1, 1, 0.1f);
        rt(r, &b->fc2_w, "fc2_w", wtype, F, D, 1, sF);
        rt(r, &b->fc2_b, "fc2_b", DIT_TYPE_F32, D, 1, 1, 0.1f);
        rt(r, &b->ada_w, "ada_w", wtype, D, 6 * D, 1, 0.2f * sD);
        rt(r, &b->ada_b, "ada_b", DIT_TYPE_F32, 6 * D, 1, 1, 0.05f);
    }
    rt(r, &w->final_ada_w, "final_ada_w", wtype, D, 2 * D, 1, 0.2f * sD);
    rt(r, &w->final_ada_b, "final_ada_b", DIT_TYPE_F32, 2 * D, 1, 1, 0.05f);
    rt(r, &w->final_w, "final_w", wtype, D, 32, 1, sD);
    rt(r, &w->final_b, "final_b", DIT_TYPE_F32, 32, 1, 1, 0.1f);
    return r;
}

static void random_vae(rmodel *r, int wtype)
{
    dit_model *m = &r->m;
    dit_config *k = &m->cfg;
    dit_vae *v = &m->vae;
    static const int bo[4] = { 128, 256, 512, 512 };
    k->has_vae = 1; k->vae_latent_channels = 4; k->vae_out_channels = 3; k->vae_groups = 32;
    k->vae_layers_per_block = 2; k->vae_n_blocks = 4; k->vae_scaling_factor = 0.18215f;
    memcpy(k->vae_block_out, bo, sizeof bo);
#define CONV(t, b, ci, co, ks) do { rt(r, t, #t, wtype, ks, ks, (int64_t)(ci) * (co), sqrtf(3.0f / ((ci) * (ks) * (ks)))); \
        (t)->ne[2] = ci; (t)->ne[3] = co; (t)->n_dims = 4; rt(r, b, #b, DIT_TYPE_F32, co, 1, 1, 0.05f); } while (0)
#define NORM(wt, bt, ch) do { rt(r, wt, #wt, DIT_TYPE_F32, ch, 1, 1, 0.2f); for (int q_ = 0; q_ < ch; q_++) ((float *)(wt)->data)[q_] += 1.0f; \
        rt(r, bt, #bt, DIT_TYPE_F32, ch, 1, 1, 0.1f); } while (0)
    CONV(&v->pq_w, &v->pq_b, 4, 4, 1);
    CONV(&v->conv_in_w, &v->conv_in_b, 4, 512, 3);
    dit_vae_resnet *rs[2 + 12];
    int ins[14], outs[14], nr = 0;
    for (int i = 0; i < 2; i++) { rs[nr] = &v->mid[i]; ins[nr] = outs[nr] = 512; nr++; }
    int prev = 512;
    for (int i = 0; i < 4; i++) {
        const int ch = bo[3 - i];
        for (int j = 0; j < 3; j++) { rs[nr] = &v->up[i][j]; ins[nr] = j ? ch : prev; outs[nr] = ch; nr++; }
        if (i < 3) CONV(&v->up_conv_w[i], &v->up_conv_b[i], ch, ch, 3);
        prev = ch;
    }
    for (int i = 0; i < nr; i++) {
        dit_vae_resnet *q = rs[i];
        q->in_ch = ins[i]; q->out_ch = outs[i];
        NORM(&q->norm1_w, &q->norm1_b, ins[i]);
        CONV(&q->conv1_w, &q->conv1_b, ins[i], outs[i], 3);
        NORM(&q->norm2_w, &q->norm2_b, outs[i]);
        CONV(&q->conv2_w, &q->conv2_b, outs[i], outs[i], 3);
        if (ins[i] != outs[i]) CONV(&q->short_w, &q->short_b, ins[i], outs[i], 1);
    }
    NORM(&v->attn_norm_w, &v->attn_norm_b, 512);
    const float s5 = sqrtf(3.0f / 512);
    rt(r, &v->attn_q_w, "q", wtype, 512, 512, 1, s5); rt(r, &v->attn_q_b, "qb", DIT_TYPE_F32, 512, 1, 1, 0.05f);
    rt(r, &v->attn_k_w, "k", wtype, 512, 512, 1, s5); rt(r, &v->attn_k_b, "kb", DIT_TYPE_F32, 512, 1, 1, 0.05f);
    rt(r, &v->attn_v_w, "v", wtype, 512, 512, 1, s5); rt(r, &v->attn_v_b, "vb", DIT_TYPE_F32, 512, 1, 1, 0.05f);
    rt(r, &v->attn_o_w, "o", wtype, 512, 512, 1, s5); rt(r, &v->attn_o_b, "ob", DIT_TYPE_F32, 512, 1, 1, 0.05f);
    NORM(&v->norm_out_w, &v->norm_out_b, 128);
    CONV(&v->conv_out_w, &v->conv_out_b, 128, 3, 3);
#undef CONV
#undef NORM
}

static void rmodel_free(rmodel *r)
{
    if (!r) return;
    dit_cuda_free(&r->m);
    for (int i = 0; i < r->n_mem; i++) free(r->mem[i]);
    free(r);
}

/* p sampled on a fresh GPU context twice, the second time with env name=value: bitwise equal (GEMM
   autotuning off, so that both contexts pick the same algorithms) */
static void same_with_env(dit_model *m, dit_sample_params p, const char *name, const char *value, const char *what)
{
    const size_t nl = dit_latent_floats(m) * p.n;
    float *a = malloc(nl * 4), *b = malloc(nl * 4);
    p.backend = DIT_BACKEND_CUDA;
    setenv("DIT_CUDA_TUNE", "0", 1);
    dit_cuda_free(m);
    const int r1 = dit_sample(m, &p, a);
    dit_cuda_free(m);
    setenv(name, value, 1);
    const int r2 = dit_sample(m, &p, b);
    unsetenv(name);
    unsetenv("DIT_CUDA_TUNE");
    dit_cuda_free(m);
    ok(!r1 && !r2 && memcmp(a, b, nl * 4) == 0, "%s, bitwise%s%s", what, r1 || r2 ? ": " : "",
       r1 || r2 ? dit_last_error() : "");
    free(a);
    free(b);
}

static void test_random_models(void)
{
    /* DiT-B width (hd 64) and DiT-XL width (hd 72), T = 256 (256 px), 2 blocks; f16 and q8_0 weights */
    const struct { int depth, D, H, wtype; const char *name; } cases[] = {
        { 2, 768, 12, DIT_TYPE_F16, "DiT-B width, 2 blocks, f16" },
        { 2, 1152, 16, DIT_TYPE_F16, "DiT-XL width, 2 blocks, f16" },
        { 2, 1152, 16, DIT_TYPE_Q8_0, "DiT-XL width, 2 blocks, q8_0" },
        { 2, 1152, 16, DIT_TYPE_BF16, "DiT-XL width, 2 blocks, bf16" },
        { 1, 1152, 16, DIT_TYPE_Q4_0, "DiT-XL width, 1 block, q4_0" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rmodel *r = random_dit(cases[i].depth, cases[i].D, cases[i].H, 32, cases[i].wtype);
        const int B = 2, n = B * 4 * 32 * 32;
        float *x = malloc(n * 4);
        for (int e = 0; e < n; e++) x[e] = frand(1.7f);
        float t[2] = { 17, 861 };
        int y[2] = { 207, 1000 };
        char what[128];
        snprintf(what, sizeof what, "random %s: forward GPU == CPU", cases[i].name);
        forward_vs_cpu(&r->m, what, x, t, y, B, cases[i].wtype == DIT_TYPE_BF16 ? 1e-1 : 3e-2);
        if (cases[i].wtype == DIT_TYPE_Q8_0 || cases[i].wtype == DIT_TYPE_Q4_0) {
            /* the step graph dequantizes each next weight on a second stream: a stale or wrong buffer
               would be an O(1) error, fp16 rounding over 10 steps stays within the sampler tolerance */
            dit_sample_params p = dit_sample_params_default();
            int lab[1] = { 207 };
            p.n = 1; p.labels = lab; p.steps = 10; p.seed = 5;
            snprintf(what, sizeof what, "random %s: DDPM 10 steps, graph, weights dequantized ahead: GPU == CPU",
                     cases[i].name);
            sample_vs(&r->m, what, p, NULL, 5e-2);
            /* ahead == in line, bitwise: the same kernels on the same data, on two streams */
            snprintf(what, sizeof what, "random %s: weights dequantized ahead == in line", cases[i].name);
            same_with_env(&r->m, p, "DIT_CUDA_AHEAD", "0", what);
        }
        if (i == 1) {   /* batches: 3 images at once == 2 images (first_image 0) then 1 (first_image 2). The GEMMs see
                           other row counts, so cuBLASLt may sum in another order (~1e-3 per forward, grown over the
                           steps: 2e-2 x max|ref| as the multi-GPU checks); a wrong noise stream is an O(1) error */
            dit_sample_params p = dit_sample_params_default();
            int lab[3] = { 207, 1, 999 };
            p.n = 3; p.labels = lab; p.steps = 4; p.seed = 11; p.backend = DIT_BACKEND_CUDA;
            const size_t nl = dit_latent_floats(&r->m);
            float *a = malloc(3 * nl * 4), *b = malloc(3 * nl * 4);
            int rc = dit_sample(&r->m, &p, a);
            p.n = 2;
            if (!rc) rc = dit_sample(&r->m, &p, b);
            p.n = 1; p.labels = lab + 2; p.first_image = 2;
            if (!rc) rc = dit_sample(&r->m, &p, b + 2 * nl);
            if (rc) ok(0, "random %s: batches: %s", cases[i].name, dit_last_error());
            else check_close("random DiT-XL width: DDPM 4 steps, 3 images at once == batches of 2 and 1 (first_image 2)",
                             b, a, 3 * nl, 2e-2);
            free(a);
            free(b);
        }
        if (i == 1) {   /* the weights through pinned staging buffers (default) == pageable copies */
            dit_sample_params p = dit_sample_params_default();
            int lab[1] = { 207 };
            p.n = 1; p.labels = lab; p.steps = 4; p.seed = 5;
            snprintf(what, sizeof what, "random %s: weights uploaded staged == pageable", cases[i].name);
            same_with_env(&r->m, p, "DIT_CUDA_UPLOAD", "pageable", what);
        }
        free(x);
        rmodel_free(r);
    }
}

/* ---------------------------------------------------------------- several GPUs (NCCL) */
/* Every plan against one GPU on the same model, seed and noise. Tolerance 2e-2 x max|ref|: both sides
   round the same operands to fp16, but the GEMMs see other row counts (M / GPUs), so cuBLASLt may pick
   other algorithms and sum in another order (~1e-3 per forward), grown over 10 DDPM steps; a wrong
   token offset, row split or exchange gives O(1) errors. */
typedef struct {
    const char *name;
    int gpus, strategy, seq_mode;
} par_case;

static int cmp_d(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int par_init(dit_model *m, const par_case *pc, int n, int no_cfg, double timeout, char *plan, size_t len)
{
    dit_cuda_free(m);
    dit_par_params pp;
    memset(&pp, 0, sizeof pp);
    pp.gpus = pc->gpus; pp.strategy = pc->strategy; pp.seq_mode = pc->seq_mode; pp.n_images = n; pp.timeout_s = timeout;
    pp.no_cfg = no_cfg;
    return dit_cuda_init_parallel(m, &pp, plan, len);
}

static void par_vs_one(dit_model *m, const char *model, const par_case *pc, const dit_sample_params *p, const float *ref)
{
    char plan[512] = "", what[800];
    int rc = par_init(m, pc, p->n, p->no_cfg, 60, plan, sizeof plan);
    snprintf(what, sizeof what, "%s, %d images, %s on %d GPUs == 1 GPU [%s]", model, p->n, pc->name, pc->gpus, plan);
    if (rc) ok(0, "%s: %s", what, dit_last_error());
    else rc = sample_vs(m, what, *p, ref, 2e-2);
    const char *p2p = getenv("DIT_PAR_P2P");
    if (!rc && strstr(plan, "all-gather") && p2p && p2p[0] == '0')
        ok(strstr(plan, "through NCCL") != NULL, "DIT_PAR_P2P=0: the all-gather went through NCCL");
    else if (!rc && strstr(plan, "all-gather") && !strstr(plan, "peer-to-peer"))
        skip("the peer-to-peer all-gather", "no peer access between these GPUs: NCCL was used");
    if (!rc && strstr(plan, "all-gather")) {   /* peer-to-peer: its flags count on across samples */
        snprintf(what, sizeof what, "%s, %d images, %s on %d GPUs, a second sample == 1 GPU", model, p->n, pc->name,
                 pc->gpus);
        sample_vs(m, what, *p, ref, 2e-2);
    }
    dit_cuda_free(m);
}

static void par_cases(dit_model *m, const char *model, dit_sample_params p, const par_case *cases, int n_cases)
{
    const size_t n = (size_t)p.n * dit_latent_floats(m);
    float *ref = malloc(n * 4);
    dit_cuda_free(m);
    p.backend = DIT_BACKEND_CUDA;
    if (dit_cuda_init(m, 0) || dit_sample(m, &p, ref)) {
        ok(0, "%s: one-GPU reference: %s", model, dit_last_error());
    } else {
        for (int i = 0; i < n_cases; i++)
            if (cases[i].gpus <= dit_cuda_available()) par_vs_one(m, model, &cases[i], &p, ref);
    }
    dit_cuda_free(m);
    free(ref);
}

/* One group, a sample of 1 image, then one of 3 (the arenas grow and move, so the peers' buffers are
   taken again), each == one GPU */
static void par_grow(dit_model *m, dit_sample_params p, const par_case *pc)
{
    static int labels[3] = { 207, 360, 88 };
    const size_t per = dit_latent_floats(m);
    float *ref[2] = { malloc(per * 4), malloc(3 * per * 4) };
    char plan[512] = "", what[700];
    p.labels = labels;
    p.backend = DIT_BACKEND_CUDA;
    int rc = 0;
    for (int k = 0; k < 2 && !rc; k++) {   /* k = 0: 1 image, k = 1: 3 images */
        p.n = 1 + 2 * k;
        dit_cuda_free(m);
        rc = dit_cuda_init(m, 0);
        if (!rc) rc = dit_sample(m, &p, ref[k]);
    }
    dit_cuda_free(m);
    if (rc) ok(0, "growing arenas: the one-GPU references: %s", dit_last_error());
    else rc = par_init(m, pc, 1, 0, 60, plan, sizeof plan);
    for (int k = 0; k < 2 && !rc; k++) {
        p.n = 1 + 2 * k;
        snprintf(what, sizeof what, "%s on %d GPUs, %d image%s in the same group%s == 1 GPU [%s]", pc->name,
                 pc->gpus, p.n, k ? "s" : "", k ? " after 1 (arenas grown)" : "", plan);
        rc = sample_vs(m, what, p, ref[k], 2e-2);
    }
    dit_cuda_free(m);
    free(ref[0]);
    free(ref[1]);
}

/* 5 latents decoded by a 2-GPU group (a share per GPU, dit_par_decode) == by one GPU. The same kernels on the
   same GPU model: bitwise expected; 1e-3 x max|ref| would allow another cuBLASLt algorithm (fp16 operands) */
static void par_decode(dit_model *m)
{
    const int n = 5;
    const size_t nz = dit_latent_floats(m), ni = dit_image_floats(m);
    float *z = malloc(n * nz * 4), *ref = malloc(n * ni * 4), *got = malloc(n * ni * 4);
    for (size_t i = 0; i < n * nz; i++) z[i] = frand(1.0f);
    static const par_case data2 = { "data", 2, DIT_PAR_DATA, 0 };
    dit_cuda_free(m);
    int rc = dit_cuda_init(m, 0) || dit_cuda_decode(m, z, n, ref);
    if (!rc) rc = par_init(m, &data2, 2, 0, 60, NULL, 0) || dit_cuda_decode(m, z, n, got);
    if (rc) ok(0, "decode on 2 GPUs: %s", dit_last_error());
    else check_close("dit_s fixture: 5 latents decoded on 2 GPUs (3 + 2) == on 1 GPU", got, ref, n * ni, 1e-3);
    dit_cuda_free(m);
    free(z); free(ref); free(got);
}

static void test_parallel(void)
{
    const int G = dit_cuda_available();
    if (G < 2) {
        char why[64];
        snprintf(why, sizeof why, "needs 2 GPUs, %d visible", G);
        skip("several GPUs: every plan == one GPU", why);
        return;
    }
    static const par_case xl[] = {
        { "data", 2, DIT_PAR_DATA, 0 }, { "cfg", 2, DIT_PAR_CFG, 0 },
        { "seq (Ulysses all-to-all)", 2, DIT_PAR_SEQ, DIT_SEQ_ULYSSES },
        { "seq (all-gather k,v)", 2, DIT_PAR_SEQ, DIT_SEQ_ALLGATHER }, { "auto", 2, DIT_PAR_AUTO, 0 },
        { "cfg+seq", 4, DIT_PAR_CFG | DIT_PAR_SEQ, 0 }, { "seq (Ulysses)", 4, DIT_PAR_SEQ, DIT_SEQ_ULYSSES },
        { "seq (all-gather)", 4, DIT_PAR_SEQ, DIT_SEQ_ALLGATHER }, { "data+cfg", 4, DIT_PAR_DATA | DIT_PAR_CFG, 0 },
        { "data+seq", 4, DIT_PAR_DATA | DIT_PAR_SEQ, 0 }, { "auto", 4, DIT_PAR_AUTO, 0 },
    };
    int labels[3] = { 207, 360, 88 };
    dit_sample_params p = dit_sample_params_default();
    p.labels = labels; p.steps = 10; p.seed = 3; p.backend = DIT_BACKEND_CUDA;
    /* DiT-XL/2 shapes (28 blocks, 16 heads, 256 tokens), random weights */
    rmodel *r = random_dit(28, 1152, 16, 32, DIT_TYPE_F16);
    p.n = 2;
    par_cases(&r->m, "random DiT-XL/2 256 px", p, xl, (int)(sizeof xl / sizeof xl[0]));
    p.n = 3;   /* 3 images on 2 data slices: the last slice is padded */
    par_cases(&r->m, "random DiT-XL/2 256 px", p, xl, 1);
    p.sampler = DIT_SAMPLER_DPMPP_2M;   /* each GPU keeps its images' x0 of the step before */
    par_cases(&r->m, "random DiT-XL/2 256 px DPM++2M", p, xl, 2);
    p.sampler = DIT_SAMPLER_DDPM;
    p.no_cfg = 1; p.cfg_scale = 1.0f;   /* no CFG batch: data, and seq with one row per image */
    static const par_case nc[] = {
        { "data", 2, DIT_PAR_DATA, 0 }, { "seq (all-gather k,v)", 2, DIT_PAR_SEQ, DIT_SEQ_ALLGATHER },
        { "auto", 2, DIT_PAR_AUTO, 0 },
    };
    par_cases(&r->m, "random DiT-XL/2 256 px, no CFG batch", p, nc, 3);
    p.n = 1;   /* auto: 256 rows do not split: a group of one GPU */
    par_cases(&r->m, "random DiT-XL/2 256 px, no CFG batch", p, nc + 2, 1);
    p.n = 3; p.no_cfg = 0; p.cfg_scale = 4.0f;
    p.n = 1;   /* one image, DDIM: cfg and seq only; cfg+seq has one row per GPU (the B = 1 all-to-all path) */
    p.sampler = DIT_SAMPLER_DDIM;
    static const par_case b1[] = {
        { "cfg", 2, DIT_PAR_CFG, 0 }, { "seq (Ulysses all-to-all)", 2, DIT_PAR_SEQ, DIT_SEQ_ULYSSES },
        { "seq (all-gather k,v)", 2, DIT_PAR_SEQ, DIT_SEQ_ALLGATHER },
        { "cfg+seq (one row per GPU)", 4, DIT_PAR_CFG | DIT_PAR_SEQ, DIT_SEQ_ULYSSES },
        { "cfg+seq (all-gather)", 4, DIT_PAR_CFG | DIT_PAR_SEQ, DIT_SEQ_ALLGATHER } };
    par_cases(&r->m, "random DiT-XL/2 256 px DDIM", p, b1, (int)(sizeof b1 / sizeof b1[0]));   /* one reference */
    setenv("DIT_PAR_P2P", "0", 1);   /* the all-gather through NCCL, as where the GPUs have no peer access */
    par_cases(&r->m, "random DiT-XL/2 256 px DDIM, DIT_PAR_P2P=0", p, b1 + 2, 1);
    unsetenv("DIT_PAR_P2P");
    p.sampler = DIT_SAMPLER_DDPM;
    rmodel_free(r);

    /* q8_0 weights: the all-gather mode's k,v and q GEMMs over row ranges of the quantized W_qkv */
    static const par_case q8[] = {
        { "seq (all-gather)", 2, DIT_PAR_SEQ, DIT_SEQ_ALLGATHER }, { "seq (Ulysses)", 2, DIT_PAR_SEQ, DIT_SEQ_ULYSSES },
        { "cfg", 2, DIT_PAR_CFG, 0 }, { "cfg+seq (all-gather)", 4, DIT_PAR_CFG | DIT_PAR_SEQ, DIT_SEQ_ALLGATHER },
    };
    r = random_dit(4, 1152, 16, 32, DIT_TYPE_Q8_0);
    p.n = 2;
    par_cases(&r->m, "random DiT-XL/2 width q8_0, 4 blocks", p, q8, (int)(sizeof q8 / sizeof q8[0]));
    rmodel_free(r);

    /* an odd depth (the last block and the next step's first share a peer-to-peer buffer: the output
       all-gather orders them) */
    static const par_case ag2[] = { { "seq (all-gather)", 2, DIT_PAR_SEQ, DIT_SEQ_ALLGATHER } };
    r = random_dit(3, 1152, 16, 32, DIT_TYPE_F16);
    p.n = 1;
    par_cases(&r->m, "random DiT-XL/2 width, 3 blocks", p, ag2, 1);
    par_grow(&r->m, p, &ag2[0]);
    rmodel_free(r);

    /* the fixture model (2 heads, 16 tokens) */
    dit_model *m = dit_model_load(mpath("dit_s.gguf"));
    if (!m) {
        ok(0, "dit_s.gguf: %s", dit_last_error());
        return;
    }
    static const par_case small[] = {
        { "data", 2, DIT_PAR_DATA, 0 }, { "cfg", 2, DIT_PAR_CFG, 0 }, { "seq (Ulysses)", 2, DIT_PAR_SEQ, DIT_SEQ_ULYSSES },
        { "seq (all-gather)", 2, DIT_PAR_SEQ, DIT_SEQ_ALLGATHER }, { "cfg+seq", 4, DIT_PAR_CFG | DIT_PAR_SEQ, 0 },
    };
    int fl[2] = { 1, 7 };
    p.labels = fl; p.n = 2;
    par_cases(m, "dit_s fixture", p, small, (int)(sizeof small / sizeof small[0]));
    par_decode(m);
    dit_model_free(m);
}

/* The auto plan and the explicit ones on DiT-XL/2 shapes (16 heads; 256 or 1024 tokens) and on the
   Fashion-MNIST shape (3 heads, 49 tokens): pure arithmetic, runs without a GPU. */
/* the plan for a model of side L (patch 4 for 28, else 2) with `heads` heads on `gpus` GPUs; nccl: as without
   peer access (DIT_PAR_P2P=0), else peer access assumed */
static int plan_for(int L, int heads, dit_par_params *pp, int gpus, int nccl, int got[4], char *why, size_t len)
{
    dit_model m;
    memset(&m, 0, sizeof m);
    m.cfg.input_size = L; m.cfg.patch = L == 28 ? 4 : 2; m.cfg.heads = heads; m.cfg.hidden = 64 * heads;
    setenv("DIT_PAR_P2P", nccl ? "0" : "1", 1);
    const int rc = dit_par_plan(&m, pp, gpus, got, why, len);
    unsetenv("DIT_PAR_P2P");
    return rc;
}

static void test_parallel_plans(void)
{
    static const struct {
        int L, heads, n, gpus, world, strategy, seq_mode;
        int want[4];   /* data, cfg, seq, seq mode; data -1: an error is expected */
        int nccl;      /* 1: as without peer access (DIT_PAR_P2P=0); else peer access assumed (=1) */
    } c[] = {
        { 32, 16, 1, 2, 0, DIT_PAR_AUTO, 0, { 1, 2, 1, 0 }, 0 },          /* 256 px, 1 image: CFG halves */
        { 32, 16, 1, 4, 0, DIT_PAR_AUTO, 0, { 1, 2, 1, 0 }, 0 },          /* 256 tokens: a 2nd split leaves 256 rows: 2 GPUs */
        { 64, 16, 1, 4, 0, DIT_PAR_AUTO, 0, { 1, 2, 2, DIT_SEQ_ALLGATHER }, 0 }, /* 512 px: cfg x seq, 512 rows (peer-to-peer) */
        { 128, 16, 1, 4, 0, DIT_PAR_AUTO, 0, { 1, 2, 2, DIT_SEQ_ALLGATHER }, 0 }, /* 4096 tokens: cfg x seq, 2048 rows */
        { 64, 16, 1, 2, 0, DIT_PAR_SEQ, 0, { 1, 1, 2, DIT_SEQ_ALLGATHER }, 0 }, /* over 2 GPUs: all-gather (measured) */
        { 32, 16, 8, 4, 0, DIT_PAR_AUTO, 0, { 4, 1, 1, 0 }, 0 },          /* 8 images: data */
        { 32, 16, 3, 4, 0, DIT_PAR_AUTO, 0, { 2, 2, 1, 0 }, 0 },          /* 3 images: 2 slices (padded) x CFG */
        { 32, 16, 1, 4, 4, DIT_PAR_AUTO, 0, { 1, 2, 2, DIT_SEQ_ALLGATHER }, 0 }, /* 4 processes: all of them work */
        { 64, 16, 1, 4, 0, DIT_PAR_AUTO, 0, { 1, 2, 1, 0 }, 1 },       /* NCCL: 512 rows are too few */
        { 64, 16, 1, 4, 0, DIT_PAR_SEQ, 0, { 1, 1, 4, DIT_SEQ_ALLGATHER }, 0 }, /* one process: peer-to-peer all-gather */
        { 64, 16, 1, 4, 0, DIT_PAR_SEQ, 0, { 1, 1, 4, DIT_SEQ_ULYSSES }, 1 }, /* NCCL: Ulysses over 4 */
        { 64, 16, 1, 4, 4, DIT_PAR_SEQ, 0, { 1, 1, 4, DIT_SEQ_ULYSSES }, 0 },   /* processes: NCCL, Ulysses over 4 */
        { 64, 16, 1, 4, 0, DIT_PAR_SEQ, DIT_SEQ_ALLGATHER, { 1, 1, 4, DIT_SEQ_ALLGATHER }, 0 },
        { 28, 3, 1, 2, 0, DIT_PAR_SEQ, 0, { -1 }, 0 },                    /* 49 tokens do not split in 2 */
        { 32, 3, 1, 2, 0, DIT_PAR_SEQ, DIT_SEQ_ULYSSES, { -1 }, 0 },      /* 3 heads: no Ulysses over 2 */
        { 32, 3, 1, 2, 0, DIT_PAR_SEQ, 0, { 1, 1, 2, DIT_SEQ_ALLGATHER }, 0 }, /* auto mode falls back */
        { 32, 16, 1, 3, 0, DIT_PAR_CFG, 0, { -1 }, 0 },                   /* cfg needs an even count */
        { 28, 3, 2, 4, 0, DIT_PAR_AUTO, 0, { 2, 2, 1, 0 }, 0 },           /* fashion: never a token split */
        { 32, 16, 2, 8, 0, DIT_PAR_DATA | DIT_PAR_SEQ, 0, { 2, 1, 4, DIT_SEQ_ALLGATHER }, 0 },
        { 32, 16, 2, 8, 8, DIT_PAR_DATA | DIT_PAR_SEQ, 0, { 2, 1, 4, DIT_SEQ_ULYSSES }, 0 },
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        dit_par_params pp;
        memset(&pp, 0, sizeof pp);
        pp.strategy = c[i].strategy; pp.seq_mode = c[i].seq_mode; pp.n_images = c[i].n; pp.world = c[i].world;
        int got[4] = { 0, 0, 0, 0 };
        char why[400] = "";
        const int rc = plan_for(c[i].L, c[i].heads, &pp, c[i].gpus, c[i].nccl, got, why, sizeof why);
        const int g = c[i].L / (c[i].L == 28 ? 4 : 2);
        if (c[i].want[0] < 0)
            ok(rc != DIT_OK, "plan %zu (%d GPUs, %d tokens, %d heads): refused: %s", i, c[i].gpus, g * g,
               c[i].heads, rc ? dit_last_error() : "accepted");
        else
            ok(rc == DIT_OK && !memcmp(got, c[i].want, sizeof got), "plan %zu: data %d cfg %d seq %d mode %d (want %d %d %d %d): %s",
               i, got[0], got[1], got[2], got[3], c[i].want[0], c[i].want[1], c[i].want[2], c[i].want[3],
               rc ? dit_last_error() : why);
    }
    /* without the CFG batch (one network row per image): no cfg split; auto splits 1024 tokens, not 256 */
    static const struct { int L, strategy, want[4]; } nc[] = {
        { 32, DIT_PAR_AUTO, { 1, 1, 1, 0 } }, { 64, DIT_PAR_AUTO, { 1, 1, 2, DIT_SEQ_ALLGATHER } },
        { 32, DIT_PAR_CFG, { -1 } },
    };
    for (size_t i = 0; i < sizeof nc / sizeof nc[0]; i++) {
        dit_par_params pp;
        memset(&pp, 0, sizeof pp);
        pp.strategy = nc[i].strategy; pp.n_images = 1; pp.no_cfg = 1;
        int got[4] = { 0, 0, 0, 0 };
        char why[400] = "";
        const int rc = plan_for(nc[i].L, 16, &pp, 2, 0, got, why, sizeof why);
        if (nc[i].want[0] < 0) ok(rc != DIT_OK, "no CFG batch, --parallel cfg: refused: %s", rc ? dit_last_error() : why);
        else ok(rc == DIT_OK && !memcmp(got, nc[i].want, sizeof got), "no CFG batch, %d tokens on 2 GPUs: data %d cfg %d "
                "seq %d mode %d: %s", (nc[i].L / 2) * (nc[i].L / 2), got[0], got[1], got[2], got[3], rc ? dit_last_error() : why);
    }
}

/* a first sample on plan cs, then a second with the fault `var`=`who`: an error within the 3 s timeout
   (not a hang), and a teardown that returns */
static void stall_case(dit_model *m, dit_sample_params *p, par_case cs, const char *var, const char *who)
{
    char plan[512];
    int rc = par_init(m, &cs, 1, 0, 3.0, plan, sizeof plan);
    float *lat = malloc(dit_latent_floats(m) * 4);
    p->n = 1;
    if (!rc) rc = dit_sample(m, p, lat);
    ok(rc == DIT_OK, "%s on %d GPUs: a first sample: %s", cs.name, cs.gpus, rc ? dit_last_error() : "ok");
    if (!rc) {
        setenv(var, who, 1);
        double t0 = now_s();
        rc = dit_sample(m, p, lat);
        const double dt = now_s() - t0;
        unsetenv(var);
        /* < 8 s: the watchdog's 3 s, not the wait kernel's own 2 x 3 + 5 s backstop */
        ok(rc != DIT_OK && dt < 8, "%s, %s=%s in the second sample: error after %.1f s: '%s'", cs.name, var, who, dt,
           rc ? dit_last_error() : "none");
        t0 = now_s();
        dit_cuda_free(m);
        ok(now_s() - t0 < 20, "teardown after the abort returns (%.1f s)", now_s() - t0);
    }
    free(lat);
}

/* faults, last (an aborted collective may leave a GPU context unusable for this process): more GPUs than
   there are; a rank that never starts its step (its peer must time out with an error, not hang) */
static void test_parallel_faults(void)
{
    const int G = dit_cuda_available();
    if (G < 2) return;
    int labels[1] = { 207 };
    dit_sample_params p = dit_sample_params_default();
    p.labels = labels; p.steps = 10; p.seed = 3; p.backend = DIT_BACKEND_CUDA;
    rmodel *r = random_dit(2, 1152, 16, 32, DIT_TYPE_F16);
    /* faults: more GPUs than there are; a rank that never starts (its peers must time out, not hang) */
    par_case too_many = { "data", G + 1, DIT_PAR_DATA, 0 };
    char plan[512];
    int rc = par_init(&r->m, &too_many, 2, 0, 60, plan, sizeof plan);
    ok(rc != DIT_OK && strstr(dit_last_error(), "visible"), "--gpus %d on %d GPUs: error '%s'", G + 1, G,
       rc ? dit_last_error() : "none");
    par_case cfg2 = { "cfg", 2, DIT_PAR_CFG, 0 };
    rc = par_init(&r->m, &cfg2, 1, 0, 3.0, plan, sizeof plan);
    if (rc) {
        ok(0, "stalled peer: setup: %s", dit_last_error());
    } else {
        float *lat = malloc(dit_latent_floats(&r->m) * 4);
        setenv("DIT_PAR_TEST_STALL", "1", 1);
        p.n = 1;
        const double t0 = now_s();
        rc = dit_sample(&r->m, &p, lat);
        const double dt = now_s() - t0;
        unsetenv("DIT_PAR_TEST_STALL");
        ok(rc != DIT_OK && strstr(dit_last_error(), "no progress") && dt < 20,
           "rank 1 stalled, timeout 3 s: rank 0 stops with an error after %.1f s: '%s'", dt, rc ? dit_last_error() : "none");
        rc = dit_sample(&r->m, &p, lat);
        ok(rc != DIT_OK, "after the abort, sampling again is refused: '%s'", rc ? dit_last_error() : "none");
        free(lat);
    }
    /* a peer that stops after the step graphs (with their captured NCCL calls) exist: the error comes
       within the timeout and the teardown, which must free graphs before communicators, returns. Ulysses:
       the rank never starts the second sample; peer-to-peer all-gather: it stops before step 5 while its
       peer spins in the wait kernel (which must leave on the abort) */
    char last[8];
    snprintf(last, sizeof last, "%d", G >= 4 ? 3 : 1);
    stall_case(&r->m, &p, G >= 4 ? (par_case){ "cfg+seq", 4, DIT_PAR_CFG | DIT_PAR_SEQ, DIT_SEQ_ULYSSES }
                                 : (par_case){ "seq", 2, DIT_PAR_SEQ, DIT_SEQ_ULYSSES }, "DIT_PAR_TEST_STALL", last);
    stall_case(&r->m, &p, (par_case){ "seq (all-gather)", 2, DIT_PAR_SEQ, DIT_SEQ_ALLGATHER },
               "DIT_PAR_TEST_STALL_STEP", "1:5");
    rmodel_free(r);
}

/* ---------------------------------------------------------------- bench */
/* Several GPUs (or one, for the same measurement): ms/step = median wall time of whole dit_sample calls
   / steps, after one warm-up call; then a 2-step profiled call on GPU 0 for the NCCL time per step. */
static int bench_parallel(int res, int n, int steps, int reps, int depth, int wtype, int gpus, int strategy, int seq_mode,
                          int verbose)
{
    rmodel *r = random_dit(depth, 1152, 16, res / 8, wtype);
    dit_model *m = &r->m;
    char plan[512] = "1 GPU";
    int rc;
    if (gpus == 1 && strategy < 0) {
        rc = dit_cuda_init(m, 0);
    } else {
        par_case pc = { "bench", gpus, strategy < 0 ? 0 : strategy, seq_mode };
        rc = par_init(m, &pc, n, 0, 120, plan, sizeof plan);
    }
    int *labels = malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) labels[i] = (207 + 131 * i) % 1000;
    dit_sample_params p = dit_sample_params_default();
    p.n = n; p.labels = labels; p.steps = steps; p.seed = 1; p.backend = DIT_BACKEND_CUDA;
    float *lat = malloc(dit_latent_floats(m) * n * 4);
    double t[64], nccl_ms = 0, prof_ms = 0;
    if (reps > 64) reps = 64;
    if (!rc) rc = dit_sample(m, &p, lat);   /* warm-up: plans, graphs, connections */
    for (int k = 0; !rc && k < reps; k++) {
        const double t0 = now_s();
        rc = dit_sample(m, &p, lat);
        t[k] = (now_s() - t0) * 1e3 / steps;
    }
    if (!rc) {   /* op-by-op profile of 2 steps on GPU 0: NCCL share */
        char path[] = "/tmp/dit-bench-par-XXXXXX";
        int fd = mkstemp(path);
        FILE *f = fd >= 0 ? fdopen(fd, "w+") : NULL;
        dit_sample_params q = p;
        q.steps = 2;
        rc = dit_cuda_profile_begin(m);
        if (!rc) rc = dit_sample(m, &q, lat);
        if (!rc) rc = dit_cuda_profile_end(m, NULL, f);
        char line[512];
        if (f) rewind(f);
        while (f && fgets(line, sizeof line, f)) {   /* rows: name total_ms calls mean */
            char name[128];
            double total;
            if (verbose) fputs(line, stdout);   /* GPU 0's per-op table */
            if (sscanf(line, " %127s %lf", name, &total) == 2 && strcmp(name, "total")) {
                prof_ms += total;
                if (!strncmp(name, "nccl", 4) || !strncmp(name, "p2p", 3)) nccl_ms += total;
            }
        }
        if (f) fclose(f);
        unlink(path);
    }
    if (rc) {
        fprintf(stderr, "test_cuda: error: %s\n", dit_last_error());
    } else {
        qsort(t, reps, sizeof(double), cmp_d);
        printf("bench-par: %dpx n %d gpus %d [%s]: %.3f ms/step (min %.3f), exchanges %.3f ms/step of %.3f profiled\n", res, n,
               gpus, plan, t[reps / 2], t[0], nccl_ms / 2, prof_ms / 2);
    }
    free(lat);
    free(labels);
    rmodel_free(r);
    return rc ? 1 : 0;
}

static int bench_main(int argc, char **argv)
{
    setenv("DIT_CUDA_TUNE", "1", 0);   /* as bench_dit: a long-lived process's steady state, GEMMs tuned */
    int res = 256, n = 1, steps = 250, reps = 5, depth = 28, wtype = DIT_TYPE_F16, verbose = 0;
    int gpus = 0, strategy = -1, seq_mode = 0;
    const char *model = NULL, *profile = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--res") && i + 1 < argc) res = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--n") && i + 1 < argc) n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--depth") && i + 1 < argc) depth = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--type") && i + 1 < argc) wtype = dit_type_from_name(argv[++i]);
        else if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--profile") && i + 1 < argc) profile = argv[++i];
        else if (!strcmp(argv[i], "-v")) verbose = 1;
        else if (!strcmp(argv[i], "--gpus") && i + 1 < argc) gpus = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--parallel") && i + 1 < argc) strategy = atoi(argv[++i]);   /* DIT_PAR_* flags */
        else if (!strcmp(argv[i], "--seq-mode") && i + 1 < argc) seq_mode = atoi(argv[++i]);
        else { fprintf(stderr, "test_cuda: error: unknown argument %s\n", argv[i]); return 2; }
    }
    if (dit_cuda_available() <= 0) { fprintf(stderr, "test_cuda: error: no GPU\n"); return 1; }
    if (gpus > 0) return bench_parallel(res, n, steps, reps, depth, wtype, gpus, strategy, seq_mode, verbose);
    rmodel *r = NULL;
    dit_model *m;
    if (model) {
        m = dit_model_load(model);
        if (!m) { fprintf(stderr, "test_cuda: error: %s\n", dit_last_error()); return 2; }
    } else {
        if (wtype < 0) { fprintf(stderr, "test_cuda: error: bad --type\n"); return 2; }
        r = random_dit(depth, 1152, 16, res / 8, wtype);
        random_vae(r, DIT_TYPE_F16);
        m = &r->m;
    }
    const char *tn = model ? "file" : dit_type_name(wtype);
    dit_cuda_bench_result b;
    int rc = dit_cuda_init(m, 0);
    if (!rc) rc = dit_cuda_bench(m, n, steps, reps, &b);
    if (rc) {
        fprintf(stderr, "test_cuda: error: %s\n", dit_last_error());
    } else {
        dit_cuda_info info;
        dit_cuda_get_info(m, &info);
        printf("bench: %s depth %d %dpx %s n %d (batch %d) steps %d: %.3f ms/step (min %.3f), adaLN precompute %.2f ms, "
               "decode %.2f ms, weights %.1f MB, arena %.1f MB, device in use %.1f MB, %s\n",
               model ? model : "DiT-XL/2 random", m->cfg.depth, m->cfg.input_size * 8, tn, n, 2 * n, steps, b.ms_per_step,
               b.ms_per_step_min, b.ms_precompute, b.ms_decode, b.weight_bytes / 1048576.0, b.arena_bytes / 1048576.0,
               b.peak_bytes / 1048576.0, info.device_name);
        if (profile) {
            /* one op-by-op 2-step sample for the trace */
            int labels[64];
            for (int i = 0; i < n && i < 64; i++) labels[i] = (207 + 97 * i) % m->cfg.num_classes;
            dit_sample_params p = dit_sample_params_default();
            p.n = n < 64 ? n : 64; p.labels = labels; p.steps = 2; p.backend = DIT_BACKEND_CUDA;
            float *lat = malloc(dit_latent_floats(m) * p.n * 4);
            rc = dit_cuda_profile_begin(m);
            if (!rc) rc = dit_sample(m, &p, lat);
            if (!rc) rc = dit_cuda_profile_end(m, profile, verbose ? stdout : NULL);
            if (rc) fprintf(stderr, "test_cuda: error: profile: %s\n", dit_last_error());
            free(lat);
        }
    }
    if (r) rmodel_free(r);
    else dit_model_free(m);
    return rc ? 1 : 0;
}

/* --churn N: N rounds of group setup, a 2-step sample and teardown over the 2-GPU plans (a rare crash
   between plans of --parallel was seen twice in ~20 runs; this repeats just that part) */
static int par_churn(int rounds)
{
    static const par_case cases[] = {
        { "seq (Ulysses)", 2, DIT_PAR_SEQ, DIT_SEQ_ULYSSES }, { "seq (all-gather)", 2, DIT_PAR_SEQ, DIT_SEQ_ALLGATHER },
        { "cfg", 2, DIT_PAR_CFG, 0 }, { "data", 2, DIT_PAR_DATA, 0 },
    };
    rmodel *r = random_dit(2, 1152, 16, 32, DIT_TYPE_F16);
    int labels[2] = { 207, 360 };
    dit_sample_params p = dit_sample_params_default();
    p.n = 2; p.labels = labels; p.steps = 2; p.seed = 3; p.backend = DIT_BACKEND_CUDA;
    float *lat = malloc(2 * dit_latent_floats(&r->m) * 4);
    const double t0 = now_s();
    int rc = 0, k;
    for (k = 0; k < rounds && !rc; k++) {
        const par_case *pc = &cases[k % 4];
        fprintf(stderr, "churn %d %s\n", k, pc->name);   /* before: a crash shows the round */
        const double t_a = now_s();
        rc = par_init(&r->m, pc, p.n, 0, 30, NULL, 0);
        const double t_b = now_s();
        if (!rc) rc = dit_sample(&r->m, &p, lat);
        const double t_c = now_s();
        if (rc) printf("churn %d (%s): %s\n", k, pc->name, dit_last_error());
        dit_cuda_free(&r->m);
        fprintf(stderr, "churn %d %s: setup %.3f s, sample %.3f s, teardown %.3f s\n", k, pc->name, t_b - t_a,
                t_c - t_b, now_s() - t_c);
    }
    printf("churn: %d rounds in %.1f s, %s\n", k, now_s() - t0, rc ? "FAILED" : "ok");
    free(lat);
    rmodel_free(r);
    return rc ? 1 : 0;
}

/* an abort or a crash inside a library thread (NCCL, glibc's heap checks) leaves little trace in a device
   log: say where it happened (which thread: an abort helper, the watchdog, a rank, main) */
static void on_fatal(int sig)
{
    static const char msg[] = "test_cuda: fatal signal; backtrace of the thread that got it:\n";
    void *frames[48];
    const int n = backtrace(frames, 48);
    if (write(2, msg, sizeof msg - 1) < 0) { /* nothing to do */ }
    backtrace_symbols_fd(frames, n, 2);
    signal(sig, SIG_DFL);
    raise(sig);
}

int main(int argc, char **argv)
{
    signal(SIGABRT, on_fatal);
    signal(SIGSEGV, on_fatal);
    signal(SIGBUS, on_fatal);
    if (argc > 1 && !strcmp(argv[1], "--bench")) return bench_main(argc, argv);
    if (argc > 2 && !strcmp(argv[1], "--churn")) {
        if (dit_cuda_available() >= 2) return par_churn(atoi(argv[2]));
        fprintf(stderr, "test_cuda: error: --churn needs 2 GPUs, %d visible\n", dit_cuda_available());
        return 1;
    }
    if (argc > 1 && !strcmp(argv[1], "--opbench")) {
        if (dit_cuda_available() <= 0) { fprintf(stderr, "test_cuda: error: no GPU\n"); return 1; }
        int rc = dit_cuda_opbench(stdout);
        if (rc) fprintf(stderr, "test_cuda: error: %s\n", dit_last_error());
        return rc ? 1 : 0;
    }
    int quick = 0, race = 0, par_only = 0;
    alarm(1500);   /* a hang (a multi-GPU fault path, say) becomes a failure of this program, not of make test */
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--parallel")) par_only = 1;
        else if (!strcmp(argv[i], "--race")) race = quick = conv3_ours_only = 1;
        else dir = argv[i];
    }
    if (!race) test_parallel_plans();
    if (dit_cuda_available() <= 0) {
        skip("cuda", "no GPU");
        return tap_finish();   /* the plan checks above ran */
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dit-test-cuda-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        printf("not ok - mkdtemp\n");
        return 1;
    }
    if (!race && !par_only) {
        test_philox();
        test_dequant();
        test_linear();
    }
    if (!par_only) {
        test_attention(2, 200, 2, 72, DIT_TYPE_F16);
        test_attention(1, 256, 3, 64, DIT_TYPE_F16);
        test_attention(2, 16, 1, 72, DIT_TYPE_F16);
        test_attention(1, 40, 2, 72, DIT_TYPE_F16);
        test_attention(2, 130, 2, 72, DIT_TYPE_BF16);
        test_conv3(128, 128, 24, 20, 0, 1, 0, DIT_TYPE_F16, 0);
        test_conv3(64, 200, 16, 30, 1, 0, 1, DIT_TYPE_F16, 7);   /* 3 chunks of rows, the last partial */
        test_conv3(64, 32, 9, 7, 0, 1, 1, DIT_TYPE_F16, 0);
        test_conv3(128, 3, 20, 18, 0, 1, 0, DIT_TYPE_F16, 0);   /* conv_out */
        test_conv3(128, 3, 20, 18, 0, 1, 0, DIT_TYPE_F16, 6);
        test_conv3(128, 136, 12, 10, 1, 1, 1, DIT_TYPE_BF16, 0);
        test_conv3(64, 3, 8, 8, 0, 1, 0, DIT_TYPE_BF16, 0);
        if (!quick) test_conv3(512, 256, 16, 16, 0, 1, 1, DIT_TYPE_F16, 0);
        if (!quick) test_attention(1, 1024, 2, 72, DIT_TYPE_F16);
    }
    if (dir) {
        snprintf(moddir, sizeof moddir, "%s", dir);
    } else {
        snprintf(moddir, sizeof moddir, "%s", tmpdir);
        char cmd[4096];
        snprintf(cmd, sizeof cmd,
                 "bin/dit-convert " FIX "dit_s.pt --heads 2 --vae " FIX "vae_s -o %s/dit_s.gguf >/dev/null 2>&1 && "
                 "bin/dit-convert " FIX "dit_px.pt --heads 1 -o %s/dit_px.gguf >/dev/null 2>&1 && "
                 "bin/dit-convert " FIX "dit_xs_bf16.pt --heads 1 -o %s/dit_xs_bf16.gguf >/dev/null 2>&1 && "
                 "bin/dit-quantize %s/dit_s.gguf %s/dit_s_q8.gguf q8_0 >/dev/null 2>&1",
                 moddir, moddir, moddir, moddir, moddir);
        if (system(cmd) != 0) printf("# bin/dit-convert / dit-quantize failed: model tests may fail\n");
    }
    if (race) {   /* racecheck is slow: one forward, one short sample, one decode */
        dit_model *m = dit_model_load(mpath("dit_s.gguf"));
        if (m) {
            float *x = malloc(2 * 256 * 4), *o = malloc(2 * 512 * 4), *img = malloc(3 * 64 * 64 * 4);
            float t[2] = { 3, 999 };
            int y[2] = { 1, 10 }, labels[1] = { 3 };
            for (int i = 0; i < 512; i++) x[i] = frand(1.0f);
            int rc = dit_cuda_forward(m, x, t, y, 2, o);
            dit_sample_params p = dit_sample_params_default();
            p.n = 1; p.labels = labels; p.steps = 3; p.backend = DIT_BACKEND_CUDA;
            if (!rc) rc = dit_sample(m, &p, x);
            if (!rc) rc = dit_cuda_decode(m, x, 1, img);
            ok(rc == DIT_OK, "race mode: forward, 3-step sample, decode%s%s", rc ? ": " : "", rc ? dit_last_error() : "");
            free(x); free(o); free(img);
            dit_model_free(m);
        }
        goto out;
    }
    if (!par_only) {
        test_fixture_dit_s();
        test_fixture_other("dit_px.gguf", "dit_px (1 channel, hd 64) forward GPU == CPU", "px_fwd_x", 1, 3e-2);
        test_fixture_other("dit_xs_bf16.gguf", "dit_xs bf16 weights (bf16 operands) forward GPU == CPU", "fwd_x", 4, 1e-1);
        test_fixture_other("dit_s_q8.gguf", "dit_s q8_0 (dequantized on the GPU) forward GPU == CPU", "fwd_x", 4, 3e-2);
        if (!quick) test_random_models();
    }
    if (par_only || !quick) {
        test_parallel();
        test_parallel_faults();
    }
out:
    return tap_finish();
}

#else /* !DIT_CUDA */
int main(void)
{
    printf("ok - cuda # SKIP this build has no CUDA backend (DIT_CUDA)\n");
    return 0;
}
#endif
