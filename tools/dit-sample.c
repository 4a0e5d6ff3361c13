/* dit-sample - class-conditional image generation with a DiT GGUF (sample.py semantics by default).

   bin/dit-sample -m DiT-XL-2-256.gguf --class 207,88 -n 4 -s 0 -o out.png
   bin/dit-sample -m model.gguf --class goldfish --grid -n 16 --nrow 4 -o grid.png

   Defaults follow the official sample.py: 250 DDPM steps, classifier-free guidance 4.0 on the first
   cfg_channels eps channels, clip_denoised off, seed 0, and its eight labels for a 1000-class model.
   Noise: image i of a run uses the Philox stream (seed, i) (dit.h dit_randn), so an image is reproduced by
   the same seed, labels and any -n larger than i (on the CPU bit for bit: batch rows do not interact; on a
   GPU within the GEMMs' summation order). -n images run in batches of --batch (dit_sample_params.first_image
   keeps each image's stream), each batch decoded and written before the next.
   PNG text: a tEXt chunk "parameters" right after IHDR, A1111 / sd.cpp style. One image:
     class: golden retriever (207)
     Steps: 250, Sampler: ddpm, CFG scale: 4.0, Seed: 0, Image: 3, Size: 256x256, Model: DiT-XL-2-256, Version: dit.c
   plus ", Eta: E" after the sampler (DDIM, eta != 0), ", CFG batch: off" after the scale (--no-cfg),
   ", Spacing: S", ", Clip denoised: 1", ", Init noise: FILE", ", Step noise: FILE" before the seed when used.
   A grid says "classes: a (i), b (j), ..." and "..., Seed: 0, Images: N, Grid: RxC, Size: ...";
   --decode says "Decoded from: FILE, Image: i, Size: ...".
   Grid labels (--rows-per-class, or --labels): each row's class names in white 5x9 bitmap text (tools/font.h),
   scaled by 1 + size/64, in a black margin left of the make_grid grid; the grid itself is unchanged.
   Exit status: 0 ok, 2 bad input (arguments, model file, .npy files), 1 I/O or any other failure. */
#include "dit.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>
#include "ggml-cuda/dit-cuda.h"   /* plain C: its enums serve the CPU build's option parsing too */
#include "font.h"

static const char *usage_text =
    "usage: dit-sample -m MODEL.gguf [options]\n"
    "\n"
    "Generates class-conditional images with a DiT (sample.py semantics) and writes PNGs.\n"
    "\n"
    "  -m, --model FILE        DiT GGUF (with a VAE for latent models; made by dit-convert)\n"
    "  -c, --class C[,C...]    class index or name (case-insensitive, unique prefix), or 'all'; repeatable;\n"
    "                          labels cycle over the images (default: sample.py's 207,360,387,974,88,\n"
    "                          979,417,279 for 1000 classes, else 0,1,2,...)\n"
    "  -n, --count N           images (default: the number of classes given, or 8)\n"
    "      --batch B           images sampled at once (default 32 per GPU, as sample_ddp.py): any -n runs in\n"
    "                          bounded memory, each batch's PNGs written when it ends; same noise per image\n"
    "      --first-image F     make images F .. F+n-1 of the job (noise, labels and PNG numbers as one run of\n"
    "                          F+n images): split a large set over machines or resume one\n"
    "  -s, --seed S            noise seed, 0..2^64-1 (default 0); image i uses stream (S, i)\n"
    "      --steps K           sampler steps (default 250, dpm++2m 25); spacing \"K\", DDIM \"ddimK\",\n"
    "                          dpm++2m \"linspaceK\" (diffusers' DPMSolverMultistepScheduler timesteps)\n"
    "      --sampler NAME      ddpm (default, sample.py), ddim, or dpm++2m (DPM-Solver++(2M): deterministic,\n"
    "                          good images in 20-25 steps)\n"
    "      --eta E             DDIM eta (default 0)\n"
    "      --spacing S         explicit respacing: \"250\", \"10,20,30\", \"ddim50\", \"linspace25\" (overrides --steps)\n"
    "      --cfg-scale S       classifier-free guidance scale (default 4.0; the CFG batch is always run)\n"
    "      --no-cfg            no guidance and no CFG batch: the conditional model alone, half the work\n"
    "                          (sample_ddp.py at CFG scale 1, as DiT's FID runs without guidance)\n"
    "      --clip-denoised     clamp predicted x0 to [-1, 1] (sample.py: off)\n"
    "  -o, --output FILE       PNG path (default sample.png); several images: FILE, FILE_001, FILE_002, ...\n"
    "      --grid              one PNG with all images (torchvision make_grid: padding 2, black)\n"
    "      --nrow R            images per grid row (default 8)\n"
    "      --rows-per-class    grid with one row per class (implies --grid and --labels)\n"
    "      --labels            label each grid row with its classes (names, else indices) in a left margin\n"
    "      --no-labels         no row labels (for --rows-per-class)\n"
    "      --no-metadata       no \"parameters\" text chunk in the PNGs\n"
    "  -t, --threads N         CPU threads (default: all cores)\n"
    "      --backend B         auto (default: CUDA when a GPU is there), cpu or cuda\n"
    "      --gpus N            CUDA: sample on GPUs 0..N-1 of this process (or 'all'; default 1), with NCCL\n"
    "      --parallel P        how the GPUs split the work: auto (default), data, cfg, seq, or a combination\n"
    "                          such as cfg+seq or data+cfg; -v prints the plan and why\n"
    "      --seq-mode M        sequence parallel attention: auto, ulysses (all-to-all over heads, heads must\n"
    "                          divide) or allgather (all-gather of k and v)\n"
    "      --nccl-timeout S    several GPUs: give up with an error after S seconds without progress (default 60)\n"
    "                          One process per GPU instead: start N copies with DIT_RANK=0..N-1, DIT_WORLD_SIZE=N\n"
    "                          and DIT_NCCL_ID_FILE=F (or DIT_MASTER=host:port); torchrun/mpirun variables work\n"
    "                          too. Every rank samples, rank 0 writes the PNGs.\n"
    "      --init-noise F.npy  initial latents x_T, float32 (N, C, L, L), instead of Philox\n"
    "      --step-noise F.npy  per-step noise, float32 (K, N, C, L, L); entry i is used by loop step i\n"
    "      --save-latent F.npy write the final latents (N, C, L, L) (before the VAE)\n"
    "      --npz F.npz         also write all images as uint8 (N, H, W, C) 'arr_0', as sample_ddp.py for ADM's\n"
    "                          FID suite (ZIP64, streamed); without -o no PNGs are written\n"
    "      --profile F.json    CUDA: per-op GPU times as a Chrome trace (chrome://tracing, Perfetto);\n"
    "                          with -v also a summary table (ops run one by one, no CUDA graph)\n"
    "      --decode F.npy      no sampling: decode these latents (N, C, L, L) and write the PNGs\n"
    "  -q, --quiet             no progress bar\n"
    "  -v, --verbose           model summary and per-stage timings\n"
    "  -h, --help              this text\n"
    "\n"
    "Exit status: 0 ok, 2 bad input, 1 I/O or other failure.\n";

