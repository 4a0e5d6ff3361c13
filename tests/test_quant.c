/* test_quant.c - fp16/bf16 conversions and the ggml block quantizers of dit.c, against independent
   vectors (tests/fixtures/quant/, made by tests/ref/quant_vectors.py from the documented formulas; the
   format is in tests/fixtures/quant/README.md), plus error bounds derived from the block formats.

   Also helpers for tests/test_quantize.sh (not tests):
     bin/tests/test_quant --make-gguf OUT.gguf [--xl] [--type f32|f16|bf16|q8_0|...]
       writes a DiT-shaped GGUF with random weights: a small one (DiT block names and shapes, hidden 64,
       2 blocks, a few vae.* tensors, one tensor with 48-wide rows) or, with --xl, the DiT-XL/2 256x256
       shapes (675M values, 2.7 GB in f32). --type applies where the rows fit, f32 elsewhere.
     bin/tests/test_quant --list FILE.gguf        KVs and tensors (type, dims, crc32 of the data)
     bin/tests/test_quant --compare REF.npy X.npy rmse, max |diff|, PSNR over the range of REF
     bin/tests/test_quant --sample MODEL.gguf OUT.npy   DDIM-10 latents, seed 7, labels 1 and 3, CFG 4 */
#include "dit.h"
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static int failures;
static void check(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int cond, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf(cond ? "ok - " : "not ok - ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    failures += !cond;
}

#define FIX "tests/fixtures/quant/"

static void *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *d = malloc(sz > 0 ? (size_t)sz : 1);
    if (sz < 0 || fread(d, 1, (size_t)sz, f) != (size_t)sz) { free(d); d = NULL; }
    fclose(f);
    *n = (size_t)sz;
    return d;
}

static uint32_t bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
/* same value, or both NaN (NaN payloads of 0*inf are not part of the contract) */
static int same_f32(float a, float b) { return bits(a) == bits(b) || (isnan(a) && isnan(b)); }

/* ---------------------------------------------------------------- cases.txt */
typedef struct { int first, n; char name[64]; } qcase;
static int read_cases(const char *path, qcase *c, int max) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max) {
        if (line[0] == '#') continue;
        if (sscanf(line, "%d %d %63s", &c[n].first, &c[n].n, c[n].name) == 3) n++;
    }
    fclose(f);
    return n;
}

static const char *case_of(const qcase *c, int nc, int block) {
    for (int i = 0; i < nc; i++)
        if (block >= c[i].first && block < c[i].first + c[i].n) return c[i].name;
    return "?";
}

