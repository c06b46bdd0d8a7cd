#!/bin/bash
# make bench: rmig against ceilings measured in the same run on this machine.
# Writes bench/results.md, bench/results.json and the plots bench/{tcp,sweep,scale,qemu}.png
# (scripts/bench_plots.sh draws all but the sweep's). BENCH_SIZE, BENCH_CHANNELS,
# BENCH_RUNS (3) tune it. The sections, numbered as in issue 6:
# (1) TCP throughput against iperf3 over loopback, and rmig bench's steady
# state; (2) RDMA against ib_write_bw on one rxe pair (tests/rxe/bench.sh);
# (3) zero pages and (7) scale (scripts/bench_scale.sh); (4) downtime against
# dirty rate (scripts/bench_sweep.sh, plot bench/sweep.png); (5) a QEMU guest
# migrated by QEMU and through rmig (scripts/bench_qemu.sh); (6) CPU per GiB
# on both sides, against memcpy (tests/tools/memcpy_bw), and the digest's
# (XXH3 of 4 KiB pages) speed against memcpy; (8) downtime against guest
# size for --verify on, full and off (scripts/bench_verify.sh, issue 21);
# (9) what TLS 1.3 costs: round 1 and CPU per GiB on each side, plaintext
# against --tls, against AES-GCM's speed (scripts/bench_tls.sh).
# (10) post-copy recovery: from a cut link to the session resumed, the
# longest a guest thread waits for a page, pages sent per page
# (scripts/bench_recovery.sh).
# (11) a guest's disk against a local copy of the same bytes
# (scripts/bench_disk.sh). (12) a QEMU guest writing its disk, migrated by
# QEMU's own recipe (blockdev-mirror + migrate) and by rmig with disks=all
# (scripts/bench_qdisk.sh). (13) libvirt's `virsh migrate --live --p2p`
# through a socat relay and through `rmig tunnel` (scripts/bench_libvirt.sh;
# root, two libvirtd in namespaces).
# BENCH_ONLY=tcp runs (1) and (6) alone, printing the table without
# touching bench/ (BENCH_TCP_JSON=FILE: results.json's tcp object to
# FILE); BENCH_ONLY=verify runs (8) alone, the same way, BENCH_ONLY=tls
# (9), BENCH_ONLY=recovery (10), BENCH_ONLY=disk (11), BENCH_ONLY=qdisk
# (12) and BENCH_ONLY=libvirt (13).
set -u -o pipefail
cd "$(dirname "$0")/.."
RMIG=${RMIG:-build/rmig}
SIZE=${BENCH_SIZE:-4G}
CH=${BENCH_CHANNELS:-2}
T=$(mktemp -d /tmp/rmig-bench.XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir -p bench
bytes=$(numfmt --from=iec "$SIZE")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
# (1) TCP: guest-sized buffers at both ends (tests/tools/tcp_mem_bw).
MEM_BW=${BUILD:-build}/tests/tcp_mem_bw
# (6) The copy ceiling.
memcpy_json=$("${BUILD:-build}/tests/memcpy_bw" 2>/dev/null || echo '{"one_Bps":0,"all_Bps":0}')
memcpy_one=$(jq -r .one_Bps <<<"$memcpy_json")
memcpy_all=$(jq -r .all_Bps <<<"$memcpy_json")
xxh3_one=$(jq -r '.xxh3_one_Bps // 0' <<<"$memcpy_json")
xxh3_all=$(jq -r '.xxh3_all_Bps // 0' <<<"$memcpy_json")

mb() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1e6 }'; }
# (6) The digest (--verify's XXH3 of each 4 KiB page) against memcpy.
digest_table() {
	echo "| same buffers, in memory | one CPU, MB/s | all CPUs, MB/s | of memcpy (all CPUs) |"
	echo "|---|---|---|---|"
	echo "| memcpy | $(mb "$memcpy_one") | $(mb "$memcpy_all") | 1.00 |"
	echo "| XXH3-64 of each 4 KiB page | $(mb "$xxh3_one") | $(mb "$xxh3_all") | $(ratio "$xxh3_all" "$memcpy_all") |"
	echo
}

