/* dit.c - the dit.c runtime: errors, tensor types and ggml quantizers, GGUF v3 reader and writer,
   atomic files and .npy I/O; model, CPU reference forward, samplers, SD VAE and PNG output.
   The API is documented at the top of dit.h. */
#include "dit.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <ctype.h>
#include <float.h>
#include <zlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __F16C__
#include <immintrin.h>
#endif
#ifdef DIT_CUDA
#include "ggml-cuda/dit-cuda.h"   /* dit_cuda_available/init/sample/decode/free */
#endif

/* ==== Errors ============================================================================== */

static _Thread_local char dit__err_msg[1024];
static _Thread_local int dit__err_code;

const char *dit_last_error(void) { return dit__err_msg[0] ? dit__err_msg : "no error"; }
int dit_last_error_code(void) { return dit__err_code; }

int dit_set_error(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dit__err_msg, sizeof dit__err_msg, fmt, ap);
    va_end(ap);
    for (char *p = dit__err_msg; *p; p++)   /* names from files must not forge lines or terminal codes */
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    dit__err_code = code;
    return code;
}

/* ==== Tensor types ========================================================================= */

/* ggml type table: (name, elements per block, bytes per block). Ids from ggml.h; all known ids are
   listed so that files holding other types can still be validated and shown by dit-info. */
static const struct { const char *name; int blck, bytes; } dit__types[DIT_TYPE_COUNT] = {
    [0] = {"f32", 1, 4},       [1] = {"f16", 1, 2},        [2] = {"q4_0", 32, 18},
    [3] = {"q4_1", 32, 20},    [6] = {"q5_0", 32, 22},     [7] = {"q5_1", 32, 24},
    [8] = {"q8_0", 32, 34},    [9] = {"q8_1", 32, 36},     [10] = {"q2_K", 256, 84},
    [11] = {"q3_K", 256, 110}, [12] = {"q4_K", 256, 144},  [13] = {"q5_K", 256, 176},
    [14] = {"q6_K", 256, 210}, [15] = {"q8_K", 256, 292},  [16] = {"iq2_xxs", 256, 66},
    [17] = {"iq2_xs", 256, 74}, [18] = {"iq3_xxs", 256, 98}, [19] = {"iq1_s", 256, 50},
    [20] = {"iq4_nl", 32, 18}, [21] = {"iq3_s", 256, 110}, [22] = {"iq2_s", 256, 82},
    [23] = {"iq4_xs", 256, 136}, [24] = {"i8", 1, 1},      [25] = {"i16", 1, 2},
    [26] = {"i32", 1, 4},      [27] = {"i64", 1, 8},       [28] = {"f64", 1, 8},
    [29] = {"iq1_m", 256, 56}, [30] = {"bf16", 1, 2},      [34] = {"tq1_0", 256, 54},
    [35] = {"tq2_0", 256, 66}, [39] = {"mxfp4", 32, 17},
};

static bool dit__type_known(int t) { return t >= 0 && t < DIT_TYPE_COUNT && dit__types[t].name; }
const char *dit_type_name(int t) { return dit__type_known(t) ? dit__types[t].name : NULL; }
int dit_type_block_size(int t) { return dit__type_known(t) ? dit__types[t].blck : 0; }
int dit_type_block_bytes(int t) { return dit__type_known(t) ? dit__types[t].bytes : 0; }

int dit_type_from_name(const char *s) {
    for (int t = 0; t < DIT_TYPE_COUNT; t++)
        if (dit__types[t].name && strcasecmp(s, dit__types[t].name) == 0) return t;
    return -1;
}

int dit_type_is_supported(int t) {
    return t == DIT_TYPE_F32 || t == DIT_TYPE_F16 || t == DIT_TYPE_BF16 || t == DIT_TYPE_Q8_0 ||
           t == DIT_TYPE_Q4_0 || t == DIT_TYPE_Q5_0 || t == DIT_TYPE_Q4_1 || t == DIT_TYPE_Q5_1;
}

size_t dit_row_bytes(int t, int64_t n) {
    if (!dit__type_known(t) || n < 0) return 0;
    return (size_t)(n / dit__types[t].blck) * (size_t)dit__types[t].bytes;
}

/* ---- half and bfloat16 ---- */

float dit_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000 | (mant << 13);            /* inf / NaN (payload kept) */
    } else if (exp == 0) {                                   /* zero or subnormal: mant * 2^-24 */
        float f = (float)mant * (1.0f / 16777216.0f);
        return sign ? -f : f;
    } else {
        bits = sign | ((exp + 112) << 23) | (mant << 13);    /* rebias 15 -> 127 */
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t dit_fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffff;
    if (ax > 0x7f800000) return sign | 0x7e00 | ((ax >> 13) & 0x3ff);   /* NaN stays a (quiet) NaN */
    if (ax >= 0x47800000) return sign | 0x7c00;                         /* >= 65536: inf */
    if (ax < 0x38800000) {                                              /* < 2^-14: subnormal half */
        float a;
        memcpy(&a, &ax, 4);
        return sign | (uint16_t)nearbyintf(a * 16777216.0f);            /* exact scale, RNE; 1024 = min normal */
    }
    uint32_t h = ((ax >> 23) - 112) << 10 | ((ax >> 13) & 0x3ff), rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;               /* RNE; carry may reach inf */
    return sign | (uint16_t)h;
}

float dit_bf16_to_fp32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t dit_fp32_to_bf16(float f) {   /* ggml-impl.h: NaN -> quiet, else round to nearest even */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 64);
    return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

/* ---- ggml block quantizers: bit-exact to ggml-quants.c quantize_row_*_ref ----
   float -> int conversions go through dit__trunc so NaN/Inf inputs (which are UB for a C cast)
   give defined codes; for finite inputs the result is the same as ggml's (int8_t) cast. */
static inline int dit__trunc(float v, int lo, int hi) {
    if (!(v == v)) return 0;
    if (v <= (float)lo) return lo;
    if (v >= (float)hi) return hi;
    return (int)v;
}

static void dit__quantize_q8_0(const float *x, uint8_t *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 32, y += 34) {
        float amax = 0.0f;                              /* absolute max */
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
        uint16_t dh = dit_fp32_to_fp16(d);
        memcpy(y, &dh, 2);
        for (int j = 0; j < 32; j++) {
            volatile float x0 = x[j] * id;   /* volatile: one float rounding, never fused (-ffp-contract) */
            y[2 + j] = (uint8_t)(int8_t)dit__trunc(roundf(x0), -128, 127);
        }
    }
}

/* q4_0 / q5_0 share the scale rule: d = (signed value of largest |x|) / -(2^(bits-1)) */
static float dit__signed_absmax(const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++)
        if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
    return max;
}

static void dit__quantize_q4_0(const float *x, uint8_t *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 32, y += 18) {
        const float d = dit__signed_absmax(x) / -8, id = d ? 1.0f / d : 0.0f;
        uint16_t dh = dit_fp32_to_fp16(d);
        memcpy(y, &dh, 2);
        for (int j = 0; j < 16; j++) {
            volatile float x0 = x[j] * id, x1 = x[16 + j] * id;   /* rounded before the add, as ggml */
            int q0 = dit__trunc(x0 + 8.5f, -128, 127), q1 = dit__trunc(x1 + 8.5f, -128, 127);
            q0 = q0 < 15 ? q0 : 15, q1 = q1 < 15 ? q1 : 15;
            y[2 + j] = (uint8_t)((q0 & 0xf) | (q1 & 0xf) << 4);
        }
    }
}

static void dit__quantize_q5_0(const float *x, uint8_t *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 32, y += 22) {
        const float d = dit__signed_absmax(x) / -16, id = d ? 1.0f / d : 0.0f;
        uint16_t dh = dit_fp32_to_fp16(d);
        memcpy(y, &dh, 2);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            volatile float x0 = x[j] * id, x1 = x[16 + j] * id;
            int q0 = dit__trunc(x0 + 16.5f, -128, 127), q1 = dit__trunc(x1 + 16.5f, -128, 127);
            q0 = q0 < 31 ? q0 : 31, q1 = q1 < 31 ? q1 : 31;
            y[6 + j] = (uint8_t)((q0 & 0xf) | (q1 & 0xf) << 4);
            qh |= (uint32_t)((q0 & 0x10) >> 4) << j;        /* 5th bit of element j      -> qh bit j */
            qh |= (uint32_t)((q1 & 0x10) >> 4) << (j + 16); /* 5th bit of element j + 16 -> qh bit j+16 */
        }
        uint8_t le[4] = {qh & 0xff, (qh >> 8) & 0xff, (qh >> 16) & 0xff, qh >> 24};
        memcpy(y + 2, le, 4);
    }
}

void dit_quantize_row(int type, const float *x, void *vy, int64_t n) {
    uint8_t *y = vy;
    switch (type) {
    case DIT_TYPE_F32: memcpy(y, x, (size_t)n * 4); break;
    case DIT_TYPE_F16: {
        int64_t i = 0;
#ifdef __F16C__   /* same bits as dit_fp32_to_fp16 (RNE, quiet NaN keeping the top payload bits), 8 at a time */
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i *)(y + 2 * i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
#endif
        for (; i < n; i++) { uint16_t h = dit_fp32_to_fp16(x[i]); memcpy(y + 2 * i, &h, 2); }
        break;
    }
    case DIT_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) { uint16_t h = dit_fp32_to_bf16(x[i]); memcpy(y + 2 * i, &h, 2); }
        break;
    case DIT_TYPE_Q8_0: dit__quantize_q8_0(x, y, n / 32); break;
    case DIT_TYPE_Q4_0: dit__quantize_q4_0(x, y, n / 32); break;
    case DIT_TYPE_Q5_0: dit__quantize_q5_0(x, y, n / 32); break;
    default: memset(y, 0, dit_row_bytes(type, n)); break;   /* callers check dit_type_is_supported */
    }
}

static inline float dit__load_f16(const uint8_t *p) { uint16_t h; memcpy(&h, p, 2); return dit_fp16_to_fp32(h); }

