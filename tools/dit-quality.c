/* dit-quality: how good are a model's samples? A small MLP classifier trained on the real
   Fashion-MNIST training set (models/fashion/train.py, shipped as GGUF) scores generated images:
     - conditional accuracy: the class asked for == the class the classifier sees;
     - the classifier's accuracy on the real test set, for comparison;
     - Frechet distance between the classifier's 64-d features of generated and real test images;
     - diversity: mean pairwise distance of the samples of each class (a collapsed class is ~0).
   Generated images go through the same 8-bit rounding as the PNGs a user sees. */
#include "dit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

static void die(int code, const char *msg) {
    fprintf(stderr, "dit-quality: error: %s\n", msg);
    exit(code);
}

/* ---- classifier: 784 -> 256 -> 64 (features) -> 10, ReLU ---- */
typedef struct { const float *w, *b; int in, out; } layer;
typedef struct { layer l[3]; dit_gguf *g; } classifier;

static layer classifier_layer(dit_gguf *g, const char *name, int in, int out) {
    char wn[64], bn[64];
    snprintf(wn, sizeof wn, "%s.weight", name), snprintf(bn, sizeof bn, "%s.bias", name);
    const dit_gguf_tensor *w = dit_gguf_find_tensor(g, wn), *b = dit_gguf_find_tensor(g, bn);
    if (!w || !b || w->type != DIT_TYPE_F32 || b->type != DIT_TYPE_F32 || w->ne[0] != in || w->ne[1] != out || b->ne[0] != out) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s: tensor %s missing or not f32 [%d, %d]", dit_gguf_path(g), wn, out, in);
        die(2, msg);
    }
    return (layer){w->data, b->data, in, out};
}

static classifier classifier_load(const char *path) {
    classifier c;
    if (!(c.g = dit_gguf_open(path))) die(dit_last_error_code(), dit_last_error());
    c.l[0] = classifier_layer(c.g, "fc1", 784, 256);
    c.l[1] = classifier_layer(c.g, "fc2", 256, 64);
    c.l[2] = classifier_layer(c.g, "fc3", 64, 10);
    return c;
}

/* y = W x + b (optionally ReLU); W is (out, in) */
static void linear(const layer *l, const float *x, float *y, int relu) {
    for (int o = 0; o < l->out; o++) {
        const float *w = l->w + (size_t)o * l->in;
        float s = l->b[o];
        for (int i = 0; i < l->in; i++) s += w[i] * x[i];
        y[o] = relu && s < 0 ? 0 : s;
    }
}

/* x: 784 pixels in [-1,1]; feat: 64; returns the predicted class */
static int classify(const classifier *c, const float *x, float *feat) {
    float h[256], logits[10];
    linear(&c->l[0], x, h, 1);
    linear(&c->l[1], h, feat, 1);
    linear(&c->l[2], feat, logits, 0);
    int best = 0;
    for (int k = 1; k < 10; k++) if (logits[k] > logits[best]) best = k;
    return best;
}

/* ---- Fashion-MNIST idx files (gzip) ---- */
static uint8_t *idx_read(const char *path, int want_dims, int *count) {
    gzFile f = gzopen(path, "rb");
    if (!f) return NULL;
    uint8_t hdr[16];
    int hl = want_dims == 3 ? 16 : 8;
    if (gzread(f, hdr, hl) != hl || hdr[2] != 8 || hdr[3] != want_dims) { gzclose(f); return NULL; }
    int n = hdr[4] << 24 | hdr[5] << 16 | hdr[6] << 8 | hdr[7];
    size_t bytes = (size_t)n * (want_dims == 3 ? 784 : 1);
    if (n <= 0 || n > 100000) { gzclose(f); return NULL; }
    uint8_t *d = malloc(bytes);
    if (!d || gzread(f, d, (unsigned)bytes) != (int)bytes) { free(d), gzclose(f); return NULL; }
    gzclose(f);
    *count = n;
    return d;
}

/* ---- Frechet distance: |mu1-mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), in double ---- */
#define FD 64

