#!/bin/bash
# Deadlines a peer cannot extend: heartbeats prove a sender alive, not that
# it gets anywhere. An authenticated sender (tests/tools/fakepeer with the
# key) that only sends heartbeats must not hold a --keep-listening receiver:
#   hb-precopy  in pre-copy: ended after --stall-timeout-ms, naming the stall;
#   hb-ready    after READY: ended after --commit-timeout-ms, naming it.
# Each within its limit + SLACK, as rolled_back; the receiver then serves a
# valid migration whose first round takes longer than the stall limit (data
# flowing is progress). A "destination" that answers the HELLO with
# heartbeats only (fakepeer hb-dest) must not hold a sender either: its
# opening ends after twice the link timeout. Prints how long each hold
# lasted.
. "$(dirname "$0")/lib.sh"
FAKEPEER=${FAKEPEER:-$(dirname "$RMIG")/tests/fakepeer}
[ -x "$FAKEPEER" ] || fail "$FAKEPEER not built (make unit)"
STALL=3000 CT=2000 SLACK=1500 # ms; heartbeats every 250 ms, checked on arrival
head -c 32 /dev/urandom >"$T/key" && chmod 600 "$T/key"

start_recv keep --backend sim --keep-listening --psk-file "$T/key" --link-timeout-ms 1000 \
	--stall-timeout-ms $STALL --commit-timeout-ms $CT
FIGURES=""
for c in "hb-precopy:$STALL:stalled: no data and no round end for $STALL ms in pre-copy" \
	"hb-ready:$CT:stalled: no GO and no question for $CT ms after READY"; do
	name=${c%%:*} rest=${c#*:}
	limit=${rest%%:*} want=${rest#*:}
	out=$(timeout 60 "$FAKEPEER" 127.0.0.1 "$PORT" "$name" "$T/key") ||
		fail "$name: the receiver did not end the hold ($out)"
	grep -q -- "$want" <<<"$out" || fail "$name: '$out' does not say '$want'"
	ms=$(sed -n 's/^ABORT after \([0-9]*\) ms.*/\1/p' <<<"$out")
	# fakepeer's clock starts a moment after the receiver's
	[ "$ms" -ge $((limit - 300)) ] && [ "$ms" -le $((limit + SLACK)) ] ||
		fail "$name: ended after $ms ms, limit $limit (+$SLACK)"
	kill -0 "$RECV_PID" 2>/dev/null || fail "$name: the receiver died"
	FIGURES="$FIGURES $name ${ms}ms (limit $limit)"
done
grep -q "rolled_back: peer 127.0.0.1:[0-9]*.*in pre-copy (--stall-timeout-ms)" "$T/keep.err" ||
	fail "the receiver's line for the pre-copy stall does not name --stall-timeout-ms"
grep -q "rolled_back: peer 127.0.0.1:[0-9]*.*after READY (--commit-timeout-ms)" "$T/keep.err" ||
	fail "the receiver's line for the READY hold does not name --commit-timeout-ms"
expect_eq "summaries so far" "$(jq -r 'select(.event=="summary") | .result' "$T/keep.out" | xargs)" \
	"rolled_back rolled_back"

# A valid migration, round 1 (16 MiB at 4 MiB/s) longer than the stall limit.
rc=0
t0=$(millis)
"$RMIG" send --json --psk-file "$T/key" --max-bandwidth 4M --backend sim:size=16M,dirty-rate=500 \
	127.0.0.1:$PORT >"$T/valid.out" 2>"$T/valid.err" || rc=$?
ms=$(($(millis) - t0))
expect_eq "valid migration after the holds: exit" "$rc" 0
expect_eq "valid migration: verified" "$(summary "$T/valid.out" verified)" true
[ $ms -gt $STALL ] || fail "the valid migration took $ms ms: not longer than the stall limit"
kill -TERM "$RECV_PID"
wait_pid "$RECV_PID" 10
expect_eq "keep-listening receiver exit on SIGTERM" "$RC" 0

# The other way round: at the destination's address someone answers the
# sender's HELLO with heartbeats only (fakepeer hb-dest, no key). Each
# wait stays short of the link timeout (1 s); the opening as a whole has
# twice that: the sender ends it and names it.
fakepeer_dest hbdest hb-dest
HB_PID=$FAKE_PID HB_PORT=$FAKE_PORT
rc=0
t0=$(millis)
timeout 60 "$RMIG" send --psk-file "$T/key" --link-timeout-ms 1000 --backend sim:size=16M \
	127.0.0.1:$HB_PORT >"$T/hbsend.out" 2>"$T/hbsend.err" || rc=$?
hb_ms=$(($(millis) - t0))
[ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "hb-dest: the sender exited $rc after $hb_ms ms"
grep -q "stalled: no opening (HELLO, AUTH, rails) within 2000 ms" "$T/hbsend.err" ||
	fail "hb-dest: the sender's line: $(cat "$T/hbsend.err")"
# Timed from outside the sender (its start-up and the guest's setup
# count): twice the usual slack, still far from the 60 s of a hold.
[ $hb_ms -le $((2000 + 2 * SLACK)) ] || fail "hb-dest: the sender gave up after $hb_ms ms, limit 2000 (+$((2 * SLACK)))"
wait_pid $HB_PID 10 # it ends once the sender closed the connection
grep -q "^ABORT after\|^CLOSED" "$T/hbdest.out" || fail "hb-dest: the peer did not see the end: $(cat "$T/hbdest.out")"
pass "holds ended:$FIGURES; then a $ms ms migration served; a heartbeating peer at the destination's address: the opening ended after $hb_ms ms"