/* ---------------------------------------------------------------- bit-exact blocks */
static void test_blocks(void) {
    static qcase cases[512];
    int nc = read_cases(FIX "cases.txt", cases, 512);
    size_t nx;
    float *x = slurp(FIX "blocks.f32", &nx);
    if (nc <= 0 || !x || nx % 128) {
        check(0, "read " FIX "blocks.f32 and cases.txt (run tests/ref/quant_vectors.py)");
        free(x);
        return;
    }
    const int64_t n = (int64_t)(nx / 4), nb = n / 32;
    const int types[3] = {DIT_TYPE_Q8_0, DIT_TYPE_Q4_0, DIT_TYPE_Q5_0};
    for (int ti = 0; ti < 3; ti++) {
        const int t = types[ti], bb = dit_type_block_bytes(t);
        char p[256];
        size_t nq, nd;
        snprintf(p, sizeof p, FIX "blocks.%s", dit_type_name(t));
        uint8_t *want = slurp(p, &nq);
        snprintf(p, sizeof p, FIX "blocks.%s.deq", dit_type_name(t));
        float *wdeq = slurp(p, &nd);
        if (!want || !wdeq || nq != (size_t)(nb * bb) || nd != nx) {
            check(0, "%s: read the expected blocks (%s)", dit_type_name(t), p);
            free(want), free(wdeq);
            continue;
        }
        /* whole buffer in one call (multi-block rows) */
        uint8_t *got = malloc(nq);
        memset(got, 0xA5, nq);
        dit_quantize_row(t, x, got, n);
        int bad = 0, bad_fma = 0, first = -1;
        char names[512] = "";
        for (int64_t b = 0; b < nb; b++) {
            if (memcmp(got + b * bb, want + b * bb, (size_t)bb) == 0) continue;
            const char *cn = case_of(cases, nc, (int)b);
            if (strncmp(cn, "fma_sensitive", 13) == 0) { bad_fma++; continue; }
            if (first < 0) first = (int)b;
            if (!strstr(names, cn) && strlen(names) + strlen(cn) + 2 < sizeof names) strcat(strcat(names, " "), cn);
            bad++;
        }
        if (first >= 0) {
            printf("#   %s block %d (%s): want", dit_type_name(t), first, case_of(cases, nc, first));
            for (int i = 0; i < bb; i++) printf(" %02x", want[first * bb + i]);
            printf("\n#   %*s got ", (int)strlen(dit_type_name(t)) + 25, "");
            for (int i = 0; i < bb; i++) printf(" %02x", got[first * bb + i]);
            printf("\n");
        }
        check(bad == 0, "%s: quantize %lld blocks (%d cases) bit-exact to the reference vectors%s%s",
              dit_type_name(t), (long long)nb, nc, bad ? "; wrong in:" : "", names);
        if (t != DIT_TYPE_Q8_0)
            check(bad_fma == 0, "%s: fma_sensitive blocks bit-exact (x*id + %s must be two float roundings: "
                  "fails if the compiler contracts it into an FMA, e.g. -ffp-contract=fast)",
                  dit_type_name(t), t == DIT_TYPE_Q4_0 ? "8.5f" : "16.5f");
        /* block by block gives the same bytes as the whole row */
        int rowwise = 1;
        uint8_t one[64];
        for (int64_t b = 0; b < nb; b++) {
            dit_quantize_row(t, x + b * 32, one, 32);
            rowwise &= memcmp(one, got + b * bb, (size_t)bb) == 0;
        }
        check(rowwise, "%s: one-block calls give the same bytes as one long row", dit_type_name(t));
        /* dequantize the expected blocks */
        float *y = malloc(nx);
        dit_dequantize_row(t, want, y, n);
        int64_t bad_deq = 0, first_deq = -1, signed_zero = 0;
        for (int64_t i = 0; i < n; i++)
            if (!same_f32(y[i], wdeq[i])) {
                bad_deq++;
                signed_zero += y[i] == 0 && wdeq[i] == 0;
                if (first_deq < 0) first_deq = i;
            }
        if (first_deq >= 0)
            printf("#   element %lld (%s): want %.9g got %.9g\n", (long long)first_deq,
                   case_of(cases, nc, (int)(first_deq / 32)), wdeq[first_deq], y[first_deq]);
        check(bad_deq == 0, "%s: dequantize %lld values bit-exact (y = q*d as one float32 product)%s",
              dit_type_name(t), (long long)n, signed_zero == bad_deq && bad_deq ?
              ": only the sign of zero differs (0 * -0 must stay -0: do not add m = 0)" : "");
        free(y), free(got), free(want), free(wdeq);
    }
    free(x);
}

static void test_dequant_only(void) {
    const int types[2] = {DIT_TYPE_Q4_1, DIT_TYPE_Q5_1};
    for (int ti = 0; ti < 2; ti++) {
        const int t = types[ti];
        char p[256];
        size_t nq, nd;
        snprintf(p, sizeof p, FIX "%s.blocks", dit_type_name(t));
        uint8_t *q = slurp(p, &nq);
        snprintf(p, sizeof p, FIX "%s.deq", dit_type_name(t));
        float *want = slurp(p, &nd);
        if (!q || !want || nq / dit_type_block_bytes(t) * 32 * 4 != nd) {
            check(0, "%s: read the dequantization vectors", dit_type_name(t));
            free(q), free(want);
            continue;
        }
        const int64_t n = (int64_t)(nd / 4);
        float *y = malloc(nd);
        dit_dequantize_row(t, q, y, n);
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++) bad += !same_f32(y[i], want[i]);
        check(bad == 0, "%s: dequantize %lld values bit-exact (y = q*d + m, multiply then add)%s",
              dit_type_name(t), (long long)n, bad ? ": some differ" : "");
        free(q), free(want), free(y);
    }
}

