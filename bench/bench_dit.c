/* bench_dit.c - timing harness for dit.c: sampler ms/step, images/s, VAE decode, GPU memory.

   bench_dit MODEL.gguf [-n 1,8] [--steps 250] [--reps 5] [--max-seconds 60] [--backend cuda|cpu] [--json OUT]

   For each image count n (CFG network batch 2n):
     1. warm-up samples of --warmup-steps steps: the first uploads the weights, plans the arena and
        captures the CUDA graph; then more for at least 1 s on the GPU (clocks), the last one giving the
        per-step estimate;
     2. the timed runs: `reps` whole dit_sample calls of `steps` DDPM steps, CFG 4.0, labels of sample.py
        (207, 360, 387, 974, 88, 979, 417, 279, cycled). ms/step = median wall time of one call / steps, so the
        per-sample work (noise upload, adaLN precompute, latent download) is included. When `reps` runs of
        `steps` do not fit the case's share of --max-seconds, fewer steps are timed (at least 3 runs) and the
        JSON says so ("steps" < "steps_requested"): the figure is then a per-step rate of a shorter schedule;
     3. CUDA builds only: dit_cuda_bench (graph replay of `steps` steps on random latents), the step alone, when
        the backend provides it;
     4. VAE decode of the n latents: median of --decode-reps (CUDA: dit_cuda_decode when the backend provides it;
        dit_decode is also timed once for n = 1, so the report shows whether it dispatches to the GPU);
     5. GPU memory: cudaMemGetInfo before the model reaches the GPU (context only) and after each call; the
        difference is what this process allocated (weights + arena), context excluded.
   Results: a human-readable log on stdout and, with --json, one JSON object (written atomically).

   Timing uses CLOCK_MONOTONIC around calls that return only when their results are on the host. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dit.h"

#ifdef DIT_CUDA
#include "ggml-cuda/dit-cuda.h"
/* Optional parts of the backend: weak references, NULL when this build does not define them. */
#pragma weak dit_cuda_bench
#pragma weak dit_cuda_get_info
#pragma weak dit_cuda_decode
/* The CUDA runtime's cudaMemGetInfo (libcudart, linked in CUDA builds). Declared here because the C
   compiler is not given the CUDA include path; cudaError_t is an int-sized enum (cudaSuccess = 0). */
int cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
#endif

#define MAX_CASES 16
static const int SAMPLE_LABELS[8] = { 207, 360, 387, 974, 88, 979, 417, 279 };  /* sample.py */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void die(int code, const char *file, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_dit: error: %s%s", file ? file : "", file ? ": " : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

/* GPU memory in use on the device (all processes, context included); 0 without CUDA. */
static size_t gpu_used(void)
{
#ifdef DIT_CUDA
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == 0) return tot - fr;
#endif
    return 0;
}

typedef struct {
    int n;                      /* images; network batch 2n */
    int steps_requested, steps, reps;
    double ms_step_median, ms_step_min, sample_ms_median;
    double warm_first_ms, warm_ms_step;
    double images_per_s;        /* n / (ms_step * 250) */
    int have_step_only;
    double step_only_ms, step_only_min_ms, precompute_ms;
    size_t be_weight_bytes, be_arena_bytes, be_peak_bytes;
    int decode_reps;
    double decode_ms, decode_api_ms;   /* decode_api_ms: one dit_decode call (n = 1), < 0 if not run */
    const char *decode_fn;
    size_t mem_delta;           /* max GPU bytes in use minus the bytes in use before the model reached the GPU */
    float lat_absmax, img_absmax;
    int finite;
    int saved_steps;            /* steps of the images written by --save, 0 if none */
} bench_case;

