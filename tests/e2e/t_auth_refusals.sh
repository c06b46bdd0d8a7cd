#!/bin/bash
# Who may migrate, and what a receiver refuses. Each refusal: a non-zero exit
# with its own one-line message; the receiver names the refused peer; a
# --keep-listening receiver survives every bad peer and then serves a valid
# migration.
. "$(dirname "$0")/lib.sh"
FAKEPEER=${FAKEPEER:-$(dirname "$RMIG")/tests/fakepeer}
[ -x "$FAKEPEER" ] || fail "$FAKEPEER not built (make unit)"
GUEST=sim:size=16M,dirty-rate=2000
head -c 32 /dev/urandom >"$T/key_a" && chmod 600 "$T/key_a"
head -c 32 /dev/urandom >"$T/key_b" && chmod 600 "$T/key_b"

# run_pair NAME "RECV OPTS" "SEND OPTS": one migration; sets SRC/DST exit codes.
# A refused peer does not end a receiver (it would let anyone stop it): it
# goes on waiting, here for 3 s, then exits 1 saying nobody connected.
run_pair() {
	start_recv "$1-recv" --backend sim --accept-timeout-ms 3000 $2
	SRC=0
	"$RMIG" send --json --backend $GUEST $3 127.0.0.1:$PORT >"$T/$1-send.out" 2>"$T/$1-send.err" || SRC=$?
	wait_pid "$RECV_PID" 15
	DST=$RC
}

# The same key on both sides: migrated and verified.
run_pair good "--psk-file $T/key_a" "--psk-file $T/key_a"
expect_eq "same key: send exit" "$SRC" 0
expect_eq "same key: recv exit" "$DST" 0
expect_eq "same key: verified" "$(summary "$T/good-recv.out" verified)" true

# Wrong key: both refuse, nothing migrates, the source keeps running.
run_pair wrong "--psk-file $T/key_a" "--psk-file $T/key_b"
expect_eq "wrong key: send exit" "$SRC" 1
expect_eq "wrong key: recv exit" "$DST" 1
grep -q "does not hold our pre-shared key" "$T/wrong-send.err" || fail "wrong key: sender's message"
grep -q "refused peer 127.0.0.1:[0-9]*: authentication failed" "$T/wrong-recv.err" ||
	fail "wrong key: the receiver does not log the refused peer's address"
expect_eq "wrong key: source guest runs" "$(summary "$T/wrong-send.out" guest_running)" true

# A receiver that requires a key, a sender without one.
run_pair nokey "--psk-file $T/key_a" ""
expect_eq "no key: send exit" "$SRC" 1
grep -q "has no pre-shared key (or its HELLO was altered on the way), but this receiver requires one" "$T/nokey-recv.err" ||
	fail "no key: receiver's message"
grep -q "has no pre-shared key" "$T/nokey-send.err" || fail "no key: sender's message"

# A sender with a key, a receiver without.
run_pair nokey2 "" "--psk-file $T/key_a"
expect_eq "receiver without key: send exit" "$SRC" 1
grep -q "uses a pre-shared key, this receiver has none" "$T/nokey2-recv.err" ||
	fail "receiver without key: receiver's message"

# A key file others can read is refused before anything starts.
chmod 644 "$T/key_b"
rc=0
"$RMIG" send --psk-file "$T/key_b" --backend $GUEST 127.0.0.1:1 2>"$T/mode.err" || rc=$?
expect_eq "world-readable key: exit" "$rc" 2
grep -q "readable by group or others" "$T/mode.err" || fail "world-readable key: message"

