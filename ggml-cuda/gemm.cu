// gemm.cu - every matrix product of fp16/bf16 operands goes through cuBLASLt: fp32 accumulation
// (CUBLAS_COMPUTE_32F), fp32 scale. The fp32 layers (the timestep MLP, ~100 rows a chunk of steps) run
// pure fp32 on a small kernel of our own (linear_f32_kernel: cuBLASLt's fp32 kernels cost ~0.1 s to start).
//
// Row-major PyTorch Linear y (M, N) = x (M, K) W^T, W (N, K), is the column-major product
// y^T (N x M) = op_T(W: K x N) * (x^T: K x M), the "TN" layout cuBLASLt is fastest at. The bias
// epilogue adds b (N) along the rows of y^T; GELU_BIAS applies GELU after the bias (probed at init to
// be the tanh form: dit_gemm_probe_gelu; otherwise fc1 runs GEMM + bias_act kernel instead). The bias
// is fp32 for fp32 outputs and in the output type for fp16/bf16 outputs: cuBLASLt 13.0 on an H100
// returns no algorithm for an fp32 bias with fp16 output (measured with test_cuda --opbench); any
// epilogue without an algorithm falls back to GEMM + bias_act.
// Plans (descriptors + algorithm) are cached by shape; the bias pointer is set per call. The algorithm
// is the fastest of the heuristic's top 8, timed as a CUDA graph on the plan's first run inside a sampler
// step of a long enough sample (gemm_autotune; dit-cuda.cu `tune_min_steps`).
#include "common.cuh"
#include <string.h>

static cudaDataType_t cuda_dtype(int t) {
    switch (t) {
    case DIT_TYPE_F16: return CUDA_R_16F;
    case DIT_TYPE_BF16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
    }
}

static int plan_find(dit_cuda *c, int ab_type, int y_type, int epi, int transa, int transb, int64_t m, int64_t n,
                     int64_t k, int64_t lda, int64_t sa, int64_t ldb, int64_t sb, int64_t ldc, int64_t sc, int batch,
                     dit_gemm_plan **out) {
    for (int i = 0; i < c->n_plans; i++) {
        dit_gemm_plan *p = &c->plans[i];
        if (p->a_type == ab_type && p->y_type == y_type && p->epi == epi && p->M == m && p->N == n && p->K == k &&
            p->x_type == ((transa << 1) | transb) && p->lda == lda && p->ldb == ldb && p->ldc == ldc &&
            p->sa == sa && p->sb == sb && p->sc == sc && p->batch == batch) {
            *out = p;
            return p->ok ? DIT_OK : dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: cuBLASLt has no algorithm (cached)");
        }
    }
    if (c->n_plans == DIT_MAX_PLANS) dit_gemm_free_plans(c);   // shapes changed a lot: start over
    dit_gemm_plan *p = &c->plans[c->n_plans];
    memset(p, 0, sizeof(*p));
    p->a_type = ab_type; p->y_type = y_type; p->epi = epi; p->M = m; p->N = n; p->K = k;
    p->x_type = (transa << 1) | transb; p->lda = lda; p->ldb = ldb; p->ldc = ldc;
    p->sa = sa; p->sb = sb; p->sc = sc; p->batch = batch;

    const cudaDataType_t ab = cuda_dtype(ab_type), yt = cuda_dtype(y_type);
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = transa ? CUBLAS_OP_T : CUBLAS_OP_N, tb = transb ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    const int ep = epi & 3;
    cublasLtEpilogue_t e = ep == EPI_BIAS ? CUBLASLT_EPILOGUE_BIAS
                         : ep == EPI_GELU_BIAS ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof(e)));
    if (ep != EPI_NONE) {
        int32_t bt = (epi & EPI_BIAS_OUTTYPE) ? (int32_t)yt : (int32_t)CUDA_R_32F;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
    }
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->la, ab, transa ? k : m, transa ? m : k, lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lb, ab, transb ? n : k, transb ? k : n, ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lc, yt, m, n, ldc));
    if (batch > 1) {
        cublasLtMatrixLayout_t ls[3] = { p->la, p->lb, p->lc };
        int64_t ss[3] = { sa, sb, sc };
        for (int i = 0; i < 3; i++) {
            int32_t bc = batch;
            CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof(bc)));
            CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                          &ss[i], sizeof(ss[i])));
        }
    }
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &c->lt_ws_bytes, sizeof(c->lt_ws_bytes)));
    cublasLtMatmulHeuristicResult_t res[DIT_GEMM_CANDIDATES];
    int nres = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->la, p->lb, p->lc, p->lc, pref,
                                                       DIT_GEMM_CANDIDATES, res, &nres);
    cublasLtMatmulPreferenceDestroy(pref);
    c->n_plans++;
    if (st != CUBLAS_STATUS_SUCCESS || nres == 0) {
        p->ok = 0;
        return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: cuBLASLt has no algorithm for %s x %s -> %s, m %lld n %lld k %lld epi %d (%s)",
                             dit_type_name(ab_type), dit_type_name(ab_type), dit_type_name(y_type), (long long)m,
                             (long long)n, (long long)k, epi, dit_cublas_status_name(st));
    }
    p->algo = res[0].algo;
    for (int i = 0; i < nres; i++)
        if (res[i].state == CUBLAS_STATUS_SUCCESS) p->cand[p->n_cand++] = res[i].algo;
    // small problems keep the heuristic's first answer; the others are timed on their first run
    p->tuned = !c->autotune || p->n_cand < 2 ||
               (double)m * n * k * (batch > 0 ? batch : 1) < (double)(1 << 24);
    p->ok = 1;
    *out = p;
    return DIT_OK;
}

