#!/bin/bash
# (12) A guest writing its local disk, migrated by QEMU's own recipe and by
# rmig (issue 16's row: "a guest writing to its disk during migration:
# rounds, downtime, total time against QEMU's native blockdev-mirror +
# migrate of the same guest and disk"). Runs alternate, QEMU's then rmig's,
# BENCH_QDISK_RUNS times each; medians are compared.
#
#   RMIG=build/rmig scripts/bench_qdisk.sh [OUTDIR]
#
# The test guest (tests/qemu, rmig_disk=1: its counter in a ring of records
# on its virtio-blk disk, read back at each count, plus BENCH_QDISK_KIB KiB
# of new data per count at a moving offset) boots on a BENCH_QDISK_MIB image
# (BENCH_QDISK_FMT raw or qcow2, in BENCH_QDISK_DIR: /dev/shm, so that the
# host's writeback does not swing the figures), counts to BENCH_QDISK_WARM,
# then migrates into a fresh QEMU with an empty image of the same size:
#  - QEMU: tests/qemu/guest.sh's guest_migrate_disk_native (libvirt's flow:
#    NBD export on the destination, blockdev-mirror sync=full
#    copy-mode=write-blocking, pause-before-switchover, block-job-cancel,
#    migrate-continue). Total: blockdev-mirror to the destination ready to
#    run; downtime: QEMU's (query-migrate), the mirror's cancel included.
#    Checked: the images equal at the pause (qemu-img compare, sha256).
#  - rmig: rmig send/recv with the qemu backend and disks=all on both sides
#    (the disk's pre-copy rounds through QEMU's NBD server, then QEMU's own
#    memory pre-copy over rmig, the disk's last round at QEMU's pause). Total
#    and downtime: rmig's summary (connect to STARTED; pause to STARTED).
#    Checked: both sides migrated, the disk's digests compared equal.
# Both: the counter without a gap and the guest's own disk checks passing on
# the destination (guest_check_disk_seq).
#
# Prints a markdown table (each run, then the medians side by side) and
# writes OUTDIR/qdisk.json when OUTDIR is given. Exit 0 when every run
# migrated and checked out, 1 otherwise, 2 on usage errors, 77 ("SKIP:
# reason") without QEMU or the kernel.
#
# Knobs: BENCH_QDISK_FMT (raw), BENCH_QDISK_MIB (256), BENCH_QDISK_KIB (256),
# BENCH_QDISK_RUNS (3), BENCH_QDISK_WARM (25), BENCH_QDISK_DOWNTIME_MS (300),
# BENCH_QDISK_DIR (/dev/shm), BENCH_QDISK_TIMEOUT (s per wait, 120),
# BENCH_QDISK_FILL (1: the source image starts full of data; 0: empty).
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
FILL=${BENCH_QDISK_FILL:-1}
case $FMT in raw | qcow2) ;; *) echo "bench_qdisk: BENCH_QDISK_FMT must be raw or qcow2" >&2; exit 2 ;; esac
for v in MIB KIB RUNS WARM DT TMO FILL; do
	[[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench_qdisk: $v='${!v}' is not a number" >&2; exit 2; }
done
[ "$RUNS" -ge 1 ] && [ "$MIB" -ge 2 ] || { echo "bench_qdisk: RUNS >= 1 and MIB >= 2" >&2; exit 2; }
for c in jq qemu-img; do
	command -v "$c" >/dev/null || { echo "bench_qdisk: $c is missing" >&2; exit 2; }
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
say() { echo "bench_qdisk: $*" >&2; }

guest_prepare
case $? in
0) ;;
77) echo "SKIP: $GUEST_ERROR"; exit 77 ;;
*) say "$GUEST_ERROR"; exit 1 ;;
esac

# fill_source IMG: the source's image, its whole virtual size written with
# the same pseudo-random bytes every run (BENCH_QDISK_FILL=0: empty, mostly
# holes, which both sides skip).
fill_source() {
	if [ "$FILL" = 0 ]; then
		guest_disk_create "$1" "$FMT" "${MIB}M"
		return
	fi
	# A cipher's stream: random-looking (no zero block to skip), fast.
	[ -f "$IMG/fill.raw" ] ||
		head -c $((MIB << 20)) < <(openssl enc -aes-128-ctr -pass pass:rmig-bench -nosalt -pbkdf2 \
			</dev/zero 2>/dev/null) >"$IMG/fill.raw"
	[ "$(stat -c %s "$IMG/fill.raw" 2>/dev/null)" = $((MIB << 20)) ] ||
		{ GUEST_ERROR="cannot write the fill"; return 1; }
	qemu-img convert -q -f raw -O "$FMT" "$IMG/fill.raw" "$1" ||
		{ GUEST_ERROR="qemu-img convert of the fill to $FMT failed"; return 1; }
}

