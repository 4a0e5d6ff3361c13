/* convert.c - dit-convert: a DiT checkpoint (+ optional SD VAE) -> one GGUF file.

   dit-convert CHECKPOINT [--vae VAE] [-o OUT.gguf] [--outtype f32|f16|bf16] [--name NAME] [--heads N]
               [--use-model] [--class-names FILE] [--cfg-channels N] [-v]

   Steps: open the checkpoint (convert/ckpt.c), pick the state_dict (train.py "ema", or "model" with
   --use-model, or a {"state_dict"}/{"model"} wrapper, "module." prefix stripped), infer the DiT config
   from the shapes and check every tensor against it, map the VAE decoder to diffusers names, declare
   KVs and tensors to the GGUF writer, then stream the tensors one by one (read, convert, write). */
#include "convert/convert.h"
#include "dit.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROG "dit-convert"

typedef struct {
    const char *ckpt, *vae, *out, *name, *class_names;
    int outtype;          /* -1: keep (f32, or f16/bf16 for f16/bf16 weights) */
    int heads, cfg_channels, use_model, verbose, raw;
} options;

/* one tensor of the output file */
typedef struct {
    char name[DIT_GGUF_MAX_NAME + 1];
    const char *src_name;   /* name in its checkpoint */
    ck_file *file;
    ck_tensor t;            /* possibly squeezed copy */
    int type;               /* output ggml type */
} out_tensor;

/* a named tensor of a selected state_dict */
typedef struct { const char *name; ck_tensor *t; } entry;
typedef struct { entry *e; size_t n; ck_file *file; } tensor_set;

static int entry_cmp(const void *a, const void *b) { return strcmp(((const entry *)a)->name, ((const entry *)b)->name); }

static ck_tensor *set_find(const tensor_set *s, const char *name) {
    entry k = {.name = name};
    entry *e = bsearch(&k, s->e, s->n, sizeof *s->e, entry_cmp);
    return e ? e->t : NULL;
}

static void usage(FILE *f) {
    fprintf(f,
        "usage: " PROG " CHECKPOINT [options]\n"
        "Converts a DiT checkpoint (torch .pt/.pth zip or legacy, or .safetensors) and optionally an SD VAE\n"
        "into one GGUF file for dit-sample.\n\n"
        "  -o, --output OUT.gguf    output file (default: CHECKPOINT's stem + .gguf, beside it)\n"
        "  --vae VAE                add the VAE decoder: a .safetensors/.pt/.ckpt file (diffusers, legacy\n"
        "                           diffusers or original LDM names) or a diffusers vae directory\n"
        "  --outtype f32|f16|bf16   type of 2-D+ weights (default: keep: f32, or the checkpoint's f16/bf16);\n"
        "                           1-D tensors (biases, norms) and pos_embed always stay f32\n"
        "  --name NAME              general.name (default: the checkpoint's stem)\n"
        "  --heads N                attention heads (needed when the hidden size is not a DiT size)\n"
        "  --use-model              from a train.py checkpoint take \"model\" instead of \"ema\"\n"
        "  --class-names FILE       class names, one per line (default: ImageNet names for 1000 classes)\n"
        "  --cfg-channels N         channels guided by CFG (default: 3 when in_channels is 4, else all)\n"
        "  --raw                    write every tensor of the state_dict as it is, without DiT checks or dit.*\n"
        "                           KVs (general.architecture \"raw\"; for inspection, not loadable by dit-sample)\n"
        "  -v, --verbose            list every tensor\n"
        "  -h, --help               this help\n");
}

static int die_usage(const char *fmt, const char *a) {
    fprintf(stderr, PROG ": error: ");
    fprintf(stderr, fmt, a);
    fprintf(stderr, " (see --help)\n");
    return 2;
}

static int parse_int(const char *s, int lo, int hi, int *out) {
    char *e;
    errno = 0;
    long v = strtol(s, &e, 10);
    if (e == s || *e || errno || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

/* 1 if s is valid UTF-8 (no overlong forms, no surrogates, <= U+10FFFF) */
static int utf8_ok(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p, n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : 9;
        if (n == 9) return 0;
        uint32_t cp = n ? c & (0x3Fu >> n) : c;
        for (unsigned i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3Fu);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp < 0xE000))
            return 0;
        p += n + 1;
    }
    return 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void shape_str(const int64_t *s, int nd, char *buf, size_t n) {
    size_t l = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < nd && l < n; i++) l += (size_t)snprintf(buf + l, n - l, i ? ", %lld" : "%lld", (long long)s[i]);
    if (l < n) snprintf(buf + l, n - l, "]");
}

/* ---------------------------------------------------------------- state_dict selection */
static int select_state_dict(const char *path, pv *root, int use_model, pv **out, const char **which) {
    *which = NULL;
    char g[256];
    if (!root || root->kind != PV_DICT) {
        if (root && root->kind == PV_OBJECT)
            return CK_ERR(DIT_ERR_INPUT, "%s: the checkpoint holds an object of class %s (a pickled module?), "
                          "not a state_dict", path, pv_global_name(root, g, sizeof g));
        return CK_ERR(DIT_ERR_INPUT, "%s: the checkpoint holds a %s, not a state_dict", path, pv_kind_name(root));
    }
    pv *d = root;
    if (use_model) {
        pv *m = pv_dict_get(d, "model");
        if (!m || m->kind != PV_DICT)
            return CK_ERR(DIT_ERR_INPUT, "%s: --use-model: the checkpoint has no \"model\" dict (not a train.py "
                          "checkpoint)", path);
        d = m;
        *which = "model";
    }
    for (int level = 0; level < 4; level++) {
        static const char *const wrappers[] = {"ema", "model", "state_dict"};
        pv *next = NULL;
        for (int i = 0; i < 3 && !next; i++) {
            pv *x = pv_dict_get(d, wrappers[i]);
            if (x && x->kind == PV_DICT) { next = x; if (!*which) *which = wrappers[i]; }
        }
        if (!next) break;
        d = next;
    }
    *out = d;
    return 0;
}

/* named tensors of dict d; "prefix" (e.g. "first_stage_model.") selects and strips, NULL = all */
static int collect(const char *path, ck_file *file, const pv *d, tensor_set *s, int verbose) {
    s->e = calloc(d->u.dict.n ? d->u.dict.n : 1, sizeof *s->e);
    s->n = 0;
    s->file = file;
    if (!s->e) return CK_ERR(DIT_ERR_NOMEM, "out of memory");
    char g[256];
    for (size_t i = 0; i < d->u.dict.n; i++) {
        const pv *k = d->u.dict.k[i], *v = d->u.dict.v[i];
        if (k->kind != PV_STR)
            return CK_ERR(DIT_ERR_INPUT, "%s: the state_dict has a %s key, expected strings", path, pv_kind_name(k));
        if (v->kind == PV_TENSOR) { s->e[s->n].name = k->u.str.s; s->e[s->n].t = v->u.tensor; s->n++; continue; }
        if (v->kind == PV_OBJECT || v->kind == PV_GLOBAL) {
            const pv *c = v->kind == PV_OBJECT ? v->u.obj.cls : v;
            if (pk_global_is_tensor_kind(c))
                return CK_ERR(DIT_ERR_INPUT, "%s: '%s' is a tensor rebuilt by %s (quantized, sparse, meta or device "
                              "tensors are not supported)", path, k->u.str.s, pv_global_name(c, g, sizeof g));
            return CK_ERR(DIT_ERR_INPUT, "%s: '%s' in the state_dict is an object of unsupported pickle global %s, "
                          "not a tensor", path, k->u.str.s, pv_global_name(v, g, sizeof g));
        }
        if (v->kind == PV_DICT || v->kind == PV_LIST || v->kind == PV_TUPLE)
            return CK_ERR(DIT_ERR_INPUT, "%s: '%s' in the state_dict is a %s, not a tensor", path, k->u.str.s,
                          pv_kind_name(v));
        if (verbose) fprintf(stderr, PROG ": %s: skipping non-tensor entry '%s' (%s)\n", path, k->u.str.s, pv_kind_name(v));
    }
    /* DistributedDataParallel "module." prefix */
    size_t nm = 0;
    for (size_t i = 0; i < s->n; i++) nm += !strncmp(s->e[i].name, "module.", 7);
    if (nm && nm == s->n)
        for (size_t i = 0; i < s->n; i++) s->e[i].name += 7;
    qsort(s->e, s->n, sizeof *s->e, entry_cmp);
    for (size_t i = 1; i < s->n; i++)
        if (!strcmp(s->e[i].name, s->e[i - 1].name))
            return CK_ERR(DIT_ERR_INPUT, "%s: tensor '%s' appears twice", path, s->e[i].name);
    return 0;
}

