#!/bin/bash
# Issue 21: downtime against guest size for each --verify mode.
#
#   RMIG=build/rmig scripts/bench_verify.sh OUTDIR
#
# Part 1, downtime against size: a sim guest of each size in VERIFY_SIZES
# (default "1G 4G 16G 64G") dirtying VERIFY_RATE (20000) pages/s over 2% of
# its pages, migrated over loopback TCP with --verify (on), --verify=full
# and --verify=off, VERIFY_RUNS (3) times each, the modes' order rotating
# from one repetition to the next (this machine's memory is much slower
# when first touched: a fixed order would hand it to one mode); medians.
# All runs make the same VERIFY_ROUNDS (4) pre-copy rounds and then switch
# (--downtime-ms 1 --max-rounds 4 --on-no-converge force: forced:true by
# design), so that every mode pauses with the dirty set of one short round
# and the difference is what verification adds to the pause; under a
# downtime limit each mode would switch wherever its estimate first fits,
# with dirty sets that differ more than the modes do. Guests of 16 GiB
# and more are 95% zero in 2 MiB runs and their writer stays in their data
# (hot-zero=0: free memory stays free, so that they fit); the smaller ones
# are all data.
#
# Part 2, the default limit (300 ms), --verify on and off alternating: an
# 8 GiB dense guest and the 16 GiB sparse one (issue 21's targets: on
# within the limit, forced:false; and on against off as a user would run
# them, each switching where its own estimate fits), and, on only, a 4 GiB
# 95%-zero guest whose writer also writes into its free memory
# (hot-zero=1): each first write there costs the destination a 2 MiB huge
# page (landing_bytes), which the estimate counts.
#
# Reported per row: medians of downtime and of the estimate at the
# switch-over, runs forced, for on the chunks digested during the pause and
# the audit's time (after the switch-over, not in the downtime). Targets:
# on within 1.2x + 5 ms of off at every size; every run's downtime within
# 1.5x of its estimate or the estimate + 10 ms.
#
# Prints markdown and writes OUTDIR/verify.json. Exit 0 when every run
# migrated, 1 otherwise, 2 on usage errors.
set -u
[ $# -eq 1 ] || { echo "usage: RMIG=build/rmig $0 OUTDIR" >&2; exit 2; }
OUT=$1
RMIG=${RMIG:-build/rmig}
SIZES=${VERIFY_SIZES:-"1G 4G 16G 64G"}
RATE=${VERIFY_RATE:-20000}
RUNS=${VERIFY_RUNS:-3}
ROUNDS=${VERIFY_ROUNDS:-4}
FIXED="--downtime-ms 1 --max-rounds $ROUNDS --on-no-converge force"
mkdir -p "$OUT/runs" || exit 2
status=0
runs_json=""

# One migration over loopback TCP; its JSON in $OUT/runs/NAME.{send,recv}.
migrate() { # NAME SPEC SEND-ARGS...
	local name=$1 spec=$2 port=
	shift 2
	"$RMIG" recv --backend sim:overcommit=1 --listen 127.0.0.1:0 --json --transport tcp \
		>"$OUT/runs/$name.recv" 2>&1 &
	local rpid=$!
	for _ in $(seq 100); do
		port=$(jq -r 'select(.event=="listening") | .port' "$OUT/runs/$name.recv" 2>/dev/null)
		[ -n "$port" ] && break
		sleep 0.05
	done
	timeout 600 "$RMIG" send --json --transport tcp --backend "$spec" "$@" \
		"127.0.0.1:$port" >"$OUT/runs/$name.send" 2>&1
	wait "$rpid"
	jq -e 'select(.event=="summary") | select(.result=="migrated")' "$OUT/runs/$name.send" \
		>/dev/null || { echo "bench_verify: $name did not migrate: $(tail -n1 "$OUT/runs/$name.send")" >&2; status=1; }
}
mib() { awk -v s="$1" 'BEGIN { n = s + 0; u = substr(s, length(s)); print (u == "G" ? n * 1024 : u == "T" ? n * 1048576 : n) }'; }
# The summary of run $1 as one JSON object, or null when it left none.
summary() {
	local v
	v=$(jq -c 'select(.event=="summary")' "$OUT/runs/$1.send" 2>/dev/null | tail -1)
	echo "${v:-null}"
}
# Record run $1 (guest $2, mode $3, part $4) in runs_json.
record() {
	local pause
	pause=$(jq -s '[.[] | select(.event=="round")] | last | .dirty_pages // null' "$OUT/runs/$1.send" 2>/dev/null)
	runs_json="$runs_json{\"name\":\"$1\",\"guest\":\"$2\",\"verify\":\"$3\",\"part\":$4,\"summary\":$(summary "$1" | jq -c --argjson p "${pause:-null}" 'if . == null then null else . + {pause_pages: $p} end')},"
}
# Medians over the recorded runs of GUEST/MODE/PART: downtime, estimate,
# forced count, chunks, audit ms, runs that migrated; as one JSON object.
medians() { # GUEST MODE PART
	echo "[${runs_json%,}]" | jq -c --arg g "$1" --arg m "$2" --argjson p "$3" '
		def med: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
		[.[] | select(.guest == $g and .verify == $m and .part == $p) | .summary
		 | select(. != null and .result == "migrated")] as $r
		| {guest: $g, verify: $m, part: $p, runs: ($r | length),
		   downtime_ms: ($r | map(.downtime_ms) | med),
		   expected_ms: ($r | map(.expected_downtime_ms) | med),
		   forced: ($r | map(select(.forced)) | length),
		   rounds: ($r | map(.rounds) | med),
		   pause_pages: ($r | map(.pause_pages) | med),
		   verify_chunks: ($r | map(.verify_chunks) | med),
		   audit_ms: ($r | map(.audit_ms) | med)}'
}

# Part 1.
for g in $SIZES; do
	sparse=$([ "$(mib "$g")" -ge 16384 ] && echo 1 || echo 0)
	spec="sim:size=$g,dirty-rate=$RATE,hot=2%,overcommit=1"
	[ $sparse = 1 ] && spec="$spec,zero=95%,zero-run=512,hot-zero=0"
	modes="on full off"
	for i in $(seq "$RUNS"); do
		for mode in $modes; do
			# shellcheck disable=SC2086
			migrate "$g.$mode.$i" "$spec" --verify=$mode $FIXED
			record "$g.$mode.$i" "$g" $mode 1
		done
		modes="${modes#* } ${modes%% *}" # rotate
	done
done

# Part 2.
part2="8G:sim:size=8G,dirty-rate=$RATE,hot=2%,overcommit=1
16G-sparse:sim:size=16G,dirty-rate=$RATE,hot=2%,overcommit=1,zero=95%,zero-run=512,hot-zero=0
4G-sparse-filling:sim:size=4G,dirty-rate=$RATE,hot=2%,overcommit=1,zero=95%,zero-run=512,hot-zero=1"
for i in $(seq "$RUNS"); do
	while IFS=: read -r g spec; do
		modes=$([ "$g" = 4G-sparse-filling ] && echo on || ([ $((i % 2)) = 1 ] && echo "on off" || echo "off on"))
		for mode in $modes; do
			migrate "$g.default.$mode.$i" "$spec" --verify=$mode
			record "$g.default.$mode.$i" "$g" $mode 2
		done
	done <<<"$part2"
done

rows=""
echo "Part 1: every run $ROUNDS pre-copy rounds, then switched ($FIXED), medians of $RUNS runs per mode, alternating."
echo
echo "| guest | --verify | downtime ms | estimate ms | pages at the pause | pause digests (chunks) | audit ms | on vs off (target ≤ 1.2x + 5 ms) |"
echo "|---|---|---|---|---|---|---|---|"
for g in $SIZES; do
	sparse=$([ "$(mib "$g")" -ge 16384 ] && echo ", 95% zero" || echo "")
	off=$(medians "$g" off 1 | jq '.downtime_ms')
	for mode in on full off; do
		m=$(medians "$g" $mode 1)
		rows="$rows$m,"
		d=$(echo "$m" | jq '.downtime_ms')
		vs=""
		[ $mode = on ] && vs=$(awk -v a="$d" -v b="$off" 'BEGIN { if (a == "null" || b == "null") print "no figure: not met"; else printf "%.2fx: %s", (b > 0 ? a / b : 0), (a <= 1.2 * b + 5 ? "met" : "not met") }')
		echo "$m" | jq -r --arg lbl "$g$sparse" --arg vs "$vs" '
			"| \($lbl) | \(.verify) | \(.downtime_ms) | \(.expected_ms | if . == null then "" else (. * 10 | round / 10) end) | \(.pause_pages) | \(if .verify == "on" then .verify_chunks else "" end) | \(if .verify == "on" then .audit_ms else "" end) | \($vs) |"'
	done
done
echo
echo "Part 2: the default --downtime-ms 300, medians of $RUNS runs (on and off alternating)."
echo
echo "| guest | --verify | downtime ms | estimate ms | pages at the pause | forced | rounds | audit ms | target: on ≤ 300 ms, forced:false; on ≤ 1.2x off + 5 ms |"
echo "|---|---|---|---|---|---|---|---|---|"
while IFS=: read -r g spec; do
	lbl=$(case $g in 8G) echo "8G, all data" ;; 16G-sparse) echo "16G, 95% zero" ;;
		*) echo "4G, 95% zero, writing into its free memory" ;; esac)
	off=$(medians "$g" off 2 | jq '.downtime_ms')
	for mode in on off; do
		m=$(medians "$g" $mode 2)
		[ "$(echo "$m" | jq '.runs')" = 0 ] && continue
		rows="$rows$m,"
		echo "$m" | jq -r --arg lbl "$lbl" --argjson off "$off" '
			"| \($lbl) | \(.verify) | \(.downtime_ms) | \(.expected_ms | if . == null then "" else (. * 10 | round / 10) end) | \(.pause_pages) | \(.forced)/\(.runs) | \(.rounds) | \(if .verify == "on" then .audit_ms else "" end) | \(if .verify != "on" then "" elif .downtime_ms != null and .downtime_ms <= 300 and .forced == 0 and .runs > 0 and ($off == null or .downtime_ms <= 1.2 * $off + 5) then "met" elif .downtime_ms != null and .downtime_ms <= 300 and .forced == 0 then "within the limit; \(.downtime_ms / ($off + 0.001) * 100 | round / 100)x off" else "not met" end) |"'
	done
