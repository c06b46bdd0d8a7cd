#!/bin/bash
# Without a key (loopback) anyone at the destination's address completes
# the opening; one that then sends heartbeats in place of an answer
# (faultproxy --impostor-hb) must not hold the source past its time:
#   question  after a lost GO the source asks whether the guest started:
#             it ends unknown (4), its guest paused, within its commit
#             timeout and a link timeout of slack;
#   failover  a link cut in pre-copy, the impostor in place of the
#             destination for good: the source gives up by its failover
#             timeout and rolls back (3), its guest running;
#   trickle   the same, the impostor sending its HELLO a byte at a time,
#             each just inside the link timeout (--impostor-trickle);
#   tls-trickle  the same with --tls: the impostor trickles the source's
#             ClientHello back (--raw --impostor-trickle); the error names
#             the TLS handshake and its time.
. "$(dirname "$0")/lib.sh"

# cut_for_good: the proxy's blackhole on (from now on the impostor answers
# every connection); waits for the sender (its exit code in SRC, the ms
# from the cut in ms), the proxy and the receiver.
cut_for_good() {
	local t0
	kill -HUP $PROXY_PID
	t0=$(millis)
	wait_pid $SEND_PID 40
	ms=$(($(millis) - t0))
	SRC=$RC
	kill -TERM $PROXY_PID
	wait_pid $PROXY_PID 20
	wait_pid "$RECV_PID" 30
}

# failover_ms FILE: the ms from the sender's failover to its rollback.
failover_ms() {
	jq -rs '(map(select(.event=="phase" and .phase=="failover"))[0].ts) as $a |
		(map(select(.event=="phase" and .phase=="rolled-back"))[0].ts) as $b | $b - $a' "$1"
}

COMMON=(--transport tcp --no-tls --link-timeout-ms 1000 --commit-timeout-ms 3000)
RMIG_TEST_HOLD=migrated:2000 start_recv recv --backend sim "${COMMON[@]}"
start_faultproxy question --impostor-hb
send_to_hold send "${COMMON[@]}" --backend sim:size=16M,seed=9
cut_for_good

phases=$(jq -r 'select(.event=="phase") | .phase' "$T/send.out" | tr '\n' ' ')
[[ $phases == *asking* ]] || fail "test timing: the sender never asked (phases: $phases)"
grep -q "held by the impostor" "$T/question-proxy.err" ||
	fail "the impostor held nobody: $(cat "$T/question-proxy.err")"
expect_eq "source exit" "$SRC" 4
expect_eq "source result" "$(summary "$T/send.out" result)" unknown
# The cut is seen after 1 s (link timeout), then 3 s of questions, 1 s of slack
# for an attempt's last read, 1 s for the rest.
[ "$ms" -le 6000 ] || fail "the impostor held the source $ms ms after the cut (at most 6000)"
first="question: the impostor's heartbeats held the source $ms ms after the cut; it ended unknown (exit 4)"

# impostor_failover NAME MAX_MS FAULTPROXY_OPTION...: a sender cut in
# pre-copy, the impostor in place of the destination for good: the sender
# rolls back (3), its guest running, within MAX_MS of its failover's start
# (its 3 s, then what a read may take past them, the rollback). Without the
# failover's deadline the impostor held it for as long as it liked (15 s,
# its own limit). (The cut itself is noticed only once the paced sender's
# socket buffers are full: seconds, not measured here.) Sets fo_ms.
impostor_failover() {
	local n=$1 max=$2
	shift 2
	start_recv "$n-recv" --backend sim "${COMMON[@]}"
	start_faultproxy "$n" "$@"
	send_in_precopy "$n-send" "${COMMON[@]}"
	cut_for_good
	grep -q "held by the impostor" "$T/$n-proxy.err" ||
		fail "$n: the impostor held nobody: $(cat "$T/$n-proxy.err")"
	expect_eq "$n: source exit" "$SRC" 3
	expect_eq "$n: source result" "$(summary "$T/$n-send.out" result)" rolled_back
	expect_eq "$n: source guest running" "$(summary "$T/$n-send.out" guest_running)" true
	fo_ms=$(failover_ms "$T/$n-send.out")
	[ -n "$fo_ms" ] && [ "$fo_ms" -le "$max" ] ||
		fail "$n: the impostor held the failover ${fo_ms:-?} ms (at most $max; $ms ms after the cut)"
}

COMMON=(--transport tcp --no-tls --link-timeout-ms 1000 --failover-timeout-ms 3000)
# Heartbeats come whole: the deadline is checked at each (250 ms apart);
# 1.25 s of slack.
impostor_failover failover 4500 --impostor-hb
second="failover: given up $fo_ms ms after it began ($ms ms after the cut), rolled back (exit 3), the guest running"
# The impostor trickles its HELLO a byte every 600 ms, well inside the 1 s
# link timeout: each read goes on, and the failover's deadline must cut the
# frame short, not wait for its end (88 bytes, 53 s; the impostor stops at
# 15 s): a read may go on one link timeout past the deadline (as with a
# silent peer), 1.5 s of slack.
impostor_failover trickle 5500 --impostor-trickle 600
third="trickled HELLO: given up $fo_ms ms after the failover began"
# The same inside TLS: the impostor sends the source's ClientHello back a
# byte every 600 ms, a record that takes 2-3 minutes, each byte inside the
# link timeout. The handshake's time bounds the whole handshake.
PSK=$T/psk
head -c 32 /dev/urandom >"$PSK"
chmod 600 "$PSK"
COMMON=(--transport tcp --tls --psk-file "$PSK" --link-timeout-ms 1000 --failover-timeout-ms 3000)
impostor_failover tls-trickle 5500 --raw --impostor-trickle 600
# The last attempt ends either way: out of the handshake's time, or on a
# wait the impostor's 600 ms outlasted (the attempt had less left).
grep -Eq "failover to tcp failed: TLS handshake with .*: (not complete within|peer .* silent for) [0-9]+ ms" \
	"$T/tls-trickle-send.err" ||
	fail "tls-trickle: the source's error does not name the TLS handshake and its time: $(tail -n 2 "$T/tls-trickle-send.err")"
expect_eq "tls-trickle: encrypted" "$(summary "$T/tls-trickle-send.out" encrypted)" true
pass "$first; $second; $third; trickled ClientHello: given up $fo_ms ms after the failover began"
