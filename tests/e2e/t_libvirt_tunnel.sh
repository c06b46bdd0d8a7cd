#!/bin/bash
# timeout: 600
# The libvirt pair of t_libvirt_relay.sh (tests/libvirt) with `rmig tunnel`
# in place of the socat relays (LV_RELAY=rmig: one tunnel per channel,
# TLS 1.3 with a PSK over the veth pair): libvirtd's RPC, QEMU's migration
# stream and the NBD stream all go through it. Asserts: `virsh migrate
# --live --p2p` completes, the source's domjobinfo showed it running, the
# guest runs on the destination only, its counter goes on without a gap;
# with --copy-storage-all the disk guest reads back on the destination what
# it wrote on the source; with the tunnels' links cut mid-migration (the
# migration stream's twice, libvirtd's once: the kernel aborts them) the
# tunnels connect again, send again what was lost, and the migration
# completes as if nothing happened.
. "$(dirname "$0")/lib.sh"
set -o pipefail
. "$(dirname "$0")/../qemu/guest.sh"
export LV_RELAY=rmig
. "$(dirname "$0")/../libvirt/lv.sh"

lv_test_prepare
lv_test_hosts tunnel

# 1. Memory only.
g=rmig-lv
lv_test_boot src $g
lv_migrate_start src dst $g
lv_migrate_wait src $g 150 || fail "$LV_ERROR"
lv_test_migrated $g
seq1=$SEQ
read -r tot1 down1 <<<"$(lv_job_completed src $g)"
lv_virsh dst destroy $g >/dev/null 2>&1

# 2. Links cut mid-migration. --bandwidth (MiB/s) keeps it going long
# enough; the first cut once QEMU's stream carries data (4 MiB).
g=rmig-lv-cut
lv_test_boot src $g
lv_migrate_start src dst $g --bandwidth 4
for _ in $(seq 300); do
	b=$(lv_job_bytes src $g)
	[ "${b:-0}" -ge 4194304 ] && break
	kill -0 "$LV_MIG_PID" 2>/dev/null || break
	sleep 0.1
done
[ "${b:-0}" -ge 4194304 ] || fail "$g's migration never got 4 MiB through (at ${b:-0} bytes)"
lv_tunnel_reset src dst "${LV_PORT[migrate]}" || fail "$LV_ERROR"
sleep 1
lv_tunnel_reset src dst "${LV_PORT[libvirt]}" || fail "$LV_ERROR"
sleep 1
lv_tunnel_reset src dst "${LV_PORT[migrate]}" || fail "$LV_ERROR"
# At 4 MiB/s the counting guest never converges: the limit goes now.
lv_virsh src migrate-setspeed $g 8192 >/dev/null || fail "virsh migrate-setspeed failed"
lv_migrate_wait src $g 150 || fail "after the cuts: $LV_ERROR"
lv_test_migrated $g
seq3=$SEQ
read -r tot3 down3 <<<"$(lv_job_completed src $g)"
backs=$(cat "$LV_DIR"/tunnel-migrate-src.err "$LV_DIR"/tunnel-libvirt-src.err | grep -c "back:")
[ "$backs" -ge 3 ] || fail "the tunnels came back $backs times for 3 cuts"
lv_virsh dst destroy $g >/dev/null 2>&1

# 3. With its disk: the NBD stream through the tunnel too.
g=rmig-lv-disk
img=/var/lib/libvirt/images/$g.img
guest_disk_create "$LV_DIR/src/lib/images/$g.img" raw 64M || fail "$GUEST_ERROR"
guest_disk_create "$LV_DIR/dst/lib/images/$g.img" raw 64M || fail "$GUEST_ERROR"
LV_APPEND=rmig_disk_kib=256 lv_test_boot src $g "$img"
grep -aq 'rmig-guest-ready .*disk=/dev/vda' "$(lv_serial src $g)" || fail "$g has no disk"
lv_migrate_start src dst $g --copy-storage-all --disks-uri "unix://$LV_RELAY_DIR/nbd.sock"
lv_migrate_wait src $g 150 || fail "$LV_ERROR"
lv_test_migrated $g
read -r tot2 down2 <<<"$(lv_job_completed src $g)"
c=$(lv_counter dst $g)
lv_wait_counter dst $g $((c + 8)) 30 || fail "$LV_ERROR"
seq2=$(guest_check_disk_seq "$(lv_serial src $g)" "$(lv_serial dst $g)" 5) || fail "$g: $seq2"

pass "libvirt $(virsh --version) p2p through rmig tunnel (TLS PSK): total $tot1 ms, downtime $down1 ms (counter $seq1); through 3 cut links: total $tot3 ms, downtime $down3 ms (counter $seq3); with --copy-storage-all: total $tot2 ms, downtime $down2 ms ($seq2)"
