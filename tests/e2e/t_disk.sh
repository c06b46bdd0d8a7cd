#!/bin/bash
# A guest's disk migrates with its memory (the disk payload), sim guests with
# a disk image in a file on each side:
#  1. idle: the destination image (pre-filled with other bytes) ends equal
#     to the source's, byte for byte (cmp), zero blocks sent without data,
#     verified on both sides, audit passed;
#  2. dirtying: the guest writes its disk during the migration: several
#     rounds, the images equal at the pause;
#  3. write-heavy: the guest writes its disk far faster than the link moves
#     (--max-bandwidth): its disk I/O is throttled, the migration converges,
#     the images are equal;
#  4. a dirty log that misses a write (disk-lie): the source's audit after
#     the switch-over says FAILED and names the disk;
#  5. block bytes corrupted in flight: the disk's digests roll it back;
#  6. the link cut mid-migration: a failover, the images still equal.
# Bad input, each one clear line, the source guest running, its image
# untouched: a destination image smaller than the source's, missing,
# read-only (a read-only bind mount), the same file as the source's
# (shared storage), a receiver whose backend takes no disks, a disk that
# fails I/O mid-round and at the pause (the destination then says its copy
# is not usable), a receiver killed mid-migration; a hostile source's
# blocks before DISKS and a 64 TiB disk; bad specs on either side.
. "$(dirname "$0")/lib.sh"
command -v cmp >/dev/null || fail "cmp is missing"
SIZE=64M
BYTES=$((64 << 20))

# new_image PATH MIB: an image of other bytes than any source's.
new_image() {
	head -c $(($2 << 20)) /dev/urandom >"$1" || fail "cannot write $1"
}
# digest PATH
digest() { sha256sum "$1" | cut -d' ' -f1; }

# run NAME SRC_SPEC DST_IMAGE [send options...]: one migration that must
# succeed; JSON in $T/NAME.{send,recv}.out.
# The source's exit code must be WANT_RC (default 0).
run() {
	local n=$1 spec=$2 dst=$3 rc=0
	shift 3
	start_recv "$n.recv" --backend "sim:disk-file=$dst"
	"$RMIG" send --json --backend "$spec" "$@" 127.0.0.1:$PORT >"$T/$n.send.out" \
		2>"$T/$n.send.err" || rc=$?
	expect_eq "$n: rmig send exit code" "$rc" "${WANT_RC:-0}"
	wait_pid "$RECV_PID" 120
	expect_eq "$n: receiver exit code" "$RC" 0
	expect_eq "$n: result" "$(summary "$T/$n.send.out" result)" migrated
	expect_eq "$n: disks (source)" "$(summary "$T/$n.send.out" disks)" 1
	expect_eq "$n: disk bytes (destination)" "$(summary "$T/$n.recv.out" disk_bytes)" $BYTES
	expect_eq "$n: disks verified (destination)" \
		"$(summary "$T/$n.recv.out" disks_verified)" true
	expect_eq "$n: disks verified (source)" "$(summary "$T/$n.send.out" disks_verified)" true
	expect_eq "$n: guest running at the destination" \
		"$(summary "$T/$n.recv.out" guest_running)" true
}

# same_images NAME SRC DST: the source's image (paused since the switch-over,
# so as it was at the pause) equals the destination's.
same_images() {
	cmp -s "$2" "$3" || fail "$1: the images differ after the migration: $(cmp "$2" "$3" | head -1)"
}

# 1. Idle.
new_image "$T/idle.dst" 64
run idle "sim:size=64M,dirty-rate=0,disk=$SIZE,disk-file=$T/idle.src,disk-fill=50%" "$T/idle.dst"
same_images idle "$T/idle.src" "$T/idle.dst"
zero=$(summary "$T/idle.send.out" disk_zero_blocks)
data=$(summary "$T/idle.send.out" disk_blocks_sent)
[ "$zero" -gt 200 ] && [ "$data" -gt 200 ] ||
	fail "idle: a half-filled disk sent $data blocks with data and $zero as zero"
expect_eq "idle: audit" "$(summary "$T/idle.send.out" audit)" passed
grep -q 'audit passed: disk disk0' "$T/idle.send.out" || fail "idle: no audit of the disk"

# 2. Dirtying: 2000 writes/s of 4 KiB while memory is dirtied too.
new_image "$T/dirty.dst" 64
run dirty "sim:size=128M,dirty-rate=5000,disk=$SIZE,disk-file=$T/dirty.src,disk-write-rate=2000" \
	"$T/dirty.dst"
