/* GGUF reader/writer, type table and fp16/bf16 conversions (no GPU, no fixtures).
   The writer's output is read back by our reader here; tests/gguf_check.mjs checks it independently. */
#include "dit.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures, checks;
#define CHECK(cond, ...) do { checks++; if (cond) printf("ok - " __VA_ARGS__); \
    else { failures++; printf("not ok - " __VA_ARGS__); printf("   (%s)", dit_last_error()); } printf("\n"); } while (0)

static char dir[256];

static const char *tmp(const char *name) {
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

/* A small file with every KV type, an f32, an f16 and a q8_0 tensor. */
static int write_sample(const char *path) {
    dit_gguf_writer *w = dit_gguf_writer_new();
    dit_gguf_set_str(w, "general.architecture", "dit");
    dit_gguf_set_u32(w, "dit.depth", 28);
    dit_gguf_set_i32(w, "test.i32", -5);
    dit_gguf_set_f32(w, "vae.scaling_factor", 0.18215f);
    dit_gguf_set_bool(w, "dit.learn_sigma", 1);
    const char *names[] = {"tench", "goldfish", ""};
    dit_gguf_set_arr_str(w, "dit.class_names", names, 3);
    uint32_t ch[4] = {128, 256, 512, 512};
    dit_gguf_set_arr_u32(w, "vae.block_out_channels", ch, 4);
    dit_gguf_set_u32(w, "dit.depth", 2);   /* replaces */
    dit_gguf_set_u32(w, "dit.patch", 2);
    int64_t ne_a[2] = {3, 2}, ne_b[1] = {5}, ne_c[2] = {64, 2};
    float a[6] = {1, 2, 3, 4, 5, 6}, c[128];
    uint16_t b[5];
    for (int i = 0; i < 5; i++) b[i] = dit_fp32_to_fp16((float)i / 3);
    for (int i = 0; i < 128; i++) c[i] = sinf((float)i);
    uint8_t cq[4 * 34];
    dit_quantize_row(DIT_TYPE_Q8_0, c, cq, 128);
    int ok = dit_gguf_add_tensor(w, "blocks.0.attn.qkv.weight", DIT_TYPE_F32, 2, ne_a) == 0 &&
             dit_gguf_add_tensor(w, "b", DIT_TYPE_F16, 1, ne_b) == 1 &&
             dit_gguf_add_tensor(w, "c", DIT_TYPE_Q8_0, 2, ne_c) == 2;
    ok = ok && dit_gguf_writer_begin(w, path) == 0 && dit_gguf_writer_write(w, a, sizeof a) == 0 &&
         dit_gguf_writer_write(w, b, sizeof b) == 0 && dit_gguf_writer_write(w, cq, sizeof cq) == 0;
    if (!ok) { dit_gguf_writer_free(w); return -1; }
    return dit_gguf_writer_finish(w);
}

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *d = malloc(*n + 1);
    if (fread(d, 1, *n, f) != *n) { free(d); d = NULL; }
    fclose(f);
    return d;
}

static void spit(const char *path, const uint8_t *d, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(d, 1, n, f);
    fclose(f);
}

/* Writes a corrupted copy and expects the reader to refuse it with a message containing `want`. */
static void expect_bad(const uint8_t *good, size_t n, size_t at, const void *patch, size_t plen, size_t newlen,
                       const char *want, const char *what) {
    uint8_t *d = malloc(n + 64);
    memcpy(d, good, n);
    if (patch) memcpy(d + at, patch, plen);
    spit(tmp("bad.gguf"), d, newlen);
    dit_gguf *g = dit_gguf_open(tmp("bad.gguf"));
    CHECK(!g && dit_last_error_code() == DIT_ERR_INPUT && strstr(dit_last_error(), want) &&
          strstr(dit_last_error(), "bad.gguf"), "reader refuses %s", what);
    if (g) dit_gguf_close(g);
    free(d);
}

