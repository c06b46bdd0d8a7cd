# Helpers for tests and benchmarks that run the QEMU test guest (built by
# tests/qemu/setup.sh; see tests/qemu/README.md). Source it (bash 4.2+):
#
#   . tests/e2e/lib.sh            # optional: its EXIT trap is kept
#   . tests/qemu/guest.sh         # chains guest_cleanup in front of the EXIT trap
#   guest_prepare || ...          # setup.sh; 77 = no qemu/kernel ($GUEST_ERROR)
#   guest_start src || fail "$GUEST_ERROR"
#   guest_wait_counter src 20 60 || fail "$GUEST_ERROR"
#   guest_start_dst dst || ...    # same machine, -S -incoming defer
#   qmp src query-status          # QMP through the harness' own monitor
#
# Per guest NAME, in $GUEST_DIR: NAME.log (serial console), NAME.qmp (QMP
# socket for the code under test, e.g. rmig's qemu backend), NAME.ctl.qmp (a
# second QMP monitor for the harness: a QMP socket serves one client at a
# time, so the two never wait for each other), NAME.err (QEMU's stderr).
#
# Every QEMU started here is killed by guest_cleanup, which the EXIT trap
# runs (INT, TERM and HUP are turned into an exit so that it runs then too);
# a watchdog per guest also kills it should this shell die by SIGKILL.
# Functions return non-zero on failure with the reason in $GUEST_ERROR; call
# guest_start/guest_kill in the current shell, not in $(...), since they
# record what they started.
#
# Environment: GUEST_DIR (default $T, else a temp dir of its own), QMPC (QMP
# client; default next to $RMIG: build/tests/qmpc), GUEST_MEM (-m, 262080K),
# GUEST_APPEND (extra kernel parameters, e.g. "rmig_dirty_kib=1024
# rmig_sleep=0.1": see guest-init.sh), QEMU_BUILD_DIR (build/qemu),
# QMP_TIMEOUT (seconds per QMP exchange, 10).

