// lt_search.cu - experiment: does any cuBLASLt configuration (algo id x tile x stages x cluster x swizzle)
// beat the best of the heuristic's top 8 at the per-block GEMM shapes of a DiT-XL/2 step?
// Each candidate is timed as 20 runs replayed in one CUDA graph (as a step runs it).
// Build: nvcc -O2 -arch=sm_90a tests/kernels/lt_search.cu -lcublasLt -o bin/tests/lt_search
#include "lt_time.cuh"
#include <cuda_fp16.h>
#include <string.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }

typedef struct { cublasLtMatmulDesc_t d; cublasLtMatrixLayout_t a, b, c; } prob;

static float time_algo(prob *p, const cublasLtMatmulAlgo_t *al, const void *A, const void *B, void *C, int reps) {
    return lt_time(p->d, p->a, p->b, p->c, al, A, B, C, reps);
}

static void cfg(const cublasLtMatmulAlgo_t *a, int *id, int *tile, int *stages, int *cl, int *sw, int *sk) {
    size_t w;
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_ID, id, sizeof(int), &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_TILE_ID, tile, sizeof(int), &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_STAGES_ID, stages, sizeof(int), &w);
    uint16_t c16 = 0;
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &c16, sizeof(c16), &w);
    *cl = c16;
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, sw, sizeof(int), &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, sk, sizeof(int), &w);
}

typedef struct { float us; int id, tile, stages, cl, sw; } res;
static int cmp(const void *x, const void *y) { float a = ((res *)x)->us, b = ((res *)y)->us; return a < b ? -1 : a > b; }

