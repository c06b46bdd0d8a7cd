#!/bin/bash
# QEMU's own migration of a guest writing its local disk: the baseline of
# issue 16's bench row ("a guest writing to its disk during migration:
# rounds, downtime, total time against QEMU's native blockdev-mirror +
# migrate of the same guest and disk").
#
#   RMIG=build/rmig scripts/bench_qemu_disk_native.sh [OUTDIR]
#
# The test guest (tests/qemu, rmig_disk=1: its counter in a ring of records
# on its virtio-blk disk, read back at each count, plus BENCH_QDISK_KIB KiB
# of new data per count at a moving offset) boots on a BENCH_QDISK_MIB image
# (BENCH_QDISK_FMT raw or qcow2, in BENCH_QDISK_DIR: /dev/shm, so that the
# host's writeback does not swing the figures), counts to BENCH_QDISK_WARM,
# then migrates into a fresh QEMU with an empty image of the same size by
# tests/qemu/guest.sh's guest_migrate_disk_native: NBD export on the
# destination, blockdev-mirror sync=full copy-mode=write-blocking,
# pause-before-switchover, block-job-cancel, migrate-continue (libvirt's
# flow). Each run is checked: the images equal at the pause (qemu-img
# compare, sha256), the counter without a gap and the guest's own disk
# checks passing on the destination (guest_check_disk_seq).
#
# Prints one line per run and one of medians: disk size, the guest's disk
# write rate, total ms (blockdev-mirror to the destination ready to run),
# downtime ms (QEMU's, counting the mirror's cancel at pre-switchover),
# mirror ready ms, RAM rounds; writes OUTDIR/qemu_disk_native.json when
# OUTDIR is given. Exit 0 when every run migrated and checked out, 1
# otherwise, 2 on usage errors, 77 ("SKIP: reason") without QEMU or the
# kernel.
#
# Knobs: BENCH_QDISK_FMT (raw), BENCH_QDISK_MIB (256), BENCH_QDISK_KIB (256),
# BENCH_QDISK_RUNS (3), BENCH_QDISK_WARM (25), BENCH_QDISK_DOWNTIME_MS (300),
# BENCH_QDISK_DIR (/dev/shm), BENCH_QDISK_TIMEOUT (s per wait, 120).
set -uo pipefail
[ $# -le 1 ] || { echo "usage: RMIG=build/rmig $0 [OUTDIR]" >&2; exit 2; }
OUT=${1:-}
HERE=$(cd "$(dirname "$0")/.." && pwd)
FMT=${BENCH_QDISK_FMT:-raw}
MIB=${BENCH_QDISK_MIB:-256}
KIB=${BENCH_QDISK_KIB:-256}
RUNS=${BENCH_QDISK_RUNS:-3}
WARM=${BENCH_QDISK_WARM:-25}
DT=${BENCH_QDISK_DOWNTIME_MS:-300}
TMO=${BENCH_QDISK_TIMEOUT:-120}
case $FMT in raw | qcow2) ;; *) echo "bench_qemu_disk_native: BENCH_QDISK_FMT must be raw or qcow2" >&2; exit 2 ;; esac
for v in MIB KIB RUNS WARM DT TMO; do
	[[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench_qemu_disk_native: $v='${!v}' is not a number" >&2; exit 2; }
done
[ "$RUNS" -ge 1 ] && [ "$MIB" -ge 2 ] || { echo "bench_qemu_disk_native: RUNS >= 1 and MIB >= 2" >&2; exit 2; }
for c in jq qemu-img; do
	command -v "$c" >/dev/null || { echo "bench_qemu_disk_native: $c is missing" >&2; exit 2; }
done
if [ -n "$OUT" ]; then
	mkdir -p "$OUT" || exit 2
	OUT=$(cd "$OUT" && pwd)
fi
# The guests' files (QMP sockets: short paths) in a temp dir; the images
# in BENCH_QDISK_DIR.
GUEST_DIR=$(mktemp -d "${TMPDIR:-/tmp}/rmig-bqd.XXXXXX")
IMG=$(mktemp -d "${BENCH_QDISK_DIR:-/dev/shm}/rmig-bqd.XXXXXX") || exit 2
finish() {
	[ -n "$OUT" ] && cp "$GUEST_DIR"/*.log "$GUEST_DIR"/*.err "$OUT/" 2>/dev/null
	rm -rf "$GUEST_DIR" "$IMG"
}
trap finish EXIT
export RMIG=${RMIG:-$HERE/build/rmig} GUEST_DIR
. "$HERE/tests/qemu/guest.sh" # chains guest_cleanup in front of finish
say() { echo "bench_qemu_disk_native: $*" >&2; }

guest_prepare
case $? in
0) ;;
77) echo "SKIP: $GUEST_ERROR"; exit 77 ;;
*) say "$GUEST_ERROR"; exit 1 ;;
esac

# one I: boot, warm, migrate, check; sets RUN (the run's JSON) or returns 1
# (GUEST_ERROR). In this shell, not $(...): guest.sh tracks its QEMUs here.
one() {
	local i=$1 s=s$1 d=d$1 t0 c0 t1 c1 rate cmp seq c src_last
	guest_disk_create "$IMG/$s.img" "$FMT" "${MIB}M" && guest_disk_create "$IMG/$d.img" "$FMT" "${MIB}M" &&
		GUEST_APPEND="rmig_disk_kib=$KIB" guest_start_disk "$s" "$IMG/$s.img" "$FMT" &&
		guest_wait_counter "$s" 5 90 || return 1
	t0=$(date +%s%3N) c0=$(guest_counter "$s")
	guest_wait_counter "$s" "$WARM" 120 || return 1
	t1=$(date +%s%3N) c1=$(guest_counter "$s")
	# KiB/s the guest writes: its moving region plus the 512-byte record.
	rate=$(((c1 - c0) * (KIB * 2 + 1) * 1000 / 2 / (t1 - t0 + 1)))
	GUEST_APPEND="rmig_disk_kib=$KIB" guest_start_dst_disk "$d" "$IMG/$d.img" "$FMT" || return 1
	for g in "$s" "$d"; do
		qmp "$g" migrate-set-parameters "{\"max-bandwidth\":107374182400,\"downtime-limit\":$DT}" >/dev/null ||
			{ GUEST_ERROR="migrate-set-parameters on $g refused"; return 1; }
	done
	guest_migrate_disk_native "$s" "$d" "$TMO" || return 1
	cmp=$(guest_disk_compare "$IMG/$s.img" "$FMT" "$IMG/$d.img" "$FMT") ||
		{ GUEST_ERROR="images at the pause: $cmp"; return 1; }
	qmp "$d" cont >/dev/null || { GUEST_ERROR="cont on $d refused"; return 1; }
	src_last=$(guest_counters "$(guest_log "$s")" | tail -n1)
	c=$(guest_counter "$d")
	[ "$c" -gt "${src_last:-0}" ] || c=${src_last:-0}
	guest_wait_counter "$d" $((c + 8)) 60 || return 1
	seq=$(guest_check_disk_seq "$(guest_log "$s")" "$(guest_log "$d")" 5) || { GUEST_ERROR=$seq; return 1; }
	guest_kill "$s" KILL
	guest_kill "$d" KILL
	rm -f "$IMG/$s.img" "$IMG/$d.img"
	RUN=$(jq -c --argjson rate "$rate" --arg seq "$seq" --arg digest "${cmp#* }" \
		'. + {guest_write_kibps: $rate, counter: $seq, digest: $digest}' <<<"$GUEST_FIG")
}

line() { # LABEL JSON
	jq -r --arg l "$1" --arg fmt "$FMT" --argjson mib "$MIB" '"\($l): \($fmt) \($mib) MiB disk, guest writing \(.guest_write_kibps) KiB/s: total \(.total_ms) ms, downtime \(.downtime_ms) ms, mirror ready \(.mirror_ready_ms) ms, cancel \(.cancel_ms) ms, migrate \(.migrate_ms) ms, \(.rounds) RAM rounds"' <<<"$2"
}

runs="[]" bad=0
for i in $(seq "$RUNS"); do
	if one "$i"; then
		line "run $i" "$RUN"
		runs=$(jq -c --argjson r "$RUN" '. + [$r]' <<<"$runs")
	else
		say "run $i: $GUEST_ERROR"
		echo "run $i: failed: $GUEST_ERROR"
		bad=1
	fi
	guest_kill "s$i" KILL
	guest_kill "d$i" KILL
done
med=$(jq -c 'def med(f): [.[] | f] | sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
	if length == 0 then null else {guest_write_kibps: med(.guest_write_kibps), total_ms: med(.total_ms),
	downtime_ms: med(.downtime_ms), mirror_ready_ms: med(.mirror_ready_ms), cancel_ms: med(.cancel_ms),
	migrate_ms: med(.migrate_ms), rounds: med(.rounds)} end' <<<"$runs")
[ "$med" != null ] && line "median of $(jq length <<<"$runs")" "$med"
if [ -n "$OUT" ]; then
	jq -n --arg date "$(date -u +%FT%TZ)" --arg qemu "$(qemu-system-x86_64 --version | head -n1)" \
		--arg fmt "$FMT" --argjson mib "$MIB" --argjson kib "$KIB" --argjson dt "$DT" \
		--argjson runs "$runs" --argjson med "$med" --argjson ok $((1 - bad)) \
		'{date: $date, qemu: $qemu, format: $fmt, disk_mib: $mib, guest_disk_kib_per_count: $kib,
		  downtime_limit_ms: $dt, ok: ($ok == 1), runs: $runs, median: $med}' \
		>"$OUT/qemu_disk_native.json" || { say "cannot write $OUT/qemu_disk_native.json"; exit 1; }
fi
exit $bad
