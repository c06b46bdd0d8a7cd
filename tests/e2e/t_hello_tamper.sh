#!/bin/bash
# Someone on the path edits a HELLO: with a pre-shared key and no TLS
# (--no-tls, loopback), faultproxy clears RMIG_CAP_CHUNK_DIGESTS (0x4) in
# the destination's HELLO on its way back, then in the source's on its way
# there; either would quietly switch the pause's check to the slower
# whole-memory digest. Both AUTH proofs cover both HELLOs, so the receiver
# refuses the sender's proof, the sender names the cause, and nothing about
# the guest is taken; the receiver then serves the next sender. The same
# proxy without the edit: migrated, verified.
. "$(dirname "$0")/lib.sh"

[ -x "$(dirname "$RMIG")/tests/faultproxy" ] || fail "faultproxy is missing (make unit)"
head -c 32 /dev/urandom >"$T/psk" && chmod 600 "$T/psk"
COMMON=(--psk-file "$T/psk" --no-tls --link-timeout-ms 5000)

# through NAME [proxy options]: one migration through the proxy.
through() {
	local n=$1
	shift
	start_recv "recv-$n" --backend sim "${COMMON[@]}"
	start_faultproxy "$n" "$@"
	SEND_RC=0
	timeout 30 "$RMIG" send --json "${COMMON[@]}" --backend sim:size=16M,seed=5 \
		"127.0.0.1:$PPORT" >"$T/send-$n.out" 2>"$T/send-$n.err" || SEND_RC=$?
	kill -TERM $PROXY_PID
	wait_pid $PROXY_PID 10
}

through plain
wait_pid "$RECV_PID" 20
expect_eq "untouched: receiver exit" "$RC" 0
expect_eq "untouched: sender exit" "$SEND_RC" 0
expect_eq "untouched: source result" "$(summary "$T/send-plain.out" result)" migrated
expect_eq "untouched: verified" "$(summary "$T/send-plain.out" verified)" true

# tampered NAME WHICH OPTION: through the proxy editing one HELLO (WHICH:
# the proxy's word for it): refused on both sides, the cause named.
tampered() {
	local n=$1 which=$2
	shift 2
	through "$n" "$@" 0x4
	grep -q "cleared caps 0x4 in the HELLO$which" "$T/$n-proxy.err" ||
		fail "$n: the proxy did not edit the HELLO: $(cat "$T/$n-proxy.err")"
	[ "$SEND_RC" != 0 ] || fail "$n: the sender migrated through an edited HELLO"
	[ "$(wc -l <"$T/send-$n.err")" = 1 ] ||
		fail "$n: sender: expected one line, got: $(cat "$T/send-$n.err")"
	grep -q "HELLOs were altered on the way" "$T/send-$n.err" ||
		fail "$n: the sender does not name the edit: $(cat "$T/send-$n.err")"
	grep -q "refused peer 127.0.0.1:[0-9]*: .*HELLOs were altered" "$T/recv-$n.err" ||
		fail "$n: the receiver does not name the edit: $(cat "$T/recv-$n.err")"
	[ "$(summary "$T/send-$n.out" result)" != migrated ] || fail "$n: source says migrated"
	[ "$(summary "$T/recv-$n.out" result)" != migrated ] || fail "$n: destination says migrated"
	jq -e 'select(.event=="phase" and .phase=="pre-copy")' "$T/send-$n.out" >/dev/null 2>&1 &&
		fail "$n: the sender reached pre-copy"
}

# The destination's HELLO, edited on its way back (the source would think
# the destination cannot check chunk digests).
tampered back " back" --clear-caps-back
kill -TERM "$RECV_PID" 2>/dev/null
wait_pid "$RECV_PID" 10
# The source's, edited on its way there; this receiver then serves the
# next sender.
tampered cleared "" --clear-caps
# The receiver serves the next sender, straight this time.
timeout 30 "$RMIG" send --json "${COMMON[@]}" --backend sim:size=16M,seed=5 "127.0.0.1:$PORT" \
	>"$T/send-next.out" 2>"$T/send-next.err" || fail "the next sender failed: $(cat "$T/send-next.err")"
wait_pid "$RECV_PID" 20
expect_eq "receiver exit after serving the next sender" "$RC" 0
expect_eq "the next sender's result" "$(summary "$T/send-next.out" result)" migrated
pass "untouched: migrated, verified; caps cleared on the path, either way: refused on both sides, the next sender served ($(cat "$T/send-cleared.err"))"
