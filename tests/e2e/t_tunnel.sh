#!/bin/bash
# rmig tunnel over loopback: streams byte for byte both ways (8 MiB through
# an echo server, half-close carried each way: the client's EOF ends the
# server, whose EOF ends the client), several streams at once, a stream
# whose reader never reads stalls neither the others nor the receiver's
# memory (per-stream window); each refusal is one line and the tunnel lives
# on: a name not forwarded, a missing destination socket, a peer without the
# key or with another key (and x509 credentials work as a key does), a flood of connections beyond the stream limit.
. "$(dirname "$0")/lib.sh"
command -v socat >/dev/null || fail "socat is missing (scripts/deps.sh installs it)"
head -c 32 /dev/urandom >"$T/key" && chmod 600 "$T/key"
head -c 32 /dev/urandom >"$T/key2" && chmod 600 "$T/key2"

socat UNIX-LISTEN:"$T/echo.sock",fork,backlog=600 EXEC:cat 2>/dev/null &
PIDS="$PIDS $!"
# A server that accepts and never reads.
socat UNIX-LISTEN:"$T/sink.sock",fork SYSTEM:"sleep 20" 2>/dev/null &
PIDS="$PIDS $!"

# start_tunnel NAME PORT_FILE RECV_OPTS... -- SEND_OPTS...: a receiver on a
# free port (read from its "listening" line) and a sender to it.
start_pair() {
	local n=$1 ropts=() sopts=()
	shift
	while [ $# -gt 0 ] && [ "$1" != -- ]; do ropts+=("$1"); shift; done
	shift
	sopts=("$@")
	"$RMIG" tunnel recv --listen 127.0.0.1:0 --forward echo="$T/echo.sock" \
		--forward sink="$T/sink.sock" --forward gone="$T/nothing.sock" "${ropts[@]}" \
		2>"$T/$n-recv.err" &
	RPID=$!
	PIDS="$PIDS $RPID"
	PORT=""
	for _ in $(seq 100); do
		PORT=$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$T/$n-recv.err")
		[ -n "$PORT" ] && break
		sleep 0.05
	done
	[ -n "$PORT" ] || fail "$n: the receiver did not listen"
	mkdir -p "$T/$n"
	"$RMIG" tunnel send 127.0.0.1:$PORT --expose echo="$T/$n/echo" --expose sink="$T/$n/sink" \
		--expose gone="$T/$n/gone" --expose nope="$T/$n/nope" "${sopts[@]}" \
		2>"$T/$n-send.err" &
	SPID=$!
	PIDS="$PIDS $SPID"
	for _ in $(seq 100); do
		grep -q "connected to" "$T/$n-send.err" && return 0
		kill -0 $SPID 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

# echo_through DIR FILE: FILE through the echo forward and back, exact.
echo_through() {
	timeout 60 socat -t 30 UNIX-CONNECT:"$1/echo" - <"$2" >"$2.back" 2>"$2.socat" ||
		fail "socat through the tunnel failed: $(cat "$2.socat")"
	cmp -s "$2" "$2.back" || fail "$(basename "$2") came back different"
}

start_pair plain || fail "the tunnel did not connect"
[ "$(stat -c %a "$T/plain/echo")" = 600 ] || fail "exposed socket mode is not 0600"
head -c 8M /dev/urandom >"$T/big"
t0=$(millis)
echo_through "$T/plain" "$T/big"
# The client waits up to 30 s for the far end's EOF: far less means it came.
[ $(($(millis) - t0)) -lt 20000 ] || fail "the half-close was not carried back"

# A reader that never reads: its stream stops at its window, the others go on.
head -c 20M /dev/zero | timeout 60 socat -u - UNIX-CONNECT:"$T/plain/sink" 2>/dev/null &
SINK=$!
PIDS="$PIDS $SINK"
sleep 1
for i in 1 2 3 4; do
	head -c 2M /dev/urandom >"$T/par$i"
	echo_through "$T/plain" "$T/par$i" &
	PAR="${PAR:-} $!"
done
for p in $PAR; do wait "$p" || fail "a parallel stream failed"; done
rss=$(awk '/VmRSS/ { print $2 }' /proc/$RPID/status)
[ "$rss" -lt 65536 ] || fail "the receiver grew to $rss KiB behind a stalled reader"
kill "$SINK" 2>/dev/null

# Refusals: one line each, the tunnel carries on.
echo x | timeout 10 socat -t 5 - UNIX-CONNECT:"$T/plain/nope" >/dev/null 2>&1
echo x | timeout 10 socat -t 5 - UNIX-CONNECT:"$T/plain/gone" >/dev/null 2>&1
grep -q "refused: no --forward named 'nope'" "$T/plain-recv.err" || fail "no refusal of nope"
grep -q "refused: $T/nothing.sock: No such file" "$T/plain-recv.err" ||
	fail "no refusal of the missing socket"
grep -q "refused by the peer: no --forward named 'nope'" "$T/plain-send.err" ||
	fail "the sender did not say why nope was refused"
echo_through "$T/plain" "$T/par1"

# A flood beyond the 256-stream limit: the extra connections are refused in
# a line each, and once they are gone the tunnel serves again.
for i in $(seq 270); do
	socat UNIX-CONNECT:"$T/plain/echo" EXEC:"sleep 20" >/dev/null 2>&1 &
	FLOOD="${FLOOD:-} $!"
done
for _ in $(seq 200); do
	grep -q "streams open already" "$T/plain-send.err" && break
	sleep 0.1
done
grep -q "streams open already (the limit)" "$T/plain-send.err" || fail "no refusal beyond the limit"
for p in $FLOOD; do kill "$p" 2>/dev/null; done
wait $FLOOD 2>/dev/null
sleep 1
echo_through "$T/plain" "$T/par2"
kill -0 $RPID && kill -0 $SPID || fail "a tunnel end died"
kill $SPID $RPID
wait $SPID $RPID 2>/dev/null

# With a key: TLS 1.3 (external PSK); a sender without it or with another
# one is refused in one line and the receiver serves the next.
start_pair psk --psk-file "$T/key" -- --psk-file "$T/key" || fail "the PSK tunnel did not connect"
echo_through "$T/psk" "$T/par3"
kill $SPID $RPID
wait $SPID $RPID 2>/dev/null
# x509 credentials (scripts/tls_creds.sh, QEMU's layout) instead of a key.
"$(dirname "$0")/../../scripts/tls_creds.sh" "$T/creds" >/dev/null 2>&1 || fail "tls_creds.sh failed"
start_pair x509 --tls-creds "$T/creds" -- --tls-creds "$T/creds" || fail "the x509 tunnel did not connect"
echo_through "$T/x509" "$T/par4"
kill $SPID $RPID
wait $SPID $RPID 2>/dev/null
start_pair nokey --psk-file "$T/key" -- && fail "a sender without the key connected"
for _ in $(seq 100); do grep -q "requires TLS" "$T/nokey-recv.err" && break; sleep 0.05; done
grep -q "speaks in clear, but this receiver requires TLS" "$T/nokey-recv.err" ||
	fail "no one-line refusal of a sender without the key"
kill $RPID 2>/dev/null
start_pair otherkey --psk-file "$T/key" -- --psk-file "$T/key2" && fail "another key connected"
for _ in $(seq 100); do grep -q "TLS" "$T/otherkey-recv.err" && break; sleep 0.05; done
grep -q "TLS" "$T/otherkey-recv.err" || fail "no one-line refusal of another key"
grep -q "TLS" "$T/otherkey-send.err" || fail "the sender with another key did not say why"
kill $RPID 2>/dev/null
start_pair clearsend -- --psk-file "$T/key" && fail "a TLS sender connected to a clear receiver"
for _ in $(seq 100); do grep -q "speaks TLS" "$T/clearsend-recv.err" && break; sleep 0.05; done
grep -q "speaks TLS: give both ends the same --psk-file" "$T/clearsend-recv.err" ||
	fail "a clear receiver did not name the TLS sender"
kill $RPID 2>/dev/null
# The tool's lines name its flags, never the library's config fields.
! grep -h "config\." "$T"/*.err || fail "a line names a config field instead of a flag"
grep -q "does not hold our pre-shared key (--psk-file)" "$T/otherkey-recv.err" ||
	fail "the refusal of another key does not name --psk-file"
pass "8 MiB echoed, 4 parallel streams beside a stalled one (receiver ${rss} KiB), refusals, flood, PSK, x509"
