/* fuzz_common.h - helpers shared by the libFuzzer harnesses in tests/fuzz/.

   fuzz_file(data, size): the parsers under test take a path, so each input is written to one
   memfd per process and handed over as /proc/self/fd/N (no disk traffic, no cleanup).

   Heap accounting: ASan malloc/free hooks count the bytes live during one parse
   (fuzz_heap_begin / fuzz_heap_end). fuzz_heap_check(size, factor, slack) aborts when the peak
   exceeds factor * size + slack: "allocation bounded by the file size plus a margin" becomes a
   crash that libFuzzer records. The largest peak/size seen is printed at exit (FUZZ_HEAP_STATS). */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dit.h"

/* from the sanitizer runtime (clang's and gcc's); declared here because gcc ships no header for them */
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));
size_t __sanitizer_get_allocated_size(const volatile void *p);

static int fuzz__fd = -1;
static char fuzz__path[64];

/* Writes data to the per-process memfd and returns its path. */
static const char *fuzz_file(const uint8_t *data, size_t size) {
    if (fuzz__fd < 0) {
        fuzz__fd = memfd_create("fuzz-input", 0);
        if (fuzz__fd < 0) { perror("memfd_create"); abort(); }
        snprintf(fuzz__path, sizeof fuzz__path, "/proc/self/fd/%d", fuzz__fd);
    }
    if (ftruncate(fuzz__fd, 0) != 0) { perror("ftruncate"); abort(); }
    size_t done = 0;
    while (done < size) {
        ssize_t w = pwrite(fuzz__fd, data + done, size - done, (off_t)done);
        if (w <= 0) { perror("pwrite"); abort(); }
        done += (size_t)w;
    }
    return fuzz__path;
}

/* ---- heap accounting (single-threaded parsers) ---- */
static volatile int fuzz__tracking;
static size_t fuzz__live, fuzz__peak;
static double fuzz__worst_ratio;
static size_t fuzz__worst_peak, fuzz__worst_size;

static void fuzz__malloc_hook(const volatile void *p, size_t n) {
    (void)p;
    if (!fuzz__tracking) return;
    fuzz__live += n;
    if (fuzz__live > fuzz__peak) fuzz__peak = fuzz__live;
}
static void fuzz__free_hook(const volatile void *p) {
    if (!fuzz__tracking || !p) return;
    size_t n = __sanitizer_get_allocated_size(p);
    fuzz__live = n > fuzz__live ? 0 : fuzz__live - n;
}
static void fuzz__report(void) {
    if (getenv("FUZZ_HEAP_STATS"))
        fprintf(stderr, "fuzz-heap: worst peak %zu bytes for a %zu-byte input (%.2f x (input + 4 KiB))\n",
                fuzz__worst_peak, fuzz__worst_size, fuzz__worst_ratio);
}

static void fuzz_heap_begin(void) {
    static int installed;
    if (!installed) {
        installed = 1;
        __sanitizer_install_malloc_and_free_hooks(fuzz__malloc_hook, fuzz__free_hook);
        atexit(fuzz__report);
    }
    fuzz__live = fuzz__peak = 0;
    fuzz__tracking = 1;
}

/* Ends the accounting; aborts when the peak exceeds factor * size + slack. */
static void fuzz_heap_end(size_t size, double factor, size_t slack) {
    fuzz__tracking = 0;
    double ratio = (double)fuzz__peak / (double)(size + 4096);   /* 4 KiB: fixed costs (paths, structs) */
    if (ratio > fuzz__worst_ratio) fuzz__worst_ratio = ratio, fuzz__worst_peak = fuzz__peak, fuzz__worst_size = size;
    if ((double)fuzz__peak > factor * (double)size + (double)slack) {
        fprintf(stderr, "fuzz-heap: %zu bytes live at peak for a %zu-byte input (limit %.0f x input + %zu)\n",
                fuzz__peak, size, factor, slack);
        abort();
    }
}

/* Fails loudly when an invariant the API promises does not hold. */
#define FUZZ_ASSERT(cond)                                                                  \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "fuzz: invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* The error contract of every parser: a code in [lo, hi], one printable line naming the input. */
static void fuzz_check_error(const char *path, int lo, int hi) {
    const char *e = dit_last_error();
    int code = dit_last_error_code();
    FUZZ_ASSERT(code >= lo && code <= hi);
    int clean = 1;   /* one printable line: no newline, no terminal escape from the file's bytes */
    for (const char *q = e; *q; q++) clean &= (unsigned char)*q >= 0x20 && *q != 0x7f;
    if (!clean || !strstr(e, path)) fprintf(stderr, "fuzz: message: %s\n", e);
    FUZZ_ASSERT(strstr(e, path) != NULL);
    FUZZ_ASSERT(clean);
}

#endif