same_images dirty "$T/dirty.src" "$T/dirty.dst"
rounds=$(summary "$T/dirty.send.out" rounds)
[ "$rounds" -ge 2 ] || fail "dirtying: $rounds rounds: the writes did not show"
total=$(summary "$T/dirty.send.out" disk_blocks_sent)
[ "$total" -gt $((BYTES / 65536 / 2)) ] || fail "dirtying: only $total blocks sent"

# 3. Write-heavy: 20000 writes/s (80 MB/s) into 4 KiB blocks over a 10 MB/s link.
new_image "$T/heavy.dst" 64
run heavy "sim:size=64M,dirty-rate=0,disk=$SIZE,disk-file=$T/heavy.src,disk-block=4K,disk-write-rate=20000" \
	"$T/heavy.dst" --max-bandwidth 10M --max-rounds 40
same_images heavy "$T/heavy.src" "$T/heavy.dst"
limit=$(summary "$T/heavy.send.out" disk_throttle_bps)
[ "$limit" -gt 0 ] || fail "heavy: the guest's disk writes were never throttled"
grep -q 'disk writes are limited to' "$T/heavy.send.out" || fail "heavy: no warning says the disk was throttled"
expect_eq "heavy: forced switch-over" "$(summary "$T/heavy.send.out" forced)" false

# 4. A dirty log that misses a write: the audit catches it.
new_image "$T/lie.dst" 64
WANT_RC=5 run lie "sim:size=64M,dirty-rate=0,disk=$SIZE,disk-file=$T/lie.src,disk-lie=1" "$T/lie.dst"
expect_eq "lie: audit" "$(summary "$T/lie.send.out" audit)" failed
grep -q 'audit FAILED: 1 blocks of disk disk0' "$T/lie.send.out" ||
	fail "lie: the audit does not name the disk: $(grep audit "$T/lie.send.out" | tail -2)"

# 5. Block bytes corrupted in flight (tests/tools/faultproxy): the disk's
# digests catch it at COMPLETE, the migration rolls back.
new_image "$T/corrupt.dst" 32
start_recv corrupt.recv --backend "sim:disk-file=$T/corrupt.dst"
start_faultproxy corrupt --corrupt-blocks
"$RMIG" send --json --backend "sim:size=32M,dirty-rate=0,disk=32M,disk-file=$T/corrupt.src" \
	--max-bandwidth 8M --transport tcp 127.0.0.1:$PPORT >"$T/corrupt.send.out" \
	2>"$T/corrupt.send.err" &
SEND_PID=$!
PIDS="$PIDS $SEND_PID"
sleep 0.5
kill -USR2 "$PROXY_PID"
wait_pid "$SEND_PID" 60
expect_eq "corrupt: sender exit code" "$RC" 3
grep -q 'corrupted block data of BLOCKS frame' "$T/corrupt-proxy.err" || fail "corrupt: no block was corrupted"
grep -q "verification failed: disk disk0 digest" "$T/corrupt.send.err" ||
	fail "corrupt: not caught by the disk's digests: $(cat "$T/corrupt.send.err")"
wait_pid "$RECV_PID" 20
[ "$RC" = 0 ] && fail "corrupt: the receiver started the guest"
kill "$PROXY_PID" 2>/dev/null

# 6. The link cut mid-migration (after 24 MB of data, in round 1): the
# sender fails over (TCP again, through the proxy) and the disk's
# unacknowledged round is sent again; the images end equal. The disk stays
# idle: a guest rewriting it would send the lost blocks anyway.
new_image "$T/cut.dst" 64
start_recv cut.recv --backend "sim:disk-file=$T/cut.dst"
start_faultproxy cut --cut-after 24000000
rc=0
"$RMIG" send --json --backend "sim:size=32M,dirty-rate=0,disk=$SIZE,disk-file=$T/cut.src,disk-write-rate=0" \
	--max-bandwidth 20M --transport tcp --failover tcp 127.0.0.1:$PPORT >"$T/cut.send.out" \
	2>"$T/cut.send.err" || rc=$?
expect_eq "cut: sender exit code" "$rc" 0
wait_pid "$RECV_PID" 30
expect_eq "cut: receiver exit code" "$RC" 0
grep -q 'cut after' "$T/cut-proxy.err" || fail "cut: the proxy never cut the link"
[ "$(summary "$T/cut.send.out" failovers)" -ge 1 ] || fail "cut: no failover"
expect_eq "cut: disks verified" "$(summary "$T/cut.recv.out" disks_verified)" true
same_images cut "$T/cut.src" "$T/cut.dst"
kill "$PROXY_PID" 2>/dev/null

