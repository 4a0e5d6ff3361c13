/* test_runtime.c - the CPU reference runtime (dit_runtime.c) against the float64 PyTorch fixtures.

   bin/tests/test_runtime [MODELDIR]
     MODELDIR holds the fixture models as GGUF: dit_s.gguf (DiT-S fixture + the tiny VAE vae_s), dit_px.gguf,
     dit_xs.gguf, dit_xs_f16.gguf, dit_xs_bf16.gguf. Without it the program converts the tests/fixtures models
     with bin/dit-convert into a temporary directory (tests that need a model SKIP if that fails).
   Run from the repo root (tests/run.sh does). No GPU. TAP lines; exit 1 if anything failed.

   Tolerances (tests/fixtures/README.md measured float32 PyTorch against the same float64 reference):
     elementwise |c - ref| <= tol * max(1, max|ref|)
     forward outputs and intermediates  2e-5  (fp32 PyTorch: 3.4e-7 relative; we sum in other orders)
     10-step chains                     5e-5  (fp32 PyTorch: <= 1.0e-6; errors grow along the chain)
     250-step chain                     1e-4  (fp32 PyTorch: 1.1e-6)
     VAE decode                         2e-5  (fp32 PyTorch: 1.0e-6)
     Philox normals                     1e-6 absolute (double math, one rounding to float32)
     schedule arrays                    2e-15 relative (float64 both sides; libm log/sqrt last bits)
   Each check prints the measured max error so the margin is visible. */
#include "dit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#pragma GCC diagnostic ignored "-Wunused-function"   /* stb_image's unused static helpers */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
#pragma GCC diagnostic pop

/* test hooks exported by dit_runtime.c (not in dit.h) */
int dit__forward_taps(const dit_model *m, const float *x, const float *t, const int *y, int B, float *out,
                      int threads, float *temb, float *c, float *block0);
void dit__philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

#include "tap.h"   /* ok(), skip(), fix(), mpath(), failures, FIX, moddir, tmpdir */

static const char *tpath(const char *name)
{
    static char p[300];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

/* fixture .npy as float (count checked against `n` when n > 0) */
static double *fix64(const char *name, size_t *n)
{
    char p[512];
    int nd;
    int64_t sh[8];
    double *d = NULL;
    snprintf(p, sizeof p, FIX "%s.npy", name);
    if (dit_npy_read_f64(p, &nd, sh, &d)) return NULL;
    *n = 1;
    for (int i = 0; i < nd; i++) *n *= (size_t)sh[i];
    return d;
}

/* |got - ref| <= tol * max(1, max|ref|) elementwise; prints max error and the bound */
static void compare(const char *what, const float *got, const float *ref, size_t n, double tol)
{
    if (!got || !ref) {
        ok(0, "%s: missing data (%s)", what, dit_last_error());
        return;
    }
    double mref = 0, md = 0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) mref = fmax(mref, fabs(ref[i]));
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= md)) {   /* NaN counts as worst */
            md = isnan(d) ? INFINITY : d;
            worst = i;
        }
    }
    double bound = tol * fmax(1.0, mref);
    ok(md <= bound, "%s: max|diff| %.3g (rel %.2g) <= %.3g  [at %zu: %.6g vs %.6g]", what, md, md / fmax(1.0, mref),
       bound, worst, got[worst], ref[worst]);
}

static int *labels_of(const float *f, int n)
{
    int *y = malloc(n * sizeof(int));
    for (int i = 0; i < n; i++) y[i] = (int)f[i];
    return y;
}

/* ==== Philox ==== */

static void test_philox(void)
{
    static const uint32_t kat[3][10] = {   /* Random123 kat_vectors: ctr[4], key[2] -> out[4] */
        { 0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8 },
        { 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d, 0x41c83b0e, 0xa20bc7c6,
          0x6d5451fd },
        { 0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09, 0x94fdcceb, 0x5001e420,
          0x24126ea1 },
    };
    for (int v = 0; v < 3; v++) {
        uint32_t out[4];
        dit__philox4x32_10(kat[v], kat[v] + 4, out);
        ok(!memcmp(out, kat[v] + 6, sizeof out), "Philox4x32-10 known answer %d: %08x %08x %08x %08x", v, out[0], out[1],
           out[2], out[3]);
    }
    float got[64], *ref = fix("philox_first", 64);
    dit_randn(42, 1, 3, got, 64);
    compare("dit_randn(seed 42, image 1, step 3) == philox_first", got, ref, 64, 1e-6);
    if (ref) {
        int exact = 0;
        for (int i = 0; i < 64; i++) exact += got[i] == ref[i];
        printf("# philox_first: %d/64 bit-identical to numpy\n", exact);
    }
    free(ref);
    float init[512], *ri = fix("philox_init", 512);
    dit_randn(42, 0, 0, init, 256);
    dit_randn(42, 1, 0, init + 256, 256);
    compare("dit_randn(seed 42, images 0-1, step 0) == philox_init", init, ri, 512, 1e-6);
    free(ri);
    /* odd lengths: a prefix of the same stream */
    float a[7], b[8];
    dit_randn(7, 2, 5, a, 7);
    dit_randn(7, 2, 5, b, 8);
    ok(!memcmp(a, b, sizeof a), "dit_randn: n = 7 is a prefix of n = 8");
    /* moments of 2^16 normals: mean ~ 0 (sd 0.004), var ~ 1 (sd 0.0055) */
    size_t n = 1 << 16;
    float *z = malloc(n * sizeof(float));
    dit_randn(123456789012345ull, 0, 0, z, n);
    double s = 0, ss = 0;
    for (size_t i = 0; i < n; i++) s += z[i], ss += (double)z[i] * z[i];
    double mean = s / n, var = ss / n - mean * mean;
    ok(fabs(mean) < 0.02 && fabs(var - 1) < 0.03, "dit_randn moments: mean %.4f var %.4f (5 sigma bounds)", mean, var);
    free(z);
}

