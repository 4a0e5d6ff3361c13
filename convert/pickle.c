/* pickle.c - a restricted unpickler for torch checkpoints. It builds plain values (dicts, lists,
   tuples, numbers, strings) and tensor descriptors; it never imports or calls anything.

   Globals (GLOBAL / STACK_GLOBAL) fall in three groups:
     whitelisted  - given a meaning here: torch._utils._rebuild_tensor_v2 / _rebuild_tensor /
                    _rebuild_parameter / _rebuild_parameter_with_state, torch._tensor._rebuild_from_type_v2,
                    collections.OrderedDict, torch.<X>Storage, argparse.Namespace, and a few inert
                    constants (torch.device, torch.Size, torch dtypes, torch.serialization._get_layout, ...)
     refused      - names that only make sense to run code (os.*, subprocess.*, builtins.eval, ...):
                    the whole file is refused at once, naming the global.
     other        - kept as opaque values ("constructed, never called"). The converter accepts them only
                    outside the state_dict it converts (e.g. inside a train.py dict's "opt" or "args");
                    inside it they are an error naming the global.
   REDUCE / NEWOBJ on anything but a GLOBAL value is refused (torch.save never emits it). */
#include "convert/convert.h"
#include "dit.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- arena */
struct ck_arena {
    struct chunk { struct chunk *next; size_t used, cap; max_align_t data[]; } *head;
    size_t total, cap;
    const char *path;
};

ck_arena *ck_arena_new(size_t cap, const char *path) {
    ck_arena *a = calloc(1, sizeof *a);
    if (a) { a->cap = cap; a->path = path ? path : "?"; }
    return a;
}

void *ck_arena_alloc(ck_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (n > a->cap || a->total > a->cap - n) {
        ck_error(DIT_ERR_INPUT, "%s: needs more than %zu MB of metadata (limit)", a->path, a->cap >> 20);
        return NULL;
    }
    struct chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > (1u << 20) ? n : (1u << 20);
        c = malloc(sizeof *c + cap);
        if (!c) { ck_error(DIT_ERR_NOMEM, "out of memory"); return NULL; }
        c->cap = cap; c->used = 0;
        if (a->head && n > (1u << 20)) { c->next = a->head->next; a->head->next = c; }  /* keep head's room */
        else { c->next = a->head; a->head = c; }
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    a->total += n;
    memset(p, 0, n);
    return p;
}

char *ck_arena_strdup(ck_arena *a, const char *s, size_t n) {
    if (n >= SIZE_MAX - 1) return NULL;
    char *p = ck_arena_alloc(a, n + 1);
    if (p) { memcpy(p, s, n); p[n] = 0; }
    return p;
}

void ck_arena_free(ck_arena *a) {
    if (!a) return;
    for (struct chunk *c = a->head, *n; c; c = n) { n = c->next; free(c); }
    free(a);
}

/* ---------------------------------------------------------------- reader */
#define RD_BUF (1u << 16)

void ck_reader_mem(ck_reader *r, const char *path, const void *p, size_t n) {
    memset(r, 0, sizeof *r);
    r->mem = p; r->memlen = n; r->fd = -1; r->path = path;
}

int ck_reader_file(ck_reader *r, const char *path, int fd, uint64_t off, uint64_t end) {
    memset(r, 0, sizeof *r);
    r->fd = fd; r->fpos = off; r->fend = end; r->path = path;
    r->buf = malloc(RD_BUF);
    if (!r->buf) return CK_ERR(DIT_ERR_NOMEM, "out of memory");
    return 0;
}

void ck_reader_done(ck_reader *r) { free(r->buf); r->buf = NULL; }

uint64_t ck_reader_tell(const ck_reader *r) { return r->fpos - (r->blen - r->bpos); }

/* n bytes, valid until the next call; NULL + error at the end of the data */
static const uint8_t *rd_get(ck_reader *r, size_t n) {
    if (r->mem) {
        if (n > r->memlen - r->consumed) {
            ck_error(DIT_ERR_INPUT, "%s: pickle data ends early (truncated file?)", r->path);
            return NULL;
        }
        const uint8_t *p = r->mem + r->consumed;
        r->consumed += n;
        return p;
    }
    if (r->blen - r->bpos < n) {
        size_t have = r->blen - r->bpos;
        uint64_t left = r->fend > r->fpos ? r->fend - r->fpos : 0;
        if (n - have > left) {   /* before allocating: a length field must not buy memory the file lacks */
            ck_error(DIT_ERR_INPUT, "%s: pickle data ends early (truncated file?)", r->path);
            return NULL;
        }
        size_t cap = n > RD_BUF ? n : RD_BUF;
        if (cap > RD_BUF) {
            uint8_t *nb = malloc(cap);
            if (!nb) { ck_error(DIT_ERR_NOMEM, "out of memory"); return NULL; }
            memcpy(nb, r->buf + r->bpos, have);
            free(r->buf); r->buf = nb;
        } else memmove(r->buf, r->buf + r->bpos, have);
        r->bpos = 0; r->blen = have;
        while (r->blen < n) {
            uint64_t left = r->fend > r->fpos ? r->fend - r->fpos : 0;
            size_t want = cap - r->blen;
            if (want > left) want = (size_t)left;
            if (want == 0) {
                ck_error(DIT_ERR_INPUT, "%s: pickle data ends early (truncated file?)", r->path);
                return NULL;
            }
            ssize_t k = pread(r->fd, r->buf + r->blen, want, (off_t)r->fpos);
            if (k < 0 && errno == EINTR) continue;
            if (k < 0) { ck_error(DIT_ERR_IO, "%s: read failed: %s", r->path, strerror(errno)); return NULL; }
            if (k == 0) {
                ck_error(DIT_ERR_INPUT, "%s: pickle data ends early (truncated file?)", r->path);
                return NULL;
            }
            r->blen += (size_t)k; r->fpos += (uint64_t)k;
        }
    }
    const uint8_t *p = r->buf + r->bpos;
    r->bpos += n;
    r->consumed += n;
    return p;
}

