#!/bin/bash
# An operator's view of a running migration (issue 17): --control PATH on
# both sides, rmig status / set / cancel against it, and --json's progress
# events.
#  1. The socket is mode 0600; `rmig status` answers on both sides while
#     pre-copy runs (phase, round, bytes of the guest, the limits).
#  2. Progress events come at least every 750 ms (500 ms asked), each with
#     a timestamp, `transferred` never going back, percent within 0..100.
#  3. `rmig set PATH max-bandwidth` mid-round: the progress events' rate
#     follows (40 MiB/s, then 100 MiB/s: more than 2x); bad values and
#     unknown keys are refused with one line, exit 1, nothing changed.
#  4. Hostile local clients: 50 connections that say nothing and a line of
#     10 KiB without a newline do not stop `status` from answering; the
#     silent ones are dropped after 2 s.
#  5. `rmig cancel PATH`: rolled back (exit 3), the source guest runs, the
#     socket is gone after exit.
#  6. A path holding something that is not a socket, or a live rmig's
#     socket, is refused before anything starts; a stale socket is replaced.
#  7. `rmig postcopy PATH`: refused (one line) on a migration without
#     --postcopy and on the receiver; a --postcopy migration that would
#     never converge switches over when asked and completes.
. "$(dirname "$0")/lib.sh"
FLOOD=${FLOOD:-$(dirname "$RMIG")/tests/flood}
[ -x "$FLOOD" ] || fail "$FLOOD is missing (make $(dirname "$RMIG")/tests/flood)"
CS=$T/send.ctl
CR=$T/recv.ctl
MiB=1048576

# progress FIELD: that field of every progress event so far, one per line.
progress() { jq -r "select(.event==\"progress\") | .$1" "$T/send.out"; }
# The rate over the pre-copy progress events after the first N: bytes
# over time between the first and the last of them.
rate_after() {
	jq -r 'select(.event=="progress" and .phase=="pre-copy") | "\(.ts) \(.transferred)"' "$T/send.out" |
		tail -n +"$(($1 + 1))" |
		awk 'NR == 1 { t0 = $1; b0 = $2 } { t = $1; b = $2 } END { print (t > t0 ? int((b - b0) * 1000 / (t - t0)) : 0) }'
}

start_recv recv --backend sim --control "$CR"
"$RMIG" send --json --backend sim:size=1G,dirty-rate=1000,seed=4 --max-bandwidth 40M \
	--control "$CS" 127.0.0.1:$PORT >"$T/send.out" 2>"$T/send.err" &
SEND_PID=$!
PIDS="$PIDS $SEND_PID"
for _ in $(seq 200); do
	[ -S "$CS" ] && [ "$(progress phase | tail -1)" = pre-copy ] && break
	sleep 0.05
done
[ -S "$CS" ] || fail "no control socket at $CS after 10 s"

# 1. Status on both sides.
expect_eq "control socket mode" "$(stat -c %a "$CS")" 600
expect_eq "receiver's control socket mode" "$(stat -c %a "$CR")" 600
st=$("$RMIG" status "$CS" --json) || fail "rmig status $CS failed"
expect_eq "status phase" "$(jq -r .phase <<<"$st")" pre-copy
expect_eq "status round" "$(jq -r .round <<<"$st")" 1
expect_eq "status total" "$(jq -r .total <<<"$st")" $((1024 * MiB))
expect_eq "status max_bandwidth" "$(jq -r .max_bandwidth <<<"$st")" $((40 * MiB))
[ "$(jq -r .transferred <<<"$st")" -gt 0 ] || fail "status: nothing transferred: $st"
# QEMU's query-migrate figures: pages moved, and the bytes all pre-copy's so far.
[ "$(jq -r .pages <<<"$st")" -gt 0 ] || fail "status: no pages counted: $st"
expect_eq "status precopy_bytes = transferred" "$(jq -r '.precopy_bytes == .transferred' <<<"$st")" true
expect_eq "status downtime/postcopy bytes" "$(jq -r '"\(.downtime_bytes) \(.postcopy_bytes)"' <<<"$st")" "0 0"
text=$("$RMIG" status "$CS") || fail "rmig status (text) failed"
grep -Eq '^pre-copy, round 1: .* of 1\.0 GiB moved \([0-9]+%\)' <<<"$text" ||
	fail "status text: '$text'"
rst=$("$RMIG" status "$CR" --json) || fail "rmig status $CR failed"
expect_eq "receiver status phase" "$(jq -r .phase <<<"$rst")" receiving
expect_eq "receiver status round" "$(jq -r .round <<<"$rst")" 1

