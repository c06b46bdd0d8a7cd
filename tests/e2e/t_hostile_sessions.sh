#!/bin/bash
# A hostile network, part 2: sessions own their connections.
#   c  2 concurrent senders into one `--keep-listening --max-sessions 2`
#      receiver, then 4 into `--max-sessions 4`: all migrate verified, one
#      summary line each; while the 4 run, a 5th sender gets a prompt
#      refusal (within 3 s) whose message contains "busy": exit 1, result
#      failed, its guest still running
#   d  a failover under a flood: the sender goes through
#      tests/tools/faultproxy, whose blackhole (SIGHUP) cuts the link in
#      pre-copy for 1.5 s; its reconnect reaches the receiver's port while
#      8 idle unauthenticated connections are held there: the migration
#      fails over and completes (send exit 0, failovers >= 1, verified)
#   e  the post-GO question under the same flood: the receiver is held 500 ms
#      after starting the guest (RMIG_TEST_HOLD=migrated:500) while the
#      proxy blackholes the link, so the sender must ask whether the guest
#      started: it learns it did (exit 0, migrated), not exit 4
# Each case prints its figures; the verdicts come last. Loopback only, every
# wait bounded. Part 1 (unauthenticated floods) is t_hostile_floods.sh.
. "$(dirname "$0")/hostile_lib.sh"
PROXY=${FAULTPROXY:-$(dirname "$RMIG")/tests/faultproxy}
[ -x "$PROXY" ] || fail "$PROXY not built (make $(dirname "$RMIG")/tests/faultproxy)"

# d and e, as t_fault_matrix.sh's cut-heal cells: link, failover and commit
# timeouts (ms); the switch-over comes after round 8 (--downtime-ms 1 never
# converges), rounds slowed by an 8 MB/s cap, so pre-copy lasts ~7 s.
LT=1000 FT=4000 CT=4000
COMMON=(--transport tcp --psk-file "$KEY" --link-timeout-ms $LT --failover-timeout-ms $FT
	--commit-timeout-ms $CT)
SEND_OPTS=(--max-bandwidth 8M --downtime-ms 1 --max-rounds 8 --on-no-converge force)

case_concurrent() {
	local i ok=0 k t0 ms5 rc5 running
	# Two at once.
	recv_start r2 --backend sim --keep-listening --max-sessions 2 --psk-file "$KEY"
	t0=$(millis)
	send_bg two1 --max-bandwidth 16M
	send_bg two2 --max-bandwidth 16M
	for i in 1 2; do
		bg_wait two$i 45
		[ $OK = 1 ] && ok=$((ok + 1)) ||
			bad "concurrent sender $i of 2: exit $SRC, $(summary "$T/two$i.out" result): $(why two$i)"
	done
	figure "2 concurrent senders into --max-sessions 2: $ok of 2 migrated verified in $(($(millis) - t0)) ms (sender totals $(summary "$T/two1.out" total_ms), $(summary "$T/two2.out" total_ms) ms)"
	k=$(recv_verified "$T/r2.out")
	[ "$k" = 2 ] || bad "the --max-sessions 2 receiver reports $k migrated+verified summaries, expected 2"
	recv_stop

	# Four at once, then a fifth beyond the limit.
	recv_start r4 --backend sim --keep-listening --max-sessions 4 --psk-file "$KEY"
	t0=$(millis)
	for i in 1 2 3 4; do send_bg four$i --max-bandwidth 8M; done
	# Until all 4 are in pre-copy together (or one of them has ended).
	local end=$(($(millis) + 20000)) inpre=0 ended=0
	while [ "$(millis)" -lt $end ]; do
		inpre=0 ended=0
		for i in 1 2 3 4; do
			grep -qF '"phase":"pre-copy"' "$T/four$i.out" 2>/dev/null && inpre=$((inpre + 1))
			kill -0 "$(cat "$T/four$i.pid")" 2>/dev/null || ended=$((ended + 1))
		done
		[ $inpre = 4 ] || [ $ended -gt 0 ] && break
		sleep 0.05
	done
	figure "4 concurrent senders: $inpre of 4 in pre-copy at once after $(($(millis) - t0)) ms"
	if [ $inpre != 4 ]; then
		bad "only $inpre of 4 concurrent senders were in pre-copy at once ($ended ended first; waited up to 20 s): the receiver does not serve 4 migrations at once"
	else
		t0=$(millis)
		rc5=0
		timeout -k 2 20 "$RMIG" send --json --psk-file "$KEY" --backend "$GUEST" \
			"127.0.0.1:$PORT" >"$T/fifth.out" 2>"$T/fifth.err" || rc5=$?
		ms5=$(($(millis) - t0))
		running=0
		for i in 1 2 3 4; do kill -0 "$(cat "$T/four$i.pid")" 2>/dev/null && running=$((running + 1)); done
		figure "a 5th sender beyond --max-sessions 4: exit $rc5 after $ms5 ms ($running of the 4 still migrating then): $(why fifth)"
		[ $running = 4 ] ||
			bad "test timing: only $running of the 4 migrations still ran when the 5th sender ended; the 5th was not beyond the limit"
		[ $rc5 = 1 ] || bad "the 5th sender beyond --max-sessions 4 exited $rc5, expected 1 (refused)"
		[ $ms5 -le 3000 ] || bad "the 5th sender's refusal took $ms5 ms (expected within 3000 ms)"
		grep -qi busy "$T/fifth.err" ||
			bad "the 5th sender's message does not say 'busy': $(why fifth)"
		[ "$(summary "$T/fifth.out" result)" = failed ] ||
			bad "the 5th sender's result is '$(summary "$T/fifth.out" result)', expected failed"
		[ "$(summary "$T/fifth.out" guest_running)" = true ] ||
			bad "the 5th sender's guest is not running (guest_running=$(summary "$T/fifth.out" guest_running))"
	fi
	ok=0
	for i in 1 2 3 4; do
		bg_wait four$i 60
		[ $OK = 1 ] && ok=$((ok + 1)) ||
			bad "concurrent sender $i of 4: exit $SRC, $(summary "$T/four$i.out" result): $(why four$i)"
	done
	figure "4 concurrent senders into --max-sessions 4: $ok of 4 migrated verified"
	k=$(recv_verified "$T/r4.out")
	[ "$k" = 4 ] || bad "the --max-sessions 4 receiver reports $k migrated+verified summaries, expected 4"
	recv_stop
}

