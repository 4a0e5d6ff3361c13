/* fuzz_model.c - libFuzzer harness for the model loader (dit_model_load: GGUF reader + config and
   shape validation) and what runs on a loaded model.

   Per input: dit_model_load; on failure one printable line naming the file, code 1-3. On success the
   config must satisfy what dit.h promises (every bound tensor present with data, sizes consistent),
   dit_class_from_name runs on a few names, and when the model is tiny (hidden <= 64, depth <= 2,
   <= 64 tokens) one CPU forward with CFG runs on it (the weights are fuzzed: NaN is fine, a crash
   or an out-of-bounds read is not). Peak heap at load <= 16 x input + 1 MiB. */
#include "dit.h"
#include "fuzz_common.h"

static const char *cur;

static void check_tensor(const dit_tensor *t) {
    FUZZ_ASSERT(t->data && t->name && dit_type_is_supported(t->type));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cur = fuzz_file(data, size);
    fuzz_heap_begin();
    dit_model *m = dit_model_load(cur);
    fuzz_heap_end(size, 16, 1 << 20);
    if (!m) {
        fuzz_check_error(cur, DIT_ERR_IO, DIT_ERR_UNSUPPORTED);
        return 0;
    }
    const dit_config *c = &m->cfg;
    FUZZ_ASSERT(c->depth >= 1 && c->hidden >= 1 && c->heads >= 1 && c->hidden % c->heads == 0);
    FUZZ_ASSERT(c->patch >= 1 && c->input_size % c->patch == 0 && c->in_channels >= 1);
    FUZZ_ASSERT(c->num_classes >= 1 && c->cfg_channels >= 0 && c->cfg_channels <= c->in_channels);
    FUZZ_ASSERT(m->name != NULL);
    check_tensor(&m->w.pos_embed); check_tensor(&m->w.y_table); check_tensor(&m->w.final_w);
    for (int l = 0; l < c->depth; l++) { check_tensor(&m->w.blocks[l].qkv_w); check_tensor(&m->w.blocks[l].fc2_w); }
    FUZZ_ASSERT(dit_latent_floats(m) == (size_t)c->in_channels * c->input_size * c->input_size);
    FUZZ_ASSERT(dit_image_floats(m) > 0);
    const char *probes[] = {"0", "1", "-1", "999999999999", "tench", "gold", "c", "", "zzzz"};
    for (size_t i = 0; i < sizeof probes / sizeof *probes; i++) {
        int k = dit_class_from_name(m, probes[i]);
        FUZZ_ASSERT(k >= -1 && k < c->num_classes);
        /* regress-newline-in-class-name-error: class names from the file reach the message */
        if (k < 0) FUZZ_ASSERT(strchr(dit_last_error(), '\n') == NULL);
    }
    int T = (c->input_size / c->patch) * (c->input_size / c->patch);
    if (c->hidden <= 64 && c->depth <= 2 && T <= 64 && c->in_channels <= 4 && c->mlp_hidden <= 256) {
        size_t n = dit_latent_floats(m);
        float *x = calloc(2 * n, sizeof *x), *out = calloc(2 * (size_t)c->out_channels * c->input_size * c->input_size, sizeof *out);
        float t[2] = {999, 999};
        int y[2] = {0, c->num_classes};
        for (size_t i = 0; i < n; i++) x[i] = x[n + i] = (float)(i % 7) - 3;
        int rc = dit_forward_with_cfg(m, x, t, y, 2, 4.0f, out, 1);
        FUZZ_ASSERT(rc == DIT_OK || rc == DIT_ERR_NUMERIC || rc == DIT_ERR_NOMEM);
        free(x), free(out);
    }
    dit_model_free(m);
    return 0;
}
