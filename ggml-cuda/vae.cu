// vae.cu - diffusers AutoencoderKL decoder (§5) on the GPU, one image at a time, channels-last (H*W, C)
// activations: the fp32 residual stream x, fp32 conv outputs, ct (fp16/bf16) GEMM operands.
//
//   z = latents / scaling_factor -> post_quant_conv (1x1) -> conv_in (3x3) -> mid: resnet, attention,
//   resnet -> up_blocks (layers_per_block + 1 resnets, nearest 2x + conv 3x3 on all but the last)
//   -> GroupNorm + SiLU -> conv_out (3x3)
//   resnet: h = conv1(SiLU(GN1(x)));  h = conv2(SiLU(GN2(h)));  out = shortcut(x) + h     (§5.3)
//   attention (single head, head dim C): x + to_out(softmax(q k^T / sqrt(C)) v), q,k,v = Linear(GN(x)) (§5.4)
//   GroupNorm: 32 groups, eps 1e-6 everywhere.
// 3x3 convs, on an sm_90a build and GPU where the grid fills the GPU (use_implicit): pad3 writes the input
// once, zero-padded, with the 2x upsample or the preceding GroupNorm + SiLU applied on the way, and
// conv3_igemm (wgmma) multiplies it in place, bias and residual sum in its epilogue. Elsewhere (the 32 px
// convs at 256 px, other GPUs): im2col (the same input gathered per tap) + one cuBLASLt GEMM
// y (HW, cout) = cols (HW, 9 cin) W^T + bias. W is permuted to (cout, 3, 3, cin) at upload for both; either
// runs in chunks of output rows within VAE_COLS_BYTES of buffer (the whole image when it fits).
// GroupNorm(+SiLU) is written out (ct) only where a 1x1 GEMM or the attention reads it. Residual sums in
// fp32, in the epilogue of the GEMM that ends the branch (beta = 1 for cuBLASLt). Thin convs (cin*k*k < 64
// or cout < 8) run a direct fp32 kernel, but conv_out (c -> 3) the implicit GEMM with NCHW output where it
// exists. The buffers borrow the DiT arena (idle while decoding), grown if needed.
#include "ggml-cuda/vae.cuh"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// im2col / pad3 chunk budget. 256 MB (whole image at 256 px) measured 0.14 ms faster at 256 px but adds 192 MB
// to the decode's peak memory, over the 2.0 GB (f16) and 1.3 GB (q8_0) targets of bench/RESULTS.md;
// 8-24 MB chunks (to keep the columns in L2) were slower (5.06 ms at 8, 4.02 at 16, 3.86 at 24 vs 3.80).
#define VAE_COLS_BYTES ((size_t)64 << 20)
#define VAE_EPS 1e-6f

// conv_out (c -> 3, a multiple of 64 channels in) runs on the implicit GEMM where wgmma does: its weights
// are then uploaded for it alone (ct, tap-major), not for the direct fp32 kernel
static int thin_implicit(const dit_cuda *c, const dit_cuda_conv *cv) {
    return cv->k == 3 && cv->cout <= 8 && cv->cin % 64 == 0 && c->wgmma_ok;
}