typedef struct {
    const char *model_path, *json_path, *save_path, *label;
    int ns[MAX_CASES], n_cases;
    int steps, reps, warm_steps, decode_reps, threads, backend, verbose, save_steps;
    double max_seconds;
    uint64_t seed;
} options;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: bench_dit MODEL.gguf [options]\n"
        "  -n LIST            image counts to time, comma separated (default 1)\n"
        "  --steps S          DDPM steps per timed sample (default 250)\n"
        "  --reps R           timed samples per case (default 5; at least 3 are kept when time is short)\n"
        "  --warmup-steps W   steps of each of the two warm-up samples (default 10)\n"
        "  --max-seconds T    time budget for all cases (default 120); fewer steps are timed when needed\n"
        "  --decode-reps R    VAE decodes timed per case (default 10 for n=1, 5 otherwise); 0 = none\n"
        "  --backend B        cuda (default in CUDA builds) or cpu\n"
        "  -t N               CPU threads (default: all)\n"
        "  --seed S           noise seed (default 0)\n"
        "  --json FILE        write the results as JSON (atomically)\n"
        "  --save FILE.npy    decoded images of the first case (float32, N,3,H,W), sampled with --save-steps\n"
        "  --save-steps S     steps of that sample (default: --steps); when the timed samples had fewer steps\n"
        "                     (time budget), one more sample is run for it, so saved images stay comparable\n"
        "  --label TEXT       free text copied into the JSON (e.g. \"f16\")\n"
        "  --info             print how this binary was built (CUDA or not) and exit\n"
        "  -v                 more detail\n");
}

static int parse_int(const char *s, const char *what, int lo, int hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) die(2, NULL, "%s: '%s' is not an integer in [%d, %d]", what, s, lo, hi);
    return (int)v;
}

static void parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->ns[0] = 1;
    o->n_cases = 1;
    o->steps = 250;
    o->reps = 5;
    o->warm_steps = 10;
    o->decode_reps = -1;
    o->max_seconds = 120;
#ifdef DIT_CUDA
    o->backend = DIT_BACKEND_CUDA;
#else
    o->backend = DIT_BACKEND_CPU;
#endif
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE() do { if (!v) die(2, NULL, "%s needs a value", a); i++; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); exit(0); }
        else if (!strcmp(a, "--info")) {
#ifdef DIT_CUDA
            printf("bench_dit: CUDA build, %d GPU(s) visible\n", dit_cuda_available());
            exit(dit_cuda_available() > 0 ? 0 : 1);
#else
            printf("bench_dit: CPU-only build (no CUDA backend: build with nvcc for GPU timings)\n");
            exit(1);
#endif
        }
        else if (!strcmp(a, "-v")) o->verbose = 1;
        else if (!strcmp(a, "-n")) {
            NEED_VALUE();
            char buf[256], *save = NULL;
            snprintf(buf, sizeof buf, "%s", v);
            o->n_cases = 0;
            for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (o->n_cases == MAX_CASES) die(2, NULL, "-n: at most %d cases", MAX_CASES);
                o->ns[o->n_cases++] = parse_int(tok, "-n", 1, 1024);
            }
            if (!o->n_cases) die(2, NULL, "-n: empty list");
        }
        else if (!strcmp(a, "--steps")) { NEED_VALUE(); o->steps = parse_int(v, a, 1, 1000); }
        else if (!strcmp(a, "--reps")) { NEED_VALUE(); o->reps = parse_int(v, a, 1, 10000); }
        else if (!strcmp(a, "--warmup-steps")) { NEED_VALUE(); o->warm_steps = parse_int(v, a, 1, 1000); }
        else if (!strcmp(a, "--decode-reps")) { NEED_VALUE(); o->decode_reps = parse_int(v, a, 0, 10000); }
        else if (!strcmp(a, "-t")) { NEED_VALUE(); o->threads = parse_int(v, a, 0, 4096); }
        else if (!strcmp(a, "--seed")) { NEED_VALUE(); o->seed = strtoull(v, NULL, 10); }
        else if (!strcmp(a, "--max-seconds")) {
            NEED_VALUE();
            char *end;
            o->max_seconds = strtod(v, &end);
            if (*end || !(o->max_seconds > 0)) die(2, NULL, "--max-seconds: '%s' is not a positive number", v);
        }
        else if (!strcmp(a, "--backend")) {
            NEED_VALUE();
            if (!strcmp(v, "cuda")) o->backend = DIT_BACKEND_CUDA;
            else if (!strcmp(v, "cpu")) o->backend = DIT_BACKEND_CPU;
            else die(2, NULL, "--backend: '%s' (cuda or cpu)", v);
        }
        else if (!strcmp(a, "--json")) { NEED_VALUE(); o->json_path = v; }
        else if (!strcmp(a, "--save")) { NEED_VALUE(); o->save_path = v; }
        else if (!strcmp(a, "--save-steps")) { NEED_VALUE(); o->save_steps = parse_int(v, a, 1, 1000); }
        else if (!strcmp(a, "--label")) { NEED_VALUE(); o->label = v; }
        else if (a[0] == '-' && a[1]) die(2, NULL, "unknown option '%s' (see --help)", a);
        else if (!o->model_path) o->model_path = a;
        else die(2, NULL, "more than one model file ('%s')", a);
