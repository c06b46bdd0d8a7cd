#!/bin/bash
# Self-test of the soft-RoCE VM. Inside the VM (tests/rxe/vm.sh [--numa] --
# tests/rxe/selftest.sh) it checks: both rxe devices, a perftest ib_write_bw
# from rxe_a (rxa) to rxe_b (rxb) that really crosses the veth, rdma_cm (rping)
# across the two devices, the output share, and with --numa two NUMA nodes.
# Run on the host it boots the VM itself: tests/rxe/selftest.sh [vm.sh options].
# Prints "ib_write_bw_MBps=<n>" and ends with "N passed, N failed".
set -u
if [ -z "${RXE_VM:-}" ]; then
	here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
	exec "$here/vm.sh" "$@" -- "$here/selftest.sh"
fi

pass=0 fail=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
log=$(mktemp -d /tmp/rxe-selftest.XXXXXX)
cnt() { cat "/sys/class/infiniband/$1/ports/1/hw_counters/$2"; }
# perftest's client gives up at once if the server is not listening yet.
wait_listen() {
	for _ in $(seq 100); do
		ss -Hltn "sport = :$1" | grep -q . && return 0
		sleep 0.1
	done
	return 1
}

echo "--- rdma link"
rdma link show
echo "--- rdma system"
rdma system show
echo "--- ibv_devices"
ibv_devices
devs=$(ibv_devices | awk 'NR > 2 { print $1 }' | sort | tr '\n' ' ')
if [ "$devs" = "$RXE_A_DEV $RXE_B_DEV " ]; then ok "devices: $devs"; else bad "devices: '$devs'"; fi
for d in "$RXE_A_DEV" "$RXE_B_DEV"; do
	st=$(rdma link show "$d/1" | awk '{ for (i = 1; i < NF; i++) if ($i == "state") print $(i + 1) }')
	[ "$st" = ACTIVE ] && ok "$d state $st" || bad "$d state '$st'"
done
echo "gid index: $RXE_A_DEV=$RXE_A_GID_INDEX $RXE_B_DEV=$RXE_B_GID_INDEX"

# --- ib_write_bw: verbs, QP data exchanged over TCP, RoCE v2 IPv4 GID --------
# A fixed count (-n, ~200 MB) rather than a duration: with -D, perftest
# measures only the middle of the run (minus a 2 s margin each side), and one
# rxe retransmit stall there under TCG reads as 0.00 MB/s.
a_sent=$(cnt "$RXE_A_DEV" sent_pkts) b_rcvd=$(cnt "$RXE_B_DEV" rcvd_pkts)
a_retry=$(cnt "$RXE_A_DEV" completer_retry_err)
# One run of the pair; sets crc, src (exit codes) and mbps.
bw_once() { # PORT
	ip netns exec rxb timeout 90 ib_write_bw -d "$RXE_B_DEV" -x "$RXE_B_GID_INDEX" -F -n 3000 -p "$1" \
		>"$log/bw-server" 2>&1 &
	srv=$!
	if wait_listen "$1"; then
		ip netns exec rxa timeout 60 ib_write_bw -d "$RXE_A_DEV" -x "$RXE_A_GID_INDEX" -F -n 3000 \
			-p "$1" "$RXE_B_IP" >"$log/bw-client" 2>&1
		crc=$?
	else
		crc=1
		echo "ib_write_bw server never listened on :$1" >"$log/bw-client"
	fi
	wait $srv
	src=$?
	# The result line follows the "#bytes #iterations BW peak BW average" header.
	mbps=$(awk '/#bytes/ { getline; print $4; exit }' "$log/bw-client" 2>/dev/null)
}
bw_good() { ((crc == 0 && src == 0)) && [[ $mbps =~ ^[0-9]+(\.[0-9]+)?$ ]] && ((${mbps%.*} >= 1)); }
# perftest itself, not rmig, is under test here, and under TCG it now and
# then stalls past its timeout: a second attempt, said out loud, before
# calling the environment broken.
bw_once 18515
if ! bw_good; then
	echo "ib_write_bw: first attempt failed (client rc $crc, server rc $src): $(tail -n 2 "$log/bw-client" | tr '\n' ' '); again"
	bw_once 18516