/* ---------------------------------------------------------------- special values */
/* ggml's reference is undefined behaviour on these blocks; what dit.c gives is documented in
   tests/fixtures/quant/README.md ("Special blocks"). Here: every call returns, repeated calls give the
   same bytes, and the finite elements of a block whose scale comes from finite values still obey the
   format's error bound. */
static double bound_factor(int t);
static void test_special(void) {
    size_t nx;
    float *x = slurp(FIX "special.f32", &nx);
    static qcase cases[64];
    int nc = read_cases(FIX "special.txt", cases, 64);
    if (!x || nc <= 0) { check(0, "read " FIX "special.f32"); free(x); return; }
    const int64_t nb = (int64_t)(nx / 128);
    const int types[3] = {DIT_TYPE_Q8_0, DIT_TYPE_Q4_0, DIT_TYPE_Q5_0};
    for (int ti = 0; ti < 3; ti++) {
        const int t = types[ti], bb = dit_type_block_bytes(t);
        uint8_t a[64], b[64];
        float y[32];
        int det = 1, nan_ok = 1;
        for (int64_t k = 0; k < nb; k++) {
            const float *xb = x + k * 32;
            dit_quantize_row(t, xb, a, 32);
            dit_quantize_row(t, xb, b, 32);
            det &= memcmp(a, b, (size_t)bb) == 0;
            dit_dequantize_row(t, a, y, 32);
            /* blocks with NaN but no inf: the scale is set by the finite values (NaN never wins the
               max scan in q4_0/q5_0, and dit.c's fmaxf ignores it in q8_0), so finite x keep the bound */
            int has_inf = 0, has_nan = 0;
            float amax = 0;
            for (int j = 0; j < 32; j++) {
                has_inf |= isinf(xb[j]), has_nan |= isnan(xb[j]);
                if (isfinite(xb[j]) && fabsf(xb[j]) > amax) amax = fabsf(xb[j]);
            }
            if (has_nan && !has_inf && amax > 0) {
                const double d = amax / (t == DIT_TYPE_Q8_0 ? 127.0 : t == DIT_TYPE_Q4_0 ? 8.0 : 16.0);
                for (int j = 0; j < 32; j++)
                    if (isfinite(xb[j]) && fabs((double)y[j] - xb[j]) > d * bound_factor(t)) nan_ok = 0;
            }
        }
        check(det, "%s: NaN/inf/underflowing-scale blocks quantize without crashing, deterministically",
              dit_type_name(t));
        check(nan_ok, "%s: finite elements of NaN-containing blocks keep the format's error bound",
              dit_type_name(t));
    }
    /* the documented outcomes, q8_0 (README: Special blocks) */
    uint8_t q[34];
    float y[32];
    for (int k = 0; k < nc; k++) {
        const float *xb = x + cases[k].first * 32;
        dit_quantize_row(DIT_TYPE_Q8_0, xb, q, 32);
        dit_dequantize_row(DIT_TYPE_Q8_0, q, y, 32);
        uint16_t dh;
        memcpy(&dh, q, 2);
        if (!strcmp(cases[k].name, "all_nan")) {
            int zero = dh == 0;
            for (int j = 0; j < 32; j++) zero &= q[2 + j] == 0;
            check(zero, "q8_0: an all-NaN block gives d = 0 and zero codes (dequantizes to 0)");
        } else if (!strcmp(cases[k].name, "pos_inf")) {
            int allnan = 1;
            for (int j = 0; j < 32; j++) allnan &= isnan(y[j]);
            check(dh == 0x7c00 && allnan, "q8_0: a block with +inf gives d = +inf (fp16 0x7c00) and "
                  "dequantizes to NaN (0 * inf), d = %04x", dh);
        } else if (!strcmp(cases[k].name, "tiny_denormal")) {
            int zero = 1;
            for (int j = 0; j < 32; j++) zero &= y[j] == 0;
            check(dh == 0 && zero, "q8_0: a block whose 1/d overflows (|x| ~ 1e-39) dequantizes to 0 "
                  "(fp16 d = 0)");
        }
    }
    free(x);
}

