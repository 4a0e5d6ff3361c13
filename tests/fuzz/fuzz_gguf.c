/* fuzz_gguf.c - libFuzzer harness for the GGUF reader (dit_gguf_open and every accessor).

   Per input: open it; on failure the message must be one line naming the file, with code 1-3.
   On success every promise of dit.h is checked (dims, offsets inside the file and aligned, names
   unique and <= 63 bytes, getters agree with find_kv), every tensor's first and last byte is read,
   and the file is written back through the writer (copy_kvs + add_tensor + write) and read again:
   the copy must open with the same KVs and tensors. Peak heap must stay under 16 x input + 1 MiB. */
#include "dit.h"
#include "fuzz_common.h"
#include <stddef.h>

static char out_path[96];

static void walk(dit_gguf *g, const uint8_t *data, size_t size) {
    size_t fsize = dit_gguf_file_size(g), a = dit_gguf_alignment(g), doff = dit_gguf_data_offset(g);
    FUZZ_ASSERT(fsize == size);
    FUZZ_ASSERT(a && (a & (a - 1)) == 0 && doff % a == 0);
    int64_t nkv = dit_gguf_n_kv(g), nt = dit_gguf_n_tensors(g);
    FUZZ_ASSERT(nkv >= 0 && nt >= 0);
    char small[24], big[4096];
    for (int64_t i = 0; i < nkv; i++) {
        const char *k = dit_gguf_kv_key(g, i);
        FUZZ_ASSERT(k && k[0]);
        FUZZ_ASSERT(dit_gguf_find_kv(g, k) == i);   /* keys are unique */
        FUZZ_ASSERT(dit_gguf_kv_format(g, i, small, sizeof small) == 0 && strlen(small) < sizeof small);
        FUZZ_ASSERT(dit_gguf_kv_format(g, i, big, sizeof big) == 0 && strlen(big) < sizeof big);
        int type = dit_gguf_kv_type(g, i);
        FUZZ_ASSERT(type >= 0 && type <= DIT_GGUF_FLOAT64);
        uint32_t u; float f; int b;
        (void)dit_gguf_get_u32(g, k, &u);
        (void)dit_gguf_get_f32(g, k, &f);
        (void)dit_gguf_get_bool(g, k, &b);
        const char *s = dit_gguf_get_str(g, k);
        FUZZ_ASSERT((s != NULL) == (type == DIT_GGUF_STRING));
        int64_t n = dit_gguf_get_arr_n(g, k);
        FUZZ_ASSERT((n >= 0) == (type == DIT_GGUF_ARRAY));
        if (n >= 0) {
            FUZZ_ASSERT((uint64_t)n == dit_gguf_kv_arr_n(g, i));
            int at = dit_gguf_kv_arr_type(g, i);
            for (int64_t j = -1; j <= n && j < 16; j++) {
                const char *e = dit_gguf_get_arr_str(g, k, j);
                FUZZ_ASSERT((e != NULL) == (at == DIT_GGUF_STRING && j >= 0 && j < n));
                if (e) (void)strlen(e);
                (void)dit_gguf_get_arr_u32(g, k, j, &u);
            }
            if (n > 16) (void)dit_gguf_get_arr_u32(g, k, n - 1, &u), (void)dit_gguf_get_arr_str(g, k, n - 1);
        }
    }
    FUZZ_ASSERT(dit_gguf_kv_key(g, nkv) == NULL && dit_gguf_tensor_at(g, nt) == NULL && dit_gguf_tensor_at(g, -1) == NULL);
    uint64_t expect = 0;
    for (int64_t i = 0; i < nt; i++) {
        const dit_gguf_tensor *t = dit_gguf_tensor_at(g, i);
        FUZZ_ASSERT(t && strlen(t->name) <= DIT_GGUF_MAX_NAME);
        FUZZ_ASSERT(dit_gguf_find_tensor(g, t->name) == t);
        FUZZ_ASSERT(t->n_dims >= 1 && t->n_dims <= 4);
        FUZZ_ASSERT(dit_type_name(t->type) != NULL);
        int blck = dit_type_block_size(t->type);
        uint64_t nb = (uint64_t)dit_type_block_bytes(t->type);
        for (int d = 0; d < 4; d++) FUZZ_ASSERT(t->ne[d] >= 0 && (d < t->n_dims || t->ne[d] == 1));
        FUZZ_ASSERT(t->ne[0] % blck == 0);
        /* nbytes recomputed in 128-bit: an overflow in the reader would show here */
        unsigned __int128 bytes = (unsigned __int128)(t->ne[0] / blck) * nb, cap = (unsigned __int128)1 << 100;
        for (int d = 1; d < 4; d++) bytes = t->ne[d] == 0 ? 0 : bytes > cap ? cap : bytes * (uint64_t)t->ne[d];
        FUZZ_ASSERT(bytes == t->nbytes);
        FUZZ_ASSERT(t->offset == expect && t->offset % a == 0);
        FUZZ_ASSERT(doff + t->offset + t->nbytes <= size);
        const dit_gguf_tensor *t0 = dit_gguf_tensor_at(g, 0);
        FUZZ_ASSERT((const uint8_t *)t->data - (const uint8_t *)t0->data == (ptrdiff_t)t->offset);
        if (t->nbytes) {
            volatile uint8_t first = ((const uint8_t *)t->data)[0];
            volatile uint8_t last = ((const uint8_t *)t->data)[t->nbytes - 1];
            FUZZ_ASSERT(first == data[doff + t->offset] && last == data[doff + t->offset + t->nbytes - 1]);
        }
        expect += t->nbytes + (a - t->nbytes % a) % a;
    }
}

