# Shared helpers for the end-to-end tests: each test is a shell script that
# runs two real rmig processes over loopback and asserts what a user would
# check in their JSON output. Source it; then call the helpers below.
#   exit 0 = pass, 1 = fail, 77 = skip (run.sh counts skips as failures in CI).
set -u
RMIG=${RMIG:-build/rmig}
case $RMIG in /*) ;; *) RMIG=$(pwd)/$RMIG ;; esac
T=$(mktemp -d "${TMPDIR:-/tmp}/rmig-e2e.XXXXXX")
PIDS=""
NAME=$(basename "$0" .sh)

cleanup() {
	for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
	wait 2>/dev/null
	if [ "${KEEP:-0}" = 1 ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT

fail() {
	echo "FAIL $NAME: $*"
	for f in "$T"/*.out "$T"/*.err; do
		[ -s "$f" ] || continue
		echo "--- $(basename "$f")"
		tail -n 15 "$f"
	done
	exit 1
}

skip() {
	echo "SKIP $NAME: $*"
	exit 77
}

pass() {
	echo "PASS $NAME${1:+: $1}"
	exit 0
}

# start_recv NAME [rmig recv options...]: start a receiver on a free port in
# the background; sets PORT and RECV_PID. Output in $T/NAME.out / .err.
start_recv() {
	_n=$1
	shift
	"$RMIG" recv --listen 127.0.0.1:0 --json "$@" >"$T/$_n.out" 2>"$T/$_n.err" &
	RECV_PID=$!
	PIDS="$PIDS $RECV_PID"
	wait_port "$_n"
}

# wait_port NAME: wait for the receiver RECV_PID, writing JSON lines to
# $T/NAME.out, to report its listening port; sets PORT.
wait_port() {
	PORT=""
	for _i in $(seq 100); do
		PORT=$(jq -r 'select(.event=="listening") | .port' "$T/$1.out" 2>/dev/null | head -1)
		[ -n "$PORT" ] && return 0
		kill -0 "$RECV_PID" 2>/dev/null || fail "receiver exited before listening"
		sleep 0.05
	done
	fail "receiver did not report a listening port"
}

# summary FILE KEY: a field of the final JSON summary line in FILE.
summary() {
	jq -r "select(.event==\"summary\") | .$2 | tostring" "$1" 2>/dev/null | tail -1
}

# expect_eq WHAT ACTUAL WANTED
expect_eq() {
	[ "$2" = "$3" ] || fail "$1 is '$2', expected '$3'"
}

# wait_pid PID SECONDS: wait for a background process to end, at most
# SECONDS; sets RC to its exit code. Fails the test on timeout.
wait_pid() {
	_end=$(($(date +%s) + $2))
	while kill -0 "$1" 2>/dev/null; do
		[ "$(date +%s)" -ge "$_end" ] && fail "process $1 still running after $2 s"
		sleep 0.05
	done
	RC=0
	wait "$1" || RC=$?
}

# millis: wall-clock milliseconds.
millis() { date +%s%3N; }

# embed_counter_run EXAMPLE MIB: run an examples/embed_counter binary as
# receiver (any port, read from its "listening N" line) and sender of a MIB
# MiB guest; their output in $T/recv.out and $T/send.out, the receiver's
# exit code in RC.
embed_counter_run() {
	"$1" recv 0 >"$T/recv.out" 2>"$T/recv.err" &
	RECV_PID=$!
	PIDS="$PIDS $RECV_PID"
	PORT=""
	for _ in $(seq 100); do
		PORT=$(sed -n 's/^listening \([0-9]*\)$/\1/p' "$T/recv.out")
		[ -n "$PORT" ] && break
		kill -0 "$RECV_PID" 2>/dev/null || fail "receiver exited before listening"
		sleep 0.05
	done
	[ -n "$PORT" ] || fail "receiver did not print its port"
	"$1" send 127.0.0.1 "$PORT" "$2" >"$T/send.out" 2>"$T/send.err" ||
		fail "embed_counter send exited $?"
	wait_pid "$RECV_PID" 30
}

# qemu_guest_or_skip: tests/qemu's helpers, with the guest built; SKIP when
# QEMU or the kernel cannot be had at all, FAIL on any other problem.
qemu_guest_or_skip() {
	. "$(dirname "${BASH_SOURCE[0]}")/../qemu/guest.sh"
	guest_prepare
	case $? in
	0) ;;
	77) skip "$GUEST_ERROR" ;;
	*) fail "$GUEST_ERROR" ;;
	esac
}

# expect_refused NAME SPEC PATTERN: `rmig send --backend SPEC` to the
# receiver RECV_PID on PORT must be refused before anything is sent: exit 1,
# result failed, 0 bytes, the source guest still running, and PATTERN (grep)
# in its error; the receiver must exit non-zero too. Output in $T/NAME.*.
expect_refused() {
	_rc=0
	"$RMIG" send --json --backend "$2" 127.0.0.1:$PORT >"$T/$1.out" 2>"$T/$1.err" || _rc=$?
	expect_eq "send exit code ($2)" "$_rc" 1
	wait_pid "$RECV_PID" 30
	[ "$RC" -ne 0 ] || fail "the receiver exited 0 after refusing"
	grep -q -- "$3" "$T/$1.err" || fail "the source's error does not match '$3'"
	expect_eq "source result" "$(summary "$T/$1.out" result)" failed
	expect_eq "source guest running" "$(summary "$T/$1.out" guest_running)" true
	expect_eq "bytes sent" "$(summary "$T/$1.out" bytes_sent)" 0
}

# wait_phase FILE PHASE PID: until PID's JSON output FILE reports PHASE (its
# event loop runs then: a SIGINT before it would be lost, background jobs
# start with SIGINT ignored). At most 10 s.
wait_phase() {
	for _ in $(seq 200); do
		grep -q "\"phase\":\"$2\"" "$1" && return 0
		kill -0 "$3" 2>/dev/null || fail "process $3 exited before $2"
		sleep 0.05
	done
	fail "no $2 phase within 10 s"
}

# fakepeer_dest NAME MODE: tests/tools/fakepeer as a destination (old-dest,
# hb-dest) on a free loopback port, output in $T/NAME.out; sets FAKE_PID
# and FAKE_PORT once it listens.
fakepeer_dest() {
	"$(dirname "$RMIG")/tests/fakepeer" 127.0.0.1 0 "$2" >"$T/$1.out" 2>"$T/$1.err" &
	FAKE_PID=$!
	PIDS="$PIDS $FAKE_PID"
	for _i in $(seq 100); do
		FAKE_PORT=$(sed -n 's/^listening \([0-9]*\)$/\1/p' "$T/$1.out")
		[ -n "$FAKE_PORT" ] && return 0
		sleep 0.05
	done
	fail "fakepeer $2 did not listen"
}

# send_in_precopy NAME ARGS...: a paced sender (rmig send --json ARGS, a
# 32 MiB guest dirtying 2000 pages/s at 8 MB/s: rounds of ~1 s) to the
# proxy at $PPORT in the background (SEND_PID; $T/NAME.out and .err);
# returns a second into its pre-copy.
send_in_precopy() {
	local name=$1
	shift
	"$RMIG" send --json "$@" --max-bandwidth 8M --downtime-ms 1 --max-rounds 8 \
		--on-no-converge force --backend sim:size=32M,dirty-rate=2000,seed=9 \
		"127.0.0.1:$PPORT" >"$T/$name.out" 2>"$T/$name.err" &
	SEND_PID=$!
	PIDS="$PIDS $SEND_PID"
	wait_phase "$T/$name.out" pre-copy $SEND_PID
	sleep 1
}

# send_to_hold NAME ARGS...: rmig send --json ARGS to the proxy at $PPORT
# in the background (SEND_PID; output in $T/NAME.out and .err); returns
# once the receiver (its output in $T/recv.out) holds after GO.
send_to_hold() {
	local name=$1
	shift
	"$RMIG" send --json "$@" "127.0.0.1:$PPORT" >"$T/$name.out" 2>"$T/$name.err" &
	SEND_PID=$!
	PIDS="$PIDS $SEND_PID"
	for _i in $(seq 300); do
		grep -q '"event":"hold"' "$T/recv.out" 2>/dev/null && break
		sleep 0.1
	done
	grep -q '"event":"hold"' "$T/recv.out" || fail "the receiver never reached its hold after GO"
}

# start_faultproxy NAME PROXY_ARGS...: tests/tools/faultproxy in front of
# the receiver on PORT (its log in $T/NAME-proxy.err); sets PPORT, the
# port to send to, and PROXY_PID.
start_faultproxy() {
	local name=$1
	shift
	"$(dirname "$RMIG")/tests/faultproxy" 0 127.0.0.1:$PORT --ready-file "$T/$name.port" "$@" \
		2>"$T/$name-proxy.err" &
	PROXY_PID=$!
	PIDS="$PIDS $PROXY_PID"
	for _i in $(seq 100); do
		[ -s "$T/$name.port" ] && break
		sleep 0.05
	done
	[ -s "$T/$name.port" ] || fail "faultproxy did not start"
	PPORT=$(cat "$T/$name.port")
}
