#!/bin/bash
# A guest's disk migrated with it (issue 16), against ceilings measured in
# the same run.
#
#   RMIG=build/rmig scripts/bench_disk.sh OUTDIR
#
# A 1 GiB disk image full of data (sim disk-fill=100%, DISK_MIB) beside a
# small sim guest (64 MiB, idle), over TCP loopback, into a fresh sparse
# image of the same size. The images live in DISK_DIR (/dev/shm): this
# machine's virtual disk swings 2-3x from run to run with the host's
# writeback, which would measure the disk, not the copy. Alternating,
# DISK_RUNS (3) times each, medians:
#   read     dd of the source image to /dev/null, 1 MiB blocks: how fast
#            the bytes can be read at all;
#   copy     dd of the source image into the destination image, 1 MiB
#            blocks, then fdatasync: the same bytes moved with no network,
#            the most a loopback migration can do; the best of 1, 2 and 4
#            dd processes, each a slice (the strongest ceiling, the one
#            the target is against);
#   nbd      the same copy by QEMU's own tools, for comparison: qemu-nbd
#            serving the destination image on a unix socket (8 clients
#            allowed), qemu-img convert writing the source image into it
#            (-W, 8 coroutines);
#   idle     rmig with the guest idle: the whole migration's bytes / time
#            (the guest's 64 MiB included);
#   writing  rmig with the guest writing its disk at 20 MB/s (5000 x 4 KiB
#            random writes): rounds, total time, downtime against
#            --downtime-ms (300), whether the disk was throttled.
# Targets: idle at >= 0.9 of the local copy; writing converges with its
# downtime within 1.5 x --downtime-ms. Not measured: QEMU's own
# blockdev-mirror + migrate of a guest (the qemu backend does not move
# disks yet).
#
# Prints markdown on stdout, writes OUTDIR/disk.json. Exit 0 when every run
# migrated with the images equal, 1 otherwise, 2 on usage errors.
set -u
[ $# -eq 1 ] || { echo "usage: RMIG=build/rmig $0 OUTDIR" >&2; exit 2; }
OUT=$1
RMIG=${RMIG:-build/rmig}
RUNS=${DISK_RUNS:-3}
MIB=${DISK_MIB:-1024}
IMG=${DISK_DIR:-/dev/shm}/rmig-bench-disk.$$
mkdir -p "$OUT" "$IMG" || exit 1
PIDS=""
# Whatever ends the script: no receiver, qemu-nbd or dd left behind, no image.
cleanup() {
	[ -n "$PIDS" ] && kill $PIDS 2>/dev/null
	wait 2>/dev/null
	rm -rf "$IMG"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
bad=0

now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR ? a[int((NR + 1) / 2)] : 0) }'; }

# The source image, full of data, made once by the sim (disk-fill=100%).
"$RMIG" send --backend "sim:size=16M,disk=${MIB}M,disk-file=$IMG/src.img,disk-fill=100%" \
	127.0.0.1:1 >/dev/null 2>&1
[ -s "$IMG/src.img" ] || { echo "bench_disk: could not make the source image"; exit 1; }
BYTES=$(stat -c %s "$IMG/src.img")

