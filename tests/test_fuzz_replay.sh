#!/bin/sh
# Replays every committed fuzzing input (tests/corpus/<parser>/: seeds and regress-* crashes that were
# fixed) through the harnesses, built with the plain C compiler: a fixed bug that comes back fails here.
cd "$(dirname "$0")/.." || exit 2
out=$(sh tests/fuzz/run.sh 0 2>&1); rc=$?
echo "$out" | grep -E "^fuzz [a-z]+: replayed" | while read -r _ name rest; do
    case "$rest" in *" 0 crashed"*) echo "ok - replay ${name%:} corpus: $rest" ;; *) echo "not ok - replay ${name%:} corpus: $rest" ;; esac
done
[ $rc -eq 0 ] || { echo "$out" | grep -E "CRASH|error" | head -5; echo "not ok - tests/fuzz/run.sh 0 exited $rc"; exit 1; }