# section NAME TITLE: run scripts/bench_NAME.sh into $T/NAME and print its
# markdown under TITLE (a failure is a line saying so, not an empty section;
# a skip, 77, is the script's own "SKIP: reason" line).
section() {
	local rc=0
	RMIG="$RMIG" "scripts/bench_$1.sh" "$T/$1" >"$T/$1.md" 2>"$T/$1.err" || rc=$?
	[ $rc = 0 ] || [ $rc = 77 ] || echo "bench: bench_$1 failed: $(tail -1 "$T/$1.err")" >>"$T/$1.md"
	echo "## $2"
	echo
	cat "$T/$1.md"
	echo
}
# (8) Downtime against guest size, --verify on/full/off (issue 21).
verify_section() {
	section verify "Downtime against guest size, by --verify mode"
	digest_table
}
# (9) TLS against plaintext and the crypto ceiling.
tls_section() { section tls "TLS 1.3: plaintext against --tls, and AES-GCM's speed"; }
# (11) A guest's disk, against a local copy of the same bytes.
disk_section() { section disk "A guest's disk: rmig against a local copy of the same bytes"; }
# (12) A QEMU guest's disk: QEMU's recipe against rmig's.
qdisk_section() { section qdisk "A QEMU guest writing its disk: QEMU's blockdev-mirror + migrate, and rmig with --disks"; }
# (13) libvirt's migration through a socat relay and through rmig tunnel.
libvirt_section() { section libvirt "libvirt: virsh migrate --p2p through a socat relay and through rmig tunnel"; }
# (10) Post-copy recovery.
recovery_section() { section recovery "Post-copy recovery: a link cut while the guest waits for a page"; }
case ${BENCH_ONLY:-} in
verify | tls | recovery | disk | qdisk | libvirt)
	"${BENCH_ONLY}_section"
	exit 0
	;;
esac

