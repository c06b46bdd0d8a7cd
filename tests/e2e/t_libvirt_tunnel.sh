#!/bin/bash
# timeout: 600
# The libvirt pair of t_libvirt_relay.sh (tests/libvirt) with `rmig tunnel`
# in place of the socat relays (LV_RELAY=rmig: one tunnel per channel,
# TLS 1.3 with a PSK over the veth pair): libvirtd's RPC, QEMU's migration
# stream and the NBD stream all go through it. Asserts: `virsh migrate
# --live --p2p` completes, the source's domjobinfo showed it running, the
# guest runs on the destination only, its counter goes on without a gap;
# with --copy-storage-all the disk guest reads back on the destination what
# it wrote on the source. Not yet: a cut mid-migration that the tunnel
# survives (replay after a lost link is not built).
. "$(dirname "$0")/lib.sh"
set -o pipefail
. "$(dirname "$0")/../qemu/guest.sh"
export LV_RELAY=rmig
. "$(dirname "$0")/../libvirt/lv.sh"

prepare() {
	local out rc=0
	out=$("$(dirname "$0")/../qemu/setup.sh" 2>&1) || rc=$?
	[ $rc = 77 ] && skip "$(grep -m1 '^SKIP' <<<"$out" | sed 's/^SKIP: //')"
	[ $rc = 0 ] || fail "tests/qemu/setup.sh: $(tail -n1 <<<"$out")"
	rc=0
	lv_prepare || rc=$?
	[ $rc = 77 ] && skip "$LV_ERROR"
	[ $rc = 0 ] || fail "$LV_ERROR"
}

boot() {
	lv_start "$@" || fail "$LV_ERROR"
	lv_wait_counter "$1" "$2" 20 90 || fail "$LV_ERROR"
}

# migrated NAME: as t_libvirt_relay.sh's. Sets SEQ.
migrated() {
	local n=$1 src_last seq
	[ "$LV_MIGRATE_RC" = 0 ] || fail "virsh migrate $n exited $LV_MIGRATE_RC: $(tr '\n' ' ' <"$LV_DIR/migrate-$n.err")"
	[ "$LV_JOB_SEEN" -ge 1 ] || fail "the source's domjobinfo never showed $n's outgoing migration running"
	expect_eq "$n on the destination" "$(lv_state dst "$n")" running
	expect_eq "$n on the source" "$(lv_state src "$n")" "shut off"
	src_last=$(lv_counter src "$n")
	lv_wait_counter dst "$n" $((src_last + 10)) 30 ||
		fail "$n on the destination did not count on past the source's $src_last: $LV_ERROR"
	seq=$(guest_check_seq "$(lv_serial src "$n")" "$(lv_serial dst "$n")") ||
		fail "$n's counter across the migration (source's last $src_last): $seq"
	[ "${seq%%..*}" = 1 ] || fail "$n's source console starts at ${seq%%..*}, not 1"
	SEQ=$seq
}

prepare
lv_host src 1 || fail "$LV_ERROR"
lv_host dst 2 || fail "$LV_ERROR"
lv_link src dst || fail "$LV_ERROR"
lv_relay_all src dst || fail "$LV_ERROR"
dst_host=$(lv_in src timeout 20 virsh -c "$(lv_dest_uri)" hostname 2>&1) ||
	fail "the destination libvirtd through the tunnel: $dst_host"
expect_eq "destination hostname through the tunnel" "$dst_host" rmig-lv-dst

# 1. Memory only.
g=rmig-lv
boot src $g
lv_migrate_start src dst $g
lv_migrate_wait src $g 150 || fail "$LV_ERROR"
migrated $g
seq1=$SEQ
read -r tot1 down1 <<<"$(lv_job_completed src $g)"
lv_virsh dst destroy $g >/dev/null 2>&1

# 2. With its disk: the NBD stream through the tunnel too.
g=rmig-lv-disk
img=/var/lib/libvirt/images/$g.img
guest_disk_create "$LV_DIR/src/lib/images/$g.img" raw 64M || fail "$GUEST_ERROR"
guest_disk_create "$LV_DIR/dst/lib/images/$g.img" raw 64M || fail "$GUEST_ERROR"
LV_APPEND=rmig_disk_kib=256 boot src $g "$img"
grep -aq 'rmig-guest-ready .*disk=/dev/vda' "$(lv_serial src $g)" || fail "$g has no disk"
lv_migrate_start src dst $g --copy-storage-all --disks-uri "unix://$LV_RELAY_DIR/nbd.sock"
lv_migrate_wait src $g 150 || fail "$LV_ERROR"
migrated $g
read -r tot2 down2 <<<"$(lv_job_completed src $g)"
c=$(lv_counter dst $g)
lv_wait_counter dst $g $((c + 8)) 30 || fail "$LV_ERROR"
seq2=$(guest_check_disk_seq "$(lv_serial src $g)" "$(lv_serial dst $g)" 5) || fail "$g: $seq2"

pass "libvirt $(virsh --version) p2p through rmig tunnel (TLS PSK): total $tot1 ms, downtime $down1 ms (counter $seq1); with --copy-storage-all: total $tot2 ms, downtime $down2 ms ($seq2)"
