#!/bin/bash
# make bench-rxe: on one soft-RoCE pair in one boot, the ceiling (perftest
# ib_write_bw) against rmig bench (the data path alone, RDMA WRITE and
# staging) and a real migration. Prints a markdown table of MB/s (10^6) and
# each figure's ratio to ib_write_bw: medians of BENCH_RUNS (3) rounds, each
# measuring everything once in turn (a TCG VM's figures swing by 10 % from
# one measurement to the next), with the range over the rounds. All in clear
# (--no-tls); what TLS costs, sealed against clear: tests/rxe/bench_tls.sh.
#   tests/rxe/vm.sh -- tests/rxe/bench.sh
set -u
cd "$(dirname "$0")/../.."
RMIG=${RMIG:-build/rmig}
T=$(mktemp -d /tmp/rxe-bench.XXXXXX)
SECONDS_RUN=${BENCH_SECONDS:-8}
CH=${BENCH_CHANNELS:-2}
RUNS=${BENCH_RUNS:-3}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# ib_write_bw: 64 KiB writes, with 1 QP and with as many QPs as rmig has
# channels; the better of the two is the ceiling. perftest's MB/s are 2^20
# bytes: converted to 10^6.
ib_bw() { # QPS PORT
	ip netns exec "$RXE_B_NS" timeout 120 ib_write_bw -d "$RXE_B_DEV" -x "$RXE_B_GID_INDEX" -F \
		-q "$1" -n 5000 -p "$2" >"$T/bw-srv" 2>&1 &
	for _ in $(seq 100); do ss -Hltn "sport = :$2" | grep -q . && break; sleep 0.1; done
	ip netns exec "$RXE_A_NS" timeout 120 ib_write_bw -d "$RXE_A_DEV" -x "$RXE_A_GID_INDEX" -F \
		-q "$1" -n 5000 -p "$2" "$RXE_B_IP" >"$T/bw-cli" 2>&1
	wait
	awk '/^ *65536 / { printf "%.1f", $4 * 1.048576 }' "$T/bw-cli"
}
# rmig_run NAME SEND-ARGS...: one rmig send against a fresh rmig recv.
# In clear (--no-tls, both sides): with a key and a peer not on loopback
# rmig would encrypt, and refuse --pin=all (RDMA WRITE cannot be sealed);
# tests/rxe/bench_tls.sh measures what encryption costs.
head -c 32 /dev/urandom >"$T/psk" && chmod 600 "$T/psk" # the peers are not on loopback
rmig_run() {
	local n=$1 port
	shift
	ip netns exec "$RXE_B_NS" "$RMIG" recv --listen "$RXE_B_IP:0" --json --link-timeout-ms 30000 \
		--psk-file "$T/psk" --no-tls >"$T/$n-recv" 2>&1 &
	for _ in $(seq 100); do
		port=$(jq -r 'select(.event=="listening") | .port' "$T/$n-recv" 2>/dev/null)
		[ -n "$port" ] && break
		sleep 0.05
	done
	ip netns exec "$RXE_A_NS" "$RMIG" "$@" --json --link-timeout-ms 30000 --psk-file "$T/psk" --no-tls --device "$RXE_A_DEV" \
		--channels "$CH" "$RXE_B_IP:$port" >"$T/$n-send" 2>&1
	wait
}
mbps() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }

# ib_bw_once QPS PORT ROUND: a measurement; perftest under TCG now and then
# reports nothing or 0 MB/s: measured once more, and the table says so.
ib_bw_once() {
	local bw
	bw=$(ib_bw "$1" "$2")
	if ! awk -v b="${bw:-0}" 'BEGIN { exit !(b > 0) }'; then
		echo "Note: ib_write_bw with $1 QP(s) reported ${bw:-nothing} in round $3: measured again." >>"$T/notes"
		bw=$(ib_bw "$1" $(($2 + 100)))
	fi
	awk -v b="${bw:-0}" 'BEGIN { exit !(b > 0) }' || { cat "$T/bw-cli" >&2; echo "bench: ib_write_bw failed" >&2; return 1; }
	echo "$bw"
}

for run in $(seq "$RUNS"); do
	ib_bw_once 1 $((18600 + 2 * run)) "$run" >>"$T/bw1.all" || exit 1
	ib_bw_once "$CH" $((18601 + 2 * run)) "$run" >>"$T/bwn.all" || exit 1
	rmig_run write bench --seconds "$SECONDS_RUN" --size 64M --pin all
	mbps "$(jq -r 'select(.event=="bench") | .bandwidth' "$T/write-send")" >>"$T/write.all"
	echo >>"$T/write.all"
	rmig_run staging bench --seconds "$SECONDS_RUN" --size 64M --pin staging
	mbps "$(jq -r 'select(.event=="bench") | .bandwidth' "$T/staging-send")" >>"$T/staging.all"
	echo >>"$T/staging.all"
	rmig_run migrate send --pin all --no-verify --backend sim:size=256M,dirty-rate=0,zero=0%
	m=$(jq -r 'select(.event=="round" and .round==1) | .bandwidth' "$T/migrate-send")
	mbps "${m:-0}" >>"$T/migrate.all"
	echo >>"$T/migrate.all"
	jq -r 'select(.event=="summary") | .cpu_ms' "$T/migrate-send" >>"$T/cpu-send.all"
	jq -r 'select(.event=="summary") | .cpu_ms' "$T/migrate-recv" >>"$T/cpu-recv.all"
done
bw1=$(median <"$T/bw1.all")
bwn=$(median <"$T/bwn.all")
ceiling=$(awk -v a="$bw1" -v b="$bwn" 'BEGIN { print (a > b ? a : b) }')
ratio() { awk -v a="$1" -v c="$ceiling" 'BEGIN { printf "%.2f", a / c }'; }
range() { printf '%s..%s' "$(sort -g "$1" | head -1)" "$(sort -g "$1" | tail -1)"; }
row() { # LABEL FILE
	local v
	v=$(median <"$2")
	echo "| $1 | $v | $(ratio "$v") | $(range "$2") |"
}

echo
echo "| soft-RoCE, $CH QPs/channels, median of $RUNS rounds | MB/s | ratio to ib_write_bw | range MB/s |"
echo "|---|---|---|---|"
row "ib_write_bw (perftest, 64 KiB, 1 QP)" "$T/bw1.all"
row "ib_write_bw (perftest, 64 KiB, $CH QPs)" "$T/bwn.all"
row "rmig bench --pin=all (RDMA WRITE)" "$T/write.all"
row "rmig bench --pin=staging" "$T/staging.all"
row "rmig send 256 MiB guest, round 1" "$T/migrate.all"
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
