#!/bin/bash
# rmig tunnel over real soft-RoCE, inside the rxe VM: with --transport auto
# both ends use RDMA (the receiver listens with rdma and tcp on one port,
# the sender tries rdma first), TLS 1.3 with a PSK over it; a stream
# through an echo server comes back byte for byte although the sender's
# rxe device is deleted in the middle of it: the link is lost, the sender
# connects again, over TCP now that RDMA no longer reaches the peer, and
# both ends send again what the other had not received.
# Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
RMIG=${RMIG:-build/rmig}
T=$(mktemp -d /tmp/rxe-tunnel.XXXXXX)
pass=0 fail=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
PIDS=""
DELETE=""
finish() {
	for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
	[ -n "$DELETE" ] && timeout 30 tail --pid="$DELETE" -f /dev/null
	wait 2>/dev/null
	rdma link show "$RXE_A_DEV" >/dev/null 2>&1 ||
		rdma link add "$RXE_A_DEV" type rxe netdev "$RXE_A_NETDEV" 2>/dev/null
	for _ in $(seq 50); do # as t_failover.sh's restore: until the port is up
		rdma link show "$RXE_A_DEV" 2>/dev/null | grep -q ACTIVE && break
		sleep 0.1
	done
	rm -rf "$T"
}
trap finish EXIT
head -c 32 /dev/urandom >"$T/psk" && chmod 600 "$T/psk"
command -v socat >/dev/null || { bad "socat is missing"; echo "$pass passed, $fail failed"; exit 1; }

socat UNIX-LISTEN:"$T/echo.sock",fork EXEC:cat 2>/dev/null &
PIDS="$PIDS $!"
"$RMIG" tunnel recv --listen "$RXE_B_IP:0" --transport auto --psk-file "$T/psk" \
	--forward echo="$T/echo.sock" 2>"$T/recv.err" &
PIDS="$PIDS $!"
port=""
for _ in $(seq 200); do
	port=$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$T/recv.err")
	[ -n "$port" ] && break
	sleep 0.05
done
[ -n "$port" ] || bad "the receiver did not listen: $(cat "$T/recv.err")"
"$RMIG" tunnel send "$RXE_B_IP:$port" --transport auto --device "$RXE_A_DEV" \
	--psk-file "$T/psk" --expose echo="$T/echo" 2>"$T/send.err" &
spid=$!
PIDS="$PIDS $spid"
for _ in $(seq 200); do
	grep -q "connected to" "$T/send.err" && break
	sleep 0.05
done
grep -q "connected to .* over rdma" "$T/send.err" && ok "the tunnel connected over rdma" ||
	bad "not over rdma: $(cat "$T/send.err")"
grep -q "connected over rdma" "$T/recv.err" && ok "the receiver took it over rdma" ||
	bad "the receiver: $(cat "$T/recv.err")"

# 8 MiB through the echo server, a 256 KiB chunk every 50 ms; the sender's
# device is deleted 0.6 s into it.
head -c 8M /dev/urandom >"$T/f"
(for i in $(seq 0 31); do
	dd if="$T/f" bs=256K skip=$i count=1 2>/dev/null
	sleep 0.05
done) | timeout 60 socat -t 30 - UNIX-CONNECT:"$T/echo" >"$T/f.back" 2>"$T/f.socat" &
echo_pid=$!
sleep 0.6
# In the background: the kernel completes the removal only once every
# process that opened the device has closed it, and librdmacm keeps it open
# until the process exits (the engine's failover test sees the same).
rdma link delete "$RXE_A_DEV" &
DELETE=$!
if wait $echo_pid && cmp -s "$T/f" "$T/f.back"; then
	ok "8 MiB came back byte for byte across the lost RDMA link"
else
	bad "the stream across the lost RDMA link: $(cat "$T/f.socat") $(cmp "$T/f" "$T/f.back" 2>&1)"
fi
grep -q "reconnected over tcp" "$T/send.err" && ok "the sender came back over tcp: $(grep -m1 'back:' "$T/send.err")" ||
	bad "the sender did not come back over tcp: $(tail -n 4 "$T/send.err")"
kill -0 $spid 2>/dev/null && ok "the sender runs on" || bad "the sender died: $(tail -n 2 "$T/send.err")"
if [ "$fail" != 0 ]; then
	for f in "$T"/send.err "$T"/recv.err; do echo "--- $(basename "$f")"; tail -n 15 "$f"; done
fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
