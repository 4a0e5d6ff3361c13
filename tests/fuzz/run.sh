#!/bin/sh
# tests/fuzz/run.sh [SECONDS] [HARNESS...] - builds the libFuzzer harnesses and runs each one.
#
#   SECONDS > 0   fuzz each harness that long (default 60), one after the other, under nice -n 10.
#   SECONDS = 0   replay only: every file of tests/corpus/<harness>/ (seeds and regress-*) runs once.
#   HARNESS       any of: gguf npy json pickle ckpt model (default: all whose sources exist).
#
# Build: clang -fsanitize=fuzzer,address,undefined into build/fuzz/ (objects of dit.c and convert/*.c
# compiled with -fsanitize=fuzzer-no-link). Working corpora grow in build/fuzz/corpus/<harness>/,
# seeded from tests/corpus/<harness>/ (committed) and the small files of tests/fixtures/.
# Crashes land in build/fuzz/crashes/<harness>/; keep each one as tests/corpus/<harness>/regress-<what>
# once it is understood. Exit status: 0 when no harness crashed, 1 otherwise, 2 when the build failed.
# Environment: FUZZ_JOBS (parallel harnesses, default 1), FUZZ_FLAGS (extra libFuzzer flags),
# FUZZ_KNOWN=1 (do not stop on the bugs already reported, kept as tests/corpus/*/regress-*).
cd "$(dirname "$0")/../.." || exit 2
secs=${1:-60}
[ $# -gt 0 ] && shift
CC_FUZZ=${CC_FUZZ:-clang}
B=build/fuzz
mkdir -p $B
if [ "$secs" != 0 ] && ! command -v "$CC_FUZZ" >/dev/null; then
    echo "fuzz: $CC_FUZZ not found (Debian: apt-get install clang)" >&2
    exit 2
fi
# UBSan reports are recoverable in the build and made fatal at run time (halt_on_error), so that
# FUZZ_KNOWN=1 can suppress the reported ones (tests/fuzz/known-bugs.supp).
SAN="-fsanitize=address,undefined"
UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${FUZZ_KNOWN:+:suppressions=$PWD/tests/fuzz/known-bugs.supp}"
export UBSAN_OPTIONS
CFLAGS_F="-g -O1 -std=gnu11 -D_GNU_SOURCE -I. -Iconvert -Itests/fuzz -I/usr/include/stb -Wno-unknown-pragmas $SAN"

# Replay (SECONDS = 0) builds with any C compiler, ASan + UBSan, no libFuzzer.
CC_R=${CC_REPLAY:-$(command -v clang || echo cc)}

# obj SRC: compiles SRC (no main) once into $B/obj (libFuzzer-instrumented) or, for a replay, into
# $B/robj-<compiler>; prints the object path; rebuilds when stale
obj() {
    if [ "$secs" = 0 ]; then d=$B/robj-$(basename "$CC_R") cc="$CC_R"; else d=$B/obj cc="$CC_FUZZ -fsanitize=fuzzer-no-link"; fi
    mkdir -p "$d"
    o=$d/$(echo "$1" | tr / _ | sed 's/\.c$/.o/')
    if [ ! -f "$o" ] || [ "$1" -nt "$o" ] || [ dit.h -nt "$o" ] || { [ -f convert/convert.h ] && [ convert/convert.h -nt "$o" ]; }; then
        # shellcheck disable=SC2086
        $cc $CFLAGS_F -c "$1" -o "$o" || return 1
    fi
    echo "$o"
}

# The converter's sources, minus the file holding main().
convert_objs() {
    for f in convert/*.c; do
        [ -f "$f" ] || continue
        grep -q '^int main' "$f" && continue
        obj "$f" || return 1
    done
}

# harness NAME: builds $B/fuzz_NAME; returns 1 (skip) when its sources are missing
build() {
    name=$1
    src=tests/fuzz/fuzz_$name.c
    [ -f "$src" ] || return 1
    case $name in
        json|pickle|ckpt) [ -n "$(ls convert/*.c 2>/dev/null)" ] || return 1
                          extra=$(convert_objs) || return 2 ;;
        model) grep -q 'dit_model_load' dit.c 2>/dev/null || [ -f dit_runtime.c ] || return 1; extra= ;;
        *) extra= ;;
    esac
    rt=$(obj dit.c) || return 2
    if [ "$name" = model ] && [ -f dit_runtime.c ]; then r2=$(obj dit_runtime.c) || return 2; rt="$rt $r2"; fi
    # shellcheck disable=SC2086
    if [ "$secs" = 0 ]; then
        $CC_R $CFLAGS_F "$src" tests/fuzz/replay.c $rt $extra -o "$B/replay_$name" -lz -lm || return 2
    else
        $CC_FUZZ $CFLAGS_F -fsanitize=fuzzer "$src" $rt $extra -o "$B/fuzz_$name" -lz -lm || return 2
    fi
}

# seed NAME: fills $B/corpus/NAME from the small fixtures of that kind
seed() {
    d=$B/corpus/$1
    mkdir -p "$d"
    case $1 in
        npy) pat='tests/fixtures/*.npy tests/fixtures/*/*.npy' ;;
        json) pat='tests/fixtures/*.json tests/fixtures/*/*.json' ;;
        ckpt) pat='tests/fixtures/*.pt tests/fixtures/*.safetensors tests/fixtures/*/*.safetensors' ;;
        gguf|model) pat='tests/fixtures/*.gguf tests/fixtures/*/*.gguf' ;;
        *) pat= ;;
    esac
    for f in $pat; do
        [ -f "$f" ] || continue
        [ "$(wc -c <"$f")" -le "${FUZZ_SEED_MAX:-65536}" ] && cp -p "$f" "$d/fixture-$(echo "$f" | tr / _)"
    done
}

