#!/bin/bash
# kill -9 of the receiver in the middle of pre-copy: the sender notices within
# a few seconds, says which peer it lost, exits 3 and its guest keeps running.
. "$(dirname "$0")/lib.sh"
start_recv recv --backend sim
"$RMIG" send --json --max-bandwidth 20M --failover none \
	--backend sim:size=256M,dirty-rate=20000,hot=10%,zero=0%,seed=5 \
	127.0.0.1:$PORT >"$T/send.out" 2>"$T/send.err" &
SEND_PID=$!
PIDS="$PIDS $SEND_PID"
# Wait until data is flowing (first round event or ~1 s of transfer).
for i in $(seq 60); do
	grep -q '"event":"connected"' "$T/send.out" 2>/dev/null && break
	sleep 0.05
done
sleep 1
kill -0 "$SEND_PID" 2>/dev/null || fail "sender finished before the receiver could be killed"
kill -9 "$RECV_PID"
t0=$(millis)
wait_pid "$SEND_PID" 15
dt=$(($(millis) - t0))
expect_eq "send exit code" "$RC" 3
[ "$dt" -le 5000 ] || fail "sender took $dt ms to notice the lost receiver"
expect_eq "result" "$(summary "$T/send.out" result)" rolled_back
expect_eq "source guest_running" "$(summary "$T/send.out" guest_running)" true
d=$(summary "$T/send.out" guest_progress_delta)
[ "$d" -gt 0 ] || fail "source guest made no progress after rollback ($d)"
grep -q "127.0.0.1:$PORT" "$T/send.err" || fail "error does not name the lost peer 127.0.0.1:$PORT"
pass "noticed in ${dt} ms"