/* ---------------------------------------------------------------- globals */
enum {
    G_REBUILD_V2, G_REBUILD, G_REBUILD_PARAM, G_REBUILD_PARAM_STATE, G_REBUILD_FROM_TYPE, G_ODICT,
    G_NAMESPACE, G_STORAGE, G_TENSOR_CLS, G_PARAM_CLS, G_INERT, G_TENSOR_OTHER,
};
static const struct { const char *module, *name; int id, dtype; } WHITELIST[] = {
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_V2, 0},
    {"torch._utils", "_rebuild_tensor", G_REBUILD, 0},
    {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAM, 0},
    {"torch._utils", "_rebuild_parameter_with_state", G_REBUILD_PARAM_STATE, 0},
    {"torch._tensor", "_rebuild_from_type_v2", G_REBUILD_FROM_TYPE, 0},
    {"collections", "OrderedDict", G_ODICT, 0},
    {"argparse", "Namespace", G_NAMESPACE, 0},
    {"torch", "Tensor", G_TENSOR_CLS, 0},
    {"torch.nn.parameter", "Parameter", G_PARAM_CLS, 0},
    {"torch", "FloatStorage", G_STORAGE, CK_F32},
    {"torch", "HalfStorage", G_STORAGE, CK_F16},
    {"torch", "BFloat16Storage", G_STORAGE, CK_BF16},
    {"torch", "DoubleStorage", G_STORAGE, CK_F64},
    {"torch", "LongStorage", G_STORAGE, CK_I64},
    {"torch", "IntStorage", G_STORAGE, CK_I32},
    {"torch", "ShortStorage", G_STORAGE, CK_I16},
    {"torch", "CharStorage", G_STORAGE, CK_I8},
    {"torch", "ByteStorage", G_STORAGE, CK_U8},
    {"torch", "BoolStorage", G_STORAGE, CK_BOOL},
    {"torch", "UntypedStorage", G_STORAGE, CK_U8},
    {"torch", "Float8_e4m3fnStorage", G_STORAGE, CK_F8},
    {"torch", "Float8_e5m2Storage", G_STORAGE, CK_F8},
    {"torch", "ComplexFloatStorage", G_STORAGE, CK_C64},
    {"torch", "ComplexDoubleStorage", G_STORAGE, CK_C128},
    {"torch.cuda", "FloatStorage", G_STORAGE, CK_F32},
    {"torch.cuda", "HalfStorage", G_STORAGE, CK_F16},
    {"torch.cuda", "BFloat16Storage", G_STORAGE, CK_BF16},
    {"torch.cuda", "DoubleStorage", G_STORAGE, CK_F64},
    {"torch.cuda", "LongStorage", G_STORAGE, CK_I64},
    {"torch.cuda", "IntStorage", G_STORAGE, CK_I32},
    {"torch", "device", G_INERT, 0},
    {"torch", "Size", G_INERT, 0},
    {"torch.serialization", "_get_layout", G_INERT, 0},
    {"torch.torch_version", "TorchVersion", G_INERT, 0},
    {"torch._utils", "_rebuild_qtensor", G_TENSOR_OTHER, 0},
    {"torch._utils", "_rebuild_sparse_tensor", G_TENSOR_OTHER, 0},
    {"torch._utils", "_rebuild_sparse_csr", G_TENSOR_OTHER, 0},
    {"torch._utils", "_rebuild_meta_tensor_no_storage", G_TENSOR_OTHER, 0},
    {"torch._utils", "_rebuild_device_tensor_from_numpy", G_TENSOR_OTHER, 0},
    {"torch._utils", "_rebuild_nested_tensor", G_TENSOR_OTHER, 0},
    {"torch._utils", "_rebuild_wrapper_subclass", G_TENSOR_OTHER, 0},
    {"torch._utils", "_rebuild_xla_tensor", G_TENSOR_OTHER, 0},
    {"torch._utils", "_rebuild_mps_tensor", G_TENSOR_OTHER, 0},
};
/* torch dtypes pickled as globals (e.g. inside "args"): inert constants */
static const char *const TORCH_DTYPES[] = {
    "float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool",
    "float", "half", "double", "long", "int", "complex64", "complex128", "float8_e4m3fn", "float8_e5m2",
    "strided", "sparse_coo", "contiguous_format", "channels_last", "preserve_format", NULL,
};
/* Modules whose every global is refused: they exist to run code, touch files or processes. */
static const char *const DENY_MODULES[] = {
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "sys", "shutil", "socket", "importlib",
    "pickle", "_pickle", "cPickle", "copyreg", "copy_reg", "marshal", "runpy", "code", "codeop", "types",
    "ctypes", "functools", "operator", "_operator", "pty", "webbrowser", "multiprocessing", "asyncio",
    "pdb", "bdb", "timeit", "platform", "signal", "tempfile", "glob", "io", "_io", "commands", "popen2",
    "dill", "cloudpickle", "joblib", "shelve", "sqlite3", "urllib", "http", "ftplib", "smtplib",
    "telnetlib", "threading", "_thread", "thread", "zipimport", "pkgutil", "inspect", "gc", "atexit",
    "numpy.testing", "numpy.f2py", "numpy.distutils", "numpy.lib.npyio", "numpy.load", "setuptools",
    "distutils", "pip", "yaml", "torch.hub", "torch.jit", "torch._C", "torch.ops", "torch.classes",
    "torch.package", "torch.utils", "torch._dynamo", "torch.storage", "torch.multiprocessing", NULL,
};
static const char *const DENY_GLOBALS[] = {   /* module.name, refused */
    "torch.load", "torch.serialization.load", "torch.compile", "torch.save", "torch.from_file",
    "torch.serialization._load", "numpy.load", "numpy.fromfile", "numpy.memmap", NULL,
};
/* builtins allowed as inert opaque values (protocol 2 pickles of sets, complex numbers, ...) */
static const char *const SAFE_BUILTINS[] = {
    "set", "frozenset", "bytearray", "bytes", "complex", "slice", "range", "object", "int", "float",
    "str", "list", "dict", "tuple", "bool", NULL,
};