static int up_conv(dit_wpass *w, const dit_tensor *wt, const dit_tensor *bt, dit_cuda_conv *cv) {
    memset(cv, 0, sizeof(*cv));
    if (!wt->data) return DIT_OK;
    if (wt->n_dims <= 2) {   // a 1x1 conv stored squeezed: (cout, cin)
        cv->k = 1;
        cv->cin = (int)wt->ne[0];
        cv->cout = (int)wt->ne[1];
    } else {                 // (cout, cin, kh, kw)
        cv->k = (int)wt->ne[0];
        cv->cin = (int)wt->ne[2];
        cv->cout = (int)wt->ne[3];
        if (wt->ne[0] != wt->ne[1]) return dit_set_error(DIT_ERR_INPUT, "cuda: vae: %s is not a square conv", wt->name);
    }
    // thin convs run a direct fp32 kernel, but conv_out the implicit GEMM where it can
    const int direct = !thin_implicit(w->c, cv) && (cv->cin * cv->k * cv->k < 64 || cv->cout < 8);
    TRY(dit_wp_lin(w, wt, bt, direct ? WP_F32 : WP_CT_ONLY, &cv->w));
    if (w->dry || direct || cv->k != 3) return DIT_OK;
    // 3x3 GEMM conv: (cout, cin, 3, 3) -> (cout, 3, 3, cin), the column order of the channels-last im2col.
    // On the legacy stream, ordered after dit_wp_lin's cudaMemcpy; vae_upload synchronizes the device after.
    const size_t bytes = (size_t)cv->cout * cv->cin * 9 * 2;
    void *tmp = NULL;
    CUDA_CHECK(cudaMalloc(&tmp, bytes));
    int rc = cudaMemcpyAsync(tmp, cv->w.w, bytes, cudaMemcpyDeviceToDevice, 0) == cudaSuccess
                 ? dit_op_conv_w_tap_major(tmp, cv->w.w, cv->cout, cv->cin, 0)
                 : dit_set_error(DIT_ERR_DEVICE, "cuda: vae: %s: weight copy failed", wt->name);
    if (cudaStreamSynchronize(0) != cudaSuccess && rc == DIT_OK)
        rc = dit_set_error(DIT_ERR_DEVICE, "cuda: vae: %s: weight permutation failed", wt->name);
    cudaFree(tmp);
    return rc;
}

static int up_resnet(dit_wpass *w, const dit_vae_resnet *r, dit_cuda_resnet *o) {
    TRY(dit_wp_f32(w, &r->norm1_w, &o->n1_w));
    TRY(dit_wp_f32(w, &r->norm1_b, &o->n1_b));
    TRY(dit_wp_f32(w, &r->norm2_w, &o->n2_w));
    TRY(dit_wp_f32(w, &r->norm2_b, &o->n2_b));
    TRY(up_conv(w, &r->conv1_w, &r->conv1_b, &o->c1));
    TRY(up_conv(w, &r->conv2_w, &r->conv2_b, &o->c2));
    TRY(up_conv(w, &r->short_w, &r->short_b, &o->sc));
    if (!r->conv1_w.data || !r->conv2_w.data || !r->norm1_w.data || !r->norm2_w.data)
        return dit_set_error(DIT_ERR_INPUT, "cuda: vae: incomplete resnet block");
    return DIT_OK;
}

static int vae_upload_pass(dit_cuda *c, const dit_model *m, dit_wpass *w) {
    const dit_vae *v = &m->vae;
    const dit_config *k = &m->cfg;
    TRY(up_conv(w, &v->pq_w, &v->pq_b, &c->pq));
    TRY(up_conv(w, &v->conv_in_w, &v->conv_in_b, &c->conv_in));
    for (int i = 0; i < 2; i++) TRY(up_resnet(w, &v->mid[i], &c->mid[i]));
    TRY(dit_wp_f32(w, &v->attn_norm_w, &c->attn_n_w));
    TRY(dit_wp_f32(w, &v->attn_norm_b, &c->attn_n_b));
    TRY(dit_wp_lin(w, &v->attn_q_w, &v->attn_q_b, WP_CT_ONLY, &c->attn_q));
    TRY(dit_wp_lin(w, &v->attn_k_w, &v->attn_k_b, WP_CT_ONLY, &c->attn_k));
    TRY(dit_wp_lin(w, &v->attn_v_w, &v->attn_v_b, WP_CT_ONLY, &c->attn_v));
    TRY(dit_wp_lin(w, &v->attn_o_w, &v->attn_o_b, WP_CT_ONLY, &c->attn_o));
    for (int i = 0; i < k->vae_n_blocks; i++) {
        for (int j = 0; j <= k->vae_layers_per_block; j++) TRY(up_resnet(w, &v->up[i][j], &c->up[i][j]));
        TRY(up_conv(w, &v->up_conv_w[i], &v->up_conv_b[i], &c->up_conv[i]));
    }
    TRY(dit_wp_f32(w, &v->norm_out_w, &c->out_n_w));
    TRY(dit_wp_f32(w, &v->norm_out_b, &c->out_n_b));
    TRY(up_conv(w, &v->conv_out_w, &v->conv_out_b, &c->conv_out));
    return DIT_OK;
}