/* ---------------------------------------------------------------- fp16 / bf16 */
static void test_fp16_bf16(void) {
    size_t nf, nh;
    float *f = slurp(FIX "fp16.f32", &nf);
    uint16_t *h = slurp(FIX "fp16.u16", &nh);
    nh /= 2;
    if (!f || !h || nf != nh * 4) check(0, "read " FIX "fp16.*");
    else {
        size_t bad = 0, first = (size_t)-1;
        for (size_t i = 0; i < nh; i++)
            if (dit_fp32_to_fp16(f[i]) != h[i]) { bad++; if (first == (size_t)-1) first = i; }
        if (bad) printf("#   fp16(%a) want %04x got %04x\n", f[first], h[first], dit_fp32_to_fp16(f[first]));
        check(bad == 0, "fp32 -> fp16 round to nearest even on %zu values (ties, subnormals, overflow)", nh);
    }
    free(f), free(h);
    /* fp16 -> fp32 on all 65536 codes against the closed form (-1)^s * 2^(e-15) * (1 + m/1024),
       subnormals 2^-14 * m/1024; every fp16 value is exact in fp32 */
    int bad = 0, rt = 1;
    for (uint32_t c = 0; c < 65536; c++) {
        const int s = c >> 15, e = (c >> 10) & 31, m = c & 1023;
        const float got = dit_fp16_to_fp32((uint16_t)c);
        double want;
        if (e == 31) {
            if (m == 0 ? !(isinf(got) && (signbit(got) != 0) == s) : !isnan(got)) bad++;
            if (m) continue;
        } else {
            want = e ? ldexp(1.0 + m / 1024.0, e - 15) : ldexp(m / 1024.0, -14);
            if (s) want = -want;
            if (bits(got) != bits((float)want)) bad++;
        }
        rt &= dit_fp32_to_fp16(got) == c;   /* representable values round-trip exactly */
    }
    check(bad == 0, "fp16 -> fp32 exact on all 65536 codes (closed form, NaN stays NaN)");
    check(rt, "fp16 -> fp32 -> fp16 is the identity on every non-NaN code");
    /* NaN in, NaN out (payload not part of the contract), sign kept */
    const uint32_t nans[6] = {0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x7FA00000};
    int nan_ok = 1;
    for (int i = 0; i < 6; i++) {
        const uint16_t r = dit_fp32_to_fp16(from_bits(nans[i]));
        nan_ok &= (r & 0x7c00) == 0x7c00 && (r & 0x3ff) != 0 && (r >> 15) == (nans[i] >> 31);
    }
    check(nan_ok, "fp32 NaN -> fp16 NaN with its sign (signalling NaNs included)");

    size_t nbf, nbh;
    float *bf = slurp(FIX "bf16.f32", &nbf);
    uint16_t *bh = slurp(FIX "bf16.u16", &nbh);
    nbh /= 2;
    if (!bf || !bh || nbf != nbh * 4) check(0, "read " FIX "bf16.*");
    else {
        size_t badb = 0, first = (size_t)-1;
        for (size_t i = 0; i < nbh; i++)
            if (dit_fp32_to_bf16(bf[i]) != bh[i]) { badb++; if (first == (size_t)-1) first = i; }
        if (badb) printf("#   bf16(%08x) want %04x got %04x\n", bits(bf[first]), bh[first], dit_fp32_to_bf16(bf[first]));
        check(badb == 0, "fp32 -> bf16 (ggml rule: RNE, NaN -> (u >> 16) | 64) on %zu values", nbh);
    }
    free(bf), free(bh);
    int bb = 1, brt = 1;
    for (uint32_t c = 0; c < 65536; c++) {
        const float v = dit_bf16_to_fp32((uint16_t)c);
        bb &= bits(v) == c << 16;
        if (!isnan(v) || (c & 64)) brt &= dit_fp32_to_bf16(v) == c;   /* quiet NaNs round-trip too */
    }
    check(bb, "bf16 -> fp32 is the top 16 bits on all 65536 codes");
    check(brt, "bf16 -> fp32 -> bf16 is the identity on every non-NaN and quiet-NaN code");
}