static int verbose, quiet;

/* --npz streams into a temporary file for the whole run: an error or a Ctrl-C removes it */
static dit_npz *npz_open;
static char npz_tmp[4096];
static void npz_on_signal(int sig)
{
    unlink(npz_tmp);   /* async-signal-safe */
    signal(sig, SIG_DFL);
    raise(sig);
}

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int code, const char *fmt, ...)
{
    if (npz_open) dit_npz_abort(npz_open);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dit-sample: error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(code);
}

/* library error -> one line, exit 2 for bad input / unsupported requests, 1 for the rest */
static int exit_status(int code) { return code == DIT_ERR_INPUT || code == DIT_ERR_UNSUPPORTED ? 2 : 1; }
static void die_lib(void)
{
    die(exit_status(dit_last_error_code()), "%s", dit_last_error());
}

static double now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return tv.tv_sec + tv.tv_usec * 1e-6;
}

/* ==== Progress bar: "\r  |=====>     | 17/250 - 12.3 it/s - ETA 0:19", 50 characters, newline at the end ==== */

typedef struct {
    double t0;
    int batch, n_batches;   /* steps of batch b count after those of batches 0..b-1 */
    int open;               /* a bar is on the line: end it before other output */
} progress_state;

static void progress_break(progress_state *ps)
{
    if (ps->open) fprintf(stderr, "\n");
    ps->open = 0;
}

static void progress(int step, int steps, void *user)
{
    progress_state *ps = user;
    if (quiet) return;
    step += ps->batch * steps;
    steps *= ps->n_batches;
    double dt = now() - ps->t0, rate = dt > 0 ? step / dt : 0;
    char bar[51];
    int pos = (int)((int64_t)50 * step / steps);
    for (int i = 0; i < 50; i++) bar[i] = i < pos ? '=' : i == pos ? '>' : ' ';
    bar[50] = 0;
    char eta[32] = "";   /* long jobs: the time left at the rate so far */
    const double left = rate > 0 ? (steps - step) / rate : 0;
    if (left >= 10) {
        const long t = (long)(left + 0.5);
        if (t >= 3600) snprintf(eta, sizeof eta, " - ETA %ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
        else snprintf(eta, sizeof eta, " - ETA %ld:%02ld", t / 60, t % 60);
    }
    if (rate >= 1 || rate == 0) fprintf(stderr, "\r  |%s| %d/%d - %.2f it/s%s\033[K", bar, step, steps, rate, eta);
    else fprintf(stderr, "\r  |%s| %d/%d - %.2f s/it%s\033[K", bar, step, steps, 1 / rate, eta);
    if (step == steps) fprintf(stderr, "\n");
    ps->open = step != steps;
    fflush(stderr);
}

/* ==== .npy inputs with a shape check ==== */

static void check_finite(const char *path, const float *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(d[i])) die(2, "%s: value %zu is %s (NaN and Inf are not valid noise or latents)", path, i,
                                 isnan(d[i]) ? "NaN" : "Inf");
}

static float *read_npy(const char *path, int want_nd, const int64_t *want, const char *what)
{
    int nd;
    int64_t sh[8];
    float *d = NULL;
    if (dit_npy_read(path, &nd, sh, &d)) die_lib();
    int same = nd == want_nd;
    for (int i = 0; same && i < nd; i++) same = sh[i] == want[i];
    if (!same) {
        char got[160] = "", exp[160] = "";
        size_t g = 0, e = 0;
        for (int i = 0; i < nd && g < sizeof got; i++) g += snprintf(got + g, sizeof got - g, "%s%lld", i ? ", " : "", (long long)sh[i]);
        for (int i = 0; i < want_nd && e < sizeof exp; i++)
            e += snprintf(exp + e, sizeof exp - e, "%s%lld", i ? ", " : "", (long long)want[i]);
        free(d);
        die(2, "%s: %s has shape (%s), expected (%s)", path, what, got, exp);
    }
    size_t n = 1;
    for (int i = 0; i < nd; i++) n *= (size_t)sh[i];
    check_finite(path, d, n);
    return d;
}

