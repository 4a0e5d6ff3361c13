/* dit-quantize: convert the tensors of a DiT GGUF to f32, f16, bf16, q8_0, q5_0 or q4_0.

     dit-quantize IN.gguf OUT.gguf TYPE [--tensor-type REGEX=TYPE ...] [--keep-f32 | --pure] [-t N] [-v]

   Which tensor gets which type (first rule that applies):
     1. --tensor-type REGEX=TYPE: POSIX extended regex searched in the tensor name; the first matching
        rule wins. TYPE may also be "copy" (keep the input tensor as it is).
     2. --pure: every tensor with 2 or more dims takes TYPE; 1-D tensors are f32.
     3. default (mixed precision): the 2-D weights of the DiT blocks (blocks.N.attn.qkv, attn.proj,
        mlp.fc1, mlp.fc2, adaLN_modulation.1 .weight) take TYPE. Everything else (biases, norms,
        pos_embed, x/t/y embedders, final_layer, vae.*) is f32 for the block types q8_0/q5_0/q4_0.
        For f16/bf16 targets, the other tensors with 2+ dims take TYPE too, except pos_embed;
        1-D tensors and pos_embed stay f32 (small, and exact). --keep-f32 keeps every non-block tensor
        f32 for f16/bf16 targets as well (for q-types it changes nothing).
     A tensor whose row length ne[0] is not a multiple of the chosen type's block size keeps its
     float type (f32/f16/bf16 as in the input) and the log says so.
   Input tensors may be f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1: they are dequantized to f32 and
   converted; a tensor that keeps its type is copied byte for byte. Requantizing a quantized tensor to
   another lossy type prints a warning.

   The input is mmapped and processed one tensor at a time (OpenMP over row chunks); the output goes
   through the streaming GGUF writer (temporary file + rename), so memory stays near the largest
   output tensor and a failure leaves no partial OUT. KVs are copied; general.file_type (llama_ftype)
   and general.quantization_version = 2 (only when a tensor is block-quantized) are set. */
#include "dit.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TYPE_COPY (-2)   /* rule type "copy": keep the input type and bytes */
#define MAX_RULES 64

typedef struct { regex_t re; char *text; int type; } rule;

typedef struct {
    const char *in, *out;
    int type;            /* target */
    int pure, keep_f32, verbose, threads;
    rule rules[MAX_RULES];
    int n_rules;
} options;

typedef struct { double se, sx, maxe; int64_t nonfinite; } stats;

static volatile sig_atomic_t interrupted;   /* the signal number */
static void on_signal(int sig) { interrupted = sig; }

static void usage(FILE *f) {
    fprintf(f,
        "usage: dit-quantize IN.gguf OUT.gguf TYPE [options]\n"
        "  TYPE: f32, f16, bf16, q8_0, q5_0, q4_0 (any case, e.g. Q8_0; or the llama ftype number 0 1 32 7 8 2)\n"
        "Options:\n"
        "  --tensor-type REGEX=TYPE  tensors whose name matches REGEX (POSIX extended, searched) take TYPE;\n"
        "                            TYPE may be \"copy\" (keep as is); first matching rule wins; repeatable\n"
        "  --pure                    every tensor with 2+ dims takes TYPE (1-D stay f32)\n"
        "  --keep-f32                only the DiT block weights take TYPE; everything else is f32\n"
        "  -t, --threads N           threads (default: all cores)\n"
        "  -v, --verbose             say why each tensor got its type\n"
        "  -h, --help                this text\n"
        "Default (mixed precision): blocks.N.{attn.qkv,attn.proj,mlp.fc1,mlp.fc2,adaLN_modulation.1}.weight take\n"
        "TYPE; biases, pos_embed, embedders, final_layer and vae.* stay f32 (for f16/bf16: their 2-D+ weights\n"
        "take TYPE, 1-D tensors and pos_embed stay f32). Rows not divisible by the block size keep a float type.\n"
        "Example: dit-quantize DiT-XL-2-256.gguf DiT-XL-2-256-q8_0.gguf q8_0 --tensor-type 'vae\\.=f16'\n");
}

static int fail_code(int code) { return code == DIT_ERR_INPUT || code == DIT_ERR_UNSUPPORTED ? 2 : 1; }

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dit-quantize: error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(code);
}

/* Reports the library's error, drops the writer (which removes its temporary file) and exits. */
static void fail_writer(dit_gguf_writer *w) __attribute__((noreturn));
static void fail_writer(dit_gguf_writer *w) {
    char msg[1024];
    const int code = dit_last_error_code();
    snprintf(msg, sizeof msg, "%s", dit_last_error());
    dit_gguf_writer_free(w);
    die(fail_code(code), "%s", msg);
}

