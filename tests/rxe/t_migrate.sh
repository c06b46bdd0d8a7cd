#!/bin/bash
# RDMA migrations over real soft-RoCE, run inside the rxe VM (two NUMA nodes):
#   tests/rxe/vm.sh --numa -- tests/rxe/t_migrate.sh
# Checks: rmig info lists both devices; a dirtying sim guest migrates over
# rdma in clear (--no-tls; t_tls.sh covers encryption), verified on both
# sides, with --pin=all (zero-copy RDMA WRITE) and --pin=staging; with the
# guest bound to node 1, the sender's and receiver's channel threads run on
# node 1's CPUs and their staging pools sit on node 1; --transport auto
# picks rdma. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
RMIG=${RMIG:-build/rmig}
T=$(mktemp -d /tmp/rxe-migrate.XXXXXX)
pass=0 fail=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
field() { jq -r "select(.event==\"summary\") | .$2 | tostring" "$1" 2>/dev/null | tail -1; }
# Under TCG the digests of --verify alone take ~0.5 s: a downtime limit that
# this emulated machine can meet keeps the test about convergence, not speed.
# The peers are not on loopback: they authenticate with a pre-shared key.
# In clear (--no-tls, both sides): a key towards a peer not on loopback
# would otherwise encrypt, and RDMA WRITE placement (--pin=all), which these
# cases are about, is refused under encryption; t_tls.sh migrates encrypted.
head -c 32 /dev/urandom >"$T/psk" && chmod 600 "$T/psk"
SLOW="--downtime-ms 3000 --link-timeout-ms 20000 --psk-file $T/psk --no-tls"

start_recv() { # NAME [options]
	local n=$1
	shift
	ip netns exec "$RXE_B_NS" "$RMIG" recv --listen "$RXE_B_IP:0" --json $SLOW "$@" \
		>"$T/$n-recv.out" 2>"$T/$n-recv.err" &
	RECV_PID=$!
	PORT=""
	for _ in $(seq 200); do
		PORT=$(jq -r 'select(.event=="listening") | .port' "$T/$n-recv.out" 2>/dev/null)
		[ -n "$PORT" ] && return 0
		sleep 0.05
	done
	return 1
}

# migrate NAME GUEST [send options]: a whole migration; checks both summaries.
migrate() {
	local n=$1 guest=$2 rc
	shift 2
	start_recv "$n" --pin "$PIN" || { bad "$n: receiver did not start: $(cat "$T/$n-recv.err")"; return; }
	ip netns exec "$RXE_A_NS" "$RMIG" send --json $SLOW --device "$RXE_A_DEV" --pin "$PIN" \
		--backend "$guest" "$@" "$RXE_B_IP:$PORT" >"$T/$n-send.out" 2>"$T/$n-send.err"
	rc=$?
	wait "$RECV_PID"
	local rrc=$?
	local want="migrated/rdma/${WANT_PIN:-$PIN}/true/false/off"
	for side in send recv; do
		local f="$T/$n-$side.out"
		local got
		got="$(field "$f" result)/$(field "$f" transport)/$(field "$f" pin)/$(field "$f" verified)"
		got="$got/$(field "$f" encrypted)/$(field "$f" tls)"
		if [ "$got" = "$want" ]; then
			ok "$n $side: $got"
		else
			bad "$n $side: got $got, want $want (exit $rc/$rrc): $(cat "$T/$n-$side.err") $(jq -c 'select(.event=="failover")' "$f" 2>/dev/null)"
		fi
	done
	[ "$(field "$T/$n-recv.out" guest_running)" = true ] && ok "$n: guest runs on the destination" ||
		bad "$n: guest not running on the destination"
	echo "   $n: $(jq -c 'select(.event=="summary") | {rounds,total_ms,downtime_ms,bytes_sent,channels}' "$T/$n-send.out")"
}

echo "--- rmig info"
"$RMIG" info | tee "$T/info"
for d in "$RXE_A_DEV" "$RXE_B_DEV"; do
	grep -q "$d" "$T/info" && ok "rmig info lists $d" || bad "rmig info does not list $d"
done

GUEST=sim:size=128M,dirty-rate=3000,hot=10%,zero=50%,seed=7
PIN=all migrate pin-all "$GUEST"
PIN=staging migrate pin-staging "$GUEST"

