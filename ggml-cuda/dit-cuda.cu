// dit-cuda.cu - the CUDA backend: weight upload, arena, the DiT forward pass, the sampler loop
// (adaLN precompute, CUDA graph replay), profiling and the bench harness. Op kernels live in the other
// .cu files of this folder; the VAE decoder in vae.cu.
//
// One sampler step (B = 2N network rows, M = B*T token rows; shapes PyTorch order):
//   h     = patch_embed(x[b % N]) + pos                         (B, T, D)   fp32 residual stream
//   per block l, mod_l = precomputed Linear(SiLU(c)) rows of this step (shift, scale, gate) x (msa, mlp):
//     xin = ct(LN(h) (1 + scale_msa) + shift_msa)                 (fused with the previous gate-residual)
//     qkv = xin Wqkv^T + b                                        (B, T, 3D)  ct
//     att = attention(qkv)                                        (B, T, D)   ct
//     y   = att Wproj^T + b                                       (B, T, D)   fp32
//     h  += gate_msa y;  xin = ct(LN(h) (1 + scale_mlp) + shift_mlp)
//     mlp = GELU_tanh(xin Wfc1^T + b)                             (B, T, F)   ct
//     y   = mlp Wfc2^T + b;  h += gate_mlp y  (fused into the next LayerNorm)
//   fout = ct(LN(h) (1 + scale_f) + shift_f) Wfinal^T + b        (B, T, p*p*oc) fp32
//   x    = sampler_step(fout, x)                                  CFG + DDPM/DDIM + noise, one kernel
// The modulation depends only on (t, y): for a chunk of steps it is computed up front with one GEMM
// per block over all (step, row) pairs and kept in the arena; kernels find their rows through the
// device step state, so one captured graph is replayed for every step.
#include "common.cuh"
#include "ggml-cuda/vae.cuh"
#include "wgmma.cuh"   // DIT_WGMMA: the probe kernel is compiled as the wgmma kernels are

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIT_CUDA_WORKSPACE (32u << 20)   // cuBLASLt workspace (NVIDIA's Hopper recommendation)
#define DIT_CUDA_ALIGN 256

int dit_cuda_error_(const char *file, int line, const char *func, const char *stmt, const char *msg) {
    const char *f = strrchr(file, '/');
    return dit_set_error(DIT_ERR_DEVICE, "cuda: %s:%d %s: %s: %s", f ? f + 1 : file, line, func, stmt, msg);
}

const char *dit_cublas_status_name(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_UNKNOWN";
    }
}

int dit_cuda_available(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();   // no driver / no device: not an error for the caller
        return 0;
    }
    return n;
}

// ---------------------------------------------------------------- profiling (op by op, eager)
void dit_prof_begin(dit_cuda *c, const char *name) {
    if (!c->profiling) return;
    if (c->n_prof == c->cap_prof) {
        int cap = c->cap_prof ? 2 * c->cap_prof : 1024;
        dit_prof_event *p = (dit_prof_event *)realloc(c->prof, cap * sizeof(*p));
        if (!p) return;
        c->prof = p;
        c->cap_prof = cap;
    }
    dit_prof_event *e = &c->prof[c->n_prof];
    e->name = name;
    e->layer = c->prof_layer;
    if (cudaEventCreate(&e->e0) != cudaSuccess) return;
    if (cudaEventCreate(&e->e1) != cudaSuccess) { cudaEventDestroy(e->e0); return; }
    cudaEventRecord(e->e0, c->stream);
    c->n_prof++;
}
void dit_prof_end(dit_cuda *c) {
    if (!c->profiling || c->n_prof == 0) return;
    cudaEventRecord(c->prof[c->n_prof - 1].e1, c->stream);
}
// ---------------------------------------------------------------- weight upload
// Two passes over the model: the first (c->wbuf == NULL) only sums the sizes, the second copies.
typedef dit_wpass wpass;

static void *wp_alloc(wpass *w, size_t bytes) {
    void *p = w->dry ? NULL : w->buf + w->used;
    w->used += (bytes + DIT_CUDA_ALIGN - 1) / DIT_CUDA_ALIGN * DIT_CUDA_ALIGN;
    return p;
}

static int64_t t_numel(const dit_tensor *t) { return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; }
static int is_block_type(int type) {
    return type == DIT_TYPE_Q8_0 || type == DIT_TYPE_Q4_0 || type == DIT_TYPE_Q5_0 || type == DIT_TYPE_Q4_1 ||
           type == DIT_TYPE_Q5_1;
}

// any tensor -> malloc'd fp32 copy (host); block types have whole blocks per row, so the tensor is one run
static float *host_f32(const dit_tensor *t) {
    const int64_t n = t_numel(t);
    if (dit_type_block_size(t->type) <= 0) {
        dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: %s: unsupported type %d", t->name ? t->name : "tensor", t->type);
        return NULL;
    }
    float *f = (float *)malloc((size_t)n * sizeof(float));
    if (!f) { dit_set_error(DIT_ERR_NOMEM, "cuda: out of host memory for %s", t->name ? t->name : "tensor"); return NULL; }
    dit_dequantize_row(t->type, t->data, f, n);
    return f;
}

// host memcpy on 4 threads: one core copies 7-10 GB/s from the page cache, less than the DMA takes
static void copy_host(char *dst, const char *src, size_t n) {
    const int parts = n >= (1u << 20) ? 4 : 1;
    const size_t per = (n + parts - 1) / parts;
#pragma omp parallel for num_threads(parts) if (parts > 1)
    for (int i = 0; i < parts; i++) {
        const size_t o = (size_t)i * per;
        if (o < n) memcpy(dst + o, src + o, o + per > n ? n - o : per);
    }
}

// Pageable cudaMemcpy moved 1.45 GB in 190-220 ms on the H100 host (its driver stages through pinned memory on
// one thread); two pinned 8 MB buffers, one filled by copy_host while the other's DMA runs, are ~2x faster
// (tests/kernels/lt_first.cu upload). Without pinned memory the pass falls back to pageable copies. The VAE's
// pass stays pageable: vae.cu permutes each 3x3 weight on the legacy stream right after its copy, which a copy
// queued on c->stream (non-blocking) would race.
#define WP_STAGE (8u << 20)
static void wp_stage_free(wpass *w) {
    for (int i = 0; i < 2; i++) {
        if (w->pin[i]) cudaFreeHost(w->pin[i]);
        if (w->done[i]) cudaEventDestroy(w->done[i]);
        w->pin[i] = NULL; w->done[i] = NULL;
    }
}
static void wp_stage_begin(wpass *w) {
    const char *ev = getenv("DIT_CUDA_UPLOAD");   // "pageable": the fallback, for comparisons
    if (ev && !strcmp(ev, "pageable")) return;
    int ok = 1;
    for (int i = 0; i < 2 && ok; i++) {
        char *p = NULL;
        cudaEvent_t e = NULL;
        ok = cudaHostAlloc((void **)&p, WP_STAGE, cudaHostAllocDefault) == cudaSuccess;
        if (ok) w->pin[i] = p;
        ok = ok && cudaEventCreateWithFlags(&e, cudaEventDisableTiming) == cudaSuccess;
        if (ok) w->done[i] = e;
    }
    if (!ok) {   // no pinned memory (a container limit, say): pageable copies
        cudaGetLastError();
        wp_stage_free(w);
    }
}
// waits for the queued copies and frees the buffers; after a failed pass (`report` 0) quietly, so that the
// pass's own error message stays the one reported
static int wp_stage_end(wpass *w, int report) {
    cudaError_t e = w->pin[0] ? cudaStreamSynchronize(w->c->stream) : cudaSuccess;   // before the buffers go
    wp_stage_free(w);
    if (report) CUDA_CHECK(e);
    return DIT_OK;
}

static int wp_copy(wpass *w, void *dst, const void *src, size_t bytes) {
    if (w->dry) return DIT_OK;
    if (!w->pin[0]) {
        CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
        return DIT_OK;
    }
    for (size_t o = 0; o < bytes;) {
        if (w->fill == WP_STAGE) {   // pin[cur] is full and its copies queued: on to the other, once it is free
            CUDA_CHECK(cudaEventRecord(w->done[w->cur], w->c->stream));
            w->cur ^= 1;
            w->fill = 0;
            CUDA_CHECK(cudaEventSynchronize(w->done[w->cur]));
        }
        const size_t n = bytes - o < WP_STAGE - w->fill ? bytes - o : WP_STAGE - w->fill;
        char *p = w->pin[w->cur] + w->fill;
        copy_host(p, (const char *)src + o, n);
        CUDA_CHECK(cudaMemcpyAsync((char *)dst + o, p, n, cudaMemcpyHostToDevice, w->c->stream));
        w->fill += n;
        o += n;
    }
    return DIT_OK;
}

// the n elements of t to dst on the device as `type`: DIT_TYPE_F32, or ct (rounded to nearest even)
static int wp_convert_copy(wpass *w, void *dst, const dit_tensor *t, int64_t n, int type) {
    if (w->dry) return DIT_OK;
    float *f = host_f32(t);
    if (!f) return dit_last_error_code();
    const int half = type != DIT_TYPE_F32;
    void *h = f;
    if (half && !(h = malloc((size_t)n * 2))) { free(f); return dit_set_error(DIT_ERR_NOMEM, "cuda: out of host memory"); }
    if (half) dit_quantize_row(type, f, h, n);
    int rc = wp_copy(w, dst, h, (size_t)n * (half ? 2 : 4));
    if (h != f) free(h);
    free(f);
    return rc;
}

// fp32 tensor on the device (embeddings, biases, norms); NULL tensor data -> NULL
int dit_wp_f32(wpass *w, const dit_tensor *t, float **out) {
    *out = NULL;
    if (!t->data) return DIT_OK;
    const int64_t n = t_numel(t);
    float *d = (float *)wp_alloc(w, (size_t)n * sizeof(float));
    TRY(wp_convert_copy(w, d, t, n, DIT_TYPE_F32));
    *out = d;
    return DIT_OK;
}

