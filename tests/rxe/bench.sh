#!/bin/bash
# make bench-rxe: on one soft-RoCE pair in one boot, the ceiling (perftest
# ib_write_bw, the best of six configurations: 64 KiB and 1 MiB messages,
# 1 QP, as many as rmig has channels and twice that) against rmig bench (the data path
# alone, RDMA WRITE and staging) and real migrations (--pin=all and
# staging: round 1, the whole time, what comes before round 1). Prints a markdown
# table of MB/s (10^6), each row with its exact commands and its ratio to
# the best ib_write_bw (above 1.0 with a warning: the ceiling is then
# suspect): medians of BENCH_RUNS (3) rounds, each measuring everything
# once in turn (a TCG VM's figures swing by 10 % from one measurement to
# the next), with the range over the rounds. All in clear (--no-tls); what
# TLS costs, sealed against clear: tests/rxe/bench_tls.sh.
#   tests/rxe/vm.sh -- tests/rxe/bench.sh
# In a VM of one NUMA node (make bench-rxe boots it so): rmig runs each
# node's channels on that node's CPUs, and with vm.sh --numa both ends'
# channels would share node 0's two vCPUs while ib_write_bw spreads over
# all four. Two rails, which need two nodes: tests/rxe/bench_rails.sh, in a
# boot of its own.
set -u -o pipefail
cd "$(dirname "$0")/../.."
RMIG=${RMIG:-build/rmig}
T=$(mktemp -d /tmp/rxe-bench.XXXXXX)
SECONDS_RUN=${BENCH_SECONDS:-8}
CH=${BENCH_CHANNELS:-2}
RUNS=${BENCH_RUNS:-3}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# The ceiling: ib_write_bw in each configuration of message size {64 KiB
# (perftest's default), 1 MiB} and QPs {1, as many as rmig has channels,
# twice that (more work in flight than rmig keeps: a stronger ceiling, if
# the device gains from it)},
# the same bytes in each (IB_BYTES, 5000 x 64 KiB by default: -n is per
# QP); the best median of the four is the ceiling and every ratio is to it.
# perftest's MB/s are 2^20 bytes: converted to 10^6.
IB_BYTES=${BENCH_IB_BYTES:-327680000}
IB_CONFS=()
for s in 65536 1048576; do
	for q in $(printf '%s\n' 1 "$CH" $((2 * CH)) | sort -nu); do IB_CONFS+=("$s:$q"); done