/* ==== Output ==== */

/* Fails now, not after a long sampling run, when an output file cannot be created (nothing is left behind). */
static void probe_output(const char *path)
{
    dit_atomic_file a;
    if (dit_atomic_open(&a, path)) die_lib();
    dit_atomic_abort(&a);
}

/* out.png -> out_001.png for image i > 0 (i = 0 keeps the name) */
static char *image_path(const char *out, int i)
{
    size_t n = strlen(out) + 16;
    char *p = malloc(n);
    if (!p) die(1, "out of memory");
    if (i == 0) {
        snprintf(p, n, "%s", out);
        return p;
    }
    const char *slash = strrchr(out, '/'), *dot = strrchr(out, '.');
    if (!dot || (slash && dot < slash) || dot == (slash ? slash + 1 : out)) dot = out + strlen(out);
    snprintf(p, n, "%.*s_%03d%s", (int)(dot - out), out, i, dot);
    return p;
}

#define GRID_PAD 2

/* make_grid: cells of (H + pad) x (W + pad) plus a pad border, value -1 (black after save_image), moved right
   by a black margin of `left` columns; image k goes to cell (row[k], col[k]). One image alone without a margin
   is returned as is (make_grid does that too). */
static float *make_grid(const float *imgs, int n, int C, int H, int W, const int *row, const int *col, int rows,
                        int cols, int left, int *GH, int *GW)
{
    const int pad = GRID_PAD;
    if (n == 1 && !left) {
        *GH = H, *GW = W;
        float *g = malloc((size_t)C * H * W * sizeof(float));
        if (!g) die(1, "out of memory");
        memcpy(g, imgs, (size_t)C * H * W * sizeof(float));
        return g;
    }
    *GH = rows * (H + pad) + pad;
    *GW = left + cols * (W + pad) + pad;
    size_t plane = (size_t)*GH * *GW;
    float *g = malloc(C * plane * sizeof(float));
    if (!g) die(1, "out of memory (grid %dx%d)", *GW, *GH);
    for (size_t i = 0; i < C * plane; i++) g[i] = -1.0f;
    for (int k = 0; k < n; k++)
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                memcpy(g + c * plane + (size_t)(row[k] * (H + pad) + pad + y) * *GW + left + col[k] * (W + pad) + pad,
                       imgs + (((size_t)k * C + c) * H + y) * W, W * sizeof(float));
    return g;
}

static const char *class_name(const dit_model *m, int y, char *buf, size_t n)
{
    if (y == m->cfg.num_classes) snprintf(buf, n, "unconditional (%d)", y);
    else if (m->class_names) snprintf(buf, n, "%s (%d)", m->class_names[y], y);
    else snprintf(buf, n, "%d", y);
    return buf;
}

/* snprintf at the end of buf (from the start when reset) */
static void append(char *buf, size_t n, int reset, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void append(char *buf, size_t n, int reset, const char *fmt, ...)
{
    size_t k = reset ? 0 : strlen(buf);
    va_list ap;
    va_start(ap, fmt);
    if (k < n) vsnprintf(buf + k, n - k, fmt, ap);
    va_end(ap);
}

/* 4 -> "4.0", 1.5 -> "1.5", 0.125 -> "0.125" */
static const char *fmt_num(char *buf, float v)
{
    if (v == (float)(long)v && fabsf(v) < 1e6f) snprintf(buf, 32, "%.1f", v);
    else snprintf(buf, 32, "%g", v);
    return buf;
}

/* ==== Row labels: white bitmap text (tools/font.h) in a margin left of the grid ==== */

/* Draws text into the (C, H, W) canvas img ([-1, 1] space) with its top-left corner at (x, y): each set font
   pixel becomes a scale x scale block of +1 (white) in every channel; the rest is left as it is; clipped. */
static void draw_text(float *img, int C, int H, int W, int x, int y, int scale, const char *text)
{
    for (; *text; text++, x += (FONT_W + 1) * scale) {
        unsigned char ch = (unsigned char)*text;
        const unsigned char *glyph = font_glyphs[(ch < 32 || ch > 126 ? '?' : ch) - 32];
        for (int r = 0; r < FONT_H * scale; r++)
            for (int c = 0; c < FONT_W * scale; c++) {
                int py = y + r, px = x + c;
                if ((glyph[r / scale] >> (FONT_W - 1 - c / scale) & 1) && py >= 0 && py < H && px >= 0 && px < W)
                    for (int k = 0; k < C; k++) img[((size_t)k * H + py) * W + px] = 1.0f;
            }
    }
}

#define LABEL_MAX 16   /* characters in a row label; a longer one is cut to 15 (less trailing ' ' and ',') + '.' */

/* Label of grid row r: the classes of its images, each once, in order, joined by ','; a class is its name up to
   the first comma ("tench, Tinca tinca" -> "tench"), or its index when the model has no names. */
static void row_label(const dit_model *m, const int *y, const int *row, int n, int r, char buf[LABEL_MAX + 1])
{
    char s[256] = "";
    int seen[LABEL_MAX + 1], n_seen = 0;
    for (int i = 0; i < n && n_seen <= LABEL_MAX; i++) {
        int dup = row[i] != r;
        for (int j = 0; j < n_seen && !dup; j++) dup = seen[j] == y[i];
        if (dup) continue;
        seen[n_seen++] = y[i];
        const char *name = m->class_names && y[i] < m->cfg.num_classes ? m->class_names[y[i]] : NULL;
        if (name && strcspn(name, ",")) append(s, sizeof s, 0, "%s%.*s", *s ? "," : "", (int)strcspn(name, ","), name);
        else append(s, sizeof s, 0, "%s%d", *s ? "," : "", y[i]);
    }
    if (strlen(s) > LABEL_MAX) {
        int k = LABEL_MAX - 1;
        while (k > 0 && (s[k - 1] == ' ' || s[k - 1] == ',')) k--;
        s[k] = '.', s[k + 1] = 0;
    }
    strcpy(buf, s);
}

/* ==== Arguments ==== */

static long long parse_int(const char *opt, const char *s, long long lo, long long hi)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) die(2, "%s: expected an integer in [%lld, %lld], got '%s'", opt, lo, hi, s);
    return v;
}