/* ==== Schedule ==== */

static void test_schedule(void)
{
    static const struct { const char *spacing, *file; } tm[] = {
        { "250", "sched_250_tmap" }, { "50", "sched_50_tmap" }, { "ddim50", "sched_ddim50_tmap" },
        { "10", "sched_10_tmap" }, { "ddim10", "sched_ddim10_tmap" }, { "10,20,30", "sched_10_20_30_tmap" },
        { "linspace25", "sched_linspace25_tmap" },
    };
    for (size_t i = 0; i < sizeof tm / sizeof tm[0]; i++) {
        dit_schedule s;
        size_t n = 0;
        double *ref = fix64(tm[i].file, &n);
        int rc = dit_schedule_init(&s, tm[i].spacing);
        int same = ref && rc == 0 && (size_t)s.K == n;
        for (size_t k = 0; same && k < n; k++) same = s.timestep_map[k] == (int)ref[k];
        ok(same, "timestep map \"%s\": K = %d, exact", tm[i].spacing, s.K);
        free(ref);
    }
    dit_schedule s;
    dit_schedule_init(&s, "250");
    const struct { const char *file; const double *arr; } ar[] = {
        { "sched_250_betas", s.betas }, { "sched_250_alphas_cumprod", s.alphas_cumprod },
        { "sched_250_post_logvar_clipped", s.posterior_log_variance_clipped }, { "sched_250_coef1", s.posterior_mean_coef1 },
        { "sched_250_coef2", s.posterior_mean_coef2 }, { "sched_250_sqrt_recip", s.sqrt_recip_alphas_cumprod },
        { "sched_250_sqrt_recipm1", s.sqrt_recipm1_alphas_cumprod },
    };
    for (size_t i = 0; i < sizeof ar / sizeof ar[0]; i++) {
        size_t n = 0;
        double *ref = fix64(ar[i].file, &n), md = 0;
        int exact = 0;
        for (size_t k = 0; ref && k < n; k++) {
            md = fmax(md, fabs(ar[i].arr[k] - ref[k]) / fabs(ref[k]));
            exact += ar[i].arr[k] == ref[k];
        }
        ok(ref && n == 250 && md <= 2e-15, "schedule \"250\" %s: max rel diff %.2g, %d/250 bit-identical", ar[i].file + 10,
           md, exact);
        free(ref);
    }
    /* §3.3: beta'_0 = 1 - (1 - 1e-4) = 9.999999999998899e-05, not 1e-4 */
    ok(s.betas[0] == 9.999999999998899e-05, "respaced beta'_0 = %.17g", s.betas[0]);
    ok(s.alphas_cumprod_prev[0] == 1.0 && s.posterior_log_variance_clipped[0] == s.posterior_log_variance_clipped[1],
       "alphas_cumprod_prev[0] = 1, post_logvar_clipped[0] = [1]");
    dit_schedule_init(&s, "");
    int ident = s.K == 1000;
    for (int k = 0; ident && k < 1000; k++) ident = s.timestep_map[k] == k;
    ok(ident, "spacing \"\" = all 1000 steps (still respaced: beta'_999 = %.17g)", s.betas[999]);
    dit_schedule_init(&s, "ddim25");
    ok(s.K == 25 && s.timestep_map[1] == 40 && s.timestep_map[24] == 960, "ddim25 -> 0, 40, ..., 960");
    dit_schedule_init(&s, "linspace999");
    ok(s.K == 999 && s.timestep_map[0] == 1 && s.timestep_map[998] == 999, "linspace999 -> 1, 2, ..., 999");
    dit_schedule_init(&s, "linspace2");
    ok(s.K == 2 && s.timestep_map[0] == 500 && s.timestep_map[1] == 999, "linspace2 -> 500 (499.5 to even), 999");
    static const char *bad[] = { "ddim0", "0", "abc", "1001", "10,", "ddim", "-5", "500,501", "linspace0",
                                 "linspace1000", "linspace", "linspace5x" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = dit_schedule_init(&s, bad[i]);
        ok(rc == DIT_ERR_INPUT, "spacing \"%s\" rejected: %s", bad[i], dit_last_error());
    }
}

/* ==== Model files for the error and quantization tests ==== */

enum { RW_NONE, RW_DROP, RW_RESHAPE, RW_BADTYPE, RW_NAN };
/* Copies src to dst. qtype >= 0: every 2-D weight with ne0 % 32 == 0 becomes qtype (twin = 0) or f32 holding the
   dequantized qtype values (twin = 1). action on tensor `name`: drop it, swap its first two dims, give it type id 99,
   or put a NaN in it. */
