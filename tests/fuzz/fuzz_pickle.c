/* fuzz_pickle.c - libFuzzer harness for the restricted unpickler (convert/pickle.c: pk_load and the
   value helpers).

   The first input byte picks the mode (bit 0: allow protocol 0), the rest is the pickle, read from
   memory (ck_reader_mem). persistent_load is a stand-in for the containers' one: a pid tuple
   ('storage', <torch.XStorage global>, key, location, numel) becomes a PV_STORAGE, so the tensor
   rebuild paths are reached. On success the value graph is walked (depth-limited, node budget: the
   memo lets a pickle share and cycle values), pv_find_opaque / pv_dict_get / pv_global_name run on
   it, and every tensor view must lie inside its storage. On failure: one printable line naming the
   file. Peak heap <= 64 x input + 40 MiB: the arena (64 MiB cap here; the converter uses CK_MAX_ARENA)
   grows with the input, but the memo is a dense array indexed by the pickle's PUT index, so a 5-byte
   LONG_BINPUT 4194303 costs 32 MiB (CK_MAX_MEMO x 8 bytes) whatever the file size. */
#include "convert.h"
#include "dit.h"
#include "fuzz_common.h"

static const char *PATH = "fuzz/data.pkl";

static pv *persistent(void *user, ck_arena *a, pv *pid) {
    (void)user;
    if (pid->kind != PV_TUPLE || pid->u.seq.n < 5) {
        dit_set_error(DIT_ERR_INPUT, "%s: bad persistent id", PATH);
        return NULL;
    }
    pv **t = pid->u.seq.v;
    int dt = pk_storage_dtype(t[1]);
    if (t[0]->kind != PV_STR || strcmp(t[0]->u.str.s, "storage") || dt < 0 || t[2]->kind != PV_STR ||
        t[4]->kind != PV_INT || t[4]->u.i < 0) {
        dit_set_error(DIT_ERR_INPUT, "%s: bad persistent id", PATH);
        return NULL;
    }
    ck_storage *s = ck_arena_alloc(a, sizeof *s);
    pv *v = ck_arena_alloc(a, sizeof *v);
    if (!s || !v) return NULL;
    s->key = t[2]->u.str.s;
    s->dtype = dt;
    s->numel = (uint64_t)t[4]->u.i;
    v->kind = PV_STORAGE;
    v->u.storage = s;
    return v;
}

static long budget;

static void walk(const pv *v, int depth) {
    if (!v || depth > 80 || --budget < 0) return;
    char buf[600];
    FUZZ_ASSERT(pv_kind_name(v) != NULL);
    switch (v->kind) {
    case PV_STR: case PV_BYTES: case PV_BIGINT:
        FUZZ_ASSERT(v->u.str.s && v->u.str.s[v->u.str.n] == 0);
        break;
    case PV_TUPLE: case PV_LIST:
        FUZZ_ASSERT(v->u.seq.n <= v->u.seq.cap || v->u.seq.cap == 0);
        for (size_t i = 0; i < v->u.seq.n; i++) walk(v->u.seq.v[i], depth + 1);
        break;
    case PV_DICT:
        for (size_t i = 0; i < v->u.dict.n; i++) {
            walk(v->u.dict.k[i], depth + 1);
            walk(v->u.dict.v[i], depth + 1);
            if (v->u.dict.k[i]->kind == PV_STR) FUZZ_ASSERT(pv_dict_get(v, v->u.dict.k[i]->u.str.s) != NULL);
        }
        break;
    case PV_GLOBAL:
        FUZZ_ASSERT(v->u.glob.module && v->u.glob.name);
        (void)pv_global_name(v, buf, sizeof buf);
        break;
    case PV_OBJECT:
        (void)pv_global_name(v, buf, sizeof buf);
        walk(v->u.obj.cls, depth + 1); walk(v->u.obj.args, depth + 1);
        walk(v->u.obj.state, depth + 1); walk(v->u.obj.items, depth + 1);
        break;
    case PV_TENSOR: {
        const ck_tensor *t = v->u.tensor;
        FUZZ_ASSERT(t->st && t->ndim >= 0 && t->ndim <= CK_MAX_DIMS && t->offset >= 0 && t->numel >= 0);
        FUZZ_ASSERT((uint64_t)t->offset <= t->st->numel && (uint64_t)t->span <= t->st->numel - (uint64_t)t->offset);
        int64_t n = 1;
        for (int i = 0; i < t->ndim; i++) { FUZZ_ASSERT(t->size[i] >= 0 && t->stride[i] >= 0); n *= t->size[i]; }
        FUZZ_ASSERT(n == t->numel);
        break;
    }
    default: break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int proto0 = data[0] & 1;
    uint8_t *buf = malloc(size - 1 ? size - 1 : 1);   /* exact size: an overread is an ASan error */
    memcpy(buf, data + 1, size - 1);
    ck_reader r;
    ck_reader_mem(&r, PATH, buf, size - 1);
    fuzz_heap_begin();
    ck_arena *a = ck_arena_new(64u << 20, PATH);
    FUZZ_ASSERT(a);
    pv *root = pk_load(&r, a, persistent, NULL, proto0);
    if (!root) fuzz_check_error(PATH, DIT_ERR_INPUT, DIT_ERR_NOMEM);
    else {
        budget = 200000;
        walk(root, 0);
        (void)pv_find_opaque(root, 0);   /* must stay bounded on shared/cyclic graphs (regress-shared-list-cycle) */
        (void)pv_dict_get(root, "state_dict"), (void)pv_dict_get(root, "ema");
    }
    ck_arena_free(a);
    fuzz_heap_end(size, 64, 40u << 20);
    free(buf);
    return 0;
}
