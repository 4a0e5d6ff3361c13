/* mkbad.c - makes bad input files from good ones, for tests/test_bad_inputs.sh (no Python in CI).

     mkbad trunc IN OUT LEN              first LEN bytes (LEN may end in %: a fraction of the file)
     mkbad flip IN OUT OFFSET XOR        byte OFFSET (negative: from the end) xor XOR (decimal or 0x..)
     mkbad flipat IN OUT PATTERN XOR     first byte of the first PATTERN (C escapes) xor XOR
     mkbad replace IN OUT FROM TO        first occurrence of FROM replaced by TO (C escapes: \n \xNN \\)
     mkbad st IN OUT FROM TO             the same inside a safetensors JSON header (length fixed up)
     mkbad st-hdrlen IN OUT N|eof+N      sets the safetensors header length field
     mkbad gguf IN OUT OP ARGS...        GGUF surgery (below); the file is re-serialized
     mkbad zip IN OUT [OPTS]             rewrites a zip (e.g. a torch checkpoint) entry by entry:
         --deflate                       all entries deflated (default: stored)
         --usize SUFFIX N                declared uncompressed size of the entry ending in SUFFIX
                                         (central directory; > 4 GiB adds a ZIP64 field)
         --replace SUFFIX FROM TO        edit the entry's bytes (CRC recomputed)
         --bomb SUFFIX MB                entry := MB MiB of zero bytes, deflated
         --bombp SUFFIX MB HEAD REP TAIL entry := HEAD, REP repeated, TAIL (MB MiB in all), deflated
         --overlap SUFFIX_A SUFFIX_B     B's central record points at A's bytes
     mkbad npy OUT DESCR FORTRAN SHAPE NBYTES
                                         a .npy with that header ('<f4', 1|0, "2,3") and NBYTES data bytes
                                         (small finite float32 values; "nan:NBYTES": float32 NaNs)

   GGUF ops (tensor names exact):
     count-tensors N | count-kv N        header counts
     key-len N                           length field of the first key
     str-len N                           length field of the first string value
     arr-count N                         element count of the first array value
     dims NAME D0 [D1..]                 raw dims (layout not fixed: sizes may disagree with the data)
     ndims NAME N | type NAME T          raw fields
     offset NAME N | overlap NAME        raw offset / the previous tensor's offset
     rename NAME NEW                     (NEW may be another tensor's name: duplicates)
     dup-key                             the second key becomes a copy of the first
     align N                             general.alignment := N (u32), data still padded to 32
     fill NAME nan|inf|zero              every element (f32/f16/bf16; quantized: the block scales)
     drop NAME                           removes the tensor (layout fixed)
     reshape NAME D0 [D1..]              new dims, data zero-padded or cut (layout fixed)
     set-u32 KEY N | set-str KEY S | del-kv KEY
   Exit status 0, or 1 with a message when the input is not what the op expects. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static void die(const char *fmt, const char *a) {
    fprintf(stderr, "mkbad: ");
    fprintf(stderr, fmt, a);
    fprintf(stderr, "\n");
    exit(1);
}

typedef struct { uint8_t *p; size_t n, cap; } buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 4096;
        b->p = realloc(b->p, b->cap);
        if (!b->p) die("%s", "out of memory");
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_zeros(buf *b, size_t n) { static const uint8_t z[64]; while (n) { size_t k = n < 64 ? n : 64; put(b, z, k); n -= k; } }

static buf slurp(const char *path) {
    buf b = {0};
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s", path);
    uint8_t tmp[65536];
    size_t k;
    while ((k = fread(tmp, 1, sizeof tmp, f)) > 0) put(&b, tmp, k);
    fclose(f);
    return b;
}

static void spit(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) die("cannot write %s", path);
}

static uint64_t num(const char *s) {
    char *e;
    errno = 0;
    uint64_t v = strtoull(s, &e, 0);
    if (e == s || *e || errno) die("bad number '%s'", s);
    return v;
}

/* C escapes -> bytes; returns the length */
static size_t unescape(const char *s, uint8_t *out) {
    size_t n = 0;
    for (; *s; s++) {
        if (*s != '\\') { out[n++] = (uint8_t)*s; continue; }
        s++;
        if (*s == 'n') out[n++] = '\n';
        else if (*s == 't') out[n++] = '\t';
        else if (*s == '0') out[n++] = 0;
        else if (*s == '\\') out[n++] = '\\';
        else if (*s == 'x' && s[1] && s[2]) {
            char h[3] = {s[1], s[2], 0};
            out[n++] = (uint8_t)strtoul(h, NULL, 16);
            s += 2;
        } else die("bad escape in '%s'", s - 1);
    }
    return n;
}

