#!/bin/bash
# QEMU's own migration of a guest with a local disk (issue 16's baseline, no
# rmig): the test guest (tests/qemu) with rmig_disk=1 keeps its counter in a
# ring of records on its virtio-blk disk and reads it back at every count,
# and writes DISK_KIB (256) KiB more per count at a moving offset. It is
# migrated with blockdev-mirror (write-blocking) to the destination's NBD
# export + migrate, as libvirt does (guest_migrate_disk_native in
# tests/qemu/guest.sh), once with a raw image and once with a qcow2 one, 64
# MiB each. Asserts: the migration completes; the source image at the pause
# equals the destination's (qemu-img compare and sha256 of the content, both
# QEMUs stopped); after `cont` the destination's guest counts on without a
# gap and its own disk checks pass (at least 5, no rmig-disk-BAD).
# GUEST_NATIVE_NO_MIRROR=1 breaks the recipe (no mirror): this must fail.
# Skips when QEMU or the kernel cannot be had, except under CI=true.
. "$(dirname "$0")/lib.sh"
set -o pipefail
. "$(dirname "$0")/../qemu/guest.sh"

DISK_KIB=${DISK_KIB:-256}
WARM=25 # counts before migrating: the ring (16 records) has wrapped

missing() {
	[ "${CI:-}" = true ] && fail "CI=true and $*"
	skip "$*"
}
for c in qemu-img jq; do
	command -v "$c" >/dev/null || missing "$c is not installed"
done
guest_prepare
case $? in
0) ;;
77) missing "$GUEST_ERROR" ;;
*) fail "$GUEST_ERROR" ;;
esac

# run FMT: one migration of a guest on a FMT image; appends to FIGURES.
run() {
	local f=$1 s=src-$1 d=dst-$1 t0 c0 t1 c1 src_last c cmp seq rate
	guest_disk_create "$T/$s.img" "$f" 64M || fail "$GUEST_ERROR"
	guest_disk_create "$T/$d.img" "$f" 64M || fail "$GUEST_ERROR"
	GUEST_APPEND="rmig_disk_kib=$DISK_KIB" guest_start_disk "$s" "$T/$s.img" "$f" ||
		fail "$f: $GUEST_ERROR"
	guest_wait_counter "$s" 5 90 || fail "$f: $GUEST_ERROR"
	t0=$(millis) c0=$(guest_counter "$s")
	guest_wait_counter "$s" $WARM 60 || fail "$f: $GUEST_ERROR"
	t1=$(millis) c1=$(guest_counter "$s")
	# KiB/s the guest writes while it runs (before the mirror): its moving
	# region plus the 512-byte record, per count.
	rate=$(((c1 - c0) * (2 * DISK_KIB + 1) * 1000 / 2 / (t1 - t0 + 1)))
	GUEST_APPEND="rmig_disk_kib=$DISK_KIB" guest_start_dst_disk "$d" "$T/$d.img" "$f" ||
		fail "$f: $GUEST_ERROR"
	for g in "$s" "$d"; do
		qmp "$g" migrate-set-parameters '{"max-bandwidth":107374182400,"downtime-limit":300}' \
			>/dev/null || fail "$f: migrate-set-parameters on $g refused"
	done

	guest_migrate_disk_native "$s" "$d" 120 || fail "$f: QEMU's migration: $GUEST_ERROR"
	expect_eq "$f: source QEMU status" "$(guest_status "$s")" "postmigrate false"
	# Both stopped: the source at its pause, the destination before it runs.
	cmp=$(guest_disk_compare "$T/$s.img" "$f" "$T/$d.img" "$f") ||
		fail "$f: source image at the pause vs destination image: $cmp"
	qmp "$d" cont >/dev/null || fail "$f: cont on the destination refused"
	expect_eq "$f: destination QEMU status" "$(guest_status "$d")" "running true"

	src_last=$(guest_counters "$(guest_log "$s")" | tail -n1)
	c=$(guest_counter "$d")
	[ "$c" -gt "${src_last:-0}" ] || c=${src_last:-0}
	guest_wait_counter "$d" $((c + 8)) 60 ||
		fail "$f: the destination's counter stopped at $(guest_counter "$d") (source's last: $src_last)"
	seq=$(guest_check_disk_seq "$(guest_log "$s")" "$(guest_log "$d")" 5) ||
		fail "$f: across the migration (source's last count $src_last): $seq"
	[ "${seq%%..*}" = 1 ] || fail "$f: the source's console starts at counter ${seq%%..*}, not 1"
	guest_kill "$s" KILL
	guest_kill "$d" KILL
	FIGURES+="$f: total $(jq .total_ms <<<"$GUEST_FIG") ms, downtime $(jq .downtime_ms <<<"$GUEST_FIG") ms"
	FIGURES+=" (mirror ready $(jq .mirror_ready_ms <<<"$GUEST_FIG") ms, cancel at pre-switchover"
	FIGURES+=" $(jq .cancel_ms <<<"$GUEST_FIG") ms, $(jq .rounds <<<"$GUEST_FIG") RAM rounds),"
	FIGURES+=" guest writing ~$rate KiB/s; counter $seq; images equal (${cmp%% *} bytes, sha256 ${cmp#* })"$'\n'
}

FIGURES=""
run raw
run qcow2
printf '%s' "$FIGURES" | sed 's/^/  /'
pass "QEMU's blockdev-mirror + migrate of a guest writing its disk, raw and qcow2: the guest reads its counter back on the destination, images equal"
