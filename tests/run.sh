#!/bin/sh
# Runs every test program (bin/tests/test_*) and script (tests/test_*.sh) from the repo root.
# Each prints TAP-style lines ("ok - ...", "not ok - ..."); a program that exits non-zero without
# a "not ok" line counts as one failure. Ends with the line "N passed, M failed, K skipped".
cd "$(dirname "$0")/.." || exit 2
pass=0 fail=0 skip=0 failed_tests=""
log=$(mktemp)
for t in bin/tests/test_* tests/test_*.sh; do
    [ -e "$t" ] || continue
    case "$t" in *.sh) cmd="sh $t" ;; *) [ -x "$t" ] || continue; cmd="$t" ;; esac
    echo "# $t"
    start=$(date +%s)
    $cmd >"$log" 2>&1
    rc=$?
    cat "$log"
    p=$(grep -c '^ok - ' "$log"); s=$(grep -c '^ok - .*# SKIP' "$log"); f=$(grep -c '^not ok - ' "$log")
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then echo "not ok - $t exited with status $rc"; f=1; fi
    pass=$((pass + p - s)); skip=$((skip + s)); fail=$((fail + f))
    [ "$f" -gt 0 ] && failed_tests="$failed_tests $t"
    echo "# $t: $((p - s)) passed, $f failed, $s skipped ($(( $(date +%s) - start )) s)"
done
rm -f "$log"
[ -n "$failed_tests" ] && echo "# failing:$failed_tests"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