#undef NEED_VALUE
    }
    if (!o->model_path) { usage(stderr); exit(2); }
    if (!o->save_steps) o->save_steps = o->steps;
#ifndef DIT_CUDA
    if (o->backend == DIT_BACKEND_CUDA) die(2, NULL, "this build has no CUDA backend (build with nvcc, or use --backend cpu)");
#endif
}

/* Weight bytes of the file by tensor type, for the log ("f16 1.35 GB, f32 0.01 GB"). */
static void weight_summary(const dit_model *m, char *buf, size_t cap, const char **main_type)
{
    size_t by_type[DIT_TYPE_COUNT] = { 0 };
    for (int64_t i = 0; i < dit_gguf_n_tensors(m->file); i++) {
        const dit_gguf_tensor *t = dit_gguf_tensor_at(m->file, i);
        if (t->type >= 0 && t->type < DIT_TYPE_COUNT) by_type[t->type] += t->nbytes;
    }
    size_t best = 0, off = 0;
    buf[0] = 0;
    *main_type = "?";
    for (int ty = 0; ty < DIT_TYPE_COUNT; ty++) {
        if (!by_type[ty]) continue;
        const char *nm = dit_type_name(ty) ? dit_type_name(ty) : "?";
        if (by_type[ty] > best) { best = by_type[ty]; *main_type = nm; }
        if (off < cap) off += snprintf(buf + off, cap - off, "%s%s %.3f GB", off ? ", " : "", nm, by_type[ty] / 1e9);
    }
}

static int run_sample(dit_model *m, const options *o, int n, int steps, const int *labels, float *lat, double *ms)
{
    dit_sample_params p = dit_sample_params_default();
    p.n = n;
    p.labels = labels;
    p.steps = steps;
    p.seed = o->seed;
    p.backend = o->backend;
    p.threads = o->threads;
    double t0 = now_s();
    int rc = dit_sample(m, &p, lat);
    *ms = (now_s() - t0) * 1e3;
    return rc;
}

static void absmax_check(const float *x, size_t n, float *amax, int *finite)
{
    float a = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) { *finite = 0; continue; }
        float v = fabsf(x[i]);
        if (v > a) a = v;
    }
    if (a > *amax) *amax = a;
}

static int decode(dit_model *m, const options *o, const float *lat, int n, float *img, const char **fn)
{
#ifdef DIT_CUDA
    if (o->backend == DIT_BACKEND_CUDA && dit_cuda_decode && m->cuda) {
        *fn = "dit_cuda_decode";
        return dit_cuda_decode(m, lat, n, img);
    }
#endif
    *fn = "dit_decode";
    return dit_decode(m, lat, n, img, o->threads);
}