void dit_dequantize_row(int type, const void *vx, float *y, int64_t n) {
    const uint8_t *x = vx;
    switch (type) {
    case DIT_TYPE_F32: memcpy(y, x, (size_t)n * 4); break;
    case DIT_TYPE_F16: {   /* exact conversion; F16C (x86-64-v3) does 8 at a time */
        int64_t i = 0;
#ifdef __F16C__
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + 2 * i))));
#endif
        for (; i < n; i++) y[i] = dit__load_f16(x + 2 * i);
        break;
    }
    case DIT_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, x + 2 * i, 2); y[i] = dit_bf16_to_fp32(h); }
        break;
    case DIT_TYPE_Q8_0:   /* y = d * q */
        for (int64_t b = 0; b < n / 32; b++, x += 34, y += 32) {
            const float d = dit__load_f16(x);
            for (int j = 0; j < 32; j++) y[j] = (int8_t)x[2 + j] * d;
        }
        break;
    case DIT_TYPE_Q4_0:   /* low nibbles = elements 0..15, high = 16..31; y = (q - 8) * d */
    case DIT_TYPE_Q4_1:   /* y = q * d + m */
        for (int64_t b = 0; b < n / 32; b++, y += 32) {
            const float d = dit__load_f16(x), m = type == DIT_TYPE_Q4_1 ? dit__load_f16(x + 2) : 0.0f;
            const uint8_t *qs = x + (type == DIT_TYPE_Q4_1 ? 4 : 2);
            const int off = type == DIT_TYPE_Q4_1 ? 0 : 8;
            for (int j = 0; j < 16; j++) {   /* q4_0 has no m: adding 0 would turn -0 into +0 */
                y[j] = off ? ((qs[j] & 0xf) - off) * d : (qs[j] & 0xf) * d + m;
                y[j + 16] = off ? ((qs[j] >> 4) - off) * d : (qs[j] >> 4) * d + m;
            }
            x += type == DIT_TYPE_Q4_1 ? 20 : 18;
        }
        break;
    case DIT_TYPE_Q5_0:   /* 5th bits in qh (LE u32): bit j -> element j, bit j+16 -> element j+16 */
    case DIT_TYPE_Q5_1:
        for (int64_t b = 0; b < n / 32; b++, y += 32) {
            const bool one = type == DIT_TYPE_Q5_1;
            const float d = dit__load_f16(x), m = one ? dit__load_f16(x + 2) : 0.0f;
            const uint8_t *qhp = x + (one ? 4 : 2), *qs = qhp + 4;
            const uint32_t qh = qhp[0] | (uint32_t)qhp[1] << 8 | (uint32_t)qhp[2] << 16 | (uint32_t)qhp[3] << 24;
            const int off = one ? 0 : 16;
            for (int j = 0; j < 16; j++) {
                const int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
                y[j] = off ? (((qs[j] & 0xf) | h0) - off) * d : ((qs[j] & 0xf) | h0) * d + m;
                y[j + 16] = off ? (((qs[j] >> 4) | h1) - off) * d : ((qs[j] >> 4) | h1) * d + m;
            }
            x += one ? 24 : 22;
        }
        break;
    default: memset(y, 0, (size_t)n * sizeof(float)); break;
    }
}

/* ==== Atomic files ========================================================================= */

