// parallel.cu - several GPUs with NCCL: the plan (data x cfg x seq), communicators, one thread per GPU,
// the exchanges inside a step, the final gather, and the watchdog that turns a stuck peer into an error.
//
// Ranks: rank = (d * cf + cfi) * S + s. Per step, on the rank's share (B rows = 2N/cf, Tl = T/S tokens):
//   h = patch_embed(tokens t0 .. t0+Tl-1)                                 (B, Tl, D)
//   per block: qkv local (B, Tl, 3D)
//     Ulysses:   (B*Tl, 3, S, Hl*hd) -> peer-major -> all-to-all -> (S, B, Tl, 3 Hl hd) -> (B, T, 3 Hl hd)
//                attention over all T tokens for this rank's Hl = H/S heads -> (B, T, Hl hd)
//                -> peer-major (S, B, Tl, Hl hd) -> all-to-all -> (S, B*Tl, Hl hd) -> (B*Tl, D)
//     all-gather: (S, B, Tl, 2D) k, v -> every rank; attention of the Tl local queries to all T keys
//                (one process: peer-to-peer stores into the peers' buffers, else NCCL)
//   final linear (B*Tl, p*p*oc) -> all-gather over the image group (cf x S ranks) -> (2N, T, p*p*oc)
//   sampler update for the N images of the data slice, the same on every rank of the image group
// The exchanges are captured in the step's CUDA graph (NCCL supports capture). Waits poll with a
// watchdog: no progress for timeout_s, a failed rank or an NCCL async error aborts every communicator.
#include "common.cuh"
#include "vae.cuh"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAR_MAX 64
// auto, one process: split tokens further only while each GPU keeps this many token rows
// (DIT_PAR_MIN_ROWS overrides; several processes split over all of them). Measured (bench/RESULTS.md,
// DiT-XL/2, 4 x H200): with NCCL exchanges 2048 -> 1024 rows per GPU gained, 1024 -> 512 lost (512 px,
// 1 image: CFG on 2 GPUs 3.29 ms/step, CFG x seq on 4 3.80); with the peer-to-peer all-gather 1024 -> 512
// gains (3.10 -> 2.46), 256 -> 128 loses (256 px: 1.37 -> 1.57).
#define PAR_MIN_ROWS 1024
#define PAR_MIN_ROWS_P2P 512

struct dit_par {
    int n_local;                    // GPUs this process drives (ctx[0] = m->cuda)
    dit_cuda *ctx[PAR_MAX];
    double timeout;
    volatile int abort_flag, stop;  // set once: some rank failed / the watchdog should exit
    volatile double beat[PAR_MAX];  // last sign of progress of each local rank
    volatile int active[PAR_MAX];   // the rank is waiting on the GPU or inside NCCL
    pthread_t watchdog;
    int watchdog_on;
    pthread_t aborter[3 * PAR_MAX];  // one thread per ncclCommAbort after a fault (joined in group_free)
    int n_aborters;
    pthread_mutex_t mu;
    int in_nccl[PAR_MAX];           // a local rank is inside an NCCL call (under mu; nccl_enter)
    int err_code, err_secondary;    // first error (a primary one beats a "stopped because" one)
    char err[600];
    volatile int *abort_word;       // mapped host memory: [0] the abort flag as the GPUs' spin waits see
                                    // it, [1] set by a wait kernel that timed out
    int p2p;                        // the all-gather goes by peer-to-peer stores (every rank here, peer access)
    int bar_n, bar_gen;             // local_barrier (bar_gen read and written atomically)
};

static double now_s(void) { return host_seconds(); }

static int nccl_ok(ncclResult_t r, const char *what) {
    return r == ncclSuccess ? DIT_OK : dit_set_error(DIT_ERR_DEVICE, "nccl: %s: %s", what, ncclGetErrorString(r));
}

// wait until everything enqueued on st so far is done (dit_par_wait: with the timeout and the abort flag)
static int drain(dit_cuda *c, cudaStream_t st) {
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    int rc = cudaEventRecord(e, st) == cudaSuccess ? dit_par_wait(c, e)
                                                    : dit_set_error(DIT_ERR_DEVICE, "cuda: cudaEventRecord failed");
    cudaEventDestroy(e);
    return rc;
}

// ---------------------------------------------------------------- errors and the watchdog
static void par_fail(dit_par *g, int code, const char *msg, int secondary) {
    pthread_mutex_lock(&g->mu);
    if (!g->err_code || (g->err_secondary && !secondary)) {
        g->err_code = code;
        g->err_secondary = secondary;
        snprintf(g->err, sizeof(g->err), "%s", msg);
    }
    g->abort_flag = 1;
    if (g->abort_word) *g->abort_word = 1;   // spinning kernels (p2p_wait_kernel) leave
    pthread_mutex_unlock(&g->mu);
}

static void *abort_main(void *comm) {
    ncclCommAbort((ncclComm_t)comm);
    return NULL;
}

// Take every communicator of this process out of the ranks' slots, children first, under the mutex (nobody
// starts a new call on one after this; freeing them comes after the lock: an abort may block). With
// `skip_busy`, a rank inside an NCCL call keeps its communicators, counted in *later. Returns how many.
static int take_comms(dit_par *g, int skip_busy, ncclComm_t *todo, int *later) {
    int n = 0;
    pthread_mutex_lock(&g->mu);
    for (int i = 0; i < g->n_local; i++) {
        dit_par_rank *pr = g->ctx[i] ? g->ctx[i]->pr : NULL;
        if (!pr || !(pr->world_comm || pr->img_comm || pr->seq_comm)) continue;
        if (skip_busy && g->in_nccl[i]) { (*later)++; continue; }
        ncclComm_t *slot[3] = { &pr->seq_comm, &pr->img_comm, &pr->world_comm };
        for (int k = 0; k < 3; k++)
            if (*slot[k]) todo[n++] = *slot[k], *slot[k] = NULL;
    }
    pthread_mutex_unlock(&g->mu);
    return n;
}

// Abort every communicator of this process. After a fault (`fault` = 1) each abort gets its own thread:
// ncclCommAbort first raises the abort flag its kernels poll, then may block until every graph that
// captured the communicator is destroyed (NCCL's commDestroySync); sequential aborts would leave the later
// communicators' kernels stuck, and with them the graphs the first abort waits for. group_free destroys
// the graphs, then joins these. A rank inside an NCCL call keeps its communicators until it leaves (NCCL
// allows no call on a communicator while another thread frees it) or until `force` (stuck in the call).
// A clean teardown of several processes (graphs gone, streams drained: nothing can block) aborts all in
// this one thread, children first (one process: close_all): NCCL allows no calls on several communicators
// of one GPU from several threads at once, and the last abort of a split family frees every member.
// Returns how many ranks were left for later.
static int abort_all(dit_par *g, int fault, int force) {
    ncclComm_t todo[3 * PAR_MAX];
    int later = 0;
    const int n = take_comms(g, fault && !force, todo, &later);
    for (int k = 0; k < n; k++) {   // the watchdog, or group_free after joining it: never both at once
        if (!fault || pthread_create(&g->aborter[g->n_aborters], NULL, abort_main, todo[k]) != 0) ncclCommAbort(todo[k]);
        else g->n_aborters++;
    }
    return later;
}

