/* ckpt.c - checkpoint containers: torch zip (stored or deflated entries, ZIP64), the legacy
   (non-zip) torch.save stream, safetensors. Only metadata is read at open; tensor bytes are read
   on demand by ck_read_tensor (stored: pread at the entry's data offset; deflated: inflated tensor by
   tensor), so memory stays near the largest tensor, not the checkpoint. */
#include "convert/convert.h"
#include "dit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

int ck_error(int code, const char *fmt, ...) {
    char buf[1024], out[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    /* names in messages come from the file: control bytes become \xNN so one line stays one printable line */
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)buf; *p && o + 5 < sizeof out; p++) {
        if (*p < 0x20 || *p == 0x7f) o += (size_t)snprintf(out + o, sizeof out - o, "\\x%02x", *p);
        else out[o++] = (char)*p;
    }
    out[o] = 0;
    dit_set_error(code, "%s", out);
    return -1;
}

const char *ck_dtype_name(int dt) {
    static const char *const n[] = {"float32", "float16", "bfloat16", "float64", "int64", "int32", "int16",
                                    "int8", "uint8", "bool", "float8", "complex64", "complex128", "uint16",
                                    "uint32", "uint64"};
    return dt >= 0 && dt <= CK_U64 ? n[dt] : "?";
}

int ck_dtype_size(int dt) {
    static const int s[] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1, 1, 8, 16, 2, 4, 8};
    return dt >= 0 && dt <= CK_U64 ? s[dt] : 1;
}

typedef struct {
    char *name;
    uint64_t lho, csize, usize;
    uint32_t crc;
    int method, flags;
} zent;

struct ck_file {
    char *path;
    int fd;
    uint64_t size;
    int fmt;
    ck_arena *arena;
    /* zip */
    zent *ents; size_t nents;     /* sorted by name */
    uint64_t cd_off;
    char prefix[512];
    /* storages by key (open addressing) */
    ck_storage **tab; size_t tabcap, nst;
};

int ck_format(const ck_file *f) { return f->fmt; }
const char *ck_path(const ck_file *f) { return f->path; }
uint64_t ck_file_size(const ck_file *f) { return f->size; }
ck_arena *ck_file_arena(ck_file *f) { return f->arena; }

/* "<path>: <message>" as a bad-input error; evaluates to -1 */
#define bad(f, fmt, ...) CK_ERR(DIT_ERR_INPUT, "%s: " fmt, (f)->path, __VA_ARGS__)