# refused NAME SRC_SPEC RECV_SPEC PATTERN [recv command prefix...]: refused
# before any data moved (expect_refused), the source image unchanged.
refused() {
	local n=$1 spec=$2 rspec=$3 pat=$4 before
	shift 4
	"$@" "$RMIG" recv --listen 127.0.0.1:0 --json --backend "$rspec" >"$T/$n.recv.out" \
		2>"$T/$n.recv.err" &
	RECV_PID=$!
	PIDS="$PIDS $RECV_PID"
	wait_port "$n.recv"
	before=$(digest "$T/src.img")
	expect_refused "$n" "$spec" "$pat"
	expect_eq "$n: source image unchanged" "$(digest "$T/src.img")" "$before"
	[ "$(grep -c '^rmig: ' "$T/$n.err")" -le 2 ] || fail "$n: more than one error line: $(cat "$T/$n.err")"
}
SRC="sim:size=64M,dirty-rate=0,disk=$SIZE,disk-file=$T/src.img"
new_image "$T/src.img" 64 # an existing image, used as it is
new_image "$T/small.img" 32
refused small "$SRC" "sim:disk-file=$T/small.img" \
	"disk disk0: $T/small.img is 33554432 bytes, the source's is 67108864"
# A missing image: the receiver refuses it at its start.
"$RMIG" recv --listen 127.0.0.1:0 --backend "sim:disk-file=$T/none.img" >/dev/null \
	2>"$T/none.err" && fail "missing: a missing disk-file was taken"
grep -q "disk file $T/none.img: No such file or directory" "$T/none.err" ||
	fail "missing: $(cat "$T/none.err")"
[ "$(wc -l <"$T/none.err")" -eq 1 ] || fail "missing: more than one line: $(cat "$T/none.err")"
refused shared "$SRC" "sim:disk-file=$T/src.img" "disk disk0 is the same storage on both sides"
mkdir "$T/ro" && new_image "$T/ro/dst.img" 64
# A read-only image (on a read-only bind mount): the receiver refuses it at
# its start, before any guest comes.
rc=0
unshare -m sh -c "mount --bind -o ro '$T/ro' '$T/ro' && exec \"\$0\" \"\$@\"" \
	"$RMIG" recv --listen 127.0.0.1:0 --backend "sim:disk-file=$T/ro/dst.img" >/dev/null \
	2>"$T/ro.err" || rc=$?
[ "$rc" -ne 0 ] || fail "readonly: a read-only disk-file was taken"
grep -q "disk file $T/ro/dst.img: Read-only file system (the disk must be writable)" "$T/ro.err" ||
	fail "readonly: $(cat "$T/ro.err")"
refused nodisks "$SRC" "uffd:size=64M" "backend uffd takes none"

# A hostile source (tests/tools/fakepeer): blocks before any DISKS, a disk
# of 64 TiB for a receiver that would hold it in memory. Refused with an
# ABORT naming it; the receiver exits by itself, never crashes.
FAKEPEER=${FAKEPEER:-$(dirname "$RMIG")/tests/fakepeer}
[ -x "$FAKEPEER" ] || fail "$FAKEPEER not built (make unit)"
for c in "blocks-first:BLOCKS frame before DISKS" "disks-huge:does not fit in this host's"; do
	start_recv "${c%%:*}" --backend sim
	out=$(timeout 30 "$FAKEPEER" 127.0.0.1 "$PORT" "${c%%:*}") ||
		fail "${c%%:*}: the receiver did not refuse: $out"
	grep -q -- "${c#*:}" <<<"$out" || fail "${c%%:*}: refused for another reason: $out"
	wait_pid "$RECV_PID" 20
	[ "$RC" -ne 0 ] && [ "$RC" -lt 128 ] || fail "${c%%:*}: receiver exit code $RC"
done

# Bad specs, each one line before anything starts: a receiver's disk-file
# that is a directory (at its start, not when a guest comes), disk=0, and a
# disk= the source refuses must leave no image behind.
rc=0
"$RMIG" recv --listen 127.0.0.1:0 --backend "sim:disk-file=$T" >/dev/null 2>"$T/dir.err" || rc=$?
[ "$rc" -ne 0 ] || fail "a directory as the receiver's disk-file was taken"
grep -q "disk file $T: Is a directory" "$T/dir.err" || fail "directory: $(cat "$T/dir.err")"
[ "$(wc -l <"$T/dir.err")" -eq 1 ] || fail "directory: more than one line: $(cat "$T/dir.err")"
"$RMIG" send --backend "sim:size=16M,disk=0" 127.0.0.1:9 >/dev/null 2>"$T/zero.err" &&
	fail "disk=0 was taken"