/* replaces the first FROM in b (from offset `from`) by TO; dies when absent */
static void replace_in(buf *b, size_t from, size_t to_end, const char *FROM, const char *TO) {
    uint8_t f[4096], t[4096];
    if (strlen(FROM) >= sizeof f || strlen(TO) >= sizeof t) die("%s", "pattern too long");
    size_t fn = unescape(FROM, f), tn = unescape(TO, t);
    uint8_t *hit = fn ? memmem(b->p + from, to_end - from, f, fn) : NULL;
    if (!hit) die("pattern '%s' not found", FROM);
    size_t at = (size_t)(hit - b->p);
    buf o = {0};
    put(&o, b->p, at);
    put(&o, t, tn);
    put(&o, b->p + at + fn, b->n - at - fn);
    free(b->p);
    *b = o;
}

/* ---------------------------------------------------------------- GGUF */
typedef struct { uint8_t *key; uint64_t klen; uint8_t *val; size_t vlen; } gkv;    /* val = type + payload */
typedef struct {
    char name[256];
    uint32_t nd, type;
    uint64_t ne[8], offset;
    const uint8_t *data;
    size_t nbytes;
    uint8_t *owned;
    int raw_offset;
} gt;
typedef struct { uint32_t version; gkv kv[4096]; size_t nkv; gt t[4096]; size_t nt; uint32_t align; } gfile;