static int vae_upload(dit_cuda *c, const dit_model *m) {
    const dit_config *k = &m->cfg;
    if (!k->has_vae) return dit_set_error(DIT_ERR_INPUT, "cuda: the model has no VAE");
    if (k->vae_n_blocks < 1 || k->vae_n_blocks > DIT_VAE_MAX_BLOCKS || k->vae_layers_per_block < 0 ||
        k->vae_layers_per_block + 1 > DIT_VAE_MAX_RESNETS || k->vae_groups <= 0)
        return dit_set_error(DIT_ERR_INPUT, "cuda: vae: bad config (%d blocks, %d layers, %d groups)", k->vae_n_blocks,
                             k->vae_layers_per_block, k->vae_groups);
    dit_wpass w = { c, NULL, 0, 1 };
    TRY(vae_upload_pass(c, m, &w));
    cudaError_t e = cudaMalloc((void **)&c->vbuf, w.used);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return dit_set_error(DIT_ERR_DEVICE, "cuda: cannot allocate %.1f MB for the VAE: %s", w.used / 1e6,
                             cudaGetErrorString(e));
    }
    c->vbytes = w.used;
    dit_wpass w2 = { c, c->vbuf, 0, 0 };
    int rc = vae_upload_pass(c, m, &w2);
    if (rc == DIT_OK && cudaDeviceSynchronize() != cudaSuccess)
        rc = dit_set_error(DIT_ERR_DEVICE, "cuda: vae upload failed");
    if (rc != DIT_OK) {
        cudaFree(c->vbuf);
        c->vbuf = NULL;
        c->vbytes = 0;
        return rc;
    }
    if (!c->conv_in.w.w || !c->conv_out.w.w || !c->attn_q.w || !c->attn_n_w || !c->out_n_w)
        return dit_set_error(DIT_ERR_INPUT, "cuda: vae: missing tensors");
    c->vae_ready = 1;
    return DIT_OK;
}

typedef struct {
    float *x, *h, *t;          // (HW, C) fp32: residual stream, conv output, shortcut / upsample output (max_elems)
    void *g, *cols;            // ct: GN output / 1x1 conv input / attention tokens (max_elems); a 3x3 conv's
                               // operand, pad3 rows or im2col columns (cols_elems)
    void *q, *k, *v, *o;       // attention, ct (HW, C)
    float *s;                  // (HW, HW) scores
    void *p;                   // ct (HW, HW)
    float *img;                // (3, 8L, 8L)
    float2 *part;              // GroupNorm partial statistics (DIT_GN_CHUNKS * groups)
    unsigned int *gn_count;    // GroupNorm: chunks done (zeroed at the start of each decode)
    float *ab;                 // GroupNorm per-channel scale, shift (2 * max channels)
    size_t cols_elems;
} vae_bufs;

static size_t vae_max_elems(const dit_model *m, int L) {
    const dit_config *k = &m->cfg;
    const int nb = k->vae_n_blocks;
    size_t best = (size_t)k->vae_block_out[nb - 1] * L * L;
    int res = L, prev = k->vae_block_out[nb - 1];
    for (int i = 0; i < nb; i++) {
        const int ch = k->vae_block_out[nb - 1 - i];
        const size_t a = (size_t)(prev > ch ? prev : ch) * res * res;
        if (a > best) best = a;
        if (i < nb - 1) {
            res *= 2;
            if ((size_t)ch * res * res > best) best = (size_t)ch * res * res;
        }
        prev = ch;
    }
    return best;
}

static size_t al(size_t b) { return (b + 255) / 256 * 256; }