// A clean teardown of a one-process group (graphs gone, streams drained): finalize every communicator (NCCL's
// non-blocking finalize stops each proxy thread by a message), wait until all are quiescent, destroy them,
// children first. ncclCommAbort leaves each proxy thread to notice the abort flag at its next 500 ms poll,
// once per family of peer communicators (0.5 s per family: 1.0 s for CFG on 2 GPUs, 1.6 s for seq). What
// fails, or is not quiescent within 10 s, is aborted. Several processes still abort: there a proxy would
// wait for its peers' own (later) teardown.
static void close_all(dit_par *g) {
    ncclComm_t todo[3 * PAR_MAX];
    int later = 0, state[3 * PAR_MAX];   // 1 finalizing, 2 quiescent, 0 to abort
    const int n = take_comms(g, 0, todo, &later);
    for (int k = 0; k < n; k++) {
        const ncclResult_t r = ncclCommFinalize(todo[k]);
        state[k] = r == ncclSuccess || r == ncclInProgress;
    }
    for (const double t_end = now_s() + 10.0;;) {
        int pending = 0;
        for (int k = 0; k < n; k++) {
            ncclResult_t a = ncclInternalError;
            if (state[k] != 1) continue;
            const ncclResult_t q = ncclCommGetAsyncError(todo[k], &a);
            if (q != ncclSuccess || (a != ncclSuccess && a != ncclInProgress)) state[k] = 0;
            else if (a == ncclSuccess) state[k] = 2;
            else pending++;
        }
        if (!pending || now_s() > t_end) break;
        usleep(100);
    }
    for (int k = 0; k < n; k++)   // still finalizing after 10 s: aborted first, so none is busy below
        if (state[k] == 1) ncclCommAbort(todo[k]);
    for (int k = 0; k < n; k++) {
        if (state[k] == 2) ncclCommDestroy(todo[k]);   // blocking (also for non-blocking communicators)
        else if (state[k] == 0) ncclCommAbort(todo[k]);
    }
}

static int stopped_error(const dit_cuda *c) {
    return dit_set_error(DIT_ERR_DEVICE, "nccl: rank %d stopped: another rank failed", c->pr->rank);
}

// Every NCCL call of a rank thread goes between these two: none starts once the group aborts, and
// abort_all leaves the communicators of a rank inside a call alone until it leaves (NCCL allows no call on
// a communicator while another thread frees it). Only ncclCommAbort runs in other threads.
static int nccl_enter(dit_cuda *c) {
    dit_par *g = c->pr->group;
    pthread_mutex_lock(&g->mu);
    const int stop = g->abort_flag;
    if (!stop) g->in_nccl[c->pr->local] = 1;
    pthread_mutex_unlock(&g->mu);
    return stop ? stopped_error(c) : DIT_OK;
}

static void nccl_leave(dit_cuda *c) {
    dit_par *g = c->pr->group;
    pthread_mutex_lock(&g->mu);
    g->in_nccl[c->pr->local] = 0;
    pthread_mutex_unlock(&g->mu);
}

// this rank's communicator's asynchronous error (NCCL_IN_PROGRESS while a non-blocking call works on)
static int async_error(dit_cuda *c, ncclComm_t comm, ncclResult_t *r) {
    TRY(nccl_enter(c));
    const ncclResult_t e = ncclCommGetAsyncError(comm, r);
    nccl_leave(c);
    return e == ncclSuccess ? DIT_OK : dit_set_error(DIT_ERR_DEVICE, "nccl: ncclCommGetAsyncError failed");
}

// an asynchronous error on one of this rank's communicators fails the group (polled by the rank itself)
static void poll_async(dit_cuda *c) {
    dit_par_rank *pr = c->pr;
    ncclComm_t comm[3] = { pr->world_comm, pr->img_comm, pr->seq_comm };
    for (int k = 0; k < 3; k++) {
        ncclResult_t r = ncclSuccess;
        if (!comm[k] || async_error(c, comm[k], &r) != DIT_OK || r == ncclSuccess || r == ncclInProgress) continue;
        char msg[300];
        snprintf(msg, sizeof(msg), "nccl: rank %d: %s (%s)", pr->rank, ncclGetErrorString(r), ncclGetLastError(comm[k]));
        par_fail(pr->group, DIT_ERR_DEVICE, msg, 0);
    }
}

// times out a rank without progress; after a fault (from any rank) aborts every communicator, a rank
// inside an NCCL call once it leaves it, or after 1 s if it does not (stuck on a dead peer)
static void *watchdog_main(void *arg) {
    dit_par *g = (dit_par *)arg;
    char msg[300];
    double t_abort = 0;
    while (!g->stop) {
        usleep(20000);
        const double t = now_s();
        for (int i = 0; i < g->n_local && !g->abort_flag; i++) {
            dit_par_rank *pr = g->ctx[i] ? g->ctx[i]->pr : NULL;
            if (g->active[i] && t - g->beat[i] > g->timeout) {
                snprintf(msg, sizeof(msg), "nccl: rank %d (GPU %d): no progress for %.0f s: a peer GPU or process "
                         "stopped, or a collective is stuck", pr ? pr->rank : i, g->ctx[i] ? g->ctx[i]->device : -1,
                         g->timeout);
                par_fail(g, DIT_ERR_DEVICE, msg, 0);
            }
        }
        if (g->abort_flag) {   // unblocks kernels and host calls stuck on a peer; the ranks then return errors
            if (t_abort == 0) t_abort = t;
            if (abort_all(g, 1, t - t_abort > 1.0) == 0) break;
        }
    }
    return NULL;
}

// NCCL requires a captured collective to be captured on every rank that takes part: while GPU 0 runs op
// by op (profiling), all GPUs do
void dit_par_set_eager(dit_cuda *c, int on) {
    for (int i = 0; c->group && i < c->group->n_local; i++)
        if (c->group->ctx[i]) c->group->ctx[i]->eager = on;
}

void dit_par_beat(dit_cuda *c) {   // host work in progress (autotune, capture): not a stuck peer
    if (c->pr) c->pr->group->beat[c->pr->local] = now_s();
}

int dit_par_wait(dit_cuda *c, cudaEvent_t e) {
    dit_par *g = c->pr->group;
    const int i = c->pr->local;
    g->beat[i] = now_s();
    g->active[i] = 1;
    for (int n = 0;; n++) {
        const cudaError_t r = cudaEventQuery(e);
        if (n % 256 == 255) poll_async(c);   // ~every 15-20 ms
        if (g->abort_word && g->abort_word[1]) {   // a peer-to-peer wait gave up: its data never came
            char msg[200];
            snprintf(msg, sizeof(msg), "parallel: rank %d: k, v of a peer GPU did not arrive within %.0f s",
                     c->pr->rank, 2 * g->timeout + 5);
            par_fail(g, DIT_ERR_DEVICE, msg, 0);
            return dit_set_error(DIT_ERR_DEVICE, "%s", msg);
        }
        if (r == cudaSuccess) { g->beat[i] = now_s(); return DIT_OK; }
        if (g->abort_flag) return stopped_error(c);
        if (r != cudaErrorNotReady) CUDA_CHECK(r);
        usleep(50);
    }
}

// after a call on a non-blocking communicator (r its result): wait until NCCL has finished with it
static int settle(dit_cuda *c, ncclComm_t comm, ncclResult_t r, const char *what) {
    dit_par *g = c->pr->group;
    if (r == ncclSuccess && comm) TRY(async_error(c, comm, &r));   // non-blocking: may still be at work
    while (r == ncclInProgress) {
        if (g->abort_flag) return stopped_error(c);
        usleep(100);
        TRY(async_error(c, comm, &r));   // refused once the group aborts
    }
    if (r != ncclSuccess)
        return dit_set_error(DIT_ERR_DEVICE, "nccl: rank %d: %s: %s (%s)", c->pr->rank, what, ncclGetErrorString(r),
                             ncclGetLastError(comm));
    return DIT_OK;
}

// one NCCL call (or group) of a rank thread, guarded (nccl_enter)
#define NCCL_CALL(c, r, call) \
    do { \
        TRY(nccl_enter(c)); \
        (r) = (call); \
        nccl_leave(c); \
    } while (0)

// ---------------------------------------------------------------- exchanges inside a step
// chunk q of send goes to peer q, chunk q of recv comes from peer q (grouped point-to-point)
static ncclResult_t all_to_all_group(const dit_par_rank *pr, const void *send, void *recv, size_t chunk,
                                     cudaStream_t st) {
    ncclResult_t r = ncclGroupStart();
    for (int q = 0; q < pr->S && r == ncclSuccess; q++) {
        r = ncclSend((const char *)send + q * chunk, chunk, ncclChar, q, pr->seq_comm, st);
        if (r == ncclSuccess) r = ncclRecv((char *)recv + q * chunk, chunk, ncclChar, q, pr->seq_comm, st);
    }
    const ncclResult_t e = ncclGroupEnd();   // always closed, also after an error
    return r == ncclSuccess ? e : r;
}