command -v qemu-img >/dev/null || {
	[ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-utils >/dev/null
}
NBD=$(command -v qemu-nbd >/dev/null && command -v qemu-img >/dev/null && echo yes)

read_ms() {
	local t0
	t0=$(now_ms)
	dd if="$IMG/src.img" of=/dev/null bs=1M status=none || return 1
	echo $(($(now_ms) - t0))
}

# copy_ms P: P dd processes each copy a 1/P slice into the fresh dst.img
# (1 MiB blocks), then one fdatasync: rmig writes with a thread per data
# channel, and filling fresh memory here is the slow part, so one dd alone
# would be a weak ceiling.
copy_ms() {
	local p=$1 mib=$((BYTES >> 20)) t0 pids="" i
	t0=$(now_ms)
	for i in $(seq 0 $((p - 1))); do
		dd if="$IMG/src.img" of="$IMG/dst.img" bs=1M conv=notrunc status=none \
			skip=$((i * mib / p)) seek=$((i * mib / p)) count=$(((i + 1) * mib / p - i * mib / p)) &
		pids="$pids $!"
		PIDS="$PIDS $!"
	done
	for i in $pids; do wait "$i" || return 1; done
	sync -d "$IMG/dst.img" || return 1
	echo $(($(now_ms) - t0))
}

nbd_ms() { # into the fresh dst.img
	local t0 t1 pid rc=0
	qemu-nbd -f raw -t -e 8 --socket="$IMG/nbd.sock" "$IMG/dst.img" 2>"$OUT/nbd.err" &
	pid=$!
	PIDS="$PIDS $pid"
	for _ in $(seq 100); do
		[ -S "$IMG/nbd.sock" ] && break
		sleep 0.05
	done
	t0=$(now_ms)
	timeout 300 qemu-img convert -n -W -m 8 -f raw -O raw "$IMG/src.img" \
		"nbd+unix:///?socket=$IMG/nbd.sock" 2>>"$OUT/nbd.err" || rc=1
	t1=$(now_ms)
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	rm -f "$IMG/nbd.sock"
	cmp -s "$IMG/src.img" "$IMG/dst.img" || rc=1
	[ $rc = 0 ] && echo $((t1 - t0)) # a failed copy has no time
	return $rc
}

# migrate NAME SPEC_EXTRA: one migration; its source summary in $OUT/NAME.json
migrate() {
	local n=$1 extra=$2 port rpid
	# Bounded: a sender that fails leaves no receiver waiting.
	"$RMIG" recv --listen 127.0.0.1:0 --json --accept-timeout-ms 20000 \
		--backend "sim:disk-file=$IMG/dst.img" >"$OUT/$n.recv.out" 2>"$OUT/$n.recv.err" &
	rpid=$!
	PIDS="$PIDS $rpid"
	for _ in $(seq 100); do
		port=$(jq -r 'select(.event=="listening") | .port' "$OUT/$n.recv.out" 2>/dev/null | head -1)
		[ -n "$port" ] && break
		sleep 0.05
	done
	timeout 600 "$RMIG" send --json --transport tcp \
		--backend "sim:size=64M,dirty-rate=0,disk-file=$IMG/src.img$extra" \
		127.0.0.1:"$port" >"$OUT/$n.send.out" 2>"$OUT/$n.send.err"
	timeout 30 tail --pid="$rpid" -f /dev/null || kill "$rpid" 2>/dev/null
	wait "$rpid" 2>/dev/null
	jq -c 'select(.event=="summary")' "$OUT/$n.send.out" >"$OUT/$n.json"
	if [ "$(jq -r .result "$OUT/$n.json")" != migrated ] ||
		! cmp -s "$IMG/src.img" "$IMG/dst.img"; then
		echo "bench_disk: $n did not migrate the disk whole: $(tail -1 "$OUT/$n.send.err")" >&2
		bad=1
	fi
}

# Each copy into a fresh sparse image, as a new destination image is.
fresh() { rm -f "$IMG/dst.img" && truncate -s "$BYTES" "$IMG/dst.img"; }
for i in $(seq "$RUNS"); do
	read_ms >>"$OUT/read.ms" || bad=1
	best=""
	for p in 1 2 4; do
		fresh
		ms=$(copy_ms $p) || bad=1
		echo "$p $ms" >>"$OUT/copy-by-p.txt"
		[ -z "$best" ] || [ "${ms:-0}" -lt "$best" ] && best=$ms
	done
	echo "$best" >>"$OUT/copy.ms"
	if [ -n "$NBD" ]; then
		fresh
		nbd_ms >>"$OUT/nbd.ms" || { echo "bench_disk: the nbd copy failed: $(tail -1 "$OUT/nbd.err")" >&2; bad=1; }
	fi
	fresh
	migrate "idle-$i" ""
	jq -r .total_ms "$OUT/idle-$i.json" >>"$OUT/idle.ms"
	fresh
	migrate "writing-$i" ",disk-write-rate=5000"
	jq -r '"\(.total_ms) \(.downtime_ms) \(.rounds) \(.disk_throttle_bps) \(.bytes_sent)"' \
		"$OUT/writing-$i.json" >>"$OUT/writing.txt"
done
# The writing guest changed the source image: what the idle runs moved is
# BYTES of disk plus 64 MiB of memory.
r_ms=$(median <"$OUT/read.ms")
c_ms=$(median <"$OUT/copy.ms")
n_ms=$( [ -s "$OUT/nbd.ms" ] && median <"$OUT/nbd.ms" || echo 0)
i_ms=$(median <"$OUT/idle.ms")
w_total=$(awk '{ print $1 }' "$OUT/writing.txt" | median)
w_down=$(awk '{ print $2 }' "$OUT/writing.txt" | median)
w_rounds=$(awk '{ print $3 }' "$OUT/writing.txt" | median)
w_throttled=$(awk '$4 > 0' "$OUT/writing.txt" | wc -l)
rate() { awk -v b="$1" -v t="$2" 'BEGIN { printf "%.0f", t ? b / t / 1e3 : 0 }'; }
r_rate=$(rate "$BYTES" "$r_ms")
c_rate=$(rate "$BYTES" "$c_ms")
n_rate=$(rate "$BYTES" "$n_ms")
i_rate=$(rate "$((BYTES + 64 * 1048576))" "$i_ms")
ratio=$(awk -v a="$i_rate" -v b="$c_rate" 'BEGIN { printf "%.2f", b ? a / b : 0 }')
n_ratio=$(awk -v a="$i_rate" -v b="$n_rate" 'BEGIN { printf "%.2f", b ? a / b : 0 }')
r_ratio=$(awk -v a="$i_rate" -v b="$r_rate" 'BEGIN { printf "%.2f", b ? a / b : 0 }')
met_idle=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.9 ? "met" : "not met") }')
met_down=$(awk -v d="$w_down" 'BEGIN { print (d <= 450 ? "met" : "not met") }')
cat <<EOF
Medians of $RUNS alternating runs; a ${MIB} MiB disk image full of data beside a 64 MiB idle guest, TCP loopback; images in ${DISK_DIR:-/dev/shm}, each copy into a fresh sparse image.