static int rewrite_model(const char *src, const char *dst, int qtype, int twin, int action, const char *name)
{
    dit_gguf *g = dit_gguf_open(src);
    if (!g) return -1;
    dit_gguf_writer *w = dit_gguf_writer_new();
    dit_gguf_copy_kvs(w, g);
    int64_t nt = dit_gguf_n_tensors(g);
    void **data = calloc(nt, sizeof(void *));
    size_t *nbytes = calloc(nt, sizeof(size_t));
    int rc = 0;
    for (int64_t i = 0; i < nt && !rc; i++) {
        const dit_gguf_tensor *t = dit_gguf_tensor_at(g, i);
        int hit = name && !strcmp(t->name, name);
        if (hit && action == RW_DROP) continue;
        int64_t ne[4];
        memcpy(ne, t->ne, sizeof ne);
        int64_t numel = ne[0] * ne[1] * ne[2] * ne[3];
        int type = t->type;
        float *f = malloc(numel * sizeof(float));
        dit_dequantize_row(t->type, t->data, f, numel);
        if (hit && action == RW_NAN) f[0] = NAN;
        int quant = qtype >= 0 && t->n_dims == 2 && t->ne[0] % dit_type_block_size(qtype) == 0 && strstr(t->name, ".weight") &&
                    strcmp(t->name, "y_embedder.embedding_table.weight");
        if (quant) {
            void *q = malloc(dit_row_bytes(qtype, numel));
            dit_quantize_row(qtype, f, q, numel);
            if (twin) {
                dit_dequantize_row(qtype, q, f, numel);
                free(q);
                type = DIT_TYPE_F32;
                data[i] = f;
            } else {
                free(f);
                type = qtype;
                data[i] = q;
            }
        } else {
            type = DIT_TYPE_F32;
            data[i] = f;
        }
        nbytes[i] = dit_row_bytes(type, numel);
        if (hit && action == RW_RESHAPE) {
            int64_t tmp = ne[0];
            ne[0] = ne[1];
            ne[1] = tmp;
        }
        if (hit && action == RW_BADTYPE) type = DIT_TYPE_Q4_1 + 1;   /* id 4: removed from ggml */
        if (dit_gguf_add_tensor(w, t->name, type, t->n_dims, ne) < 0) rc = -1;
        if (hit && action == RW_BADTYPE) nbytes[i] = 0;
    }
    if (!rc) rc = dit_gguf_writer_begin(w, dst);
    for (int64_t i = 0; i < nt && !rc; i++)
        if (data[i] && nbytes[i]) rc = dit_gguf_writer_write(w, data[i], nbytes[i]);
    if (!rc) rc = dit_gguf_writer_finish(w);
    else dit_gguf_writer_free(w);
    for (int64_t i = 0; i < nt; i++) free(data[i]);
    free(data);
    free(nbytes);
    dit_gguf_close(g);
    return rc;
}

/* ==== DiT forward ==== */

static void test_forward(dit_model *m)
{
    const int B = 2, D = m->cfg.hidden, T = 16;
    float *x = fix("fwd_x", 2 * 256), *tf = fix("fwd_t", 2), *yf = fix("fwd_y", 2);
    if (!x || !tf || !yf) {
        ok(0, "forward fixtures");
        return;
    }
    int *y = labels_of(yf, B);
    float out[2 * 512], out1[2 * 512], temb[2 * 144], c[2 * 144], *block0 = malloc((size_t)B * T * D * sizeof(float));
    int rc = dit__forward_taps(m, x, tf, y, B, out, 0, temb, c, block0);
    ok(rc == 0, "dit_forward dit_s (B=2, t = 3, 999, y = 7, null): %s", rc ? dit_last_error() : "ok");
    float *r;
    compare("t_embedder output == fwd_temb", temb, r = fix("fwd_temb", 2 * 144), 2 * 144, 2e-5), free(r);
    compare("c = t_emb + y_emb == fwd_c", c, r = fix("fwd_c", 2 * 144), 2 * 144, 2e-5), free(r);
    compare("block 0 output == fwd_block0", block0, r = fix("fwd_block0", (size_t)B * T * D), (size_t)B * T * D, 2e-5), free(r);
    compare("forward output == fwd_out", out, r = fix("fwd_out", 2 * 512), 2 * 512, 2e-5), free(r);
    dit_forward(m, x, tf, y, B, out1, 1);
    ok(!memcmp(out, out1, sizeof out), "forward with 1 thread is bit-identical to all threads");
    /* each row alone = the batched row (distinct (t, y) rows, chunking) */
    dit_forward(m, x + 256, tf + 1, y + 1, 1, out1, 0);
    ok(!memcmp(out + 512, out1, 512 * sizeof(float)), "batch row 1 alone is bit-identical to the batched row");
    int bad[2] = { 7, 11 };
    rc = dit_forward(m, x, tf, bad, 2, out1, 0);
    ok(rc == DIT_ERR_INPUT, "label 11 > null label 10 rejected: %s", dit_last_error());

    /* forward_with_cfg: rows [x; x] (the second half is ignored), t, y = [1, 7, null, null] */
    float xx[4 * 256], cout[4 * 512];
    memcpy(xx, x, sizeof(float) * 512);
    for (int i = 0; i < 512; i++) xx[512 + i] = 1e3f;   /* must be ignored */
    float *ct = fix("cfg_t", 4), *cy = fix("cfg_y", 4);
    int *cyi = labels_of(cy, 4);
    rc = dit_forward_with_cfg(m, xx, ct, cyi, 4, 4.0f, cout, 0);
    compare("forward_with_cfg (scale 4, 3 guided channels) == cfg_out", rc ? NULL : cout, r = fix("cfg_out", 4 * 512),
            4 * 512, 2e-5), free(r);
    free(ct), free(cy), free(cyi), free(x), free(tf), free(yf), free(y), free(block0);
}