static float parse_float(const char *opt, const char *s)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (end == s || *end || errno || !isfinite(v)) die(2, "%s: expected a number, got '%s'", opt, s);
    return v;
}

/* --class lists -> labels (indices, names, 'all'); none given: sample.py's eight for an ImageNet model, else
   the first classes, `want` of them at most (the default list of a run of `want` images) */
static int *parse_classes(const dit_model *m, const char **args, int n_args, int want, int *n_labels)
{
    const int nc = m->cfg.num_classes, cap = nc + 1024;
    int *labels = malloc(sizeof(int) * cap), k = 0;
    if (!labels) die(1, "out of memory");
    for (int i = 0; i < n_args; i++) {
        char *list = strdup(args[i]), *save = NULL;
        for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            while (isspace((unsigned char)*tok)) tok++;
            for (char *e = tok + strlen(tok); e > tok && isspace((unsigned char)e[-1]);) *--e = 0;
            if (!*tok) continue;
            const int all = !strcasecmp(tok, "all");   /* every class in order (class-balanced sets, e.g. for FID) */
            for (int c = 0; c < (all ? nc : 1); c++) {
                if (k == cap) die(2, "too many classes");
                const int y = all ? c : dit_class_from_name(m, tok);
                if (y < 0) die(2, "--class: %s", dit_last_error());
                labels[k++] = y;
            }
        }
        free(list);
    }
    if (n_args && !k) die(2, "--class: no class given");
    static const int imagenet[8] = { 207, 360, 387, 974, 88, 979, 417, 279 };
    for (int i = 0; !n_args && i < want && i < 8; i++) labels[k++] = nc == 1000 ? imagenet[i] : i % nc;
    *n_labels = k;
    return labels;
}

/* PNGs of images i0 .. i0+k-1 (pixels at imgs, IMG floats each; y: labels, NULL for --decode), written on
   `threads` threads (0: all): zlib's deflate is most of the time (~7 ms per 256 px image, 50,000 images ~6
   minutes on one core). The first failure (lowest image) ends the program, as a serial loop would. */
#define PNG_GROUP 32
static void write_pngs(const char *out, const float *imgs, size_t IMG, int i0, int k, int first, int IC, int S,
                       const char *common, const int *y, const dit_model *m, int metadata, int threads)
{
    int bad = -1, code = 0;
    char msg[1024] = "";
#pragma omp parallel for schedule(dynamic) num_threads(threads > 0 ? threads : omp_get_max_threads())
    for (int j = 0; j < k; j++) {
        const int i = i0 + j, gi = first + i;   /* gi: the image's number in the whole job (--first-image) */
        char text[4096], cname[160];
        char *path = image_path(out, gi);
        if (!y)
            snprintf(text, sizeof text, "%s, Image: %d, Size: %dx%d, Model: %s, Version: dit.c", common, gi, S, S, m->name);
        else
            snprintf(text, sizeof text, "class: %s\n%s, Image: %d, Size: %dx%d, Model: %s, Version: dit.c",
                     class_name(m, y[i], cname, sizeof cname), common, gi, S, S, m->name);
        if (dit_png_write(path, imgs + (size_t)j * IMG, IC, S, S, metadata ? text : NULL)) {
#pragma omp critical
            if (bad < 0 || i < bad) {
                bad = i;
                code = dit_last_error_code();
                snprintf(msg, sizeof msg, "%s", dit_last_error());
            }
        }
        free(path);
    }
    if (bad >= 0) die(exit_status(code), "%s", msg);
}

/* all n images (imgs, CHW each) as one make_grid PNG: nrow per row, or one row per class (rows_per_class, in
   order of first appearance), with the rows' class names in a left margin (labelled); y NULL: --decode */
