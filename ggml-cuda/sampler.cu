// sampler.cu - one kernel per sampler step: CFG combine, DDPM or DDIM update and the Philox noise.
//
// Noise (dit_randn): Philox4x32-10, key (seed lo, seed hi), counter (j, image, step, 0x44695421); group j
// gives elements 4j..4j+3 of the image's (C, L, L) tensor; u = (w + 0.5) / 2^32 in double, Box-Muller
// r = sqrt(-2 ln u_a), (r cos 2 pi u_b, r sin 2 pi u_b) on word pairs (0,1), (2,3), in double, then
// rounded to float: the same numbers as the CPU. Step 0 = the initial noise; iteration i uses i + 1.
//
// Step i (k = K-1-i), image n < N, element e = (c, y, x); rows n (cond) and N+n (uncond) of the
// network output, read straight from the final GEMM's token layout (§1.10):
//   eps_c = c < cfg_ch ? u_c + s (cond_c - u_c) : cond_c,   v_c = cond_{C+c}          (§1.11)
//   x0 = sr_k x - srm1_k eps
//   (x0 clamped to [-1, 1] only with clip_denoised)
//   DDPM: mean = c1_k x0 + c2_k x;  f = (v+1)/2;  lv = f log(beta'_k) + (1-f) plvc_k
//         (learn_sigma = 0: lv = FIXED_LARGE log variance)
//         x = mean + ((k != 0) exp(0.5 lv)) noise                                     (§3.5, §3.6)
//   DDIM: eps' = (sr_k x - x0) / srm1_k;  x = x0 sqrt(abar'_prev) + sqrt(1 - abar'_prev - sigma^2) eps'
//         (+ sigma noise when k != 0 and eta != 0)                                     (§3.7)
// Coefficients are the float64 schedule rounded once to fp32 (host). Divisions are IEEE (__fdiv_rn),
// exp in double, so the arithmetic rounds like the CPU's up to FMA contraction.
// Image n is image img0 + n of the whole job (its Philox stream), so a data-parallel rank draws the same
// noise as one GPU would. A non-finite result records the step in state->nonfinite_step. The last CTA to finish advances
// state->step and state->mod_row, so one captured graph serves every step.
#include "common.cuh"
#include <limits.h>

#define SAMPLER_THREADS 128

static __device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint32_t k0, uint32_t k1) {
#pragma unroll
    for (int r = 0; r < 10; r++) {
        const uint32_t lo0 = 0xD2511F53u * c.x, hi0 = __umulhi(0xD2511F53u, c.x);
        const uint32_t lo1 = 0xCD9E8D57u * c.z, hi1 = __umulhi(0xCD9E8D57u, c.z);
        c = make_uint4(hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0);
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return c;
}

// the 4 normals of group j of (image, step)
static __device__ __forceinline__ void randn4(uint64_t seed, uint32_t image, uint32_t step, uint32_t j, float *z) {
    const uint4 w = philox4x32_10(make_uint4(j, image, step, 0x44695421u), (uint32_t)seed, (uint32_t)(seed >> 32));
    const uint32_t ws[4] = { w.x, w.y, w.z, w.w };
#pragma unroll
    for (int pr = 0; pr < 2; pr++) {
        const double ua = ((double)ws[2 * pr] + 0.5) / 4294967296.0;
        const double ub = ((double)ws[2 * pr + 1] + 0.5) / 4294967296.0;
        const double r = sqrt(-2.0 * log(ua));
        const double th = 2.0 * 3.141592653589793 * ub;
        z[2 * pr] = (float)(r * cos(th));
        z[2 * pr + 1] = (float)(r * sin(th));
    }
}

static __global__ void randn_kernel(uint64_t seed, int img0, int n_img, uint32_t step, float *__restrict__ out,
                                    int64_t per) {
    const int64_t groups = (per + 3) / 4;
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= groups * n_img) return;
    const int n = (int)(t / groups);
    const uint32_t j = (uint32_t)(t % groups);
    float z[4];
    randn4(seed, (uint32_t)(img0 + n), step, j, z);
#pragma unroll
    for (int e = 0; e < 4; e++)
        if (4 * (int64_t)j + e < per) out[n * per + 4 * (int64_t)j + e] = z[e];
}

int dit_op_randn(uint64_t seed, int img0, int n_img, uint32_t step, float *out, int64_t per_image, cudaStream_t st) {
    const int64_t threads = (per_image + 3) / 4 * n_img;
    randn_kernel<<<cdiv(threads, 256), 256, 0, st>>>(seed, img0, n_img, step, out, per_image);
    LAUNCH_CHECK();
    return DIT_OK;
}

