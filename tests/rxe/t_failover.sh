#!/bin/bash
# Failover over real soft-RoCE, inside the rxe VM: a migration that started
# over RDMA loses the sender's RDMA path mid pre-copy and must finish over
# TCP with the same session: migrated, verified on both sides, failovers:1,
# a failover event rdma -> tcp. Two ways to lose RDMA:
#   netdev: the sender's rxe netdev goes down (RoCE packets stop; TCP between
#           the two addresses is local and keeps working)
#   delete: the sender's rxe device is deleted (rdma link delete)
# Then post-copy over RDMA loses the device after the guest started at the
# destination and recovers over TCP (postcopy_case).
# The delete case is encrypted (--tls): RDMA's sealed staging streams, then a
# TLS handshake on the TCP link it fails over to, which the kernel seals:
# "encrypted":true, "tls":"ktls" in both final summaries, and the kernel's
# TLS counters grow. The netdev case runs in clear (--no-tls).
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

tls_stat() { # NAME: a counter of /proc/net/tls_stat (0 without the module)
	local k v
	[ -r /proc/net/tls_stat ] || { echo 0; return; }
	while read -r k v; do
		[ "$k" = "$1" ] && { echo "$v"; return; }
	done </proc/net/tls_stat
	echo 0
}

# [TLS=--tls|--no-tls] failover_case NAME BREAK-COMMAND...
failover_case() {
	local n=$1 port="" rc rrc tx0 want
	local tls=${TLS:---no-tls}
	shift
	if [ "$tls" = --tls ]; then
		want=migrated/tcp/true/true/ktls
		modprobe tls || bad "$n: modprobe tls failed: the TCP link cannot be kTLS"
	else
		want=migrated/tcp/true/false/off
	fi
	tx0=$(tls_stat TlsTxSw)
	"$RMIG" recv --listen "$RXE_B_IP:0" --json $OPTS "$tls" >"$T/$n-recv.out" 2>"$T/$n-recv.err" &
	local rpid=$!
	for _ in $(seq 200); do
		port=$(jq -r 'select(.event=="listening") | .port' "$T/$n-recv.out" 2>/dev/null)
		[ -n "$port" ] && break
		kill -0 $rpid 2>/dev/null || break
		sleep 0.05
	done
	"$RMIG" send --json $OPTS "$tls" --device "$RXE_A_DEV" --max-bandwidth 6M \
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
	# Encrypted, RDMA WRITE is refused: the pages went through sealed staging.
	if [ "$tls" = --tls ]; then
		grep -q '"event":"transport","transport":"rdma","pin":"staging"' "$T/$n-send.out" &&
			ok "$n: rdma through the sealed staging streams" ||
			bad "$n: not rdma staging: $(grep '"event":"transport"' "$T/$n-send.out")"
	fi
	"$@"
	timeout 120 tail --pid=$spid -f /dev/null
	kill $spid 2>/dev/null # not done in 2 minutes: a failure anyway
	wait $spid
	rc=$?
	timeout 30 tail --pid=$rpid -f /dev/null
	kill $rpid 2>/dev/null # still there 30 s after the sender: a failure anyway
	wait $rpid
	rrc=$?
	restore
	for side in send recv; do
		local f="$T/$n-$side.out" got fo
		fo=$(field "$f" failovers)
		got="$(field "$f" result)/$(field "$f" transport)/$(field "$f" verified)"
		got="$got/$(field "$f" encrypted)/$(field "$f" tls)"
		# Encrypted: failovers >= 1, what matters is that it ends over TCP
		# still encrypted; in clear both sides count exactly one (the
		# destination lets go of its old link as soon as the source's
		# resumption arrives, so it no longer resumes an attempt that the
		# source was already giving up).
		local many=0
		[ "$tls" = --tls ] && many=1
		if [ "$got" = "$want" ] && { [ "$fo" = 1 ] || { [ $many = 1 ] && [[ $fo =~ ^[1-9][0-9]*$ ]]; }; }; then
			ok "$n $side: $got, failovers $fo"
		else
			bad "$n $side: got $got, failovers $fo; want $want, failovers $([ $many = 1 ] && echo '>= 1' || echo 1) (exit $rc/$rrc): $(tail -n 2 "$T/$n-$side.err")"
		fi
	done
	if [ "$tls" = --tls ]; then
		# After the failover: the TCP control stream and each channel, on
		# both ends (one kernel).
		local d=$(($(tls_stat TlsTxSw) - tx0)) ch
		ch=$(field "$T/$n-send.out" channels)
		[[ $ch =~ ^[0-9]+$ ]] || ch=2
		[ "$d" -ge $((2 * (1 + ch))) ] &&
			ok "$n: the kernel keyed $d TLS sockets to send (the TCP link after the failover)" ||
			bad "$n: /proc/net/tls_stat TlsTxSw +$d, want >= $((2 * (1 + ch)))"
	fi
	grep -q '"event":"failover","from":"rdma","to":"tcp"' "$T/$n-send.out" &&
		ok "$n: failover event rdma -> tcp: $(grep '"event":"failover"' "$T/$n-send.out" | jq -r .reason)" ||
		bad "$n: no failover event"
	[ "$(field "$T/$n-recv.out" guest_running)" = true ] && ok "$n: guest runs on the destination" ||
		bad "$n: guest not running on the destination"
}

