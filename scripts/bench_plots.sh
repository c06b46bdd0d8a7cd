#!/bin/bash
# The plots of make bench other than the dirty-rate sweep's (which
# scripts/bench_sweep.sh draws), from the JSON the bench wrote:
#   DIR/tcp.png    (1)+(6) TCP round 1 against each iperf3 configuration
#                  (the best is the ceiling) and the fresh-memory rate, from
#                  DIR/results.json
#   DIR/scale.png  (7) the engine's CPU per round against guest size, from
#                  DIR/scale.json
#   DIR/verify.png (8) downtime against guest size for --verify on, full, off
#   DIR/qemu.png   (5) every run's total time and downtime, QEMU native and
#                  through rmig, from DIR/qemu.json
#
#   scripts/bench_plots.sh [DIR]     (default bench)
#
# A plot whose JSON is missing is skipped with a line saying so. Needs jq and
# gnuplot (gnuplot-nox; installed when missing and running as root). Prints
# one line per plot written; exit 1 if gnuplot is missing or fails.
set -u
DIR=${1:-bench}
command -v jq >/dev/null || { echo "bench_plots: jq is missing (apt-get install jq)" >&2; exit 1; }
if ! command -v gnuplot >/dev/null && [ "$(id -u)" = 0 ]; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null 2>&1
fi
command -v gnuplot >/dev/null || { echo "bench_plots: gnuplot is missing (apt-get install gnuplot-nox)" >&2; exit 1; }
TERM_=png
gnuplot -e 'set terminal pngcairo' >/dev/null 2>&1 && TERM_=pngcairo
T=$(mktemp -d /tmp/rmig-plots.XXXXXX)
trap 'rm -rf "$T"' EXIT
status=0

# plot NAME: run $T/NAME.gp, report.
plot() {
	if gnuplot "$T/$1.gp" 2>"$T/$1.err"; then
		echo "bench_plots: wrote $DIR/$1.png"
	else
		echo "bench_plots: gnuplot failed on $1: $(head -n 3 "$T/$1.err" | tr '\n' ' ')" >&2
		status=1
	fi
}

if jq -e '.tcp.iperf3_Bps' "$DIR/results.json" >/dev/null 2>&1; then
	# One bar per iperf3 configuration where the bench measured several
	# (.tcp.ceiling.configs, the best one marked), else the one iperf3 bar.
	jq -r '.tcp | (.ceiling.best // 1) as $best | ((.ceiling.configs // [{short: "iperf3", Bps: .iperf3_Bps, config: 1}])
		| map([.short + (if .config == $best and (.short != "iperf3") then " (ceiling)" else "" end), .Bps]))
		+ [["rmig, --prealloc", .rmig_prealloc_Bps],
		["rmig, default", .rmig_default_Bps], ["fresh memory", .fresh_memory_Bps],
		["steady state", .rmig_bench_steady_Bps]]
		| .[] | select(.[1] != null) | "\"\(.[0])\" \(.[1] / 1e6)"' "$DIR/results.json" >"$T/tcp.dat"
	cat >"$T/tcp.gp" <<EOF
set terminal $TERM_ size 1300,450
set output "$DIR/tcp.png"
set title "TCP over loopback, $(jq -r '.tcp.size' "$DIR/results.json") idle guest, round 1 (medians)"
set ylabel "MB/s"
set style fill solid 0.6
set boxwidth 0.6
set yrange [0:*]
set grid ytics
unset key
plot "$T/tcp.dat" using 0:2:xtic(1) with boxes lc rgb "#4472c4", \
     "" using 0:2:(sprintf("%.0f", \$2)) with labels offset 0,0.8
EOF
	plot tcp
else
	echo "bench_plots: no TCP figures in $DIR/results.json: no tcp.png"
fi

