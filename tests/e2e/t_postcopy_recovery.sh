#!/bin/bash
# Post-copy recovery: the link breaks after the destination started the
# guest, while pages are still at the source. Nothing is lost: the
# destination's guest waits on the pages it touches, the source reconnects
# (through tests/tools/faultproxy, which resets every connection at a known
# frame and accepts again), the destination asks again for what its guest
# waits for and says what it still lacks (MISSING), the source sends that,
# and the migration ends as if nothing happened. Only past
# --failover-timeout-ms is the guest lost (exit 4, phase lost, both sides).
#  1. the CLI, sim guest, one cut on the first page answered on demand;
#  2. twice in a row: the second cut hits the recovery itself;
#  3. the uffd backend on both sides, one cut;
#  4. memory byte for byte after one and after two cuts (postcopy_check
#     through the proxy: the destination's memory equals the source's at the
#     pause plus the destination guest's own writes);
#  5. the source killed during post-copy: the destination waits
#     --failover-timeout-ms, then says the guest is lost (exit 4);
#  6. the destination killed: the source retries until its
#     --failover-timeout-ms, then says lost (exit 4) and stays paused;
#  7. --failover none: a cut loses the guest at once, as before;
#  8. the cut between GO and STARTED: a destination whose guest started
#     (its vCPUs asked for pages before STARTED went out) recovers, memory
#     byte for byte; one that never got GO refuses the recovery, the source
#     asks, is told it did not start, and rolls back (exit 3 both sides);
#  9. SIGINT on both sides during post-copy (ignored), then a cut: recovered.
. "$(dirname "$0")/lib.sh"
PROXY=$(dirname "$RMIG")/tests/faultproxy
CHECK=$(dirname "$RMIG")/tests/postcopy_check
[ -x "$PROXY" ] || fail "$PROXY is not built (make unit)"
[ -x "$CHECK" ] || fail "$CHECK is not built (make unit)"
GUEST=sim:size=256M,dirty-rate=20000,hot=5%,zero=50%,seed=7

# proxied NAME RECV_BACKEND GUEST PROXY_ARGS... -- SEND_ARGS...: a receiver,
# a faultproxy in front of it, and a sender through the proxy that holds
# HOLD ms (default 300) after STARTED, so that the destination's guest
# faults pages in. The sender runs in the background: SEND_PID.
proxied() {
	local name=$1 rbe=$2 guest=$3
	shift 3
	local pargs=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		pargs+=("$1")
		shift
	done
	shift
	start_recv "$name-recv" --backend "$rbe" ${RECV_ARGS:-}
	start_faultproxy "$name" "${pargs[@]}"
	: >"$T/$name-send.out"
	RMIG_TEST_HOLD=post-copy:${HOLD:-300} "$RMIG" send --json --postcopy --transport tcp \
		--backend "$guest" "$@" 127.0.0.1:"$PPORT" \
		>"$T/$name-send.out" 2>"$T/$name-send.err" &
	SEND_PID=$!
	PIDS="$PIDS $SEND_PID"
}

phases() {
	jq -r 'select(.event=="phase") | .phase' "$1" | tr '\n' ' '
}

# recovered NAME CUTS: both sides migrated after CUTS recoveries.
recovered() {
	local name=$1 cuts=$2
	wait_pid "$SEND_PID" 60
	grep -qE 'uffd: (the kernel lacks|the kernel has no userfaultfd|userfaultfd is not permitted)' \
		"$T/$name-send.err" && skip "$(grep -m1 'uffd: ' "$T/$name-send.err")"
	expect_eq "$name: send exit code" "$RC" 0
	wait_pid "$RECV_PID" 20
	expect_eq "$name: recv exit code" "$RC" 0
	expect_eq "$name: cuts made" "$(grep -c 'cut on' "$T/$name-proxy.err")" "$cuts"
	for side in send recv; do
		local out="$T/$name-$side.out"
		expect_eq "$name: $side result" "$(summary "$out" result)" migrated
		expect_eq "$name: $side postcopy" "$(summary "$out" postcopy)" true
		expect_eq "$name: $side recoveries" "$(summary "$out" recoveries)" "$cuts"
		[[ $(phases "$out") == *"post-copy recovering post-copy"*migrated* ]] ||
			fail "$name: $side phases: $(phases "$out")"
	done
	expect_eq "$name: destination guest_running" \
		"$(summary "$T/$name-recv.out" guest_running)" true
	[ "$(summary "$T/$name-recv.out" guest_progress_delta)" -gt 0 ] ||
		fail "$name: the destination's guest made no progress"
	[ "$(summary "$T/$name-send.out" postcopy_requested)" -gt 0 ] ||
		fail "$name: no page was fetched on demand"
}

# 1. One cut: the source's first answer to a page request never arrives.
proxied once sim "$GUEST" --cut-on PAGE_DATA --
recovered once 1
grep -q '"detail":"link lost (.*): recovering post-copy over tcp"' "$T/once-send.out" ||
	fail "the source did not say it recovers"
grep -q '"detail":"link lost (.*): [0-9]* pages still at the source; waiting' \
	"$T/once-recv.out" || fail "the destination did not say what it waits for"

# 2. Twice in a row: the page asked again on the new link is cut too.
proxied twice sim "$GUEST" --cut-on PAGE_DATA --cut-on PAGE_DATA --
recovered twice 2

# 3. uffd on both sides (the kernel tracks the source guest's writes).
proxied uffd uffd:size=64M uffd:size=64M,dirty-rate=20000,hot=25%,zero=0%,seed=5 \
	--cut-on PAGE_DATA --
