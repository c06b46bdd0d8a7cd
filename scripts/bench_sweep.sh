#!/bin/bash
# Issue 6, item 4: downtime, total time and rounds against the guest's dirty
# rate, with --downtime-ms 100, from an idle guest to beyond the link's page
# rate.
#
#   RMIG=build/rmig scripts/bench_sweep.sh OUTDIR
#
# Writes OUTDIR/sweep.json (one row per rate, with the run's round events and
# summary), OUTDIR/sweep.dat (gnuplot data), OUTDIR/sweep.png (the plot) and
# OUTDIR/sweep.gp (its gnuplot script), OUTDIR/runs/ (each run's raw output); prints a markdown table and a summary
# line on stdout. Exit 0 if at least one run migrated, 1 if none did, 2 on
# usage errors.
#
# Each run is one real migration over loopback TCP: `rmig recv` on a free
# port, `rmig send --backend sim:size=2G,dirty-rate=R,...`, the default
# --max-rounds and --on-no-converge throttle. The first run, at rate 0,
# measures the link's page rate P (round-1 bandwidth / 4096); the others are
# log-spaced from P/32 to 3P, so the sweep crosses P and the point where the
# engine has to throttle the guest.
#
# --no-verify: the XXH3 digests of all 2 GiB on both sides at the pause would
# add a fixed cost that has nothing to do with the dirty rate (and that alone
# may exceed 100 ms here, which forces the switch-over at once); without them
# the downtime measured is the transfer of the last dirty pages plus the
# commit round trips, which is what this sweep is about.
#
# Knobs (environment): SWEEP_SIZE (2G), SWEEP_HOT (from P, below), SWEEP_LIMIT_MS (100),
# SWEEP_POINTS (8 rates above 0), SWEEP_MAX_FACTOR (3: the top rate, in units
# of P), SWEEP_RATES ("r1 r2 ...": explicit rates instead, 0 still first),
# SWEEP_RUN_TIMEOUT (180 s per run). SWEEP_REPLOT=1: no runs, only the table
# and the plot again from OUTDIR/sweep.json.
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
# guest memory (the working set). That share is chosen from the link page rate
# P measured by the rate-0 run: a working set of 2 * P * limit pages (twice
# what round 1's bandwidth moves in 100 ms), rounded up to 5%, at least 10%.
# - Not smaller: a working set the link can send within the limit "converges"
#   after round 1 at any rate, however high (the dirty pages can never exceed
#   the working set), and the sweep would show nothing but that.
# - Not much larger (say 100%): while pre-copy cannot converge, each round
#   resends the whole working set, once per throttle step; a 2 GiB working set
#   would make each throttled run minutes long.
# - Near convergence a round sees ~P * limit writes or fewer, of which at most
#   about a fifth hit an already dirty page, so the configured rate stays
#   close to the rate of newly dirtied pages (the "measured" column).
# SWEEP_HOT=N% fixes it instead.
HOT=${SWEEP_HOT:-}
LIMIT=${SWEEP_LIMIT_MS:-100}
POINTS=${SWEEP_POINTS:-8}
MAXF=${SWEEP_MAX_FACTOR:-3}
RUN_TIMEOUT=${SWEEP_RUN_TIMEOUT:-180}
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
	"$RMIG" recv --listen 127.0.0.1:0 --json --transport tcp >"$f.recv" 2>"$f.recv.err" &
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
	# The receiver ends by itself after one migration; give it some time.
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
	# Lines that are not JSON (a crash mid-line) are skipped, not fatal.
	jq -R -s -c --argjson rate "$rate" --arg hot "$HOT" --argjson limit "$LIMIT" \
		--argjson rc "$rc" --arg err "$err" '
		[split("\n")[] | fromjson? | objects] as $ev
		| ([$ev[] | select(.event == "summary")] | last) as $s
		| [$ev[] | select(.event == "round")] as $r
		| ($rc == 0 and ($s.result // "") == "migrated") as $ok
		| {
			dirty_rate: $rate, hot: $hot, limit_ms: $limit, ok: $ok, exit: $rc,
			result: ($s.result // "none"),
			rounds: $s.rounds, throttle_pct: $s.throttle_pct, forced: $s.forced,
			expected_downtime_ms: $s.expected_downtime_ms,
			downtime_ms: $s.downtime_ms, total_ms: $s.total_ms,
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
	run_one 0
	P=$(tail -1 "$T/rows" | jq -r '(.round1_bandwidth // 0) / 4096 | floor')
	if [ "$P" -le 0 ] 2>/dev/null; then
		P=100000
		echo "bench_sweep: the rate-0 run failed; assuming a link of $P pages/s for the rates" >&2
		P_NOTE=" (assumed: the rate-0 run failed)"
	else
		P_NOTE=""
	fi
	if [ -n "$HOT_USER" ]; then
		HOT=$HOT_USER
	else
		HOT=$(awk -v p="$P" -v l="$LIMIT" -v n="$NPAGES" 'BEGIN {
			h = 100 * 2 * p * l / 1000 / n; h = int((h + 4.999) / 5) * 5
			print (h < 10 ? 10 : h > 100 ? 100 : h) "%"
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
read -r MET THR HOLD NEST NOVER <<<"$(jq -r --argjson limit "$LIMIT" '
	([.[] | select(.ok and .forced == false and .throttle_pct == 0 and .downtime_ms <= $limit)
	  | .dirty_rate] | max // "none") as $met
	| ([.[] | select(.ok and .throttle_pct > 0) | .dirty_rate] | min // "none") as $thr
	| [.[] | select(.by_estimate)] as $est
	| ([$est[] | select(.downtime_ms > 1.5 * $limit)] | length) as $over
	| "\($met) \($thr) \(if ($est | length) == 0 then "untested" elif $over == 0 then "holds" else "FAILS" end) \($est | length) \($over)"
	' "$OUT/sweep.json")"
NOK=$(jq '[.[] | select(.ok)] | length' "$OUT/sweep.json")
# Pages/s that rounds 2+ (scattered dirty pages) achieved: median over all runs.
PD=$(jq '[.[] | .round_events[]? | select(.round >= 2 and .bytes >= 1048576) | .bandwidth / 4096]
	| sort | if length == 0 then 0 else .[length / 2 | floor] | floor end' "$OUT/sweep.json")

# Table.
PMB=$(awk -v p="$P" 'BEGIN { printf "%.0f", p * 4096 / 1e6 }')
echo "Link page rate: $P pages/s ($PMB MB/s: round-1 bandwidth of the rate-0 run / 4096)$P_NOTE."
[ "$PD" -gt 0 ] && echo "Rounds 2+ (scattered dirty pages) moved $PD pages/s ($(awk -v p="$PD" 'BEGIN { printf "%.0f", p * 4096 / 1e6 }') MB/s; median over all runs' rounds of at least 1 MiB)."
echo "$SIZE sim guest (hot=$HOT, zero=0%), --downtime-ms $LIMIT, TCP over loopback, --no-verify, $(nproc) CPUs."
echo
echo "| dirty rate (pages/s) | × link | measured (pages/s) | round-1 MB/s | rounds | throttle % | forced | expected ms | downtime ms | total ms | switched | verdict |"
echo "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---|"
jq -r '.[] | if .ok then
	"| \(.dirty_rate) | \(.rate_over_link * 100 | round / 100) | \(.measured_dirty_rate // 0 | round) | \((.round1_bandwidth // 0) / 1e6 | round) | \(.rounds) | \(.throttle_pct) | \(.forced) | \(.expected_downtime_ms) | \(.downtime_ms) | \(.total_ms) | \(if .forced then "forced" elif .throttle_pct > 0 then "by estimate, throttled" else "by estimate" end) | \(.verdict) |"
	else
	"| \(.dirty_rate) | \(.rate_over_link * 100 | round / 100) | | | | | | | | | error | failed: \(.error | tostring | gsub("\\|"; "/")) |"
	end' "$OUT/sweep.json"
echo
pct() { awk -v r="$1" -v p="$P" 'BEGIN { if (r ~ /^[0-9.]+$/ && p > 0) printf " (%.2f × link)", r / p }'; }
case $HOLD in
holds) hold_txt="holds: downtime ≤ 1.5 × $LIMIT ms in all $NEST runs that switched over by estimate" ;;
FAILS) hold_txt="FAILS: $NOVER of $NEST runs that switched over by estimate had downtime > 1.5 × $LIMIT ms" ;;
*) hold_txt="untested: no run switched over by estimate" ;;
esac
echo "Summary: highest rate meeting $LIMIT ms without throttling: $MET pages/s$(pct "$MET"); throttling takes over from $THR pages/s$(pct "$THR"); target $hold_txt; $NOK/$(jq length "$OUT/sweep.json") runs migrated in ${elapsed} s."

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
if ! have_gnuplot && [ "$(id -u)" = 0 ]; then
	echo "bench_sweep: installing gnuplot-nox" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq gnuplot-nox >/dev/null 2>&1 ||
		{ apt-get update -qq >/dev/null 2>&1; apt-get install -y -qq gnuplot-nox >/dev/null 2>&1; }
fi
if ! have_gnuplot; then
	echo
	echo "(no plot: gnuplot is missing; apt-get install gnuplot-nox, then plot $OUT/sweep.dat)"
else
	TERM_=png
	gnuplot -e 'set terminal pngcairo' >/dev/null 2>&1 && TERM_=pngcairo
	XMAX=$(jq '[.[] | .dirty_rate] | max * 1.6' "$OUT/sweep.json")
	# The throttled region: from halfway (geometrically) between the last
	# rate met without throttling and the first throttled one.
	SHADE=$(jq -r --arg met "$MET" --arg thr "$THR" \
		'if $thr == "none" then "" elif $met == "none" then ($thr | tonumber) / 1.2
		 else (($met | tonumber) * ($thr | tonumber) | sqrt) end' "$OUT/sweep.json")
	YMAX=$(jq --argjson limit "$LIMIT" '[.[] | select(.ok) | .downtime_ms, .expected_downtime_ms] |
		[(max // 0) * 1.15, 1.5 * $limit * 1.3] | max | ceil' "$OUT/sweep.json")
	cat >"$OUT/sweep.gp" <<-EOF
		set terminal $TERM_ size 1100,900 $([ $TERM_ = pngcairo ] && echo "font 'sans,11'")
		set output '$OUT/sweep.png'
		set datafile separator "\t"
		set datafile missing '?'
		set logscale x
		set xrange [$X0 / 1.4 : $XMAX]
		set format x '%.0s%c'
		set xtics add ('0' $X0)
		set grid xtics ytics lc rgb '#dddddd'
		set key top left opaque box
		set multiplot layout 2,1 title "rmig: $SIZE sim guest (hot=$HOT), --downtime-ms $LIMIT, TCP over loopback, --no-verify" font ',13'
		$( [ -n "$SHADE" ] && echo "set object 1 rect from $SHADE, graph 0 to $XMAX, graph 1 back fc rgb '#ffe8cc' fs solid 1.0 noborder" )
		$( [ -n "$SHADE" ] && echo "set label 10 'throttled' at $SHADE * 1.08, graph 0.93 left tc rgb '#b35900'" )
		set arrow 1 from $P, graph 0 to $P, graph 1 nohead lc rgb '#555555' dt 3 lw 1.5
		set label 11 sprintf('link: %d pages/s', $P) at $P * 1.06, graph 0.06 left tc rgb '#555555'
		$( [ "$PD" -gt 0 ] && echo "set arrow 2 from $PD, graph 0 to $PD, graph 1 nohead lc rgb '#8c564b' dt 3 lw 1.5" )
		$( [ "$PD" -gt 0 ] && echo "set label 12 sprintf('dirty rounds: %d pages/s', $PD) at $PD * 1.06, graph 0.14 left tc rgb '#8c564b'" )
		set ylabel 'ms'
		set yrange [0:$YMAX]
		unset xlabel
		set title 'downtime (guest paused) and the estimate it switched over on'
		plot $LIMIT w l lc rgb '#2ca02c' dt 2 lw 2 t '$LIMIT ms limit', \\
		     1.5 * $LIMIT w l lc rgb '#d62728' dt 2 lw 2 t '1.5 × limit', \\
		     '$OUT/sweep.dat' u 1:7 w lp lc rgb '#7f7f7f' dt 4 pt 6 ps 1.2 t 'expected downtime at switch-over', \\
		     '' u 1:8 w lp lc rgb '#1f77b4' lw 2 pt 7 ps 1.3 t 'measured downtime', \\
		     '' u 1:(\$5 > 0 ? \$8 : 1/0) w p lc rgb '#ff7f0e' pt 9 ps 2.2 t 'throttled', \\
		     '' u 1:(\$6 > 0 ? \$8 : 1/0) w p lc rgb '#d62728' pt 2 ps 2.5 lw 2 t 'forced', \\
		     '' u 1:(\$5 > 0 ? \$8 : 1/0):(sprintf('%d%%', \$5)) w labels offset 0,1.3 tc rgb '#b35900' notitle
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
