#!/bin/bash
# A guest that writes into its free memory while it migrates: each page it
# writes there for the first time lands at the destination in memory never
# touched, and the destination's kernel then clears a whole transparent
# huge page (2 MiB) for it. The destination says how much (REGIONS_ACK),
# the source counts it per round (landing_bytes) and in the expected
# downtime, so that the pause is not 512x longer than the estimate said.
#  1. sim hot-zero=1 (writes anywhere, 90% of the guest free): rounds show
#     landing_bytes, whole huge pages, and the estimate covers them at the
#     first round's rate; the migration completes verified.
#  2. hot-zero=0 (writes only where the guest has data): no round counts
#     any, and the source's free memory stays unpopulated (the audit reads
#     only the pages round 1 sent).
#  3. A --prealloc destination has nothing to clear: no landing_bytes.
. "$(dirname "$0")/lib.sh"
grep -q '\[never\]' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null &&
	skip "transparent huge pages are off on this host: a first touch clears one page"
[ -r /sys/kernel/mm/transparent_hugepage/enabled ] ||
	skip "no /sys/kernel/mm/transparent_hugepage here"
HUGE=$(cat /sys/kernel/mm/transparent_hugepage/hpage_pmd_size)
# 1 GiB, 95% of it free in 2 MiB runs (about 490 areas): a writer at 5000
# pages/s keeps finding free areas through the first rounds (at 200000 it
# had filled them all before round 1). Each area's first touch is counted
# once (test_landed checks that, and the area edges).
GUEST=sim:size=1G,dirty-rate=5000,hot=2%,zero=95%,zero-run=512,seed=3
GUEST_BYTES=$((1 << 30))

# run NAME SPEC [recv options...]: one migration; JSON in $T/NAME.{send,recv}.out.
run() {
	local n=$1 spec=$2
	shift 2
	start_recv "$n.recv" --backend sim "$@"
	"$RMIG" send --json --backend "$spec" 127.0.0.1:$PORT >"$T/$n.send.out" \
		2>"$T/$n.send.err" || fail "$n: rmig send exited $?"
	wait_pid "$RECV_PID" 60
	expect_eq "$n: receiver exit code" "$RC" 0
	expect_eq "$n: result" "$(summary "$T/$n.send.out" result)" migrated
	expect_eq "$n: verified" "$(summary "$T/$n.send.out" verified)" true
	expect_eq "$n: audit" "$(summary "$T/$n.send.out" audit)" passed
}
rounds() { jq -c 'select(.event=="round")' "$T/$1.send.out"; }

# 1. Writing into free memory: counted, in whole huge pages, in the estimate.
run fills "$GUEST"
landing=$(rounds fills | jq -s 'map(.landing_bytes) | add')
[ "$landing" -gt 0 ] || fail "fills: no round counted memory the destination must back"
rounds fills | jq -e --argjson h "$HUGE" 'select(.landing_bytes % $h != 0)' >/dev/null &&
	fail "fills: landing_bytes not whole huge pages of $HUGE bytes: $(rounds fills | jq -c .landing_bytes | tr '\n' ' ')"
# Never more areas than dirty pages, nor more than the guest.
rounds fills | jq -e --argjson g "$GUEST_BYTES" --argjson h "$HUGE" \
	'select(.landing_bytes > $g or .landing_bytes / $h > .dirty_pages)' >/dev/null &&
	fail "fills: a round counts more areas than it has dirty pages: $(rounds fills | jq -c '[.dirty_pages, .landing_bytes]' | tr '\n' ' ')"
# The estimate counts each round's landing at round 1's rate (at least).
bad=$(rounds fills | jq -s '.[0].bandwidth as $bw | map(select(.landing_bytes / $bw * 1000 > .expected_downtime_ms + 0.1)) | length')
expect_eq "fills: rounds whose estimate leaves out the landing" "$bad" 0

# 2. Writing only where there is data: nothing to count; free memory stays
# free at the source too.
run stays "$GUEST,hot-zero=0"
expect_eq "stays: landing_bytes over all rounds" \
	"$(rounds stays | jq -s 'map(.landing_bytes) | add')" 0
read_pages=$(jq -r 'select(.event=="audit") | .detail' "$T/stays.send.out" |
	sed -n 's/.*(\([0-9]*\) pages read).*/\1/p')
round1=$(rounds stays | jq -s '.[0].pages + .[0].zero_pages')
[ -n "$read_pages" ] || fail "stays: no audit figure: $(jq -c 'select(.event=="audit")' "$T/stays.send.out")"
expect_eq "stays: pages the audit read (the populated ones) against round 1's" "$read_pages" "$round1"
fills_read=$(jq -r 'select(.event=="audit") | .detail' "$T/fills.send.out" |
	sed -n 's/.*(\([0-9]*\) pages read).*/\1/p')
[ "${fills_read:-0}" -gt "$read_pages" ] ||
	fail "fills: the writer populated no free memory (audit read $fills_read pages, stays $read_pages): case 1 tested nothing"

# 3. A preallocated destination backed everything before round 1.
run prealloc "$GUEST" --prealloc
expect_eq "prealloc: landing_bytes over all rounds" \
	"$(rounds prealloc | jq -s 'map(.landing_bytes) | add')" 0

pass "landing counted ($((landing >> 20)) MiB over the rounds), none with hot-zero=0 or --prealloc"