/* Cyclic Jacobi eigen-decomposition of a symmetric n x n matrix: a is destroyed, v = eigenvectors (columns). */
static void jacobi_eigen(double *a, double *v, double *ev, int n) {
    for (int i = 0; i < n * n; i++) v[i] = (i / n == i % n);
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0;
        for (int p = 0; p < n; p++) for (int q = p + 1; q < n; q++) off += a[p * n + q] * a[p * n + q];
        if (off < 1e-22) break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                double apq = a[p * n + q];
                if (fabs(apq) < 1e-300) continue;
                double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
                double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < n; k++) {   /* a = J^T a J */
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq, a[k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) {
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk, a[q * n + k] = s * apk + c * aqk;
                }
                for (int k = 0; k < n; k++) {
                    double vkp = v[k * n + p], vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq, v[k * n + q] = s * vkp + c * vkq;
                }
            }
    }
    for (int i = 0; i < n; i++) ev[i] = a[i * n + i];
}

/* out = V diag(f(ev)) V^T with f = sqrt of the clamped eigenvalues */
static void sym_sqrt(const double *s, double *out, int n) {
    double *a = malloc(sizeof(double) * n * n), *v = malloc(sizeof(double) * n * n), ev[FD];
    memcpy(a, s, sizeof(double) * n * n);
    jacobi_eigen(a, v, ev, n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int k = 0; k < n; k++) acc += v[i * n + k] * sqrt(ev[k] > 0 ? ev[k] : 0) * v[j * n + k];
            out[i * n + j] = acc;
        }
    free(a), free(v);
}

static void mean_cov(const float *f, int n, double *mu, double *cov) {
    memset(mu, 0, sizeof(double) * FD), memset(cov, 0, sizeof(double) * FD * FD);
    for (int i = 0; i < n; i++) for (int k = 0; k < FD; k++) mu[k] += f[i * FD + k] / (double)n;
    for (int i = 0; i < n; i++)
        for (int a = 0; a < FD; a++)
            for (int b = 0; b < FD; b++) cov[a * FD + b] += (f[i * FD + a] - mu[a]) * (f[i * FD + b] - mu[b]) / (n - 1.0);
}

static double frechet(const float *f1, int n1, const float *f2, int n2) {
    static double mu1[FD], mu2[FD], s1[FD * FD], s2[FD * FD], r1[FD * FD], m[FD * FD], t[FD * FD], rt[FD * FD];
    mean_cov(f1, n1, mu1, s1), mean_cov(f2, n2, mu2, s2);
    sym_sqrt(s1, r1, FD);
    for (int i = 0; i < FD; i++)   /* m = r1 s2 r1 (symmetric PSD) */
        for (int j = 0; j < FD; j++) { double acc = 0; for (int k = 0; k < FD; k++) acc += r1[i * FD + k] * s2[k * FD + j]; t[i * FD + j] = acc; }
    for (int i = 0; i < FD; i++)
        for (int j = 0; j < FD; j++) { double acc = 0; for (int k = 0; k < FD; k++) acc += t[i * FD + k] * r1[k * FD + j]; m[i * FD + j] = acc; }
    sym_sqrt(m, rt, FD);
    double d = 0;
    for (int k = 0; k < FD; k++) d += (mu1[k] - mu2[k]) * (mu1[k] - mu2[k]) + s1[k * FD + k] + s2[k * FD + k] - 2 * rt[k * FD + k];
    return d;
}