| what | command | MB/s or result | rmig idle against it | target |
|---|---|---|---|---|
| ceiling: reading the source image | \`dd if=src.img of=/dev/null bs=1M\` | $r_rate MB/s | $r_ratio | |
| ceiling: the same bytes copied file to file, no network (best of 1, 2, 4 parallel slices) | \`dd if=src.img of=dst.img bs=1M conv=notrunc skip=K seek=K count=N\` x P, then \`sync -d dst.img\` | $c_rate MB/s | $ratio | |
| for comparison: the same copy by QEMU's tools over NBD | \`qemu-nbd -f raw -t -e 8 --socket=S dst.img\` + \`qemu-img convert -n -W -m 8 -f raw -O raw src.img nbd+unix:///?socket=S\` | $n_rate MB/s | $n_ratio | |
| rmig, idle guest: whole migration | \`rmig send --transport tcp --backend sim:size=64M,dirty-rate=0,disk-file=src.img\` | $i_rate MB/s ($i_ms ms) | | >= 0.9 of the local copy: $met_idle |
| rmig, guest writing its disk at 20 MB/s | \`...,disk-write-rate=5000\` | $w_rounds rounds, total $w_total ms, downtime $w_down ms, throttled in $w_throttled of $RUNS runs | | downtime <= 450 ms (1.5 x 300): $met_down |

Not measured: QEMU's own \`blockdev-mirror\` + \`migrate\` of a guest and its disk (the qemu backend does not move disks yet).
EOF
jq -n --argjson r "$r_rate" --argjson c "$c_rate" --argjson n "$n_rate" --argjson i "$i_rate" --argjson q "$ratio" \
	--argjson wt "$w_total" --argjson wd "$w_down" --argjson wr "$w_rounds" \
	'{read_mbs: $r, copy_mbs: $c, nbd_copy_mbs: $n, idle_mbs: $i, ratio_to_copy: $q, writing_total_ms: $wt, writing_downtime_ms: $wd, writing_rounds: $wr}' \
	>"$OUT/disk.json"
exit "$bad"