static const int KVSZ[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
static int blk(uint32_t t, int *bytes) {
    switch (t) {
    case 0: *bytes = 4; return 1;
    case 1: case 30: *bytes = 2; return 1;
    case 2: *bytes = 18; return 32;
    case 3: *bytes = 20; return 32;
    case 6: *bytes = 22; return 32;
    case 7: *bytes = 24; return 32;
    case 8: *bytes = 34; return 32;
    default: *bytes = 1; return 1;
    }
}
static size_t tbytes(const gt *t) {
    int b, k = blk(t->type, &b);
    uint64_t n = t->ne[0] / (uint64_t)k * (uint64_t)b;
    for (uint32_t d = 1; d < t->nd && d < 8; d++) n *= t->ne[d];
    return (size_t)n;
}

typedef struct { const uint8_t *p, *e; } cur;
static const uint8_t *take(cur *c, size_t n) {
    if ((size_t)(c->e - c->p) < n) die("%s", "GGUF input ends early (mkbad needs a good file)");
    const uint8_t *r = c->p;
    c->p += n;
    return r;
}
static uint64_t tu64(cur *c) { uint64_t v; memcpy(&v, take(c, 8), 8); return v; }
static uint32_t tu32(cur *c) { uint32_t v; memcpy(&v, take(c, 4), 4); return v; }

static size_t value_len(cur *c, uint32_t type) {   /* skips one value, returns its byte length */
    const uint8_t *s = c->p;
    if (type == 8) take(c, tu64(c));
    else if (type == 9) {
        uint32_t et = tu32(c);
        uint64_t n = tu64(c);
        for (uint64_t i = 0; i < n; i++) value_len(c, et);
    } else if (type < 13) take(c, (size_t)KVSZ[type]);
    else die("%s", "bad KV type in the input");
    return (size_t)(c->p - s);
}

static void gguf_parse(gfile *g, buf *b) {
    cur c = {b->p, b->p + b->n};
    if (memcmp(take(&c, 4), "GGUF", 4)) die("%s", "input is not GGUF");
    g->version = tu32(&c);
    uint64_t nt = tu64(&c), nkv = tu64(&c);
    if (nt > 4096 || nkv > 4096) die("%s", "input has too many entries for mkbad");
    g->nt = nt, g->nkv = nkv, g->align = 32;
    for (size_t i = 0; i < nkv; i++) {
        gkv *k = &g->kv[i];
        k->klen = tu64(&c);
        k->key = (uint8_t *)take(&c, k->klen);
        const uint8_t *v = c.p;
        uint32_t type = tu32(&c);
        k->vlen = 4 + value_len(&c, type);
        k->val = (uint8_t *)v;
        if (k->klen == 17 && !memcmp(k->key, "general.alignment", 17) && type == 4) memcpy(&g->align, v + 4, 4);
    }
    for (size_t i = 0; i < nt; i++) {
        gt *t = &g->t[i];
        uint64_t l = tu64(&c);
        if (l >= sizeof t->name) die("%s", "tensor name too long");
        memcpy(t->name, take(&c, l), l);
        t->name[l] = 0;
        t->nd = tu32(&c);
        if (t->nd > 8) die("%s", "bad dims");
        for (uint32_t d = 0; d < 8; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->nd; d++) t->ne[d] = tu64(&c);
        t->type = tu32(&c);
        t->offset = tu64(&c);
    }
    size_t info_end = (size_t)(c.p - b->p), data = info_end + (g->align - info_end % g->align) % g->align;
    for (size_t i = 0; i < nt; i++) {
        gt *t = &g->t[i];
        t->nbytes = tbytes(t);
        if (data + t->offset + t->nbytes > b->n) die("%s", "tensor data outside the input");
        t->data = b->p + data + t->offset;
    }
}

/* positions of the first fields the count/length ops patch, recorded while writing */
typedef struct { size_t key_len_at, str_len_at, arr_count_at; } gpos;

static buf gguf_write(gfile *g, gpos *pos) {
    buf o = {0};
    memset(pos, 0, sizeof *pos);
    put(&o, "GGUF", 4);
    put_u32(&o, g->version);
    put_u64(&o, g->nt);
    put_u64(&o, g->nkv);
    for (size_t i = 0; i < g->nkv; i++) {
        gkv *k = &g->kv[i];
        if (!pos->key_len_at) pos->key_len_at = o.n;
        put_u64(&o, k->klen);
        put(&o, k->key, k->klen);
        uint32_t type;
        memcpy(&type, k->val, 4);
        if (type == 8 && !pos->str_len_at) pos->str_len_at = o.n + 4;
        if (type == 9 && !pos->arr_count_at) pos->arr_count_at = o.n + 8;
        put(&o, k->val, k->vlen);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < g->nt; i++) {
        gt *t = &g->t[i];
        put_u64(&o, strlen(t->name));
        put(&o, t->name, strlen(t->name));
        put_u32(&o, t->nd);
        for (uint32_t d = 0; d < t->nd; d++) put_u64(&o, t->ne[d]);
        put_u32(&o, t->type);
        put_u64(&o, t->raw_offset ? t->offset : off);
        off += t->nbytes + (32 - t->nbytes % 32) % 32;
    }
    put_zeros(&o, (32 - o.n % 32) % 32);
    for (size_t i = 0; i < g->nt; i++) {
        put(&o, g->t[i].data, g->t[i].nbytes);
        put_zeros(&o, (32 - g->t[i].nbytes % 32) % 32);
    }
    return o;
}

static gt *gfind(gfile *g, const char *name) {
    for (size_t i = 0; i < g->nt; i++)
        if (!strcmp(g->t[i].name, name)) return &g->t[i];
    die("no tensor '%s' in the input", name);
    return NULL;
}
static size_t kfind(gfile *g, const char *key) {
    for (size_t i = 0; i < g->nkv; i++)
        if (g->kv[i].klen == strlen(key) && !memcmp(g->kv[i].key, key, g->kv[i].klen)) return i;
    die("no key '%s' in the input", key);
    return 0;
}

static void fill(gt *t, const char *what) {
    uint8_t *d = malloc(t->nbytes ? t->nbytes : 1);
    memcpy(d, t->data, t->nbytes);
    float f = !strcmp(what, "nan") ? __builtin_nanf("") : !strcmp(what, "inf") ? __builtin_inff() : 0.0f;
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t h = !strcmp(what, "nan") ? 0x7e00 : !strcmp(what, "inf") ? 0x7c00 : 0, bf = (uint16_t)(u >> 16);
    int bytes, k = blk(t->type, &bytes);
    for (size_t i = 0; i < t->nbytes; i += (size_t)bytes) {
        if (t->type == 0) memcpy(d + i, &f, 4);
        else if (t->type == 1) memcpy(d + i, &h, 2);
        else if (t->type == 30) memcpy(d + i, &bf, 2);
        else if (k == 32) memcpy(d + i, &h, 2);   /* block scale d: first f16 of every ggml block */
        else die("%s", "fill: unsupported type");
    }
    t->data = t->owned = d;
}

static int gguf_op(int argc, char **argv) {
    if (argc < 5) die("%s", "usage: mkbad gguf IN OUT OP ARGS...");
    buf in = slurp(argv[2]);
    static gfile g;
    gguf_parse(&g, &in);
    const char *op = argv[4];
    char **a = argv + 5;
    int na = argc - 5;
    uint64_t patch_val = 0;
    int patch = 0;   /* 1 count-tensors, 2 count-kv, 3 key-len, 4 str-len, 5 arr-count */
#define NEED(n) do { if (na < (n)) die("%s: missing arguments", op); } while (0)
    if (!strcmp(op, "count-tensors")) { NEED(1); patch = 1; patch_val = num(a[0]); }
    else if (!strcmp(op, "count-kv")) { NEED(1); patch = 2; patch_val = num(a[0]); }
    else if (!strcmp(op, "key-len")) { NEED(1); patch = 3; patch_val = num(a[0]); }
    else if (!strcmp(op, "str-len")) { NEED(1); patch = 4; patch_val = num(a[0]); }
    else if (!strcmp(op, "arr-count")) { NEED(1); patch = 5; patch_val = num(a[0]); }
    else if (!strcmp(op, "dims")) {
        NEED(2);
        gt *t = gfind(&g, a[0]);
        t->nd = (uint32_t)(na - 1);
        if (t->nd > 8) die("%s", "too many dims");
        for (int i = 1; i < na; i++) t->ne[i - 1] = num(a[i]);
        /* data stays the old bytes: the size in the header no longer matches what follows */
    } else if (!strcmp(op, "ndims")) { NEED(2); gfind(&g, a[0])->nd = (uint32_t)num(a[1]); }
    else if (!strcmp(op, "type")) { NEED(2); gfind(&g, a[0])->type = (uint32_t)num(a[1]); }
    else if (!strcmp(op, "offset")) { NEED(2); gt *t = gfind(&g, a[0]); t->offset = num(a[1]); t->raw_offset = 1; }
    else if (!strcmp(op, "overlap")) {
        NEED(1);
        gt *t = gfind(&g, a[0]);
        if (t == g.t) die("%s", "overlap: pick a tensor after the first");
        uint64_t off = 0;   /* offset of the previous tensor in the re-serialized layout */
        for (gt *q = g.t; q < t - 1; q++) off += q->nbytes + (32 - q->nbytes % 32) % 32;
        t->offset = off;
        t->raw_offset = 1;
    } else if (!strcmp(op, "rename")) {
        NEED(2);
        gt *t = gfind(&g, a[0]);
        if (strlen(a[1]) >= sizeof t->name) die("%s", "name too long for mkbad");
        strcpy(t->name, a[1]);
    } else if (!strcmp(op, "dup-key")) {
        if (g.nkv < 2) die("%s", "dup-key needs 2 keys");
        g.kv[1].key = g.kv[0].key, g.kv[1].klen = g.kv[0].klen;
    } else if (!strcmp(op, "align")) {
        NEED(1);
        size_t i = kfind(&g, "general.alignment");
        uint8_t *v = malloc(8);
        uint32_t t = 4, x = (uint32_t)num(a[0]);
        memcpy(v, &t, 4), memcpy(v + 4, &x, 4);
        g.kv[i].val = v, g.kv[i].vlen = 8;
    } else if (!strcmp(op, "fill")) { NEED(2); fill(gfind(&g, a[0]), a[1]); }
    else if (!strcmp(op, "drop")) {
        NEED(1);
        gt *t = gfind(&g, a[0]);
        memmove(t, t + 1, (size_t)(g.t + g.nt - t - 1) * sizeof *t);
        g.nt--;
    } else if (!strcmp(op, "reshape")) {
        NEED(2);
        gt *t = gfind(&g, a[0]);
        size_t old = t->nbytes;
        const uint8_t *od = t->data;
        t->nd = (uint32_t)(na - 1);
        for (int i = 1; i < na; i++) t->ne[i - 1] = num(a[i]);
        t->nbytes = tbytes(t);
        if (t->nbytes > (1u << 30)) die("%s", "reshape: too large");
        uint8_t *d = calloc(1, t->nbytes ? t->nbytes : 1);
        memcpy(d, od, old < t->nbytes ? old : t->nbytes);
        t->data = t->owned = d;
    } else if (!strcmp(op, "set-u32") || !strcmp(op, "set-str")) {
        NEED(2);
        size_t i = kfind(&g, a[0]);
        buf v = {0};
        if (op[4] == 'u') { put_u32(&v, 4); put_u32(&v, (uint32_t)num(a[1])); }
        else { put_u32(&v, 8); put_u64(&v, strlen(a[1])); put(&v, a[1], strlen(a[1])); }
        g.kv[i].val = v.p, g.kv[i].vlen = v.n;
    } else if (!strcmp(op, "del-kv")) {
        NEED(1);
        size_t i = kfind(&g, a[0]);
        memmove(&g.kv[i], &g.kv[i + 1], (g.nkv - i - 1) * sizeof *g.kv);
        g.nkv--;
    } else die("unknown gguf op '%s'", op);
    gpos pos;
    buf o = gguf_write(&g, &pos);
    size_t at = patch == 1 ? 8 : patch == 2 ? 16 : patch == 3 ? pos.key_len_at : patch == 4 ? pos.str_len_at
              : patch == 5 ? pos.arr_count_at : 0;
    if (patch && !at) die("%s: the input has no such field", op);
    if (patch) memcpy(o.p + at, &patch_val, 8);
    spit(argv[3], o.p, o.n);
    return 0;
}

/* ---------------------------------------------------------------- zip */
typedef struct {
    char *name;
    uint8_t *data; size_t n;    /* uncompressed bytes (NULL for a bomb) */
    uint64_t bomb;              /* bytes of zeros (or of the pattern below), deflated */
    uint8_t head[256], rep[256], tail[256];
    size_t hn, rn, tn;          /* rn = 0: zeros */
    uint64_t usize_override;
    int overlap_with;           /* index + 1 */
} zentry;

static uint64_t le(const uint8_t *p, int n) { uint64_t v = 0; for (int i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i); return v; }
static void put_le(buf *b, uint64_t v, int n) { for (int i = 0; i < n; i++) { uint8_t c = (uint8_t)(v >> (8 * i)); put(b, &c, 1); } }

static size_t zip_read(const buf *b, zentry *e, size_t max) {
    size_t eocd = 0;
    int found = 0;
    for (size_t i = b->n >= 22 ? b->n - 22 : 0;; i--) {
        if (le(b->p + i, 4) == 0x06054b50) { eocd = i; found = 1; break; }
        if (i == 0) break;
    }
    if (!found) die("%s", "input is not a zip");
    uint64_t n = le(b->p + eocd + 10, 2), cdo = le(b->p + eocd + 16, 4);
    if (n > max) die("%s", "too many zip entries for mkbad");
    size_t p = (size_t)cdo;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *h = b->p + p;
        if (le(h, 4) != 0x02014b50) die("%s", "bad central directory");
        uint64_t nl = le(h + 28, 2), xl = le(h + 30, 2), cl = le(h + 32, 2), cs = le(h + 20, 4), us = le(h + 24, 4);
        uint64_t lho = le(h + 42, 4), method = le(h + 10, 2);
        if (cs == 0xFFFFFFFFu || us == 0xFFFFFFFFu || lho == 0xFFFFFFFFu) die("%s", "ZIP64 inputs are not supported by mkbad");
        e[i].name = strndup((const char *)h + 46, nl);
        const uint8_t *lh = b->p + lho;
        size_t ds = lho + 30 + le(lh + 26, 2) + le(lh + 28, 2);
        e[i].n = us;
        e[i].data = malloc(us ? us : 1);
        if (method == 0) memcpy(e[i].data, b->p + ds, us);
        else if (method == 8) {
            z_stream z = {0};
            inflateInit2(&z, -15);
            z.next_in = b->p + ds, z.avail_in = (uInt)cs, z.next_out = e[i].data, z.avail_out = (uInt)us;
            if (inflate(&z, Z_FINISH) != Z_STREAM_END) die("%s", "bad deflate data in the input");
            inflateEnd(&z);
        } else die("%s", "unsupported zip method in the input");
        p += 46 + nl + xl + cl;
    }
    return (size_t)n;
}

