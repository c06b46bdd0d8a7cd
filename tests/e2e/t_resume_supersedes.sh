#!/bin/bash
# A destination lets go of its old connection the moment the source resumes
# on a new one, instead of waiting out its own link timeout.
#
# The link dies silently in pre-copy (faultproxy --cut-after 8000000
# --cut-silent: past 8 MB of data the connections stay open and carry
# nothing more; --raw under TLS). The
# source has a 1 s link timeout, the destination 20 s: the source notices
# first and reopens the migration through the proxy. That opening proves
# the key and names the migration, so the destination's listener wakes the
# session still waiting on the dead connection: it resumes at once. Checks:
#  - both sides migrated, verified, one failover each;
#  - the destination's failover says the source reconnected (not "silent
#    for 20000 ms");
#  - the destination's whole migration took under 10 s: waiting out its
#    own link timeout alone would take 20 s;
#  - the same with TLS, with the key and with x509 certificates (the
#    listener wakes a TLS-wrapped session; a certificate proves as a key);
#  - in post-copy (the cut on the first page answered on demand, the
#    destination's guest waiting for it): recovered once, the destination
#    says the source reconnected, under 10 s after the cut.
# Then, as a hostile peer: a migration runs through a faultproxy that only
# logs the migration's id (its first HELLO's nonce, in clear without TLS,
# as anyone on the path sees it). tests/tools/fakepeer reopens that
# migration with RESUME while it runs:
#  - without the key, then with a wrong key: each refused at its opening
#    ("authentication failed"), the migration goes on untouched (no
#    failover on either side);
#  - with the key (an insider, so that the check above cannot pass by
#    never reaching the session): the destination lets go of the source's
#    connection for it, refuses it, and the source fails over and completes.
# (Without any key, on loopback or --insecure, where an opening proves
# nothing, a reopening only waits: it never interrupts a session.)
. "$(dirname "$0")/lib.sh"
[ -x "$(dirname "$RMIG")/tests/faultproxy" ] || fail "faultproxy is missing (make unit)"
head -c 32 /dev/urandom >"$T/psk" && chmod 600 "$T/psk"
GUEST=sim:size=64M,dirty-rate=5000,hot=10%,zero=30%,seed=3
GUEST_SLOW=sim:size=32M,dirty-rate=200,hot=10%,zero=30%,seed=4 # ~5 s at 4 MB/s
LT_SRC=1000 LT_DST=20000

# supersede NAME AUTH_OPTIONS...: one migration through a proxy that cuts
# silently in round 1.
supersede() {
	local n=$1 rc_send=0 raw=()
	shift
	start_recv "$n-recv" --backend sim --link-timeout-ms $LT_DST --failover-timeout-ms 30000 "$@"
	[[ " $* " == *" --tls "* ]] && raw=(--raw)
	start_faultproxy "$n" --cut-after 8000000 --cut-silent "${raw[@]}"
	timeout 60 "$RMIG" send --json --transport tcp --backend "$GUEST" \
		--link-timeout-ms $LT_SRC --failover-timeout-ms 30000 "$@" \
		127.0.0.1:"$PPORT" >"$T/$n-send.out" 2>"$T/$n-send.err" || rc_send=$?
	wait_pid "$RECV_PID" 30
	kill -TERM "$PROXY_PID" 2>/dev/null
	expect_eq "$n: send exit code ($(tail -1 "$T/$n-send.err"))" "$rc_send" 0
	expect_eq "$n: recv exit code ($(tail -1 "$T/$n-recv.err"))" "$RC" 0
	for side in send recv; do
		expect_eq "$n: $side result" "$(summary "$T/$n-$side.out" result)" migrated
		expect_eq "$n: $side verified" "$(summary "$T/$n-$side.out" verified)" true
		expect_eq "$n: $side failovers" "$(summary "$T/$n-$side.out" failovers)" 1
	done
	local why
	why=$(jq -r 'select(.event=="failover") | .reason' "$T/$n-recv.out" | head -1)
	[[ $why == *"the source reconnected"* ]] ||
		fail "$n: the destination's failover: '$why' (it waited for its own timeout?)"
	local ms
	ms=$(summary "$T/$n-recv.out" total_ms)
	((ms < 10000)) || fail "$n: the destination took $ms ms (its link timeout is $LT_DST ms)"
	RESULT="$RESULT $n: destination total $ms ms, failover '$why';"
}