done <<<"$part2"
echo
# Every run: measured against its estimate.
echo "[${runs_json%,}]" | jq -r '
	[.[] | .summary | select(. != null and .result == "migrated")] as $r
	| ($r | map(select(.downtime_ms <= ([1.5 * .expected_downtime_ms, .expected_downtime_ms + 10] | max))) | length) as $ok
	| "Estimate: \($ok) of \($r | length) runs paused within 1.5x of the estimate (or it + 10 ms): \(if $ok == ($r | length) then "met" else "not met: " + ([$r[] | select(.downtime_ms > ([1.5 * .expected_downtime_ms, .expected_downtime_ms + 10] | max)) | "\(.guest_bytes / 1073741824)G \(.downtime_ms) ms for \(.expected_downtime_ms | floor) ms"] | join(", ")) end)."'
echo
echo "Dirty rate $RATE pages/s over 2% of the guest; loopback TCP, 2 channels. Sparse guests: sim:...,zero=95%,zero-run=512,hot-zero=0 (part 2's last row hot-zero=1). Pages at the pause: dirty pages when the last round ended. Commands: \`$RMIG recv --backend sim:overcommit=1 --listen 127.0.0.1:0 --json --transport tcp\`, \`$RMIG send --json --transport tcp --backend SPEC --verify=MODE [$FIXED] 127.0.0.1:PORT\`."
jq -n --argjson rows "[${rows%,}]" --argjson runs "[${runs_json%,}]" \
	'{verify: $rows, runs: ($runs | map({name, guest, verify, part, downtime_ms: .summary.downtime_ms, expected_ms: .summary.expected_downtime_ms, forced: .summary.forced, audit_ms: .summary.audit_ms}))}' \
	>"$OUT/verify.json"
exit $status