static __global__ void sampler_step_kernel(dit_sampler_args a, const float *__restrict__ fout, float *__restrict__ lat,
                                           float *__restrict__ x0prev, const float *__restrict__ coef,
                                           const float *__restrict__ noise, dit_cuda_state *state) {
    const int step = state->step;
    const int LL = a.L * a.L, per = a.C * LL;
    const int groups = (per + 3) / 4;
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < groups * a.N) {
        const int n = t / groups, j = t % groups;
        const float *co = coef + (int64_t)step * CO_STRIDE;
        const float sr = co[CO_SR], srm1 = co[CO_SRM1], mask = co[CO_MASK];
        float z[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
        const bool want_noise = a.sampler == DIT_SAMPLER_DDPM ? mask != 0.0f
                                : a.sampler == DIT_SAMPLER_DDIM && mask != 0.0f && a.eta != 0.0f;
        if (want_noise) {
            if (noise) {
                for (int e = 0; e < 4; e++)
                    if (4 * j + e < per) z[e] = noise[((int64_t)step * a.N + n) * per + 4 * j + e];
            } else {
                randn4(a.seed, (uint32_t)(a.img0 + n), (uint32_t)(step + 1), (uint32_t)j, z);
            }
        }
        const int g = a.L / a.p, T = g * g, F = a.p * a.p * a.oc;
        bool bad = false;
        for (int e = 0; e < 4; e++) {
            const int el = 4 * j + e;
            if (el >= per) break;
            const int c = el / LL, yy = (el / a.L) % a.L, xx = el % a.L;
            const int m = (yy / a.p) * g + xx / a.p, f = ((yy % a.p) * a.p + xx % a.p) * a.oc + c;
            const float *cond = fout + ((int64_t)n * T + m) * F;
            const float *unc = fout + ((int64_t)(a.N + n) * T + m) * F;
            float eps = cond[f];
            if (c < a.cfg_ch) eps = unc[f] + a.cfg_scale * (cond[f] - unc[f]);
            float *xp = lat + (int64_t)n * per + el;
            const float x = *xp;
            float x0 = sr * x - srm1 * eps;
            if (a.clip) x0 = fminf(fmaxf(x0, -1.0f), 1.0f);
            float xn;
            if (a.sampler == DIT_SAMPLER_DPMPP_2M) {   // x = A x + B0 x0 + B1 x0_prev (dit_dpmpp2m_coefs)
                float *pv = x0prev + (int64_t)n * per + el;
                const float b1 = co[CO_DB1];
                xn = co[CO_DA] * x + co[CO_DB0] * x0;
                if (b1 != 0.0f) xn = xn + b1 * *pv;   // not read at the first step
                *pv = x0;
            } else if (a.sampler == DIT_SAMPLER_DDPM) {
                const float mean = co[CO_C1] * x0 + co[CO_C2] * x;
                float lv = co[CO_FIXED];   // learn_sigma = 0: FIXED_LARGE
                if (a.learn_sigma) {
                    const float v = cond[f + a.C];   // channel C + c of the same pixel
                    const float frac = (v + 1.0f) * 0.5f;
                    lv = frac * co[CO_LOGB] + (1.0f - frac) * co[CO_PLVC];
                }
                xn = mean + (mask * (float)exp(0.5 * (double)lv)) * z[e];
            } else {
                const float eps2 = __fdiv_rn(sr * x - x0, srm1);
                xn = x0 * co[CO_SABP] + co[CO_S2] * eps2;
                if (want_noise) xn = xn + co[CO_SIGMA] * z[e];
            }
            *xp = xn;
            bad |= !isfinite(xn);
        }
        if (bad) atomicMin(&state->nonfinite_step, step);
    }
    // advance the step once every CTA has read it
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        const unsigned int prev = atomicAdd(&state->done, 1u);
        if (prev == gridDim.x - 1) {
            state->step = step + 1;
            state->mod_row += a.rows;
            state->done = 0;
            __threadfence();
        }
    }
}

int dit_op_sampler_step(const dit_sampler_args *a, const float *fout, float *lat, float *x0prev, const float *coef,
                        const float *noise, dit_cuda_state *state, cudaStream_t st) {
    const int groups = (a->C * a->L * a->L + 3) / 4;
    const int grid = cdiv((int64_t)groups * a->N, SAMPLER_THREADS);
    sampler_step_kernel<<<grid, SAMPLER_THREADS, 0, st>>>(*a, fout, lat, x0prev, coef, noise, state);
    LAUNCH_CHECK();
    return DIT_OK;
}

static __global__ void state_set_kernel(dit_cuda_state *s, int step, int mod_row, int reset_nonfinite) {
    s->step = step;
    s->mod_row = mod_row;
    s->done = 0;
    if (reset_nonfinite) s->nonfinite_step = INT_MAX;
}

int dit_op_state_set(dit_cuda_state *s, int step, int mod_row, int reset_nonfinite, cudaStream_t st) {
    state_set_kernel<<<1, 1, 0, st>>>(s, step, mod_row, reset_nonfinite);
    LAUNCH_CHECK();
    return DIT_OK;
}
