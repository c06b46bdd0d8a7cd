#!/bin/bash
# After a lost GO the source asks the destination whether its guest
# started (phase "asking"). Someone else answering at the destination's
# address without the key must not be believed: an ABORT "not started" in
# place of the HELLO (faultproxy --impostor) would make the source resume
# its guest while the destination runs it. The receiver holds 2 s after
# taking GO (RMIG_TEST_HOLD=migrated:2000); the proxy then cuts the link
# (blackhole) and answers every new connection as the impostor. The source
# must not roll back: it asks until its commit timeout and ends with its
# guest paused, the outcome unknown; the destination's guest runs. Then
# the same impostor during a failover in pre-copy. A key, no TLS
# (loopback): what the proofs alone must hold.
. "$(dirname "$0")/lib.sh"

[ -x "$(dirname "$RMIG")/tests/faultproxy" ] || fail "faultproxy is missing (make unit)"
head -c 32 /dev/urandom >"$T/psk" && chmod 600 "$T/psk"
NOT_STARTED=-125 # RMIG_ABORT_NOT_STARTED
COMMON=(--transport tcp --psk-file "$T/psk" --no-tls --link-timeout-ms 1000
	--failover-timeout-ms 3000 --commit-timeout-ms 3000)

RMIG_TEST_HOLD=migrated:2000 start_recv recv --backend sim "${COMMON[@]}"
start_faultproxy question --impostor $NOT_STARTED
send_to_hold send "${COMMON[@]}" --backend sim:size=16M,seed=9
kill -HUP $PROXY_PID # the link is cut; from now on the impostor answers
wait_pid $SEND_PID 30
SRC=$RC
wait_pid "$RECV_PID" 30
DST=$RC
kill -TERM $PROXY_PID
wait_pid $PROXY_PID 10

phases=$(jq -r 'select(.event=="phase") | .phase' "$T/send.out" | tr '\n' ' ')
[[ $phases == *asking* ]] || fail "test timing: the sender never asked (phases: $phases)"
n=$(grep -c "answered by the impostor: ABORT $NOT_STARTED" "$T/question-proxy.err")
[ "$n" -ge 1 ] || fail "the impostor answered nobody: $(cat "$T/question-proxy.err")"
src=$(summary "$T/send.out" result)
[ "$src" != rolled_back ] ||
	fail "the source believed the impostor and resumed its guest, which runs at the destination too"
expect_eq "source result" "$src" unknown
expect_eq "source guest running" "$(summary "$T/send.out" guest_running)" false
expect_eq "destination result" "$(summary "$T/recv.out" result)" migrated
expect_eq "destination guest running" "$(summary "$T/recv.out" guest_running)" true
first="an impostor answered $n questions 'not started': the source kept its guest paused (unknown, exit $SRC), the destination runs it (exit $DST)"

# A failover in pre-copy: the impostor answers the reconnections (ABORT
# -5002, "lost", in place of the HELLO) until it has answered two, then
# the path heals. Its
# ABORT must not make the source give up: it asks again until its failover
# timeout, finds the real destination, and the migration completes.
LOST=-5002 # RMIG_ABORT_LOST
COMMON=(--transport tcp --psk-file "$T/psk" --no-tls --link-timeout-ms 1000
	--failover-timeout-ms 20000 --commit-timeout-ms 3000)
start_recv recv2 --backend sim "${COMMON[@]}"
start_faultproxy failover --impostor $LOST
# Rounds of ~1 s: a round's end waits on the control link, where a silent
# second is a lost link.
send_in_precopy send2 "${COMMON[@]}"
kill -HUP $PROXY_PID # cut; the impostor answers
# Healed once the impostor has answered twice (the source noticed the cut
# and asked again after its first ABORT), within 15 s.
for _ in $(seq 150); do
	[ "$(grep -c "answered by the impostor" "$T/failover-proxy.err")" -ge 2 ] && break
	sleep 0.1
done
kill -HUP $PROXY_PID # healed: the real destination again
wait_pid $SEND_PID 60
SRC=$RC
wait_pid "$RECV_PID" 30
DST=$RC
kill -TERM $PROXY_PID
wait_pid $PROXY_PID 10
n2=$(grep -c "answered by the impostor: ABORT $LOST" "$T/failover-proxy.err")
[ "$n2" -ge 2 ] || fail "failover: the impostor answered $n2 reconnections, not 2: $(cat "$T/failover-proxy.err")"
expect_eq "failover: sender exit" "$SRC" 0
expect_eq "failover: source result" "$(summary "$T/send2.out" result)" migrated
expect_eq "failover: destination result" "$(summary "$T/recv2.out" result)" migrated
fo=$(summary "$T/send2.out" failovers)
[ "${fo:-0}" -ge 1 ] 2>/dev/null || fail "failover: the sender counts ${fo:-no} failovers"
pass "$first; in a failover the impostor answered $n2 reconnections 'lost', the source asked again and migrated ($fo failover(s))"
