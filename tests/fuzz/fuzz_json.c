/* fuzz_json.c - libFuzzer harness for the converter's JSON reader (convert/json.c: js_parse, js_get).

   Per input: parse with a 64 MiB arena; on failure the message is one printable line naming the
   file; on success the tree is walked (depth <= CK_MAX_JSON_DEPTH + 1, strings NUL-terminated at
   slen, object keys found again by js_get) and the parse is repeated on a copy with a byte-exact
   end (no read past n: the copy is malloc'ed at exactly n bytes, so ASan sees any overread).
   Peak heap <= 64 x input + 4 MiB (arena chunks are 1 MiB; a js node is 80 bytes for a 2-byte "0,"). */
#include "convert.h"
#include "dit.h"
#include "fuzz_common.h"

static const char *PATH = "fuzz/config.json";

static size_t walk(const js *v, int depth) {
    FUZZ_ASSERT(v && depth <= CK_MAX_JSON_DEPTH + 1);
    size_t nodes = 1;
    switch (v->kind) {
    case JS_NULL: case JS_BOOL: break;
    case JS_NUM:
        if (v->is_int) FUZZ_ASSERT((double)v->i == v->num || v->i > (1ll << 53) || v->i < -(1ll << 53));
        break;
    case JS_STR: FUZZ_ASSERT(v->s && strlen(v->s) <= v->slen && v->s[v->slen] == 0); break;
    case JS_ARR:
        for (size_t i = 0; i < v->n; i++) nodes += walk(v->v[i], depth + 1);
        break;
    case JS_OBJ:
        for (size_t i = 0; i < v->n; i++) {
            FUZZ_ASSERT(v->k[i]);
            const js *g = js_get(v, v->k[i]);
            FUZZ_ASSERT(g);   /* the last value of a duplicate key */
            nodes += walk(v->v[i], depth + 1);
        }
        FUZZ_ASSERT(js_get(v, "\x01no such key") == NULL);
        break;
    default: FUZZ_ASSERT(!"unknown js kind");
    }
    return nodes;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size ? size : 1);   /* exactly size bytes: reading text[size] is an ASan error */
    memcpy(text, data, size);
    fuzz_heap_begin();
    ck_arena *a = ck_arena_new(64u << 20, PATH);
    FUZZ_ASSERT(a);
    js *v = js_parse(a, PATH, text, size);
    if (!v) fuzz_check_error(PATH, DIT_ERR_INPUT, DIT_ERR_NOMEM);
    else { walk(v, 0); FUZZ_ASSERT(js_get(v, "x") == NULL || v->kind == JS_OBJ); }
    ck_arena_free(a);
    fuzz_heap_end(size, 64, 4u << 20);
    free(text);
    return 0;
}
