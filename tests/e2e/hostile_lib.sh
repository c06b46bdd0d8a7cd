# Helpers of the hostile-network tests (t_hostile_*.sh), on top of lib.sh.
#
# A test is a list of cases, run one after another by run_case, each in a
# subshell with its own directory ($T/ID), its own processes (killed when the
# case ends, however it ends) and its own verdict. A failed check (`bad`)
# is printed at once and the case goes on with its other checks, so that one
# run shows every check that fails; `fail` ends the case at once (the
# harness itself, or a check the rest depends on). Figures (`figure`) and
# verdicts are printed again at the end, verdicts last.
#
# The attackers are tests/tools/flood, each kind from its own loopback
# address so that the receiver's log can be attributed; the legitimate
# senders connect from 127.0.0.1.
#
# NOFLOOD=1 runs every case without its attackers (the flood lines then say
# so, and the checks on them fail): a control run, showing that the
# legitimate migrations of a case succeed on their own and that a failure
# with the attackers is theirs. ONLY=a,f runs only those cases; KEEP=1
# keeps every case's outputs (in $T/ID/).
. "$(dirname "$0")/lib.sh"
FLOOD=${FLOOD:-$(dirname "$RMIG")/tests/flood}
[ -x "$FLOOD" ] || fail "$FLOOD not built (make $(dirname "$RMIG")/tests/flood)"
command -v jq >/dev/null || fail "jq is required"
KEY=$T/key
head -c 32 /dev/urandom >"$KEY" && chmod 600 "$KEY"
GUEST=sim:size=32M,dirty-rate=2000
IDLE_FROM=127.0.0.2 TRICKLE_FROM=127.0.0.3 SPRAY_FROM=127.0.0.4 BIG_FROM=127.0.0.5
STORM_FROM=127.0.0.6
FIGURES=$T/figures
VERDICTS=$T/verdicts
: >"$FIGURES"
: >"$VERDICTS"
CASE=""
# Killed (run.sh's timeout): cleaned up all the same, by the EXIT traps.
trap 'exit 1' TERM INT

# bad WHY: a failed check; the case goes on.
bad() {
	echo "  FAIL [$CASE] $*"
	echo "$*" >>"$T/bad"
}

# fail WHY: a failed check that ends the case (or, outside a case, the test).
fail() {
	if [ -z "$CASE" ]; then
		echo "FAIL $NAME: $*"
		exit 1
	fi
	bad "$@"
	exit 1
}

# figure TEXT: a figure of the case, printed now and in the final report.
figure() {
	echo "  [$CASE] $*"
	echo "$CASE: $*" >>"$FIGURES"
}

# The end of a case: on failure, the last lines of what its processes said;
# then every process it started is killed.
case_cleanup() {
	local f n=0
	if [ -s "$T/bad" ]; then
		for f in "$T"/*.err; do
			[ -s "$f" ] && [ $n -lt 8 ] || continue
			n=$((n + 1))
			echo "  --- $CASE/$(basename "$f"), last lines:"
			tail -n 3 "$f" | cut -c1-300 | sed 's/^/    /'
		done
	fi
	for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
	wait 2>/dev/null
}

# run_case ID TITLE FUNCTION
run_case() {
	local id=$1 title=$2 fn=$3 rc=0 t0 ms
	[ -n "${ONLY:-}" ] && [[ ,$ONLY, != *,$id,* ]] && return
	t0=$(millis)
	echo "=== case $id: $title"
	(
		CASE=$id T=$T/$id PIDS=""
		mkdir -p "$T"
		trap case_cleanup EXIT
		trap 'exit 1' TERM INT
		"$fn"
		[ ! -s "$T/bad" ]
	) || rc=$?
	ms=$(($(millis) - t0))
	if [ $rc = 0 ]; then
		echo "ok   $id: $title ($ms ms)" >>"$VERDICTS"
	else
		echo "FAIL $id: $title ($ms ms): $(head -n 1 "$T/$id/bad" 2>/dev/null)$(
			n=$(wc -l <"$T/$id/bad" 2>/dev/null)
			[ "${n:-0}" -gt 1 ] && echo " (+$((n - 1)) more)"
		)" >>"$VERDICTS"
	fi
}

# finish: the figures, then the verdicts; exit 1 if a case failed.
finish() {
	local nfail ncase
	echo
	echo "figures:"
	sed 's/^/  /' "$FIGURES"
	echo "cases:"
	sed 's/^/  /' "$VERDICTS"
	ncase=$(wc -l <"$VERDICTS")
	[ "$ncase" -gt 0 ] || fail "no case ran (ONLY=${ONLY:-})"
	nfail=$(grep -c '^FAIL' "$VERDICTS")
	if [ "$nfail" -gt 0 ]; then
		echo "FAIL $NAME: $nfail of $ncase cases failed:$(sed -n 's/^FAIL \([^:]*\):.*/ \1/p' "$VERDICTS" | tr -d '\n')"
		exit 1
	fi
	pass "$*"
}