recovered uffd 1

# 4. Memory, byte for byte, after one and after two cuts.
for cuts in 1 2; do
	args=()
	for _c in $(seq $cuts); do args+=(--cut-on PAGE_DATA); done
	"$CHECK" --via "$PROXY" "${args[@]}" >"$T/check$cuts.out" 2>"$T/check$cuts.err"
	rc=$?
	[ $rc = 77 ] && skip "$(cat "$T/check$cuts.out")"
	[ $rc = 0 ] || fail "memory check after $cuts cuts: $(cat "$T/check$cuts.out")"
done
check=$(sed -n 's/^PASS: //p' "$T/check2.out")

# 5. The source killed during post-copy: the destination waits for it
# --failover-timeout-ms, then the guest is lost.
RECV_ARGS="--link-timeout-ms 1000 --failover-timeout-ms 1500" HOLD=20000 \
	proxied srckill sim sim:size=64M,dirty-rate=20000,hot=5%,seed=3 -- --link-timeout-ms 1000
wait_phase "$T/srckill-send.out" post-copy "$SEND_PID"
sleep 0.5 # the destination's guest faults on a page and waits for it
t0=$(millis)
kill -9 "$SEND_PID"
wait_pid "$RECV_PID" 15
ms=$(($(millis) - t0))
expect_eq "recv exit code after the source was killed" "$RC" 4
expect_eq "recv result" "$(summary "$T/srckill-recv.out" result)" unknown
[[ $(phases "$T/srckill-recv.out") == *"post-copy recovering lost"* ]] ||
	fail "destination phases: $(phases "$T/srckill-recv.out")"
err=$(summary "$T/srckill-recv.out" error)
[[ $err == *"did not recover within 1500 ms"*"lost"* ]] || fail "recv error: $err"
expect_eq "destination guest_running" "$(summary "$T/srckill-recv.out" guest_running)" false
[ "$ms" -ge 1400 ] || fail "the destination gave up after $ms ms, before the failover timeout"
[ "$ms" -lt 5000 ] || fail "the destination took $ms ms to give up (link 1000 + failover 1500)"
ms_src=$ms

# 6. The destination killed: the source cannot recover and says lost.
HOLD=1500 proxied dstkill sim sim:size=64M,dirty-rate=20000,hot=5%,seed=3 -- \
	--link-timeout-ms 1000 --failover-timeout-ms 1500
wait_phase "$T/dstkill-send.out" post-copy "$SEND_PID"
kill -9 "$RECV_PID"
t0=$(millis)
wait_pid "$SEND_PID" 20
ms=$(($(millis) - t0))
expect_eq "send exit code after the destination was killed" "$RC" 4
expect_eq "send result" "$(summary "$T/dstkill-send.out" result)" unknown
[[ $(phases "$T/dstkill-send.out") == *"post-copy recovering lost"* ]] ||
	fail "source phases: $(phases "$T/dstkill-send.out")"
err=$(summary "$T/dstkill-send.out" error)
[[ $err == *"recovery over tcp failed within 1500 ms"*"lost"*"must not be resumed"* ]] ||
	fail "send error: $err"
expect_eq "source guest_running" "$(summary "$T/dstkill-send.out" guest_running)" false
ms_dst=$ms

# 7. --failover none: no recovery, lost at once on both sides.
RECV_ARGS="--failover none" proxied none sim "$GUEST" --cut-on PAGE_DATA -- --failover none
wait_pid "$SEND_PID" 30
expect_eq "--failover none: send exit code" "$RC" 4
wait_pid "$RECV_PID" 20
expect_eq "--failover none: recv exit code" "$RC" 4
for side in send recv; do
	[[ $(phases "$T/none-$side.out") == *"post-copy lost"* ]] ||
		fail "--failover none: $side phases: $(phases "$T/none-$side.out")"
done

# 8. GO sent, STARTED not received. Readers on the destination fault before
# STARTED goes out: the first PAGE_DATA is answered while the source waits
# for STARTED, and the cut lands there.
POSTCOPY_CHECK_READERS=4 "$CHECK" --via "$PROXY" --cut-on PAGE_DATA >"$T/checkgo.out" \
	2>"$T/checkgo.err" || fail "cut between GO and STARTED: $(cat "$T/checkgo.out")"
# GO never arrives: the destination did not start; the source resumes.
proxied nogo sim "$GUEST" --cut-on GO -- --link-timeout-ms 1000 --commit-timeout-ms 3000
wait_pid "$SEND_PID" 30
expect_eq "GO cut: send exit code" "$RC" 3
wait_pid "$RECV_PID" 20
expect_eq "GO cut: recv exit code" "$RC" 3
expect_eq "GO cut: source guest_running" "$(summary "$T/nogo-send.out" guest_running)" true
[[ $(phases "$T/nogo-send.out") == *"awaiting-started recovering asking rolled-back"* ]] ||
	fail "GO cut: source phases: $(phases "$T/nogo-send.out")"
err=$(summary "$T/nogo-send.out" error)
[[ $err == *"confirmed it did not start"* ]] || fail "GO cut: send error: $err"

# 9. A cancel during post-copy is ignored on both sides, also by a recovery.
HOLD=1500 proxied sigint sim "$GUEST" --cut-on PAGE_DATA --
wait_phase "$T/sigint-send.out" post-copy "$SEND_PID"
kill -INT "$SEND_PID" "$RECV_PID"
recovered sigint 1

pass "1 and 2 cuts recovered (sim, uffd); $check; lost after ${ms_src} ms without the source, the source gave up after ${ms_dst} ms"
