#!/bin/bash
# A failure that comes at once must still end the process at once. The CLI's
# event loop runs on its own thread; a stop asked before that thread entered
# the loop used to be forgotten, and rmig then waited for ever, deaf to
# SIGINT/SIGTERM (in 1 of 3 to 1 of 10 runs, when listening failed straight
# away). Here listening fails 50 times in a row (the port is taken by
# another receiver, on loopback): every run must end by itself within 10 s,
# with exit 1 and one line naming the address; prints the slowest run.
. "$(dirname "$0")/lib.sh"

RUNS=50
start_recv holder --backend sim --transport tcp
hung=0 wrong=0 slowest=0
for i in $(seq $RUNS); do
	rc=0
	t0=$(millis)
	timeout -s KILL 10 "$RMIG" recv --listen "127.0.0.1:$PORT" --transport tcp --backend sim \
		>"$T/r.out" 2>"$T/r.err" || rc=$?
	ms=$(($(millis) - t0))
	[ $ms -gt $slowest ] && slowest=$ms
	case $rc in
	137) hung=$((hung + 1)) ;;
	1) grep -q "cannot listen on 127.0.0.1:$PORT: Address already in use" "$T/r.err" ||
		wrong=$((wrong + 1)) ;;
	*) wrong=$((wrong + 1)) ;;
	esac
done
[ $hung = 0 ] || fail "$hung of $RUNS runs still ran 10 s after listening failed (killed)"
[ $wrong = 0 ] || fail "$wrong of $RUNS runs did not exit 1 naming the address; last: exit $rc, $(cat "$T/r.err")"
pass "$RUNS immediate failures on a taken port, each ended by itself, the slowest in $slowest ms"
