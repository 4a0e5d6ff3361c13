// lt_time.cuh - shared by the cuBLASLt experiment tools (lt_search.cu, fp8_gemm.cu): checks, the handle,
// stream and workspace, and the timing of one algorithm as a step's graph runs it.
#pragma once
#include <cublasLt.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); exit(1); } } while (0)
#define LK(x) do { cublasStatus_t s_ = (x); if (s_ != CUBLAS_STATUS_SUCCESS) { fprintf(stderr, "%s:%d cublas %d\n", __FILE__, __LINE__, (int)s_); exit(1); } } while (0)

static cublasLtHandle_t lt;
static void *ws;
static size_t ws_bytes = 32u << 20;
static cudaStream_t st;

static void lt_setup(void) {
    LK(cublasLtCreate(&lt));
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));   // callers synchronize their setup copies
    CK(cudaMalloc(&ws, ws_bytes));
}

// us per run of algo al: `reps` runs replayed in one CUDA graph, best of 3 replays; -1 if it fails
static float lt_time(cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
                     cublasLtMatrixLayout_t lc, const cublasLtMatmulAlgo_t *al, const void *A, const void *B, void *C,
                     int reps) {
    const float alpha = 1, beta = 0;
    if (cublasLtMatmul(lt, d, &alpha, A, la, B, lb, &beta, C, lc, C, lc, al, ws, ws_bytes, st) != CUBLAS_STATUS_SUCCESS)
        return -1;
    if (cudaStreamSynchronize(st) != cudaSuccess) { cudaGetLastError(); return -1; }
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int r = 0; r < reps; r++) cublasLtMatmul(lt, d, &alpha, A, la, B, lb, &beta, C, lc, C, lc, al, ws, ws_bytes, st);
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    float best = 1e30f;
    for (int k = 0; k < 3; k++) {
        CK(cudaGraphLaunch(ge, st));   // warm, then timed
        cudaEventRecord(e0, st);
        CK(cudaGraphLaunch(ge, st));
        cudaEventRecord(e1, st);
        CK(cudaEventSynchronize(e1));
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        if (ms < best) best = ms;
    }
    cudaEventDestroy(e0); cudaEventDestroy(e1); cudaGraphExecDestroy(ge); cudaGraphDestroy(g);
    return 1000.0f * best / reps;
}
