#!/bin/bash
# Migration records (issue 17): --record DIR on both sides keeps one JSON
# file per migration and side, with every event and the summary as --json
# prints them (also when --json is not given: the terminal gets text as
# before); rmig history DIR lists them, oldest first.
#  1. A migration with the receiver on --json and the sender on text: two
#     records, mode 0600 in a 0700 directory, every line JSON; the
#     receiver's record is byte for byte its standard output; the sender's
#     has its summary (migrated) and its stderr stays text.
#  2. A sender that cannot reach its receiver: a record of the failure.
#  3. A sender killed mid-migration: its record is listed as incomplete.
#  4. rmig history: one line per record with role, peer, guest size,
#     result, times; a directory that cannot be read is one line, exit 1.
#  5. A record that cannot be created is one line, exit 1, before anything
#     is sent (the receiver never sees a sender).
#  6. recv --keep-listening: a record per migration, none for the sessions
#     still waiting when it stops.
. "$(dirname "$0")/lib.sh"
D=$T/records
GUEST=sim:size=64M,dirty-rate=1000,seed=2

# 1.
start_recv recv --backend sim --record "$D"
"$RMIG" send --backend "$GUEST" --record "$D" 127.0.0.1:$PORT >"$T/send.out" 2>"$T/send.err" ||
	fail "send exited $?"
wait_pid "$RECV_PID" 20
expect_eq "receiver exit" "$RC" 0
expect_eq "records directory mode" "$(stat -c %a "$D")" 700
mapfile -t recs < <(ls "$D")
expect_eq "records after one migration" "${#recs[@]}" 2
for r in "${recs[@]}"; do
	expect_eq "mode of $r" "$(stat -c %a "$D/$r")" 600
	jq -e . "$D/$r" >/dev/null || fail "$r: a line is not JSON"
done
recv_rec=$(ls "$D"/*-recv-*.json)
send_rec=$(ls "$D"/*-send-*.json)
cmp -s "$recv_rec" "$T/recv.out" || fail "the receiver's record differs from its --json output"
expect_eq "sender's recorded result" "$(summary "$send_rec" result)" migrated
expect_eq "sender's recorded role" "$(summary "$send_rec" role)" source
jq -s -e 'map(select(.event=="phase" and .phase=="pre-copy")) | length == 1' "$send_rec" >/dev/null ||
	fail "the sender's record has no phase events"
grep -q '^rmig: migrated over tcp' "$T/send.err" || fail "the sender's terminal lost its text: $(cat "$T/send.err")"
[ ! -s "$T/send.out" ] || fail "the sender printed JSON on stdout without --json"

# 2. Nobody listens.
sleep 0.01 # record names are by the millisecond
"$RMIG" send --backend "$GUEST" --record "$D" --link-timeout-ms 500 127.0.0.1:1 \
	>/dev/null 2>"$T/fail.err" && fail "a send to a closed port succeeded"
failed=$(ls -t "$D"/*-send-*.json | head -1)
expect_eq "recorded result of the failed send" "$(summary "$failed" result)" failed

# 3. Killed mid-migration.
start_recv recv2 --backend sim
"$RMIG" send --backend sim:size=256M --max-bandwidth 20M --record "$D" 127.0.0.1:$PORT \
	>/dev/null 2>&1 &
KPID=$!
PIDS="$PIDS $KPID"
for _ in $(seq 100); do
	ls "$D"/*-send-*.json 2>/dev/null | wc -l | grep -q 3 && break
	sleep 0.05
done
sleep 1
kill -9 "$KPID"
wait_pid "$RECV_PID" 30

# 4. history.
"$RMIG" history "$D" >"$T/history" || fail "rmig history failed"
expect_eq "history lines (header + 4)" "$(wc -l <"$T/history")" 5
grep -q 'destination .*127\.0\.0\.1:[0-9]* *64\.0 MiB *migrated' "$T/history" ||
	fail "history has no migrated destination: $(cat "$T/history")"
grep -q 'source .* *64\.0 MiB *migrated' "$T/history" || fail "history: $(cat "$T/history")"
grep -q ' failed ' "$T/history" || fail "history has no failed send: $(cat "$T/history")"
grep -q ' incomplete ' "$T/history" || fail "history has no incomplete (killed) send: $(cat "$T/history")"
"$RMIG" history "$T/nothing-here" 2>"$T/hist.err" && fail "history of a missing directory succeeded"
expect_eq "history error lines" "$(wc -l <"$T/hist.err")" 1

# 5. A record that cannot be made.
: >"$T/plainfile"
start_recv recv3 --backend sim
"$RMIG" send --backend "$GUEST" --record "$T/plainfile/sub" 127.0.0.1:$PORT >/dev/null \
	2>"$T/bad.err" && fail "a record under a regular file was taken"
expect_eq "bad --record error lines" "$(wc -l <"$T/bad.err")" 1
grep -q -- '--record' "$T/bad.err" || fail "the error does not name --record: $(cat "$T/bad.err")"
grep -q '"event":"connected"' "$T/recv3.out" && fail "the sender connected although its record failed"
kill "$RECV_PID"

# 6. A receiving service: --keep-listening keeps a record per migration;
# a session that was still waiting for a sender when the service stopped
# leaves none.
D2=$T/service
start_recv svc --backend sim --keep-listening --max-sessions 2 --record "$D2"
for i in 1 2; do
	"$RMIG" send --backend "$GUEST" 127.0.0.1:$PORT >/dev/null 2>&1 || fail "service migration $i failed"
done
kill -TERM "$RECV_PID"
wait_pid "$RECV_PID" 15
"$RMIG" history "$D2" >"$T/svc.history" || fail "history of the service failed"
expect_eq "service records (header + 2)" "$(wc -l <"$T/svc.history")" 3
expect_eq "service records that migrated" "$(grep -c 'destination .* migrated' "$T/svc.history")" 2

pass "$(($(wc -l <"$T/history") - 1)) records: migrated both sides, failed, incomplete; a service's 2"
