#!/bin/bash
# timeout: 240
# rmig tunnel across a lost link, between two network namespaces joined by a
# veth pair (sender in A, receiver in B, TLS with a PSK): streams through an
# echo server in B come back byte for byte although
#   1. the link is reset three times mid-stream (ss -K, the kernel aborts the
#      sender's connection): the sender connects again and both ends send
#      again what the other had not received;
#   2. the link goes silent for 12 s (B's veth down): both ends declare it
#      lost after 10 s without a frame, the sender connects again once the
#      veth is back;
#   3. a flood of silent connections holds the receiver's door meanwhile:
#      the sender still gets back in within seconds (openings run on their
#      own threads under caps; before, one silent peer held it 10 s).
# And the ends of it: a sender whose receiver was restarted hears "no such
# session" and stops in one line; a sender whose link is not back within
# --resume-timeout stops in one line and closes its local connections.
. "$(dirname "$0")/lib.sh"
set -o pipefail
command -v socat >/dev/null || fail "socat is missing (scripts/deps.sh installs it)"
[ "$(id -u)" = 0 ] || skip "network namespaces need root"
NA=rmTa$$ NB=rmTb$$
A=10.98.0.1 B=10.98.0.2 PORT=7473
netns_cleanup() {
	for p in $(jobs -p); do kill -9 "$p" 2>/dev/null; done
	ip netns del $NA 2>/dev/null
	ip netns del $NB 2>/dev/null
	cleanup
}
trap netns_cleanup EXIT
trap 'exit 1' TERM INT
ip netns add $NA && ip netns add $NB &&
	ip link add va netns $NA type veth peer name vb netns $NB &&
	ip -n $NA addr add $A/24 dev va && ip -n $NB addr add $B/24 dev vb &&
	ip -n $NA link set va up && ip -n $NB link set vb up &&
	ip -n $NA link set lo up && ip -n $NB link set lo up ||
	fail "cannot make the namespaces and the veth pair"
head -c 32 /dev/urandom >"$T/key" && chmod 600 "$T/key"
inA() { ip netns exec $NA "$@"; }
inB() { ip netns exec $NB "$@"; }

ip netns exec $NB socat UNIX-LISTEN:"$T/echo.sock",fork EXEC:cat 2>/dev/null &
PIDS="$PIDS $!"

# start_recv_b [OPTS]: the receiver in B, port PORT.
start_recv_b() {
	# ip netns exec itself, not a function: $! is then rmig's pid
	ip netns exec $NB "$RMIG" tunnel recv --listen $B:$PORT --forward echo="$T/echo.sock" --psk-file "$T/key" \
		"$@" 2>>"$T/recv.err" &
	RPID=$!
	PIDS="$PIDS $RPID"
	for _ in $(seq 100); do
		inB ss -Hltn "sport = :$PORT" | grep -q . && return 0
		sleep 0.05
	done
	fail "the receiver does not listen"
}
# start_send_a NAME [OPTS]: a sender in A exposing $T/NAME.sock.
start_send_a() {
	local n=$1
	shift
	ip netns exec $NA "$RMIG" tunnel send $B:$PORT --expose echo="$T/$n.sock" --psk-file "$T/key" "$@" \
		2>"$T/$n-send.err" &
	SPID=$!
	PIDS="$PIDS $SPID"
	for _ in $(seq 100); do
		grep -q "connected to" "$T/$n-send.err" && return 0
		kill -0 $SPID 2>/dev/null || fail "$n: the sender died: $(cat "$T/$n-send.err")"
		sleep 0.05
	done
	fail "$n: the sender did not connect"
}
# slow_echo SOCK FILE CHUNKS: FILE (CHUNKS of 256 KiB) through the echo
# forward, a chunk every 50 ms, into FILE.back (background; sets ECHO).
slow_echo() {
	(for i in $(seq 0 $(($3 - 1))); do
		dd if="$2" bs=256K skip=$i count=1 2>/dev/null
		sleep 0.05
	done) | inA timeout 120 socat -t 60 - UNIX-CONNECT:"$1" >"$2.back" 2>"$2.socat" &
	ECHO=$!
}
# reset_link: the sender's connection aborted by A's kernel (RST to B).
reset_link() {
	inA ss -Htn dst $B dport = :$PORT | grep -q ESTAB || fail "no link to reset"
	inA ss -K dst $B dport = :$PORT >/dev/null 2>&1
}
backs() { grep -c "back:" "$1" 2>/dev/null || true; }