int dit_atomic_open(dit_atomic_file *a, const char *path) {
    memset(a, 0, sizeof *a);
    size_t n = strlen(path);
    a->path = strdup(path);
    a->tmp = malloc(n + 16);
    if (!a->path || !a->tmp) { dit_atomic_abort(a); return dit_set_error(DIT_ERR_NOMEM, "out of memory"); }
    snprintf(a->tmp, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(a->tmp);
    if (fd < 0) {
        int e = errno;
        free(a->tmp), a->tmp = NULL;
        dit_atomic_abort(a);
        return dit_set_error(DIT_ERR_IO, "%s: cannot create output file: %s", path, strerror(e));
    }
    fchmod(fd, 0644);
    a->f = fdopen(fd, "wb");
    if (!a->f) { close(fd); dit_atomic_abort(a); return dit_set_error(DIT_ERR_IO, "%s: fdopen failed", path); }
    return DIT_OK;
}

int dit_atomic_commit(dit_atomic_file *a) {
    int bad = ferror(a->f) || fflush(a->f) != 0 || fsync(fileno(a->f)) != 0;
    int e = errno;
    bad |= fclose(a->f) != 0;
    a->f = NULL;
    if (bad) {
        int code = dit_set_error(DIT_ERR_IO, "%s: write failed: %s", a->path, strerror(e ? e : EIO));
        dit_atomic_abort(a);
        return code;
    }
    if (rename(a->tmp, a->path) != 0) {
        int code = dit_set_error(DIT_ERR_IO, "%s: cannot rename temporary file: %s", a->path, strerror(errno));
        dit_atomic_abort(a);
        return code;
    }
    free(a->tmp), free(a->path);
    a->tmp = a->path = NULL;
    return DIT_OK;
}

void dit_atomic_abort(dit_atomic_file *a) {
    if (a->f) fclose(a->f);
    if (a->tmp) unlink(a->tmp);
    free(a->tmp), free(a->path);
    memset(a, 0, sizeof *a);
}

/* The dims rule of the GGUF reader and writer: none negative, the product of the non-zero ones below 2^56
   (byte counts of every type then fit in 64 bits); zero dims are allowed (empty tensors). The index of
   the first dim that breaks it, or -1. */
static int dit__dims_bad(const int64_t *ne, int n)
{
    uint64_t p = 1;
    for (int d = 0; d < n; d++) {
        if (ne[d] < 0 || (ne[d] && p > (UINT64_MAX >> 8) / (uint64_t)ne[d])) return d;
        p *= ne[d] ? (uint64_t)ne[d] : 1;
    }
    return -1;
}

/* ==== GGUF reader ========================================================================== */

typedef struct {
    char *key;
    int type, arr_type;
    uint64_t n;              /* array element count (1 for scalars) */
    const uint8_t *val;      /* value bytes in the mapping (after the type field / array header) */
    char *str;               /* STRING: NUL-terminated copy */
    char **strs;             /* ARRAY of STRING: NUL-terminated copies */
} dit__kv;

struct dit_gguf {
    char *path;
    uint8_t *map;
    size_t size, data_off, alignment;
    uint32_t version;
    int64_t n_kv, n_tensors;
    dit__kv *kv;
    dit_gguf_tensor *tensors;
};

/* A bounds-checked cursor over the mapping; the first failure sticks. */
typedef struct { const uint8_t *p, *end; const char *what; } dit__cur;

static bool dit__take(dit__cur *c, void *out, size_t n) {
    if (c->what || (size_t)(c->end - c->p) < n) { if (!c->what) c->what = "unexpected end of file"; return false; }
    if (out) memcpy(out, c->p, n);
    c->p += n;
    return true;
}
static uint32_t dit__u32(dit__cur *c) { uint32_t v = 0; dit__take(c, &v, 4); return v; }
static uint64_t dit__u64(dit__cur *c) { uint64_t v = 0; dit__take(c, &v, 8); return v; }

/* gguf_string: u64 length + bytes; returns a pointer into the mapping */
static const char *dit__str(dit__cur *c, uint64_t *len, uint64_t max) {
    *len = dit__u64(c);
    if (c->what) return NULL;
    if (*len > max) { c->what = "string too long"; return NULL; }
    const char *s = (const char *)c->p;
    return dit__take(c, NULL, *len) ? s : NULL;
}

static const int dit__kv_size[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

static int dit__gguf_fail(dit_gguf *g, int code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dit_set_error(code, "%s: %s", g->path, msg);
}

#define DIT_GGUF_MAX_KV 100000          /* bounds before any allocation; a DiT file has ~30 */
#define DIT_GGUF_MAX_TENSORS 1000000
#define DIT_GGUF_MAX_STR (64u << 20)

static char *dit__strndup_checked(const char *s, uint64_t n) {
    if (memchr(s, 0, n)) return NULL;   /* embedded NUL: not a usable name */
    char *r = malloc(n + 1);
    if (r) memcpy(r, s, n), r[n] = 0;
    return r;
}

static int dit__key_cmp(const void *a, const void *b) {
    return strcmp(**(char *const *const *)a, **(char *const *const *)b);
}

/* Rejects duplicate strings among n names given through an accessor; returns the duplicate or NULL. */
static const char *dit__find_duplicate(char **names, int64_t n) {
    if (n < 2) return NULL;
    char ***idx = malloc(n * sizeof *idx);
    if (!idx) return NULL;
    for (int64_t i = 0; i < n; i++) idx[i] = &names[i];
    qsort(idx, n, sizeof *idx, dit__key_cmp);
    const char *dup = NULL;
    for (int64_t i = 1; i < n && !dup; i++)
        if (strcmp(*idx[i - 1], *idx[i]) == 0) dup = *idx[i];
    free(idx);
    return dup;
}

static int dit__gguf_read_kvs(dit_gguf *g, dit__cur *c) {
    for (int64_t i = 0; i < g->n_kv; i++) {
        dit__kv *kv = &g->kv[i];
        uint64_t klen;
        const char *k = dit__str(c, &klen, 65535);
        if (!k) return dit__gguf_fail(g, DIT_ERR_INPUT, "metadata key %lld: %s", (long long)i, c->what);
        if (klen == 0) return dit__gguf_fail(g, DIT_ERR_INPUT, "metadata key %lld is empty", (long long)i);
        if (!(kv->key = dit__strndup_checked(k, klen)))
            return dit__gguf_fail(g, DIT_ERR_INPUT, "metadata key %lld contains a NUL byte", (long long)i);
        kv->type = (int)dit__u32(c);
        kv->n = 1;
        int et = kv->type;
        if (kv->type == DIT_GGUF_ARRAY) {
            kv->arr_type = et = (int)dit__u32(c);
            kv->n = dit__u64(c);
            if (et == DIT_GGUF_ARRAY)
                return dit__gguf_fail(g, DIT_ERR_INPUT, "key '%s': nested arrays are not supported", kv->key);
        }
        if (c->what) return dit__gguf_fail(g, DIT_ERR_INPUT, "key '%s': %s", kv->key, c->what);
        if (et < 0 || et > DIT_GGUF_FLOAT64)
            return dit__gguf_fail(g, DIT_ERR_INPUT, "key '%s': invalid value type %d", kv->key, et);
        kv->val = c->p;
        if (et == DIT_GGUF_STRING) {
            /* each string needs >= 8 bytes, so n is bounded by the remaining file before we allocate */
            if (kv->n > (uint64_t)(c->end - c->p) / 8)
                return dit__gguf_fail(g, DIT_ERR_INPUT, "key '%s': array of %llu strings exceeds the file",
                                      kv->key, (unsigned long long)kv->n);
            if (kv->type == DIT_GGUF_ARRAY && !(kv->strs = calloc(kv->n ? kv->n : 1, sizeof(char *))))
                return dit__gguf_fail(g, DIT_ERR_NOMEM, "out of memory");
            for (uint64_t j = 0; j < kv->n; j++) {
                uint64_t len;
                const char *s = dit__str(c, &len, DIT_GGUF_MAX_STR);
                if (!s) return dit__gguf_fail(g, DIT_ERR_INPUT, "key '%s': %s", kv->key, c->what);
                char *copy = malloc(len + 1);
                if (!copy) return dit__gguf_fail(g, DIT_ERR_NOMEM, "out of memory");
                memcpy(copy, s, len), copy[len] = 0;
                if (kv->strs) kv->strs[j] = copy;
                else kv->str = copy;
            }
        } else {
            uint64_t es = (uint64_t)dit__kv_size[et];
            if (kv->n > (uint64_t)(c->end - c->p) / es)
                return dit__gguf_fail(g, DIT_ERR_INPUT, "key '%s': value extends past the end of the file", kv->key);
            if (et == DIT_GGUF_BOOL)
                for (uint64_t j = 0; j < kv->n; j++)
                    if (c->p[j] > 1) return dit__gguf_fail(g, DIT_ERR_INPUT, "key '%s': bool value %d is not 0 or 1", kv->key, c->p[j]);
            dit__take(c, NULL, kv->n * es);
        }
    }
    char **keys = malloc((g->n_kv ? g->n_kv : 1) * sizeof *keys);
    if (!keys) return dit__gguf_fail(g, DIT_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < g->n_kv; i++) keys[i] = g->kv[i].key;
    const char *dup = dit__find_duplicate(keys, g->n_kv);
    int rc = dup ? dit__gguf_fail(g, DIT_ERR_INPUT, "duplicate metadata key '%s'", dup) : DIT_OK;
    free(keys);
    return rc;
}

static int dit__gguf_read_tensors(dit_gguf *g, dit__cur *c) {
    for (int64_t i = 0; i < g->n_tensors; i++) {
        dit_gguf_tensor *t = &g->tensors[i];
        uint64_t len;
        const char *name = dit__str(c, &len, 1u << 20);
        if (!name) return dit__gguf_fail(g, DIT_ERR_INPUT, "tensor %lld: %s", (long long)i, c->what);
        if (len > DIT_GGUF_MAX_NAME)
            return dit__gguf_fail(g, DIT_ERR_INPUT, "tensor %lld: name is %llu bytes, the limit is %d", (long long)i,
                                  (unsigned long long)len, DIT_GGUF_MAX_NAME);
        if (len == 0 || memchr(name, 0, len))   /* same rule as the writer */
            return dit__gguf_fail(g, DIT_ERR_INPUT, "tensor %lld: name is empty or contains a NUL byte", (long long)i);
        memcpy(t->name, name, len), t->name[len] = 0;
        uint32_t nd = dit__u32(c);
        if (!c->what && (nd < 1 || nd > 4))
            return dit__gguf_fail(g, DIT_ERR_INPUT, "tensor '%s': %u dimensions (1 to 4 allowed)", t->name, nd);
        t->n_dims = (int)nd;
        for (int d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < nd && !c->what; d++) {
            uint64_t ne = dit__u64(c);
            if (ne > (uint64_t)INT64_MAX) return dit__gguf_fail(g, DIT_ERR_INPUT, "tensor '%s': dimension %u is negative", t->name, d);
            t->ne[d] = (int64_t)ne;
        }
        t->type = (int)dit__u32(c);
        t->offset = dit__u64(c);
        if (c->what) return dit__gguf_fail(g, DIT_ERR_INPUT, "tensor '%s': %s", t->name, c->what);
        if (!dit__type_known(t->type))
            return dit__gguf_fail(g, DIT_ERR_INPUT, "tensor '%s': unknown ggml type %d", t->name, t->type);
        if (dit__dims_bad(t->ne, 4) >= 0)
            return dit__gguf_fail(g, DIT_ERR_INPUT, "tensor '%s': element count of dims [%lld, %lld, %lld, %lld] overflows",
                                  t->name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3]);
        int blck = dit__types[t->type].blck;
        if (t->ne[0] % blck)
            return dit__gguf_fail(g, DIT_ERR_INPUT, "tensor '%s': row length %lld is not a multiple of the %s block size %d",
                                  t->name, (long long)t->ne[0], dit__types[t->type].name, blck);
        /* < 2^56 elements and <= 8 bytes per element (dit__dims_bad): no overflow */
        const uint64_t nbytes = dit_row_bytes(t->type, t->ne[0]) * (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
        if (nbytes > g->size)
            return dit__gguf_fail(g, DIT_ERR_INPUT, "tensor '%s': size of dims [%lld, %lld, %lld, %lld] exceeds the file",
                                  t->name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3]);
        t->nbytes = (size_t)nbytes;
    }
    char **names = malloc((g->n_tensors ? g->n_tensors : 1) * sizeof *names);
    if (!names) return dit__gguf_fail(g, DIT_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < g->n_tensors; i++) names[i] = g->tensors[i].name;
    const char *dup = dit__find_duplicate(names, g->n_tensors);
    int rc = dup ? dit__gguf_fail(g, DIT_ERR_INPUT, "duplicate tensor name '%s'", dup) : DIT_OK;
    free(names);
    return rc;
}

/* Offsets must follow ggml's rule: each is the running sum of the previous sizes padded to the
   alignment (so no gaps, no overlaps), and every tensor lies inside the file. */
static int dit__gguf_check_layout(dit_gguf *g, size_t info_end) {
    size_t a = g->alignment;
    g->data_off = info_end + (a - info_end % a) % a;
    if (g->n_tensors && g->data_off > g->size)
        return dit__gguf_fail(g, DIT_ERR_INPUT, "truncated: data section starts at %zu but the file has %zu bytes", g->data_off, g->size);
    uint64_t expect = 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        dit_gguf_tensor *t = &g->tensors[i];
        if (t->offset != expect)
            return dit__gguf_fail(g, DIT_ERR_INPUT, "tensor '%s' has offset %llu, expected %llu", t->name,
                                  (unsigned long long)t->offset, (unsigned long long)expect);
        if (t->offset > g->size - g->data_off || t->nbytes > g->size - g->data_off - t->offset)
            return dit__gguf_fail(g, DIT_ERR_INPUT, "truncated: tensor '%s' (%zu bytes at offset %llu) ends past the end of the file",
                                  t->name, t->nbytes, (unsigned long long)t->offset);
        t->data = g->map + g->data_off + t->offset;
        expect += t->nbytes + (a - t->nbytes % a) % a;
    }
    return DIT_OK;
}

dit_gguf *dit_gguf_open(const char *path) {
    dit_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) { free(g); dit_set_error(DIT_ERR_NOMEM, "out of memory"); return NULL; }
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        dit__gguf_fail(g, DIT_ERR_IO, "cannot open: %s", strerror(errno));
        if (fd >= 0) close(fd);
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) { close(fd); dit__gguf_fail(g, DIT_ERR_INPUT, "not a regular file"); goto fail; }
    g->size = (size_t)st.st_size;
    if (g->size < 24) {
        close(fd);
        dit__gguf_fail(g, DIT_ERR_INPUT, "not a GGUF file (%zu bytes, too short for a header)", g->size);
        goto fail;
    }
    g->map = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (g->map == MAP_FAILED) { g->map = NULL; dit__gguf_fail(g, DIT_ERR_IO, "mmap failed: %s", strerror(errno)); goto fail; }

    dit__cur c = {g->map, g->map + g->size, NULL};
    if (memcmp(g->map, "GGUF", 4) != 0) {
        if (memcmp(g->map, "version https://git-lfs", 23) == 0)
            dit__gguf_fail(g, DIT_ERR_INPUT, "this is a Git LFS pointer, not the model: run 'git lfs pull' or download the file itself");
        else
            dit__gguf_fail(g, DIT_ERR_INPUT, "not a GGUF file (bad magic)");
        goto fail;
    }
    dit__take(&c, NULL, 4);
    g->version = dit__u32(&c);
    if ((g->version & 0xffff) == 0) { dit__gguf_fail(g, DIT_ERR_INPUT, "GGUF endianness mismatch (big-endian file?)"); goto fail; }
    if (g->version != 2 && g->version != 3) {
        dit__gguf_fail(g, DIT_ERR_INPUT, "unsupported GGUF version %u (2 and 3 are supported)", g->version);
        goto fail;
    }
    uint64_t nt = dit__u64(&c), nkv = dit__u64(&c);
    if (nt > DIT_GGUF_MAX_TENSORS || nt > g->size / 24) { dit__gguf_fail(g, DIT_ERR_INPUT, "implausible tensor count %llu", (unsigned long long)nt); goto fail; }
    if (nkv > DIT_GGUF_MAX_KV || nkv > g->size / 12) { dit__gguf_fail(g, DIT_ERR_INPUT, "implausible metadata count %llu", (unsigned long long)nkv); goto fail; }
    g->n_tensors = (int64_t)nt, g->n_kv = (int64_t)nkv;
    g->kv = calloc(nkv ? nkv : 1, sizeof *g->kv);
    g->tensors = calloc(nt ? nt : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) { dit__gguf_fail(g, DIT_ERR_NOMEM, "out of memory"); goto fail; }
    if (dit__gguf_read_kvs(g, &c) != DIT_OK) goto fail;

    g->alignment = DIT_GGUF_ALIGNMENT;
    int64_t ai = dit_gguf_find_kv(g, "general.alignment");
    if (ai >= 0) {
        uint32_t a = 0;
        if (g->kv[ai].type != DIT_GGUF_UINT32 || (memcpy(&a, g->kv[ai].val, 4), a == 0) || (a & (a - 1)) || a > (1u << 20)) {
            dit__gguf_fail(g, DIT_ERR_INPUT, "general.alignment must be a power-of-two uint32 (<= 1 MiB)");
            goto fail;
        }
        g->alignment = a;
    }
    if (dit__gguf_read_tensors(g, &c) != DIT_OK) goto fail;
    if (dit__gguf_check_layout(g, (size_t)(c.p - g->map)) != DIT_OK) goto fail;
    return g;
