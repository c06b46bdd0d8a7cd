#!/bin/bash
# A guest dirtying faster than the (rate-limited) link cannot converge on its
# own; the default policy throttles it until it does.
. "$(dirname "$0")/lib.sh"
start_recv recv --backend sim
"$RMIG" send --json --max-bandwidth 40M --downtime-ms 100 --max-rounds 30 \
	--backend sim:size=64M,dirty-rate=40000,hot=50%,zero=0%,seed=11 \
	127.0.0.1:$PORT >"$T/send.out" 2>"$T/send.err" || fail "rmig send exited $?"
wait_pid "$RECV_PID" 30
expect_eq "recv exit code" "$RC" 0
expect_eq "result" "$(summary "$T/send.out" result)" migrated
expect_eq "verified" "$(summary "$T/recv.out" verified)" true
tp=$(summary "$T/send.out" throttle_pct)
[ "$tp" -gt 0 ] || fail "guest was never throttled (throttle_pct=$tp)"
grep -q '"event":"throttle"' "$T/send.out" || fail "no throttle event reported"
pass "throttle_pct=$tp rounds=$(summary "$T/send.out" rounds)"
