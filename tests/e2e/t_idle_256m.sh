#!/bin/bash
# An idle 256 MiB guest migrates in one round, verified on both sides.
. "$(dirname "$0")/lib.sh"
start_recv recv --backend sim
"$RMIG" send --json --backend sim:size=256M,dirty-rate=0,zero=30%,seed=3 127.0.0.1:$PORT \
	>"$T/send.out" 2>"$T/send.err" || fail "rmig send exited $?"
wait_pid "$RECV_PID" 20
expect_eq "recv exit code" "$RC" 0
for side in send recv; do
	expect_eq "$side result" "$(summary "$T/$side.out" result)" migrated
	expect_eq "$side verified" "$(summary "$T/$side.out" verified)" true
done
expect_eq "guest_bytes" "$(summary "$T/send.out" guest_bytes)" 268435456
# One pre-copy round, then the stop-and-copy finds nothing dirty.
expect_eq "pre-copy rounds" "$(grep -c '"event":"round"' "$T/send.out")" 1
expect_eq "rounds incl. stop-and-copy" "$(summary "$T/send.out" rounds)" 2
expect_eq "bytes sent" "$(summary "$T/send.out" bytes_sent)" "$(summary "$T/recv.out" bytes_sent)"
zero=$(summary "$T/send.out" zero_pages)
[ "$zero" -gt 0 ] || fail "no zero pages were skipped (zero_pages=$zero)"
pass