static int all_to_all(dit_cuda *c, const void *send, void *recv, size_t chunk, cudaStream_t st) {
    ncclResult_t r;
    NCCL_CALL(c, r, all_to_all_group(c->pr, send, recv, chunk, st));
    return nccl_ok(r, "all-to-all");
}

// on any of the rank's communicators (the world one is non-blocking: settled)
static int all_gather(dit_cuda *c, const void *src, void *dst, size_t n, ncclDataType_t type, ncclComm_t comm,
                      cudaStream_t st, const char *what) {
    ncclResult_t r;
    NCCL_CALL(c, r, ncclAllGather(src, dst, n, type, comm, st));
    return comm == c->pr->world_comm ? settle(c, comm, r, what) : nccl_ok(r, what);
}

// rows r0 .. r0+n-1 of a Linear layer (the q or the k|v part of W_qkv): a view, no copy
static dit_cuda_lin lin_rows(const dit_cuda_lin *L, int64_t r0, int64_t n) {
    dit_cuda_lin v = *L;
    v.n_out = n;
    v.w = (char *)L->w + r0 * dit_row_bytes(L->type, L->n_in);
    if (v.b) v.b += r0;
    if (v.bh) v.bh = (char *)L->bh + r0 * 2;   // ct: 2 bytes
    return v;
}

// ---------------------------------------------------------------- peer-to-peer all-gather
// NCCL's all-gather of k, v cost ~40 us a block (1.2 ms/step at 512 px over 2 GPUs; bench/RESULTS.md)
// for ~10 us of NVLink traffic. With every GPU of the sequence group in this process, each rank stores its
// k, v piece straight into every peer's buffer instead, then raises its flag there; a rank's wait kernel
// spins on its flags before attention. Buffers alternate by block parity (sp[1], sp[2]): a peer can be one
// exchange ahead, never two (its next one needs this rank's, which follows this rank's attention), and the
// output all-gather (NCCL) orders the steps. Flags count exchanges and are never reset (counters on the
// device, also across graph replays and samples); after a failure the group is not used again.
enum { P2P_PUSH = DIT_P2P_MAX, P2P_DONE, P2P_WAIT };   // counters in p2p_sync after the flags

typedef struct {
    uint4 *dst[DIT_P2P_MAX];        // rank q's buffer, at this rank's piece
    unsigned *flag[DIT_P2P_MAX];    // rank q's p2p_sync
} p2p_peers;

