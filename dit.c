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
    case DIT_TYPE_F16:
        for (int64_t i = 0; i < n; i++) { uint16_t h = dit_fp32_to_fp16(x[i]); memcpy(y + 2 * i, &h, 2); }
        break;
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
    case DIT_TYPE_F16: for (int64_t i = 0; i < n; i++) y[i] = dit__load_f16(x + 2 * i); break;
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
        if (memchr(name, 0, len)) return dit__gguf_fail(g, DIT_ERR_INPUT, "tensor %lld: name contains a NUL byte", (long long)i);
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
        int blck = dit__types[t->type].blck;
        if (t->ne[0] % blck)
            return dit__gguf_fail(g, DIT_ERR_INPUT, "tensor '%s': row length %lld is not a multiple of the %s block size %d",
                                  t->name, (long long)t->ne[0], dit__types[t->type].name, blck);
        /* bytes = ne0/blck * bytes * ne1 * ne2 * ne3, every product checked */
        uint64_t nbytes = (uint64_t)(t->ne[0] / blck) * (uint64_t)dit__types[t->type].bytes;
        if (t->ne[0] / blck && nbytes / (uint64_t)(t->ne[0] / blck) != (uint64_t)dit__types[t->type].bytes) nbytes = UINT64_MAX;
        for (int d = 1; d < 4; d++)
            if (t->ne[d] && nbytes > UINT64_MAX / (uint64_t)t->ne[d]) nbytes = UINT64_MAX;
            else nbytes *= (uint64_t)t->ne[d];
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
    uint64_t nel = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 0 || (ne[d] && nel > (UINT64_MAX >> 8) / (uint64_t)ne[d]))
            return dit_set_error(DIT_ERR_INPUT, "tensor '%s': bad dimension %lld", name, (long long)ne[d]), -1;
        t.ne[d] = ne[d], nel *= (uint64_t)ne[d];
    }
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
    bool has_align = false;
    for (int64_t i = 0; i < w->n_kv; i++) has_align |= strcmp(w->kv[i].key, "general.alignment") == 0;
    if (!has_align) dit_gguf_set_u32(w, "general.alignment", DIT_GGUF_ALIGNMENT);
    for (int64_t i = 0; i < w->n_kv; i++)   /* we always pad to 32; a different alignment key would lie */
        if (strcmp(w->kv[i].key, "general.alignment") == 0) { uint32_t a = DIT_GGUF_ALIGNMENT; memcpy(w->kv[i].val + 4, &a, 4); }
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