void dit_gemm_free_plans(dit_cuda *c) {
    for (int i = 0; i < c->n_plans; i++) {
        dit_gemm_plan *p = &c->plans[i];
        cublasLtMatmulDescDestroy(p->desc);
        cublasLtMatrixLayoutDestroy(p->la);
        cublasLtMatrixLayoutDestroy(p->lb);
        cublasLtMatrixLayoutDestroy(p->lc);
    }
    c->n_plans = 0;
}

// Time `reps` runs of algorithm `a` replayed as one CUDA graph, as a step's graph runs them: us per run, or
// -1 when it fails. Launched eagerly, one cublasLtMatmul costs ~14 us of host time on the H100 host,
// more than these kernels take, so events around eager launches time the launches, not the kernels.
static float gemm_time_graph(dit_cuda *c, dit_gemm_plan *p, const cublasLtMatmulAlgo_t *a, const void *A,
                             const void *Bm, void *Cm, float alpha, int reps, cudaStream_t st, cudaEvent_t e0,
                             cudaEvent_t e1) {
    const float beta = 0.0f;
    // once eagerly: a failing algorithm, and lazy kernel loading, stay outside the capture
    if (cublasLtMatmul(c->lt, p->desc, &alpha, A, p->la, Bm, p->lb, &beta, Cm, p->lc, Cm, p->lc, a, c->lt_ws,
                       c->lt_ws_bytes, st) != CUBLAS_STATUS_SUCCESS ||
        cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) != cudaSuccess)
        return -1;
    int ok = 1;
    for (int r = 0; r < reps; r++)
        ok &= cublasLtMatmul(c->lt, p->desc, &alpha, A, p->la, Bm, p->lb, &beta, Cm, p->lc, Cm, p->lc, a, c->lt_ws,
                             c->lt_ws_bytes, st) == CUBLAS_STATUS_SUCCESS;
    cudaGraph_t g = NULL;
    cudaGraphExec_t ge = NULL;
    float ms = 0, us = -1;
    ok &= cudaStreamEndCapture(st, &g) == cudaSuccess;
    if (ok && cudaGraphInstantiate(&ge, g, 0) == cudaSuccess && cudaGraphLaunch(ge, st) == cudaSuccess &&
        cudaEventRecord(e0, st) == cudaSuccess && cudaGraphLaunch(ge, st) == cudaSuccess &&
        cudaEventRecord(e1, st) == cudaSuccess && cudaEventSynchronize(e1) == cudaSuccess &&
        cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess)
        us = 1000.0f * ms / reps;
    if (ge) cudaGraphExecDestroy(ge);
    if (g) cudaGraphDestroy(g);
    return us;
}