command -v iperf3 >/dev/null || {
	[ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null
} || { echo "bench: iperf3 is missing (apt-get install iperf3)"; exit 1; }

# (1) TCP. Ceiling: iperf3 moving the same bytes over the same number of
# streams into a buffer it reuses, in the strongest of three
# configurations: one process with -P CH (iperf3 3.12 is single-threaded,
# so that is one core's worth); CH processes, one server and one client per
# stream on ports of their own, started together, each moving 1/CH of the
# bytes (their aggregate: all bytes received over the longest client's
# time); and the same with 1 MiB writes (-l 1M), the size of rmig's frames,
# where iperf3's default is 128 KiB. The ceiling is the best median; every
# ratio is to it, and each configuration's row names its exact commands.
# rmig's destination must also find fresh memory for the guest; on this VM
# its host backs that memory on first touch at 1.5-7 s per GiB, far below
# the link. So rmig runs twice per round of runs: into a preallocated
# destination (recv --prealloc, as QEMU's -mem-prealloc: the target row)
# and into one that faults memory in as pages arrive (the default), whose
# own ceiling is the rate at which the preallocating runs got fresh memory.
# Runs alternate RUNS times, medians are compared. BENCH_IPERF_PORT (5299)
# and the 3 x CH - 1 ports after it are iperf3's.
RUNS=${BENCH_RUNS:-3}
IPERF_PORT=${BENCH_IPERF_PORT:-5299}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# listening PORT: wait (5 s at most) for a TCP listener on PORT.
listening() {
	for _ in $(seq 100); do
		[ -n "$(ss -Hltn "sport = :$1")" ] && return 0
		sleep 0.05
	done
	return 1
}
# The ceiling's configurations, K = 1..3: the processes, the client's
# options, the label.
IPERF_CONFS=3
conf_procs() { [ "$1" = 1 ] && echo 1 || echo "$CH"; }
conf_opts() { case $1 in 1) echo "-P $CH" ;; 2) echo "" ;; 3) echo "-l 1M" ;; esac; }
conf_label() {
	case $1 in
	1) echo "iperf3, one process, -P $CH" ;;
	2) echo "iperf3, $CH processes, one stream each" ;;
	3) echo "iperf3, $CH processes, one stream each, 1 MiB writes (-l 1M; rmig's frames are up to 1 MiB)" ;;
	esac
}
conf_short() { # K: the plot's label
	case $1 in 1) echo "iperf3 -P $CH" ;; 2) echo "iperf3 x$CH" ;; 3) echo "iperf3 x$CH -l 1M" ;; esac
}
# conf_port K I, conf_bytes K I: the port and the bytes of process I.
conf_port() { echo $((IPERF_PORT + ($1 - 1) * CH + $2 - 1)); }
conf_bytes() {
	local p share
	p=$(conf_procs "$1")
	share=$((bytes / p))
	# The last process also carries what 1/P leaves over.
	[ "$2" = "$p" ] && echo $((bytes - share * (p - 1))) || echo "$share"
}
# conf_srv K I, conf_cli K I: process I's commands, as run and as printed.
conf_srv() { echo "iperf3 -s -1 -p $(conf_port "$1" "$2")"; }
conf_cli() { echo "iperf3 -c 127.0.0.1 -p $(conf_port "$1" "$2") $(conf_opts "$1") -n $(conf_bytes "$1" "$2") -J" | tr -s ' '; }
conf_cmd() { # K: every command of configuration K, for the table
	local i s=""
	for i in $(seq "$(conf_procs "$1")"); do s+="\`$(conf_srv "$1" "$i")\` + \`$(conf_cli "$1" "$i")\`; "; done
	s=${s%; }
	[ "$(conf_procs "$1")" = 1 ] || s+=": all servers listening, then all clients at once"
	echo "$s"
}
# iperf_conf K: one run of configuration K; B/s on stdout: the bytes all
# its servers received over the longest client's time. (The commands run
# are the printed ones, split into words.)
# shellcheck disable=SC2046
iperf_conf() {
	local i p spids=() cpids=() rc=0 n
	n=$(conf_procs "$1")
	rm -f "$T"/iperf-*.json "$T"/iperf-*.err
	for i in $(seq "$n"); do
		timeout 300 $(conf_srv "$1" "$i") >/dev/null 2>&1 &
		spids+=($!)
	done
	for i in $(seq "$n"); do listening "$(conf_port "$1" "$i")" || rc=1; done
	if [ $rc = 0 ]; then
		for i in $(seq "$n"); do
			timeout 300 $(conf_cli "$1" "$i") >"$T/iperf-$i.json" 2>"$T/iperf-$i.err" &
			cpids+=($!)
		done
		for p in "${cpids[@]}"; do wait "$p" || rc=1; done
	fi
	[ $rc = 0 ] || kill "${spids[@]}" 2>/dev/null
	wait "${spids[@]}"
	[ $rc = 0 ] || { echo "bench: $(conf_label "$1") failed: $({ jq -r '.error // empty' "$T"/iperf-*.json; cat "$T"/iperf-*.err; } 2>/dev/null | grep -m1 . || echo "no server listening")" >&2; return 1; }
	jq -s '(map(.end.sum_received.bytes) | add) / (map(.end.sum_received.seconds) | max)' "$T"/iperf-*.json
}
# start_recv FILE [recv options]: rmig recv on a free loopback port in the
# background, its JSON in FILE; sets port once it listens.
start_recv() {
	local f=$1
	shift
	"$RMIG" recv --listen 127.0.0.1:0 --json --transport tcp "$@" >"$f" 2>&1 &
	for _ in $(seq 100); do
		port=$(jq -r 'select(.event=="listening") | .port' "$f" 2>/dev/null)
		[ -n "$port" ] && break
		sleep 0.05
	done
}
# rmig_run NAME [recv options]: one migration; figures appended to $T/NAME.*
rmig_run() {
	local n=$1 port
	shift
	# Memory freed by the run before goes back to this VM's host within
	# seconds (free page reporting); without the pause, whichever run comes
	# second would find it still backed and look faster.
	sleep 5
	start_recv "$T/recv" "$@"
	"$RMIG" send --json --transport tcp --channels "$CH" --no-verify \
		--backend "sim:size=$SIZE,dirty-rate=0,zero=0%" "127.0.0.1:$port" >"$T/send" 2>&1
	wait
	jq -r 'select(.event=="round" and .round==1) | .bandwidth' "$T/send" >>"$T/$n.bw"
	jq -r 'select(.event=="summary") | .total_ms' "$T/send" >>"$T/$n.total"
	jq -r 'select(.event=="summary") | .cpu_ms' "$T/send" >>"$T/$n.cpu_send"
	jq -r 'select(.event=="summary") | .cpu_ms' "$T/recv" >>"$T/$n.cpu_recv"
	jq -r 'select(.event=="summary") | .prealloc_ms' "$T/recv" >>"$T/$n.prealloc"
}
load_before=$(cut -d' ' -f1 /proc/loadavg)
for run in $(seq "$RUNS"); do
	# The same pause as before each rmig run: the ceilings too are measured
	# once the host has taken back the memory the run before freed. The
	# configurations take turns at going first.
	[ "$run" = 1 ] || sleep 5
	for j in $(seq 0 $((IPERF_CONFS - 1))); do
		k=$(((run - 1 + j) % IPERF_CONFS + 1))
		bw=$(iperf_conf "$k") || exit 1
		echo "$bw" >>"$T/iperf_$k.all"
	done
	rmig_run pre --prealloc
	rmig_run lazy
	# The same sockets between two guest-sized buffers in memory (not a
	# ceiling: what any migration could reach against iperf3's cached one).
	"$MEM_BW" "$((bytes >> 20))" "$CH" 2>/dev/null | jq -r .Bps >>"$T/membw.all"
