/* dit.h - Diffusion Transformer (DiT) runtime: GGUF files, model, CPU reference, samplers, SD VAE, PNG.

   One header, one implementation file (dit.c). Build dit.c with your program (-fopenmp for threads);
   add the ggml-cuda/ objects with -DDIT_CUDA for the GPU backend.

   USAGE
     dit_model *m = dit_model_load("DiT-XL-2-256.gguf");              // mmap + validate
     if (!m) { fprintf(stderr, "%s\n", dit_last_error()); exit(dit_last_error_code()); }
     dit_sample_params p = dit_sample_params_default();               // 250 DDPM steps, CFG 4.0
     int labels[2] = { 207, 88 };
     p.n = 2; p.labels = labels; p.seed = 0;
     float *lat = malloc(dit_latent_floats(m) * p.n * sizeof(float));
     if (dit_sample(m, &p, lat) != DIT_OK) ...                           // (N, C, L, L) latents
     float *img = malloc(dit_image_floats(m) * p.n * sizeof(float));
     dit_decode(m, lat, p.n, img, 0);                                    // (N, 3, 8L, 8L) in ~[-1,1]
     dit_png_write("out.png", img, 3, H, W, "Steps: 250, ...");        // atomic write
     dit_model_free(m);

   ERRORS
     Functions that can fail return DIT_OK (0) or a DIT_ERR_* code (or NULL) and leave a one-line message
     in dit_last_error() (thread-local). The library never prints and never exits. Codes follow the CLI
     exit statuses: 2 = bad input (the file is wrong), 1 = I/O (the system failed us).

   API
     errors   dit_last_error, dit_last_error_code, dit_set_error
     types    dit_type_name, dit_type_from_name, dit_type_block_size, dit_type_block_bytes, dit_row_bytes,
              dit_fp16_to_fp32, dit_fp32_to_fp16, dit_bf16_to_fp32, dit_fp32_to_bf16,
              dit_quantize_row, dit_dequantize_row
     gguf     dit_gguf_open/close, dit_gguf_find_kv, dit_gguf_get_*, dit_gguf_kv_format,
              dit_gguf_tensor_at, dit_gguf_find_tensor;
              writer: dit_gguf_writer_new, dit_gguf_set_*, dit_gguf_copy_kvs, dit_gguf_add_tensor,
              dit_gguf_writer_begin, dit_gguf_writer_write, dit_gguf_writer_finish, dit_gguf_writer_free
     model    dit_model_load/free, dit_class_from_name, dit_latent_floats, dit_image_floats
     math     dit_forward, dit_forward_with_cfg (CPU fp32 reference), dit_schedule_init, dit_dpmpp2m_coefs,
              dit_randn
     sample   dit_sample_params_default, dit_sample, dit_decode, dit_sampler_name/from_name/spacing
     files    dit_png_write, dit_npy_read, dit_npy_write, dit_atomic_open/commit/abort

   CONVENTIONS
     Letters: B = batch, N = images, C = latent channels, L = latent side, p = patch, g = L/p,
     T = g*g tokens, D = hidden, H = heads, hd = D/H, F = mlp hidden (4D), K = sampler steps.
     Tensor dims are ggml order (ne[0] fastest = last PyTorch dim): a Linear weight [out, in] has
     ne = {in, out}. Shape comments in the code are written in PyTorch order.
*/
#ifndef DIT_H
#define DIT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- errors */
enum {
    DIT_OK = 0,
    DIT_ERR_IO = 1,        /* open/read/write/rename failed, disk full */
    DIT_ERR_INPUT = 2,     /* the input file or argument is wrong */
    DIT_ERR_NOMEM = 3,
    DIT_ERR_UNSUPPORTED = 4,
    DIT_ERR_DEVICE = 5,    /* CUDA / cuBLAS / NCCL failure */
    DIT_ERR_NUMERIC = 6,   /* NaN/Inf appeared during sampling */
};
const char *dit_last_error(void);
int dit_last_error_code(void);
int dit_set_error(int code, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ; /* returns code */

/* ---------------------------------------------------------------- tensor types (ggml ids) */
typedef enum {
    DIT_TYPE_F32 = 0,
    DIT_TYPE_F16 = 1,
    DIT_TYPE_Q4_0 = 2,
    DIT_TYPE_Q4_1 = 3,
    DIT_TYPE_Q5_0 = 6,
    DIT_TYPE_Q5_1 = 7,
    DIT_TYPE_Q8_0 = 8,
    DIT_TYPE_BF16 = 30,
    DIT_TYPE_COUNT = 40,
} dit_type;

const char *dit_type_name(int type);        /* "q8_0"; NULL for an unknown id */
int dit_type_from_name(const char *name);   /* case-insensitive; -1 if unknown */
int dit_type_block_size(int type);          /* elements per block; 0 for unknown ids */
int dit_type_block_bytes(int type);         /* bytes per block */
int dit_type_is_supported(int type);        /* 1 if this runtime can compute with it */
size_t dit_row_bytes(int type, int64_t n);  /* n must be a multiple of the block size */

float dit_fp16_to_fp32(uint16_t h);
uint16_t dit_fp32_to_fp16(float f);         /* round to nearest even; NaN stays NaN */
float dit_bf16_to_fp32(uint16_t h);
uint16_t dit_fp32_to_bf16(float f);         /* ggml rule: RNE, NaN -> quiet */
/* ggml reference quantizers/dequantizers (bit-exact to ggml-quants.c *_ref). n % block == 0. */
void dit_quantize_row(int type, const float *x, void *y, int64_t n);
void dit_dequantize_row(int type, const void *x, float *y, int64_t n);

/* ---------------------------------------------------------------- GGUF v3 */
enum {
    DIT_GGUF_UINT8 = 0, DIT_GGUF_INT8 = 1, DIT_GGUF_UINT16 = 2, DIT_GGUF_INT16 = 3,
    DIT_GGUF_UINT32 = 4, DIT_GGUF_INT32 = 5, DIT_GGUF_FLOAT32 = 6, DIT_GGUF_BOOL = 7,
    DIT_GGUF_STRING = 8, DIT_GGUF_ARRAY = 9, DIT_GGUF_UINT64 = 10, DIT_GGUF_INT64 = 11,
    DIT_GGUF_FLOAT64 = 12,
};
#define DIT_GGUF_MAX_NAME 63     /* tensor name bytes, as stock ggml */
#define DIT_GGUF_ALIGNMENT 32

typedef struct {
    char name[DIT_GGUF_MAX_NAME + 1];
    int type;                    /* ggml type id */
    int n_dims;                  /* 1..4 */
    int64_t ne[4];               /* ggml order; unused dims are 1 */
    uint64_t offset;             /* relative to the data section */
    size_t nbytes;
    const void *data;            /* into the mapping */
} dit_gguf_tensor;

typedef struct dit_gguf dit_gguf;
dit_gguf *dit_gguf_open(const char *path);           /* mmap + full validation; NULL on error */
void dit_gguf_close(dit_gguf *g);
const char *dit_gguf_path(const dit_gguf *g);
uint32_t dit_gguf_version(const dit_gguf *g);
size_t dit_gguf_alignment(const dit_gguf *g);
size_t dit_gguf_data_offset(const dit_gguf *g);      /* file offset of the data section */
size_t dit_gguf_file_size(const dit_gguf *g);
int64_t dit_gguf_n_kv(const dit_gguf *g);
const char *dit_gguf_kv_key(const dit_gguf *g, int64_t i);
int dit_gguf_kv_type(const dit_gguf *g, int64_t i);
int dit_gguf_kv_arr_type(const dit_gguf *g, int64_t i);   /* element type of an array */
uint64_t dit_gguf_kv_arr_n(const dit_gguf *g, int64_t i);
int64_t dit_gguf_find_kv(const dit_gguf *g, const char *key);   /* -1 if absent */
/* Typed getters: 0 on success, -1 if absent or not convertible (integers convert when in range). */
int dit_gguf_get_u32(const dit_gguf *g, const char *key, uint32_t *out);
int dit_gguf_get_f32(const dit_gguf *g, const char *key, float *out);
int dit_gguf_get_bool(const dit_gguf *g, const char *key, int *out);
const char *dit_gguf_get_str(const dit_gguf *g, const char *key);                /* NUL-terminated copy */
int64_t dit_gguf_get_arr_n(const dit_gguf *g, const char *key);                  /* -1 if absent */
const char *dit_gguf_get_arr_str(const dit_gguf *g, const char *key, int64_t i); /* string array element */
int dit_gguf_get_arr_u32(const dit_gguf *g, const char *key, int64_t i, uint32_t *out);
int dit_gguf_kv_format(const dit_gguf *g, int64_t i, char *buf, size_t n);    /* value as text, arrays abridged */
int64_t dit_gguf_n_tensors(const dit_gguf *g);
const dit_gguf_tensor *dit_gguf_tensor_at(const dit_gguf *g, int64_t i);
const dit_gguf_tensor *dit_gguf_find_tensor(const dit_gguf *g, const char *name);

/* Writer: declare KVs and tensors, then begin() writes the header to a temporary file beside the
   destination, write() streams each tensor's bytes in declaration order, finish() pads, fsyncs and
   renames. free() without finish() removes the temporary file: no partial output, ever. */
typedef struct dit_gguf_writer dit_gguf_writer;
dit_gguf_writer *dit_gguf_writer_new(void);
void dit_gguf_set_u32(dit_gguf_writer *w, const char *key, uint32_t v);   /* set_* replaces an existing key */
void dit_gguf_set_i32(dit_gguf_writer *w, const char *key, int32_t v);
void dit_gguf_set_f32(dit_gguf_writer *w, const char *key, float v);
void dit_gguf_set_bool(dit_gguf_writer *w, const char *key, int v);
void dit_gguf_set_str(dit_gguf_writer *w, const char *key, const char *v);
void dit_gguf_set_arr_str(dit_gguf_writer *w, const char *key, const char *const *v, int64_t n);
void dit_gguf_set_arr_u32(dit_gguf_writer *w, const char *key, const uint32_t *v, int64_t n);
void dit_gguf_set_arr_f32(dit_gguf_writer *w, const char *key, const float *v, int64_t n);
int dit_gguf_copy_kvs(dit_gguf_writer *w, const dit_gguf *src);   /* all KVs of src (any type) */
int dit_gguf_remove_kv(dit_gguf_writer *w, const char *key);
/* returns the tensor's index, or -1 with dit_last_error (duplicate, name > 63 bytes, bad dims/type) */
int dit_gguf_add_tensor(dit_gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne);
int dit_gguf_writer_begin(dit_gguf_writer *w, const char *path);
int dit_gguf_writer_write(dit_gguf_writer *w, const void *data, size_t nbytes);  /* next tensor, whole */
int dit_gguf_writer_finish(dit_gguf_writer *w);   /* also frees w */
void dit_gguf_writer_free(dit_gguf_writer *w);

/* ---------------------------------------------------------------- model */
typedef struct {
    int type;
    int n_dims;
    int64_t ne[4];        /* ggml order */
    const void *data;     /* NULL if the tensor is absent */
    const char *name;
} dit_tensor;

typedef struct {
    dit_tensor qkv_w, qkv_b;     /* (3D, D), (3D)  rows: [q heads | k heads | v heads] */
    dit_tensor proj_w, proj_b;   /* (D, D), (D) */
    dit_tensor fc1_w, fc1_b;     /* (F, D), (F) */
    dit_tensor fc2_w, fc2_b;     /* (D, F), (D) */
    dit_tensor ada_w, ada_b;     /* (6D, D), (6D)  rows: shift,scale,gate (msa) | shift,scale,gate (mlp) */
} dit_block;

typedef struct {
    dit_tensor pos_embed;        /* (1, T, D) */
    dit_tensor x_emb_w, x_emb_b; /* (D, C, p, p), (D) */
    dit_tensor t_fc1_w, t_fc1_b; /* (D, 256), (D) */
    dit_tensor t_fc2_w, t_fc2_b; /* (D, D), (D) */
    dit_tensor y_table;          /* (num_classes + 1, D); last row = null class */
    dit_block *blocks;           /* depth */
    dit_tensor final_ada_w, final_ada_b; /* (2D, D), (2D)  rows: shift | scale */
    dit_tensor final_w, final_b; /* (p*p*out, D), (p*p*out)  features (pi, qi, c), c fastest */
} dit_weights;

typedef struct {
    dit_tensor norm1_w, norm1_b, conv1_w, conv1_b;   /* GN(in), conv3x3 in->out */
    dit_tensor norm2_w, norm2_b, conv2_w, conv2_b;   /* GN(out), conv3x3 out->out */
    dit_tensor short_w, short_b;                     /* conv1x1 in->out, only when in != out */
    int in_ch, out_ch;
} dit_vae_resnet;

#define DIT_VAE_MAX_BLOCKS 4
#define DIT_VAE_MAX_RESNETS 3
typedef struct {
    dit_tensor pq_w, pq_b;                 /* post_quant_conv (z, z, 1, 1) */
    dit_tensor conv_in_w, conv_in_b;       /* (c_top, z, 3, 3) */
    dit_vae_resnet mid[2];
    dit_tensor attn_norm_w, attn_norm_b;   /* GN(c_top) */
    dit_tensor attn_q_w, attn_q_b, attn_k_w, attn_k_b, attn_v_w, attn_v_b, attn_o_w, attn_o_b; /* (c,c) */
    dit_vae_resnet up[DIT_VAE_MAX_BLOCKS][DIT_VAE_MAX_RESNETS];
    dit_tensor up_conv_w[DIT_VAE_MAX_BLOCKS], up_conv_b[DIT_VAE_MAX_BLOCKS]; /* upsampler conv (absent: last) */
    dit_tensor norm_out_w, norm_out_b;     /* GN(c_bottom) */
    dit_tensor conv_out_w, conv_out_b;     /* (out, c_bottom, 3, 3) */
} dit_vae;

typedef struct {
    /* DiT (dit.* keys) */
    int depth, hidden, heads, patch;
    int input_size;          /* L: latent side (or image side for pixel-space models) */
    int in_channels, out_channels, learn_sigma;
    int num_classes;         /* without the null class */
    int mlp_hidden;          /* F */
    int cfg_channels;        /* guided eps channels (3 for the official latent models) */
    int n_class_names;
    /* VAE (vae.* keys); has_vae = 0 for pixel-space models */
    int has_vae;
    int vae_latent_channels, vae_out_channels, vae_groups, vae_layers_per_block, vae_n_blocks;
    int vae_block_out[DIT_VAE_MAX_BLOCKS];
    float vae_scaling_factor;
} dit_config;

typedef struct dit_cuda dit_cuda;   /* GPU state, see ggml-cuda/dit-cuda.h */

typedef struct dit_model {
    dit_config cfg;
    dit_weights w;
    dit_vae vae;
    const char **class_names;       /* cfg.n_class_names entries, or NULL */
    const char *name;               /* general.name or the file stem */
    dit_gguf *file;
    dit_cuda *cuda;                 /* NULL until dit_model_use_cuda() */
} dit_model;

dit_model *dit_model_load(const char *path);     /* NULL + dit_last_error() */
void dit_model_free(dit_model *m);
/* class by index ("207") or name (case-insensitive, exact or unique prefix); -1 + error naming close matches */
int dit_class_from_name(const dit_model *m, const char *s);
size_t dit_latent_floats(const dit_model *m);    /* C * L * L per image */
size_t dit_image_floats(const dit_model *m);     /* 3 * S * S with S = L * 2^(vae blocks - 1) (8L for the SD VAE); C * L * L without a VAE */
int dit_image_channels(const dit_model *m);
int dit_image_size(const dit_model *m);

/* ---------------------------------------------------------------- math (CPU fp32 reference) */
/* out = DiT(x, t, y): x (B, C, L, L), t (B) timesteps as float, y (B) labels (num_classes = null),
   out (B, out_channels, L, L). threads <= 0: all cores. */
int dit_forward(const dit_model *m, const float *x, const float *t, const int *y, int B, float *out,
                int threads);
/* forward_with_cfg as the official model: B = 2N rows, only x[:N] is read. */
int dit_forward_with_cfg(const dit_model *m, const float *x, const float *t, const int *y, int B,
                         float cfg_scale, float *out, int threads);

/* Respaced diffusion schedule (official space_timesteps + SpacedDiffusion), float64 arrays. */
#define DIT_MAX_STEPS 1000
typedef struct {
    int K;                                   /* number of kept steps */
    int timestep_map[DIT_MAX_STEPS];         /* model timestep for sampler index k */
    double betas[DIT_MAX_STEPS];             /* respaced beta'_k */
    double alphas_cumprod[DIT_MAX_STEPS];
    double alphas_cumprod_prev[DIT_MAX_STEPS];
    double sqrt_recip_alphas_cumprod[DIT_MAX_STEPS];
    double sqrt_recipm1_alphas_cumprod[DIT_MAX_STEPS];
    double posterior_log_variance_clipped[DIT_MAX_STEPS];
    double posterior_mean_coef1[DIT_MAX_STEPS];
    double posterior_mean_coef2[DIT_MAX_STEPS];
} dit_schedule;
/* spacing: "250", "50", "10,20,30" (sections), "ddim50" (stride) or "linspace25" (diffusers' "linspace":
   round(999 i / 25), i = 1..25, as DPMSolverMultistepScheduler uses). */
int dit_schedule_init(dit_schedule *s, const char *spacing);
/* DPM-Solver++(2M) at respaced step k: x_next = A x + B0 x0 + B1 x0_prev (x0 = the data prediction of this
   step, x0_prev that of the step before). First order at the first step (k = K-1); the last step (k = 0)
   goes to sigma = 0 and returns x0 (A = 0, B0 = 1, B1 = 0), as diffusers' final_sigmas_type="zero". */
void dit_dpmpp2m_coefs(const dit_schedule *s, int k, double *A, double *B0, double *B1);

/* Counter-based noise: Philox4x32-10 keyed by seed, counter (j, image, step, 0x44695421), Box-Muller
   on word pairs; element e of the image's (C*L*L) tensor is word e%4 of group e/4. step 0 = the
   initial noise, loop iteration i (k = K-1-i) uses step i+1. Same numbers on every backend. */
void dit_randn(uint64_t seed, uint32_t image, uint32_t step, float *out, size_t n);

/* ---------------------------------------------------------------- sampling */
enum { DIT_SAMPLER_DDPM = 0, DIT_SAMPLER_DDIM = 1, DIT_SAMPLER_DPMPP_2M = 2 };
/* "ddpm", "ddim", "dpm++2m"; from_name: -1 if unknown (case-insensitive) */
const char *dit_sampler_name(int sampler);
int dit_sampler_from_name(const char *name);
/* the spacing a sampler uses for `steps` when none is given: "250" (DDPM), "ddim50", "linspace25" (DPM++2M;
   1000 steps: "1000", every timestep) */
void dit_sampler_spacing(int sampler, int steps, char *buf, size_t size);
enum { DIT_BACKEND_AUTO = 0, DIT_BACKEND_CPU = 1, DIT_BACKEND_CUDA = 2 };

typedef void (*dit_progress_fn)(int step, int steps, void *user);

typedef struct {
    int sampler;             /* DIT_SAMPLER_* */
    const char *spacing;     /* NULL: from steps (dit_sampler_spacing) */
    int steps;               /* 250 */
    float eta;               /* DDIM eta, 0 */
    float cfg_scale;         /* 4.0; the CFG batch is always run, as sample.py (also at 1.0) */
    int no_cfg;              /* 1: no CFG batch: the conditional model alone on N rows, as sample_ddp.py at
                                cfg_scale <= 1 (half the work); cfg_scale must be 1 */
    int clip_denoised;       /* 0, as sample.py */
    uint64_t seed;
    int n;                   /* images */
    uint32_t first_image;    /* 0; their Philox noise streams are first_image .. first_image+n-1 of the seed, so a
                                large job sampled in batches (first_image = images before) gets the same noise */
    const int *labels;       /* n labels */
    int threads;             /* CPU threads, <= 0: all */
    int backend;             /* DIT_BACKEND_* */
    const float *init_noise; /* optional (n, C, L, L) */
    const float *step_noise; /* optional (K, n, C, L, L), loop order */
    dit_progress_fn progress;
    void *progress_user;
    int verbose;
} dit_sample_params;

dit_sample_params dit_sample_params_default(void);
/* out: (n, C, L, L) final latents (before the VAE). NaN/Inf is reported as DIT_ERR_NUMERIC with the step. */
int dit_sample(dit_model *m, const dit_sample_params *p, float *out);
/* latents (n, C, L, L) as sampled (divided by the scaling factor inside) -> images (n, 3, 8L, 8L).
   Without a VAE the latents are copied (pixel-space models).
   Always the CPU fp32 reference (the oracle); the GPU decoder is dit_cuda_decode in ggml-cuda/dit-cuda.h,
   which dit-sample uses when it samples on the GPU. */
int dit_decode(dit_model *m, const float *latents, int n, float *images, int threads);

/* ---------------------------------------------------------------- files */
/* Atomic output: open a temporary file beside path; commit = flush + fsync + rename; abort = unlink. */
typedef struct { FILE *f; char *path; char *tmp; } dit_atomic_file;
int dit_atomic_open(dit_atomic_file *a, const char *path);
int dit_atomic_commit(dit_atomic_file *a);
void dit_atomic_abort(dit_atomic_file *a);

/* img (C, H, W) floats in [-1, 1]; C = 1 or 3. Pixels = trunc(clamp((x+1)/2*255 + 0.5, 0, 255)) as
   torchvision save_image. parameters: tEXt "parameters" chunk (A1111 style), may be NULL. */
int dit_png_write(const char *path, const float *img, int C, int H, int W, const char *parameters);
/* float32 little-endian C-order .npy (reads <f4 and <f8 into float; *data is malloc'd) */
int dit_npy_read(const char *path, int *ndim, int64_t shape[8], float **data);
int dit_npy_read_f64(const char *path, int *ndim, int64_t shape[8], double **data);
int dit_npy_write(const char *path, int ndim, const int64_t *shape, const float *data);
/* .npz for ADM's FID/IS evaluation suite, as the official sample_ddp.py writes: member arr_0, uint8
   (n, H, W, C) with the PNGs' pixels. open, then n x add(img (C, H, W) in [-1, 1]), then close (ZIP64,
   atomic: nothing at path until close succeeds; abort discards). */
typedef struct { dit_atomic_file a; int64_t n, done; int C, H, W; uint64_t size; uint32_t crc; unsigned char *px; } dit_npz;
int dit_npz_open(dit_npz *z, const char *path, int n, int C, int H, int W);
int dit_npz_add(dit_npz *z, const float *img);
int dit_npz_close(dit_npz *z);
void dit_npz_abort(dit_npz *z);

#ifdef __cplusplus
}
#endif
#endif /* DIT_H */