# --- --pin=all registers in chunks while the sender writes ---------------------
# The destination registers each 8 MiB chunk 150 ms late (after the first):
# the sender waits at every chunk for its key, read from the destination's
# key table, and every page still lands where it belongs: all of memory
# digested and compared during the pause (--verify=full).
RMIG_TEST_REG_DELAY_MS=150 PIN=all migrate pin-all-late "$GUEST" --verify=full

# The destination's 4th chunk cannot be registered (a failure injected
# there, as the memory lock limit or the device would refuse it): the
# sender stops at that chunk, and as after any failure of a data channel
# fails over to TCP (the failover link), naming the destination's reason;
# the migration completes there, verified.
RMIG_TEST_REG_FAIL_AT=3 start_recv reg-fail --pin all || bad "reg-fail: receiver did not start"
ip netns exec "$RXE_A_NS" "$RMIG" send --json $SLOW --device "$RXE_A_DEV" --pin all \
	--backend "$GUEST" "$RXE_B_IP:$PORT" >"$T/reg-fail-send.out" 2>"$T/reg-fail-send.err"
rc=$?
wait "$RECV_PID"
got="$rc/$(field "$T/reg-fail-send.out" result)/$(field "$T/reg-fail-send.out" transport)/$(field "$T/reg-fail-send.out" verified)"
reason=$(jq -r 'select(.event=="failover") | .reason' "$T/reg-fail-send.out" 2>/dev/null)
[ "$got" = 0/migrated/tcp/true ] && grep -q 'could not register its guest memory' <<<"$reason" &&
	ok "reg-fail: failed over to tcp, verified, the reason named: $reason" ||
	bad "reg-fail: $got, failover reason: ${reason:-none} $(cat "$T/reg-fail-send.err")"