// Linear weight (n_out = rows, n_in = ne[0] * ne[1] * ne[2]) in ct, or raw blocks, or fp32 when f32
int dit_wp_lin(wpass *w, const dit_tensor *wt, const dit_tensor *bt, int mode, dit_cuda_lin *L) {
    dit_cuda *c = w->c;
    memset(L, 0, sizeof(*L));
    if (!wt->data) return dit_set_error(DIT_ERR_INPUT, "cuda: missing weight %s", wt->name ? wt->name : "?");
    // rows = the outermost dim: (out, in) Linear, (cout, cin, kh, kw) conv, trailing 1s of a squeezed conv
    const int64_t n = t_numel(wt);
    int nd = wt->n_dims;
    while (nd > 1 && wt->ne[nd - 1] == 1) nd--;
    L->n_out = wt->ne[nd - 1];
    L->n_in = n / L->n_out;
    if (mode == WP_F32) {
        L->type = DIT_TYPE_F32;
        L->w = wp_alloc(w, (size_t)n * 4);
        TRY(wp_convert_copy(w, L->w, wt, n, DIT_TYPE_F32));
    } else if (wt->type == c->ct) {
        L->type = c->ct;
        L->w = wp_alloc(w, (size_t)n * 2);
        TRY(wp_copy(w, L->w, wt->data, (size_t)n * 2));
    } else if (mode == WP_CT && is_block_type(wt->type) && wt->ne[0] % 32 == 0) {
        const size_t bytes = dit_row_bytes(wt->type, wt->ne[0]) * (size_t)(n / wt->ne[0]);
        L->type = wt->type;
        L->w = wp_alloc(w, bytes);
        TRY(wp_copy(w, L->w, wt->data, bytes));
        if ((size_t)n > c->deq_elems) c->deq_elems = (size_t)n;
    } else {
        // f32 (uploaded as f16), the other half type, or a block type the GPU does not decode
        L->type = c->ct;
        L->w = wp_alloc(w, (size_t)n * 2);
        TRY(wp_convert_copy(w, L->w, wt, n, c->ct));
    }
    if (bt && bt->data) {
        TRY(dit_wp_f32(w, bt, &L->b));
        if (mode != WP_F32) {   // ct copy of the bias for GEMMs with fp16/bf16 output
            const int64_t nb = t_numel(bt);
            L->bh = wp_alloc(w, (size_t)nb * 2);
            TRY(wp_convert_copy(w, L->bh, bt, nb, c->ct));
        }
    }
    return DIT_OK;
}

static int upload_dit(dit_cuda *c, const dit_model *m, wpass *w) {
    const dit_weights *W = &m->w;
    TRY(dit_wp_f32(w, &W->x_emb_w, &c->x_emb_w));
    TRY(dit_wp_f32(w, &W->x_emb_b, &c->x_emb_b));
    TRY(dit_wp_f32(w, &W->pos_embed, &c->pos));
    TRY(dit_wp_f32(w, &W->y_table, &c->y_table));
    TRY(dit_wp_lin(w, &W->t_fc1_w, &W->t_fc1_b, WP_F32, &c->t1));
    TRY(dit_wp_lin(w, &W->t_fc2_w, &W->t_fc2_b, WP_F32, &c->t2));
    for (int l = 0; l < c->depth; l++) {
        const dit_block *b = &W->blocks[l];
        dit_cuda_block *o = &c->blocks[l];
        TRY(dit_wp_lin(w, &b->qkv_w, &b->qkv_b, WP_CT, &o->qkv));
        TRY(dit_wp_lin(w, &b->proj_w, &b->proj_b, WP_CT, &o->proj));
        TRY(dit_wp_lin(w, &b->fc1_w, &b->fc1_b, WP_CT, &o->fc1));
        TRY(dit_wp_lin(w, &b->fc2_w, &b->fc2_b, WP_CT, &o->fc2));
        TRY(dit_wp_lin(w, &b->ada_w, &b->ada_b, WP_CT, &o->ada));
    }
    TRY(dit_wp_lin(w, &W->final_ada_w, &W->final_ada_b, WP_CT, &c->final_ada));
    TRY(dit_wp_lin(w, &W->final_w, &W->final_b, WP_CT, &c->final_lin));
    return DIT_OK;
}

// the weights to one device buffer: the first pass sums the sizes, the second copies
static int upload_weights(dit_cuda *c, dit_model *m) {
    wpass w = { c, NULL, 0, 1 };
    TRY(upload_dit(c, m, &w));
    c->wbytes = w.used;
    cudaError_t e = cudaMalloc((void **)&c->wbuf, c->wbytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return dit_set_error(DIT_ERR_DEVICE, "cuda: cannot allocate %.1f MB for the weights: %s", c->wbytes / 1e6,
                             cudaGetErrorString(e));
    }
    wpass w2 = { c, c->wbuf, 0, 0 };
    wp_stage_begin(&w2);
    const int rc = upload_dit(c, m, &w2);
    TRY(wp_stage_end(&w2, rc == DIT_OK));
    TRY(rc);
    c->wused = w2.used;
    CUDA_CHECK(cudaDeviceSynchronize());   // the uploads are complete before any stream reads them
    return DIT_OK;
}

// GEMM operand type: bf16 when the file's big weights are bf16 (and none is f16), else f16
static int pick_compute_type(const dit_model *m) {
    int nf16 = 0, nbf16 = 0;
    for (int l = 0; l < m->cfg.depth; l++) {
        const dit_tensor *ts[4] = { &m->w.blocks[l].qkv_w, &m->w.blocks[l].proj_w, &m->w.blocks[l].fc1_w,
                                    &m->w.blocks[l].fc2_w };
        for (int i = 0; i < 4; i++) {
            nf16 += ts[i]->type == DIT_TYPE_F16;
            nbf16 += ts[i]->type == DIT_TYPE_BF16;
        }
    }
    return nbf16 > 0 && nf16 == 0 ? DIT_TYPE_BF16 : DIT_TYPE_F16;
}

static int check_shapes(const dit_model *m) {
    const dit_config *k = &m->cfg;
    if (k->depth < 1 || k->hidden <= 0 || k->heads <= 0 || k->hidden % k->heads || k->patch <= 0 ||
        k->input_size % k->patch)
        return dit_set_error(DIT_ERR_INPUT, "cuda: bad model config (depth %d hidden %d heads %d patch %d size %d)",
                             k->depth, k->hidden, k->heads, k->patch, k->input_size);
    const int hd = k->hidden / k->heads;
    if (hd != 64 && hd != 72)
        return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: head dim %d (the CUDA attention supports 64 and 72)", hd);
    if (k->hidden % 8) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: hidden size %d is not a multiple of 8", k->hidden);
    if (k->hidden > 2048) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: hidden size %d > 2048", k->hidden);
    if (!m->w.blocks) return dit_set_error(DIT_ERR_INPUT, "cuda: model has no blocks");
    return DIT_OK;
}

// ---------------------------------------------------------------- wgmma availability (common.cuh)
static __global__ void wgmma_probe_kernel(int *out) {
#ifdef DIT_WGMMA
    *out = 1;
#else
    *out = 0;
#endif
}

#define WGMMA_MAX_DEV 64
static signed char wgmma_by_device[WGMMA_MAX_DEV];   // 0 not probed, 1 runs, -1 does not

int dit_wgmma_probe(int device) {
    if (device < 0 || device >= WGMMA_MAX_DEV) return 0;
    if (wgmma_by_device[device]) return wgmma_by_device[device] > 0;
    int major = 0, yes = 0, *d = NULL;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess && major == 9 &&
        cudaMalloc((void **)&d, sizeof(int)) == cudaSuccess) {
        wgmma_probe_kernel<<<1, 1>>>(d);
        if (cudaMemcpy(&yes, d, sizeof(int), cudaMemcpyDeviceToHost) != cudaSuccess) yes = 0;
        cudaFree(d);
    }
    cudaGetLastError();   // a failed probe means "no", not a pending error
    wgmma_by_device[device] = yes == 1 ? 1 : -1;
    return yes == 1;
}

int dit_wgmma_ok(void) {
    int dev = 0;
    return cudaGetDevice(&dev) == cudaSuccess && dev >= 0 && dev < WGMMA_MAX_DEV && wgmma_by_device[dev] > 0;
}

int dit_cuda_has_wgmma(void) { return dit_cuda_available() > 0 && cudaSetDevice(0) == cudaSuccess && dit_wgmma_probe(0); }

static int cuda_setup(dit_cuda *c, int device) {
    c->device = device;
    CUDA_CHECK(cudaSetDevice(device));
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    snprintf(c->device_name, sizeof(c->device_name), "%.63s", prop.name);
    c->n_sm = prop.multiProcessorCount;
    c->wgmma_ok = dit_wgmma_probe(device);
    const char *ev = getenv("DIT_VAE_CONV");   // im2col | implicit: force one 3x3 conv path (tests, comparisons)
    c->vae_conv = !ev ? 0 : !strcmp(ev, "im2col") ? 1 : !strcmp(ev, "implicit") ? 2 : 0;
    // the step's stream first when both have blocks waiting: the side stream's work (the next weight's
    // dequantization) fills the SMs the step leaves idle instead of delaying it
    int lo = 0, hi = 0;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
    CUDA_CHECK(cudaStreamCreateWithPriority(&c->stream, cudaStreamNonBlocking, hi));
    CUDA_CHECK(cudaStreamCreateWithPriority(&c->side, cudaStreamNonBlocking, lo));
    CUDA_CHECK(cudaEventCreateWithFlags(&c->fork, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&c->join, cudaEventDisableTiming));
    CUBLAS_CHECK(cublasLtCreate(&c->lt));
    c->lt_ws_bytes = DIT_CUDA_WORKSPACE;
    CUDA_CHECK(cudaMalloc(&c->lt_ws, c->lt_ws_bytes));
    return DIT_OK;
}

static void cuda_teardown(dit_cuda *c) {
    // the step graph before the communicators: NCCL waits for graphs that captured a communicator to be
    // destroyed before it frees that communicator (a hang, the other way round)
    if (c->graph) { cudaGraphExecDestroy(c->graph); c->graph = NULL; }
    if (c->vae_graph) { cudaGraphExecDestroy(c->vae_graph); c->vae_graph = NULL; }
    if (c->group) dit_par_destroy(c);   // the other GPUs' contexts and every communicator
    cudaSetDevice(c->device);
    dit_par_rank_free(c);
    dit_gemm_free_plans(c);
    for (int i = 0; i < c->n_prof; i++) {
        cudaEventDestroy(c->prof[i].e0);
        cudaEventDestroy(c->prof[i].e1);
    }
    free(c->prof);
    cudaFree(c->arena);
    cudaFree(c->wbuf);
    cudaFree(c->vbuf);
    cudaFree(c->lt_ws);
    if (c->lt) cublasLtDestroy(c->lt);
    if (c->stream) cudaStreamDestroy(c->stream);
    if (c->side) cudaStreamDestroy(c->side);
    if (c->fork) cudaEventDestroy(c->fork);
    if (c->join) cudaEventDestroy(c->join);
    free(c->blocks);
    free(c);
}