/* ---------------------------------------------------------------- types */
static int is_block_type(int t) { return dit_type_block_size(t) > 1; }
static int is_float_type(int t) { return t == DIT_TYPE_F32 || t == DIT_TYPE_F16 || t == DIT_TYPE_BF16; }
static int is_target_type(int t) {
    return is_float_type(t) || t == DIT_TYPE_Q8_0 || t == DIT_TYPE_Q5_0 || t == DIT_TYPE_Q4_0;
}

/* "q8_0", "Q8_0", or a llama_ftype number (gguf.md general.file_type) */
static int parse_type(const char *s) {
    static const struct { int ftype, type; } ft[] = {
        {0, DIT_TYPE_F32}, {1, DIT_TYPE_F16}, {2, DIT_TYPE_Q4_0}, {7, DIT_TYPE_Q8_0}, {8, DIT_TYPE_Q5_0}, {32, DIT_TYPE_BF16}};
    char *end;
    long v = strtol(s, &end, 10);
    if (*s && !*end) {
        for (size_t i = 0; i < sizeof ft / sizeof ft[0]; i++)
            if (ft[i].ftype == v) return ft[i].type;
        return -1;
    }
    const int t = dit_type_from_name(s);
    return is_target_type(t) ? t : -1;
}

static uint32_t llama_ftype(int t) {
    switch (t) {
    case DIT_TYPE_F32: return 0;
    case DIT_TYPE_F16: return 1;
    case DIT_TYPE_Q4_0: return 2;
    case DIT_TYPE_Q8_0: return 7;
    case DIT_TYPE_Q5_0: return 8;
    default: return 32;   /* bf16 */
    }
}

/* ---------------------------------------------------------------- type choice */
static regex_t block_weight_re;   /* the five 2-D weights of a DiT block */

/* Returns the output type of tensor t and a short reason (for -v and the log). */
static int choose_type(const options *o, const dit_gguf_tensor *t, char *why, size_t nwhy) {
    int want = -1;
    for (int i = 0; i < o->n_rules && want == -1; i++)
        if (regexec(&o->rules[i].re, t->name, 0, NULL, 0) == 0) {
            want = o->rules[i].type == TYPE_COPY ? t->type : o->rules[i].type;
            snprintf(why, nwhy, "rule '%s'", o->rules[i].text);
        }
    if (want == -1) {
        const int is_block = t->n_dims >= 2 && regexec(&block_weight_re, t->name, 0, NULL, 0) == 0;
        if (o->type == DIT_TYPE_F32) {
            want = DIT_TYPE_F32, snprintf(why, nwhy, "target f32");
        } else if (o->pure) {
            want = t->n_dims >= 2 ? o->type : DIT_TYPE_F32;
            snprintf(why, nwhy, t->n_dims >= 2 ? "--pure" : "--pure: 1-D stays f32");
        } else if (is_block) {
            want = o->type, snprintf(why, nwhy, "block weight");
        } else if (!is_block_type(o->type) && !o->keep_f32 && t->n_dims >= 2 && strcmp(t->name, "pos_embed") != 0) {
            want = o->type, snprintf(why, nwhy, "2-D+ weight, %s target", dit_type_name(o->type));
        } else {
            want = DIT_TYPE_F32;
            snprintf(why, nwhy, o->keep_f32 ? "--keep-f32: not a block weight" :
                     t->n_dims < 2 ? "1-D: kept f32" : !strcmp(t->name, "pos_embed") ? "pos_embed: kept f32" :
                     "not a block weight: kept f32");
        }
    }
    const int bs = dit_type_block_size(want);
    if (bs > 1 && t->ne[0] % bs) {
        const int keep = is_float_type(t->type) ? t->type : DIT_TYPE_F32;
        snprintf(why, nwhy, "ne0 = %lld is not a multiple of %d for %s: kept %s", (long long)t->ne[0], bs,
                 dit_type_name(want), dit_type_name(keep));
        want = keep;
    }
    return want;
}

/* ---------------------------------------------------------------- conversion */
static int64_t n_elements(const dit_gguf_tensor *t) { return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; }

/* Converts tensor t to otype into out (t's rows, contiguous) and measures the error of the stored
   values against the f32 values of the input. Returns 0, or -1 when out of memory. */
