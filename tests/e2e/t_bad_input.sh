#!/bin/bash
# Bad input: a one-line error and a non-zero exit, never a crash or a hang.
. "$(dirname "$0")/lib.sh"

# Garbage on the wire to a receiver: that peer is refused with a reason
# naming the problem; the receiver goes on waiting (a stranger must not be
# able to end it) and then serves a valid sender.
# refused_then_served NAME PATTERN: after the junk was sent.
refused_then_served() {
	local i
	for i in $(seq 100); do
		grep -q "refused peer 127.0.0.1:[0-9]*: .*$2" "$T/$1.err" && break
		sleep 0.05
	done
	grep -q "refused peer 127.0.0.1:[0-9]*: .*$2" "$T/$1.err" ||
		fail "$1: the receiver does not log the refused peer with '$2': $(cat "$T/$1.err")"
	kill -0 "$RECV_PID" 2>/dev/null || fail "$1: the receiver died on bad input"
	rc=0
	"$RMIG" send --backend sim:size=16M 127.0.0.1:$PORT >"$T/$1-send.out" 2>"$T/$1-send.err" || rc=$?
	expect_eq "$1: a valid sender after the bad one: exit" "$rc" 0
	wait_pid "$RECV_PID" 10
	expect_eq "$1: receiver exit" "$RC" 0
}
start_recv recv --backend sim --link-timeout-ms 2000
head -c 4096 /dev/urandom >"$T/garbage"
exec 3<>/dev/tcp/127.0.0.1/$PORT || fail "cannot connect to receiver"
cat "$T/garbage" >&3
refused_then_served recv "magic"
exec 3>&-

# A well-formed header of an unknown type.
start_recv recv2 --backend sim --link-timeout-ms 2000
exec 3<>/dev/tcp/127.0.0.1/$PORT || fail "cannot connect to receiver"
# magic RMIG, version 2, type 0x77, flags 0x77, len 0, seq 0 (24 bytes LE)
printf 'RMIG\002\167\167\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' >&3
refused_then_served recv2 "type\|HELLO"
exec 3>&-

# An older rmig (wire version 1, whose proofs did not cover the HELLOs):
# refused by version, not by a puzzling authentication failure.
start_recv recv3 --backend sim --link-timeout-ms 2000
exec 3<>/dev/tcp/127.0.0.1/$PORT || fail "cannot connect to receiver"
printf 'RMIG\001\001\000\000\100\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' >&3
refused_then_served recv3 "frame version 1 outside supported 2..2"
exec 3>&-

# Nobody listening: the sender fails (exit 1) and says where it tried.
rc=0
"$RMIG" send --backend sim:size=16M 127.0.0.1:1 >"$T/send.out" 2>"$T/send.err" || rc=$?
expect_eq "send to closed port exit code" "$rc" 1
grep -q "127.0.0.1:1" "$T/send.err" || fail "error does not name the address"

# Usage errors: exit 2 with one line naming the problem.
check_usage() {
	rc=0
	"$RMIG" "$@" >"$T/usage.out" 2>"$T/usage.err" || rc=$?
	[ "$rc" = 2 ] || fail "rmig $* exited $rc, expected 2"
	[ "$(wc -l <"$T/usage.err")" = 1 ] || fail "rmig $*: expected a one-line error, got: $(cat "$T/usage.err")"
}
check_usage send
check_usage send --channels 0 127.0.0.1
check_usage send --channels 65 127.0.0.1
check_usage send --on-no-converge maybe 127.0.0.1
check_usage send --max-bandwidth 12Q 127.0.0.1
check_usage send --backend sim:size=lots 127.0.0.1
check_usage send --backend nosuch 127.0.0.1
check_usage recv
check_usage frobnicate
check_usage recv --listen :abc
check_usage recv --listen 70000
check_usage send --record "$T" --keep-listening 127.0.0.1
check_usage recv --control "$T/c.sock" --keep-listening --listen 127.0.0.1:0
# An unknown backend names those this build has.
"$RMIG" send --backend nosuch 127.0.0.1 2>"$T/nosuch.err"
grep -q "unknown backend 'nosuch' (known here: sim, .*uffd" "$T/nosuch.err" ||
	fail "an unknown backend does not list the known ones: $(cat "$T/nosuch.err")"

# With --json a backend that cannot be opened still ends in a summary.
"$RMIG" send -j -b nosuch 127.0.0.1 >"$T/nosuch.json" 2>/dev/null
expect_eq "JSON summary of a backend error" "$(summary "$T/nosuch.json" result)" failed
summary "$T/nosuch.json" error | grep -q "unknown backend 'nosuch'" ||
	fail "the JSON summary does not name the backend error: $(cat "$T/nosuch.json")"

# Short options, as perftest's: -p PORT, -b, -j (and -d, -x on RDMA).
"$RMIG" recv -j -b sim -p 0 --listen 127.0.0.1 >"$T/short.out" 2>&1 &
RECV_PID=$!
PIDS="$PIDS $RECV_PID"
wait_port short
"$RMIG" send -b sim:size=16M -p "$PORT" 127.0.0.1 >/dev/null 2>&1 || fail "send -b -p failed"
wait_pid "$RECV_PID" 10
expect_eq "recv -j -b -p: result" "$(summary "$T/short.out" result)" migrated

# --listen as QEMU's -incoming tcp::PORT: :PORT and PORT alone listen on
# every address.
for form in :0 0; do
	"$RMIG" recv --listen "$form" --json --backend sim --accept-timeout-ms 10000 \
		>"$T/form$form.out" 2>&1 &
	RECV_PID=$!
	PIDS="$PIDS $RECV_PID"
	wait_port "form$form"
	"$RMIG" send --backend sim:size=16M 127.0.0.1:$PORT >/dev/null 2>&1 ||
		fail "--listen $form: the migration failed"
	wait_pid "$RECV_PID" 10
	expect_eq "--listen $form: receiver exit" "$RC" 0
done
pass
