/* replay.c - runs a libFuzzer harness on the files named on the command line, without libFuzzer:
   `cc -fsanitize=address,undefined tests/fuzz/fuzz_X.c tests/fuzz/replay.c ...` gives a program
   that replays the regression corpus anywhere (tests/fuzz/run.sh 0 uses it; no clang needed).
   A crash aborts with the sanitizer's report; exit status 0 when every input ran. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) { perror(argv[i]); return 2; }
        size_t cap = 1 << 16, n = 0, k;
        uint8_t *d = malloc(cap);
        while (d && (k = fread(d + n, 1, cap - n, f)) > 0)
            if ((n += k) == cap) d = realloc(d, cap *= 2);
        fclose(f);
        if (!d) { fprintf(stderr, "replay: out of memory\n"); return 2; }
        uint8_t *exact = malloc(n ? n : 1);   /* exactly n bytes: an overread is an ASan error */
        for (size_t j = 0; j < n; j++) exact[j] = d[j];
        free(d);
        fprintf(stderr, "Running: %s\n", argv[i]);
        LLVMFuzzerTestOneInput(exact, n);
        free(exact);
    }
    return 0;
}
