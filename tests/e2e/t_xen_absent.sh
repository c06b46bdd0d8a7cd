#!/bin/bash
# The xen backend where there is no Xen (CI, this host): `--backend
# xen:domid=1` fails at once with one line naming the hypervisor interface,
# exit 1, no crash; receiving with xen says it is not supported. Skips where
# rmig was built without libxen-dev, or on a real Xen dom0.
. "$(dirname "$0")/lib.sh"

if [ -e /dev/xen/privcmd ] || [ -e /proc/xen/privcmd ]; then
	skip "this host runs on Xen: the absent-Xen error cannot be checked"
fi
rc=0
"$RMIG" send --backend xen:domid=1 127.0.0.1:1 >"$T/send.out" 2>"$T/send.err" || rc=$?
if [ "$rc" = 2 ] && grep -q "unknown backend 'xen'" "$T/send.err"; then
	skip "rmig was built without the xen backend (install libxen-dev, rebuild)"
fi
[ "$rc" = 1 ] || [ "$rc" = 2 ] || fail "send --backend xen:domid=1 exited $rc, expected 1 or 2"
[ "$(wc -l <"$T/send.err")" = 1 ] || fail "expected one line on stderr, got: $(cat "$T/send.err")"
grep -q "xen: cannot open the hypervisor interface (xc_interface_open): .*is this a Xen dom0?" \
	"$T/send.err" || fail "unexpected message: $(cat "$T/send.err")"

# Bad specs are usage errors (exit 2), still one line.
for spec in xen xen:domid=0 xen:domid=x xen:dom=1; do
	rc=0
	"$RMIG" send --backend "$spec" 127.0.0.1:1 >"$T/usage.out" 2>"$T/usage.err" || rc=$?
	[ "$rc" = 2 ] && [ "$(wc -l <"$T/usage.err")" = 1 ] && grep -q "xen: " "$T/usage.err" ||
		fail "--backend $spec: exit $rc: $(cat "$T/usage.err")"
done

# The receiving side is the toolstack's job: refused before listening.
rc=0
timeout 10 "$RMIG" recv --listen 127.0.0.1:0 --backend xen >"$T/recv.out" 2>"$T/recv.err" || rc=$?
[ "$rc" = 1 ] && [ "$(wc -l <"$T/recv.err")" = 1 ] && grep -q "xen: receiving a guest is not supported" "$T/recv.err" ||
	fail "recv --backend xen: exit $rc: $(cat "$T/recv.err")"
pass "$(cat "$T/send.err")"