/* ---------------------------------------------------------------- error bounds */
/* Deterministic generator (splitmix64 + Box-Muller), independent of the fixtures. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return ((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0) + 0x1p-54;
}
static double nrand(void) { return sqrt(-2 * log(urand())) * cos(6.283185307179586 * urand()); }

/* Per-element error bound from the block format, in units of the exact scale |d| = amax/qd:
     q8_0 (qd = 127): |x - q*d| <= d/2 (roundf), codes |q| <= 127;
     q4_0 (qd = 8):   q = floor(x/d + 8.5) in [0, 15]: |x - (q-8)*d| <= d/2, except x/d in (7.5, 8]
                      (the element opposite in sign to the block max), clamped to 7: error <= (x/d - 7) d <= d;
     q5_0 (qd = 16):  same with 16.5, 31 and (15.5, 16].
   The stored scale is fp16(d): |fp16(d) - d| <= d * 2^-11 (11-bit significand, normal fp16 range)
   or 2^-25 (subnormal fp16, half an ulp of 2^-24), times |q| <= qd. A slack of 4e-6 * d covers the
   float32 roundings of x*id, of x*id + 8.5 (ulp(16) = 2^-19, i.e. 1.9e-6 in units of d) and of y = q*d. */
static double bound_factor(int t) {
    (void)t;
    return 0.5 + 4e-6;
}

static int check_bounds(int t, const float *x, int64_t n, double *sqnr, double *max_rel) {
    const int qd = t == DIT_TYPE_Q8_0 ? 127 : t == DIT_TYPE_Q4_0 ? 8 : 16;
    uint8_t *q = malloc(dit_row_bytes(t, n));
    float *y = malloc((size_t)n * 4);
    dit_quantize_row(t, x, q, n);
    dit_dequantize_row(t, q, y, n);
    int ok = 1;
    double se = 0, sx = 0;
    *max_rel = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + b * 32, *yb = y + b * 32;
        double amax = 0;
        for (int j = 0; j < 32; j++) amax = fmax(amax, fabs(xb[j]));
        const double d = amax / qd;
        const double dh_err = fmax(d * 0x1p-11, 0x1p-25);
        for (int j = 0; j < 32; j++) {
            const double e = fabs((double)yb[j] - xb[j]);
            double u = 0.5;   /* in units of d */
            if (t != DIT_TYPE_Q8_0) {
                /* x/d with d signed: the block max maps to -qd, the opposite extreme to +qd */
                double mx = 0, am = 0;
                for (int k = 0; k < 32; k++) if (am < fabs(xb[k])) am = fabs(xb[k]), mx = xb[k];
                const double r = xb[j] / (mx / -qd);
                if (r > qd - 0.5) u = r - (qd - 1);
            }
            const double bound = d * (u + 4e-6) + qd * dh_err;
            if (e > bound) ok = 0;
            if (d > 0) *max_rel = fmax(*max_rel, e / d);
            se += e * e, sx += (double)xb[j] * xb[j];
        }
    }
    *sqnr = 10 * log10(sx / fmax(se, 1e-300));
    free(q), free(y);
    return ok;
}

static void test_bounds(void) {
    const int64_t n = 32 * 4096;
    float *x = malloc((size_t)n * 4);
    const char *kinds[4] = {"normal(0, 0.02)", "student-t(3) * 0.02", "normal with 1% 20x outliers",
                            "normal(0, 1e-5) (fp16-subnormal scales)"};
    const int types[3] = {DIT_TYPE_Q8_0, DIT_TYPE_Q5_0, DIT_TYPE_Q4_0};
    for (int k = 0; k < 4; k++) {
        for (int64_t i = 0; i < n; i++) {
            double v = nrand();
            if (k == 1) {   /* t(3) = z / sqrt(chi2_3 / 3) */
                double c = 0;
                for (int r = 0; r < 3; r++) { double g = nrand(); c += g * g; }
                v /= sqrt(c / 3);
            }
            if (k == 2 && urand() < 0.01) v *= 20;
            x[i] = (float)(v * (k == 3 ? 1e-5 : 0.02));
        }
        for (int ti = 0; ti < 3; ti++) {
            double sqnr, mr;
            const int ok = check_bounds(types[ti], x, n, &sqnr, &mr);
            check(ok, "%s: |x - deq(q(x))| within the format bound on %s (sqnr %.1f dB, max |e|/d %.3f)",
                  dit_type_name(types[ti]), kinds[k], sqnr, mr);
        }
        /* fp16 / bf16 relative error on the same rows (normal range): 2^-11 and 2^-8 */
        double mf = 0, mb = 0;
        for (int64_t i = 0; i < n; i++) {
            if (fabsf(x[i]) < 6.2e-5f) continue;   /* fp16 subnormal range: absolute error instead */
            mf = fmax(mf, fabs(dit_fp16_to_fp32(dit_fp32_to_fp16(x[i])) - x[i]) / fabs(x[i]));
            mb = fmax(mb, fabs(dit_bf16_to_fp32(dit_fp32_to_bf16(x[i])) - x[i]) / fabs(x[i]));
        }
        check(mf <= 0x1p-11 && mb <= 0x1p-8, "f16/bf16 relative error <= 2^-11 / 2^-8 on %s (%.3g, %.3g)",
              kinds[k], mf, mb);
    }
    free(x);
}