fail:
    dit_gguf_close(g);
    return NULL;
}

void dit_gguf_close(dit_gguf *g) {
    if (!g) return;
    for (int64_t i = 0; g->kv && i < g->n_kv; i++) {
        dit__kv *kv = &g->kv[i];
        free(kv->key), free(kv->str);
        if (kv->strs)
            for (uint64_t j = 0; j < kv->n; j++) free(kv->strs[j]);
        free(kv->strs);
    }
    free(g->kv), free(g->tensors);
    if (g->map) munmap(g->map, g->size);
    free(g->path);
    free(g);
}

const char *dit_gguf_path(const dit_gguf *g) { return g->path; }
uint32_t dit_gguf_version(const dit_gguf *g) { return g->version; }
size_t dit_gguf_alignment(const dit_gguf *g) { return g->alignment; }
size_t dit_gguf_data_offset(const dit_gguf *g) { return g->data_off; }
size_t dit_gguf_file_size(const dit_gguf *g) { return g->size; }
int64_t dit_gguf_n_kv(const dit_gguf *g) { return g->n_kv; }
const char *dit_gguf_kv_key(const dit_gguf *g, int64_t i) { return i >= 0 && i < g->n_kv ? g->kv[i].key : NULL; }
int dit_gguf_kv_type(const dit_gguf *g, int64_t i) { return i >= 0 && i < g->n_kv ? g->kv[i].type : -1; }
int dit_gguf_kv_arr_type(const dit_gguf *g, int64_t i) { return i >= 0 && i < g->n_kv ? g->kv[i].arr_type : -1; }
uint64_t dit_gguf_kv_arr_n(const dit_gguf *g, int64_t i) { return i >= 0 && i < g->n_kv ? g->kv[i].n : 0; }
int64_t dit_gguf_n_tensors(const dit_gguf *g) { return g->n_tensors; }
const dit_gguf_tensor *dit_gguf_tensor_at(const dit_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

int64_t dit_gguf_find_kv(const dit_gguf *g, const char *key) {
    for (int64_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0) return i;
    return -1;
}

const dit_gguf_tensor *dit_gguf_find_tensor(const dit_gguf *g, const char *name) {
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
    return NULL;
}

/* Reads element i of a numeric scalar or array value as double / integer. */
static bool dit__kv_num(const dit__kv *kv, uint64_t i, double *d, int64_t *iv, bool *is_int) {
    int t = kv->type == DIT_GGUF_ARRAY ? kv->arr_type : kv->type;
    if (t == DIT_GGUF_STRING || t == DIT_GGUF_ARRAY || i >= kv->n) return false;
    const uint8_t *p = kv->val + i * (uint64_t)dit__kv_size[t];
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; float f32;
            uint64_t u64; int64_t i64; double f64; } v;
    memcpy(&v, p, (size_t)dit__kv_size[t]);
    *is_int = true;
    switch (t) {
    case DIT_GGUF_UINT8: case DIT_GGUF_BOOL: *iv = v.u8; break;
    case DIT_GGUF_INT8: *iv = v.i8; break;
    case DIT_GGUF_UINT16: *iv = v.u16; break;
    case DIT_GGUF_INT16: *iv = v.i16; break;
    case DIT_GGUF_UINT32: *iv = v.u32; break;
    case DIT_GGUF_INT32: *iv = v.i32; break;
    case DIT_GGUF_UINT64: if (v.u64 > INT64_MAX) return false; *iv = (int64_t)v.u64; break;
    case DIT_GGUF_INT64: *iv = v.i64; break;
    case DIT_GGUF_FLOAT32: *is_int = false; *d = v.f32; return true;
    case DIT_GGUF_FLOAT64: *is_int = false; *d = v.f64; return true;
    default: return false;
    }
    *d = (double)*iv;
    return true;
}

int dit_gguf_get_u32(const dit_gguf *g, const char *key, uint32_t *out) {
    int64_t i = dit_gguf_find_kv(g, key);
    double d; int64_t iv; bool is_int;
    if (i < 0 || g->kv[i].type == DIT_GGUF_ARRAY || !dit__kv_num(&g->kv[i], 0, &d, &iv, &is_int) || !is_int) return -1;
    if (iv < 0 || iv > UINT32_MAX) return -1;
    *out = (uint32_t)iv;
    return 0;
}

int dit_gguf_get_f32(const dit_gguf *g, const char *key, float *out) {
    int64_t i = dit_gguf_find_kv(g, key);
    double d; int64_t iv; bool is_int;
    if (i < 0 || g->kv[i].type == DIT_GGUF_ARRAY || !dit__kv_num(&g->kv[i], 0, &d, &iv, &is_int)) return -1;
    *out = (float)d;
    return 0;
}

int dit_gguf_get_bool(const dit_gguf *g, const char *key, int *out) {
    int64_t i = dit_gguf_find_kv(g, key);
    double d; int64_t iv; bool is_int;
    if (i < 0 || g->kv[i].type == DIT_GGUF_ARRAY || !dit__kv_num(&g->kv[i], 0, &d, &iv, &is_int) || !is_int) return -1;
    *out = iv != 0;
    return 0;
}

const char *dit_gguf_get_str(const dit_gguf *g, const char *key) {
    int64_t i = dit_gguf_find_kv(g, key);
    return i >= 0 && g->kv[i].type == DIT_GGUF_STRING ? g->kv[i].str : NULL;
}

int64_t dit_gguf_get_arr_n(const dit_gguf *g, const char *key) {
    int64_t i = dit_gguf_find_kv(g, key);
    return i >= 0 && g->kv[i].type == DIT_GGUF_ARRAY ? (int64_t)g->kv[i].n : -1;
}

const char *dit_gguf_get_arr_str(const dit_gguf *g, const char *key, int64_t j) {
    int64_t i = dit_gguf_find_kv(g, key);
    if (i < 0 || g->kv[i].type != DIT_GGUF_ARRAY || g->kv[i].arr_type != DIT_GGUF_STRING) return NULL;
    return j >= 0 && (uint64_t)j < g->kv[i].n ? g->kv[i].strs[j] : NULL;
}

int dit_gguf_get_arr_u32(const dit_gguf *g, const char *key, int64_t j, uint32_t *out) {
    int64_t i = dit_gguf_find_kv(g, key);
    double d; int64_t iv; bool is_int;
    if (i < 0 || g->kv[i].type != DIT_GGUF_ARRAY || j < 0) return -1;
    if (!dit__kv_num(&g->kv[i], (uint64_t)j, &d, &iv, &is_int) || !is_int || iv < 0 || iv > UINT32_MAX) return -1;
    *out = (uint32_t)iv;
    return 0;
}

