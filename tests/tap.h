/* tap.h - the TAP-style reporting shared by the C tests: "ok - what" / "not ok - what" lines that
   tests/run.sh counts, and a failure counter for the exit status. Include once, from a test's main file. */
#ifndef DIT_TESTS_TAP_H
#define DIT_TESTS_TAP_H
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include "dit.h"

#define FIX "tests/fixtures/"
static int failures;
static char moddir[256], tmpdir[256];   /* converted fixture models, scratch files */

static void ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ok(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf(cond ? "ok - " : "not ok - ");
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!cond) failures++;
    fflush(stdout);
}

static void skip(const char *what, const char *why) { printf("ok - %s # SKIP %s\n", what, why); }

/* a converted fixture model in moddir (static buffer: use before the next call) */
static const char *mpath(const char *name)
{
    static char p[300];
    snprintf(p, sizeof p, "%s/%s", moddir, name);
    return p;
}

/* tests/fixtures/NAME.npy as floats; NULL (with a "#" line saying why) if unreadable or, when n > 0,
   not n values. The caller frees. */
static float *fix(const char *name, size_t n)
{
    char p[512];
    int nd;
    int64_t shape[8];
    float *d = NULL;
    snprintf(p, sizeof p, FIX "%s.npy", name);
    if (dit_npy_read(p, &nd, shape, &d) != DIT_OK) {
        printf("# cannot read %s: %s\n", p, dit_last_error());
        return NULL;
    }
    size_t cnt = 1;
    for (int i = 0; i < nd; i++) cnt *= (size_t)shape[i];
    if (n && cnt != n) {
        printf("# %s has %zu values, expected %zu\n", p, cnt, n);
        free(d);
        return NULL;
    }
    return d;
}

/* end of a test program: remove the scratch directory, print the verdict, the exit status */
static int tap_finish(void)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (tmpdir[0] && system(cmd)) printf("# could not remove %s\n", tmpdir);
    printf("# %s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
#endif
