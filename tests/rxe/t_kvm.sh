#!/bin/bash
# The kvm backend on a real KVM, inside the rxe VM (run_all.sh runs it):
#   tests/rxe/vm.sh -- tests/rxe/t_kvm.sh
# The VM's -cpu max under TCG emulates AMD SVM, so kvm_amd loads and
# /dev/kvm appears; vCPUs run there too (slowly: nested emulation).
# Checks: the backend's dirty-log test (kvm_dirtylog_test: modes, the
# INITIALLY_SET handling, guest writes, errors); then real migrations over
# TCP on loopback between two KVM VMs, verified on both sides: a 64 MiB
# guest without vCPU, and one whose vCPU keeps writing (dirty-rate), which
# runs on at the destination. (A sim receiver refuses the kvm guest's empty
# device state, so the receiver is kvm.)
# Ends with "N passed, N failed"; "SKIP: reason" and 77 if KVM cannot load.
set -u
cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
RMIG=${RMIG:-$BUILD/rmig}
T=$(mktemp -d /tmp/rxe-kvm.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
field() { jq -r "select(.event==\"summary\") | .$2 | tostring" "$1" 2>/dev/null | tail -1; }

# --- KVM itself -------------------------------------------------------------
modprobe kvm 2>"$T/modprobe.err"
loaded=
for m in kvm_amd kvm_intel; do
	modprobe "$m" 2>>"$T/modprobe.err" && [ -d "/sys/module/$m" ] && { loaded=$m; break; }
done
if [ ! -c /dev/kvm ]; then
	why=$(tr '\n' ' ' <"$T/modprobe.err")
	grep -qw -e svm -e vmx /proc/cpuinfo || why="$why; the vCPU has neither svm nor vmx"
	echo "SKIP: /dev/kvm did not appear (${loaded:-no vendor module loaded}): $why"
	exit 77
fi
ok "/dev/kvm is there ($loaded loaded; cpu $(grep -m1 -ow -e svm -e vmx /proc/cpuinfo))"

echo "--- kvm_dirtylog_test"
"$BUILD/rxe/kvm_dirtylog_test" | tee "$T/unit.out"
rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] && ok "kvm_dirtylog_test: $(tail -n1 "$T/unit.out")" ||
	bad "kvm_dirtylog_test exited $rc"

# --- migrations -------------------------------------------------------------
# TCG is slow: the digests of --verify alone take a while, so the downtime
# limit is one this machine can meet.
SLOW="--transport tcp --downtime-ms 3000 --link-timeout-ms 20000"

# migrate NAME SRC_SPEC DST_SPEC: one migration; both summaries checked.
migrate() {
	local n=$1 src=$2 dst=$3 port="" rc rrc t0
	"$RMIG" recv --listen 127.0.0.1:0 --backend "$dst" --json $SLOW \
		>"$T/$n-recv.out" 2>"$T/$n-recv.err" &
	local rpid=$!
	for _ in $(seq 200); do
		port=$(jq -r 'select(.event=="listening") | .port' "$T/$n-recv.out" 2>/dev/null)
		[ -n "$port" ] && break
		sleep 0.05
	done
	[ -n "$port" ] || { bad "$n: receiver did not start: $(cat "$T/$n-recv.err")"; kill "$rpid"; return 1; }
	t0=$(date +%s%N)
	"$RMIG" send --backend "$src" --json $SLOW "127.0.0.1:$port" \
		>"$T/$n-send.out" 2>"$T/$n-send.err"
	rc=$?
	wait "$rpid"
	rrc=$?
	for side in send recv; do
		local got
		got="$(field "$T/$n-$side.out" result)/$(field "$T/$n-$side.out" verified)"
		[ "$got" = migrated/true ] && ok "$n $side: migrated, verified" ||
			bad "$n $side: got $got (exit $rc/$rrc): $(cat "$T/$n-$side.err")"
	done
	echo "   $n: $((($(date +%s%N) - t0) / 1000000)) ms;" \
		"$(jq -c 'select(.event=="round") | {round,pages,dirty_pages}' "$T/$n-send.out" | tr '\n' ' ')"
}

# The pages the first dirty-log fetch reported: the first round event's.
first_dirty() { jq -r 'select(.event=="round" and .round==1) | .dirty_pages' "$1" | head -1; }
PAGES=$((64 * 256))

migrate idle kvm:size=64M,slots=2 kvm
# No vCPU writes: nothing is dirty after round 1 (with INITIALLY_SET,
# start_dirty_log already cleared KVM's all-dirty bits), one round suffices.
fd=$(first_dirty "$T/idle-send.out")
[ "$fd" = 0 ] && ok "idle: the first fetch reported 0 of $PAGES pages" ||
	bad "idle: the first fetch reported ${fd:-?} of $PAGES pages, want 0"

# A vCPU that keeps writing: its writes must come through the dirty log
# (--verify fails on any page missed), and it runs on at the destination.
migrate vcpu kvm:size=64M,dirty-rate=2000 kvm
fd=$(first_dirty "$T/vcpu-send.out")
[ "${fd:-0}" -gt 0 ] && [ "$fd" -lt "$PAGES" ] &&
	ok "vcpu: guest writes came through the dirty log ($fd pages in round 1)" ||
	bad "vcpu: round 1 left ${fd:-?} dirty pages, want 1..$((PAGES - 1))"
r="$(field "$T/vcpu-recv.out" guest_running)/$(field "$T/vcpu-recv.out" guest_progress_delta)"
[[ $r == true/[1-9]* ]] && ok "vcpu: the destination's vCPU runs on (running/progress: $r)" ||
	bad "vcpu: destination guest running/progress: $r"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
