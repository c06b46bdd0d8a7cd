#!/bin/bash
# make bench: rmig against ceilings measured in the same run on this machine.
# Writes bench/results.md and bench/results.json. BENCH_SIZE, BENCH_CHANNELS,
# BENCH_RUNS (3) tune it. The sections, numbered as in issue 6:
# (1) TCP throughput against iperf3 over loopback, and rmig bench's steady
# state; (2) RDMA against ib_write_bw on one rxe pair (tests/rxe/bench.sh);
# (3) zero pages and (7) scale (scripts/bench_scale.sh); (4) downtime against
# dirty rate (scripts/bench_sweep.sh, plot bench/sweep.png); (5) a QEMU guest
# migrated by QEMU and through rmig (scripts/bench_qemu.sh); (6) CPU per GiB
# on both sides, against memcpy (tests/tools/memcpy_bw).
set -u
cd "$(dirname "$0")/.."
RMIG=${RMIG:-build/rmig}
SIZE=${BENCH_SIZE:-4G}
CH=${BENCH_CHANNELS:-2}
T=$(mktemp -d /tmp/rmig-bench.XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir -p bench
command -v iperf3 >/dev/null || {
	[ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null
} || { echo "bench: iperf3 is missing (apt-get install iperf3)"; exit 1; }
bytes=$(numfmt --from=iec "$SIZE")

# (1) TCP. Ceiling: iperf3 moving the same bytes over the same number of
# streams. This machine is a small VM whose figures swing by 2x from run to
# run (the host backs the destination's fresh memory on first touch), so
# iperf3 and rmig alternate RUNS times and the medians are compared.
RUNS=${BENCH_RUNS:-3}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for run in $(seq "$RUNS"); do
	iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
	sleep 0.5
	iperf3 -c 127.0.0.1 -p 5299 -P "$CH" -n "$bytes" -J >"$T/iperf.json" ||
		{ echo "bench: iperf3 failed"; exit 1; }
	wait
	jq '.end.sum_received.bits_per_second / 8' "$T/iperf.json" >>"$T/iperf.all"
	"$RMIG" recv --listen 127.0.0.1:0 --json --transport tcp >"$T/recv" 2>&1 &
	for _ in $(seq 100); do
		port=$(jq -r 'select(.event=="listening") | .port' "$T/recv" 2>/dev/null)
		[ -n "$port" ] && break
		sleep 0.05
	done
	"$RMIG" send --json --transport tcp --channels "$CH" --no-verify \
		--backend "sim:size=$SIZE,dirty-rate=0,zero=0%" "127.0.0.1:$port" >"$T/send" 2>&1
	wait
	jq -r 'select(.event=="round" and .round==1) | .bandwidth' "$T/send" >>"$T/rmig.all"
	jq -r 'select(.event=="summary") | .total_ms' "$T/send" >>"$T/total.all"
	jq -r 'select(.event=="summary") | .cpu_ms' "$T/send" >>"$T/cpu_send.all"
	jq -r 'select(.event=="summary") | .cpu_ms' "$T/recv" >>"$T/cpu_recv.all"
done
# Steady state: rmig bench resends a static buffer into memory the receiver
# already touched, so the link and the data path are measured without the
# destination's first-touch page zeroing.
"$RMIG" recv --listen 127.0.0.1:0 --json --transport tcp >"$T/brecv" 2>&1 &
for _ in $(seq 100); do
	port=$(jq -r 'select(.event=="listening") | .port' "$T/brecv" 2>/dev/null)
	[ -n "$port" ] && break
	sleep 0.05
done
"$RMIG" bench --json --transport tcp --channels "$CH" --seconds 5 --size 256M "127.0.0.1:$port" >"$T/bsend" 2>&1
wait
steady=$(jq -r 'select(.event=="bench") | .bandwidth' "$T/bsend")
steady_ratio=$(awk -v a="${steady:-0}" -v b="$(median <"$T/iperf.all")" 'BEGIN { printf "%.2f", a / b }')
gib=$(awk -v b="$bytes" 'BEGIN { print b / 1073741824 }')
cpu_send=$(median <"$T/cpu_send.all" | awk -v g="$gib" '{ printf "%.2f", $1 / 1000 / g }')
cpu_recv=$(median <"$T/cpu_recv.all" | awk -v g="$gib" '{ printf "%.2f", $1 / 1000 / g }')
iperf=$(median <"$T/iperf.all")
tcp_bw=$(median <"$T/rmig.all")
tcp_total=$(median <"$T/total.all")
tcp_ratio=$(awk -v a="$tcp_bw" -v b="$iperf" 'BEGIN { printf "%.2f", a / b }')
tcp_range=$(awk -v lo="$(sort -g "$T/rmig.all" | head -1)" -v hi="$(sort -g "$T/rmig.all" | tail -1)" \
	-v ilo="$(sort -g "$T/iperf.all" | head -1)" -v ihi="$(sort -g "$T/iperf.all" | tail -1)" \
	'BEGIN { printf "rmig %.0f..%.0f MB/s, iperf3 %.0f..%.0f MB/s", lo / 1e6, hi / 1e6, ilo / 1e6, ihi / 1e6 }')

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

# (6) The copy ceiling.
memcpy_json=$("${BUILD:-build}/tests/memcpy_bw" 2>/dev/null || echo '{"one_Bps":0,"all_Bps":0}')
memcpy_one=$(jq -r .one_Bps <<<"$memcpy_json")

# (2) RDMA, in one boot of the soft-RoCE VM.
rxe_table=""
if tests/rxe/setup.sh >/dev/null 2>&1; then
	rxe_table=$(tests/rxe/vm.sh --timeout 600 -- tests/rxe/bench.sh 2>/dev/null | grep '^|\|^CPU')
else
	rxe_table="(soft-RoCE VM unavailable: tests/rxe/setup.sh failed)"
fi

mb() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1e6 }'; }
{
	echo "# rmig bench, $(date -u +%Y-%m-%d), $(uname -m), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
	echo
	echo "## TCP over loopback, $SIZE idle guest of non-zero data, $CH streams"
	echo
	echo "| | MB/s | ratio to iperf3 |"
	echo "|---|---|---|"
	echo "| iperf3 -P $CH, same bytes (median of $RUNS) | $(mb "$iperf") | 1.00 |"
	echo "| rmig send, pre-copy round 1 (median of $RUNS) | $(mb "$tcp_bw") | $tcp_ratio |"
	echo "| rmig bench, steady state (memory already touched) | $(mb "${steady:-0}") | $steady_ratio |"
	echo
	echo "CPU per GiB moved (median, whole process, getrusage): sender $cpu_send s, receiver $cpu_recv s. Copy ceiling: memcpy moves 1 GiB in $(awk -v b="$memcpy_one" 'BEGIN { if (b > 0) printf "%.2f", 1073741824 / b; else print "?" }') s on one CPU ($(mb "$memcpy_one") MB/s)."
	echo
	echo "Range over the runs: $tcp_range. Whole migration (median): $tcp_total ms. Target: 0.9 of iperf3: $(awk -v r="$tcp_ratio" 'BEGIN { print (r >= 0.9 ? "met" : "not met") }')."
	echo
	echo "## Downtime against dirty rate (plot: bench/sweep.png)"
	echo
	cat "$T/sweep.md"
	echo
	echo "## Sparse guests"
	echo
	cat "$T/scale.md"
	echo
	echo "## A QEMU guest: QEMU's own migration and rmig's"
	echo
	cat "$T/qemu.md"
	echo
	echo "## RDMA, soft-RoCE (rdma_rxe in a QEMU/TCG VM), one boot"
	echo
	echo "$rxe_table"
} | tee bench/results.md
jq -n --arg date "$(date -u +%FT%TZ)" --argjson iperf "$iperf" --argjson rmig "$tcp_bw" \
	--argjson ratio "$tcp_ratio" --arg size "$SIZE" --argjson channels "$CH" \
	--argjson memcpy "$memcpy_json" --argjson steady "${steady:-0}" \
	--argjson scale "$(cat bench/scale.json 2>/dev/null || echo null)" \
	--argjson qemu "$(cat "$T/qemu/qemu.json" 2>/dev/null || echo null)" \
	'{date: $date, tcp: {size: $size, channels: $channels, iperf3_Bps: $iperf, rmig_Bps: $rmig, ratio: $ratio, rmig_bench_steady_Bps: $steady}, memcpy: $memcpy, sparse: $scale, qemu: $qemu}' \
	>bench/results.json