static void bench_one(dit_model *m, const options *o, int n, double budget_s, size_t used0, bench_case *c,
                      int save)
{
    const size_t lat_n = dit_latent_floats(m) * n, img_n = dit_image_floats(m) * n;
    float *lat = malloc(lat_n * sizeof(float)), *img = malloc(img_n * sizeof(float));
    int *labels = malloc(n * sizeof(int));
    if (!lat || !img || !labels) die(3, NULL, "out of memory (%d images)", n);
    for (int i = 0; i < n; i++) labels[i] = SAMPLE_LABELS[i % 8] % (m->cfg.num_classes > 0 ? m->cfg.num_classes : 1);
    memset(c, 0, sizeof *c);
    c->n = n;
    c->finite = 1;
    c->decode_api_ms = -1;
    c->steps_requested = o->steps;
    size_t peak = gpu_used();
    const double t_case = now_s();
    int rc;

    /* 1. warm-up: the first call initialises the backend, the second gives the per-step estimate */
    double ms;
    int ws = o->warm_steps < o->steps ? o->warm_steps : o->steps;
    if ((rc = run_sample(m, o, n, ws, labels, lat, &ms)))
        die(rc, o->model_path, "warm-up sample (n=%d): %s", n, dit_last_error());
    c->warm_first_ms = ms;
    /* then at least one more, and on the GPU at least 1 s of them: an idle GPU needs a moment to reach
       its clocks (the model load before left it idle) */
    const double t_warm = now_s();
    do {
        if ((rc = run_sample(m, o, n, ws, labels, lat, &ms)))
            die(rc, o->model_path, "warm-up sample (n=%d): %s", n, dit_last_error());
    } while (o->backend == DIT_BACKEND_CUDA && now_s() - t_warm < 1.0);
    c->warm_ms_step = ms / ws;
    size_t u = gpu_used();
    if (u > peak) peak = u;

    /* 2. choose steps x reps inside the budget (the rest of the case: ~25% for decode and step-only) */
    double avail_ms = 0.75 * budget_s * 1e3 - (now_s() - t_case) * 1e3;
    int steps = o->steps, reps = o->reps;
    const int min_reps = o->reps < 3 ? o->reps : 3;
    double est_run = c->warm_ms_step * steps;
    if (est_run * reps > avail_ms) {
        reps = (int)(avail_ms / est_run);
        if (reps < min_reps) {
            reps = min_reps;
            steps = (int)(avail_ms / (reps * c->warm_ms_step));
            if (steps < ws) steps = ws;
            if (steps > o->steps) steps = o->steps;
        }
    }
    c->steps = steps;
    c->reps = reps;
    printf("  n=%d: warm-up %.1f ms (first, %d steps), %.3f ms/step; timing %d x %d steps%s\n", n, c->warm_first_ms,
           ws, c->warm_ms_step, reps, steps, steps < o->steps ? " (fewer steps: time budget)" : "");
    fflush(stdout);

    double *runs = malloc(reps * sizeof(double));
    if (!runs) die(3, NULL, "out of memory");
    for (int r = 0; r < reps; r++) {
        if ((rc = run_sample(m, o, n, steps, labels, lat, &runs[r])))
            die(rc, o->model_path, "sample (n=%d, %d steps): %s", n, steps, dit_last_error());
        u = gpu_used();
        if (u > peak) peak = u;
        if (o->verbose) printf("    run %d: %.2f ms (%.4f ms/step)\n", r, runs[r], runs[r] / steps);
    }
    absmax_check(lat, lat_n, &c->lat_absmax, &c->finite);
    double mn = runs[0];
    for (int r = 1; r < reps; r++) mn = runs[r] < mn ? runs[r] : mn;
    c->sample_ms_median = median(runs, reps);
    c->ms_step_median = c->sample_ms_median / steps;
    c->ms_step_min = mn / steps;
    c->images_per_s = n / (c->ms_step_median * 250 * 1e-3);
    free(runs);

    /* 3. the step alone (CUDA backend's own harness) */
#ifdef DIT_CUDA
    if (o->backend == DIT_BACKEND_CUDA && dit_cuda_bench && m->cuda) {
        dit_cuda_bench_result br;
        memset(&br, 0, sizeof br);
        int bsteps = steps < 50 ? steps : 50;
        if (dit_cuda_bench(m, n, bsteps, 10, &br) == DIT_OK) {
            c->have_step_only = 1;
            c->step_only_ms = br.ms_per_step;
            c->step_only_min_ms = br.ms_per_step_min;
            c->precompute_ms = br.ms_precompute;
            c->be_weight_bytes = br.weight_bytes;
            c->be_arena_bytes = br.arena_bytes;
            c->be_peak_bytes = br.peak_bytes;
        } else {
            printf("  n=%d: dit_cuda_bench failed: %s\n", n, dit_last_error());
        }
        u = gpu_used();
        if (u > peak) peak = u;
    }
#endif

    /* 4. VAE decode */
    int dreps = o->decode_reps >= 0 ? o->decode_reps : (n == 1 ? 10 : 5);
    if (!m->cfg.has_vae) dreps = 0;
    if (dreps > 0) {
        const char *fn = "";
        double *d = malloc((dreps + 1) * sizeof(double));
        if (!d) die(3, NULL, "out of memory");
        const double deadline = t_case + budget_s;
        int done = 0;
        for (int r = 0; r <= dreps; r++) {   /* r = 0: warm-up */
            double t0 = now_s();
            if ((rc = decode(m, o, lat, n, img, &fn))) die(rc, o->model_path, "decode (n=%d): %s", n, dit_last_error());
            d[r] = (now_s() - t0) * 1e3;
            u = gpu_used();
            if (u > peak) peak = u;
            if (r > 0) done = r;
            /* out of this case's time: stop (with the warm-up as the only sample if nothing else was timed) */
            if (now_s() + d[r] * 1e-3 > deadline) {
                if (!done) { d[1] = d[0]; done = 1; }
                break;
            }
        }
        dreps = done;
        c->decode_ms = median(d + 1, dreps);
        c->decode_reps = dreps;
        c->decode_fn = fn;
        free(d);
        absmax_check(img, img_n, &c->img_absmax, &c->finite);
        /* does the public dit_decode reach the GPU? one call, small images only (a CPU decode of 512 px
           images would cost seconds) */
        if (n == 1 && strcmp(fn, "dit_decode") && dit_image_size(m) <= 256) {
            double t0 = now_s();
            if ((rc = dit_decode(m, lat, n, img, o->threads))) die(rc, o->model_path, "dit_decode: %s", dit_last_error());
            c->decode_api_ms = (now_s() - t0) * 1e3;
        }
        if (save && o->save_path) {
            if (c->steps != o->save_steps) {   /* the timed samples were shorter: sample the saved images anew */
                if ((rc = run_sample(m, o, n, o->save_steps, labels, lat, &ms)))
                    die(rc, o->model_path, "sample for --save (%d steps): %s", o->save_steps, dit_last_error());
                if ((rc = decode(m, o, lat, n, img, &fn))) die(rc, o->model_path, "decode: %s", dit_last_error());
                absmax_check(img, img_n, &c->img_absmax, &c->finite);
            }
            c->saved_steps = o->save_steps;
            int64_t shape[4] = { n, dit_image_channels(m), dit_image_size(m), dit_image_size(m) };
            if ((rc = dit_npy_write(o->save_path, 4, shape, img))) die(rc, o->save_path, "%s", dit_last_error());
        }
    }
    c->mem_delta = peak > used0 ? peak - used0 : 0;
#ifdef DIT_CUDA
    if (o->backend == DIT_BACKEND_CUDA && dit_cuda_get_info && m->cuda && !c->have_step_only) {
        dit_cuda_info info;
        if (dit_cuda_get_info(m, &info) == DIT_OK) {
            c->be_weight_bytes = info.weight_bytes;
            c->be_arena_bytes = info.arena_bytes;
        }
    }
#endif
    free(lat);
    free(img);
    free(labels);
}

