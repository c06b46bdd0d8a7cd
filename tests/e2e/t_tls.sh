#!/bin/bash
# Encryption in transit: TLS 1.3 with a pre-shared key and with x509
# certificates (QEMU's layout), each migration verified and summarised as
# encrypted; what an eavesdropper records holds none of the plaintext; every
# refusal (wrong name, expired or unknown-CA certificate, wrong key, TLS to
# a receiver in clear and clear to one requiring TLS, loose key modes, a
# corrupted record) is one line naming the problem, the receiver logs a
# refused event and, kept listening, serves the next sender. Auto mode: on
# towards a peer that is not on loopback, unless both sides say --no-tls.
. "$(dirname "$0")/lib.sh"
PROXY=${FAULTPROXY:-$(dirname "$RMIG")/tests/faultproxy}
[ -x "$PROXY" ] || fail "$PROXY is missing (make unit)"
CREDS_SH=$(dirname "$0")/../../scripts/tls_creds.sh
GUEST=sim:size=64M,dirty-rate=2000,seed=5
head -c 32 /dev/urandom >"$T/key" && chmod 600 "$T/key"
head -c 32 /dev/urandom >"$T/key2" && chmod 600 "$T/key2"
"$CREDS_SH" "$T/creds" >/dev/null 2>&1 || fail "scripts/tls_creds.sh failed"
"$CREDS_SH" "$T/other" >/dev/null 2>&1 || fail "scripts/tls_creds.sh (other CA) failed"
TLS_CA_DIR=$T/creds TLS_EXPIRED=1 "$CREDS_SH" "$T/expired" >/dev/null 2>&1 ||
	fail "scripts/tls_creds.sh (expired) failed"

# What this kernel seals with: kTLS where the tls module is, else user space.
KERNEL_TLS=user
[ -e /proc/net/tls_stat ] && KERNEL_TLS=ktls

# send NAME OPTS...: one sender to 127.0.0.1:$PORT; its exit code in SRC.
send() {
	local n=$1
	shift
	SRC=0
	timeout 60 "$RMIG" send --json "$@" 127.0.0.1:$PORT >"$T/$n.out" 2>"$T/$n.err" || SRC=$?
}

# expect_encrypted NAME FILE
expect_encrypted() {
	expect_eq "$1: verified" "$(summary "$2" verified)" true
	expect_eq "$1: encrypted" "$(summary "$2" encrypted)" true
	expect_eq "$1: sealed by" "$(summary "$2" tls)" "$KERNEL_TLS"
}

# 1. A pre-shared key, TLS asked for on loopback: migrated, verified, sealed.
start_recv psk-recv --backend sim --tls --psk-file "$T/key" --accept-timeout-ms 10000
send psk-send --backend $GUEST --tls --psk-file "$T/key"
wait_pid "$RECV_PID" 20
expect_eq "psk: send exit" "$SRC" 0
expect_eq "psk: recv exit" "$RC" 0
expect_encrypted "psk source" "$T/psk-send.out"
expect_encrypted "psk destination" "$T/psk-recv.out"

# 2. x509 in QEMU's layout, the receiver's name checked (127.0.0.1 is in its
# certificate; so is localhost, named with --tls-hostname).
start_recv x509-recv --backend sim --tls-creds "$T/creds" --tls --accept-timeout-ms 10000
send x509-send --backend $GUEST --tls-creds "$T/creds" --tls --tls-hostname localhost
wait_pid "$RECV_PID" 20
expect_eq "x509: send exit" "$SRC" 0
expect_eq "x509: recv exit" "$RC" 0
expect_encrypted "x509 source" "$T/x509-send.out"
expect_encrypted "x509 destination" "$T/x509-recv.out"