static int gn(const vae_bufs *b, const float *x, void *out, int out_type, const float *w, const float *bias, int C,
              int HW, int G, int silu, cudaStream_t st) {
    return dit_op_group_norm(x, out, out_type, w, bias, C, HW, G, VAE_EPS, silu, b->part, b->gn_count, b->ab, st);
}

// 3x3 GEMM conv as an implicit GEMM (conv3_igemm) rather than im2col + cuBLASLt: where its 128 x 128 tiles
// fill the GPU (DIT_VAE_CONV=im2col|implicit forces one path), and always for conv_out (thin_implicit)
static int use_implicit(const dit_cuda *c, const dit_cuda_conv *cv, int H, int W, int y_nchw) {
    if (cv->cout <= 8) return y_nchw && thin_implicit(c, cv);
    if (!c->wgmma_ok || cv->cin % 64) return 0;
    if (cv->cout % 2 || c->vae_conv == 1) return 0;
    return c->vae_conv == 2 || (int64_t)cdiv((int64_t)H * (W + 2), 128) * cdiv(cv->cout, 128) >= c->n_sm;
}

// k x k conv (k = 1 or 3) of src (H/2^up * W/2^up, cin) -> dst (H*W, cout) fp32 = conv + bias, or with acc
// dst += conv + bias (the residual sum in the GEMM's epilogue). ab (3x3 GEMM convs, fp32 src): the conv
// reads SiLU(GroupNorm(src)), applied as pad3 or im2col gathers it. Direct (fp32) convs read src fp32 and
// write dst channels-last, or NCHW (cout, H*W) when y_nchw, as the implicit GEMM does for conv_out.
static int conv(dit_cuda *c, const dit_cuda_conv *cv, const void *src, int src_type, const float *ab, int H, int W,
                int up, float *dst, int acc, int y_nchw, const vae_bufs *b, cudaStream_t st) {
    const int64_t HW = (int64_t)H * W;
    const int gemm = cv->w.type != DIT_TYPE_F32;   // GroupNorm fused: 3x3 GEMM convs; residual: GEMM convs
    if ((ab && !(gemm && cv->k == 3)) || (acc && !gemm))
        return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: vae: %dx%d conv %d->%d with GroupNorm or a residual", cv->k,
                             cv->k, cv->cin, cv->cout);
    if (cv->w.type == DIT_TYPE_F32) {
        if (up || src_type != DIT_TYPE_F32)
            return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: vae: direct conv %d->%d here", cv->cin, cv->cout);
        return dit_op_conv_direct((const float *)src, (const float *)cv->w.w, cv->w.b, dst, cv->cin, cv->cout, H, W,
                                  cv->k, !y_nchw, st);
    }
    if (cv->k == 1) {   // 1x1: the ct input (HW, cin) is the GEMM operand itself
        if (up || y_nchw || src_type != c->ct) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: vae: 1x1 conv input");
        return acc ? dit_op_linear_acc(c, &cv->w, src, HW, dst, st)
                   : dit_op_linear(c, &cv->w, src, HW, dst, DIT_TYPE_F32, EPI_BIAS, st);
    }
    if (cv->k != 3) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: vae: %dx%d conv", cv->k, cv->k);
    return dit_op_conv3x3(c, &cv->w, src, src_type, ab, b->cols, b->cols_elems, cv->cin, H, W, up, dst, acc, y_nchw,
                          use_implicit(c, cv, H, W, y_nchw), st);
}

// dst (+)= conv(SiLU(GroupNorm(x))): the normalization fused into the pad3 / im2col pass of a 3x3 GEMM conv
// (never written out); other convs get it written into b->g first
static int gn_conv(dit_cuda *c, const dit_cuda_conv *cv, const float *x, const float *gw, const float *gb, int G,
                   int H, int W, float *dst, int acc, int y_nchw, const vae_bufs *b, cudaStream_t st) {
    if (cv->k == 3 && cv->w.type != DIT_TYPE_F32) {
        TRY(dit_op_group_norm_ab(x, gw, gb, cv->cin, H * W, G, VAE_EPS, b->part, b->gn_count, b->ab, st));
        return conv(c, cv, x, DIT_TYPE_F32, b->ab, H, W, 0, dst, acc, y_nchw, b, st);
    }
    if (y_nchw) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: vae: GroupNorm into an NCHW conv");
    TRY(gn(b, x, b->g, c->ct, gw, gb, cv->cin, H * W, G, 1, st));
    return conv(c, cv, b->g, c->ct, NULL, H, W, 0, dst, acc, 0, b, st);
}