grep -q "disk=0: a disk needs a size" "$T/zero.err" || fail "disk=0: $(cat "$T/zero.err")"
"$RMIG" send --backend "sim:size=16M,disk=4097,disk-file=$T/odd.img" 127.0.0.1:9 >/dev/null \
	2>"$T/odd.err" && fail "disk=4097 was taken"
grep -q "not a non-zero multiple of 4 KiB" "$T/odd.err" || fail "disk=4097: $(cat "$T/odd.err")"
[ ! -e "$T/odd.img" ] || fail "a refused disk= left $T/odd.img behind"

# I/O errors at the source: mid-round (the 20th read), at the pause.
# io NAME FAIL: the migration rolls back naming the disk; the guest runs on.
io() {
	local n=$1
	new_image "$T/$n.dst" 64
	start_recv "$n.recv" --backend "sim:disk-file=$T/$n.dst"
	rc=0
	"$RMIG" send --json --backend "$SRC,disk-fail=$2" 127.0.0.1:$PORT >"$T/$n.send.out" \
		2>"$T/$n.send.err" || rc=$?
	[ "$rc" -ne 0 ] || fail "$n: a failing disk migrated"
	wait_pid "$RECV_PID" 60
	[ "$RC" -ne 0 ] || fail "$n: the receiver exited 0"
	expect_eq "$n: result" "$(summary "$T/$n.send.out" result)" rolled_back
	expect_eq "$n: source guest running" "$(summary "$T/$n.send.out" guest_running)" true
	grep -q "reading disk disk0 at offset [0-9]*: Input/output error" "$T/$n.send.err" ||
		fail "$n: the error does not name the disk and the I/O error: $(cat "$T/$n.send.err")"
	grep -q 'disks here (disk0) hold a partial copy and are not usable' "$T/$n.recv.out" ||
		fail "$n: the destination does not say its disk is not usable"
}
io midround 20
io pause pause,disk-write-rate=500

# An I/O error at the destination (its 5th disk write) is its disk's, not the
# link's: no failover (a new link would write to the same disk), the
# migration rolls back and the source is told which disk and where.
new_image "$T/wfail.dst" 64
start_recv wfail.recv --backend "sim:disk-file=$T/wfail.dst,disk-fail=5"
rc=0
"$RMIG" send --json --backend "$SRC" 127.0.0.1:$PORT >"$T/wfail.send.out" 2>"$T/wfail.send.err" ||
	rc=$?
expect_eq "destination write failure: send exit code" "$rc" 3
wait_pid "$RECV_PID" 60
expect_eq "destination write failure: result" "$(summary "$T/wfail.send.out" result)" rolled_back
expect_eq "destination write failure: failovers" "$(summary "$T/wfail.send.out" failovers)" 0
expect_eq "destination write failure: source guest running" \
	"$(summary "$T/wfail.send.out" guest_running)" true
grep -v '^{' "$T/wfail.send.err" | tail -1 | grep -q "writing disk disk0 at offset [0-9]*: Input/output error" ||
	fail "destination write failure: the source's error does not name the disk: $(cat "$T/wfail.send.err")"
jq -s -e 'map(select(.event=="warning" and (.detail | test("resume")))) | length == 0' \
	"$T/wfail.recv.out" >/dev/null || fail "destination write failure: the receiver waited for a resume"

# A receiver killed mid-migration: the source runs on, its image untouched.
start_recv killed.recv --backend "sim:disk-file=$T/idle.dst"
before=$(digest "$T/src.img")
"$RMIG" send --json --backend "$SRC" --max-bandwidth 8M 127.0.0.1:$PORT \
	>"$T/killed.send.out" 2>"$T/killed.send.err" &
SEND_PID=$!
PIDS="$PIDS $SEND_PID"
# Kill it once 4 MB went (of 128 MB at 8 MB/s).
for _ in $(seq 200); do
	jq -s -e 'map(select(.event=="progress" and .transferred > 4000000)) | length > 0' \
		"$T/killed.send.out" >/dev/null 2>&1 && break
	sleep 0.05
done
jq -s -e 'map(select(.event=="progress" and .transferred > 4000000)) | length > 0' \
	"$T/killed.send.out" >/dev/null || fail "killed: the migration did not get going in 10 s"
kill -9 "$RECV_PID"
wait_pid "$SEND_PID" 60
expect_eq "killed: result" "$(summary "$T/killed.send.out" result)" rolled_back
grep -q 'lost peer' "$T/killed.send.err" || fail "killed: the error does not say the peer was lost"
expect_eq "killed: source guest running" "$(summary "$T/killed.send.out" guest_running)" true
expect_eq "killed: source image unchanged" "$(digest "$T/src.img")" "$before"

pass "disk images equal after idle, dirtying and throttled migrations; audit, bad input and failures"