# start_pair I: the source guest booted and warm, an empty destination;
# sets RATE (the KiB/s the guest writes: its moving region plus the
# 512-byte record, per count). In this shell, not $(...): guest.sh tracks
# its QEMUs here.
start_pair() {
	local s=s$1 d=d$1 t0 c0 t1 c1
	guest_disk_create "$IMG/$d.img" "$FMT" "${MIB}M" && fill_source "$IMG/$s.img" &&
		GUEST_APPEND="rmig_disk_kib=$KIB" guest_start_disk "$s" "$IMG/$s.img" "$FMT" &&
		guest_wait_counter "$s" 5 90 || return 1
	t0=$(date +%s%3N) c0=$(guest_counter "$s")
	guest_wait_counter "$s" "$WARM" 120 || return 1
	t1=$(date +%s%3N) c1=$(guest_counter "$s")
	RATE=$(((c1 - c0) * (KIB * 2 + 1) * 1000 / 2 / (t1 - t0 + 1)))
	GUEST_APPEND="rmig_disk_kib=$KIB" guest_start_dst_disk "$d" "$IMG/$d.img" "$FMT"
}

# check_dst I: the destination's guest counts on, its disk checks pass;
# sets SEQ.
check_dst() {
	local s=s$1 d=d$1 c src_last
	src_last=$(guest_counters "$(guest_log "$s")" | tail -n1)
	c=$(guest_counter "$d")
	[ "$c" -gt "${src_last:-0}" ] || c=${src_last:-0}
	guest_wait_counter "$d" $((c + 8)) 60 || return 1
	SEQ=$(guest_check_disk_seq "$(guest_log "$s")" "$(guest_log "$d")" 5) || { GUEST_ERROR=$SEQ; return 1; }
}

# native I: QEMU's recipe; sets RUN (the run's JSON) or returns 1.
native() {
	local i=$1 s=s$1 d=d$1 cmp
	start_pair "$i" || return 1
	for g in "$s" "$d"; do
		qmp "$g" migrate-set-parameters "{\"max-bandwidth\":107374182400,\"downtime-limit\":$DT}" >/dev/null ||
			{ GUEST_ERROR="migrate-set-parameters on $g refused"; return 1; }
	done
	guest_migrate_disk_native "$s" "$d" "$TMO" || return 1
	cmp=$(guest_disk_compare "$IMG/$s.img" "$FMT" "$IMG/$d.img" "$FMT") ||
		{ GUEST_ERROR="images at the pause: $cmp"; return 1; }
	qmp "$d" cont >/dev/null || { GUEST_ERROR="cont on $d refused"; return 1; }
	check_dst "$i" || return 1
	RUN=$(jq -c --argjson rate "$RATE" --arg seq "$SEQ" \
		'{how: "qemu", guest_write_kibps: $rate, total_ms, downtime_ms, rounds, counter: $seq}' <<<"$GUEST_FIG")
}

