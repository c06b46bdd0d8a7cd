#!/bin/bash
# Real RDMA: boots the soft-RoCE VM (tests/rxe) with two NUMA nodes and runs
# tests/rxe/run_all.sh there. Skips only if QEMU or the kernel package cannot
# be installed (run.sh turns that skip into a failure under CI=true).
# timeout: 660
# (run.sh's limit: the VM's own 600 s and its setup. On a loaded 2-core host
# run_all.sh took 316 s in all, t_kvm.sh 19 s of it.)
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."
out=$(tests/rxe/setup.sh 2>&1)
case $? in
0) ;;
77) skip "$(grep -m1 SKIP <<<"$out" | sed 's/^SKIP: //')" ;;
*) fail "rxe VM setup: $(tail -n 3 <<<"$out")" ;;
esac
BUILD=$(dirname "$RMIG")
tests/rxe/vm.sh --numa --timeout 600 --env BUILD="$BUILD" --env LSAN_OPTIONS="${LSAN_OPTIONS:-}" -- tests/rxe/run_all.sh >"$T/vm.out" 2>"$T/vm.err"
rc=$?
[ $rc = 0 ] || fail "rxe tests exited $rc: $(grep -E '^(FAIL|not ok|SKIP)|FAIL' "$T/vm.out" | head -5) $(tail -n 3 "$T/vm.err")"
bw=$(sed -n 's/^ib_write_bw_MBps=//p' "$T/vm.out" | tail -1)
pass "$(grep -c '^ok' "$T/vm.out") checks in the VM, ib_write_bw ${bw:-?} MB/s"
