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

lv_test_prepare
lv_test_hosts relay

# 1. Memory only.
g=rmig-lv
lv_test_boot src $g
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
lv_test_migrated $g
seq1=$SEQ
read -r tot1 down1 <<<"$(lv_job_completed src $g)"
lv_virsh dst destroy $g >/dev/null 2>&1 # the CPU for what follows

# 2. The relay's migration channel cut mid-stream: the migration fails and
# the source keeps running its guest (socat has no failover; rmig tunnel's
# test expects the opposite). --bandwidth (MiB/s) keeps it going long
# enough to be cut.
g=rmig-lv-cut
lv_test_boot src $g
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
LV_APPEND=rmig_disk_kib=256 lv_test_boot src $g "$img"
grep -aq 'rmig-guest-ready .*disk=/dev/vda' "$(lv_serial src $g)" || fail "$g has no disk: $(grep -a -m1 rmig-disk-BAD "$(lv_serial src $g)")"
lv_migrate_start src dst $g --copy-storage-all --disks-uri "unix://$LV_RELAY_DIR/nbd.sock"
lv_migrate_wait src $g 150 || fail "$LV_ERROR"
lv_test_migrated $g
read -r tot3 down3 <<<"$(lv_job_completed src $g)"
c=$(lv_counter dst $g)
lv_wait_counter dst $g $((c + 8)) 30 || fail "$LV_ERROR"
seq3=$(guest_check_disk_seq "$(lv_serial src $g)" "$(lv_serial dst $g)" 5) || fail "$g: $seq3"

pass "libvirt $(virsh --version) p2p over socat relays: total $tot1 ms, downtime $down1 ms (counter $seq1); with --copy-storage-all: total $tot3 ms, downtime $down3 ms ($seq3); relay cut after $((cut_at >> 20)) MiB: failed (${cut_err:0:120}), source still running"