static __device__ void st_release_sys(unsigned *p, unsigned v) {
    asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
static __device__ unsigned ld_acquire_sys(const unsigned *p) {
    unsigned v;
    asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

// grid (x, S - 1): CTA row y copies src (n uint4) to the y-th peer; the last CTA to finish signals them
static __global__ void p2p_push_kernel(const uint4 *__restrict__ src, size_t n, p2p_peers pe, int S, int s,
                                       unsigned *sync) {
    uint4 *dst = pe.dst[blockIdx.y + (blockIdx.y >= s)];   // every rank but this one
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = src[i];
    __threadfence_system();   // this thread's stores reach the peer before the CTA's count below
    __syncthreads();
    if (threadIdx.x) return;
    if (atomicAdd(&sync[P2P_DONE], 1) != gridDim.x * gridDim.y - 1) return;
    sync[P2P_DONE] = 0;   // the last CTA: every store of every CTA is out
    __threadfence_system();
    const unsigned e = ++sync[P2P_PUSH];
    for (int q = 0; q < S; q++)
        if (q != s) st_release_sys(pe.flag[q] + s, e);
}

// one warp: lane q waits until rank q has signalled this exchange (or the group aborts, or timeout_ns)
static __global__ void p2p_wait_kernel(unsigned *sync, int S, int s, volatile int *abort_word,
                                       unsigned long long timeout_ns) {
    const unsigned e = sync[P2P_WAIT] + 1;
    __syncwarp();
    const int q = threadIdx.x;
    if (q < S && q != s) {
        unsigned long long t0, t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
        while ((int)(ld_acquire_sys(sync + q) - e) < 0 && !*abort_word) {
            __nanosleep(256);
            asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
            if (t - t0 > timeout_ns) {   // the host's watchdog should have aborted long before: never hang,
                abort_word[1] = 1;         // and fail the sample (dit_par_wait reads this)
                __threadfence_system();
                break;
            }
        }
    }
    __syncwarp();
    if (q == 0) sync[P2P_WAIT] = e;
}

// this rank's piece (R, 2D), already in place in its buffer `parity`, into the same place of every peer's
static int p2p_all_gather_kv(dit_cuda *c, const void *kv, int64_t R, int parity, cudaStream_t st) {
    const dit_par_rank *pr = c->pr;
    const size_t bytes = (size_t)R * 2 * c->D * 2;   // ct
    p2p_peers pe;
    for (int q = 0; q < pr->S; q++) {
        pe.dst[q] = (uint4 *)((char *)pr->p2p_dst[parity][q] + pr->s * bytes);
        pe.flag[q] = pr->p2p_flag[q];
    }
    dit_prof_begin(c, "p2p_push_kv");
    const unsigned gx = (unsigned)((bytes / 16 + 255) / 256 < 64 ? (bytes / 16 + 255) / 256 : 64);
    p2p_push_kernel<<<dim3(gx, pr->S - 1), 256, 0, st>>>((const uint4 *)kv, bytes / 16, pe, pr->S, pr->s,
                                                          pr->p2p_sync);
    dit_prof_end(c);
    CUDA_CHECK(cudaGetLastError());
    return DIT_OK;
}

static int p2p_wait(dit_cuda *c, cudaStream_t st) {
    const dit_par_rank *pr = c->pr;
    const unsigned long long timeout_ns = (unsigned long long)((2 * pr->group->timeout + 5) * 1e9);
    dit_prof_begin(c, "p2p_wait_kv");
    p2p_wait_kernel<<<1, 32, 0, st>>>(pr->p2p_sync, pr->S, pr->s, pr->group->abort_word, timeout_ns);
    dit_prof_end(c);
    CUDA_CHECK(cudaGetLastError());
    return DIT_OK;
}

// every local rank arrives before any leaves (or the group aborts: the watchdog times out a missing one)
static int local_barrier(dit_cuda *c) {
    dit_par *g = c->pr->group;
    pthread_mutex_lock(&g->mu);
    const int gen = g->bar_gen;
    if (++g->bar_n == g->n_local) {
        g->bar_n = 0;
        __atomic_store_n(&g->bar_gen, gen + 1, __ATOMIC_RELEASE);   // every rank's writes before it are seen
    }
    pthread_mutex_unlock(&g->mu);
    while (__atomic_load_n(&g->bar_gen, __ATOMIC_ACQUIRE) == gen) {
        if (g->abort_flag) return stopped_error(c);
        usleep(50);
    }
    return DIT_OK;
}

// After this rank planned its arena for a sample: wait until every rank has (arenas may have moved), then
// take the peers' buffers. Peer-to-peer needs the all-gather mode and all of its GPUs in this process.
int dit_par_prepare(dit_cuda *c) {
    dit_par_rank *pr = c->pr;
    dit_par *g = pr->group;
    const char *ev = getenv("DIT_PAR_TEST_STALL_STEP");
    int r = -1, k = -1;
    pr->stall_step = ev && sscanf(ev, "%d:%d", &r, &k) == 2 && r == pr->rank ? k : -1;
    if (!g->p2p) return DIT_OK;   // the same on every rank (the group's)
    TRY(local_barrier(c));
    for (int q = 0; q < pr->S; q++) {
        const dit_cuda *peer = g->ctx[pr->local - pr->s + q];   // one process: local index = rank
        pr->p2p_dst[0][q] = peer->sp[1];
        pr->p2p_dst[1][q] = peer->sp[2];
        pr->p2p_flag[q] = peer->pr->p2p_sync;
    }
    return DIT_OK;
}

// All-gather mode (FastSeq-style): this rank's k|v rows first, their all-gather on the main stream while
// the q GEMM runs on the side stream (only inside the captured graph; eager runs stay in order), then this
// rank's queries attend to every key, read in place from the gathered pieces. Sends 2/3 of qkv.
static int gather_kv_attention(dit_cuda *c, const dit_cuda_lin *qkv, int B, int layer, cudaStream_t st) {
    const dit_par_rank *pr = c->pr;
    const int S = pr->S, Tl = c->Tl, D = c->D;
    const int64_t R = (int64_t)B * Tl;
    const dit_cuda_lin wq = lin_rows(qkv, 0, D), wkv = lin_rows(qkv, D, 2 * D);
    const int parity = layer & 1;   // peer-to-peer: the block's buffer (see above)
    const int p2p = pr->group->p2p;
    void *kvg = p2p ? c->sp[1 + parity] : c->sp[1];   // (S, B, Tl, 2D)
    // (R, 2D); peer-to-peer: written in place as this rank's piece of the gathered buffer
    void *kv = p2p ? (char *)kvg + (size_t)pr->s * R * 2 * D * 2 : c->sp[0];
    OP(c, "kv", dit_op_linear(c, &wkv, c->xin, R, kv, c->ct, EPI_BIAS, st));
    cudaStream_t qs;
    TRY(dit_side_fork(c, st, &qs));
    int rc = DIT_OK;
    if (p2p) {
        rc = p2p_all_gather_kv(c, kv, R, parity, st);
        if (rc == DIT_OK) rc = p2p_wait(c, st);
    } else {
        dit_prof_begin(c, "nccl_all_gather_kv");
        rc = all_gather(c, kv, kvg, (size_t)R * 2 * D * 2, ncclChar, pr->seq_comm, st, "all-gather of k, v");
        dit_prof_end(c);
    }
    if (rc == DIT_OK) {
        dit_prof_begin(c, "q");
        rc = dit_op_linear(c, &wq, c->xin, R, c->qkv, c->ct, EPI_BIAS, qs);   // (R, D)
        dit_prof_end(c);
    }
    if (qs != st) {   // joined also after a failure: a capture must not end with the side stream open
        CUDA_CHECK(cudaEventRecord(c->join, qs));
        CUDA_CHECK(cudaStreamWaitEvent(st, c->join, 0));
    }
    TRY(rc);
    // key n of sequence b: piece n / Tl (rank), row b*Tl + n % Tl of that piece
    const dit_att_layout a = { B, c->T, c->H, Tl, S, D, (int64_t)Tl * D, 2 * D, (int64_t)Tl * 2 * D, R * 2 * D, D };
    OP(c, "attention", dit_op_attention_ex(c->qkv, kvg, c->att, c->ct, &a, c->hd, st));
    return DIT_OK;
}

int dit_par_attention(dit_cuda *c, const dit_cuda_lin *qkv, int B, int layer, cudaStream_t st) {
    const dit_par_rank *pr = c->pr;
    if (pr->seq_mode != DIT_SEQ_ULYSSES) return gather_kv_attention(c, qkv, B, layer, st);
    const int S = pr->S, Tl = c->Tl, T = c->T, es = 2;
    const int64_t R = (int64_t)B * Tl;
    void *a = c->sp[0], *b = c->sp[1], *x = c->sp[2];
    OP(c, "qkv", dit_op_linear(c, qkv, c->xin, R, c->qkv, c->ct, EPI_BIAS, st));
    const int Hl = c->H / S;
    const int64_t W = (int64_t)Hl * c->hd * es;   // bytes of one head group of one row
    // qkv (R, 3, S, W) -> a (S, R, 3, W): peer q gets q, k, v of its heads
    OP(c, "sp_pack_qkv", dit_op_swap12(c->qkv, a, 1, R * 3, S, W, st));
    OP(c, "nccl_all_to_all_qkv", all_to_all(c, a, b, (size_t)R * 3 * W, st));
    // b (S, B, Tl, 3W) -> x (B, S, Tl, 3W) = (B, T, 3 Hl hd); one row (B = 1, CFG parallel): as it is
    if (B > 1) OP(c, "sp_unpack_qkv", dit_op_swap12(b, x, 1, S, B, (int64_t)Tl * 3 * W, st));
    else x = b;
    void *o = B > 1 ? a : c->sp[2];
    OP(c, "attention", dit_op_attention(x, o, c->ct, B, T, Hl, c->hd, st));
    // o (B, S, Tl, W) -> b (S, B, Tl, W): peer q gets its tokens of these heads
    if (B > 1) OP(c, "sp_pack_att", dit_op_swap12(o, b, 1, B, S, (int64_t)Tl * W, st));
    void *send = B > 1 ? b : o, *recv = B > 1 ? c->sp[2] : a;
    OP(c, "nccl_all_to_all_att", all_to_all(c, send, recv, (size_t)R * W, st));
    // recv (S, R, W) -> att (R, S, W) = (R, D): heads back in order
    OP(c, "sp_unpack_att", dit_op_swap12(recv, c->att, 1, S, R, W, st));
    return DIT_OK;
}

int dit_par_gather_output(dit_cuda *c, int B, cudaStream_t st) {
    const dit_par_rank *pr = c->pr;
    const size_t n = (size_t)B * c->Tl * c->pp_oc;
    if (pr->cf * pr->S == 1) return DIT_OK;   // data parallel alone: fout_loc is fout (arena_plan)
    float *dst = pr->S == 1 ? c->fout : c->fgath;   // (cf, B, T, .) is already the sampler's layout
    OP(c, "nccl_all_gather_output",
       all_gather(c, c->fout_loc, dst, n, ncclFloat, pr->img_comm, st, "all-gather of the output"));
    // (cf, S, B, Tl, .) -> (cf, B, S, Tl, .) = rows [cond; uncond] x all tokens
    if (pr->S > 1) OP(c, "gather_unpack", dit_op_swap12(c->fgath, c->fout, pr->cf, pr->S, B, (int64_t)c->Tl * c->pp_oc * 4, st));
    return DIT_OK;
}

// ---------------------------------------------------------------- decode on every GPU of the process
// The VAE runs per image; with the images of a batch split over the GPUs (each context uploads the VAE on
// its first decode) a data-parallel run's decode no longer waits on GPU 0 alone. After a fault, GPU 0 only.
typedef struct {
    dit_cuda *c;
    dit_model *m;
    const float *lat;
    float *img;
    int n, rc;
    char err[600];
} decode_job;

static void *decode_main(void *arg) {
    decode_job *j = (decode_job *)arg;
    j->rc = cudaSetDevice(j->c->device) == cudaSuccess
                ? dit_vae_decode_cuda(j->c, j->m, j->lat, j->n, j->img)
                : dit_set_error(DIT_ERR_DEVICE, "cuda: decode: cannot select GPU %d", j->c->device);
    if (j->rc) snprintf(j->err, sizeof j->err, "%s", dit_last_error());
    return NULL;
}

int dit_par_decode(dit_cuda *c, dit_model *m, const float *latents, int n, float *images) {
    dit_par *g = c->group;
    const int G = !g || g->abort_flag ? 1 : g->n_local < n ? g->n_local : n;
    if (G <= 1) return dit_vae_decode_cuda(c, m, latents, n, images);
    const size_t nz = dit_latent_floats(m), nimg = dit_image_floats(m);
    decode_job jobs[PAR_MAX];
    pthread_t th[PAR_MAX];
    int started[PAR_MAX] = { 0 };
    for (int i = 0, o = 0; i < G; i++) {
        const int k = n / G + (i < n % G);
        decode_job *j = &jobs[i];
        memset(j, 0, sizeof(*j));
        j->c = g->ctx[i]; j->m = m; j->lat = latents + (size_t)o * nz; j->img = images + (size_t)o * nimg; j->n = k;
        o += k;
        started[i] = pthread_create(&th[i], NULL, decode_main, j) == 0;
        if (!started[i]) decode_main(j);   // no thread: in this one
    }
    for (int i = 0; i < G; i++)
        if (started[i]) pthread_join(th[i], NULL);
    for (int i = 0; i < G; i++)
        if (jobs[i].rc) return dit_set_error(jobs[i].rc, "%s", jobs[i].err);
    CUDA_CHECK(cudaSetDevice(c->device));   // this thread's device as before
    return DIT_OK;
}

int dit_par_gather_latents(dit_cuda *c, int N, int n, float *out) {
    const dit_par_rank *pr = c->pr;
    const size_t per = (size_t)c->C * c->L * c->L;
    cudaStream_t st = c->stream;
    const float *src = c->lat;
    if (pr->dd > 1) {   // every data slice's latents, from the first rank of each image group
        TRY(all_gather(c, c->lat, c->latg, N * per, ncclFloat, pr->world_comm, st, "all-gather of the latents"));
        src = c->latg;
    }
    const int G = pr->cf * pr->S;
    for (int d = 0; out && d < pr->dd; d++) {
        const int k = n - d * N < N ? n - d * N : N;
        if (k <= 0) break;
        const float *from = src + (size_t)d * G * N * per;   // d = 0 only when dd = 1
        CUDA_CHECK(cudaMemcpyAsync(out + (size_t)d * N * per, from, k * per * 4, cudaMemcpyDeviceToHost, st));
    }
    return drain(c, st);
}

// ---------------------------------------------------------------- the plan
typedef struct {
    int world, dd, cf, S, seq_mode;
} par_plan;

static int largest_divisor_le(int n, int k) {
    for (int d = k < n ? k : n; d > 1; d--)
        if (n % d == 0) return d;
    return 1;
}

static int seq_ok(const dit_model *m, int S, int seq_mode) {
    const int g = m->cfg.input_size / m->cfg.patch, T = g * g;
    if (S <= 1) return 1;
    if (T % S) return 0;
    return seq_mode != DIT_SEQ_ULYSSES || m->cfg.heads % S == 0;
}

// Will the all-gather go by peer-to-peer stores? One process only, not DIT_PAR_P2P=0, 16-byte pieces for its
// uint4 stores (R x 2D ct elements: D % 4 == 0), and peer access between GPUs 0..W-1 (checked where they are
// visible; plans made without GPUs, or DIT_PAR_P2P=1, assume it: setup then checks each pair for real)
static int p2p_expected(const dit_model *m, int W, int multi) {
    const char *ev = getenv("DIT_PAR_P2P");
    if (multi || (ev && ev[0] == '0') || m->cfg.hidden % 4) return 0;
    int n = 0;
    if ((ev && ev[0] == '1') || cudaGetDeviceCount(&n) != cudaSuccess || n < W) {
        cudaGetLastError();
        return 1;
    }
    for (int a = 0; a < W; a++)
        for (int b = 0; b < W; b++) {
            int can = 1;
            if (a != b && (cudaDeviceCanAccessPeer(&can, a, b) != cudaSuccess || !can)) {
                cudaGetLastError();
                return 0;
            }
        }
    return 1;
}

static int make_plan(const dit_model *m, const dit_par_params *pp, int W, int multi, par_plan *pl, char *why,
                     size_t wl) {
    const int g = m->cfg.input_size / m->cfg.patch, T = g * g, H = m->cfg.heads;
    const int p2p = p2p_expected(m, W, multi);
    const int N = pp->n_images > 0 ? pp->n_images : 1, st = pp->strategy;
    const int rows = pp->no_cfg ? 1 : 2;   // network rows per image
    int dd = 1, cf = 1, S = 1;
    if (st == DIT_PAR_AUTO) {
        // data first (no traffic), then CFG (one exchange per step), then tokens while each GPU keeps
        // PAR_MIN_ROWS rows (below that the GEMMs do not get faster and the exchanges cost more)
        const char *ev = getenv("DIT_PAR_MIN_ROWS");
        const int min_rows = ev && atoi(ev) > 0 ? atoi(ev) : p2p ? PAR_MIN_ROWS_P2P : PAR_MIN_ROWS;
        dd = largest_divisor_le(W, N);
        const int rest = W / dd;
        cf = rows == 2 && rest % 2 == 0 ? 2 : 1;
        S = rest / cf;
        const int Nd = (N + dd - 1) / dd;
        while (S > 1 && (!seq_ok(m, S, pp->seq_mode) || (!multi && rows * Nd / cf * (T / S) < min_rows))) {
            S = largest_divisor_le(S, S - 1);
        }
        if (multi && S * cf * dd != W) dd = W / (cf * S);   // every process works: extra data slices (padded)
    } else {
        cf = st & DIT_PAR_CFG ? 2 : 1;
        if (cf == 2 && rows == 1)
            return dit_set_error(DIT_ERR_INPUT, "parallel: cfg splits the CFG batch, and without CFG there is none");
        if (W % cf) return dit_set_error(DIT_ERR_INPUT, "parallel: cfg needs an even GPU count (got %d)", W);
        const int rest = W / cf;
        if ((st & DIT_PAR_DATA) && (st & DIT_PAR_SEQ)) dd = largest_divisor_le(rest, N), S = rest / dd;
        else if (st & DIT_PAR_DATA) dd = rest;
        else if (st & DIT_PAR_SEQ) S = rest;
        else if (rest > 1)
            return dit_set_error(DIT_ERR_INPUT, "parallel: cfg alone uses 2 GPUs, not %d (add +seq or +data)", W);
    }
    int mode = pp->seq_mode;
    // measured (bench/RESULTS.md): over 2 GPUs one all-gather per block beats two all-to-alls (plus their
    // permutes); over 4 through NCCL the all-gather moves 3/4 of all k and v to every GPU and Ulysses wins,
    // but by peer-to-peer stores (one process; the all-gather only) it wins again (512 px: 3.01 vs 3.77)
    if (S > 1 && mode == DIT_SEQ_AUTO)
        mode = (p2p && S <= DIT_P2P_MAX) || S <= 2 || H % S ? DIT_SEQ_ALLGATHER : DIT_SEQ_ULYSSES;
    if (S > 1 && T % S)
        return dit_set_error(DIT_ERR_INPUT, "parallel: %d tokens do not split over %d GPUs (use a GPU count that "
                             "divides them, or --parallel data/cfg)", T, S);
    if (S > 1 && mode == DIT_SEQ_ULYSSES && H % S)
        return dit_set_error(DIT_ERR_INPUT, "parallel: Ulysses needs the %d heads to split over %d GPUs (use "
                             "--seq-mode allgather)", H, S);
    pl->world = dd * cf * S; pl->dd = dd; pl->cf = cf; pl->S = S; pl->seq_mode = S > 1 ? mode : DIT_SEQ_AUTO;
    const int Nd = (N + dd - 1) / dd;
    snprintf(why, wl, "%d GPU%s = data %d x cfg %d x seq %d%s: %d image%s of %d tokens, %d token rows per GPU%s",
             pl->world, pl->world > 1 ? "s" : "", dd, cf, S,
             S > 1 ? (mode == DIT_SEQ_ULYSSES ? " (all-to-all over heads)" : " (all-gather of k, v)") : "", N,
             N > 1 ? "s" : "", T, rows * Nd / cf * (T / S),
             pl->world < W ? " (fewer GPUs than given: a finer split would leave too few rows per GPU)" : "");
    return DIT_OK;
}

int dit_par_plan(const dit_model *m, const dit_par_params *pp, int gpus, int out[4], char *why, size_t why_len) {
    par_plan pl;
    const int multi = pp->world > 1;
    TRY(make_plan(m, pp, multi ? pp->world : gpus, multi, &pl, why, why_len));
    out[0] = pl.dd; out[1] = pl.cf; out[2] = pl.S; out[3] = pl.seq_mode;
    return DIT_OK;
}

// ---------------------------------------------------------------- the NCCL unique id, multi-process
// rank 0 shares *id (made by the caller), the others receive it; t_end = start + timeout
static int id_from_file(const dit_par_params *pp, ncclUniqueId *id, double t_end, double timeout) {
    const char *path = pp->id_file;
    if (pp->rank == 0) {   // written whole or not at all: a peer never reads half an id
        dit_atomic_file a;
        TRY(dit_atomic_open(&a, path));
        fwrite(id, sizeof(*id), 1, a.f);   // commit checks the stream for errors
        return dit_atomic_commit(&a);
    }
    const time_t started = time(NULL);
    while (now_s() < t_end) {   // a file older than this process by more than a minute is a stale one
        struct stat sb;
        if (stat(path, &sb) == 0 && sb.st_size == (off_t)sizeof(*id) && sb.st_mtime + 60 >= started) {
            FILE *f = fopen(path, "rb");
            const int ok = f && fread(id, sizeof(*id), 1, f) == 1;
            if (f) fclose(f);
            if (ok) return DIT_OK;
        }
        usleep(20000);
    }
    return dit_set_error(DIT_ERR_DEVICE, "%s: no NCCL id from rank 0 within %.0f s (is rank 0 running?)", path,
                         timeout);
}

static int id_over_tcp(const dit_par_params *pp, ncclUniqueId *id, double t_end, double timeout) {
    char host[256];
    snprintf(host, sizeof(host), "%s", pp->master);
    char *colon = strrchr(host, ':');
    if (!colon) return dit_set_error(DIT_ERR_INPUT, "parallel: master '%s' is not host:port", pp->master);
    *colon = 0;
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = pp->rank == 0 ? AF_INET6 : AF_UNSPEC;   // rank 0: one dual-stack socket (IPv4 and 6)
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = pp->rank == 0 ? AI_PASSIVE : 0;
    int gai = getaddrinfo(pp->rank == 0 ? NULL : host, colon + 1, &hints, &ai);
    if (gai != 0 && pp->rank == 0) {   // no IPv6 here
        hints.ai_family = AF_INET;
        gai = getaddrinfo(NULL, colon + 1, &hints, &ai);
    }
    if (gai != 0 || !ai) return dit_set_error(DIT_ERR_INPUT, "parallel: cannot resolve %s", pp->master);
    const struct timeval tv = { 1, 0 };   // every socket call wakes up each second to look at the clock
    int rc = DIT_OK;
    if (pp->rank == 0) {   // serve the id to world - 1 peers
        const int fd = socket(ai->ai_family, SOCK_STREAM, 0), one = 1, zero = 0;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
        if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) {
            rc = dit_set_error(DIT_ERR_IO, "parallel: cannot listen on port %s: %s", colon + 1, strerror(errno));
        } else {
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
            for (int served = 0; served < pp->world - 1 && rc == DIT_OK;) {
                const int p = accept(fd, NULL, NULL);
                if (p >= 0) {
                    setsockopt(p, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
                    served += send(p, id, sizeof(*id), MSG_NOSIGNAL) == (ssize_t)sizeof(*id);
                    close(p);
                } else if (now_s() > t_end) {
                    rc = dit_set_error(DIT_ERR_DEVICE, "parallel: only %d of %d ranks connected to port %s within "
                                       "%.0f s", served + 1, pp->world, colon + 1, timeout);
                }
            }
        }
        if (fd >= 0) close(fd);
    } else {   // connect until rank 0 listens
        rc = DIT_ERR_DEVICE;
        while (rc != DIT_OK && now_s() < t_end) {
            for (struct addrinfo *a = ai; a && rc != DIT_OK; a = a->ai_next) {   // IPv4 and IPv6 answers
                const int fd = socket(a->ai_family, SOCK_STREAM, 0);
                if (fd < 0) continue;
                setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));   // also bounds connect() (Linux)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
                if (connect(fd, a->ai_addr, a->ai_addrlen) == 0 &&
                    recv(fd, id, sizeof(*id), MSG_WAITALL) == (ssize_t)sizeof(*id))
                    rc = DIT_OK;
                close(fd);
            }
            if (rc != DIT_OK) usleep(100000);
        }
        if (rc != DIT_OK)
            rc = dit_set_error(DIT_ERR_DEVICE, "parallel: no NCCL id from rank 0 at %s within %.0f s", pp->master,
                               timeout);
    }
    freeaddrinfo(ai);
    return rc;
}