static int init_impl(dit_cuda *c, dit_model *m, int device) {
    TRY(check_shapes(m));
    TRY(cuda_setup(c, device));
    const dit_config *k = &m->cfg;
    c->D = k->hidden; c->H = k->heads; c->hd = k->hidden / k->heads; c->depth = k->depth;
    c->C = k->in_channels; c->L = k->input_size; c->p = k->patch; c->g = c->L / c->p; c->T = c->g * c->g;
    c->Tl = c->T; c->t0 = 0;   // one GPU: all tokens (parallel.cu narrows them for sequence parallel)
    c->oc = k->out_channels; c->pp_oc = c->p * c->p * c->oc; c->n_classes = k->num_classes;
    c->F = (int)m->w.blocks[0].fc1_w.ne[1];
    c->ct = pick_compute_type(m);
    c->cfg_ch = k->cfg_channels;
    const char *ev = getenv("DIT_CUDA_GRAPH");
    c->use_graph = !(ev && ev[0] == '0');
    ev = getenv("DIT_CUDA_AHEAD");   // 0: quantized weights dequantized in line, not ahead (for comparisons)
    c->dequant_ahead = !(ev && ev[0] == '0');
    ev = getenv("DIT_CUDA_TUNE");
    c->autotune = !ev ? 1 : ev[0] == '0' ? 0 : ev[0] == '2' ? 2 : 1;   // 2: and print each choice
    // tuning costs ~0.15 s (8 candidates per GEMM shape loaded, captured, timed) to save ~3 % of a step, which
    // one sample does not pay back (measured on an H100: 250 DDPM steps 0.80 s tuned, 0.65 s not); a process
    // that keeps sampling tunes once its samples reach 500 steps. DIT_CUDA_TUNE=1 tunes from the start.
    c->tune_min_steps = ev ? 0 : 500;
    c->blocks = (dit_cuda_block *)calloc((size_t)c->depth, sizeof(dit_cuda_block));
    if (!c->blocks) return dit_set_error(DIT_ERR_NOMEM, "cuda: out of host memory");

    dit_gemm_warm warm;
    dit_gemm_warm_start(c, &warm);   // cuBLASLt's first queries on threads, beside the upload
    const int rc = upload_weights(c, m);
    dit_gemm_warm_join(&warm);
    TRY(rc);

    // cuBLASLt's GELU epilogue must be the tanh form (§1.8) to be used for fc1
    int is_tanh = 0;
    if (dit_gemm_probe_gelu(c, &is_tanh) != DIT_OK) is_tanh = 0;
    c->gelu_epilogue = is_tanh;
    return DIT_OK;
}

// a context on `device` with the model's weights uploaded (m->cuda untouched)
int dit_cuda_ctx_create(const dit_model *m, int device, dit_cuda **out) {
    *out = NULL;
    if (device < 0 || dit_cuda_available() <= device)
        return dit_set_error(DIT_ERR_DEVICE, "cuda: no GPU %d (%d visible)", device, dit_cuda_available());
    dit_cuda *c = (dit_cuda *)calloc(1, sizeof(dit_cuda));
    if (!c) return dit_set_error(DIT_ERR_NOMEM, "cuda: out of host memory");
    int rc = init_impl(c, (dit_model *)m, device);
    if (rc != DIT_OK) {
        cuda_teardown(c);
        return rc;
    }
    *out = c;
    return DIT_OK;
}
void dit_cuda_ctx_destroy(dit_cuda *c) {
    if (!c) return;
    cudaSetDevice(c->device);
    cudaStreamSynchronize(c->stream);
    cuda_teardown(c);
}

int dit_cuda_init(dit_model *m, int device) {
    if (!m) return dit_set_error(DIT_ERR_INPUT, "cuda: NULL model");
    if (m->cuda) return DIT_OK;
    return dit_cuda_ctx_create(m, device, &m->cuda);
}

void dit_cuda_free(dit_model *m) {
    if (!m || !m->cuda) return;
    dit_cuda_ctx_destroy(m->cuda);
    m->cuda = NULL;
}

int dit_cuda_get_info(const dit_model *m, dit_cuda_info *info) {
    memset(info, 0, sizeof(*info));
    if (!m->cuda) return dit_set_error(DIT_ERR_INPUT, "cuda: model not on the GPU (dit_cuda_init)");
    const dit_cuda *c = m->cuda;
    info->compute_type = c->ct;
    info->gelu_epilogue = c->gelu_epilogue;
    info->graph = c->use_graph;
    info->weight_bytes = c->wbytes + c->vbytes;
    info->arena_bytes = c->arena_bytes + c->lt_ws_bytes;
    snprintf(info->device_name, sizeof(info->device_name), "%s", c->device_name);
    info->ms_setup = c->ms_phase[0]; info->ms_first_step = c->ms_phase[1];
    info->ms_capture = c->ms_phase[2]; info->ms_steps = c->ms_phase[3];
    return DIT_OK;
}

// ---------------------------------------------------------------- arena
// B network rows, N latent images, R conditioning rows (chunk of steps x B), K sampler steps,
// noise_K steps of user noise. Grows (never shrinks); a new arena invalidates the captured graph.
typedef struct {
    size_t off;
} aplan;
static size_t ap_take(aplan *a, size_t bytes) {
    size_t o = a->off;
    a->off += (bytes + DIT_CUDA_ALIGN - 1) / DIT_CUDA_ALIGN * DIT_CUDA_ALIGN;
    return o;
}

// at least `bytes` of arena; a new allocation invalidates the captured graph and the DiT layout
// (the VAE decoder borrows the same memory: the DiT buffers are idle while it runs)
int dit_arena_reserve(dit_cuda *c, size_t bytes) {
    if (c->arena && bytes <= c->arena_bytes) return DIT_OK;
    if (c->graph) { cudaGraphExecDestroy(c->graph); c->graph = NULL; }
    if (c->vae_graph) { cudaGraphExecDestroy(c->vae_graph); c->vae_graph = NULL; }
    if (c->arena) {
        CUDA_CHECK(cudaStreamSynchronize(c->stream));
        CUDA_CHECK(cudaStreamSynchronize(c->side));   // a dequantization ahead writes the arena too
        cudaFree(c->arena);
        c->arena = NULL;
        c->pf_w = NULL;
    }
    c->arena_B = c->arena_N = c->arena_R = c->coef_K = c->noise_K = 0;
    c->arena_bytes = 0;
    cudaError_t e = cudaMalloc((void **)&c->arena, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return dit_set_error(DIT_ERR_DEVICE, "cuda: cannot allocate a %.1f MB arena: %s", bytes / 1e6,
                             cudaGetErrorString(e));
    }
    c->arena_bytes = bytes;
    return DIT_OK;
}

static int arena_plan(dit_cuda *c, int B, int N, int R, int K, int noise_K) {
    if (c->arena_B && B <= c->arena_B && N <= c->arena_N && R <= c->arena_R && K <= c->coef_K &&
        noise_K <= c->noise_K)
        return DIT_OK;
    B = B > c->arena_B ? B : c->arena_B;
    N = N > c->arena_N ? N : c->arena_N;
    R = R > c->arena_R ? R : c->arena_R;
    K = K > c->coef_K ? K : c->coef_K;
    noise_K = noise_K > c->noise_K ? noise_K : c->noise_K;
    const size_t M = (size_t)B * c->Tl, D = c->D, es = 2;
    const dit_par_rank *pr = c->pr;
    const size_t FB = pr ? (size_t)B * pr->cf : (size_t)B;   // rows of the whole network output (the sampler's view)
    const size_t lat = (size_t)c->C * c->L * c->L;
    aplan a = { 0 };
    size_t o_h = ap_take(&a, M * D * 4), o_y = ap_take(&a, M * D * es);
    size_t o_xin = ap_take(&a, M * D * es), o_qkv = ap_take(&a, M * 3 * D * es), o_att = ap_take(&a, M * D * es);
    size_t o_mlp = ap_take(&a, M * c->F * es), o_deq = ap_take(&a, c->deq_elems * es);
    // a second scratch buffer turns on the dequantization ahead (gemm.cu): one GPU, quantized weights
    const int ahead = c->dequant_ahead && !pr && c->deq_elems;
    size_t o_deq2 = ahead ? ap_take(&a, c->deq_elems * es) : 0;
    size_t o_fout = ap_take(&a, FB * c->T * c->pp_oc * 4);
    // multi-GPU: this rank's output rows where the image group shares its rows (data parallel alone: fout
    // itself), the gathered pieces of a token split, its exchange buffers, every data slice's latents
    const size_t G = pr ? (size_t)pr->cf * pr->S : 1, S = pr ? (size_t)pr->S : 1;
    const int dd = pr ? pr->dd : 1;
    size_t o_floc = G > 1 ? ap_take(&a, M * c->pp_oc * 4) : 0, o_fgat = S > 1 ? ap_take(&a, G * M * c->pp_oc * 4) : 0;
    size_t o_sp[3] = { 0, 0, 0 };
    for (int i = 0; S > 1 && i < 3; i++) o_sp[i] = ap_take(&a, S * M * 3 * D * es);
    size_t o_latg = dd > 1 ? ap_take(&a, (size_t)pr->world * N * c->C * c->L * c->L * 4) : 0;
    size_t o_lat = ap_take(&a, (size_t)(N > B ? N : B) * lat * 4);
    size_t o_lout = ap_take(&a, (size_t)B * c->oc * c->L * c->L * 4);
    size_t o_tsin = ap_take(&a, (size_t)R * 256 * 4), o_cond = ap_take(&a, (size_t)R * D * 4);
    size_t o_cond2 = ap_take(&a, (size_t)R * D * 4), o_scond = ap_take(&a, (size_t)R * D * es);
    size_t o_mod = ap_take(&a, (size_t)c->depth * R * 6 * D * 4), o_fmod = ap_take(&a, (size_t)R * 2 * D * 4);
    size_t o_coef = ap_take(&a, (size_t)(K > 0 ? K : 1) * CO_STRIDE * 4), o_x0p = ap_take(&a, (size_t)N * lat * 4);
    size_t o_noise = ap_take(&a, (size_t)noise_K * N * lat * 4);
    size_t o_state = ap_take(&a, sizeof(dit_cuda_state)), o_lab = ap_take(&a, (size_t)(R > B ? R : B) * 4);

    TRY(dit_arena_reserve(c, a.off));
    char *p = c->arena;
    c->h = (float *)(p + o_h); c->y = p + o_y;
    c->xin = p + o_xin; c->qkv = p + o_qkv; c->att = p + o_att; c->mlp = p + o_mlp;
    c->deqs[0] = p + o_deq; c->deqs[1] = ahead ? p + o_deq2 : NULL;
    c->fout = (float *)(p + o_fout); c->lat = (float *)(p + o_lat); c->lat_out = (float *)(p + o_lout);
    c->fout_loc = G > 1 ? (float *)(p + o_floc) : c->fout;
    c->fgath = S > 1 ? (float *)(p + o_fgat) : NULL;
    for (int i = 0; i < 3; i++) c->sp[i] = S > 1 ? p + o_sp[i] : NULL;
    c->latg = dd > 1 ? (float *)(p + o_latg) : NULL;
    c->tsin = (float *)(p + o_tsin); c->cond = (float *)(p + o_cond); c->cond2 = (float *)(p + o_cond2);
    c->scond = p + o_scond; c->mod = (float *)(p + o_mod); c->fmod = (float *)(p + o_fmod);
    c->coef = (float *)(p + o_coef); c->x0prev = (float *)(p + o_x0p);
    c->noise = noise_K ? (float *)(p + o_noise) : NULL;
    c->state = (dit_cuda_state *)(p + o_state); c->d_labels = (int *)(p + o_lab);
    c->arena_B = B; c->arena_N = N; c->arena_R = R; c->coef_K = K; c->noise_K = noise_K;
    return DIT_OK;
}