static int in_list(const char *const *l, const char *s) {
    for (; *l; l++) if (!strcmp(*l, s)) return 1;
    return 0;
}

static int module_denied(const char *m) {
    for (const char *const *l = DENY_MODULES; *l; l++) {
        size_t n = strlen(*l);
        if (!strncmp(m, *l, n) && (m[n] == 0 || m[n] == '.')) return 1;
    }
    return 0;
}

/* -1 refused (error set), else whitelist index or -2 for "other" */
static int classify_global(const char *path, const char *mod, const char *name, int *id, int *dtype) {
    for (size_t i = 0; i < sizeof WHITELIST / sizeof *WHITELIST; i++)
        if (!strcmp(WHITELIST[i].module, mod) && !strcmp(WHITELIST[i].name, name)) {
            *id = WHITELIST[i].id; *dtype = WHITELIST[i].dtype;
            return 0;
        }
    if (!strcmp(mod, "torch") && in_list(TORCH_DTYPES, name)) { *id = G_INERT; *dtype = 0; return 0; }
    char full[512];
    snprintf(full, sizeof full, "%s.%s", mod, name);
    int bad = module_denied(mod) || in_list(DENY_GLOBALS, full);
    if ((!strcmp(mod, "builtins") || !strcmp(mod, "__builtin__") || !strcmp(mod, "_codecs") ||
         !strcmp(mod, "codecs")) && !in_list(SAFE_BUILTINS, name) && strcmp(name, "encode"))
        bad = 1;
    if (strchr(name, '.') && !strncmp(name, "__", 2)) bad = 1;     /* dotted dunder lookups */
    if (bad) {
        ck_error(DIT_ERR_INPUT, "%s: refusing pickle global '%s' (it could run code; nothing was "
                      "executed)", path, full);
        return -1;
    }
    *id = -1; *dtype = 0;
    return 0;
}

/* ---------------------------------------------------------------- value helpers */
const char *pv_kind_name(const pv *v) {
    static const char *const names[] = {"None", "bool", "int", "int", "float", "str", "bytes", "tuple",
                                        "list", "dict", "global", "object", "storage", "tensor", "mark"};
    return v && v->kind >= 0 && v->kind <= PV_MARK ? names[v->kind] : "?";
}

const char *pv_global_name(const pv *v, char *buf, size_t n) {
    if (v && v->kind == PV_OBJECT) v = v->u.obj.cls;
    if (v && v->kind == PV_GLOBAL) snprintf(buf, n, "%s.%s", v->u.glob.module, v->u.glob.name);
    else snprintf(buf, n, "%s", pv_kind_name(v));
    return buf;
}

pv *pv_dict_get(const pv *d, const char *key) {
    if (!d || d->kind != PV_DICT) return NULL;
    for (size_t i = d->u.dict.n; i-- > 0;) {
        const pv *k = d->u.dict.k[i];
        if (k->kind == PV_STR && !strcmp(k->u.str.s, key)) return d->u.dict.v[i];
    }
    return NULL;
}

/* depth-first search with a visit budget: memo sharing makes DAGs (and cycles) whose tree walk is exponential */
static const pv *find_opaque(const pv *v, int depth, long *budget) {
    if (!v || depth > CK_MAX_WALK_DEPTH || --*budget < 0) return NULL;
    switch (v->kind) {
    case PV_GLOBAL: return v->u.glob.id == G_INERT ? NULL : v;
    case PV_OBJECT: {
        const pv *c = v->u.obj.cls;
        if (c && c->kind == PV_GLOBAL && (c->u.glob.id == G_NAMESPACE || c->u.glob.id == G_INERT)) {
            const pv *r = find_opaque(v->u.obj.state, depth + 1, budget);
            return r ? r : find_opaque(v->u.obj.args, depth + 1, budget);
        }
        return v;
    }
    case PV_TUPLE: case PV_LIST:
        for (size_t i = 0; i < v->u.seq.n && *budget >= 0; i++) {
            const pv *r = find_opaque(v->u.seq.v[i], depth + 1, budget);
            if (r) return r;
        }
        return NULL;
    case PV_DICT:
        for (size_t i = 0; i < v->u.dict.n && *budget >= 0; i++) {
            const pv *r = find_opaque(v->u.dict.k[i], depth + 1, budget);
            if (!r) r = find_opaque(v->u.dict.v[i], depth + 1, budget);
            if (r) return r;
        }
        return NULL;
    default: return NULL;
    }
}

const pv *pv_find_opaque(const pv *v, int depth) {
    long budget = 1L << 20;   /* values visited at most */
    return find_opaque(v, depth, &budget);
}

/* ---------------------------------------------------------------- machine */
typedef struct {
    ck_reader *r;
    ck_arena *a;
    const char *path;
    pv **st; size_t sp, scap;
    size_t *marks; size_t nm, mcap;
    pv **memo; size_t memocap, memo_n;
    pk_persistent_fn fn; void *user;
    uint64_t op_at;
    int op;
} pk;

static pv NONE_V = {.kind = PV_NONE};

static int fail(pk *p, const char *what) {
    return CK_ERR(DIT_ERR_INPUT, "%s: bad pickle: %s at pickle offset %llu (opcode 0x%02x)", p->path, what,
                  (unsigned long long)p->op_at, p->op);
}