// y (M, N) = x (M, K) W^T with the step's types: out16 = fp16 output (bias in fp16), gelu = GELU_BIAS
static void search(const char *name, int M, int N, int K, int out16, int gelu) {
    prob p;
    const cudaDataType_t yt = out16 ? CUDA_R_16F : CUDA_R_32F;
    LK(cublasLtMatmulDescCreate(&p.d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t T = CUBLAS_OP_T, Nn = CUBLAS_OP_N;
    LK(cublasLtMatmulDescSetAttribute(p.d, CUBLASLT_MATMUL_DESC_TRANSA, &T, sizeof(T)));
    LK(cublasLtMatmulDescSetAttribute(p.d, CUBLASLT_MATMUL_DESC_TRANSB, &Nn, sizeof(Nn)));
    cublasLtEpilogue_t e = gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    LK(cublasLtMatmulDescSetAttribute(p.d, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof(e)));
    int32_t bt = (int32_t)yt;
    LK(cublasLtMatmulDescSetAttribute(p.d, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
    void *A, *B, *C, *bias;
    CK(cudaMalloc(&A, (size_t)N * K * 2)); CK(cudaMalloc(&B, (size_t)M * K * 2));
    CK(cudaMalloc(&C, (size_t)M * N * 4)); CK(cudaMalloc(&bias, (size_t)N * 4));
    CK(cudaMemset(A, 0, (size_t)N * K * 2)); CK(cudaMemset(B, 0, (size_t)M * K * 2)); CK(cudaMemset(bias, 0, N * 4));
    LK(cublasLtMatmulDescSetAttribute(p.d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    LK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16F, K, N, K));
    LK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16F, K, M, K));
    LK(cublasLtMatrixLayoutCreate(&p.c, yt, N, M, N));
    cublasLtMatmulPreference_t pref;
    LK(cublasLtMatmulPreferenceCreate(&pref));
    LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes)));
    cublasLtMatmulHeuristicResult_t hr[8];
    int nh = 0;
    LK(cublasLtMatmulAlgoGetHeuristic(lt, p.d, p.a, p.b, p.c, p.c, pref, 8, hr, &nh));
    const double fl = 2.0 * M * N * K;
    float hbest = 1e30f;
    for (int i = 0; i < nh; i++) {
        float us = time_algo(&p, &hr[i].algo, A, B, C, 20);
        int id, tile, sg, cl, sw, sk; cfg(&hr[i].algo, &id, &tile, &sg, &cl, &sw, &sk);
        printf("  %s M %d heur #%d: %.2f us (id %d tile %d stages %d cluster %d swz %d splitk %d)\n", name, M, i, us, id, tile, sg, cl, sw, sk);
        if (us > 0 && us < hbest) hbest = us;
    }
    int ids[128], nid = 0;
    LK(cublasLtMatmulAlgoGetIds(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16F, CUDA_R_16F, yt, yt, 128, ids, &nid));
    static res rs[20000];
    int nr = 0, nchk = 0;
    const uint16_t clusters[] = { CUBLASLT_CLUSTER_SHAPE_1x1x1, CUBLASLT_CLUSTER_SHAPE_2x1x1, CUBLASLT_CLUSTER_SHAPE_1x2x1,
                                 CUBLASLT_CLUSTER_SHAPE_4x1x1, CUBLASLT_CLUSTER_SHAPE_2x2x1, CUBLASLT_CLUSTER_SHAPE_4x2x1,
                                 CUBLASLT_CLUSTER_SHAPE_1x4x1, CUBLASLT_CLUSTER_SHAPE_2x4x1 };
    for (int a = 0; a < nid; a++) {
        cublasLtMatmulAlgo_t al;
        const double ta = now(), budget = ids[a] == 66 ? 40.0 : 2.0;
        if (cublasLtMatmulAlgoInit(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16F, CUDA_R_16F, yt, yt, ids[a], &al) != CUBLAS_STATUS_SUCCESS) continue;
        size_t w = 0;
        int ntile, nst, swz = 0;
        static uint32_t tiles[4096], stages[1024];
        cublasLtMatmulAlgoCapGetAttribute(&al, CUBLASLT_ALGO_CAP_TILE_IDS, NULL, 0, &w);
        ntile = (int)(w / 4);
        if (ntile > 4096) continue;
        if (ntile == 0) { tiles[0] = 0; ntile = 1; }
        else if (cublasLtMatmulAlgoCapGetAttribute(&al, CUBLASLT_ALGO_CAP_TILE_IDS, tiles, w, &w) != CUBLAS_STATUS_SUCCESS) continue;
        cublasLtMatmulAlgoCapGetAttribute(&al, CUBLASLT_ALGO_CAP_STAGES_IDS, NULL, 0, &w);
        nst = (int)(w / 4);
        if (nst > 1024) continue;
        if (nst == 0) { stages[0] = 0; nst = 1; }
        else if (cublasLtMatmulAlgoCapGetAttribute(&al, CUBLASLT_ALGO_CAP_STAGES_IDS, stages, w, &w) != CUBLAS_STATUS_SUCCESS) continue;
        cublasLtMatmulAlgoCapGetAttribute(&al, CUBLASLT_ALGO_CAP_CTA_SWIZZLING_SUPPORT, &swz, sizeof(swz), &w);
        fprintf(stderr, "%s M %d: id %d, %d tiles, %d stages, swizzle %d\n", name, M, ids[a], ntile, nst, swz);
        for (int t = 0; t < ntile; t++)
            for (int s = 0; s < nst; s++)
                for (int c = 0; c < 8; c++)
                    for (int z = 0; z <= (swz ? 1 : 0); z++) {
                        cublasLtMatmulAlgo_t x = al;
                        int one = 1;
                        cublasLtMatmulAlgoConfigSetAttribute(&x, CUBLASLT_ALGO_CONFIG_TILE_ID, &tiles[t], sizeof(int));
                        cublasLtMatmulAlgoConfigSetAttribute(&x, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages[s], sizeof(int));
                        cublasLtMatmulAlgoConfigSetAttribute(&x, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &one, sizeof(int));
                        cublasLtMatmulAlgoConfigSetAttribute(&x, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &z, sizeof(int));
                        if (cublasLtMatmulAlgoConfigSetAttribute(&x, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &clusters[c], sizeof(uint16_t)) != CUBLAS_STATUS_SUCCESS) continue;
                        cublasLtMatmulHeuristicResult_t chk;
                        nchk++;
                        if (cublasLtMatmulAlgoCheck(lt, p.d, p.a, p.b, p.c, p.c, &x, &chk) != CUBLAS_STATUS_SUCCESS) continue;
                        if (chk.workspaceSize > ws_bytes || nr >= 20000 || now() - ta > budget) continue;
                        float us = time_algo(&p, &x, A, B, C, 20);
                        if (us <= 0) continue;
                        rs[nr++] = (res){ us, ids[a], tiles[t], stages[s], clusters[c], z };
                    }
    }
    qsort(rs, nr, sizeof(res), cmp);
    printf("%s M %d N %d K %d: heuristic best %.2f us (%.0f TFLOP/s); searched %d ids, %d checked, %d ran\n", name, M, N, K,
           hbest, fl / hbest * 1e-6, nid, nchk, nr);
    for (int i = 0; i < nr && i < 6; i++)
        printf("    #%d %.2f us (%.0f TFLOP/s) id %d tile %d stages %d cluster %d swz %d\n", i, rs[i].us, fl / rs[i].us * 1e-6,
               rs[i].id, rs[i].tile, rs[i].stages, rs[i].cl, rs[i].sw);
    fflush(stdout);
    cublasLtMatmulPreferenceDestroy(pref);
    cudaFree(A); cudaFree(B); cudaFree(C); cudaFree(bias);
    cublasLtMatmulDescDestroy(p.d); cublasLtMatrixLayoutDestroy(p.a); cublasLtMatrixLayoutDestroy(p.b); cublasLtMatrixLayoutDestroy(p.c);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    lt_setup();
    int Ms[3] = { 512, 256, 2048 }, nm = argc > 1 ? atoi(argv[1]) : 3;
    for (int i = 0; i < nm; i++) {
        const int M = Ms[i];
        search("qkv", M, 3456, 1152, 1, 0);
        search("proj", M, 1152, 1152, 0, 0);
        search("fc1", M, 4608, 1152, 1, 1);
        search("fc2", M, 1152, 4608, 0, 0);
    }
    return 0;
}
