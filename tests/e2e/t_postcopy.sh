#!/bin/bash
# Post-copy (rmig send --postcopy): the destination starts the guest before
# all of its memory arrived, fetches the pages it touches first on demand and
# takes the rest as it streams in. Then:
#  - its memory is right: postcopy_check migrates a guest the same way in one
#    process and replays the destination guest's writes on the source's
#    memory (see tests/tools/postcopy_check.c for what that proves);
#  - the source killed (kill -9) or stalled (SIGSTOP) after STARTED: the
#    destination cannot finish, waits --failover-timeout-ms for the source to
#    recover (t_postcopy_recovery.sh), says the guest is lost (exit 4), and
#    does so within --link-timeout-ms plus that;
#  - --postcopy with --verify, or on recv: usage errors.
. "$(dirname "$0")/lib.sh"
CHECK=${BUILD:-build}/tests/postcopy_check
[ -x "$CHECK" ] || skip "$CHECK is not built (make unit)"
GUEST=sim:size=256M,dirty-rate=20000,hot=5%,zero=50%,seed=7

# 1. A dirtying guest. The sender holds 300 ms after STARTED (RMIG_TEST_HOLD),
# so the guest running at the destination must fault pages in.
start_recv recv --backend sim
RMIG_TEST_HOLD=post-copy:300 "$RMIG" send --json --postcopy --backend "$GUEST" \
	127.0.0.1:$PORT >"$T/send.out" 2>"$T/send.err"
rc=$?
grep -q "post-copy is not possible here" "$T/send.err" && skip "$(tail -n 1 "$T/send.err")"
expect_eq "send exit code" "$rc" 0
wait_pid "$RECV_PID" 20
expect_eq "recv exit code" "$RC" 0
for side in send recv; do
	expect_eq "$side result" "$(summary "$T/$side.out" result)" migrated
	expect_eq "$side postcopy" "$(summary "$T/$side.out" postcopy)" true
	expect_eq "$side verified" "$(summary "$T/$side.out" verified)" false
done
pending=$(summary "$T/recv.out" postcopy_pages)
requested=$(summary "$T/recv.out" postcopy_requested)
pc_ms=$(summary "$T/recv.out" postcopy_ms)
[ "$pending" -gt 0 ] || fail "no page was still at the source when the guest started"
[ "$requested" -gt 0 ] || fail "no page was fetched on demand"
[ "$requested" -le "$pending" ] || fail "$requested pages fetched on demand of $pending pending"
expect_eq "source's count of pages fetched on demand" \
	"$(summary "$T/send.out" postcopy_requested)" "$requested"
# The guest ran at the destination while pages were still coming: its
# post-copy phase came before "migrated", lasted the hold at least, and the
# source streamed pages after the destination's STARTED.
phases=$(jq -r 'select(.event=="phase") | .phase' "$T/recv.out" | tr '\n' ' ')
[[ $phases == *"ready post-copy migrated"* ]] || fail "destination phases: $phases"
[ "$pc_ms" -ge 250 ] || fail "post-copy lasted $pc_ms ms, less than the 300 ms hold"
streamed=$(jq -r 'select(.event=="phase" and .phase=="post-copy"), select(.event=="round")
	| .phase // .pages' "$T/send.out" | sed -n '/post-copy/{n;p}')
[ "${streamed:-0}" -gt 0 ] || fail "the source streamed no pages after STARTED"
expect_eq "destination guest_running" "$(summary "$T/recv.out" guest_running)" true
d=$(summary "$T/recv.out" guest_progress_delta)
[ "$d" -gt 0 ] || fail "destination guest made no progress after post-copy ($d)"

# 2. The memory, byte for byte.
"$CHECK" >"$T/check.out" 2>&1
rc=$?
[ $rc = 77 ] && skip "$(cat "$T/check.out")"
[ $rc = 0 ] || fail "memory check: $(cat "$T/check.out")"
check=$(sed -n 's/^PASS: //p' "$T/check.out")

# 3. The source dies, or stalls, after STARTED: the guest is lost, and the
# destination says so within the link timeout plus the failover timeout.
for how in KILL STOP; do
	start_recv "recv-$how" --backend sim --link-timeout-ms 1000 --failover-timeout-ms 1000
	RMIG_TEST_HOLD=post-copy:20000 "$RMIG" send --json --postcopy --link-timeout-ms 1000 \
		--backend sim:size=64M,dirty-rate=20000,hot=5%,seed=3 127.0.0.1:$PORT \
		>"$T/send-$how.out" 2>"$T/send-$how.err" &
	SEND_PID=$!
	PIDS="$PIDS $SEND_PID"
	for _i in $(seq 200); do
		grep -q '"event":"hold"' "$T/send-$how.out" 2>/dev/null && break
		kill -0 "$SEND_PID" 2>/dev/null || fail "sender exited before post-copy"
		sleep 0.05
	done
	grep -q '"event":"hold"' "$T/send-$how.out" || fail "sender never reached post-copy"
	t0=$(millis)
	kill -"$how" "$SEND_PID"
	wait_pid "$RECV_PID" 10
	ms=$(($(millis) - t0))
	expect_eq "recv exit code after SIG$how of the source" "$RC" 4
	expect_eq "recv result" "$(summary "$T/recv-$how.out" result)" unknown
	expect_eq "recv postcopy" "$(summary "$T/recv-$how.out" postcopy)" true
	err=$(summary "$T/recv-$how.out" error)
	[[ $err == *"guest started here"*"lost"* ]] || fail "recv error does not say so: $err"
	grep -q '"phase":"lost"' "$T/recv-$how.out" || fail "no phase lost"
	expect_eq "destination guest_running" "$(summary "$T/recv-$how.out" guest_running)" false
	[ "$ms" -lt 4000 ] ||
		fail "the destination took $ms ms to give up (link timeout 1000, failover 1000)"
	eval "ms_$how=$ms"
	kill -9 "$SEND_PID" 2>/dev/null
done

# 4. Usage.
"$RMIG" send --postcopy --verify 127.0.0.1:1 >/dev/null 2>"$T/usage.err"
expect_eq "--postcopy --verify exit code" "$?" 2
"$RMIG" recv --postcopy --listen 127.0.0.1:0 >/dev/null 2>"$T/usage.err"
expect_eq "recv --postcopy exit code" "$?" 2
pass "$pending pages after the start, $requested on demand, $pc_ms ms; $check; lost after kill in ${ms_KILL} ms, stall in ${ms_STOP} ms"