static int pread_full(ck_file *f, void *dst, size_t n, uint64_t off) {
    uint8_t *d = dst;
    while (n) {
        size_t want = n > (1u << 30) ? (1u << 30) : n;
        ssize_t k = pread(f->fd, d, want, (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return CK_ERR(DIT_ERR_IO, "%s: read failed: %s", f->path, strerror(errno));
        if (k == 0) return CK_ERR(DIT_ERR_INPUT, "%s: file ends early at byte %llu (truncated?)", f->path,
                                         (unsigned long long)off);
        d += k; n -= (size_t)k; off += (uint64_t)k;
    }
    return 0;
}

static uint64_t rd_le(const uint8_t *b, int n) {
    uint64_t u = 0;
    for (int i = 0; i < n; i++) u |= (uint64_t)b[i] << (8 * i);
    return u;
}

/* ---------------------------------------------------------------- storage table */
static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static ck_storage *st_find(ck_file *f, const char *key) {
    if (!f->tabcap) return NULL;
    for (size_t i = hash_str(key) & (f->tabcap - 1);; i = (i + 1) & (f->tabcap - 1)) {
        if (!f->tab[i]) return NULL;
        if (!strcmp(f->tab[i]->key, key)) return f->tab[i];
    }
}

static int st_add(ck_file *f, ck_storage *s) {
    if ((f->nst + 1) * 2 > f->tabcap) {
        size_t nc = f->tabcap ? f->tabcap * 2 : 256;
        ck_storage **nt = calloc(nc, sizeof *nt);
        if (!nt) return CK_ERR(DIT_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < f->tabcap; i++)
            if (f->tab[i]) {
                size_t j = hash_str(f->tab[i]->key) & (nc - 1);
                while (nt[j]) j = (j + 1) & (nc - 1);
                nt[j] = f->tab[i];
            }
        free(f->tab);
        f->tab = nt; f->tabcap = nc;
    }
    size_t j = hash_str(s->key) & (f->tabcap - 1);
    while (f->tab[j]) j = (j + 1) & (f->tabcap - 1);
    f->tab[j] = s;
    f->nst++;
    return 0;
}

/* pid tuple -> storage (shared by zip and legacy) */
static pv *storage_from_pid(ck_file *f, ck_arena *a, pv *pid, ck_storage **root_out, pv **view_meta) {
    if (!pid || pid->kind != PV_TUPLE || pid->u.seq.n < 5 || pid->u.seq.v[0]->kind != PV_STR ||
        strcmp(pid->u.seq.v[0]->u.str.s, "storage")) {
        bad(f, "%s", "persistent id is not a ('storage', type, key, location, numel) tuple");
        return NULL;
    }
    pv *const *t = pid->u.seq.v;
    int dt = pk_storage_dtype(t[1]);
    if (dt < 0) {
        char g[256];
        bad(f, "persistent id names an unknown storage type '%s'", pv_global_name(t[1], g, sizeof g));
        return NULL;
    }
    char keybuf[32];
    const char *key;
    if (t[2]->kind == PV_STR) key = t[2]->u.str.s;
    else if (t[2]->kind == PV_INT) { snprintf(keybuf, sizeof keybuf, "%lld", (long long)t[2]->u.i); key = keybuf; }
    else { bad(f, "%s", "storage key is not a string"); return NULL; }
    if (t[4]->kind != PV_INT || t[4]->u.i < 0) { bad(f, "%s", "storage size is not a non-negative integer"); return NULL; }
    uint64_t numel = (uint64_t)t[4]->u.i;
    if (numel > UINT64_MAX / 16) { bad(f, "%s", "storage size overflows"); return NULL; }
    ck_storage *s = st_find(f, key);
    if (s) {
        if (s->dtype != dt || s->numel != numel) {
            bad(f, "storage '%s' is used with two different types or sizes", key);
            return NULL;
        }
    } else {
        s = ck_arena_alloc(a, sizeof *s);
        if (!s || !(s->key = ck_arena_strdup(a, key, strlen(key)))) return NULL;
        s->dtype = dt;
        s->numel = numel;
        if (st_add(f, s) < 0) return NULL;
    }
    if (root_out) *root_out = s;
    if (view_meta) *view_meta = pid->u.seq.n > 5 ? t[5] : NULL;
    pv *v = ck_arena_alloc(a, sizeof *v);
    if (!v) return NULL;
    v->kind = PV_STORAGE;
    v->u.storage = s;
    return v;
}

/* ---------------------------------------------------------------- zip */
static int zent_cmp(const void *a, const void *b) { return strcmp(((const zent *)a)->name, ((const zent *)b)->name); }

static const zent *zip_find(ck_file *f, const char *name) {
    zent key = {.name = (char *)name};
    return bsearch(&key, f->ents, f->nents, sizeof *f->ents, zent_cmp);
}

/* data offset of an entry (after its local header), checked against the central directory start */
static int zip_data_off(ck_file *f, const zent *e, uint64_t *off) {
    uint8_t h[30];
    if (e->lho > f->cd_off || f->cd_off - e->lho < 30) return bad(f, "zip entry '%s' has a bad local header offset", e->name);
    if (pread_full(f, h, 30, e->lho) < 0) return -1;
    if (rd_le(h, 4) != 0x04034b50) return bad(f, "zip entry '%s' has no local header (damaged zip?)", e->name);
    uint64_t d = e->lho + 30 + rd_le(h + 26, 2) + rd_le(h + 28, 2);
    if (d > f->cd_off || f->cd_off - d < e->csize)
        return bad(f, "zip entry '%s' extends past the central directory (damaged zip?)", e->name);
    if (e->flags & 1) return bad(f, "zip entry '%s' is encrypted", e->name);
    if (e->method != 0 && e->method != 8)
        return bad(f, "zip entry '%s' uses an unsupported compression method (only stored and deflate)", e->name);
    if (e->method == 0 && e->csize != e->usize) return bad(f, "zip entry '%s' has inconsistent sizes", e->name);
    if (e->method == 8 && e->usize / 1032 > e->csize + 64)   /* deflate expands at most ~1032:1 */
        return bad(f, "zip entry '%s' claims %llu bytes from %llu compressed (impossible for deflate)", e->name,
                   (unsigned long long)e->usize, (unsigned long long)e->csize);
    *off = d;
    return 0;
}

/* inflate entry bytes [skip, skip+n) into dst (dst may be NULL to only check) */
static int zip_inflate(ck_file *f, uint64_t off, uint64_t csize, uint64_t skip, void *dst, size_t n, const char *what) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -15) != Z_OK) return CK_ERR(DIT_ERR_NOMEM, "zlib init failed");
    size_t icap = 1u << 20;
    uint8_t *in = malloc(icap), *scratch = malloc(icap);
    int rc = 0;
    if (!in || !scratch) { rc = CK_ERR(DIT_ERR_NOMEM, "out of memory"); goto done; }
    uint64_t cpos = 0, out_done = 0, total = skip + n;
    while (out_done < total) {
        if (z.avail_in == 0) {
            if (cpos >= csize) { rc = bad(f, "deflated entry for %s ends before its data (truncated?)", what); goto done; }
            size_t k = csize - cpos < icap ? (size_t)(csize - cpos) : icap;
            if (pread_full(f, in, k, off + cpos) < 0) { rc = -1; goto done; }
            cpos += k;
            z.next_in = in; z.avail_in = (uInt)k;
        }
        uint64_t want;
        if (out_done < skip) {
            want = skip - out_done;
            if (want > icap) want = icap;
            z.next_out = scratch;
        } else {
            want = total - out_done;
            if (want > (1u << 30)) want = 1u << 30;
            z.next_out = (uint8_t *)dst + (out_done - skip);
        }
        z.avail_out = (uInt)want;
        int zr = inflate(&z, Z_NO_FLUSH);
        out_done += want - z.avail_out;
        if (zr == Z_STREAM_END && out_done < total) { rc = bad(f, "deflated data for %s is shorter than its tensors", what); goto done; }
        if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) {
            rc = bad(f, "corrupt deflate data in %s", what);
            goto done;
        }
        if (zr == Z_BUF_ERROR && z.avail_in != 0) { rc = bad(f, "corrupt deflate data in %s", what); goto done; }
    }
