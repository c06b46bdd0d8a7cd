#!/bin/bash
# The embedding example (examples/embed_counter.c: librmig with a backend of
# its own) migrates its dirtying 64 MiB guest between two processes: both
# sides report migrated and verified, and the destination's writer carries on
# from the source's count at the pause over memory that still sums to it.
. "$(dirname "$0")/lib.sh"
EXAMPLE=$(dirname "$RMIG")/examples/embed_counter
[ -x "$EXAMPLE" ] || fail "$EXAMPLE is not built (make unit builds it)"

# field SIDE KEY: KEY=value from the side's summary line
field() {
	awk -v key="$2" '$1 == "source" || $1 == "destination" {
		for (i = 2; i <= NF; i++)
			if (index($i, key "=") == 1)
				value = substr($i, length(key) + 2)
	} END { print value }' "$T/$1.out"
}

embed_counter_run "$EXAMPLE" 64
expect_eq "recv exit code" "$RC" 0
for side in send recv; do
	expect_eq "$side result" "$(field $side result)" migrated
	expect_eq "$side verified" "$(field $side verified)" 1
	expect_eq "$side check" "$(field $side check)" ok
done
expect_eq "bytes received" "$(field recv bytes)" "$(field send bytes)"
at_pause=$(field send writes_at_pause)
[ "${at_pause:-0}" -gt 0 ] || fail "the source guest wrote nothing before the pause ($at_pause)"
expect_eq "writes the destination started from" "$(field recv writes_at_pause)" "$at_pause"
expect_eq "source writes after the migration (it stays paused)" "$(field send writes)" "$at_pause"
now=$(field recv writes)
[ "${now:-0}" -gt "$at_pause" ] || fail "the destination's writer did not carry on ($at_pause -> $now)"
pass "64 MiB, $at_pause writes at the pause, $now at the destination 200 ms later"
