#!/bin/bash
# After a lost GO the source asks the destination whether its guest
# started (phase "asking"). Someone else answering at the destination's
# address without the key must not be believed: an ABORT "not started" in
# place of the HELLO (faultproxy --impostor) would make the source resume
# its guest while the destination runs it. The receiver holds 500 ms after
# taking GO (RMIG_TEST_HOLD=migrated:500); the proxy then cuts the link
# (blackhole) and answers every new connection as the impostor. The source
# must not roll back: it asks until its commit timeout and ends with its
# guest paused, the outcome unknown; the destination's guest runs. A key,
# no TLS (loopback): what the proofs alone must hold.
. "$(dirname "$0")/lib.sh"

PROXY=${FAULTPROXY:-$(dirname "$RMIG")/tests/faultproxy}
[ -x "$PROXY" ] || fail "$PROXY is missing (make $(dirname "$RMIG")/tests/faultproxy)"
head -c 32 /dev/urandom >"$T/psk" && chmod 600 "$T/psk"
NOT_STARTED=-125 # RMIG_ABORT_NOT_STARTED
COMMON=(--transport tcp --psk-file "$T/psk" --no-tls --link-timeout-ms 1000
	--failover-timeout-ms 3000 --commit-timeout-ms 3000)

RMIG_TEST_HOLD=migrated:500 start_recv recv --backend sim "${COMMON[@]}"
"$PROXY" 0 "127.0.0.1:$PORT" --ready-file "$T/proxy.port" --impostor $NOT_STARTED \
	2>"$T/proxy.err" &
PROXY_PID=$!
PIDS="$PIDS $PROXY_PID"
for _ in $(seq 100); do [ -s "$T/proxy.port" ] && break; sleep 0.05; done
[ -s "$T/proxy.port" ] || fail "the proxy did not start"
"$RMIG" send --json "${COMMON[@]}" --backend sim:size=16M,seed=9 \
	"127.0.0.1:$(cat "$T/proxy.port")" >"$T/send.out" 2>"$T/send.err" &
SEND_PID=$!
PIDS="$PIDS $SEND_PID"
for _ in $(seq 300); do
	grep -q '"event":"hold"' "$T/recv.out" 2>/dev/null && break
	sleep 0.1
done
grep -q '"event":"hold"' "$T/recv.out" || fail "the receiver never reached its hold after GO"
kill -HUP $PROXY_PID # the link is cut; from now on the impostor answers
wait_pid $SEND_PID 30
SRC=$RC
wait_pid "$RECV_PID" 30
DST=$RC
kill -TERM $PROXY_PID
wait_pid $PROXY_PID 10

phases=$(jq -r 'select(.event=="phase") | .phase' "$T/send.out" | tr '\n' ' ')
[[ $phases == *asking* ]] || fail "test timing: the sender never asked (phases: $phases)"
n=$(grep -c "answered by the impostor: ABORT $NOT_STARTED" "$T/proxy.err")
[ "$n" -ge 1 ] || fail "the impostor answered nobody: $(cat "$T/proxy.err")"
src=$(summary "$T/send.out" result)
[ "$src" != rolled_back ] ||
	fail "the source believed the impostor and resumed its guest, which runs at the destination too"
expect_eq "source result" "$src" unknown
expect_eq "source guest running" "$(summary "$T/send.out" guest_running)" false
expect_eq "destination result" "$(summary "$T/recv.out" result)" migrated
expect_eq "destination guest running" "$(summary "$T/recv.out" guest_running)" true
pass "an impostor answered $n questions 'not started': the source kept its guest paused (unknown, exit $SRC), the destination runs it (exit $DST)"
