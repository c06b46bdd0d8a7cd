#!/bin/bash
# Failover in stop-and-copy: the link breaks after the source paused its
# guest and before READY (tests/tools/faultproxy resets every connection
# when the source sends STATE, or COMPLETE, and accepts again). The source
# reconnects and sends the switch-over again (the last round, the state,
# COMPLETE) on the new link instead of rolling back: the migration
# completes, verified, with the failover in both summaries. Then:
#  - twice in a row (STATE cut on the first and on the second link);
#  - --failover none: a rollback as before, the source's guest running;
#  - a destination that sent READY is past resuming: a cut there (on CHECK)
#    still ends as the commit says (rolled back, the source running).
. "$(dirname "$0")/lib.sh"
PROXY=$(dirname "$RMIG")/tests/faultproxy
[ -x "$PROXY" ] || fail "$PROXY is not built (make unit)"
GUEST=sim:size=128M,dirty-rate=5000,hot=10%,zero=30%,seed=11

# via_proxy NAME PROXY_ARGS... -- SEND_ARGS...: a receiver, a faultproxy in
# front of it and a sender through it; waits for both, RC_SEND / RC_RECV.
via_proxy() {
	local name=$1
	shift
	local pargs=()
	while [ "$1" != -- ]; do
		pargs+=("$1")
		shift
	done
	shift
	start_recv "$name-recv" --backend sim ${RECV_ARGS:-}
	start_faultproxy "$name" "${pargs[@]}"
	"$RMIG" send --json --transport tcp --backend "$GUEST" "$@" \
		127.0.0.1:"$PPORT" >"$T/$name-send.out" 2>"$T/$name-send.err" &
	local spid=$!
	PIDS="$PIDS $spid"
	wait_pid "$spid" 60
	RC_SEND=$RC
	wait_pid "$RECV_PID" 30
	RC_RECV=$RC
}

phases() {
	jq -r 'select(.event=="phase") | .phase' "$1" | tr '\n' ' '
}

# completed NAME FAILOVERS
completed() {
	local name=$1 n=$2
	expect_eq "$name: send exit code" "$RC_SEND" 0
	expect_eq "$name: recv exit code" "$RC_RECV" 0
	expect_eq "$name: cuts made" "$(grep -c 'cut on' "$T/$name-proxy.err")" "$n"
	for side in send recv; do
		local out="$T/$name-$side.out"
		expect_eq "$name: $side result" "$(summary "$out" result)" migrated
		expect_eq "$name: $side failovers" "$(summary "$out" failovers)" "$n"
		expect_eq "$name: $side verified" "$(summary "$out" verified)" true
	done
	[[ $(phases "$T/$name-send.out") == *"stop-and-copy failover stop-and-copy commit"* ]] ||
		fail "$name: source phases: $(phases "$T/$name-send.out")"
	[[ $(phases "$T/$name-recv.out") == *"awaiting-resume receiving"*"ready migrated"* ]] ||
		fail "$name: destination phases: $(phases "$T/$name-recv.out")"
	expect_eq "$name: audit" "$(summary "$T/$name-send.out" audit)" passed
	expect_eq "$name: destination guest_running" \
		"$(summary "$T/$name-recv.out" guest_running)" true
	expect_eq "$name: source guest_running" "$(summary "$T/$name-send.out" guest_running)" \
		false
}

# 1. Cut when the state goes out, and when COMPLETE does.
via_proxy state --cut-on STATE --
completed state 1
via_proxy complete --cut-on COMPLETE --
completed complete 1
# STATE went through before the cut: the destination took it (and then
# takes it again), unless its receivers saw the data streams reset first,
# which can happen as the proxy resets them all at once. Either way it
# waited for the resumption and took the last round again.
[[ $(phases "$T/complete-recv.out") == *"awaiting-resume receiving stop-and-copy ready"* ]] ||
	fail "COMPLETE cut: destination phases: $(phases "$T/complete-recv.out")"
down=$(summary "$T/state-send.out" downtime_ms)

# 2. Twice in a row.
via_proxy twice --cut-on STATE --cut-on STATE --
completed twice 2

# 3. --failover none: rolled back, the source's guest runs.
RECV_ARGS="--failover none" via_proxy none --cut-on STATE -- --failover none
expect_eq "--failover none: send exit code" "$RC_SEND" 3
expect_eq "--failover none: source result" "$(summary "$T/none-send.out" result)" rolled_back
expect_eq "--failover none: source guest_running" \
	"$(summary "$T/none-send.out" guest_running)" true
[[ $(summary "$T/none-send.out" error) == *"connection"* ]] ||
	fail "--failover none: the error does not name the lost link: $(summary "$T/none-send.out" error)"

# 4. After READY the destination only answers the source's question: a cut
# there is not resumed, the commit's rules apply (a rollback here).
RECV_ARGS="--commit-timeout-ms 2000" via_proxy ready --cut-on CHECK -- --commit-timeout-ms 2000
expect_eq "cut after READY: send exit code" "$RC_SEND" 3
expect_eq "cut after READY: source result" "$(summary "$T/ready-send.out" result)" rolled_back
expect_eq "cut after READY: source guest_running" \
	"$(summary "$T/ready-send.out" guest_running)" true
expect_eq "cut after READY: recv exit code" "$RC_RECV" 3

pass "state, COMPLETE and two cuts failed over (downtime ${down} ms with a failover); rollbacks without failover and after READY"