/* same forward inputs through another model file */
static void test_forward_model(const char *file, const char *what, const char *ref_name, const char *xname, int C,
                               double tol)
{
    dit_model *m = dit_model_load(mpath(file));
    if (!m) {
        ok(0, "%s: load %s: %s", what, file, dit_last_error());
        return;
    }
    size_t in = (size_t)C * 64, out = 2 * in;
    float *x = fix(xname, 2 * in), *tf = fix("fwd_t", 2), *yf = fix("fwd_y", 2), *ref = fix(ref_name, 2 * out);
    int *y = yf ? labels_of(yf, 2) : NULL;
    float *o = malloc(2 * out * sizeof(float));
    int rc = x && tf && y ? dit_forward(m, x, tf, y, 2, o, 0) : -1;
    compare(what, rc ? NULL : o, ref, 2 * out, tol);
    free(x), free(tf), free(yf), free(ref), free(y), free(o);
    dit_model_free(m);
}

/* Quantized weights are dequantized on the fly: the result must equal, bit for bit, the f32 model that holds
   the dequantized values (same products in the same order). */
static void test_quantized(void)
{
    static const int types[] = { DIT_TYPE_Q8_0, DIT_TYPE_Q4_0, DIT_TYPE_Q5_0, DIT_TYPE_F16, DIT_TYPE_BF16 };
    /* deviation from the fp32 reference allowed per type, % of max|ref| (~2-4x the measured 0.9, 12.5, 7.0, 0.04,
       0.5 %): catches a wrong dequantizer (errors of ~100 %) without depending on luck */
    static const double bound[] = { 3, 25, 15, 0.2, 2 };
    float *x = fix("px_fwd_x", 128), *tf = fix("fwd_t", 2), *yf = fix("fwd_y", 2), *ref = fix("px_fwd_out", 256);
    if (!x || !tf || !yf || !ref) {
        ok(0, "quantized: fixtures");
        return;
    }
    int *y = labels_of(yf, 2);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const char *tn = dit_type_name(types[i]);
        char qp[600], tp[600];
        snprintf(qp, sizeof qp, "%s", tpath("px_q.gguf"));
        snprintf(tp, sizeof tp, "%s", tpath("px_twin.gguf"));
        if (rewrite_model(mpath("dit_px.gguf"), qp, types[i], 0, RW_NONE, NULL) ||
            rewrite_model(mpath("dit_px.gguf"), tp, types[i], 1, RW_NONE, NULL)) {
            ok(0, "%s: write test models: %s", tn, dit_last_error());
            continue;
        }
        dit_model *mq = dit_model_load(qp), *mt = dit_model_load(tp);
        float oq[256], ot[256];
        int rc = !mq || !mt || dit_forward(mq, x, tf, y, 2, oq, 0) || dit_forward(mt, x, tf, y, 2, ot, 0);
        ok(!rc && mq->w.blocks[0].qkv_w.type == types[i] && !memcmp(oq, ot, sizeof oq),
           "dit_px with %s weights == f32 model holding the dequantized values (bit-identical)", tn);
        double md = 0, mr = 0;
        for (int k = 0; k < 256; k++) md = fmax(md, fabs(oq[k] - ref[k])), mr = fmax(mr, fabs(ref[k]));
        ok(!rc && 100 * md <= bound[i] * mr, "dit_px %s vs px_fwd_out: max|diff| %.3g (%.2f%% of max|ref|, bound %g%%)", tn,
           md, 100 * md / mr, bound[i]);
        dit_model_free(mq);
        dit_model_free(mt);
    }
    free(x), free(tf), free(yf), free(ref), free(y);
}

/* ==== Loader errors ==== */