static void test_names(void) {
    check(dit_type_from_name("Q8_0") == DIT_TYPE_Q8_0 && dit_type_from_name("bf16") == DIT_TYPE_BF16 &&
          dit_type_from_name("F16") == DIT_TYPE_F16 && dit_type_from_name("q4_0") == DIT_TYPE_Q4_0 &&
          dit_type_from_name("q5_0") == DIT_TYPE_Q5_0 && dit_type_from_name("q9_0") == -1,
          "type names parse case-insensitively");
    check(dit_row_bytes(DIT_TYPE_Q8_0, 1152) == 36 * 34 && dit_row_bytes(DIT_TYPE_Q4_0, 4608) == 144 * 18 &&
          dit_row_bytes(DIT_TYPE_Q5_0, 64) == 44, "row sizes of the block types");
}

/* ---------------------------------------------------------------- fixture maker */
static int make_gguf(const char *path, int xl, int type) {
    /* DiT hparams: small = DiT-S-like but 2 blocks, hidden 64; xl = DiT-XL/2 at 256x256 */
    const int D = xl ? 1152 : 64, depth = xl ? 28 : 2, F = 4 * D, C = 4, p = 2, L = 32, T = (L / p) * (L / p);
    const int ncls = xl ? 1000 : 10, out = 2 * C;
    dit_gguf_writer *w = dit_gguf_writer_new();
    dit_gguf_set_str(w, "general.architecture", "dit");
    dit_gguf_set_str(w, "general.name", xl ? "DiT-XL-2-256 random" : "dit quant fixture");
    dit_gguf_set_u32(w, "general.file_type", type == DIT_TYPE_F32 ? 0 : 1);
    dit_gguf_set_u32(w, "dit.depth", (uint32_t)depth);
    dit_gguf_set_u32(w, "dit.hidden_size", (uint32_t)D);
    dit_gguf_set_u32(w, "dit.patch_size", (uint32_t)p);
    dit_gguf_set_str(w, "test.note", "random weights; made by bin/tests/test_quant --make-gguf");
    struct { char name[64]; int nd; int64_t ne[4]; } t[512];   /* XL: 292 */
    int nt = 0;
#define ADD(nm, n_d, a, b, c, e) do { snprintf(t[nt].name, 64, "%s", nm); t[nt].nd = n_d; \
        t[nt].ne[0] = a, t[nt].ne[1] = b, t[nt].ne[2] = c, t[nt].ne[3] = e; nt++; } while (0)
    ADD("pos_embed", 3, D, T, 1, 1);
    ADD("x_embedder.proj.weight", 4, p, p, C, D);
    ADD("x_embedder.proj.bias", 1, D, 1, 1, 1);
    ADD("t_embedder.mlp.0.weight", 2, 256, D, 1, 1);
    ADD("t_embedder.mlp.0.bias", 1, D, 1, 1, 1);
    ADD("t_embedder.mlp.2.weight", 2, D, D, 1, 1);
    ADD("t_embedder.mlp.2.bias", 1, D, 1, 1, 1);
    ADD("y_embedder.embedding_table.weight", 2, D, ncls + 1, 1, 1);
    for (int i = 0; i < depth; i++) {
        char nm[64];
        const struct { const char *s; int64_t in, o; } L4[5] = {
            {"attn.qkv", D, 3 * D}, {"attn.proj", D, D}, {"mlp.fc1", D, F}, {"mlp.fc2", F, D},
            {"adaLN_modulation.1", D, 6 * D}};
        for (int k = 0; k < 5; k++) {
            snprintf(nm, sizeof nm, "blocks.%d.%s.weight", i, L4[k].s);
            ADD(nm, 2, L4[k].in, L4[k].o, 1, 1);
            snprintf(nm, sizeof nm, "blocks.%d.%s.bias", i, L4[k].s);
            ADD(nm, 1, L4[k].o, 1, 1, 1);
        }
    }
    ADD("final_layer.linear.weight", 2, D, p * p * out, 1, 1);
    ADD("final_layer.linear.bias", 1, p * p * out, 1, 1, 1);
    ADD("final_layer.adaLN_modulation.1.weight", 2, D, 2 * D, 1, 1);
    ADD("final_layer.adaLN_modulation.1.bias", 1, 2 * D, 1, 1, 1);
    if (!xl) {   /* a few VAE-shaped tensors: a 3x3 conv (ne0 = 3), a 1x1 conv, an attention linear, a norm */
        ADD("vae.decoder.conv_in.weight", 4, 3, 3, 4, 64);
        ADD("vae.decoder.conv_in.bias", 1, 64, 1, 1, 1);
        ADD("vae.post_quant_conv.weight", 4, 1, 1, 4, 4);
        ADD("vae.decoder.mid_block.attentions.0.to_q.weight", 2, 64, 64, 1, 1);
        ADD("vae.decoder.mid_block.attentions.0.group_norm.weight", 1, 64, 1, 1, 1);
        ADD("odd.rows.weight", 2, 48, 8, 1, 1);   /* ne0 = 48: not a multiple of 32 */
    }
