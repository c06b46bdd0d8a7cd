#!/bin/bash
# timeout: 60
# rmig tunnel recv's door when its 32 opening slots are all held: 8 loopback
# addresses (127.0.0.2-9) with 4 silent connections each (each address at
# its own cap of 4, none past it). The sender, from 127.0.0.1, must still get
# in at once: at the total cap the door cuts the oldest opening of whoever
# holds the most for the newcomer. (Before: a newcomer found no free slot
# and was refused "too many connections in their opening" without anything
# being cut, so 32 silent connections renewed every 10 s kept the sender
# out for good.)
. "$(dirname "$0")/lib.sh"
command -v socat >/dev/null || fail "socat is missing (scripts/deps.sh installs it)"
socat UNIX-LISTEN:"$T/echo.sock",fork EXEC:cat 2>/dev/null &
PIDS="$PIDS $!"
"$RMIG" tunnel recv --listen 127.0.0.1:0 --forward echo="$T/echo.sock" 2>"$T/recv.err" &
RPID=$!
PIDS="$PIDS $RPID"
PORT=""
for _ in $(seq 100); do
	PORT=$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$T/recv.err")
	[ -n "$PORT" ] && break
	sleep 0.05
done
[ -n "$PORT" ] || fail "the receiver did not listen"
for a in $(seq 2 9); do
	for _ in 1 2 3 4; do
		socat -u TCP:127.0.0.1:$PORT,bind=127.0.0.$a SYSTEM:"sleep 30" >/dev/null 2>&1 &
		PIDS="$PIDS $!"
	done
done
# all 32 openings held (none refused: no address is past its cap)
for _ in $(seq 100); do
	[ "$(ss -Htn state established "sport = :$PORT" | wc -l)" -ge 32 ] && break
	sleep 0.05
done
[ "$(ss -Htn state established "sport = :$PORT" | wc -l)" -ge 32 ] || fail "the 32 silent connections are not all up"
sleep 0.3
t0=$(millis)
"$RMIG" tunnel send 127.0.0.1:$PORT --expose echo="$T/e.sock" 2>"$T/send.err" &
SPID=$!
PIDS="$PIDS $SPID"
for _ in $(seq 100); do
	grep -q "connected to" "$T/send.err" && break
	kill -0 $SPID 2>/dev/null || break
	sleep 0.05
done
grep -q "connected to" "$T/send.err" || fail "the sender did not get in past 32 silent openings: $(cat "$T/send.err")"
ms=$(($(millis) - t0))
echo hello | timeout 10 socat -t 5 - UNIX-CONNECT:"$T/e.sock" >"$T/back" 2>/dev/null
[ "$(cat "$T/back")" = hello ] || fail "no stream through the tunnel"
grep -q "dropped: 32 unauthenticated connections at once, 4 from 127.0.0" "$T/recv.err" || fail "the door did not say it cut an opening"
pass "the sender got in within $ms ms past 32 silent openings from 8 addresses"
