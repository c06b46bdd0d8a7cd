#!/bin/bash
# Prompt, truthful endings:
#  - SIGINT on the sender under --max-bandwidth 100K (5 runs) and 1 (1 run):
#    it exits 3 within 1 s (the limiter's sleep used to run on for 17 s and
#    more), and the receiver, told it was a cancel, says "the source
#    cancelled" and exits 3 within 1 s too (it used to wait the whole
#    failover timeout, then blame a lost peer);
#  - SIGINT on the receiver: the sender says "the destination cancelled",
#    exits 3 within 1 s, no failover;
#  - --psk-file that is a FIFO, a directory or a device: one line, exit 2,
#    at once (a FIFO blocked in open()); a symlink to a key is a key;
#  - an unresolvable host without a key: "cannot resolve", not "loopback".
# Prints the slowest exits.
. "$(dirname "$0")/lib.sh"
GUEST=sim:size=64M,dirty-rate=1000
LIMIT=1000 # ms
# ASan/UBSan builds (make check SAN=1): the cancel is as prompt, but the
# sanitizers' own exit (the leak check) can take most of a second.
case $RMIG in */san/*) LIMIT=3000 ;; esac

# ends_within PID MS WHAT: PID exits within MS of now; sets RC and ELAPSED.
ends_within() {
	local t0
	t0=$(millis)
	wait_pid "$1" 10
	ELAPSED=$(($(millis) - t0))
	[ $ELAPSED -le "$2" ] || fail "$3 took $ELAPSED ms to exit (limit $2)"
}

# cancel_sender NAME RATE: SIGINT the sender 0.5 s into pre-copy.
SLOW_SEND=0 SLOW_RECV=0
cancel_sender() {
	start_recv "$1-recv" --backend sim
	"$RMIG" send --json --max-bandwidth "$2" --backend $GUEST 127.0.0.1:$PORT \
		>"$T/$1-send.out" 2>"$T/$1-send.err" &
	local sender=$!
	PIDS="$PIDS $sender"
	wait_phase "$T/$1-send.out" pre-copy $sender
	sleep 0.5
	kill -INT $sender
	ends_within $sender $LIMIT "$1: the sender"
	expect_eq "$1: sender exit" "$RC" 3
	[ $ELAPSED -gt $SLOW_SEND ] && SLOW_SEND=$ELAPSED
	ends_within "$RECV_PID" $LIMIT "$1: the receiver, after the sender"
	expect_eq "$1: receiver exit" "$RC" 3
	[ $ELAPSED -gt $SLOW_RECV ] && SLOW_RECV=$ELAPSED
	expect_eq "$1: receiver result" "$(summary "$T/$1-recv.out" result)" rolled_back
	grep -q "rolled_back: the source cancelled the migration" "$T/$1-recv.err" ||
		fail "$1: the receiver does not say the source cancelled: $(tail -1 "$T/$1-recv.err")"
	expect_eq "$1: source guest running" "$(summary "$T/$1-send.out" guest_running)" true
}
for n in 1 2 3 4 5; do cancel_sender "100K-$n" 100K; done
cancel_sender 1B 1

# The receiver cancelled: the sender is told so and does not fail over.
start_recv rcancel-recv --backend sim
"$RMIG" send --json --max-bandwidth 20M --backend $GUEST 127.0.0.1:$PORT \
	>"$T/rcancel-send.out" 2>"$T/rcancel-send.err" &
SENDER=$!
PIDS="$PIDS $SENDER"
wait_phase "$T/rcancel-recv.out" receiving "$RECV_PID"
sleep 0.5
kill -INT "$RECV_PID"
wait_pid "$RECV_PID" 10
expect_eq "receiver cancelled: receiver exit" "$RC" 3
ends_within $SENDER $LIMIT "receiver cancelled: the sender"
expect_eq "receiver cancelled: sender exit" "$RC" 3
grep -q "rolled_back: the destination cancelled the migration" "$T/rcancel-send.err" ||
	fail "the sender does not say the destination cancelled: $(tail -1 "$T/rcancel-send.err")"
expect_eq "receiver cancelled: failovers" "$(summary "$T/rcancel-send.out" failovers)" 0
RCANCEL=$ELAPSED

# Key files that are not regular files.
mkfifo "$T/fifo"
mkdir -m 700 "$T/dir"
for f in "$T/fifo:a FIFO" "$T/dir:a directory" "/dev/null:a character device"; do
	path=${f%%:*} kind=${f#*:}
	rc=0
	timeout -s KILL 5 "$RMIG" send --psk-file "$path" 127.0.0.1:1 2>"$T/key.err" || rc=$?
	expect_eq "--psk-file $kind: exit" "$rc" 2
	expect_eq "--psk-file $kind: lines" "$(wc -l <"$T/key.err")" 1
	grep -q -- "--psk-file $path: $kind, not a regular file" "$T/key.err" ||
		fail "--psk-file $kind: $(cat "$T/key.err")"
done
head -c 32 /dev/urandom >"$T/key" && chmod 600 "$T/key" && ln -s "$T/key" "$T/key.link"
rc=0
"$RMIG" send --psk-file "$T/key.link" 127.0.0.1:1 2>"$T/link.err" || rc=$?
expect_eq "--psk-file symlink to a key: exit (nobody listens)" "$rc" 1
grep -q "cannot connect to 127.0.0.1:1" "$T/link.err" || fail "symlinked key: $(cat "$T/link.err")"

# A host that does not resolve.
rc=0
"$RMIG" send nosuch.invalid:7471 2>"$T/resolve.err" || rc=$?
expect_eq "unresolvable host: exit" "$rc" 1
grep -q "failed: cannot resolve nosuch.invalid" "$T/resolve.err" ||
	fail "unresolvable host: $(head -1 "$T/resolve.err")"
! grep -q loopback "$T/resolve.err" || fail "unresolvable host reported as not on loopback"
pass "sender SIGINT under a rate limit: slowest exit $SLOW_SEND ms (limit $LIMIT), receiver then $SLOW_RECV ms; receiver SIGINT: sender exit in $RCANCEL ms; bad key files and an unknown host refused"