// First run of a plan outside stream capture: time each candidate algorithm (beta = 0, so repeating the
// product is harmless) and keep the fastest. The heuristic's first pick is often not the best for the
// small-M (M = 2T) GEMMs of a latency-bound sampler step. DIT_CUDA_TUNE=2 prints each choice.
static void gemm_autotune(dit_cuda *c, dit_gemm_plan *p, const void *A, const void *Bm, void *Cm, float alpha,
                          cudaStream_t st) {
    p->tuned = 1;
    cudaStreamCaptureStatus cs;
    if (cudaStreamIsCapturing(st, &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone) return;
    dit_par_beat(c);   // several GPUs: timing, not a stuck peer
    cudaEvent_t e0, e1;
    if (cudaEventCreate(&e0) != cudaSuccess) return;
    if (cudaEventCreate(&e1) != cudaSuccess) { cudaEventDestroy(e0); return; }
    float best = 1e30f, first = -1;
    int bi = 0;
    for (int i = 0; i < p->n_cand; i++) {
        const float us = gemm_time_graph(c, p, &p->cand[i], A, Bm, Cm, alpha, 10, st, e0, e1);
        if (i == 0) first = us;
        if (us >= 0 && us < best) {
            best = us;
            bi = i;
        }
    }
    p->algo = p->cand[bi];
    if (c->autotune == 2)
        fprintf(stderr, "gemm: m %lld n %lld k %lld epi %d: heuristic's first %.2f us, chose #%d of %d: %.2f us\n",
                (long long)p->M, (long long)p->N, (long long)p->K, p->epi, first, bi, p->n_cand, best);
    cudaGetLastError();
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
}

// Cm = alpha A B (+ bias) + beta Cm (in place: C and D are the same matrix)
static int gemm_run(dit_cuda *c, dit_gemm_plan *p, const void *A, const void *Bm, void *Cm, const void *bias,
                    float alpha, float beta, cudaStream_t st) {
    if (p->epi != EPI_NONE)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    if (!p->tuned && c->tune_now && beta == 0.0f) gemm_autotune(c, p, A, Bm, Cm, alpha, st);   // runs overwrite Cm
    CUBLAS_CHECK(cublasLtMatmul(c->lt, p->desc, &alpha, A, p->la, Bm, p->lb, &beta, Cm, p->lc, Cm, p->lc, &p->algo,
                                c->lt_ws, c->lt_ws_bytes, st));
    return DIT_OK;
}

// y (M, N) += b, then tanh-GELU when gelu: the epilogue done by hand when cuBLASLt's does not fit
template <typename T>
static __global__ void bias_act_kernel(T *y, const float *__restrict__ b, int64_t M, int N, int gelu) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= M * N) return;
    float v = to_f32(y[i]) + b[i % N];
    if (gelu) v = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    y[i] = from_f32<T>(v);
}

static int bias_act_cuda(void *y, int y_type, const float *b, int64_t M, int N, int gelu, cudaStream_t st) {
    const int grid = cdiv(M * N, 256);
    if (y_type == DIT_TYPE_F32) bias_act_kernel<<<grid, 256, 0, st>>>((float *)y, b, M, N, gelu);
    else if (y_type == DIT_TYPE_F16) bias_act_kernel<<<grid, 256, 0, st>>>((__half *)y, b, M, N, gelu);
    else bias_act_kernel<<<grid, 256, 0, st>>>((__nv_bfloat16 *)y, b, M, N, gelu);
    LAUNCH_CHECK();
    return DIT_OK;
}

static int is_quantized(const dit_cuda_lin *w) { return w && dit_type_block_size(w->type) > 1; }

int dit_side_fork(dit_cuda *c, cudaStream_t st, cudaStream_t *side) {
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    CUDA_CHECK(cudaStreamIsCapturing(st, &cs));
    *side = st;
    if (cs != cudaStreamCaptureStatusActive) return DIT_OK;
    CUDA_CHECK(cudaEventRecord(c->fork, st));
    CUDA_CHECK(cudaStreamWaitEvent(c->side, c->fork, 0));
    *side = c->side;
    return DIT_OK;
}

