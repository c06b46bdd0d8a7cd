#!/bin/bash
# Summaries count what actually moved, also when a migration is rolled back
# part-way: rounds as they start, bytes and pages as they go. The sender
# runs through faultproxy, which counts the bytes it forwards on the data
# streams; both summaries' bytes_sent must match that within one frame (one
# data channel: at most one frame is cut in two). Two endings, each 3 times:
#   cancel  SIGINT on the sender 1.5 s into pre-copy round 1 (50 MB/s);
#   cut     the proxy resets every connection after 20 MiB of data
#           (--failover none: both sides roll back).
# Prints, per run, the proxy's count and each summary's difference to it.
. "$(dirname "$0")/lib.sh"

PROXY=${FAULTPROXY:-$(dirname "$RMIG")/tests/faultproxy}
[ -x "$PROXY" ] || fail "$PROXY is missing (make $(dirname "$RMIG")/tests/faultproxy)"
GUEST=sim:size=256M,dirty-rate=2000,zero=0%,seed=3
CHANNEL_BYTES=48                 # the data stream's CHANNEL frame, not data
FRAME=$(((1 << 20) + 2048))      # the largest frame: 1 MiB of pages + headers
CUT=$((20 << 20))
COMMON=(--transport tcp --channels 1 --failover none)

# one ENDING N: a migration through the proxy, ended by ENDING; checks both
# summaries against the proxy's count.
one() {
	local how=$1 n=$2 extra=() src_rc fwd src dst
	[ "$how" = cut ] && extra=(--cut-after $CUT)
	start_recv "recv-$how$n" --backend sim "${COMMON[@]}"
	rm -f "$T/proxy.port"
	"$PROXY" 0 "127.0.0.1:$PORT" --ready-file "$T/proxy.port" "${extra[@]}" \
		2>"$T/proxy-$how$n.err" &
	local proxy=$!
	PIDS="$PIDS $proxy"
	for _ in $(seq 100); do [ -s "$T/proxy.port" ] && break; sleep 0.05; done
	[ -s "$T/proxy.port" ] || fail "$how: the proxy did not start"
	"$RMIG" send --json "${COMMON[@]}" --max-bandwidth 50M --backend $GUEST \
		"127.0.0.1:$(cat "$T/proxy.port")" >"$T/send-$how$n.out" 2>"$T/send-$how$n.err" &
	local sender=$!
	PIDS="$PIDS $sender"
	if [ "$how" = cancel ]; then
		wait_phase "$T/send-$how$n.out" pre-copy $sender
		sleep 1.5
		kill -INT $sender
	fi
	wait_pid $sender 20
	src_rc=$RC
	wait_pid "$RECV_PID" 20
	kill -TERM $proxy
	wait_pid $proxy 10
	expect_eq "$how: sender exit" "$src_rc" 3
	expect_eq "$how: source result" "$(summary "$T/send-$how$n.out" result)" rolled_back
	expect_eq "$how: destination result" "$(summary "$T/recv-$how$n.out" result)" rolled_back
	fwd=$(sed -n 's/^faultproxy: forwarded \([0-9]*\) bytes on data streams.*/\1/p' "$T/proxy-$how$n.err")
	[ -n "$fwd" ] || fail "$how: the proxy did not report its count"
	fwd=$((fwd - CHANNEL_BYTES))
	src=$(summary "$T/send-$how$n.out" bytes_sent)
	dst=$(summary "$T/recv-$how$n.out" bytes_sent)
	[ "$how" = cut ] && [ $fwd -ne $((CUT - CHANNEL_BYTES)) ] && fail "cut: the proxy forwarded $fwd, not the cut"
	[ $fwd -gt $((4 * FRAME)) ] || fail "$how: only $fwd bytes crossed: too early to tell"
	for side in src dst; do
		local v=${!side} diff
		diff=$((v - fwd))
		[ ${diff#-} -le $FRAME ] ||
			fail "$how: $side bytes_sent $v, but $fwd data bytes crossed the proxy ($diff)"
		[ "$(summary "$T/$([ $side = src ] && echo send || echo recv)-$how$n.out" rounds)" -ge 1 ] ||
			fail "$how: $side counts no round"
	done
	echo "$how $n: proxy $fwd data bytes, source $src ($((src - fwd))), destination $dst ($((dst - fwd)))"
	FIGURES="$FIGURES $how:$((src - fwd))/$((dst - fwd))"
}

FIGURES=""
for n in 1 2 3; do one cancel $n; done
for n in 1 2 3; do one cut $n; done
pass "bytes_sent minus the proxy's count (source/destination), frame $FRAME:$FIGURES"
