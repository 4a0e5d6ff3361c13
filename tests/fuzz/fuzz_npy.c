/* fuzz_npy.c - libFuzzer harness for the .npy reader (dit_npy_read, dit_npy_read_f64).

   Per input: both readers; on failure the message is one line naming the file, code 1-3, and
   *data is NULL; on success the shape's product equals the element count implied by the file
   (every element is read back), and the two readers agree. Peak heap <= 4 x input + 1 MiB
   (raw bytes + converted copy: f4 read as f64 is 3 x the data). */
#include "dit.h"
#include "fuzz_common.h"
#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size);
    int nd = -1, nd2 = -1;
    int64_t shape[8], shape2[8];
    float *f = (float *)1;
    double *d = (double *)1;
    fuzz_heap_begin();
    int rc = dit_npy_read(path, &nd, shape, &f);
    fuzz_heap_end(size, 4, 1 << 20);
    if (rc != DIT_OK) {
        fuzz_check_error(path, DIT_ERR_IO, DIT_ERR_NOMEM);
        FUZZ_ASSERT(f == NULL);
    }
    fuzz_heap_begin();
    int rc2 = dit_npy_read_f64(path, &nd2, shape2, &d);
    fuzz_heap_end(size, 4, 1 << 20);
    if (rc2 != DIT_OK) {
        fuzz_check_error(path, DIT_ERR_IO, DIT_ERR_NOMEM);
        FUZZ_ASSERT(d == NULL);
    }
    FUZZ_ASSERT(rc == rc2);
    if (rc == DIT_OK) {
        FUZZ_ASSERT(nd >= 0 && nd <= 8 && nd == nd2 && memcmp(shape, shape2, (size_t)nd * sizeof *shape) == 0);
        uint64_t count = 1;
        for (int i = 0; i < nd; i++) { FUZZ_ASSERT(shape[i] >= 0); count *= (uint64_t)shape[i]; }
        FUZZ_ASSERT(count * 4 <= size);   /* at least 4 bytes of file per element */
        for (uint64_t i = 0; i < count; i++) {
            float a = f[i], b = (float)d[i];
            FUZZ_ASSERT((isnan(a) && isnan(b)) || memcmp(&a, &b, 4) == 0);
        }
    }
    free(f), free(d);
    return 0;
}
