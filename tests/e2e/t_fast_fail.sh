#!/bin/bash
# A failure that comes at once must still end the process at once. The CLI's
# event loop runs on its own thread; a stop asked before that thread entered
# the loop used to be forgotten, and rmig then waited for ever (it did, in 1
# of 3 runs or so, when listening failed straight away). Here listening fails
# 30 times in a row (the port is taken by another receiver, on loopback):
# every run must end within 5 s with exit 1 and one line naming the address.
. "$(dirname "$0")/lib.sh"

start_recv holder --backend sim --transport tcp
hung=0 wrong=0
for i in $(seq 30); do
	rc=0
	timeout -s KILL 5 "$RMIG" recv --listen "127.0.0.1:$PORT" --transport tcp --backend sim \
		>"$T/r.out" 2>"$T/r.err" || rc=$?
	case $rc in
	137) hung=$((hung + 1)) ;;
	1) grep -q "127.0.0.1" "$T/r.err" || wrong=$((wrong + 1)) ;;
	*) wrong=$((wrong + 1)) ;;
	esac
done
[ $hung = 0 ] || fail "$hung of 30 runs still ran 5 s after listening failed (killed)"
[ $wrong = 0 ] || fail "$wrong of 30 runs did not exit 1 naming the address; last: exit $rc, $(cat "$T/r.err")"
pass "30 immediate failures, each ended at once"
