// lt_first.cu - where a one-shot process's first GEMMs and its weight upload spend their time (experiment).
// Build: nvcc -O2 -std=c++17 -arch=sm_90a -o bin/lt_first tests/kernels/lt_first.cu -lcublasLt -lpthread
// Results (H100, 2026-11-22): bench/RESULTS.md, "CUDA start-up".
//   lt_first heur ALGOS [order]  time cuBLASLt's heuristic per DiT GEMM class in a fresh process, then the first
//                                run of each answer; the answers go to ALGOS (cublasLtMatmulAlgo_t is plain data
//                                that the same cuBLASLt version accepts back). order "f16" puts the fp16 ones first
//   lt_first algo ALGOS          fresh process: the same GEMMs from the saved answers, no heuristic
//   lt_first par FILE|- THREADS  the upload beside 0-3 threads making the first query of each pair of types
//   lt_first upload FILE         1.4 GB host -> device: pageable cudaMemcpy per 8 MB piece, and a pinned double
//                                buffer filled by 1-8 threads (cudaHostRegister of the mapping hung: not tried again)
#include "lt_time.cuh"
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

typedef struct { const char *name; cudaDataType_t ab, y; cublasLtEpilogue_t epi; cudaDataType_t bias; int m, n, k; } gcase;
static const gcase cases[] = {
    { "t_fc1 f32", CUDA_R_32F, CUDA_R_32F, CUBLASLT_EPILOGUE_BIAS, CUDA_R_32F, 1152, 50, 256 },
    { "adaLN f16->f32", CUDA_R_16F, CUDA_R_32F, CUBLASLT_EPILOGUE_BIAS, CUDA_R_32F, 6912, 50, 1152 },
    { "qkv f16 bias f16", CUDA_R_16F, CUDA_R_16F, CUBLASLT_EPILOGUE_BIAS, CUDA_R_16F, 3456, 512, 1152 },
    { "fc1 f16 gelu", CUDA_R_16F, CUDA_R_16F, CUBLASLT_EPILOGUE_GELU_BIAS, CUDA_R_16F, 4608, 512, 1152 },
    { "proj f16", CUDA_R_16F, CUDA_R_16F, CUBLASLT_EPILOGUE_BIAS, CUDA_R_16F, 1152, 512, 1152 },
};
enum { NC = sizeof(cases) / sizeof(cases[0]) };

