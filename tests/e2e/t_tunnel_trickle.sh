#!/bin/bash
# timeout: 90
# A peer that passes the door (HELLO: on loopback in clear, anyone local
# does; with a key, anyone holding it) and then trickles its STATE, a byte
# every 5 s, each byte within the link's 10 s silence limit. The receiver
# must cut it within its opening's time (10 s) and serve the next sender.
# (Before: the receiver's one thread read that STATE for as long as the
# bytes kept coming, 12008 of them here: nearly 17 hours, and no sender
# got in meanwhile.)
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
# HELLO (version 2, no flags, a token), then a STATE header for 500
# entries (12008 bytes), then its bytes one every 5 s.
hello='\0\0\0\0\0\0\0\x1c\x01\0\0\0RMTN\0\0\0\x02\0\0\0\0abcdefghijklmnop'
(printf "$hello"; sleep 0.5; printf '\0\0\0\0\0\0\x2e\xe8\x08\0\0\0'
	for _ in $(seq 12); do sleep 5; printf '\0'; done) |
	timeout 70 socat -u - TCP:127.0.0.1:$PORT >/dev/null 2>&1 &
TRICKLE=$!
PIDS="$PIDS $TRICKLE"
for _ in $(seq 100); do grep -q "connected" "$T/recv.err" && break; sleep 0.05; done
grep -q "connected" "$T/recv.err" && fail "the trickling peer's opening completed"
sleep 4
t0=$(millis)
"$RMIG" tunnel send 127.0.0.1:$PORT --expose echo="$T/e.sock" 2>"$T/send.err" &
SPID=$!
PIDS="$PIDS $SPID"
for _ in $(seq 300); do
	grep -q "connected to" "$T/send.err" && break
	kill -0 $SPID 2>/dev/null || break
	sleep 0.05
done
grep -q "connected to" "$T/send.err" || fail "no sender got in behind a peer trickling its STATE: $(cat "$T/send.err")"
ms=$(($(millis) - t0))
echo hello | timeout 10 socat -t 5 - UNIX-CONNECT:"$T/e.sock" >"$T/back" 2>/dev/null
[ "$(cat "$T/back")" = hello ] || fail "no stream through the tunnel"
grep -q "127.0.0.1:[0-9]*: .*" "$T/recv.err" || fail "no line about the trickling peer"
pass "a sender got in $ms ms after a peer began trickling its STATE"
