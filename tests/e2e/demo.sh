#!/bin/bash
# make demo: a running 1 GiB synthetic guest moves from one rmig process to
# another over loopback TCP. Succeeds only if both sides verified every byte
# and the guest was paused for less than 300 ms.
set -u
RMIG=${1:-build/rmig}
GUEST=${DEMO_GUEST:-sim:size=1G,dirty-rate=20000,hot=10%,zero=50%,seed=7}
T=$(mktemp -d "${TMPDIR:-/tmp}/rmig-demo.XXXXXX")
trap 'kill -9 $RECV_PID 2>/dev/null; rm -rf "$T"' EXIT

echo "== rmig demo: live-migrating $GUEST over TCP on loopback"
"$RMIG" recv --listen 127.0.0.1:0 --backend sim --json >"$T/recv.out" 2>"$T/recv.err" &
RECV_PID=$!
for _ in $(seq 100); do
	PORT=$(jq -r 'select(.event=="listening") | .port' "$T/recv.out" 2>/dev/null | head -1)
	[ -n "$PORT" ] && break
	sleep 0.05
done
[ -n "${PORT:-}" ] || { echo "demo: receiver did not start: $(cat "$T/recv.err")"; exit 1; }
echo "== receiver listening on 127.0.0.1:$PORT (rmig recv --listen 127.0.0.1:0 --backend sim)"
echo "== rmig send --backend $GUEST --verify 127.0.0.1:$PORT"
"$RMIG" send --backend "$GUEST" --verify "127.0.0.1:$PORT" 2>&1 | tee "$T/send.log"
send_rc=${PIPESTATUS[0]}
wait $RECV_PID
recv_rc=$?
s=$(jq -c 'select(.event=="summary")' "$T/recv.out")
echo "== receiver: $(jq -r '"\(.result), verified=\(.verified), guest running here=\(.guest_running) (\(.guest_progress_delta) writes since start)"' <<<"$s")"
down=$(sed -n 's/.*downtime \([0-9]*\) ms.*/\1/p' "$T/send.log" | tail -1)
if [ "$send_rc" = 0 ] && [ "$recv_rc" = 0 ] && grep -q ', verified' "$T/send.log" &&
	[ "$(jq -r .verified <<<"$s")" = true ] && [ "$(jq -r .guest_running <<<"$s")" = true ] &&
	[ -n "$down" ] && [ "$down" -lt 300 ]; then
	echo "== demo OK: migrated, verified on both sides, downtime $down ms (< 300 ms)"
	exit 0
fi
echo "== demo FAILED: send exit $send_rc, recv exit $recv_rc, downtime ${down:-?} ms"
cat "$T/recv.err"
exit 1