static size_t find(const uint8_t *d, size_t n, const char *s, size_t l) {
    for (size_t i = 0; i + l <= n; i++) if (memcmp(d + i, s, l) == 0) return i;
    return 0;
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/dit_test_gguf_XXXXXX");
    if (!mkdtemp(dir)) return 1;

    /* ---- fp16: every half converts to float and back exactly; float->half rounds to nearest even */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = dit_fp16_to_fp32((uint16_t)h);
        _Float16 hw; memcpy(&hw, &(uint16_t){(uint16_t)h}, 2);
        if (!isnan(f) && (f != (float)hw || dit_fp32_to_fp16(f) != h)) bad++;
        if (isnan(f) != isnan((float)hw)) bad++;
    }
    CHECK(bad == 0, "fp16 -> fp32 -> fp16 exact for all 65536 halves (%d mismatches)", bad);
    bad = 0;
    for (uint64_t u = 0; u < (1ull << 32); u += 4093) {   /* ~1M floats over the whole range, vs compiler's _Float16 */
        float f; uint32_t x = (uint32_t)u; memcpy(&f, &x, 4);
        if (isnan(f)) continue;
        _Float16 hw = (_Float16)f; uint16_t hb; memcpy(&hb, &hw, 2);
        if (dit_fp32_to_fp16(f) != hb) bad++;
    }
    float ties[] = {65504.0f, 65519.99f, 65520.0f, 1e-8f, 2.98023224e-08f, 5.96046448e-08f, 1.0009765625f * 1.00048828125f};
    for (size_t i = 0; i < sizeof ties / sizeof *ties; i++) {
        _Float16 hw = (_Float16)ties[i]; uint16_t hb; memcpy(&hb, &hw, 2);
        if (dit_fp32_to_fp16(ties[i]) != hb) bad++;
    }
    CHECK(bad == 0, "fp32 -> fp16 matches the compiler's IEEE conversion on 1M floats and ties (%d mismatches)", bad);
    {   /* the row converter (F16C when available) must give the scalar converter's bits, NaN payloads too */
        enum { NR = 1 << 16 };
        static float xs[NR];
        static uint16_t row[NR];
        for (uint32_t i = 0; i < NR; i++) { uint32_t x = i * 65537u + (i & 7) * 0x7f800001u; memcpy(&xs[i], &x, 4); }
        xs[0] = NAN, xs[1] = -INFINITY, xs[2] = 65520.0f, xs[3] = 5.9604645e-08f;
        dit_quantize_row(DIT_TYPE_F16, xs, row, NR);
        bad = 0;
        for (uint32_t i = 0; i < NR; i++) bad += row[i] != dit_fp32_to_fp16(xs[i]);
        CHECK(bad == 0, "f16 row conversion == scalar conversion on 65536 bit patterns incl. NaN/Inf/subnormals (%d differ)", bad);
    }
    CHECK(isnan(dit_fp16_to_fp32(dit_fp32_to_fp16(NAN))) && dit_fp32_to_bf16(NAN) != 0x7f80, "NaN stays NaN in fp16 and bf16");
    CHECK(dit_fp32_to_bf16(1.00390625f) == 0x3f80 && dit_fp32_to_bf16(1.01171875f) == 0x3f82 &&
          dit_bf16_to_fp32(0x3f81) == 1.0078125f, "bf16 rounds to nearest even (ggml rule)");

    /* ---- type table */
    CHECK(dit_type_from_name("Q8_0") == 8 && dit_type_from_name("bf16") == 30 && dit_type_from_name("q9") == -1 &&
          dit_row_bytes(DIT_TYPE_Q4_0, 64) == 36 && dit_row_bytes(DIT_TYPE_Q5_0, 32) == 22 &&
          dit_type_block_size(DIT_TYPE_Q8_0) == 32 && dit_row_bytes(DIT_TYPE_F16, 3) == 6,
          "type names, block sizes and row bytes");

    /* ---- writer -> reader round trip */
    CHECK(write_sample(tmp("a.gguf")) == 0, "writer writes a file");
    dit_gguf *g = dit_gguf_open(tmp("a.gguf"));
    CHECK(g != NULL, "reader opens it");
    if (!g) return 1;
    uint32_t u; float f; int bl;
    CHECK(dit_gguf_get_u32(g, "dit.depth", &u) == 0 && u == 2 && dit_gguf_get_f32(g, "vae.scaling_factor", &f) == 0 &&
          f == 0.18215f && dit_gguf_get_bool(g, "dit.learn_sigma", &bl) == 0 && bl == 1 &&
          strcmp(dit_gguf_get_str(g, "general.architecture"), "dit") == 0 && dit_gguf_get_u32(g, "test.i32", &u) == -1,
          "scalar KVs read back (and a replaced key keeps its last value)");
    CHECK(dit_gguf_get_arr_n(g, "dit.class_names") == 3 && strcmp(dit_gguf_get_arr_str(g, "dit.class_names", 1), "goldfish") == 0 &&
          strcmp(dit_gguf_get_arr_str(g, "dit.class_names", 2), "") == 0 &&
          dit_gguf_get_arr_u32(g, "vae.block_out_channels", 2, &u) == 0 && u == 512,
          "array KVs read back");
    CHECK(dit_gguf_get_u32(g, "general.alignment", &u) == 0 && u == 32 && dit_gguf_data_offset(g) % 32 == 0,
          "general.alignment is written and the data section is aligned");
    const dit_gguf_tensor *t = dit_gguf_find_tensor(g, "c");
    float back[128], c[128];
    for (int i = 0; i < 128; i++) c[i] = sinf((float)i);
    if (t) dit_dequantize_row(t->type, t->data, back, 128);
    float maxe = 0;
    for (int i = 0; t && i < 128; i++) maxe = fmaxf(maxe, fabsf(back[i] - c[i]));
    CHECK(t && t->type == DIT_TYPE_Q8_0 && t->ne[0] == 64 && t->ne[1] == 2 && t->nbytes == 136 && t->offset % 32 == 0 &&
          maxe <= 1.0f / 127 / 2 * 1.01f, "q8_0 tensor reads back (max err %.2g <= d/2)", maxe);
    const dit_gguf_tensor *ta = dit_gguf_tensor_at(g, 0);
    CHECK(ta && ta->n_dims == 2 && ta->ne[0] == 3 && ((const float *)ta->data)[5] == 6.0f, "f32 tensor data and dims");
    char buf[256];
    dit_gguf_kv_format(g, dit_gguf_find_kv(g, "dit.class_names"), buf, sizeof buf);
    CHECK(strstr(buf, "\"goldfish\"") != NULL, "kv_format shows arrays: %s", buf);
    dit_gguf_close(g);

    /* ---- hostile variants of the same file */
    size_t n = 0;
    uint8_t *good = slurp(tmp("a.gguf"), &n);
    if (!good) return 1;
    expect_bad(good, n, 0, "GGUX", 4, n, "bad magic", "a bad magic");
    expect_bad(good, n, 4, "\x01\x00\x00\x00", 4, n, "version", "version 1");
    expect_bad(good, n, 0, NULL, 0, n - 40, "truncated", "a truncated data section");
    expect_bad(good, n, 0, NULL, 0, 100, "", "a file cut inside the metadata");
    expect_bad(good, n, 8, "\xff\xff\xff\xff\xff\xff\xff\x7f", 8, n, "implausible", "a huge tensor count");
    size_t at = find(good, n, "dit.patch", 9);
    expect_bad(good, n, at, "dit.depth", 9, n, "duplicate metadata key", "a duplicate key");
    at = find(good, n, "\x01\x00\x00\x00\x00\x00\x00\x00" "b", 9);   /* name "b" -> "c" duplicates tensor "c" */
    expect_bad(good, n, at + 8, "c", 1, n, "duplicate tensor name", "a duplicate tensor name");
    at = find(good, n, "c\x02\x00\x00\x00", 5);   /* tensor c: n_dims 2, ne0 64 -> 63 (not a multiple of 32) */
    expect_bad(good, n, at + 5, "\x3f", 1, n, "multiple of", "a row not divisible by the block size");
    expect_bad(good, n, at + 5 + 8, "\xff\xff\xff\xff\xff\xff\xff\x0f", 8, n, "overflows", "dims whose size overflows");
    expect_bad(good, n, at + 5 + 8, "\x00\x00\x10\x00\x00\x00\x00\x00", 8, n, "exceeds the file", "dims larger than the file");
    expect_bad(good, n, at + 5 + 16 + 4, "\x60", 1, n, "has offset", "a tensor offset off the running sum");
    expect_bad(good, n, at + 5 + 16, "\x63\x00\x00\x00", 4, n, "unknown ggml type", "an unknown tensor type");
    spit(tmp("lfs.gguf"), (const uint8_t *)"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 12\n", 62);
    g = dit_gguf_open(tmp("lfs.gguf"));
    CHECK(!g && strstr(dit_last_error(), "Git LFS pointer"), "reader names a Git LFS pointer");
    g = dit_gguf_open(tmp("missing.gguf"));
    CHECK(!g && dit_last_error_code() == DIT_ERR_IO, "a missing file is an I/O error");
    free(good);

    /* ---- the writer never leaves partial output */
    dit_gguf_writer *w = dit_gguf_writer_new();
    int64_t ne[1] = {4};
    dit_gguf_add_tensor(w, "x", DIT_TYPE_F32, 1, ne);
    dit_gguf_writer_begin(w, tmp("partial.gguf"));
    dit_gguf_writer_free(w);   /* abandoned before writing data */
    CHECK(access(tmp("partial.gguf"), F_OK) != 0, "an abandoned writer leaves no file");
    w = dit_gguf_writer_new();
    char longname[80];
    memset(longname, 'a', 64), longname[64] = 0;
    CHECK(dit_gguf_add_tensor(w, longname, DIT_TYPE_F32, 1, ne) == -1 && dit_gguf_add_tensor(w, "x", DIT_TYPE_F32, 1, ne) == 0 &&
          dit_gguf_add_tensor(w, "x", DIT_TYPE_F32, 1, ne) == -1, "writer refuses 64-byte names and duplicates");
    CHECK(dit_gguf_writer_begin(w, "/nonexistent-dir/x.gguf") == DIT_ERR_IO && strstr(dit_last_error(), "/nonexistent-dir/x.gguf"),
          "writer reports a missing output directory as I/O, naming the path");
    dit_gguf_writer_free(w);

    /* ---- npy */
    int64_t shape[3] = {2, 1, 3};
    float v[6] = {1, -2, 3.5f, 0, 1e-30f, 7};
    CHECK(dit_npy_write(tmp("a.npy"), 3, shape, v) == 0, "npy write");
    int nd; int64_t sh[8]; float *rd = NULL;
    CHECK(dit_npy_read(tmp("a.npy"), &nd, sh, &rd) == 0 && nd == 3 && sh[2] == 3 && rd && memcmp(rd, v, sizeof v) == 0,
          "npy round trip");
    free(rd);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    printf("# gguf: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
