#!/bin/bash
# The progress line a person sees: `rmig send` on a real terminal (a tmux
# pane) redraws one line while round 1 runs, with a bar, the percent and an
# ETA, and leaves only the summary when it ends. Read from the screen
# (tmux capture-pane), as a person would.
. "$(dirname "$0")/lib.sh"
command -v tmux >/dev/null || fail "tmux is missing (scripts/deps.sh installs it)"
S=rmig-tty-$$
export TMUX_TMPDIR=$T # a server of our own, gone with $T
start_recv recv --backend sim
tmux new-session -d -s "$S" -x 220 -y 20 \
	"'$RMIG' send --backend sim:size=512M,dirty-rate=1000 --max-bandwidth 40M 127.0.0.1:$PORT; echo rc=\$?; sleep 30" ||
	fail "tmux could not start"
PIDS="$PIDS $(tmux list-panes -t "$S" -F '#{pane_pid}')"
screen=""
for _ in $(seq 100); do
	screen=$(tmux capture-pane -p -t "$S")
	grep -Eq 'pre-copy round 1 .*\[#+-*\] +[0-9]+% \| ETA [0-9.]+ s' <<<"$screen" && break
	sleep 0.1
done
grep -Eq 'pre-copy round 1 .*\[#+-*\] +[0-9]+% \| ETA [0-9.]+ s' <<<"$screen" ||
	fail "no progress line with a bar, percent and ETA mid-round: '$screen'"
line=$(grep -E 'pre-copy round 1' <<<"$screen" | tail -1)
# One line, redrawn: not a new line per tick.
[ "$(grep -c 'pre-copy round' <<<"$screen")" -eq 1 ] || fail "the progress line was not redrawn in place: '$screen'"
for _ in $(seq 300); do
	screen=$(tmux capture-pane -p -t "$S")
	grep -q '^rc=' <<<"$screen" && break
	sleep 0.1
done
grep -q '^rc=0' <<<"$screen" || fail "rmig send did not end with 0: '$screen'"
grep -q 'migrated over tcp' <<<"$screen" || fail "no summary line on the screen: '$screen'"
grep -q 'pre-copy round' <<<"$screen" && fail "the progress line was left on the screen: '$screen'"
tmux kill-server 2>/dev/null
wait_pid "$RECV_PID" 20
pass "mid-round: ${line//  / }"
