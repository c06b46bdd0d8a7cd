#!/bin/bash
# How fast post-copy recovers a lost link (issue: no window where a lost link
# loses the guest).
#
#   RMIG=build/rmig scripts/bench_recovery.sh OUTDIR
#
# A sim guest (256 MiB, 20 000 pages/s, 5 % hot, half zero) migrates by
# post-copy over loopback TCP through tests/tools/faultproxy, which cuts
# every connection when the source sends its first PAGE_DATA (so the
# destination's guest is waiting on that page) and accepts again. Two ways
# to lose the link, alternating, REC_RUNS (5) times each:
#   reset   the connections are reset: both sides see it at once;
#   silent  they stay open and carry nothing (--cut-silent): only the link
#           timeout (REC_LINK_MS, 1000 ms, heartbeats every quarter) sees it.
# Measured per run, at the destination: from the cut (the proxy's clock) to
# the session resumed (its "failover" event, after RECOVER: the pages the
# guest waits for are asked again then; one round trip later they are
# served); the longest a guest thread waited for a page it asked for
# (postcopy_max_wait_ms: it includes the cut); and at the source the pages
# it sent after the start (post-copy round, lost or not, plus the answers
# to requests) per page that was still there (no page more than twice: the
# mean must stay under 2).
# Target: the cut to resumed under 2 link timeouts plus one reconnect.
#
# Prints markdown on stdout, writes OUTDIR/recovery.json. Exit 0 when every
# run migrated after one recovery, 1 otherwise, 2 on usage errors.
set -u
[ $# -eq 1 ] || { echo "usage: RMIG=build/rmig $0 OUTDIR" >&2; exit 2; }
OUT=$1
RMIG=${RMIG:-build/rmig}
PROXY=$(dirname "$RMIG")/tests/faultproxy
RUNS=${REC_RUNS:-5}
LINK_MS=${REC_LINK_MS:-1000}
GUEST=sim:size=256M,dirty-rate=20000,hot=5%,zero=50%,seed=7
HOLD=50 # ms the source holds after STARTED: requests wait, the cut lands before the stream
mkdir -p "$OUT"
bad=0

# Each line of stdin with the wall clock in ms in front.
stamp() {
	local l
	while IFS= read -r l; do
		printf '%s %s\n' "$((${EPOCHREALTIME/./} / 1000))" "$l"
	done
}

# one MODE N: a migration with one cut; appends "mode cut_ms wait_ms sends" to runs.txt
one() {
	local mode=$1 n=$2 d="$OUT/$1-$2" port pport silent="" t_cut t_rec
	mkdir -p "$d"
	[ "$mode" = silent ] && silent=--cut-silent
	"$RMIG" recv --listen 127.0.0.1:0 --json --backend sim --link-timeout-ms "$LINK_MS" \
		2>"$d/recv.err" | stamp >"$d/recv.out" &
	local rpid=$!
	for _ in $(seq 100); do
		port=$(awk '/"event":"listening"/ { sub(/.*"port":/, ""); sub(/}.*/, ""); print }' \
			"$d/recv.out" 2>/dev/null)
		[ -n "$port" ] && break
		sleep 0.05
	done
	"$PROXY" 0 "127.0.0.1:$port" --ready-file "$d/pport" --cut-on PAGE_DATA $silent \
		2>"$d/proxy.err" &
	local ppid=$!
	for _ in $(seq 100); do
		[ -s "$d/pport" ] && break
		sleep 0.05
	done
	pport=$(cat "$d/pport" 2>/dev/null)
	RMIG_TEST_HOLD=post-copy:$HOLD timeout 120 "$RMIG" send --json --postcopy --transport tcp \
		--link-timeout-ms "$LINK_MS" --backend "$GUEST" "127.0.0.1:$pport" \
		>"$d/send.out" 2>"$d/send.err"
	wait $rpid
	kill $ppid 2>/dev/null
	wait $ppid 2>/dev/null
	t_cut=$(sed -n 's/.*cut on .* at \([0-9]*\) ms$/\1/p' "$d/proxy.err" | head -1)
	t_rec=$(awk '/"event":"failover"/ { print $1; exit }' "$d/recv.out")
	local sum res rec wait pc_pages pc_req pc_sent
	sum=$(grep '"event":"summary"' "$d/recv.out" | cut -d' ' -f2-)
	res=$(jq -r .result <<<"$sum" 2>/dev/null)
	rec=$(jq -r .recoveries <<<"$sum" 2>/dev/null)
	wait=$(jq -r .postcopy_max_wait_ms <<<"$sum" 2>/dev/null)
	pc_pages=$(jq -r 'select(.event=="summary") | .postcopy_pages' "$d/send.out")
	pc_req=$(jq -r 'select(.event=="summary") | .postcopy_requested' "$d/send.out")
	# The post-copy round's pages: the last round event, after phase post-copy.
	pc_sent=$(jq -r 'select(.event=="round") | .pages' "$d/send.out" | tail -1)
	if [ "$res" != migrated ] || [ "$rec" != 1 ] || [ -z "$t_cut" ] || [ -z "$t_rec" ]; then
		echo "bench_recovery: $mode run $n: result $res, recoveries $rec (cut at ${t_cut:-?}, resumed at ${t_rec:-?}): $(tail -n 1 "$d/send.err")" >&2
		bad=1
		return
	fi
	echo "$mode $((t_rec - t_cut)) $wait $(awk -v s="$pc_sent" -v r="$pc_req" -v p="$pc_pages" \
		'BEGIN { printf "%.2f", (p > 0 ? (s + r) / p : 0) }')" >>"$OUT/runs.txt"
}

: >"$OUT/runs.txt"
for n in $(seq "$RUNS"); do
	one reset "$n"
	one silent "$n"
done

median() { sort -n | awk '{ a[NR] = $1 } END { if (NR) print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2); else print "null" }'; }
col() { awk -v m="$1" -v c="$2" '$1 == m { print $c }' "$OUT/runs.txt"; }
maxof() { sort -n | tail -1; }

echo "Post-copy over loopback TCP through faultproxy, the link cut at the first page answered on demand, $RUNS runs of each kind (medians; max in brackets), link timeout $LINK_MS ms:"
echo
echo "| link lost by | cut to session resumed, ms | longest guest wait for a page, ms (with the ${HOLD} ms hold) | pages sent after the start per page still at the source | target: resumed within 2 link timeouts + a reconnect |"
echo "|---|---|---|---|---|"
json="{}"
for mode in reset silent; do
	c=$(col $mode 2 | median) cm=$(col $mode 2 | maxof)
	w=$(col $mode 3 | median) wm=$(col $mode 3 | maxof)
	s=$(col $mode 4 | median) sm=$(col $mode 4 | maxof)
	ok=$(awk -v c="${cm:-999999}" -v l="$LINK_MS" 'BEGIN { print (c < 2 * l + 250) ? "met" : "missed" }')
	echo "| $mode | $c [$cm] | $w [$wm] | $s [$sm] | $ok |"
	json=$(jq -c --arg m "$mode" --argjson c "${c:-null}" --argjson cm "${cm:-null}" \
		--argjson w "${w:-null}" --argjson wm "${wm:-null}" --argjson s "${s:-null}" \
		--argjson sm "${sm:-null}" \
		'.[$m] = {cut_to_resumed_ms: $c, cut_to_resumed_max_ms: $cm, max_wait_ms: $w, max_wait_max_ms: $wm, sends_per_page: $s, sends_per_page_max: $sm}' <<<"$json")
done
echo
echo "Commands: \`$RMIG recv --backend sim --link-timeout-ms $LINK_MS\`, \`faultproxy 0 DEST --cut-on PAGE_DATA [--cut-silent]\`, \`RMIG_TEST_HOLD=post-copy:$HOLD $RMIG send --postcopy --transport tcp --link-timeout-ms $LINK_MS --backend $GUEST PROXY\`. A reconnect is budgeted 250 ms (one failed try waits 250 ms before the next)."
jq -n --argjson runs "$RUNS" --argjson link "$LINK_MS" --argjson m "$json" \
	'{runs: $runs, link_timeout_ms: $link} + $m' >"$OUT/recovery.json"
exit $bad