# 4. Hostile clients: silent ones held, then a 10 KiB line.
"$FLOOD" unix "$CS" idle 50 3 >"$T/flood.out" 2>&1 &
FLOOD_PID=$!
PIDS="$PIDS $FLOOD_PID"
sleep 0.5
"$RMIG" status "$CS" --json >/dev/null || fail "status did not answer with 50 silent clients held"
long=$(head -c 10240 /dev/zero | tr '\0' x)
"$RMIG" set "$CS" max-bandwidth "$long" >"$T/long.out" 2>&1 && fail "a 10 KiB value was taken"
grep -q 'one line of at most 256 bytes' "$T/long.out" ||
	fail "a 10 KiB command: $(cat "$T/long.out")"
wait_pid "$FLOOD_PID" 10
# (A connect beyond the listen backlog fails at once: no harm done.)
held=$(sed -n 's/^flood: idle: \([0-9]*\) opened, \([0-9]*\) closed by the receiver (after \([0-9]*\)\.\..*/\1 \2 \3/p' "$T/flood.out")
read -r opened closed first <<<"$held"
[ -n "$held" ] && [ "$opened" = "$closed" ] && [ "$opened" -ge 16 ] ||
	fail "the silent clients were not all dropped: $(cat "$T/flood.out")"
[ "$first" -ge 1800 ] || fail "silent clients dropped after $first ms, not after their 2 s: $(cat "$T/flood.out")"

# 3. Change the bandwidth mid-round.
n0=$(progress ts | wc -l)
before=$(rate_after 0)
"$RMIG" set "$CS" max-bandwidth 100M >"$T/set.out" || fail "rmig set failed: $(cat "$T/set.out")"
sleep 0.3
n1=$(jq -r 'select(.event=="progress" and .phase=="pre-copy") | .ts' "$T/send.out" | wc -l)
sleep 1.5
after=$(rate_after "$n1")
[ "$before" -gt $((25 * MiB)) ] && [ "$before" -lt $((55 * MiB)) ] ||
	fail "rate at 40 MiB/s measured $before B/s"
[ "$after" -gt $((2 * before)) ] ||
	fail "after max-bandwidth 100M the rate is $after B/s (before: $before): the change did not take"
expect_eq "status max_bandwidth after set" "$("$RMIG" status "$CS" --json | jq -r .max_bandwidth)" \
	$((100 * MiB))
# Back to 40 MiB/s: the checks below need pre-copy still running, and at
# 100 MiB/s the rest of 1 GiB can go before they end (a slower build:
# SAN=1, each rmig invocation some 0.3 s).
"$RMIG" set "$CS" max-bandwidth 40M >"$T/set.out" || fail "rmig set 40M failed: $(cat "$T/set.out")"
"$RMIG" set "$CR" max-bandwidth 10M >"$T/rset.out" 2>&1 && fail "set on the receiver was taken"
grep -q "the sending side's" "$T/rset.out" || fail "set on the receiver: $(cat "$T/rset.out")"
"$RMIG" set "$CS" 'bo"gus' 1 >"$T/quote.out" 2>&1 && fail "set with a quote was taken"
sed 's/^rmig: //' "$T/quote.out" | jq -e .error >/dev/null || fail "an error echoing a quote is not JSON: $(cat "$T/quote.out")"
for bad in "downtime-ms 0" "downtime-ms 99999999" "downtime-ms +5" "max-bandwidth fast" "bogus 1"; do
	# shellcheck disable=SC2086
	"$RMIG" set "$CS" $bad >"$T/bad.out" 2>&1 && fail "set $bad was taken"
	[ "$(wc -l <"$T/bad.out")" = 1 ] || fail "set $bad: not one line: $(cat "$T/bad.out")"
done
grep -q "cannot set 'bogus'" "$T/bad.out" || fail "set bogus: $(cat "$T/bad.out")"
expect_eq "downtime limit unchanged" "$("$RMIG" status "$CS" --json | jq -r .downtime_ms)" 300
"$RMIG" set "$CS" downtime-ms 250 >/dev/null || fail "set downtime-ms 250 failed"
expect_eq "downtime limit after set" "$("$RMIG" status "$CS" --json | jq -r .downtime_ms)" 250
[ "$n0" -gt 0 ] || fail "no progress events"

# 2. Progress events: cadence, timestamps, monotonic bytes, percent.
jq -e . "$T/send.out" >/dev/null || fail "a line of the sender's output is not JSON"
jq -e . "$T/recv.out" >/dev/null || fail "a line of the receiver's output is not JSON"
gaps=$(progress ts | awk 'NR > 1 && $1 - p > 900 { n++ } { p = $1 } END { print n + 0 }')
expect_eq "progress gaps over 900 ms (500 asked)" "$gaps" 0
back=$(progress transferred | awk 'NR > 1 && $1 < p { n++ } { p = $1 } END { print n + 0 }')
expect_eq "progress events whose transferred went back" "$back" 0
progress percent | awk '$1 < 0 || $1 > 100 { bad = 1 } END { exit bad }' ||
	fail "a percent outside 0..100: $(progress percent | tr '\n' ' ')"

