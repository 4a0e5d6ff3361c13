// wgmma.cuh - Hopper warpgroup MMA (sm_90a) building blocks shared by conv.cu and attention.cu.
// Operands in shared memory use the 128-byte swizzle: rows of 128 bytes, 16-byte chunk c of row r stored at
// chunk c ^ (r % 8), 8-row atoms of 1024 bytes, tiles 1024-byte aligned. A descriptor names such a tile:
//   K-major (a row = 64 k-elements of one m/n):  SBO = 1024 (next 8 rows), LBO unused; a k16 step is +32 B.
//   MN-major (a row = 64 m/n-elements of one k, trans-b): SBO = 1024 (next 8 k), LBO = the byte distance to
//   the next 64 m/n elements; a k16 step is +2048 B.
// Register operands (A of the RS form) and accumulators follow mma.sync's m16n8k16 fragments per warp:
// warp w of the warpgroup holds rows 16 w .. 16 w + 15; accumulator 4 j + e is row lane / 4 (+ 8 for
// e >= 2), column 8 j + 2 (lane % 4) + e % 2.
// cp.async and st.shared writes are generic-proxy: fence.proxy.async (wg_proxy_fence) after they land and
// before the barrier that precedes the wgmma reading them. Everything here compiles to nothing without
// __CUDA_ARCH_FEAT_SM90_ALL; kernels using it guard their bodies with DIT_WGMMA (and trap otherwise), and
// the host launches them only where dit_wgmma_ok() (common.cuh): a build for another target still runs
// on a 9.0 GPU through its PTX, with those bodies empty.
#pragma once

#include "common.cuh"

// 16 bytes global -> shared (a shared-window address, as the swizzled layouts compute them); zeros when !ok
static __device__ __forceinline__ void cp_async16_s(uint32_t saddr, const void *g, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(saddr), "l"(g), "r"(ok ? 16 : 0));
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define DIT_WGMMA 1
static __device__ __forceinline__ uint64_t wg_desc(uint32_t saddr, uint32_t lbo) {
    return (uint64_t)((saddr & 0x3FFFF) >> 4) | (uint64_t)((lbo & 0x3FFFF) >> 4) << 16 | (uint64_t)(1024 >> 4) << 32 |
           (uint64_t)1 << 62;
}
static __device__ __forceinline__ void wg_proxy_fence() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
static __device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
static __device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> static __device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

// SS: d (64 x N) += A (64 x 16, K-major descriptor) B^T (N x 16, K-major descriptor)
template <typename T, int N> struct wgmma_ss;
// RS: d (64 x N) += A (64 x 16, registers) B (K-major, or MN-major when TB)
template <typename T, int N, int TB> struct wgmma_rs;
#define WG_D4 \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
#define WG_D32 \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define WG_D36 \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
    "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35])
#define WG_D64 \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
    "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
    "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
    "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
    "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
#define WG_SS128(ty) \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n" \
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." ty "." ty " {" \
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63" \
                 "}, %64, %65, p, 1, 1, 0, 0;\n}" \
                 : WG_D64 : "l"(a), "l"(b), "r"(1))
#define WG_SS8(ty) \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n" \
                 "wgmma.mma_async.sync.aligned.m64n8k16.f32." ty "." ty " {%0, %1, %2, %3}, %4, %5, p, 1, 1, 0, 0;\n}" \
                 : WG_D4 : "l"(a), "l"(b), "r"(1))
#define WG_RS64(ty, tb) \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n" \
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." ty "." ty " {" \
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31" \
                 "}, {%32, %33, %34, %35}, %36, p, 1, 1, " #tb ";\n}" \
                 : WG_D32 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1))
#define WG_RS72(ty, tb) \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %41, 0;\n" \
                 "wgmma.mma_async.sync.aligned.m64n72k16.f32." ty "." ty " {" \
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
                 "%32, %33, %34, %35" \
                 "}, {%36, %37, %38, %39}, %40, p, 1, 1, " #tb ";\n}" \
                 : WG_D36 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1))
#define WG_SPECS(T, ty)                                                                                      \
    template <> struct wgmma_ss<T, 128> {                                                                    \
        static __device__ __forceinline__ void run(float *d, uint64_t a, uint64_t b) { WG_SS128(ty); }      \
    };                                                                                                       \
    template <> struct wgmma_ss<T, 8> {                                                                      \
        static __device__ __forceinline__ void run(float *d, uint64_t a, uint64_t b) { WG_SS8(ty); }        \
    };                                                                                                       \
    template <> struct wgmma_rs<T, 64, 0> {                                                                  \
        static __device__ __forceinline__ void run(float *d, const uint32_t *a, uint64_t b) { WG_RS64(ty, 0); } \
    };                                                                                                       \
    template <> struct wgmma_rs<T, 64, 1> {                                                                  \
        static __device__ __forceinline__ void run(float *d, const uint32_t *a, uint64_t b) { WG_RS64(ty, 1); } \
    };                                                                                                       \
    template <> struct wgmma_rs<T, 72, 1> {                                                                  \
        static __device__ __forceinline__ void run(float *d, const uint32_t *a, uint64_t b) { WG_RS72(ty, 1); } \
    };
WG_SPECS(__half, "f16")
WG_SPECS(__nv_bfloat16, "bf16")
#undef WG_SPECS
#undef WG_SS128
#undef WG_SS8
#undef WG_RS64
#undef WG_RS72
#undef WG_D4
#undef WG_D32
#undef WG_D36
#undef WG_D64
#endif