_guest_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
GUEST_BUILD=${QEMU_BUILD_DIR:-$_guest_repo/build/qemu}
_guest_rmig=${RMIG:-$_guest_repo/build/rmig}
case $_guest_rmig in /*) ;; *) _guest_rmig=$(pwd)/$_guest_rmig ;; esac
QMPC=${QMPC:-$(dirname "$_guest_rmig")/tests/qmpc}
# 256 MiB - 64 KiB, not 256M: QEMU < 9.0 loses dirty pages under TCG when a
# RAM block is a multiple of 256 KiB (see README.md, "Why 262080K").
GUEST_MEM=${GUEST_MEM:-262080K}
GUEST_APPEND=${GUEST_APPEND:-}
QMP_TIMEOUT=${QMP_TIMEOUT:-10}
GUEST_ERROR=""
_guest_own_dir=0
if [ -z "${GUEST_DIR:-}" ]; then
	if [ -n "${T:-}" ] && [ -d "$T" ]; then
		GUEST_DIR=$T
	else
		GUEST_DIR=$(mktemp -d "${TMPDIR:-/tmp}/rmig-guest.XXXXXX")
		_guest_own_dir=1
	fi
fi
declare -gA _GUEST_PID=() _GUEST_DOG=()

# --- setup -------------------------------------------------------------------------

# guest_prepare: run tests/qemu/setup.sh (cached) and check the QMP client.
# Returns 0, 77 (QEMU or the kernel cannot be had; GUEST_ERROR = the reason)
# or 1 (GUEST_ERROR says why).
guest_prepare() {
	local out rc=0
	out=$("$_guest_repo/tests/qemu/setup.sh" 2>&1) || rc=$?
	if [ "$rc" = 77 ]; then
		GUEST_ERROR=$(grep -m1 '^SKIP' <<<"$out" | sed 's/^SKIP: //')
		GUEST_ERROR=${GUEST_ERROR:-tests/qemu/setup.sh skipped}
		return 77
	fi
	if [ "$rc" != 0 ]; then
		GUEST_ERROR="tests/qemu/setup.sh failed: $(grep -m1 'error' <<<"$out" || tail -n1 <<<"$out")"
		return 1
	fi
	if [ ! -x "$QMPC" ]; then
		GUEST_ERROR="$QMPC is missing (make $(basename "$(dirname "$(dirname "$QMPC")")")/tests/qmpc)"
		return 1
	fi
	return 0
}

# --- start, stop ---------------------------------------------------------------

# guest_start NAME [QEMU ARGS...]: boot the guest in the background and wait
# (30 s) until its harness monitor answers. Extra arguments are appended to
# QEMU's command line.
guest_start() {
	local name=$1 d=$GUEST_DIR pid parent=$BASHPID
	shift
	if [ -n "${_GUEST_PID[$name]:-}" ]; then
		GUEST_ERROR="guest $name is already started"
		return 1
	fi
	if [ ${#d} -gt 90 ]; then
		GUEST_ERROR="GUEST_DIR $d is too long for a unix socket path"
		return 1
	fi
	rm -f "$d/$name".{log,qmp,ctl.qmp,err}
	qemu-system-x86_64 -nodefaults -no-user-config -machine pc -accel tcg \
		-m "$GUEST_MEM" -smp 1 -nic none -display none -vga none -no-reboot \
		-kernel "$GUEST_BUILD/vmlinuz" -initrd "$GUEST_BUILD/initramfs.cpio.gz" \
		-append "console=ttyS0 quiet panic=-1${GUEST_APPEND:+ $GUEST_APPEND}" \
		-serial "file:$d/$name.log" \
		-qmp "unix:$d/$name.qmp,server=on,wait=off" \
		-qmp "unix:$d/$name.ctl.qmp,server=on,wait=off" \
		"$@" </dev/null >/dev/null 2>"$d/$name.err" &
	pid=$!
	_GUEST_PID[$name]=$pid
	# Watchdog: if this shell is SIGKILLed (no trap runs), kill QEMU.
	(
		trap - EXIT INT TERM HUP
		exec </dev/null >/dev/null 2>&1
		while kill -0 "$parent"; do
			kill -0 "$pid" || exit 0
			sleep 1
		done
		kill -9 "$pid"
	) &
	_GUEST_DOG[$name]=$!
	guest_wait_qmp "$name" 30
}

# guest_start_dst NAME [QEMU ARGS...]: the same machine, waiting for an
# incoming migration (-S -incoming defer): migrate-incoming starts it.
guest_start_dst() {
	local name=$1
	shift
	guest_start "$name" -S -incoming defer "$@"
}

# guest_wait_qmp NAME SECONDS: until the harness monitor answers query-status.
guest_wait_qmp() {
	local name=$1 end=$(($(date +%s) + $2))
	while :; do
		if ! guest_alive "$name"; then
			GUEST_ERROR="QEMU $name exited: $(tail -n2 "$GUEST_DIR/$name.err" 2>/dev/null | tr '\n' ' ')"
			return 1
		fi
		[ -S "$GUEST_DIR/$name.ctl.qmp" ] &&
			"$QMPC" -t 5 "$GUEST_DIR/$name.ctl.qmp" query-status >/dev/null 2>&1 && return 0
		if [ "$(date +%s)" -ge "$end" ]; then
			GUEST_ERROR="QEMU $name: no QMP answer on $GUEST_DIR/$name.ctl.qmp after $2 s"
			return 1
		fi
		sleep 0.1
	done
}

# guest_alive NAME: QEMU's process exists (and is not a zombie).
guest_alive() {
	local pid=${_GUEST_PID[$1]:-}
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
		[ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" != Z ]
}

# guest_pid NAME: QEMU's pid (empty if not started).
guest_pid() { echo "${_GUEST_PID[$1]:-}"; }

# guest_kill NAME [SIGNAL]: stop QEMU (SIGTERM, then SIGKILL after 3 s; or
# SIGNAL at once, e.g. KILL) and reap it. Its files stay.
guest_kill() {
	local name=$1 sig=${2:-TERM} pid=${_GUEST_PID[$1]:-}
	[ -n "$pid" ] || return 0
	# stderr: no "Killed" notice from bash when it reaps them.
	{
		kill -"$sig" "$pid"
		for _ in $(seq 30); do
			kill -0 "$pid" || break
			[ "$(ps -o stat= -p "$pid" | cut -c1)" = Z ] && break
			sleep 0.1
		done
		kill -9 "$pid"
		wait "$pid"
		if [ -n "${_GUEST_DOG[$name]:-}" ]; then
			kill -9 "${_GUEST_DOG[$name]}"
			wait "${_GUEST_DOG[$name]}"
		fi
	} 2>/dev/null
	unset "_GUEST_PID[$name]" "_GUEST_DOG[$name]"
	return 0
}

# guest_cleanup: kill every guest started here (the EXIT trap runs it).
guest_cleanup() {
	local n
	{
		for n in "${!_GUEST_PID[@]}"; do kill -9 "${_GUEST_PID[$n]}"; done
		for n in "${!_GUEST_PID[@]}"; do guest_kill "$n" KILL; done
	} 2>/dev/null
	if [ "$_guest_own_dir" = 1 ] && [ "${KEEP:-0}" != 1 ]; then rm -rf "$GUEST_DIR"; fi
	return 0
}

# Chain guest_cleanup in front of the caller's EXIT trap; make INT, TERM and
# HUP exit (which runs it) rather than kill this shell silently.
_guest_trap() {
	local prev="" w=()
	eval "w=($(trap -p EXIT))" # trap -- 'COMMAND' EXIT
	[ ${#w[@]} -ge 3 ] && prev=${w[2]}
	case $prev in *guest_cleanup*) return 0 ;; esac
	# shellcheck disable=SC2064 # expanded now, on purpose
	trap "guest_cleanup${prev:+; $prev}" EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
}
_guest_trap

# --- QMP ---------------------------------------------------------------------------

# qmp NAME COMMAND [ARGUMENTS_JSON]: one QMP command on the guest's harness
# monitor; prints the response line; qmpc's exit code (0 return, 1 error,
# 2 no answer).
qmp() {
	local name=$1
	shift
	"$QMPC" -t "$QMP_TIMEOUT" "$GUEST_DIR/$name.ctl.qmp" "$@"
}

# guest_qmp_socket NAME: the monitor for the code under test (rmig).
guest_qmp_socket() { echo "$GUEST_DIR/$1.qmp"; }

# guest_log NAME: the serial console log.
guest_log() { echo "$GUEST_DIR/$1.log"; }

# guest_status NAME: query-status' "status" and "running", e.g. "running
# true", "postmigrate false", "paused false", "inmigrate false"; "gone" if
# QEMU has exited, "noqmp" if it does not answer.
guest_status() {
	local r
	guest_alive "$1" || { echo gone; return 0; }
	r=$(qmp "$1" query-status 2>/dev/null) || { echo noqmp; return 0; }
	jq -r '.return | "\(.status) \(.running)"' <<<"$r" 2>/dev/null || echo noqmp
}

# guest_migrate_status NAME: query-migrate's status ("none" when there is
# none; "noqmp" on no answer).
guest_migrate_status() {
	local r
	r=$(qmp "$1" query-migrate 2>/dev/null) || { echo noqmp; return 0; }
	jq -r '.return.status // "none"' <<<"$r" 2>/dev/null || echo noqmp
}

# guest_wait_migrate NAME SECONDS [STATUS...]: poll query-migrate (every
# GUEST_POLL seconds, 0.1) until its status is one of STATUS (default:
# completed, failed, cancelled); prints that last response. Returns 1 on
# timeout or no answer.
guest_wait_migrate() {
	local name=$1 end=$(($(date +%s) + $2)) r s want
	shift 2
	want=" ${*:-completed failed cancelled} "
	while :; do
		r=$(qmp "$name" query-migrate 2>&1) || {
			GUEST_ERROR="query-migrate on $name: $r"
			return 1
		}
		s=$(jq -r '.return.status // "none"' <<<"$r")
		if [[ $want == *" $s "* ]]; then
			echo "$r"
			return 0
		fi
		if [ "$(date +%s)" -ge "$end" ]; then
			GUEST_ERROR="migration of $name still '$s' after the timeout"
			return 1
		fi
		sleep "${GUEST_POLL:-0.1}"
	done
}

# --- the counter on the serial console -------------------------------------------

# _guest_lines FILE...: the FILEs read as one console, without a last line
# that has no newline yet (it may still be written).
_guest_lines() {
	local d
	d=$(cat -- "$@" 2>/dev/null; echo .)
	d=${d%.}
	if [[ $d != *$'\n' ]]; then
		if [[ $d == *$'\n'* ]]; then d=${d%$'\n'*}$'\n'; else d=""; fi
	fi
	printf '%s' "$d" | tr -d '\r'
}

# guest_counters FILE...: the counter values printed in FILEs, concatenated
# in that order (so a line cut between a source's log and the destination's
# is read whole); a last line without its newline yet is left out.
guest_counters() {
	_guest_lines "$@" | grep -ao 'rmig-counter [0-9]\+' | cut -d' ' -f2 || true
}

# guest_counter NAME: the last counter on NAME's console (0 if none yet).
guest_counter() {
	local c
	c=$(guest_counters "$GUEST_DIR/$1.log" | tail -n1)
	echo "${c:-0}"
}

# guest_wait_counter NAME N SECONDS: until NAME's counter reaches N.
guest_wait_counter() {
	local name=$1 n=$2 end=$(($(date +%s) + $3)) c
	while :; do
		c=$(guest_counter "$name")
		[ "$c" -ge "$n" ] && return 0
		if ! guest_alive "$name"; then
			GUEST_ERROR="QEMU $name exited (counter $c): $(tail -n2 "$GUEST_DIR/$name.err" 2>/dev/null | tr '\n' ' ')"
			return 1
		fi
		if [ "$(date +%s)" -ge "$end" ]; then
			GUEST_ERROR="guest $name's counter is $c after $3 s, not yet $n"
			return 1
		fi
		sleep 0.2
	done
}

# guest_check_seq FILE...: the counters in FILEs (concatenated) go up by
# exactly one each time, no gap, no repeat. Prints "FIRST..LAST COUNT" or,
# returning 1, what is wrong (also in GUEST_ERROR).
guest_check_seq() {
	local r rc=0
	r=$(guest_counters "$@" | awk '
		NR == 1 { first = $1 }
		NR > 1 && $1 != last + 1 {
			printf "counter goes from %d to %d (value %d of the log)\n", last, $1, NR
			bad = 1
			exit 1
		}
		{ last = $1 }
		END {
			if (bad) exit 1
			if (NR == 0) { print "no counter on the console"; exit 1 }
			printf "%d..%d %d\n", first, last, NR
		}') || rc=1
	[ $rc = 0 ] || GUEST_ERROR=$r
	echo "$r"
	return $rc
}

# --- a disk ------------------------------------------------------------------------
# With a disk, the guest (kernel parameter rmig_disk=1, see guest-init.sh)
# keeps its counter in a ring of records on /dev/vda and reads it back at
# each count. The image is attached as QEMU's storage node "vda-file" (file)
# under the format node "vda" (raw or qcow2), the disk the guest sees being
# the virtio-blk-pci device "vda":
#   -blockdev {"driver":"file","filename":IMG,"node-name":"vda-file"}
#   -blockdev {"driver":FMT,"file":"vda-file","node-name":"vda"}
#   -device virtio-blk-pci,drive=vda,id=vda
# Same names on source and destination: QEMU matches the device by its id,
# and an NBD export or mirror addresses the node "vda".

# guest_disk_create FILE FORMAT SIZE: a new empty image (qemu-img create;
# raw is sparse). SIZE as qemu-img takes it (64M).
guest_disk_create() {
	local out
	out=$(qemu-img create -q -f "$2" "$1" "$3" 2>&1) ||
		{ GUEST_ERROR="qemu-img create -f $2 $1 $3: $out"; return 1; }
}

# guest_disk_args FILE FORMAT: the QEMU arguments for the disk, one per line.
guest_disk_args() {
	local f
	f=$(jq -cn --arg f "$1" '{driver: "file", filename: $f, "node-name": "vda-file"}') || return 1
	printf '%s\n' -blockdev "$f" -blockdev "{\"driver\":\"$2\",\"file\":\"vda-file\",\"node-name\":\"vda\"}" \
		-device virtio-blk-pci,drive=vda,id=vda
}

# guest_start_disk NAME FILE FORMAT [QEMU ARGS...]: guest_start with the
# image FILE as its disk and rmig_disk=1 added to the kernel parameters
# (GUEST_APPEND may add rmig_disk_kib=N).
guest_start_disk() {
	local name=$1 img=$2 fmt=$3 a
	shift 3
	[ -f "$img" ] || { GUEST_ERROR="no disk image $img"; return 1; }
	mapfile -t a < <(guest_disk_args "$img" "$fmt")
	GUEST_APPEND="rmig_disk=1${GUEST_APPEND:+ $GUEST_APPEND}" guest_start "$name" "${a[@]}" "$@"
}

# guest_start_dst_disk NAME FILE FORMAT [QEMU ARGS...]: the destination of a
# disk guest: the same machine with its own image (of the same virtual size:
# guest_disk_create), -S -incoming defer.
guest_start_dst_disk() {
	local name=$1 img=$2 fmt=$3
	shift 3
	guest_start_disk "$name" "$img" "$fmt" -S -incoming defer "$@"
}

# guest_disk_size FILE: the image's virtual size in bytes.
guest_disk_size() {
	qemu-img info -U --output=json "$1" 2>/dev/null | jq -r '."virtual-size"'
}

# guest_disk_digest FILE FORMAT: sha256 of the guest-visible content (what
# the guest reads, whatever the format's layout), through a raw copy in
# GUEST_DIR (qemu-img convert cannot write to a pipe); -U: a QEMU may hold it.
guest_disk_digest() {
	local tmp=$GUEST_DIR/.digest.$$.raw d
	qemu-img convert -U -f "$2" -O raw "$1" "$tmp" 2>/dev/null && d=$(sha256sum <"$tmp" | cut -d' ' -f1)
	rm -f "$tmp"
	echo "${d:-}"
}

# guest_disk_compare SRC_FILE SRC_FORMAT DST_FILE DST_FORMAT: the two images
# hold the same content (qemu-img compare -U, then digests, which the
# report prints). Stop (or flush) both QEMUs first: a qcow2's metadata is
# only in the file after a flush. Prints "SIZE DIGEST", or, returning 1,
# the difference (also in GUEST_ERROR).
guest_disk_compare() {
	local out d1 d2
	if ! out=$(qemu-img compare -U -f "$2" -F "$4" "$1" "$3" 2>&1); then
		GUEST_ERROR="the images differ: $(tr '\n' ' ' <<<"$out")"
		echo "$GUEST_ERROR"
		return 1
	fi
	d1=$(guest_disk_digest "$1" "$2")
	d2=$(guest_disk_digest "$3" "$4")
	if [ -z "$d1" ] || [ "$d1" != "$d2" ]; then
		GUEST_ERROR="digests differ: $1 ${d1:-?}, $3 ${d2:-?}"
		echo "$GUEST_ERROR"
		return 1
	fi
	echo "$(guest_disk_size "$1") $d1"
}

# guest_disk_oks FILE...: the values of the guest's "rmig-disk-ok N" lines.
guest_disk_oks() {
	_guest_lines "$@" | grep -ao 'rmig-disk-ok [0-9]\+' | cut -d' ' -f2 || true
}

# guest_check_disk_seq SRC_LOG DST_LOG [MIN_OK]: across a migration of a disk
# guest, the counter goes on without a gap (guest_check_seq), no
# "rmig-disk-BAD" line anywhere, the guest's disk checks ("rmig-disk-ok N")
# go on without a gap too, and the destination made at least MIN_OK (5) of
# them. Prints "FIRST..LAST COUNT, disk checks A..B (K on the destination,
# its first: V)"; returns 1 with what is wrong (also in GUEST_ERROR).
guest_check_disk_seq() {
	local src=$1 dst=$2 min=${3:-5} seq bad oks dst_oks r
	seq=$(guest_check_seq "$src" "$dst") || { echo "$seq"; return 1; }
	bad=$(cat -- "$src" "$dst" 2>/dev/null | tr -d '\r' | grep -a -m1 'rmig-disk-BAD')
	if [ -n "$bad" ]; then
		GUEST_ERROR="the guest's disk check failed: $bad"
		echo "$GUEST_ERROR"
		return 1
	fi
	oks=$(guest_disk_oks "$src" "$dst")
	r=$(awk 'NR > 1 && $1 != last + 1 { printf "disk checks go from %d to %d\n", last, $1; exit 1 }
		{ last = $1 } NR == 1 { first = $1 } END { if (NR) printf "%d..%d", first, last }' <<<"$oks") || {
		GUEST_ERROR=$r
		echo "$r"
		return 1
	}
	dst_oks=$(guest_disk_oks "$dst")
	if [ "$(grep -c . <<<"$dst_oks")" -lt "$min" ]; then
		GUEST_ERROR="the destination's guest checked its disk $(grep -c . <<<"$dst_oks") times, fewer than $min"
		echo "$GUEST_ERROR"
		return 1
	fi
	echo "$seq, disk checks $r ($(grep -c . <<<"$dst_oks") on the destination, its first: $(head -n1 <<<"$dst_oks"))"
}

# --- QEMU's own disk migration (the baseline) ------------------------------------
# What libvirt does for a migration with non-shared disks (virsh migrate
# --copy-storage-all; qemuMigrationSrcNBDStorageCopy, qemuMigrationSrcRun,
# qemuMigrationSrcNBDCopyCancel, and the capabilities it always turns on),
# by hand:
#   destination (-S -incoming defer, its own empty image of the same size):
#     migrate-set-capabilities late-block-activate; nbd-server-start on a
#     unix socket; block-export-add of the node "vda", writable (which
#     activates the image before the migration ends)
#   source: blockdev-add an NBD client node "mig-vda" on that export;
#     blockdev-mirror vda -> mig-vda, sync full, copy-mode write-blocking
#     (every guest write reaches the destination before it completes, so the
#     mirror converges whatever the guest writes), auto-dismiss off (to see
#     how it ended); wait until the job is ready (the bulk is copied)
#   migrate-set-capabilities pause-before-switchover on the source,
#     migrate-incoming, migrate (unix socket)
#   at pre-switchover (the source is stopped): block-job-cancel the mirror,
#     which for a ready mirror copies what is left and concludes without a
#     pivot and without an error; once it has, migrate-continue: the
#     destination gets the device state only when its disk holds everything
#   after the migration: job-dismiss and blockdev-del mig-vda on the source
#     (libvirt deletes the node before migrate-continue; here it is after, so
#     that two QMP round trips of this harness are not counted as downtime);
#     nbd-server-stop on the destination (removes the export), and `stop`,
#     which flushes its images (a qcow2's metadata) so that they can be
#     compared from outside.
# The destination is left paused: the caller compares the images (both
# QEMUs stopped) and then runs `qmp DST cont`. Each QMP command is one qmpc
# run here (20-40 ms: a new connection and the capabilities negotiation),
# which libvirt, with its one connection and events, does not pay: about 3
# of them fall in the downtime (seeing pre-switchover, the cancel, seeing
# the job concluded, migrate-continue).

# _guest_q NAME CMD [ARGS_JSON]: qmp, the reply on stdout; on an error reply
# or no answer, GUEST_ERROR says which command on which guest, and why.
_guest_q() {
	local r
	r=$(qmp "$@" 2>&1) || { GUEST_ERROR="$1: $2 ${3:-} failed: $(tr '\n' ' ' <<<"$r")"; return 1; }
	echo "$r"
}

# _guest_wait_job NAME JOB SECONDS STATUS: poll query-jobs (every GUEST_POLL
# s) until JOB's status is STATUS; prints the job's entry (JSON). Returns 1
# when it is gone, aborting, or still not there after SECONDS.
_guest_wait_job() {
	local name=$1 job=$2 end=$(($(date +%s) + $3)) r j s
	while :; do
		r=$(_guest_q "$name" query-jobs) || return 1
		j=$(jq -c --arg j "$job" '[.return[] | select(.id == $j)][0] // {status: "gone"}' <<<"$r")
		s=$(jq -r .status <<<"$j")
		[ "$s" = "$4" ] && { echo "$j"; return 0; }
		case $s in gone | aborting)
			GUEST_ERROR="$name: job $job is $s: $(jq -r '.error // ""' <<<"$j")"
			return 1
			;;
		esac
		if [ "$(date +%s)" -ge "$end" ]; then
			GUEST_ERROR="$name: job $job still '$s' after $3 s"
			return 1
		fi
		sleep "${GUEST_POLL:-0.1}"
	done
}

# _guest_migrate_done NAME [SECONDS]: query-migrate until it ends; 1 unless
# completed (GUEST_ERROR). Prints the last answer.
_guest_migrate_done() {
	local r st
	r=$(GUEST_POLL=0.02 guest_wait_migrate "$1" "${2:-120}" completed failed cancelled) || return 1
	st=$(jq -r .return.status <<<"$r")
	[ "$st" = completed ] ||
		{ GUEST_ERROR="$1: migration $st: $(jq -r '.return."error-desc" // ""' <<<"$r")"; return 1; }
	echo "$r"
}

# guest_migrate_disk_native SRC DST [SECONDS]: migrate the running disk guest
# SRC into DST (started with guest_start_dst_disk) QEMU's own way, above;
# each wait at most SECONDS (120). GUEST_NATIVE_NO_MIRROR=1 leaves the mirror
# out (a broken recipe, for a test to see fail). Sets GUEST_FIG, JSON:
# total_ms (blockdev-mirror to the destination ready to run), mirror_ready_ms,
# migrate_ms and downtime_ms (the source's query-migrate: total-time and
# downtime, which counts the wait at pre-switchover), cancel_ms (the cancel
# sent to the job seen concluded), rounds (dirty-sync-count), ram_bytes,
# disk_bytes (the mirror's final progress). Leaves DST paused; returns 1 with
# GUEST_ERROR.
guest_migrate_disk_native() {
	local s=$1 d=$2 tmo=${3:-120} nbd="$GUEST_DIR/$2.nbd" uri="unix:$GUEST_DIR/$2.sock"
	local t0 t_ready t_cancel=0 t_done=0 r st q disk_bytes=0 mirror=1
	[ "${GUEST_NATIVE_NO_MIRROR:-0}" = 1 ] && mirror=0
	rm -f "$nbd" "$GUEST_DIR/$d.sock"
	_guest_q "$d" migrate-set-capabilities \
		'{"capabilities":[{"capability":"late-block-activate","state":true}]}' >/dev/null &&
		_guest_q "$d" nbd-server-start "{\"addr\":{\"type\":\"unix\",\"data\":{\"path\":\"$nbd\"}}}" >/dev/null &&
		_guest_q "$d" block-export-add \
			'{"type":"nbd","id":"mig-vda","node-name":"vda","name":"vda","writable":true}' >/dev/null ||
		return 1
	t0=$(date +%s%3N)
	if [ $mirror = 1 ]; then
		_guest_q "$s" blockdev-add "{\"driver\":\"nbd\",\"node-name\":\"mig-vda\",\"export\":\"vda\",
			\"server\":{\"type\":\"unix\",\"path\":\"$nbd\"}}" >/dev/null &&
			_guest_q "$s" blockdev-mirror '{"job-id":"mig-vda","device":"vda","target":"mig-vda",
				"sync":"full","copy-mode":"write-blocking","auto-dismiss":false}' >/dev/null &&
			GUEST_POLL=0.05 _guest_wait_job "$s" mig-vda "$tmo" ready >/dev/null || return 1
	fi
	t_ready=$(date +%s%3N)
	_guest_q "$s" migrate-set-capabilities \
		'{"capabilities":[{"capability":"pause-before-switchover","state":true}]}' >/dev/null &&
		_guest_q "$d" migrate-incoming "{\"uri\":\"$uri\"}" >/dev/null &&
		_guest_q "$s" migrate "{\"uri\":\"$uri\"}" >/dev/null || return 1
	# Poll fast from here: the source is stopped while we look.
	r=$(GUEST_POLL=0.02 guest_wait_migrate "$s" "$tmo" pre-switchover completed failed cancelled) || return 1
	st=$(jq -r .return.status <<<"$r")
	[ "$st" = pre-switchover ] ||
		{ GUEST_ERROR="$s: migration $st before pre-switchover: $(jq -r '.return."error-desc" // ""' <<<"$r")"; return 1; }
	if [ $mirror = 1 ]; then
		t_cancel=$(date +%s%3N)
		_guest_q "$s" block-job-cancel '{"device":"mig-vda"}' >/dev/null || return 1
		r=$(GUEST_POLL=0.02 _guest_wait_job "$s" mig-vda "$tmo" concluded) || return 1
		t_done=$(date +%s%3N)
		[ "$(jq -r '.error // ""' <<<"$r")" = "" ] ||
			{ GUEST_ERROR="$s: the mirror ended with an error: $(jq -r .error <<<"$r")"; return 1; }
		disk_bytes=$(jq '."current-progress" // 0' <<<"$r")
	fi
	_guest_q "$s" migrate-continue '{"state":"pre-switchover"}' >/dev/null || return 1
	q=$(_guest_migrate_done "$s" "$tmo") || return 1
	if [ $mirror = 1 ]; then
		_guest_q "$s" job-dismiss '{"id":"mig-vda"}' >/dev/null &&
			_guest_q "$s" blockdev-del '{"node-name":"mig-vda"}' >/dev/null || return 1
	fi
	_guest_migrate_done "$d" 30 >/dev/null &&
		_guest_q "$d" nbd-server-stop >/dev/null &&
		_guest_q "$d" stop >/dev/null || return 1
	st=$(guest_status "$d")
	[ "$st" = "paused false" ] || { GUEST_ERROR="$d is '$st' after the migration, not 'paused false'"; return 1; }
	GUEST_FIG=$(jq -c --argjson total $(($(date +%s%3N) - t0)) --argjson ready $((t_ready - t0)) \
		--argjson cancel $((t_done - t_cancel)) --argjson disk "$disk_bytes" --argjson mirror $mirror \
		'.return | {total_ms: $total, mirror_ready_ms: $ready, migrate_ms: ."total-time",
		downtime_ms: .downtime, cancel_ms: $cancel, rounds: .ram."dirty-sync-count",
		ram_bytes: .ram.transferred, disk_bytes: $disk, mirror: ($mirror == 1)}' <<<"$q")
}