done
# Steady state: rmig bench resends a static buffer into memory the receiver
# already touched, so the link and the data path are measured without the
# first touch of the destination's fresh memory.
start_recv "$T/brecv"
"$RMIG" bench --json --transport tcp --channels "$CH" --seconds 5 --size 256M "127.0.0.1:$port" >"$T/bsend" 2>&1
wait
load_after=$(cut -d' ' -f1 /proc/loadavg)
tcp_date=$(date -u +%FT%TZ)
steady=$(jq -r 'select(.event=="bench") | .bandwidth' "$T/bsend")
gib=$(awk -v b="$bytes" 'BEGIN { print b / 1073741824 }')
# The ceiling: the best configuration's median (the first on a tie).
best=1
for k in $(seq "$IPERF_CONFS"); do
	median <"$T/iperf_$k.all" >"$T/iperf_$k.med"
	awk -v a="$(cat "$T/iperf_$k.med")" -v b="$(cat "$T/iperf_$best.med")" 'BEGIN { exit !(a > b) }' && best=$k
done
iperf=$(cat "$T/iperf_$best.med")
range() { awk -v lo="$(sort -g "$1" | head -1)" -v hi="$(sort -g "$1" | tail -1)" 'BEGIN { printf "%.0f..%.0f", lo / 1e6, hi / 1e6 }'; }
per_gib() { median <"$1" | awk -v g="$gib" '{ printf "%.2f", $1 / 1000 / g }'; }
tcp_bw=$(median <"$T/pre.bw")
tcp_ratio=$(ratio "$tcp_bw" "$iperf")
lazy_bw=$(median <"$T/lazy.bw")
lazy_ratio=$(ratio "$lazy_bw" "$iperf")
# Fresh memory: bytes per second the preallocating receivers got it at.
fresh=$(median <"$T/pre.prealloc" | awk -v b="$bytes" '{ printf "%.0f", ($1 > 0 ? b / ($1 / 1000) : 0) }')
lazy_fresh_ratio=$(ratio "$lazy_bw" "$fresh")
prealloc_ms=$(median <"$T/pre.prealloc")
steady_ratio=$(ratio "${steady:-0}" "$iperf")
membw=$(median <"$T/membw.all")
membw_ratio=$(ratio "${membw:-0}" "$iperf")
rmig_membw_ratio=$(ratio "$tcp_bw" "${membw:-0}")
cpu_send=$(per_gib "$T/lazy.cpu_send")
cpu_recv=$(per_gib "$T/lazy.cpu_recv")
cpu_recv_pre=$(per_gib "$T/pre.cpu_recv")
tcp_range="rmig --prealloc $(range "$T/pre.bw") MB/s, without $(range "$T/lazy.bw") MB/s, iperf3 $(for k in $(seq "$IPERF_CONFS"); do printf 'configuration %s %s MB/s, ' "$k" "$(range "$T/iperf_$k.all")"; done | sed 's/, $//')"