static void write_grid(const char *out, const float *imgs, int n, int IC, int S, const int *y, int rows_per_class,
                       int nrow, int labelled, const char *common, const dit_model *m, int metadata)
{
    int *row = malloc(sizeof(int) * n), *col = malloc(sizeof(int) * n), rows = 0, cols = 0;
    char *text = malloc(4096 + 64 * (size_t)n), cname[160];
    if (!row || !col || !text) die(1, "out of memory");
    if (rows_per_class && y) {   /* one row per distinct class, in order of first appearance */
        int *order = malloc(sizeof(int) * n), n_order = 0;
        for (int i = 0; i < n; i++) {
            int r = 0;
            while (r < n_order && order[r] != y[i]) r++;
            if (r == n_order) order[n_order++] = y[i];
            int c = 0;
            for (int j = 0; j < i; j++) c += y[j] == y[i];
            row[i] = r;
            col[i] = c;
            if (c + 1 > cols) cols = c + 1;
        }
        rows = n_order;
        free(order);
    } else {
        cols = n < nrow ? n : nrow;
        rows = (n + cols - 1) / cols;
        for (int i = 0; i < n; i++) row[i] = i / cols, col[i] = i % cols;
    }
    /* labels: text FONT_H * scale px high (9 px for 28 px images: 1/3 of the row; 45 px for 256 px ones) */
    const int scale = 1 + S / 64;
    char (*lab)[LABEL_MAX + 1] = labelled ? malloc(sizeof *lab * rows) : NULL;
    size_t longest = 0;
    if (labelled && !lab) die(1, "out of memory");
    for (int r = 0; labelled && r < rows; r++) {
        row_label(m, y, row, n, r, lab[r]);
        if (strlen(lab[r]) > longest) longest = strlen(lab[r]);
    }
    const int margin = labelled ? scale * (2 + (FONT_W + 1) * (int)longest) : 0;
    int GH, GW;
    float *g = make_grid(imgs, n, IC, S, S, row, col, rows, cols, margin, &GH, &GW);
    for (int r = 0; labelled && r < rows; r++)   /* capitals centred on the row's images */
        draw_text(g, IC, GH, GW, 2 * scale, r * (S + GRID_PAD) + GRID_PAD + (S - FONT_CAP * scale) / 2, scale, lab[r]);
    const size_t cap = 4096 + 64 * (size_t)n;
    size_t k = 0;
    if (!y) {
        snprintf(text, cap, "%s, Images: %d, Grid: %dx%d, Size: %dx%d, Model: %s, Version: dit.c", common, n, rows, cols,
                 S, S, m->name);
    } else {
        k = snprintf(text, cap, "classes:");
        for (int i = 0; i < n; i++)
            k += snprintf(text + k, cap - k, "%s %s", i ? "," : "", class_name(m, y[i], cname, sizeof cname));
        snprintf(text + k, cap - k, "\n%s, Images: %d, Grid: %dx%d, Size: %dx%d, Model: %s, Version: dit.c", common, n,
                 rows, cols, S, S, m->name);
    }
    if (dit_png_write(out, g, IC, GH, GW, metadata ? text : NULL)) die_lib();
    if (verbose) fprintf(stderr, "wrote %s (%dx%d grid, %dx%d px)\n", out, rows, cols, GW, GH);
    free(g), free(row), free(col), free(lab), free(text);
}

int main(int argc, char **argv)
{
    const char *model = NULL, *out = NULL, *init_path = NULL, *step_path = NULL, *save_latent = NULL, *npz = NULL;
    const char *decode_path = NULL, *spacing = NULL, *class_args[256], *profile = NULL;
    int n_class_args = 0, n = 0, grid = 0, nrow = 8, rows_per_class = 0, metadata = 1, labelled = -1;
    int gpus = 1, strategy = DIT_PAR_AUTO, seq_mode = DIT_SEQ_AUTO, rank = 0, steps_given = 0, cfg_given = 0;
    int batch = 0, world = 1;   /* images per dit_sample call (0: 32 per GPU); GPUs sampling together */
    int first = 0;              /* --first-image: this run makes images first .. first+n-1 of the job */
    double nccl_timeout = 60;
    dit_sample_params p = dit_sample_params_default();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define VAL() (i + 1 < argc ? argv[++i] : (die(2, "%s needs a value (see --help)", a), ""))
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = VAL();
        else if (!strcmp(a, "-c") || !strcmp(a, "--class")) {
            if (n_class_args == 256) die(2, "too many --class options");
            class_args[n_class_args++] = VAL();
        } else if (!strcmp(a, "-n") || !strcmp(a, "--count")) n = (int)parse_int(a, VAL(), 1, 100000);
        else if (!strcmp(a, "--batch")) batch = (int)parse_int(a, VAL(), 1, 100000);
        else if (!strcmp(a, "--first-image")) first = (int)parse_int(a, VAL(), 0, 1000000000);
        else if (!strcmp(a, "-s") || !strcmp(a, "--seed")) {
            const char *v = VAL();
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (end == v || *end || errno || *v == '-') die(2, "%s: expected an integer in [0, 2^64), got '%s'", a, v);
            p.seed = s;
        } else if (!strcmp(a, "--steps")) p.steps = (int)parse_int(a, VAL(), 1, 1000), steps_given = 1;
        else if (!strcmp(a, "--sampler")) {
            const char *v = VAL();
            if ((p.sampler = dit_sampler_from_name(v)) < 0) die(2, "--sampler: expected ddpm, ddim or dpm++2m, got '%s'", v);
        } else if (!strcmp(a, "--eta")) p.eta = parse_float(a, VAL());
        else if (!strcmp(a, "--spacing")) spacing = VAL();
        else if (!strcmp(a, "--cfg-scale")) p.cfg_scale = parse_float(a, VAL()), cfg_given = 1;
        else if (!strcmp(a, "--no-cfg")) p.no_cfg = 1;
        else if (!strcmp(a, "--clip-denoised")) p.clip_denoised = 1;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) out = VAL();
        else if (!strcmp(a, "--grid")) grid = 1;
        else if (!strcmp(a, "--nrow")) nrow = (int)parse_int(a, VAL(), 1, 10000);
        else if (!strcmp(a, "--rows-per-class")) rows_per_class = grid = 1;
        else if (!strcmp(a, "--labels")) labelled = 1;
        else if (!strcmp(a, "--no-labels")) labelled = 0;
        else if (!strcmp(a, "--no-metadata")) metadata = 0;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) p.threads = (int)parse_int(a, VAL(), 1, 4096);
        else if (!strcmp(a, "--backend")) {
            const char *v = VAL();
            if (!strcasecmp(v, "auto")) p.backend = DIT_BACKEND_AUTO;
            else if (!strcasecmp(v, "cpu")) p.backend = DIT_BACKEND_CPU;
            else if (!strcasecmp(v, "cuda")) p.backend = DIT_BACKEND_CUDA;
            else die(2, "--backend: expected auto, cpu or cuda, got '%s'", v);
        } else if (!strcmp(a, "--gpus")) {
            const char *v = VAL();
            gpus = !strcmp(v, "all") ? -1 : (int)parse_int(a, v, 1, 64);
        } else if (!strcmp(a, "--parallel")) {
            char buf[64], *save = NULL;
            snprintf(buf, sizeof buf, "%s", VAL());
            strategy = DIT_PAR_AUTO;
            if (strcasecmp(buf, "auto"))
                for (char *t = strtok_r(buf, "+", &save); t; t = strtok_r(NULL, "+", &save)) {
                    if (!strcasecmp(t, "data")) strategy |= DIT_PAR_DATA;
                    else if (!strcasecmp(t, "cfg")) strategy |= DIT_PAR_CFG;
                    else if (!strcasecmp(t, "seq")) strategy |= DIT_PAR_SEQ;
                    else die(2, "--parallel: expected auto or data, cfg, seq joined by '+', got '%s'", t);
                }
        } else if (!strcmp(a, "--seq-mode")) {
            const char *v = VAL();
            if (!strcasecmp(v, "auto")) seq_mode = DIT_SEQ_AUTO;
            else if (!strcasecmp(v, "ulysses")) seq_mode = DIT_SEQ_ULYSSES;
            else if (!strcasecmp(v, "allgather")) seq_mode = DIT_SEQ_ALLGATHER;
            else die(2, "--seq-mode: expected auto, ulysses or allgather, got '%s'", v);
        } else if (!strcmp(a, "--nccl-timeout")) {
            nccl_timeout = parse_float(a, VAL());
            if (!(nccl_timeout > 0)) die(2, "--nccl-timeout must be > 0");
        } else if (!strcmp(a, "--init-noise")) init_path = VAL();
        else if (!strcmp(a, "--step-noise")) step_path = VAL();
        else if (!strcmp(a, "--save-latent")) save_latent = VAL();
        else if (!strcmp(a, "--npz")) npz = VAL();
        else if (!strcmp(a, "--profile")) profile = VAL();
        else if (!strcmp(a, "--decode")) decode_path = VAL();
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) verbose = 1;
        else die(2, "unknown option '%s' (see --help)", a);
