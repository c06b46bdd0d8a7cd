#!/bin/bash
# What encryption costs on the rxe VM's pair: round 1 of a migration of a
# 256 MiB guest that does not dirty (all of it in one round, --no-verify),
# rxa end -> rxb end, over
#   RDMA staging in clear (--no-tls) and sealed (--tls: TLS records sealed in
#   user space, through the staging streams);
#   TCP in clear, kTLS (the kernel seals) and TLS in user space (this process
#   seals; the kernel made one without kTLS: the tls module unloaded and its
#   autoload pointed at /bin/false, as on a host where it is not installed,
#   since the CLI has no option to turn kTLS off).
# Medians of BENCH_RUNS (3) rounds, each running every row once, in turn
# (forward, then backward, alternating): a TCG VM's figures drift. Prints a
# markdown table (MB/s = 10^6 B/s, the ratio to the same link in clear, the
# range, and CPU seconds per GiB of each process: kTLS's sealing is the
# sender's system time, rxe's own work is in kernel threads and counted
# nowhere) and the exact commands. Not part of make check:
#   tests/rxe/vm.sh --timeout 600 -- tests/rxe/bench_tls.sh
# BENCH_RUNS, BENCH_CHANNELS (2), BENCH_SIZE (256M); BENCH_ROWS: names of
# the rows to run (default all: rdma-clear rdma-tls tcp-clear tcp-ktls
# tcp-user).
set -u
cd "$(dirname "$0")/../.."
RMIG=${RMIG:-build/rmig}
[ -n "${RXE_VM:-}" ] || { echo "bench_tls.sh: run it inside the rxe VM: tests/rxe/vm.sh --timeout 600 -- $0" >&2; exit 2; }
T=$(mktemp -d /tmp/rxe-bench-tls.XXXXXX)
RUNS=${BENCH_RUNS:-3}
CH=${BENCH_CHANNELS:-2}
SIZE=${BENCH_SIZE:-256M}
GUEST="sim:size=$SIZE,dirty-rate=0,zero=0%"
MODPROBE_WAS=$(cat /proc/sys/kernel/modprobe)
trap 'echo "$MODPROBE_WAS" >/proc/sys/kernel/modprobe; rm -rf "$T"' EXIT
median() { sort -g | awk 'NF { v[++n] = $1 } END { if (n) print v[int((n + 1) / 2)]; else print "-" }'; }
range() { sort -g "$1" | awk 'NF { v[++n] = $1 } END { if (n) printf "%s..%s", v[1], v[n]; else printf "-" }'; }
head -c 32 /dev/urandom >"$T/psk" && chmod 600 "$T/psk" # the peers are not on loopback