# Hostile senders against one --keep-listening receiver, then a valid one.
start_recv keep --backend sim --keep-listening --link-timeout-ms 1000
for c in version:"version mismatch: peer speaks 9..9" \
	huge:"does not fit in this host.s [0-9]* MiB of memory and swap" \
	layout:"layout not a sim guest" \
	past:"past the end\|outside\|beyond" \
	truncated:"silent for"; do
	name=${c%%:*} want=${c#*:}
	out=$(timeout 30 "$FAKEPEER" 127.0.0.1 "$PORT" "$name") || fail "$name: receiver did not refuse ($out)"
	grep -q "$want" <<<"$out" || fail "$name: refusal '$out' does not say '$want'"
	kill -0 "$RECV_PID" 2>/dev/null || fail "$name: the receiver died"
done
rc=0
"$RMIG" send --json --backend $GUEST 127.0.0.1:$PORT >"$T/after.out" 2>"$T/after.err" || rc=$?
expect_eq "valid migration after hostile peers: exit" "$rc" 0
expect_eq "valid migration after hostile peers: verified" "$(summary "$T/after.out" verified)" true
kill -TERM "$RECV_PID"
wait_pid "$RECV_PID" 10
expect_eq "keep-listening receiver exit on SIGTERM" "$RC" 0

# Without a key, non-loopback peers are refused unless --insecure. A veth
# pair gives this host a non-loopback address.
if [ "$(id -u)" != 0 ]; then
	[ "${CI:-}" = true ] && fail "needs root for the non-loopback case"
	skip "non-loopback refusal needs root (ip link add ... type veth)"
fi
DUMMY=rmigd$$
ADDR=10.213.$(($$ % 200)).1
ip link add "$DUMMY" type veth peer name "${DUMMY}p" && ip addr add "$ADDR/32" dev "$DUMMY" &&
	ip link set "$DUMMY" up && ip link set "${DUMMY}p" up || fail "cannot create a veth pair"
trap 'ip link del "$DUMMY" 2>/dev/null; cleanup' EXIT
# start_remote NAME [opts]: a receiver on the non-loopback address.
start_remote() {
	local n=$1
	shift
	"$RMIG" recv --listen "$ADDR:0" --json --backend sim "$@" >"$T/$n.out" 2>"$T/$n.err" &
	RECV_PID=$!
	PIDS="$PIDS $RECV_PID"
	for _ in $(seq 100); do
		PORT=$(jq -r 'select(.event=="listening") | .port' "$T/$n.out" 2>/dev/null)
		[ -n "$PORT" ] && return
		sleep 0.05
	done
	fail "$n: receiver did not listen"
}
start_remote remote-recv
rc=0
"$RMIG" send --backend $GUEST "$ADDR:$PORT" 2>"$T/remote-send.err" || rc=$?
expect_eq "non-loopback without key: send exit" "$rc" 1
grep -q "refusing unauthenticated peer $ADDR:$PORT" "$T/remote-send.err" ||
	fail "non-loopback: the sender's message"
# The library names config fields (config.psk); the CLI speaks of its flags.
grep -q -- "same --psk-file (or --insecure on a trusted network)" "$T/remote-send.err" ||
	fail "non-loopback: the sender's message does not name --psk-file and --insecure"
! grep -q "config\." "$T/remote-send.err" || fail "non-loopback: a config field leaked to the CLI"
# The sender refused before connecting: the receiver is still waiting, and
# refuses a sender that would talk (--insecure on its side only).
kill -0 "$RECV_PID" 2>/dev/null || fail "the receiver was consumed by a sender that refused"
kill "$RECV_PID" 2>/dev/null
start_remote remote-recv2 --accept-timeout-ms 3000
rc=0
"$RMIG" send --insecure --backend $GUEST "$ADDR:$PORT" 2>"$T/remote-send2.err" || rc=$?
expect_eq "sender --insecure, receiver not: send exit" "$rc" 1
wait_pid "$RECV_PID" 10
grep -q "refused peer $ADDR:[0-9]*: refusing unauthenticated peer" "$T/remote-recv2.err" ||
	fail "non-loopback: the receiver does not log the refused peer"
start_remote ins-recv --insecure
rc=0
"$RMIG" send --insecure --json --backend $GUEST "$ADDR:$PORT" >"$T/ins-send.out" 2>"$T/ins-send.err" || rc=$?
expect_eq "both --insecure: send exit" "$rc" 0
wait_pid "$RECV_PID" 10
expect_eq "both --insecure: verified" "$(summary "$T/ins-recv.out" verified)" true
pass "refusals: wrong/missing key, mode, version, 1 TiB, layout, page past region, truncated, non-loopback"
