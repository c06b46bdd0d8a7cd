#!/bin/bash
# timeout: 600
# A real QEMU guest with a local disk migrated by rmig with disks=all on
# both sides (issue 16): the test guest (tests/qemu, rmig_disk=1) keeps its
# counter in a ring of records on its virtio-blk disk and reads it back at
# every count. rmig copies the disk in pre-copy rounds through QEMU's NBD
# server, then QEMU migrates its memory, and the disk's last round goes at
# QEMU's pause. Once with a raw image whose guest writes only its ring, once
# with a qcow2 one whose guest also writes DISK_KIB KiB per count.
# Asserts what a user would check: both sides migrated and say the disk
# moved and was verified; the counter goes on without a gap and the
# destination's guest reads back, from the destination's disk, the records
# the source wrote before the pause; the images are equal but for what the
# destination's guest wrote since it started (raw: only its ring; qcow2: no
# more blocks than it can have written). Then the refusals and failures a
# user meets: a destination disk smaller than the source's (exit 1, one line
# naming both sizes, the source guest runs on) and a destination QEMU killed
# mid-copy (exit 3, rolled back, the source guest runs on, no NBD export or
# dirty bitmap of rmig's left on it); a guest writing its disk as fast as
# the link moves it, held while QEMU migrates its memory.
. "$(dirname "$0")/lib.sh"
set -o pipefail
qemu_guest_or_skip
for c in qemu-img jq cmp; do
	command -v "$c" >/dev/null || fail "$c is not installed"
done

DISK_KIB=${DISK_KIB:-256}
WARM=20 # counts before migrating: the ring (16 records) has wrapped
RING_BYTES=8192

# migrate_disk NAME [DISKS]: rmig send/recv of guest src-NAME to dst-NAME,
# the disks chosen by the tool's --disks=DISKS, or by the backend's own
# disks=all without DISKS; sets SEND_RC, RECV_RC; outputs in
# $T/NAME.{send,recv}.{out,err}.
migrate_disk() {
	local n=$1 spec=",disks=all" opt=()
	[ -z "${2:-}" ] || { spec="" opt=(--disks="$2"); }
	start_recv "$n.recv" --transport tcp --backend "qemu:qmp=$(guest_qmp_socket "dst-$n")$spec" "${opt[@]}"
	"$RMIG" send --json --transport tcp --downtime-ms 300 "${opt[@]}" \
		--backend "qemu:qmp=$(guest_qmp_socket "src-$n")$spec" \
		"127.0.0.1:$PORT" >"$T/$n.send.out" 2>"$T/$n.send.err" &
	SEND_PID=$!
	PIDS="$PIDS $SEND_PID"
	wait_pid "$SEND_PID" 180
	SEND_RC=$RC
	wait_pid "$RECV_PID" 60
	RECV_RC=$RC
}

# diff_blocks A B: the 4 KiB blocks where two raw images differ, one per line.
diff_blocks() {
	cmp -l "$1" "$2" 2>/dev/null | awk '{ b = int(($1 - 1) / 4096); if (b != last) print b; last = b }'
}

