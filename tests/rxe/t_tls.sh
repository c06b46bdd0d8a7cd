#!/bin/bash
# Encryption over the rxe VM's real pair, inside the VM:
#   tests/rxe/vm.sh --numa -- tests/rxe/t_tls.sh
# (run_all.sh runs it). Checks, each migration a dirtying sim guest from the
# rxa end (10.77.0.1) to the rxb end (10.77.0.2), verified:
#   no-ktls    a kernel without the tls module (its autoload blocked): rmig
#              info says "kernel TLS: no"; the default with --psk-file
#              towards a peer not on loopback is encrypted, sealed in user
#              space: "tls":"user" on both sides
#   ktls-psk   (rmig info says "kernel TLS: yes")
#              --transport tcp --tls --psk-file: the kernel seals every
#              stream, "tls":"ktls" and "encrypted":true on both sides, and
#              /proc/net/tls_stat's TlsTxSw/TlsRxSw grow by one per socket
#   ktls-x509  the same with certificates (scripts/tls_creds.sh) and no key
#   rdma-tls   --transport rdma --tls --psk-file: pages through the sealed
#              staging streams ("pin":"staging", "tls":"user"), over rxe
#   pin-all    --transport rdma --tls --pin all: refused at once (exit 2),
#              naming RDMA WRITE and pin=staging; nothing was connected
# Nothing here skips: the VM ships the tls module and its ciphers
# (tests/rxe/setup.sh), so a missing precondition is a failure, CI or not.
# Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
RMIG=${RMIG:-build/rmig}
T=$(mktemp -d /tmp/rxe-tls.XXXXXX)
pass=0 fail=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
field() { jq -r "select(.event==\"summary\") | .$2 | tostring" "$1" 2>/dev/null | tail -1; }
head -c 32 /dev/urandom >"$T/psk" && chmod 600 "$T/psk"
GUEST=sim:size=64M,dirty-rate=2000,seed=5
# As t_migrate.sh: a downtime limit this emulated machine can meet.
SLOW="--downtime-ms 3000 --link-timeout-ms 20000"
MODPROBE_WAS=$(cat /proc/sys/kernel/modprobe)
trap 'echo "$MODPROBE_WAS" >/proc/sys/kernel/modprobe; rm -rf "$T"' EXIT

# /proc/net/tls_stat's counter NAME (0 while the module is not loaded).
tls_stat() {
	local k v
	[ -r /proc/net/tls_stat ] || { echo 0; return; }
	while read -r k v; do
		[ "$k" = "$1" ] && { echo "$v"; return; }
	done </proc/net/tls_stat
	echo 0
}
rxe_cnt() { cat "/sys/class/infiniband/$1/ports/1/hw_counters/$2"; }

