#!/bin/bash
# Soak: 20 migrations in a row into one --keep-listening receiver, then 4 at
# once into 4 receivers on different ports (twice). Every migration must be
# verified, and the receivers' open file descriptors and RSS must not grow
# from one migration to the next (a leak per migration would show as steady
# growth).
. "$(dirname "$0")/lib.sh"
GUEST=sim:size=32M,dirty-rate=5000,zero=25%

fds() { ls "/proc/$1/fd" | wc -l; }
# wait_summaries FILE N: until the receiver has printed N summaries.
wait_summaries() {
	for _ in $(seq 200); do
		[ "$(grep -c '"event":"summary"' "$1")" -ge "$2" ] && return
		sleep 0.05
	done
	fail "$1: fewer than $2 summaries"
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# migrate OUT PORT: one verified migration, or fail.
migrate() {
	local rc=0
	"$RMIG" send --json --backend "$GUEST" "127.0.0.1:$2" >"$T/$1.out" 2>"$T/$1.err" || rc=$?
	[ "$rc" = 0 ] || fail "$1: send exit $rc: $(tail -1 "$T/$1.err")"
	[ "$(summary "$T/$1.out" verified)" = true ] || fail "$1: not verified"
}

start_recv keep --backend sim --keep-listening
KEEP_PID=$RECV_PID KEEP_PORT=$PORT
for i in $(seq 20); do
	migrate "seq$i" "$KEEP_PORT"
	wait_summaries "$T/keep.out" "$i" # printed after the migration
	sleep 0.1
	case $i in
	3) fd3=$(fds "$KEEP_PID") rss3=$(rss_kib "$KEEP_PID") ;;
	20) fd20=$(fds "$KEEP_PID") rss20=$(rss_kib "$KEEP_PID") ;;
	esac
done
n=$(jq -r 'select(.event=="summary") | select(.result=="migrated" and .verified) | .result' "$T/keep.out" | wc -l)
expect_eq "verified migrations in the keep-listening receiver" "$n" 20
[ "$fd20" -le "$fd3" ] || fail "receiver fds grew from $fd3 (after 3) to $fd20 (after 20)"
# A 32 MiB guest is received and let go each time; allow allocator noise.
[ "$rss20" -le $((rss3 + 16384)) ] || fail "receiver RSS grew from $rss3 KiB to $rss20 KiB"

# 4 at once, on 4 ports, twice.
ports=() pids=()
for k in 1 2 3 4; do
	start_recv "par$k" --backend sim --keep-listening
	ports+=("$PORT")
	pids+=("$RECV_PID")
done
for pass_no in 1 2; do
	spids=()
	for k in 0 1 2 3; do
		migrate "par$pass_no-$k" "${ports[$k]}" &
		spids+=($!)
	done
	for p in "${spids[@]}"; do wait "$p" || fail "a parallel migration failed (pass $pass_no)"; done
	for k in 1 2 3 4; do wait_summaries "$T/par$k.out" "$pass_no"; done
	sleep 0.1
	if [ "$pass_no" = 1 ]; then
		pfd1=()
		for k in 0 1 2 3; do pfd1+=("$(fds "${pids[$k]}")"); done
	fi
done
for k in 0 1 2 3; do
	n=$(grep -c '"result":"migrated"' "$T/par$((k + 1)).out")
	expect_eq "migrations received on port ${ports[$k]}" "$n" 2
	f=$(fds "${pids[$k]}")
	[ "$f" -le "${pfd1[$k]}" ] || fail "receiver $k fds grew from ${pfd1[$k]} to $f"
done
for p in "$KEEP_PID" "${pids[@]}"; do kill -TERM "$p"; done
for p in "$KEEP_PID" "${pids[@]}"; do
	wait_pid "$p" 10
	expect_eq "keep-listening receiver exit on SIGTERM" "$RC" 0
done
pass "20 in a row + 2x4 at once; fds $fd3->$fd20, RSS ${rss3}->${rss20} KiB"