fi
a_sent=$(($(cnt "$RXE_A_DEV" sent_pkts) - a_sent)) b_rcvd=$(($(cnt "$RXE_B_DEV" rcvd_pkts) - b_rcvd))
a_retry=$(($(cnt "$RXE_A_DEV" completer_retry_err) - a_retry))
# A result under 1 MB/s is a hang that happened to end, not a pass.
if bw_good; then
	echo "ib_write_bw_MBps=$mbps"
	ok "ib_write_bw $RXE_A_DEV -> $RXE_B_DEV: $mbps MB/s"
else
	echo "--- ib_write_bw client (rc $crc)"; cat "$log/bw-client"
	echo "--- ib_write_bw server (rc $src)"; cat "$log/bw-server"
	bad "ib_write_bw"
fi
# Proof that it crossed from one device to the other (not a loopback).
if ((a_sent > 1000 && b_rcvd > 1000)); then
	# Retransmit timeouts (ACKs late under TCG) are what slows a run down.
	ok "packets: $RXE_A_DEV sent $a_sent, $RXE_B_DEV received $b_rcvd; $a_retry retransmit timeouts"
else
	bad "packets: $RXE_A_DEV sent $a_sent, $RXE_B_DEV received $b_rcvd"
fi

# --- rdma_cm: rping, client bound to rxa's address -------------------------
# Both addresses are local to one IP stack (see README), so an unbound client
# would land on rxe_b itself; -I 10.77.0.1 makes rdma_cm pick rxe_a.
a_sent=$(cnt "$RXE_A_DEV" sent_pkts) b_rcvd=$(cnt "$RXE_B_DEV" rcvd_pkts)
ip netns exec rxb timeout 60 rping -s -a "$RXE_B_IP" -C 50 -S 4096 -V >"$log/rping-server" 2>&1 &
srv=$!
# A client that races the server's rdma_listen is rejected: wait for the
# listening cm_id to show.
for _ in $(seq 100); do
	rdma res show cm_id 2>/dev/null | grep -q LISTEN && break
	sleep 0.1
done
ip netns exec rxa timeout 30 rping -c -I "$RXE_A_IP" -a "$RXE_B_IP" -C 50 -S 4096 -V \
	>"$log/rping-client" 2>&1
crc=$?
wait $srv
src=$?
a_sent=$(($(cnt "$RXE_A_DEV" sent_pkts) - a_sent)) b_rcvd=$(($(cnt "$RXE_B_DEV" rcvd_pkts) - b_rcvd))
if ((crc == 0 && src == 0 && a_sent > 50 && b_rcvd > 50)); then
	ok "rdma_cm rping $RXE_A_IP -> $RXE_B_IP ($RXE_A_DEV sent $a_sent, $RXE_B_DEV received $b_rcvd)"
else
	echo "--- rping client (rc $crc)"; cat "$log/rping-client"
	echo "--- rping server (rc $src)"; cat "$log/rping-server"
	bad "rdma_cm rping (rc $crc/$src, $RXE_A_DEV sent $a_sent, $RXE_B_DEV received $b_rcvd)"
fi

# --- the output share: what is written here shows up on the host ----------
probe="$RXE_OUT/.selftest-probe.$$"
if echo probe >"$probe" && [ "$(cat "$probe")" = probe ] && rm -f "$probe"; then
	ok "output share $RXE_OUT writable"
else
	bad "output share $RXE_OUT"
fi

# --- NUMA -----------------------------------------------------------------
nodes=$(numactl -H | awk '/^available:/ { print $2 }')
echo "numa_nodes=$nodes"
want=1
[ "${RXE_NUMA:-0}" = 1 ] && want=2
if [ "$nodes" = "$want" ]; then
	ok "numactl -H: $nodes node(s)"
	[ "$want" = 2 ] && numactl -H
else
	numactl -H
	bad "numactl -H: $nodes node(s), want $want"
fi

rm -rf "$log"
echo "$pass passed, $fail failed"
((fail == 0))
