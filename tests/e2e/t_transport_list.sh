#!/bin/bash
# --transport as an ordered list, on a host that may lack some of the links
# (this one has no RDMA device): the receiver listens on every link of the
# list it can, wherever the missing one stands, and a sender trying the list
# in order migrates over the first that reaches the receiver. A list of
# links none of which can listen fails with one line naming why.
. "$(dirname "$0")/lib.sh"

for order in "tcp,rdma" "rdma,tcp"; do
	start_recv "recv-$order" --backend sim --transport "$order"
	rc=0
	"$RMIG" send --json --transport "rdma,tcp" --backend sim:size=16M "127.0.0.1:$PORT" \
		>"$T/send-$order.out" 2>"$T/send-$order.err" || rc=$?
	wait "$RECV_PID" || fail "receiver --transport $order exited $?"
	[ $rc = 0 ] || fail "send into a receiver with --transport $order exited $rc"
	[ "$(summary "$T/send-$order.out" result)" = migrated ] &&
		[ "$(summary "$T/send-$order.out" verified)" = true ] ||
		fail "--transport $order: not migrated and verified"
done
if [ ! -d /sys/class/infiniband ] || [ -z "$(ls /sys/class/infiniband 2>/dev/null)" ]; then
	rc=0
	"$RMIG" recv --listen 127.0.0.1:0 --transport rdma --backend sim >"$T/none.out" \
		2>"$T/none.err" || rc=$?
	[ $rc = 1 ] && grep -q "no RDMA devices" "$T/none.err" ||
		fail "--transport rdma without a device: exit $rc, $(cat "$T/none.err")"
fi
pass "receivers listing tcp,rdma and rdma,tcp both served; rdma alone refused without a device"
