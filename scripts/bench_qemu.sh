#!/bin/bash
# QEMU's own live migration against rmig as QEMU's migration channel: the
# same test guest (tests/qemu: 256 MiB - 64 KiB, TCG, a counter on the
# serial console that dirties 4 MiB per count), the same machine, the same
# run.
#
#   RMIG=build/rmig scripts/bench_qemu.sh OUTDIR
#
# 1. native: one guest boots, then migrates RUNS times in a row, each time
#    with QEMU's `migrate` over a unix socket into a new QEMU started with
#    -S -incoming defer (migrate-incoming), which is `cont`ed and becomes the
#    next source. query-migrate is polled until completed; QEMU's own
#    total-time and downtime are reported (medians and ranges, as
#    scripts/bench.sh compares medians: figures swing from run to run here).
# 2. rmig: the same with a fresh guest, each migration `rmig recv` / `rmig
#    send --backend qemu:qmp=...` over TCP loopback: rmig's total_ms and
#    downtime_ms (its JSON summary), and the source QEMU's own query-migrate
#    figures for the same runs. Skipped at once (a row saying why) while
#    rmig has no qemu backend.
# 3. rmig with the link cut mid-stream: the same as 2 through
#    tests/tools/faultproxy, which resets every connection when the source
#    sends its 40th STREAM frame (BENCH_QEMU_CUT) and accepts again: rmig
#    fails over and replays what the destination had not written
#    (stream_replayed_bytes).
# After each migration the new QEMU must run and count on; at the end the
# counter over all the consoles of the chain, in order, must have no gap
# and no repeat. Every QEMU gets the same migration parameters
# (migrate-set-parameters when it starts): max-bandwidth high enough not to
# limit anything (QEMU's default is 32 MiB/s) and downtime-limit equal to
# rmig's --downtime-ms.
#
# Prints a markdown section on stdout (a line about the setup, a table whose
# rows follow scripts/bench.sh's: a name, figures, ratios to the ceiling,
# here native QEMU = 1.00, and a line of ranges); writes OUTDIR/qemu.json
# (every run's figures, the medians, the ratios) and OUTDIR/runs/ (serial
# logs, QMP answers, rmig's output). Exit 0 when the native migrations
# worked (a failed rmig run is a row saying why, and "rmig": {"ok": false,
# "error": ...} in the JSON), 1 when a native one failed, 2 on usage
# errors, 77 ("SKIP: reason") when QEMU or the kernel cannot be had.
#
# Knobs (environment): BENCH_QEMU_RUNS (migrations each way, 3),
# BENCH_QEMU_DOWNTIME_MS (300), BENCH_QEMU_BW (QEMU's max-bandwidth, bytes/s,
# 100 GiB/s), BENCH_QEMU_WARM (the guest's counter to reach before the first
# migration, 30), BENCH_QEMU_TIMEOUT (s per migration, 120), GUEST_APPEND
# (the guest's knobs, see tests/qemu/guest-init.sh), QMPC (next to $RMIG:
# build/tests/qmpc), RXE_BUILD_DIR (where tests/rxe/setup.sh keeps the
# kernel).
set -uo pipefail
usage() {
	echo "usage: RMIG=build/rmig $0 OUTDIR" >&2
	exit 2
}
[ $# -eq 1 ] || usage
OUT=$1
HERE=$(cd "$(dirname "$0")/.." && pwd)
RMIG=${RMIG:-$HERE/build/rmig}
case $RMIG in /*) ;; *) RMIG=$(pwd)/$RMIG ;; esac
[ -x "$RMIG" ] || { echo "bench_qemu: $RMIG is not an executable (make -s all)" >&2; exit 2; }
command -v jq >/dev/null || { echo "bench_qemu: jq is missing (apt-get install jq)" >&2; exit 2; }
DT=${BENCH_QEMU_DOWNTIME_MS:-300}
BW=${BENCH_QEMU_BW:-107374182400}
WARM=${BENCH_QEMU_WARM:-30}
TMO=${BENCH_QEMU_TIMEOUT:-120}
RUNS=${BENCH_QEMU_RUNS:-3}
for v in DT BW WARM TMO RUNS; do
	[[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench_qemu: $v='${!v}' is not a number" >&2; exit 2; }
done
[ "$RUNS" -ge 1 ] || { echo "bench_qemu: BENCH_QEMU_RUNS must be at least 1" >&2; exit 2; }
mkdir -p "$OUT/runs" || exit 2
OUT=$(cd "$OUT" && pwd)
R=$OUT/runs
# The guests' files (QMP sockets: short paths) in a private temp dir, copied
# to OUTDIR/runs at the end.
GUEST_DIR=$(mktemp -d "${TMPDIR:-/tmp}/rmig-bq.XXXXXX")
RECV_PID=""
finish() {
	[ -n "$RECV_PID" ] && kill -9 "$RECV_PID" 2>/dev/null
	cp "$GUEST_DIR"/*.log "$GUEST_DIR"/*.err "$R/" 2>/dev/null
	rm -rf "$GUEST_DIR"
}
trap finish EXIT
export RMIG GUEST_DIR
. "$HERE/tests/qemu/guest.sh" # chains guest_cleanup in front of finish
say() { echo "bench_qemu: $*" >&2; }
PROXY=$(dirname "$RMIG")/tests/faultproxy

guest_prepare
case $? in
0) ;;
77) echo "SKIP: $GUEST_ERROR"; exit 77 ;;
*) say "$GUEST_ERROR"; exit 1 ;;
esac
# What the guest dirties per count (guest-init.sh), for the report.
DIRTY_KIB=$(sed -n 's/.*rmig_dirty_kib=\([0-9]*\).*/\1/p' <<<"$GUEST_APPEND")
DIRTY_KIB=${DIRTY_KIB:-4096}
PARAMS="{\"max-bandwidth\":$BW,\"downtime-limit\":$DT}"

# new_guest NAME [dst]: start a guest (a destination with "dst") with PARAMS.
new_guest() {
	if [ "${2:-}" = dst ]; then guest_start_dst "$1"; else guest_start "$1"; fi || return 1
	qmp "$1" migrate-set-parameters "$PARAMS" >/dev/null ||
		{ GUEST_ERROR="$1: migrate-set-parameters $PARAMS refused"; return 1; }
}

# qemu_figures JSON: query-migrate's figures as our JSON object.
qemu_figures() {
	jq -c '.return | {status, total_ms: ."total-time", downtime_ms: .downtime,
		setup_ms: ."setup-time", bytes: .ram.transferred, rounds: .ram."dirty-sync-count",
		normal_pages: .ram.normal, zero_pages: .ram.duplicate, mbps: .ram.mbps}' <<<"$1"
}