int dit_par_params_from_env(dit_par_params *pp) {
    const char *pairs[][3] = { { "DIT_RANK", "DIT_WORLD_SIZE", "DIT_LOCAL_RANK" },
                               { "RANK", "WORLD_SIZE", "LOCAL_RANK" },
                               { "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK" } };
    for (int i = 0; i < 3; i++) {
        const char *r = getenv(pairs[i][0]), *w = getenv(pairs[i][1]), *l = getenv(pairs[i][2]);
        if (!r || !w || atoi(w) <= 1) continue;
        pp->rank = atoi(r);
        pp->world = atoi(w);
        const int vis = dit_cuda_available();
        pp->device = vis > 0 ? (l ? atoi(l) : pp->rank) % vis : 0;   // one visible GPU each: device 0
        pp->id_file = getenv("DIT_NCCL_ID_FILE");
        pp->master = getenv("DIT_MASTER");
        static char master[300];
        if (!pp->id_file && !pp->master && getenv("MASTER_ADDR") && getenv("MASTER_PORT")) {
            snprintf(master, sizeof(master), "%s:%d", getenv("MASTER_ADDR"), atoi(getenv("MASTER_PORT")) + 1);
            pp->master = master;
        }
        return 1;
    }
    return 0;
}

// ---------------------------------------------------------------- setup, one thread per GPU
typedef struct {
    dit_par *g;
    int i;                       // local index
    const dit_model *m;
    const dit_par_params *pp;
    const par_plan *pl;
    ncclUniqueId id;
    // sampling
    const dit_sample_params *p;
    const dit_schedule *s;
    float *out;
} rank_job;

