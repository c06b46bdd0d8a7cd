#!/bin/bash
# config.verify's three modes against the two things it must catch:
#  - a dirty log that lies (sim's test-only lie=N: N pages written after
#    round 1 and never reported, so never sent again). Default mode: the
#    migration completes (the per-chunk roots of what was sent and what was
#    written agree), then the source's audit names exactly the chunks the
#    sim wrote behind the log's back: exit 5, "audit":"failed", the guest
#    running at the destination. --verify=full: the whole-memory digests
#    differ at the pause: rolled back (exit 3). --verify=off: migrated,
#    audit skipped. Without a lie: audit passed, exit 0.
#  - page bytes corrupted in flight (tests/tools/faultproxy, SIGUSR2):
#    rolled back in the default mode and with --verify=full.
. "$(dirname "$0")/lib.sh"
PROXY=${FAULTPROXY:-$(dirname "$RMIG")/tests/faultproxy}
[ -x "$PROXY" ] || fail "$PROXY is missing (make $(dirname "$RMIG")/tests/faultproxy)"
GUEST=sim:size=64M,dirty-rate=2000,hot=10%,seed=3

# run NAME SEND_SPEC [send options...]: one migration over loopback; sets
# SRC_RC and DST_RC; outputs in $T/NAME.{send,recv}.{out,err}.
run() {
	local n=$1 spec=$2
	shift 2
	start_recv "$n.recv" --backend sim
	"$RMIG" send --json --backend "$spec" "$@" 127.0.0.1:$PORT >"$T/$n.send.out" \
		2>"$T/$n.send.err"
	SRC_RC=$?
	wait_pid "$RECV_PID" 20
	DST_RC=$RC
}

# The chunks the sim lied about, as the audit names them: "R:C ...", sorted.
lied_chunks() {
	sed -n 's/^sim: lie: region \([0-9]*\) chunk \([0-9]*\) page .*/\1:\2/p' "$1" |
		sort -t: -k1,1n -k2,2n -u | tr '\n' ' ' | sed 's/ $//'
}

# Default mode, a lying log: migrated, then the audit names those chunks.
run lie "$GUEST,lie=5"
expect_eq "lie: sender exit code" "$SRC_RC" 5
expect_eq "lie: receiver exit code" "$DST_RC" 0
expect_eq "lie: source result" "$(summary "$T/lie.send.out" result)" migrated
expect_eq "lie: verified (the roots of what moved agree)" \
	"$(summary "$T/lie.send.out" verified)" true
expect_eq "lie: audit" "$(summary "$T/lie.send.out" audit)" failed
want=$(lied_chunks "$T/lie.send.err")
[ -n "$want" ] || fail "the sim reported no lie"
n=$(wc -w <<<"$want")
expect_eq "lie: audit_mismatch_chunks" "$(summary "$T/lie.send.out" audit_mismatch_chunks)" "$n"
expect_eq "lie: audit_chunks" "$(summary "$T/lie.send.out" audit_chunks)" "$want"
jq -r 'select(.event=="audit") | .detail | test("FAILED.*backend sim")' "$T/lie.send.out" |
	grep -qx true || fail "no audit event naming the backend"
grep -q "audit FAILED" "$T/lie.send.err" || fail "the failed audit is not on stderr"
expect_eq "lie: destination guest_running" "$(summary "$T/lie.recv.out" guest_running)" true

# --verify=full: the same lie is caught during the pause: rolled back.
run full "$GUEST,lie=5" --verify=full
expect_eq "full: sender exit code" "$SRC_RC" 3
expect_eq "full: source result" "$(summary "$T/full.send.out" result)" rolled_back
grep -q "verification failed" "$T/full.send.err" || fail "full: no verification failure"
expect_eq "full: audit" "$(summary "$T/full.send.out" audit)" skipped
expect_eq "full: source guest_running" "$(summary "$T/full.send.out" guest_running)" true
[ "$DST_RC" = 0 ] && fail "full: the receiver started the guest"

# --verify=off: nothing is checked.
run off "$GUEST,lie=5" --verify=off
expect_eq "off: sender exit code" "$SRC_RC" 0
expect_eq "off: audit" "$(summary "$T/off.send.out" audit)" skipped
expect_eq "off: verified" "$(summary "$T/off.send.out" verified)" false

# An honest log: the audit passes.
run honest "$GUEST"
expect_eq "honest: sender exit code" "$SRC_RC" 0
expect_eq "honest: audit" "$(summary "$T/honest.send.out" audit)" passed
expect_eq "honest: audit_mismatch_chunks" \
	"$(summary "$T/honest.send.out" audit_mismatch_chunks)" 0

# Page bytes corrupted in flight: rolled back in both verifying modes.
corrupt() { # NAME [send options...]
	local n=$1
	shift
	start_recv "$n.recv" --backend sim
	start_faultproxy "$n"
	local ppid=$PROXY_PID
	"$RMIG" send --json --backend sim:size=32M,dirty-rate=2000,hot=10%,zero=50% \
		--max-bandwidth 8M --transport tcp "$@" 127.0.0.1:$PPORT \
		>"$T/$n.send.out" 2>"$T/$n.send.err" &
	local spid=$!
	PIDS="$PIDS $spid"
	sleep 0.7
	kill -USR2 $ppid
	wait_pid $spid 30
	expect_eq "$n: sender exit code" "$RC" 3
	grep -q 'corrupted page data' "$T/$n-proxy.err" || fail "$n: no page was corrupted"
	grep -q "verification failed" "$T/$n.send.err" || fail "$n: not caught by the digests"
	wait_pid "$RECV_PID" 20
	[ "$RC" = 0 ] && fail "$n: the receiver started the guest"
	kill $ppid 2>/dev/null
}
corrupt corrupt-on
corrupt corrupt-full --verify=full

pass "audit named $n chunk(s) ($want); full rolled back; corruption rolled back in both modes"