static pv *newv(pk *p, int kind) {
    pv *v = ck_arena_alloc(p->a, sizeof *v);
    if (v) v->kind = kind;
    return v;
}

static int push(pk *p, pv *v) {
    if (!v) return -1;
    if (p->sp == p->scap) {
        if (p->scap >= CK_MAX_STACK) return fail(p, "stack too deep");
        size_t nc = p->scap ? p->scap * 2 : 256;
        pv **ns = realloc(p->st, nc * sizeof *ns);
        if (!ns) return CK_ERR(DIT_ERR_NOMEM, "out of memory");
        p->st = ns; p->scap = nc;
    }
    p->st[p->sp++] = v;
    return 0;
}

static pv *pop(pk *p) {
    size_t floor = p->nm ? p->marks[p->nm - 1] : 0;
    if (p->sp <= floor) { fail(p, "stack underflow"); return NULL; }
    return p->st[--p->sp];
}

static pv *top(pk *p) {
    size_t floor = p->nm ? p->marks[p->nm - 1] : 0;
    if (p->sp <= floor) { fail(p, "stack underflow"); return NULL; }
    return p->st[p->sp - 1];
}

/* items above the last mark: start index, count; pops the mark */
static int pop_mark(pk *p, size_t *start, size_t *n) {
    *start = *n = 0;
    if (!p->nm) return fail(p, "missing MARK");
    *start = p->marks[--p->nm];
    *n = p->sp - *start;
    return 0;
}

static int seq_push(pk *p, pv *s, pv *x) {
    if (s->u.seq.n == s->u.seq.cap) {
        size_t nc = s->u.seq.cap ? s->u.seq.cap * 2 : 4;
        pv **nv = ck_arena_alloc(p->a, nc * sizeof *nv);
        if (!nv) return -1;
        if (s->u.seq.n) memcpy(nv, s->u.seq.v, s->u.seq.n * sizeof *nv);
        s->u.seq.v = nv; s->u.seq.cap = nc;
    }
    s->u.seq.v[s->u.seq.n++] = x;
    return 0;
}

static pv *make_seq(pk *p, int kind, pv **items, size_t n) {
    pv *s = newv(p, kind);
    if (!s) return NULL;
    if (n) {
        s->u.seq.v = ck_arena_alloc(p->a, n * sizeof(pv *));
        if (!s->u.seq.v) return NULL;
        memcpy(s->u.seq.v, items, n * sizeof(pv *));
    }
    s->u.seq.n = s->u.seq.cap = n;
    return s;
}

static int dict_set(pk *p, pv *d, pv *k, pv *v) {
    if (d->u.dict.n == d->u.dict.cap) {
        size_t nc = d->u.dict.cap ? d->u.dict.cap * 2 : 8;
        pv **nk = ck_arena_alloc(p->a, nc * sizeof *nk), **nv = ck_arena_alloc(p->a, nc * sizeof *nv);
        if (!nk || !nv) return -1;
        if (d->u.dict.n) {
            memcpy(nk, d->u.dict.k, d->u.dict.n * sizeof *nk);
            memcpy(nv, d->u.dict.v, d->u.dict.n * sizeof *nv);
        }
        d->u.dict.k = nk; d->u.dict.v = nv; d->u.dict.cap = nc;
    }
    d->u.dict.k[d->u.dict.n] = k;
    d->u.dict.v[d->u.dict.n++] = v;
    return 0;
}

static pv *make_str(pk *p, int kind, const uint8_t *s, uint64_t n) {
    if (n > CK_MAX_STRING) { fail(p, "string longer than the limit"); return NULL; }
    pv *v = newv(p, kind);
    if (!v) return NULL;
    v->u.str.s = ck_arena_strdup(p->a, (const char *)s, (size_t)n);
    v->u.str.n = (size_t)n;
    return v->u.str.s ? v : NULL;
}

static pv *read_str(pk *p, int kind, uint64_t n) {
    if (n > CK_MAX_STRING) { fail(p, "string longer than the limit"); return NULL; }
    const uint8_t *b = rd_get(p->r, (size_t)n);
    return b ? make_str(p, kind, b, n) : NULL;
}

static int memo_put(pk *p, uint64_t idx, pv *v) {
    if (idx >= CK_MAX_MEMO) return fail(p, "memo index over the limit");
    /* Python's pickler numbers memo entries 0, 1, 2, ...: a far jump would only buy a large sparse array */
    if (idx > p->memo_n + 4096) return fail(p, "memo index out of sequence");
    if (idx >= p->memocap) {
        size_t nc = p->memocap ? p->memocap : 256;
        while (nc <= idx) nc *= 2;
        pv **nm = realloc(p->memo, nc * sizeof *nm);
        if (!nm) return CK_ERR(DIT_ERR_NOMEM, "out of memory");
        memset(nm + p->memocap, 0, (nc - p->memocap) * sizeof *nm);
        p->memo = nm; p->memocap = nc;
    }
    if (!p->memo[idx]) p->memo_n++;
    p->memo[idx] = v;
    return 0;
}

static int memo_get(pk *p, uint64_t idx) {
    if (idx >= p->memocap || !p->memo[idx]) return fail(p, "memo GET of an unset index");
    return push(p, p->memo[idx]);
}

