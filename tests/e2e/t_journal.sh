#!/bin/bash
# Under systemd (JOURNAL_STREAM names stderr's device:inode), every line
# rmig writes to stderr starts with its syslog priority ("<3>" error, "<4>"
# warning, "<6>" info: sd-daemon(3)), which the journal takes and strips;
# elsewhere lines are plain.
. "$(dirname "$0")/lib.sh"
journal_run() { # FILE CMD...: CMD with stderr appended to FILE, FILE the journal
	local f=$1
	shift
	: >"$f"
	JOURNAL_STREAM=$(stat -c '%d:%i' "$f") "$@" 2>>"$f"
}
journal_run "$T/fail.err" "$RMIG" send --backend sim:size=16M 127.0.0.1:1 && fail "send to a closed port succeeded"
grep -q '^<3>rmig: failed: cannot connect' "$T/fail.err" || fail "the failure is not at priority 3: $(cat "$T/fail.err")"
grep -q '^<6>rmig: guest running here' "$T/fail.err" || fail "info lines are not at priority 6: $(cat "$T/fail.err")"
grep -vq '^<[0-7]>' "$T/fail.err" && fail "a line without a priority: $(grep -v '^<[0-7]>' "$T/fail.err")"

# A receiver that refuses a sender without the key: a warning.
head -c 32 /dev/urandom >"$T/key"
chmod 600 "$T/key"
: >"$T/recv.err"
JOURNAL_STREAM=$(stat -c '%d:%i' "$T/recv.err") "$RMIG" recv --listen 127.0.0.1:0 --json \
	--backend sim --psk-file "$T/key" >"$T/recv.out" 2>>"$T/recv.err" &
RECV_PID=$!
PIDS="$PIDS $RECV_PID"
wait_port recv
"$RMIG" send --backend sim:size=16M 127.0.0.1:$PORT >/dev/null 2>&1 && fail "a keyless sender got in"
for _ in $(seq 100); do # it goes on listening: the line is what counts
	grep -q 'refused peer' "$T/recv.err" && break
	sleep 0.05
done
kill "$RECV_PID"
grep -q '^<4>rmig: refused peer' "$T/recv.err" || fail "the refusal is not a warning: $(cat "$T/recv.err")"

# An option error before anything starts: priority 3 too.
journal_run "$T/opt.err" "$RMIG" send --max-bandwidth lots 127.0.0.1:1 && fail "a bad option was taken"
grep -q '^<3>rmig: ' "$T/opt.err" || fail "an option error is not at priority 3: $(cat "$T/opt.err")"

# Not the journal: plain lines.
"$RMIG" send --backend sim:size=16M 127.0.0.1:1 2>"$T/plain.err"
grep -q '^rmig: failed: cannot connect' "$T/plain.err" || fail "plain stderr: $(cat "$T/plain.err")"
pass "errors <3>, warnings <4>, info <6> on the journal's stream; plain elsewhere"
