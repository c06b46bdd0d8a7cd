#!/bin/bash
# timeout: 600
# A real libvirtd pair (tests/libvirt: two mount + network namespaces on this
# machine, a veth pair between them) migrates the counter guest with
# `virsh migrate --live --p2p` through UNIX sockets only, each carried by a
# plain socat relay (UNIX -> TCP over the veth -> UNIX): the baseline that
# `rmig tunnel` will replace (LV_RELAY). Asserts: the migration completes,
# the source's domjobinfo showed it running meanwhile, the guest runs on
# the destination and not on the source, its counter goes on without a gap;
# with --copy-storage-all --disks-uri (the NBD stream relayed too), the disk
# guest on the destination reads back what the source wrote. Negative: a
# wrong destination socket fails at once, and a relay cut mid-migration
# fails the migration with the source still running its guest.
# Figures (domjobinfo --completed: total time, downtime) in the pass line.
. "$(dirname "$0")/lib.sh"
set -o pipefail
. "$(dirname "$0")/../qemu/guest.sh"
. "$(dirname "$0")/../libvirt/lv.sh"

# The guest's kernel and initramfs (QMP client not needed: libvirt owns QEMU).
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

# boot HOST NAME [IMG]: define and start the guest, wait for count 20.
boot() {
	lv_start "$@" || fail "$LV_ERROR"
	lv_wait_counter "$1" "$2" 20 90 || fail "$LV_ERROR"
}

# migrated NAME: what must hold after a successful migration of NAME: virsh
# said so, the source's domjobinfo saw it running, the guest runs on dst
# only, and counts on from the source's last value without a gap. Sets
# SEQ: the sequence (guest_check_seq).
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
	fail "the destination libvirtd through the relay: $dst_host"
expect_eq "destination hostname through the relay" "$dst_host" rmig-lv-dst

# 1. Memory only.
g=rmig-lv
boot src $g
# A destination socket nobody listens on: refused at once, the guest untouched.
if out=$(lv_in src timeout 30 virsh -c qemu:///system migrate --live --p2p $g \
	"qemu+unix:///system?socket=$LV_RELAY_DIR/nobody.sock" \
	--migrateuri "unix://$LV_RELAY_DIR/migrate.sock" 2>&1); then
	fail "a migration to a socket nobody listens on succeeded"
fi
grep -q "nobody.sock" <<<"$out" || fail "the refused migration's error does not name the socket: $out"
expect_eq "$g after the refused migration" "$(lv_state src $g)" running

lv_migrate_start src dst $g
lv_migrate_wait src $g 150 || fail "$LV_ERROR"
migrated $g
seq1=$SEQ
read -r tot1 down1 <<<"$(lv_job_completed src $g)"
lv_virsh dst destroy $g >/dev/null 2>&1 # the CPU for what follows

# 2. The relay's migration channel cut mid-stream: the migration fails and
# the source keeps running its guest (socat has no failover; rmig tunnel's
# test expects the opposite). --bandwidth (MiB/s) keeps it going long
# enough to be cut.
g=rmig-lv-cut
boot src $g
lv_migrate_start src dst $g --bandwidth 4
# Cut once QEMU's stream carries data (before, the source would only fail
# to connect), at least 4 MiB.
for _ in $(seq 300); do
	b=$(lv_job_bytes src $g)
	[ "${b:-0}" -ge 4194304 ] && break
	kill -0 "$LV_MIG_PID" 2>/dev/null || break
	sleep 0.1
done
cut_at=$(lv_job_bytes src $g)
cut_at=${cut_at:-0}
[ "$cut_at" -ge 4194304 ] || fail "$g's migration never got 4 MiB through (at $cut_at bytes)"
lv_relay_cut "$LV_RELAY_DIR/migrate.sock" || fail "$LV_ERROR"
lv_migrate_wait src $g 60 || fail "after the cut: $LV_ERROR"
[ "$LV_MIGRATE_RC" != 0 ] || fail "the migration of $g completed although its relay was cut"
cut_err=$(tr '\n' ' ' <"$LV_DIR/migrate-$g.err" | sed 's/Migration: \[[^]]*\]//g; s/  */ /g')
expect_eq "$g on the source after the cut" "$(lv_state src $g)" running
c=$(lv_counter src $g)
lv_wait_counter src $g $((c + 10)) 30 || fail "$g stopped counting on the source after the failed migration: $LV_ERROR"
guest_check_seq "$(lv_serial src $g)" >/dev/null || fail "$g's counter on the source: $GUEST_ERROR"
st=$(lv_state dst $g)
[ "$st" = none ] || [ "$st" = "shut off" ] || fail "$g is '$st' on the destination after the failed migration"
lv_virsh src destroy $g >/dev/null 2>&1
lv_relay src dst "$LV_RELAY_DIR/migrate.sock" "${LV_PORT[migrate]}" || fail "relay again: $LV_ERROR"

# 3. With its disk: --copy-storage-all, the NBD stream through the relay
# too. The image has the same path on both hosts (each its own file).
g=rmig-lv-disk
img=/var/lib/libvirt/images/$g.img
guest_disk_create "$LV_DIR/src/lib/images/$g.img" raw 64M || fail "$GUEST_ERROR"
guest_disk_create "$LV_DIR/dst/lib/images/$g.img" raw 64M || fail "$GUEST_ERROR"
LV_APPEND=rmig_disk_kib=256 boot src $g "$img"
grep -aq 'rmig-guest-ready .*disk=/dev/vda' "$(lv_serial src $g)" || fail "$g has no disk: $(grep -a -m1 rmig-disk-BAD "$(lv_serial src $g)")"
lv_migrate_start src dst $g --copy-storage-all --disks-uri "unix://$LV_RELAY_DIR/nbd.sock"
lv_migrate_wait src $g 150 || fail "$LV_ERROR"
migrated $g
read -r tot3 down3 <<<"$(lv_job_completed src $g)"
c=$(lv_counter dst $g)
lv_wait_counter dst $g $((c + 8)) 30 || fail "$LV_ERROR"
seq3=$(guest_check_disk_seq "$(lv_serial src $g)" "$(lv_serial dst $g)" 5) || fail "$g: $seq3"

pass "libvirt $(virsh --version) p2p over socat relays: total $tot1 ms, downtime $down1 ms (counter $seq1); with --copy-storage-all: total $tot3 ms, downtime $down3 ms ($seq3); relay cut after $((cut_at >> 20)) MiB: failed (${cut_err:0:120}), source still running"