static const char *dit__kv_type_name(int t) {
    static const char *n[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"};
    return t >= 0 && t <= 12 ? n[t] : "?";
}

/* Appends element j of kv as text. */
static size_t dit__kv_elem_format(const dit__kv *kv, uint64_t j, char *buf, size_t n) {
    int t = kv->type == DIT_GGUF_ARRAY ? kv->arr_type : kv->type;
    if (t == DIT_GGUF_STRING) return (size_t)snprintf(buf, n, "\"%s\"", kv->strs ? kv->strs[j] : kv->str);
    double d; int64_t iv; bool is_int;
    if (!dit__kv_num(kv, j, &d, &iv, &is_int)) return (size_t)snprintf(buf, n, "?");
    if (t == DIT_GGUF_BOOL) return (size_t)snprintf(buf, n, "%s", iv ? "true" : "false");
    return is_int ? (size_t)snprintf(buf, n, "%lld", (long long)iv) : (size_t)snprintf(buf, n, "%.9g", d);
}

int dit_gguf_kv_format(const dit_gguf *g, int64_t i, char *buf, size_t n) {
    if (i < 0 || i >= g->n_kv || n == 0) return -1;
    const dit__kv *kv = &g->kv[i];
    size_t len = 0;
    buf[0] = 0;
    if (kv->type != DIT_GGUF_ARRAY) {
        dit__kv_elem_format(kv, 0, buf, n);
        return 0;
    }
    len += (size_t)snprintf(buf, n, "%s[%llu] [", dit__kv_type_name(kv->arr_type), (unsigned long long)kv->n);
    for (uint64_t j = 0; j < kv->n && len + 8 < n; j++) {
        if (j) len += (size_t)snprintf(buf + len, n - len, ", ");
        if (len + 8 >= n) break;
        size_t w = dit__kv_elem_format(kv, j, buf + len, n - len);
        if (len + w + 8 >= n) { buf[len] = 0; len += (size_t)snprintf(buf + len, n - len, "..."); return 0; }
        len += w;
    }
    if (len + 2 < n) snprintf(buf + len, n - len, "]");
    return 0;
}

/* ==== GGUF writer ========================================================================== */

typedef struct { char *key; int type; uint8_t *val; size_t len; } dit__wkv;   /* val = encoded type + value */
typedef struct { char name[DIT_GGUF_MAX_NAME + 1]; int type, n_dims; int64_t ne[4]; size_t nbytes; uint64_t offset; } dit__wtensor;

struct dit_gguf_writer {
    dit__wkv *kv;
    int64_t n_kv, cap_kv;
    dit__wtensor *t;
    int64_t n_t, cap_t;
    dit_atomic_file out;
    int64_t next;              /* next tensor to write */
    bool begun, failed;
};

dit_gguf_writer *dit_gguf_writer_new(void) { return calloc(1, sizeof(dit_gguf_writer)); }

/* Stores one KV (type word + payload, as it will be written). Replaces an existing key. */
static void dit__wkv_put(dit_gguf_writer *w, const char *key, int type, const void *payload, size_t len) {
    if (!w || w->failed) return;
    uint8_t *v = malloc(4 + len);
    char *k = strdup(key);
    if (!v || !k) { free(v), free(k); w->failed = true; dit_set_error(DIT_ERR_NOMEM, "out of memory"); return; }
    uint32_t t = (uint32_t)type;
    memcpy(v, &t, 4);
    if (len) memcpy(v + 4, payload, len);
    for (int64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) {
            free(w->kv[i].val), free(k);
            w->kv[i].val = v, w->kv[i].len = 4 + len, w->kv[i].type = type;
            return;
        }
    if (w->n_kv == w->cap_kv) {
        int64_t cap = w->cap_kv ? 2 * w->cap_kv : 32;
        dit__wkv *kv = realloc(w->kv, (size_t)cap * sizeof *kv);
        if (!kv) { free(v), free(k); w->failed = true; dit_set_error(DIT_ERR_NOMEM, "out of memory"); return; }
        w->kv = kv, w->cap_kv = cap;
    }
    w->kv[w->n_kv++] = (dit__wkv){k, type, v, 4 + len};
}

void dit_gguf_set_u32(dit_gguf_writer *w, const char *k, uint32_t v) { dit__wkv_put(w, k, DIT_GGUF_UINT32, &v, 4); }
void dit_gguf_set_i32(dit_gguf_writer *w, const char *k, int32_t v) { dit__wkv_put(w, k, DIT_GGUF_INT32, &v, 4); }
void dit_gguf_set_f32(dit_gguf_writer *w, const char *k, float v) { dit__wkv_put(w, k, DIT_GGUF_FLOAT32, &v, 4); }
void dit_gguf_set_bool(dit_gguf_writer *w, const char *k, int v) { uint8_t b = v != 0; dit__wkv_put(w, k, DIT_GGUF_BOOL, &b, 1); }

/* string arrays are encoded as u32 elem type + u64 count + (u64 len + bytes)* */
static uint8_t *dit__encode_strs(const char *const *v, int64_t n, bool array, size_t *len) {
    size_t total = array ? 12 : 0;
    for (int64_t i = 0; i < n; i++) total += 8 + strlen(v[i]);
    uint8_t *buf = malloc(total ? total : 1), *p = buf;
    if (!buf) return NULL;
    if (array) {
        uint32_t et = DIT_GGUF_STRING;
        uint64_t cnt = (uint64_t)n;
        memcpy(p, &et, 4), memcpy(p + 4, &cnt, 8), p += 12;
    }
    for (int64_t i = 0; i < n; i++) {
        uint64_t l = strlen(v[i]);
        memcpy(p, &l, 8), memcpy(p + 8, v[i], l), p += 8 + l;
    }
    *len = total;
    return buf;
}

void dit_gguf_set_str(dit_gguf_writer *w, const char *k, const char *v) {
    size_t len;
    uint8_t *buf = dit__encode_strs(&v, 1, false, &len);
    if (!buf) { if (w) w->failed = true; return; }
    dit__wkv_put(w, k, DIT_GGUF_STRING, buf, len);
    free(buf);
}

void dit_gguf_set_arr_str(dit_gguf_writer *w, const char *k, const char *const *v, int64_t n) {
    size_t len;
    uint8_t *buf = dit__encode_strs(v, n, true, &len);
    if (!buf) { if (w) w->failed = true; return; }
    dit__wkv_put(w, k, DIT_GGUF_ARRAY, buf, len);
    free(buf);
}

static void dit__set_arr_num(dit_gguf_writer *w, const char *k, int et, const void *v, int64_t n, size_t es) {
    size_t len = 12 + (size_t)n * es;
    uint8_t *buf = malloc(len);
    if (!buf) { if (w) w->failed = true; return; }
    uint32_t t = (uint32_t)et;
    uint64_t cnt = (uint64_t)n;
    memcpy(buf, &t, 4), memcpy(buf + 4, &cnt, 8);
    if (n) memcpy(buf + 12, v, (size_t)n * es);
    dit__wkv_put(w, k, DIT_GGUF_ARRAY, buf, len);
    free(buf);
}
void dit_gguf_set_arr_u32(dit_gguf_writer *w, const char *k, const uint32_t *v, int64_t n) { dit__set_arr_num(w, k, DIT_GGUF_UINT32, v, n, 4); }
void dit_gguf_set_arr_f32(dit_gguf_writer *w, const char *k, const float *v, int64_t n) { dit__set_arr_num(w, k, DIT_GGUF_FLOAT32, v, n, 4); }

/* Copies every KV of src byte for byte (the reader validated the encoding). */
int dit_gguf_copy_kvs(dit_gguf_writer *w, const dit_gguf *src) {
    for (int64_t i = 0; i < src->n_kv; i++) {
        const dit__kv *kv = &src->kv[i];
        const uint8_t *start = kv->val, *end;
        if (kv->type == DIT_GGUF_ARRAY) start -= 12;   /* include elem type + count */
        if ((kv->type == DIT_GGUF_ARRAY ? kv->arr_type : kv->type) == DIT_GGUF_STRING) {
            const uint8_t *p = kv->val;
            for (uint64_t j = 0; j < kv->n; j++) { uint64_t l; memcpy(&l, p, 8); p += 8 + l; }
            end = p;
        } else {
            end = kv->val + kv->n * (uint64_t)dit__kv_size[kv->type == DIT_GGUF_ARRAY ? kv->arr_type : kv->type];
        }
        dit__wkv_put(w, kv->key, kv->type, start, (size_t)(end - start));
    }
    return w->failed ? dit_last_error_code() : DIT_OK;
}

int dit_gguf_remove_kv(dit_gguf_writer *w, const char *key) {
    for (int64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) {
            free(w->kv[i].key), free(w->kv[i].val);
            memmove(&w->kv[i], &w->kv[i + 1], (size_t)(w->n_kv - i - 1) * sizeof *w->kv);
            w->n_kv--;
            return DIT_OK;
        }
    return -1;
}

int dit_gguf_add_tensor(dit_gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne) {
    if (strlen(name) > DIT_GGUF_MAX_NAME)
        return dit_set_error(DIT_ERR_INPUT, "tensor name '%s' is %zu bytes, the GGUF limit is %d", name, strlen(name), DIT_GGUF_MAX_NAME), -1;
    if (!name[0]) return dit_set_error(DIT_ERR_INPUT, "empty tensor name"), -1;
    if (n_dims < 1 || n_dims > 4) return dit_set_error(DIT_ERR_INPUT, "tensor '%s': %d dimensions", name, n_dims), -1;
    if (!dit__type_known(type)) return dit_set_error(DIT_ERR_INPUT, "tensor '%s': unknown type %d", name, type), -1;
    for (int64_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0) return dit_set_error(DIT_ERR_INPUT, "duplicate tensor name '%s'", name), -1;
    dit__wtensor t = {.type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}};
    strcpy(t.name, name);
    const int bad = dit__dims_bad(ne, n_dims);
    if (bad >= 0) return dit_set_error(DIT_ERR_INPUT, "tensor '%s': bad dimension %lld", name, (long long)ne[bad]), -1;
    for (int d = 0; d < n_dims; d++) t.ne[d] = ne[d];
    if (t.ne[0] % dit__types[type].blck)
        return dit_set_error(DIT_ERR_INPUT, "tensor '%s': row length %lld is not a multiple of the %s block size %d", name,
                             (long long)t.ne[0], dit__types[type].name, dit__types[type].blck), -1;
    t.nbytes = dit_row_bytes(type, t.ne[0]) * (size_t)(t.ne[1] * t.ne[2] * t.ne[3]);
    if (w->n_t == w->cap_t) {
        int64_t cap = w->cap_t ? 2 * w->cap_t : 64;
        dit__wtensor *nt = realloc(w->t, (size_t)cap * sizeof *nt);
        if (!nt) return dit_set_error(DIT_ERR_NOMEM, "out of memory"), -1;
        w->t = nt, w->cap_t = cap;
    }
    w->t[w->n_t] = t;
    return (int)w->n_t++;
}

static bool dit__pad(FILE *f, uint64_t pos, size_t a) {
    static const uint8_t zeros[64];
    size_t pad = (a - pos % a) % a;
    while (pad) { size_t k = pad < sizeof zeros ? pad : sizeof zeros; if (fwrite(zeros, 1, k, f) != k) return false; pad -= k; }
    return true;
}