typedef struct { cublasLtMatmulDesc_t d; cublasLtMatrixLayout_t la, lb, lc; } gdesc;
static void make_desc(const gcase *g, gdesc *o) {
    LK(cublasLtMatmulDescCreate(&o->d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
    LK(cublasLtMatmulDescSetAttribute(o->d, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)));
    LK(cublasLtMatmulDescSetAttribute(o->d, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof(n)));
    LK(cublasLtMatmulDescSetAttribute(o->d, CUBLASLT_MATMUL_DESC_EPILOGUE, &g->epi, sizeof(g->epi)));
    int32_t bt = g->bias;
    LK(cublasLtMatmulDescSetAttribute(o->d, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
    LK(cublasLtMatrixLayoutCreate(&o->la, g->ab, g->k, g->m, g->k));
    LK(cublasLtMatrixLayoutCreate(&o->lb, g->ab, g->k, g->n, g->k));
    LK(cublasLtMatrixLayoutCreate(&o->lc, g->y, g->m, g->n, g->m));
}

static void *dev_zero(size_t bytes) {
    void *p;
    CK(cudaMalloc(&p, bytes));
    CK(cudaMemset(p, 0, bytes));
    return p;
}

static void run_first(const gcase *g, gdesc *d, const cublasLtMatmulAlgo_t *al) {
    void *A = dev_zero((size_t)g->m * g->k * 4), *B = dev_zero((size_t)g->n * g->k * 4);
    void *C = dev_zero((size_t)g->m * g->n * 4), *bias = dev_zero((size_t)g->m * 4);
    LK(cublasLtMatmulDescSetAttribute(d->d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    CK(cudaDeviceSynchronize());
    const float one = 1, zero = 0;
    for (int r = 0; r < 2; r++) {
        double t = now_ms();
        LK(cublasLtMatmul(lt, d->d, &one, A, d->la, B, d->lb, &zero, C, d->lc, C, d->lc, al, ws, ws_bytes, st));
        CK(cudaStreamSynchronize(st));
        printf("  %-18s run %d: %.2f ms\n", g->name, r + 1, now_ms() - t);
    }
    cudaFree(A); cudaFree(B); cudaFree(C); cudaFree(bias);
}

static void init_timed(void) {
    double t = now_ms();
    CK(cudaFree(0));
    printf("context: %.1f ms\n", now_ms() - t);
    t = now_ms();
    lt_setup();
    printf("cublasLtCreate + stream + workspace: %.1f ms\n", now_ms() - t);
}

static int heur(const char *path, int f16_first) {
    init_timed();
    cublasLtMatmulAlgo_t algo[NC];
    gdesc d[NC];
    cublasLtMatmulPreference_t pref;
    LK(cublasLtMatmulPreferenceCreate(&pref));
    LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes)));
    for (int pass = 0; pass < 2; pass++)
        for (int j = 0; j < NC; j++) {
            const int i = f16_first ? NC - 1 - j : j;
            if (pass == 0) make_desc(&cases[i], &d[i]);
            cublasLtMatmulHeuristicResult_t res[8];
            int nres = 0;
            double t = now_ms();
            LK(cublasLtMatmulAlgoGetHeuristic(lt, d[i].d, d[i].la, d[i].lb, d[i].lc, d[i].lc, pref, 8, res, &nres));
            printf("heuristic pass %d %-18s %d answers: %.2f ms\n", pass + 1, cases[i].name, nres, now_ms() - t);
            algo[i] = res[0].algo;
        }
    for (int i = 0; i < NC; i++) run_first(&cases[i], &d[i], &algo[i]);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(algo, sizeof(algo), 1, f) != 1) { perror(path); return 1; }
    fclose(f);
    return 0;
}

static int algo_only(const char *path) {
    init_timed();
    cublasLtMatmulAlgo_t algo[NC];
    FILE *f = fopen(path, "rb");
    if (!f || fread(algo, sizeof(algo), 1, f) != 1) { perror(path); return 1; }
    fclose(f);
    for (int i = 0; i < NC; i++) {
        gdesc d;
        make_desc(&cases[i], &d);
        cublasLtMatmulHeuristicResult_t r;
        double t = now_ms();
        cublasStatus_t s = cublasLtMatmulAlgoCheck(lt, d.d, d.la, d.lb, d.lc, d.lc, &algo[i], &r);
        printf("algo check %-18s status %d: %.2f ms\n", cases[i].name, (int)s, now_ms() - t);
        run_first(&cases[i], &d, &algo[i]);
    }
    return 0;
}

// ---------------------------------------------------------------- upload
typedef struct { char *dst; const char *src; size_t n; } cpjob;
static void *cp_thread(void *a) {
    cpjob *j = (cpjob *)a;
    memcpy(j->dst, j->src, j->n);
    return NULL;
}
static void par_memcpy(char *dst, const char *src, size_t n, int threads) {
    pthread_t th[8];
    cpjob jb[8];
    const size_t per = (n / threads + 4095) & ~(size_t)4095;
    int k = 0;
    for (size_t o = 0; o < n && k < threads; o += per, k++) {
        jb[k].dst = dst + o; jb[k].src = src + o; jb[k].n = o + per > n ? n - o : per;
        pthread_create(&th[k], NULL, cp_thread, &jb[k]);
    }
    for (int i = 0; i < k; i++) pthread_join(th[i], NULL);
}

static int upload(const char *path) {
    CK(cudaFree(0));
    int fd = open(path, O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) { perror(path); return 1; }
    const size_t n = (size_t)sb.st_size & ~(size_t)4095;
    char *dev;
    CK(cudaMalloc(&dev, n));
    const size_t piece = 8u << 20;
    for (int rep = 0; rep < 2; rep++) {
        const char *map = (const char *)mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
        double t = now_ms();
        for (size_t o = 0; o < n; o += piece) CK(cudaMemcpy(dev + o, map + o, o + piece > n ? n - o : piece, cudaMemcpyHostToDevice));
        printf("pageable cudaMemcpy, fresh mapping, 8 MB pieces: %.1f ms (%.1f GB/s)\n", now_ms() - t, n / (now_ms() - t) / 1e6);
        t = now_ms();
        for (size_t o = 0; o < n; o += piece) CK(cudaMemcpy(dev + o, map + o, o + piece > n ? n - o : piece, cudaMemcpyHostToDevice));
        printf("pageable cudaMemcpy, mapped pages, 8 MB pieces: %.1f ms\n", now_ms() - t);
        munmap((void *)map, n);
    }
    for (int threads = 1; threads <= 8; threads *= 2) {
        const char *map = (const char *)mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
        const size_t chunk = 32u << 20;
        double t = now_ms();
        char *pin[2];
        CK(cudaHostAlloc((void **)&pin[0], chunk, cudaHostAllocDefault));
        CK(cudaHostAlloc((void **)&pin[1], chunk, cudaHostAllocDefault));
        cudaEvent_t done[2];
        cudaEventCreateWithFlags(&done[0], cudaEventDisableTiming);
        cudaEventCreateWithFlags(&done[1], cudaEventDisableTiming);
        double ta = now_ms();
        int b = 0;
        for (size_t o = 0; o < n; o += chunk, b ^= 1) {
            const size_t len = o + chunk > n ? n - o : chunk;
            CK(cudaEventSynchronize(done[b]));
            par_memcpy(pin[b], map + o, len, threads);
            CK(cudaMemcpyAsync(dev + o, pin[b], len, cudaMemcpyHostToDevice, st ? st : 0));
            CK(cudaEventRecord(done[b], st));
        }
        CK(cudaStreamSynchronize(st));
        printf("pinned 2 x 32 MB, %d memcpy threads: %.1f ms (of it cudaHostAlloc %.1f ms)\n", threads, now_ms() - t, ta - t);
        cudaFreeHost(pin[0]); cudaFreeHost(pin[1]);
        munmap((void *)map, n);
    }
    return 0;
}

// par FILE|- THREADS: the weight upload (pageable, 8 MB pieces) on this thread while THREADS threads (0-3) load
// cuBLASLt's three GEMM classes (f32, f16 -> f32, f16 -> f16) by one heuristic query each
static void *warm_class(void *arg) {
    const int *cls = (const int *)arg;
    static const int pick[3] = { 0, 1, 2 };   // t_fc1 f32, adaLN f16->f32, qkv f16->f16
    cublasLtMatmulPreference_t pref;
    LK(cublasLtMatmulPreferenceCreate(&pref));
    for (int i = cls[0]; i < cls[1]; i++) {
        gdesc d;
        make_desc(&cases[pick[i]], &d);
        cublasLtMatmulHeuristicResult_t res[8];
        int nres = 0;
        double t = now_ms();
        LK(cublasLtMatmulAlgoGetHeuristic(lt, d.d, d.la, d.lb, d.lc, d.lc, pref, 8, res, &nres));
        printf("  warm %-18s %.1f ms (ends at %.1f)\n", cases[pick[i]].name, now_ms() - t, now_ms());
    }
    return NULL;
}
static int par(const char *path, int threads) {
    init_timed();
    double t0 = now_ms();
    printf("t0 = %.1f\n", t0);
    pthread_t th[3];
    int rng[3][2];
    for (int i = 0; i < threads; i++) {
        rng[i][0] = threads == 1 ? 0 : i;
        rng[i][1] = threads == 1 ? 3 : i + 1;
        pthread_create(&th[i], NULL, warm_class, rng[i]);
    }
    if (strcmp(path, "-")) {
        int fd = open(path, O_RDONLY);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) != 0) { perror(path); return 1; }
        const size_t n = (size_t)sb.st_size, piece = 8u << 20;
        const char *map = (const char *)mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
        char *dev;
        CK(cudaMalloc(&dev, n));
        double t = now_ms();
        for (size_t o = 0; o < n; o += piece) CK(cudaMemcpy(dev + o, map + o, o + piece > n ? n - o : piece, cudaMemcpyHostToDevice));
        printf("upload %.0f MB: %.1f ms (ends at %.1f)\n", n / 1e6, now_ms() - t, now_ms());
    }
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    printf("all done: %.1f ms after t0\n", now_ms() - t0);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc >= 4 && !strcmp(argv[1], "par")) return par(argv[2], atoi(argv[3]));
    if (argc >= 3 && !strcmp(argv[1], "heur")) return heur(argv[2], argc > 3 && !strcmp(argv[3], "f16"));
    if (argc >= 3 && !strcmp(argv[1], "algo")) return algo_only(argv[2]);
    if (argc >= 3 && !strcmp(argv[1], "upload")) { CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking)); return upload(argv[2]); }
    fprintf(stderr, "usage: lt_first heur|algo FILE [f16] | upload FILE\n");
    return 2;
}
