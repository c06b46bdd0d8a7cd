#!/bin/bash
# With --on-no-converge=abort a guest that cannot converge is not moved: the
# sender exits 3 (rolled back), its guest is still running, and the receiver
# discards what it got. --timeout (as virsh migrate --timeout) applies the
# same policy once pre-copy has run that long, whatever the round count:
# abort rolls back naming --timeout, force switches over (forced:true).
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

# --timeout: 1000 rounds allowed, 2 s of pre-copy. The guest cannot
# converge (40000 pages/s over half of it, 40 MiB/s).
for policy in abort force; do
	start_recv "r$policy" --backend sim
	rc=0
	"$RMIG" send --json --max-bandwidth 40M --downtime-ms 50 --max-rounds 1000 --timeout 2 \
		--on-no-converge $policy --backend sim:size=64M,dirty-rate=40000,hot=50%,zero=0%,seed=11 \
		127.0.0.1:$PORT >"$T/s$policy.out" 2>"$T/s$policy.err" || rc=$?
	wait_pid "$RECV_PID" 15
	rounds=$(summary "$T/s$policy.out" rounds)
	total=$(summary "$T/s$policy.out" total_ms)
	[ "$rounds" -lt 1000 ] || fail "--timeout $policy: all $rounds rounds ran"
	[ "$total" -ge 2000 ] && [ "$total" -lt 8000 ] ||
		fail "--timeout 2 $policy: pre-copy ended after $total ms"
done
expect_eq "--timeout abort: exit" "$(summary "$T/sabort.out" result)" rolled_back
grep -q "did not converge within --timeout" "$T/sabort.err" ||
	fail "--timeout abort does not name --timeout: $(cat "$T/sabort.err")"
expect_eq "--timeout force: result" "$(summary "$T/sforce.out" result)" migrated
expect_eq "--timeout force: forced" "$(summary "$T/sforce.out" forced)" true
check() { "$RMIG" "$@" >/dev/null 2>&1; }
check recv --listen 127.0.0.1:0 --timeout 5 && fail "--timeout on recv was taken"
pass
