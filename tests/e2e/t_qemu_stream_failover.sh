#!/bin/bash
# A real QEMU guest (tests/qemu) migrated by rmig's qemu backend over TCP
# through tests/tools/faultproxy, which resets every connection when the
# sender sends a given STREAM frame (--cut-on): the link is lost while
# QEMU's own migration stream flows, which cannot be rewound. The sender
# must fail over and replay from the offset the destination says it wrote:
#   once    one cut mid-stream: both sides say migrated, failovers 1 in both
#           summaries, stream bytes replayed > 0, the destination runs the
#           guest and its counter goes on from the source's without a gap
#           or a repeat (each byte handed to the destination QEMU once);
#   twice   two cuts: the same with failovers 2;
#   end     a cut on STATE, after the whole stream was written: failovers
#           1, nothing replayed, the end (state, COMPLETE) sent again;
#   none    one cut with --failover none: both sides roll back (exit 3) and
#           the source QEMU runs on, counting without a gap.
# The proxy reads each cut frame whole before it cuts (--cut-whole): the
# sender has handed all of it to the network and counts it as sent, while
# the destination never got it, so the replay is never empty. (Cut as the
# frame begins, the sender's own send of a large frame could fail: it then
# resumed exactly where the destination was and replayed nothing, 1 run in
# 8 in the CI logs of 2026-12-06.)
# Skips only if QEMU or the kernel cannot be had.
# timeout: 400
. "$(dirname "$0")/lib.sh"
set -o pipefail
qemu_guest_or_skip

PROXY=${FAULTPROXY:-$(dirname "$RMIG")/tests/faultproxy}
[ -x "$PROXY" ] || fail "$PROXY is missing (make $(dirname "$RMIG")/tests/faultproxy)"
# The first cut comes this many STREAM frames in, the next as many after
# it; QEMU's stream of the 256 MiB guest is some 130 MB, read in pieces of
# at most 1 MiB, so both fall mid-stream.
CUT_AT=${CUT_AT:-40}

# migrate CASE FAILOVER FRAME...: source and destination QEMU, a receiver,
# a proxy cutting on each FRAME (TYPE:N) in turn, a sender through it; exit
# codes in SEND_RC and RECV_RC, outputs in $T/CASE-*.
migrate() {
	local c=$1 failover=$2 proxy cut_args=() sender f
	shift 2
	for f in "$@"; do cut_args+=(--cut-on "$f"); done
	guest_start "$c-src" || fail "$c: $GUEST_ERROR"
	guest_wait_counter "$c-src" 20 90 || fail "$c: $GUEST_ERROR"
	guest_start_dst "$c-dst" || fail "$c: $GUEST_ERROR"
	start_recv "$c-recv" --transport tcp --failover "$failover" \
		--backend "qemu:qmp=$(guest_qmp_socket "$c-dst")"
	"$PROXY" 0 "127.0.0.1:$PORT" --ready-file "$T/$c-proxy.port" --cut-whole "${cut_args[@]}" \
		2>"$T/$c-proxy.err" &
	proxy=$!
	PIDS="$PIDS $proxy"
	for _ in $(seq 100); do [ -s "$T/$c-proxy.port" ] && break; sleep 0.05; done
	[ -s "$T/$c-proxy.port" ] || fail "$c: the proxy did not start"
	"$RMIG" send --json --transport tcp --failover "$failover" \
		--backend "qemu:qmp=$(guest_qmp_socket "$c-src")" \
		"127.0.0.1:$(cat "$T/$c-proxy.port")" >"$T/$c-send.out" 2>"$T/$c-send.err" &
	sender=$!
	PIDS="$PIDS $sender"
	wait_pid "$sender" 90
	SEND_RC=$RC
	wait_pid "$RECV_PID" 30
	RECV_RC=$RC
	kill -TERM "$proxy"
	wait_pid "$proxy" 10
	[ "$(grep -c '^faultproxy: cut on ' "$T/$c-proxy.err")" = $# ] ||
		fail "$c: the proxy did not cut $# times ($*; the stream ended first?)"
}

# counter_goes_on CASE FROM TO: TO's console continues FROM's (or FROM's
# own, if TO is empty), and keeps counting.
counter_goes_on() {
	local c=$1 from=$2 to=$3 last c0 seq
	last=$(guest_counters "$(guest_log "$c-$from")" | tail -n1)
	c0=$(guest_counter "$c-${to:-$from}")
	guest_wait_counter "$c-${to:-$from}" $((c0 + 10)) 20 ||
		fail "$c: the counter stopped at $(guest_counter "$c-${to:-$from}") (was $c0)"
	if [ -n "$to" ]; then
		seq=$(guest_check_seq "$(guest_log "$c-$from")" "$(guest_log "$c-$to")") ||
			fail "$c: counter across the migration (source's last: $last): $seq"
	else
		seq=$(guest_check_seq "$(guest_log "$c-$from")") || fail "$c: source's counter: $seq"
	fi
	SEQ=$seq
}

# failed_over CASE REPLAYS FRAME...: migrated through a failover per FRAME,
# replaying some stream (REPLAYS 1) or none (0).
failed_over() {
	local c=$1 replays=$2 n=$(($# - 2)) replayed
	shift 2
	migrate "$c" tcp "$@"
	expect_eq "$c: send exit code" "$SEND_RC" 0
	expect_eq "$c: recv exit code" "$RECV_RC" 0
	expect_eq "$c: source result" "$(summary "$T/$c-send.out" result)" migrated
	expect_eq "$c: destination result" "$(summary "$T/$c-recv.out" result)" migrated
	expect_eq "$c: source failovers" "$(summary "$T/$c-send.out" failovers)" "$n"
	expect_eq "$c: destination failovers" "$(summary "$T/$c-recv.out" failovers)" "$n"
	expect_eq "$c: stream verified" "$(summary "$T/$c-recv.out" verified)" true
	replayed=$(summary "$T/$c-send.out" stream_replayed_bytes)
	if [ "$replays" = 1 ]; then
		[ "${replayed:-0}" -gt 0 ] || fail "$c: stream_replayed_bytes is '$replayed', expected > 0"
	else
		expect_eq "$c: stream_replayed_bytes" "$replayed" 0
	fi
	expect_eq "$c: destination QEMU status" "$(guest_status "$c-dst")" "running true"
	st=$(guest_status "$c-src")
	case $st in
	"postmigrate false" | gone) ;;
	*) fail "$c: source QEMU is '$st' after the migration" ;;
	esac
	counter_goes_on "$c" src dst
	RESULT="$RESULT; $c: failovers $n, $replayed bytes replayed, counter $SEQ"
	guest_kill "$c-src"
	guest_kill "$c-dst"
}

RESULT=""
failed_over once 1 "STREAM:$CUT_AT"
failed_over twice 1 "STREAM:$CUT_AT" "STREAM:$CUT_AT"
failed_over end 0 STATE

migrate none none "STREAM:$CUT_AT"
expect_eq "none: send exit code" "$SEND_RC" 3
expect_eq "none: source result" "$(summary "$T/none-send.out" result)" rolled_back
[ "$RECV_RC" -ne 0 ] || fail "none: the receiver exited 0"
expect_eq "none: source failovers" "$(summary "$T/none-send.out" failovers)" 0
expect_eq "none: source QEMU status" "$(guest_status none-src)" "running true"
counter_goes_on none src ""
pass "${RESULT#; }; none: rolled back, source counter $SEQ"