# wait_file FILE SECONDS: until FILE exists (1 on timeout).
wait_file() {
	local end=$(($(millis) + $2 * 1000))
	until [ -e "$1" ]; do
		[ "$(millis)" -ge $end ] && return 1
		sleep 0.05
	done
}

# wait_grep FILE STRING SECONDS: until FILE contains STRING (fixed string).
wait_grep() {
	local end=$(($(millis) + $3 * 1000))
	until grep -qF -- "$2" "$1" 2>/dev/null; do
		[ "$(millis)" -ge $end ] && return 1
		sleep 0.05
	done
}

# recv_start NAME [rmig recv options]: a receiver on 127.0.0.1, any port;
# sets PORT and RECV_PID. A receiver that exits first (e.g. an option it
# does not know) fails the case with its exit code and message.
recv_start() {
	local n=$1 rc
	shift
	"$RMIG" recv --listen 127.0.0.1:0 --json "$@" >"$T/$n.out" 2>"$T/$n.err" &
	RECV_PID=$!
	PIDS="$PIDS $RECV_PID"
	for _ in $(seq 200); do
		PORT=$(jq -r 'select(.event=="listening") | .port' "$T/$n.out" 2>/dev/null | head -n 1)
		[ -n "$PORT" ] && return 0
		if ! kill -0 "$RECV_PID" 2>/dev/null; then
			rc=0
			wait "$RECV_PID" || rc=$?
			fail "rmig recv $* exited $rc before listening: $(tail -n 1 "$T/$n.err")"
		fi
		sleep 0.05
	done
	fail "rmig recv $* did not report a listening port within 10 s"
}

# recv_stop: SIGTERM to the --keep-listening receiver RECV_PID, which must
# end by itself with exit 0.
recv_stop() {
	kill -0 "$RECV_PID" 2>/dev/null || {
		wait "$RECV_PID" 2>/dev/null
		bad "the receiver died during the case (exit $?)"
		return
	}
	kill -TERM "$RECV_PID"
	wait_pid "$RECV_PID" 10
	[ "$RC" = 0 ] || bad "the --keep-listening receiver exited $RC on SIGTERM, expected 0"
}

# recv_verified FILE: how many of the receiver's summaries say migrated and
# verified.
recv_verified() {
	jq -s '[.[] | select(.event=="summary" and .result=="migrated" and .verified==true)] | length' \
		"$1" 2>/dev/null || echo 0
}

# migrate NAME [rmig send options]: one legitimate sender to 127.0.0.1:PORT
# (the key, the sim guest, --json), in the foreground; sets SRC (exit code),
# SRC_MS and OK (1: exit 0, migrated, verified). A sender still running
# after 30 s (a 32 MiB guest takes well under 1 s here) ends the case.
migrate() {
	local n=$1 t0
	shift
	t0=$(millis)
	SRC=0
	timeout -k 2 30 "$RMIG" send --json --psk-file "$KEY" --backend "$GUEST" "$@" \
		"127.0.0.1:$PORT" >"$T/$n.out" 2>"$T/$n.err" || SRC=$?
	SRC_MS=$(($(millis) - t0))
	[ "$SRC" = 124 ] && fail "legitimate sender $n hung: still running after 30 s (killed): $(why "$n")"
	OK=0
	[ "$SRC" = 0 ] && [ "$(summary "$T/$n.out" result)" = migrated ] &&
		[ "$(summary "$T/$n.out" verified)" = true ] && OK=1
}