int dit_gguf_writer_begin(dit_gguf_writer *w, const char *path) {
    if (w->failed) return dit_last_error_code() ? dit_last_error_code() : DIT_ERR_NOMEM;
    /* we always pad to 32: set (or overwrite, in place) the key, so a copied different value cannot lie */
    dit_gguf_set_u32(w, "general.alignment", DIT_GGUF_ALIGNMENT);
    int rc = dit_atomic_open(&w->out, path);
    if (rc) return rc;
    FILE *f = w->out.f;
    setvbuf(f, NULL, _IOFBF, 1 << 22);
    uint64_t pos = 0, off = 0;
    uint32_t version = 3;
    uint64_t nt = (uint64_t)w->n_t, nkv = (uint64_t)w->n_kv;
    bool ok = fwrite("GGUF", 1, 4, f) == 4 && fwrite(&version, 4, 1, f) == 1 && fwrite(&nt, 8, 1, f) == 1 &&
              fwrite(&nkv, 8, 1, f) == 1;
    pos = 24;
    for (int64_t i = 0; ok && i < w->n_kv; i++) {
        uint64_t kl = strlen(w->kv[i].key);
        ok = fwrite(&kl, 8, 1, f) == 1 && fwrite(w->kv[i].key, 1, kl, f) == kl &&
             fwrite(w->kv[i].val, 1, w->kv[i].len, f) == w->kv[i].len;
        pos += 8 + kl + w->kv[i].len;
    }
    for (int64_t i = 0; ok && i < w->n_t; i++) {
        dit__wtensor *t = &w->t[i];
        uint64_t nl = strlen(t->name);
        uint32_t nd = (uint32_t)t->n_dims, ty = (uint32_t)t->type;
        t->offset = off;
        ok = fwrite(&nl, 8, 1, f) == 1 && fwrite(t->name, 1, nl, f) == nl && fwrite(&nd, 4, 1, f) == 1;
        for (int d = 0; ok && d < t->n_dims; d++) { uint64_t ne = (uint64_t)t->ne[d]; ok = fwrite(&ne, 8, 1, f) == 1; }
        ok = ok && fwrite(&ty, 4, 1, f) == 1 && fwrite(&off, 8, 1, f) == 1;
        pos += 8 + nl + 4 + 8 * (uint64_t)t->n_dims + 4 + 8;
        off += t->nbytes + (DIT_GGUF_ALIGNMENT - t->nbytes % DIT_GGUF_ALIGNMENT) % DIT_GGUF_ALIGNMENT;
    }
    ok = ok && dit__pad(f, pos, DIT_GGUF_ALIGNMENT);
    if (!ok) {
        rc = dit_set_error(DIT_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        dit_atomic_abort(&w->out);
        w->failed = true;
        return rc;
    }
    w->begun = true;
    w->next = 0;
    return DIT_OK;
}

int dit_gguf_writer_write(dit_gguf_writer *w, const void *data, size_t nbytes) {
    if (!w->begun || w->failed) return dit_set_error(DIT_ERR_INPUT, "GGUF writer: write before begin or after a failure");
    if (w->next >= w->n_t) return dit_set_error(DIT_ERR_INPUT, "GGUF writer: more tensors written than declared");
    dit__wtensor *t = &w->t[w->next];
    if (nbytes != t->nbytes)
        return dit_set_error(DIT_ERR_INPUT, "GGUF writer: tensor '%s' needs %zu bytes, got %zu", t->name, t->nbytes, nbytes);
    if (fwrite(data, 1, nbytes, w->out.f) != nbytes || !dit__pad(w->out.f, nbytes, DIT_GGUF_ALIGNMENT)) {
        w->failed = true;
        return dit_set_error(DIT_ERR_IO, "%s: write failed: %s", w->out.path, strerror(errno));
    }
    w->next++;
    return DIT_OK;
}

int dit_gguf_writer_finish(dit_gguf_writer *w) {
    int rc;
    if (!w->begun || w->failed) rc = dit_last_error_code() ? dit_last_error_code() : DIT_ERR_INPUT;
    else if (w->next != w->n_t)
        rc = dit_set_error(DIT_ERR_INPUT, "GGUF writer: %lld of %lld tensors written", (long long)w->next, (long long)w->n_t);
    else {
        rc = dit_atomic_commit(&w->out);
        w->begun = false;
    }
    dit_gguf_writer_free(w);
    return rc;
}

void dit_gguf_writer_free(dit_gguf_writer *w) {
    if (!w) return;
    if (w->begun) dit_atomic_abort(&w->out);
    for (int64_t i = 0; i < w->n_kv; i++) free(w->kv[i].key), free(w->kv[i].val);
    free(w->kv), free(w->t), free(w);
}

/* ==== .npy ================================================================================= */

/* Parses a .npy header: little-endian f4/f8, C order. Returns the item size or 0 (error set). */
static int dit__npy_header(const char *path, FILE *f, int *ndim, int64_t shape[8], uint64_t *count) {
    uint8_t pre[10];
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0)
        return dit_set_error(DIT_ERR_INPUT, "%s: not a .npy file (bad magic)", path), 0;
    uint32_t hlen = pre[8] | (uint32_t)pre[9] << 8;
    if (pre[6] >= 2) {   /* v2/v3: 4-byte header length */
        uint8_t b[2];
        if (fread(b, 1, 2, f) != 2) return dit_set_error(DIT_ERR_INPUT, "%s: truncated .npy header", path), 0;
        hlen |= (uint32_t)b[0] << 16 | (uint32_t)b[1] << 24;
    }
    if (pre[6] < 1 || pre[6] > 3 || hlen > 65536) return dit_set_error(DIT_ERR_INPUT, "%s: unsupported .npy version or header", path), 0;
    char h[65537];
    if (fread(h, 1, hlen, f) != hlen) return dit_set_error(DIT_ERR_INPUT, "%s: truncated .npy header", path), 0;
    h[hlen] = 0;
    int size = 0;
    if (strstr(h, "'descr': '<f4'")) size = 4;
    else if (strstr(h, "'descr': '<f8'")) size = 8;
    else {
        const char *d = strstr(h, "'descr':");
        return dit_set_error(DIT_ERR_INPUT, "%s: dtype must be float32 ('<f4'), got %.16s", path, d ? d + 9 : "none"), 0;
    }
    if (!strstr(h, "'fortran_order': False"))
        return dit_set_error(DIT_ERR_INPUT, "%s: Fortran-order arrays are not supported (save with C order)", path), 0;
    const char *s = strstr(h, "'shape': (");
    if (!s) return dit_set_error(DIT_ERR_INPUT, "%s: .npy header has no shape", path), 0;
    s += 10;
    *ndim = 0;
    *count = 1;
    while (*s && *s != ')') {
        while (*s == ' ' || *s == ',') s++;
        if (*s == ')') break;
        char *e;
        long long v = strtoll(s, &e, 10);
        if (e == s || v < 0 || *ndim >= 8) return dit_set_error(DIT_ERR_INPUT, "%s: bad .npy shape", path), 0;
        shape[(*ndim)++] = v;
        if (v && *count > (UINT64_MAX / 16) / (uint64_t)v) return dit_set_error(DIT_ERR_INPUT, "%s: .npy shape overflows", path), 0;
        *count *= (uint64_t)v;
        s = e;
    }
    return size;
}