static int64_t le_int(const uint8_t *b, int n) {
    uint64_t u = 0;
    for (int i = 0; i < n; i++) u |= (uint64_t)b[i] << (8 * i);
    if (n < 8 && n > 0 && (b[n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n);
    return (int64_t)u;
}
static uint64_t le_u(const uint8_t *b, int n) {
    uint64_t u = 0;
    for (int i = 0; i < n; i++) u |= (uint64_t)b[i] << (8 * i);
    return u;
}

/* text line without the '\n' (protocol 0 opcodes), NUL-terminated copy in the arena */
static char *read_line(pk *p, size_t *len) {
    size_t cap = 256, n = 0;
    char *tmp = malloc(cap);
    if (!tmp) { ck_error(DIT_ERR_NOMEM, "out of memory"); return NULL; }
    for (;;) {
        const uint8_t *c = rd_get(p->r, 1);
        if (!c) { free(tmp); return NULL; }
        if (*c == '\n') break;
        if (n + 1 >= cap) {
            if (cap >= (1u << 20)) { free(tmp); fail(p, "text line too long"); return NULL; }
            char *nt = realloc(tmp, cap * 2);
            if (!nt) { free(tmp); ck_error(DIT_ERR_NOMEM, "out of memory"); return NULL; }
            tmp = nt; cap *= 2;
        }
        tmp[n++] = (char)*c;
    }
    char *s = ck_arena_strdup(p->a, tmp, n);
    free(tmp);
    if (len) *len = n;
    return s;
}

static pv *make_global(pk *p, const char *mod, const char *name) {
    int id, dtype;
    if (classify_global(p->path, mod, name, &id, &dtype) < 0) return NULL;
    pv *g = newv(p, PV_GLOBAL);
    if (!g) return NULL;
    g->u.glob.module = ck_arena_strdup(p->a, mod, strlen(mod));
    g->u.glob.name = ck_arena_strdup(p->a, name, strlen(name));
    g->u.glob.id = id;
    (void)dtype;
    return g->u.glob.module && g->u.glob.name ? g : NULL;
}

int pk_storage_dtype(const pv *g) {
    if (!g || g->kind != PV_GLOBAL || g->u.glob.id != G_STORAGE) return -1;
    for (size_t i = 0; i < sizeof WHITELIST / sizeof *WHITELIST; i++)
        if (WHITELIST[i].id == G_STORAGE && !strcmp(WHITELIST[i].module, g->u.glob.module) &&
            !strcmp(WHITELIST[i].name, g->u.glob.name))
            return WHITELIST[i].dtype;
    return -1;
}

int pk_global_is_tensor_kind(const pv *g) {
    return g && g->kind == PV_GLOBAL && g->u.glob.id == G_TENSOR_OTHER;
}

static int get_int(const pv *v, int64_t *out) {
    if (!v || (v->kind != PV_INT && v->kind != PV_BOOL)) return -1;
    *out = v->u.i;
    return 0;
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]) */
static pv *rebuild_tensor(pk *p, const pv *args) {
    if (!args || args->kind != PV_TUPLE || args->u.seq.n < 4) {
        fail(p, "_rebuild_tensor arguments are not (storage, offset, size, stride, ...)");
        return NULL;
    }
    pv *const *a = args->u.seq.v;
    int64_t off;
    if (a[0]->kind != PV_STORAGE || get_int(a[1], &off) < 0 || off < 0 ||
        (a[2]->kind != PV_TUPLE && a[2]->kind != PV_LIST) || (a[3]->kind != PV_TUPLE && a[3]->kind != PV_LIST)) {
        fail(p, "_rebuild_tensor arguments have the wrong types");
        return NULL;
    }
    const pv *sz = a[2], *sd = a[3];
    if (sz->u.seq.n != sd->u.seq.n) { fail(p, "tensor size and stride differ in length"); return NULL; }
    if (sz->u.seq.n > CK_MAX_DIMS) { fail(p, "tensor has more than 8 dimensions"); return NULL; }
    ck_tensor *t = ck_arena_alloc(p->a, sizeof *t);
    if (!t) return NULL;
    t->st = a[0]->u.storage;
    t->offset = off;
    t->ndim = (int)sz->u.seq.n;
    int64_t numel = 1, span = 1, expect = 1;
    int contiguous = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (get_int(sz->u.seq.v[i], &t->size[i]) < 0 || get_int(sd->u.seq.v[i], &t->stride[i]) < 0 ||
            t->size[i] < 0 || t->stride[i] < 0) {
            fail(p, "tensor size/stride entries must be non-negative integers");
            return NULL;
        }
    }
    for (int i = t->ndim - 1; i >= 0; i--) {
        int64_t s = t->size[i];
        if (s && numel > INT64_MAX / s) { fail(p, "tensor size overflows"); return NULL; }
        numel *= s;
        if (s > 1 && t->stride[i] != expect) contiguous = 0;
        if (s && expect <= INT64_MAX / s) expect *= s;
    }
    if (numel == 0) span = 0;
    else
        for (int i = 0; i < t->ndim; i++) {
            int64_t d = t->size[i] - 1;
            if (d && t->stride[i] > (INT64_MAX - span) / d) { fail(p, "tensor stride overflows"); return NULL; }
            span += d * t->stride[i];
        }
    t->numel = numel;
    t->span = span;
    t->contiguous = contiguous;
    if ((uint64_t)numel > t->st->numel) {   /* stride-0 / overlapping views: no memory blow-up from a tiny storage */
        fail(p, "tensor view has more elements than its storage (expanded or overlapping view)");
        return NULL;
    }
    if ((uint64_t)off > t->st->numel || (uint64_t)span > t->st->numel - (uint64_t)off) {
        char m[256];
        snprintf(m, sizeof m, "tensor view (offset %lld, %lld elements) exceeds its storage '%s' (%llu elements)",
                 (long long)off, (long long)span, t->st->key, (unsigned long long)t->st->numel);
        fail(p, m);
        return NULL;
    }
    pv *v = newv(p, PV_TENSOR);
    if (v) v->u.tensor = t;
    return v;
}

static pv *make_object(pk *p, pv *cls, pv *args) {
    pv *o = newv(p, PV_OBJECT);
    if (o) { o->u.obj.cls = cls; o->u.obj.args = args; }
    return o;
}