static void test_loader_errors(void)
{
    static const struct { int action; const char *name, *expect; } cases[] = {
        { RW_DROP, "blocks.1.mlp.fc2.bias", "missing tensor blocks.1.mlp.fc2.bias" },
        { RW_RESHAPE, "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.weight has shape (144, 432), expected (432, 144)" },
        { RW_DROP, "vae.decoder.up_blocks.1.resnets.0.conv_shortcut.weight", "conv_shortcut.weight" },
        { RW_RESHAPE, "pos_embed", "pos_embed has shape" },
        { RW_BADTYPE, "final_layer.linear.bias", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s", tpath("bad.gguf"));
        if (rewrite_model(mpath("dit_s.gguf"), p, -1, 0, cases[i].action, cases[i].name)) {
            /* the writer itself refuses unknown type ids: that is the check then */
            ok(cases[i].action == RW_BADTYPE, "unsupported type refused when writing: %s", dit_last_error());
            continue;
        }
        dit_model *m = dit_model_load(p);
        ok(!m && dit_last_error_code() == DIT_ERR_INPUT && (!cases[i].expect || strstr(dit_last_error(), cases[i].expect)),
           "bad model (%s %s) refused: %s", cases[i].action == RW_DROP ? "without" : "with a bad", cases[i].name,
           dit_last_error());
        dit_model_free(m);
    }
    dit_model *m = dit_model_load(mpath("does-not-exist.gguf"));
    ok(!m && dit_last_error_code() == DIT_ERR_IO, "missing file: I/O error: %s", dit_last_error());
}

/* ==== Samplers ==== */

typedef struct {
    const char *what, *ref, *spacing, *noise, *init;
    int sampler;
    float eta, cfg;
    double tol;
    int philox;
    int no_cfg;
} chain_case;

typedef struct {
    int n, last, ok;
} progress_state;

static void progress_cb(int step, int steps, void *u)
{
    progress_state *st = u;
    st->n++;
    if (step != st->last + 1 || steps != 5) st->ok = 0;
    st->last = step;
}

static void test_samplers(dit_model *m)
{
    static const chain_case cases[] = {
        { "DDIM \"ddim10\" eta 0, CFG 4", "ddim10_out", "ddim10", NULL, "e2e_init", DIT_SAMPLER_DDIM, 0, 4, 5e-5, 0, 0 },
        { "DDIM \"ddim10\" eta 1, CFG 4, step noise", "ddim10_eta1_out", "ddim10", "e2e_step_noise10", "e2e_init", DIT_SAMPLER_DDIM, 1, 4, 5e-5, 0, 0 },
        { "DDPM \"10\" CFG 4, step noise", "ddpm10_out", "10", "e2e_step_noise10", "e2e_init", DIT_SAMPLER_DDPM, 0, 4, 5e-5, 0, 0 },
        { "DDPM \"10\" CFG 1 (CFG batch)", "ddpm10_cfg1_out", "10", "e2e_step_noise10", "e2e_init", DIT_SAMPLER_DDPM, 0, 1, 5e-5, 0, 0 },
        { "DDPM \"250\" CFG 4, step noise", "ddpm250_out", "250", "e2e_step_noise250", "e2e_init", DIT_SAMPLER_DDPM, 0, 4, 1e-4, 0, 0 },
        { "DDPM \"10\" CFG 4, Philox seed 42", "philox_ddpm10_out", "10", NULL, NULL, DIT_SAMPLER_DDPM, 0, 4, 5e-5, 1, 0 },
        { "DPM++2M \"linspace10\" CFG 4", "dpmpp2m10_out", "linspace10", NULL, "e2e_init", DIT_SAMPLER_DPMPP_2M, 0, 4, 5e-5, 0, 0 },
        { "DPM++2M \"10\" CFG 4", "dpmpp2m_s10_out", "10", NULL, "e2e_init", DIT_SAMPLER_DPMPP_2M, 0, 4, 5e-5, 0, 0 },
        { "DDPM \"10\" without the CFG batch, step noise", "ddpm10_nocfg_out", "10", "e2e_step_noise10", "e2e_init",
          DIT_SAMPLER_DDPM, 0, 1, 5e-5, 0, 1 },
    };
    const size_t CLL = dit_latent_floats(m);
    float *lf = fix("e2e_labels", 2);
    int *labels = lf ? labels_of(lf, 2) : NULL;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const chain_case *c = &cases[i];
        dit_sample_params p = dit_sample_params_default();
        p.sampler = c->sampler;
        p.spacing = c->spacing;
        p.eta = c->eta;
        p.cfg_scale = c->cfg;
        p.no_cfg = c->no_cfg;
        p.n = 2;
        p.labels = labels;
        p.seed = 42;
        p.backend = DIT_BACKEND_CPU;
        float *init = c->init ? fix(c->init, 2 * CLL) : NULL, *noise = NULL;
        if (c->noise) {
            dit_schedule s;
            dit_schedule_init(&s, c->spacing);
            noise = fix(c->noise, (size_t)s.K * 2 * CLL);
        }
        p.init_noise = init;
        p.step_noise = noise;
        float *out = malloc(2 * CLL * sizeof(float)), *ref = fix(c->ref, 2 * CLL);
        int rc = dit_sample(m, &p, out);
        char what[200];
        snprintf(what, sizeof what, "%s == %s", c->what, c->ref);
        compare(what, rc ? NULL : out, ref, 2 * CLL, c->tol);
        free(init), free(noise), free(out), free(ref);
    }
    /* progress callback: once per step, in order */
    dit_sample_params p = dit_sample_params_default();
    progress_state st = { 0, 0, 1 };
    p.spacing = "ddim5";
    p.sampler = DIT_SAMPLER_DDIM;
    p.n = 1;
    p.labels = labels;
    p.progress = progress_cb;
    p.progress_user = &st;
    float *out = malloc(CLL * sizeof(float));
    int rc = dit_sample(m, &p, out);
    ok(rc == 0 && st.n == 5 && st.ok, "progress callback called 5 times with steps 1..5 of 5");
    /* the default spacing from steps: DDIM 5 steps = "ddim5" = 0, 200, ..., 800 */
    float *out2 = malloc(CLL * sizeof(float));
    p.spacing = NULL;
    p.steps = 5;
    p.progress = NULL;
    rc = dit_sample(m, &p, out2);
    ok(rc == 0 && !memcmp(out, out2, CLL * sizeof(float)), "DDIM steps = 5 uses spacing \"ddim5\"");
    /* image i's noise depends on (seed, i): the first image of a batch equals the same image sampled alone */
    int two[2] = { labels[0], labels[0] };
    float *o2 = malloc(2 * CLL * sizeof(float));
    p.n = 2;
    p.labels = two;
    rc = dit_sample(m, &p, o2);
    ok(rc == 0 && !memcmp(o2, out2, CLL * sizeof(float)) && memcmp(o2 + CLL, out2, CLL * sizeof(float)),
       "batching: image 0 of a batch of 2 == the single image; image 1 differs (own noise)");
    /* DPM++2M: steps = 5 is spacing "linspace5" */
    p.sampler = DIT_SAMPLER_DPMPP_2M;
    p.n = 1;
    p.labels = labels;
    rc = dit_sample(m, &p, out);
    p.spacing = "linspace5";
    int rc2 = dit_sample(m, &p, out2);
    p.spacing = NULL;
    ok(rc == 0 && rc2 == 0 && !memcmp(out, out2, CLL * sizeof(float)), "DPM++2M steps = 5 uses spacing \"linspace5\"");
    char sp[32];
    dit_sampler_spacing(DIT_SAMPLER_DDPM, 250, sp, sizeof sp);
    int names = !strcmp(sp, "250");
    dit_sampler_spacing(DIT_SAMPLER_DPMPP_2M, 1000, sp, sizeof sp);
    names = names && !strcmp(sp, "1000") && dit_sampler_from_name("DPM++2M") == DIT_SAMPLER_DPMPP_2M &&
                dit_sampler_from_name("ddim") == DIT_SAMPLER_DDIM && dit_sampler_from_name("euler") == -1 &&
                !strcmp(dit_sampler_name(DIT_SAMPLER_DPMPP_2M), "dpm++2m");
    ok(names, "sampler names and default spacings");
    p.no_cfg = 1;   /* no CFG batch means no guidance */
    p.cfg_scale = 4.0f;
    rc = dit_sample(m, &p, out);
    ok(rc == DIT_ERR_INPUT && strstr(dit_last_error(), "cfg scale must be 1"), "no_cfg with cfg scale 4 refused: %s",
       dit_last_error());
    p.no_cfg = 0;
    p.backend = DIT_BACKEND_CUDA;
#ifndef DIT_CUDA
    rc = dit_sample(m, &p, o2);
    ok(rc == DIT_ERR_UNSUPPORTED, "backend cuda in a CPU-only build: %s", dit_last_error());
#endif
    free(out), free(out2), free(o2), free(lf), free(labels);
}