# ratio_cell RATIO [WORDS]: the ratio and WORDS, and above 1.0 a warning:
# a ceiling that rmig beats is not the machine's.
ratio_cell() {
	awk -v r="$1" -v w="${2:-}" 'BEGIN { printf "%s%s%s", r, (w != "" ? " " w : ""),
		(r > 1.0 ? " **WARNING: above 1.0, the ceiling is wrong until shown otherwise**" : "") }'
}
tcp_table() {
	local k
	echo "## TCP over loopback, $SIZE idle guest of non-zero data, $CH streams"
	echo
	echo "| | command | MB/s | ratio | target |"
	echo "|---|---|---|---|---|"
	for k in $(seq "$IPERF_CONFS"); do
		echo "| ceiling $k: $(conf_label "$k"), same bytes in all (median of $RUNS)$([ "$k" = "$best" ] && echo ": **the best, the ceiling**") | $(conf_cmd "$k") | $(mb "$(cat "$T/iperf_$k.med")") | $(ratio_cell "$(ratio "$(cat "$T/iperf_$k.med")" "$iperf")") | |"
	done
	echo "| rmig send, round 1, destination preallocated | \`rmig recv --listen 127.0.0.1:0 --json --transport tcp --prealloc\` + \`rmig send --json --transport tcp --channels $CH --no-verify --backend sim:size=$SIZE,dirty-rate=0,zero=0% 127.0.0.1:PORT\` | $(mb "$tcp_bw") | $(ratio_cell "$tcp_ratio" "of the ceiling") | ≥ 0.9: $(awk -v r="$tcp_ratio" 'BEGIN { print (r >= 0.9 ? "met" : "not met") }') |"
	echo "| reference (not a ceiling): the same sockets, 1 MiB writes, between two $SIZE buffers already in memory, one sending and one receiving thread per stream (median of $RUNS) | \`tests/tools/tcp_mem_bw $((bytes >> 20)) $CH\` | $(mb "${membw:-0}") | $membw_ratio of the ceiling; rmig's round 1 above is $rmig_membw_ratio of it | |"
	echo "| rmig send, round 1, destination faulting memory in (default) | the same without \`--prealloc\` | $(mb "$lazy_bw") | $(ratio_cell "$lazy_ratio" "of the ceiling") | |"
	echo "| fresh memory: the rate the preallocating receivers got it at | the size over \`recv --prealloc\`'s prealloc_ms | $(mb "$fresh") | | |"
	echo "| the default destination against that fresh-memory ceiling | | | $(ratio_cell "$lazy_fresh_ratio") | |"
	echo "| rmig bench, steady state (memory already touched) | \`rmig bench --json --transport tcp --channels $CH --seconds 5 --size 256M 127.0.0.1:PORT\` | $(mb "${steady:-0}") | $(ratio_cell "$steady_ratio" "of the ceiling") | |"
	echo
	echo "Ceiling: the best of the $IPERF_CONFS iperf3 configurations, number $best: $(conf_label "$best"), $(mb "$iperf") MB/s. Every ratio above is to it. Load average (1 min, $(nproc) CPUs): $load_before before the section, $load_after after."
	echo
	echo "Whole migration (median): $(median <"$T/pre.total") ms with --prealloc (of which preallocating $prealloc_ms ms), $(median <"$T/lazy.total") ms without. Range over the runs: $tcp_range."
	echo
	echo "CPU per GiB moved (median, whole process, getrusage): sender $cpu_send s, receiver $cpu_recv s ($cpu_recv_pre s with --prealloc, which includes preallocating). Copy ceiling: memcpy moves 1 GiB in $(awk -v b="$memcpy_one" 'BEGIN { if (b > 0) printf "%.2f", 1073741824 / b; else print "?" }') s on one CPU ($(mb "$memcpy_one") MB/s)."
	echo
	digest_table
}
# results.json's tcp object (date: when the section ended). iperf3_Bps is the ceiling (the best
# configuration, ceiling.best, 1-based in ceiling.configs); ratio is round
# 1 --prealloc to it.
tcp_json() {
	local k
	for k in $(seq "$IPERF_CONFS"); do
		jq -n --argjson k "$k" --arg lab "$(conf_label "$k")" --arg short "$(conf_short "$k")" --arg command "$(conf_cmd "$k")" \
			--argjson procs "$(conf_procs "$k")" --argjson Bps "$(cat "$T/iperf_$k.med")" \
			--argjson runs "$(jq -s . "$T/iperf_$k.all")" \
			'{config: $k, label: $lab, short: $short, processes: $procs, command: $command, Bps: $Bps, runs_Bps: $runs}'
	done | jq -s . >"$T/iperf_confs.json"
	jq -n --arg size "$SIZE" --argjson channels "$CH" --argjson iperf "$iperf" --argjson rmig "$tcp_bw" \
		--argjson ratio "$tcp_ratio" --argjson steady "${steady:-0}" \
		--argjson lazy "$lazy_bw" --argjson fresh "$fresh" --argjson prealloc_ms "$prealloc_ms" \
		--argjson confs "$(cat "$T/iperf_confs.json")" --argjson best "$best" \
		--argjson lazy_ratio "$lazy_ratio" --argjson fresh_ratio "$lazy_fresh_ratio" --argjson steady_ratio "$steady_ratio" \
		--argjson runs "$RUNS" --argjson membw "${membw:-0}" --argjson load_before "$load_before" --argjson load_after "$load_after" \
		--arg date "$tcp_date" \
		'{date: $date, size: $size, channels: $channels, runs: $runs, iperf3_Bps: $iperf, rmig_prealloc_Bps: $rmig, ratio: $ratio,
		  rmig_default_Bps: $lazy, fresh_memory_Bps: $fresh, prealloc_ms: $prealloc_ms, rmig_bench_steady_Bps: $steady,
		  memory_to_memory_Bps: $membw,
		  default_ratio: $lazy_ratio, default_fresh_ratio: $fresh_ratio, steady_ratio: $steady_ratio,
		  ceiling: {best: $best, Bps: $iperf, label: $confs[$best - 1].label, command: $confs[$best - 1].command, configs: $confs},
		  loadavg_before: $load_before, loadavg_after: $load_after}'
}