static void usage(void) {
    printf("usage: dit-quality -m MODEL.gguf -c CLASSIFIER.gguf [options]\n"
           "Scores generated images with a classifier trained on the real data (Fashion-MNIST).\n"
           "  -n N              images per class (default 100)\n"
           "  --sampler S       ddpm | ddim | dpm++2m (default ddim)\n"
           "  --steps K         sampler steps (default 50)\n"
           "  --cfg-scale S     guidance scale (default 4.0)\n"
           "  --no-cfg          no guidance and no CFG batch (the conditional model alone)\n"
           "  -s SEED           seed (default 0)\n"
           "  --data DIR        Fashion-MNIST idx files for the real test set (default /usr/share/datasets/fashion-mnist)\n"
           "  --min-accuracy A  exit 3 if the conditional accuracy is below A (0..1)\n"
           "  --min-diversity D exit 3 if any class's mean pairwise pixel distance is below D\n"
           "  --backend B       auto | cpu | cuda;  -t THREADS;  -v\n"
           "negative controls for the tests (a check that cannot fail proves nothing):\n"
           "  --label-shift K   ask the model for class (c+K)%%10 but score against c (accuracy collapses)\n"
           "  --same-noise      every image of a run starts from the same noise (DDIM: classes collapse)\n");
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *cls_path = NULL, *data = "/usr/share/datasets/fashion-mnist";
    int per_class = 100, steps = 50, sampler = DIT_SAMPLER_DDIM, threads = 0, backend = DIT_BACKEND_AUTO, verbose = 0;
    float cfg = 4.0f, min_acc = -1, min_div = -1;
    int label_shift = 0, same_noise = 0, no_cfg = 0;
    uint64_t seed = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        else if (!strcmp(a, "-v")) verbose = 1;
        else if (!strcmp(a, "--no-cfg")) no_cfg = 1;
        else if (!strcmp(a, "--same-noise")) same_noise = 1;
        else if (!v) { usage(); die(2, "missing value for an option"); }
        else if (!strcmp(a, "-m")) model_path = argv[++i];
        else if (!strcmp(a, "-c")) cls_path = argv[++i];
        else if (!strcmp(a, "-n")) per_class = atoi(argv[++i]);
        else if (!strcmp(a, "--steps")) steps = atoi(argv[++i]);
        else if (!strcmp(a, "--cfg-scale")) cfg = (float)atof(argv[++i]);
        else if (!strcmp(a, "-s")) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--data")) data = argv[++i];
        else if (!strcmp(a, "--min-accuracy")) min_acc = (float)atof(argv[++i]);
        else if (!strcmp(a, "--min-diversity")) min_div = (float)atof(argv[++i]);
        else if (!strcmp(a, "-t")) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--label-shift")) label_shift = atoi(argv[++i]);
        else if (!strcmp(a, "--sampler")) {
            if ((sampler = dit_sampler_from_name(argv[++i])) < 0) die(2, "--sampler must be ddpm, ddim or dpm++2m");
        } else if (!strcmp(a, "--backend")) {
            i++;
            backend = !strcmp(argv[i], "cpu") ? DIT_BACKEND_CPU : !strcmp(argv[i], "cuda") ? DIT_BACKEND_CUDA : DIT_BACKEND_AUTO;
        } else { usage(); die(2, "unknown option"); }
    }
    if (!model_path || !cls_path || per_class < 2 || steps < 1) { usage(); die(2, "need -m, -c, -n >= 2 and --steps >= 1"); }

    classifier c = classifier_load(cls_path);
    dit_model *m = dit_model_load(model_path);
    if (!m) die(dit_last_error_code(), dit_last_error());
    if (m->cfg.has_vae || dit_image_channels(m) != 1 || dit_image_size(m) != 28 || m->cfg.num_classes != 10)
        die(2, "the model must be a 10-class 28x28 single-channel pixel-space DiT (Fashion-MNIST)");

    /* generate per_class images of every class */
    const int n = 10 * per_class, px = 784;
    int *labels = malloc(sizeof(int) * n);
    float *lat = malloc(sizeof(float) * (size_t)n * px), *gfeat = malloc(sizeof(float) * (size_t)n * FD);
    int *asked = malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) labels[i] = i / per_class, asked[i] = ((labels[i] + label_shift) % 10 + 10) % 10;
    float *init = NULL;
    if (same_noise) {   /* image 0's noise for every image */
        init = malloc(sizeof(float) * (size_t)n * px);
        dit_randn(seed, 0, 0, init, px);
        for (int i = 1; i < n; i++) memcpy(init + (size_t)i * px, init, sizeof(float) * px);
    }
    dit_sample_params p = dit_sample_params_default();
    if (no_cfg) cfg = 1.0f;
    p.sampler = sampler, p.steps = steps, p.cfg_scale = cfg, p.no_cfg = no_cfg, p.seed = seed, p.n = n, p.labels = asked;
    p.init_noise = init;
    p.threads = threads, p.backend = backend, p.verbose = verbose;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (dit_sample(m, &p, lat) != DIT_OK) die(dit_last_error_code(), dit_last_error());
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);

    int correct = 0, per_correct[10] = {0};
    double div[10] = {0};
    for (int i = 0; i < n; i++) {
        float x[784];
        for (int k = 0; k < px; k++) {   /* the 8-bit pixel a PNG would hold, back to [-1, 1] */
            float v = fminf(fmaxf(lat[(size_t)i * px + k], -1.0f), 1.0f);
            float pix = floorf(fminf(fmaxf((v + 1) / 2 * 255 + 0.5f, 0), 255));
            x[k] = lat[(size_t)i * px + k] = pix / 255 * 2 - 1;
        }
        int pred = classify(&c, x, gfeat + (size_t)i * FD);
        correct += pred == labels[i];
        per_correct[labels[i]] += pred == labels[i];
    }
    for (int k = 0; k < 10; k++) {   /* mean pairwise RMS pixel distance within class k */
        double s = 0;
        int pairs = 0;
        for (int a = 0; a < per_class; a++)
            for (int b = a + 1; b < per_class; b++, pairs++) {
                const float *xa = lat + (size_t)(k * per_class + a) * px, *xb = lat + (size_t)(k * per_class + b) * px;
                double d = 0;
                for (int q = 0; q < px; q++) d += (xa[q] - xb[q]) * (xa[q] - xb[q]);
                s += sqrt(d / px);
            }
        div[k] = s / pairs;
    }

    /* real test set: classifier accuracy and features */
    char ip[1024], lp[1024];
    snprintf(ip, sizeof ip, "%s/t10k-images-idx3-ubyte.gz", data), snprintf(lp, sizeof lp, "%s/t10k-labels-idx1-ubyte.gz", data);
    int nr = 0, nl = 0;
    uint8_t *rimg = idx_read(ip, 3, &nr), *rlab = idx_read(lp, 1, &nl);
    double real_acc = -1, fd = -1, fd_real = -1;
    if (rimg && rlab && nr == nl) {
        float *rfeat = malloc(sizeof(float) * (size_t)nr * FD);
        int rc = 0;
#pragma omp parallel for reduction(+ : rc) schedule(static)
        for (int i = 0; i < nr; i++) {
            float x[784];
            for (int k = 0; k < px; k++) x[k] = rimg[(size_t)i * px + k] / 255.0f * 2 - 1;
            rc += classify(&c, x, rfeat + (size_t)i * FD) == rlab[i];
        }
        real_acc = (double)rc / nr;
        fd = frechet(gfeat, n, rfeat, nr);
        /* the floor of this measure: n real training images against the same test set */
        snprintf(ip, sizeof ip, "%s/train-images-idx3-ubyte.gz", data);
        int nt = 0;
        uint8_t *timg = idx_read(ip, 3, &nt);
        if (timg && nt >= n) {
            float *tfeat = malloc(sizeof(float) * (size_t)n * FD);
#pragma omp parallel for schedule(static)
            for (int i = 0; i < n; i++) {
                float x[784];
                for (int k = 0; k < px; k++) x[k] = timg[(size_t)i * px + k] / 255.0f * 2 - 1;
                classify(&c, x, tfeat + (size_t)i * FD);
            }
            fd_real = frechet(tfeat, n, rfeat, nr);
            free(tfeat);
        }
        free(timg);
        free(rfeat);
    }

    double acc = (double)correct / n, min_d = 1e9;
    printf("model %s, %s-%d, cfg %.2f%s, seed %llu, %d images per class (%.1f s sampling, %s)\n", m->name,
           dit_sampler_name(sampler), steps, cfg, no_cfg ? " (no CFG batch)" : "", (unsigned long long)seed, per_class, secs,
           backend == DIT_BACKEND_CPU ? "cpu" : "auto backend");
    printf("%-4s %-22s %9s %9s\n", "cls", "name", "accuracy", "diversity");
    for (int k = 0; k < 10; k++) {
        printf("%-4d %-22s %8.1f%% %9.3f\n", k, m->class_names ? m->class_names[k] : "", 100.0 * per_correct[k] / per_class, div[k]);
        if (div[k] < min_d) min_d = div[k];
    }
    printf("conditional accuracy   %.1f%%\n", 100 * acc);
    if (real_acc >= 0) printf("classifier on real test set %.1f%%\nfrechet distance (64-d features, %d generated vs %d real) %.3f\n",
                              100 * real_acc, n, nr, fd);
    else printf("real test set not found under %s (install dataset-fashion-mnist): no real accuracy or FD\n", data);
    if (fd_real >= 0) printf("frechet distance of %d real training images vs the test set (the floor) %.3f\n", n, fd_real);
    printf("min class diversity    %.3f\n", min_d);
    int fail = 0;
    if (min_acc >= 0 && acc < min_acc) { fprintf(stderr, "dit-quality: conditional accuracy %.3f below %.3f\n", acc, min_acc); fail = 1; }
    if (min_div >= 0 && min_d < min_div) { fprintf(stderr, "dit-quality: a class collapsed (diversity %.4f below %.4f)\n", min_d, min_div); fail = 1; }
    free(labels), free(asked), free(init), free(lat), free(gfeat), free(rimg), free(rlab);
    dit_model_free(m);
    dit_gguf_close(c.g);
    return fail ? 3 : 0;
}
