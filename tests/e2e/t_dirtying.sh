#!/bin/bash
# A guest that keeps writing migrates over several channels: the destination's
# memory matches the source's at the pause (verified), and the guest runs on
# at the destination from where it stopped.
. "$(dirname "$0")/lib.sh"
start_recv recv --backend sim --channels 4
"$RMIG" send --json --channels 4 --backend sim:size=256M,dirty-rate=20000,hot=10%,zero=50%,seed=7 \
	127.0.0.1:$PORT >"$T/send.out" 2>"$T/send.err" || fail "rmig send exited $?"
wait_pid "$RECV_PID" 20
expect_eq "recv exit code" "$RC" 0
for side in send recv; do
	expect_eq "$side result" "$(summary "$T/$side.out" result)" migrated
	expect_eq "$side verified" "$(summary "$T/$side.out" verified)" true
	expect_eq "$side channels" "$(summary "$T/$side.out" channels)" 4
done
expect_eq "destination guest_running" "$(summary "$T/recv.out" guest_running)" true
d=$(summary "$T/recv.out" guest_progress_delta)
[ "$d" -gt 0 ] || fail "destination guest made no progress after switch-over ($d)"
r=$(summary "$T/send.out" rounds)
[ "$r" -ge 2 ] || fail "a dirtying guest finished in $r round(s); expected re-sends"
pass "rounds=$r downtime=$(summary "$T/send.out" downtime_ms)ms"