# run FMT KIB [DISKS]: migrate a guest on a FMT image writing KIB per count
# (DISKS: migrate_disk's).
run() {
	local f=$1 kib=$2 n=$1 src_last seq c0 blocks allowed
	guest_disk_create "$T/src-$n.img" "$f" 64M || fail "$GUEST_ERROR"
	guest_disk_create "$T/dst-$n.img" "$f" 64M || fail "$GUEST_ERROR"
	GUEST_APPEND="rmig_disk_kib=$kib" guest_start_disk "src-$n" "$T/src-$n.img" "$f" ||
		fail "$f: $GUEST_ERROR"
	guest_wait_counter "src-$n" $WARM 90 || fail "$f: $GUEST_ERROR"
	GUEST_APPEND="rmig_disk_kib=$kib" guest_start_dst_disk "dst-$n" "$T/dst-$n.img" "$f" ||
		fail "$f: $GUEST_ERROR"
	migrate_disk "$n" "${3:-}"
	expect_eq "$f: send exit code ($(tail -c 300 "$T/$n.send.err"))" "$SEND_RC" 0
	expect_eq "$f: recv exit code ($(tail -c 300 "$T/$n.recv.err"))" "$RECV_RC" 0
	expect_eq "$f: source result" "$(summary "$T/$n.send.out" result)" migrated
	expect_eq "$f: disks migrated" "$(summary "$T/$n.send.out" disks)" 1
	expect_eq "$f: disks verified" "$(summary "$T/$n.send.out" disks_verified)" true
	expect_eq "$f: source QEMU" "$(guest_status "src-$n")" "postmigrate false"
	expect_eq "$f: destination QEMU" "$(guest_status "dst-$n")" "running true"

	# The counter, and the guest's own reads of its disk at the destination.
	src_last=$(guest_counters "$(guest_log "src-$n")" | tail -n1)
	guest_wait_counter "dst-$n" $((src_last + 8)) 60 ||
		fail "$f: the destination's guest stopped counting after the source's $src_last: $GUEST_ERROR"
	seq=$(guest_check_disk_seq "$(guest_log "src-$n")" "$(guest_log "dst-$n")" 5) ||
		fail "$f: $seq"

	# The images: the source's is as at the pause (its QEMU stopped for good);
	# the destination's once its QEMU stopped the guest and flushed.
	qmp "dst-$n" stop >/dev/null || fail "$f: stop on the destination refused"
	c0=$(guest_counter "dst-$n")
	qemu-img convert -U -f "$f" -O raw "$T/src-$n.img" "$T/src-$n.raw" &&
		qemu-img convert -U -f "$f" -O raw "$T/dst-$n.img" "$T/dst-$n.raw" ||
		fail "$f: qemu-img convert of the images failed"
	blocks=$(diff_blocks "$T/src-$n.raw" "$T/dst-$n.raw")
	if [ "$kib" = 0 ]; then
		# Only the ring can differ: the destination's guest wrote nothing else.
		outside=$(awk -v r=$((RING_BYTES / 4096)) '$1 >= r' <<<"$blocks" | head -3 | xargs)
		[ -z "$outside" ] || fail "$f: the images differ outside the ring, at 4 KiB blocks $outside"
	else
		# Each count after the start writes KIB in the moving region.
		allowed=$(((c0 - src_last + 2) * (kib / 4 + 1) + RING_BYTES / 4096))
		[ "$(grep -c . <<<"$blocks")" -le "$allowed" ] ||
			fail "$f: $(grep -c . <<<"$blocks") blocks differ, more than the $allowed the destination's guest wrote since"
	fi
	FIGURES="$FIGURES $f: $(summary "$T/$n.send.out" rounds) rounds, $(summary "$T/$n.send.out" disk_blocks_sent) blocks, downtime $(summary "$T/$n.send.out" downtime_ms) ms, total $(summary "$T/$n.send.out" total_ms) ms, $seq;"
	guest_kill "src-$n"
	guest_kill "dst-$n"
}

FIGURES=""
run raw 0
run qcow2 "$DISK_KIB" vda # the tool's --disks=vda

# --- a guest writing its disk as fast as a limited link moves it: the disks'
# pre-copy throttles it, and while QEMU migrates its memory what it writes
# is held to what the pause can carry (the rest of the downtime limit is
# QEMU's): its writes are limited further, said in a warning; migrated,
# verified, the counter and the disk checks without a gap.
guest_disk_create "$T/src-hold.img" raw 64M || fail "$GUEST_ERROR"
guest_disk_create "$T/dst-hold.img" raw 64M || fail "$GUEST_ERROR"
GUEST_APPEND="rmig_disk_kib=4096 rmig_dirty_kib=0" guest_start_disk src-hold "$T/src-hold.img" raw ||
	fail "$GUEST_ERROR"
guest_wait_counter src-hold $WARM 90 || fail "$GUEST_ERROR"
GUEST_APPEND="rmig_disk_kib=4096 rmig_dirty_kib=0" guest_start_dst_disk dst-hold "$T/dst-hold.img" raw ||
	fail "$GUEST_ERROR"
start_recv hold.recv --transport tcp --backend "qemu:qmp=$(guest_qmp_socket dst-hold),disks=all"
"$RMIG" send --json --transport tcp --max-bandwidth 8M \
	--backend "qemu:qmp=$(guest_qmp_socket src-hold),disks=all" "127.0.0.1:$PORT" \
	>"$T/hold.send.out" 2>"$T/hold.send.err" &