# The same silent death in post-copy, after the start: the destination's
# guest waits for a page the source answered into the dead connection.
postcopy_supersede() {
	local rc_send=0 why ms
	start_recv pc-recv --backend sim --psk-file "$T/psk" --no-tls --link-timeout-ms $LT_DST \
		--failover-timeout-ms 30000
	start_faultproxy pc --cut-on PAGE_DATA --cut-silent
	RMIG_TEST_HOLD=post-copy:300 timeout 60 "$RMIG" send --json --postcopy --transport tcp \
		--backend sim:size=256M,dirty-rate=20000,hot=5%,zero=50%,seed=7 --psk-file "$T/psk" \
		--no-tls --link-timeout-ms $LT_SRC --failover-timeout-ms 30000 \
		127.0.0.1:"$PPORT" >"$T/pc-send.out" 2>"$T/pc-send.err" || rc_send=$?
	wait_pid "$RECV_PID" 30
	kill -TERM "$PROXY_PID" 2>/dev/null
	grep -qE 'uffd: ' "$T/pc-send.err" && skip "$(grep -m1 'uffd: ' "$T/pc-send.err")"
	expect_eq "post-copy: send exit code ($(tail -1 "$T/pc-send.err"))" "$rc_send" 0
	expect_eq "post-copy: recv exit code ($(tail -1 "$T/pc-recv.err"))" "$RC" 0
	expect_eq "post-copy: cuts made" "$(grep -c 'cut on' "$T/pc-proxy.err")" 1
	for side in send recv; do
		expect_eq "post-copy: $side result" "$(summary "$T/pc-$side.out" result)" migrated
		expect_eq "post-copy: $side recoveries" "$(summary "$T/pc-$side.out" recoveries)" 1
	done
	why=$(jq -r 'select(.event=="failover") | .reason' "$T/pc-recv.out" | head -1)
	[[ $why == *"the source reconnected"* ]] ||
		fail "post-copy: the destination's recovery: '$why' (it waited for its own timeout?)"
	# From the cut (the proxy's wall clock) to the destination's failover
	# event: its recovery_ms starts only when it noticed the loss.
	local cut_at fo_at
	cut_at=$(sed -n 's/.*cut on PAGE_DATA.* at \([0-9]*\) ms$/\1/p' "$T/pc-proxy.err" | head -1)
	fo_at=$(jq -r 'select(.event=="failover") | .ts' "$T/pc-recv.out" | head -1)
	ms=$((fo_at - cut_at))
	((ms > 0 && ms < 10000)) ||
		fail "post-copy: the destination resumed $ms ms after the cut (its link timeout is $LT_DST ms)"
	RESULT="$RESULT post-copy: recovered $ms ms after the cut, '$why';"
}

# reopen NAME KEY_FILE|-...: a slowed migration through a logging proxy;
# once it is in pre-copy, fakepeer reopens it once per key (a file, or -:
# no key), one after the other: NAME-fake-1.out, NAME-fake-2.out, ...
reopen() {
	local n=$1 id i k=0 rc
	shift
	start_recv "$n-recv" --backend sim --psk-file "$T/psk" --no-tls
	start_faultproxy "$n"
	"$RMIG" send --json --transport tcp --backend "$GUEST_SLOW" --psk-file "$T/psk" --no-tls \
		--max-bandwidth 4M --link-timeout-ms 1000 --failover-timeout-ms 10000 \
		127.0.0.1:"$PPORT" >"$T/$n-send.out" 2>"$T/$n-send.err" &
	local spid=$!
	PIDS="$PIDS $spid"
	for i in $(seq 100); do
		id=$(awk '/connection 0 HELLO nonce/ { print $NF }' "$T/$n-proxy.err")
		[ -n "$id" ] && grep -q '"round":1' "$T/$n-send.out" && break
		sleep 0.05
	done
	[ -n "$id" ] || fail "$n: faultproxy logged no HELLO nonce"
	grep -q '"round":1' "$T/$n-send.out" || fail "$n: the migration never reached round 1"
	for key in "$@"; do
		k=$((k + 1))
		rc=0
		timeout 20 "$(dirname "$RMIG")/tests/fakepeer" 127.0.0.1 "$PORT" "resume=$id" \
			$([ "$key" != - ] && echo "$key") >"$T/$n-fake-$k.out" 2>&1 || rc=$?
		expect_eq "$n: fakepeer $k exit (refused with an ABORT): $(cat "$T/$n-fake-$k.out")" \
			"$rc" 0
		# The attempt met a running migration, not one already over.
		[ -z "$(summary "$T/$n-send.out" result)" ] ||
			fail "$n: the migration had ended before reopening $k was answered"
	done
	wait_pid "$spid" 60
	expect_eq "$n: send exit code ($(tail -1 "$T/$n-send.err"))" "$RC" 0
	wait_pid "$RECV_PID" 30
	expect_eq "$n: recv exit code ($(tail -1 "$T/$n-recv.err"))" "$RC" 0
	kill -TERM "$PROXY_PID" 2>/dev/null
	for side in send recv; do
		expect_eq "$n: $side result" "$(summary "$T/$n-$side.out" result)" migrated
		expect_eq "$n: $side verified" "$(summary "$T/$n-$side.out" verified)" true
	done
}

RESULT=""
supersede clear --psk-file "$T/psk" --no-tls
supersede tls --psk-file "$T/psk" --tls
"$(dirname "$0")/../../scripts/tls_creds.sh" "$T/creds" >/dev/null 2>&1 ||
	fail "scripts/tls_creds.sh failed"
supersede x509 --tls --tls-creds "$T/creds"
postcopy_supersede

head -c 32 /dev/urandom >"$T/wrong" && chmod 600 "$T/wrong"
reopen hostile - "$T/wrong"
for k in 1 2; do
	grep -q "ABORT: authentication failed" "$T/hostile-fake-$k.out" ||
		fail "hostile: reopening $k not refused for its key: $(cat "$T/hostile-fake-$k.out")"
	RESULT="$RESULT $([ $k = 1 ] && echo "no key" || echo "wrong key"): refused ($(head -c 100 "$T/hostile-fake-$k.out"));"
done
for side in send recv; do
	expect_eq "hostile: $side failovers" "$(summary "$T/hostile-$side.out" failovers)" 0
done
RESULT="$RESULT the migration untouched;"
reopen insider "$T/psk"
why=$(jq -r 'select(.event=="failover") | .reason' "$T/insider-recv.out" | head -1)
[[ $why == *"the source reconnected"* ]] ||
	fail "insider: the destination's failover: '$why' (the reopening never reached the session?)"
expect_eq "insider: send failovers" "$(summary "$T/insider-send.out" failovers)" 1
RESULT="$RESULT insider: refused ($(head -c 100 "$T/insider-fake-1.out")), the source failed over"

pass "$RESULT"