# migrate_native SRC DST: QEMU's own migration over a unix socket; the
# destination is then cont'ed. Sets FIG (JSON) or returns 1 (GUEST_ERROR).
migrate_native() {
	local s=$1 d=$2 sock="unix:$GUEST_DIR/$2.sock" r st
	qmp "$d" migrate-incoming "{\"uri\":\"$sock\"}" >"$R/$d-incoming.json" 2>&1 ||
		{ GUEST_ERROR="migrate-incoming: $(tr '\n' ' ' <"$R/$d-incoming.json")"; return 1; }
	qmp "$s" migrate "{\"uri\":\"$sock\"}" >"$R/$s-migrate.json" 2>&1 ||
		{ GUEST_ERROR="migrate: $(tr '\n' ' ' <"$R/$s-migrate.json")"; return 1; }
	r=$(guest_wait_migrate "$s" "$TMO") || return 1
	echo "$r" >"$R/$s-query-migrate.json"
	st=$(jq -r .return.status <<<"$r")
	[ "$st" = completed ] ||
		{ GUEST_ERROR="QEMU's migration $st: $(jq -r '.return."error-desc" // ""' <<<"$r")"; return 1; }
	FIG=$(qemu_figures "$r")
	# The destination has everything and waits (-S): paused until cont.
	guest_wait_migrate "$d" 30 completed failed >"$R/$d-query-migrate.json" || return 1
	st=$(guest_status "$d")
	[ "$st" = "paused false" ] ||
		{ GUEST_ERROR="destination $d is '$st' after the migration, not 'paused false'"; return 1; }
	qmp "$d" cont >/dev/null || { GUEST_ERROR="cont on $d failed"; return 1; }
}