# send_bg NAME [rmig send options]: the same in the background; its pid in
# $T/NAME.pid (see bg_wait).
send_bg() {
	local n=$1
	shift
	"$RMIG" send --json --psk-file "$KEY" --backend "$GUEST" "$@" \
		"127.0.0.1:$PORT" >"$T/$n.out" 2>"$T/$n.err" &
	echo $! >"$T/$n.pid"
	PIDS="$PIDS $!"
}

# bg_wait NAME SECONDS: wait for send_bg's NAME; sets SRC and OK as migrate.
bg_wait() {
	wait_pid "$(cat "$T/$1.pid")" "$2"
	SRC=$RC
	OK=0
	[ "$SRC" = 0 ] && [ "$(summary "$T/$1.out" result)" = migrated ] &&
		[ "$(summary "$T/$1.out" verified)" = true ] && OK=1
}

# why NAME: the sender NAME's failure line, for a message.
why() {
	grep -m 1 '^rmig: [a-z_]*: ' "$T/$1.err" 2>/dev/null | cut -c1-200
}

# flood_start NAME [flood arguments]: an attacker in the background; its
# line in $T/NAME.out.
flood_start() {
	local n=$1
	shift
	if [ "${NOFLOOD:-0}" = 1 ]; then
		while [ $# -gt 0 ]; do
			[ "$1" = --ready-file ] && touch "$2"
			shift
		done
		echo "flood: $n: none (NOFLOOD=1)" >"$T/$n.out"
		sleep 0.1 &
		echo $! >"$T/$n.pid"
		return
	fi
	"$FLOOD" "$@" >"$T/$n.out" 2>"$T/$n.err" &
	echo $! >"$T/$n.pid"
	PIDS="$PIDS $!"
}

# flood_stop NAME: end the flood NAME (SIGTERM: it prints its line), or wait
# for it to end by itself; its line must be there.
flood_stop() {
	local p
	p=$(cat "$T/$1.pid")
	kill -TERM "$p" 2>/dev/null
	wait_pid "$p" 10
	[ -s "$T/$1.out" ] || fail "flood $1 printed nothing (exit $RC): $(tail -n 1 "$T/$1.err")"
}

# flood_wait NAME SECONDS: wait for the flood NAME to end by itself.
flood_wait() {
	wait_pid "$(cat "$T/$1.pid")" "$2"
	[ "$RC" = 0 ] && [ -s "$T/$1.out" ] || fail "flood $1 exited $RC: $(tail -n 1 "$T/$1.err")"
}

# Figures of a flood's line: fl_closed / fl_opened / fl_longest FILE.
fl_closed() { sed -n 's/.* \([0-9][0-9]*\) closed by the receiver.*/\1/p' "$1"; }
fl_opened() { sed -n 's/^flood: [a-z]*: \([0-9][0-9]*\) opened.*/\1/p' "$1"; }
fl_longest() { sed -n 's/.*longest held \([0-9][0-9]*\) ms.*/\1/p' "$1"; }
fl_made() { sed -n 's/^flood: spray: \([0-9][0-9]*\) connections made.*/\1/p' "$1"; }

# refused_lines FILE ADDR: the receiver's stderr lines naming a refused peer
# from ADDR, with a reason (README: "rmig: refused peer ADDR: reason").
refused_lines() { grep -c "refused peer $2:[0-9][0-9]*: ." "$1"; }
# refused_json FILE ADDR: its --json "refused" events from ADDR with a reason.
refused_json() {
	jq -s --arg a "$2:" '[.[] | select(.event=="refused" and ((.peer // "") | startswith($a))
		and ((.reason // "") | length > 0))] | length' "$1" 2>/dev/null || echo 0
}

# rss PID: its resident set, kB (read without forking).
rss() {
	local k v _
	while read -r k v _; do
		[ "$k" = VmRSS: ] && echo "$v" && return
	done <"/proc/$1/status"
	echo 0
}

# serve N WHAT: N legitimate senders one after another; sets served (how
# many migrated verified) and times; each failure is a bad() naming WHAT.
serve() {
	local i
	served=0 times=""
	for i in $(seq "$1"); do
		migrate send$i
		times="$times ${SRC_MS}ms(exit $SRC)"
		if [ $OK = 1 ]; then
			served=$((served + 1))
		else
			bad "legitimate sender $i $2: exit $SRC, $(summary "$T/send$i.out" result): $(why send$i)"
		fi
	done
}