done
# ib_srv/ib_cli SIZE QPS PORT: the commands, as run and as printed.
ib_iters() { awk -v b="$IB_BYTES" -v s="$1" -v q="$2" 'BEGIN { n = int(b / s / q); print (n < 5 ? 5 : n) }'; }
ib_srv() { echo "ip netns exec $RXE_B_NS ib_write_bw -d $RXE_B_DEV -x $RXE_B_GID_INDEX -F -s $1 -q $2 -n $(ib_iters "$1" "$2") -p $3"; }
ib_cli() { echo "ip netns exec $RXE_A_NS ib_write_bw -d $RXE_A_DEV -x $RXE_A_GID_INDEX -F -s $1 -q $2 -n $(ib_iters "$1" "$2") -p $3 $RXE_B_IP"; }
ib_label() { # SIZE QPS
	local sz="$(($1 / 1024)) KiB"
	[ $(($1 % 1048576)) = 0 ] && sz="$(($1 / 1048576)) MiB"
	echo "ib_write_bw, $sz messages, $2 QP$([ "$2" = 1 ] || echo s)"
}
# ib_bw SIZE QPS PORT: one measurement, MB/s (10^6) on stdout. (The
# commands run are the printed ones, split into words.)
# shellcheck disable=SC2046
ib_bw() {
	timeout 120 $(ib_srv "$@") >"$T/bw-srv" 2>&1 &
	for _ in $(seq 100); do [ -n "$(ss -Hltn "sport = :$3")" ] && break; sleep 0.1; done
	timeout 120 $(ib_cli "$@") >"$T/bw-cli" 2>&1
	wait
	awk -v s="$1" '$1 == s && NF >= 4 { printf "%.1f", $4 * 1.048576 }' "$T/bw-cli"
}
# rmig_run NAME SEND-ARGS...: one rmig send against a fresh rmig recv.
# In clear (--no-tls, both sides): with a key and a peer not on loopback
# rmig would encrypt, and refuse --pin=all (RDMA WRITE cannot be sealed);
# tests/rxe/bench_tls.sh measures what encryption costs.
head -c 32 /dev/urandom >"$T/psk" && chmod 600 "$T/psk" # the peers are not on loopback
# RECV_EXTRA: more receiver options (--prealloc for the target rows).
RECV_EXTRA=
rmig_run() {
	local n=$1 port
	shift
	# shellcheck disable=SC2086 # the options, split into words
	ip netns exec "$RXE_B_NS" "$RMIG" recv --listen "$RXE_B_IP:0" --json --link-timeout-ms 30000 \
		--psk-file "$T/psk" --no-tls $RECV_EXTRA >"$T/$n-recv" 2>&1 &
	for _ in $(seq 100); do
		port=$(jq -r 'select(.event=="listening") | .port' "$T/$n-recv" 2>/dev/null)
		[ -n "$port" ] && break
		sleep 0.05
	done
	ip netns exec "$RXE_A_NS" "$RMIG" "$@" --json --link-timeout-ms 30000 --psk-file "$T/psk" --no-tls --device "$RXE_A_DEV" \
		--channels "$CH" "$RXE_B_IP:$port" >"$T/$n-send" 2>&1
	wait
}
# rmig_cmd SEND-ARGS...: rmig_run's commands, for the table.
rmig_cmd() {
	echo "\`ip netns exec $RXE_B_NS rmig recv --listen $RXE_B_IP:0 --json --link-timeout-ms 30000 --psk-file PSK --no-tls${RECV_EXTRA:+ $RECV_EXTRA}\` + \`ip netns exec $RXE_A_NS rmig $* --json --link-timeout-ms 30000 --psk-file PSK --no-tls --device $RXE_A_DEV --channels $CH $RXE_B_IP:PORT\`"
}
mbps() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }

# ib_bw_once SIZE QPS PORT ROUND: a measurement; perftest under TCG now
# and then reports nothing or 0 MB/s: measured once more, and the table
# says so.
ib_bw_once() {
	local bw
	bw=$(ib_bw "$1" "$2" "$3")
	if ! awk -v b="${bw:-0}" 'BEGIN { exit !(b > 0) }'; then
		echo "Note: $(ib_label "$1" "$2") reported ${bw:-nothing} in round $4: measured again." >>"$T/notes"
		bw=$(ib_bw "$1" "$2" $(($3 + 100)))
	fi
	awk -v b="${bw:-0}" 'BEGIN { exit !(b > 0) }' || { cat "$T/bw-cli" >&2; echo "bench: $(ib_label "$1" "$2") failed" >&2; return 1; }
	echo "$bw"
}