# start_recv NAME [options]: a receiver on the rxb end; sets RECV_PID, PORT.
start_recv() {
	local n=$1
	shift
	ip netns exec "$RXE_B_NS" timeout 240 "$RMIG" recv --listen "$RXE_B_IP:0" --json $SLOW "$@" \
		>"$T/$n-recv.out" 2>"$T/$n-recv.err" &
	RECV_PID=$!
	PORT=""
	for _ in $(seq 150); do # 15 s or more: each jq costs ~0.1 s under TCG
		PORT=$(jq -r 'select(.event=="listening") | .port' "$T/$n-recv.out" 2>/dev/null)
		[ -n "$PORT" ] && return 0
		kill -0 "$RECV_PID" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# migrate NAME WANT 'RECV-OPTIONS' SEND-OPTIONS...: one migration; both
# summaries must read WANT = result/transport/pin/verified/encrypted/tls.
migrate() {
	local n=$1 want=$2 ropts=$3 rc rrc got side
	shift 3
	# shellcheck disable=SC2086 # ropts: words
	start_recv "$n" $ropts || {
		bad "$n: receiver did not start: $(cat "$T/$n-recv.err")"
		kill "$RECV_PID" 2>/dev/null
		return
	}
	ip netns exec "$RXE_A_NS" timeout 180 "$RMIG" send --json $SLOW --backend "$GUEST" "$@" \
		"$RXE_B_IP:$PORT" >"$T/$n-send.out" 2>"$T/$n-send.err"
	rc=$?
	timeout 60 tail --pid="$RECV_PID" -f /dev/null
	kill "$RECV_PID" 2>/dev/null # still there a minute after the sender: a failure anyway
	wait "$RECV_PID"
	rrc=$?
	for side in send recv; do
		local f="$T/$n-$side.out"
		got="$(field "$f" result)/$(field "$f" transport)/$(field "$f" pin)/$(field "$f" verified)"
		got="$got/$(field "$f" encrypted)/$(field "$f" tls)"
		if [ "$got" = "$want" ]; then
			ok "$n $side: $got"
		else
			bad "$n $side: got $got, want $want (exit $rc/$rrc): $(tail -n 2 "$T/$n-$side.err")"
		fi
	done
	echo "   $n: $(jq -c 'select(.event=="summary") | {rounds,total_ms,downtime_ms,bytes_sent,channels}' "$T/$n-send.out")"
	tail -n 1 "$T/$n-send.err" | sed 's/^/   /'
}

# --- preconditions --------------------------------------------------------------
kv=$(uname -r)
if [ -f "/lib/modules/$kv/kernel/net/tls/tls.ko" ]; then
	ok "the VM ships net/tls/tls.ko ($kv)"
else
	bad "no /lib/modules/$kv/kernel/net/tls/tls.ko: tests/rxe/setup.sh must ship tls"
fi

# --- a kernel without kTLS: sealed in user space -----------------------------
# The kernel loads tls on demand (setsockopt TCP_ULP "tls" asks modprobe for
# tcp-ulp-tls): unloaded and with that autoload pointed at /bin/false, this
# kernel is one without the module, as on a host where it is not installed.
for _ in $(seq 20); do # a socket closing may still hold it: 2 s at most
	[ -d /sys/module/tls ] || break
	rmmod tls 2>/dev/null || sleep 0.1
done
if [ -d /sys/module/tls ]; then
	bad "no-ktls: cannot unload the tls module: $(rmmod tls 2>&1)"
else
	echo /bin/false >/proc/sys/kernel/modprobe
	info=$("$RMIG" info | grep 'kernel TLS')
	[[ $info == *"kernel TLS: no"* ]] && ok "no-ktls: rmig info says:$info" ||
		bad "no-ktls: rmig info says '$info', want 'kernel TLS: no'"
	# Default --tls (auto): a key and a peer that is not on loopback encrypt.
	migrate no-ktls migrated/tcp/none/true/true/user "--psk-file $T/psk" \
		--psk-file "$T/psk" --transport tcp
	[ ! -d /sys/module/tls ] && ok "no-ktls: the tls module stayed unloaded" ||
		bad "no-ktls: the tls module got loaded"
	echo "$MODPROBE_WAS" >/proc/sys/kernel/modprobe
fi

# --- kTLS over TCP ---------------------------------------------------------------
if modprobe tls && [ -r /proc/net/tls_stat ]; then
	ok "modprobe tls: /proc/net/tls_stat is there"
else
	bad "modprobe tls failed or no /proc/net/tls_stat"
fi
info=$("$RMIG" info | grep 'kernel TLS')
[[ $info == *"kernel TLS: yes"* ]] && ok "rmig info says:$info" ||
	bad "rmig info says '$info', want 'kernel TLS: yes'"
# ktls_case NAME 'RECV-OPTIONS' SEND-OPTIONS...: a kTLS migration; the
# kernel's counters must show every socket of both ends keyed (the control
# stream and each data channel, on each side: both ends share one kernel).
ktls_case() {
	local n=$1 tx0 rx0 err0 tx rx ch want
	tx0=$(tls_stat TlsTxSw) rx0=$(tls_stat TlsRxSw) err0=$(tls_stat TlsDecryptError)
	migrate "$@"
	ch=$(field "$T/$n-send.out" channels)
	[[ $ch =~ ^[0-9]+$ ]] || ch=2
	want=$((2 * (1 + ch)))
	tx=$(($(tls_stat TlsTxSw) - tx0)) rx=$(($(tls_stat TlsRxSw) - rx0))
	if [ "$tx" -ge "$want" ] && [ "$rx" -ge "$want" ]; then
		ok "$n: the kernel keyed $tx sockets to send and $rx to receive (>= $want: 2 ends x (control + $ch channels))"
	else
		bad "$n: /proc/net/tls_stat TlsTxSw +$tx, TlsRxSw +$rx, want >= $want each"
	fi
	[ "$(tls_stat TlsDecryptError)" = "$err0" ] && ok "$n: no kernel decrypt error" ||
		bad "$n: TlsDecryptError $err0 -> $(tls_stat TlsDecryptError)"
}
ktls_case ktls-psk migrated/tcp/none/true/true/ktls "--tls --psk-file $T/psk --transport tcp" \
	--tls --psk-file "$T/psk" --transport tcp --channels 2

# x509: the receiver's certificate names its address; no key: the
# certificates alone authenticate both ends.
if scripts/tls_creds.sh "$T/creds" "$RXE_B_IP" >"$T/creds.log" 2>&1; then
	ktls_case ktls-x509 migrated/tcp/none/true/true/ktls "--tls --tls-creds $T/creds --transport tcp" \
		--tls --tls-creds "$T/creds" --transport tcp --channels 2
else
	bad "scripts/tls_creds.sh failed: $(tail -n 3 "$T/creds.log")"
fi

# --- RDMA: pages through the sealed staging streams ----------------------------
a_sent=$(rxe_cnt "$RXE_A_DEV" sent_pkts) tx0=$(tls_stat TlsTxSw)
migrate rdma-tls migrated/rdma/staging/true/true/user "--tls --psk-file $T/psk" \
	--tls --psk-file "$T/psk" --transport rdma --device "$RXE_A_DEV"
d=$(($(rxe_cnt "$RXE_A_DEV" sent_pkts) - a_sent))
# 64 MiB in 4 KiB RoCE packets: 16384 at least.
[ "$d" -ge 16384 ] && ok "rdma-tls: $d RoCE packets left $RXE_A_DEV" ||
	bad "rdma-tls: only $d RoCE packets left $RXE_A_DEV"
[ "$(tls_stat TlsTxSw)" = "$tx0" ] && ok "rdma-tls: no kernel TLS socket (records sealed in user space)" ||
	bad "rdma-tls: TlsTxSw moved: $tx0 -> $(tls_stat TlsTxSw)"

# --- RDMA WRITE cannot be sealed: refused before anything happens -------------
# A receiver waits, to show nothing reached it. Exit 2 is the usage error
# ("nothing happened"): the sim guest was never paused, nor connected.
start_recv pin-all --tls --psk-file "$T/psk" || bad "pin-all: receiver did not start"
t0=${EPOCHREALTIME/./}
ip netns exec "$RXE_A_NS" timeout 60 "$RMIG" send --json $SLOW --backend "$GUEST" --tls \
	--psk-file "$T/psk" --transport rdma --pin all --device "$RXE_A_DEV" "$RXE_B_IP:$PORT" \
	>"$T/pin-all-send.out" 2>"$T/pin-all-send.err"
rc=$?
ms=$(((${EPOCHREALTIME/./} - t0) / 1000))
msg=$(cat "$T/pin-all-send.err")
if [ "$rc" = 2 ] && [[ $msg == *"RDMA WRITE"* && $msg == *"pin=staging"* ]] && [ "$ms" -lt 10000 ]; then
	ok "pin-all: refused in $ms ms, exit 2: $msg"
else
	bad "pin-all: exit $rc after $ms ms (want 2, at once, naming RDMA WRITE and pin=staging): $msg"
fi
grep -q '"event":"phase"' "$T/pin-all-send.out" && bad "pin-all: the sender began: $(cat "$T/pin-all-send.out")" ||
	ok "pin-all: no phase began on the source (its guest never paused)"
sleep 0.5
if kill -0 "$RECV_PID" 2>/dev/null && ! grep -q '"event":"connected"' "$T/pin-all-recv.out"; then
	ok "pin-all: the receiver saw no connection and still waits"
else
	bad "pin-all: the receiver: $(cat "$T/pin-all-recv.out" "$T/pin-all-recv.err")"
fi
kill "$RECV_PID" 2>/dev/null
wait "$RECV_PID" 2>/dev/null

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