# 7a. postcopy on a migration not started with --postcopy, and on the
# receiver: refused with one line, exit 1, pre-copy goes on.
"$RMIG" postcopy "$CS" >/dev/null 2>"$T/pc.err" && fail "postcopy without --postcopy was taken"
grep -q "not started with --postcopy" "$T/pc.err" || fail "postcopy refusal: $(cat "$T/pc.err")"
"$RMIG" postcopy "$CR" >/dev/null 2>"$T/pcr.err" && fail "postcopy on the receiver was taken"
grep -q "the sending side's" "$T/pcr.err" || fail "postcopy on the receiver: $(cat "$T/pcr.err")"
expect_eq "phase after refused postcopy" "$("$RMIG" status "$CS" --json | jq -r .phase)" pre-copy

# 5. Cancel.
"$RMIG" cancel "$CS" >/dev/null || fail "rmig cancel failed"
wait_pid "$SEND_PID" 20
expect_eq "sender exit after cancel" "$RC" 3
expect_eq "result" "$(summary "$T/send.out" result)" rolled_back
expect_eq "guest runs" "$(summary "$T/send.out" guest_running)" true
[ ! -e "$CS" ] || fail "the control socket is still there after rmig exited"
wait_pid "$RECV_PID" 20
"$RMIG" status "$CS" 2>"$T/gone.err" && fail "status answered with no rmig running"
grep -q "no rmig answers there" "$T/gone.err" || fail "status without rmig: $(cat "$T/gone.err")"

# 6. Paths: not a socket, a live rmig's, a stale one.
: >"$T/plain"
"$RMIG" send --backend sim:size=16M --control "$T/plain" 127.0.0.1:1 2>"$T/plain.err" &&
	fail "a regular file as control socket was taken"
grep -q "not a socket" "$T/plain.err" || fail "regular file: $(cat "$T/plain.err")"
start_recv recv2 --backend sim --control "$CR"
"$RMIG" recv --listen 127.0.0.1:0 --backend sim --control "$CR" 2>"$T/live.err" &&
	fail "a live rmig's control socket was taken over"
grep -q "another rmig answers there" "$T/live.err" || fail "live socket: $(cat "$T/live.err")"
kill -9 "$RECV_PID"
wait_pid "$RECV_PID" 10
[ -S "$CR" ] || fail "kill -9 should leave a stale socket behind for this case"
start_recv recv3 --backend sim --control "$CR"
"$RMIG" status "$CR" --json >/dev/null || fail "the stale socket was not replaced"
kill "$RECV_PID"
wait_pid "$RECV_PID" 10

# 7b. `rmig postcopy PATH` (QEMU's migrate-start-postcopy): a --postcopy
# migration that would never converge (1 ms downtime limit, 500 rounds)
# switches to post-copy when asked and completes; asking again after it
# ended finds no rmig.
start_recv pcrecv --backend sim
"$RMIG" send --json --postcopy --backend sim:size=128M,dirty-rate=50000,hot=50%,seed=5 \
	--downtime-ms 1 --max-rounds 500 --max-bandwidth 40M --control "$CS" 127.0.0.1:$PORT \
	>"$T/pcsend.out" 2>"$T/pcsend.err" &
SEND_PID=$!
PIDS="$PIDS $SEND_PID"
for _ in $(seq 200); do
	jq -s -e 'map(select(.event=="round")) | length >= 2' "$T/pcsend.out" >/dev/null 2>&1 && break
	sleep 0.05
done
jq -s -e 'map(select(.event=="round")) | length >= 2' "$T/pcsend.out" >/dev/null ||
	fail "postcopy: fewer than 2 rounds in 10 s"
"$RMIG" postcopy "$CS" >"$T/pc.out" || fail "rmig postcopy failed: $(cat "$T/pc.out")"
wait_pid "$SEND_PID" 60
expect_eq "postcopy: sender exit code" "$RC" 0
expect_eq "postcopy: switched to post-copy" "$(summary "$T/pcsend.out" postcopy)" true
expect_eq "postcopy: forced" "$(summary "$T/pcsend.out" forced)" false
[ "$(summary "$T/pcsend.out" rounds)" -lt 100 ] ||
	fail "postcopy: $(summary "$T/pcsend.out" rounds) rounds: the request was not acted on"
wait_pid "$RECV_PID" 30
expect_eq "postcopy: receiver exit code" "$RC" 0
# The progress events split the bytes by phase: some after GO (post-copy's
# pages), pre-copy's no more than the total.
jq -s -e 'map(select(.event=="progress")) | last | .postcopy_bytes >= 0 and
	.precopy_bytes + .downtime_bytes + .postcopy_bytes == .transferred' "$T/pcsend.out" >/dev/null ||
	fail "postcopy: the bytes by phase do not add up: $(jq -c 'select(.event=="progress")' "$T/pcsend.out" | tail -1)"

pass "status, progress every $(progress ts | awk 'NR > 1 { g = $1 - p; if (g > m) m = g } { p = $1 } END { print m }') ms at most, rate $((before / MiB)) -> $((after / MiB)) MiB/s after set, cancel"