static int convert_tensor(const dit_gguf_tensor *t, int otype, uint8_t *out, stats *st) {
    const int64_t ne0 = t->ne[0], n = n_elements(t);
    memset(st, 0, sizeof *st);
    if (n == 0) return 0;
    const int64_t nrows = n / ne0;
    const size_t ib = dit_row_bytes(t->type, ne0), ob = dit_row_bytes(otype, ne0);
    const int64_t rows_per_chunk = ne0 >= 65536 ? 1 : 65536 / ne0;
    const int64_t nchunks = (nrows + rows_per_chunk - 1) / rows_per_chunk;
    const uint8_t *in = t->data;
    const int copy = otype == t->type;
    double se = 0, sx = 0, maxe = 0;
    int64_t nonfinite = 0;
    int oom = 0;
#pragma omp parallel reduction(+ : se, sx, nonfinite) reduction(max : maxe) if (nchunks > 1)
    {
        float *x = malloc((size_t)(rows_per_chunk * ne0) * sizeof(float));
        float *y = copy ? x : malloc((size_t)(rows_per_chunk * ne0) * sizeof(float));
        if (!x || !y) {
#pragma omp atomic write
            oom = 1;
        }
#pragma omp for schedule(dynamic)
        for (int64_t c = 0; c < nchunks; c++) {
            if (!x || !y) continue;
            const int64_t r0 = c * rows_per_chunk, nr = nrows - r0 < rows_per_chunk ? nrows - r0 : rows_per_chunk;
            const int64_t m = nr * ne0;
            dit_dequantize_row(t->type, in + r0 * ib, x, m);
            if (copy) {
                memcpy(out + r0 * ob, in + r0 * ib, (size_t)nr * ib);
            } else {
                dit_quantize_row(otype, x, out + r0 * ob, m);
                dit_dequantize_row(otype, out + r0 * ob, y, m);
            }
            for (int64_t i = 0; i < m; i++) {
                if (!isfinite(x[i])) { nonfinite++; continue; }
                const double e = (double)y[i] - x[i];
                se += e * e, sx += (double)x[i] * x[i];
                if (fabs(e) > maxe || e != e) maxe = e != e ? INFINITY : fabs(e);
            }
        }
        if (y != x) free(y);
        free(x);
    }
    st->se = se, st->sx = sx, st->maxe = maxe, st->nonfinite = nonfinite;
    return oom ? -1 : 0;
}

/* Drops the input pages of a processed tensor from our resident set (the mapping is read-only and
   private, so the pages are simply re-read if touched again). MADV_WILLNEED on the next tensor was
   tried: it raised the peak RSS from 45 to 215 MB on DiT-XL and saved no time. */
static void advise(const void *p, size_t n, int advice) {
    if (!p || !n) return;
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t a = (uintptr_t)p & ~(pg - 1), b = ((uintptr_t)p + n + pg - 1) & ~(pg - 1);
    madvise((void *)a, b - a, advice);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fmt_sqnr(char *buf, size_t n, double sx, double se) {
    if (se == 0) snprintf(buf, n, "inf");
    else if (sx == 0) snprintf(buf, n, "-inf");
    else snprintf(buf, n, "%.1f", 10 * log10(sx / se));
}

static void fmt_dims(char *buf, size_t n, const dit_gguf_tensor *t) {
    int k = snprintf(buf, n, "[");
    for (int d = 0; d < t->n_dims; d++)
        k += snprintf(buf + k, n - (size_t)k, "%s%lld", d ? ", " : "", (long long)t->ne[d]);
    snprintf(buf + k, n - (size_t)k, "]");
}

/* ---------------------------------------------------------------- arguments */
static void parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->type = -1;
    const char *pos[3];
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); exit(0); }
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) o->verbose = 1;
        else if (!strcmp(a, "--pure")) o->pure = 1;
        else if (!strcmp(a, "--keep-f32")) o->keep_f32 = 1;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            char *end;
            if (i + 1 >= argc) die(2, "%s needs a number", a);
            const long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 4096) die(2, "%s %s: expected a thread count 1..4096", a, argv[i]);
            o->threads = (int)v;
        } else if (!strcmp(a, "--tensor-type") || !strncmp(a, "--tensor-type=", 14)) {
            const char *spec = a[13] == '=' ? a + 14 : (i + 1 < argc ? argv[++i] : NULL);
            if (!spec) die(2, "--tensor-type needs REGEX=TYPE");
            const char *eq = strrchr(spec, '=');   /* type names have no '=', the regex may */
            if (!eq || eq == spec) die(2, "--tensor-type %s: expected REGEX=TYPE", spec);
            if (o->n_rules == MAX_RULES) die(2, "--tensor-type: at most %d rules", MAX_RULES);
            rule *r = &o->rules[o->n_rules];
            r->type = !strcasecmp(eq + 1, "copy") ? TYPE_COPY : parse_type(eq + 1);
            if (r->type == -1)
                die(2, "--tensor-type %s: unknown type '%s' (f32, f16, bf16, q8_0, q5_0, q4_0, copy)", spec, eq + 1);
            r->text = strndup(spec, (size_t)(eq - spec));
            const int rc = regcomp(&r->re, r->text, REG_EXTENDED | REG_NOSUB);
            if (rc) {
                char msg[256];
                regerror(rc, &r->re, msg, sizeof msg);
                die(2, "--tensor-type %s: bad regular expression: %s", spec, msg);
            }
            o->n_rules++;
        } else if (a[0] == '-' && a[1]) {
            die(2, "unknown option '%s' (see --help)", a);
        } else {
            if (npos == 3) die(2, "too many arguments ('%s'); usage: dit-quantize IN.gguf OUT.gguf TYPE", a);
            pos[npos++] = a;
        }
    }
    if (npos < 3) die(2, "expected IN.gguf OUT.gguf TYPE (see --help)");
    o->in = pos[0], o->out = pos[1];
    o->type = parse_type(pos[2]);
    if (o->type < 0) die(2, "%s: unknown type (f32, f16, bf16, q8_0, q5_0, q4_0)", pos[2]);
    if (o->pure && o->keep_f32) die(2, "--pure and --keep-f32 contradict each other");
}