// A quantized weight as ct in one of the two scratch buffers: the one the previous call started on the
// side stream (join it), else dequantized here. Then, inside a captured step and when `next` is quantized
// too, start its dequantization into the other buffer on the side stream, ordered after everything
// enqueued so far (the GEMM that read that buffer last included): it runs while this GEMM and the kernels
// up to the next GEMM do (a small-M GEMM leaves most of the memory bandwidth it needs idle). Eager steps
// (the first one, which times the GEMM algorithms; profiles) keep to one stream.
static int quantized_weight(dit_cuda *c, const dit_cuda_lin *w, const dit_cuda_lin *next, cudaStream_t st,
                            const void **W) {
    // started by the previous call: joined (also when unused, so nothing is left open)
    const int ready = c->pf_w && c->pf_w == w, slot = ready ? c->pf_slot : 0;
    TRY(dit_gemm_join(c, st));
    if (!ready) TRY(dit_op_dequant(w->type, w->w, w->n_out, w->n_in, c->deqs[0], c->ct, st));
    *W = c->deqs[slot];
    if (!is_quantized(next) || !c->deqs[1]) return DIT_OK;
    cudaStream_t side;
    TRY(dit_side_fork(c, st, &side));
    if (side == st) return DIT_OK;   // not captured: in line
    const int rc = dit_op_dequant(next->type, next->w, next->n_out, next->n_in, c->deqs[slot ^ 1], c->ct, side);
    CUDA_CHECK(cudaEventRecord(c->join, side));
    if (rc != DIT_OK) {   // joined at once: a capture must not end with the side stream open
        CUDA_CHECK(cudaStreamWaitEvent(st, c->join, 0));
        return rc;
    }
    c->pf_w = next;
    c->pf_slot = slot ^ 1;
    return DIT_OK;
}

int dit_gemm_join(dit_cuda *c, cudaStream_t st) {
    const int open = c->pf_w != NULL;
    c->pf_w = NULL;
    if (open) CUDA_CHECK(cudaStreamWaitEvent(st, c->join, 0));
    return DIT_OK;
}

// y (M, N) = x (M, K) W^T (+ b), all fp32 (no TF32): a warp per output column and LF_ROWS rows, its lanes
// striding over k (W's row and the x rows read coalesced), then a shuffle sum. For the timestep MLP only:
// M is ~100 rows once per chunk of steps, microseconds either way; cuBLASLt would add its fp32 start-up.
#define LF_ROWS 8
#define LF_WARPS 8
static __global__ void linear_f32_kernel(const float *__restrict__ x, const float *__restrict__ w,
                                         const float *__restrict__ b, float *__restrict__ y, int M, int N, int K) {
    const int n = blockIdx.x * LF_WARPS + threadIdx.x / WARP, lane = threadIdx.x % WARP, m0 = blockIdx.y * LF_ROWS;
    if (n >= N) return;
    const float *wr = w + (int64_t)n * K;
    float acc[LF_ROWS] = {};
    for (int k = lane; k < K; k += WARP) {
        const float wk = wr[k];
#pragma unroll
        for (int r = 0; r < LF_ROWS; r++)
            if (m0 + r < M) acc[r] = fmaf(x[(int64_t)(m0 + r) * K + k], wk, acc[r]);
    }
#pragma unroll
    for (int r = 0; r < LF_ROWS; r++) {
        float v = acc[r];
        for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0 && m0 + r < M) y[(int64_t)(m0 + r) * N + n] = v + (b ? b[n] : 0.0f);
    }
}

static int linear_f32(const dit_cuda_lin *w, const float *x, int64_t M, float *y, int epi, cudaStream_t st) {
    if (M <= 0) return DIT_OK;
    const dim3 grid(cdiv(w->n_out, LF_WARPS), cdiv(M, LF_ROWS));
    linear_f32_kernel<<<grid, LF_WARPS * WARP, 0, st>>>(x, (const float *)w->w, epi == EPI_BIAS ? w->b : NULL, y, (int)M,
                                                        (int)w->n_out, (int)w->n_in);
    CUDA_CHECK(cudaGetLastError());
    return DIT_OK;
}