static void test_pixel_sampler(void)
{
    dit_model *m = dit_model_load(mpath("dit_px.gguf"));
    if (!m) {
        ok(0, "load dit_px.gguf: %s", dit_last_error());
        return;
    }
    ok(m->cfg.cfg_channels == 1 && !m->cfg.has_vae && dit_image_channels(m) == 1 && dit_image_size(m) == 8,
       "dit_px: pixel-space, 1 channel, cfg_channels 1, image 8x8");
    float *lf = fix("e2e_labels", 2), *init = fix("px_init", 128), *noise = fix("px_step_noise10", 1280),
          *ref = fix("px_ddpm10_out", 128), out[128], img[128];
    int *labels = lf ? labels_of(lf, 2) : NULL;
    dit_sample_params p = dit_sample_params_default();
    p.spacing = "10";
    p.n = 2;
    p.labels = labels;
    p.init_noise = init;
    p.step_noise = noise;
    int rc = labels && init && noise ? dit_sample(m, &p, out) : -1;
    compare("pixel model DDPM \"10\" CFG 4 == px_ddpm10_out", rc ? NULL : out, ref, 128, 5e-5);
    rc = dit_decode(m, out, 2, img, 0);
    ok(rc == 0 && !memcmp(img, out, sizeof img), "dit_decode without a VAE copies");
    /* grayscale PNG */
    const char *png = tpath("gray.png");
    rc = dit_png_write(png, img, 1, 8, 8, NULL);
    int w = 0, h = 0, ch = 0;
    unsigned char *px = rc ? NULL : stbi_load(png, &w, &h, &ch, 0);
    ok(px && w == 8 && h == 8 && ch == 1, "1-channel image -> grayscale PNG (%dx%d, %d channel)", w, h, ch);
    stbi_image_free(px);
    free(lf), free(init), free(noise), free(ref), free(labels);
    dit_model_free(m);
}

static void test_nan(void)
{
    const char *p = tpath("nan.gguf");
    char path[600];
    snprintf(path, sizeof path, "%s", p);
    if (rewrite_model(mpath("dit_s.gguf"), path, -1, 0, RW_NAN, "final_layer.linear.bias")) {
        ok(0, "write NaN model: %s", dit_last_error());
        return;
    }
    dit_model *m = dit_model_load(path);
    int y[1] = { 3 };
    dit_sample_params sp = dit_sample_params_default();
    sp.spacing = "10";
    sp.n = 1;
    sp.labels = y;
    float out[256];
    int rc = m ? dit_sample(m, &sp, out) : -1;
    ok(rc == DIT_ERR_NUMERIC && strstr(dit_last_error(), "step 1/10 (t=999)") && strstr(dit_last_error(), "nan.gguf"),
       "NaN weight -> DIT_ERR_NUMERIC: %s", dit_last_error());
    dit_model_free(m);
    /* NaN inputs are refused up front */
    m = dit_model_load(mpath("dit_s.gguf"));
    float bad[256];
    for (int i = 0; i < 256; i++) bad[i] = i == 17 ? NAN : 0.0f;
    sp.init_noise = bad;
    rc = m ? dit_sample(m, &sp, out) : -1;
    ok(rc == DIT_ERR_INPUT, "NaN init noise -> DIT_ERR_INPUT: %s", dit_last_error());
    float *img = malloc(3 * 64 * 64 * sizeof(float));
    rc = m ? dit_decode(m, bad, 1, img, 0) : -1;
    ok(rc == DIT_ERR_INPUT, "NaN latents -> dit_decode DIT_ERR_INPUT: %s", dit_last_error());
    free(img);
    dit_model_free(m);
}