# BENCH_ONLY=tcp: the table on stdout, bench/ untouched; with
# BENCH_TCP_JSON=FILE, results.json's tcp object written to FILE.
if [ "${BENCH_ONLY:-}" = tcp ]; then
	tcp_table
	[ -z "${BENCH_TCP_JSON:-}" ] || tcp_json >"$BENCH_TCP_JSON"
	exit 0
fi

verify_md=$(verify_section)
cp "$T/verify/verify.json" bench/ 2>/dev/null
tls_md=$(tls_section)
cp "$T/tls/tls.json" bench/ 2>/dev/null
recovery_md=$(recovery_section)
cp "$T/recovery/recovery.json" bench/ 2>/dev/null
disk_md=$(disk_section)
qdisk_md=$(qdisk_section)
libvirt_md=$(libvirt_section)
cp "$T/disk/disk.json" bench/ 2>/dev/null

# (4) Downtime and total time against dirty rate (scripts/bench_sweep.sh):
# table here, plot in bench/sweep.png.
RMIG="$RMIG" scripts/bench_sweep.sh "$T/sweep" >"$T/sweep.md" 2>"$T/sweep.err" ||
	echo "bench: the dirty-rate sweep failed: $(tail -1 "$T/sweep.err")" >>"$T/sweep.md"