/* REDUCE / NEWOBJ: callable(*args), whitelisted meanings only */
static pv *apply(pk *p, pv *fn, pv *args, int newobj) {
    if (fn->kind != PV_GLOBAL) { fail(p, "call of a value that is not a global"); return NULL; }
    if (args->kind != PV_TUPLE) { fail(p, "call arguments are not a tuple"); return NULL; }
    pv *const *a = args->u.seq.v;
    size_t n = args->u.seq.n;
    switch (fn->u.glob.id) {
    case G_REBUILD_V2: case G_REBUILD: return rebuild_tensor(p, args);
    case G_REBUILD_PARAM: case G_REBUILD_PARAM_STATE:
        if (n < 1 || a[0]->kind != PV_TENSOR) { fail(p, "_rebuild_parameter without a tensor"); return NULL; }
        return a[0];
    case G_REBUILD_FROM_TYPE:
        /* (func, type, func_args, state): plain tensors / Parameters rebuilt by a whitelisted func */
        if (n >= 3 && a[0]->kind == PV_GLOBAL && a[1]->kind == PV_GLOBAL &&
            (a[1]->u.glob.id == G_TENSOR_CLS || a[1]->u.glob.id == G_PARAM_CLS) &&
            (a[0]->u.glob.id == G_REBUILD_V2 || a[0]->u.glob.id == G_REBUILD))
            return rebuild_tensor(p, a[2]);
        return make_object(p, fn, args);
    case G_ODICT: {
        pv *d = newv(p, PV_DICT);
        if (!d) return NULL;
        if (n >= 1 && (a[0]->kind == PV_LIST || a[0]->kind == PV_TUPLE)) {   /* OrderedDict([(k, v), ...]) */
            for (size_t i = 0; i < a[0]->u.seq.n; i++) {
                pv *kv = a[0]->u.seq.v[i];
                if ((kv->kind != PV_TUPLE && kv->kind != PV_LIST) || kv->u.seq.n != 2) {
                    fail(p, "OrderedDict items are not pairs");
                    return NULL;
                }
                if (dict_set(p, d, kv->u.seq.v[0], kv->u.seq.v[1]) < 0) return NULL;
            }
        }
        return d;
    }
    case G_STORAGE:
        fail(p, "storage constructed without a persistent id (not a torch.save file?)");
        return NULL;
    default:   /* Namespace, inert constants, unknown classes: opaque, nothing is called */
        (void)newobj;
        return make_object(p, fn, args);
    }
}

static int op_build(pk *p) {
    pv *state = pop(p);
    pv *obj = state ? top(p) : NULL;
    if (!obj) return -1;
    switch (obj->kind) {
    case PV_OBJECT: obj->u.obj.state = state; return 0;
    case PV_DICT: case PV_TENSOR: return 0;   /* OrderedDict._metadata, tensor python state: ignored */
    default: return fail(p, "BUILD on a value that is not an object");
    }
}

static double be_double(const uint8_t *b) {
    uint64_t u = 0;
    for (int i = 0; i < 8; i++) u = (u << 8) | b[i];
    double d;
    memcpy(&d, &u, 8);
    return d;
}