/* IN and OUT must differ: same string, same resolved path, or same inode (hard link, symlink). */
static void refuse_same_file(const char *in, const char *out) {
    struct stat si, so;
    int same = strcmp(in, out) == 0;
    if (!same && stat(in, &si) == 0 && stat(out, &so) == 0) same = si.st_dev == so.st_dev && si.st_ino == so.st_ino;
    if (!same) {
        char *ri = realpath(in, NULL), *ro = realpath(out, NULL);
        same = ri && ro && !strcmp(ri, ro);
        free(ri), free(ro);
    }
    if (same) die(2, "%s: output is the input file %s; write to another file", out, in);
}

/* ---------------------------------------------------------------- main */
int main(int argc, char **argv) {
    options o;
    parse_args(argc, argv, &o);
    refuse_same_file(o.in, o.out);
    if (o.threads) omp_set_num_threads(o.threads);
    if (regcomp(&block_weight_re,
                "^blocks\\.[0-9]+\\.(attn\\.qkv|attn\\.proj|mlp\\.fc1|mlp\\.fc2|adaLN_modulation\\.1)\\.weight$",
                REG_EXTENDED | REG_NOSUB))
        die(1, "internal error: block regex");
    const double t0 = now();

    dit_gguf *g = dit_gguf_open(o.in);
    if (!g) die(fail_code(dit_last_error_code()), "%s", dit_last_error());
    const int64_t nt = dit_gguf_n_tensors(g);

    /* plan: output type per tensor; refuse types we cannot read before writing anything */
    int *otype = malloc((size_t)(nt ? nt : 1) * sizeof *otype);
    char (*why)[160] = malloc((size_t)(nt ? nt : 1) * sizeof *why);
    if (!otype || !why) die(1, "out of memory");
    int any_quant = 0, name_w = 8;
    size_t max_out = 0, in_total = 0, out_total = 0;
    for (int64_t i = 0; i < nt; i++) {
        const dit_gguf_tensor *t = dit_gguf_tensor_at(g, i);
        if (!dit_type_is_supported(t->type))
            die(2, "%s: tensor '%s' has type %s, which dit-quantize cannot read", o.in, t->name,
                dit_type_name(t->type) ? dit_type_name(t->type) : "?");
        otype[i] = choose_type(&o, t, why[i], sizeof why[i]);
        any_quant |= is_block_type(otype[i]);
        const size_t ob = dit_row_bytes(otype[i], t->ne[0]) * (size_t)(t->ne[1] * t->ne[2] * t->ne[3]);
        if (ob > max_out) max_out = ob;
        in_total += t->nbytes, out_total += ob;
        const int l = (int)strlen(t->name);
        if (l > name_w) name_w = l < 48 ? l : 48;
    }

    dit_gguf_writer *w = dit_gguf_writer_new();
    if (!w) die(1, "out of memory");
    if (dit_gguf_copy_kvs(w, g)) die(fail_code(dit_last_error_code()), "%s: %s", o.in, dit_last_error());
    dit_gguf_set_u32(w, "general.file_type", llama_ftype(o.type));
    if (any_quant) dit_gguf_set_u32(w, "general.quantization_version", 2);
    else dit_gguf_remove_kv(w, "general.quantization_version");
    for (int64_t i = 0; i < nt; i++) {
        const dit_gguf_tensor *t = dit_gguf_tensor_at(g, i);
        if (dit_gguf_add_tensor(w, t->name, otype[i], t->n_dims, t->ne) < 0)
            die(fail_code(dit_last_error_code()), "%s: %s", o.in, dit_last_error());
    }
    uint8_t *buf = malloc(max_out ? max_out : 1);
    if (!buf) die(1, "out of memory (%zu bytes for one tensor)", max_out);

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (dit_gguf_writer_begin(w, o.out)) fail_writer(w);
    printf("dit-quantize: %s -> %s, %s, %lld tensors, %d threads\n", o.in, o.out, dit_type_name(o.type),
           (long long)nt, omp_get_max_threads());

    double se_all = 0, sx_all = 0;
    int64_t counts[DIT_TYPE_COUNT] = {0};
    for (int64_t i = 0; i < nt; i++) {
        const dit_gguf_tensor *t = dit_gguf_tensor_at(g, i);
        if (is_block_type(t->type) && otype[i] != t->type && otype[i] != DIT_TYPE_F32)
            fprintf(stderr, "dit-quantize: warning: requantizing %s tensor %s loses precision\n", dit_type_name(t->type),
                    t->name);
        stats st;
        if (convert_tensor(t, otype[i], buf, &st)) {
            dit_gguf_writer_free(w);
            die(1, "out of memory converting %s", t->name);
        }
        const size_t ob = dit_row_bytes(otype[i], t->ne[0]) * (size_t)(t->ne[1] * t->ne[2] * t->ne[3]);
        if (dit_gguf_writer_write(w, buf, ob)) fail_writer(w);
        advise(t->data, t->nbytes, MADV_DONTNEED);
        if (st.nonfinite)
            fprintf(stderr, "dit-quantize: warning: tensor %s has %lld NaN/inf values (left out of the error figures)\n",
                    t->name, (long long)st.nonfinite);
        const int64_t n = n_elements(t);
        char dims[96], sq[32];
        fmt_dims(dims, sizeof dims, t);
        fmt_sqnr(sq, sizeof sq, st.sx, st.se);
        printf("[%*lld/%*lld] %-*s %-18s %4s -> %-4s  size %8.2f MiB -> %8.2f MiB  rmse %.3e  max|e| %.3e  sqnr %s dB",
               nt >= 100 ? 3 : 2, (long long)(i + 1), nt >= 100 ? 3 : 2, (long long)nt, name_w, t->name, dims,
               dit_type_name(t->type), dit_type_name(otype[i]), t->nbytes / 1048576.0, ob / 1048576.0,
               n ? sqrt(st.se / (double)(n - st.nonfinite > 0 ? n - st.nonfinite : 1)) : 0.0, st.maxe, sq);
        if (o.verbose || strstr(why[i], "not a multiple")) printf("  (%s)", why[i]);
        printf("\n");
        fflush(stdout);
        se_all += st.se, sx_all += st.sx;
        counts[otype[i]]++;
        if (interrupted) {
            dit_gguf_writer_free(w);
            die(128 + interrupted, "%s: interrupted; no output written", o.out);
        }
    }
    const double t1 = now();
    if (dit_gguf_writer_finish(w)) die(fail_code(dit_last_error_code()), "%s", dit_last_error());   /* frees w */
    const double t2 = now();
    char sq[32], mix[256] = "";
    fmt_sqnr(sq, sizeof sq, sx_all, se_all);
    for (int t = 0, k = 0; t < DIT_TYPE_COUNT; t++)
        if (counts[t]) k += snprintf(mix + k, sizeof mix - (size_t)k, "%s%lld %s", k ? ", " : "", (long long)counts[t], dit_type_name(t));
    printf("total: %.2f MiB -> %.2f MiB (%.2fx), tensors: %s, overall sqnr %s dB\n", in_total / 1048576.0,
           out_total / 1048576.0, out_total ? (double)in_total / out_total : 0.0, mix, sq);
    printf("time: %.2f s (convert %.2f s, %.0f MB/s in; sync + rename %.2f s)\n", t2 - t0, t1 - t0,
           in_total / 1e6 / (t1 - t0 > 1e-9 ? t1 - t0 : 1e-9), t2 - t1);
    free(buf), free(otype), free(why);
    dit_gguf_close(g);
    for (int i = 0; i < o.n_rules; i++) regfree(&o.rules[i].re), free(o.rules[i].text);
    regfree(&block_weight_re);
    return 0;
}