# Post-copy over RDMA, the sender's rxe device deleted after the guest
# started at the destination (the sender holds 3 s after STARTED, so the
# destination's guest waits on pages it touched): the session recovers
# over TCP, the destination says what it still lacks, and both end
# migrated with recoveries >= 1 and a failover event rdma -> tcp.
postcopy_case() {
	local n=postcopy port="" rc rrc
	"$RMIG" recv --listen "$RXE_B_IP:0" --json $OPTS --no-tls >"$T/$n-recv.out" \
		2>"$T/$n-recv.err" &
	local rpid=$!
	for _ in $(seq 200); do
		port=$(jq -r 'select(.event=="listening") | .port' "$T/$n-recv.out" 2>/dev/null)
		[ -n "$port" ] && break
		kill -0 $rpid 2>/dev/null || break
		sleep 0.05
	done
	RMIG_TEST_HOLD=post-copy:3000 "$RMIG" send --json $OPTS --no-tls --postcopy \
		--device "$RXE_A_DEV" --backend sim:size=64M,dirty-rate=20000,hot=5%,zero=50%,seed=3 \
		"$RXE_B_IP:$port" >"$T/$n-send.out" 2>"$T/$n-send.err" &
	local spid=$!
	for _ in $(seq 600); do
		grep -q '"event":"hold"' "$T/$n-send.out" 2>/dev/null && break
		kill -0 $spid 2>/dev/null || break
		sleep 0.1
	done
	# Over rdma still: a failover before the hold would leave nothing for
	# the deletion to break.
	grep -q '"event":"transport","transport":"rdma"' "$T/$n-send.out" &&
		grep -q '"event":"hold"' "$T/$n-send.out" &&
		! grep -q '"event":"failover"' "$T/$n-send.out" && ok "$n: post-copy started over rdma" ||
		bad "$n: no post-copy over rdma: $(grep -E 'transport|hold|failover' "$T/$n-send.out")"
	sleep 1 # the destination's guest faults on pages and asks for them
	rdma link delete "$RXE_A_DEV"
	timeout 120 tail --pid=$spid -f /dev/null
	kill $spid 2>/dev/null
	wait $spid
	rc=$?
	timeout 30 tail --pid=$rpid -f /dev/null
	kill $rpid 2>/dev/null
	wait $rpid
	rrc=$?
	restore
	for side in send recv; do
		local f="$T/$n-$side.out" got rec
		got="$(field "$f" result)/$(field "$f" transport)/$(field "$f" postcopy)"
		rec=$(field "$f" recoveries)
		if [ "$got" = migrated/tcp/true ] && [[ $rec =~ ^[1-9][0-9]*$ ]]; then
			ok "$n $side: $got, recoveries $rec"
		else
			bad "$n $side: got $got, recoveries $rec; want migrated/tcp/true, recoveries >= 1 (exit $rc/$rrc): $(tail -n 2 "$T/$n-$side.err")"
		fi
	done
	jq -r 'select(.event=="phase") | .phase' "$T/$n-recv.out" | tr '\n' ' ' |
		grep -q 'post-copy recovering post-copy' && ok "$n: the destination recovered" ||
		bad "$n: destination phases: $(jq -r 'select(.event=="phase") | .phase' "$T/$n-recv.out" | tr '\n' ' ')"
	grep -q '"event":"failover","from":"rdma","to":"tcp"' "$T/$n-send.out" &&
		ok "$n: recovered rdma -> tcp" || bad "$n: no failover event rdma -> tcp"
	[ "$(field "$T/$n-recv.out" guest_running)" = true ] && ok "$n: guest runs on the destination" ||
		bad "$n: guest not running on the destination"
}

TLS=--tls failover_case delete rdma link delete "$RXE_A_DEV"
postcopy_case
TLS=--no-tls failover_case netdev ip link set "$RXE_A_NETDEV" down

rm -rf "$T"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
