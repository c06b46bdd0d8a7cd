#!/bin/bash
# A real QEMU guest (tests/qemu: TCG, 256 MiB - 64 KiB, a counter on the serial
# console that dirties memory) live-migrated through rmig's qemu backend over
# TCP. Asserts what a user would check: both sides say "migrated" and exit 0,
# the source QEMU is left paused (postmigrate) or gone, the destination QEMU
# runs, and the guest's counter goes on from where the source left it: no
# value lost, none repeated, across the two serial logs, and still counting.
# Skips only if QEMU or the kernel cannot be had.
. "$(dirname "$0")/lib.sh"
set -o pipefail
qemu_guest_or_skip

t_boot=$(millis)
guest_start src || fail "$GUEST_ERROR"
guest_wait_counter src 20 90 || fail "$GUEST_ERROR"
boot_ms=$(($(millis) - t_boot))
guest_start_dst dst || fail "$GUEST_ERROR"

start_recv recv --transport tcp --backend "qemu:qmp=$(guest_qmp_socket dst)"
t0=$(millis)
"$RMIG" send --json --transport tcp --backend "qemu:qmp=$(guest_qmp_socket src)" \
	"127.0.0.1:$PORT" >"$T/send.out" 2>"$T/send.err" &
SEND_PID=$!
PIDS="$PIDS $SEND_PID"
wait_pid "$SEND_PID" 90
send_rc=$RC
wait_pid "$RECV_PID" 30
recv_rc=$RC
ms=$(($(millis) - t0))

expect_eq "send exit code" "$send_rc" 0
expect_eq "recv exit code" "$recv_rc" 0
expect_eq "source result" "$(summary "$T/send.out" result)" migrated
expect_eq "destination result" "$(summary "$T/recv.out" result)" migrated
src_running=$(summary "$T/send.out" guest_running)
[ "$src_running" != true ] || fail "the source's summary says its guest still runs"

# Exactly one QEMU runs the guest: the source is paused for good (or gone),
# the destination runs.
st=$(guest_status src)
case $st in
"postmigrate false") expect_eq "source QEMU's migration" "$(guest_migrate_status src)" completed ;;
gone) ;;
*) fail "source QEMU is '$st' after the migration, expected 'postmigrate false' (or exited)" ;;
esac
expect_eq "destination QEMU status" "$(guest_status dst)" "running true"

# The counter: the source's log then the destination's read as one console.
# The source is stopped, so its log is final.
src_log=$(guest_log src)
dst_log=$(guest_log dst)
src_last=$(guest_counters "$src_log" | tail -n1)
c0=$(guest_counter dst)
[ "$c0" -gt "${src_last:-0}" ] || guest_wait_counter dst $((src_last + 1)) 20 ||
	fail "the destination printed no counter after the source's last ($src_last): $GUEST_ERROR"
c0=$(guest_counter dst)
guest_wait_counter dst $((c0 + 10)) 20 ||
	fail "the destination's counter stopped at $(guest_counter dst) (was $c0 right after the migration)"
seq=$(guest_check_seq "$src_log" "$dst_log") ||
	fail "counter across the migration (source's last: $src_last): $seq"
first=${seq%%..*}
[ "$first" = 1 ] || fail "the source's console starts at counter $first, not 1"
last=${seq#*..}
last=${last%% *}
pass "migrated in $ms ms (rmig: total $(summary "$T/send.out" total_ms) ms, downtime $(summary "$T/send.out" downtime_ms) ms); counter 1..$last without a gap, source stopped at $src_last; boot to counter 20: $boot_ms ms"