#undef ADD
    for (int i = 0; i < nt; i++)   /* rows that do not fit the block size stay f32 */
        if (dit_gguf_add_tensor(w, t[i].name, t[i].ne[0] % dit_type_block_size(type) ? DIT_TYPE_F32 : type,
                                t[i].nd, t[i].ne) < 0) goto fail;
    if (dit_gguf_writer_begin(w, path)) goto fail;
    for (int i = 0; i < nt; i++) {
        const int64_t n = t[i].ne[0] * t[i].ne[1] * t[i].ne[2] * t[i].ne[3];
        float *x = malloc((size_t)n * 4);
        const double s = strstr(t[i].name, ".bias") ? 0.01 : 1.0 / sqrt((double)t[i].ne[0]);
        if (xl)   /* fast: cheap hash noise, roughly uniform with the same scale */
            for (int64_t j = 0; j < n; j++) x[j] = (float)((urand() * 2 - 1) * 1.7 * s);
        else
            for (int64_t j = 0; j < n; j++) x[j] = (float)(nrand() * s);
        const int tt = t[i].ne[0] % dit_type_block_size(type) ? DIT_TYPE_F32 : type;
        void *q = malloc(dit_row_bytes(tt, n) + 1);
        dit_quantize_row(tt, x, q, n);
        const int rc = dit_gguf_writer_write(w, q, dit_row_bytes(tt, n));
        free(x), free(q);
        if (rc) goto fail;
    }
    if (dit_gguf_writer_finish(w)) { fprintf(stderr, "%s\n", dit_last_error()); return 1; }
    return 0;
fail:
    fprintf(stderr, "%s\n", dit_last_error());
    dit_gguf_writer_free(w);
    return 1;
}

/* --list FILE: one line per KV ("kv KEY = VALUE") and per tensor ("tensor NAME TYPE [ne] crc32"). */
static int list_gguf(const char *path) {
    dit_gguf *g = dit_gguf_open(path);
    if (!g) { fprintf(stderr, "%s\n", dit_last_error()); return dit_last_error_code(); }
    char buf[512];
    for (int64_t i = 0; i < dit_gguf_n_kv(g); i++) {
        dit_gguf_kv_format(g, i, buf, sizeof buf);
        printf("kv %s = %s\n", dit_gguf_kv_key(g, i), buf);
    }
    for (int64_t i = 0; i < dit_gguf_n_tensors(g); i++) {
        const dit_gguf_tensor *t = dit_gguf_tensor_at(g, i);
        printf("tensor %s %s [", t->name, dit_type_name(t->type));
        for (int d = 0; d < t->n_dims; d++) printf("%s%lld", d ? "," : "", (long long)t->ne[d]);
        printf("] %08lx\n", crc32(0, t->data, (unsigned)t->nbytes));
    }
    dit_gguf_close(g);
    return 0;
}