// y = x W^T (+ b, + GELU per epi) + beta y, for dit_op_linear / _next / _acc below
static int linear(dit_cuda *c, const dit_cuda_lin *w, const dit_cuda_lin *next, const void *x, int64_t M, void *y,
                  int y_type, int epi, float beta, cudaStream_t st) {
    const void *W = w->w;
    if (w->type == DIT_TYPE_F32) {
        if (y_type != DIT_TYPE_F32 || beta != 0.0f || epi == EPI_GELU_BIAS)
            return dit_set_error(DIT_ERR_UNSUPPORTED, "cuda: an fp32 linear layer supports y = x W^T + b only");
        return linear_f32(w, (const float *)x, M, (float *)y, w->b ? epi : EPI_NONE, st);
    }
    int ab = w->type;
    if (is_quantized(w)) {   // quantized: dequantized into a scratch buffer (ct), then an ordinary ct GEMM
        TRY(quantized_weight(c, w, next, st, &W));
        ab = c->ct;
    }
    if (!w->b) epi = EPI_NONE;
    int post = 0;   // 1: bias by hand, 2: bias + GELU by hand
    if (epi == EPI_GELU_BIAS && !c->gelu_epilogue) post = 2;
    // cuBLASLt (13.0, H100) has no algorithm for an fp32 bias with fp16/bf16 output: use the ct copy there
    const void *bias = w->b;
    if (epi != EPI_NONE && y_type != DIT_TYPE_F32 && w->bh) {
        epi |= EPI_BIAS_OUTTYPE;
        bias = w->bh;
    }
    dit_gemm_plan *p = NULL;
    if (!post && plan_find(c, ab, y_type, epi, 1, 0, w->n_out, M, w->n_in, w->n_in, 0, w->n_in, 0, w->n_out, 0, 1,
                           &p) != DIT_OK) {
        if (epi == EPI_NONE) return dit_last_error_code();
        post = (epi & 3) == EPI_GELU_BIAS ? 2 : 1;   // this epilogue has no algorithm here: do it by hand
    }
    if (post) TRY(plan_find(c, ab, y_type, EPI_NONE, 1, 0, w->n_out, M, w->n_in, w->n_in, 0, w->n_in, 0, w->n_out, 0,
                            1, &p));
    TRY(gemm_run(c, p, W, x, y, bias, 1.0f, beta, st));
    if (post) TRY(bias_act_cuda(y, y_type, w->b, M, (int)w->n_out, post == 2, st));
    return DIT_OK;
}

int dit_op_linear(dit_cuda *c, const dit_cuda_lin *w, const void *x, int64_t M, void *y, int y_type, int epi,
                  cudaStream_t st) {
    return linear(c, w, NULL, x, M, y, y_type, epi, 0.0f, st);
}

int dit_op_linear_next(dit_cuda *c, const dit_cuda_lin *w, const dit_cuda_lin *next, const void *x, int64_t M,
                       void *y, int y_type, int epi, cudaStream_t st) {
    return linear(c, w, next, x, M, y, y_type, epi, 0.0f, st);
}

int dit_op_linear_acc(dit_cuda *c, const dit_cuda_lin *w, const void *x, int64_t M, float *y, cudaStream_t st) {
    return linear(c, w, NULL, x, M, y, DIT_TYPE_F32, EPI_BIAS, 1.0f, st);
}

int dit_op_gemm_raw(dit_cuda *c, int type, int y_type, int transa, int transb, int64_t m, int64_t n, int64_t k,
                    const void *A, int64_t lda, int64_t sa, const void *Bm, int64_t ldb, int64_t sb, void *Cm,
                    int64_t ldc, int64_t sc, int batch, float alpha, cudaStream_t st) {
    dit_gemm_plan *p;
    TRY(plan_find(c, type, y_type, EPI_NONE, transa, transb, m, n, k, lda, sa, ldb, sb, ldc, sc, batch, &p));
    return gemm_run(c, p, A, Bm, Cm, NULL, alpha, 0.0f, st);
}

