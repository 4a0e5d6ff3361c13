/* dit-info - shows a GGUF file: metadata, tensor table, totals. The reader (dit_gguf_open) validates the
   whole file first; a bad file is reported with its message and exit status 2.

   dit-info FILE.gguf [-v]          KVs (arrays abridged unless -v), tensor table, totals
   dit-info FILE.gguf --json        the same as one JSON document (full values), for scripts and tests
   dit-info FILE.gguf --sums        one line per tensor: name, type, shape, FNV-1a 64 of its bytes
   dit-info FILE.gguf --dump NAME   the raw bytes of one tensor on stdout */
#include "dit.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROG "dit-info"

static const char *kv_type_name(int t) {
    static const char *const n[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"};
    return t >= 0 && t <= 12 ? n[t] : "?";
}

static void usage(FILE *f) {
    fprintf(f, "usage: " PROG " FILE.gguf [-v | --json | --sums | --dump NAME]\n"
               "Shows a GGUF file: metadata, tensors (shapes in PyTorch order), totals by type.\n"
               "  -v           full arrays (class names, ...)\n"
               "  --json       everything as JSON (full values)\n"
               "  --sums       per tensor: name, type, shape, FNV-1a 64-bit hash of the bytes\n"
               "  --dump NAME  raw bytes of tensor NAME to stdout\n");
}

/* PyTorch-order shape "[a, b, c]" of a tensor (ggml ne reversed) */
static void shape_str(const dit_gguf_tensor *t, char *buf, size_t n) {
    size_t l = (size_t)snprintf(buf, n, "[");
    for (int d = t->n_dims - 1; d >= 0 && l < n; d--)
        l += (size_t)snprintf(buf + l, n - l, d == t->n_dims - 1 ? "%" PRId64 : ", %" PRId64, t->ne[d]);
    if (l < n) snprintf(buf + l, n - l, "]");
}

/* flushes stdout; a failed write (full disk, closed pipe) is an I/O error: one line, status 1 */
static int out_status(void) {
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, PROG ": error: writing to stdout failed: %s\n", strerror(errno ? errno : EIO));
        return 1;
    }
    return 0;
}

