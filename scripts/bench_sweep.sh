#!/bin/bash
# Issue 6, item 4: downtime, total time and rounds against the guest's dirty
# rate, with --downtime-ms 100, from an idle guest to beyond the link's page
# rate.
#
#   RMIG=build/rmig scripts/bench_sweep.sh OUTDIR
#
# Writes OUTDIR/sweep.json (one row per rate, with the run's round events and
# summary), OUTDIR/sweep.dat (gnuplot data), OUTDIR/sweep.png (the plot),
# OUTDIR/sweep.gp (its gnuplot script) and OUTDIR/runs/ (each run's raw
# output); prints a markdown table and a summary line on stdout. Exit 0 if
# at least one run migrated, 1 if none did, 2 on usage errors.
#
# Each run is one real migration over loopback TCP: `rmig recv --prealloc`
# (its preallocation is left out of the total time) on a free port, `rmig send --backend sim:size=2G,dirty-rate=R,...`, the default
# --max-rounds and --on-no-converge throttle. The first two runs, at rate 0,
# measure the link's page rate P (round-1 bandwidth / 4096: the receiver
# preallocates, so that P is the link's and not the rate at which this VM's
# host hands out fresh memory, 5x slower and swinging); the others are
# log-spaced from P/32 to 3P, so the sweep crosses P and the point where the
# engine has to throttle the guest.
#
# --no-verify: the XXH3 digests of all 2 GiB on both sides at the pause would
# add a fixed cost that has nothing to do with the dirty rate (and that alone
# may exceed 100 ms here, which forces the switch-over at once); without them
# the downtime measured is the transfer of the last dirty pages plus the
# commit round trips, which is what this sweep is about.
#
# Knobs (environment): SWEEP_SIZE (2G), SWEEP_HOT (from P, below),
# SWEEP_LIMIT_MS (100), SWEEP_POINTS (8 rates above 0), SWEEP_MAX_FACTOR (3:
# the top rate, in units of P), SWEEP_RATES ("r1 r2 ...": explicit rates
# instead, the rate-0 runs still first), SWEEP_RUN_TIMEOUT (180 s per run).
# SWEEP_REPLOT=1: no runs, only the table and the plot again from
# OUTDIR/sweep.json. Needs jq, and gnuplot-nox for the plot (installed here
# when missing and running as root; without it, no plot but no failure).
set -u
usage() {
	echo "usage: RMIG=build/rmig $0 OUTDIR" >&2
	exit 2
}
[ $# -eq 1 ] || usage
OUT=$1
HERE=$(cd "$(dirname "$0")/.." && pwd)
RMIG=${RMIG:-$HERE/build/rmig}
case $RMIG in /*) ;; *) RMIG=$(pwd)/$RMIG ;; esac
[ -x "$RMIG" ] || { echo "bench_sweep: $RMIG is not an executable (make -s all)" >&2; exit 2; }
command -v jq >/dev/null || { echo "bench_sweep: jq is missing (apt-get install jq)" >&2; exit 2; }
SIZE=${SWEEP_SIZE:-2G}
# The sim's writer picks each page it writes at random from a `hot` share of
# guest memory (the working set): here 1.25 * P * limit pages, a quarter more
# than round 1's bandwidth moves in 100 ms, rounded up to 5%, and at least
# 25% (512 MiB: what round 1 moves in 100 ms at 5 GB/s). The floor is there
# because round 1 into fresh memory swung between ~0.7 and ~4.3 GB/s from one
# run to the next on this VM (how the host backs fresh memory); with the
# receiver preallocating it should not, but a slow probe stays harmless.
# - Not smaller: after round 1 the engine estimates the downtime from round
#   1's bandwidth, and a working set that fits in the limit at that bandwidth
#   "converges" after round 1 at any rate, however high (the dirty pages can
#   never outnumber the working set): the sweep would show nothing else.
# - Not much larger (say 100%): while pre-copy cannot converge, each round
#   resends the whole working set, and throttling adds a step only every two
#   rounds; a 2 GiB working set would make each throttled run minutes long.
# - Near convergence a round sees some 10k writes, and only ~5% of them hit a
#   page already dirty, so the configured rate is close to the rate of newly
#   dirtied pages (the "measured" column: the highest over the run's rounds).
# SWEEP_HOT=N% fixes it instead.
HOT=${SWEEP_HOT:-}
LIMIT=${SWEEP_LIMIT_MS:-100}
POINTS=${SWEEP_POINTS:-8}
MAXF=${SWEEP_MAX_FACTOR:-3}
RUN_TIMEOUT=${SWEEP_RUN_TIMEOUT:-180}
for r in ${SWEEP_RATES:-}; do
	case $r in *[!0-9]*) echo "bench_sweep: SWEEP_RATES: '$r' is not a number of pages/s" >&2; exit 2 ;; esac
done
NPAGES=$(($(numfmt --from=iec "$SIZE") / 4096)) || exit 2
mkdir -p "$OUT/runs" || exit 2
OUT=$(cd "$OUT" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/rmig-sweep.XXXXXX")
RECV_PID=""
cleanup() {
	[ -n "$RECV_PID" ] && kill -9 "$RECV_PID" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
t_begin=$(date +%s)

# run_one RATE: one migration at RATE pages/s; appends its row to $T/rows.
run_one() {
	local rate=$1 f=$T/run port="" rc=0 err="" x
	rm -f "$f".*
	"$RMIG" recv --listen 127.0.0.1:0 --json --transport tcp --prealloc >"$f.recv" 2>"$f.recv.err" &
	RECV_PID=$!
	for _ in $(seq 200); do
		port=$(jq -r 'select(.event=="listening") | .port' "$f.recv" 2>/dev/null | head -1)
		[ -n "$port" ] && break
		kill -0 "$RECV_PID" 2>/dev/null || break
		sleep 0.05
	done
	if [ -z "$port" ]; then
		err="receiver did not listen: $(tail -1 "$f.recv.err" 2>/dev/null)"
		rc=1
		: >"$f.send"
	else
		timeout -k 5 "$RUN_TIMEOUT" "$RMIG" send --json --transport tcp --no-verify \
			--downtime-ms "$LIMIT" \
			--backend "sim:size=$SIZE,dirty-rate=$rate,hot=$HOT,zero=0%" \
			"127.0.0.1:$port" >"$f.send" 2>"$f.send.err" || rc=$?
		[ "$rc" = 124 ] && err="sender killed after ${RUN_TIMEOUT}s"
		[ "$rc" != 0 ] && [ -z "$err" ] && err=$(tail -1 "$f.send.err" 2>/dev/null)
	fi
	# The receiver ends by itself after a migration, or an attempt that got
	# as far as connecting; give it some time then.
	grep -q '"event":"connected"' "$f.send" 2>/dev/null || kill -9 "$RECV_PID" 2>/dev/null
	for _ in $(seq 300); do
		kill -0 "$RECV_PID" 2>/dev/null || break
		sleep 0.05
	done
	kill -9 "$RECV_PID" 2>/dev/null
	wait "$RECV_PID" 2>/dev/null
	RECV_PID=""
	for x in send send.err recv recv.err; do
		cp "$f.$x" "$OUT/runs/rate-$rate.$x" 2>/dev/null
	done
	# The receiver's preallocation is not the migration's: out of total_ms.
	pre=$(jq -r 'select(.event=="summary") | .prealloc_ms' "$f.recv" 2>/dev/null | tail -1)
	case $pre in '' | *[!0-9]*) pre=0 ;; esac
	# Lines that are not JSON (a crash mid-line) are skipped, not fatal.
	jq -R -s -c --argjson rate "$rate" --arg hot "$HOT" --argjson limit "$LIMIT" \
		--argjson rc "$rc" --arg err "$err" --argjson prealloc "$pre" '
		[split("\n")[] | fromjson? | objects] as $ev
		| ([$ev[] | select(.event == "summary")] | last) as $s
		| [$ev[] | select(.event == "round")] as $r
		| ($rc == 0 and ($s.result // "") == "migrated") as $ok
		| {
			dirty_rate: $rate, hot: $hot, limit_ms: $limit, ok: $ok, exit: $rc,
			result: ($s.result // "none"),
			rounds: $s.rounds, throttle_pct: $s.throttle_pct, forced: $s.forced,
			expected_downtime_ms: $s.expected_downtime_ms,
			downtime_ms: $s.downtime_ms,
			total_ms: (if $s.total_ms then $s.total_ms - $prealloc else null end),
			prealloc_ms: $prealloc,
			measured_dirty_rate: ([$r[].dirty_rate] | max),
			round1_bandwidth: ($r[0].bandwidth // null),
			# rounds 2+ send scattered dirty pages; their own figure (a round
			# under 1 MiB repeats the previous one, so it is left out)
			dirty_round_bandwidth: ([$r[] | select(.round >= 2 and .bytes >= 1048576)
				| .bandwidth] | sort | if length == 0 then null else .[length / 2 | floor] end),
			by_estimate: ($ok and $s.forced == false),
			verdict: (if ($ok | not) then "failed"
				elif $s.downtime_ms <= $limit then "within limit"
				elif $s.downtime_ms <= 1.5 * $limit then "within 1.5x"
				else "over" end),
			error: (if $ok then null else ($s.error // (if $err == "" then "no summary" else $err end)) end),
			round_events: $r, summary: $s
		}' "$f.send" >>"$T/rows" ||
		jq -n -c --argjson rate "$rate" --arg err "${err:-unreadable output}" \
			'{dirty_rate: $rate, ok: false, verdict: "failed", error: $err}' >>"$T/rows"
	tail -1 "$T/rows" | jq -r '"bench_sweep: rate \(.dirty_rate): \(if .ok then "\(.verdict), downtime \(.downtime_ms) ms, total \(.total_ms) ms, \(.rounds) rounds, throttle \(.throttle_pct)%" else "FAILED: \(.error)" end)"' >&2
}

if [ -n "${SWEEP_REPLOT:-}" ]; then
	# Only the table and the plot again, from an earlier OUTDIR/sweep.json.
	[ -s "$OUT/sweep.json" ] || { echo "bench_sweep: no $OUT/sweep.json to replot" >&2; exit 2; }
	P=$(jq '.[0].link_page_rate' "$OUT/sweep.json")
	HOT=$(jq -r '.[0].sweep_hot' "$OUT/sweep.json")
	elapsed=$(jq '.[0].sweep_seconds' "$OUT/sweep.json")
	LIMIT=$(jq '.[0].limit_ms' "$OUT/sweep.json")
	P_NOTE=""
else
	: >"$T/rows"
	echo "bench_sweep: $SIZE sim guest, --downtime-ms $LIMIT, TCP over loopback, --no-verify" >&2
	HOT_USER=$HOT
	HOT=${HOT:-10%} # no writes at rate 0: the share does not matter
	# Two rate-0 runs: on this VM round 1 swings between ~0.7 and ~4 GB/s
	# from one run to the next (how the host backs the fresh memory), and
	# the link's page rate P is the better of the two.
	P=0
	for _ in 1 2; do
		run_one 0
		P=$(tail -1 "$T/rows" | jq -r --argjson p "$P" '[(.round1_bandwidth // 0) / 4096 | floor, $p] | max')
	done
	if [ "$P" -le 0 ] 2>/dev/null; then
		P=100000
		echo "bench_sweep: the rate-0 runs failed; assuming a link of $P pages/s for the rates" >&2
		P_NOTE=" (assumed: the rate-0 runs failed)"
	else
		P_NOTE=""
	fi
	if [ -n "$HOT_USER" ]; then
		HOT=$HOT_USER
	else
		HOT=$(awk -v p="$P" -v l="$LIMIT" -v n="$NPAGES" 'BEGIN {
			h = 100 * 1.25 * p * l / 1000 / n; h = int((h + 4.999) / 5) * 5
			print (h < 25 ? 25 : h > 100 ? 100 : h) "%"
		}')
	fi
	if [ -n "${SWEEP_RATES:-}" ]; then
		RATES=$SWEEP_RATES
	else
		# POINTS rates, log-spaced from P/32 to MAXF*P, two significant digits.
		RATES=$(awk -v p="$P" -v n="$POINTS" -v f="$MAXF" 'BEGIN {
			lo = p / 32; hi = p * f
			for (i = 0; i < n; i++) {
				r = (n > 1) ? lo * exp(log(hi / lo) * i / (n - 1)) : hi
				m = 10 ^ (int(log(r) / log(10)) - 1)
				printf "%d ", int(r / m + 0.5) * m
			}
		}')
	fi
	echo "bench_sweep: link page rate $P pages/s$P_NOTE; hot=$HOT; rates: $RATES" >&2
	for r in $RATES; do
		[ "$r" = 0 ] && continue
		run_one "$r"
	done
	elapsed=$(($(date +%s) - t_begin))

	jq -s --argjson p "$P" --argjson elapsed "$elapsed" --arg hot "$HOT" --arg date "$(date -u +%FT%TZ)" \
		'map(. + {link_page_rate: $p, rate_over_link: (if $p > 0 then .dirty_rate / $p else null end),
			sweep_hot: $hot, sweep_seconds: $elapsed, date: $date})' \
		"$T/rows" >"$OUT/sweep.json"
fi

# Summary figures.
read -r MET UNTHR UNTHR_DT THR HOLD NEST NOVER NWITHIN <<<"$(jq -r --argjson limit "$LIMIT" '
	([.[] | select(.ok and .forced == false and .throttle_pct == 0 and .downtime_ms <= $limit)
	  | .dirty_rate] | max // "none") as $met
	| ([.[] | select(.ok and .throttle_pct > 0) | .dirty_rate] | min // "none") as $thr
	# the highest rate run without throttling, below the first throttled one
	| ([.[] | select(.ok and .throttle_pct == 0 and ($thr == "none" or .dirty_rate < $thr))]
	   | max_by(.dirty_rate) // {dirty_rate: "none", downtime_ms: "none"}) as $un
	| [.[] | select(.by_estimate)] as $est
	| ([$est[] | select(.downtime_ms > 1.5 * $limit)] | length) as $over
	| "\($met) \($un.dirty_rate) \($un.downtime_ms) \($thr) \(if ($est | length) == 0 then "untested" elif $over == 0 then "holds" else "FAILS" end) \($est | length) \($over) \([$est[] | select(.downtime_ms <= $limit)] | length)"
	' "$OUT/sweep.json")"
NOK=$(jq '[.[] | select(.ok)] | length' "$OUT/sweep.json")
# Pages/s that rounds 2+ (scattered dirty pages) achieved: median over all runs.
PD=$(jq '[.[] | .round_events[]? | select(.round >= 2 and .bytes >= 1048576) | .bandwidth / 4096]
	| sort | if length == 0 then 0 else .[length / 2 | floor] | floor end' "$OUT/sweep.json")

# Table.
PMB=$(awk -v p="$P" 'BEGIN { printf "%.0f", p * 4096 / 1e6 }')
echo "Link page rate: $P pages/s ($PMB MB/s: the better round-1 bandwidth of the two rate-0 runs / 4096)$P_NOTE."
[ "$PD" -gt 0 ] && echo "Rounds 2+ (scattered dirty pages) moved $PD pages/s ($(awk -v p="$PD" 'BEGIN { printf "%.0f", p * 4096 / 1e6 }') MB/s; median over all runs' rounds of at least 1 MiB)."
echo "$SIZE sim guest (hot=$HOT, zero=0%), --downtime-ms $LIMIT, TCP over loopback, --no-verify, receiver --prealloc (left out of total ms), $(nproc) CPUs."
echo
echo "| dirty rate (pages/s) | × link | measured (pages/s) | round-1 MB/s | rounds | throttle % | forced | expected ms | downtime ms | total ms | switched | verdict |"
echo "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---|"
jq -r '.[] | if .ok then
	"| \(.dirty_rate) | \(.rate_over_link * 100 | round / 100) | \(.measured_dirty_rate // 0 | round) | \((.round1_bandwidth // 0) / 1e6 | round) | \(.rounds) | \(.throttle_pct) | \(.forced) | \(.expected_downtime_ms) | \(.downtime_ms) | \(.total_ms) | \(if .forced then "forced" elif .throttle_pct > 0 then "by estimate, throttled" else "by estimate" end) | \(.verdict) |"
	else
	"| \(.dirty_rate) | \(.rate_over_link * 100 | round / 100) | | | | | | | | | error | failed: \(.error | tostring | gsub("\\|"; "/")) |"
	end' "$OUT/sweep.json"
echo
# "N pages/s (F × link)", or "none".
pct() { awk -v r="$1" -v p="$P" 'BEGIN { if (r !~ /^[0-9.]+$/) printf "none"; else { printf "%s pages/s", r; if (p > 0) printf " (%.2f × link)", r / p } }'; }
case $HOLD in
holds) hold_txt="holds in all $NEST such runs ($NWITHIN within the limit itself)" ;;
FAILS) hold_txt="FAILS in $NOVER of $NEST such runs ($NWITHIN within the limit itself)" ;;
*) hold_txt="untested: no run switched over by estimate" ;;
esac
un_txt=""
[ "$UNTHR" != "$MET" ] && [ "$UNTHR" != none ] &&
	un_txt="; highest rate run without throttling: $(pct "$UNTHR"), downtime $UNTHR_DT ms"
echo "Summary: highest rate meeting $LIMIT ms without throttling: $(pct "$MET")$un_txt; throttling takes over from $(pct "$THR"); target (downtime ≤ 1.5 × $LIMIT ms whenever forced=false) $hold_txt; $NOK/$(jq length "$OUT/sweep.json") runs migrated in ${elapsed} s."

# Plot data: rate 0 cannot sit on a log axis, so it is drawn at X0, half the
# lowest non-zero rate, labelled "0".
X0=$(jq '[.[] | select(.dirty_rate > 0) | .dirty_rate] | (min // 2) / 2' "$OUT/sweep.json")
{
	echo "# rmig dirty-rate sweep: $SIZE guest, hot=$HOT, --downtime-ms $LIMIT; link page rate $P pages/s"
	echo "# x dirty_rate measured_rate rounds throttle_pct forced expected_ms downtime_ms total_s ok"
	jq -r --argjson x0 "$X0" '.[] | [
		(if .dirty_rate > 0 then .dirty_rate else $x0 end), .dirty_rate,
		(if .ok then (.measured_dirty_rate // 0 | round), .rounds, .throttle_pct,
			(if .forced then 1 else 0 end), .expected_downtime_ms, .downtime_ms,
			(.total_ms / 1000), 1
		 else "?", "?", "?", "?", "?", "?", "?", 0 end)] | @tsv' "$OUT/sweep.json"
} >"$OUT/sweep.dat"

have_gnuplot() { command -v gnuplot >/dev/null; }
if [ "$NOK" != 0 ] && ! have_gnuplot && [ "$(id -u)" = 0 ]; then
	echo "bench_sweep: installing gnuplot-nox" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq gnuplot-nox >/dev/null 2>&1 ||
		{ apt-get update -qq >/dev/null 2>&1; apt-get install -y -qq gnuplot-nox >/dev/null 2>&1; }
fi
rm -f "$OUT/sweep.png"
if [ "$NOK" = 0 ]; then
	echo
	echo "(no plot: no run migrated)"
elif ! have_gnuplot; then
	echo
	echo "(no plot: gnuplot is missing; apt-get install gnuplot-nox, then SWEEP_REPLOT=1 $0 $OUT)"
else
	TERM_=png
	gnuplot -e 'set terminal pngcairo' >/dev/null 2>&1 && TERM_=pngcairo
	XMAX=$(jq '[.[] | .dirty_rate] | max * 1.6' "$OUT/sweep.json")
	# The throttled region: from halfway (geometrically) between the last
	# rate run without throttling and the first throttled one.
	SHADE=$(jq -nr --arg un "$UNTHR" --arg thr "$THR" --argjson x0 "$X0" '
		if $thr == "none" then "" elif $un == "none" then ($thr | tonumber) / 1.2
		else ([($un | tonumber), $x0] | max) * ($thr | tonumber) | sqrt end')
	# Downtimes far over the limit would squash the interesting band: the
	# y axis stops at 4x the limit and such points sit on its top edge,
	# labelled with their value.
	YMAX=$(jq --argjson limit "$LIMIT" '[.[] | select(.ok) | .downtime_ms, .expected_downtime_ms] |
		[[(max // 0) * 1.15, 4 * $limit] | min, 1.5 * $limit * 1.3] | max | ceil' "$OUT/sweep.json")
	# x tics by hand: "0" at X0, decades from above it, minor tics between.
	XTICS=$(awk -v x0="$X0" -v xmax="$XMAX" 'BEGIN {
		printf "\"0\" %s", x0
		for (d = 1; d <= xmax; d *= 10)
			for (m = 1; m < 10; m++) {
				v = d * m
				if (v <= x0 * 1.3 || v > xmax) continue
				if (m == 1) printf ", \"%s\" %d", (v >= 1e6 ? v / 1e6 "M" : v >= 1e3 ? v / 1e3 "k" : v), v
				else printf ", \"\" %d 1", v
			}
	}')
	cat >"$OUT/sweep.gp" <<-EOF
		set terminal $TERM_ size 1250,900 $([ $TERM_ = pngcairo ] && echo "font 'sans,11'")
		set output '$OUT/sweep.png'
		set datafile separator "\t"
		set datafile missing '?'
		set logscale x
		set xrange [$X0 / 1.4 : $XMAX]
		set xtics ($XTICS)
		set grid xtics ytics lc rgb '#dddddd'
		# Fixed margins line the two panels up; the keys sit to the right.
		set lmargin at screen 0.07
		set rmargin at screen 0.74
		set key at screen 0.995, graph 1 right top box spacing 1.2 width 1
		set multiplot layout 2,1 margins 0.07, 0.74, 0.08, 0.92 spacing 0, 0.1 title "rmig: $SIZE sim guest (hot=$HOT), --downtime-ms $LIMIT, TCP over loopback, --no-verify" font ',13'
		$( [ -n "$SHADE" ] && echo "set object 1 rect from $SHADE, graph 0 to $XMAX, graph 1 back fc rgb '#ffe8cc' fs solid 1.0 noborder" )
		set arrow 1 from $P, graph 0 to $P, graph 1 nohead lc rgb '#555555' dt 3 lw 1.5
		set label 11 sprintf('round 1 (link): %d pages/s', $P) at $P, graph 0.97 right rotate by 90 offset -1.6,0 tc rgb '#555555'
		$( [ "$PD" -gt 0 ] && echo "set arrow 2 from $PD, graph 0 to $PD, graph 1 nohead lc rgb '#8c564b' dt 3 lw 1.5" )
		$( [ "$PD" -gt 0 ] && echo "set label 12 sprintf('rounds 2+: %d pages/s', $PD) at $PD, graph 0.97 right rotate by 90 offset -1.6,0 tc rgb '#8c564b'" )
		set ylabel 'ms'
		cap(v) = v > $YMAX ? $YMAX : v
		set yrange [0:$YMAX]
		unset xlabel
		set title 'downtime (guest paused) and the estimate it switched over on'
		plot $( [ -n "$SHADE" ] && echo "keyentry w boxes fc rgb '#ffe8cc' fs solid 1.0 t 'throttling takes over'," ) \\
		     $LIMIT w l lc rgb '#2ca02c' dt 2 lw 2 t '$LIMIT ms limit', \\
		     1.5 * $LIMIT w l lc rgb '#d62728' dt 2 lw 2 t '1.5 × limit', \\
		     '$OUT/sweep.dat' u 1:7 w lp lc rgb '#7f7f7f' dt 4 pt 6 ps 1.2 t 'expected, at switch-over', \\
		     '' u 1:(cap(\$8)) w lp lc rgb '#1f77b4' lw 2 pt 7 ps 1.3 t 'measured downtime', \\
		     '' u 1:(\$5 > 0 ? cap(\$8) : 1/0) w p lc rgb '#ff7f0e' pt 9 ps 2.2 t 'throttled', \\
		     '' u 1:(\$6 > 0 ? cap(\$8) : 1/0) w p lc rgb '#d62728' pt 2 ps 2.5 lw 2 t 'forced', \\
		     '' u 1:(\$5 > 0 ? cap(\$8) : 1/0):(sprintf('%d%%', \$5)) w labels offset 0,1.3 tc rgb '#b35900' notitle, \\
		     '' u 1:(\$8 > $YMAX ? $YMAX : 1/0):(sprintf('%d ms ↑', \$8)) w labels left offset 0.8,-0.7 tc rgb '#1f77b4' notitle
		set title 'total migration time and rounds'
		set xlabel 'dirty rate, pages/s (log scale)'
		set ylabel 'total time, s'
		set autoscale y
		set yrange [0:*]
		set y2label 'rounds'
		set y2range [0:*]
		set y2tics
		set ytics nomirror
		plot '$OUT/sweep.dat' u 1:9 w lp lc rgb '#1f77b4' lw 2 pt 7 ps 1.3 t 'total time (s)', \\
		     '' u 1:4 axes x1y2 w lp lc rgb '#9467bd' lw 2 dt 2 pt 5 ps 1.1 t 'rounds (right axis)', \\
		     '' u 1:(\$5 > 0 ? \$9 : 1/0) w p lc rgb '#ff7f0e' pt 9 ps 2.2 t 'throttled', \\
		     '' u 1:(\$6 > 0 ? \$9 : 1/0) w p lc rgb '#d62728' pt 2 ps 2.5 lw 2 t 'forced'
		unset multiplot
	EOF
	if gnuplot "$OUT/sweep.gp" 2>"$T/gnuplot.err"; then
		echo
		echo "Plot: $OUT/sweep.png"
	else
		echo
		echo "(no plot: gnuplot failed: $(head -3 "$T/gnuplot.err" | tr '\n' ' '))"
	fi
fi
[ "$NOK" -gt 0 ]