// x (HW, cin) -> (HW, cout) = shortcut(x) + conv2(SiLU(GN2(conv1(SiLU(GN1(x)))))), the sum made by conv2's
// GEMM on top of x, or of t = shortcut(x) (then *x and *t swap); t: fp32 scratch
static int resnet(dit_cuda *c, const dit_cuda_resnet *r, int G, int H, int W, float **x, float **t,
                  const vae_bufs *b, cudaStream_t st) {
    float *out = *x;
    if (r->sc.w.w) {
        TRY(dit_op_to_ct(*x, b->g, c->ct, (int64_t)r->c1.cin * H * W, st));
        TRY(conv(c, &r->sc, b->g, c->ct, NULL, H, W, 0, *t, 0, 0, b, st));
        out = *t;
    }
    TRY(gn_conv(c, &r->c1, *x, r->n1_w, r->n1_b, G, H, W, b->h, 0, 0, b, st));
    TRY(gn_conv(c, &r->c2, b->h, r->n2_w, r->n2_b, G, H, W, out, 1, 0, b, st));
    if (out != *x) {
        *t = *x;
        *x = out;
    }
    return DIT_OK;
}

// x (HW, C) += to_out(softmax(q k^T / sqrt(C)) v), q, k, v = Linear(GN(x)); the tokens are GN's ct output
static int mid_attention(dit_cuda *c, int G, int C, int HW, float *x, const vae_bufs *b, cudaStream_t st) {
    TRY(gn(b, x, b->g, c->ct, c->attn_n_w, c->attn_n_b, C, HW, G, 0, st));
    TRY(dit_op_linear(c, &c->attn_q, b->g, HW, b->q, c->ct, EPI_BIAS, st));
    TRY(dit_op_linear(c, &c->attn_k, b->g, HW, b->k, c->ct, EPI_BIAS, st));
    TRY(dit_op_linear(c, &c->attn_v, b->g, HW, b->v, c->ct, EPI_BIAS, st));
    // s (HW_i, HW_j) row-major = column-major (HW_j x HW_i) = k (HW_j x C) q^T
    TRY(dit_op_gemm_raw(c, c->ct, DIT_TYPE_F32, 1, 0, HW, HW, C, b->k, C, 0, b->q, C, 0, b->s, HW, 0, 1, 1.0f, st));
    TRY(dit_op_softmax_rows(b->s, b->p, c->ct, HW, HW, 1.0f / sqrtf((float)C), st));
    // o (HW_i, C) row-major = column-major (C x HW_i) = v^T (C x HW_j) p^T (HW_j x HW_i)
    TRY(dit_op_gemm_raw(c, c->ct, c->ct, 0, 0, C, HW, HW, b->v, C, 0, b->p, HW, 0, b->o, C, 0, 1, 1.0f, st));
    return dit_op_linear_acc(c, &c->attn_o, b->o, HW, x, st);
}