RECV_COMMON="--listen $RXE_B_IP:0 --json --link-timeout-ms 30000 --psk-file $T/psk"
SEND_COMMON="--json --link-timeout-ms 30000 --psk-file $T/psk --no-verify --channels $CH --backend $GUEST"
# NAME|label|kernel|want transport/pin/tls|receiver options|sender options
# kernel: ktls (tls module loaded), nomod (none, and none can load), any.
ROWS=(
	"rdma-clear|RDMA staging, clear|any|rdma/staging/off|--no-tls|--no-tls --transport rdma --pin staging --device $RXE_A_DEV"
	"rdma-tls|RDMA staging, sealed (TLS in user space)|any|rdma/staging/user|--tls|--tls --transport rdma --pin staging --device $RXE_A_DEV"
	"tcp-clear|TCP, clear|any|tcp/none/off|--no-tls --transport tcp|--no-tls --transport tcp"
	"tcp-ktls|TCP, kTLS (the kernel seals)|ktls|tcp/none/ktls|--tls --transport tcp|--tls --transport tcp"
	"tcp-user|TCP, TLS in user space (no tls module)|nomod|tcp/none/user|--tls --transport tcp|--tls --transport tcp"
)
if [ -n "${BENCH_ROWS:-}" ]; then
	keep=()
	for r in "${ROWS[@]}"; do [[ " $BENCH_ROWS " == *" ${r%%|*} "* ]] && keep+=("$r"); done
	((${#keep[@]})) || { echo "bench_tls.sh: BENCH_ROWS names no row: $BENCH_ROWS" >&2; exit 2; }
	ROWS=("${keep[@]}")
fi

kernel_ktls() {
	echo "$MODPROBE_WAS" >/proc/sys/kernel/modprobe
	modprobe tls
}
kernel_nomod() {
	for _ in $(seq 30); do # sockets of the last run may still hold it: 3 s at most
		[ -d /sys/module/tls ] || break
		rmmod tls 2>/dev/null || sleep 0.1
	done
	echo /bin/false >/proc/sys/kernel/modprobe
	[ ! -d /sys/module/tls ]
}

# run_row ROUND NAME|label|kernel|want|ropts|sopts: one migration; appends
# its round-1 MB/s and CPU times to $T/NAME.{mbps,cs,cr}, or a note.
run_row() {
	local round=$1 name label kernel want ropts sopts port="" rpid got m
	IFS='|' read -r name label kernel want ropts sopts <<<"$2"
	case $kernel in
	ktls) kernel_ktls || { echo "Note: $name round $round: modprobe tls failed: not measured." >>"$T/notes"; return; } ;;
	nomod) kernel_nomod || { echo "Note: $name round $round: cannot unload tls: not measured." >>"$T/notes"; return; } ;;
	esac
	# shellcheck disable=SC2086 # option strings: words
	ip netns exec "$RXE_B_NS" timeout 300 "$RMIG" recv $RECV_COMMON $ropts >"$T/recv" 2>&1 &
	rpid=$!
	for _ in $(seq 150); do
		port=$(jq -r 'select(.event=="listening") | .port' "$T/recv" 2>/dev/null)
		[ -n "$port" ] && break
		kill -0 "$rpid" 2>/dev/null || break
		sleep 0.1
	done
	# shellcheck disable=SC2086
	ip netns exec "$RXE_A_NS" timeout 300 "$RMIG" send $SEND_COMMON $sopts "$RXE_B_IP:${port:-1}" >"$T/send" 2>&1
	timeout 60 tail --pid="$rpid" -f /dev/null
	kill "$rpid" 2>/dev/null
	wait "$rpid" 2>/dev/null
	[ "$kernel" = nomod ] && echo "$MODPROBE_WAS" >/proc/sys/kernel/modprobe
	got=$(jq -r 'select(.event=="summary") | "\(.result)/\(.transport)/\(.pin)/\(.tls)"' "$T/send" 2>/dev/null)
	if [ "$got" != "migrated/$want" ]; then
		echo "Note: $name round $round: got ${got:-nothing}, want migrated/$want: not counted. $(grep -m1 'rmig: ' "$T/send")" >>"$T/notes"
		return
	fi
	m=$(jq -r 'select(.event=="round" and .round==1) | .bandwidth' "$T/send")
	awk -v b="${m:-0}" 'BEGIN { printf "%.1f\n", b / 1e6 }' >>"$T/$name.mbps"
	jq -r 'select(.event=="summary") | .cpu_ms' "$T/send" >>"$T/$name.cs"
	jq -r 'select(.event=="summary") | .cpu_ms' "$T/recv" >>"$T/$name.cr"
}

for run in $(seq "$RUNS"); do
	if ((run % 2)); then order=("${ROWS[@]}"); else order=(); for ((i = ${#ROWS[@]} - 1; i >= 0; i--)); do order+=("${ROWS[i]}"); done; fi
	for r in "${order[@]}"; do run_row "$run" "$r"; done
done
kernel_ktls >/dev/null 2>&1

gib=$(awk -v s="$SIZE" 'BEGIN { n = s + 0; u = substr(s, length(s)); printf "%.6f", u == "G" ? n : u == "M" ? n / 1024 : n / 1048576 }')
cpu_per_gib() { awk -v c="$1" -v g="$gib" 'BEGIN { if (c == "-") print "-"; else printf "%.2f", c / 1000 / g }'; }
echo
echo "| rxe VM, $SIZE guest, round 1, $CH channels, median of $RUNS | MB/s | vs the same link in clear | range MB/s | CPU s/GiB sender | CPU s/GiB receiver |"
echo "|---|---|---|---|---|---|"
for r in "${ROWS[@]}"; do
	IFS='|' read -r name label _ <<<"$r"
	base=${name%%-*}-clear
	v=$(median <"$T/$name.mbps" 2>/dev/null || echo -)
	b=$(median <"$T/$base.mbps" 2>/dev/null || echo -)
	ratio=$(awk -v a="$v" -v c="$b" 'BEGIN { if (a == "-" || c == "-" || c == 0) print "-"; else printf "%.2f", a / c }')
	echo "| $label | $v | $ratio | $(range "$T/$name.mbps" 2>/dev/null) | $(cpu_per_gib "$(median <"$T/$name.cs" 2>/dev/null)") | $(cpu_per_gib "$(median <"$T/$name.cr" 2>/dev/null)") |"
done
echo
echo "Kernel AES-GCM: $(awk '/^name/ { n = $3 } /^driver/ && n == "gcm(aes)" { print $3; exit }' /proc/crypto 2>/dev/null || echo '?'); CPU: $(grep -m1 -ow -e aes -e pclmulqdq /proc/cpuinfo | sort -u | tr '\n' ' ')($(nproc) vCPUs, TCG)."
cat "$T/notes" 2>/dev/null
echo
echo "Commands (PORT: the receiver's \"listening\" event; PSK: 32 random bytes, mode 0600):"
for r in "${ROWS[@]}"; do
	IFS='|' read -r name label kernel _ ropts sopts <<<"$r"
	echo "  $label:"
	case $kernel in
	ktls) echo "    modprobe tls" ;;
	nomod) echo "    rmmod tls; echo /bin/false >/proc/sys/kernel/modprobe   # restored after the run" ;;
	esac
	echo "    ip netns exec $RXE_B_NS $RMIG recv ${RECV_COMMON//$T\/psk/PSK} $ropts"
	echo "    ip netns exec $RXE_A_NS $RMIG send ${SEND_COMMON//$T\/psk/PSK} $sopts $RXE_B_IP:PORT"
done