/* byte i of a bomb entry: head, then the pattern repeated, then tail */
static void bomb_bytes(const zentry *e, uint64_t from, uint8_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint64_t k = from + i;
        if (!e || !e->rn) dst[i] = 0;
        else if (k < e->hn) dst[i] = e->head[k];
        else if (k >= e->bomb - e->tn) dst[i] = e->tail[k - (e->bomb - e->tn)];
        else dst[i] = e->rep[(k - e->hn) % e->rn];
    }
}

static void deflate_to(buf *o, const uint8_t *d, size_t n, uint64_t zeros, uint64_t *csize, uint32_t *crc,
                       const zentry *pat) {
    z_stream z = {0};
    deflateInit2(&z, zeros ? 1 : 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY);
    uint8_t out[1 << 16];
    static uint8_t zbuf[1 << 20];
    uint64_t left = zeros, start = o->n;
    *crc = (uint32_t)crc32(0, NULL, 0);
    if (!zeros) { z.next_in = (uint8_t *)d; z.avail_in = (uInt)n; *crc = (uint32_t)crc32(*crc, d, (uInt)n); }
    for (;;) {
        int flush = Z_FINISH;
        if (zeros) {
            if (z.avail_in == 0 && left) {
                size_t k = left < sizeof zbuf ? (size_t)left : sizeof zbuf;
                bomb_bytes(pat, zeros - left, zbuf, k);
                z.next_in = zbuf, z.avail_in = (uInt)k;
                *crc = (uint32_t)crc32(*crc, zbuf, (uInt)k);
                left -= k;
            }
            flush = left ? Z_NO_FLUSH : Z_FINISH;
        }
        z.next_out = out, z.avail_out = sizeof out;
        int r = deflate(&z, flush);
        put(o, out, sizeof out - z.avail_out);
        if (r == Z_STREAM_END) break;
    }
    deflateEnd(&z);
    *csize = o->n - start;
}

