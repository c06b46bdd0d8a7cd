#!/bin/bash
# `rmig info` says what this host offers, and says it truly: every backend
# is listed as ready or missing (with why), and what it reports of the host
# agrees with the host (/dev/kvm, the memlock limit, NUMA nodes, THP mode,
# the version).
. "$(dirname "$0")/lib.sh"
"$RMIG" info >"$T/info" 2>"$T/info.err" || fail "rmig info exited $?: $(cat "$T/info.err")"
for b in sim uffd qemu kvm xen; do
	grep -Eq "^  $b +(ready|missing|not built)" "$T/info" || fail "no line for backend $b: $(cat "$T/info")"
done
grep -q '^  sim   ready' "$T/info" || fail "sim is not ready"
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then want=ready; else want=missing; fi
grep -Eq "^  kvm +$want" "$T/info" || fail "kvm should be $want here: $(grep kvm "$T/info")"
lim=$(ulimit -l)
if [ "$lim" = unlimited ]; then
	grep -q '^memlock: unlimited' "$T/info" || fail "memlock: $(grep memlock "$T/info")"
else
	grep -q "^memlock: $lim KiB" "$T/info" || fail "memlock should be $lim KiB: $(grep memlock "$T/info")"
fi
nodes=$(cat /sys/devices/system/node/online 2>/dev/null)
[ -z "$nodes" ] || grep -q "^numa: nodes $nodes$" "$T/info" || fail "numa: $(grep numa "$T/info")"
thp=$(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)
[ -z "$thp" ] || grep -qF "hugepages: transparent $thp;" "$T/info" || fail "thp: $(grep hugepages "$T/info")"
grep -Eq '^post-copy: (possible \(userfaultfd\)|not possible here: .+)$' "$T/info" || fail "no post-copy line"
grep -q "^rmig $(sed -n 's/^#define RMIG_VERSION_STRING "\(.*\)"$/\1/p' include/rmig.h)$" "$T/info" ||
	fail "the version line: $(head -1 "$T/info")"
grep -q '^  tcp: built in' "$T/info" || fail "no tcp transport line"
"$RMIG" info extra >/dev/null 2>"$T/extra.err"
expect_eq "rmig info extra exit code" "$?" 2
pass "$(grep -c -E '^  [a-z]+ +(ready|missing)' "$T/info") backends checked, host figures agree"