/* --compare REF.npy X.npy: rms(ref), rmse, rel = rmse / rms(ref), max |diff| and
   PSNR = 20 log10((max(ref) - min(ref)) / rmse). */
static int compare_npy(const char *a, const char *b) {
    int na, nb;
    int64_t sa[8], sb[8];
    float *x, *y;
    if (dit_npy_read(a, &na, sa, &x) || dit_npy_read(b, &nb, sb, &y)) { fprintf(stderr, "%s\n", dit_last_error()); return 2; }
    int64_t n = 1, m = 1;
    for (int i = 0; i < na; i++) n *= sa[i];
    for (int i = 0; i < nb; i++) m *= sb[i];
    if (n != m || n == 0) { fprintf(stderr, "shape mismatch\n"); return 2; }
    double se = 0, sx = 0, mx = 0, lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        const double e = (double)y[i] - x[i];
        se += e * e, sx += (double)x[i] * x[i], mx = fmax(mx, fabs(e)), lo = fmin(lo, x[i]), hi = fmax(hi, x[i]);
        if (!isfinite(y[i])) mx = INFINITY;
    }
    const double rmse = sqrt(se / n);
    printf("rms(ref) %.4g rmse %.4g rel %.4g max %.4g psnr %.2f\n", sqrt(sx / n), rmse, rmse / sqrt(fmax(sx / n, 1e-300)),
           mx, rmse > 0 ? 20 * log10((hi - lo) / rmse) : INFINITY);
    free(x), free(y);
    return 0;
}

/* --sample MODEL.gguf OUT.npy: the fixed quality run of tests/test_quantize.sh through the library
   (what dit-sample --save-latent does): DDIM 10 steps (spacing "ddim10"), eta 0, CFG 4, seed 7,
   labels {1, 3}, CPU backend; writes the (2, C, L, L) latents. */
static int sample_latents(const char *model, const char *out) {
    dit_model *m = dit_model_load(model);
    if (!m) { fprintf(stderr, "%s\n", dit_last_error()); return dit_last_error_code(); }
    int labels[2] = {1, 3};
    dit_sample_params p = dit_sample_params_default();
    p.sampler = DIT_SAMPLER_DDIM, p.steps = 10, p.spacing = "ddim10", p.eta = 0, p.cfg_scale = 4.0f;
    p.seed = 7, p.n = 2, p.labels = labels, p.backend = DIT_BACKEND_CPU, p.threads = 1;   /* tiny models: 1 thread is fastest */
    const size_t nl = dit_latent_floats(m);
    float *lat = malloc(2 * nl * sizeof(float));
    int rc = dit_sample(m, &p, lat);
    if (!rc) {
        const int64_t shape[4] = {2, m->cfg.in_channels, m->cfg.input_size, m->cfg.input_size};
        rc = dit_npy_write(out, 4, shape, lat);
    }
    if (rc) fprintf(stderr, "%s\n", dit_last_error());
    free(lat);
    dit_model_free(m);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--sample")) return sample_latents(argv[2], argv[3]);
    if (argc == 3 && !strcmp(argv[1], "--list")) return list_gguf(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "--compare")) return compare_npy(argv[2], argv[3]);
    if (argc >= 3 && !strcmp(argv[1], "--make-gguf")) {
        int xl = 0, type = DIT_TYPE_F32;
        for (int i = 3; i < argc; i++) {
            if (!strcmp(argv[i], "--xl")) xl = 1;
            else if (!strcmp(argv[i], "--type") && i + 1 < argc) type = dit_type_from_name(argv[++i]);
        }
        if (type < 0) { fprintf(stderr, "bad --type\n"); return 2; }
        return make_gguf(argv[2], xl, type);
    }
    test_names();
    test_blocks();
    test_dequant_only();
    test_special();
    test_fp16_bf16();
    test_bounds();
    return failures ? 1 : 0;
}