WRITE_ARGS="bench --seconds $SECONDS_RUN --size 64M --pin all"
# The ceiling's own working set: ib_write_bw with messages of 1 MiB or
# more writes one message-sized buffer per QP over and over, so rmig bench
# moving 1 MiB per channel is the data path against the ceiling like for
# like; the rows above and below move what a migration must touch, which
# under TCG costs more than the data path (README, "RDMA: where the time
# goes").
SMALL_ARGS="bench --seconds $SECONDS_RUN --size $((CH))M --pin all"
STAGING_ARGS="bench --seconds $SECONDS_RUN --size 64M --pin staging"
MIGRATE_ARGS="send --pin all --no-verify --backend sim:size=256M,dirty-rate=0,zero=0%"
MIGRATE_STAGING_ARGS="send --pin staging --no-verify --backend sim:size=256M,dirty-rate=0,zero=0%"
# migrated NAME: one migration's figures from its sender's events: round
# 1's MB/s, the whole time, the time before round 1's first byte (from the
# first event to round 1's start: connections, authentication, and with
# --pin=all the registration not overlapped) and whole / round 1.
migrated() {
	local f="$T/$1-send"
	mbps "$(jq -r 'select(.event=="round" and .round==1) | .bandwidth' "$f" | grep . || echo 0)" >>"$T/$1.all"
	echo >>"$T/$1.all"
	jq -r 'select(.event=="summary") | .total_ms' "$f" >>"$T/$1-total.all"
	jq -rs '(.[0].ts) as $t0 | (map(select(.event=="round" and .round==1))[0]) as $r |
		(map(select(.event=="summary"))[0]) as $s |
		"\($r.ts - $r.ms - $t0) \($s.total_ms / $r.ms * 100 | round / 100)"' "$f" >"$T/$1-split"
	cut -d' ' -f1 "$T/$1-split" >>"$T/$1-setup.all"
	cut -d' ' -f2 "$T/$1-split" >>"$T/$1-whole.all"
}
for run in $(seq "$RUNS"); do
	# The ceiling's configurations take turns at going first.
	for j in $(seq 0 $((${#IB_CONFS[@]} - 1))); do
		k=$(((run - 1 + j) % ${#IB_CONFS[@]}))
		c=${IB_CONFS[$k]}
		ib_bw_once "${c%:*}" "${c#*:}" $((18600 + 8 * run + k)) "$run" >>"$T/ib$k.all" || exit 1
	done
	# shellcheck disable=SC2086 # the arguments, split into words
	rmig_run write $WRITE_ARGS
	mbps "$(jq -r 'select(.event=="bench") | .bandwidth' "$T/write-send")" >>"$T/write.all"
	echo >>"$T/write.all"
	# shellcheck disable=SC2086
	rmig_run small $SMALL_ARGS
	mbps "$(jq -r 'select(.event=="bench") | .bandwidth' "$T/small-send")" >>"$T/small.all"
	echo >>"$T/small.all"
	# shellcheck disable=SC2086
	rmig_run staging $STAGING_ARGS
	mbps "$(jq -r 'select(.event=="bench") | .bandwidth' "$T/staging-send")" >>"$T/staging.all"
	echo >>"$T/staging.all"
	# shellcheck disable=SC2086
	rmig_run migrate $MIGRATE_ARGS
	migrated migrate
	jq -r 'select(.event=="summary") | .cpu_ms' "$T/migrate-send" >>"$T/cpu-send.all"
	jq -r 'select(.event=="summary") | .cpu_ms' "$T/migrate-recv" >>"$T/cpu-recv.all"
	# shellcheck disable=SC2086
	rmig_run migrate-staging $MIGRATE_STAGING_ARGS
	migrated migrate-staging
	# The target rows: into a destination whose memory is already backed
	# (recv --prealloc), as the TCP bench's target row. ib_write_bw writes
	# into a buffer it registered (and so faulted in) before its clock
	# starts; a fresh destination also clears every page it receives,
	# which under TCG is 18-20 % of the VM's CPU.
	RECV_EXTRA=--prealloc
	# shellcheck disable=SC2086
	rmig_run migrate-pre $MIGRATE_ARGS
	migrated migrate-pre
	# shellcheck disable=SC2086
	rmig_run migrate-staging-pre $MIGRATE_STAGING_ARGS
	migrated migrate-staging-pre
	RECV_EXTRA=
done
# The ceiling: the best median (the first on a tie).
best=0
for k in "${!IB_CONFS[@]}"; do
	median <"$T/ib$k.all" >"$T/ib$k.med"
	awk -v a="$(cat "$T/ib$k.med")" -v b="$(cat "$T/ib$best.med")" 'BEGIN { exit !(a > b) }' && best=$k
done
ceiling=$(cat "$T/ib$best.med")
ratio() { awk -v a="$1" -v c="$ceiling" 'BEGIN { printf "%.2f", a / c }'; }
# ratio_cell RATIO: the ratio, and above 1.0 a warning: a ceiling that
# rmig beats is not the machine's.
ratio_cell() { awk -v r="$1" 'BEGIN { printf "%s%s", r, (r > 1.0 ? " **WARNING: above 1.0, the ceiling is wrong until shown otherwise**" : "") }'; }
range() { printf '%s..%s' "$(sort -g "$1" | head -1)" "$(sort -g "$1" | tail -1)"; }
row() { # LABEL COMMAND FILE
	local v
	v=$(median <"$3")
	echo "| $1 | $2 | $v | $(ratio_cell "$(ratio "$v")") | $(range "$3") |"
}

echo
echo "| soft-RoCE, $CH QPs/channels, median of $RUNS rounds | command | MB/s | ratio to the best ib_write_bw | range MB/s |"
echo "|---|---|---|---|---|"
for k in "${!IB_CONFS[@]}"; do
	c=${IB_CONFS[$k]}
	row "ceiling $((k + 1)): $(ib_label "${c%:*}" "${c#*:}")$([ "$k" = "$best" ] && echo ": **the best, the ceiling**")" \
		"\`$(ib_srv "${c%:*}" "${c#*:}" PORT)\` + \`$(ib_cli "${c%:*}" "${c#*:}" PORT)\`" "$T/ib$k.all"
done
row "rmig bench --pin=all (RDMA WRITE), 1 MiB per channel: the ceiling's working set" "$(rmig_cmd "$SMALL_ARGS")" "$T/small.all"
row "rmig bench --pin=all (RDMA WRITE)" "$(rmig_cmd "$WRITE_ARGS")" "$T/write.all"
row "rmig bench --pin=staging" "$(rmig_cmd "$STAGING_ARGS")" "$T/staging.all"
row "rmig send 256 MiB guest --pin=all, round 1" "$(rmig_cmd "$MIGRATE_ARGS")" "$T/migrate.all"
row "rmig send 256 MiB guest --pin=staging, round 1" "$(rmig_cmd "$MIGRATE_STAGING_ARGS")" "$T/migrate-staging.all"
RECV_EXTRA=--prealloc
row "rmig send 256 MiB guest --pin=all, round 1, destination preallocated (target >= 0.9)" "$(rmig_cmd "$MIGRATE_ARGS")" "$T/migrate-pre.all"
row "rmig send 256 MiB guest --pin=staging, round 1, destination preallocated (target >= 0.9)" "$(rmig_cmd "$MIGRATE_STAGING_ARGS")" "$T/migrate-staging-pre.all"
RECV_EXTRA=
c=${IB_CONFS[$best]}
echo
echo "Ceiling: the best of the ${#IB_CONFS[@]} ib_write_bw configurations, number $((best + 1)): $(ib_label "${c%:*}" "${c#*:}"), $ceiling MB/s. Every ratio above is to it; PORT is a fresh port per measurement, each moving $IB_BYTES bytes in all (-n per QP)."
echo
echo "| 256 MiB idle guest, median of $RUNS | whole migration ms (range) | before round 1's first byte ms (range) | whole / round 1 (target <= 1.15), range |"
echo "|---|---|---|---|"
for m in migrate:all migrate-staging:staging migrate-pre:all,prealloc migrate-staging-pre:staging,prealloc; do
	f=${m%:*}
	l=${m#*:}
	echo "| --pin=${l%,*}$([ "${l#*,}" = prealloc ] && echo ', destination preallocated') | $(median <"$T/$f-total.all") ($(range "$T/$f-total.all")) | $(median <"$T/$f-setup.all") ($(range "$T/$f-setup.all")) | $(median <"$T/$f-whole.all" | awk '{ printf "%.2f", $1 }') ($(range "$T/$f-whole.all")) |"
done
# CPU per GiB moved, of the 256 MiB migrations (getrusage of each process;
# soft-RoCE's own work runs in kernel threads and is not in it).
cs=$(median <"$T/cpu-send.all")
cr=$(median <"$T/cpu-recv.all")
echo
echo "CPU per GiB moved (RDMA WRITE, 256 MiB migration, median, process time only; rxe works in kernel threads): sender $(awk -v c="${cs:-0}" 'BEGIN { printf "%.2f", c / 1000 / 0.25 }') s, receiver $(awk -v c="${cr:-0}" 'BEGIN { printf "%.2f", c / 1000 / 0.25 }') s."

# Post-copy recovery over soft-RoCE: the sender's rxe device is deleted
# while the destination's guest waits for pages (the sender holds 300 ms
# after STARTED; the device goes at once), and the session recovers over
# TCP. Measured at the destination: from the deletion to the session
# resumed (its "failover" event; includes what is left of the hold), its
# own recovery_ms (from noticing the loss), and the longest a guest thread
# waited for a page (includes the hold). Link timeout 2000 ms.
stamp() {
	local l
	while IFS= read -r l; do printf '%s %s\n' "$((${EPOCHREALTIME/./} / 1000))" "$l"; done
}
restore_dev() {
	ip link set "$RXE_A_NETDEV" up
	rdma link show "$RXE_A_DEV" >/dev/null 2>&1 ||
		rdma link add "$RXE_A_DEV" type rxe netdev "$RXE_A_NETDEV" 2>/dev/null
	for _ in $(seq 50); do
		rdma link show "$RXE_A_DEV" 2>/dev/null | grep -q ACTIVE && return
		sleep 0.1
	done
}
rec_run() { # N
	local n=rec$1 port t_del t_rec spid
	"$RMIG" recv --listen "$RXE_B_IP:0" --json --link-timeout-ms 2000 --psk-file "$T/psk" \
		--no-tls 2>"$T/$n-recv.err" | stamp >"$T/$n-recv" &
	for _ in $(seq 100); do
		port=$(sed -n 's/.*"event":"listening","port":\([0-9]*\).*/\1/p' "$T/$n-recv" 2>/dev/null)
		[ -n "$port" ] && break
		sleep 0.05
	done
	RMIG_TEST_HOLD=post-copy:300 "$RMIG" send --json --postcopy --link-timeout-ms 2000 \
		--psk-file "$T/psk" --no-tls --device "$RXE_A_DEV" \
		--backend sim:size=64M,dirty-rate=20000,hot=5%,zero=50%,seed=3 "$RXE_B_IP:$port" \
		>"$T/$n-send" 2>&1 &
	spid=$!
	for _ in $(seq 1200); do
		grep -q '"event":"hold"' "$T/$n-send" 2>/dev/null && break
		kill -0 $spid 2>/dev/null || break
		sleep 0.01
	done
	t_del=$((${EPOCHREALTIME/./} / 1000))
	rdma link delete "$RXE_A_DEV"
	timeout 120 tail --pid=$spid -f /dev/null
	wait
	restore_dev
	t_rec=$(awk '/"event":"failover"/ { print $1; exit }' "$T/$n-recv")
	local sum
	sum=$(grep '"event":"summary"' "$T/$n-recv" | cut -d' ' -f2-)
	if [ -z "$t_rec" ] || [ "$(jq -r .result <<<"$sum")" != migrated ] ||
		! grep -q '"event":"transport","transport":"rdma"' "$T/$n-send"; then
		echo "Note: post-copy recovery run $1 did not recover over TCP after starting over RDMA: $(grep '"event":"summary"' "$T/$n-send" | jq -r '.result + " " + (.error // "")')" >>"$T/notes"
		return
	fi
	echo $((t_rec - t_del)) >>"$T/rec-cut.all"
	jq -r .recovery_ms <<<"$sum" >>"$T/rec-ms.all"
	jq -r .postcopy_max_wait_ms <<<"$sum" >>"$T/rec-wait.all"
}
for run in $(seq "$RUNS"); do rec_run "$run"; done
if [ -s "$T/rec-cut.all" ]; then
	echo
	echo "| post-copy recovery, rxe device deleted -> TCP, median of $(wc -l <"$T/rec-cut.all") | ms | range ms |"
	echo "|---|---|---|"
	echo "| deletion to session resumed (incl. up to 300 ms of hold) | $(median <"$T/rec-cut.all") | $(range "$T/rec-cut.all") |"
	echo "| destination: loss noticed to session resumed (recovery_ms) | $(median <"$T/rec-ms.all") | $(range "$T/rec-ms.all") |"
	echo "| longest guest wait for a page (incl. the 300 ms hold) | $(median <"$T/rec-wait.all") | $(range "$T/rec-wait.all") |"
fi
cat "$T/notes" 2>/dev/null
rm -rf "$T"
