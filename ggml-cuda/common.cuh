// common.cuh - shared by every ggml-cuda/*.cu of dit.c: error checks, fp16/bf16 helpers, warp
// reductions, and the backend state (struct dit_cuda).
//
// Errors: CUDA_CHECK / CUBLAS_CHECK stringify the call and report file, line and function through
// dit_set_error(DIT_ERR_DEVICE, ...), then `return DIT_ERR_DEVICE` from the enclosing function (which
// must return int). The library never exits. LAUNCH_CHECK() follows every <<<>>>.
//
// Letters as dit.h: B = network batch rows (2N with CFG), N = images, T = tokens, D = hidden,
// H = heads, hd = head dim, F = mlp hidden, M = B*T rows of a GEMM, R = conditioning rows.
#pragma once

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cublasLt.h>
#include <nccl.h>
#include <pthread.h>
#include <stdint.h>
#include <stddef.h>
#include <time.h>

#include "dit.h"
#include "ggml-cuda/dit-cuda.h"

int dit_cuda_error_(const char *file, int line, const char *func, const char *stmt, const char *msg);
const char *dit_cublas_status_name(cublasStatus_t s);

#define CUDA_CHECK(call)                                                                        \
    do {                                                                                        \
        cudaError_t err_ = (call);                                                              \
        if (err_ != cudaSuccess)                                                                \
            return dit_cuda_error_(__FILE__, __LINE__, __func__, #call, cudaGetErrorString(err_)); \
    } while (0)
#define CUBLAS_CHECK(call)                                                                      \
    do {                                                                                        \
        cublasStatus_t st_ = (call);                                                            \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                       \
            return dit_cuda_error_(__FILE__, __LINE__, __func__, #call, dit_cublas_status_name(st_)); \
    } while (0)
#define LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())
// propagate an int error code from a checked entry point
#define TRY(call)                  \
    do {                           \
        int rc_ = (call);          \
        if (rc_ != DIT_OK) return rc_; \
    } while (0)

#define WARP 32
static inline int cdiv(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }
static inline double host_seconds(void) {   // monotonic wall clock
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

// Hopper wgmma kernels (conv3_igemm, flash_attn_wgmma): their bodies exist only in an sm_90a build, and a
// build for another target still loads on a 9.0 GPU (its PTX is JIT-compiled), so whether they run is
// asked of the device: dit_wgmma_probe launches a probe kernel compiled the same way (once per device, at
// context setup: never during a graph capture); dit_wgmma_ok answers for the current device from then on.
int dit_wgmma_probe(int device);
int dit_wgmma_ok(void);

// > 48 KB of dynamic shared memory is opt-in, per device and kernel: set once per device (`done`: that
// kernel's bit per device, a static of the caller)
static inline int dit_smem_opt_in(const void *kernel, int bytes, unsigned long long *done) {
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    const unsigned long long bit = 1ull << (dev & 63);
    if (__atomic_load_n(done, __ATOMIC_RELAXED) & bit) return DIT_OK;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    __atomic_fetch_or(done, bit, __ATOMIC_RELAXED);
    return DIT_OK;
}

// ---------------------------------------------------------------- element types
// GEMM operands ("compute type", ct) are __half or __nv_bfloat16; everything else is float.
template <typename T> __device__ __forceinline__ float to_f32(T v);
template <> __device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// SiLU with an accurate exp (fast-math expf is fine here: relative error ~1e-7 at these ranges)
__device__ __forceinline__ float silu_f(float x) { return x / (1.0f + expf(-x)); }

// ---------------------------------------------------------------- step state on the device
// Read by the kernels of the captured step graph, so that one graph serves every step.
typedef struct {
    int step;           // sampler loop iteration i (k = K-1-i)
    int mod_row;        // first row of this step in the modulation cache (step - chunk start) * B
    int nonfinite_step; // first iteration whose latents were not finite, INT_MAX if none
    unsigned int done;  // blocks of the sampler kernel finished (last one advances the step)
} dit_cuda_state;

// ---------------------------------------------------------------- weights
// One Linear layer: y = x W^T + b, W (n_out, n_in) row-major (PyTorch [out, in] = ggml ne {in, out}).
typedef struct {
    int type;            // DIT_TYPE_F32 (fp32 path), F16, BF16, or a ggml block type (raw blocks)
    int64_t n_out, n_in;
    void *w;
    float *b;            // (n_out) fp32, may be NULL
    void *bh;            // the bias in ct, for ct-output GEMMs (cuBLASLt has no fp32 bias with fp16 output)
} dit_cuda_lin;

typedef struct {
    dit_cuda_lin qkv, proj, fc1, fc2, ada;
} dit_cuda_block;

// VAE: convolutions are GEMMs over im2col columns; weights in ct, 3x3 ones permuted to (cout, kh, kw, cin).
typedef struct {
    dit_cuda_lin w;      // n_out = cout, n_in = cin*k*k; type F32: direct convolution (thin convs)
    int cin, cout, k;
} dit_cuda_conv;
typedef struct {
    float *n1_w, *n1_b, *n2_w, *n2_b;
    dit_cuda_conv c1, c2, sc;  // sc.w.w NULL when in == out
} dit_cuda_resnet;

enum { EPI_NONE = 0, EPI_BIAS = 1, EPI_GELU_BIAS = 2, EPI_BIAS_OUTTYPE = 4 };   // 4: bias in the output type (bench)

// cuBLASLt plans, cached by shape
#define DIT_GEMM_CANDIDATES 8
typedef struct {
    int a_type, x_type, y_type, epi;   // x_type holds (transa << 1) | transb
    int64_t M, N, K, lda, ldb, ldc, sa, sb, sc;
    int batch, ok;     // ok = 0: no algorithm (cached negative answer)
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
    cublasLtMatmulAlgo_t cand[DIT_GEMM_CANDIDATES];   // heuristic's top answers, timed on first use
    int n_cand, tuned;
} dit_gemm_plan;
#define DIT_MAX_PLANS 256

typedef struct {
    const char *name;
    int layer;
    cudaEvent_t e0, e1;
} dit_prof_event;

// Multi-GPU role of one context (parallel.cu; NULL on one GPU). world = dd x cf x S ranks:
// rank = (d * cf + cfi) * S + s. The image group (cf x S ranks, one data slice) shares its images' rows:
// cfi picks the cond or uncond half with CFG parallel (cf = 2), s a slice of the tokens (S > 1).
#define DIT_P2P_MAX 8   // GPUs of one sequence group that exchange by peer-to-peer stores
typedef struct dit_par_rank {
    int rank, world, local;        // local: index among the GPUs of this process (group->ctx)
    int dd, d, cf, cfi, S, s;
    int seq_mode;                  // DIT_SEQ_ULYSSES or DIT_SEQ_ALLGATHER
    ncclComm_t world_comm, img_comm, seq_comm;
    ncclComm_t split_out[2];       // where NCCL writes a split child (img, seq) until it is ready: on the heap,
                                   // since after a fault the split may end after its caller has returned
    struct dit_par *group;         // shared by the ranks of this process (abort flag, timeout)
    // all-gather mode with every GPU of the sequence group in this process: k, v go straight into the peers'
    // memory (NVLink stores) instead of through NCCL (parallel.cu, "peer-to-peer")
    int p2p_ok;                    // peer access to every GPU of the sequence group
    unsigned *p2p_sync;            // device: [q] = exchanges peer q has signalled; [DIT_P2P_MAX ...] counters
    void *p2p_dst[2][DIT_P2P_MAX]; // per block parity: peer q's gathered-pieces buffer
    unsigned *p2p_flag[DIT_P2P_MAX];  // peer q's p2p_sync
    int stall_step;                // tests: this rank stops before this step (-1: never)
} dit_par_rank;

struct dit_cuda {
    int device;
    char device_name[64];
    cudaStream_t stream;
    cudaStream_t side;        // a second stream joined into the step graph: the q GEMM of the all-gather
    cudaEvent_t fork, join;   // mode, or the next quantized weight's dequantization (never both at once)
    cublasLtHandle_t lt;
    void *lt_ws;
    size_t lt_ws_bytes;
    dit_gemm_plan plans[DIT_MAX_PLANS];
    int n_plans;
    int ct;              // DIT_TYPE_F16 or DIT_TYPE_BF16
    int gelu_epilogue;
    double probe_err_tanh, probe_err_erf;   // GELU epilogue probe: max |error| against each form
    int cfg_ch;          // eps channels guided by CFG
    int use_graph;
    int dequant_ahead;   // quantized weights: the next GEMM's dequantized on `side` (DIT_CUDA_AHEAD=0: off)
    int autotune;        // time the heuristic's candidates on a plan's first run (DIT_CUDA_TUNE=0: off, 2: verbose)
    int tune_min_steps;  // ... once this context's samples reach this many steps (DIT_CUDA_TUNE unset: 500, set: 0)
    long steps_run;      // steps of the samples finished on this context
    double ms_phase[4];  // last sample, host ms: setup, first step, capture, the other steps (dit_cuda_info)
    int tune_now;        // set while the per-step network runs: only its GEMMs are worth tuning

    // model shape; Tl tokens t0 .. t0+Tl-1 are this GPU's (all T on one GPU)
    int D, H, hd, F, depth, C, L, p, g, T, oc, pp_oc, n_classes;
    int Tl, t0;
    dit_par_rank *pr;         // multi-GPU role, NULL on one GPU
    int eager;                // no step graph (several GPUs while GPU 0 profiles: capture must be uniform)
    struct dit_par *group;    // set on the context that m->cuda points to when several GPUs sample

    // weights: one allocation
    char *wbuf;
    size_t wbytes, wused;
    float *x_emb_w, *x_emb_b, *pos, *y_table;   // (D, C*p*p), (D), (T, D), (n_classes+1, D)
    dit_cuda_lin t1, t2;                          // fp32: (D, 256), (D, D)
    dit_cuda_block *blocks;
    dit_cuda_lin final_ada, final_lin;
    size_t deq_elems;                             // largest quantized weight (elements)

    // VAE weights (uploaded on the first decode)
    int vae_ready;
    char *vbuf;
    size_t vbytes, vused;
    dit_cuda_conv pq, conv_in, up_conv[DIT_VAE_MAX_BLOCKS], conv_out;
    dit_cuda_resnet mid[2], up[DIT_VAE_MAX_BLOCKS][DIT_VAE_MAX_RESNETS];
    float *attn_n_w, *attn_n_b, *out_n_w, *out_n_b;
    dit_cuda_lin attn_q, attn_k, attn_v, attn_o;

    // arena: activations for B rows, conditioning for R rows, modulation cache, scratch
    char *arena;
    size_t arena_bytes;
    int arena_B, arena_R, arena_N;
    float *h;                 // (B*T, D) residual stream, fp32
    void *y, *xin, *qkv, *att, *mlp;  // ct: (B*T, D) proj/fc2 output, (B*T, D), (B*T, 3D), (B*T, D), (B*T, F)
    void *deqs[2];            // ct scratch for dequantized weights (two: the next one is made on `side`)
    const dit_cuda_lin *pf_w; // the weight being dequantized on `side` into deqs[pf_slot], or NULL
    int pf_slot;
    float *fout;              // (B*T, p*p*oc); several GPUs: all rows of the image group (2N*T, p*p*oc)
    float *fout_loc, *fgath;  // several GPUs: this GPU's rows (B*Tl, p*p*oc), the gathered pieces
    void *sp[3];              // sequence parallel exchange buffers, S*B*Tl*3D ct each
    float *latg;              // several GPUs: the latents of every rank (world, N, C, L, L)
    float *lat, *lat_out;     // (N, C, L, L) latents, network output (B, oc, L, L)
    float *tsin, *cond, *cond2; // (R, 256), (R, D), (R, D)
    void *scond;              // ct (R, D) SiLU(c)
    float *mod, *fmod;        // (depth, R, 6D), (R, 2D)
    float *coef;              // (K, CO_STRIDE) sampler coefficients
    float *x0prev;            // (N, C, L, L) the previous step's x0 (DPM-Solver++(2M))
    float *noise;             // optional user step noise (K, N, C, L, L)
    int noise_K;
    dit_cuda_state *state;
    int *d_labels;            // (B)
    int coef_K;

    // graph
    cudaGraphExec_t graph;
    int graph_B, graph_N, graph_sampler;
    cudaGraphExec_t vae_graph;   // one image's decode (vae.cu), into the arena: dropped when it moves
    int vae_warm;                // a decode ran eagerly: plans made, kernels loaded
    int vae_no_graph;            // capturing the decode failed once: eager from then on
    int vae_conv;                // 3x3 convs: 0 auto, 1 im2col + cuBLASLt, 2 implicit GEMM (DIT_VAE_CONV)
    int n_sm;                    // multiprocessors of the device
    int wgmma_ok;                // the wgmma kernels run here (dit_wgmma_probe)

    // profiling
    int profiling;
    dit_prof_event *prof;
    int n_prof, cap_prof;
    int prof_layer;
};

int dit_arena_reserve(struct dit_cuda *c, size_t bytes);
int dit_cuda_ctx_create(const dit_model *m, int device, struct dit_cuda **out);
void dit_cuda_ctx_destroy(struct dit_cuda *c);
int dit_cuda_sample_ctx(struct dit_cuda *c, const dit_sample_params *p, const dit_schedule *s, float *out);

// profiling: events around each op while c->profiling (dit-cuda.cu); OP wraps a checked op call
void dit_prof_begin(struct dit_cuda *c, const char *name);
void dit_prof_end(struct dit_cuda *c);
#define OP(c, name, call)                \
    do {                                 \
        dit_prof_begin((c), (name));     \
        int rc__ = (call);               \
        dit_prof_end((c));               \
        if (rc__ != DIT_OK) return rc__; \
    } while (0)

// parallel.cu: the multi-GPU pieces the single-GPU code calls
int dit_par_attention(struct dit_cuda *c, const dit_cuda_lin *qkv, int B, int layer, cudaStream_t st); // xin -> att
int dit_par_gather_output(struct dit_cuda *c, int B, cudaStream_t st);   // fout_loc of the image group -> fout
int dit_par_gather_latents(struct dit_cuda *c, int N, int n, float *out); // every rank's latents -> out (n images)
int dit_par_prepare(struct dit_cuda *c);   // after the arena is planned: the peers' buffers for this sample
int dit_par_test_stall(struct dit_cuda *c);   // tests: wait for the group's abort (pr->stall_step)
int dit_par_wait(struct dit_cuda *c, cudaEvent_t e);                     // polls, times out, aborts
void dit_par_set_eager(struct dit_cuda *c, int on);                     // every GPU of c->group
void dit_par_beat(struct dit_cuda *c);                                   // long host work: still alive
int dit_par_sample(struct dit_cuda *c, const dit_sample_params *p, const dit_schedule *s, float *out);
// n images decoded on every GPU of this process, a contiguous share each (one thread per GPU)
int dit_par_decode(struct dit_cuda *c, dit_model *m, const float *latents, int n, float *images);
void dit_par_destroy(struct dit_cuda *c);     // c->group: the other contexts, the threads' state
void dit_par_rank_free(struct dit_cuda *c);   // c->pr: its communicators

// ---------------------------------------------------------------- entry points of the op files
// Each returns DIT_OK or DIT_ERR_DEVICE; pointers are device pointers; all work goes to `st`.

// gemm.cu: y (M, n_out) = x (M, n_in) W^T (+ b) (GELU); x type = ct (or f32 for an f32 layer),
// y_type DIT_TYPE_F32 or ct. Quantized W is first dequantized into a scratch buffer (c->deqs).
int dit_op_linear(struct dit_cuda *c, const dit_cuda_lin *w, const void *x, int64_t M, void *y, int y_type,
                  int epi, cudaStream_t st);
// the same, and the dequantization of `next` (the GEMM that follows) starts on c->side meanwhile;
// dit_gemm_join joins a started one that no GEMM took (the end of a captured step must)
int dit_op_linear_next(struct dit_cuda *c, const dit_cuda_lin *w, const dit_cuda_lin *next, const void *x,
                       int64_t M, void *y, int y_type, int epi, cudaStream_t st);
int dit_gemm_join(struct dit_cuda *c, cudaStream_t st);
// y (M, n_out) fp32 += x W^T + b: the residual sum in the GEMM's epilogue (beta = 1, in place)
int dit_op_linear_acc(struct dit_cuda *c, const dit_cuda_lin *w, const void *x, int64_t M, float *y, cudaStream_t st);
// inside a stream capture: c->side joins it after everything enqueued on st so far (*side = c->side);
// otherwise *side = st (eager work stays on one stream). The caller records c->join on it to rejoin.
int dit_side_fork(struct dit_cuda *c, cudaStream_t st, cudaStream_t *side);
// strided batched GEMM on ct/f32 operands for the VAE attention: C_i = alpha A_i B_i^T style
int dit_op_gemm_raw(struct dit_cuda *c, int type, int y_type, int transa, int transb, int64_t m, int64_t n,
                    int64_t k, const void *A, int64_t lda, int64_t sa, const void *Bm, int64_t ldb, int64_t sb,
                    void *Cm, int64_t ldc, int64_t sc, int batch, float alpha, cudaStream_t st);
int dit_gemm_probe_gelu(struct dit_cuda *c, int *is_tanh);
// cuBLASLt's first query for each pair of operand and output types a sample uses, made on threads while the
// caller does something else (the weight upload); join before the first GEMM
typedef struct { struct dit_cuda *c; int ab, y, started; pthread_t th; } dit_gemm_warm_job;
#define DIT_GEMM_WARM 2   // pairs of types: ct -> ct, ct -> fp32
typedef struct { dit_gemm_warm_job job[DIT_GEMM_WARM]; } dit_gemm_warm;
void dit_gemm_warm_start(struct dit_cuda *c, dit_gemm_warm *w);
void dit_gemm_warm_join(dit_gemm_warm *w);
int dit_gemm_time(struct dit_cuda *c, int ab, int y_type, int epi, int64_t M, int64_t N, int64_t K, const void *W,
                  const void *X, void *Y, const void *bias, int reps, float *us);
void dit_gemm_free_plans(struct dit_cuda *c);

// quant.cu: raw ggml blocks (rows, cols) -> ct or f32 row-major
int dit_op_dequant(int type, const void *blocks, int64_t rows, int64_t cols, void *out, int out_type,
                   cudaStream_t st);

// norm.cu
// out = ct(LN(h) * (1 + scale) + shift); when y != NULL first h += gate * y (and h is written back).
// y and out are ct; gate/shift/scale rows: mod pointers + (state->mod_row + row / T) * stride.
int dit_op_resid_ln_mod(const void *y, float *h, void *out, int ct, int64_t M, int D, int T,
                        const float *gate, int64_t gate_stride, const float *shift, const float *scale,
                        int64_t mod_stride, const dit_cuda_state *state, cudaStream_t st);
// VAE GroupNorm (+SiLU): x (HW, C) fp32 channels-last -> out (HW, C), DIT_TYPE_F32 or ct.
// Scratch: part (DIT_GN_CHUNKS * groups) partial statistics, count (zero before the first call; every
// call leaves it zero, so calls sharing it must be stream-ordered), ab (2C) per-channel scale and shift.
#define DIT_GN_CHUNKS 256
int dit_op_group_norm(const float *x, void *out, int out_type, const float *w, const float *b, int C, int HW,
                      int groups, float eps, int silu, float2 *part, unsigned int *count, float *ab, cudaStream_t st);
// only the statistics: ab[c] = rstd_g * w[c], ab[C + c] = b[c] - ab[c] * mean_g (GroupNorm = x * a + b)
int dit_op_group_norm_ab(const float *x, const float *w, const float *b, int C, int HW, int groups, float eps,
                         float2 *part, unsigned int *count, float *ab, cudaStream_t st);

// attention.cu: o (B*T, H*hd) = softmax(q k^T / sqrt(hd)) v per (b, head); qkv (B*T, 3*H*hd); ct
int dit_op_attention(const void *qkv, void *o, int ct, int B, int T, int H, int hd, cudaStream_t st);
// The general form: q_tok query rows and T keys per sequence, in elements of ct; o (B*q_tok, H*hd).
// Query row r of sequence b at q + b*q_b + r*q_ld (head h at + h*hd); key n at kv + b*kv_b +
// (n / (T/segs))*kv_seg + (n % (T/segs))*kv_ld, its value at + v_off (sequence parallel: segs gathered pieces).
typedef struct {
    int B, T, H, q_tok, segs;
    int64_t q_ld, q_b, kv_ld, kv_b, kv_seg, v_off;
} dit_att_layout;
int dit_op_attention_ex(const void *q, const void *kv, void *o, int ct, const dit_att_layout *a, int hd,
                        cudaStream_t st);

// permute.cu: out (A, C, Bd, inner) = in (A, Bd, C, inner) with `inner` bytes contiguous (a multiple of 4)
int dit_op_swap12(const void *in, void *out, int64_t A, int64_t Bd, int64_t C, int64_t inner, cudaStream_t st);

// embed.cu
// tokens t0 .. t0+Tl-1 of every row: h (B, Tl, D)
int dit_op_patch_embed(const float *x, int n_img, const float *w, const float *b, const float *pos, float *h,
                       int B, int C, int L, int p, int D, int t0, int Tl, cudaStream_t st);
// c (R, D) += y_table[labels[r % B]]; also writes ct SiLU(c) into sc
int dit_op_cond_finish(float *c, const float *y_table, const int *labels, int B, void *sc, int ct, int R,
                       int D, cudaStream_t st);
int dit_op_silu_inplace(float *x, int64_t n, cudaStream_t st);
// out (B, oc, L, L) from fout (B*T, p*p*oc)
int dit_op_unpatchify(const float *fout, float *out, int B, int oc, int L, int p, cudaStream_t st);
int dit_op_to_ct(const float *x, void *out, int ct, int64_t n, cudaStream_t st);

// sampler.cu
// coefficient slots per step (dit-cuda.cu fills them from the float64 schedule)
enum { CO_SR, CO_SRM1, CO_C1, CO_C2, CO_LOGB, CO_PLVC, CO_SABP, CO_S2, CO_SIGMA, CO_MASK, CO_FIXED,
       CO_DA, CO_DB0, CO_DB1, CO_STRIDE = 16 };
typedef struct {
    int sampler, N, C, L, p, oc, cfg_ch, K, clip, learn_sigma;
    int img0;            // Philox image index of latent 0 (data parallel: this rank's first image)
    int rows;            // network rows of this rank per step (modulation cache rows to advance)
    float cfg_scale, eta;
    uint64_t seed;
} dit_sampler_args;
int dit_op_sampler_step(const dit_sampler_args *a, const float *fout, float *lat, float *x0prev, const float *coef,
                        const float *noise, dit_cuda_state *state, cudaStream_t st);
int dit_op_state_set(dit_cuda_state *s, int step, int mod_row, int reset_nonfinite, cudaStream_t st);
int dit_op_randn(uint64_t seed, int img0, int n_img, uint32_t step, float *out, int64_t per_image, cudaStream_t st);

// conv.cu (VAE; activations channels-last (HW, C))
// ab != NULL (fp32 src only): each gathered value is SiLU(x * ab[c] + ab[C + c]) (GroupNorm + SiLU fused)
int dit_op_conv_cols(const void *src, int src_type, const float *ab, void *out, int ct, int C, int H, int W, int y0,
                     int rows, int up, int pad, cudaStream_t st);
// the padded operand of `rows` output rows: rows + 2 halo rows of W + 2, and 2 more rows (never written,
// read only for dropped outputs) past the grid
static inline int64_t dit_conv3_xp_elems(int rows, int W, int C) { return ((int64_t)(rows + 2) * (W + 2) + 2) * C; }
// xp: dit_conv3_xp_elems(rows, W, C) of ct, pad3's rows; w (N, 9, C) ct; y (rows W, N) fp32, or NCHW planes
// ycs apart when ycs > 0 (N <= 8, no acc)
int dit_op_conv3_igemm(const void *xp, int ct, const void *w, const float *bias, float *y, int acc, int C, int N,
                       int rows, int W, int64_t ycs, cudaStream_t st);
int dit_op_conv3x3(struct dit_cuda *c, const dit_cuda_lin *w, const void *src, int src_type, const float *ab,
                   void *buf, size_t buf_elems, int cin, int H, int W, int up, float *y, int acc, int y_nchw,
                   int implicit, cudaStream_t st);
int dit_op_conv_w_tap_major(const void *src, void *dst, int cout, int cin, cudaStream_t st);
int dit_op_conv_direct(const float *x, const float *w, const float *b, float *y, int cin, int cout, int H, int W,
                       int k, int y_nhwc, cudaStream_t st);
int dit_op_softmax_rows(const float *x, void *out, int ct, int64_t rows, int cols, float scale, cudaStream_t st);

// weight upload passes (dit-cuda.cu): the first pass (dry) only sums the sizes; the second copies, through
// two pinned staging buffers where it has them (pin[0] != NULL), else by pageable cudaMemcpy
typedef struct {
    struct dit_cuda *c;
    char *buf;
    size_t used;
    int dry;
    char *pin[2];          // staging: copies from pin[cur] queued on c->stream, done[i] after pin[i]'s last
    cudaEvent_t done[2];
    int cur;
    size_t fill;           // bytes of pin[cur] in use
} dit_wpass;
enum { WP_CT = 0, WP_F32 = 1, WP_CT_ONLY = 2 };   // ct or raw ggml blocks / fp32 / ct, never blocks
int dit_wp_f32(dit_wpass *w, const dit_tensor *t, float **out);
int dit_wp_lin(dit_wpass *w, const dit_tensor *wt, const dit_tensor *bt, int mode, dit_cuda_lin *L);
