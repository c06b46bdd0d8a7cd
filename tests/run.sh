#!/bin/bash
# Runs every test: the cmocka unit binaries, then each tests/e2e/t_*.sh.
# Prints one line per test and finally "N passed, N failed".
# A skipped test (exit 77) is reported as SKIP; with CI=true it counts as a
# failure, because a test that did not run proved nothing.
#   BUILD=build tests/run.sh [PATTERN]   (PATTERN filters test names)
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
export RMIG=$BUILD/rmig
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
pattern=${1:-}
passed=0 failed=0 skipped=0 failed_names=""

run_one() { # NAME CMD...
	local name=$1 rc=0 t0 out
	shift
	[ -n "$pattern" ] && [[ $name != *$pattern* ]] && return
	t0=$(date +%s%3N)
	out=$("$@" 2>&1) || rc=$?
	# cmocka exits 0 when tests were skipped: a skip is still not a pass. The
	# reason: the test's own "SKIP: reason" line, else cmocka's.
	[ $rc = 0 ] && grep -q 'SKIPPED TEST' <<<"$out" && rc=77 &&
		out="SKIP $name: $(grep -m1 -e '^SKIP: ' -e '^\[  SKIPPED \]' <<<"$out" | sed 's/^SKIP: //')"
	local ms=$(($(date +%s%3N) - t0))
	if [ $rc = 0 ]; then
		passed=$((passed + 1))
		echo "ok    $name ($ms ms)$(grep -m1 '^PASS .*: ' <<<"$out" | sed 's/^PASS [^:]*:/ -/')"
	elif [ $rc = 77 ]; then
		skipped=$((skipped + 1))
		echo "SKIP  $name: $(grep -m1 '^SKIP' <<<"$out" | sed 's/^SKIP [^:]*: //')"
		if [ "${CI:-}" = true ]; then
			failed=$((failed + 1))
			failed_names="$failed_names $name"
		fi
	else
		failed=$((failed + 1))
		failed_names="$failed_names $name"
		echo "FAIL  $name (exit $rc, $ms ms)"
		# The test's own verdict first: the dumps after it can be long.
		grep -m1 '^FAIL ' <<<"$out" | sed 's/^/      /'
		sed 's/^/      /' <<<"$out" | tail -n 40
	fi
}

for t in "$BUILD"/tests/test_*; do
	[ -x "$t" ] || continue
	run_one "unit/$(basename "$t")" "$t"
done
for t in tests/e2e/t_*.sh; do
	# 300 s each, unless the test says otherwise in a "# timeout: N" line
	# among its first 10 (t_rxe: a whole VM run under TCG).
	limit=$(sed -n '1,10s/^# timeout: \([0-9][0-9]*\)$/\1/p' "$t")
	run_one "e2e/$(basename "$t" .sh)" timeout -k 5 "${limit:-300}" bash "$t"
done

[ $skipped -gt 0 ] && echo "$skipped skipped$([ "${CI:-}" = true ] && echo ' (CI=true: counted as failed)')"
[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "$passed passed, $failed failed"
[ $failed = 0 ]