done:
    inflateEnd(&z);
    free(in);
    free(scratch);
    return rc;
}

static pv *zip_persistent(void *user, ck_arena *a, pv *pid) {
    ck_file *f = user;
    ck_storage *s;
    pv *v = storage_from_pid(f, a, pid, &s, NULL);
    if (!v || s->resolved) return v;
    char name[1024];
    snprintf(name, sizeof name, "%sdata/%s", f->prefix, s->key);
    const zent *e = zip_find(f, name);
    if (!e) { bad(f, "storage entry '%s' is missing from the zip", name); return NULL; }
    uint64_t es = (uint64_t)ck_dtype_size(s->dtype);
    if (s->numel > e->usize / es) {
        bad(f, "zip entry '%s' holds %llu bytes, its storage needs %llu x %llu", name, (unsigned long long)e->usize,
            (unsigned long long)s->numel, (unsigned long long)es);
        return NULL;
    }
    uint64_t off;
    if (zip_data_off(f, e, &off) < 0) return NULL;
    s->loc = e->method == 0 ? CK_LOC_FILE : CK_LOC_DEFLATE;
    s->off = off;
    s->csize = e->csize;
    s->resolved = 1;
    return v;
}

static int zip_open(ck_file *f, pv **root) {
    /* end of central directory: last 22..65557 bytes */
    size_t tail = f->size < 65557 ? (size_t)f->size : 65557;
    uint8_t *t = malloc(tail);
    if (!t) return CK_ERR(DIT_ERR_NOMEM, "out of memory");
    if (pread_full(f, t, tail, f->size - tail) < 0) { free(t); return -1; }
    long e = -1;
    for (long i = (long)tail - 22; i >= 0; i--)
        if (rd_le(t + i, 4) == 0x06054b50 && (size_t)i + 22 + rd_le(t + i + 20, 2) == tail) { e = i; break; }
    if (e < 0) {
        free(t);
        return bad(f, "%s", "zip end-of-central-directory record not found (truncated or damaged file)");
    }
    uint64_t eocd = f->size - tail + (uint64_t)e;
    uint64_t n = rd_le(t + e + 10, 2), cd_size = rd_le(t + e + 12, 4), cd_off = rd_le(t + e + 16, 4);
    if (rd_le(t + e + 4, 2) != 0 || rd_le(t + e + 6, 2) != 0) { free(t); return bad(f, "%s", "multi-disk zip archives are not supported"); }
    uint64_t cd_end = eocd;
    if (e >= 20 && rd_le(t + e - 20, 4) == 0x07064b50) {   /* ZIP64 locator */
        uint64_t z64 = rd_le(t + e - 12, 8);
        uint8_t r[56];
        if (z64 > eocd - 20 || eocd - 20 - z64 < 56) { free(t); return bad(f, "%s", "bad ZIP64 end record offset"); }
        if (pread_full(f, r, 56, z64) < 0) { free(t); return -1; }
        if (rd_le(r, 4) != 0x06064b50) { free(t); return bad(f, "%s", "ZIP64 end record missing (damaged zip)"); }
        n = rd_le(r + 32, 8); cd_size = rd_le(r + 40, 8); cd_off = rd_le(r + 48, 8);
        cd_end = z64;
    } else if (n == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {
        free(t);
        return bad(f, "%s", "zip needs a ZIP64 record that is missing (damaged zip)");
    }
    free(t);
    if (cd_off > cd_end || cd_end - cd_off < cd_size) return bad(f, "%s", "zip central directory lies outside the file (truncated?)");
    if (n > CK_MAX_ZIP_ENTRIES || cd_size > (256u << 20)) return bad(f, "%s", "zip has too many entries");
    if (cd_size < n * 46) return bad(f, "%s", "zip central directory is too small for its entry count");
    f->cd_off = cd_off;
    uint8_t *cd = malloc(cd_size ? cd_size : 1);
    f->ents = calloc(n ? n : 1, sizeof *f->ents);
    if (!cd || !f->ents) { free(cd); return CK_ERR(DIT_ERR_NOMEM, "out of memory"); }
    if (pread_full(f, cd, cd_size, cd_off) < 0) { free(cd); return -1; }
    uint64_t p = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (cd_size - p < 46 || rd_le(cd + p, 4) != 0x02014b50) { free(cd); return bad(f, "%s", "damaged zip central directory"); }
        const uint8_t *h = cd + p;
        uint64_t nl = rd_le(h + 28, 2), xl = rd_le(h + 30, 2), cl = rd_le(h + 32, 2);
        if (cd_size - p - 46 < nl + xl + cl) { free(cd); return bad(f, "%s", "damaged zip central directory"); }
        zent *z = &f->ents[i];
        z->flags = (int)rd_le(h + 8, 2);
        z->method = (int)rd_le(h + 10, 2);
        z->crc = (uint32_t)rd_le(h + 16, 4);
        z->csize = rd_le(h + 20, 4);
        z->usize = rd_le(h + 24, 4);
        z->lho = rd_le(h + 42, 4);
        if (!(z->name = ck_arena_strdup(f->arena, (const char *)h + 46, nl))) { free(cd); return -1; }
        if (strlen(z->name) != nl) { free(cd); return bad(f, "%s", "zip entry name contains a NUL byte"); }
        /* ZIP64 extra field: the 0xFFFFFFFF fields, in order usize, csize, lho */
        const uint8_t *x = h + 46 + nl, *xe = x + xl;
        while (xe - x >= 4) {
            uint64_t id = rd_le(x, 2), len = rd_le(x + 2, 2);
            if ((uint64_t)(xe - x - 4) < len) break;
            if (id == 1) {
                const uint8_t *q = x + 4, *qe = q + len;
                if (z->usize == 0xFFFFFFFFu) { if (qe - q < 8) break; z->usize = rd_le(q, 8); q += 8; }
                if (z->csize == 0xFFFFFFFFu) { if (qe - q < 8) break; z->csize = rd_le(q, 8); q += 8; }
                if (z->lho == 0xFFFFFFFFu) { if (qe - q < 8) break; z->lho = rd_le(q, 8); q += 8; }
            }
            x += 4 + len;
        }
        p += 46 + nl + xl + cl;
    }
    free(cd);
    f->nents = n;
    qsort(f->ents, n, sizeof *f->ents, zent_cmp);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(f->ents[i].name, f->ents[i - 1].name)) return bad(f, "zip has two entries named '%s'", f->ents[i].name);
    /* data.pkl: "<dir>/data.pkl" (torch.save) or "data.pkl" */
    const zent *pk = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *nm = f->ents[i].name, *sl = strchr(nm, '/');
        if (!strcmp(nm, "data.pkl") || (sl && !strcmp(sl + 1, "data.pkl") && !strchr(sl + 1, '/'))) { pk = &f->ents[i]; break; }
    }
    if (!pk) {
        for (size_t i = 0; i < n; i++) {
            size_t l = strlen(f->ents[i].name);
            if (l >= 5 && !strcmp(f->ents[i].name + l - 5, ".json"))
                return bad(f, "%s", "zip archive without data.pkl: not a torch.save checkpoint");
        }
        return bad(f, "%s", "zip archive without data.pkl: not a torch.save checkpoint");
    }
    size_t pl = strlen(pk->name) - strlen("data.pkl");
    if (pl >= sizeof f->prefix) return bad(f, "%s", "archive name too long");
    memcpy(f->prefix, pk->name, pl);
    f->prefix[pl] = 0;
    char bo[600];
    snprintf(bo, sizeof bo, "%sbyteorder", f->prefix);
    const zent *be = zip_find(f, bo);
    if (be && be->usize == 3) {
        uint64_t off;
        char b[4] = {0};
        if (zip_data_off(f, be, &off) < 0) return -1;
        if (be->method == 0 ? pread_full(f, b, 3, off) < 0 : zip_inflate(f, off, be->csize, 0, b, 3, bo) < 0) return -1;
        if (!memcmp(b, "big", 3)) return bad(f, "%s", "checkpoint was saved on a big-endian machine (not supported)");
    }
    if (pk->usize > CK_MAX_PICKLE) return bad(f, "%s", "data.pkl is larger than the 256 MB limit");
    uint64_t off;
    if (zip_data_off(f, pk, &off) < 0) return -1;
    uint8_t *buf = malloc(pk->usize ? pk->usize : 1);
    if (!buf) return CK_ERR(DIT_ERR_NOMEM, "out of memory");
    int rc = pk->method == 0 ? pread_full(f, buf, pk->usize, off)
                             : zip_inflate(f, off, pk->csize, 0, buf, pk->usize, "data.pkl");
    if (rc == 0 && (uint32_t)crc32(0, buf, (uInt)pk->usize) != pk->crc && !(pk->flags & 8 && pk->crc == 0))
        rc = bad(f, "%s", "data.pkl fails its CRC check (damaged file)");
    if (rc < 0) { free(buf); return -1; }
    ck_reader r;
    ck_reader_mem(&r, f->path, buf, pk->usize);
    *root = pk_load(&r, f->arena, zip_persistent, f, 0);
    free(buf);
    return *root ? 0 : -1;
}