static void rank_finish(rank_job *j, int rc) {
    j->g->active[j->i] = 0;
    if (rc != DIT_OK) par_fail(j->g, rc, dit_last_error(), strstr(dit_last_error(), "stopped: another") != NULL);
}

// a ready communicator into its slot in pr, where abort_all finds it; after an abort it is this rank's to abort
static int publish(dit_cuda *c, ncclComm_t *slot, ncclComm_t comm) {
    dit_par *g = c->pr->group;
    pthread_mutex_lock(&g->mu);
    const int aborted = g->abort_flag;
    if (!aborted) *slot = comm;
    pthread_mutex_unlock(&g->mu);
    if (!aborted) return DIT_OK;
    ncclCommAbort(comm);
    return stopped_error(c);
}

// child k (0: img, 1: seq) of the world communicator. NCCL writes the child when its background job ends,
// which after a fault can be after this returns: into pr->split_out, which group_free cleans up
static int split(dit_cuda *c, int color, int key, int k, ncclComm_t *out) {
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;   // blocking: the step's collectives are captured in a graph
    cfg.blocking = 1;
    dit_par_rank *pr = c->pr;
    ncclResult_t r;
    // the parent is non-blocking: the split completes in the background, and the parent may be used
    // again only once it reports ncclSuccess (then the child, blocking, is ready too)
    NCCL_CALL(c, r, ncclCommSplit(pr->world_comm, color, key, &pr->split_out[k], &cfg));
    TRY(settle(c, pr->world_comm, r, "ncclCommSplit"));
    ncclComm_t child = pr->split_out[k];
    pr->split_out[k] = NULL;
    if (!child) return dit_set_error(DIT_ERR_DEVICE, "nccl: rank %d: ncclCommSplit gave no communicator", pr->rank);
    const int rc = settle(c, child, ncclSuccess, "ncclCommSplit (new communicator)");
    const int rp = publish(c, out, child);   // also after an error: abort_all must find it
    return rc != DIT_OK ? rc : rp;
}