SEND_PID=$!
PIDS="$PIDS $SEND_PID"
wait_pid "$SEND_PID" 240
expect_eq "held disk writes: send exit code ($(grep -v '^{' "$T/hold.send.err" | tail -1))" "$RC" 0
wait_pid "$RECV_PID" 60
expect_eq "held disk writes: disks verified" "$(summary "$T/hold.send.out" disks_verified)" true
held=$(jq -r 'select(.event=="warning") | .detail' "$T/hold.send.out" | grep -m1 'while the hypervisor migrates its memory') ||
	fail "no warning that the disk writes were held while QEMU migrated its memory: $(jq -c 'select(.event=="warning") | .detail' "$T/hold.send.out" | xargs)"
expect_eq "held disk writes: the lowest limit put on the guest's disk (bytes/s)" \
	"$(summary "$T/hold.send.out" disk_throttle_bps)" 16384
expect_eq "held disk writes: source QEMU's write limit put back" \
	"$(qmp src-hold query-block | jq -r '[.return[]?.inserted.bps_wr // empty] | max')" 0
src_last=$(guest_counters "$(guest_log src-hold)" | tail -n1)
guest_wait_counter dst-hold $((src_last + 6)) 60 || fail "held: the destination stopped counting: $GUEST_ERROR"
seq=$(guest_check_disk_seq "$(guest_log src-hold)" "$(guest_log dst-hold)" 5) || fail "held: $seq"
FIGURES="$FIGURES held: downtime $(summary "$T/hold.send.out" downtime_ms) ms;"
guest_kill src-hold
guest_kill dst-hold

# --- a destination disk smaller than the source's: refused before anything
guest_disk_create "$T/src-small.img" raw 64M || fail "$GUEST_ERROR"
guest_disk_create "$T/dst-small.img" raw 32M || fail "$GUEST_ERROR"
guest_start_disk src-small "$T/src-small.img" raw || fail "$GUEST_ERROR"
guest_wait_counter src-small 3 90 || fail "$GUEST_ERROR"
guest_start_dst_disk dst-small "$T/dst-small.img" raw || fail "$GUEST_ERROR"
migrate_disk small
expect_eq "smaller destination disk: send exit code" "$SEND_RC" 1
err=$(grep -v '^{' "$T/small.send.err" | tail -1)
grep -q '32\(\.0\)\? \?MiB\|33554432' <<<"$err" && grep -q '64\(\.0\)\? \?MiB\|67108864' <<<"$err" ||
	fail "the refusal does not name both sizes: $err"
[ "$(grep -vc '^{' "$T/small.send.err")" -le 1 ] || fail "more than one error line: $(cat "$T/small.send.err")"
c0=$(guest_counter src-small)
guest_wait_counter src-small $((c0 + 3)) 30 || fail "the source guest stopped after the refusal"
guest_kill src-small
guest_kill dst-small

# --- the destination's QEMU dies mid-copy: rolled back, the source runs on
guest_disk_create "$T/src-kill.img" raw 64M || fail "$GUEST_ERROR"
guest_disk_create "$T/dst-kill.img" raw 64M || fail "$GUEST_ERROR"
# 32 MiB of data for the disks' first round: 4 s at 8 MB/s. (Empty, the
# image's first round took a moment, and the destination, killed after it,
# sometimes died once QEMU's own stream had begun: an error about the
# stream, not the disk.)
dd if=/dev/urandom of="$T/src-kill.img" bs=1M count=32 conv=notrunc status=none ||
	fail "filling src-kill.img"
