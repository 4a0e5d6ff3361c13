/* tap.h - the TAP-style reporting shared by the C tests: "ok - what" / "not ok - what" lines that
   tests/run.sh counts, and a failure counter for the exit status. Include once, from a test's main file. */
#ifndef DIT_TESTS_TAP_H
#define DIT_TESTS_TAP_H
#include <stdarg.h>
#include <stdio.h>

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
#endif