# migrate_rmig SRC DST: rmig recv/send with the qemu backend over TCP. Sets
# FIG (rmig's figures, with the source QEMU's as .qemu) or returns 1.
migrate_rmig() {
	local s=$1 d=$2 port="" rc=0 sum q st ppid=""
	"$RMIG" recv --listen 127.0.0.1:0 --json --transport tcp \
		--backend "qemu:qmp=$(guest_qmp_socket "$d")" >"$R/$d-recv.out" 2>"$R/$d-recv.err" &
	RECV_PID=$!
	for _ in $(seq 200); do
		port=$(jq -r 'select(.event=="listening") | .port' "$R/$d-recv.out" 2>/dev/null | head -n1)
		[ -n "$port" ] && break
		kill -0 "$RECV_PID" 2>/dev/null || break
		sleep 0.05
	done
	if [ -z "$port" ]; then
		GUEST_ERROR="rmig recv did not listen: $(tail -n1 "$R/$d-recv.err")"
		return 1
	fi
	if [ -n "${CUT:-}" ]; then # through faultproxy, which cuts once
		"$PROXY" 0 "127.0.0.1:$port" --ready-file "$R/$d.pport" --cut-on "$CUT" \
			2>"$R/$d-proxy.err" &
		ppid=$!
		for _ in $(seq 100); do
			[ -s "$R/$d.pport" ] && break
			sleep 0.05
		done
		port=$(cat "$R/$d.pport" 2>/dev/null)
	fi
	timeout -k 5 "$TMO" "$RMIG" send --json --transport tcp --downtime-ms "$DT" \
		--backend "qemu:qmp=$(guest_qmp_socket "$s")" "127.0.0.1:$port" \
		>"$R/$s-send.out" 2>"$R/$s-send.err" || rc=$?
	for _ in $(seq 300); do
		kill -0 "$RECV_PID" 2>/dev/null || break
		sleep 0.1
	done
	{ kill -9 "$RECV_PID" && wait "$RECV_PID"; } 2>/dev/null
	RECV_PID=""
	[ -n "$ppid" ] && { kill "$ppid" && wait "$ppid"; } 2>/dev/null
	sum=$(jq -c 'select(.event=="summary")' "$R/$s-send.out" 2>/dev/null | tail -n1)
	if [ "$rc" != 0 ]; then
		GUEST_ERROR="rmig send exited $rc: $(jq -r '.error // empty' <<<"$sum" 2>/dev/null)"
		[ "$GUEST_ERROR" != "rmig send exited $rc: " ] || GUEST_ERROR+=$(tail -n1 "$R/$s-send.err")
		return 1
	fi
	# The same run as the source QEMU saw it (harness monitor).
	q=$(qmp "$s" query-migrate 2>&1)
	echo "$q" >"$R/$s-query-migrate.json"
	st=$(guest_status "$d")
	[ "$st" = "running true" ] ||
		{ GUEST_ERROR="destination $d is '$st' after rmig said migrated"; return 1; }
	FIG=$(jq -c --argjson q "$(qemu_figures "$q" 2>/dev/null || echo null)" \
		'{total_ms, downtime_ms, bytes: .bytes_sent, rounds, expected_downtime_ms,
		transport, channels, cpu_ms, failovers, replayed: .stream_replayed_bytes,
		qemu: $q}' <<<"$sum")
	if [ -n "${CUT:-}" ] && [ "$(jq -r .failovers <<<"$FIG")" != 1 ]; then
		GUEST_ERROR="the link was to be cut once (--cut-on $CUT), rmig failed over $(jq -r .failovers <<<"$FIG") times"
		return 1
	fi
}

migrate_rmigcut() {
	CUT=${BENCH_QEMU_CUT:-STREAM:40} migrate_rmig "$@"
}