cp "$T/sweep/sweep.png" "$T/sweep/sweep.json" bench/ 2>/dev/null

# (3) zero pages, (7) scale.
RMIG="$RMIG" scripts/bench_scale.sh "$T/scale" >"$T/scale.md" 2>"$T/scale.err" ||
	echo "bench: bench_scale failed: $(tail -1 "$T/scale.err")" >>"$T/scale.md"
cp "$T/scale/scale.json" bench/ 2>/dev/null

# (5) QEMU, natively and through rmig (scripts/bench_qemu.sh).
RMIG="$RMIG" scripts/bench_qemu.sh "$T/qemu" >"$T/qemu.md" 2>"$T/qemu.err"
rc=$?
[ $rc = 0 ] || [ $rc = 77 ] || echo "bench: the QEMU comparison failed: $(tail -1 "$T/qemu.err")" >>"$T/qemu.md"
cp "$T/qemu/qemu.json" bench/ 2>/dev/null

# (2) RDMA, in one boot of the soft-RoCE VM.
rxe_table=""
if tests/rxe/setup.sh >/dev/null 2>&1; then
	rxe_table=$(tests/rxe/vm.sh --numa --timeout 1200 -- tests/rxe/bench.sh 2>/dev/null | grep '^|\|^CPU\|^Ceiling\|^Note\|^$')
else
	rxe_table="(soft-RoCE VM unavailable: tests/rxe/setup.sh failed)"
fi

# A section's JSON, or null where it wrote none (or an empty file: a
# failed section must not empty results.json).
json_of() { jq -ce . "$1" 2>/dev/null | grep . || echo null; }
{
	echo "# rmig bench, $(date -u +%Y-%m-%d), $(uname -m), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
	echo
	tcp_table
	echo "Plot: bench/tcp.png."
	echo
	echo "## Downtime against dirty rate (plot: bench/sweep.png)"
	echo
	sed 's#^Plot: .*#Plot: bench/sweep.png#' "$T/sweep.md"
	echo
	echo "## Sparse guests"
	echo
	cat "$T/scale.md"
	echo
	echo "Plot: bench/scale.png."
	echo
	echo "## A QEMU guest: QEMU's own migration and rmig's"
	echo
	cat "$T/qemu.md"
	echo
	echo "Plot: bench/qemu.png."
	echo
	echo "$verify_md"
	echo
	echo "$tls_md"
	echo
	echo "$recovery_md"
	echo
	echo "$disk_md"
	echo
	echo "$qdisk_md"
	echo
	echo "$libvirt_md"
	echo
	echo "## RDMA, soft-RoCE (rdma_rxe in a QEMU/TCG VM), one boot"
	echo
	echo "$rxe_table"
} | tee bench/results.md
jq -n --arg date "$(date -u +%FT%TZ)" --argjson tcp "$(tcp_json)" \
	--argjson memcpy "$memcpy_json" \
	--argjson scale "$(json_of bench/scale.json)" \
	--argjson qemu "$(json_of "$T/qemu/qemu.json")" \
	--argjson verify "$(json_of bench/verify.json)" \
	--argjson tls "$(json_of "$T/tls/tls.json")" \
	--argjson recovery "$(json_of "$T/recovery/recovery.json")" \
	--argjson disk "$(json_of "$T/disk/disk.json")" \
	--argjson qdisk "$(json_of "$T/qdisk/qdisk.json")" \
	--argjson libvirt "$(json_of "$T/libvirt/libvirt.json")" \
	'{date: $date, tcp: $tcp, memcpy: $memcpy, sparse: $scale, qemu: $qemu, verify: $verify, tls: $tls, recovery: $recovery, disk: $disk, qdisk: $qdisk, libvirt: $libvirt}' \
	>bench/results.json
# Plots of (1), (5) and (7); (4)'s is bench_sweep.sh's.
scripts/bench_plots.sh bench