// ---------------------------------------------------------------- warm-up
// cuBLASLt loads what it needs for a pair of operand and output types at the first heuristic query (or
// algorithm check) for that pair: 60-120 ms a pair on an H100, paid inside the first step for the pairs a
// sample uses: ct -> fp32 (modulation, final layer) and ct -> ct (the block GEMMs). Made on threads beside
// the weight upload instead (tests/kernels/lt_first.cu: three pairs took 293 ms in a row, 140 ms side by
// side, and 252-262 ms together with a 216 ms upload). The handle may be shared: nothing here changes it.
static void *warm_main(void *arg) {
    const dit_gemm_warm_job *j = (const dit_gemm_warm_job *)arg;
    const cudaDataType_t ab = cuda_dtype(j->ab), yt = cuda_dtype(j->y);
    const int64_t m = 256, n = 64, k = 256;
    const cublasOperation_t ta = CUBLAS_OP_T;
    const cublasLtEpilogue_t e = CUBLASLT_EPILOGUE_BIAS;
    const int32_t bt = (int32_t)yt;   // as plan_find: the bias in the output type
    cublasLtMatmulDesc_t d = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res[DIT_GEMM_CANDIDATES];
    int nres = 0;
    // failures do not matter here: the real query reports them
    if (cudaSetDevice(j->c->device) == cudaSuccess && cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F) == 0 &&
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)) == 0 &&
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof(e)) == 0 &&
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)) == 0 &&
        cublasLtMatrixLayoutCreate(&la, ab, k, m, k) == 0 && cublasLtMatrixLayoutCreate(&lb, ab, k, n, k) == 0 &&
        cublasLtMatrixLayoutCreate(&lc, yt, m, n, m) == 0 && cublasLtMatmulPreferenceCreate(&pref) == 0)
        cublasLtMatmulAlgoGetHeuristic(j->c->lt, d, la, lb, lc, lc, pref, DIT_GEMM_CANDIDATES, res, &nres);
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (d) cublasLtMatmulDescDestroy(d);
    return NULL;
}

void dit_gemm_warm_start(dit_cuda *c, dit_gemm_warm *w) {
    const int pairs[DIT_GEMM_WARM][2] = { { c->ct, c->ct }, { c->ct, DIT_TYPE_F32 } };
    for (int i = 0; i < DIT_GEMM_WARM; i++) {
        dit_gemm_warm_job *j = &w->job[i];
        j->c = c; j->ab = pairs[i][0]; j->y = pairs[i][1];
        j->started = pthread_create(&j->th, NULL, warm_main, j) == 0;   // no thread: the first step pays
    }
}

void dit_gemm_warm_join(dit_gemm_warm *w) {
    for (int i = 0; i < DIT_GEMM_WARM; i++)
        if (w->job[i].started) pthread_join(w->job[i].th, NULL);
}

