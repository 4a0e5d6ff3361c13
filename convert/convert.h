/* convert.h - internals of dit-convert: checkpoint readers (torch zip, legacy torch.save, safetensors),
   the restricted unpickler, a small JSON reader. Nothing here executes anything from a checkpoint.

   Errors: functions return 0 / NULL on failure and leave a one-line message in dit_last_error()
   (dit_set_error), prefixed with the file name. Code 2 (DIT_ERR_INPUT) = the file is wrong,
   1 (DIT_ERR_IO) = reading failed. */
#ifndef DIT_CONVERT_H
#define DIT_CONVERT_H

#include <stddef.h>
#include <stdint.h>

/* sets the error (dit_set_error, control bytes of file-supplied names escaped as \xNN), returns -1 */
int ck_error(int code, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;
#define CK_ERR(...) ck_error(__VA_ARGS__)

/* ---------------------------------------------------------------- limits (all inputs are untrusted) */
#define CK_MAX_PICKLE      (256u << 20)   /* data.pkl / one legacy pickle, bytes */
#define CK_MAX_ARENA       (1024u << 20)  /* all values built by one unpickling, bytes */
#define CK_MAX_STRING      (64u << 20)    /* one string / bytes object */
#define CK_MAX_STACK       (1u << 22)     /* pickle stack items */
#define CK_MAX_MARKS       (1u << 16)     /* nested MARKs */
#define CK_MAX_MEMO        (1u << 22)     /* memo index */
#define CK_MAX_DIMS        8
#define CK_MAX_ZIP_ENTRIES (1u << 20)
#define CK_MAX_ST_HEADER   100000000ull   /* safetensors header cap (reference library's MAX_HEADER_SIZE) */
#define CK_MAX_JSON_DEPTH  64
#define CK_MAX_WALK_DEPTH  64             /* depth when walking unpickled values */

/* ---------------------------------------------------------------- element types of stored tensors */
enum { CK_F32, CK_F16, CK_BF16, CK_F64, CK_I64, CK_I32, CK_I16, CK_I8, CK_U8, CK_BOOL, CK_F8, CK_C64, CK_C128,
       CK_U16, CK_U32, CK_U64 };
const char *ck_dtype_name(int dt);
int ck_dtype_size(int dt);              /* bytes per element */

/* ---------------------------------------------------------------- storages and tensors */
enum { CK_LOC_FILE, CK_LOC_DEFLATE };
typedef struct ck_storage {
    char *key;              /* pickle storage key ("0", "94532..."), or the tensor name (safetensors) */
    int dtype;
    uint64_t numel;         /* elements */
    int loc;                /* CK_LOC_* (resolved by the container) */
    uint64_t off;           /* CK_LOC_FILE: file offset of element 0; CK_LOC_DEFLATE: compressed data offset */
    uint64_t csize;         /* CK_LOC_DEFLATE: compressed bytes */
    struct ck_storage *root;  /* legacy storage views: the root storage, root_off elements in */
    uint64_t root_off;
    int resolved;
} ck_storage;

typedef struct ck_tensor {
    ck_storage *st;
    int64_t offset;                  /* elements into the storage */
    int ndim;
    int64_t size[CK_MAX_DIMS];       /* PyTorch order */
    int64_t stride[CK_MAX_DIMS];     /* elements */
    int64_t numel;
    int64_t span;                    /* storage elements touched from offset (1 + sum (size-1)*stride) */
    int contiguous;
} ck_tensor;

/* ---------------------------------------------------------------- unpickled values */
enum {
    PV_NONE, PV_BOOL, PV_INT, PV_BIGINT, PV_FLOAT, PV_STR, PV_BYTES, PV_TUPLE, PV_LIST, PV_DICT,
    PV_GLOBAL, PV_OBJECT, PV_STORAGE, PV_TENSOR, PV_MARK,
};
typedef struct pv pv;
struct pv {
    int kind;
    union {
        int64_t i;                                            /* BOOL, INT */
        double f;                                             /* FLOAT */
        struct { char *s; size_t n; } str;                    /* STR (utf-8, NUL-terminated), BYTES, BIGINT (LE) */
        struct { pv **v; size_t n, cap; } seq;                /* TUPLE, LIST */
        struct { pv **k, **v; size_t n, cap; } dict;          /* DICT (insertion order, no dedup) */
        struct { char *module, *name; int id; } glob;         /* GLOBAL: id = whitelist entry, -1 = unknown */
        struct { pv *cls, *args, *state; pv *items; } obj;    /* OBJECT (opaque or Namespace) */
        ck_storage *storage;
        ck_tensor *tensor;
    } u;
};

typedef struct ck_arena ck_arena;
ck_arena *ck_arena_new(size_t cap, const char *path);   /* path: for error messages, must outlive the arena */
void *ck_arena_alloc(ck_arena *a, size_t n);     /* zeroed; NULL + error when the cap is reached */
char *ck_arena_strdup(ck_arena *a, const char *s, size_t n);
void ck_arena_free(ck_arena *a);

/* byte source for the unpickler: a memory buffer, or a file region read through a buffer */
typedef struct ck_reader {
    const uint8_t *mem; size_t memlen;   /* memory source */
    int fd; uint64_t fpos, fend;         /* file source: next file offset to buffer, end of region */
    uint8_t *buf; size_t blen, bpos;
    uint64_t consumed;                   /* bytes handed out so far (pickle offsets in errors) */
    const char *path;
} ck_reader;
void ck_reader_mem(ck_reader *r, const char *path, const void *p, size_t n);
int ck_reader_file(ck_reader *r, const char *path, int fd, uint64_t off, uint64_t end);
void ck_reader_done(ck_reader *r);
uint64_t ck_reader_tell(const ck_reader *r);    /* file offset of the next byte (file source) */

/* persistent_load callback: pid value -> PV_STORAGE (or NULL + error) */
typedef pv *(*pk_persistent_fn)(void *user, ck_arena *a, pv *pid);
/* Unpickles one pickle (PROTO 2..5 required unless allow_proto0) from r. NULL + error on failure. */
pv *pk_load(ck_reader *r, ck_arena *a, pk_persistent_fn fn, void *user, int allow_proto0);
int pk_storage_dtype(const pv *g);     /* CK_* of a torch.<X>Storage global, -1 otherwise */
int pk_global_is_tensor_kind(const pv *g);   /* 1 for torch._utils rebuild functions we do not support */

/* value helpers */
pv *pv_dict_get(const pv *d, const char *key);     /* last value of a string key, or NULL */
const char *pv_kind_name(const pv *v);
/* "module.name" of a GLOBAL, or of an OBJECT's class, into buf */
const char *pv_global_name(const pv *v, char *buf, size_t n);
/* first unknown global (opaque object / unknown global) inside v; NULL if none. Depth-limited, and visits at
   most 2^20 values (shared memo references make the tree walk of a small pickle exponential). */
const pv *pv_find_opaque(const pv *v, int depth);

/* ---------------------------------------------------------------- checkpoint files */
enum { CK_FMT_ZIP, CK_FMT_LEGACY, CK_FMT_SAFETENSORS };
typedef struct ck_file ck_file;
/* Opens and parses a checkpoint (format sniffed from the bytes). root: the unpickled object
   (safetensors: a DICT of tensors). NULL + error. */
ck_file *ck_open(const char *path, pv **root);
void ck_close(ck_file *f);
int ck_format(const ck_file *f);
const char *ck_path(const ck_file *f);
uint64_t ck_file_size(const ck_file *f);
/* Reads tensor t into dst as a contiguous array of numel elements of its storage dtype
   (F64 stays F64 here). tmp/tmpcap: scratch reused between calls (may be realloc'ed). */
int ck_read_tensor(ck_file *f, const ck_tensor *t, void *dst, void **tmp, size_t *tmpcap);
ck_arena *ck_file_arena(ck_file *f);

/* ---------------------------------------------------------------- JSON (bounded, for safetensors headers and config.json) */
enum { JS_NULL, JS_BOOL, JS_NUM, JS_STR, JS_ARR, JS_OBJ };
typedef struct js js;
struct js {
    int kind;
    int b;
    double num;
    int is_int; int64_t i;        /* JS_NUM written as an integer that fits int64 */
    char *s; size_t slen;         /* JS_STR */
    js **v; char **k; size_t n;   /* JS_ARR values; JS_OBJ keys + values */
};
/* Parses text[0..n) (must be one JSON value, whitespace around it allowed). NULL + error naming path. */
js *js_parse(ck_arena *a, const char *path, const char *text, size_t n);
js *js_get(const js *o, const char *key);    /* NULL if absent or o is not an object */

/* ---------------------------------------------------------------- embedded data */
extern const char dit_imagenet_classes_txt[];     /* convert/imagenet_classes.txt, NUL-terminated */

#endif