#undef VAL
    }
    if (!model) die(2, "no model given (-m MODEL.gguf; see --help)");
    if (!out && !npz) out = "sample.png";   /* --npz alone writes no PNGs */
    if (grid && !out) die(2, "--grid needs -o (with --npz alone no PNG is written)");
    if (p.eta < 0) die(2, "--eta must be >= 0");
    if (p.eta != 0 && p.sampler != DIT_SAMPLER_DDIM) die(2, "--eta applies to --sampler ddim only");
    if (!steps_given && p.sampler == DIT_SAMPLER_DPMPP_2M) p.steps = 25;
    if (p.no_cfg && cfg_given && p.cfg_scale != 1.0f) die(2, "--no-cfg samples without guidance: drop --cfg-scale");
    if (p.no_cfg) p.cfg_scale = 1.0f;
    if (step_path && (p.sampler == DIT_SAMPLER_DPMPP_2M || (p.sampler == DIT_SAMPLER_DDIM && p.eta == 0)))
        fprintf(stderr, "dit-sample: warning: --step-noise is not used: %s%s draws no noise\n",
                dit_sampler_name(p.sampler), p.sampler == DIT_SAMPLER_DDIM ? " with eta 0" : "");
    if (labelled == 1 && !grid) die(2, "--labels applies to --grid and --rows-per-class only");
    if (labelled == 1 && decode_path) die(2, "--labels: --decode has no classes to label the rows with");
    if (first && decode_path) die(2, "--first-image: --decode samples nothing");
    if (labelled < 0) labelled = rows_per_class && !decode_path;
    p.spacing = spacing;
    int backend_req = p.backend;
#ifndef DIT_CUDA
    if (backend_req == DIT_BACKEND_CUDA) die(2, "--backend cuda: this build has no CUDA backend (rebuild with nvcc)");
#endif

    /* ---- load */
    double t0 = now();
    dit_model *m = dit_model_load(model);
    if (!m) die_lib();
    const dit_config *cf = &m->cfg;
    double t_load = now() - t0;
    const size_t CLL = dit_latent_floats(m), IMG = dit_image_floats(m);
    const int L = cf->input_size, C = cf->in_channels, S = dit_image_size(m), IC = dit_image_channels(m);
    if (verbose)
        fprintf(stderr, "model %s: depth %d, hidden %d, heads %d, patch %d, latent %dx%dx%d, %d classes%s; image %dx%dx%d\n",
                m->name, cf->depth, cf->hidden, cf->heads, cf->patch, C, L, L, cf->num_classes,
                cf->has_vae ? ", VAE" : ", pixel-space", IC, S, S);

    /* ---- labels */
    int *labels = NULL, n_labels = 0;
    float *lat = NULL;
    if (decode_path) {
        int nd;
        int64_t sh[8];
        if (dit_npy_read(decode_path, &nd, sh, &lat)) die_lib();
        if (nd != 4 || sh[0] < 1 || sh[1] != C || sh[2] != L || sh[3] != L)
            die(2, "%s: latents must have shape (N, %d, %d, %d)", decode_path, C, L, L);
        if (n && n != sh[0]) die(2, "%s holds %lld latents but -n is %d", decode_path, (long long)sh[0], n);
        n = (int)sh[0];
        check_finite(decode_path, lat, CLL * n);
    } else {
        labels = parse_classes(m, class_args, n_class_args, n ? first + n : 8, &n_labels);
        if (!n) n = n_labels;
    }
    int *y = malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) y[i] = labels ? labels[(first + i) % n_labels] : -1;

    /* ---- GPUs: one, several in this process, or one rank of several processes */
    char spacing_buf[32];
    double t_sample = 0, t_decode = 0, t_write = 0;
    int use_cuda = 0;