// z (L*L, C) channels-last latents -> b->img (3, 8L, 8L)
static int decode_one(dit_cuda *c, const dit_model *m, int L, float *z, vae_bufs *b, cudaStream_t st) {
    const dit_config *k = &m->cfg;
    const int G = k->vae_groups, nb = k->vae_n_blocks;
    float *x = b->x, *t = b->t;
    int H = L;
    CUDA_CHECK(cudaMemsetAsync(b->gn_count, 0, sizeof(*b->gn_count), st));
    // post_quant_conv (1x1) into h, then conv_in
    TRY(conv(c, &c->pq, z, DIT_TYPE_F32, NULL, H, H, 0, b->h, 0, 0, b, st));
    TRY(conv(c, &c->conv_in, b->h, DIT_TYPE_F32, NULL, H, H, 0, x, 0, 0, b, st));
    TRY(resnet(c, &c->mid[0], G, H, H, &x, &t, b, st));
    TRY(mid_attention(c, G, c->mid[0].c2.cout, H * H, x, b, st));
    TRY(resnet(c, &c->mid[1], G, H, H, &x, &t, b, st));
    for (int i = 0; i < nb; i++) {
        for (int j = 0; j <= k->vae_layers_per_block; j++) TRY(resnet(c, &c->up[i][j], G, H, H, &x, &t, b, st));
        if (c->up_conv[i].w.w) {   // nearest 2x + conv 3x3
            H *= 2;
            TRY(conv(c, &c->up_conv[i], x, DIT_TYPE_F32, NULL, H, H, 1, t, 0, 0, b, st));
            float *s = x; x = t; t = s;
        }
    }
    if (c->conv_out.w.type != DIT_TYPE_F32)   // the implicit GEMM, GroupNorm + SiLU in its padded input
        return gn_conv(c, &c->conv_out, x, c->out_n_w, c->out_n_b, G, H, H, b->img, 0, 1, b, st);
    TRY(gn(b, x, b->h, DIT_TYPE_F32, c->out_n_w, c->out_n_b, c->conv_out.cin, H * H, G, 1, st));
    return conv(c, &c->conv_out, b->h, DIT_TYPE_F32, NULL, H, H, 0, b->img, 0, 1, b, st);
}

// decode_one as a CUDA graph, replayed for every later image: the decode is ~200 launches, ~40 of them
// cuBLASLt calls at ~14 us of host time each, which left the GPU waiting at the small low-resolution
// convs. The first decode of a context runs eagerly (it makes the GEMM plans and loads the kernels);
// the graph is captured on the second and lives until the arena it points into is reallocated.
static int decode_graph(dit_cuda *c, const dit_model *m, int L, float *z, vae_bufs *b, cudaStream_t st) {
    if (!c->use_graph || c->profiling || !c->vae_warm || c->vae_no_graph) {
        TRY(decode_one(c, m, L, z, b, st));
        c->vae_warm = 1;
        return DIT_OK;
    }
    if (!c->vae_graph) {
        cudaGraph_t g;
        CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        int rc = decode_one(c, m, L, z, b, st);
        cudaError_t e = cudaStreamEndCapture(st, &g);
        if (rc != DIT_OK) {
            if (e == cudaSuccess) cudaGraphDestroy(g);
            cudaGetLastError();   // the invalidated capture's error must not surface in a later check
            return rc;
        }
        if (e == cudaSuccess) {
            e = cudaGraphInstantiate(&c->vae_graph, g, 0);
            cudaGraphDestroy(g);
        }
        if (e != cudaSuccess) {   // no graph here: decode eagerly from now on (as DIT_CUDA_GRAPH=0)
            c->vae_graph = NULL;
            c->vae_no_graph = 1;
            cudaGetLastError();
            return decode_one(c, m, L, z, b, st);
        }
    }
    CUDA_CHECK(cudaGraphLaunch(c->vae_graph, st));
    return DIT_OK;
}

