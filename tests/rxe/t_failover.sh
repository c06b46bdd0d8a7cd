#!/bin/bash
# Failover over real soft-RoCE, inside the rxe VM: a migration that started
# over RDMA loses the sender's RDMA path mid pre-copy and must finish over
# TCP with the same session: migrated, verified on both sides, failovers:1,
# a failover event rdma -> tcp. Two ways to lose RDMA:
#   netdev: the sender's rxe netdev goes down (RoCE packets stop; TCP between
#           the two addresses is local and keeps working)
#   delete: the sender's rxe device is deleted (rdma link delete)
# Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
RMIG=${RMIG:-build/rmig}
T=$(mktemp -d /tmp/rxe-failover.XXXXXX)
pass=0 fail=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
field() { jq -r "select(.event==\"summary\") | .$2 | tostring" "$1" 2>/dev/null | tail -1; }
head -c 32 /dev/urandom >"$T/psk" && chmod 600 "$T/psk"
OPTS="--psk-file $T/psk --downtime-ms 3000 --link-timeout-ms 5000 --failover-timeout-ms 30000"

restore() {
	ip link set "$RXE_A_NETDEV" up
	rdma link show "$RXE_A_DEV" >/dev/null 2>&1 ||
		rdma link add "$RXE_A_DEV" type rxe netdev "$RXE_A_NETDEV" 2>/dev/null
	for _ in $(seq 50); do
		rdma link show "$RXE_A_DEV" 2>/dev/null | grep -q ACTIVE && return
		sleep 0.1
	done
}

# failover_case NAME BREAK-COMMAND...
failover_case() {
	local n=$1 port="" rc rrc
	shift
	"$RMIG" recv --listen "$RXE_B_IP:0" --json $OPTS >"$T/$n-recv.out" 2>"$T/$n-recv.err" &
	local rpid=$!
	for _ in $(seq 200); do
		port=$(jq -r 'select(.event=="listening") | .port' "$T/$n-recv.out" 2>/dev/null)
		[ -n "$port" ] && break
		sleep 0.05
	done
	"$RMIG" send --json $OPTS --device "$RXE_A_DEV" --max-bandwidth 6M \
		--backend sim:size=64M,dirty-rate=2000,zero=0%,seed=3 "$RXE_B_IP:$port" \
		>"$T/$n-send.out" 2>"$T/$n-send.err" &
	local spid=$!
	for _ in $(seq 300); do
		grep -q '"phase":"pre-copy"' "$T/$n-send.out" 2>/dev/null && break
		sleep 0.1
	done
	sleep 3 # mid round 1: about half the guest is across
	if grep -q '"transport":"rdma"' "$T/$n-send.out"; then
		ok "$n: started over rdma"
	else
		bad "$n: did not start over rdma: $(grep transport "$T/$n-send.out")"
	fi
	"$@"
	timeout 120 tail --pid=$spid -f /dev/null
	wait $spid
	rc=$?
	timeout 30 tail --pid=$rpid -f /dev/null
	wait $rpid
	rrc=$?
	restore
	for side in send recv; do
		local f="$T/$n-$side.out" got
		got="$(field "$f" result)/$(field "$f" transport)/$(field "$f" failovers)/$(field "$f" verified)"
		[ "$got" = migrated/tcp/1/true ] && ok "$n $side: $got" ||
			bad "$n $side: got $got, want migrated/tcp/1/true (exit $rc/$rrc): $(tail -2 "$T/$n-$side.err")"
	done
	grep -q '"event":"failover","from":"rdma","to":"tcp"' "$T/$n-send.out" &&
		ok "$n: failover event rdma -> tcp: $(grep '"event":"failover"' "$T/$n-send.out" | jq -r .reason)" ||
		bad "$n: no failover event"
	[ "$(field "$T/$n-recv.out" guest_running)" = true ] && ok "$n: guest runs on the destination" ||
		bad "$n: guest not running on the destination"
}

failover_case delete rdma link delete "$RXE_A_DEV"
failover_case netdev ip link set "$RXE_A_NETDEV" down

rm -rf "$T"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