maxlen() {
    case $1 in
        npy|json) echo 16384 ;;
        pickle) echo 32768 ;;
        ckpt|model) echo 65536 ;;
        *) echo 16384 ;;
    esac
}

run_one() {
    name=$1
    exe=$B/fuzz_$name
    log=$B/log/$name.log
    mkdir -p $B/log $B/crashes/$name
    dict=
    [ -f tests/fuzz/$name.dict ] && dict=-dict=tests/fuzz/$name.dict
    if [ "$secs" = 0 ]; then
        exe=$B/replay_$name
        n=0 bad=0
        : >"$log"
        for f in tests/corpus/$name/*; do
            [ -f "$f" ] || continue
            n=$((n + 1))
            if ! FUZZ_HEAP_STATS=1 timeout 10 $exe "$f" >"$log.one" 2>&1; then
                bad=$((bad + 1))
                msg=$(grep -a -m1 -E 'runtime error|invariant failed|ERROR: [A-Za-z]+Sanitizer|fuzz-heap: [0-9]' "$log.one" | cut -c1-160)
                echo "fuzz $name: CRASH on $f: ${msg:-timed out after 10 s}"
            fi
            cat "$log.one" >>"$log"
        done
        rm -f "$log.one"
        heap=$(grep -a 'fuzz-heap: worst' "$log" | sed 's/.*(\([0-9.]*\) x.*/\1/' | sort -g | tail -1)
        echo "fuzz $name: replayed $n inputs, $bad crashed (largest peak heap: ${heap:-?} x (input + 4 KiB))"
        [ "$bad" = 0 ]
        return
    fi
    seed "$name"
    # shellcheck disable=SC2086
    FUZZ_HEAP_STATS=1 nice -n 10 $exe -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -max_len="$(maxlen "$name")" -artifact_prefix=$B/crashes/$name/ $dict ${FUZZ_FLAGS:-} \
        $B/corpus/$name tests/corpus/$name >"$log" 2>&1
    rc=$?
    last=$(grep -a -E '^#[0-9]+' "$log" | tail -1)
    execs=$(grep -a -o 'number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    cov=$(echo "$last" | grep -a -o 'cov: [0-9]*' | grep -o '[0-9]*$')
    ft=$(echo "$last" | grep -a -o 'ft: [0-9]*' | grep -o '[0-9]*$')
    units=$(ls $B/corpus/$name | wc -l)
    heap=$(grep -a 'fuzz-heap: worst' "$log" | tail -1 | sed 's/fuzz-heap: //')
    echo "fuzz $name: ${secs}s, execs ${execs:-?}, cov ${cov:-?}, ft ${ft:-?}, corpus $units, ${heap:-heap stats n/a}"
    if [ $rc -ne 0 ]; then
        echo "fuzz $name: CRASH (status $rc), log $log, artifacts in $B/crashes/$name/:"
        grep -a -m3 -E 'ERROR|runtime error|invariant|fuzz-heap: [0-9]|Test unit written' "$log" | sed 's/^/    /'
        return 1
    fi
    return 0
}

all="gguf npy json pickle ckpt model"
want=${*:-$all}
status=0
built=""
for h in $want; do
    build "$h"
    case $? in
        0) built="$built $h" ;;
        1) echo "fuzz $h: skipped (sources not there yet)" ;;
        *) echo "fuzz $h: build failed" >&2; status=2 ;;
    esac
done
[ $status = 2 ] && exit 2
jobs=${FUZZ_JOBS:-1}
n=0
tmpd=$(mktemp -d)
for h in $built; do
    ( run_one "$h"; echo $? >"$tmpd/$h.rc" ) &
    n=$((n + 1))
    if [ "$n" -ge "$jobs" ]; then wait; n=0; fi
done
wait
for h in $built; do
    [ "$(cat "$tmpd/$h.rc" 2>/dev/null)" = 0 ] || status=1
done
rm -rf "$tmpd"
exit $status