/* ---------------------------------------------------------------- legacy torch.save */
static const uint8_t LEGACY_MAGIC[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

typedef struct { ck_file *f; pv **views; size_t nviews, cap; } legacy_ctx;

static pv *legacy_persistent(void *user, ck_arena *a, pv *pid) {
    legacy_ctx *c = user;
    ck_storage *root;
    pv *meta = NULL;
    pv *v = storage_from_pid(c->f, a, pid, &root, &meta);
    if (!v || !meta || meta->kind == PV_NONE) return v;
    /* view_metadata = (view_key, offset, view_size): a storage view into the root */
    if (meta->kind != PV_TUPLE || meta->u.seq.n != 3 || meta->u.seq.v[1]->kind != PV_INT ||
        meta->u.seq.v[2]->kind != PV_INT || meta->u.seq.v[1]->u.i < 0 || meta->u.seq.v[2]->u.i < 0) {
        bad(c->f, "%s", "bad storage view metadata");
        return NULL;
    }
    uint64_t off = (uint64_t)meta->u.seq.v[1]->u.i, n = (uint64_t)meta->u.seq.v[2]->u.i;
    if (off > root->numel || n > root->numel - off) { bad(c->f, "%s", "storage view exceeds its root storage"); return NULL; }
    ck_storage *s = ck_arena_alloc(a, sizeof *s);
    if (!s) return NULL;
    *s = *root;
    s->root = root;
    s->root_off = off;
    s->numel = n;
    v->u.storage = s;
    return v;
}

static int legacy_open(ck_file *f, pv **root) {
    ck_reader r;
    legacy_ctx c = {.f = f};
    if (ck_reader_file(&r, f->path, f->fd, 0, f->size) < 0) return -1;
    int rc = -1;
    pv *magic = pk_load(&r, f->arena, NULL, NULL, 0);
    if (!magic) goto out;
    if (magic->kind != PV_BIGINT || magic->u.str.n != 10 || memcmp(magic->u.str.s, LEGACY_MAGIC, 10)) {
        bad(f, "%s", "not a torch.save file (bad magic number)");
        goto out;
    }
    pv *proto = pk_load(&r, f->arena, NULL, NULL, 0);
    if (!proto) goto out;
    if (proto->kind != PV_INT || proto->u.i != 1001) { bad(f, "%s", "unsupported legacy torch.save protocol version"); goto out; }
    pv *sys = pk_load(&r, f->arena, NULL, NULL, 0);
    if (!sys) goto out;
    pv *le = pv_dict_get(sys, "little_endian");
    if (le && le->kind == PV_BOOL && !le->u.i) { bad(f, "%s", "checkpoint was saved on a big-endian machine (not supported)"); goto out; }
    *root = pk_load(&r, f->arena, legacy_persistent, &c, 0);
    if (!*root) goto out;
    pv *keys = pk_load(&r, f->arena, NULL, NULL, 0);
    if (!keys) goto out;
    if (keys->kind != PV_LIST) { bad(f, "%s", "storage key list is missing"); goto out; }
    uint64_t pos = ck_reader_tell(&r);
    for (size_t i = 0; i < keys->u.seq.n; i++) {
        pv *k = keys->u.seq.v[i];
        if (k->kind != PV_STR) { bad(f, "%s", "storage key is not a string"); goto out; }
        ck_storage *s = st_find(f, k->u.str.s);
        if (!s) { bad(f, "storage '%s' is listed but never used", k->u.str.s); goto out; }
        if (s->resolved) { bad(f, "storage '%s' is listed twice", k->u.str.s); goto out; }
        uint8_t h[8];
        if (pos > f->size || f->size - pos < 8) { bad(f, "%s", "file ends inside the storage data (truncated?)"); goto out; }
        if (pread_full(f, h, 8, pos) < 0) goto out;
        uint64_t numel = rd_le(h, 8), es = (uint64_t)ck_dtype_size(s->dtype);
        if (numel != s->numel) { bad(f, "storage '%s' has a different size in the data than in the pickle", k->u.str.s); goto out; }
        pos += 8;
        if (numel > (f->size - pos) / es) { bad(f, "%s", "file ends inside the storage data (truncated?)"); goto out; }
        s->loc = CK_LOC_FILE;
        s->off = pos;
        s->resolved = 1;
        pos += numel * es;
    }
    for (size_t i = 0; i < f->tabcap; i++)
        if (f->tab[i] && !f->tab[i]->resolved) { bad(f, "storage '%s' has no data", f->tab[i]->key); goto out; }
    rc = 0;
out:
    ck_reader_done(&r);
    return rc;
}

/* ---------------------------------------------------------------- safetensors */
static int st_dtype(const char *s) {
    static const struct { const char *n; int dt; } m[] = {
        {"F32", CK_F32}, {"F16", CK_F16}, {"BF16", CK_BF16}, {"F64", CK_F64}, {"I64", CK_I64}, {"I32", CK_I32},
        {"I16", CK_I16}, {"I8", CK_I8}, {"U8", CK_U8}, {"BOOL", CK_BOOL}, {"F8_E5M2", CK_F8}, {"F8_E4M3", CK_F8},
        {"U16", CK_U16}, {"U32", CK_U32}, {"U64", CK_U64},
    };
    for (size_t i = 0; i < sizeof m / sizeof *m; i++)
        if (!strcmp(m[i].n, s)) return m[i].dt;
    return -1;
}

typedef struct { uint64_t b, e; const char *name; } st_range;
static int range_cmp(const void *a, const void *b) {
    const st_range *x = a, *y = b;
    if (x->b != y->b) return x->b < y->b ? -1 : 1;
    if (x->e != y->e) return x->e < y->e ? -1 : 1;
    return 0;
}
static int name_cmp(const void *a, const void *b) { return strcmp(((const st_range *)a)->name, ((const st_range *)b)->name); }

static int safetensors_open(ck_file *f, pv **root) {
    uint8_t h8[8];
    if (pread_full(f, h8, 8, 0) < 0) return -1;
    uint64_t n = rd_le(h8, 8);
    if (n > CK_MAX_ST_HEADER) return bad(f, "%s", "safetensors header is larger than 100 MB (HeaderTooLarge)");
    if (n > f->size - 8) return bad(f, "%s", "safetensors header runs past the end of the file (truncated?)");
    char *hdr = malloc(n + 1);
    if (!hdr) return CK_ERR(DIT_ERR_NOMEM, "out of memory");
    if (pread_full(f, hdr, n, 8) < 0) { free(hdr); return -1; }
    js *j = js_parse(f->arena, f->path, hdr, n);
    free(hdr);
    if (!j) return -1;
    if (j->kind != JS_OBJ) return bad(f, "%s", "safetensors header is not a JSON object");
    uint64_t data_len = f->size - 8 - n, data_off = 8 + n;
    pv *d = ck_arena_alloc(f->arena, sizeof *d);
    st_range *rg = calloc(j->n ? j->n : 1, sizeof *rg);
    if (!d || !rg) { free(rg); return CK_ERR(DIT_ERR_NOMEM, "out of memory"); }
    d->kind = PV_DICT;
    d->u.dict.k = ck_arena_alloc(f->arena, (j->n + 1) * sizeof(pv *));
    d->u.dict.v = ck_arena_alloc(f->arena, (j->n + 1) * sizeof(pv *));
    if (!d->u.dict.k || !d->u.dict.v) { free(rg); return -1; }
    size_t nt = 0;
    int rc = -1;
    for (size_t i = 0; i < j->n; i++) {
        const char *name = j->k[i];
        js *e = j->v[i];
        if (!strcmp(name, "__metadata__")) {
            if (e->kind != JS_OBJ) { bad(f, "%s", "__metadata__ is not an object"); goto out; }
            for (size_t q = 0; q < e->n; q++)
                if (e->v[q]->kind != JS_STR) { bad(f, "%s", "__metadata__ values must be strings"); goto out; }
            continue;
        }
        js *dt = js_get(e, "dtype"), *sh = js_get(e, "shape"), *of = js_get(e, "data_offsets");
        if (e->kind != JS_OBJ || !dt || dt->kind != JS_STR || !sh || sh->kind != JS_ARR || !of || of->kind != JS_ARR ||
            of->n != 2) { bad(f, "tensor '%s' lacks dtype/shape/data_offsets", name); goto out; }
        int dtype = st_dtype(dt->s);
        if (dtype < 0) { bad(f, "tensor '%s' has an unknown dtype", name); goto out; }
        if (sh->n > CK_MAX_DIMS) { bad(f, "tensor '%s' has more than 8 dimensions", name); goto out; }
        for (int q = 0; q < 2; q++)
            if (of->v[q]->kind != JS_NUM || !of->v[q]->is_int || of->v[q]->i < 0) {
                bad(f, "tensor '%s' has bad data_offsets", name); goto out;
            }
        ck_tensor *t = ck_arena_alloc(f->arena, sizeof *t);
        ck_storage *s = ck_arena_alloc(f->arena, sizeof *s);
        if (!t || !s) goto out;
        t->ndim = (int)sh->n;
        uint64_t numel = 1;
        for (int q = 0; q < t->ndim; q++) {
            js *x = sh->v[q];
            if (x->kind != JS_NUM || !x->is_int || x->i < 0) { bad(f, "tensor '%s' has a bad shape", name); goto out; }
            t->size[q] = x->i;
            if (x->i && numel > (uint64_t)INT64_MAX / (uint64_t)x->i) { bad(f, "tensor '%s' size overflows", name); goto out; }
            numel *= (uint64_t)x->i;
        }
        int64_t stride = 1;
        for (int q = t->ndim - 1; q >= 0; q--) { t->stride[q] = stride; stride *= t->size[q] ? t->size[q] : 1; }
        uint64_t es = (uint64_t)ck_dtype_size(dtype);
        if (numel > UINT64_MAX / es) { bad(f, "tensor '%s' size overflows", name); goto out; }
        uint64_t b = (uint64_t)of->v[0]->i, en = (uint64_t)of->v[1]->i;
        if (en < b || en - b != numel * es) { bad(f, "tensor '%s': data_offsets do not match dtype and shape (TensorInvalidInfo)", name); goto out; }
        if (en > data_len) { bad(f, "tensor '%s' data runs past the end of the file (truncated?)", name); goto out; }
        s->key = (char *)name;
        s->dtype = dtype;
        s->numel = numel;
        s->loc = CK_LOC_FILE;
        s->off = data_off + b;
        s->resolved = 1;
        t->st = s;
        t->numel = (int64_t)numel;
        t->span = (int64_t)numel;
        t->contiguous = 1;
        pv *k = ck_arena_alloc(f->arena, sizeof *k), *v = ck_arena_alloc(f->arena, sizeof *v);
        if (!k || !v) goto out;
        k->kind = PV_STR; k->u.str.s = (char *)name; k->u.str.n = strlen(name);
        v->kind = PV_TENSOR; v->u.tensor = t;
        d->u.dict.k[nt] = k; d->u.dict.v[nt] = v;
        rg[nt].b = b; rg[nt].e = en; rg[nt].name = name;
        nt++;
    }
    d->u.dict.n = d->u.dict.cap = nt;
    qsort(rg, nt, sizeof *rg, name_cmp);
    for (size_t i = 1; i < nt; i++)
        if (!strcmp(rg[i].name, rg[i - 1].name)) { bad(f, "tensor '%s' appears twice in the header", rg[i].name); goto out; }
    qsort(rg, nt, sizeof *rg, range_cmp);
    uint64_t end = 0;
    for (size_t i = 0; i < nt; i++) {
        if (rg[i].b != end) { bad(f, "tensor '%s' data leaves a gap or overlaps another tensor (InvalidOffset)", rg[i].name); goto out; }
        end = rg[i].e;
    }
    if (end != data_len) { bad(f, "%s", "tensor data does not cover the file exactly (MetadataIncompleteBuffer)"); goto out; }
    *root = d;
    rc = 0;
out:
    free(rg);
    return rc;
}

/* ---------------------------------------------------------------- open / read */
void ck_close(ck_file *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    ck_arena_free(f->arena);
    free(f->ents);
    free(f->tab);
    free(f->path);
    free(f);
}

ck_file *ck_open(const char *path, pv **root) {
    ck_file *f = calloc(1, sizeof *f);
    if (!f) { ck_error(DIT_ERR_NOMEM, "out of memory"); return NULL; }
    f->fd = -1;
    f->path = strdup(path);
    f->arena = ck_arena_new(CK_MAX_ARENA, f->path);
    if (!f->path || !f->arena) { ck_error(DIT_ERR_NOMEM, "out of memory"); ck_close(f); return NULL; }
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (f->fd < 0) {
        ck_error(errno == ENOENT || errno == ENOTDIR ? DIT_ERR_INPUT : DIT_ERR_IO, "%s: cannot open: %s", path,
                      strerror(errno));
        ck_close(f);
        return NULL;
    }
    if (fstat(f->fd, &sb) < 0) { ck_error(DIT_ERR_IO, "%s: %s", path, strerror(errno)); ck_close(f); return NULL; }
    if (S_ISDIR(sb.st_mode)) { ck_error(DIT_ERR_INPUT, "%s: is a directory", path); ck_close(f); return NULL; }
    if (!S_ISREG(sb.st_mode)) { ck_error(DIT_ERR_INPUT, "%s: not a regular file", path); ck_close(f); return NULL; }
    f->size = (uint64_t)sb.st_size;
    uint8_t h[64] = {0};
    size_t hn = f->size < sizeof h ? (size_t)f->size : sizeof h;
    if (f->size == 0) { ck_error(DIT_ERR_INPUT, "%s: empty file", path); ck_close(f); return NULL; }
    if (pread_full(f, h, hn, 0) < 0) { ck_close(f); return NULL; }
    int rc;
    if (hn >= 23 && !memcmp(h, "version https://git-lfs", 23)) {
        ck_error(DIT_ERR_INPUT, "%s: this is a Git LFS pointer file, not the checkpoint; fetch the real file "
                      "with 'git lfs pull' (or 'git lfs fetch && git lfs checkout') in its repository", path);
        rc = -1;
    } else if (hn >= 4 && !memcmp(h, "GGUF", 4)) {
        ck_error(DIT_ERR_INPUT, "%s: already a GGUF file (dit-info shows it)", path);
        rc = -1;
    } else if (hn >= 4 && (!memcmp(h, "PK\x03\x04", 4) || !memcmp(h, "PK\x05\x06", 4))) {
        f->fmt = CK_FMT_ZIP;
        rc = zip_open(f, root);
    } else if (hn >= 14 && h[0] == 0x80 && h[1] >= 2 && h[1] <= 5 &&
               ((h[2] == 0x8a && h[3] == 10 && !memcmp(h + 4, LEGACY_MAGIC, 10)) ||      /* PROTO, LONG1 magic */
                (hn >= 23 && h[2] == 0x95 && h[11] == 0x8a && h[12] == 10 && !memcmp(h + 13, LEGACY_MAGIC, 10)))) {
                                                                            /* PROTO, FRAME (protocol 4+), LONG1 */
        f->fmt = CK_FMT_LEGACY;
        rc = legacy_open(f, root);
    } else if (hn >= 10 && h[8] == '{' && rd_le(h, 8) >= 2) {
        f->fmt = CK_FMT_SAFETENSORS;
        rc = safetensors_open(f, root);
    } else if (hn >= 2 && h[0] == 0x80 && h[1] >= 2 && h[1] <= 5) {
        ck_error(DIT_ERR_INPUT, "%s: a bare pickle, not a torch.save checkpoint (refusing plain pickles)", path);
        rc = -1;
    } else if (hn >= 5 && (!memcmp(h, "<!DOC", 5) || !memcmp(h, "<html", 5) || !memcmp(h, "<HTML", 5))) {
        ck_error(DIT_ERR_INPUT, "%s: an HTML page, not a checkpoint (a failed download?)", path);
        rc = -1;
    } else {
        ck_error(DIT_ERR_INPUT, "%s: not a checkpoint (neither a torch zip, a legacy torch.save file nor "
                      "safetensors)", path);
        rc = -1;
    }
    if (rc < 0) { ck_close(f); return NULL; }
    return f;
}

/* bytes [off, off+n) of a storage */
static int read_storage(ck_file *f, const ck_storage *s, uint64_t off, void *dst, size_t n) {
    if (s->root) { off += s->root_off * (uint64_t)ck_dtype_size(s->dtype); s = s->root; }
    if (!s->resolved) return bad(f, "storage '%s' has no data", s->key);
    if (s->loc == CK_LOC_FILE) return pread_full(f, dst, n, s->off + off);
    char what[300];
    snprintf(what, sizeof what, "storage '%s'", s->key);
    return zip_inflate(f, s->off, s->csize, off, dst, n, what);
}

int ck_read_tensor(ck_file *f, const ck_tensor *t, void *dst, void **tmp, size_t *tmpcap) {
    size_t es = (size_t)ck_dtype_size(t->st->dtype);
    if (t->numel == 0) return 0;
    if ((uint64_t)t->span > SIZE_MAX / es) return bad(f, "%s", "tensor too large");
    if (t->contiguous) return read_storage(f, t->st, (uint64_t)t->offset * es, dst, (size_t)t->numel * es);
    size_t need = (size_t)t->span * es;
    if (*tmpcap < need) {
        void *nt = realloc(*tmp, need);
        if (!nt) return CK_ERR(DIT_ERR_NOMEM, "out of memory");
        *tmp = nt; *tmpcap = need;
    }
    if (read_storage(f, t->st, (uint64_t)t->offset * es, *tmp, need) < 0) return -1;
    /* gather the strided view into C order */
    int64_t idx[CK_MAX_DIMS] = {0};
    const uint8_t *src = *tmp;
    uint8_t *o = dst;
    int nd = t->ndim;
    int64_t inner = nd ? t->size[nd - 1] : 1, istride = nd ? t->stride[nd - 1] : 0;
    for (;;) {
        int64_t base = 0;
        for (int d = 0; d < nd - 1; d++) base += idx[d] * t->stride[d];
        for (int64_t i = 0; i < inner; i++, o += es) memcpy(o, src + (size_t)(base + i * istride) * es, es);
        int d = nd - 2;
        while (d >= 0 && ++idx[d] == t->size[d]) idx[d--] = 0;
        if (d < 0) break;
    }
    return 0;
}