# 3. The wire: the same idle guest through a recording relay, in clear and
# then with TLS. Samples of the clear recording (frame headers, page bytes)
# must all be found in it and none in the TLS one.
IDLE=sim:size=32M,dirty-rate=0,seed=9
# relay NAME OPTS...: a migration of $IDLE through faultproxy --raw --record.
relay() {
	local n=$1 proxy
	shift
	start_recv "$n-recv" --backend sim --accept-timeout-ms 10000 "$@"
	rm -f "$T/proxy.port"
	"$PROXY" 0 "127.0.0.1:$PORT" --raw --record "$T/$n.wire" --ready-file "$T/proxy.port" \
		2>"$T/$n-proxy.err" &
	proxy=$!
	PIDS="$PIDS $proxy"
	for _ in $(seq 100); do [ -s "$T/proxy.port" ] && break; sleep 0.05; done
	[ -s "$T/proxy.port" ] || fail "$n: the relay did not start"
	SRC=0
	timeout 60 "$RMIG" send --json --backend $IDLE --channels 2 "$@" \
		"127.0.0.1:$(cat "$T/proxy.port")" >"$T/$n-send.out" 2>"$T/$n-send.err" || SRC=$?
	wait_pid "$RECV_PID" 20
	kill -TERM $proxy
	wait_pid $proxy 10
	expect_eq "$n: send exit" "$SRC" 0
	expect_eq "$n: verified" "$(summary "$T/$n-send.out" verified)" true
}
relay clear --psk-file "$T/key"
expect_eq "in clear: encrypted" "$(summary "$T/clear-send.out" encrypted)" false
relay sealed --psk-file "$T/key" --tls
expect_eq "through the relay: encrypted" "$(summary "$T/sealed-send.out" encrypted)" true
size=$(stat -c %s "$T/clear.wire")
[ "$size" -gt $((16 << 20)) ] || fail "the clear recording holds only $size bytes"
# hexpat FILE OFFSET LEN: the bytes there as a grep -P pattern.
hexpat() { od -An -tx1 -j "$2" -N "$3" "$1" | tr -d ' \n' | sed 's/../\\x&/g'; }
found=0
pats=("$(hexpat "$T/clear.wire" 0 8)") # the HELLO's frame header: magic, version, type
# 32 bytes near each tenth of the recording; grep works on lines, so a
# sample holds no newline (nor NUL), and zero bytes would prove nothing.
for i in $(seq 1 9); do
	for k in $(seq 0 40); do
		p=$(hexpat "$T/clear.wire" $((size * i / 10 + k * 37)) 32)
		[[ $p == *'\x0a'* || $p == *'\x00'* ]] || break
	done
	[[ $p == *'\x0a'* || $p == *'\x00'* ]] || pats+=("$p")