GUEST_APPEND="rmig_disk_kib=1024" guest_start_disk src-kill "$T/src-kill.img" raw || fail "$GUEST_ERROR"
guest_wait_counter src-kill 3 90 || fail "$GUEST_ERROR"
guest_start_dst_disk dst-kill "$T/dst-kill.img" raw || fail "$GUEST_ERROR"
(
	# Once 4 MiB of the disks' first round moved, the destination dies.
	for _ in $(seq 1 400); do
		b=$(jq -r 'select(.event=="progress") | .transferred' "$T/kill.send.out" 2>/dev/null | tail -n1)
		[ "${b:-0}" -ge 4194304 ] 2>/dev/null && break
		sleep 0.05
	done
	guest_kill dst-kill
) &
KILLER=$!
start_recv kill.recv --transport tcp --backend "qemu:qmp=$(guest_qmp_socket dst-kill),disks=all"
"$RMIG" send --json --transport tcp --max-bandwidth 8M \
	--backend "qemu:qmp=$(guest_qmp_socket src-kill),disks=all" "127.0.0.1:$PORT" \
	>"$T/kill.send.out" 2>"$T/kill.send.err" &
SEND_PID=$!
PIDS="$PIDS $SEND_PID"
wait_pid "$SEND_PID" 120
kill_rc=$RC
wait "$KILLER" 2>/dev/null
expect_eq "destination killed: send exit code ($(grep -v '^{' "$T/kill.send.err" | tail -1))" "$kill_rc" 3
expect_eq "destination killed: source result" "$(summary "$T/kill.send.out" result)" rolled_back
# Its rmig tells the source which disk failed, and where.
grep -v '^{' "$T/kill.send.err" | tail -1 | grep -q 'disk vda at offset' ||
	fail "destination killed: the source's error does not name the disk: $(grep -v '^{' "$T/kill.send.err" | tail -1)"
expect_eq "destination killed: source QEMU" "$(guest_status src-kill)" "running true"
c0=$(guest_counter src-kill)
guest_wait_counter src-kill $((c0 + 3)) 30 || fail "the source guest stopped counting after the rollback"
left=$(qmp src-kill query-block-exports | jq -r '.return[]?.id' | xargs)
[ -z "$left" ] || fail "exports left on the source after the rollback: $left"
bitmaps=$(qmp src-kill query-block | jq -r '.return[]?.inserted."dirty-bitmaps"[]?.name' | xargs)
[ -z "$bitmaps" ] || fail "dirty bitmaps left on the source after the rollback: $bitmaps"

# --- the link lost in the disks' pre-copy (a cut on the first ROUND_END,
# before QEMU's stream began): the sender fails over and the migration
# goes on (the destination's first word on the new link, where its stream
# stands, came before the round's ROUND_ACK and was refused: exit 3)
PROXY=$(dirname "$RMIG")/tests/faultproxy
guest_disk_create "$T/src-cut.img" raw 64M || fail "$GUEST_ERROR"
guest_disk_create "$T/dst-cut.img" raw 64M || fail "$GUEST_ERROR"
guest_start_disk src-cut "$T/src-cut.img" raw || fail "$GUEST_ERROR"
guest_wait_counter src-cut 3 90 || fail "$GUEST_ERROR"
guest_start_dst_disk dst-cut "$T/dst-cut.img" raw || fail "$GUEST_ERROR"
start_recv cut.recv --transport tcp --backend "qemu:qmp=$(guest_qmp_socket dst-cut),disks=all"
start_faultproxy cut --cut-on ROUND_END:1
"$RMIG" send --json --transport tcp --backend "qemu:qmp=$(guest_qmp_socket src-cut),disks=all" \
	"127.0.0.1:$PPORT" >"$T/cut.send.out" 2>"$T/cut.send.err" &
SEND_PID=$!
PIDS="$PIDS $SEND_PID"
wait_pid "$SEND_PID" 120
expect_eq "cut in the disks' pre-copy: send exit code ($(grep -v '^{' "$T/cut.send.err" | tail -1))" "$RC" 0
wait_pid "$RECV_PID" 60
expect_eq "cut in the disks' pre-copy: recv exit code" "$RC" 0
grep -q '^faultproxy: cut on ROUND_END' "$T/cut-proxy.err" || fail "the proxy did not cut"
expect_eq "cut in the disks' pre-copy: failovers" "$(summary "$T/cut.send.out" failovers)" 1
expect_eq "cut in the disks' pre-copy: disks verified" "$(summary "$T/cut.send.out" disks_verified)" true
guest_kill src-cut
guest_kill dst-cut

pass "${FIGURES% ;} smaller disk refused; destination killed: rolled back, source clean; a cut in the disks' pre-copy failed over"
