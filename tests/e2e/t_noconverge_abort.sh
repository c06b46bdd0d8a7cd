#!/bin/bash
# With --on-no-converge=abort a guest that cannot converge is not moved: the
# sender exits 3 (rolled back), its guest is still running, and the receiver
# discards what it got.
. "$(dirname "$0")/lib.sh"
start_recv recv --backend sim
rc=0
"$RMIG" send --json --max-bandwidth 40M --downtime-ms 50 --max-rounds 3 --on-no-converge abort \
	--backend sim:size=64M,dirty-rate=40000,hot=50%,zero=0%,seed=11 \
	127.0.0.1:$PORT >"$T/send.out" 2>"$T/send.err" || rc=$?
expect_eq "send exit code" "$rc" 3
expect_eq "result" "$(summary "$T/send.out" result)" rolled_back
expect_eq "source guest_running" "$(summary "$T/send.out" guest_running)" true
d=$(summary "$T/send.out" guest_progress_delta)
[ "$d" -gt 0 ] || fail "source guest made no progress after rollback ($d)"
grep -qi "converge" "$T/send.err" || fail "error does not say it did not converge"
wait_pid "$RECV_PID" 15
[ "$RC" -ne 0 ] || fail "receiver exited 0 after an aborted migration"
[ "$(summary "$T/recv.out" result)" != migrated ] || fail "receiver claims migrated"
[ "$(summary "$T/recv.out" guest_running)" != true ] || fail "receiver runs the guest"
pass
