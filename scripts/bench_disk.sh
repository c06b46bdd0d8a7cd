#!/bin/bash
# A guest's disk migrated with it (issue 16), against the ceiling of the
# same copy done locally, measured in the same run.
#
#   RMIG=build/rmig scripts/bench_disk.sh OUTDIR
#
# A 1 GiB disk image full of data (sim disk-fill=100%) beside a small sim
# guest (64 MiB, idle), over TCP loopback, into an image of the same size.
# Alternating, DISK_RUNS (3) times each, medians:
#   ceiling  dd of the source image into the destination image, 1 MiB
#            blocks, fdatasync at the end: what moving those bytes from one
#            file to the other costs this machine without rmig (both
#            images in the page cache, as rmig's reads and writes are);
#   idle     rmig with the guest idle: the whole migration's bytes / time;
#   writing  rmig with the guest writing its disk at 20 MB/s (5000 x 4 KiB
#            random writes): rounds, total time, downtime against
#            --downtime-ms (300), whether the disk was throttled.
# Targets: idle at >= 0.9 of the ceiling (the copy is the job: a local dd
# is the most a loopback migration can do); writing converges with its
# downtime within 1.5 x --downtime-ms. Not measured: QEMU's own
# blockdev-mirror + migrate of the same guest (the qemu backend does not
# move disks yet).
#
# Prints markdown on stdout, writes OUTDIR/disk.json. Exit 0 when every run
# migrated with the images equal, 1 otherwise, 2 on usage errors.
set -u
[ $# -eq 1 ] || { echo "usage: RMIG=build/rmig $0 OUTDIR" >&2; exit 2; }
OUT=$1
RMIG=${RMIG:-build/rmig}
RUNS=${DISK_RUNS:-3}
MIB=${DISK_MIB:-1024}
IMG=${DISK_DIR:-/var/tmp}/rmig-bench-disk.$$
mkdir -p "$OUT" "$IMG" || exit 1
trap 'rm -rf "$IMG"' EXIT
bad=0

now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR ? a[int((NR + 1) / 2)] : 0) }'; }

# The source image, full of data, made once by the sim (disk-fill=100%).
"$RMIG" send --backend "sim:size=16M,disk=${MIB}M,disk-file=$IMG/src.img,disk-fill=100%" \
	127.0.0.1:1 >/dev/null 2>&1
[ -s "$IMG/src.img" ] || { echo "bench_disk: could not make the source image"; exit 1; }
BYTES=$(stat -c %s "$IMG/src.img")
truncate -s "$BYTES" "$IMG/dst.img"

ceiling() { # -> ms
	local t0
	t0=$(now_ms)
	dd if="$IMG/src.img" of="$IMG/dst.img" bs=1M conv=notrunc,fdatasync status=none || return 1
	echo $(($(now_ms) - t0))
}

# migrate NAME SPEC_EXTRA: one migration; its source summary in $OUT/NAME.json
migrate() {
	local n=$1 extra=$2 port rpid
	"$RMIG" recv --listen 127.0.0.1:0 --json --backend "sim:disk-file=$IMG/dst.img" \
		>"$OUT/$n.recv.out" 2>"$OUT/$n.recv.err" &
	rpid=$!
	for _ in $(seq 100); do
		port=$(jq -r 'select(.event=="listening") | .port' "$OUT/$n.recv.out" 2>/dev/null | head -1)
		[ -n "$port" ] && break
		sleep 0.05
	done
	"$RMIG" send --json --transport tcp \
		--backend "sim:size=64M,dirty-rate=0,disk-file=$IMG/src.img$extra" \
		127.0.0.1:"$port" >"$OUT/$n.send.out" 2>"$OUT/$n.send.err"
	wait "$rpid"
	jq -c 'select(.event=="summary")' "$OUT/$n.send.out" >"$OUT/$n.json"
	if [ "$(jq -r .result "$OUT/$n.json")" != migrated ] ||
		! cmp -s "$IMG/src.img" "$IMG/dst.img"; then
		echo "bench_disk: $n did not migrate the disk whole: $(tail -1 "$OUT/$n.send.err")" >&2
		bad=1
	fi
}

for i in $(seq "$RUNS"); do
	ceiling >>"$OUT/ceiling.ms" || bad=1
	truncate -s 0 "$IMG/dst.img" && truncate -s "$BYTES" "$IMG/dst.img"
	migrate "idle-$i" ""
	jq -r .total_ms "$OUT/idle-$i.json" >>"$OUT/idle.ms"
	migrate "writing-$i" ",disk-write-rate=5000"
	jq -r '"\(.total_ms) \(.downtime_ms) \(.rounds) \(.disk_throttle_bps) \(.bytes_sent)"' \
		"$OUT/writing-$i.json" >>"$OUT/writing.txt"
done
# The writing guest changed the source image: what the idle runs moved is
# BYTES of disk plus 64 MiB of memory.
c_ms=$(median <"$OUT/ceiling.ms")
i_ms=$(median <"$OUT/idle.ms")
w_total=$(awk '{ print $1 }' "$OUT/writing.txt" | median)
w_down=$(awk '{ print $2 }' "$OUT/writing.txt" | median)
w_rounds=$(awk '{ print $3 }' "$OUT/writing.txt" | median)
w_throttled=$(awk '$4 > 0' "$OUT/writing.txt" | wc -l)
c_rate=$(awk -v b="$BYTES" -v t="$c_ms" 'BEGIN { printf "%.0f", t ? b / t / 1e3 : 0 }')
i_rate=$(awk -v b="$((BYTES + 64 * 1048576))" -v t="$i_ms" 'BEGIN { printf "%.0f", t ? b / t / 1e3 : 0 }')
ratio=$(awk -v a="$i_rate" -v b="$c_rate" 'BEGIN { printf "%.2f", b ? a / b : 0 }')
met_idle=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.9 ? "met" : "not met") }')
met_down=$(awk -v d="$w_down" 'BEGIN { print (d <= 450 ? "met" : "not met") }')
cat <<EOF
Medians of $RUNS alternating runs; a ${MIB} MiB disk image full of data beside a 64 MiB idle guest, TCP loopback.

| what | command | MB/s or result | against the ceiling | target |
|---|---|---|---|---|
| ceiling: the same bytes copied file to file | \`dd if=src.img of=dst.img bs=1M conv=notrunc,fdatasync\` | $c_rate MB/s | 1.00 | |
| rmig, idle guest: whole migration | \`rmig send --backend sim:size=64M,dirty-rate=0,disk-file=src.img\` | $i_rate MB/s ($i_ms ms) | $ratio | >= 0.9: $met_idle |
| rmig, guest writing its disk at 20 MB/s | \`...,disk-write-rate=5000\` | $w_rounds rounds, total $w_total ms, downtime $w_down ms, throttled in $w_throttled of $RUNS runs | | downtime <= 450 ms (1.5 x 300): $met_down |

Not measured: QEMU's own \`blockdev-mirror\` + \`migrate\` of the same guest and disk (the qemu backend does not move disks yet).
EOF
jq -n --argjson c "$c_rate" --argjson i "$i_rate" --argjson r "$ratio" --argjson wt "$w_total" \
	--argjson wd "$w_down" --argjson wr "$w_rounds" \
	'{ceiling_mbs: $c, idle_mbs: $i, ratio: $r, writing_total_ms: $wt, writing_downtime_ms: $wd, writing_rounds: $wr}' \
	>"$OUT/disk.json"
exit "$bad"