/* Writer round trip: the copy must open and carry the same KVs and tensors. */
static void round_trip(dit_gguf *g) {
    dit_gguf_writer *w = dit_gguf_writer_new();
    FUZZ_ASSERT(w && dit_gguf_copy_kvs(w, g) == DIT_OK);
    int64_t nt = dit_gguf_n_tensors(g);
    for (int64_t i = 0; i < nt; i++) {
        const dit_gguf_tensor *t = dit_gguf_tensor_at(g, i);
        int rc = dit_gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne);
        if (rc != i) fprintf(stderr, "fuzz: writer refuses what the reader accepted: %s\n", dit_last_error());
        FUZZ_ASSERT(rc == i);
    }
    if (dit_gguf_writer_begin(w, out_path) != DIT_OK) {   /* I/O only (tmpfs full) */
        FUZZ_ASSERT(dit_last_error_code() == DIT_ERR_IO);
        dit_gguf_writer_free(w);
        return;
    }
    for (int64_t i = 0; i < nt; i++) {
        const dit_gguf_tensor *t = dit_gguf_tensor_at(g, i);
        FUZZ_ASSERT(dit_gguf_writer_write(w, t->data, t->nbytes) == DIT_OK);
    }
    FUZZ_ASSERT(dit_gguf_writer_finish(w) == DIT_OK);
    dit_gguf *h = dit_gguf_open(out_path);
    if (!h) fprintf(stderr, "fuzz: round trip refused: %s\n", dit_last_error());
    FUZZ_ASSERT(h != NULL);
    /* the writer adds general.alignment = 32 when absent and forces it to 32 */
    int64_t extra = dit_gguf_find_kv(g, "general.alignment") < 0;
    FUZZ_ASSERT(dit_gguf_n_kv(h) == dit_gguf_n_kv(g) + extra && dit_gguf_n_tensors(h) == nt);
    char b1[256], b2[256];
    for (int64_t i = 0; i < dit_gguf_n_kv(g); i++) {
        const char *k = dit_gguf_kv_key(g, i);
        if (strcmp(k, "general.alignment") == 0) continue;
        int64_t j = dit_gguf_find_kv(h, k);
        FUZZ_ASSERT(j >= 0 && dit_gguf_kv_type(h, j) == dit_gguf_kv_type(g, i));
        dit_gguf_kv_format(g, i, b1, sizeof b1), dit_gguf_kv_format(h, j, b2, sizeof b2);
        FUZZ_ASSERT(strcmp(b1, b2) == 0);
    }
    for (int64_t i = 0; i < nt; i++) {
        const dit_gguf_tensor *t = dit_gguf_tensor_at(g, i), *u = dit_gguf_tensor_at(h, i);
        FUZZ_ASSERT(strcmp(t->name, u->name) == 0 && t->type == u->type && t->n_dims == u->n_dims &&
                    memcmp(t->ne, u->ne, sizeof t->ne) == 0 && t->nbytes == u->nbytes &&
                    (!t->nbytes || memcmp(t->data, u->data, t->nbytes) == 0));
    }
    dit_gguf_close(h);
    unlink(out_path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!out_path[0]) snprintf(out_path, sizeof out_path, "/dev/shm/fuzz-gguf-%d.gguf", (int)getpid());
    const char *path = fuzz_file(data, size);
    fuzz_heap_begin();
    dit_gguf *g = dit_gguf_open(path);
    if (!g) {
        fuzz_heap_end(size, 16, 1 << 20);
        fuzz_check_error(path, DIT_ERR_IO, DIT_ERR_NOMEM);
        return 0;
    }
    walk(g, data, size);
    fuzz_heap_end(size, 16, 1 << 20);
    round_trip(g);
    dit_gguf_close(g);
    return 0;
}
