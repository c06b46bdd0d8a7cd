#!/bin/bash
# timeout: 30
# rmig tunnel's usage errors: each says what is wrong in its first line
# ("rmig tunnel: ..."), naming what was given, and exits 2 (the service
# unit does not restart on 2), never a line from getopt, never a crash or a
# wait. (Before: getopt's own "send: unrecognized option" came first; a bad
# port was reported as "bad address 'h'", the address cut at its colon; a
# missing --expose/--forward exited 1, so the unit restarted it forever.)
. "$(dirname "$0")/lib.sh"
# check EXPECTED ARGS...: the first line of stderr is EXPECTED, exit 2
check() {
	local want=$1 rc
	shift
	timeout 10 "$RMIG" tunnel "$@" 2>"$T/err" >/dev/null
	rc=$?
	[ $rc = 2 ] || fail "rmig tunnel $*: exit $rc, not 2: $(cat "$T/err")"
	[ "$(head -1 "$T/err")" = "rmig tunnel: $want" ] ||
		fail "rmig tunnel $*: first line '$(head -1 "$T/err")', not 'rmig tunnel: $want'"
}
check "--help: unknown option" send --help
check "--nope: unknown option" recv --nope --listen 127.0.0.1:0 --forward a=/x
check "-x: unknown option" send -x 127.0.0.1 --expose a="$T/a"
check "--expose needs a value" send 127.0.0.1 --expose
check "--listen needs a value" recv --forward a=/x --listen
check "bad address 'h:99999' (give HOST, HOST:PORT or [V6]:PORT)" send h:99999 --expose a="$T/a"
check "bad address '127.0.0.1:abc' (give HOST, HOST:PORT or [V6]:PORT)" recv --listen 127.0.0.1:abc --forward a=/x
check "tunnel recv needs --forward NAME=PATH" recv --listen 127.0.0.1:0
check "tunnel send needs --expose NAME=PATH" send 127.0.0.1:1
check "give send or recv" --help
[ ! -e "$T/a" ] || fail "a usage error left a socket behind"
pass "usage errors: one first line each, exit 2"