/* ==== VAE and PNG ==== */

/* torchvision save_image pixel, written independently of the library: fp32 ops, each rounded, truncation */
static unsigned char ref_pixel(float x)
{
    volatile float v = fminf(fmaxf(x, -1.0f), 1.0f);
    v = v + 1.0f;
    v = v / 2.0f;
    v = v * 255.0f;
    v = v + 0.5f;
    float u = fminf(fmaxf(v, 0.0f), 255.0f);
    return (unsigned char)u;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void test_vae_png(dit_model *m)
{
    if (!m->cfg.has_vae) {
        ok(0, "dit_s.gguf has no VAE");
        return;
    }
    ok(dit_image_size(m) == 64 && dit_image_channels(m) == 3 && m->cfg.vae_n_blocks == 4, "VAE config: 8 -> 64 px, 3 channels");
    float *z = fix("vae_in", 256), *ref = fix("vae_out", 3 * 64 * 64), *img = malloc(3 * 64 * 64 * sizeof(float));
    int rc = z ? dit_decode(m, z, 1, img, 0) : -1;
    compare("VAE decode (vae_s, latents / 0.18215) == vae_out", rc ? NULL : img, ref, 3 * 64 * 64, 2e-5);
    if (rc) return;
    const char *params = "class: goldfish (1)\nSteps: 250, Sampler: ddpm, CFG scale: 4.0, Seed: 0";
    const char *png = tpath("vae.png");
    rc = dit_png_write(png, img, 3, 64, 64, params);
    ok(rc == 0, "dit_png_write: %s", rc ? dit_last_error() : "ok");
    FILE *f = fopen(png, "rb");
    unsigned char *buf = malloc(1 << 20);
    size_t n = f ? fread(buf, 1, 1 << 20, f) : 0;
    if (f) fclose(f);
    /* chunks: signature, IHDR, then tEXt "parameters", every CRC valid */
    int sig = n > 8 && !memcmp(buf, "\x89PNG\r\n\x1a\n", 8), crc_ok = 1, text_ok = 0, order = 0, iend = 0;
    for (size_t off = 8; sig && off + 12 <= n;) {
        uint32_t len = be32(buf + off);
        if (off + 12 + len > n) {
            crc_ok = 0;
            break;
        }
        uint32_t crc = (uint32_t)crc32(crc32(0, Z_NULL, 0), buf + off + 4, len + 4);
        crc_ok &= crc == be32(buf + off + 8 + len);
        if (order == 1 && !memcmp(buf + off + 4, "tEXt", 4))
            text_ok = len == 11 + strlen(params) && !memcmp(buf + off + 8, "parameters\0", 11) &&
                      !memcmp(buf + off + 19, params, strlen(params));
        iend = !memcmp(buf + off + 4, "IEND", 4);
        order++;
        off += 12 + len;
    }
    ok(sig && crc_ok && text_ok && iend, "PNG: tEXt \"parameters\" right after IHDR, all %d chunk CRCs valid", order);
    int w = 0, h = 0, ch = 0;
    unsigned char *px = stbi_load_from_memory(buf, (int)n, &w, &h, &ch, 0);
    int same = px && w == 64 && h == 64 && ch == 3, clipped = 0;
    for (int i = 0; same && i < 64 * 64; i++)
        for (int c = 0; c < 3; c++) {
            float v = img[c * 4096 + i];
            clipped += v < -1 || v > 1;
            same &= px[i * 3 + c] == ref_pixel(v);
        }
    ok(same, "PNG pixels read back (stb_image) == torchvision save_image of the decode (%d of 12288 values clipped)",
       clipped);
    stbi_image_free(px);
    free(buf), free(z), free(ref), free(img);
    rc = dit_png_write(tpath("no-such-dir/x.png"), (float[3]){ 0, 0, 0 }, 3, 1, 1, NULL);
    ok(rc == DIT_ERR_IO, "PNG into a missing directory: I/O error: %s", dit_last_error());

    /* .npz: closed before its n images, or given one too many, is an error and leaves no file */
    dit_npz nz;
    const float pix[3] = { -1, 0, 1 };
    rc = dit_npz_open(&nz, tpath("short.npz"), 2, 3, 1, 1);
    if (!rc) rc = dit_npz_add(&nz, pix);
    const int rc_close = rc ? rc : dit_npz_close(&nz);
    ok(!rc && rc_close == DIT_ERR_INPUT && access(tpath("short.npz"), F_OK) != 0,
       ".npz closed after 1 of 2 images: error, no file: %s", dit_last_error());
    rc = dit_npz_open(&nz, tpath("full.npz"), 1, 3, 1, 1);
    int rc_add = rc;
    if (!rc && !(rc_add = dit_npz_add(&nz, pix))) rc_add = dit_npz_add(&nz, pix);
    if (!rc) dit_npz_abort(&nz);
    ok(!rc && rc_add == DIT_ERR_INPUT && access(tpath("full.npz"), F_OK) != 0,
       ".npz given a second image of 1: error; aborted: no file");
}

static void test_classes(dit_model *m)
{
    if (m->cfg.n_class_names != 10) {
        skip("class names", "this dit_s.gguf has no class names");
        return;
    }
    ok(dit_class_from_name(m, "3") == 3, "class \"3\" -> 3");
    ok(dit_class_from_name(m, m->class_names[2]) == 2, "class \"%s\" -> 2", m->class_names[2]);
    int c = dit_class_from_name(m, "10");
    ok(c == -1 && dit_last_error_code() == DIT_ERR_INPUT, "class 10 out of range: %s", dit_last_error());
    c = dit_class_from_name(m, "no such class xyz");
    ok(c == -1 && strstr(dit_last_error(), "close matches"), "unknown name: %s", dit_last_error());
    c = dit_class_from_name(m, "GREAT_white");
    ok(c == 2, "unique prefix, any case, '_' for ' ': \"GREAT_white\" -> %d", c);
    c = dit_class_from_name(m, "tinca tinca");
    ok(c == 0, "comma-separated synonym \"tinca tinca\" -> %d", c);
    c = dit_class_from_name(m, "h");
    ok(c == -1 && strstr(dit_last_error(), "ambiguous"), "ambiguous prefix: %s", dit_last_error());
}

int main(int argc, char **argv)
{
    /* Idle OpenMP workers spin by default; on a shared, oversubscribed test box that makes this program 5-10x
       slower in wall time. libgomp reads the policy at load time, hence the re-exec. */
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dit-test-runtime-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        printf("not ok - mkdtemp\n");
        return 1;
    }
    test_philox();
    test_schedule();
    if (argc > 1) {
        snprintf(moddir, sizeof moddir, "%s", argv[1]);
    } else {
        /* convert the fixture models with bin/dit-convert (class names in the ImageNet "name, synonym" style) */
        snprintf(moddir, sizeof moddir, "%s", tmpdir);
        FILE *f = fopen(tpath("classes.txt"), "w");
        if (f) {
            fputs("tench, Tinca tinca\ngoldfish\ngreat white shark\ntiger shark\nhammerhead\nelectric ray\n"
                  "stingray\ncock\nhen\nostrich\n", f);
            fclose(f);
        }
        char cmd[4096];
        snprintf(cmd, sizeof cmd,
                 "bin/dit-convert " FIX "dit_s.pt --vae " FIX "vae_s --heads 2 --class-names %s/classes.txt -o %s/dit_s.gguf"
                 " 2>/dev/null && bin/dit-convert " FIX "dit_px.pt --heads 1 -o %s/dit_px.gguf 2>/dev/null"
                 " && bin/dit-convert " FIX "dit_xs.pt --heads 1 -o %s/dit_xs.gguf 2>/dev/null"
                 " && bin/dit-convert " FIX "dit_xs_f16.pt --heads 1 -o %s/dit_xs_f16.gguf 2>/dev/null"
                 " && bin/dit-convert " FIX "dit_xs_bf16.pt --heads 1 -o %s/dit_xs_bf16.gguf 2>/dev/null",
                 tmpdir, moddir, moddir, moddir, moddir, moddir);
        if (!f || system(cmd) != 0) {
            skip("model tests", "bin/dit-convert could not convert tests/fixtures (pass a directory of GGUFs)");
            goto out;
        }
    }
    dit_model *m = dit_model_load(mpath("dit_s.gguf"));
    ok(m != NULL, "load dit_s.gguf: %s", m ? "ok" : dit_last_error());
    if (m) {
        ok(m->cfg.depth == 2 && m->cfg.hidden == 144 && m->cfg.heads == 2 && m->cfg.patch == 2 && m->cfg.input_size == 8 &&
               m->cfg.out_channels == 8 && m->cfg.num_classes == 10 && m->cfg.cfg_channels == 3,
           "dit_s config: depth 2, hidden 144, 2 heads (hd 72), patch 2, input 8, out 8, 10 classes, 3 guided channels");
        test_forward(m);
        test_classes(m);
        test_samplers(m);
        test_vae_png(m);
        dit_model_free(m);
    }
    test_forward_model("dit_xs.gguf", "dit_xs forward (f32) == xs_fwd_out", "xs_fwd_out", "fwd_x", 4, 2e-5);
    test_forward_model("dit_xs_f16.gguf", "dit_xs forward (f16 weights) == xs_f16_fwd_out", "xs_f16_fwd_out", "fwd_x", 4, 2e-5);
    test_forward_model("dit_xs_bf16.gguf", "dit_xs forward (bf16 weights) == xs_bf16_fwd_out", "xs_bf16_fwd_out", "fwd_x", 4,
                       2e-5);
    test_forward_model("dit_px.gguf", "dit_px forward == px_fwd_out", "px_fwd_out", "px_fwd_x", 1, 2e-5);
    test_pixel_sampler();
    test_quantized();
    test_loader_errors();
    test_nan();
out:
    return tap_finish();
}
