#!/bin/bash
# rmig recv --prealloc inside a memory cgroup smaller than the guest: the
# receiver refuses before a page is sent and names the cgroup limit; the
# source fails cleanly and its guest runs on. (The host may have plenty of
# memory: the check must look at the cgroup, not only at MemAvailable.)
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || skip "needs root to make a memory cgroup"
CG=""
if [ -w /sys/fs/cgroup/memory ]; then # cgroup v1
	CG=/sys/fs/cgroup/memory/rmig-test.$$
	mkdir "$CG" && echo 256M >"$CG/memory.limit_in_bytes" || CG=""
elif grep -qw memory /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then # v2
	CG=/sys/fs/cgroup/rmig-test.$$
	mkdir "$CG" && echo 256M >"$CG/memory.max" || CG=""
fi
[ -n "$CG" ] || skip "cannot make a memory cgroup here (no writable memory controller)"
trap 'cleanup; rmdir "$CG" 2>/dev/null' EXIT

# The receiver joins the cgroup before it execs.
sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$CG" \
	"$RMIG" recv --listen 127.0.0.1:0 --json --backend sim --prealloc >"$T/recv.out" 2>"$T/recv.err" &
RECV_PID=$!
PIDS="$PIDS $RECV_PID"
wait_port recv
expect_refused send "sim:size=1G,dirty-rate=100,zero=50%" \
	"--prealloc: the guest needs 1024 MiB more memory, cgroup /rmig-test.$$ ([a-z_.]*) has [0-9]* MiB available"
pass
