#!/bin/bash
# rmig recv --prealloc: the destination faults in all guest memory before it
# acknowledges the layout, keeping the source alive with heartbeats however
# long that takes; and a guest larger than the host's available memory is
# refused before a page is sent, naming what is short, with the source
# still running.
. "$(dirname "$0")/lib.sh"

# 1. Preallocating 2 GiB outlasts a 100 ms link timeout many times over: the
# heartbeats must start before it, on both sides.
start_recv recv --backend sim --prealloc --link-timeout-ms 100
"$RMIG" send --json --link-timeout-ms 100 --backend sim:size=2G,dirty-rate=0,zero=90%,seed=5 \
	127.0.0.1:$PORT >"$T/send.out" 2>"$T/send.err" || fail "rmig send exited $?"
wait_pid "$RECV_PID" 60
expect_eq "recv exit code" "$RC" 0
for side in send recv; do
	expect_eq "$side result" "$(summary "$T/$side.out" result)" migrated
	expect_eq "$side verified" "$(summary "$T/$side.out" verified)" true
done
ms=$(summary "$T/recv.out" prealloc_ms)
[ "$ms" -gt 100 ] ||
	fail "preallocating 2 GiB took only ${ms} ms: the test needs it to outlast the 100 ms link timeout"
grep -q '"event":"phase","phase":"preallocating"' "$T/recv.out" ||
	fail "the receiver never reported the preallocating phase"

# 2. More than this host has: refused before anything is sent.
avail_mib=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
big=$(((avail_mib + 1024) / 1024 + 1))G
start_recv recv2 --backend sim:overcommit=1 --prealloc
expect_refused send2 "sim:size=$big,dirty-rate=100,zero=100%,overcommit=1" \
	"--prealloc: the guest needs [0-9]* MiB more memory, this host has [0-9]* MiB available"
pass