# proxied_pair [HOLD]: a receiver (RMIG_TEST_HOLD=HOLD) on PORT, a
# faultproxy to it on PPORT (PROXY_PID), a sender through the proxy
# (SEND_PID); outputs recv.*, send.*, proxy.err.
proxied_pair() {
	RMIG_TEST_HOLD=${1:-} recv_start recv "${COMMON[@]}" --backend sim --accept-timeout-ms 30000
	"$PROXY" 0 "127.0.0.1:$PORT" --ready-file "$T/proxy.port" 2>"$T/proxy.err" &
	PROXY_PID=$!
	PIDS="$PIDS $PROXY_PID"
	wait_file "$T/proxy.port" 5 || fail "faultproxy did not start"
	PPORT=$(cat "$T/proxy.port")
	"$RMIG" send --json "${COMMON[@]}" "${SEND_OPTS[@]}" --backend "$GUEST" \
		"127.0.0.1:$PPORT" >"$T/send.out" 2>"$T/send.err" &
	SEND_PID=$!
	PIDS="$PIDS $SEND_PID"
	wait_grep "$T/send.out" '"phase":"pre-copy"' 20 || fail "the sender did not reach pre-copy in 20 s"
	# The flood is in place before the link is cut; --reopen keeps it there
	# whatever the receiver closes.
	flood_start idle --bind $IDLE_FROM --reopen --ready-file "$T/idle.ready" \
		127.0.0.1 "$PORT" idle 8 60
	wait_file "$T/idle.ready" 10 || fail "the idle flood did not open its 8 connections in 10 s"
}

# cut_heal: the proxy blackholes every connection for 1.5 s (> the link
# timeout, well within the failover and commit timeouts), then lets through.
cut_heal() {
	kill -HUP "$PROXY_PID"
	sleep 1.5
	kill -HUP "$PROXY_PID"
}

# both_end: wait for the sender and the receiver (40 s each); SRC, DST.
both_end() {
	wait_pid "$SEND_PID" 40
	SRC=$RC
	wait_pid "$RECV_PID" 40
	DST=$RC
	flood_stop idle
}

case_failover() {
	proxied_pair
	grep -qF '"stop-and-copy"' "$T/send.out" && fail "test timing: the sender left pre-copy before the cut"
	cut_heal
	both_end
	local fo
	fo=$(summary "$T/send.out" failovers)
	figure "failover under 8 idle connections: sender exit $SRC ($(summary "$T/send.out" result), failovers ${fo:-?}, $(summary "$T/send.out" total_ms) ms), receiver exit $DST ($(summary "$T/recv.out" result), verified $(summary "$T/recv.out" verified))"
	figure "$(cat "$T/idle.out")"
	[ "$SRC" = 0 ] && [ "$(summary "$T/send.out" result)" = migrated ] ||
		bad "the failover did not complete under the flood: sender exit $SRC ($(summary "$T/send.out" result)): $(why send)"
	[ "${fo:-0}" -ge 1 ] 2>/dev/null || bad "the sender counts ${fo:-no} failovers, expected >= 1"
	[ "$DST" = 0 ] && [ "$(summary "$T/recv.out" verified)" = true ] ||
		bad "receiver exit $DST, verified $(summary "$T/recv.out" verified): $(why recv)"
}

case_question() {
	proxied_pair migrated:500
	wait_grep "$T/recv.out" '"event":"hold"' 30 || fail "the receiver never reached its hold after GO"
	sleep 0.1
	[[ $(tail -n 1 "$T/recv.out") == *'"event":"hold"'* ]] ||
		fail "test timing: the receiver's hold after GO was over before the cut"
	cut_heal
	both_end
	figure "post-GO question under 8 idle connections: sender exit $SRC ($(summary "$T/send.out" result)), receiver exit $DST ($(summary "$T/recv.out" result))"
	figure "$(cat "$T/idle.out")"
	grep -qF '"phase":"asking"' "$T/send.out" ||
		bad "test timing: the sender never had to ask (no 'asking' phase): the cut missed the window after GO"
	[ "$SRC" = 0 ] && [ "$(summary "$T/send.out" result)" = migrated ] ||
		bad "the sender did not learn that the guest started: exit $SRC ($(summary "$T/send.out" result)), expected 0 (migrated): $(why send)"
	[ "$DST" = 0 ] && [ "$(summary "$T/recv.out" result)" = migrated ] ||
		bad "receiver exit $DST ($(summary "$T/recv.out" result)), expected 0 (migrated)"
}

run_case c "2 then 4 concurrent senders (--max-sessions), a 5th refused as busy" case_concurrent
run_case d "failover reconnect under a flood of idle connections" case_failover
run_case e "post-GO outcome question under a flood of idle connections" case_question
finish "2 and 4 concurrent sessions, a 5th refused busy, failover and post-GO question under a flood"