/* ---------------------------------------------------------------- output list */
typedef struct { out_tensor *t; size_t n, cap; } out_list;

static int check_dtype(const char *path, const char *name, const ck_tensor *t) {
    int dt = t->st->dtype;
    if (dt != CK_F32 && dt != CK_F16 && dt != CK_BF16 && dt != CK_F64)
        return CK_ERR(DIT_ERR_INPUT, "%s: tensor '%s' has dtype %s; only float32, float16, bfloat16 and float64 "
                      "weights are supported", path, name, ck_dtype_name(dt));
    return 0;
}

/* expects tensor `name` of shape s[0..nd) in set; appends it to the output list */
static int expect(out_list *o, const tensor_set *set, const char *src_name, const char *out_name, int nd, const int64_t *s,
                  int squeeze_ok, const options *opt, const char *ctx) {
    const char *path = ck_path(set->file);
    ck_tensor *t = set_find(set, src_name);
    char want[128], got[128];
    shape_str(s, nd, want, sizeof want);
    if (!t) return CK_ERR(DIT_ERR_INPUT, "%s: missing tensor '%s' (expected shape %s%s)", path, src_name, want, ctx);
    ck_tensor c = *t;
    if (squeeze_ok && c.ndim == nd + 2 && c.size[nd] == 1 && c.size[nd + 1] == 1) c.ndim = nd;  /* 1x1 conv -> linear */
    int same = c.ndim == nd;
    for (int i = 0; same && i < nd; i++) same = c.size[i] == s[i];
    if (!same) {
        shape_str(t->size, t->ndim, got, sizeof got);
        return CK_ERR(DIT_ERR_INPUT, "%s: tensor '%s' has shape %s, expected %s%s", path, src_name, got, want, ctx);
    }
    if (check_dtype(path, src_name, t) < 0) return -1;
    if (!utf8_ok(out_name)) return CK_ERR(DIT_ERR_INPUT, "%s: tensor name is not valid UTF-8", path);
    if (strlen(out_name) > DIT_GGUF_MAX_NAME)
        return CK_ERR(DIT_ERR_INPUT, "%s: tensor name '%s' is longer than %d bytes", path, out_name, DIT_GGUF_MAX_NAME);
    if (o->n == o->cap) {
        size_t nc = o->cap ? o->cap * 2 : 512;
        out_tensor *nt = realloc(o->t, nc * sizeof *nt);
        if (!nt) return CK_ERR(DIT_ERR_NOMEM, "out of memory");
        o->t = nt; o->cap = nc;
    }
    out_tensor *x = &o->t[o->n++];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", out_name);
    x->src_name = src_name;
    x->file = set->file;
    x->t = c;
    /* output type: 1-D tensors and pos_embed stay f32; 2-D+ weights per --outtype, else keep f16/bf16 */
    int dt = t->st->dtype;
    if (c.ndim < 2 || !strcmp(out_name, "pos_embed")) x->type = DIT_TYPE_F32;
    else if (opt->outtype >= 0) x->type = opt->outtype;
    else x->type = dt == CK_F16 ? DIT_TYPE_F16 : dt == CK_BF16 ? DIT_TYPE_BF16 : DIT_TYPE_F32;
    return 0;
}

/* ---------------------------------------------------------------- DiT */
typedef struct {
    int depth, hidden, heads, patch, input_size, in_ch, out_ch, learn_sigma, num_classes, mlp_hidden, cfg_channels;
    int freq;
} dit_cfg;

static int heads_for(int hidden) {
    switch (hidden) {   /* official DiT table (models.py): S 384/6, B 768/12, L 1024/16, XL 1152/16 */
    case 384: return 6;
    case 768: return 12;
    case 1024: return 16;
    case 1152: return 16;
    default: return 0;
    }
}

static int dit_infer(const tensor_set *s, const options *opt, dit_cfg *c) {
    const char *path = ck_path(s->file);
    char got[128];
    memset(c, 0, sizeof *c);
    ck_tensor *xe = set_find(s, "x_embedder.proj.weight");
    if (!xe) {
        if (set_find(s, "decoder.conv_in.weight") || set_find(s, "first_stage_model.decoder.conv_in.weight"))
            return CK_ERR(DIT_ERR_INPUT, "%s: this is a VAE, not a DiT checkpoint (pass it with --vae)", path);
        return CK_ERR(DIT_ERR_INPUT, "%s: not a DiT state_dict: tensor 'x_embedder.proj.weight' is missing (%zu "
                      "tensors%s%s)", path, s->n, s->n ? ", e.g. " : "", s->n ? s->e[0].name : "");
    }
    shape_str(xe->size, xe->ndim, got, sizeof got);
    if (xe->ndim != 4 || xe->size[2] != xe->size[3] || xe->size[2] < 1 || xe->size[0] < 1 || xe->size[1] < 1 ||
        xe->size[0] > (1 << 16) || xe->size[1] > 4096 || xe->size[2] > 64)
        return CK_ERR(DIT_ERR_INPUT, "%s: tensor 'x_embedder.proj.weight' has shape %s, expected [hidden, "
                      "in_channels, patch, patch]", path, got);
    c->hidden = (int)xe->size[0];
    c->in_ch = (int)xe->size[1];
    c->patch = (int)xe->size[2];
    ck_tensor *pe = set_find(s, "pos_embed");
    if (!pe) return CK_ERR(DIT_ERR_INPUT, "%s: missing tensor 'pos_embed' (expected shape [1, T, %d])", path, c->hidden);
    shape_str(pe->size, pe->ndim, got, sizeof got);
    if (pe->ndim != 3 || pe->size[0] != 1 || pe->size[2] != c->hidden || pe->size[1] < 1 || pe->size[1] > (1 << 24))
        return CK_ERR(DIT_ERR_INPUT, "%s: tensor 'pos_embed' has shape %s, expected [1, T, %d]", path, got, c->hidden);
    int64_t T = pe->size[1], g = (int64_t)llround(sqrt((double)T));
    if (g * g != T)
        return CK_ERR(DIT_ERR_INPUT, "%s: tensor 'pos_embed' has %lld tokens, not a square grid", path, (long long)T);
    c->input_size = (int)(g * c->patch);
    /* depth: blocks.N.* must be 0..depth-1 */
    int maxb = -1;
    for (size_t i = 0; i < s->n; i++) {
        const char *n = s->e[i].name;
        if (strncmp(n, "blocks.", 7)) continue;
        char *e;
        long b = strtol(n + 7, &e, 10);
        if (e == n + 7 || *e != '.' || b < 0 || b > 4096)
            return CK_ERR(DIT_ERR_INPUT, "%s: unexpected tensor '%s' (not part of a DiT)", path, n);
        if (b > maxb) maxb = (int)b;
    }
    if (maxb < 0) return CK_ERR(DIT_ERR_INPUT, "%s: no transformer blocks (blocks.N.*) in the state_dict", path);
    c->depth = maxb + 1;
    ck_tensor *fl = set_find(s, "final_layer.linear.weight");
    if (!fl) return CK_ERR(DIT_ERR_INPUT, "%s: missing tensor 'final_layer.linear.weight'", path);
    int64_t pp = (int64_t)c->patch * c->patch;
    if (fl->ndim != 2 || fl->size[0] % pp || fl->size[0] == 0) {
        shape_str(fl->size, fl->ndim, got, sizeof got);
        return CK_ERR(DIT_ERR_INPUT, "%s: tensor 'final_layer.linear.weight' has shape %s, expected [%lld * "
                      "out_channels, %d]", path, got, (long long)pp, c->hidden);
    }
    c->out_ch = (int)(fl->size[0] / pp);
    c->learn_sigma = c->out_ch == 2 * c->in_ch;
    ck_tensor *y = set_find(s, "y_embedder.embedding_table.weight");
    if (!y) return CK_ERR(DIT_ERR_INPUT, "%s: missing tensor 'y_embedder.embedding_table.weight' (class-conditional "
                          "DiTs only)", path);
    if (y->ndim != 2 || y->size[0] < 2 || y->size[0] > (1 << 24)) {
        shape_str(y->size, y->ndim, got, sizeof got);
        return CK_ERR(DIT_ERR_INPUT, "%s: tensor 'y_embedder.embedding_table.weight' has shape %s, expected "
                      "[num_classes + 1, %d]", path, got, c->hidden);
    }
    c->num_classes = (int)y->size[0] - 1;
    ck_tensor *fc1 = set_find(s, "blocks.0.mlp.fc1.weight");
    if (!fc1 || fc1->ndim != 2 || fc1->size[0] < 1 || fc1->size[0] > (1 << 20))
        return CK_ERR(DIT_ERR_INPUT, "%s: missing or misshapen tensor 'blocks.0.mlp.fc1.weight'", path);
    c->mlp_hidden = (int)fc1->size[0];
    ck_tensor *t0 = set_find(s, "t_embedder.mlp.0.weight");
    c->freq = t0 && t0->ndim == 2 ? (int)t0->size[1] : 256;
    if (c->freq != 256)
        return CK_ERR(DIT_ERR_INPUT, "%s: tensor 't_embedder.mlp.0.weight' has %d input features, expected 256 "
                      "(the DiT frequency embedding size)", path, c->freq);
    c->heads = opt->heads ? opt->heads : heads_for(c->hidden);
    if (!c->heads)
        return CK_ERR(DIT_ERR_INPUT, "%s: cannot infer the number of attention heads for hidden size %d (not a "
                      "DiT-S/B/L/XL size); pass --heads N", path, c->hidden);
    if (c->hidden % c->heads)
        return CK_ERR(DIT_ERR_INPUT, "%s: hidden size %d is not divisible by %d heads", path, c->hidden, c->heads);
    c->cfg_channels = opt->cfg_channels ? opt->cfg_channels : c->in_ch == 4 ? 3 : c->in_ch;
    if (c->cfg_channels > c->in_ch)
        return CK_ERR(DIT_ERR_INPUT, "%s: --cfg-channels %d is more than the model's %d input channels", path,
                      c->cfg_channels, c->in_ch);
    return 0;
}

