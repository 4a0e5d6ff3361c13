/* dit-cuda.h - CUDA backend of dit.c: the C interface.

   Built from the .cu files of ggml-cuda with -DDIT_CUDA. Every function returns DIT_OK or a DIT_ERR_* code and
   leaves the message in dit_last_error(); nothing here prints or exits.

   USAGE
     if (dit_cuda_available() > 0 && dit_cuda_init(m, 0) == DIT_OK) {   // weights uploaded once
         dit_cuda_sample(m, &p, &sched, latents);                        // whole sampler on the GPU
         dit_cuda_decode(m, latents, p.n, images);                       // VAE decoder on the GPU
     }
     dit_cuda_free(m);                                                   // also done by dit_model_free

   PRECISION
     GEMM operands are fp16 (bf16 when the file's weights are bf16), accumulation fp32 (cuBLASLt).
     f32 files are uploaded as f16 for the GEMM weights; biases, embeddings, pos_embed, the timestep
     MLP and the whole residual stream, LayerNorm, softmax, GroupNorm and the sampler stay fp32.
     GEMMs whose output is fp16/bf16 (qkv, fc1, VAE q/k/v) add the bias rounded to that type in the
     epilogue: cuBLASLt 13.0 offers no algorithm for an fp32 bias with fp16 output.
     q8_0 / q4_0 / q5_0 / q4_1 / q5_1 weights stay quantized in GPU memory (the raw ggml blocks) and
     are dequantized into a small reusable scratch before their GEMM (on one GPU one GEMM ahead, on a
     second stream).

   ENVIRONMENT
     DIT_CUDA_MOD_MB   size of the adaLN modulation cache in MiB (default 64, about 40 steps of DiT-XL/2
                       with CFG for one image): the modulation of all steps is precomputed per chunk
                       of steps that fits (~0.5 ms per chunk warm).
     DIT_CUDA_GRAPH=0  run the step and the VAE decode eagerly instead of replaying CUDA graphs (debugging).
     DIT_CUDA_AHEAD=0  dequantize each quantized weight right before its GEMM, not one GEMM ahead.
     DIT_CUDA_ATT_MT=1|2  attention with 16 or 32 query rows per warp (default: by grid size).
     DIT_CUDA_TUNE=0   take cuBLASLt's first heuristic answer instead of timing its top 8 on the first
                       run of each GEMM shape (timing makes the choice, so results can differ in the
                       last bits between processes; with 0 they are reproducible across runs).
*/
#ifndef DIT_CUDA_H
#define DIT_CUDA_H

#include "dit.h"