#ifdef DIT_CUDA
    dit_par_params pp = { 0 };
    const int multi = dit_par_params_from_env(&pp);
    use_cuda = backend_req == DIT_BACKEND_CUDA || (backend_req == DIT_BACKEND_AUTO && dit_cuda_available() > 0);
    if (gpus < 0) gpus = dit_cuda_available() > 0 ? dit_cuda_available() : 1;
    if ((gpus > 1 || multi) && !use_cuda) die(2, "--gpus and multi-process sampling need the CUDA backend");
    if ((gpus > 1 || multi) && decode_path) die(2, "--decode runs on one GPU (drop --gpus)");
    if (multi && gpus > 1) die(2, "--gpus: one GPU per process in multi-process mode (DIT_WORLD_SIZE is set)");
    rank = pp.rank;
    if (rank != 0) quiet = 1, verbose = 0;   /* rank 0 speaks for the job */
#else
    if (gpus != 1) die(2, "--gpus: this build has no CUDA backend (rebuild with nvcc)");
    (void)strategy, (void)seq_mode, (void)nccl_timeout;
#endif
    if (rank == 0) {
        if (out) probe_output(out);
        if (save_latent) probe_output(save_latent);
        if (npz) probe_output(npz);
    }
#ifdef DIT_CUDA
    world = multi ? pp.world : gpus;
#endif
    if (decode_path || batch > n) batch = n;
    else if (batch <= 0) batch = 32 * world < n ? 32 * world : n;   /* 32 per GPU, as sample_ddp.py */
#ifdef DIT_CUDA
    if (use_cuda) {
        t0 = now();
        if (gpus > 1 || multi) {
            pp.gpus = gpus; pp.strategy = strategy; pp.seq_mode = seq_mode; pp.n_images = batch; pp.timeout_s = nccl_timeout;
            pp.no_cfg = p.no_cfg;
            char plan[512];
            if (dit_cuda_init_parallel(m, &pp, plan, sizeof plan)) die_lib();
            if (verbose) fprintf(stderr, "parallel: %s\n", plan);
        } else if (dit_cuda_init(m, 0)) {
            die_lib();
        }
        if (verbose) fprintf(stderr, "upload to GPU: %.2f s\n", now() - t0);
    }
#endif
    p.backend = use_cuda ? DIT_BACKEND_CUDA : DIT_BACKEND_CPU;
    if (profile && !use_cuda) die(2, "--profile needs the CUDA backend (a GPU and a CUDA build)");
    if (profile && rank == 0) probe_output(profile);
#ifdef DIT_CUDA
    if (profile && dit_cuda_profile_begin(m)) die_lib();