pv *pk_load(ck_reader *r, ck_arena *a, pk_persistent_fn fn, void *user, int allow_proto0) {
    pk P = {.r = r, .a = a, .path = r->path, .fn = fn, .user = user};
    pk *p = &P;
    pv *result = NULL;
    int first = 1;
    for (;;) {
        p->op_at = r->consumed;
        const uint8_t *b = rd_get(r, 1);
        if (!b) goto out;
        int op = p->op = *b;
        if (first && op != 0x80 && !allow_proto0) {
            ck_error(DIT_ERR_INPUT, "%s: not a pickle of protocol 2-5 (first byte 0x%02x)", p->path, op);
            goto out;
        }
        first = 0;
        int rc = 0;
        switch (op) {
        case 0x80: {                                           /* PROTO */
            if (!(b = rd_get(r, 1))) goto out;
            if (*b < 2 || *b > 5) {
                ck_error(DIT_ERR_INPUT, "%s: unsupported pickle protocol %d (need 2-5)", p->path, *b);
                goto out;
            }
            break;
        }
        case 0x95: if (!rd_get(r, 8)) goto out; break;         /* FRAME: framing is ignored */
        case '.': {                                            /* STOP */
            if (p->nm) { fail(p, "STOP with an open MARK"); goto out; }
            if (p->sp != 1) { fail(p, p->sp ? "STOP with extra stack items" : "STOP on an empty stack"); goto out; }
            result = p->st[0];
            goto out;
        }
        case '(':                                              /* MARK */
            if (p->nm == p->mcap) {
                if (p->mcap >= CK_MAX_MARKS) { fail(p, "MARKs nested too deep"); goto out; }
                size_t nc = p->mcap ? p->mcap * 2 : 64;
                size_t *nmk = realloc(p->marks, nc * sizeof *nmk);
                if (!nmk) { ck_error(DIT_ERR_NOMEM, "out of memory"); goto out; }
                p->marks = nmk; p->mcap = nc;
            }
            p->marks[p->nm++] = p->sp;
            break;
        case '0': if (!pop(p)) goto out; break;                /* POP */
        case '1': { size_t s, n; if (pop_mark(p, &s, &n) < 0) goto out; p->sp = s; break; }   /* POP_MARK */
        case '2': { pv *t = top(p); if (!t || push(p, t) < 0) goto out; break; }             /* DUP */
        case 'N': rc = push(p, &NONE_V); break;
        case 0x88: case 0x89: {                                /* NEWTRUE / NEWFALSE */
            pv *v = newv(p, PV_BOOL);
            if (v) v->u.i = op == 0x88;
            rc = push(p, v);
            break;
        }
        case 'J': case 'K': case 'M': {                        /* BININT, BININT1, BININT2 */
            int n = op == 'J' ? 4 : op == 'K' ? 1 : 2;
            if (!(b = rd_get(r, (size_t)n))) goto out;
            pv *v = newv(p, PV_INT);
            if (v) v->u.i = op == 'J' ? le_int(b, 4) : (int64_t)le_u(b, n);
            rc = push(p, v);
            break;
        }
        case 0x8a: case 0x8b: {                                /* LONG1, LONG4 */
            uint64_t n;
            if (!(b = rd_get(r, op == 0x8a ? 1 : 4))) goto out;
            n = le_u(b, op == 0x8a ? 1 : 4);
            if (n > 4096) { fail(p, "integer too long"); goto out; }
            if (!(b = rd_get(r, (size_t)n))) goto out;
            pv *v;
            if (n <= 8) { v = newv(p, PV_INT); if (v) v->u.i = n ? le_int(b, (int)n) : 0; }
            else v = make_str(p, PV_BIGINT, b, n);
            rc = push(p, v);
            break;
        }
        case 'I': case 'L': {                                  /* INT, LONG (text) */
            char *s = read_line(p, NULL);
            if (!s) goto out;
            pv *v = newv(p, PV_INT);
            if (!v) goto out;
            if (op == 'I' && (!strcmp(s, "00") || !strcmp(s, "01"))) { v->kind = PV_BOOL; v->u.i = s[1] == '1'; }
            else {
                size_t l = strlen(s);
                if (l && s[l - 1] == 'L') s[l - 1] = 0;
                char *e;
                errno = 0;
                long long x = strtoll(s, &e, 10);
                if (e == s || *e || errno) { fail(p, "bad integer literal"); goto out; }
                v->u.i = x;
            }
            rc = push(p, v);
            break;
        }
        case 'F': {                                            /* FLOAT (text) */
            char *s = read_line(p, NULL), *e;
            if (!s) goto out;
            pv *v = newv(p, PV_FLOAT);
            if (!v) goto out;
            v->u.f = strtod(s, &e);
            if (e == s) { fail(p, "bad float literal"); goto out; }
            rc = push(p, v);
            break;
        }
        case 'G': {                                            /* BINFLOAT (big-endian double) */
            if (!(b = rd_get(r, 8))) goto out;
            pv *v = newv(p, PV_FLOAT);
            if (v) v->u.f = be_double(b);
            rc = push(p, v);
            break;
        }
        case 'X': case 0x8c: case 0x8d: case 'T': case 'U': case 'B': case 'C': case 0x8e: case 0x96: {
            int lb = (op == 0x8c || op == 'U' || op == 'C') ? 1 : (op == 0x8d || op == 0x8e || op == 0x96) ? 8 : 4;
            if (!(b = rd_get(r, (size_t)lb))) goto out;
            uint64_t n = le_u(b, lb);
            if (op == 'T' && (int64_t)le_int(b, 4) < 0) { fail(p, "negative string length"); goto out; }
            int kind = (op == 'X' || op == 0x8c || op == 0x8d || op == 'T' || op == 'U') ? PV_STR : PV_BYTES;
            rc = push(p, read_str(p, kind, n));
            break;
        }
        case 'S': case 'V': {                                  /* STRING / UNICODE (text, protocol 0) */
            size_t n;
            char *s = read_line(p, &n);
            if (!s) goto out;
            if (op == 'S') {
                if (n < 2 || (s[0] != '\'' && s[0] != '"') || s[n - 1] != s[0]) { fail(p, "bad STRING literal"); goto out; }
                s[n - 1] = 0; s++; n -= 2;
            }
            rc = push(p, make_str(p, PV_STR, (const uint8_t *)s, n));
            break;
        }
        case ')': rc = push(p, make_seq(p, PV_TUPLE, NULL, 0)); break;
        case ']': rc = push(p, make_seq(p, PV_LIST, NULL, 0)); break;
        case '}': rc = push(p, newv(p, PV_DICT)); break;
        case 0x8f: rc = push(p, make_seq(p, PV_LIST, NULL, 0)); break;   /* EMPTY_SET, kept as a list */
        case 't': case 'l': case 0x91: {                       /* TUPLE, LIST, FROZENSET */
            size_t s, n;
            if (pop_mark(p, &s, &n) < 0) goto out;
            pv *v = make_seq(p, op == 't' ? PV_TUPLE : PV_LIST, n ? p->st + s : NULL, n);   /* st may be NULL */
            p->sp = s;
            rc = push(p, v);
            break;
        }
        case 0x85: case 0x86: case 0x87: {                     /* TUPLE1/2/3 */
            size_t n = (size_t)(op - 0x84);
            size_t floor = p->nm ? p->marks[p->nm - 1] : 0;
            if (p->sp - floor < n) { fail(p, "stack underflow"); goto out; }
            pv *v = make_seq(p, PV_TUPLE, p->st + p->sp - n, n);
            p->sp -= n;
            rc = push(p, v);
            break;
        }
        case 'd': {                                            /* DICT */
            size_t s, n;
            if (pop_mark(p, &s, &n) < 0) goto out;
            if (n % 2) { fail(p, "DICT with an odd number of items"); goto out; }
            pv *d = newv(p, PV_DICT);
            if (!d) goto out;
            for (size_t i = 0; i < n; i += 2)
                if (dict_set(p, d, p->st[s + i], p->st[s + i + 1]) < 0) goto out;
            p->sp = s;
            rc = push(p, d);
            break;
        }
        case 'a': {                                            /* APPEND */
            pv *x = pop(p), *l = x ? top(p) : NULL;
            if (!l) goto out;
            if (l->kind == PV_LIST) rc = seq_push(p, l, x);
            else if (l->kind == PV_OBJECT) {
                if (!l->u.obj.items && !(l->u.obj.items = make_seq(p, PV_LIST, NULL, 0))) goto out;
                rc = seq_push(p, l->u.obj.items, x);
            } else rc = fail(p, "APPEND to a value that is not a list");
            break;
        }
        case 'e': case 0x90: {                                 /* APPENDS, ADDITEMS */
            size_t s, n;
            if (pop_mark(p, &s, &n) < 0) goto out;
            if (s == 0 || (p->nm && p->marks[p->nm - 1] >= s)) { fail(p, "APPENDS without a list"); goto out; }
            pv *l = p->st[s - 1];
            if (l->kind == PV_OBJECT) {
                if (!l->u.obj.items && !(l->u.obj.items = make_seq(p, PV_LIST, NULL, 0))) goto out;
                l = l->u.obj.items;
            }
            if (l->kind != PV_LIST) { fail(p, "APPENDS to a value that is not a list"); goto out; }
            for (size_t i = 0; i < n; i++)
                if (seq_push(p, l, p->st[s + i]) < 0) goto out;
            p->sp = s;
            break;
        }
        case 's': {                                            /* SETITEM */
            pv *v = pop(p), *k = v ? pop(p) : NULL, *d = k ? top(p) : NULL;
            if (!d) goto out;
            if (d->kind != PV_DICT) { fail(p, "SETITEM on a value that is not a dict"); goto out; }
            rc = dict_set(p, d, k, v);
            break;
        }
        case 'u': {                                            /* SETITEMS */
            size_t s, n;
            if (pop_mark(p, &s, &n) < 0) goto out;
            if (s == 0 || (p->nm && p->marks[p->nm - 1] >= s)) { fail(p, "SETITEMS without a dict"); goto out; }
            pv *d = p->st[s - 1];
            if (d->kind != PV_DICT || n % 2) { fail(p, "SETITEMS on a value that is not a dict"); goto out; }
            for (size_t i = 0; i < n; i += 2)
                if (dict_set(p, d, p->st[s + i], p->st[s + i + 1]) < 0) goto out;
            p->sp = s;
            break;
        }
        case 'c': {                                            /* GLOBAL "module\nname\n" */
            char *m = read_line(p, NULL), *n = m ? read_line(p, NULL) : NULL;
            if (!n) goto out;
            rc = push(p, make_global(p, m, n));
            break;
        }
        case 0x93: {                                           /* STACK_GLOBAL */
            pv *n = pop(p), *m = n ? pop(p) : NULL;
            if (!m) goto out;
            if (m->kind != PV_STR || n->kind != PV_STR) { fail(p, "STACK_GLOBAL needs two strings"); goto out; }
            rc = push(p, make_global(p, m->u.str.s, n->u.str.s));
            break;
        }
        case 'R': {                                            /* REDUCE */
            pv *args = pop(p), *f = args ? pop(p) : NULL;
            if (!f) goto out;
            rc = push(p, apply(p, f, args, 0));
            break;
        }
        case 0x81: {                                           /* NEWOBJ */
            pv *args = pop(p), *cls = args ? pop(p) : NULL;
            if (!cls) goto out;
            rc = push(p, apply(p, cls, args, 1));
            break;
        }
        case 0x92: {                                           /* NEWOBJ_EX (kwargs ignored) */
            pv *kw = pop(p), *args = kw ? pop(p) : NULL, *cls = args ? pop(p) : NULL;
            if (!cls) goto out;
            rc = push(p, apply(p, cls, args, 1));
            break;
        }
        case 'b': rc = op_build(p); break;                     /* BUILD */
        case 'Q': case 'P': {                                  /* BINPERSID, PERSID */
            pv *pid;
            if (op == 'Q') { if (!(pid = pop(p))) goto out; }
            else {
                size_t n;
                char *s = read_line(p, &n);
                if (!s || !(pid = make_str(p, PV_STR, (const uint8_t *)s, n))) goto out;
            }
            if (!p->fn) { fail(p, "persistent id in a pickle that may not have one"); goto out; }
            rc = push(p, p->fn(p->user, p->a, pid));
            break;
        }
        case 'q': case 'r': case 'p': {                        /* BINPUT, LONG_BINPUT, PUT */
            uint64_t idx;
            if (op == 'p') {
                char *s = read_line(p, NULL), *e;
                if (!s) goto out;
                idx = strtoull(s, &e, 10);
                if (e == s || *e) { fail(p, "bad PUT index"); goto out; }
            } else {
                if (!(b = rd_get(r, op == 'q' ? 1 : 4))) goto out;
                idx = le_u(b, op == 'q' ? 1 : 4);
            }
            pv *t = top(p);
            rc = t ? memo_put(p, idx, t) : -1;
            break;
        }
        case 0x94: { pv *t = top(p); rc = t ? memo_put(p, p->memo_n, t) : -1; break; }   /* MEMOIZE */
        case 'h': case 'j': case 'g': {                        /* BINGET, LONG_BINGET, GET */
            uint64_t idx;
            if (op == 'g') {
                char *s = read_line(p, NULL), *e;
                if (!s) goto out;
                idx = strtoull(s, &e, 10);
                if (e == s || *e) { fail(p, "bad GET index"); goto out; }
            } else {
                if (!(b = rd_get(r, op == 'h' ? 1 : 4))) goto out;
                idx = le_u(b, op == 'h' ? 1 : 4);
            }
            rc = memo_get(p, idx);
            break;
        }
        default:
            fail(p, "unsupported opcode");
            goto out;
        }
        if (rc < 0) goto out;
    }
out:
    free(p->st);
    free(p->marks);
    free(p->memo);
    return result;
}