static int dit_validate(out_list *o, const tensor_set *s, const dit_cfg *c, const options *opt) {
    int64_t D = c->hidden, F = c->mlp_hidden, p = c->patch, T = (int64_t)(c->input_size / p) * (c->input_size / p);
    char ctx[160];
    snprintf(ctx, sizeof ctx, " for depth %d, hidden %d, patch %d, input %d", c->depth, c->hidden, c->patch,
             c->input_size);
#define E(name, ...) do { int64_t sh_[] = {__VA_ARGS__}; \
        if (expect(o, s, name, name, (int)(sizeof sh_ / sizeof *sh_), sh_, 0, opt, ctx) < 0) return -1; } while (0)
    E("pos_embed", 1, T, D);
    E("x_embedder.proj.weight", D, c->in_ch, p, p);
    E("x_embedder.proj.bias", D);
    E("t_embedder.mlp.0.weight", D, c->freq);
    E("t_embedder.mlp.0.bias", D);
    E("t_embedder.mlp.2.weight", D, D);
    E("t_embedder.mlp.2.bias", D);
    E("y_embedder.embedding_table.weight", c->num_classes + 1, D);
    ck_arena *arena = ck_file_arena(s->file);   /* block tensor names must outlive the output list */
    for (int b = 0; b < c->depth; b++) {
        static const char *const suffix[10] = {
            "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias", "mlp.fc1.weight",
            "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "adaLN_modulation.1.weight", "adaLN_modulation.1.bias"};
        int64_t shapes[10][2] = {{3 * D, D}, {3 * D}, {D, D}, {D}, {F, D}, {F}, {D, F}, {D}, {6 * D, D}, {6 * D}};
        for (int k = 0; k < 10; k++) {
            char tmp[64];
            snprintf(tmp, sizeof tmp, "blocks.%d.%s", b, suffix[k]);
            char *nm = ck_arena_strdup(arena, tmp, strlen(tmp));
            if (!nm) return -1;
            if (expect(o, s, nm, nm, k % 2 == 0 ? 2 : 1, shapes[k], 0, opt, ctx) < 0) return -1;
        }
    }
    E("final_layer.linear.weight", p * p * c->out_ch, D);
    E("final_layer.linear.bias", p * p * c->out_ch);
    E("final_layer.adaLN_modulation.1.weight", 2 * D, D);
    E("final_layer.adaLN_modulation.1.bias", 2 * D);
#undef E
    if (o->n != s->n) {   /* every checkpoint tensor must be an expected one */
        for (size_t i = 0; i < s->n; i++) {
            int found = 0;
            for (size_t j = 0; j < o->n && !found; j++) found = !strcmp(o->t[j].name, s->e[i].name);
            if (!found) return CK_ERR(DIT_ERR_INPUT, "%s: unexpected tensor '%s' (not part of a DiT%s)",
                                      ck_path(s->file), s->e[i].name, ctx);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- VAE */
typedef struct {
    int n_blocks, layers, groups, latent, out_ch, block_out[DIT_VAE_MAX_BLOCKS];
    float scaling;
    const char *config;     /* config.json used, or NULL */
} vae_cfg;

typedef struct { char *src; char *dst; ck_tensor *t; } vae_map;

/* dst = a[0..alen) + b; -1 (error) when it does not fit */
static int join(char *dst, size_t n, const char *a, size_t alen, const char *b) {
    size_t bl = strlen(b);
    if (alen + bl + 1 > n) return CK_ERR(DIT_ERR_INPUT, "%.*s%s: path too long", (int)alen, a, b);
    memmove(dst, a, alen);
    memcpy(dst + alen, b, bl + 1);
    return 0;
}

static int file_exists(const char *p, int want_dir) {
    struct stat sb;
    return stat(p, &sb) == 0 && (want_dir ? S_ISDIR(sb.st_mode) : S_ISREG(sb.st_mode));
}

/* diffusers name for an LDM / legacy / diffusers decoder key (prefix already stripped); NULL = skip */
static const char *vae_rename(const char *k, int ldm, int nb, char *buf, size_t n, int *bad) {
    *bad = 0;
    if (!strncmp(k, "encoder.", 8) || !strncmp(k, "quant_conv.", 11) || !strncmp(k, "loss.", 5) ||
        !strncmp(k, "model_ema.", 10))
        return NULL;
    if (!strncmp(k, "post_quant_conv.", 16)) return k;
    if (strncmp(k, "decoder.", 8)) { *bad = 1; return NULL; }
    const char *r = k + 8;
    char tail[256];
    if (ldm) {
        int a, b;
        if (!strncmp(r, "mid.block_", 10) && sscanf(r + 10, "%d.%255s", &a, tail) == 2 && (a == 1 || a == 2)) {
            int sc = !strncmp(tail, "nin_shortcut.", 13);
            snprintf(buf, n, "decoder.mid_block.resnets.%d.%s%s", a - 1, sc ? "conv_shortcut." : "", tail + (sc ? 13 : 0));
            return buf;
        }
        if (!strncmp(r, "mid.attn_1.", 11)) {
            static const char *const m[][2] = {{"norm.", "group_norm."}, {"q.", "to_q."}, {"k.", "to_k."},
                                               {"v.", "to_v."}, {"proj_out.", "to_out.0."}};
            for (int i = 0; i < 5; i++)
                if (!strncmp(r + 11, m[i][0], strlen(m[i][0]))) {
                    snprintf(buf, n, "decoder.mid_block.attentions.0.%s%s", m[i][1], r + 11 + strlen(m[i][0]));
                    return buf;
                }
            *bad = 1;
            return NULL;
        }
        if (!strncmp(r, "up.", 3)) {
            if (sscanf(r + 3, "%d.block.%d.%255s", &a, &b, tail) == 3 && a >= 0 && a < nb && b >= 0) {
                int sc = !strncmp(tail, "nin_shortcut.", 13);
                snprintf(buf, n, "decoder.up_blocks.%d.resnets.%d.%s%s", nb - 1 - a, b, sc ? "conv_shortcut." : "",
                         tail + (sc ? 13 : 0));
                return buf;
            }
            if (sscanf(r + 3, "%d.upsample.conv.%255s", &a, tail) == 2 && a >= 0 && a < nb) {
                snprintf(buf, n, "decoder.up_blocks.%d.upsamplers.0.conv.%s", nb - 1 - a, tail);
                return buf;
            }
            *bad = 1;
            return NULL;
        }
        if (!strncmp(r, "norm_out.", 9)) { snprintf(buf, n, "decoder.conv_norm_out.%s", r + 9); return buf; }
        return k;   /* conv_in, conv_out */
    }
    static const char *const legacy[][2] = {{"query.", "to_q."}, {"key.", "to_k."}, {"value.", "to_v."},
                                            {"proj_attn.", "to_out.0."}};
    const char *att = "mid_block.attentions.0.";
    if (!strncmp(r, att, strlen(att)))
        for (int i = 0; i < 4; i++)
            if (!strncmp(r + strlen(att), legacy[i][0], strlen(legacy[i][0]))) {
                snprintf(buf, n, "decoder.%s%s%s", att, legacy[i][1], r + strlen(att) + strlen(legacy[i][0]));
                return buf;
            }
    return k;
}

static int num_field(const char *path, const js *cfg, const char *key, int lo, int hi, int *out) {
    const js *v = js_get(cfg, key);
    if (!v) return 0;
    if (v->kind != JS_NUM || !v->is_int || v->i < lo || v->i > hi)
        return CK_ERR(DIT_ERR_INPUT, "%s: config.json: \"%s\" is not an integer in [%d, %d]", path, key, lo, hi);
    *out = (int)v->i;
    return 1;
}

/* reads config.json (bounded) into c; returns 1 if used, 0 if absent/not a VAE config (file mode), -1 error */
static int vae_read_config(const char *cfgpath, int required, vae_cfg *c, int *have_blocks, int *have_layers,
                           int *have_latent, int *have_out, ck_arena *a) {
    FILE *f = fopen(cfgpath, "rb");
    if (!f) return required ? CK_ERR(DIT_ERR_INPUT, "%s: cannot open: %s", cfgpath, strerror(errno)) : 0;
    char *buf = malloc((1u << 20) + 1);
    if (!buf) { fclose(f); return CK_ERR(DIT_ERR_NOMEM, "out of memory"); }
    size_t n = fread(buf, 1, (1u << 20) + 1, f);
    fclose(f);
    if (n > (1u << 20)) { free(buf); return required ? CK_ERR(DIT_ERR_INPUT, "%s: larger than 1 MB", cfgpath) : 0; }
    js *j = js_parse(a, cfgpath, buf, n);
    free(buf);
    if (!j) return required ? -1 : 0;
    const js *cls = js_get(j, "_class_name");
    if (j->kind != JS_OBJ || (cls && (cls->kind != JS_STR || strcmp(cls->s, "AutoencoderKL")))) {
        if (!required) return 0;
        return CK_ERR(DIT_ERR_INPUT, "%s: not an AutoencoderKL config (\"_class_name\": %s)", cfgpath,
                      cls && cls->kind == JS_STR ? cls->s : "?");
    }
    if (!required && !cls) return 0;   /* beside a file: only a config that says it is a VAE's */
    const js *bo = js_get(j, "block_out_channels");
    if (bo) {
        if (bo->kind != JS_ARR || bo->n < 1 || bo->n > DIT_VAE_MAX_BLOCKS)
            return CK_ERR(DIT_ERR_INPUT, "%s: \"block_out_channels\" must be a list of 1-%d integers", cfgpath,
                          DIT_VAE_MAX_BLOCKS);
        for (size_t i = 0; i < bo->n; i++) {
            if (bo->v[i]->kind != JS_NUM || !bo->v[i]->is_int || bo->v[i]->i < 1 || bo->v[i]->i > 65536)
                return CK_ERR(DIT_ERR_INPUT, "%s: \"block_out_channels\" must be a list of positive integers", cfgpath);
            c->block_out[i] = (int)bo->v[i]->i;
        }
        c->n_blocks = (int)bo->n;
        *have_blocks = 1;
    }
    int r;
    if ((r = num_field(cfgpath, j, "layers_per_block", 1, DIT_VAE_MAX_RESNETS - 1, &c->layers)) < 0) return -1;
    *have_layers = r;
    if (num_field(cfgpath, j, "norm_num_groups", 1, 65536, &c->groups) < 0) return -1;
    if ((r = num_field(cfgpath, j, "latent_channels", 1, 4096, &c->latent)) < 0) return -1;
    *have_latent = r;
    if ((r = num_field(cfgpath, j, "out_channels", 1, 4096, &c->out_ch)) < 0) return -1;
    *have_out = r;
    const js *sf = js_get(j, "scaling_factor");
    if (sf && sf->kind != JS_NULL) {
        if (sf->kind != JS_NUM || !(sf->num > 0) || !isfinite(sf->num))
            return CK_ERR(DIT_ERR_INPUT, "%s: \"scaling_factor\" is not a positive number", cfgpath);
        c->scaling = (float)sf->num;
    }
    const js *sh = js_get(j, "shift_factor");
    if (sh && sh->kind == JS_NUM && sh->num != 0)
        return CK_ERR(DIT_ERR_INPUT, "%s: \"shift_factor\" %g is not supported (SD-style VAEs only)", cfgpath, sh->num);
    const js *act = js_get(j, "act_fn");
    if (act && (act->kind != JS_STR || strcmp(act->s, "silu")))
        return CK_ERR(DIT_ERR_INPUT, "%s: \"act_fn\" must be \"silu\"", cfgpath);
    const js *upq = js_get(j, "use_post_quant_conv");
    if (upq && upq->kind == JS_BOOL && !upq->b)
        return CK_ERR(DIT_ERR_INPUT, "%s: VAEs without post_quant_conv are not supported", cfgpath);
    const js *mid = js_get(j, "mid_block_add_attention");
    if (mid && mid->kind == JS_BOOL && !mid->b)
        return CK_ERR(DIT_ERR_INPUT, "%s: VAEs without mid-block attention are not supported", cfgpath);
    const js *ub = js_get(j, "up_block_types");
    if (ub && ub->kind == JS_ARR)
        for (size_t i = 0; i < ub->n; i++)
            if (ub->v[i]->kind != JS_STR || strcmp(ub->v[i]->s, "UpDecoderBlock2D"))
                return CK_ERR(DIT_ERR_INPUT, "%s: up block type %s is not supported (UpDecoderBlock2D only)", cfgpath,
                              ub->v[i]->kind == JS_STR ? ub->v[i]->s : "?");
    return 1;
}

typedef struct {
    ck_file *file;
    pv *root;
    tensor_set set;         /* mapped: names are diffusers names */
    vae_map *maps;
    vae_cfg cfg;
    char cfgpath[PATH_MAX];
    ck_arena *arena;
} vae_src;

static int vae_open(const char *arg, vae_src *v, const options *opt, out_list *o, const dit_cfg *dc) {
    char file[PATH_MAX], cfgpath[PATH_MAX];
    int dirmode = file_exists(arg, 1);
    memset(&v->cfg, 0, sizeof v->cfg);
    v->cfg.groups = 32;
    v->cfg.scaling = 0.18215f;   /* diffusers AutoencoderKL default; DiT hard-codes it */
    if (dirmode) {
        char d[PATH_MAX];
        if (join(d, sizeof d, arg, strlen(arg), "") < 0) return -1;
        for (int pass = 0; pass < 2; pass++) {   /* the directory itself, then its vae/ (a pipeline directory) */
            if (join(file, sizeof file, d, strlen(d), "/diffusion_pytorch_model.safetensors") < 0) return -1;
            if (!file_exists(file, 0) && join(file, sizeof file, d, strlen(d), "/diffusion_pytorch_model.bin") < 0) return -1;
            if (file_exists(file, 0) || pass) break;
            char sub[PATH_MAX];
            if (join(sub, sizeof sub, d, strlen(d), "/vae") < 0) return -1;
            if (!file_exists(sub, 1)) break;
            memcpy(d, sub, strlen(sub) + 1);
        }
        if (!file_exists(file, 0))
            return CK_ERR(DIT_ERR_INPUT, "%s: directory holds no diffusion_pytorch_model.safetensors (or .bin)", arg);
        if (join(cfgpath, sizeof cfgpath, d, strlen(d), "/config.json") < 0) return -1;
    } else {
        if (join(file, sizeof file, arg, strlen(arg), "") < 0) return -1;
        const char *sl = strrchr(arg, '/');
        if (join(cfgpath, sizeof cfgpath, arg, sl ? (size_t)(sl - arg + 1) : 0, "config.json") < 0) return -1;
    }
    v->file = ck_open(file, &v->root);
    if (!v->file) return -1;
    const char *path = ck_path(v->file);
    v->arena = ck_arena_new(64u << 20, path);
    if (!v->arena) return CK_ERR(DIT_ERR_NOMEM, "out of memory");
    int hb = 0, hl = 0, hz = 0, ho = 0;
    vae_cfg jc = v->cfg;
    int used = file_exists(cfgpath, 0) ? vae_read_config(cfgpath, dirmode, &jc, &hb, &hl, &hz, &ho, v->arena) : 0;
    if (used < 0) return -1;
    if (used) snprintf(v->cfgpath, sizeof v->cfgpath, "%s", cfgpath);
    pv *d;
    const char *which;
    if (select_state_dict(path, v->root, 0, &d, &which) < 0) return -1;
    tensor_set raw = {0};
    if (collect(path, v->file, d, &raw, opt->verbose) < 0) { free(raw.e); return -1; }
    /* prefix: first_stage_model. (LDM / SD checkpoints), vae., or none */
    const char *prefix = "";
    for (size_t i = 0; i < raw.n && !*prefix; i++)
        if (!strncmp(raw.e[i].name, "first_stage_model.", 18)) prefix = "first_stage_model.";
    for (size_t i = 0; i < raw.n && !*prefix; i++)
        if (!strncmp(raw.e[i].name, "vae.", 4)) prefix = "vae.";
    size_t pl = strlen(prefix);
    int ldm = 0, nb_ldm = 0, has_decoder = 0;
    for (size_t i = 0; i < raw.n; i++) has_decoder |= !strncmp(raw.e[i].name, prefix, pl) && !strncmp(raw.e[i].name + pl, "decoder.", 8);
    if (!has_decoder) {
        free(raw.e);
        return CK_ERR(DIT_ERR_INPUT, "%s: no VAE decoder found (no %sdecoder.* tensors)", path, prefix);
    }
    for (size_t i = 0; i < raw.n; i++) {
        const char *k = raw.e[i].name;
        if (strncmp(k, prefix, pl)) continue;
        k += pl;
        if (!strncmp(k, "decoder.mid.", 12)) ldm = 1;
        if (!strncmp(k, "decoder.up.", 11)) {
            ldm = 1;
            int a = atoi(k + 11);
            if (a >= 0 && a < 64 && a + 1 > nb_ldm) nb_ldm = a + 1;
        }
    }
    v->set.e = calloc(raw.n ? raw.n : 1, sizeof *v->set.e);
    v->set.file = v->file;
    if (!v->set.e) { free(raw.e); return CK_ERR(DIT_ERR_NOMEM, "out of memory"); }
    size_t n = 0;
    for (size_t i = 0; i < raw.n; i++) {
        const char *k = raw.e[i].name;
        if (strncmp(k, prefix, pl)) continue;   /* other parts of a full SD checkpoint */
        char buf[512];
        int badk;
        const char *m = vae_rename(k + pl, ldm, nb_ldm, buf, sizeof buf, &badk);
        if (badk) { free(raw.e); return CK_ERR(DIT_ERR_INPUT, "%s: unexpected tensor '%s' (not part of an SD VAE)", path, k); }
        if (!m) continue;
        char *nm = ck_arena_strdup(v->arena, m, strlen(m));
        if (!nm) { free(raw.e); return -1; }
        v->set.e[n].name = nm;
        v->set.e[n].t = raw.e[i].t;
        n++;
    }
    free(raw.e);
    v->set.n = n;
    qsort(v->set.e, n, sizeof *v->set.e, entry_cmp);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(v->set.e[i].name, v->set.e[i - 1].name))
            return CK_ERR(DIT_ERR_INPUT, "%s: two tensors map to '%s' (mixed naming schemes?)", path, v->set.e[i].name);
    /* infer the layout from the shapes */
    ck_tensor *pq = set_find(&v->set, "post_quant_conv.weight"), *ci = set_find(&v->set, "decoder.conv_in.weight"),
              *co = set_find(&v->set, "decoder.conv_out.weight");
    if (!ci) return CK_ERR(DIT_ERR_INPUT, "%s: no VAE decoder found (tensor 'decoder.conv_in.weight' is missing)", path);
    if (!pq) return CK_ERR(DIT_ERR_INPUT, "%s: missing tensor 'post_quant_conv.weight'", path);
    if (!co) return CK_ERR(DIT_ERR_INPUT, "%s: missing tensor 'decoder.conv_out.weight'", path);
    if (pq->ndim != 4 || ci->ndim != 4 || co->ndim != 4 || pq->size[0] < 1 || pq->size[0] > 4096 ||
        co->size[0] < 1 || co->size[0] > 4096)
        return CK_ERR(DIT_ERR_INPUT, "%s: post_quant_conv / conv_in / conv_out weights are not 4-D convolutions", path);
    vae_cfg *c = &v->cfg;
    c->latent = (int)pq->size[0];
    c->out_ch = (int)co->size[0];
    int nb = 0;
    for (size_t i = 0; i < n; i++) {
        const char *k = v->set.e[i].name;
        if (!strncmp(k, "decoder.up_blocks.", 18)) {
            int a = atoi(k + 18);
            if (a + 1 > nb) nb = a + 1;
            if (a >= DIT_VAE_MAX_BLOCKS) return CK_ERR(DIT_ERR_INPUT, "%s: more than %d up blocks are not supported", path, DIT_VAE_MAX_BLOCKS);
        }
    }
    if (nb < 1) return CK_ERR(DIT_ERR_INPUT, "%s: the VAE decoder has no up blocks", path);
    int nres = 0;
    for (int r = 0; r < 8; r++) {
        char nm[96];
        snprintf(nm, sizeof nm, "decoder.up_blocks.0.resnets.%d.conv1.weight", r);
        if (set_find(&v->set, nm)) nres = r + 1;
    }
    if (nres < 2 || nres > DIT_VAE_MAX_RESNETS)
        return CK_ERR(DIT_ERR_INPUT, "%s: up block 0 has %d resnets (2-%d supported)", path, nres, DIT_VAE_MAX_RESNETS);
    c->layers = nres - 1;
    c->n_blocks = nb;
    for (int i = 0; i < nb; i++) {   /* block_out_channels[nb-1-i] = up_blocks.i channels */
        char nm[96];
        snprintf(nm, sizeof nm, "decoder.up_blocks.%d.resnets.0.conv1.weight", i);
        ck_tensor *t = set_find(&v->set, nm);
        if (!t || t->ndim != 4 || t->size[0] < 1 || t->size[0] > 65536)
            return CK_ERR(DIT_ERR_INPUT, "%s: missing or misshapen tensor '%s'", path, nm);
        c->block_out[nb - 1 - i] = (int)t->size[0];
    }
    c->groups = jc.groups;
    c->scaling = jc.scaling;
    if (used) {   /* config.json must agree with the weights */
        char a1[64] = "", a2[64] = "";
        int same = !hb || jc.n_blocks == nb;
        for (int i = 0; same && hb && i < nb; i++) same = jc.block_out[i] == c->block_out[i];
        if (!same) {
            for (int i = 0; i < jc.n_blocks; i++) snprintf(a1 + strlen(a1), sizeof a1 - strlen(a1), i ? ",%d" : "%d", jc.block_out[i]);
            for (int i = 0; i < nb; i++) snprintf(a2 + strlen(a2), sizeof a2 - strlen(a2), i ? ",%d" : "%d", c->block_out[i]);
            return CK_ERR(DIT_ERR_INPUT, "%s: config.json says block_out_channels [%s] but the weights have [%s]", path, a1, a2);
        }
        if (hl && jc.layers != c->layers)
            return CK_ERR(DIT_ERR_INPUT, "%s: config.json says layers_per_block %d but the weights have %d", path, jc.layers, c->layers);
        if (hz && jc.latent != c->latent)
            return CK_ERR(DIT_ERR_INPUT, "%s: config.json says latent_channels %d but the weights have %d", path, jc.latent, c->latent);
        if (ho && jc.out_ch != c->out_ch)
            return CK_ERR(DIT_ERR_INPUT, "%s: config.json says out_channels %d but the weights have %d", path, jc.out_ch, c->out_ch);
    }
    for (int i = 0; i < nb; i++)
        if (c->block_out[i] % c->groups)
            return CK_ERR(DIT_ERR_INPUT, "%s: %d channels are not divisible by %d groups", path, c->block_out[i], c->groups);
    if (dc && c->latent != dc->in_ch)
        return CK_ERR(DIT_ERR_INPUT, "%s: the VAE has %d latent channels but the DiT takes %d input channels (this "
                      "VAE does not fit the model)", path, c->latent, dc->in_ch);
    /* every decoder tensor, in a fixed order */
    size_t first = o->n;
    int64_t z = c->latent, top = c->block_out[nb - 1], bot = c->block_out[0];
    const char *ctx = " (VAE layout inferred from post_quant_conv, conv_out and the up blocks' first convolutions)";
    char srcn[128], dstn[160];
#define V(nm, ...) do { int64_t sh_[] = {__VA_ARGS__}; snprintf(srcn, sizeof srcn, "%s", nm); \
        snprintf(dstn, sizeof dstn, "vae.%s", nm); \
        char *s_ = ck_arena_strdup(v->arena, srcn, strlen(srcn)); if (!s_) return -1; \
        if (expect(o, &v->set, s_, dstn, (int)(sizeof sh_ / sizeof *sh_), sh_, strstr(nm, "attentions.0.to_") != NULL, opt, ctx) < 0) return -1; \
    } while (0)
    V("post_quant_conv.weight", z, z, 1, 1);
    V("post_quant_conv.bias", z);
    V("decoder.conv_in.weight", top, z, 3, 3);
    V("decoder.conv_in.bias", top);
    char nm[128];
    for (int r = 0; r < 2; r++) {
        static const char *const parts[] = {"norm1", "conv1", "norm2", "conv2"};
        for (int q = 0; q < 4; q++) {
            snprintf(nm, sizeof nm, "decoder.mid_block.resnets.%d.%s.weight", r, parts[q]);
            if (q % 2) V(nm, top, top, 3, 3); else V(nm, top);
            snprintf(nm, sizeof nm, "decoder.mid_block.resnets.%d.%s.bias", r, parts[q]);
            V(nm, top);
        }
    }
    V("decoder.mid_block.attentions.0.group_norm.weight", top);
    V("decoder.mid_block.attentions.0.group_norm.bias", top);
    static const char *const att[] = {"to_q", "to_k", "to_v", "to_out.0"};
    for (int q = 0; q < 4; q++) {
        snprintf(nm, sizeof nm, "decoder.mid_block.attentions.0.%s.weight", att[q]);
        V(nm, top, top);
        snprintf(nm, sizeof nm, "decoder.mid_block.attentions.0.%s.bias", att[q]);
        V(nm, top);
    }
    for (int i = 0; i < nb; i++) {
        int64_t ch = c->block_out[nb - 1 - i], prev = i ? c->block_out[nb - i] : top;
        for (int r = 0; r < nres; r++) {
            int64_t in = r == 0 ? prev : ch;
            snprintf(nm, sizeof nm, "decoder.up_blocks.%d.resnets.%d.norm1.weight", i, r); V(nm, in);
            snprintf(nm, sizeof nm, "decoder.up_blocks.%d.resnets.%d.norm1.bias", i, r); V(nm, in);
            snprintf(nm, sizeof nm, "decoder.up_blocks.%d.resnets.%d.conv1.weight", i, r); V(nm, ch, in, 3, 3);
            snprintf(nm, sizeof nm, "decoder.up_blocks.%d.resnets.%d.conv1.bias", i, r); V(nm, ch);
            snprintf(nm, sizeof nm, "decoder.up_blocks.%d.resnets.%d.norm2.weight", i, r); V(nm, ch);
            snprintf(nm, sizeof nm, "decoder.up_blocks.%d.resnets.%d.norm2.bias", i, r); V(nm, ch);
            snprintf(nm, sizeof nm, "decoder.up_blocks.%d.resnets.%d.conv2.weight", i, r); V(nm, ch, ch, 3, 3);
            snprintf(nm, sizeof nm, "decoder.up_blocks.%d.resnets.%d.conv2.bias", i, r); V(nm, ch);
            if (in != ch) {
                snprintf(nm, sizeof nm, "decoder.up_blocks.%d.resnets.%d.conv_shortcut.weight", i, r); V(nm, ch, in, 1, 1);
                snprintf(nm, sizeof nm, "decoder.up_blocks.%d.resnets.%d.conv_shortcut.bias", i, r); V(nm, ch);
            }
        }
        if (i < nb - 1) {
            snprintf(nm, sizeof nm, "decoder.up_blocks.%d.upsamplers.0.conv.weight", i); V(nm, ch, ch, 3, 3);
            snprintf(nm, sizeof nm, "decoder.up_blocks.%d.upsamplers.0.conv.bias", i); V(nm, ch);
        }
    }
    V("decoder.conv_norm_out.weight", bot);
    V("decoder.conv_norm_out.bias", bot);
    V("decoder.conv_out.weight", (int64_t)c->out_ch, bot, 3, 3);
    V("decoder.conv_out.bias", (int64_t)c->out_ch);
#undef V
    if (o->n - first != n) {
        for (size_t i = 0; i < n; i++) {
            int found = 0;
            for (size_t j = first; j < o->n && !found; j++) found = !strcmp(o->t[j].name + 4, v->set.e[i].name);
            if (!found) return CK_ERR(DIT_ERR_INPUT, "%s: unexpected VAE tensor '%s'", path, v->set.e[i].name);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- class names */
static int read_class_names(const char *path, char ***names, int *count) {
    FILE *f = fopen(path, "rb");
    if (!f) return CK_ERR(errno == ENOENT ? DIT_ERR_INPUT : DIT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1u << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) { fclose(f); return CK_ERR(DIT_ERR_NOMEM, "out of memory"); }
    for (;;) {
        if (n == cap) {
            if (cap >= (16u << 20)) { free(buf); fclose(f); return CK_ERR(DIT_ERR_INPUT, "%s: larger than 16 MB", path); }
            char *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); fclose(f); return CK_ERR(DIT_ERR_NOMEM, "out of memory"); }
            buf = nb; cap *= 2;
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        if (k == 0) break;
        n += k;
    }
    int err = ferror(f);
    fclose(f);
    if (err) { free(buf); return CK_ERR(DIT_ERR_IO, "%s: read failed", path); }
    if (memchr(buf, 0, n)) { free(buf); return CK_ERR(DIT_ERR_INPUT, "%s: contains NUL bytes (not a text file)", path); }
    char *text = realloc(buf, n + 1);
    if (!text) { free(buf); return CK_ERR(DIT_ERR_NOMEM, "out of memory"); }
    text[n] = 0;
    int lines = 0;
    for (size_t i = 0; i < n; i++) lines += text[i] == '\n';
    if (n && text[n - 1] != '\n') lines++;
    char **v = calloc((size_t)lines + 1, sizeof *v);
    if (!v) { free(text); return CK_ERR(DIT_ERR_NOMEM, "out of memory"); }
    int k = 0;
    for (char *p = text; *p && k < lines;) {
        char *e = strchr(p, '\n');
        if (e) *e = 0;
        size_t l = strlen(p);
        if (l && p[l - 1] == '\r') p[--l] = 0;
        if (!l) { free(v); free(text); return CK_ERR(DIT_ERR_INPUT, "%s: line %d is empty", path, k + 1); }
        if (l > 1024) { free(v); free(text); return CK_ERR(DIT_ERR_INPUT, "%s: line %d is longer than 1024 bytes", path, k + 1); }
        if (!utf8_ok(p)) { free(v); free(text); return CK_ERR(DIT_ERR_INPUT, "%s: line %d is not valid UTF-8", path, k + 1); }
        v[k++] = p;
        if (!e) break;
        p = e + 1;
    }
    if (k == 0) free(text);   /* otherwise names[0] owns the text */
    *names = v;
    *count = k;
    return 0;
}

/* ---------------------------------------------------------------- conversion */
static void convert_elems(int src_dt, int dst, const void *in, void *out, int64_t n) {
    if (dst == DIT_TYPE_F32) {
        float *o = out;
        if (src_dt == CK_F64) {
            const double *s = in;
#pragma omp parallel for if (n > (1 << 18))
            for (int64_t i = 0; i < n; i++) o[i] = (float)s[i];
        } else if (src_dt == CK_F16) {
            const uint16_t *s = in;
#pragma omp parallel for if (n > (1 << 18))
            for (int64_t i = 0; i < n; i++) o[i] = dit_fp16_to_fp32(s[i]);
        } else if (src_dt == CK_BF16) {
            const uint16_t *s = in;
#pragma omp parallel for if (n > (1 << 18))
            for (int64_t i = 0; i < n; i++) o[i] = dit_bf16_to_fp32(s[i]);
        } else memcpy(o, in, (size_t)n * 4);
        return;
    }
    uint16_t *o = out;
    int f16 = dst == DIT_TYPE_F16;
#pragma omp parallel for if (n > (1 << 18))
    for (int64_t i = 0; i < n; i++) {
        float x;
        switch (src_dt) {
        case CK_F64: x = (float)((const double *)in)[i]; break;
        case CK_F16: x = dit_fp16_to_fp32(((const uint16_t *)in)[i]); break;
        case CK_BF16: x = dit_bf16_to_fp32(((const uint16_t *)in)[i]); break;
        default: x = ((const float *)in)[i]; break;
        }
        o[i] = f16 ? dit_fp32_to_fp16(x) : dit_fp32_to_bf16(x);
    }
}

static void progress(double t0, uint64_t done, uint64_t total, int final) {
    double dt = now_s() - t0;
    double mb = (double)done / 1e6, rate = dt > 0 ? mb / dt : 0;
    int w = 30, fill = total ? (int)((double)w * (double)done / (double)total) : w;
    char bar[64];
    for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
    bar[w] = 0;
    fprintf(stderr, "\r" PROG ": [%s] %3d%% %8.1f / %.1f MB %7.1f MB/s%s", bar,
            total ? (int)(100.0 * (double)done / (double)total) : 100, mb, (double)total / 1e6, rate, final ? "\n" : "");
    fflush(stderr);
}

static const char *stem_of(const char *path, char *buf, size_t n) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(buf, n, "%s", b);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = 0;
    return buf;
}

/* everything main() holds, released on every exit (main's locals, registered by address) */
static struct {
    ck_file **f;
    tensor_set *set;
    out_list *o;
    vae_src *vae;
    char ***cls;
    int cls_text;          /* cls[0] owns the text of --class-names */
    dit_gguf_writer **w;   /* freed without finish: its temporary file is removed */
    void **rbuf, **wbuf, **tmp;
} R;

static void release(void) {
    if (R.w && *R.w) { dit_gguf_writer_free(*R.w); *R.w = NULL; }
    if (R.cls && *R.cls) { if (R.cls_text) free((*R.cls)[0]); free(*R.cls); *R.cls = NULL; }
    if (R.vae) { free(R.vae->set.e); ck_arena_free(R.vae->arena); ck_close(R.vae->file); memset(R.vae, 0, sizeof *R.vae); }
    if (R.set) { free(R.set->e); R.set->e = NULL; }
    if (R.o) { free(R.o->t); R.o->t = NULL; }
    if (R.f && *R.f) { ck_close(*R.f); *R.f = NULL; }
    if (R.rbuf) { free(*R.rbuf); *R.rbuf = NULL; }
    if (R.wbuf) { free(*R.wbuf); *R.wbuf = NULL; }
    if (R.tmp) { free(*R.tmp); *R.tmp = NULL; }
}

static int fail_exit(void) {
    int code = dit_last_error_code();
    fprintf(stderr, PROG ": error: %s\n", dit_last_error());
    release();
    return code == DIT_ERR_IO || code == DIT_ERR_NOMEM ? 1 : 2;
}

int main(int argc, char **argv) {
    options opt = {.outtype = -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDVAL() do { if (!val) return die_usage("%s needs a value", a); i++; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) opt.verbose = 1;
        else if (!strcmp(a, "--use-model")) opt.use_model = 1;
        else if (!strcmp(a, "--raw")) opt.raw = 1;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) { NEEDVAL(); opt.out = val; }
        else if (!strcmp(a, "--vae")) { NEEDVAL(); opt.vae = val; }
        else if (!strcmp(a, "--name")) { NEEDVAL(); opt.name = val; }
        else if (!strcmp(a, "--class-names")) { NEEDVAL(); opt.class_names = val; }
        else if (!strcmp(a, "--outtype")) {
            NEEDVAL();
            if (!strcmp(val, "f32")) opt.outtype = DIT_TYPE_F32;
            else if (!strcmp(val, "f16")) opt.outtype = DIT_TYPE_F16;
            else if (!strcmp(val, "bf16")) opt.outtype = DIT_TYPE_BF16;
            else return die_usage("--outtype must be f32, f16 or bf16, not '%s'", val);
        } else if (!strcmp(a, "--heads")) {
            NEEDVAL();
            if (parse_int(val, 1, 4096, &opt.heads) < 0) return die_usage("--heads needs a positive integer, not '%s'", val);
        } else if (!strcmp(a, "--cfg-channels")) {
            NEEDVAL();
            if (parse_int(val, 1, 4096, &opt.cfg_channels) < 0)
                return die_usage("--cfg-channels needs a positive integer, not '%s'", val);
        } else if (a[0] == '-' && a[1]) return die_usage("unknown option '%s'", a);
        else if (!opt.ckpt) opt.ckpt = a;
        else return die_usage("more than one checkpoint given ('%s')", a);
#undef NEEDVAL
    }
    if (!opt.ckpt) { usage(stderr); return 2; }

    /* output path */
    char outbuf[PATH_MAX], stem[PATH_MAX];
    if (!opt.out) {   /* beside the checkpoint: DIR/STEM.gguf */
        const char *sl = strrchr(opt.ckpt, '/');
        size_t dl = sl ? (size_t)(sl - opt.ckpt + 1) : 0;
        stem_of(opt.ckpt, stem, sizeof stem);
        if (join(outbuf, sizeof outbuf, opt.ckpt, dl, stem) < 0 || join(outbuf, sizeof outbuf, outbuf, strlen(outbuf), ".gguf") < 0)
            return fail_exit();
        opt.out = outbuf;
    }
    {
        struct stat a, b;
        if (stat(opt.ckpt, &a) == 0 && stat(opt.out, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
            ck_error(DIT_ERR_INPUT, "%s: the output would overwrite the checkpoint", opt.out);
            return fail_exit();
        }
    }

    /* DiT */
    pv *root;
    ck_file *f = NULL;
    tensor_set set = {0};
    out_list o = {0};
    char **cls = NULL;
    vae_src vae = {0};
    dit_gguf_writer *w = NULL;
    void *rbuf = NULL, *wbuf = NULL, *tmp = NULL;
    R.f = &f; R.set = &set; R.o = &o; R.cls = &cls; R.vae = &vae; R.w = &w; R.rbuf = &rbuf; R.wbuf = &wbuf; R.tmp = &tmp;
    R.cls_text = opt.class_names != NULL;
    if (!(f = ck_open(opt.ckpt, &root))) return fail_exit();
    pv *sd;
    const char *which;
    dit_cfg dc;
    if (select_state_dict(opt.ckpt, root, opt.use_model, &sd, &which) < 0 || collect(opt.ckpt, f, sd, &set, opt.verbose) < 0)
        return fail_exit();
    if (opt.raw) {   /* every tensor as it is */
        memset(&dc, 0, sizeof dc);
        for (size_t i = 0; i < set.n; i++)
            if (expect(&o, &set, set.e[i].name, set.e[i].name, set.e[i].t->ndim, set.e[i].t->size, 0, &opt, "") < 0)
                return fail_exit();
    } else if (dit_infer(&set, &opt, &dc) < 0 || dit_validate(&o, &set, &dc, &opt) < 0)
        return fail_exit();
    if (opt.verbose && which) fprintf(stderr, PROG ": %s: using the \"%s\" state_dict\n", opt.ckpt, which);
    if (opt.verbose) {
        const pv *op = pv_find_opaque(root, 0);
        char g[256];
        if (op) fprintf(stderr, PROG ": %s: note: kept pickle global %s (outside the converted state_dict) as an opaque "
                        "value; nothing was called\n", opt.ckpt, pv_global_name(op, g, sizeof g));
    }

    /* class names */
    int ncls = 0;
    if (opt.raw) {
    } else if (opt.class_names) {
        if (read_class_names(opt.class_names, &cls, &ncls) < 0) return fail_exit();
        if (ncls != dc.num_classes) {
            ck_error(DIT_ERR_INPUT, "%s: has %d names, the model has %d classes", opt.class_names, ncls, dc.num_classes);
            return fail_exit();
        }
    } else if (dc.num_classes == 1000) {
        static char imagenet[32768];
        snprintf(imagenet, sizeof imagenet, "%s", dit_imagenet_classes_txt);
        cls = calloc(1001, sizeof *cls);
        if (!cls) return fail_exit();
        char *p = imagenet;
        for (ncls = 0; ncls < 1000 && *p; ncls++) {
            cls[ncls] = p;
            char *e = strchr(p, '\n');
            if (!e) { ncls++; break; }
            *e = 0;
            p = e + 1;
        }
        if (ncls != 1000) { ck_error(DIT_ERR_INPUT, "embedded ImageNet class list is damaged"); return fail_exit(); }
    }

    /* VAE */
    if (opt.vae && vae_open(opt.vae, &vae, &opt, &o, opt.raw ? NULL : &dc) < 0) return fail_exit();

    /* KVs */
    w = dit_gguf_writer_new();
    if (!w) { ck_error(DIT_ERR_NOMEM, "out of memory"); return fail_exit(); }
    char namebuf[PATH_MAX];
    dit_gguf_set_str(w, "general.architecture", opt.raw ? "raw" : "dit");
    const char *gname = opt.name ? opt.name : stem_of(opt.ckpt, namebuf, sizeof namebuf);
    if (!utf8_ok(gname)) {
        if (opt.name) { ck_error(DIT_ERR_INPUT, "--name is not valid UTF-8"); return fail_exit(); }
        gname = "dit";   /* a file name that is not UTF-8 */
    }
    dit_gguf_set_str(w, "general.name", gname);
    /* general.file_type (llama_ftype): by the type holding most elements of the 2-D+ weights */
    uint64_t by_type[3] = {0};
    uint64_t total_bytes = 0, total_in = 0;
    for (size_t i = 0; i < o.n; i++) {
        out_tensor *x = &o.t[i];
        if (x->t.ndim >= 2)
            by_type[x->type == DIT_TYPE_F16 ? 1 : x->type == DIT_TYPE_BF16 ? 2 : 0] += (uint64_t)x->t.numel;
        total_bytes += dit_row_bytes(x->type, x->t.numel);
        total_in += (uint64_t)x->t.numel * (uint64_t)ck_dtype_size(x->t.st->dtype);
    }
    uint32_t ftype = 0;
    if (by_type[1] > by_type[0] && by_type[1] >= by_type[2]) ftype = 1;
    else if (by_type[2] > by_type[0] && by_type[2] > by_type[1]) ftype = 32;
    dit_gguf_set_u32(w, "general.file_type", ftype);
    dit_gguf_set_u32(w, "general.alignment", DIT_GGUF_ALIGNMENT);
    if (!opt.raw) {
    dit_gguf_set_u32(w, "dit.depth", (uint32_t)dc.depth);
    dit_gguf_set_u32(w, "dit.hidden_size", (uint32_t)dc.hidden);
    dit_gguf_set_u32(w, "dit.num_heads", (uint32_t)dc.heads);
    dit_gguf_set_u32(w, "dit.patch_size", (uint32_t)dc.patch);
    dit_gguf_set_u32(w, "dit.input_size", (uint32_t)dc.input_size);
    dit_gguf_set_u32(w, "dit.in_channels", (uint32_t)dc.in_ch);
    dit_gguf_set_u32(w, "dit.out_channels", (uint32_t)dc.out_ch);
    dit_gguf_set_bool(w, "dit.learn_sigma", dc.learn_sigma);
    dit_gguf_set_u32(w, "dit.num_classes", (uint32_t)dc.num_classes);
    dit_gguf_set_u32(w, "dit.mlp_hidden", (uint32_t)dc.mlp_hidden);
    dit_gguf_set_u32(w, "dit.cfg_channels", (uint32_t)dc.cfg_channels);
    if (cls) dit_gguf_set_arr_str(w, "dit.class_names", (const char *const *)cls, ncls);
    }
    if (opt.vae) {
        uint32_t bo[DIT_VAE_MAX_BLOCKS];
        for (int i = 0; i < vae.cfg.n_blocks; i++) bo[i] = (uint32_t)vae.cfg.block_out[i];
        dit_gguf_set_arr_u32(w, "vae.block_out_channels", bo, vae.cfg.n_blocks);
        dit_gguf_set_u32(w, "vae.layers_per_block", (uint32_t)vae.cfg.layers);
        dit_gguf_set_u32(w, "vae.norm_num_groups", (uint32_t)vae.cfg.groups);
        dit_gguf_set_u32(w, "vae.latent_channels", (uint32_t)vae.cfg.latent);
        dit_gguf_set_u32(w, "vae.out_channels", (uint32_t)vae.cfg.out_ch);
        dit_gguf_set_f32(w, "vae.scaling_factor", vae.cfg.scaling);
    }

    /* tensors */
    size_t maxin = 0, maxout = 0;
    for (size_t i = 0; i < o.n; i++) {
        out_tensor *x = &o.t[i];
        int64_t ne[4] = {1, 1, 1, 1};
        int nd = x->t.ndim ? x->t.ndim : 1;
        if (x->t.ndim > 4) {
            ck_error(DIT_ERR_INPUT, "%s: tensor '%s' has %d dimensions (GGUF allows 4)", ck_path(x->file),
                          x->src_name, x->t.ndim);
            return fail_exit();
        }
        for (int d = 0; d < x->t.ndim; d++) ne[d] = x->t.size[x->t.ndim - 1 - d];   /* ggml order */
        if (dit_gguf_add_tensor(w, x->name, x->type, nd, ne) < 0) return fail_exit();
        size_t in = (size_t)x->t.numel * (size_t)ck_dtype_size(x->t.st->dtype), out = dit_row_bytes(x->type, x->t.numel);
        if (in > maxin) maxin = in;
        if (out > maxout) maxout = out;
        if (opt.verbose) {
            char sh[128];
            shape_str(x->t.size, x->t.ndim, sh, sizeof sh);
            fprintf(stderr, PROG ": %-56s %-18s %-8s -> %s\n", x->name, sh, ck_dtype_name(x->t.st->dtype),
                    dit_type_name(x->type));
        }
    }
    if (opt.raw) fprintf(stderr, PROG ": raw: %zu tensors of the state_dict, unchecked", set.n);
    else
        fprintf(stderr, PROG ": DiT depth %d, hidden %d, heads %d, patch %d, input %d, channels %d -> %d%s, %d classes%s",
                dc.depth, dc.hidden, dc.heads, dc.patch, dc.input_size, dc.in_ch, dc.out_ch,
                dc.learn_sigma ? " (learn_sigma)" : "", dc.num_classes,
                cls ? (opt.class_names ? " (names from --class-names)" : " (ImageNet names)") : "");
    if (opt.vae) {
        fprintf(stderr, "; VAE [");
        for (int i = 0; i < vae.cfg.n_blocks; i++) fprintf(stderr, i ? ",%d" : "%d", vae.cfg.block_out[i]);
        fprintf(stderr, "] x%d, latent %d%s", vae.cfg.layers + 1, vae.cfg.latent, vae.cfgpath[0] ? " (config.json)" : "");
    }
    fprintf(stderr, "\n");
    if (!opt.vae && !opt.raw && dc.in_ch == 4)
        fprintf(stderr, PROG ": note: no --vae given: the file holds no VAE decoder (dit-sample will need one)\n");

    int rc = dit_gguf_writer_begin(w, opt.out);
    if (rc != DIT_OK) return fail_exit();
    rbuf = malloc(maxin ? maxin : 1);
    wbuf = malloc(maxout ? maxout : 1);
    size_t tmpcap = 0;
    if (!rbuf || !wbuf) { ck_error(DIT_ERR_NOMEM, "out of memory"); return fail_exit(); }
    int tty = isatty(2);
    double t0 = now_s(), last = 0;
    uint64_t done = 0;
    for (size_t i = 0; i < o.n; i++) {
        out_tensor *x = &o.t[i];
        if (ck_read_tensor(x->file, &x->t, rbuf, &tmp, &tmpcap) < 0) {
            if (tty) fprintf(stderr, "\n");
            return fail_exit();
        }
        int dt = x->t.st->dtype;
        const void *data = rbuf;
        if (!((dt == CK_F32 && x->type == DIT_TYPE_F32) || (dt == CK_F16 && x->type == DIT_TYPE_F16) ||
              (dt == CK_BF16 && x->type == DIT_TYPE_BF16))) {
            convert_elems(dt, x->type, rbuf, wbuf, x->t.numel);
            data = wbuf;
        }
        if (dit_gguf_writer_write(w, data, dit_row_bytes(x->type, x->t.numel)) != DIT_OK) {
            if (tty) fprintf(stderr, "\n");
            return fail_exit();
        }
        done += (uint64_t)x->t.numel * (uint64_t)ck_dtype_size(dt);
        if (tty && now_s() - last > 0.1) { progress(t0, done, total_in, 0); last = now_s(); }
    }
    rc = dit_gguf_writer_finish(w);   /* frees w */
    w = NULL;
    if (tty) progress(t0, done, total_in, 1);
    if (rc != DIT_OK) return fail_exit();
    double dt = now_s() - t0;
    fprintf(stderr, PROG ": wrote %s: %zu tensors, %.1f MB (file_type %u) from %.1f MB in %.2f s (%.0f MB/s)\n", opt.out,
            o.n, (double)total_bytes / 1e6, ftype, (double)total_in / 1e6, dt, dt > 0 ? (double)total_in / 1e6 / dt : 0);
    release();
    return 0;
}