#endif
    dit_schedule sched;
    float *init = NULL, *step_all = NULL;
    if (!decode_path) {
        if (!spacing) dit_sampler_spacing(p.sampler, p.steps, spacing_buf, sizeof spacing_buf);
        if (dit_schedule_init(&sched, spacing ? spacing : spacing_buf)) die(2, "%s", dit_last_error());
        int64_t ishape[4] = { n, C, L, L }, sshape[5] = { sched.K, n, C, L, L };
        init = init_path ? read_npy(init_path, 4, ishape, "--init-noise") : NULL;
        step_all = step_path ? read_npy(step_path, 5, sshape, "--step-noise") : NULL;
    }

    float *imgs = malloc(IMG * (grid ? n : n < PNG_GROUP ? n : PNG_GROUP) * sizeof(float));
    if (!imgs) die(1, "out of memory");
    /* ---- PNG text: A1111 / sd.cpp style "key: value" pairs */
    char common[1024], num[2][32];
    if (decode_path) {
        snprintf(common, sizeof common, "Decoded from: %s", decode_path);
    } else {
        const int ddim = p.sampler == DIT_SAMPLER_DDIM;
        append(common, sizeof common, 1, "Steps: %d, Sampler: %s", sched.K, dit_sampler_name(p.sampler));
        if (ddim && p.eta != 0) append(common, sizeof common, 0, ", Eta: %s", fmt_num(num[0], p.eta));
        append(common, sizeof common, 0, ", CFG scale: %s", fmt_num(num[1], p.cfg_scale));
        if (p.no_cfg) append(common, sizeof common, 0, ", CFG batch: off");
        if (spacing) append(common, sizeof common, 0, ", Spacing: %s", spacing);
        if (p.clip_denoised) append(common, sizeof common, 0, ", Clip denoised: 1");
        if (init_path) append(common, sizeof common, 0, ", Init noise: %s", init_path);
        if (step_path) append(common, sizeof common, 0, ", Step noise: %s", step_path);
        append(common, sizeof common, 0, ", Seed: %llu", (unsigned long long)p.seed);
    }

    /* ---- sample in batches of `batch` images (bounded memory for any -n; image i keeps Philox stream i),
       then decode and write each batch's images (rank 0) */
    const int decode = rank == 0;   /* multi-process: rank 0 decodes and writes */
    const int n_batches = (n + batch - 1) / batch;
    float *step_b = step_all && n_batches > 1 ? malloc((size_t)sched.K * batch * CLL * sizeof(float)) : NULL;
    if (!decode_path && !(lat = malloc(CLL * (save_latent ? n : batch) * sizeof(float)))) die(1, "out of memory");
    if (step_all && n_batches > 1 && !step_b) die(1, "out of memory");
    progress_state ps = { now(), 0, decode_path ? 1 : n_batches, 0 };
    dit_npz zf;
    if (npz && decode) {
        if (dit_npz_open(&zf, npz, n, IC, S, S)) die_lib();
        npz_open = &zf;
        snprintf(npz_tmp, sizeof npz_tmp, "%s", zf.a.tmp);
        signal(SIGINT, npz_on_signal);
        signal(SIGTERM, npz_on_signal);
    }
    for (int i0 = 0; i0 < n; i0 += batch) {
        const int nb = n - i0 < batch ? n - i0 : batch;
        float *lb = decode_path || save_latent ? lat + i0 * CLL : lat;   /* this batch's latents */
        if (!decode_path) {
            p.n = nb;
            p.labels = y + i0;
            p.first_image = (uint32_t)(first + i0);
            p.init_noise = init ? init + i0 * CLL : NULL;
            p.step_noise = step_all;
            if (step_b) {   /* (K, n, C, L, L) -> this batch's (K, nb, C, L, L) */
                for (int k = 0; k < sched.K; k++)
                    memcpy(step_b + (size_t)k * nb * CLL, step_all + ((size_t)k * n + i0) * CLL, nb * CLL * sizeof(float));
                p.step_noise = step_b;
            }
            p.progress = progress;
            p.progress_user = &ps;
            ps.batch = i0 / batch;
            t0 = now();
            if (dit_sample(m, &p, lb)) {
                if (!quiet) fprintf(stderr, "\n");
                die_lib();
            }
            t_sample += now() - t0;
#ifdef DIT_CUDA
            dit_cuda_info ci;
            if (verbose && i0 == 0 && use_cuda && !dit_cuda_get_info(m, &ci))
                progress_break(&ps), fprintf(stderr, "sample phases (GPU 0, host%s): setup %.0f ms, first step %.0f ms (adaLN, plans, "
                        "tuning, kernel loading), graph capture %.0f ms, other steps %.0f ms\n",
                        n_batches > 1 ? ", first batch" : "", ci.ms_setup, ci.ms_first_step, ci.ms_capture, ci.ms_steps);
#endif
        }
        for (int g0 = i0; decode && g0 < i0 + nb; g0 += PNG_GROUP) {   /* decode a group, then write it */
            const int k = i0 + nb - g0 < PNG_GROUP ? i0 + nb - g0 : PNG_GROUP;
            t0 = now();
            float *img = imgs + (grid ? g0 : 0) * IMG;   /* k images (on several GPUs a share each) */
            const float *li = lb + (size_t)(g0 - i0) * CLL;
            int rc;
#ifdef DIT_CUDA
            rc = use_cuda && cf->has_vae ? dit_cuda_decode(m, li, k, img) : dit_decode(m, li, k, img, p.threads);
#else
            rc = dit_decode(m, li, k, img, p.threads);
#endif
            if (rc) die_lib();
            t_decode += now() - t0;
            t0 = now();
            for (int i = g0; npz_open && i < g0 + k; i++)
                if (dit_npz_add(&zf, imgs + (grid ? i : i - g0) * IMG)) die_lib();
            t_write += now() - t0;
            if (grid || !out) continue;
            t0 = now();
            write_pngs(out, imgs, IMG, g0, k, first, IC, S, common, decode_path ? NULL : y, m, metadata, p.threads);
            for (int i = g0; verbose && i < g0 + k; i++) {
                char *path = image_path(out, first + i);
                progress_break(&ps), fprintf(stderr, "wrote %s\n", path);
                free(path);
            }
            t_write += now() - t0;
        }
    }
    if (npz_open) {
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        npz_open = NULL;
        if (dit_npz_close(&zf)) die_lib();
        if (verbose) fprintf(stderr, "wrote %s (%d images)\n", npz, n);
    }
    if (!decode_path && verbose)
        fprintf(stderr, "sample: %d images in %d batch%s, %d steps (%s, %s%s, CFG %.2f): %.2f s, %.3f s/step\n", n,
                n_batches, n_batches > 1 ? "es" : "", sched.K, dit_sampler_name(p.sampler), spacing ? "spacing " : "",
                spacing ? spacing : spacing_buf, p.cfg_scale, t_sample, t_sample / sched.K / n_batches);
    free(init);
    free(step_all);
    free(step_b);
    if (save_latent && rank == 0) {
        int64_t sh[4] = { n, C, L, L };
        if (dit_npy_write(save_latent, 4, sh, lat)) die_lib();
    }
#ifdef DIT_CUDA
    if (profile && dit_cuda_profile_end(m, rank == 0 ? profile : NULL, verbose ? stderr : NULL)) die_lib();   /* all ranks run op by op; rank 0 writes */
    if (profile && verbose) fprintf(stderr, "wrote profile %s\n", profile);
#endif
    if (rank != 0) {
        free(imgs), free(lat), free(y), free(labels);
        dit_model_free(m);
        return 0;
    }

    if (grid) {
        t0 = now();
        write_grid(out, imgs, n, IC, S, decode_path ? NULL : y, rows_per_class, nrow, labelled, common, m, metadata);
        t_write += now() - t0;
    }
    if (verbose)
        fprintf(stderr, "timings: load %.2f s, sample %.2f s, decode %.2f s, write %.2f s\n", t_load, t_sample, t_decode,
                t_write);
    free(imgs), free(lat), free(y), free(labels);
    dit_model_free(m);
    return 0;
}