// ---------------------------------------------------------------- conditioning and modulation
// Sinusoidal timestep features (§1.3), exactly as the CPU path: freqs_k = fp32 exp(fp32(-ln 1e4) k / 128),
// args = fp32(t * freqs_k), emb = [cos(args), sin(args)] evaluated in double and rounded to fp32.
static void timestep_features(float t, float *out) {
    const float a = (float)-log(10000.0);
    for (int k = 0; k < 128; k++) {
        const float fr = expf(a * (float)k / 128.0f);
        const float arg = t * fr;
        out[k] = (float)cos((double)arg);
        out[128 + k] = (float)sin((double)arg);
    }
}

// rows r < R: tsin (R, 256) and labels (B) uploaded by the caller -> c->mod, c->fmod
static int precompute_modulation(dit_cuda *c, int R, int B) {
    cudaStream_t st = c->stream;
    const int D = c->D;
    c->prof_layer = -1;
    OP(c, "t_fc1", dit_op_linear(c, &c->t1, c->tsin, R, c->cond2, DIT_TYPE_F32, EPI_BIAS, st));
    OP(c, "t_silu", dit_op_silu_inplace(c->cond2, (int64_t)R * D, st));
    OP(c, "t_fc2", dit_op_linear(c, &c->t2, c->cond2, R, c->cond, DIT_TYPE_F32, EPI_BIAS, st));
    OP(c, "cond_label_silu", dit_op_cond_finish(c->cond, c->y_table, c->d_labels, B, c->scond, c->ct, R, D, st));
    for (int l = 0; l < c->depth; l++) {
        c->prof_layer = l;
        OP(c, "adaLN_all_steps", dit_op_linear(c, &c->blocks[l].ada, c->scond, R,
                                               c->mod + (size_t)l * c->arena_R * 6 * D, DIT_TYPE_F32, EPI_BIAS, st));
    }
    c->prof_layer = c->depth;
    OP(c, "final_adaLN_all_steps", dit_op_linear(c, &c->final_ada, c->scond, R, c->fmod, DIT_TYPE_F32, EPI_BIAS, st));
    return DIT_OK;
}

// ---------------------------------------------------------------- the network
// lat (n_img, C, L, L) -> c->fout (B*T, p*p*oc); modulation rows from the device state
// K: steps of the sample this network run belongs to (0 for a lone forward), for the autotuning rule
static int run_network_ops(dit_cuda *c, int B, int n_img);
static int run_network(dit_cuda *c, int B, int n_img, int K) {
    c->prof_layer = -1;
    c->tune_now = c->steps_run + K >= c->tune_min_steps;   // GEMMs run here get tuned
    int rc = run_network_ops(c, B, n_img);
    c->tune_now = 0;
    return rc;
}

static int run_network_ops(dit_cuda *c, int B, int n_img) {
    cudaStream_t st = c->stream;
    const int D = c->D, T = c->Tl;   // tokens of this rank (all of them on one GPU)
    const int64_t M = (int64_t)B * T;
    const size_t ms = (size_t)c->arena_R * 6 * D;   // one block's modulation cache
    const int64_t S6 = 6 * D, S2 = 2 * D;
    OP(c, "patch_embed", dit_op_patch_embed(c->lat, n_img, c->x_emb_w, c->x_emb_b, c->pos, c->h, B, c->C, c->L, c->p,
                                            D, c->t0, T, st));
    // quantized weights: each GEMM starts the next one's dequantization where arena_plan made a second
    // scratch buffer (one GPU only: measured there; with a token split the all-gather mode has the side stream)
    for (int l = 0; l < c->depth; l++) {
        const dit_cuda_block *bl = &c->blocks[l];
        const dit_cuda_lin *after_fc2 = l + 1 < c->depth ? &c->blocks[l + 1].qkv : &c->final_lin;
        const float *mod = c->mod + l * ms, *prev = l > 0 ? c->mod + (l - 1) * ms : NULL;
        c->prof_layer = l;
        // h += gate_mlp(l-1) * y;  xin = modulate(LN(h), shift_msa, scale_msa)
        OP(c, "resid_ln_mod", dit_op_resid_ln_mod(l > 0 ? c->y : NULL, c->h, c->xin, c->ct, M, D, T,
                                                  prev ? prev + 5 * D : NULL, S6, mod + 0 * D, mod + 1 * D, S6,
                                                  c->state, st));
        if (c->pr && c->pr->S > 1) TRY(dit_par_attention(c, &bl->qkv, B, l, st));   // tokens spread over GPUs
        else {
            OP(c, "qkv", dit_op_linear_next(c, &bl->qkv, &bl->proj, c->xin, M, c->qkv, c->ct, EPI_BIAS, st));
            OP(c, "attention", dit_op_attention(c->qkv, c->att, c->ct, B, T, c->H, c->hd, st));
        }
        OP(c, "proj", dit_op_linear_next(c, &bl->proj, &bl->fc1, c->att, M, c->y, c->ct, EPI_BIAS, st));
        // h += gate_msa * y;  xin = modulate(LN(h), shift_mlp, scale_mlp)
        OP(c, "resid_ln_mod", dit_op_resid_ln_mod(c->y, c->h, c->xin, c->ct, M, D, T, mod + 2 * D, S6, mod + 3 * D,
                                                  mod + 4 * D, S6, c->state, st));
        OP(c, "fc1_gelu", dit_op_linear_next(c, &bl->fc1, &bl->fc2, c->xin, M, c->mlp, c->ct,
                                             EPI_GELU_BIAS, st));
        OP(c, "fc2", dit_op_linear_next(c, &bl->fc2, after_fc2, c->mlp, M, c->y, c->ct, EPI_BIAS, st));
    }
    c->prof_layer = c->depth;
    const float *last = c->mod + (size_t)(c->depth - 1) * ms;
    OP(c, "final_resid_ln_mod", dit_op_resid_ln_mod(c->y, c->h, c->xin, c->ct, M, D, T, last + 5 * D, S6, c->fmod,
                                                    c->fmod + D, S2, c->state, st));
    OP(c, "final_linear", dit_op_linear(c, &c->final_lin, c->xin, M, c->fout_loc, DIT_TYPE_F32, EPI_BIAS, st));
    TRY(dit_gemm_join(c, st));   // nothing may stay open on the side stream at the end of a captured step
    if (c->pr) TRY(dit_par_gather_output(c, B, st));   // every rank of the image group gets all rows
    return DIT_OK;
}

static int check_labels(const dit_cuda *c, const int *y, int n) {
    for (int i = 0; i < n; i++)
        if (y[i] < 0 || y[i] > c->n_classes)
            return dit_set_error(DIT_ERR_INPUT, "cuda: label %d out of range [0, %d]", y[i], c->n_classes);
    return DIT_OK;
}

int dit_cuda_forward(dit_model *m, const float *x, const float *t, const int *y, int B, float *out) {
    if (!m->cuda) TRY(dit_cuda_init(m, 0));   // first use: upload to GPU 0
    dit_cuda *c = m->cuda;
    if (c->pr) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: forward runs on one GPU (this model is set up for %d)",
                                    c->pr->world);
    if (B <= 0) return dit_set_error(DIT_ERR_INPUT, "cuda: batch %d", B);
    TRY(check_labels(c, y, B));
    CUDA_CHECK(cudaSetDevice(c->device));
    TRY(arena_plan(c, B, B, B, 1, 0));
    cudaStream_t st = c->stream;
    const size_t lat = (size_t)c->C * c->L * c->L;
    float *tsin = (float *)malloc((size_t)B * 256 * sizeof(float));
    if (!tsin) return dit_set_error(DIT_ERR_NOMEM, "cuda: out of host memory");
    for (int b = 0; b < B; b++) timestep_features(t[b], tsin + (size_t)b * 256);
    cudaError_t e = cudaMemcpyAsync(c->tsin, tsin, (size_t)B * 256 * 4, cudaMemcpyHostToDevice, st);
    free(tsin);
    CUDA_CHECK(e);
    CUDA_CHECK(cudaMemcpyAsync(c->d_labels, y, (size_t)B * sizeof(int), cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(c->lat, x, (size_t)B * lat * 4, cudaMemcpyHostToDevice, st));
    TRY(dit_op_state_set(c->state, 0, 0, 1, st));
    TRY(precompute_modulation(c, B, B));
    TRY(run_network(c, B, B, 0));
    OP(c, "unpatchify", dit_op_unpatchify(c->fout, c->lat_out, B, c->oc, c->L, c->p, st));
    CUDA_CHECK(cudaMemcpyAsync(out, c->lat_out, (size_t)B * c->oc * c->L * c->L * 4, cudaMemcpyDeviceToHost, st));
    CUDA_CHECK(cudaStreamSynchronize(st));
    return DIT_OK;
}

// ---------------------------------------------------------------- sampler

// per loop iteration i (k = K-1-i): the float64 schedule rounded once to fp32 (GD:870)
static void sampler_coefs(const dit_schedule *s, int sampler, float eta, float *co) {
    for (int i = 0; i < s->K; i++) {
        const int k = s->K - 1 - i;
        float *q = co + (size_t)i * CO_STRIDE;
        memset(q, 0, CO_STRIDE * sizeof(float));
        q[CO_SR] = (float)s->sqrt_recip_alphas_cumprod[k];
        q[CO_SRM1] = (float)s->sqrt_recipm1_alphas_cumprod[k];
        q[CO_C1] = (float)s->posterior_mean_coef1[k];
        q[CO_C2] = (float)s->posterior_mean_coef2[k];
        q[CO_LOGB] = (float)log(s->betas[k]);
        q[CO_PLVC] = (float)s->posterior_log_variance_clipped[k];
        const double ab = s->alphas_cumprod[k], abp = s->alphas_cumprod_prev[k];
        const double sigma = sampler == DIT_SAMPLER_DDIM ? eta * sqrt((1 - abp) / (1 - ab)) * sqrt(1 - ab / abp) : 0.0;
        q[CO_SABP] = (float)sqrt(abp);
        q[CO_S2] = (float)sqrt(1 - abp - sigma * sigma);
        q[CO_SIGMA] = (float)sigma;
        q[CO_MASK] = k != 0 ? 1.0f : 0.0f;
        // learn_sigma = 0: FIXED_LARGE, log(append(post_var[1], betas[1:]))[k]
        const double var1 = s->K > 1 ? s->betas[1] * (1.0 - s->alphas_cumprod_prev[1]) / (1.0 - s->alphas_cumprod[1])
                                     : s->betas[0];
        q[CO_FIXED] = (float)log(k == 0 ? var1 : s->betas[k]);
        double A, B0, B1;
        dit_dpmpp2m_coefs(s, k, &A, &B0, &B1);
        q[CO_DA] = (float)A; q[CO_DB0] = (float)B0; q[CO_DB1] = (float)B1;
    }
}

