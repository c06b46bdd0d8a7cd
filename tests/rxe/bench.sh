#!/bin/bash
# make bench-rxe: on one soft-RoCE pair in one boot, the ceiling (perftest
# ib_write_bw) against rmig bench (the data path alone, RDMA WRITE and
# staging) and a real migration. Prints a markdown table of MB/s (10^6) and
# each figure's ratio to ib_write_bw.
#   tests/rxe/vm.sh -- tests/rxe/bench.sh
set -u
cd "$(dirname "$0")/../.."
RMIG=${RMIG:-build/rmig}
T=$(mktemp -d /tmp/rxe-bench.XXXXXX)
SECONDS_RUN=${BENCH_SECONDS:-8}
CH=${BENCH_CHANNELS:-2}

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
bw1=$(ib_bw 1 18600)
bwn=$(ib_bw "$CH" 18601)
[ -n "$bw1" ] && [ -n "$bwn" ] || { cat "$T/bw-cli"; echo "bench: ib_write_bw failed"; exit 1; }
ceiling=$(awk -v a="$bw1" -v b="$bwn" 'BEGIN { print (a > b ? a : b) }')

# rmig_run NAME SEND-ARGS...: one rmig send against a fresh rmig recv.
head -c 32 /dev/urandom >"$T/psk" && chmod 600 "$T/psk" # the peers are not on loopback
rmig_run() {
	local n=$1 port
	shift
	ip netns exec "$RXE_B_NS" "$RMIG" recv --listen "$RXE_B_IP:0" --json --link-timeout-ms 30000 \
		--psk-file "$T/psk" >"$T/$n-recv" 2>&1 &
	for _ in $(seq 100); do
		port=$(jq -r 'select(.event=="listening") | .port' "$T/$n-recv" 2>/dev/null)
		[ -n "$port" ] && break
		sleep 0.05
	done
	ip netns exec "$RXE_A_NS" "$RMIG" "$@" --json --link-timeout-ms 30000 --psk-file "$T/psk" --device "$RXE_A_DEV" \
		--channels "$CH" "$RXE_B_IP:$port" >"$T/$n-send" 2>&1
	wait
}
mbps() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
ratio() { awk -v a="$1" -v c="$ceiling" 'BEGIN { printf "%.2f", a / c }'; }

rmig_run write bench --seconds "$SECONDS_RUN" --size 64M --pin all
rmig_run staging bench --seconds "$SECONDS_RUN" --size 64M --pin staging
rmig_run migrate send --pin all --no-verify --backend sim:size=256M,dirty-rate=0,zero=0%
w=$(mbps "$(jq -r 'select(.event=="bench") | .bandwidth' "$T/write-send")")
s=$(mbps "$(jq -r 'select(.event=="bench") | .bandwidth' "$T/staging-send")")
m=$(jq -r 'select(.event=="round" and .round==1) | .bandwidth' "$T/migrate-send")
m=$(mbps "${m:-0}")

echo
echo "| soft-RoCE, $CH QPs/channels | MB/s | ratio to ib_write_bw |"
echo "|---|---|---|"
echo "| ib_write_bw (perftest, 64 KiB, 1 QP) | $bw1 | $(ratio "$bw1") |"
echo "| ib_write_bw (perftest, 64 KiB, $CH QPs) | $bwn | $(ratio "$bwn") |"
echo "| rmig bench --pin=all (RDMA WRITE) | $w | $(ratio "$w") |"
echo "| rmig bench --pin=staging | $s | $(ratio "$s") |"
echo "| rmig send 256 MiB guest, round 1 | $m | $(ratio "$m") |"
# CPU per GiB moved, of the 256 MiB migration (getrusage of each process;
# soft-RoCE's own work runs in kernel threads and is not in it).
cs=$(jq -r 'select(.event=="summary") | .cpu_ms' "$T/migrate-send")
cr=$(jq -r 'select(.event=="summary") | .cpu_ms' "$T/migrate-recv")
echo
echo "CPU per GiB moved (RDMA WRITE, 256 MiB migration, process time only; rxe works in kernel threads): sender $(awk -v c="${cs:-0}" 'BEGIN { printf "%.2f", c / 1000 / 0.25 }') s, receiver $(awk -v c="${cr:-0}" 'BEGIN { printf "%.2f", c / 1000 / 0.25 }') s."
rm -rf "$T"
