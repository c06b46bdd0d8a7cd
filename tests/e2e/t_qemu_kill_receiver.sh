#!/bin/bash
# kill -9 of `rmig recv` and of the destination QEMU in the middle of a real
# QEMU guest's migration (tests/qemu guest, rmig's qemu backend, TCP, the
# sender capped at 2 MB/s so that it is surely mid-way): the sender notices,
# names the peer it lost, rolls back (exit 3), and the source QEMU runs on:
# query-status says running and the guest's counter keeps going, without a
# gap or a repeat. Skips only if QEMU or the kernel cannot be had.
. "$(dirname "$0")/lib.sh"
set -o pipefail
qemu_guest_or_skip

guest_start src || fail "$GUEST_ERROR"
guest_wait_counter src 20 90 || fail "$GUEST_ERROR"
guest_start_dst dst || fail "$GUEST_ERROR"

start_recv recv --transport tcp --backend "qemu:qmp=$(guest_qmp_socket dst)"
"$RMIG" send --json --transport tcp --max-bandwidth 2M --failover none \
	--backend "qemu:qmp=$(guest_qmp_socket src)" \
	"127.0.0.1:$PORT" >"$T/send.out" 2>"$T/send.err" &
SEND_PID=$!
PIDS="$PIDS $SEND_PID"
# Wait until guest memory is flowing: connected, then a pre-copy phase or
# round event (5 s at most for those), then one more second of transfer.
for _ in $(seq 200); do
	grep -q '"event":"connected"' "$T/send.out" 2>/dev/null && break
	kill -0 "$SEND_PID" 2>/dev/null || break
	sleep 0.05
done
grep -q '"event":"connected"' "$T/send.out" || fail "the sender never connected"
for _ in $(seq 100); do
	grep -qE '"phase":"pre-copy"|"event":"round"' "$T/send.out" && break
	sleep 0.05
done
sleep 1
kill -0 "$SEND_PID" 2>/dev/null || fail "sender finished before the receiver could be killed"
src_before=$(guest_counter src)
{ kill -9 "$RECV_PID" && wait "$RECV_PID"; } 2>/dev/null # no "Killed" notice
guest_kill dst KILL
t0=$(millis)
wait_pid "$SEND_PID" 30
dt=$(($(millis) - t0))

expect_eq "send exit code" "$RC" 3
expect_eq "result" "$(summary "$T/send.out" result)" rolled_back
grep -q "127.0.0.1:$PORT" "$T/send.err" || fail "error does not name the lost peer 127.0.0.1:$PORT"
[ "$dt" -le 10000 ] || fail "sender took $dt ms to notice the lost receiver and roll back"
running=$(summary "$T/send.out" guest_running)
[ "$running" != false ] || fail "the source's summary says its guest does not run"

# The source QEMU runs the guest again, and the guest goes on counting.
expect_eq "source QEMU status" "$(guest_status src)" "running true"
c0=$(guest_counter src)
guest_wait_counter src $((c0 + 10)) 20 ||
	fail "the source's counter stopped at $(guest_counter src) after the rollback (was $c0)"
seq=$(guest_check_seq "$(guest_log src)") || fail "source's counter: $seq"
pass "rolled back $dt ms after the kill (counter $src_before at the kill, $(guest_counter src) now, no gap)"