// one tiny exchange of every kind now, while all ranks are known to be alive: NCCL connects peers on
// first use, and a connection to a dead peer would block the host inside the first step
static int warm_up(dit_cuda *c) {
    const dit_par_rank *pr = c->pr;
    float *buf = NULL;
    const size_t n = 64 * (size_t)pr->world;
    CUDA_CHECK(cudaMalloc((void **)&buf, 3 * n * sizeof(float)));
    CUDA_CHECK(cudaMemset(buf, 0, 3 * n * sizeof(float)));
    cudaStream_t st = c->stream;
    int rc = all_gather(c, buf, buf + n, 64, ncclFloat, pr->world_comm, st, "warm-up");
    if (rc == DIT_OK && pr->img_comm)
        rc = all_gather(c, buf, buf + n, 64, ncclFloat, pr->img_comm, st, "warm-up all-gather");
    if (rc == DIT_OK && pr->seq_comm) rc = all_to_all(c, buf + n, buf + 2 * n, 64 * sizeof(float), st);
    if (rc == DIT_OK) rc = drain(c, st);
    cudaFree(buf);
    return rc;
}

// peer access to the other GPUs of this rank's sequence group (one process: device = rank), and the flags
// they signal into; p2p_ok stays 0 where a pair has no peer access (NCCL then)
static int p2p_setup(dit_cuda *c) {
    dit_par_rank *pr = c->pr;
    for (int q = 0; q < pr->S; q++) {
        const int dev = pr->rank - pr->s + q;
        int can = 0;
        if (q == pr->s) continue;
        CUDA_CHECK(cudaDeviceCanAccessPeer(&can, c->device, dev));
        if (!can) return DIT_OK;
        const cudaError_t e = cudaDeviceEnablePeerAccess(dev, 0);
        if (e != cudaSuccess) cudaGetLastError();   // clears it
        if (e != cudaSuccess && e != cudaErrorPeerAccessAlreadyEnabled) return DIT_OK;   // NCCL then
    }
    CUDA_CHECK(cudaMalloc((void **)&pr->p2p_sync, (DIT_P2P_MAX + 4) * sizeof(unsigned)));
    CUDA_CHECK(cudaMemset(pr->p2p_sync, 0, (DIT_P2P_MAX + 4) * sizeof(unsigned)));
    CUDA_CHECK(cudaDeviceSynchronize());   // zeroed before any peer can signal
    pr->p2p_ok = 1;
    return DIT_OK;
}

static int rank_setup(rank_job *j) {
    dit_par *g = j->g;
    const par_plan *pl = j->pl;
    const int multi = j->pp->world > 1;
    const int device = multi ? j->pp->device : j->i, rank = multi ? j->pp->rank : j->i;
    // NCCL's init (0.5-0.6 s for 2 GPUs of one process, H200) works in the background (non-blocking) while this
    // thread uploads the weights (~0.25 s); it needs only the device's context. Until published below the
    // communicator is this thread's alone: abort_all cannot see it, so a failure here aborts it
    if (g->abort_flag) return dit_set_error(DIT_ERR_DEVICE, "nccl: rank %d stopped: another rank failed", rank);
    CUDA_CHECK(cudaSetDevice(device));   // the device is current on this thread from here
    CUDA_CHECK(cudaFree(0));             // its context
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;      // init can wait for a peer that never comes: poll it
    ncclComm_t comm = NULL;
    const ncclResult_t r = ncclCommInitRankConfig(&comm, pl->world, j->id, rank, &cfg);
    dit_par_rank *pr = NULL;
    int rc = dit_cuda_ctx_create(j->m, device, &g->ctx[j->i]);
    if (rc == DIT_OK && !(pr = (dit_par_rank *)calloc(1, sizeof(dit_par_rank))))
        rc = dit_set_error(DIT_ERR_NOMEM, "out of host memory");
    if (rc != DIT_OK) {
        if (comm) ncclCommAbort(comm);
        return rc;
    }
    dit_cuda *c = g->ctx[j->i];
    c->pr = pr;
    pr->group = g; pr->local = j->i; pr->rank = rank; pr->world = pl->world; pr->stall_step = -1;
    pr->dd = pl->dd; pr->cf = pl->cf; pr->S = pl->S; pr->seq_mode = pl->seq_mode;
    pr->s = rank % pl->S; pr->cfi = rank / pl->S % pl->cf; pr->d = rank / (pl->S * pl->cf);
    c->Tl = c->T / pl->S;
    c->t0 = pr->s * c->Tl;

    g->beat[j->i] = now_s();
    g->active[j->i] = 1;   // from here on the watchdog times us out
    if (comm) TRY(publish(c, &pr->world_comm, comm));   // before the wait: a stuck init must be abortable
    TRY(settle(c, comm, r, "ncclCommInitRank"));
    const int G = pl->cf * pl->S;
    if (G > 1) TRY(split(c, pr->d, pr->cfi * pl->S + pr->s, 0, &pr->img_comm));
    if (pl->S > 1) TRY(split(c, pr->d * pl->cf + pr->cfi, pr->s, 1, &pr->seq_comm));
    TRY(warm_up(c));
    if (!multi && pl->S > 1 && pl->S <= DIT_P2P_MAX) TRY(p2p_setup(c));
    g->active[j->i] = 0;
    return DIT_OK;
}

static void *setup_main(void *arg) {
    rank_job *j = (rank_job *)arg;
    rank_finish(j, rank_setup(j));
    return NULL;
}

// tests: DIT_PAR_TEST_STALL_STEP=r:k (read per sample in dit_par_prepare) makes rank r stop before step k
// (its peers are then inside a step: their peer-to-peer waits spin on the GPU until the watchdog's abort)
int dit_par_test_stall(dit_cuda *c) {
    while (!c->pr->group->abort_flag) usleep(1000);
    return stopped_error(c);
}

static void *sample_main(void *arg) {
    rank_job *j = (rank_job *)arg;
    dit_cuda *c = j->g->ctx[j->i];
    dit_sample_params p = *j->p;
    if (j->i > 0) p.progress = NULL;   // one progress bar per process
    const char *stall = getenv("DIT_PAR_TEST_STALL");   // tests: this rank never starts, its peers must time out
    if (stall && *stall && atoi(stall) == c->pr->rank) {
        rank_finish(j, dit_par_test_stall(c));
        return NULL;
    }
    j->g->beat[j->i] = now_s();
    j->g->active[j->i] = 1;   // the first step's NCCL calls may block on a dead peer
    rank_finish(j, dit_cuda_sample_ctx(c, &p, j->s, j->i == 0 ? j->out : NULL));   // it sets this thread's device
    return NULL;
}

// run fn on every local rank in its own thread; the first real error becomes this thread's error
static int run_ranks(dit_par *g, rank_job *jobs, void *(*fn)(void *)) {
    pthread_t th[PAR_MAX];
    int started[PAR_MAX] = { 0 };
    for (int i = 0; i < g->n_local; i++) {
        started[i] = pthread_create(&th[i], NULL, fn, &jobs[i]) == 0;
        if (!started[i]) par_fail(g, DIT_ERR_NOMEM, "parallel: cannot start a thread", 0);
    }
    for (int i = 0; i < g->n_local; i++)
        if (started[i]) pthread_join(th[i], NULL);
    if (g->err_code) return dit_set_error(g->err_code, "%s", g->err);
    return DIT_OK;
}