# chain KIND PREFIX: boot PREFIX0, then RUNS migrations PREFIX(i-1) ->
# PREFIXi with migrate_KIND, each new source waiting until its guest has
# counted 5 more; the old source is then killed. Afterwards the counter over
# all the consoles, in order, must have no gap and no repeat. Sets RESULT
# (JSON: ok, runs[], counter, boot_ms) and returns 1 on the first failure.
chain() {
	local kind=$1 p=$2 i t0 c boot_ms=0 runs="[]" logs=() seq err=""
	t0=$(date +%s%3N)
	if new_guest "${p}0" && guest_wait_counter "${p}0" "$WARM" 180; then
		boot_ms=$(($(date +%s%3N) - t0))
		logs+=("$(guest_log "${p}0")")
		for i in $(seq "$RUNS"); do
			new_guest "$p$i" dst || { err=$GUEST_ERROR; break; }
			"migrate_$kind" "$p$((i - 1))" "$p$i" || { err="run $i: $GUEST_ERROR"; break; }
			runs=$(jq -c --argjson f "$FIG" '. + [$f]' <<<"$runs")
			logs+=("$(guest_log "$p$i")")
			c=$(guest_counter "$p$i")
			guest_wait_counter "$p$i" $((c + 5)) 30 ||
				{ err="run $i: the destination does not count on: $GUEST_ERROR"; break; }
			guest_kill "$p$((i - 1))" KILL
		done
	else
		err=$GUEST_ERROR
	fi
	if [ -z "$err" ]; then
		seq=$(guest_check_seq "${logs[@]}") || err="the guest's counter over the $RUNS migrations: $seq"
	fi
	for i in $(seq 0 "$RUNS"); do guest_kill "$p$i" KILL; done
	if [ -n "$err" ]; then
		say "$kind: $err"
		RESULT=$(jq -nc --arg e "$err" --argjson runs "$runs" --argjson b "$boot_ms" \
			'{ok: false, error: $e, runs: $runs, boot_ms: $b}')
		return 1
	fi
	seq=${seq#*..}
	RESULT=$(jq -nc --arg c "continues: 1..${seq%% *} over $((RUNS + 1)) QEMUs, no gap" \
		--argjson runs "$runs" --argjson b "$boot_ms" '{ok: true, runs: $runs, counter: $c, boot_ms: $b}')
}

# Medians of each figure over the runs (RESULT.runs[] -> RESULT.median, and
# .qemu_median for rmig's runs), the lower middle one for an even count.
medians() {
	jq -c 'def med(f): [.runs[] | f | select(. != null)] | sort
			| if length == 0 then null else .[(length - 1) / 2 | floor] end;
		def meds(p): {total_ms: med(p.total_ms), downtime_ms: med(p.downtime_ms),
			bytes: med(p.bytes), rounds: med(p.rounds), replayed: med(p.replayed)};
		. + {median: meds(.)} + (if any(.runs[]; .qemu != null) then {qemu_median: meds(.qemu)} else {} end)' <<<"$1"
}

# --- 1. native QEMU migration, 2. rmig as QEMU's migration channel -------------------
native_ok=0
chain native n && native_ok=1
native=$(medians "$RESULT")
# Does this rmig have a qemu backend at all? (No guest booted for nothing.)
probe=$(timeout 10 "$RMIG" recv --listen 127.0.0.1:0 --accept-timeout-ms 1 \
	--backend "qemu:qmp=$GUEST_DIR/none.qmp" 2>&1 >/dev/null)
if grep -qi "unknown backend" <<<"$probe"; then
	rmig_json=$(jq -nc --arg e "rmig has no qemu backend yet ($(head -n1 <<<"$probe"))" '{ok: false, error: $e, runs: []}')
	say "rmig: $(jq -r .error <<<"$rmig_json")"
else
	chain rmig r
	rmig_json=$(medians "$RESULT")
	chain rmigcut c
	cut_json=$(medians "$RESULT")
fi

# --- output ----------------------------------------------------------------------------
f() { jq -r "$1 // empty" <<<"$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
mb() { awk -v b="$1" 'BEGIN { if (b == "") print "-"; else printf "%.0f", b / 1e6 }'; }
range() { jq -r "[.runs[] | $1 | select(. != null)] | if length == 0 then \"-\" else \"\\(min)..\\(max)\" end" <<<"$2"; }
row() { # LABEL MEDIAN_OBJECT COUNTER
	local t d
	t=$(f .total_ms "$2")
	d=$(f .downtime_ms "$2")
	echo "| $1 | ${t:--} | ${d:--} | $(mb "$(f .bytes "$2")") | $(f .rounds "$2") | $(ratio "$t" "$(f .median.total_ms "$native")") | $(ratio "$d" "$(f .median.downtime_ms "$native")") | $3 |"
}
failed_row() { echo "| $1 | failed: $(f .error "$2") | | | | | | |"; }
qver=$(qemu-system-x86_64 --version | head -n1 | sed 's/^QEMU emulator version //')
kver=$(cat "$GUEST_BUILD/kernel-release" 2>/dev/null)
med="median of $RUNS"
echo "QEMU $qver, TCG, 1 vCPU; guest: -m $GUEST_MEM, Debian kernel $kver + busybox initramfs counting ~10/s and dirtying $DIRTY_KIB KiB per count (tests/qemu), booted to count $WARM in $(($(f .boot_ms "$native") / 1000)) s, then migrated $RUNS times in a row each way (each destination the next source). Both: migrate-set-parameters downtime-limit $DT ms, max-bandwidth $(numfmt --to=iec-i --suffix=B/s "$BW"); rmig --downtime-ms $DT over TCP loopback."
echo
echo "| QEMU guest migration | total ms | downtime ms | MB sent | rounds | total × native | downtime × native | guest after switch-over |"
echo "|---|---:|---:|---:|---:|---:|---:|---|"
if [ "$native_ok" = 1 ]; then
	row "QEMU native \`migrate\`, unix socket (QEMU's query-migrate, $med)" "$(jq -c .median <<<"$native")" "$(f .counter "$native")"
else
	failed_row "QEMU native \`migrate\`, unix socket" "$native"
fi
if [ "$(f .ok "$rmig_json")" = true ]; then
	row "rmig over TCP, qemu backend (rmig's summary, $med)" "$(jq -c .median <<<"$rmig_json")" "$(f .counter "$rmig_json")"
	row "the same runs, source QEMU's query-migrate ($med)" "$(jq -c '.qemu_median // {}' <<<"$rmig_json")" ""
else
	failed_row "rmig over TCP, qemu backend" "$rmig_json"
fi
if [ "$(f .ok "${cut_json:-null}")" = true ]; then
	row "the same, link cut at the ${BENCH_QEMU_CUT:-STREAM:40} frame: failover, $(mb "$(f .median.replayed "$cut_json")") MB of stream replayed ($med)" "$(jq -c .median <<<"$cut_json")" "$(f .counter "$cut_json")"
elif [ -n "${cut_json:-}" ]; then
	failed_row "rmig over TCP, link cut mid-stream" "$cut_json"
fi
echo
echo "Ranges over the runs: native total $(range .total_ms "$native") ms, downtime $(range .downtime_ms "$native") ms; rmig total $(range .total_ms "$rmig_json") ms, downtime $(range .downtime_ms "$rmig_json") ms. Rounds: rmig's pre-copy rounds plus the stop-and-copy; QEMU's dirty-bitmap syncs (dirty-sync-count). Downtime: QEMU's, from the source's stop to the end of the migration; rmig's, from its pause to the destination's STARTED."

jq -n --arg date "$(date -u +%FT%TZ)" --arg qemu "$qver" --arg kernel "$kver" \
	--arg mem "$GUEST_MEM" --argjson dirty "$DIRTY_KIB" --argjson dt "$DT" --argjson bw "$BW" \
	--argjson warm "$WARM" --argjson runs "$RUNS" --argjson native "$native" --argjson rmig "$rmig_json" \
	--argjson cut "${cut_json:-null}" \
	'{date: $date, qemu: $qemu, guest: {mem: $mem, kernel: $kernel, accel: "tcg", dirty_kib: $dirty,
	  warm_counter: $warm}, runs: $runs, downtime_limit_ms: $dt, max_bandwidth_Bps: $bw,
	  native: $native, rmig: $rmig, rmig_link_cut: $cut,
	  ratio: (if ($native.ok and $rmig.ok) then
	    {total: (if $native.median.total_ms > 0 then $rmig.median.total_ms / $native.median.total_ms else null end),
	     downtime: (if $native.median.downtime_ms > 0 then $rmig.median.downtime_ms / $native.median.downtime_ms else null end)}
	  else null end)}' >"$OUT/qemu.json" || { say "cannot write $OUT/qemu.json"; exit 1; }
[ "$native_ok" = 1 ]