# --- NUMA: guest on node 1, staging pools and workers follow it -------------
if [ "$(numactl -H | awk '/^available:/ { print $2 }')" -ge 2 ]; then
	node1_cpus=$(cat /sys/devices/system/node/node1/cpulist)
	PIN=staging
	start_recv numa --pin staging || bad "numa: receiver did not start"
	# Slow enough (rate-limited) to look at the processes mid-migration.
	ip netns exec "$RXE_A_NS" "$RMIG" send --json $SLOW --device "$RXE_A_DEV" --pin staging \
		--max-bandwidth 8M --backend sim:size=64M,dirty-rate=0,zero=0%,node=1 \
		"$RXE_B_IP:$PORT" >"$T/numa-send.out" 2>"$T/numa-send.err" &
	SEND_PID=$!
	# Up to 60 s: a loaded host (two emulated VMs at once) can take that
	# long; looking before pre-copy would find no channels yet.
	for _ in $(seq 600); do
		grep -q '"event":"round"\|"phase":"pre-copy"' "$T/numa-send.out" 2>/dev/null && break
		sleep 0.1
	done
	grep -q '"event":"round"\|"phase":"pre-copy"' "$T/numa-send.out" ||
		bad "numa: the sender did not reach pre-copy within 60 s"
	sleep 2
	# numa_sample PID: "THREADS PAGES": threads allowed only on node 1's
	# cpus, and pages resident on node 1 in mappings bound there (counting
	# the mappings instead was flaky: the kernel merges adjacent ones of the
	# same policy, the two channel pools into one).
	numa_sample() {
		local n=0 st
		for st in /proc/"$1"/task/*/status; do
			[ "$(awk '/^Cpus_allowed_list/ { print $2 }' "$st" 2>/dev/null)" = "$node1_cpus" ] &&
				n=$((n + 1))
		done
		echo "$n $(awk '/bind:1 / { for (i = 1; i <= NF; i++) if ($i ~ /^N1=/) p += substr($i, 4) } END { print p + 0 }' \
			/proc/"$1"/numa_maps 2>/dev/null || echo 0)"
	}
	for who in send:$SEND_PID recv:$RECV_PID; do
		name=${who%%:*} pid=${who#*:}
		# sender: the guest (16384 pages, all data) and the channel pools
		# on top; receiver: its channel pools.
		want=1
		[ "$name" = send ] && want=16385
		# A few looks, half a second apart (a loaded emulated VM): the best.
		on_node1=0 bound=0
		for _ in 1 2 3 4 5; do
			read -r t b <<<"$(numa_sample "$pid")"
			[ "${t:-0}" -gt "$on_node1" ] && on_node1=$t
			[ "${b:-0}" -gt "$bound" ] && bound=$b
			[ "$on_node1" -ge 1 ] && [ "$bound" -ge "$want" ] && break
			sleep 0.5
		done
		gone=""
		[ -d /proc/"$pid" ] || gone=" (process $pid is gone: $(tail -n 2 "$T/numa-$name.err" 2>/dev/null | tr '\n' ' '))"
		[ "$on_node1" -ge 1 ] && ok "numa $name: $on_node1 threads on node 1 (cpus $node1_cpus)" ||
			bad "numa $name: no thread on node 1's cpus $node1_cpus$gone"
		[ "$bound" -ge "$want" ] && ok "numa $name: $bound pages bound to node 1" ||
			bad "numa $name: $bound pages bound to node 1, want >= $want$gone: $(grep bind: /proc/"$pid"/numa_maps 2>/dev/null)"
	done
	wait "$SEND_PID"
	wait "$RECV_PID"
	[ "$(field "$T/numa-send.out" result)/$(field "$T/numa-send.out" verified)" = migrated/true ] &&
		ok "numa: migrated, verified" || bad "numa: $(cat "$T/numa-send.err")"
else
	bad "numa: the VM has one NUMA node (boot it with vm.sh --numa)"
fi

# --- RLIMIT_MEMLOCK: checked before pinning, not discovered half-way --------
# A receiver without CAP_IPC_LOCK and a 16 MiB limit cannot pin a 64 MiB
# guest: --pin=auto falls back to staging and says why; --pin=all refuses
# with the limit named, and the sender's guest never stops.
LIMITED="prlimit --memlock=16777216 setpriv --bounding-set -ipc_lock --inh-caps -ipc_lock"
for mode in auto all; do
	ip netns exec "$RXE_B_NS" $LIMITED "$RMIG" recv --listen "$RXE_B_IP:0" --json $SLOW \
		--pin "$mode" >"$T/ml-$mode-recv.out" 2>"$T/ml-$mode-recv.err" &
	RECV_PID=$!
	PORT=""
	for _ in $(seq 200); do
		PORT=$(jq -r 'select(.event=="listening") | .port' "$T/ml-$mode-recv.out" 2>/dev/null)
		[ -n "$PORT" ] && break
		sleep 0.05
	done
	ip netns exec "$RXE_A_NS" "$RMIG" send --json $SLOW --device "$RXE_A_DEV" --pin "$mode" \
		--backend sim:size=64M,dirty-rate=1000 "$RXE_B_IP:$PORT" \
		>"$T/ml-$mode-send.out" 2>"$T/ml-$mode-send.err"
	rc=$?
	wait "$RECV_PID"
	if [ "$mode" = auto ]; then
		got="$rc/$(field "$T/ml-auto-send.out" pin)/$(field "$T/ml-auto-send.out" verified)"
		[ "$got" = 0/staging/true ] && grep -q 'RLIMIT_MEMLOCK' "$T/ml-auto-recv.out" &&
			ok "memlock auto: fell back to staging, verified, reason names RLIMIT_MEMLOCK" ||
			bad "memlock auto: $got $(grep transport "$T/ml-auto-recv.out")"
	else
		[ "$rc" != 0 ] && grep -q 'RLIMIT_MEMLOCK' "$T/ml-all-send.err" &&
			[ "$(field "$T/ml-all-send.out" result)" != migrated ] &&
			ok "memlock all: refused before any memory moved: $(cat "$T/ml-all-send.err")" ||
			bad "memlock all: exit $rc, $(cat "$T/ml-all-send.err")"
	fi
done

# --- auto picks rdma ----------------------------------------------------------
# pin auto: guest memory can be registered here, so it is zero copy.
PIN=auto WANT_PIN=all migrate auto "$GUEST" --transport auto
grep -q '"event":"transport","transport":"rdma"' "$T/auto-send.out" &&
	ok "auto: chose rdma" || bad "auto: $(grep transport "$T/auto-send.out")"

rm -rf "$T"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
