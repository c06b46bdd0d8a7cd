#!/bin/bash
# The uffd backend. examples/uffd_guest migrates its own live, changing memory
# into a second instance of itself, verified on both sides; the rounds after
# the first resend the pages the kernel found written (userfaultfd write
# protection + PAGEMAP_SCAN), and the destination's guest runs on. Then the
# CLI: `rmig send --backend uffd:size=...` (a sim guest whose writes the
# kernel tracks) into `rmig recv --backend sim` and `--backend uffd:size=...`.
. "$(dirname "$0")/lib.sh"
GUEST=$(dirname "$RMIG")/examples/uffd_guest
[ -x "$GUEST" ] || fail "$GUEST is not built (make unit)"

# skip_if_unsupported FILE: skip if the source said the kernel cannot track
# writes (Linux < 6.7, or userfaultfd forbidden).
skip_if_unsupported() {
	grep -qE 'uffd: (the kernel lacks|the kernel has no userfaultfd|userfaultfd is not permitted)' \
		"$1" && skip "$(grep -m1 'uffd: ' "$1")"
}

# check_migrated SEND RECV: both sides migrated, verified, and at least two
# pre-copy rounds sent pages, so the dirty log found some.
check_migrated() {
	for f in "$1" "$2"; do
		expect_eq "$(basename "$f") result" "$(summary "$f" result)" migrated
		expect_eq "$(basename "$f") verified" "$(summary "$f" verified)" true
	done
	n=$(jq -s '[.[] | select(.event=="round" and .pages > 0)] | length' "$1")
	[ "$n" -ge 2 ] || fail "$(basename "$1"): $n pre-copy round(s) sent pages; no dirty page found"
}

"$GUEST" recv 127.0.0.1 0 64M >"$T/recv.out" 2>"$T/recv.err" &
RECV_PID=$!
PIDS="$PIDS $RECV_PID"
wait_port recv
# A downtime of 1 ms is never expected while pages are dirty: pre-copy goes on
# as long as the kernel reports written pages, and switches over when it does not.
if ! "$GUEST" send 127.0.0.1 "$PORT" 64M 1 >"$T/send.out" 2>"$T/send.err"; then
	skip_if_unsupported "$T/send.err"
	fail "uffd_guest send failed"
fi
wait_pid "$RECV_PID" 20
expect_eq "receiver exit code" "$RC" 0
check_migrated "$T/send.out" "$T/recv.out"
expect_eq "source guest_running" "$(summary "$T/send.out" guest_running)" false
expect_eq "destination guest_running" "$(summary "$T/recv.out" guest_running)" true
d=$(summary "$T/recv.out" guest_progress_delta)
[ "$d" -gt 0 ] || fail "the destination's guest made no progress after the switch-over"
rounds=$(summary "$T/send.out" rounds)

i=0
for dst in sim uffd:size=64M; do
	i=$((i + 1))
	start_recv "cli$i-recv" --backend "$dst"
	"$RMIG" send --json --downtime-ms 1 --max-rounds 5 \
		--backend uffd:size=64M,dirty-rate=20000,hot=25%,zero=0%,seed=5 \
		127.0.0.1:"$PORT" >"$T/cli$i-send.out" 2>"$T/cli$i-send.err" ||
		fail "rmig send --backend uffd:... into --backend $dst exited $?"
	wait_pid "$RECV_PID" 20
	expect_eq "receiver ($dst) exit code" "$RC" 0
	check_migrated "$T/cli$i-send.out" "$T/cli$i-recv.out"
	expect_eq "receiver ($dst) guest_running" "$(summary "$T/cli$i-recv.out" guest_running)" true
done
pass "example: $rounds rounds, $(summary "$T/send.out" pages_sent) pages; CLI into sim and uffd"