static void print_case(const bench_case *c)
{
    printf("  n=%d: %.4f ms/step (median of %d x %d steps, min %.4f), sample %.1f ms, %.2f images/s at 250 steps\n",
           c->n, c->ms_step_median, c->reps, c->steps, c->ms_step_min, c->sample_ms_median, c->images_per_s);
    if (c->have_step_only)
        printf("        step alone %.4f ms (min %.4f), adaLN precompute %.2f ms\n", c->step_only_ms, c->step_only_min_ms,
               c->precompute_ms);
    if (c->decode_reps)
        printf("        VAE decode %.2f ms (%s, median of %d)%s", c->decode_ms, c->decode_fn, c->decode_reps,
               c->decode_api_ms >= 0 ? "" : "\n");
    if (c->decode_api_ms >= 0) printf("; one dit_decode call %.2f ms\n", c->decode_api_ms);
    if (c->mem_delta || c->be_weight_bytes)
        printf("        GPU memory: %.3f GB allocated by this process (cudaMemGetInfo), backend: weights %.3f GB, "
               "arena %.3f GB, peak with context %.3f GB\n", c->mem_delta / 1e9, c->be_weight_bytes / 1e9,
               c->be_arena_bytes / 1e9, c->be_peak_bytes / 1e9);
    printf("        max |latent| %.3g, max |image| %.3g%s\n", c->lat_absmax, c->img_absmax,
           c->finite ? "" : "  NOT FINITE");
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static void write_json(const options *o, const dit_model *m, const char *main_type, const char *weights, double load_s,
                       const char *device, size_t used0, const bench_case *cs, int nc)
{
    dit_atomic_file af;
    if (dit_atomic_open(&af, o->json_path)) die(1, o->json_path, "%s", dit_last_error());
    FILE *f = af.f;
    fprintf(f, "{\n  \"model\": ");
    json_str(f, o->model_path);
    fprintf(f, ",\n  \"label\": ");
    json_str(f, o->label ? o->label : main_type);
    fprintf(f, ",\n  \"weight_type\": ");
    json_str(f, main_type);
    fprintf(f, ",\n  \"weights\": ");
    json_str(f, weights);
    fprintf(f, ",\n  \"backend\": \"%s\",\n  \"device\": ", o->backend == DIT_BACKEND_CUDA ? "cuda" : "cpu");
    json_str(f, device);
    fprintf(f, ",\n  \"image_size\": %d, \"input_size\": %d, \"depth\": %d, \"hidden\": %d, \"has_vae\": %d,\n",
            dit_image_size(m), m->cfg.input_size, m->cfg.depth, m->cfg.hidden, m->cfg.has_vae);
    fprintf(f, "  \"load_s\": %.4f, \"gpu_used_before_bytes\": %zu,\n  \"cases\": [\n", load_s, used0);
    for (int i = 0; i < nc; i++) {
        const bench_case *c = &cs[i];
        fprintf(f, "    {\"n\": %d, \"steps_requested\": %d, \"steps\": %d, \"reps\": %d, \"ms_step_median\": %.6f, "
                   "\"ms_step_min\": %.6f, \"sample_ms_median\": %.4f, \"images_per_s\": %.5f, "
                   "\"warm_first_ms\": %.3f, \"warm_ms_step\": %.6f,\n",
                c->n, c->steps_requested, c->steps, c->reps, c->ms_step_median, c->ms_step_min, c->sample_ms_median,
                c->images_per_s, c->warm_first_ms, c->warm_ms_step);
        fprintf(f, "     \"step_only_ms\": %.6f, \"step_only_min_ms\": %.6f, \"precompute_ms\": %.4f, ",
                c->have_step_only ? c->step_only_ms : -1.0, c->step_only_min_ms, c->precompute_ms);
        fprintf(f, "\"decode_ms\": %.4f, \"decode_reps\": %d, \"decode_fn\": ", c->decode_reps ? c->decode_ms : -1.0,
                c->decode_reps);
        json_str(f, c->decode_fn ? c->decode_fn : "");
        fprintf(f, ", \"decode_api_ms\": %.4f,\n     \"mem_delta_bytes\": %zu, \"backend_weight_bytes\": %zu, "
                   "\"backend_arena_bytes\": %zu, \"backend_peak_bytes\": %zu, \"latent_absmax\": %.6g, "
                   "\"image_absmax\": %.6g, \"finite\": %s, \"saved_steps\": %d}%s\n",
                c->decode_api_ms, c->mem_delta, c->be_weight_bytes, c->be_arena_bytes, c->be_peak_bytes,
                c->lat_absmax, c->img_absmax, c->finite ? "true" : "false", c->saved_steps, i + 1 < nc ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    if (dit_atomic_commit(&af)) die(1, o->json_path, "%s", dit_last_error());
}

int main(int argc, char **argv)
{
    options o;
    parse_args(argc, argv, &o);
    const double t_start = now_s();
    /* the steady state of a process that keeps sampling: its GEMMs are autotuned (a one-sample process
       skips the tuning, dit-cuda.cu); set DIT_CUDA_TUNE to choose otherwise */
    setenv("DIT_CUDA_TUNE", "1", 0);
#ifndef DIT_CUDA
    printf("bench_dit: CPU-only build: timing the CPU backend (GPU timings need a build with nvcc)\n");
#endif

    /* GPU memory in use before this process puts anything there (creates the CUDA context) */
    size_t used0 = o.backend == DIT_BACKEND_CUDA ? gpu_used() : 0;
    double t0 = now_s();
    dit_model *m = dit_model_load(o.model_path);
    if (!m) die(dit_last_error_code() ? dit_last_error_code() : 1, NULL, "%s", dit_last_error());
    double load_s = now_s() - t0;
    char weights[256];
    const char *main_type;
    weight_summary(m, weights, sizeof weights, &main_type);
    char device[80] = "cpu";
#ifdef DIT_CUDA
    if (o.backend == DIT_BACKEND_CUDA) {
        if (dit_cuda_available() <= 0) die(1, NULL, "no CUDA GPU visible (dit_cuda_available() = %d)", dit_cuda_available());
        snprintf(device, sizeof device, "cuda");
    }
#endif
    printf("bench_dit: %s: %s, DiT depth %d hidden %d, %dx%d px (latent %d), VAE %s; weights %s; backend %s; "
           "load %.2f s\n", o.model_path, m->name ? m->name : "?", m->cfg.depth, m->cfg.hidden, dit_image_size(m),
           dit_image_size(m), m->cfg.input_size, m->cfg.has_vae ? "yes" : "no", weights,
           o.backend == DIT_BACKEND_CUDA ? "cuda" : "cpu", load_s);
    fflush(stdout);

    bench_case cs[MAX_CASES];
    for (int i = 0; i < o.n_cases; i++) {
        double left = o.max_seconds - (now_s() - t_start);
        double share = left / (o.n_cases - i);
        if (share < 1) share = 1;
        bench_one(m, &o, o.ns[i], share, used0, &cs[i], i == 0);
        print_case(&cs[i]);
        fflush(stdout);
    }
#ifdef DIT_CUDA
    if (o.backend == DIT_BACKEND_CUDA && dit_cuda_get_info && m->cuda) {
        dit_cuda_info info;
        if (dit_cuda_get_info(m, &info) == DIT_OK) {
            snprintf(device, sizeof device, "%s", info.device_name);
            printf("bench_dit: device %s, GEMM operands %s, fc1 GELU epilogue %d, CUDA graph %d\n", info.device_name,
                   dit_type_name(info.compute_type) ? dit_type_name(info.compute_type) : "?", info.gelu_epilogue,
                   info.graph);
        }
    }
#endif
    if (o.json_path) write_json(&o, m, main_type, weights, load_s, device, used0, cs, o.n_cases);
    int bad = 0;
    for (int i = 0; i < o.n_cases; i++) bad |= !cs[i].finite;
    dit_model_free(m);
    printf("bench_dit: done in %.1f s%s\n", now_s() - t_start, bad ? " (NON-FINITE VALUES: see above)" : "");
    return bad ? 6 : 0;
}
