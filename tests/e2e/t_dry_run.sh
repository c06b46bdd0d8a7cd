#!/bin/bash
# rmig send --dry-run, the preflight: it says whether a migration would fit
# and converge, or why not, and changes nothing. An idle guest: would
# converge (exit 0) with a measured bandwidth and a round-1 estimate; the
# receiver's memory never grows by the probe (it drops the pages), the
# source guest never pauses, and the same receiver then takes the real
# migration. A guest dirtying faster than --max-bandwidth: would not
# converge (exit 1), the reason naming both rates. A receiver that cannot
# hold the guest (its memory and swap) or whose disk is another size:
# would not fit, with its reason. A wrong key fails as a real send does; a
# receiver from before dry runs (tests/tools/fakepeer old-dest) is told
# nothing about the guest.
. "$(dirname "$0")/lib.sh"
FAKEPEER=${FAKEPEER:-$(dirname "$RMIG")/tests/fakepeer}
[ -x "$FAKEPEER" ] || fail "$FAKEPEER not built (make unit)"

peak_rss_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

# dry_run NAME SPEC [send options...]: rmig send --dry-run --json to PORT,
# bounded in time; its exit code in SRC.
dry_run() {
	local name=$1 spec=$2
	shift 2
	SRC=0
	timeout 60 "$RMIG" send --dry-run --json --backend "$spec" "$@" 127.0.0.1:$PORT \
		>"$T/$name.out" 2>"$T/$name.err" || SRC=$?
}

# 1. An idle guest (every page data: a probe written anywhere would show
# in the receiver's memory), against a receiver that stays for more.
start_recv idle-recv --backend sim
base=$(peak_rss_kib "$RECV_PID")
dry_run idle sim:size=256M,zero=0,dirty-rate=200
expect_eq "idle: exit" "$SRC" 0
expect_eq "idle: result" "$(summary "$T/idle.out" result)" dry_run
expect_eq "idle: would fit" "$(summary "$T/idle.out" would_fit)" true
expect_eq "idle: would converge" "$(summary "$T/idle.out" would_converge)" true
bw=$(summary "$T/idle.out" probe_bandwidth)
r1=$(summary "$T/idle.out" round1_ms)
probe=$(summary "$T/idle.out" probe_bytes)
awk -v b="$bw" 'BEGIN { exit !(b > 1e6) }' || fail "idle: probe bandwidth $bw B/s"
# Round 1 is the guest at the probe's rate, within rounding.
awk -v r="$r1" -v b="$bw" 'BEGIN { want = 268435456 / b * 1000; exit !(r >= want - 2 && r <= want + 2) }' ||
	fail "idle: round 1 estimate $r1 ms at $bw B/s for 256 MiB"
[ "$probe" -ge $((1 << 20)) ] && [ "$probe" -le $((65 << 20)) ] || fail "idle: probe of $probe bytes (64 MiB of pages and their headers at most)"
expect_eq "idle: estimated rounds" "$(summary "$T/idle.out" estimated_rounds)" 1
expect_eq "idle: source guest running" "$(summary "$T/idle.out" guest_running)" true
grep -q '"phase":"stop-and-copy"' "$T/idle.out" && fail "idle: the source paused its guest"
phases=$(jq -r 'select(.event=="phase") | .phase' "$T/idle.out" | xargs)
expect_eq "idle: source phases" "$phases" "connecting pre-copy dry-run"
# The receiver: served a dry run, not a migration, and read the probe
# into a scratch buffer only.
for _ in $(seq 100); do
	grep -q '"result":"dry_run"' "$T/idle-recv.out" && break
	sleep 0.05
done
expect_eq "idle: receiver's result" "$(summary "$T/idle-recv.out" result)" dry_run
expect_eq "idle: receiver's bytes" "$(summary "$T/idle-recv.out" bytes_sent)" "$probe"
grep -q '"phase":"migrated"' "$T/idle-recv.out" && fail "idle: the receiver says migrated"
kill -0 "$RECV_PID" 2>/dev/null || fail "idle: the receiver stopped after the dry run"
grow=$(($(peak_rss_kib "$RECV_PID") - base))
[ "$grow" -lt $((16 << 10)) ] ||
	fail "idle: the receiver's peak memory grew by $grow KiB for a $probe-byte probe"
# The same receiver, still waiting, takes the migration itself.
rc=0
timeout 60 "$RMIG" send --json --backend sim:size=256M,zero=0,dirty-rate=200 127.0.0.1:$PORT \
	>"$T/real.out" 2>"$T/real.err" || rc=$?
expect_eq "real migration after the dry run: exit" "$rc" 0
wait_pid "$RECV_PID" 30
expect_eq "real migration: receiver exit" "$RC" 0
expect_eq "real migration: receiver's result" "$(summary "$T/idle-recv.out" result)" migrated

