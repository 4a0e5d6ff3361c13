/* fuzz_ckpt.c - libFuzzer harness for the checkpoint containers (convert/ckpt.c: ck_open on torch
   zip, legacy torch.save and safetensors, then ck_read_tensor on every tensor found).

   Per input (written to a memfd): ck_open; on failure one printable line naming the file, code 1-3.
   On success the value graph is walked (depth 80, 200000-path budget), and each tensor found is read
   into a buffer of exactly numel x dtype bytes (an overflow is an ASan error). Heap: open peak
   <= 64 x input + 40 MiB (arena chunks of 1 MiB, 1 MiB zip inflate buffers, the unpickler's memo
   of up to 32 MiB: see fuzz_pickle.c); a tensor's bytes
   <= 1032 x input + 1 MiB (1032:1 is deflate's best ratio: a larger tensor is declared, not stored). */
#include "convert.h"
#include "dit.h"
#include "fuzz_common.h"

static const char *cur_path;

static long budget;
static size_t in_size;
static void *tmp;
static size_t tmpcap;

static void read_tensor(ck_file *f, const ck_tensor *t) {
    FUZZ_ASSERT(t->st && t->ndim >= 0 && t->ndim <= CK_MAX_DIMS && t->numel >= 0 && t->offset >= 0);
    size_t es = (size_t)ck_dtype_size(t->st->dtype);
    unsigned __int128 bytes = (unsigned __int128)(uint64_t)t->numel * es;
    if (bytes > (unsigned __int128)in_size * 1032 + (1u << 20)) {
        fprintf(stderr, "fuzz: tensor of %lld elements x %zu bytes declared by a %zu-byte file\n", (long long)t->numel, es, in_size);
        FUZZ_ASSERT(!"tensor larger than the file could hold");   /* regress-expanded-view-huge-numel */
    }
    uint8_t *dst = malloc((size_t)bytes ? (size_t)bytes : 1);
    FUZZ_ASSERT(dst);
    if (ck_read_tensor(f, t, dst, &tmp, &tmpcap) != 0) fuzz_check_error(cur_path, DIT_ERR_IO, DIT_ERR_NOMEM);
    free(dst);
}

static void walk(ck_file *f, const pv *v, int depth) {
    if (!v || depth > 80 || --budget < 0) return;
    switch (v->kind) {
    case PV_TUPLE: case PV_LIST:
        for (size_t i = 0; i < v->u.seq.n; i++) walk(f, v->u.seq.v[i], depth + 1);
        break;
    case PV_DICT:
        for (size_t i = 0; i < v->u.dict.n; i++) walk(f, v->u.dict.v[i], depth + 1);
        break;
    case PV_OBJECT:
        walk(f, v->u.obj.args, depth + 1);
        walk(f, v->u.obj.state, depth + 1);
        walk(f, v->u.obj.items, depth + 1);
        break;
    case PV_TENSOR: read_tensor(f, v->u.tensor); break;
    default: break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cur_path = fuzz_file(data, size);
    in_size = size;
    pv *root = NULL;
    fuzz_heap_begin();
    ck_file *f = ck_open(cur_path, &root);
    fuzz_heap_end(size, 64, 40u << 20);
    if (!f) {
        fuzz_check_error(cur_path, DIT_ERR_IO, DIT_ERR_NOMEM);
        return 0;
    }
    FUZZ_ASSERT(root && ck_file_size(f) == size && ck_format(f) >= CK_FMT_ZIP && ck_format(f) <= CK_FMT_SAFETENSORS);
    budget = 200000;
    walk(f, root, 0);
    (void)pv_find_opaque(root, 0);   /* bounded on shared/cyclic graphs: regress-shared-list-cycle */
    ck_close(f);
    free(tmp);
    tmp = NULL, tmpcap = 0;
    return 0;
}
