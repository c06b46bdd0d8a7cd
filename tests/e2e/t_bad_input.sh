#!/bin/bash
# Bad input: a one-line error and a non-zero exit, never a crash or a hang.
. "$(dirname "$0")/lib.sh"

# Garbage on the wire to a receiver.
start_recv recv --backend sim --link-timeout-ms 2000
head -c 4096 /dev/urandom >"$T/garbage"
exec 3<>/dev/tcp/127.0.0.1/$PORT || fail "cannot connect to receiver"
cat "$T/garbage" >&3
wait_pid "$RECV_PID" 10
exec 3>&-
[ "$RC" -ne 0 ] && [ "$RC" -lt 128 ] || fail "receiver exit code $RC on garbage (crash or 0)"
grep -qi "magic" "$T/recv.err" || fail "receiver error does not name the bad magic"

# A well-formed header of an unknown type.
start_recv recv2 --backend sim --link-timeout-ms 2000
exec 3<>/dev/tcp/127.0.0.1/$PORT || fail "cannot connect to receiver"
# magic RMIG, version 1, type 0x7777, flags 0, len 0, seq 0 (24 bytes LE)
printf 'RMIG\001\000\167\167\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' >&3
wait_pid "$RECV_PID" 10
exec 3>&-
[ "$RC" -ne 0 ] && [ "$RC" -lt 128 ] || fail "receiver exit code $RC on unknown type"
[ "$(wc -l <"$T/recv2.err")" -ge 1 ] || fail "no error message for unknown type"

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
pass