static int zip_op(int argc, char **argv) {
    if (argc < 4) die("%s", "usage: mkbad zip IN OUT [opts]");
    buf in = slurp(argv[2]);
    static zentry e[4096];
    size_t n = zip_read(&in, e, 4096);
    int deflate_all = 0;
    for (int i = 4; i < argc; i++) {
        const char *o = argv[i];
        int left = argc - i - 1;
        if (!strcmp(o, "--deflate")) { deflate_all = 1; continue; }
        if (left < 2) die("%s needs arguments", o);
        size_t k;
        for (k = 0; k < n; k++) {
            size_t l = strlen(e[k].name), s = strlen(argv[i + 1]);
            if (l >= s && !strcmp(e[k].name + l - s, argv[i + 1])) break;
        }
        if (k == n) die("no zip entry ends in '%s'", argv[i + 1]);
        if (!strcmp(o, "--usize")) e[k].usize_override = num(argv[i + 2]), i += 2;
        else if (!strcmp(o, "--bomb")) e[k].bomb = num(argv[i + 2]) << 20, i += 2;
        else if (!strcmp(o, "--bombp")) {
            if (left < 5) die("%s needs arguments", o);
            zentry *z = &e[k];
            if (strlen(argv[i + 3]) >= sizeof z->head || strlen(argv[i + 4]) >= sizeof z->rep ||
                strlen(argv[i + 5]) >= sizeof z->tail) die("%s", "--bombp: pattern too long");
            z->bomb = num(argv[i + 2]) << 20;
            z->hn = unescape(argv[i + 3], z->head), z->rn = unescape(argv[i + 4], z->rep), z->tn = unescape(argv[i + 5], z->tail);
            if (!z->rn || z->hn + z->tn > z->bomb) die("%s", "--bombp: bad pattern");
            i += 5;
        }
        else if (!strcmp(o, "--replace")) {
            if (left < 3) die("%s needs arguments", o);
            buf b = {e[k].data, e[k].n, e[k].n};
            replace_in(&b, 0, b.n, argv[i + 2], argv[i + 3]);
            e[k].data = b.p, e[k].n = b.n;
            i += 3;
        } else if (!strcmp(o, "--overlap")) {
            size_t j;
            for (j = 0; j < n; j++) {
                size_t l = strlen(e[j].name), s = strlen(argv[i + 2]);
                if (l >= s && !strcmp(e[j].name + l - s, argv[i + 2])) break;
            }
            if (j == n) die("no zip entry ends in '%s'", argv[i + 2]);
            e[j].overlap_with = (int)k + 1;
            i += 2;
        } else die("unknown zip option '%s'", o);
    }
    buf o = {0};
    uint64_t lho[4096], cs[4096], us[4096];
    uint32_t crc[4096];
    int meth[4096];
    for (size_t i = 0; i < n; i++) {
        lho[i] = o.n;
        int deflated = deflate_all || e[i].bomb;
        meth[i] = deflated ? 8 : 0;
        us[i] = e[i].bomb ? e[i].bomb : e[i].n;
        size_t hdr = o.n, nl = strlen(e[i].name);
        put_le(&o, 0x04034b50, 4); put_le(&o, 20, 2); put_le(&o, 0, 2); put_le(&o, (uint64_t)meth[i], 2);
        put_le(&o, 0, 2); put_le(&o, 0x21, 2); put_le(&o, 0, 4); put_le(&o, 0, 4);
        put_le(&o, us[i] > 0xFFFFFFFEu ? 0xFFFFFFFFu : us[i], 4); put_le(&o, nl, 2); put_le(&o, 0, 2);
        put(&o, e[i].name, nl);
        if (deflated) deflate_to(&o, e[i].data, e[i].n, e[i].bomb, &cs[i], &crc[i], &e[i]);
        else { put(&o, e[i].data, e[i].n); cs[i] = e[i].n; crc[i] = (uint32_t)crc32(0, e[i].data, (uInt)e[i].n); }
        if (cs[i] > 0xFFFFFFFEu) die("%s", "entry too large for mkbad");
        uint32_t c32 = crc[i], c = (uint32_t)cs[i];
        memcpy(o.p + hdr + 14, &c32, 4);
        memcpy(o.p + hdr + 18, &c, 4);
        if (e[i].usize_override) us[i] = e[i].usize_override;
    }
    uint64_t cd = o.n;
    for (size_t i = 0; i < n; i++) {
        size_t s = e[i].overlap_with ? (size_t)e[i].overlap_with - 1 : i, nl = strlen(e[i].name);
        int z64 = us[s] > 0xFFFFFFFEu;
        put_le(&o, 0x02014b50, 4); put_le(&o, 45, 2); put_le(&o, 20, 2); put_le(&o, 0, 2);
        put_le(&o, (uint64_t)meth[s], 2); put_le(&o, 0, 2); put_le(&o, 0x21, 2); put_le(&o, crc[s], 4);
        put_le(&o, cs[s], 4); put_le(&o, z64 ? 0xFFFFFFFFu : us[s], 4); put_le(&o, nl, 2);
        put_le(&o, z64 ? 12 : 0, 2); put_le(&o, 0, 2); put_le(&o, 0, 2); put_le(&o, 0, 2); put_le(&o, 0, 4);
        put_le(&o, lho[s], 4);
        put(&o, e[i].name, nl);
        if (z64) { put_le(&o, 1, 2); put_le(&o, 8, 2); put_le(&o, us[s], 8); }
    }
    uint64_t cdsize = o.n - cd;
    put_le(&o, 0x06054b50, 4); put_le(&o, 0, 2); put_le(&o, 0, 2); put_le(&o, n, 2); put_le(&o, n, 2);
    put_le(&o, cdsize, 4); put_le(&o, cd, 4); put_le(&o, 0, 2);
    spit(argv[3], o.p, o.n);
    return 0;
}

