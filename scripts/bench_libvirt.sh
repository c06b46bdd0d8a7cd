#!/bin/bash
# (13) libvirt migrating a guest through UNIX sockets carried between two
# hosts (issue 20's "Measured" row): by a plain socat relay, the baseline,
# and through `rmig tunnel` with a PSK. The two hosts are tests/libvirt's: two
# libvirtd instances on this machine, each in its own mount + network
# namespace, a veth pair between them. Runs alternate, socat's then the
# tunnel's, BENCH_LV_RUNS times each; medians are compared.
#
#   RMIG=build/rmig scripts/bench_libvirt.sh [OUTDIR]
#
# Both relays stay up for the whole run, each on its own sockets and ports
# (an idle relay costs nothing measurable): socat (lv.sh's lv_relay_socat,
# a TCP connection per UNIX connection) under /var/lib/libvirt/relay, the
# tunnel (lv_relay_rmig: one `rmig tunnel` pair per channel, TLS 1.3 with a
# key made for the run) under /var/lib/libvirt/relay-rmig. Each run boots a
# new counter guest (tests/qemu's, as a libvirt domain: TCG, 256 MiB, ~40
# MB/s dirtied) on the source, waits for count 20, migrates it memory only
# with `virsh migrate --live --p2p` through the relay of the run, and
# checks what t_libvirt_relay.sh checks (lv_test_migrated: the guest runs
# on the destination only, its counter goes on without a gap or a repeat).
# Figures: total time and downtime from the source's `virsh domjobinfo
# --completed` (lv_job_completed), and the guest's side: how long its
# console was silent across the switch-over (lv_gap), beside its own count
# interval just before (lv_count_interval).
#
# Prints a markdown table (each run, then the medians side by side, the
# exact commands) and writes OUTDIR/libvirt.json when OUTDIR is given. Exit
# 0 when every run migrated and checked out, 1 otherwise, 2 on usage
# errors, 77 ("SKIP: reason") without root, libvirt or the guest's kernel.
#
# Knobs: BENCH_LV_RUNS (5), BENCH_LV_TIMEOUT (s per migration, 150).
set -uo pipefail
[ $# -le 1 ] || { echo "usage: RMIG=build/rmig $0 [OUTDIR]" >&2; exit 2; }
OUT=${1:-}
HERE=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${BENCH_LV_RUNS:-5}
TMO=${BENCH_LV_TIMEOUT:-150}
for v in RUNS TMO; do
	if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
		echo "bench_libvirt: $v='${!v}' is not a number >= 1" >&2
		exit 2
	fi
done
command -v jq >/dev/null || { echo "bench_libvirt: jq is missing" >&2; exit 2; }
if [ -n "$OUT" ]; then
	mkdir -p "$OUT" || exit 2
	OUT=$(cd "$OUT" && pwd)
fi
RMIG=${RMIG:-$HERE/build/rmig}
case $RMIG in /*) ;; *) RMIG=$PWD/$RMIG ;; esac
[ -x "$RMIG" ] || { echo "bench_libvirt: $RMIG is not built" >&2; exit 2; }
export RMIG
T=$(mktemp -d "${TMPDIR:-/tmp}/rmig-blv.XXXXXX")
finish() {
	[ -n "$OUT" ] && [ -d "$T/lv" ] &&
		cp "$T"/lv/migrate-*.err "$T"/lv/relay-*.err "$T"/lv/tunnel-*.err "$OUT/" 2>/dev/null
	rm -rf "$T"
}
trap finish EXIT
say() { echo "bench_libvirt: $*" >&2; }
# What lv.sh's lv_test_* call (tests/e2e/lib.sh's, for a bench): one line
# on stderr. A run is a subshell, so its fail ends the run, not the bench.
fail() { say "$*"; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }
expect_eq() { [ "$2" = "$3" ] || fail "$1 is '$2', expected '$3'"; }
. "$HERE/tests/qemu/guest.sh"
. "$HERE/tests/libvirt/lv.sh" # LV_DIR=$T/lv; chains lv_cleanup in front of finish

# use socat|rmig: the relay the next lv_relay_all, lv_dest_uri and
# lv_migrate_start go through (its own sockets' directory and ports).
use() {
	LV_RELAY=$1
	case $1 in
	socat) LV_RELAY_DIR=/var/lib/libvirt/relay LV_PORT=([libvirt]=16509 [migrate]=49152 [nbd]=49153) ;;
	rmig) LV_RELAY_DIR=/var/lib/libvirt/relay-rmig LV_PORT=([libvirt]=7472 [migrate]=7473 [nbd]=7474) ;;
	esac
}

# relay_cmds: the two ends of the migrate channel of the relay in use, as
# they run (the run's directory shown as $LV_DIR). socat's from their
# /proc cmdline; rmig's written out from what lv_relay_rmig passes (rmig
# splits its address and NAME=PATH arguments in place, so its cmdline reads
# "10.99.0.2 7473").
relay_cmds() {
	local p path=$LV_RELAY_DIR/migrate.sock port=${LV_PORT[migrate]} addr=${_LV_ADDR[dst]}
	if [ "$LV_RELAY" = rmig ]; then
		echo "rmig tunnel recv --psk-file \$LV_DIR/tunnel.key --listen $addr:$port --forward migrate=$path"
		echo "rmig tunnel send --psk-file \$LV_DIR/tunnel.key $addr:$port --expose migrate=$path"
		return
	fi
	for p in ${_LV_RELAY_PIDS[$path]}; do
		tr '\0' ' ' <"/proc/$p/cmdline" | sed "s| *$||; s|$LV_DIR|\$LV_DIR|g"
		echo
	done
}

lv_test_prepare
use socat
lv_test_hosts relay
mkdir -p "$LV_DIR"/src/lib/relay-rmig "$LV_DIR"/dst/lib/relay-rmig
use rmig
lv_relay_all src dst || fail "$LV_ERROR"
h=$(lv_in src timeout 20 virsh -c "$(lv_dest_uri)" hostname 2>&1) || fail "the destination libvirtd through the tunnel: $h"
expect_eq "destination hostname through the tunnel" "$h" rmig-lv-dst
cmd_rmig=$(relay_cmds)
use socat
cmd_socat=$(relay_cmds)

# run I RELAY: one migration of a new guest through RELAY; prints its JSON
# line, or fails (one line on stderr). In a subshell: lv_test_*'s fail ends
# it alone.
run() {
	local g=lvb-$2-$1 tot down gap iv
	use "$2"
	lv_test_boot src "$g"
	iv=$(lv_count_interval src "$g" 3)
	lv_gap_watch dst "$g"
	lv_migrate_start src dst "$g"
	lv_migrate_wait src "$g" "$TMO" || fail "$LV_ERROR"
	lv_test_migrated "$g"
	read -r tot down <<<"$(lv_job_completed src "$g")"
	gap=$(lv_gap src dst "$g")
	[[ $tot =~ ^[0-9]+$ && $down =~ ^[0-9]+$ ]] || fail "domjobinfo --completed of $g: '$tot' '$down'"
	[[ $gap =~ ^-?[0-9]+$ ]] || gap=null
	[[ $iv =~ ^[0-9]+$ ]] || iv=null
	jq -nc --arg relay "$2" --argjson total "$tot" --argjson down "$down" --argjson gap "$gap" \
		--argjson iv "$iv" --arg seq "$SEQ" \
		'{relay: $relay, total_ms: $total, downtime_ms: $down, console_gap_ms: $gap, count_interval_ms: $iv, counter: $seq}'
}

row() { # LABEL JSON
	jq -r --arg l "$1" '"| \($l) | \(.relay) | \(.total_ms) | \(.downtime_ms) | \(.console_gap_ms // "?") | \(.count_interval_ms // "?") | \(.counter // "") |"' <<<"$2"
}

runs="[]" bad=0
echo "libvirt $(virsh --version), $(qemu-system-x86_64 --version | head -n1); two libvirtd on this machine (tests/libvirt: own namespaces, a veth pair); the counter guest (TCG, 256 MiB, about 40 MB/s dirtied) migrated memory only, a new guest per run; runs alternate, socat's then the tunnel's."
echo
echo "| run | relay | total, ms | downtime, ms | console silent, ms | count interval, ms | counter |"
echo "|---|---|---|---|---|---|---|"
for i in $(seq "$RUNS"); do
	for relay in socat rmig; do
		if r=$(run "$i" "$relay" 2>"$T/run.err"); then
			row "$i" "$r"
			runs=$(jq -c --argjson r "$r" '. + [$r]' <<<"$runs")
		else
			e=$(tail -n1 "$T/run.err")
			say "run $i ($relay): $e"
			echo "| $i | $relay | failed: $e | | | | |"
			bad=1
		fi
		# The destination's guest off (the CPU for the next run), both domains gone.
		lv_virsh dst destroy "lvb-$relay-$i" >/dev/null 2>&1
		lv_virsh src destroy "lvb-$relay-$i" >/dev/null 2>&1
		lv_virsh src undefine "lvb-$relay-$i" >/dev/null 2>&1
	done
done
med=$(jq -c 'def med(f): [.[] | f | select(. != null)] | sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
	def of(r): [.[] | select(.relay == r)] | if length == 0 then null else {relay: r, runs: length,
	total_ms: med(.total_ms), downtime_ms: med(.downtime_ms), console_gap_ms: med(.console_gap_ms),
	count_interval_ms: med(.count_interval_ms)} end;
	{socat: of("socat"), rmig: of("rmig")}' <<<"$runs")
for r in socat rmig; do
	m=$(jq -c ".$r" <<<"$med")
	[ "$m" != null ] && row "median of $(jq .runs <<<"$m")" "$m"
done
echo
jq -r 'if .socat and .rmig then
	"rmig tunnel against socat (medians): total \(.rmig.total_ms) ms against \(.socat.total_ms) (\(.rmig.total_ms / .socat.total_ms * 100 | round / 100)x), downtime \(.rmig.downtime_ms) ms against \(.socat.downtime_ms), console silent \(.rmig.console_gap_ms // "?") ms against \(.socat.console_gap_ms // "?")." else empty end' <<<"$med"
echo
echo "Total and downtime: the source's \`virsh domjobinfo --completed\` (Time elapsed, Total downtime). Console silent: from the source console's last write to the destination console's first, the pause plus up to one count interval (tests/libvirt/lv.sh, lv_gap). Counter: the guest's counts over both consoles, checked without a gap or a repeat."
echo
echo "Commands (in the source's namespace unless said; \$LV_DIR is the run's directory; the libvirt and nbd channels the same way on their own sockets and ports):"
echo
echo '```sh'
echo "# socat (baseline); destination, then source:"
echo "$cmd_socat"
echo "# rmig tunnel, one pair per channel, a 32-byte key; destination, then source:"
echo "$cmd_rmig"
echo "# the migration, LV_RELAY_DIR=/var/lib/libvirt/relay (socat) or /var/lib/libvirt/relay-rmig (rmig):"
echo "virsh -c qemu:///system migrate --live --p2p --verbose GUEST \\"
echo "    'qemu+unix:///system?socket=\$LV_RELAY_DIR/libvirt.sock' --migrateuri unix://\$LV_RELAY_DIR/migrate.sock"
echo '```'
if [ -n "$OUT" ]; then
	jq -n --arg date "$(date -u +%FT%TZ)" --arg libvirt "$(virsh --version)" \
		--arg qemu "$(qemu-system-x86_64 --version | head -n1)" \
		--arg socat "$cmd_socat" --arg rmig "$cmd_rmig" \
		--argjson runs "$runs" --argjson med "$med" --argjson ok $((1 - bad)) \
		'{date: $date, libvirt: $libvirt, qemu: $qemu, commands: {socat: $socat, rmig: $rmig},
		  ok: ($ok == 1), runs: $runs, median: $med}' \
		>"$OUT/libvirt.json" || { say "cannot write $OUT/libvirt.json"; exit 1; }
fi
exit $bad