typedef struct {
    int N, B, K, S;              // images, network rows of this GPU, steps, steps per modulation chunk
    int img0;                    // first image of this GPU (data parallel)
    dit_sampler_args sa;
    const dit_schedule *s;
    const int *labels;           // N
    const float *noise;          // user step noise on the device (K, N, C, L, L), or NULL: Philox
} sample_job;

static int modulation_chunk_steps(const dit_cuda *c, int B, int K) {
    const char *ev = getenv("DIT_CUDA_MOD_MB");
    const double budget = (ev && atof(ev) > 0 ? atof(ev) : 64.0) * 1048576.0;
    const double per_row = ((double)c->depth * 6 * c->D + 2.0 * c->D) * 4 + (256.0 + 2 * c->D) * 4 + 2.0 * c->D;
    int S = (int)(budget / (per_row * B));
    if (S < 1) S = 1;
    return S < K ? S : K;
}

// upload conditioning rows for steps [i0, i0 + n) and precompute their modulation
static int prepare_chunk(dit_cuda *c, const sample_job *j, int i0, int n) {
    dit_par_beat(c);
    const int R = n * j->B;
    float *tsin = (float *)malloc((size_t)R * 256 * sizeof(float));
    if (!tsin) return dit_set_error(DIT_ERR_NOMEM, "cuda: out of host memory");
    for (int s = 0; s < n; s++) {
        const int k = j->K - 1 - (i0 + s);
        timestep_features((float)j->s->timestep_map[k], tsin + (size_t)s * j->B * 256);
        for (int b = 1; b < j->B; b++)
            memcpy(tsin + ((size_t)s * j->B + b) * 256, tsin + (size_t)s * j->B * 256, 256 * sizeof(float));
    }
    cudaError_t e = cudaMemcpyAsync(c->tsin, tsin, (size_t)R * 256 * 4, cudaMemcpyHostToDevice, c->stream);
    free(tsin);
    CUDA_CHECK(e);
    TRY(precompute_modulation(c, R, j->B));
    TRY(dit_op_state_set(c->state, i0, 0, 0, c->stream));
    return DIT_OK;
}

static int run_step(dit_cuda *c, const sample_job *j) {
    TRY(run_network(c, j->B, j->N, j->K));
    c->prof_layer = c->depth + 1;
    OP(c, "sampler_step",
       dit_op_sampler_step(&j->sa, c->fout, c->lat, c->x0prev, c->coef, j->noise, c->state, c->stream));
    return DIT_OK;
}