# 1. Three resets mid-stream.
start_recv_b
start_send_a one
head -c 8M /dev/urandom >"$T/f1"
slow_echo "$T/one.sock" "$T/f1" 32
for i in 1 2 3; do
	sleep 0.4
	reset_link
	for _ in $(seq 100); do [ "$(backs "$T/one-send.err")" -ge $i ] && break; sleep 0.05; done
	[ "$(backs "$T/one-send.err")" -ge $i ] || fail "the sender did not come back after reset $i"
done
wait $ECHO || fail "the stream through three resets failed: $(cat "$T/f1.socat")"
cmp -s "$T/f1" "$T/f1.back" || fail "the stream came back different after three resets"
grep -q "link to .* back: 1 streams resumed" "$T/recv.err" ||
	fail "the receiver did not resume the stream"

# 2. Silent for 12 s: B's veth down, then up.
head -c 4M /dev/urandom >"$T/f2"
slow_echo "$T/one.sock" "$T/f2" 16
sleep 0.3
ip -n $NB link set vb down
sleep 12
ip -n $NB link set vb up
wait $ECHO || fail "the stream through a silent link failed: $(cat "$T/f2.socat")"
cmp -s "$T/f2" "$T/f2.back" || fail "the stream came back different after a silent link"
grep -q "no frame from the peer for 10 s" "$T/one-send.err" "$T/recv.err" ||
	fail "no end said the link went silent"
[ "$(backs "$T/one-send.err")" -ge 4 ] || fail "the sender did not come back after the silent link"
# What the veth dropped was in flight: some end must have sent bytes again.
again=$(sed -n 's/.* streams resumed, \([0-9]*\) bytes sent again/\1/p' "$T/one-send.err" "$T/recv.err" |
	awk '{ s += $1 } END { print s + 0 }')
[ "$again" -gt 0 ] || fail "no end sent anything again after a link that dropped bytes"

# 3. A flood of silent connections (from B's own address, not the
# sender's) holds the door while the link is reset: the sender gets back in.
for i in $(seq 40); do
	ip netns exec $NB socat -u TCP:$B:$PORT SYSTEM:"sleep 30" >/dev/null 2>&1 &
	FLOOD="${FLOOD:-} $!"
done
sleep 1.5
n0=$(backs "$T/one-send.err")
reset_link
for _ in $(seq 160); do [ "$(backs "$T/one-send.err")" -gt "$n0" ] && break; sleep 0.05; done
[ "$(backs "$T/one-send.err")" -gt "$n0" ] || fail "the sender did not get back in past 40 silent connections within 8 s"
grep -Eq "refused: dropped: [0-9]+ unauthenticated connections" "$T/recv.err" || fail "the door did not limit the silent connections"
head -c 1M /dev/urandom >"$T/f3"
slow_echo "$T/one.sock" "$T/f3" 4
wait $ECHO && cmp -s "$T/f3" "$T/f3.back" || fail "no stream after the flood"
for p in $FLOOD; do kill "$p" 2>/dev/null; done

# 4. The receiver restarted: nothing to resume, the sender says so and stops.
kill -9 $RPID
wait $RPID 2>/dev/null
start_recv_b
for _ in $(seq 200); do kill -0 $SPID 2>/dev/null || break; sleep 0.05; done
kill -0 $SPID 2>/dev/null && fail "the sender goes on although its receiver forgot the session"
wait $SPID && fail "the sender exited 0 after losing its session"
grep -q "no such session here" "$T/one-send.err" || fail "the sender did not say its session is gone"

# 5. Not back within --resume-timeout: the sender stops, its local
# connections are closed (a client waiting on one sees it end).
start_send_a two --resume-timeout 2
inA timeout 30 socat -u UNIX-CONNECT:"$T/two.sock" - >/dev/null 2>&1 &
CLIENT=$!
sleep 0.5
kill -9 $RPID
t0=$(millis)
for _ in $(seq 200); do kill -0 $SPID 2>/dev/null || break; sleep 0.05; done
kill -0 $SPID 2>/dev/null && fail "the sender waits past --resume-timeout 2"
wait $CLIENT
[ $(($(millis) - t0)) -lt 20000 ] || fail "the local connection was not closed with the session"
grep -q "not back within 2 s" "$T/two-send.err" || fail "the sender did not say the link stayed lost"
[ "$(grep -c . "$T/two-send.err")" -le 6 ] || fail "the sender's end took more than a few lines"
pass "8 MiB through 3 resets, 4 MiB through 12 s of silence ($again bytes sent again in all), back past 40 silent connections, a forgotten session and a lost link end in one line"
