#!/bin/bash
# Stage 2 of the rxe test VM, PID 1 inside the guest after switch_root.
# Root is the host's / (read-only 9p) under a tmpfs overlay, so the host's
# bash, iproute2, rdma-core, perftest and the repo's build are all here;
# stage 1 (initramfs-init.sh) has mounted /proc /sys /dev /run and the
# control and output shares. This sets up the soft-RoCE pair, runs the job
# vm.sh wrote, prints the exit marker and powers off. It never exits (PID 1
# exiting panics). Each exec costs ~80 ms under TCG, hence builtins and
# batches where a loop of commands would do.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8 TERM=dumb
umask 022
ctl=/run/rxe-vm

off() {
	sync
	# The host's poweroff is systemctl (no systemd here): busybox's makes the
	# reboot syscall itself; sysrq as the last resort.
	busybox poweroff -f 2>/dev/null
	echo o >/proc/sysrq-trigger
	while :; do sleep 60; done
}
# Any failure before the job runs: one line, a marker vm.sh recognises, off.
setup_fail() {
	echo "rxe-vm: guest setup failed: $*"
	echo "RXE-VM-SETUPFAIL${RXE_VM_NONCE:+.$RXE_VM_NONCE}"
	off
}
# shellcheck source=/dev/null
. "$ctl/vm.conf" || setup_fail "no $ctl/vm.conf"
# A 0.1 s sleep without an exec: a read timing out on a FIFO nobody writes.
mkfifo /run/.tick && exec 8<>/run/.tick || setup_fail "mkfifo"
tick() { read -r -t 0.1 -u 8 || :; }

RXE_A_IP=10.77.0.1 RXE_B_IP=10.77.0.2
RXE_A_DEV=rxe_a RXE_B_DEV=rxe_b
RXE_A_NETDEV=veth_a RXE_B_NETDEV=veth_b

# Linux 6.1's rdma_rxe only works in the initial network namespace: its
# UDP/4791 socket and its route lookups are hardwired to init_net (per-
# namespace support came in a much later kernel). In real namespaces the
# devices show up ACTIVE but not one packet moves. So both veth ends stay in
# init_net, and rxa/rxb are names for init_net: "ip netns exec rxa CMD" works
# (and would keep working with real namespaces on a newer kernel).
# Both addresses are local to one IP stack, yet rxe's packets do cross the
# veth: rxe routes with its netdev as the output interface, which skips the
# "local" routes. The receiving end must then accept packets whose source is
# one of its own addresses (accept_local) and not drop them as martians
# (rp_filter).
# MTU 9000 gives rxe its largest path MTU, 4096 (1500 gives 1024): about
# 70 MB/s instead of 40 under TCG.
ip -batch - <<EOF || setup_fail "ip -batch (veth, addresses, netns names)"
link set lo up
link add $RXE_A_NETDEV mtu 9000 type veth peer name $RXE_B_NETDEV mtu 9000
addr add $RXE_A_IP/24 dev $RXE_A_NETDEV
addr add $RXE_B_IP/24 dev $RXE_B_NETDEV
netns attach rxa 1
netns attach rxb 1
EOF
for c in all default "$RXE_A_NETDEV" "$RXE_B_NETDEV"; do
	echo 1 >"/proc/sys/net/ipv4/conf/$c/accept_local" &&
		echo 0 >"/proc/sys/net/ipv4/conf/$c/rp_filter" || setup_fail "sysctl $c"
done
ip -batch - <<EOF || setup_fail "ip link set up"
link set $RXE_A_NETDEV up
link set $RXE_B_NETDEV up
EOF
rdma -b - <<EOF || setup_fail "rdma link add"
link add $RXE_A_DEV type rxe netdev $RXE_A_NETDEV
link add $RXE_B_DEV type rxe netdev $RXE_B_NETDEV
EOF

# Index of the RoCE v2 GID holding IPv4 address $2 on rdma device $1
# (::ffff:a.b.c.d). The table fills asynchronously once the address and link
# are up; its IP entries come right after the default GID, so the first 16
# of its 1024 entries are plenty.
gid_index() {
	local dev=$1 ip=$2 want i g t
	local d=/sys/class/infiniband/$dev/ports/1
	printf -v want '0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x' ${ip//./ }
	for ((n = 0; n < 100; n++)); do
		for ((i = 0; i < 16; i++)); do
			read -r g <"$d/gids/$i" 2>/dev/null || continue
			[ "$g" = "$want" ] || continue
			read -r t <"$d/gid_attrs/types/$i" 2>/dev/null || continue
			[ "$t" = "RoCE v2" ] && { echo "$i"; return 0; }
		done
		tick
	done
	return 1
}
active() {
	local s
	for ((n = 0; n < 100; n++)); do
		read -r s <"/sys/class/infiniband/$1/ports/1/state" 2>/dev/null
		[[ $s == *ACTIVE ]] && return 0
		tick
	done
	return 1
}
active "$RXE_A_DEV" || setup_fail "$RXE_A_DEV port not ACTIVE"
active "$RXE_B_DEV" || setup_fail "$RXE_B_DEV port not ACTIVE"
RXE_A_GID_INDEX=$(gid_index "$RXE_A_DEV" "$RXE_A_IP") || setup_fail "no IPv4 RoCE v2 GID on $RXE_A_DEV"
RXE_B_GID_INDEX=$(gid_index "$RXE_B_DEV" "$RXE_B_IP") || setup_fail "no IPv4 RoCE v2 GID on $RXE_B_DEV"
export RXE_A_IP RXE_B_IP RXE_A_DEV RXE_B_DEV RXE_A_NETDEV RXE_B_NETDEV
export RXE_A_GID_INDEX RXE_B_GID_INDEX RXE_A_NS=rxa RXE_B_NS=rxb RXE_OUT RXE_VM=1
exec 8<&-

echo "RXE-VM-START.$RXE_VM_NONCE"
# The job: cd to the host's cwd, its environment, exec COMMAND (job.sh is
# written by vm.sh). No stdin: the console is not an input.
bash "$ctl/job.sh" </dev/null
rc=$?
echo "$rc" >"$ctl/rc"
if [ -n "${RXE_VM_DMESG:-}" ]; then dmesg >"$ctl/dmesg" 2>&1; fi
echo "RXE-VM-EXIT.$RXE_VM_NONCE=$rc"
off