static uint64_t fnv1a(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static void json_str(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

static int is_int_type(int t) {
    return t == DIT_GGUF_UINT8 || t == DIT_GGUF_INT8 || t == DIT_GGUF_UINT16 || t == DIT_GGUF_INT16 ||
           t == DIT_GGUF_UINT32 || t == DIT_GGUF_INT32 || t == DIT_GGUF_UINT64 || t == DIT_GGUF_INT64;
}

/* value of KV i as JSON: typed where the reader has a getter, else {"text": formatted} */
static void json_value(const dit_gguf *g, int64_t i, char *buf, size_t bufn) {
    const char *key = dit_gguf_kv_key(g, i);
    int t = dit_gguf_kv_type(g, i);
    uint32_t u;
    float f;
    int b;
    if (t == DIT_GGUF_STRING) { json_str(dit_gguf_get_str(g, key)); return; }
    if (t == DIT_GGUF_BOOL && dit_gguf_get_bool(g, key, &b) == 0) { printf(b ? "true" : "false"); return; }
    if (t == DIT_GGUF_FLOAT32 && dit_gguf_get_f32(g, key, &f) == 0) { printf("%.9g", f); return; }
    if (is_int_type(t) && dit_gguf_get_u32(g, key, &u) == 0) { printf("%u", u); return; }
    if (t == DIT_GGUF_ARRAY) {
        int at = dit_gguf_kv_arr_type(g, i);
        int64_t n = (int64_t)dit_gguf_kv_arr_n(g, i);
        int ok = at == DIT_GGUF_STRING;
        for (int64_t j = 0; !ok && is_int_type(at) && j < n; j++) ok = dit_gguf_get_arr_u32(g, key, j, &u) == 0;
        if (is_int_type(at) && n == 0) ok = 1;
        if (ok) {
            putchar('[');
            for (int64_t j = 0; j < n; j++) {
                if (j) putchar(',');
                if (at == DIT_GGUF_STRING) json_str(dit_gguf_get_arr_str(g, key, j));
                else { dit_gguf_get_arr_u32(g, key, j, &u); printf("%u", u); }
            }
            putchar(']');
            return;
        }
    }
    dit_gguf_kv_format(g, i, buf, bufn);
    printf("{\"text\":");
    json_str(buf);
    putchar('}');
}

int main(int argc, char **argv) {
    const char *path = NULL, *dump = NULL;
    int verbose = 0, json = 0, sums = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { usage(stdout); return 0; }
        else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) verbose = 1;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--sums")) sums = 1;
        else if (!strcmp(argv[i], "--dump")) {
            if (i + 1 >= argc) { fprintf(stderr, PROG ": error: --dump needs a tensor name (see --help)\n"); return 2; }
            dump = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, PROG ": error: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        } else if (!path) path = argv[i];
        else { fprintf(stderr, PROG ": error: more than one file given ('%s')\n", argv[i]); return 2; }
    }
    if (!path) { usage(stderr); return 2; }
    dit_gguf *g = dit_gguf_open(path);
    if (!g) {
        int code = dit_last_error_code();
        fprintf(stderr, PROG ": error: %s\n", dit_last_error());
        return code == DIT_ERR_IO || code == DIT_ERR_NOMEM ? 1 : 2;
    }
    int64_t nkv = dit_gguf_n_kv(g), nt = dit_gguf_n_tensors(g);
    size_t bufn = verbose || json ? (16u << 20) : 160;
    char *buf = malloc(bufn);
    if (!buf) { fprintf(stderr, PROG ": error: out of memory\n"); dit_gguf_close(g); return 1; }
    char sh[160];

    if (dump) {
        const dit_gguf_tensor *t = dit_gguf_find_tensor(g, dump);
        int rc = 0;
        if (!t) { fprintf(stderr, PROG ": error: %s: no tensor named '%s'\n", path, dump); rc = 2; }
        else if (fwrite(t->data, 1, t->nbytes, stdout) != t->nbytes) {
            fprintf(stderr, PROG ": error: writing to stdout failed: %s\n", strerror(errno ? errno : EIO));
            rc = 1;
        } else rc = out_status();
        free(buf);
        dit_gguf_close(g);
        return rc;
    }
    if (sums) {
        for (int64_t i = 0; i < nt; i++) {
            const dit_gguf_tensor *t = dit_gguf_tensor_at(g, i);
            shape_str(t, sh, sizeof sh);
            printf("%s %s %s %016" PRIx64 "\n", t->name, dit_type_name(t->type), sh, fnv1a(t->data, t->nbytes));
        }
        free(buf);
        dit_gguf_close(g);
        return out_status();
    }
    if (json) {
        printf("{\"file\":");
        json_str(path);
        printf(",\"version\":%u,\"file_size\":%zu,\"alignment\":%zu,\"data_offset\":%zu,\"kv\":[", dit_gguf_version(g),
               dit_gguf_file_size(g), dit_gguf_alignment(g), dit_gguf_data_offset(g));
        for (int64_t i = 0; i < nkv; i++) {
            int t = dit_gguf_kv_type(g, i);
            printf("%s\n{\"key\":", i ? "," : "");
            json_str(dit_gguf_kv_key(g, i));
            printf(",\"type\":\"%s\"", kv_type_name(t));
            if (t == DIT_GGUF_ARRAY)
                printf(",\"arr_type\":\"%s\",\"n\":%" PRIu64, kv_type_name(dit_gguf_kv_arr_type(g, i)), dit_gguf_kv_arr_n(g, i));
            printf(",\"value\":");
            json_value(g, i, buf, bufn);
            putchar('}');
        }
        printf("],\"tensors\":[");
        for (int64_t i = 0; i < nt; i++) {
            const dit_gguf_tensor *t = dit_gguf_tensor_at(g, i);
            printf("%s\n{\"name\":", i ? "," : "");
            json_str(t->name);
            printf(",\"type\":\"%s\",\"type_id\":%d,\"ne\":[", dit_type_name(t->type), t->type);
            for (int d = 0; d < t->n_dims; d++) printf(d ? ",%" PRId64 : "%" PRId64, t->ne[d]);
            printf("],\"nbytes\":%zu,\"offset\":%" PRIu64 "}", t->nbytes, t->offset);
        }
        printf("]}\n");
        free(buf);
        dit_gguf_close(g);
        return out_status();
    }

    printf("%s: GGUF v%u, %zu bytes, alignment %zu, data at %zu, %" PRId64 " KVs, %" PRId64 " tensors\n", path,
           dit_gguf_version(g), dit_gguf_file_size(g), dit_gguf_alignment(g), dit_gguf_data_offset(g), nkv, nt);
    printf("\nmetadata:\n");
    for (int64_t i = 0; i < nkv; i++) {
        int t = dit_gguf_kv_type(g, i);
        dit_gguf_kv_format(g, i, buf, bufn);
        printf("  %-36s %-4s %s\n", dit_gguf_kv_key(g, i), kv_type_name(t), buf);
    }
    printf("\ntensors:\n  %5s  %-52s %-6s %-22s %12s %12s\n", "#", "name", "type", "shape (PyTorch)", "bytes", "offset");
    struct { int64_t n; uint64_t params, bytes; } by[DIT_TYPE_COUNT] = {{0}};
    uint64_t params = 0, bytes = 0;
    for (int64_t i = 0; i < nt; i++) {
        const dit_gguf_tensor *t = dit_gguf_tensor_at(g, i);
        uint64_t ne = 1;
        for (int d = 0; d < t->n_dims; d++) ne *= (uint64_t)t->ne[d];
        shape_str(t, sh, sizeof sh);
        printf("  %5" PRId64 "  %-52s %-6s %-22s %12zu %12" PRIu64 "\n", i, t->name, dit_type_name(t->type), sh, t->nbytes,
               t->offset);
        params += ne;
        bytes += t->nbytes;
        if (t->type >= 0 && t->type < DIT_TYPE_COUNT) { by[t->type].n++; by[t->type].params += ne; by[t->type].bytes += t->nbytes; }
    }
    printf("\ntotals: %" PRId64 " tensors, %" PRIu64 " parameters, %" PRIu64 " bytes (%.2f MB)\n", nt, params, bytes,
           (double)bytes / 1e6);
    for (int t = 0; t < DIT_TYPE_COUNT; t++)
        if (by[t].n)
            printf("  %-6s %6" PRId64 " tensors %14" PRIu64 " parameters %14" PRIu64 " bytes (%.2f bits/weight)\n",
                   dit_type_name(t), by[t].n, by[t].params, by[t].bytes,
                   by[t].params ? 8.0 * (double)by[t].bytes / (double)by[t].params : 0.0);
    free(buf);
    dit_gguf_close(g);
    return out_status();
}
