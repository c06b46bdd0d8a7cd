#!/bin/bash
# Real RDMA: boots the soft-RoCE VM (tests/rxe) with two NUMA nodes and runs
# tests/rxe/run_all.sh there, then boots it again for tests/rxe/t_rails.sh
# alone (two rails; it deletes a device, and after a deletion new RDMA
# connections in the same boot fail on this kernel), and a third and fourth
# time for its lose-dest cases (a deletion on the destination each). Skips only if QEMU or
# the kernel package cannot be installed (run.sh turns that skip into a
# failure under CI=true).
# timeout: 1500
# (run.sh's limit: the VMs' own 600, 300, 200 and 200 s and their setup. On
# 2026-12-06 run_all.sh took 373 s in all, t_failover.sh 124 s of it;
# t_rails.sh 86 s with its boot, each lose-dest boot about 40 s.)
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
tests/rxe/vm.sh --numa --timeout 300 --env RMIG="$RMIG" --env LSAN_OPTIONS="${LSAN_OPTIONS:-}" -- tests/rxe/t_rails.sh >"$T/rails.out" 2>"$T/rails.err"
rc=$?
[ $rc = 0 ] || fail "rxe rails tests exited $rc: $(grep -E '^(FAIL|not ok|SKIP)|FAIL' "$T/rails.out" | head -5) $(tail -n 3 "$T/rails.err")"
# A third boot: the destination loses the device of its --listen address
# (a deletion ends what RDMA can do in a boot).
tests/rxe/vm.sh --numa --timeout 200 --env RMIG="$RMIG" --env RAILS_CASES=lose-dest --env LSAN_OPTIONS="${LSAN_OPTIONS:-}" -- tests/rxe/t_rails.sh >"$T/dest.out" 2>"$T/dest.err"
rc=$?
[ $rc = 0 ] || fail "rxe rails lose-dest exited $rc: $(grep -E '^(FAIL|not ok|SKIP)|FAIL' "$T/dest.out" | head -5) $(tail -n 3 "$T/dest.err")"
# A fourth: the destination loses the other rail's device; the source's
# guess of the lost rail is wrong and must be undone.
tests/rxe/vm.sh --numa --timeout 200 --env RMIG="$RMIG" --env RAILS_CASES=lose-dest-other --env LSAN_OPTIONS="${LSAN_OPTIONS:-}" -- tests/rxe/t_rails.sh >"$T/other.out" 2>"$T/other.err"
rc=$?
[ $rc = 0 ] || fail "rxe rails lose-dest-other exited $rc: $(grep -E '^(FAIL|not ok|SKIP)|FAIL' "$T/other.out" | head -5) $(tail -n 3 "$T/other.err")"
bw=$(sed -n 's/^ib_write_bw_MBps=//p' "$T/vm.out" | tail -1)
pass "$(cat "$T/vm.out" "$T/rails.out" "$T/dest.out" "$T/other.out" | grep -c '^ok') checks in four boots of the VM, ib_write_bw ${bw:-?} MB/s"