static int capture_step(dit_cuda *c, const sample_job *j) {
    if (c->graph) { cudaGraphExecDestroy(c->graph); c->graph = NULL; }
    dit_par_beat(c);
    cudaGraph_t g;
    CUDA_CHECK(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    int rc = run_step(c, j);
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    c->pf_w = NULL;   // a dequantization started inside a failed capture never ran
    if (rc != DIT_OK) {
        if (e == cudaSuccess) cudaGraphDestroy(g);
        return rc;
    }
    CUDA_CHECK(e);
    // one GPU: keep the captured stream priorities (the dequantization ahead must not delay the step's own
    // kernels: measured 2.37 -> 2.22 ms/step with them, 2.54 without). Several GPUs: as verified there
    e = cudaGraphInstantiate(&c->graph, g, c->pr ? 0 : cudaGraphInstantiateFlagUseNodePriority);
    cudaGraphDestroy(g);
    CUDA_CHECK(e);
    return DIT_OK;
}

// everything before the loop: arena, coefficients, labels, noise, latents
static int sample_setup(dit_cuda *c, const dit_sample_params *p, const dit_schedule *s, sample_job *j) {
    memset(j, 0, sizeof(*j));
    if (p->n <= 0 || !p->labels) return dit_set_error(DIT_ERR_INPUT, "cuda: sample: n = %d", p->n);
    if (s->K <= 0 || s->K > DIT_MAX_STEPS) return dit_set_error(DIT_ERR_INPUT, "cuda: sample: %d steps", s->K);
    if (p->sampler < DIT_SAMPLER_DDPM || p->sampler > DIT_SAMPLER_DPMPP_2M)
        return dit_set_error(DIT_ERR_INPUT, "cuda: sample: unknown sampler %d", p->sampler);
    TRY(check_labels(c, p->labels, p->n));
    // this GPU's share (parallel.cu): images img0 .. img0+N-1 of the job (data parallel; the last slice is
    // padded), and of their rows [cond; uncond] both halves or one (CFG parallel)
    const dit_par_rank *pr = c->pr;
    const int Nd = pr ? (p->n + pr->dd - 1) / pr->dd : p->n, cf = pr ? pr->cf : 1;
    if (p->no_cfg && cf > 1)
        return dit_set_error(DIT_ERR_INPUT, "parallel: the GPUs split a CFG batch, and no_cfg has none (make the "
                             "plan with dit_par_params.no_cfg)");
    j->N = Nd; j->B = (p->no_cfg ? 1 : 2) * Nd / cf; j->img0 = pr ? pr->d * Nd : 0;
    j->K = s->K; j->s = s; j->labels = p->labels;
    j->S = modulation_chunk_steps(c, j->B, j->K);
    dit_sampler_args *a = &j->sa;
    a->sampler = p->sampler; a->N = j->N; a->C = c->C; a->L = c->L; a->p = c->p; a->oc = c->oc; a->K = j->K;
    a->cfg_ch = p->no_cfg ? 0 : c->cfg_ch;   // no_cfg: eps = the conditional rows
    a->cfg_scale = p->cfg_scale; a->eta = p->eta; a->seed = p->seed;
    a->clip = p->clip_denoised;
    a->learn_sigma = c->oc >= 2 * c->C;
    a->img0 = (int)p->first_image + j->img0; a->rows = j->B;   // the Philox stream of its first image
    int n_real = p->n - j->img0;   // images of this slice that are not padding
    n_real = n_real < 0 ? 0 : n_real > j->N ? j->N : n_real;

    CUDA_CHECK(cudaSetDevice(c->device));
    TRY(arena_plan(c, j->B, j->N, j->S * j->B, j->K, p->step_noise ? j->K : 0));
    if (pr) TRY(dit_par_prepare(c));   // the peers' buffers (their arenas may have moved too)
    if (p->step_noise && !c->noise) return dit_set_error(DIT_ERR_DEVICE, "cuda: no room for the step noise");
    cudaStream_t st = c->stream;
    const size_t lat = (size_t)c->C * c->L * c->L;

    float *co = (float *)malloc((size_t)j->K * CO_STRIDE * sizeof(float));
    int *lab = (int *)malloc((size_t)j->B * sizeof(int));
    if (!co || !lab) { free(co); free(lab); return dit_set_error(DIT_ERR_NOMEM, "cuda: out of host memory"); }
    sampler_coefs(s, p->sampler, p->eta, co);
    for (int b = 0; b < j->B; b++) {   // global row r of [labels; null]; padding images take class 0
        const int r = (pr ? pr->cfi : 0) * j->B + b;
        lab[b] = r >= j->N ? c->n_classes : r < n_real ? p->labels[j->img0 + r] : 0;
    }
    cudaError_t e1 = cudaMemcpyAsync(c->coef, co, (size_t)j->K * CO_STRIDE * 4, cudaMemcpyHostToDevice, st);
    cudaError_t e2 = cudaMemcpyAsync(c->d_labels, lab, (size_t)j->B * sizeof(int), cudaMemcpyHostToDevice, st);
    cudaStreamSynchronize(st);   // the host buffers are freed next
    free(co);
    free(lab);
    CUDA_CHECK(e1);
    CUDA_CHECK(e2);
    if (p->step_noise) {   // (K, n) -> this GPU's (K, N) slice, padding zero
        if (n_real < j->N) CUDA_CHECK(cudaMemsetAsync(c->noise, 0, (size_t)j->K * j->N * lat * 4, st));
        if (n_real > 0)
            CUDA_CHECK(cudaMemcpy2DAsync(c->noise, (size_t)j->N * lat * 4, p->step_noise + (size_t)j->img0 * lat,
                                         (size_t)p->n * lat * 4, (size_t)n_real * lat * 4, j->K, cudaMemcpyHostToDevice,
                                         st));
    }
    if (p->init_noise) {
        if (n_real < j->N) CUDA_CHECK(cudaMemsetAsync(c->lat, 0, (size_t)j->N * lat * 4, st));
        if (n_real > 0)
            CUDA_CHECK(cudaMemcpyAsync(c->lat, p->init_noise + (size_t)j->img0 * lat, (size_t)n_real * lat * 4,
                                       cudaMemcpyHostToDevice, st));
    } else {
        OP(c, "init_noise", dit_op_randn(p->seed, (int)p->first_image + j->img0, j->N, 0, c->lat, (int64_t)lat, st));
    }
    TRY(dit_op_state_set(c->state, 0, 0, 1, st));
    j->noise = p->step_noise ? c->noise : NULL;
    return DIT_OK;
}

// wait for an event; on several GPUs with a timeout and the group's abort flag (a stuck peer never hangs us)
static int wait_event(dit_cuda *c, cudaEvent_t e) {
    if (c->pr) return dit_par_wait(c, e);
    CUDA_CHECK(cudaEventSynchronize(e));
    return DIT_OK;
}

// steps [0, K): modulation chunk by chunk, step 0 of each capture eager (it creates the GEMM plans),
// then graph replays. progress(i + 1, K) is called a few steps behind the GPU to keep it fed.
static int sample_loop(dit_cuda *c, const sample_job *j, const dit_sample_params *p) {
    enum { LAG = 4 };
    cudaEvent_t ev[LAG];
    for (int i = 0; i < LAG; i++) CUDA_CHECK(cudaEventCreateWithFlags(&ev[i], cudaEventDisableTiming));
    int rc = DIT_OK, reported = 0;
    const int graph = c->use_graph && !c->profiling && !c->eager;
    int captured = 0;
    double t = 1e3 * host_seconds();
    for (int i = 0; i < j->K && rc == DIT_OK; i++) {
        if (i % j->S == 0) {
            const int n = j->K - i < j->S ? j->K - i : j->S;
            rc = prepare_chunk(c, j, i, n);
            if (rc != DIT_OK) break;
        }
        if (c->pr && i == c->pr->stall_step && (rc = dit_par_test_stall(c)) != DIT_OK) break;
        if (graph && captured) {
            cudaError_t e = cudaGraphLaunch(c->graph, c->stream);
            if (e != cudaSuccess) rc = dit_cuda_error_(__FILE__, __LINE__, __func__, "cudaGraphLaunch", cudaGetErrorString(e));
        } else {
            rc = run_step(c, j);
            if (i == 0) c->ms_phase[1] = 1e3 * host_seconds() - t, t = 1e3 * host_seconds();
            if (rc == DIT_OK && graph && i + 1 < j->K) {
                rc = capture_step(c, j);
                captured = rc == DIT_OK;
            }
            if (i == 0) c->ms_phase[2] = 1e3 * host_seconds() - t, t = 1e3 * host_seconds();
        }
        if (rc != DIT_OK) break;
        cudaEventRecord(ev[i % LAG], c->stream);
        if (i >= LAG - 1 && ((p && p->progress) || c->pr)) {
            rc = wait_event(c, ev[(i - LAG + 1) % LAG]);
            if (rc == DIT_OK && p && p->progress) p->progress(++reported, j->K, p->progress_user);
        }
    }
    if (rc == DIT_OK) {
        cudaError_t e = cudaEventRecord(ev[0], c->stream);
        rc = e == cudaSuccess ? wait_event(c, ev[0])
                              : dit_cuda_error_(__FILE__, __LINE__, __func__, "cudaEventRecord", cudaGetErrorString(e));
    }
    c->ms_phase[3] = 1e3 * host_seconds() - t;
    while (rc == DIT_OK && p && p->progress && reported < j->K) p->progress(++reported, j->K, p->progress_user);
    for (int i = 0; i < LAG; i++) cudaEventDestroy(ev[i]);
    return rc;
}

int dit_cuda_sample(dit_model *m, const dit_sample_params *p, const dit_schedule *s, float *out) {
    if (!m->cuda) TRY(dit_cuda_init(m, 0));   // first use: upload to GPU 0
    if (m->cuda->group) return dit_par_sample(m->cuda, p, s, out);   // several GPUs (parallel.cu)
    return dit_cuda_sample_ctx(m->cuda, p, s, out);
}

// the sampler on one context; on several GPUs each runs this in its own thread, and `out` (all n images,
// gathered) is written by those that pass one
int dit_cuda_sample_ctx(dit_cuda *c, const dit_sample_params *p, const dit_schedule *s, float *out) {
    sample_job j;
    memset(c->ms_phase, 0, sizeof(c->ms_phase));
    const double t0 = 1e3 * host_seconds();
    TRY(sample_setup(c, p, s, &j));
    c->ms_phase[0] = 1e3 * host_seconds() - t0;
    TRY(sample_loop(c, &j, p));
    c->steps_run += j.K;
    dit_cuda_state st;
    CUDA_CHECK(cudaMemcpy(&st, c->state, sizeof(st), cudaMemcpyDeviceToHost));
    if (st.nonfinite_step != INT_MAX)
        return dit_set_error(DIT_ERR_NUMERIC, "cuda: NaN/Inf in the latents at step %d of %d (k = %d)",
                             st.nonfinite_step + 1, j.K, j.K - 1 - st.nonfinite_step);
    if (c->pr) return dit_par_gather_latents(c, j.N, p->n, out);
    CUDA_CHECK(cudaMemcpy(out, c->lat, (size_t)j.N * c->C * c->L * c->L * 4, cudaMemcpyDeviceToHost));
    return DIT_OK;
}

// ---------------------------------------------------------------- decode
int dit_cuda_decode(dit_model *m, const float *latents, int n, float *images) {
    if (!m->cuda) TRY(dit_cuda_init(m, 0));   // first use: upload to GPU 0
    dit_cuda *c = m->cuda;
    CUDA_CHECK(cudaSetDevice(c->device));
    if (c->group && n > 1) return dit_par_decode(c, m, latents, n, images);   // every GPU of this process
    return dit_vae_decode_cuda(c, m, latents, n, images);
}

// ---------------------------------------------------------------- profiling API
int dit_cuda_profile_begin(dit_model *m) {
    dit_cuda *c = m->cuda;
    if (!c) return dit_set_error(DIT_ERR_INPUT, "cuda: model not on the GPU (dit_cuda_init)");
    c->profiling = 1;
    if (c->group) dit_par_set_eager(c, 1);   // GPU 0 runs op by op: a captured NCCL call must be so on all ranks
    return DIT_OK;
}

typedef struct {
    const char *name;
    double ms;
    int calls;
} prof_row;

static int prof_row_cmp(const void *a, const void *b) {
    const double x = ((const prof_row *)a)->ms, y = ((const prof_row *)b)->ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

int dit_cuda_profile_end(dit_model *m, const char *trace_path, FILE *summary) {
    dit_cuda *c = m->cuda;
    if (!c) return dit_set_error(DIT_ERR_INPUT, "cuda: model not on the GPU (dit_cuda_init)");
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    c->profiling = 0;
    if (c->group) dit_par_set_eager(c, 0);
    int rc = DIT_OK;
    prof_row *rows = (prof_row *)calloc((size_t)c->n_prof + 1, sizeof(prof_row));
    int nrows = 0;
    double total = 0;
    FILE *f = NULL;
    dit_atomic_file af;
    if (trace_path) {
        if (dit_atomic_open(&af, trace_path) != DIT_OK) { rc = dit_last_error_code(); trace_path = NULL; }
        else {
            f = af.f;
            fprintf(f, "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n");
        }
    }
    for (int i = 0; i < c->n_prof; i++) {
        dit_prof_event *e = &c->prof[i];
        float t0 = 0, dur = 0;
        cudaEventElapsedTime(&t0, c->prof[0].e0, e->e0);
        cudaEventElapsedTime(&dur, e->e0, e->e1);
        total += dur;
        if (f)
            fprintf(f, "%s{\"name\": \"%s\", \"cat\": \"gpu\", \"ph\": \"X\", \"pid\": 0, \"tid\": 0, \"ts\": %.3f, "
                       "\"dur\": %.3f, \"args\": {\"layer\": %d}}",
                    i ? ",\n" : "", e->name, t0 * 1000.0, dur * 1000.0, e->layer);
        if (rows) {
            int r = 0;
            while (r < nrows && strcmp(rows[r].name, e->name) != 0) r++;
            if (r == nrows) { rows[nrows].name = e->name; nrows++; }
            rows[r].ms += dur;
            rows[r].calls++;
        }
    }
    if (f) {
        fprintf(f, "\n]}\n");
        if (dit_atomic_commit(&af) != DIT_OK && rc == DIT_OK) rc = dit_last_error_code();
    }
    if (summary && rows) {
        qsort(rows, nrows, sizeof(prof_row), prof_row_cmp);
        fprintf(summary, "%-24s %10s %8s %10s %6s\n", "op", "total ms", "calls", "mean us", "%");
        for (int r = 0; r < nrows; r++)
            fprintf(summary, "%-24s %10.3f %8d %10.2f %6.1f\n", rows[r].name, rows[r].ms, rows[r].calls,
                    1000.0 * rows[r].ms / rows[r].calls, total > 0 ? 100.0 * rows[r].ms / total : 0.0);
        fprintf(summary, "%-24s %10.3f %8d   (sum of op times, without launch gaps)\n", "total", total, c->n_prof);
    }
    free(rows);
    for (int i = 0; i < c->n_prof; i++) {
        cudaEventDestroy(c->prof[i].e0);
        cudaEventDestroy(c->prof[i].e1);
    }
    c->n_prof = 0;
    return rc;
}

// ---------------------------------------------------------------- bench harness
static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int dit_cuda_bench(dit_model *m, int n, int steps, int reps, dit_cuda_bench_result *r) {
    memset(r, 0, sizeof(*r));
    dit_cuda *c = m->cuda;
    if (!c) return dit_set_error(DIT_ERR_INPUT, "cuda: model not on the GPU (dit_cuda_init)");
    if (c->pr) return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: bench: one GPU only (time dit_sample on several)");
    if (n <= 0 || steps <= 0 || reps <= 0) return dit_set_error(DIT_ERR_INPUT, "cuda: bench: bad arguments");
    static dit_schedule s;   // large: keep it off the stack
    char spacing[16];
    snprintf(spacing, sizeof(spacing), "%d", steps);
    TRY(dit_schedule_init(&s, spacing));
    int *labels = (int *)malloc((size_t)n * sizeof(int));
    if (!labels) return dit_set_error(DIT_ERR_NOMEM, "cuda: out of host memory");
    for (int i = 0; i < n; i++) labels[i] = (207 + 131 * i) % (c->n_classes > 0 ? c->n_classes : 1);
    dit_sample_params p = dit_sample_params_default();
    p.n = n; p.labels = labels; p.steps = steps; p.seed = 1;
    sample_job j;
    int rc = sample_setup(c, &p, &s, &j);
    free(labels);
    TRY(rc);
    if (j.S < j.K) j.K = j.S;   // time one chunk of steps (the modulation cache holds S steps)
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    // precompute (cold: plans and lazily loaded kernels; then timed warm), warm-up step with capture,
    // then reps x K replays
    TRY(prepare_chunk(c, &j, 0, j.K));
    CUDA_CHECK(cudaEventRecord(e0, c->stream));
    TRY(prepare_chunk(c, &j, 0, j.K));
    CUDA_CHECK(cudaEventRecord(e1, c->stream));
    CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    r->ms_precompute = ms;
    TRY(run_step(c, &j));
    if (c->use_graph) TRY(capture_step(c, &j));
    double *t = (double *)malloc((size_t)reps * sizeof(double));
    if (!t) return dit_set_error(DIT_ERR_NOMEM, "cuda: out of host memory");
    for (int k = 0; k < reps && rc == DIT_OK; k++) {
        dit_op_state_set(c->state, 0, 0, 1, c->stream);
        cudaEventRecord(e0, c->stream);
        for (int i = 0; i < j.K && rc == DIT_OK; i++)
            rc = c->use_graph ? (cudaGraphLaunch(c->graph, c->stream) == cudaSuccess ? DIT_OK
                                 : dit_set_error(DIT_ERR_DEVICE, "cuda: cudaGraphLaunch failed"))
                              : run_step(c, &j);
        cudaEventRecord(e1, c->stream);
        if (cudaEventSynchronize(e1) != cudaSuccess) rc = dit_set_error(DIT_ERR_DEVICE, "cuda: bench run failed");
        cudaEventElapsedTime(&ms, e0, e1);
        t[k] = ms / j.K;
    }
    if (rc == DIT_OK) {
        qsort(t, reps, sizeof(double), cmp_double);
        r->ms_per_step = t[reps / 2];
        r->ms_per_step_min = t[0];
        size_t fr = 0, tot = 0;
        if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) r->peak_bytes = tot - fr;
        r->weight_bytes = c->wbytes;
        r->arena_bytes = c->arena_bytes + c->lt_ws_bytes;
        if (m->cfg.has_vae) {
            const size_t lat = (size_t)c->C * c->L * c->L;
            float *hl = (float *)malloc(lat * n * 4), *img = (float *)malloc(dit_image_floats(m) * n * 4);
            if (hl && img) {
                for (size_t i = 0; i < lat * n; i++) hl[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
                // decode is timed host to host (latents in, images out), after two warm-ups (VAE upload and
                // plans; graph capture);
                // a failing decode leaves ms_decode = -1 and does not fail the DiT numbers
                int drc = dit_vae_decode_cuda(c, m, hl, n, img);
                if (drc == DIT_OK) drc = dit_vae_decode_cuda(c, m, hl, n, img);   // captures the graph
                if (drc == DIT_OK) {
                    cudaEventRecord(e0, c->stream);
                    drc = dit_vae_decode_cuda(c, m, hl, n, img);
                    cudaEventRecord(e1, c->stream);
                    cudaEventSynchronize(e1);
                    cudaEventElapsedTime(&ms, e0, e1);
                }
                r->ms_decode = drc == DIT_OK ? ms : -1.0;
                r->weight_bytes += c->vbytes;
                if (cudaMemGetInfo(&fr, &tot) == cudaSuccess && tot - fr > r->peak_bytes) r->peak_bytes = tot - fr;
            }
            free(hl);
            free(img);
        }
    }
    free(t);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return rc;
}

// ---------------------------------------------------------------- per-op test entry points
static int test_ctx(dit_cuda **out) {
    *out = NULL;
    if (dit_cuda_available() <= 0) return dit_set_error(DIT_ERR_DEVICE, "cuda: no GPU");
    dit_cuda *c = (dit_cuda *)calloc(1, sizeof(dit_cuda));
    if (!c) return dit_set_error(DIT_ERR_NOMEM, "cuda: out of host memory");
    int rc = cuda_setup(c, 0);
    if (rc != DIT_OK) { cuda_teardown(c); return rc; }
    c->ct = DIT_TYPE_F16;
    c->gelu_epilogue = 1;
    *out = c;
    return DIT_OK;
}

int dit_cuda_test_randn(uint64_t seed, uint32_t image, uint32_t step, float *out, size_t n) {
    float *d = NULL;
    CUDA_CHECK(cudaMalloc((void **)&d, n * sizeof(float)));
    int rc = dit_op_randn(seed, (int)image, 1, step, d, (int64_t)n, 0);   // image as a data-parallel rank's first
    if (rc == DIT_OK && cudaMemcpy(out, d, n * 4, cudaMemcpyDeviceToHost) != cudaSuccess)
        rc = dit_set_error(DIT_ERR_DEVICE, "cuda: copy failed");
    cudaFree(d);
    return rc;
}

int dit_cuda_test_dequant(int type, const void *blocks, int64_t rows, int64_t cols, float *out) {
    const size_t bytes = dit_row_bytes(type, cols) * rows;
    void *db = NULL;
    float *dy = NULL;
    CUDA_CHECK(cudaMalloc(&db, bytes));
    if (cudaMalloc((void **)&dy, rows * cols * 4) != cudaSuccess) { cudaFree(db); return dit_set_error(DIT_ERR_DEVICE, "cuda: oom"); }
    int rc = DIT_OK;
    if (cudaMemcpy(db, blocks, bytes, cudaMemcpyHostToDevice) != cudaSuccess) rc = dit_set_error(DIT_ERR_DEVICE, "cuda: copy");
    if (rc == DIT_OK) rc = dit_op_dequant(type, db, rows, cols, dy, DIT_TYPE_F32, 0);
    if (rc == DIT_OK && cudaMemcpy(out, dy, rows * cols * 4, cudaMemcpyDeviceToHost) != cudaSuccess)
        rc = dit_set_error(DIT_ERR_DEVICE, "cuda: copy back");
    cudaFree(db);
    cudaFree(dy);
    return rc;
}

static int upload_ct(const float *x, size_t n, int ct, void **out) {   // fp16 or bf16 (or fp32 as it is)
    const size_t es = ct == DIT_TYPE_F32 ? 4 : 2;
    uint16_t *h = ct == DIT_TYPE_F32 ? NULL : (uint16_t *)malloc(n * 2);
    if (ct != DIT_TYPE_F32 && !h) return dit_set_error(DIT_ERR_NOMEM, "cuda: oom");
    for (size_t i = 0; h && i < n; i++) h[i] = ct == DIT_TYPE_BF16 ? dit_fp32_to_bf16(x[i]) : dit_fp32_to_fp16(x[i]);
    cudaError_t e = cudaMalloc(out, n * es);
    if (e == cudaSuccess) e = cudaMemcpy(*out, h ? (const void *)h : (const void *)x, n * es, cudaMemcpyHostToDevice);
    free(h);
    CUDA_CHECK(e);
    return DIT_OK;
}

int dit_cuda_test_attention(const float *qkv, int B, int T, int H, int hd, int ct, float *o) {
    const size_t nq = (size_t)B * T * 3 * H * hd, no = (size_t)B * T * H * hd;
    void *dq = NULL, *dO = NULL;
    int dev = 0;
    if (cudaGetDevice(&dev) == cudaSuccess) dit_wgmma_probe(dev);   // as a context's setup would
    TRY(upload_ct(qkv, nq, ct, &dq));
    int rc = DIT_OK;
    if (cudaMalloc(&dO, no * 2) != cudaSuccess) rc = dit_set_error(DIT_ERR_DEVICE, "cuda: oom");
    if (rc == DIT_OK) cudaMemset(dO, 0xff, no * 2);   // NaN poison: every element must be written
    if (rc == DIT_OK) rc = dit_op_attention(dq, dO, ct, B, T, H, hd, 0);
    uint16_t *h = (uint16_t *)malloc(no * 2);
    if (rc == DIT_OK && h && cudaMemcpy(h, dO, no * 2, cudaMemcpyDeviceToHost) == cudaSuccess) {
        for (size_t i = 0; i < no; i++) o[i] = ct == DIT_TYPE_BF16 ? dit_bf16_to_fp32(h[i]) : dit_fp16_to_fp32(h[i]);
    } else if (rc == DIT_OK) {
        rc = dit_set_error(DIT_ERR_DEVICE, "cuda: attention test copy failed");
    }
    free(h);
    cudaFree(dq);
    cudaFree(dO);
    return rc;
}

int dit_cuda_test_linear(const float *x, const float *w, const float *b, int M, int N, int K, int type, int gelu,
                         float *y) {
    if (type != DIT_TYPE_F16 && type != DIT_TYPE_F32) return dit_set_error(DIT_ERR_INPUT, "cuda: linear test type");
    dit_cuda *c;
    TRY(test_ctx(&c));
    void *dx = NULL, *dw = NULL;
    float *db = NULL, *dy = NULL;
    int rc = upload_ct(x, (size_t)M * K, type, &dx);
    if (rc == DIT_OK) rc = upload_ct(w, (size_t)N * K, type, &dw);
    if (rc == DIT_OK && (cudaMalloc((void **)&db, N * 4) != cudaSuccess || cudaMalloc((void **)&dy, (size_t)M * N * 4) != cudaSuccess))
        rc = dit_set_error(DIT_ERR_DEVICE, "cuda: oom");
    if (rc == DIT_OK) {
        cudaMemcpy(db, b, N * 4, cudaMemcpyHostToDevice);
        cudaDeviceSynchronize();   // the copies above are not ordered with c->stream
        int is_tanh = 0;
        rc = dit_gemm_probe_gelu(c, &is_tanh);
        c->gelu_epilogue = is_tanh;
    }
    dit_cuda_lin L = { type, N, K, dw, db };
    if (rc == DIT_OK) rc = dit_op_linear(c, &L, dx, M, dy, DIT_TYPE_F32, gelu ? EPI_GELU_BIAS : EPI_BIAS, c->stream);
    if (rc == DIT_OK && (cudaStreamSynchronize(c->stream) != cudaSuccess ||
                         cudaMemcpy(y, dy, (size_t)M * N * 4, cudaMemcpyDeviceToHost) != cudaSuccess))
        rc = dit_set_error(DIT_ERR_DEVICE, "cuda: linear test failed");
    cudaFree(dx); cudaFree(dw); cudaFree(db); cudaFree(dy);
    cuda_teardown(c);
    return rc;
}

int dit_cuda_test_conv3(const float *x, const float *w, const float *b, const float *ab, int cin, int cout, int H,
                        int W, int up, int acc, int implicit, int ct, int chunk_rows, float *y) {
    dit_cuda *c;
    TRY(test_ctx(&c));
    c->ct = ct;
    if (implicit && !c->wgmma_ok) {
        cuda_teardown(c);
        return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: no implicit-GEMM conv here (needs an sm_90a build and GPU)");
    }
    const int nchw = implicit && cout <= 8;   // conv_out's form: NCHW planes
    const size_t nx = (size_t)(H >> up) * (W >> up) * cin, nw = (size_t)cout * cin * 9, ny = (size_t)H * W * cout;
    const int cr = chunk_rows > 0 && chunk_rows < H ? chunk_rows : H;   // the buffer holds cr rows' operand
    const size_t nbuf = implicit ? (size_t)dit_conv3_xp_elems(cr, W, cin) : (size_t)cr * W * 9 * cin;
    void *dw = NULL, *dwt = NULL, *dbuf = NULL;
    float *dx = NULL, *db = NULL, *dab = NULL, *dy = NULL;
    int rc = upload_ct(w, nw, ct, &dw);
    if (rc == DIT_OK && (cudaMalloc((void **)&dx, nx * 4) != cudaSuccess ||
                         cudaMalloc((void **)&db, cout * 4) != cudaSuccess ||
                         cudaMalloc((void **)&dab, 2 * cin * 4) != cudaSuccess ||
                         cudaMalloc((void **)&dy, ny * 4) != cudaSuccess || cudaMalloc(&dwt, nw * 2) != cudaSuccess ||
                         cudaMalloc(&dbuf, nbuf * 2) != cudaSuccess))
        rc = dit_set_error(DIT_ERR_DEVICE, "cuda: oom");
    if (rc == DIT_OK && (cudaMemcpy(dx, x, nx * 4, cudaMemcpyHostToDevice) != cudaSuccess ||
                         cudaMemcpy(db, b, cout * 4, cudaMemcpyHostToDevice) != cudaSuccess ||
                         (ab && cudaMemcpy(dab, ab, 2 * cin * 4, cudaMemcpyHostToDevice) != cudaSuccess) ||
                         cudaMemcpy(dy, y, ny * 4, cudaMemcpyHostToDevice) != cudaSuccess))
        rc = dit_set_error(DIT_ERR_DEVICE, "cuda: conv test upload failed");
    if (rc == DIT_OK) rc = dit_op_conv_w_tap_major(dw, dwt, cout, cin, 0);
    if (rc == DIT_OK && cudaDeviceSynchronize() != cudaSuccess)
        rc = dit_set_error(DIT_ERR_DEVICE, "cuda: conv test setup failed");
    dit_cuda_lin L = { ct, cout, (int64_t)cin * 9, dwt, db };
    if (rc == DIT_OK)
        rc = dit_op_conv3x3(c, &L, dx, DIT_TYPE_F32, ab ? dab : NULL, dbuf, nbuf, cin, H, W, up, dy, acc, nchw,
                            implicit, c->stream);
    if (rc == DIT_OK && (cudaStreamSynchronize(c->stream) != cudaSuccess ||
                         cudaMemcpy(y, dy, ny * 4, cudaMemcpyDeviceToHost) != cudaSuccess))
        rc = dit_set_error(DIT_ERR_DEVICE, "cuda: conv test failed: %s", cudaGetErrorString(cudaGetLastError()));
    if (rc == DIT_OK && nchw) {   // (cout, H*W) as conv_out writes it -> (H*W, cout)
        float *t = (float *)malloc(ny * 4);
        if (!t) rc = dit_set_error(DIT_ERR_NOMEM, "cuda: oom");
        for (size_t i = 0; t && i < ny; i++) t[(i % ((size_t)H * W)) * cout + i / ((size_t)H * W)] = y[i];
        if (t) memcpy(y, t, ny * 4);
        free(t);
    }
    cudaFree(dw); cudaFree(dwt); cudaFree(dbuf); cudaFree(dx); cudaFree(db); cudaFree(dab); cudaFree(dy);
    cuda_teardown(c);
    return rc;
}

// one sampler step on host arrays: model_out (2N, oc, L, L) as dit_forward_with_cfg's input rows (not yet
// guided), x (N, C, L, L) updated in place, loop iteration i of schedule s
int dit_cuda_test_sampler(dit_model *m, const dit_sample_params *p, const dit_schedule *s, int i,
                          const float *model_out, float *x) {
    if (!m->cuda) TRY(dit_cuda_init(m, 0));
    dit_cuda *c = m->cuda;
    dit_sample_params q = *p;
    q.init_noise = x;   // sample_setup uploads it into the latents
    sample_job j;
    TRY(sample_setup(c, &q, s, &j));
    const int B = j.B, T = c->T, F = c->pp_oc, g = c->g, pp = c->p, L = c->L, oc = c->oc;
    float *fo = (float *)malloc((size_t)B * T * F * sizeof(float));
    if (!fo) return dit_set_error(DIT_ERR_NOMEM, "cuda: oom");
    for (int b = 0; b < B; b++)   // patchify back into the final GEMM's token layout (§1.10)
        for (int ch = 0; ch < oc; ch++)
            for (int yy = 0; yy < L; yy++)
                for (int xx = 0; xx < L; xx++)
                    fo[((size_t)b * T + (yy / pp) * g + xx / pp) * F + ((yy % pp) * pp + xx % pp) * oc + ch] =
                        model_out[(((size_t)b * oc + ch) * L + yy) * L + xx];
    cudaError_t e = cudaMemcpyAsync(c->fout, fo, (size_t)B * T * F * 4, cudaMemcpyHostToDevice, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    free(fo);
    CUDA_CHECK(e);
    TRY(dit_op_state_set(c->state, i, 0, 1, c->stream));
    TRY(dit_op_sampler_step(&j.sa, c->fout, c->lat, c->x0prev, c->coef, j.noise, c->state, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    CUDA_CHECK(cudaMemcpy(x, c->lat, (size_t)j.N * c->C * L * L * 4, cudaMemcpyDeviceToHost));
    return DIT_OK;
}

// ---------------------------------------------------------------- per-op microbenchmark (DiT-XL shapes)
typedef struct { cudaEvent_t e0, e1; } evpair;
static float ev_us(cudaStream_t st, evpair *e, int reps) {
    cudaEventRecord(e->e1, st);
    cudaEventSynchronize(e->e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e->e0, e->e1);
    return 1000.0f * ms / reps;
}

int dit_cuda_opbench(FILE *out) {
    dit_cuda *c;
    TRY(test_ctx(&c));
    const int D = 1152, F = 4608, H = 16, hd = 72, reps = 20;
    const int Ms[2] = { 512, 2048 };
    const size_t maxM = 2048;
    void *bufs[8] = { 0 };
    const size_t sz[8] = { maxM * F * 2, maxM * F * 4, (size_t)F * F * 2, (size_t)3 * D * 4, (size_t)F * 4,
                           maxM * 3 * D * 2, (size_t)F * D * 34 / 32, (size_t)64 * 6 * D * 4 };
    int rc = DIT_OK;
    for (int i = 0; i < 8 && rc == DIT_OK; i++)
        if (cudaMalloc(&bufs[i], sz[i]) != cudaSuccess) rc = dit_set_error(DIT_ERR_DEVICE, "cuda: opbench oom");
    if (rc) goto done;
    {
        // fp16 data that is never zero: dequantized from pseudo-random q8_0 blocks (d = 2^-7)
        uint8_t *hq = (uint8_t *)malloc(sz[6]);
        if (!hq) { rc = dit_set_error(DIT_ERR_NOMEM, "cuda: oom"); goto done; }
        for (size_t i = 0; i < sz[6]; i++) hq[i] = (uint8_t)((i * 2654435761u) >> 13);
        for (size_t b = 0; b < sz[6] / 34; b++) { hq[b * 34] = 0x00; hq[b * 34 + 1] = 0x20; }
        cudaMemcpy(bufs[6], hq, sz[6], cudaMemcpyHostToDevice);
        free(hq);
        cudaDeviceSynchronize();
        const int fill[3] = { 0, 2, 5 };   // X, W, qkv (fp16)
        for (int f = 0; f < 3; f++) {
            const size_t n = sz[fill[f]] / 2;
            for (size_t o = 0; o < n; o += (size_t)F * D) {
                const int64_t rows = (int64_t)((n - o) / D < (size_t)F ? (n - o) / D : (size_t)F);
                if (rows > 0) dit_op_dequant(DIT_TYPE_Q8_0, bufs[6], rows, D, (__half *)bufs[fill[f]] + o, DIT_TYPE_F16,
                                             c->stream);
            }
        }
        cudaMemsetAsync(bufs[1], 0, sz[1], c->stream);
        cudaMemsetAsync(bufs[4], 0, sz[4], c->stream);   // bias (F)
        cudaMemsetAsync(bufs[7], 0, sz[7], c->stream);   // modulation rows
        cudaStreamSynchronize(c->stream);
    }
    {
        const struct { const char *name; int N, K, y, epi; } g[] = {
            { "qkv   f16 out, bias f32", 3 * D, D, DIT_TYPE_F16, EPI_BIAS },
            { "qkv   f16 out, bias f16", 3 * D, D, DIT_TYPE_F16, EPI_BIAS | EPI_BIAS_OUTTYPE },
            { "qkv   f16 out, no bias ", 3 * D, D, DIT_TYPE_F16, EPI_NONE },
            { "proj  f32 out, bias    ", D, D, DIT_TYPE_F32, EPI_BIAS },
            { "proj  f32 out, no bias ", D, D, DIT_TYPE_F32, EPI_NONE },
            { "fc1   f16 out, GELU f32b", F, D, DIT_TYPE_F16, EPI_GELU_BIAS },
            { "fc1   f16 out, GELU f16b", F, D, DIT_TYPE_F16, EPI_GELU_BIAS | EPI_BIAS_OUTTYPE },
            { "fc1   f16 out, no epi  ", F, D, DIT_TYPE_F16, EPI_NONE },
            { "fc2   f32 out, bias    ", D, F, DIT_TYPE_F32, EPI_BIAS },
            { "fc2   f16 out, no bias ", D, F, DIT_TYPE_F16, EPI_NONE },
        };
        for (int mi = 0; mi < 2; mi++)
            for (int tune = 0; tune < 2; tune++) {
                c->autotune = tune;
                dit_gemm_free_plans(c);
                for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
                    float us;
                    rc = dit_gemm_time(c, DIT_TYPE_F16, g[i].y, g[i].epi, Ms[mi], g[i].N, g[i].K, bufs[2], bufs[0],
                                       bufs[1], bufs[4], reps, &us);
                    if (rc) goto done;
                    const double tf = 2.0 * Ms[mi] * g[i].N * g[i].K / (us * 1e-6) / 1e12;
                    fprintf(out, "opbench: gemm %s M %4d %s: %8.2f us %6.1f TFLOP/s\n", g[i].name, Ms[mi],
                            tune ? "autotuned" : "heuristic", us, us > 0 ? tf : 0.0);
                }
            }
    }
    {
        evpair e;
        cudaEventCreate(&e.e0);
        cudaEventCreate(&e.e1);
        const int Ts[2] = { 256, 1024 };
        for (int ti = 0; ti < 2; ti++) {
            const int T = Ts[ti];
            // the qkv buffer holds 2048 rows: B*T = 2048
            const int B = (int)(maxM / T);
            dit_op_attention(bufs[5], bufs[0], DIT_TYPE_F16, B, T, H, hd, c->stream);   // warm-up
            cudaEventRecord(e.e0, c->stream);
            for (int r = 0; r < reps; r++) dit_op_attention(bufs[5], bufs[0], DIT_TYPE_F16, B, T, H, hd, c->stream);
            const float us = ev_us(c->stream, &e, reps);
            const double fl = 4.0 * B * H * (double)T * T * hd;
            fprintf(out, "opbench: attention B %d T %4d H %d hd %d: %8.2f us %6.1f TFLOP/s\n", B, T, H, hd, us,
                    fl / (us * 1e-6) / 1e12);
        }
        for (int mi = 0; mi < 2; mi++) {
            const int M = Ms[mi];
            dit_op_state_set((dit_cuda_state *)bufs[3], 0, 0, 1, c->stream);
            cudaEventRecord(e.e0, c->stream);
            for (int r = 0; r < reps; r++)
                dit_op_resid_ln_mod(bufs[5], (float *)bufs[1], bufs[0], DIT_TYPE_F16, M, D, 256,
                                    (float *)bufs[7], 6 * D, (float *)bufs[7] + D, (float *)bufs[7] + 2 * D, 6 * D,
                                    (const dit_cuda_state *)bufs[3], c->stream);
            const float us = ev_us(c->stream, &e, reps);
            fprintf(out, "opbench: resid_ln_mod M %4d D %d: %8.2f us %6.0f GB/s\n", M, D, us,
                    (double)M * D * (2 + 4 * 2 + 2) / (us * 1e-6) / 1e9);
        }
        cudaEventRecord(e.e0, c->stream);
        for (int r = 0; r < reps; r++) dit_op_dequant(DIT_TYPE_Q8_0, bufs[6], F, D, bufs[2], DIT_TYPE_F16, c->stream);
        const float us = ev_us(c->stream, &e, reps);
        fprintf(out, "opbench: dequant q8_0 -> f16 %dx%d: %8.2f us %6.0f GB/s\n", F, D, us,
                (double)F * D * (34.0 / 32 + 2) / (us * 1e-6) / 1e9);
        cudaEventDestroy(e.e0);
        cudaEventDestroy(e.e1);
    }
    if (cudaDeviceSynchronize() != cudaSuccess) rc = dit_set_error(DIT_ERR_DEVICE, "cuda: opbench failed");
done:
    for (int i = 0; i < 8; i++) cudaFree(bufs[i]);
    cuda_teardown(c);
    return rc;
}