# with_rmig I: rmig send/recv, disks=all; sets RUN or returns 1.
with_rmig() {
	local i=$1 s=s$1 d=d$1 port="" r
	start_pair "$i" || return 1
	"$RMIG" recv --listen 127.0.0.1:0 --json --transport tcp \
		--backend "qemu:qmp=$(guest_qmp_socket "$d"),disks=all" >"$GUEST_DIR/recv$i.json" 2>"$GUEST_DIR/recv$i.err" &
	local rpid=$!
	for _ in $(seq 100); do
		port=$(jq -r 'select(.event=="listening") | .port' "$GUEST_DIR/recv$i.json" 2>/dev/null | head -1)
		[ -n "$port" ] && break
		sleep 0.05
	done
	[ -n "$port" ] || { GUEST_ERROR="rmig recv did not listen: $(cat "$GUEST_DIR/recv$i.err")"; return 1; }
	timeout "$TMO" "$RMIG" send --json --transport tcp --downtime-ms "$DT" \
		--backend "qemu:qmp=$(guest_qmp_socket "$s"),disks=all" "127.0.0.1:$port" \
		>"$GUEST_DIR/send$i.json" 2>"$GUEST_DIR/send$i.err" ||
		{ GUEST_ERROR="rmig send: $(tail -1 "$GUEST_DIR/send$i.err")"; kill "$rpid" 2>/dev/null; return 1; }
	timeout 60 tail --pid="$rpid" -f /dev/null
	r=$(jq -c 'select(.event=="summary")' "$GUEST_DIR/send$i.json" | tail -1)
	[ "$(jq -r '.disks_verified' <<<"$r")" = true ] ||
		{ GUEST_ERROR="rmig: the disk was not verified: $r"; return 1; }
	check_dst "$i" || return 1
	RUN=$(jq -c --argjson rate "$RATE" --arg seq "$SEQ" \
		'{how: "rmig", guest_write_kibps: $rate, total_ms, downtime_ms, rounds, disk_blocks_sent,
		  disk_throttle_bps, counter: $seq}' <<<"$r")
}

row() { # LABEL JSON
	jq -r --arg l "$1" '"| \($l) | \(.how) | \(.guest_write_kibps) | \(.total_ms) | \(.downtime_ms) | \(.rounds) |"' <<<"$2"
}

runs="[]" bad=0
echo "$FMT image of $MIB MiB in ${BENCH_QDISK_DIR:-/dev/shm}$([ "$FILL" = 0 ] && echo ", empty" || echo ", full of data"), the guest writing $KIB KiB per count (plus its counter's record); downtime limit $DT ms on both; runs alternate, QEMU's then rmig's."
echo
echo "| run | migrated by | guest writes, KiB/s | total, ms | downtime, ms | rounds (QEMU: its RAM passes; rmig: its own) |"
echo "|---|---|---|---|---|---|"
for i in $(seq "$RUNS"); do
	for how in native with_rmig; do
		n=$i$how
		if "$how" "$n"; then
			row "$i" "$RUN"
			runs=$(jq -c --argjson r "$RUN" '. + [$r]' <<<"$runs")
		else
			say "run $i ($how): $GUEST_ERROR"
			echo "| $i | ${how#with_} | failed: $GUEST_ERROR | | | |"
			bad=1
		fi
		guest_kill "s$n" KILL
		guest_kill "d$n" KILL
		rm -f "$IMG/s$n.img" "$IMG/d$n.img"
	done
done
med=$(jq -c 'def med(f): [.[] | f] | sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
	def of(h): [.[] | select(.how == h)] | if length == 0 then null else {how: h, runs: length,
	guest_write_kibps: med(.guest_write_kibps), total_ms: med(.total_ms), downtime_ms: med(.downtime_ms),
	rounds: med(.rounds)} end;
	{qemu: of("qemu"), rmig: of("rmig")}' <<<"$runs")
for h in qemu rmig; do
	m=$(jq -c ".$h" <<<"$med")
	[ "$m" != null ] && row "median of $(jq .runs <<<"$m")" "$m"
done
echo
jq -r --argjson dt "$DT" 'if .qemu and .rmig then
	"rmig against QEMU: total \(.rmig.total_ms) ms against \(.qemu.total_ms) (target: no worse), downtime \(.rmig.downtime_ms) ms against \(.qemu.downtime_ms) (target: within the limit x 1.5, \($dt * 1.5) ms)." else empty end' <<<"$med"
if [ -n "$OUT" ]; then
	jq -n --arg date "$(date -u +%FT%TZ)" --arg qemu "$(qemu-system-x86_64 --version | head -n1)" \
		--arg fmt "$FMT" --argjson mib "$MIB" --argjson kib "$KIB" --argjson dt "$DT" \
		--argjson runs "$runs" --argjson med "$med" --argjson ok $((1 - bad)) \
		'{date: $date, qemu: $qemu, format: $fmt, disk_mib: $mib, guest_disk_kib_per_count: $kib,
		  downtime_limit_ms: $dt, ok: ($ok == 1), runs: $runs, median: $med}' \
		>"$OUT/qdisk.json" || { say "cannot write $OUT/qdisk.json"; exit 1; }
fi
exit $bad