if jq -e '.scale | length > 0' "$DIR/scale.json" >/dev/null 2>&1; then
	jq -r '.scale[] | select(.clean_cpu_us != null)
		| "\(.gib) \(.clean_cpu_us / .gib) \(.round1_cpu_us / .gib) \(.clean_cpu_us / 1000)"' \
		"$DIR/scale.json" >"$T/scale.dat"
	cat >"$T/scale.gp" <<EOF
set terminal $TERM_ size 800,450
set output "$DIR/scale.png"
set title "Engine CPU per pre-copy round, sparse sim guest"
set xlabel "guest size (GiB)"
set ylabel "CPU per GiB of guest (us)"
set y2label "clean round, whole guest (ms)"
set logscale x 2
set yrange [0:*]
set y2range [0:12]
set ytics nomirror
set y2tics
set grid
set key top left
plot "$T/scale.dat" using 1:2 with linespoints lw 2 title "clean round, per GiB", \
     "" using 1:3 with linespoints lw 2 title "round 1, per GiB", \
     "" using 1:4 axes x1y2 with linespoints dt 2 title "clean round, total (right)", \
     10 axes x1y2 with lines dt 3 lc rgb "red" title "target: 10 ms at 64 GiB (right)"
EOF
	plot scale
else
	echo "bench_plots: no scale figures in $DIR/scale.json: no scale.png"
fi

if jq -e '.native.runs | length > 0' "$DIR/qemu.json" >/dev/null 2>&1; then
	jq -r '.native.runs | to_entries[] | "\(.key + 1) \(.value.total_ms) \(.value.downtime_ms)"' \
		"$DIR/qemu.json" >"$T/native.dat"
	jq -r '(.rmig.runs // []) | to_entries[] | "\(.key + 1) \(.value.total_ms) \(.value.downtime_ms)"' \
		"$DIR/qemu.json" >"$T/rmig.dat"
	cat >"$T/qemu.gp" <<EOF
set terminal $TERM_ size 800,450
set output "$DIR/qemu.png"
set title "The same QEMU guest migrated by QEMU natively and through rmig"
set xlabel "run"
set ylabel "ms"
set yrange [0:*]
set xtics 1
set grid
set key top left
plot "$T/native.dat" using 1:2 with linespoints lw 2 lc rgb "#888888" title "QEMU native, total", \
     "" using 1:3 with linespoints dt 2 lc rgb "#888888" title "QEMU native, downtime", \
     "$T/rmig.dat" using 1:2 with linespoints lw 2 lc rgb "#4472c4" title "rmig, total", \
     "" using 1:3 with linespoints dt 2 lc rgb "#4472c4" title "rmig, downtime"
EOF
	plot qemu
else
	echo "bench_plots: no QEMU runs in $DIR/qemu.json: no qemu.png"
fi

if jq -e '.verify | map(select(.part == 1 and .downtime_ms != null)) | length > 0' \
	"$DIR/verify.json" >/dev/null 2>&1; then
	for mode in on full off; do
		jq -r --arg m "$mode" '.verify[] | select(.part == 1 and .verify == $m and .downtime_ms != null)
			| "\(.guest | rtrimstr("G")) \(.downtime_ms | if . < 1 then 1 else . end) \(.expected_ms // 0)"' \
			"$DIR/verify.json" >"$T/verify.$mode.dat"
	done
	cat >"$T/verify.gp" <<EOF
set terminal $TERM_ size 800,450
set output "$DIR/verify.png"
set title "Downtime against guest size by --verify mode (sim, 20000 pages/s, medians)"
set xlabel "guest size (GiB; 16 and 64: 95% zero)"
set ylabel "downtime (ms)"
set logscale xy 2
set grid
set key top left
plot "$T/verify.on.dat" using 1:2 with linespoints lw 2 title "--verify (on)", \
     "$T/verify.full.dat" using 1:2 with linespoints lw 2 title "--verify=full", \
     "$T/verify.off.dat" using 1:2 with linespoints lw 2 title "--verify=off"
EOF
	plot verify
else
	echo "bench_plots: no downtime rows in $DIR/verify.json: no verify.png"
fi
exit $status