// Teardown order matters: a captured NCCL call pins its communicator (NCCL's teardown of it waits until
// every graph holding it is gone), and NCCL may have registered the arenas. So: the streams drain (after a
// fault the aborts have flagged every kernel), the graphs go, every communicator of the process is aborted
// (aborts already running now finish), and only then is any GPU memory freed.
static void group_free(dit_par *g) {
    if (g->watchdog_on) {
        g->stop = 1;
        pthread_join(g->watchdog, NULL);
    }
    // a fault the watchdog had no tick left to act on (raised by a rank just before the stop): the
    // streams below only drain once NCCL's kernels are released; every rank thread has returned
    if (g->abort_flag) abort_all(g, 1, 1);
    for (int i = 0; i < g->n_local; i++) {
        dit_cuda *c = g->ctx[i];
        if (!c) continue;
        cudaSetDevice(c->device);
        cudaStreamSynchronize(c->stream);
        if (c->graph) cudaGraphExecDestroy(c->graph);
        c->graph = NULL;
    }
    // clean: all in this thread, children first (after a fault: none left); several processes abort
    const dit_par_rank *pr0 = g->ctx[0] ? g->ctx[0]->pr : NULL;
    if (pr0 && g->n_local == pr0->world && !g->abort_flag) close_all(g);
    else abort_all(g, 0, 1);
    for (int i = 0; i < g->n_aborters; i++) pthread_join(g->aborter[i], NULL);
    for (int i = 1; i < g->n_local; i++) dit_cuda_ctx_destroy(g->ctx[i]);
    if (g->abort_word) cudaFreeHost((void *)g->abort_word);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

void dit_par_destroy(dit_cuda *c) {
    dit_par *g = c->group;
    c->group = NULL;
    if (g) group_free(g);   // ctx[0] is c itself: its teardown goes on after this
}

void dit_par_rank_free(dit_cuda *c) {
    if (!c->pr) return;
    // not ncclCommDestroy: its finalize waits for the peers, which one thread tearing down several cannot give.
    // Communicators left here: a lone context (setup failed before the group), or split children that a
    // fault cut short (NCCL wrote them when the world communicator's abort ended the split)
    ncclComm_t left[5] = { c->pr->split_out[0], c->pr->split_out[1], c->pr->seq_comm, c->pr->img_comm,
                           c->pr->world_comm };   // children first
    for (int k = 0; k < 5; k++)
        if (left[k]) ncclCommAbort(left[k]);
    if (c->pr->p2p_sync) cudaFree(c->pr->p2p_sync);   // after every stream drained (group_free)
    free(c->pr);
    c->pr = NULL;
}

int dit_cuda_init_parallel(dit_model *m, const dit_par_params *pp, char *plan, size_t plan_len) {
    if (!m || !pp) return dit_set_error(DIT_ERR_INPUT, "parallel: NULL argument");
    if (m->cuda) return dit_set_error(DIT_ERR_INPUT, "parallel: the model is already on a GPU");
    setenv("NCCL_NVLS_ENABLE", "0", 0);   // NVLink multicast off (it can take shared GPUs down)
    const int vis = dit_cuda_available(), multi = pp->world > 1;
    int W = multi ? pp->world : pp->gpus;
    if (vis <= 0) return dit_set_error(DIT_ERR_DEVICE, "parallel: no GPU visible");
    if (!multi && (W < 1 || W > vis))
        return dit_set_error(DIT_ERR_DEVICE, "parallel: %d GPUs asked for, %d visible", W, vis);
    if (W > PAR_MAX) return dit_set_error(DIT_ERR_INPUT, "parallel: at most %d GPUs per process", PAR_MAX);
    if (multi && (pp->rank < 0 || pp->rank >= W || pp->device < 0 || pp->device >= vis))
        return dit_set_error(DIT_ERR_DEVICE, "parallel: rank %d of %d wants GPU %d, %d visible", pp->rank, W,
                             pp->device, vis);
    if (multi && !pp->id_file && !pp->master)
        return dit_set_error(DIT_ERR_INPUT, "parallel: rank %d of %d: no way to share the NCCL id (set "
                             "DIT_NCCL_ID_FILE or DIT_MASTER=host:port)", pp->rank, W);
    par_plan pl;
    char why[400];
    TRY(make_plan(m, pp, W, multi, &pl, why, sizeof(why)));
    if (plan) snprintf(plan, plan_len, "%s", why);

    dit_par *g = (dit_par *)calloc(1, sizeof(dit_par));
    if (!g) return dit_set_error(DIT_ERR_NOMEM, "out of host memory");
    pthread_mutex_init(&g->mu, NULL);
    g->n_local = multi ? 1 : pl.world;
    g->timeout = pp->timeout_s > 0 ? pp->timeout_s : 60.0;
    rank_job jobs[PAR_MAX];
    memset(jobs, 0, sizeof(jobs));
    ncclUniqueId id;
    const double t_end = now_s() + g->timeout;
    int rc = DIT_OK;
    if (!multi || pp->rank == 0) rc = nccl_ok(ncclGetUniqueId(&id), "ncclGetUniqueId");
    if (rc == DIT_OK && multi)
        rc = pp->id_file ? id_from_file(pp, &id, t_end, g->timeout) : id_over_tcp(pp, &id, t_end, g->timeout);
    void *aw = NULL;   // the abort flag where every GPU's kernels can read it
    if (rc == DIT_OK && cudaHostAlloc(&aw, 2 * sizeof(int), cudaHostAllocMapped | cudaHostAllocPortable) != cudaSuccess)
        rc = dit_set_error(DIT_ERR_DEVICE, "parallel: cannot allocate mapped host memory");
    if (aw) ((volatile int *)aw)[0] = ((volatile int *)aw)[1] = 0;
    g->abort_word = (volatile int *)aw;
    if (rc == DIT_OK) {
        g->watchdog_on = pthread_create(&g->watchdog, NULL, watchdog_main, g) == 0;
        if (!g->watchdog_on) rc = dit_set_error(DIT_ERR_NOMEM, "parallel: cannot start the watchdog thread");
    }
    if (rc == DIT_OK) {
        for (int i = 0; i < g->n_local; i++) {
            jobs[i].g = g; jobs[i].i = i; jobs[i].m = m; jobs[i].pp = pp; jobs[i].pl = &pl; jobs[i].id = id;
        }
        rc = run_ranks(g, jobs, setup_main);
    }
    if (multi && pp->id_file && pp->rank == 0) unlink(pp->id_file);   // every rank has read it by now
    if (rc != DIT_OK) {
        dit_cuda *c0 = g->ctx[0];
        group_free(g);
        dit_cuda_ctx_destroy(c0);
        return rc;
    }
    // the peer-to-peer all-gather where the plan has one, it is expected, and every rank set up peer access
    g->p2p = pl.S > 1 && pl.seq_mode == DIT_SEQ_ALLGATHER && p2p_expected(m, W, multi);
    for (int i = 0; i < g->n_local; i++) g->p2p = g->p2p && g->ctx[i]->pr->p2p_ok;
    if (plan && pl.S > 1 && pl.seq_mode == DIT_SEQ_ALLGATHER) {
        const size_t n = strlen(plan);
        snprintf(plan + n, plan_len - n, "; k, v %s", g->p2p ? "by peer-to-peer stores" : "through NCCL");
    }
    m->cuda = g->ctx[0];
    m->cuda->group = g;
    return DIT_OK;
}

// after a failed sample: let every GPU's queued step replays finish (the aborts make their exchanges
// return at once), so none still writes into a peer's arena when this returns (a decode borrows it)
static void drain_after_fault(dit_par *g, int device) {
    const double t_end = now_s() + 2 * g->timeout + 10;
    for (int i = 0; i < g->n_local; i++) {
        if (!g->ctx[i] || cudaSetDevice(g->ctx[i]->device) != cudaSuccess) continue;
        while (cudaStreamQuery(g->ctx[i]->stream) == cudaErrorNotReady && now_s() < t_end) usleep(1000);
    }
    cudaGetLastError();
    cudaSetDevice(device);
}

int dit_par_sample(dit_cuda *c, const dit_sample_params *p, const dit_schedule *s, float *out) {
    dit_par *g = c->group;
    if (g->abort_flag)
        return dit_set_error(DIT_ERR_DEVICE, "parallel: the GPUs were stopped by an earlier error (%s)", g->err);
    rank_job jobs[PAR_MAX];
    memset(jobs, 0, sizeof(jobs));
    for (int i = 0; i < g->n_local; i++) {
        jobs[i].g = g; jobs[i].i = i; jobs[i].p = p; jobs[i].s = s; jobs[i].out = out;
    }
    const int rc = run_ranks(g, jobs, sample_main);
    if (rc != DIT_OK) drain_after_fault(g, c->device);
    return rc;
}
