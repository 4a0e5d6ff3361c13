/* json.c - a small bounded JSON reader (RFC 8259) for safetensors headers and diffusers config.json.
   Nesting is limited to CK_MAX_JSON_DEPTH; all memory comes from the caller's arena. */
#include "convert/convert.h"
#include "dit.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    ck_arena *a;
    const char *path;
    const char *s, *e, *p;
    int failed;
} jp;

static js *jfail(jp *j, const char *what) {
    if (!j->failed)
        ck_error(DIT_ERR_INPUT, "%s: bad JSON: %s at byte %zu", j->path, what, (size_t)(j->p - j->s));
    j->failed = 1;
    return NULL;
}

static void ws(jp *j) {
    while (j->p < j->e && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int hex4(const char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* string at j->p (opening quote); decoded into the arena */
static char *jstring(jp *j, size_t *len) {
    j->p++;
    const char *start = j->p;
    size_t n = 0;
    int esc = 0;
    while (j->p < j->e && *j->p != '"') {    /* first pass: find the end, bound the length */
        if ((unsigned char)*j->p < 0x20) { jfail(j, "control character in a string"); return NULL; }
        if (*j->p == '\\') { esc = 1; j->p++; if (j->p >= j->e) break; }
        j->p++;
        n++;
    }
    if (j->p >= j->e) { jfail(j, "unterminated string"); return NULL; }
    const char *end = j->p++;
    if (!esc) {
        if (len) *len = (size_t)(end - start);
        return ck_arena_strdup(j->a, start, (size_t)(end - start));
    }
    char *out = ck_arena_alloc(j->a, (size_t)(end - start) * 3 + 1), *o = out;   /* \u escapes grow <= 3x */
    if (!out) { j->failed = 1; return NULL; }
    for (const char *q = start; q < end; q++) {
        if (*q != '\\') { *o++ = *q; continue; }
        q++;
        switch (*q) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned c, c2;
            if (end - q < 5 || hex4(q + 1, &c) < 0) { j->p = q; jfail(j, "bad \\u escape"); return NULL; }
            q += 4;
            if (c >= 0xD800 && c < 0xDC00) {                /* surrogate pair */
                if (end - q < 7 || q[1] != '\\' || q[2] != 'u' || hex4(q + 3, &c2) < 0 || c2 < 0xDC00 ||
                    c2 > 0xDFFF) { j->p = q; jfail(j, "unpaired surrogate"); return NULL; }
                q += 6;
                c = 0x10000 + ((c - 0xD800) << 10) + (c2 - 0xDC00);
            } else if (c >= 0xDC00 && c < 0xE000) { j->p = q; jfail(j, "unpaired surrogate"); return NULL; }
            if (c == 0) { j->p = q; jfail(j, "NUL in a string"); return NULL; }
            if (c < 0x80) *o++ = (char)c;
            else if (c < 0x800) { *o++ = (char)(0xC0 | (c >> 6)); *o++ = (char)(0x80 | (c & 63)); }
            else if (c < 0x10000) {
                *o++ = (char)(0xE0 | (c >> 12)); *o++ = (char)(0x80 | ((c >> 6) & 63)); *o++ = (char)(0x80 | (c & 63));
            } else {
                *o++ = (char)(0xF0 | (c >> 18)); *o++ = (char)(0x80 | ((c >> 12) & 63));
                *o++ = (char)(0x80 | ((c >> 6) & 63)); *o++ = (char)(0x80 | (c & 63));
            }
            break;
        }
        default: j->p = q; jfail(j, "bad escape"); return NULL;
        }
    }
    *o = 0;
    if (len) *len = (size_t)(o - out);
    (void)n;
    return out;
}

static js *jvalue(jp *j, int depth);

static int jpush(jp *j, js *o, js *v, char *k, size_t *cap) {
    if (o->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        js **nv = ck_arena_alloc(j->a, nc * sizeof *nv);
        char **nk = o->kind == JS_OBJ ? ck_arena_alloc(j->a, nc * sizeof *nk) : NULL;
        if (!nv || (o->kind == JS_OBJ && !nk)) { j->failed = 1; return -1; }
        if (o->n) {
            memcpy(nv, o->v, o->n * sizeof *nv);
            if (nk) memcpy(nk, o->k, o->n * sizeof *nk);
        }
        o->v = nv; o->k = nk; *cap = nc;
    }
    o->v[o->n] = v;
    if (o->kind == JS_OBJ) o->k[o->n] = k;
    o->n++;
    return 0;
}

static js *jvalue(jp *j, int depth) {
    if (depth > CK_MAX_JSON_DEPTH) return jfail(j, "nested too deep");
    ws(j);
    if (j->p >= j->e) return jfail(j, "unexpected end");
    js *v = ck_arena_alloc(j->a, sizeof *v);
    if (!v) { j->failed = 1; return NULL; }
    char c = *j->p;
    if (c == '{' || c == '[') {
        v->kind = c == '{' ? JS_OBJ : JS_ARR;
        char close = c == '{' ? '}' : ']';
        size_t cap = 0;
        j->p++;
        ws(j);
        if (j->p < j->e && *j->p == close) { j->p++; return v; }
        for (;;) {
            char *k = NULL;
            ws(j);
            if (v->kind == JS_OBJ) {
                if (j->p >= j->e || *j->p != '"') return jfail(j, "expected a key string");
                if (!(k = jstring(j, NULL))) return NULL;
                ws(j);
                if (j->p >= j->e || *j->p != ':') return jfail(j, "expected ':'");
                j->p++;
            }
            js *x = jvalue(j, depth + 1);
            if (!x || jpush(j, v, x, k, &cap) < 0) return NULL;
            ws(j);
            if (j->p < j->e && *j->p == ',') { j->p++; continue; }
            if (j->p < j->e && *j->p == close) { j->p++; return v; }
            return jfail(j, "expected ',' or a closing bracket");
        }
    }
    if (c == '"') {
        v->kind = JS_STR;
        return (v->s = jstring(j, &v->slen)) ? v : NULL;
    }
    if (j->e - j->p >= 4 && !memcmp(j->p, "true", 4)) { v->kind = JS_BOOL; v->b = 1; j->p += 4; return v; }
    if (j->e - j->p >= 5 && !memcmp(j->p, "false", 5)) { v->kind = JS_BOOL; j->p += 5; return v; }
    if (j->e - j->p >= 4 && !memcmp(j->p, "null", 4)) { v->kind = JS_NULL; j->p += 4; return v; }
    if (c == '-' || (c >= '0' && c <= '9')) {
        const char *s = j->p;
        int is_int = 1;
        if (*j->p == '-') j->p++;
        if (j->p >= j->e || *j->p < '0' || *j->p > '9') return jfail(j, "bad number");
        if (*j->p == '0' && j->p + 1 < j->e && j->p[1] >= '0' && j->p[1] <= '9') return jfail(j, "leading zero");
        while (j->p < j->e && *j->p >= '0' && *j->p <= '9') j->p++;
        if (j->p < j->e && *j->p == '.') {
            is_int = 0; j->p++;
            if (j->p >= j->e || *j->p < '0' || *j->p > '9') return jfail(j, "bad number");
            while (j->p < j->e && *j->p >= '0' && *j->p <= '9') j->p++;
        }
        if (j->p < j->e && (*j->p == 'e' || *j->p == 'E')) {
            is_int = 0; j->p++;
            if (j->p < j->e && (*j->p == '+' || *j->p == '-')) j->p++;
            if (j->p >= j->e || *j->p < '0' || *j->p > '9') return jfail(j, "bad number");
            while (j->p < j->e && *j->p >= '0' && *j->p <= '9') j->p++;
        }
        size_t n = (size_t)(j->p - s);
        if (n > 64) return jfail(j, "number too long");
        char buf[80];
        memcpy(buf, s, n);
        buf[n] = 0;
        v->kind = JS_NUM;
        v->num = strtod(buf, NULL);
        if (is_int) {
            /* exact int64 parse; integers that do not fit stay doubles only */
            int neg = buf[0] == '-';
            uint64_t u = 0;
            int ok = 1;
            for (const char *q = buf + neg; *q; q++) {
                unsigned d = (unsigned)(*q - '0');
                if (u > (UINT64_MAX - d) / 10) { ok = 0; break; }
                u = u * 10 + d;
            }
            if (ok && (neg ? u <= (uint64_t)INT64_MAX + 1 : u <= (uint64_t)INT64_MAX)) {
                v->is_int = 1;
                v->i = neg ? (int64_t)(0 - u) : (int64_t)u;
            }
        }
        return v;
    }
    return jfail(j, "unexpected character");
}

js *js_parse(ck_arena *a, const char *path, const char *text, size_t n) {
    jp j = {.a = a, .path = path, .s = text, .e = text + n, .p = text};
    js *v = jvalue(&j, 0);
    if (!v) return NULL;
    ws(&j);
    if (j.p != j.e) return jfail(&j, "trailing characters after the value");
    return v;
}

js *js_get(const js *o, const char *key) {
    if (!o || o->kind != JS_OBJ) return NULL;
    for (size_t i = o->n; i-- > 0;)
        if (!strcmp(o->k[i], key)) return o->v[i];
    return NULL;
}