/* ---------------------------------------------------------------- main */
int main(int argc, char **argv) {
    if (argc < 2) die("%s", "usage: see the comment at the top of tests/bad_inputs/mkbad.c");
    const char *op = argv[1];
    if (!strcmp(op, "gguf")) return gguf_op(argc, argv);
    if (!strcmp(op, "zip")) return zip_op(argc, argv);
    if (!strcmp(op, "npy")) {
        if (argc != 7) die("%s", "usage: mkbad npy OUT DESCR FORTRAN SHAPE NBYTES");
        char h[512];
        int n = snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }", argv[3],
                         argv[4][0] == '1' ? "True" : "False", argv[5]);
        while ((10 + n + 1) % 64) h[n++] = ' ';
        h[n++] = '\n';
        buf o = {0};
        uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(n & 0xff), (uint8_t)(n >> 8)};
        put(&o, pre, 10);
        put(&o, h, (size_t)n);
        int nan = !strncmp(argv[6], "nan:", 4);
        uint64_t nb = num(argv[6] + (nan ? 4 : 0));
        for (uint64_t i = 0; i < nb; i++) {   /* bytes 3 mod 4 in [0x3c, 0x3e]: floats of magnitude 0.01..0.5 */
            static const uint8_t qnan[4] = {0, 0, 0xc0, 0x7f};
            uint8_t c = nan ? qnan[i % 4] : i % 4 == 3 ? (uint8_t)(0x3c + i / 4 % 3) : (uint8_t)(i * 37 % 61);
            put(&o, &c, 1);
        }
        spit(argv[2], o.p, o.n);
        return 0;
    }
    if (argc < 4) die("%s", "missing IN OUT");
    buf b = slurp(argv[2]);
    if (!strcmp(op, "trunc") && argc == 5) {
        size_t l = strlen(argv[4]);
        uint64_t n;
        if (l && argv[4][l - 1] == '%') { argv[4][l - 1] = 0; n = b.n * num(argv[4]) / 100; }
        else n = num(argv[4]);
        if (n > b.n) die("%s", "trunc: longer than the input");
        spit(argv[3], b.p, (size_t)n);
    } else if (!strcmp(op, "flip") && argc == 6) {
        long long off = strtoll(argv[4], NULL, 0);
        size_t at = off < 0 ? b.n - (size_t)(-off) : (size_t)off;
        if (at >= b.n) die("%s", "flip: offset outside the input");
        b.p[at] ^= (uint8_t)num(argv[5]);
        spit(argv[3], b.p, b.n);
    } else if (!strcmp(op, "flipat") && argc == 6) {
        uint8_t pat[4096];
        if (strlen(argv[4]) >= sizeof pat) die("%s", "pattern too long");
        size_t pn = unescape(argv[4], pat);
        uint8_t *hit = pn ? memmem(b.p, b.n, pat, pn) : NULL;
        if (!hit) die("pattern '%s' not found", argv[4]);
        *hit ^= (uint8_t)num(argv[5]);
        spit(argv[3], b.p, b.n);
    } else if (!strcmp(op, "replace") && argc == 6) {
        replace_in(&b, 0, b.n, argv[4], argv[5]);
        spit(argv[3], b.p, b.n);
    } else if (!strcmp(op, "st") && argc == 6) {
        uint64_t hn = le(b.p, 8);
        if (hn > b.n - 8) die("%s", "st: not a safetensors file");
        buf h = {0};
        put(&h, b.p + 8, (size_t)hn);
        replace_in(&h, 0, h.n, argv[4], argv[5]);
        while (h.n % 8) put(&h, " ", 1);
        buf o = {0};
        put_u64(&o, h.n);
        put(&o, h.p, h.n);
        put(&o, b.p + 8 + hn, b.n - 8 - (size_t)hn);
        spit(argv[3], o.p, o.n);
    } else if (!strcmp(op, "st-hdrlen") && argc == 5) {
        uint64_t v = !strncmp(argv[4], "eof+", 4) ? b.n - 8 + num(argv[4] + 4) : num(argv[4]);
        memcpy(b.p, &v, 8);
        spit(argv[3], b.p, b.n);
    } else die("unknown operation or wrong arguments: '%s'", op);
    return 0;
}
