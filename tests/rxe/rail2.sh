# rail2.sh - sourced by t_rails.sh and bench_rails.sh inside the rxe VM: a
# second soft-RoCE pair beside guest-init.sh's, rxe_c/rxe_d on the veth pair
# veth_c/veth_d (10.78.0.1/.2), made as guest-init.sh makes the first
# (accept_local, rp_filter, MTU 9000: see README.md's quirks). rail2_up is
# idempotent: it also brings back a deleted rxe_c or rxe_d.
C_IP=10.78.0.1 D_IP=10.78.0.2

active() { # DEV: port ACTIVE within 10 s
	for _ in $(seq 100); do
		rdma link show "$1/1" 2>/dev/null | grep -q 'state ACTIVE' && return 0
		sleep 0.1
	done
	return 1
}

# The second pair, as guest-init.sh makes the first (accept_local, rp_filter,
# MTU 9000: see tests/rxe/README.md's quirks).
rail2_up() {
	ip link show veth_c >/dev/null 2>&1 || {
		ip link add veth_c mtu 9000 type veth peer name veth_d mtu 9000 &&
			ip addr add $C_IP/24 dev veth_c && ip addr add $D_IP/24 dev veth_d
	} || return 1
	for c in veth_c veth_d; do
		echo 1 >"/proc/sys/net/ipv4/conf/$c/accept_local"
		echo 0 >"/proc/sys/net/ipv4/conf/$c/rp_filter"
		ip link set "$c" up
	done
	for d in c d; do
		rdma link show "rxe_$d/1" >/dev/null 2>&1 ||
			rdma link add "rxe_$d" type rxe netdev "veth_$d" || return 1
		active "rxe_$d" || return 1
	done
	# The GID of the address fills in asynchronously.
	for _ in $(seq 100); do
		grep -qs "ffff:0a4e:0001" /sys/class/infiniband/rxe_c/ports/1/gids/* &&
			grep -qs "ffff:0a4e:0002" /sys/class/infiniband/rxe_d/ports/1/gids/* && return 0
		sleep 0.1
	done
	return 1
}


# gid_of DEV IP: the index of IP's RoCE v2 GID on DEV (for perftest's -x).
gid_of() {
	local want g i
	printf -v want '0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x' ${2//./ }
	for i in $(seq 0 15); do
		g=$(cat "/sys/class/infiniband/$1/ports/1/gids/$i" 2>/dev/null) || continue
		[ "$g" = "$want" ] &&
			[ "$(cat "/sys/class/infiniband/$1/ports/1/gid_attrs/types/$i" 2>/dev/null)" = "RoCE v2" ] &&
			{ echo "$i"; return 0; }
	done
	return 1
}