#ifdef __cplusplus
extern "C" {
#endif

int dit_cuda_available(void);                /* number of GPUs visible; 0 when there is no driver */
int dit_cuda_init(dit_model *m, int device); /* upload weights once, plan the arena; sets m->cuda */
void dit_cuda_free(dit_model *m);

/* out = DiT(x, t, y) like dit_forward: host x (B, C, L, L), t (B), y (B) -> out (B, out_ch, L, L). */
int dit_cuda_forward(dit_model *m, const float *x, const float *t, const int *y, int B, float *out);
/* The whole sampler (p as dit_sample, s from dit_schedule_init) -> out (n, C, L, L) latents. */
int dit_cuda_sample(dit_model *m, const dit_sample_params *p, const dit_schedule *s, float *out);
/* latents (n, C, L, L) as sampled -> images (n, 3, 8L, 8L), like dit_decode. */
int dit_cuda_decode(dit_model *m, const float *latents, int n, float *images);

/* Several GPUs (ggml-cuda/parallel.cu, NCCL). One process drives `gpus` GPUs, one thread each, or, in
   multi-process mode (world > 1: one process per GPU, on one or several hosts), this process is rank
   `rank` of `world` and drives GPU `device`. The GPUs split as world = data x cfg x seq:
     data  the images are dealt out to groups of GPUs; no traffic until the latents are gathered at the end
     cfg   the conditional and the unconditional half of the CFG batch run on two GPUs; their network
           outputs are all-gathered once per step (the sampler update then runs on both)
     seq   the tokens of every image are split over S GPUs; attention by an all-to-all over heads
           (Ulysses: heads % S == 0) or by an all-gather of k and v (any head count)
   The same seed gives the same images for any plan (the noise is Philox per image; fp16 tolerance).
   dit_cuda_init_parallel replaces dit_cuda_init: m->cuda becomes the first GPU's context and
   dit_cuda_sample / dit_sample run on all of them; every process gets all images back (p->progress is
   then called from GPU 0's worker thread). Faults (a peer
   process gone, a GPU error, a stuck collective) end every rank with an error within timeout_s
   (ncclCommAbort), never a hang; the model must then be freed. NVLink multicast (NVLS) is turned off
   unless NCCL_NVLS_ENABLE is already set. */
enum { DIT_PAR_AUTO = 0, DIT_PAR_DATA = 1, DIT_PAR_CFG = 2, DIT_PAR_SEQ = 4 };   /* strategy: OR of these */
enum { DIT_SEQ_AUTO = 0, DIT_SEQ_ULYSSES = 1, DIT_SEQ_ALLGATHER = 2 };
typedef struct {
    int gpus;              /* one process: use GPUs 0 .. gpus-1 */
    int rank, world;       /* multi-process when world > 1 */
    int device;            /* multi-process: this process's GPU */
    const char *id_file;   /* multi-process: rank 0 writes the NCCL unique id there, the others read it */
    const char *master;    /* multi-process, or: "host:port" where rank 0 serves the id over TCP */
    int strategy, seq_mode;
    int n_images;          /* images per dit_sample call (the auto plan uses it; other counts still work) */
    int no_cfg;            /* the samples will run without the CFG batch (dit_sample_params.no_cfg): no cfg split */
    double timeout_s;      /* no progress for this long: error (default 60) */
} dit_par_params;
/* multi-process settings from the environment: DIT_RANK / DIT_WORLD_SIZE / DIT_LOCAL_RANK, else those of
   torchrun (RANK, WORLD_SIZE, LOCAL_RANK) or mpirun (OMPI_COMM_WORLD_*); id from DIT_NCCL_ID_FILE, else
   DIT_MASTER=host:port, else torchrun's MASTER_ADDR and MASTER_PORT + 1. Returns 1 when world > 1. */
int dit_par_params_from_env(dit_par_params *pp);
/* the plan alone (no GPU needed): out = { data, cfg, seq, DIT_SEQ_* } for `gpus` GPUs (world if set) */
int dit_par_plan(const dit_model *m, const dit_par_params *pp, int gpus, int out[4], char *why, size_t why_len);
/* plan, upload, communicators; `plan` (may be NULL) gets one line saying what was chosen and why */
int dit_cuda_init_parallel(dit_model *m, const dit_par_params *pp, char *plan, size_t plan_len);

/* Profiling. Between begin and end, dit_cuda_sample/forward/decode run op by op (no CUDA graph) with
   cudaEvents around each op. end() writes a Chrome trace (chrome://tracing, ui.perfetto.dev) to
   trace_path (may be NULL) and, when summary is not NULL, a per-op table (total, calls, mean) to it. */
int dit_cuda_profile_begin(dit_model *m);
int dit_cuda_profile_end(dit_model *m, const char *trace_path, FILE *summary);

/* Timing harness for bench/ and --bench: runs `steps` sampler steps for n images (CFG batch 2n) on
   random latents after a warm-up, as dit_cuda_sample does (graph replay), and reports the median
   ms per step over `reps` repetitions, plus the bytes the backend holds on the GPU. */
typedef struct {
    double ms_per_step;       /* median over reps */
    double ms_per_step_min;
    double ms_precompute;     /* adaLN modulation of one chunk of steps, warm (once per chunk) */
    double ms_decode;         /* VAE decode of n images, 0 without a VAE */
    size_t weight_bytes;      /* DiT (+VAE) weights on the GPU */
    size_t arena_bytes;       /* activations, modulation cache, scratch, workspace */
    size_t peak_bytes;        /* device memory in use at the peak (cudaMemGetInfo), context included */
} dit_cuda_bench_result;
int dit_cuda_bench(dit_model *m, int n, int steps, int reps, dit_cuda_bench_result *r);

/* Per-op microbenchmark on DiT-XL shapes (GEMM variants heuristic vs autotuned, attention, LayerNorm,
   dequantize), one line per op to `out`. */
int dit_cuda_opbench(FILE *out);

/* What the backend chose (for tests and -v). */
typedef struct {
    int compute_type;         /* DIT_TYPE_F16 or DIT_TYPE_BF16: GEMM operand type */
    int gelu_epilogue;        /* 1: fc1 uses cuBLASLt's GELU_BIAS epilogue (probed at init to be tanh-GELU) */
    int graph;                /* 1: steps replay a CUDA graph */
    size_t weight_bytes, arena_bytes;
    char device_name[64];
    /* host time of the last dit_sample's phases on GPU 0 (ms): setup (arena, noise, coefficients), the
       first step (run eagerly, after the adaLN precompute: GEMM plans, autotuning, first-use kernel
       loading), the graph capture, and the other steps up to the end of the last one */
    double ms_setup, ms_first_step, ms_capture, ms_steps;
} dit_cuda_info;
int dit_cuda_get_info(const dit_model *m, dit_cuda_info *info);

/* Per-op entry points used by tests/test_cuda.c (device pointers, synchronous). */
int dit_cuda_has_wgmma(void);   /* GPU 0 runs the Hopper wgmma kernels (an sm_90a build on a 9.0 GPU) */
int dit_cuda_test_randn(uint64_t seed, uint32_t image, uint32_t step, float *out, size_t n);
int dit_cuda_test_dequant(int type, const void *blocks, int64_t rows, int64_t cols, float *out);
/* attention on host arrays: qkv (B*T, 3*H*hd) float -> o (B*T, H*hd), operands rounded to ct (F16, BF16) */
int dit_cuda_test_attention(const float *qkv, int B, int T, int H, int hd, int ct, float *o);
/* one sampler step (iteration i of s) on host arrays: model_out (2n, out_ch, L, L) unguided network rows,
   x (n, C, L, L) in/out; p->step_noise (K, n, C, L, L) or Philox from p->seed */
int dit_cuda_test_sampler(dit_model *m, const dit_sample_params *p, const dit_schedule *s, int i,
                          const float *model_out, float *x);
/* linear layer y = x W^T + b (+ tanh-GELU when gelu) with `type` operands (DIT_TYPE_F16: cuBLASLt; DIT_TYPE_F32,
   no GELU: the timestep MLP's kernel): x (M, K), W (N, K), y (M, N) */
int dit_cuda_test_linear(const float *x, const float *w, const float *b, int M, int N, int K, int type, int gelu,
                         float *y);
/* VAE 3x3 conv, padding 1, ct (DIT_TYPE_F16 or BF16) operands, channels-last: y (H*W, cout) (+)= conv(in) + b,
   where in is x (H/2^up * W/2^up, cin) nearest-upsampled by 2^up and, with ab (2 cin), SiLU(x * ab[c] +
   ab[cin + c]);
   w (cout, cin, 3, 3); implicit: 1 the implicit GEMM (NCHW output when cout <= 8, as conv_out; y returned
   channels-last all the same), 0 im2col + cuBLASLt; chunk_rows > 0: a buffer for that many output rows
   (the decode's chunked path) */
int dit_cuda_test_conv3(const float *x, const float *w, const float *b, const float *ab, int cin, int cout, int H,
                        int W, int up, int acc, int implicit, int ct, int chunk_rows, float *y);

#ifdef __cplusplus
}
#endif
#endif /* DIT_CUDA_H */