int dit_vae_decode_cuda(dit_cuda *c, dit_model *m, const float *latents, int n, float *images) {
    const dit_config *k = &m->cfg;
    const int L = k->input_size, C = k->in_channels;
    if (n <= 0) return dit_set_error(DIT_ERR_INPUT, "cuda: decode: n = %d", n);
    if (!k->has_vae) {   // pixel-space model: the latents are the images
        memcpy(images, latents, (size_t)n * C * L * L * sizeof(float));
        return DIT_OK;
    }
    if (!c->vae_ready) TRY(vae_upload(c, m));
    const int nb = k->vae_n_blocks, S = L << (nb - 1);   // output side
    const int c_top = k->vae_block_out[nb - 1];
    const size_t me = vae_max_elems(m, L), HW0 = (size_t)L * L, es = 2;
    vae_bufs b;
    memset(&b, 0, sizeof(b));
    b.cols_elems = VAE_COLS_BYTES / es < 9 * me ? VAE_COLS_BYTES / es : 9 * me;   // 9 me: the whole widest conv
    int cmax = 0;
    for (int j = 0; j < nb; j++) cmax = k->vae_block_out[j] > cmax ? k->vae_block_out[j] : cmax;
    size_t off[16], o = 0;
    int i = 0;
    off[i++] = o; o += al(me * 4);                 // x
    off[i++] = o; o += al(me * 4);                 // h
    off[i++] = o; o += al(me * 4);                 // t
    off[i++] = o; o += al(me * es);                // g
    off[i++] = o; o += al(b.cols_elems * es);      // cols
    off[i++] = o; o += al(HW0 * c_top * es) * 4;   // q k v o
    off[i++] = o; o += al(HW0 * HW0 * 4);          // s
    off[i++] = o; o += al(HW0 * HW0 * es);         // p
    off[i++] = o; o += al((size_t)k->vae_out_channels * S * S * 4);   // img
    off[i++] = o; o += al((size_t)C * HW0 * 4);    // z
    off[i++] = o; o += al((size_t)DIT_GN_CHUNKS * k->vae_groups * sizeof(float2));   // part
    off[i++] = o; o += al(sizeof(unsigned int));   // gn_count
    off[i++] = o; o += al((size_t)2 * cmax * 4);   // ab
    TRY(dit_arena_reserve(c, o));
    c->arena_B = 0;   // the DiT layout in the arena is gone: re-planned by the next sample/forward
    char *a = c->arena;
    i = 0;
    b.x = (float *)(a + off[i++]); b.h = (float *)(a + off[i++]); b.t = (float *)(a + off[i++]);
    b.g = a + off[i++]; b.cols = a + off[i++];
    {
        char *q = a + off[i++];
        const size_t s1 = al(HW0 * c_top * es);
        b.q = q; b.k = q + s1; b.v = q + 2 * s1; b.o = q + 3 * s1;
    }
    b.s = (float *)(a + off[i++]); b.p = a + off[i++];
    b.img = (float *)(a + off[i++]);
    float *z = (float *)(a + off[i++]);
    b.part = (float2 *)(a + off[i++]);
    b.gn_count = (unsigned int *)(a + off[i++]);
    b.ab = (float *)(a + off[i++]);

    cudaStream_t st = c->stream;
    const size_t nz = (size_t)C * HW0, nimg = (size_t)k->vae_out_channels * S * S;
    float *hz = (float *)malloc(nz * sizeof(float));
    if (!hz) return dit_set_error(DIT_ERR_NOMEM, "cuda: out of host memory");
    const float sf = k->vae_scaling_factor > 0 ? k->vae_scaling_factor : 0.18215f;
    int rc = DIT_OK;
    for (int im = 0; im < n && rc == DIT_OK; im++) {
        for (size_t e = 0; e < nz; e++)   // (C, L*L) -> channels-last (L*L, C)
            hz[(e % HW0) * C + e / HW0] = latents[im * nz + e] / sf;
        if (cudaMemcpyAsync(z, hz, nz * 4, cudaMemcpyHostToDevice, st) != cudaSuccess)
            rc = dit_set_error(DIT_ERR_DEVICE, "cuda: decode: upload failed");
        if (rc == DIT_OK) rc = decode_graph(c, m, L, z, &b, st);
        if (rc == DIT_OK && cudaMemcpyAsync(images + im * nimg, b.img, nimg * 4, cudaMemcpyDeviceToHost, st) != cudaSuccess)
            rc = dit_set_error(DIT_ERR_DEVICE, "cuda: decode: download failed");
        if (rc == DIT_OK && cudaStreamSynchronize(st) != cudaSuccess)
            rc = dit_set_error(DIT_ERR_DEVICE, "cuda: decode failed: %s", cudaGetErrorString(cudaGetLastError()));
    }
    free(hz);
    return rc;
}