done
[ ${#pats[@]} -ge 6 ] || fail "too few samples of the clear recording"
for p in "${pats[@]}"; do
	LC_ALL=C grep -qaP "$p" "$T/clear.wire" || fail "sample $p not found in the clear recording"
	if LC_ALL=C grep -qaP "$p" "$T/sealed.wire"; then
		found=$((found + 1))
	fi
done
expect_eq "plaintext samples in the TLS recording" "$found" 0
[ "$(stat -c %s "$T/sealed.wire")" -gt $((16 << 20)) ] || fail "the TLS recording is too small"

# The link cut mid pre-copy: the sender fails over (a new TCP link, new
# handshakes) and finishes, sealed on both links; nothing in clear on the
# wire before or after.
start_recv cut-recv --backend sim --accept-timeout-ms 10000 --tls --psk-file "$T/key"
rm -f "$T/proxy.port"
"$PROXY" 0 "127.0.0.1:$PORT" --raw --cut-after $((12 << 20)) --record "$T/cut.wire" \
	--ready-file "$T/proxy.port" 2>"$T/cut-proxy.err" &
PROXY_PID=$!
PIDS="$PIDS $PROXY_PID"
for _ in $(seq 100); do [ -s "$T/proxy.port" ] && break; sleep 0.05; done
SRC=0
timeout 60 "$RMIG" send --json --backend $IDLE --channels 2 --tls --psk-file "$T/key" \
	"127.0.0.1:$(cat "$T/proxy.port")" >"$T/cut-send.out" 2>"$T/cut-send.err" || SRC=$?
wait_pid "$RECV_PID" 20
kill -TERM $PROXY_PID
wait_pid $PROXY_PID 10
grep -q "cut after" "$T/cut-proxy.err" || fail "failover: the relay did not cut"
expect_eq "failover: send exit" "$SRC" 0
expect_eq "failover: failovers" "$(summary "$T/cut-send.out" failovers)" 1
expect_encrypted "failover source" "$T/cut-send.out"
expect_encrypted "failover destination" "$T/cut-recv.out"
for p in "${pats[@]}"; do
	LC_ALL=C grep -qaP "$p" "$T/cut.wire" && fail "failover: plaintext sample $p on the wire"
done

# 4. Refusals, against receivers kept listening: each bad sender exits 1 with
# one line naming the problem, the receiver logs it and serves the next.
# bad NAME WANT OPTS...: a sender that must be refused with WANT.
bad() {
	local n=$1 want=$2
	shift 2
	send "$n" --backend $GUEST "$@"
	expect_eq "$n: send exit" "$SRC" 1
	grep -q -- "$want" "$T/$n.err" || fail "$n: the sender does not say '$want': $(cat "$T/$n.err")"
	[ "$(grep -c '^rmig: failed' "$T/$n.err")" = 1 ] || fail "$n: not one failure line"
	expect_eq "$n: source guest runs" "$(summary "$T/$n.out" guest_running)" true
	kill -0 "$RECV_PID" 2>/dev/null || fail "$n: the receiver died"
}
# refused N WANT FILE: the receiver's N-th refused event says WANT.
refused() {
	local got
	for _ in $(seq 40); do
		got=$(jq -r 'select(.event=="refused") | .reason' "$3" 2>/dev/null | sed -n "$1p")
		[ -n "$got" ] && break
		sleep 0.05
	done
	grep -q -- "$2" <<<"$got" || fail "refused event $1 is '$got', expected '$2'"
}
start_recv keep-x509 --backend sim --keep-listening --tls --tls-creds "$T/creds"
KEEP_X509=$RECV_PID
bad wrongname "does not name db.example (--tls-hostname)" --tls --tls-creds "$T/creds" \
	--tls-hostname db.example
refused 1 "refused the handshake" "$T/keep-x509.out"
bad unknownca "certificate of 127.0.0.1:$PORT is not accepted" --tls --tls-creds "$T/other"
refused 2 "unknown ca" "$T/keep-x509.out"
bad expired "127.0.0.1:$PORT refused our certificate (certificate expired)" --tls \
	--tls-creds "$T/expired"
refused 3 "is not accepted: certificate has expired" "$T/keep-x509.out"
bad inclear "requires TLS: give the sender --tls and the same credentials" --psk-file "$T/key"
refused 4 "speaks in clear, but this receiver requires TLS" "$T/keep-x509.out"
send x509-after --backend $GUEST --tls --tls-creds "$T/creds"
expect_eq "x509 after refusals: send exit" "$SRC" 0
expect_encrypted "x509 after refusals" "$T/x509-after.out"
kill -TERM $KEEP_X509
wait_pid $KEEP_X509 10

start_recv keep-psk --backend sim --keep-listening --tls --psk-file "$T/key"
KEEP_PSK=$RECV_PID
bad wrongkey "does it hold the same pre-shared key? (--psk-file)" --tls --psk-file "$T/key2"
refused 1 "does not hold our pre-shared key (--psk-file)" "$T/keep-psk.out"
send psk-after --backend $GUEST --tls --psk-file "$T/key"
expect_eq "psk after a wrong key: send exit" "$SRC" 0
expect_encrypted "psk after a wrong key" "$T/psk-after.out"
kill -TERM $KEEP_PSK
wait_pid $KEEP_PSK 10

# A TLS server without the key that shows a certificate instead (any
# certificate: a PSK-only sender has no CA to check it with): refused in the
# handshake, before anything of rmig's goes to it.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=rogue -days 1 \
	-keyout "$T/rogue.key" -out "$T/rogue.crt" >/dev/null 2>&1 || fail "openssl req failed"
sleep 20 | openssl s_server -tls1_3 -num_tickets 0 -accept 127.0.0.1:0 -cert "$T/rogue.crt" \
	-key "$T/rogue.key" >"$T/rogue.out" 2>&1 &
ROGUE=$!
PIDS="$PIDS $ROGUE"
for _ in $(seq 100); do grep -q '^ACCEPT' "$T/rogue.out" && break; sleep 0.05; done
ROGUE_PORT=$(sed -n 's/^ACCEPT .*:\([0-9]*\)$/\1/p' "$T/rogue.out")
[ -n "$ROGUE_PORT" ] || fail "openssl s_server did not start"
SRC=0
timeout 20 "$RMIG" send --json --transport tcp --backend $GUEST --tls --psk-file "$T/key" \
	"127.0.0.1:$ROGUE_PORT" >"$T/rogue-send.out" 2>"$T/rogue-send.err" || SRC=$?
kill $ROGUE 2>/dev/null
expect_eq "rogue server: send exit" "$SRC" 1
grep -q "does not hold our pre-shared key (--psk-file): it showed a certificate" \
	"$T/rogue-send.err" || fail "rogue server: the sender says $(cat "$T/rogue-send.err")"
! LC_ALL=C grep -qa RMIG "$T/rogue.out" || fail "rogue server: it got rmig's HELLO"

# A receiver in clear (--no-tls) and a sender that asked for TLS.
start_recv keep-clear --backend sim --keep-listening --no-tls --psk-file "$T/key"
KEEP_CLEAR=$RECV_PID
bad tls2clear "answered in clear, not TLS: it does not use TLS" --tls --psk-file "$T/key"
refused 1 "sent a TLS ClientHello, but this receiver does not use TLS (it runs with --no-tls" \
	"$T/keep-clear.out"
send clear-after --backend $GUEST --psk-file "$T/key"
expect_eq "clear after a TLS sender: send exit" "$SRC" 0
expect_eq "clear after a TLS sender: encrypted" "$(summary "$T/clear-after.out" encrypted)" false
kill -TERM $KEEP_CLEAR
wait_pid $KEEP_CLEAR 10

# 5. Configuration refused before anything moves, one line each.
# cfg_bad NAME WANT ARGS...: rmig exits non-zero saying WANT.
cfg_bad() {
	local n=$1 want=$2 rc=0
	shift 2
	timeout 20 "$RMIG" "$@" >"$T/$n.cfg.out" 2>"$T/$n.cfg.err" || rc=$?
	[ $rc != 0 ] || fail "$n: accepted"
	grep -q -- "$want" "$T/$n.cfg.err" || fail "$n: says '$(cat "$T/$n.cfg.err")', not '$want'"
}
cfg_bad nocreds "encryption needs credentials (--psk-file or --tls-creds)" \
	send --tls --backend $GUEST 127.0.0.1:1
cfg_bad pinall "RDMA WRITE, which no TLS record can seal" \
	send --tls --psk-file "$T/key" --pin all --backend $GUEST 127.0.0.1:1
cfg_bad hostnopsk "--tls-hostname: only a certificate names a host (--tls-creds)" \
	send --tls-hostname db.example --psk-file "$T/key" --backend $GUEST 127.0.0.1:1
cfg_bad credsoff "--tls-creds: given with --no-tls, it would not be used" \
	recv --no-tls --tls-creds "$T/creds" --backend sim --listen 127.0.0.1:0
cp -r "$T/creds" "$T/loose" && chmod 644 "$T/loose/server-key.pem"
cfg_bad loosekey "server-key.pem is readable by group or others (mode 644); chmod 600 it" \
	recv --tls --tls-creds "$T/loose" --backend sim --listen 127.0.0.1:0 --accept-timeout-ms 2000
cfg_bad nodir "--tls-creds: $T/nowhere/server-key.pem: No such file or directory" \
	recv --tls --tls-creds "$T/nowhere" --backend sim --listen 127.0.0.1:0 \
	--accept-timeout-ms 2000
cfg_bad longdir "--tls-creds: longer than 511 characters" \
	send --tls --tls-creds "$(printf 'd%.0s' $(seq 600))" --backend $GUEST 127.0.0.1:1
chmod 600 "$T/loose/client-key.pem"
rm -f "$T/loose/client-cert.pem"
cfg_bad nocert2 "cannot load the certificate" send --tls --tls-creds "$T/loose" \
	--backend $GUEST 127.0.0.1:1

# 6. A record corrupted in flight: the receiver's check fails before the
# bytes are used; the migration rolls back, the source guest runs on.
start_recv corrupt-recv --backend sim --accept-timeout-ms 10000 --tls --psk-file "$T/key" \
	--failover none
rm -f "$T/proxy.port"
"$PROXY" 0 "127.0.0.1:$PORT" --raw --data-frames 1 --ready-file "$T/proxy.port" \
	2>"$T/corrupt-proxy.err" &
PROXY_PID=$!
PIDS="$PIDS $PROXY_PID"
for _ in $(seq 100); do [ -s "$T/proxy.port" ] && break; sleep 0.05; done
"$RMIG" send --json --backend sim:size=256M,dirty-rate=2000 --max-bandwidth 60M --tls \
	--psk-file "$T/key" --failover none "127.0.0.1:$(cat "$T/proxy.port")" \
	>"$T/corrupt-send.out" 2>"$T/corrupt-send.err" &
SENDER=$!
PIDS="$PIDS $SENDER"
wait_phase "$T/corrupt-send.out" pre-copy $SENDER
sleep 1
kill -USR2 $PROXY_PID
wait_pid $SENDER 30
expect_eq "corrupted record: send exit" "$RC" 3
wait_pid "$RECV_PID" 20
grep -q "corrupted a byte of data stream" "$T/corrupt-proxy.err" || fail "the relay corrupted nothing"
grep -q "failed authentication (corrupted or forged in transit); none of it was used" \
	"$T/corrupt-recv.err" || fail "corrupted record: the receiver does not say so"
expect_eq "corrupted record: source result" "$(summary "$T/corrupt-send.out" result)" rolled_back
expect_eq "corrupted record: source guest runs" \
	"$(summary "$T/corrupt-send.out" guest_running)" true
expect_eq "corrupted record: destination result" \
	"$(summary "$T/corrupt-recv.out" result)" rolled_back
kill -TERM $PROXY_PID 2>/dev/null

# 7. Auto: with credentials, a peer that is not on loopback gets TLS without
# asking; --no-tls on one side only is refused. A veth pair gives this host
# a non-loopback address.
if [ "$(id -u)" != 0 ]; then
	[ "${CI:-}" = true ] && fail "needs root for the non-loopback case"
	skip "auto mode towards a non-loopback peer needs root (ip link add ... type veth)"
fi
DEV=rmigt$$
ADDR=10.214.$(($$ % 200)).1
ip link add "$DEV" type veth peer name "${DEV}p" && ip addr add "$ADDR/32" dev "$DEV" &&
	ip link set "$DEV" up && ip link set "${DEV}p" up || fail "cannot create a veth pair"
trap 'ip link del "$DEV" 2>/dev/null; cleanup' EXIT
# remote NAME OPTS...: a receiver on the non-loopback address.
remote() {
	local n=$1
	shift
	"$RMIG" recv --listen "$ADDR:0" --json --backend sim "$@" >"$T/$n.out" 2>"$T/$n.err" &
	RECV_PID=$!
	PIDS="$PIDS $RECV_PID"
	wait_port "$n"
}
remote auto-recv --psk-file "$T/key" --accept-timeout-ms 10000
SRC=0
"$RMIG" send --json --backend $GUEST --psk-file "$T/key" "$ADDR:$PORT" >"$T/auto-send.out" \
	2>"$T/auto-send.err" || SRC=$?
wait_pid "$RECV_PID" 20
expect_eq "auto: send exit" "$SRC" 0
expect_encrypted "auto, not on loopback" "$T/auto-send.out"
expect_encrypted "auto, not on loopback (destination)" "$T/auto-recv.out"
# Certificates and no key, towards a peer not on loopback: TLS proves who
# the receiver is, so the sender goes on without --insecure.
"$CREDS_SH" "$T/vcreds" "$ADDR" >/dev/null 2>&1 || fail "scripts/tls_creds.sh $ADDR failed"
remote x509-remote-recv --tls-creds "$T/vcreds" --accept-timeout-ms 10000
SRC=0
"$RMIG" send --json --backend $GUEST --tls-creds "$T/vcreds" "$ADDR:$PORT" \
	>"$T/x509-remote.out" 2>"$T/x509-remote.err" || SRC=$?
wait_pid "$RECV_PID" 20
expect_eq "x509 without a key, not on loopback: send exit" "$SRC" 0
expect_encrypted "x509 without a key, not on loopback" "$T/x509-remote.out"
remote auto-recv2 --psk-file "$T/key" --accept-timeout-ms 3000
SRC=0
"$RMIG" send --json --backend $GUEST --psk-file "$T/key" --no-tls "$ADDR:$PORT" \
	>"$T/auto-notls.out" 2>"$T/auto-notls.err" || SRC=$?
wait_pid "$RECV_PID" 20
expect_eq "--no-tls on the sender only: send exit" "$SRC" 1
grep -q "requires TLS" "$T/auto-notls.err" || fail "--no-tls on one side: the sender's message"
remote notls-recv --psk-file "$T/key" --no-tls --accept-timeout-ms 10000
SRC=0
"$RMIG" send --json --backend $GUEST --psk-file "$T/key" --no-tls "$ADDR:$PORT" \
	>"$T/notls.out" 2>"$T/notls.err" || SRC=$?
wait_pid "$RECV_PID" 20
expect_eq "--no-tls on both sides: send exit" "$SRC" 0
expect_eq "--no-tls on both sides: encrypted" "$(summary "$T/notls.out" encrypted)" false
expect_eq "--no-tls on both sides: tls" "$(summary "$T/notls.out" tls)" off

pass "psk and x509 migrations sealed ($KERNEL_TLS), no plaintext on the wire (${#pats[@]} samples, also across a failover), 10 refusals, a rogue server without the key refused, corrupted record rolled back, auto on off loopback"
