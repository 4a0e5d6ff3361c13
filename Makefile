# dit.c build. `make` builds the CPU programs everywhere and adds the CUDA backend when nvcc is
# found (CUDA_ARCH=sm_90a by default; never detected from a GPU: the build machine may have none).
#   make            programs in bin/          make test     tests (GPU parts skip without a GPU)
#   make sample     the bundled model         make bench    dit.c vs PyTorch timings (GPU; + multi-GPU scaling)
#   make CUDA=0     CPU only                  make SANITIZE=1 test   ASan + UBSan build
#   make quality    sample quality table      make fuzz     libFuzzer harnesses (FUZZ_SECONDS=60 each)
CC       ?= cc
OPT      ?= -O3 -march=x86-64-v3 -ffp-contract=fast
CFLAGS   += $(OPT) -std=c11 -Wall -Wextra -Wno-unused-parameter -fopenmp -D_GNU_SOURCE -I. -I/usr/include/stb
LDLIBS   += -lz -lm
NVCC     ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA_ARCH ?= sm_90a
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
NVCCFLAGS ?= -O3 -std=c++17 -arch=$(CUDA_ARCH) -lineinfo --use_fast_math -Xcompiler -fopenmp,-Wall -I.

ifeq ($(SANITIZE),1)
  OPT     = -O2 -g -fno-omit-frame-pointer
  CFLAGS += -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LDFLAGS += -fsanitize=address,undefined
  CUDA    = 0
endif

ifeq ($(CUDA),)
  CUDA := $(if $(NVCC),1,0)
endif
# Objects of each flavour live apart (a CPU-only dit.o must never reach a CUDA link); bin/ is shared,
# so a stamp per flavour relinks the programs when the flavour changes.
BUILD := $(if $(filter 1,$(SANITIZE)),build-san,$(if $(filter 1,$(CUDA)),build,build-cpu))
FLAVOR_STAMP = bin/.built-with-$(BUILD)
ifeq ($(CUDA),1)
  $(info ✓ CUDA backend: $(NVCC) -arch=$(CUDA_ARCH))
  CFLAGS  += -DDIT_CUDA
  CU_SRC   = $(wildcard ggml-cuda/*.cu)
  CU_OBJ   = $(patsubst ggml-cuda/%.cu,$(BUILD)/cuda/%.o,$(CU_SRC))
  LDLIBS  += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublasLt -lcublas -lnccl -lstdc++
else
  $(info ✗ nvcc not found or CUDA=0: CPU-only build)
endif

# The runtime is one translation unit (dit.c); RUNTIME_EXTRA holds files being merged into it.
RUNTIME_EXTRA = $(wildcard dit_runtime.c)
RT_OBJ   = $(BUILD)/dit.o $(patsubst %.c,$(BUILD)/%.o,$(RUNTIME_EXTRA)) $(CU_OBJ) $(FLAVOR_STAMP)
PROGRAMS = bin/dit-convert bin/dit-quantize bin/dit-sample bin/dit-info bin/dit-quality
TESTS    = $(patsubst tests/%.c,bin/tests/%,$(wildcard tests/test_*.c))
DEPS_OK  = $(BUILD)/.deps-ok

all: $(PROGRAMS)

# Debian packages: installed when root, else the exact apt-get line is printed.
$(DEPS_OK): tools/deps.sh
	@sh tools/deps.sh && mkdir -p $(BUILD) && touch $@

$(FLAVOR_STAMP):
	@mkdir -p bin && rm -f bin/.built-with-* && touch $@

$(BUILD)/%.o: %.c dit.h $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/cuda/%.o: ggml-cuda/%.cu $(wildcard ggml-cuda/*.cuh) ggml-cuda/dit-cuda.h dit.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -DDIT_CUDA -c $< -o $@

$(BUILD)/convert/classes.o: convert/imagenet_classes.txt
$(BUILD)/tools/dit-sample.o: tools/font.h
$(patsubst tests/%.c,$(BUILD)/tests/%.o,$(wildcard tests/test_*.c)): tests/tap.h
CONVERT_OBJ  = $(patsubst %.c,$(BUILD)/%.o,$(wildcard convert/*.c))
QUANTIZE_OBJ = $(patsubst %.c,$(BUILD)/%.o,$(wildcard quantize/*.c))

bin/dit-convert: $(CONVERT_OBJ) $(RT_OBJ)
	@mkdir -p bin
	$(CC) $(CFLAGS) $(LDFLAGS) $(filter %.o,$^) -o $@ $(LDLIBS)
bin/dit-quantize: $(QUANTIZE_OBJ) $(RT_OBJ)
	@mkdir -p bin
	$(CC) $(CFLAGS) $(LDFLAGS) $(filter %.o,$^) -o $@ $(LDLIBS)
bin/dit-sample: $(BUILD)/tools/dit-sample.o $(RT_OBJ)
	@mkdir -p bin
	$(CC) $(CFLAGS) $(LDFLAGS) $(filter %.o,$^) -o $@ $(LDLIBS)
bin/dit-info: $(BUILD)/tools/dit-info.o $(RT_OBJ)
	@mkdir -p bin
	$(CC) $(CFLAGS) $(LDFLAGS) $(filter %.o,$^) -o $@ $(LDLIBS)
bin/dit-quality: $(BUILD)/tools/dit-quality.o $(RT_OBJ)
	@mkdir -p bin
	$(CC) $(CFLAGS) $(LDFLAGS) $(filter %.o,$^) -o $@ $(LDLIBS)
bin/bench/%: $(BUILD)/bench/%.o $(RT_OBJ)
	@mkdir -p bin/bench
	$(CC) $(CFLAGS) $(LDFLAGS) $(filter %.o,$^) -o $@ $(LDLIBS)
bin/tests/%: LDFLAGS += -rdynamic   # names in test_cuda's backtrace on a fatal signal
bin/tests/%: $(BUILD)/tests/%.o $(RT_OBJ)
	@mkdir -p bin/tests
	$(CC) $(CFLAGS) $(LDFLAGS) $(filter %.o,$^) -o $@ $(LDLIBS)

test: $(PROGRAMS) $(TESTS)
	@DIT_SANITIZE=$(SANITIZE) sh tests/run.sh

sample: bin/dit-sample
	@sh tools/sample.sh

quality: bin/dit-sample
	@sh tools/quality.sh

# libFuzzer harnesses (clang): FUZZ_SECONDS per harness (0 = replay the committed corpora only)
fuzz:
	@sh tests/fuzz/run.sh $(or $(FUZZ_SECONDS),60)

bench: $(PROGRAMS) $(patsubst bench/%.c,bin/bench/%,$(wildcard bench/*.c)) bin/tests/test_cuda
	@sh bench/bench.sh
	@sh bench/scaling.sh

clean:
	rm -rf build build-cpu build-san bin

.PHONY: all test sample quality bench fuzz clean
.PRECIOUS: $(BUILD)/%.o $(BUILD)/tests/%.o $(BUILD)/bench/%.o $(BUILD)/tools/%.o