static int dit__npy_read(const char *path, int *ndim, int64_t shape[8], void **data, bool as_double) {
    *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return dit_set_error(DIT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    uint64_t count;
    int size = dit__npy_header(path, f, ndim, shape, &count);
    if (!size) { fclose(f); return DIT_ERR_INPUT; }
    long here = ftell(f);
    fseek(f, 0, SEEK_END);
    uint64_t avail = (uint64_t)(ftell(f) - here);
    fseek(f, here, SEEK_SET);
    if (avail != count * (uint64_t)size) {
        fclose(f);
        return dit_set_error(DIT_ERR_INPUT, "%s: .npy data is %llu bytes, the shape needs %llu", path,
                             (unsigned long long)avail, (unsigned long long)(count * (uint64_t)size));
    }
    uint8_t *raw = malloc(count * size + 1), *out = malloc(count * (as_double ? 8 : 4) + 1);
    if (!raw || !out) { free(raw), free(out), fclose(f); return dit_set_error(DIT_ERR_NOMEM, "%s: out of memory", path); }
    if (fread(raw, (size_t)size, (size_t)count, f) != count) {
        free(raw), free(out), fclose(f);
        return dit_set_error(DIT_ERR_IO, "%s: read failed", path);
    }
    fclose(f);
    for (uint64_t i = 0; i < count; i++) {
        double v;
        if (size == 4) { float x; memcpy(&x, raw + 4 * i, 4); v = x; }
        else memcpy(&v, raw + 8 * i, 8);
        if (as_double) ((double *)out)[i] = v;
        else ((float *)out)[i] = (float)v;
    }
    free(raw);
    *data = out;
    return DIT_OK;
}

int dit_npy_read(const char *path, int *ndim, int64_t shape[8], float **data) {
    return dit__npy_read(path, ndim, shape, (void **)data, false);
}
int dit_npy_read_f64(const char *path, int *ndim, int64_t shape[8], double **data) {
    return dit__npy_read(path, ndim, shape, (void **)data, true);
}

int dit_npy_write(const char *path, int ndim, const int64_t *shape, const float *data) {
    char h[256];
    int n = snprintf(h, sizeof h, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    uint64_t count = 1;
    for (int i = 0; i < ndim; i++) {
        n += snprintf(h + n, sizeof h - (size_t)n, "%lld%s", (long long)shape[i], ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
        count *= (uint64_t)shape[i];
    }
    n += snprintf(h + n, sizeof h - (size_t)n, "), }");
    int total = ((10 + n + 1 + 63) / 64) * 64;   /* header padded with spaces to 64, ends in '\n' */
    while (10 + n + 1 < total) h[n++] = ' ';
    h[n++] = '\n';
    dit_atomic_file a;
    int rc = dit_atomic_open(&a, path);
    if (rc) return rc;
    uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(n & 0xff), (uint8_t)(n >> 8)};
    fwrite(pre, 1, 10, a.f);
    fwrite(h, 1, (size_t)n, a.f);
    fwrite(data, sizeof(float), (size_t)count, a.f);
    return dit_atomic_commit(&a);
}

/* .npz as ADM's evaluation suite reads it (what the official sample_ddp.py writes): one member arr_0.npy,
   stored (not deflated), uint8 (N, H, W, C). Written as the images arrive; ZIP64 sizes and offsets throughout
   (50,000 images at 256 px are 9.8 GB); the CRC-32 of the member goes into its local header at the end
   (the file is a temporary until then). Little-endian fields, PKWARE APPNOTE 4.3.7 and 4.5.3. */
static void put_le(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void image_u8(const float *img, int C, int64_t HW, unsigned char *px);   /* the PNG writer's (below) */
#define NPZ_NAME "arr_0.npy"
#define NPZ_LOCAL (30 + 9 + 20)   /* local header, name, zip64 extra (sizes) */

int dit_npz_open(dit_npz *z, const char *path, int n, int C, int H, int W)
{
    memset(z, 0, sizeof *z);
    if (n < 1 || (C != 1 && C != 3) || H < 1 || W < 1)
        return dit_set_error(DIT_ERR_INPUT, "dit_npz_open: bad shape (%d, %d, %d, %d)", n, H, W, C);
    char h[128];
    int k = snprintf(h, sizeof h, "{'descr': '|u1', 'fortran_order': False, 'shape': (%d, %d, %d, %d), }", n, H, W, C);
    const int total = (10 + k + 1 + 63) / 64 * 64;   /* .npy header padded to 64 bytes, ending in '\n' */
    while (10 + k + 1 < total) h[k++] = ' ';
    h[k++] = '\n';
    int rc = dit_atomic_open(&z->a, path);
    if (rc) return rc;
    z->n = n; z->C = C; z->H = H; z->W = W;
    z->size = 10 + (uint64_t)k + (uint64_t)n * H * W * C;
    unsigned char lh[NPZ_LOCAL] = { 0 };
    put_le(lh, 0x04034b50, 4);
    put_le(lh + 4, 45, 2);               /* version needed: 4.5 (ZIP64) */
    put_le(lh + 12, 33, 2);              /* DOS date 1980-01-01 */
    put_le(lh + 18, 0xffffffffu, 4);     /* sizes: in the zip64 extra field */
    put_le(lh + 22, 0xffffffffu, 4);
    put_le(lh + 26, 9, 2);
    put_le(lh + 28, 20, 2);
    memcpy(lh + 30, NPZ_NAME, 9);
    put_le(lh + 39, 0x0001, 2);
    put_le(lh + 41, 16, 2);
    put_le(lh + 43, z->size, 8);
    put_le(lh + 51, z->size, 8);
    const unsigned char pre[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(k & 0xff), (unsigned char)(k >> 8) };
    fwrite(lh, 1, sizeof lh, z->a.f);
    fwrite(pre, 1, 10, z->a.f);
    fwrite(h, 1, (size_t)k, z->a.f);
    z->crc = crc32(crc32(0L, Z_NULL, 0), pre, 10);
    z->crc = crc32(z->crc, (const Bytef *)h, (uInt)k);
    if (!(z->px = malloc((size_t)H * W * C))) {
        dit_atomic_abort(&z->a);
        return dit_set_error(DIT_ERR_NOMEM, "out of memory");
    }
    return DIT_OK;
}

int dit_npz_add(dit_npz *z, const float *img)
{
    if (!z->a.f || z->done == z->n) return dit_set_error(DIT_ERR_INPUT, "dit_npz_add: file not open or full");
    const int64_t HW = (int64_t)z->H * z->W;
    image_u8(img, z->C, HW, z->px);   /* as the PNGs */
    fwrite(z->px, 1, (size_t)(HW * z->C), z->a.f);
    z->crc = crc32(z->crc, z->px, (uInt)(HW * z->C));
    z->done++;
    return DIT_OK;
}

int dit_npz_close(dit_npz *z)
{
    if (!z->a.f) return dit_set_error(DIT_ERR_INPUT, "dit_npz_close: file not open");
    if (z->done != z->n) {
        int code = dit_set_error(DIT_ERR_INPUT, "%s: %lld of %lld images written", z->a.path, (long long)z->done,
                                 (long long)z->n);
        dit_npz_abort(z);
        return code;
    }
    const uint64_t cd = NPZ_LOCAL + z->size;   /* central directory offset */
    unsigned char c[46 + 9 + 28] = { 0 }, e[56 + 20 + 22] = { 0 };
    put_le(c, 0x02014b50, 4);
    put_le(c + 4, 45, 2);
    put_le(c + 6, 45, 2);
    put_le(c + 14, 33, 2);
    put_le(c + 16, z->crc, 4);
    put_le(c + 20, 0xffffffffu, 4);
    put_le(c + 24, 0xffffffffu, 4);
    put_le(c + 28, 9, 2);
    put_le(c + 30, 28, 2);
    put_le(c + 42, 0xffffffffu, 4);   /* local header offset: in the zip64 extra field */
    memcpy(c + 46, NPZ_NAME, 9);
    put_le(c + 55, 0x0001, 2);
    put_le(c + 57, 24, 2);
    put_le(c + 59, z->size, 8);
    put_le(c + 67, z->size, 8);
    put_le(c + 75, 0, 8);
    put_le(e, 0x06064b50, 4);          /* zip64 end of central directory record */
    put_le(e + 4, 44, 8);
    put_le(e + 12, 45, 2);
    put_le(e + 14, 45, 2);
    put_le(e + 24, 1, 8);              /* entries on this disk, entries */
    put_le(e + 32, 1, 8);
    put_le(e + 40, sizeof c, 8);       /* central directory size, offset */
    put_le(e + 48, cd, 8);
    put_le(e + 56, 0x07064b50, 4);     /* its locator */
    put_le(e + 64, cd + sizeof c, 8);
    put_le(e + 72, 1, 4);
    put_le(e + 76, 0x06054b50, 4);     /* end of central directory */
    put_le(e + 84, 1, 2);
    put_le(e + 86, 1, 2);
    put_le(e + 88, sizeof c, 4);
    put_le(e + 92, 0xffffffffu, 4);
    fwrite(c, 1, sizeof c, z->a.f);
    fwrite(e, 1, sizeof e, z->a.f);
    unsigned char crc[4];
    put_le(crc, z->crc, 4);
    if (fseek(z->a.f, 14, SEEK_SET) != 0) {
        int code = dit_set_error(DIT_ERR_IO, "%s: cannot seek: %s", z->a.path, strerror(errno));
        dit_npz_abort(z);
        return code;
    }
    fwrite(crc, 1, 4, z->a.f);
    free(z->px);
    z->px = NULL;
    return dit_atomic_commit(&z->a);
}

void dit_npz_abort(dit_npz *z)
{
    dit_atomic_abort(&z->a);
    free(z->px);
    memset(z, 0, sizeof *z);
}

/* ==== Runtime =============================================================================
   model loading, the CPU fp32 reference (DiT forward, SD VAE decoder),
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
    dit_dequantize_row(t->type, (const uint8_t *)t->data + dit_row_bytes(t->type, e0), dst, n);
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

/* y[e] += a[0] r[e] + a[1] r[rs + e] + ... for n <= 4 rows r, added in that order (the attention's two
   inner loops: scores over kt rows, outputs over v rows; one load/store of y per n FMAs) */
static inline void madd_rows(float *restrict y, const float *r, int64_t rs, const float *a, int n, int len)
{
    if (n == 4) {
        const float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
        const float *r0 = r, *r1 = r + rs, *r2 = r1 + rs, *r3 = r2 + rs;
        for (int e = 0; e < len; e++) {
            float acc = y[e];
            acc += a0 * r0[e];
            acc += a1 * r1[e];
            acc += a2 * r2[e];
            acc += a3 * r3[e];
            y[e] = acc;
        }
        return;
    }
    for (int k = 0; k < n; k++)
        for (int e = 0; e < len; e++) y[e] += a[k] * r[k * rs + e];
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
                for (int d = 0; d < hd; d += 4) {   /* 4 d at a time: one load/store of p per 4 FMAs */
                    const int nd = hd - d < 4 ? hd - d : 4;
                    for (int i = 0; i < nq; i++)
                        madd_rows(p + (int64_t)i * T, kt + (int64_t)d * T, T, qb + (int64_t)(i0 + i) * ld + d, nd, T);
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
                for (int j = 0; j < T; j += 4) {   /* 4 j at a time */
                    const int nj = T - j < 4 ? T - j : 4;
                    for (int i = 0; i < nq; i++)
                        madd_rows(out + b * bso + (int64_t)(i0 + i) * ldo + h * hd, vb + (int64_t)j * ld, ld,
                                  p + (int64_t)i * T + j, nj, hd);
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
    if (!strncmp(spacing, "linspace", 8)) {
        /* diffusers' timestep_spacing "linspace": np.linspace(0, 999, N + 1).round()[::-1][:-1] (half to even) */
        char *end;
        errno = 0;
        long want = strtol(spacing + 8, &end, 10);
        if (end == spacing + 8 || *end || errno || want < 1 || want > 999)
            return dit_set_error(DIT_ERR_INPUT, "bad spacing '%s' (want linspaceN, N = 1..999)", spacing);
        const double step = (double)(num - 1) / (double)want;
        for (long i = 1; i <= want; i++) keep[i == want ? num - 1 : (int)nearbyint((double)i * step)] = 1;
        return DIT_OK;   /* distinct: the step is >= 1 for N <= 999 */
    }
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
            return dit_set_error(DIT_ERR_INPUT, "bad spacing '%s' (want N, N,M,..., ddimN or linspaceN)", spacing);
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

/* DPM-Solver++(2M) (Lu et al. 2022, data prediction, multistep, "midpoint" form), float64:
   alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma); from s = abar_k to t = abar_prev_k,
   h = lambda_t - lambda_s, phi = alpha_t (1 - exp(-h));  x_t = (sigma_t / sigma_s) x + phi D with D = x0 at the
   first step, else D = x0 + (x0 - x0_prev) / (2r), r = h_prev / h (h_prev: the step before, from abar_{k+1}). */
static double dpm_lambda(double abar) { return 0.5 * log(abar / (1.0 - abar)); }

void dit_dpmpp2m_coefs(const dit_schedule *s, int k, double *A, double *B0, double *B1)
{
    const double ab = s->alphas_cumprod[k], abp = s->alphas_cumprod_prev[k];
    *A = 0.0, *B0 = 1.0, *B1 = 0.0;
    if (abp >= 1.0) return;   /* k = 0: sigma_t = 0, lambda_t = inf: x_t = x0 */
    const double h = dpm_lambda(abp) - dpm_lambda(ab), phi = -sqrt(abp) * expm1(-h);
    *A = sqrt((1.0 - abp) / (1.0 - ab));
    *B0 = phi;
    if (k == s->K - 1) return;   /* first step: first order */
    const double half_inv_r = 0.5 * h / (dpm_lambda(ab) - dpm_lambda(s->alphas_cumprod[k + 1]));
    *B0 = phi * (1.0 + half_inv_r);
    *B1 = -phi * half_inv_r;
}

const char *dit_sampler_name(int sampler)
{
    return sampler == DIT_SAMPLER_DDIM ? "ddim" : sampler == DIT_SAMPLER_DPMPP_2M ? "dpm++2m" : "ddpm";
}

int dit_sampler_from_name(const char *name)
{
    for (int k = DIT_SAMPLER_DDPM; k <= DIT_SAMPLER_DPMPP_2M; k++)
        if (name && !strcasecmp(name, dit_sampler_name(k))) return k;
    return -1;
}

void dit_sampler_spacing(int sampler, int steps, char *buf, size_t size)
{
    const char *prefix = sampler == DIT_SAMPLER_DDIM ? "ddim" : sampler == DIT_SAMPLER_DPMPP_2M ? "linspace" : "";
    if (sampler == DIT_SAMPLER_DPMPP_2M && steps >= 1000) prefix = "";   /* linspace1000 repeats timesteps: all 1000 */
    snprintf(buf, size, "%s%d", prefix, steps);
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
   An absent tensor is an error. */
static int bind(dit_model *m, dit_tensor *t, const char *name, int nd, const int64_t *dims)
{
    const dit_gguf_tensor *gt = dit_gguf_find_tensor(m->file, name);
    memset(t, 0, sizeof *t);
    if (!gt) return dit_set_error(DIT_ERR_INPUT, "%s: missing tensor %s", dit_gguf_path(m->file), name);
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
        (rc = kv_int(g, "dit.learn_sigma", 0, 1, &c->learn_sigma)))
        return rc;
    /* the defaults below are computed from these two: range-check them first (no int overflow) */
    if (c->hidden < 1 || c->hidden > 65536) return dit_set_error(DIT_ERR_INPUT, "%s: bad value of dit.hidden_size", path);
    if (c->in_channels < 1 || c->in_channels > 64) return dit_set_error(DIT_ERR_INPUT, "%s: bad value of dit.in_channels", path);
    if ((rc = kv_int(g, "dit.out_channels", 0, c->in_channels * (c->learn_sigma ? 2 : 1), &c->out_channels)) ||
        (rc = kv_int(g, "dit.num_classes", 1, 0, &c->num_classes)) ||
        (rc = kv_int(g, "dit.mlp_hidden", 0, 4 * c->hidden, &c->mlp_hidden)) ||
        (rc = kv_int(g, "dit.cfg_channels", 0, c->in_channels == 4 ? 3 : c->in_channels, &c->cfg_channels)))
        return rc;
    const char *bad = NULL;
    if (c->depth < 1 || c->depth > 1024) bad = "dit.depth";   /* hidden_size and in_channels: checked above */
    else if (c->heads < 1 || c->hidden % c->heads) bad = "dit.num_heads (must divide dit.hidden_size)";
    else if (c->patch < 1 || c->input_size < 1 || c->input_size > 4096 || c->input_size % c->patch)
        bad = "dit.input_size / dit.patch_size (the patch must divide the input)";
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
                         const float *mo, int n, const float *noise, float *x0_prev)
{
    const int C = m->cfg.in_channels, OC = m->cfg.out_channels;
    const size_t plane = (size_t)m->cfg.input_size * m->cfg.input_size, CLL = C * plane;
    const float *eps = mo + (size_t)n * OC * plane, *v = eps + CLL;   /* (C, L, L) each; v only with learn_sigma */
    float *xn = x + (size_t)n * CLL;
    const float sr = (float)s->sqrt_recip_alphas_cumprod[k], srm1 = (float)s->sqrt_recipm1_alphas_cumprod[k];
    const int clip = p->clip_denoised;
    if (p->sampler == DIT_SAMPLER_DPMPP_2M) {
        /* x0 as DDPM (the learned variance is not used); x = A x + B0 x0 + B1 x0_prev (dit_dpmpp2m_coefs) */
        double A, B0, B1;
        dit_dpmpp2m_coefs(s, k, &A, &B0, &B1);
        const float a = (float)A, b0 = (float)B0, b1 = (float)B1;
        float *prev = x0_prev + (size_t)n * CLL;   /* (C, L, L); not read at the first step (b1 = 0) */
        for (size_t e = 0; e < CLL; e++) {
            float x0 = sr * xn[e] - srm1 * eps[e];
            if (clip) x0 = x0 < -1.0f ? -1.0f : x0 > 1.0f ? 1.0f : x0;
            const float xv = a * xn[e] + b0 * x0;
            xn[e] = b1 != 0.0f ? xv + b1 * prev[e] : xv;
            prev[e] = x0;
        }
        return;
    }
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
    const int learned = m->cfg.learn_sigma;
    for (size_t e = 0; e < CLL; e++) {
        float x0 = sr * xn[e] - srm1 * eps[e];
        if (clip) x0 = x0 < -1.0f ? -1.0f : x0 > 1.0f ? 1.0f : x0;
        const float mean = c1 * x0 + c2 * xn[e];
        float lv = max_log;   /* FIXED_LARGE at k != 0 (the only k that draws noise): log(beta_k) */
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
    float *x0_prev = p->sampler == DIT_SAMPLER_DPMPP_2M ? malloc(N * CLL * sizeof(float)) : NULL;   /* (N, C, L, L) */
    if (!mo || !tt || !yy || !noise || (p->sampler == DIT_SAMPLER_DPMPP_2M && !x0_prev)) {
        rc = dit_set_error(DIT_ERR_NOMEM, "out of memory (sampler, %d images)", N);
        goto done;
    }
    /* x_T: init_noise, else Philox step 0 of image n */
    for (int n = 0; n < N; n++) {
        if (p->init_noise) memcpy(x + n * CLL, p->init_noise + n * CLL, CLL * sizeof(float));
        else dit_randn(p->seed, p->first_image + (uint32_t)n, 0, x + n * CLL, CLL);
        yy[n] = p->labels[n];
        yy[N + n] = cf->num_classes;
    }
    for (int i = 0; i < K; i++) {
        const int k = K - 1 - i;   /* respaced index; the model sees timestep_map[k] (§3.4) */
        for (int b = 0; b < 2 * N; b++) tt[b] = (float)s->timestep_map[k];
        /* CFG model call as sample.py: forward_with_cfg on [x; x] (it reads x[:N] only); or, without the CFG
           batch, the conditional model on x (sample_ddp.py at cfg_scale 1): rows n < N hold eps either way */
        rc = p->no_cfg ? dit_forward(m, x, tt, yy, N, mo, p->threads)
                       : dit_forward_with_cfg(m, x, tt, yy, 2 * N, p->cfg_scale, mo, p->threads);
        if (rc) goto done;
        const int need_noise =
            k != 0 && (p->sampler == DIT_SAMPLER_DDPM || (p->sampler == DIT_SAMPLER_DDIM && p->eta != 0.0f));
        for (int n = 0; n < N; n++) {
            const float *nz = noise;
            if (need_noise) {
                if (p->step_noise) nz = p->step_noise + ((size_t)i * N + n) * CLL;
                else dit_randn(p->seed, p->first_image + (uint32_t)n, (uint32_t)(i + 1), noise, CLL);
            }
            sampler_step(m, p, s, k, x, mo, n, nz, x0_prev);
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
    free(x0_prev);
    return rc;
}

int dit_sample(dit_model *m, const dit_sample_params *p, float *out)
{
    if (!m || !p || !out) return dit_set_error(DIT_ERR_INPUT, "dit_sample: NULL argument");
    if (p->n < 1 || !p->labels) return dit_set_error(DIT_ERR_INPUT, "dit_sample: need n >= 1 images and their labels");
    for (int i = 0; i < p->n; i++)
        if (p->labels[i] < 0 || p->labels[i] > m->cfg.num_classes)
            return dit_set_error(DIT_ERR_INPUT, "label %d out of range [0, %d]", p->labels[i], m->cfg.num_classes);
    if (p->sampler < DIT_SAMPLER_DDPM || p->sampler > DIT_SAMPLER_DPMPP_2M)
        return dit_set_error(DIT_ERR_INPUT, "unknown sampler %d", p->sampler);
    if (!isfinite(p->cfg_scale) || !isfinite(p->eta) || p->eta < 0.0f)
        return dit_set_error(DIT_ERR_INPUT, "bad cfg scale or eta");
    if (p->no_cfg && p->cfg_scale != 1.0f)
        return dit_set_error(DIT_ERR_INPUT, "no_cfg samples without guidance: cfg scale must be 1 (got %g)",
                             p->cfg_scale);
    const size_t CLL = dit_latent_floats(m);
    if (p->init_noise && !all_finite(p->init_noise, (size_t)p->n * CLL))
        return dit_set_error(DIT_ERR_INPUT, "dit_sample: init_noise holds NaN or Inf");
    char spacing[32];
    if (!p->spacing) {
        if (p->steps < 1 || p->steps > 1000) return dit_set_error(DIT_ERR_INPUT, "steps must be 1..1000 (got %d)", p->steps);
        dit_sampler_spacing(p->sampler, p->steps, spacing, sizeof spacing);
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
/* zlib's deflate (level 6, its default) for the PNG data instead of stb's own: a 256 px RGB image in 6.8
   instead of 12.5 ms, and 28 % smaller (measured on a noisy test image) */
#ifndef DIT_PNG_ZLIB_LEVEL
#define DIT_PNG_ZLIB_LEVEL 6
#endif
static unsigned char *png_zlib_compress(unsigned char *data, int len, int *out_len, int quality)
{
    (void)quality;
    uLongf n = compressBound((uLong)len);
    unsigned char *out = malloc(n);
    if (!out || compress2(out, &n, data, (uLong)len, DIT_PNG_ZLIB_LEVEL) != Z_OK) {
        free(out);
        return NULL;   /* stb then fails the write: dit_png_write reports it */
    }
    *out_len = (int)n;
    return out;
}
#define STBIW_ZLIB_COMPRESS png_zlib_compress
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

/* CHW float image in [-1, 1] -> HWC bytes (PNG and .npz pixels) */
static void image_u8(const float *img, int C, int64_t HW, unsigned char *px)
{
    for (int c = 0; c < C; c++)
        for (int64_t i = 0; i < HW; i++) px[i * C + c] = pixel_u8(img[c * HW + i]);
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
    image_u8(img, C, (int64_t)H * W, px);
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