# 2. A guest dirtying faster than the bandwidth allowed: would not converge
# (a policy that does not throttle; with the default one, the forecast says
# how hard the guest would be throttled).
start_recv busy-recv --backend sim --keep-listening
BUSY=sim:size=128M,hot=100%,dirty-rate=20000
t0=$(millis)
dry_run busy $BUSY --max-bandwidth 4M --on-no-converge abort
ms=$(($(millis) - t0))
expect_eq "busy: exit" "$SRC" 1
expect_eq "busy: result" "$(summary "$T/busy.out" result)" dry_run
expect_eq "busy: would fit" "$(summary "$T/busy.out" would_fit)" true
expect_eq "busy: would converge" "$(summary "$T/busy.out" would_converge)" false
grep -q "would not converge: the guest dirties [0-9]* pages/s (.* MB/s), faster than the .* MB/s the link carried" \
	"$T/busy.err" || fail "busy: the reason does not name the dirty rate against the bandwidth"
bw=$(summary "$T/busy.out" probe_bandwidth)
awk -v b="$bw" 'BEGIN { exit !(b > 0 && b < 6e6) }' || fail "busy: probe at $bw B/s past --max-bandwidth 4M"
[ "$ms" -lt 10000 ] || fail "busy: the dry run took $ms ms"
expect_eq "busy: source guest running" "$(summary "$T/busy.out" guest_running)" true
expect_eq "busy: never throttled" "$(summary "$T/busy.out" throttle_pct)" 0
dry_run throttled $BUSY --max-bandwidth 4M
expect_eq "busy, throttle policy: exit" "$SRC" 0
expect_eq "busy, throttle policy: would converge" "$(summary "$T/throttled.out" would_converge)" true
pct=$(summary "$T/throttled.out" estimated_throttle_pct)
[ "$pct" -ge 20 ] || fail "busy, throttle policy: estimated throttle $pct%"
summary "$T/throttled.out" reason | grep -q "would converge only with the guest throttled to $pct%" ||
	fail "busy, throttle policy: the line does not say the guest would be throttled"
expect_eq "busy, throttle policy: never throttled now" "$(summary "$T/throttled.out" throttle_pct)" 0
kill "$RECV_PID" 2>/dev/null

# 3. A receiver that cannot hold the guest: twice this host's memory and
# swap (all zero at the source, so sparse there; not an address-space
# limit, which a sanitizer's shadow memory would exceed first).
host_mib=$(awk '/^(MemTotal|SwapTotal):/ { k += $2 } END { print int(k / 1024) }' /proc/meminfo)
big=$(((host_mib * 2 / 1024 + 1) * 1024))
start_recv small-recv --backend sim --accept-timeout-ms 20000
dry_run small "sim:size=${big}M,zero=100%,dirty-rate=0"
expect_eq "small: exit" "$SRC" 1
expect_eq "small: result" "$(summary "$T/small.out" result)" dry_run
expect_eq "small: would fit" "$(summary "$T/small.out" would_fit)" false
grep -q "dry run: would not fit: cannot take this guest: sim: a $big MiB guest does not fit in this host's .* MiB of memory and swap" \
	"$T/small.err" || fail "small: the reason does not name the memory available"
expect_eq "small: nothing probed" "$(summary "$T/small.out" bytes_sent)" 0
kill "$RECV_PID" 2>/dev/null

# A receiver whose disk is another size: the DISKS refusal, nothing opened
# for writing.
truncate -s 4M "$T/small.img"
start_recv disk-recv --backend "sim:disk-file=$T/small.img" --accept-timeout-ms 20000
dry_run disk sim:size=16M,disk=8M
expect_eq "disk: exit" "$SRC" 1
expect_eq "disk: would fit" "$(summary "$T/disk.out" would_fit)" false
grep -q "would not fit: .*disk .* is 4194304 bytes, the source's is 8388608" "$T/disk.err" ||
	fail "disk: the reason does not name the disk's size"
kill "$RECV_PID" 2>/dev/null

# 4. A wrong key: refused at authentication, as a real send.
head -c 32 /dev/urandom >"$T/key_a" && chmod 600 "$T/key_a"
head -c 32 /dev/urandom >"$T/key_b" && chmod 600 "$T/key_b"
start_recv key-recv --backend sim --psk-file "$T/key_a" --accept-timeout-ms 3000
dry_run key sim:size=16M --psk-file "$T/key_b"
expect_eq "wrong key: exit" "$SRC" 1
expect_eq "wrong key: result" "$(summary "$T/key.out" result)" failed
grep -q "does not hold our pre-shared key" "$T/key.err" || fail "wrong key: the sender's message"
wait_pid "$RECV_PID" 15

# 5. A receiver from before dry runs: the source stops after HELLO.
fakepeer_dest oldpeer old-dest
OLD_PID=$FAKE_PID PORT=$FAKE_PORT
dry_run old sim:size=16M
expect_eq "old receiver: exit" "$SRC" 1
grep -q "does not support dry runs (an older rmig): nothing about the guest was sent" "$T/old.err" ||
	fail "old receiver: the sender's message"
wait_pid "$OLD_PID" 15
expect_eq "old receiver: told by an ABORT before anything else" "$RC" 0
grep -q "^ABORT: .*does not support dry runs" "$T/oldpeer.out" || fail "old receiver: what it was told"

pass "would converge at $(summary "$T/idle.out" probe_bandwidth) B/s without touching the receiver, then migrated there; would not converge, not fit (memory, disk), wrong key and an older receiver each said"
