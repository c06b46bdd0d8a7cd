#!/bin/bash
# Ctrl-C on the sender cancels: exit 3, guest running on the source, the
# receiver ends without running the guest.
. "$(dirname "$0")/lib.sh"
start_recv recv --backend sim
"$RMIG" send --json --max-bandwidth 20M \
	--backend sim:size=256M,dirty-rate=5000,hot=10%,zero=0%,seed=5 \
	127.0.0.1:$PORT >"$T/send.out" 2>"$T/send.err" &
SEND_PID=$!
PIDS="$PIDS $SEND_PID"
sleep 1.5
kill -INT "$SEND_PID"
wait_pid "$SEND_PID" 10
expect_eq "send exit code" "$RC" 3
expect_eq "result" "$(summary "$T/send.out" result)" rolled_back
expect_eq "source guest_running" "$(summary "$T/send.out" guest_running)" true
grep -qi "cancel" "$T/send.err" || fail "error does not say the migration was cancelled"
wait_pid "$RECV_PID" 15
[ "$RC" -ne 0 ] || fail "receiver exited 0 after a cancelled migration"
[ "$(summary "$T/recv.out" guest_running)" != true ] || fail "receiver runs the guest"
pass