// cuBLASLt documents its GELU epilogue only as "GELU". Probe it: y = GELU(x + b) for x on a grid in
// [-6, 6] through a (ct x ct -> f32) GEMM with an identity operand, compared with the tanh form
// 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))) and with the erf form. They differ by up to 4.7e-4
// near |x| = 2, far above the f32 rounding of the probe (the inputs are exact in fp16).
int dit_gemm_probe_gelu(dit_cuda *c, int *is_tanh) {
    enum { NP = 256, KP = 16 };
    uint16_t hx[NP * KP], hi[KP * 8];
    float hb[NP], hy[NP * 8], xs[NP];
    for (int i = 0; i < NP; i++) {
        xs[i] = -6.0f + 12.0f * i / (NP - 1);
        const uint16_t h = c->ct == DIT_TYPE_BF16 ? dit_fp32_to_bf16(xs[i]) : dit_fp32_to_fp16(xs[i]);
        xs[i] = c->ct == DIT_TYPE_BF16 ? dit_bf16_to_fp32(h) : dit_fp16_to_fp32(h);
        for (int k = 0; k < KP; k++) hx[i * KP + k] = k == 0 ? h : 0;
        hb[i] = 0.0f;
    }
    const uint16_t one = c->ct == DIT_TYPE_BF16 ? dit_fp32_to_bf16(1.0f) : dit_fp32_to_fp16(1.0f);
    for (int j = 0; j < 8; j++)
        for (int k = 0; k < KP; k++) hi[j * KP + k] = k == 0 ? one : 0;
    void *dx = NULL, *di = NULL;
    float *db = NULL, *dy = NULL;
    int rc = DIT_ERR_DEVICE;
    dit_cuda_lin w = { c->ct, NP, KP, NULL, NULL };
    if (cudaMalloc(&dx, sizeof(hx)) != cudaSuccess || cudaMalloc(&di, sizeof(hi)) != cudaSuccess ||
        cudaMalloc((void **)&db, sizeof(hb)) != cudaSuccess || cudaMalloc((void **)&dy, sizeof(hy)) != cudaSuccess) {
        rc = dit_set_error(DIT_ERR_DEVICE, "cuda: out of memory in the GELU probe");
        goto done;
    }
    // plain cudaMemcpy from pageable memory may still be in flight when it returns and is not ordered
    // with the non-blocking stream: copy on the stream itself
    cudaMemcpyAsync(dx, hx, sizeof(hx), cudaMemcpyHostToDevice, c->stream);
    cudaMemcpyAsync(di, hi, sizeof(hi), cudaMemcpyHostToDevice, c->stream);
    cudaMemcpyAsync(db, hb, sizeof(hb), cudaMemcpyHostToDevice, c->stream);
    // "weights" = the x grid (NP rows), "activations" = 8 rows of e_0: y[r][i] = GELU(x_i)
    w.w = dx; w.b = db;
    c->gelu_epilogue = 1;
    rc = dit_op_linear(c, &w, di, 8, dy, DIT_TYPE_F32, EPI_GELU_BIAS, c->stream);
    if (rc != DIT_OK) goto done;
    if (cudaStreamSynchronize(c->stream) != cudaSuccess || cudaMemcpy(hy, dy, sizeof(hy), cudaMemcpyDeviceToHost) != cudaSuccess) {
        rc = dit_set_error(DIT_ERR_DEVICE, "cuda: GELU probe failed: %s", cudaGetErrorString(cudaGetLastError()));
        goto done;
    }
    {
        double et = 0, ee = 0;
        for (int i = 0; i < NP; i++) {
            const double x = xs[i];
            const double gt = 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
            const double ge = 0.5 * x * (1.0 + erf(x * 0.7071067811865476));
            for (int r = 0; r < 8; r++) {
                const double v = hy[r * NP + i];
                et = fmax(et, fabs(v - gt));
                ee = fmax(ee, fabs(v - ge));
            }
        }
        *is_tanh = et < 1e-5 && et < ee;
        c->probe_err_tanh = et;
        c->probe_err_erf = ee;
    }
    rc = DIT_OK;
done:
    cudaFree(dx); cudaFree(di); cudaFree(db); cudaFree(dy);
    return rc;
}

// time one GEMM configuration as a step's graph replays it (mean of `reps` in one graph), for dit_cuda_opbench
int dit_gemm_time(dit_cuda *c, int ab, int y_type, int epi, int64_t M, int64_t N, int64_t K, const void *W,
                  const void *X, void *Y, const void *bias, int reps, float *us) {
    dit_gemm_plan *p;
    *us = -1;
    c->tune_now = 1;   // plan and tune as for a step
    int rc = plan_find(c, ab, y_type, epi, 1, 0, N, M, K, K, 0, K, 0, N, 0, 1, &p);
    if (rc == DIT_OK) rc = gemm_run(c, p, W, X, Y, bias, 1.0f, 0.0f, c->stream);   // the first run tunes
    c->tune_now = 0;
    if (rc != DIT_OK) return dit_last_error_code() == DIT_ERR_UNSUPPORTED ? DIT_OK : rc;   // no algorithm: -1 us
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    *us = gemm_time_graph(c, p, &p->algo, W, X, Y, 1.0f, reps, c->stream, e0, e1);
    CUDA_CHECK(cudaEventDestroy(e0));
    CUDA_CHECK(cudaEventDestroy(e1));
    return DIT_OK;
}
