# Helpers for tests that run a real libvirtd pair on this one machine (see
# tests/libvirt/README.md). Source it from bash (after tests/e2e/lib.sh, whose
# EXIT trap is kept):
#
#   . tests/libvirt/lv.sh
#   lv_prepare || ...                 # 77: no libvirtd/virsh/socat ($LV_ERROR)
#   lv_host src 1 && lv_host dst 2    # namespaces + libvirtd, veth 10.99.0.N
#   lv_relay_all src dst              # dst's sockets reachable in src's namespace
#   lv_virsh src define ...
#
# Each "host" NAME is a holder process in a new mount + network + UTS
# namespace; every command of that host runs in it through nsenter (lv_in).
# Inside, /run is a private tmpfs and /run/libvirt, /var/lib/libvirt,
# /etc/libvirt, /var/log/libvirt and /var/cache/libvirt are bind mounts of
# $LV_DIR/NAME/{run,lib,etc,log,cache}: the host's libvirt is never touched,
# and the harness reads the guests' serial logs and libvirtd's log from
# outside. Nothing outlives the test: lv_cleanup (chained into the EXIT
# trap) kills every process whose mount namespace is one of ours (libvirtd,
# QEMU, which libvirt daemonizes, socat, the holder); the namespaces, their
# mounts and the veth pair go with the last of them. A watchdog does the
# same if the test's shell is SIGKILLed.
#
# Functions return non-zero with the reason in $LV_ERROR.

_lv_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LV_QEMU_BUILD=${QEMU_BUILD_DIR:-$_lv_repo/build/qemu}
LV_ERROR=""
if [ -z "${LV_DIR:-}" ]; then
	if [ -n "${T:-}" ] && [ -d "$T" ]; then LV_DIR=$T/lv; else LV_DIR=$(mktemp -d "${TMPDIR:-/tmp}/rmig-lv.XXXXXX"); fi
fi
mkdir -p "$LV_DIR"
declare -gA _LV_HOLDER=() _LV_NS=() _LV_ADDR=() _LV_RELAY_PIDS=()
_LV_DOG=""
# The relay's ports on the veth link, one per channel (lv_relay_all).
declare -gA LV_PORT=([libvirt]=16509 [migrate]=49152 [nbd]=49153)
# Where the relayed sockets live, the same path in both namespaces: in the
# destination's it is the real socket (libvirtd's, or the one QEMU creates
# for an incoming migration or its NBD server), in the source's the relay's
# listening end. libvirt wants exactly that: one path both sides can reach.
LV_RELAY_DIR=/var/lib/libvirt/relay
LV_RELAY=${LV_RELAY:-socat}

# --- setup ------------------------------------------------------------------------

# lv_prepare: the programs this needs; 77 when libvirt itself is missing
# (scripts/deps.sh installs it), 1 on anything else.
lv_prepare() {
	local c
	for c in libvirtd virsh; do
		command -v "$c" >/dev/null || { LV_ERROR="$c not installed (scripts/deps.sh installs libvirt-daemon-system and libvirt-clients)"; return 77; }
	done
	for c in socat unshare nsenter ip qemu-system-x86_64 qemu-img; do
		command -v "$c" >/dev/null || { LV_ERROR="$c not installed (scripts/deps.sh)"; return 1; }
	done
	[ "$(id -u)" = 0 ] || { LV_ERROR="needs root (namespaces, libvirtd's system instance)"; return 77; }
	[ ${#LV_DIR} -le 80 ] || { LV_ERROR="LV_DIR $LV_DIR too long for unix socket paths"; return 1; }
	return 0
}

# lv_in NAME CMD...: CMD inside host NAME's namespaces.
lv_in() {
	local h=${_LV_HOLDER[$1]:?no host $1}
	shift
	nsenter -t "$h" -m -n -u -- "$@"
}

# _lv_holder_script: what the holder runs inside its new namespaces (as
# bash -c; $1 NAME, $2 its directory): the private mounts, the hostname,
# loopback up, then it waits to be killed.
_lv_holder_script='set -e
n=$1 d=$2
mount -t tmpfs -o mode=0755,size=16m lv-run /run
mkdir -p /run/libvirt /run/lock
mount --bind "$d/run" /run/libvirt
mount --bind "$d/lib" /var/lib/libvirt
mount --bind "$d/etc" /etc/libvirt
mount --bind "$d/log" /var/log/libvirt
mount --bind "$d/cache" /var/cache/libvirt
hostname "rmig-lv-$n"
ip link set lo up
touch "$d/.ready"
exec sleep 86400'

# lv_ns NAME: the namespaces of host NAME (holder process, mounts). 10 s.
lv_ns() {
	local n=$1 d=$LV_DIR/$1 pid
	mkdir -p "$d"/{run,lib/images,lib/relay,etc/qemu,log/qemu,cache}
	rm -f "$d/.ready"
	unshare --mount --net --uts --propagation private bash -c "$_lv_holder_script" lv-holder "$n" "$d" \
		</dev/null >"$d/holder.err" 2>&1 &
	pid=$!
	_LV_HOLDER[$n]=$pid
	for _ in $(seq 100); do
		[ -e "$d/.ready" ] && break
		kill -0 "$pid" 2>/dev/null || { LV_ERROR="namespace $n: $(tr '\n' ' ' <"$d/holder.err")"; return 1; }
		sleep 0.1
	done
	[ -e "$d/.ready" ] || { LV_ERROR="namespace $n not ready after 10 s"; return 1; }
	_LV_NS[$n]=$(readlink "/proc/$pid/ns/mnt")
	_lv_watchdog
}

# _lv_ns_pids: every process in one of our mount namespaces.
_lv_ns_pids() {
	local p ns want
	for p in /proc/[0-9]*; do
		ns=$(readlink "$p/ns/mnt" 2>/dev/null) || continue
		for want in "${_LV_NS[@]}"; do
			[ "$ns" = "$want" ] && echo "${p#/proc/}"
		done
	done
}

# _lv_watchdog: once, a background loop that kills our namespaces' processes
# when the test's shell dies without running its trap (SIGKILL).
_lv_watchdog() {
	[ -n "$_LV_DOG" ] && kill -0 "$_LV_DOG" 2>/dev/null && return 0
	local parent=$BASHPID
	(
		trap - EXIT INT TERM HUP
		exec </dev/null >/dev/null 2>&1
		while kill -0 "$parent"; do sleep 1; done
		_lv_kill_all
	) &
	_LV_DOG=$!
}

# _lv_kill_all: SIGKILL everything in our namespaces, until none is left
# (10 s). QEMU is daemonized by libvirt, so it is not our child: it is found
# by its namespace, like everything else.
_lv_kill_all() {
	local pids
	[ ${#_LV_NS[@]} -gt 0 ] || return 0
	for _ in $(seq 50); do
		pids=$(_lv_ns_pids)
		[ -z "$pids" ] && return 0
		kill -9 $pids 2>/dev/null
		sleep 0.2
	done
	LV_ERROR="processes left in the test's namespaces: $pids"
	return 1
}

# lv_cleanup: stop everything (EXIT trap). Leaves no process, mount,
# namespace or interface behind.
lv_cleanup() {
	_lv_kill_all
	wait "${_LV_HOLDER[@]}" 2>/dev/null
	[ -n "$_LV_DOG" ] && kill "$_LV_DOG" 2>/dev/null
	_LV_NS=()
	_LV_HOLDER=()
}
# Chain in front of the existing EXIT trap (lib.sh's removes $T, which holds
# the bind-mounted directories: the namespaces must be gone first).
_lv_trap() {
	local prev="" w=()
	eval "w=($(trap -p EXIT))" # trap -- 'COMMAND' EXIT
	[ ${#w[@]} -ge 3 ] && prev=${w[2]}
	case $prev in *lv_cleanup*) return 0 ;; esac
	# shellcheck disable=SC2064 # expanded now, on purpose
	trap "lv_cleanup${prev:+; $prev}" EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
}
_lv_trap

# --- libvirtd -----------------------------------------------------------------------

# _lv_conf NAME UUID: its /etc/libvirt. libvirtd: unix sockets only, no
# auth (root in the namespace only), its host UUID (libvirt refuses to
# migrate to a host with its own UUID), a debug log of the migration code.
# qemu.conf: QEMU as root, no security driver, no cgroups and no private
# /dev namespace (none of which a nested, unprivileged-cgroup container has),
# no virtlogd (stdio_handler file: QEMU's log straight to
# /var/log/libvirt/qemu/DOMAIN.log).
_lv_conf() {
	local e=$LV_DIR/$1/etc
	cat >"$e/libvirtd.conf" <<-EOF
		listen_tls = 0
		listen_tcp = 0
		unix_sock_group = "root"
		unix_sock_ro_perms = "0770"
		unix_sock_rw_perms = "0770"
		auth_unix_ro = "none"
		auth_unix_rw = "none"
		host_uuid = "$2"
		log_filters = "1:qemu.qemu_migration 1:qemu.qemu_monitor 3:*"
		log_outputs = "1:file:/var/log/libvirt/libvirtd.log"
	EOF
	cat >"$e/qemu.conf" <<-EOF
		user = "root"
		group = "root"
		dynamic_ownership = 0
		remember_owner = 0
		security_driver = "none"
		cgroup_controllers = [ ]
		namespaces = [ ]
		stdio_handler = "file"
	EOF
	: >"$e/libvirt.conf"
}

# lv_libvirtd NAME UUID: start libvirtd in host NAME (in the foreground of
# nsenter, so our background job: timeout's signal reaches it) and wait
# (60 s: it probes QEMU's capabilities at first start) until virsh answers.
lv_libvirtd() {
	local n=$1 d=$LV_DIR/$1 end=$(($(date +%s) + 60)) out
	_lv_conf "$n" "$2"
	lv_in "$n" libvirtd --pid-file /run/libvirt/libvirtd.pid --config /etc/libvirt/libvirtd.conf \
		</dev/null >"$d/log/libvirtd.out" 2>&1 &
	while :; do
		out=$(lv_in "$n" timeout 10 virsh -q -c qemu:///system capabilities 2>&1) && break
		if ! lv_in "$n" test -S /run/libvirt/libvirt-sock && [ -z "$(lv_pids "$n" libvirtd)" ]; then
			LV_ERROR="libvirtd on $n exited: $(tail -n3 "$d/log/libvirtd.out" | tr '\n' ' ')"
			return 1
		fi
		[ "$(date +%s)" -lt "$end" ] || { LV_ERROR="libvirtd on $n: no answer after 60 s: $out"; return 1; }
		sleep 0.3
	done
	grep -q "<uuid>$2</uuid>" <<<"$out" || { LV_ERROR="libvirtd on $n does not report host uuid $2"; return 1; }
}

# lv_pids NAME COMM: pids of processes named COMM in host NAME's namespace.
lv_pids() {
	local p want=${_LV_NS[$1]}
	for p in $(_lv_ns_pids); do
		[ "$(readlink "/proc/$p/ns/mnt" 2>/dev/null)" = "$want" ] &&
			[ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && echo "$p"
	done
}

# lv_virsh NAME ARGS...: virsh on host NAME's libvirtd, at most 60 s
# (LV_VIRSH_TIMEOUT).
lv_virsh() {
	local n=$1
	shift
	lv_in "$n" timeout "${LV_VIRSH_TIMEOUT:-60}" virsh -q -c qemu:///system "$@"
}

# lv_host NAME INDEX: namespaces, libvirtd (host UUID from INDEX) for NAME.
lv_host() {
	lv_ns "$1" || return 1
	_LV_ADDR[$1]=10.99.0.$2
	lv_libvirtd "$1" "$(printf '00000000-0000-4000-8000-0000000000%02x' "$2")"
}

# lv_link A B: a veth pair between hosts A and B, with their addresses
# (10.99.0.INDEX/24): the "network" between the two hosts.
lv_link() {
	local a=$1 b=$2 ia=lv$$a ib=lv$$b
	ip link add "$ia" netns "${_LV_HOLDER[$a]}" type veth peer name "$ib" netns "${_LV_HOLDER[$b]}" 2>"$LV_DIR/link.err" ||
		{ LV_ERROR="veth: $(cat "$LV_DIR/link.err")"; return 1; }
	lv_in "$a" ip link set "$ia" name veth0 && lv_in "$b" ip link set "$ib" name veth0 &&
		lv_in "$a" ip addr add "${_LV_ADDR[$a]}/24" dev veth0 && lv_in "$b" ip addr add "${_LV_ADDR[$b]}/24" dev veth0 &&
		lv_in "$a" ip link set veth0 up && lv_in "$b" ip link set veth0 up ||
		{ LV_ERROR="could not configure the veth pair"; return 1; }
	# Reachability (no ping here): a one-shot listener in B, a connect from A.
	lv_in "$b" timeout 10 socat -u TCP-LISTEN:16500,bind="${_LV_ADDR[$b]}" OPEN:/dev/null </dev/null >/dev/null 2>&1 &
	_lv_wait_tcp "$b" 16500 &&
		lv_in "$a" timeout 5 bash -c "echo >/dev/tcp/${_LV_ADDR[$b]}/16500" 2>/dev/null ||
		{ LV_ERROR="${_LV_ADDR[$b]} not reachable from $a over the veth pair"; return 1; }
}

# --- the relay ------------------------------------------------------------------------
# One channel: a UNIX socket PATH in host SRC's namespace whose every
# connection is carried over TCP on the veth pair to host DST, where it is
# connected to the UNIX socket at the same PATH in DST's namespace. This is
# where `rmig tunnel` sits later: lv_relay_$LV_RELAY is the only thing to
# replace (same arguments; it starts its processes in the background with
# lv_in and returns once SRC's end of PATH accepts connections).

# lv_relay_socat SRC DST PATH PORT: socat at both ends, a new TCP connection
# per accepted UNIX connection (fork), each connecting to PATH in DST only
# then (QEMU creates its incoming socket only when the migration starts).
# The two listeners' pids go to _LV_RELAY_PIDS[PATH] (lv_relay_cut_socat):
# nsenter, not lv_in, so that $! is socat itself (nsenter execs it).
lv_relay_socat() {
	local s=$1 d=$2 path=$3 port=$4 tag p1 p2
	tag=$(basename "$path" .sock)
	nsenter -t "${_LV_HOLDER[$d]}" -m -n -u -- socat -d -d TCP-LISTEN:"$port",bind="${_LV_ADDR[$d]}",reuseaddr,fork UNIX-CONNECT:"$path" \
		</dev/null >/dev/null 2>"$LV_DIR/relay-$tag-$d.err" &
	p1=$!
	nsenter -t "${_LV_HOLDER[$s]}" -m -n -u -- socat -d -d UNIX-LISTEN:"$path",unlink-early,mode=0600,fork TCP:"${_LV_ADDR[$d]}":"$port" \
		</dev/null >/dev/null 2>"$LV_DIR/relay-$tag-$s.err" &
	p2=$!
	_LV_RELAY_PIDS[$path]="$p1 $p2"
	_lv_wait_listen "$s" "$path" && _lv_wait_tcp "$d" "$port"
}

# lv_relay_cut_socat PATH: the channel PATH breaks for good: its two
# listeners and every connection they forked (their children) are killed,
# each by its pid.
lv_relay_cut_socat() {
	local p pids=${_LV_RELAY_PIDS[$1]:-}
	[ -n "$pids" ] || { LV_ERROR="no relay for $1"; return 1; }
	for p in $pids; do
		kill -9 $(_lv_tree "$p") 2>/dev/null
	done
	_LV_RELAY_PIDS[$1]=""
}

# lv_relay_rmig SRC DST PATH PORT: `rmig tunnel` at both ends ($RMIG), one
# tunnel per channel, named after PATH ("migrate" for migrate.sock): recv in
# DST on its veth address, forwarding to PATH; send in SRC, exposing PATH.
# The peer is not on loopback, so both ends take a key made for the test
# ($LV_DIR/tunnel.key): TLS 1.3 with a PSK. Pids in _LV_RELAY_PIDS[PATH].
lv_relay_rmig() {
	local s=$1 d=$2 path=$3 port=$4 tag p1 p2 key=$LV_DIR/tunnel.key
	tag=$(basename "$path" .sock)
	if [ ! -s "$key" ]; then
		(umask 077 && head -c 32 /dev/urandom >"$key") ||
			{ LV_ERROR="cannot write $key"; return 1; }
	fi
	nsenter -t "${_LV_HOLDER[$d]}" -m -n -u -- "${RMIG:?}" tunnel recv --psk-file "$key" \
		--listen "${_LV_ADDR[$d]}:$port" --forward "$tag=$path" \
		</dev/null >/dev/null 2>>"$LV_DIR/tunnel-$tag-$d.err" &
	p1=$!
	_LV_RELAY_PIDS[$path]="$p1"
	_lv_wait_tcp "$d" "$port" || return 1
	nsenter -t "${_LV_HOLDER[$s]}" -m -n -u -- "$RMIG" tunnel send --psk-file "$key" \
		"${_LV_ADDR[$d]}:$port" --expose "$tag=$path" \
		</dev/null >/dev/null 2>>"$LV_DIR/tunnel-$tag-$s.err" &
	p2=$!
	_LV_RELAY_PIDS[$path]="$p1 $p2"
	_lv_wait_listen "$s" "$path"
}

# lv_relay_cut_rmig PATH: the channel's tunnel breaks: both ends killed, so
# its TCP connection and every stream with it are gone.
lv_relay_cut_rmig() {
	lv_relay_cut_socat "$@"
}

# lv_tunnel_reset SRC DST PORT: the link of the tunnel to DST's PORT is cut
# under it: SRC's kernel aborts the TCP connection (ss -K, an RST to DST),
# the tunnel's two ends keep running. Fails if there was no such link.
lv_tunnel_reset() {
	local before after
	before=$(lv_in "$1" ss -Htn state established dst "${_LV_ADDR[$2]}" dport = :"$3" | awk '{ print $3 }')
	[ -n "$before" ] || { LV_ERROR="no tunnel link from $1 to port $3 to cut"; return 1; }
	lv_in "$1" ss -K dst "${_LV_ADDR[$2]}" dport = :"$3" >/dev/null 2>&1
	# the tunnel may be back at once, on another local port
	after=$(lv_in "$1" ss -Htn state established dst "${_LV_ADDR[$2]}" dport = :"$3" | awk '{ print $3 }')
	! grep -qxF "$before" <<<"$after" ||
		{ LV_ERROR="ss -K left the link $before up (no CONFIG_INET_DIAG_DESTROY?)"; return 1; }
}

# _lv_tree PID: PID and all its descendants.
_lv_tree() {
	local c
	echo "$1"
	for c in $(ps -o pid= --ppid "$1"); do _lv_tree "$c"; done
}

# _lv_wait_listen NAME PATH: until PATH is a socket in NAME (5 s).
_lv_wait_listen() {
	for _ in $(seq 50); do
		lv_in "$1" test -S "$2" && return 0
		sleep 0.1
	done
	LV_ERROR="relay: no socket $2 in $1 after 5 s"
	return 1
}

# _lv_wait_tcp NAME PORT: until NAME listens on TCP PORT (5 s).
_lv_wait_tcp() {
	for _ in $(seq 50); do
		lv_in "$1" ss -Hltn "sport = :$2" | grep -q . && return 0
		sleep 0.1
	done
	LV_ERROR="relay: nothing listens on port $2 in $1 after 5 s"
	return 1
}

# lv_relay SRC DST PATH PORT: one channel through $LV_RELAY.
lv_relay() {
	"lv_relay_$LV_RELAY" "$@"
}

# lv_relay_cut PATH: break channel PATH mid-stream (a fault for a test).
lv_relay_cut() {
	"lv_relay_cut_$LV_RELAY" "$@"
}

# lv_relay_all SRC DST: the three channels a p2p migration with disks uses,
# all from SRC to DST: DST's libvirtd (the source libvirtd's connection to
# the destination's, $LV_RELAY_DIR/libvirt.sock: its remote driver opens
# one connection, keepalives on it), QEMU's migration stream (migrate.sock)
# and, with --copy-storage-all, QEMU's NBD stream (nbd.sock). In DST the
# libvirt channel's PATH is a symlink to libvirtd's real socket.
lv_relay_all() {
	local s=$1 d=$2
	lv_in "$d" ln -sf /run/libvirt/libvirt-sock "$LV_RELAY_DIR/libvirt.sock" &&
		lv_relay "$s" "$d" "$LV_RELAY_DIR/libvirt.sock" "${LV_PORT[libvirt]}" &&
		lv_relay "$s" "$d" "$LV_RELAY_DIR/migrate.sock" "${LV_PORT[migrate]}" &&
		lv_relay "$s" "$d" "$LV_RELAY_DIR/nbd.sock" "${LV_PORT[nbd]}"
}

# lv_dest_uri: the destination libvirtd as the source's libvirtd reaches it.
lv_dest_uri() { echo "qemu+unix:///system?socket=$LV_RELAY_DIR/libvirt.sock"; }

# --- the guest ----------------------------------------------------------------------

# lv_domain_xml NAME [DISK_IMAGE]: tests/qemu's counter guest as a libvirt
# domain (TCG, pc, 1 vCPU, no network, no display), its serial console to
# /var/log/libvirt/qemu/NAME.serial (each host's own file); with a raw
# DISK_IMAGE (path as both hosts see it), the disk guest (rmig_disk=1) with
# it as virtio disk vda. LV_APPEND: more kernel parameters.
lv_domain_xml() {
	local name=$1 img=${2:-} append="console=ttyS0 quiet panic=-1" disk=""
	[ -n "$img" ] && append="$append rmig_disk=1" && disk="<disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='$img'/>
      <target dev='vda' bus='virtio'/>
    </disk>"
	append="$append${LV_APPEND:+ $LV_APPEND}"
	cat <<-EOF
		<domain type='qemu'>
		  <name>$name</name>
		  <memory unit='KiB'>262144</memory>
		  <vcpu>1</vcpu>
		  <os>
		    <type arch='x86_64' machine='pc'>hvm</type>
		    <kernel>$LV_QEMU_BUILD/vmlinuz</kernel>
		    <initrd>$LV_QEMU_BUILD/initramfs.cpio.gz</initrd>
		    <cmdline>$append</cmdline>
		  </os>
		  <on_poweroff>destroy</on_poweroff>
		  <on_reboot>destroy</on_reboot>
		  <on_crash>destroy</on_crash>
		  <devices>
		    <emulator>$(command -v qemu-system-x86_64)</emulator>
		    $disk
		    <serial type='file'>
		      <source path='/var/log/libvirt/qemu/$name.serial' append='off'/>
		      <target port='0'/>
		    </serial>
		    <controller type='usb' model='none'/>
		    <video><model type='none'/></video>
		    <memballoon model='none'/>
		  </devices>
		</domain>
	EOF
}

# lv_serial HOST NAME: the host-side path of domain NAME's console log on HOST.
lv_serial() { echo "$LV_DIR/$1/log/qemu/$2.serial"; }

# lv_start HOST NAME [DISK_IMAGE]: define and start the guest on HOST.
lv_start() {
	local out x=$LV_DIR/$1/$2.xml
	lv_domain_xml "$2" "${3:-}" >"$x"
	lv_in "$1" cp "$x" "/var/lib/libvirt/$2.xml"
	out=$(lv_virsh "$1" define "/var/lib/libvirt/$2.xml" 2>&1) || { LV_ERROR="virsh define $2 on $1: $out"; return 1; }
	out=$(lv_virsh "$1" start "$2" 2>&1) || { LV_ERROR="virsh start $2 on $1: $out"; return 1; }
}

# lv_state HOST NAME: virsh domstate (e.g. "running", "shut off", "paused"),
# "none" when HOST has no such domain.
lv_state() {
	local s
	s=$(lv_virsh "$1" domstate "$2" 2>/dev/null) || { echo none; return 0; }
	echo "$s" | head -n1
}

# lv_counter HOST NAME: the guest's last counter in HOST's console log.
lv_counter() {
	local c
	c=$(guest_counters "$(lv_serial "$1" "$2")" | tail -n1)
	echo "${c:-0}"
}

# lv_wait_counter HOST NAME N SECONDS: until the counter reaches N.
lv_wait_counter() {
	local end=$(($(date +%s) + $4)) c
	while :; do
		c=$(lv_counter "$1" "$2")
		[ "$c" -ge "$3" ] && return 0
		if [ "$(date +%s)" -ge "$end" ]; then
			LV_ERROR="guest $2 on $1: counter $c after $4 s, not yet $3 (state $(lv_state "$1" "$2"))"
			return 1
		fi
		sleep 0.2
	done
}

# --- the migration ----------------------------------------------------------------

# lv_migrate_start SRC DST NAME [VIRSH MIGRATE OPTIONS...]: in the background,
# SRC's virsh asks SRC's libvirtd to migrate NAME live, peer to peer, to
# DST's libvirtd through the relay (lv_dest_uri), QEMU's stream through the
# relayed unix socket; its output in $LV_DIR/migrate-NAME.{out,err}, pid in
# LV_MIG_PID. At most LV_MIGRATE_TIMEOUT (180) s.
lv_migrate_start() {
	local s=$1 name=$3
	shift 3
	lv_in "$s" timeout "${LV_MIGRATE_TIMEOUT:-180}" virsh -c qemu:///system migrate --live --p2p --verbose \
		"$name" "$(lv_dest_uri)" --migrateuri "unix://$LV_RELAY_DIR/migrate.sock" "$@" \
		</dev/null >"$LV_DIR/migrate-$name.out" 2>"$LV_DIR/migrate-$name.err" &
	LV_MIG_PID=$!
}

# lv_job HOST NAME: virsh domjobinfo's "Job type" and "Operation", e.g.
# "Unbounded Outgoing migration", or "None".
lv_job() {
	lv_virsh "$1" domjobinfo "$2" 2>/dev/null |
		awk -F: '/^Job type/ { t = $2 } /^Operation/ { o = $2 } END { gsub(/^ +| +$/, "", t); gsub(/^ +| +$/, "", o); print t, o }'
}

# lv_migrate_wait SRC NAME SECONDS: until the virsh of lv_migrate_start ends,
# polling SRC's domjobinfo meanwhile. Sets LV_MIGRATE_RC (virsh's exit code)
# and LV_JOB_SEEN (how many polls saw the outgoing migration running).
lv_migrate_wait() {
	local end=$(($(date +%s) + $3)) j
	LV_JOB_SEEN=0
	while kill -0 "$LV_MIG_PID" 2>/dev/null; do
		j=$(lv_job "$1" "$2")
		[ "$j" = "Unbounded Outgoing migration" ] && LV_JOB_SEEN=$((LV_JOB_SEEN + 1))
		if [ "$(date +%s)" -ge "$end" ]; then
			kill "$LV_MIG_PID" 2>/dev/null
			LV_ERROR="virsh migrate still running after $3 s"
			wait "$LV_MIG_PID"
			LV_MIGRATE_RC=124
			return 1
		fi
		sleep 0.1
	done
	LV_MIGRATE_RC=0
	wait "$LV_MIG_PID" || LV_MIGRATE_RC=$?
}

# lv_job_completed HOST NAME: "TOTAL_MS DOWNTIME_MS" of the last completed
# job (virsh domjobinfo --completed: Time elapsed, Total downtime).
lv_job_completed() {
	lv_virsh "$1" domjobinfo --completed "$2" 2>/dev/null |
		awk -F: '/^Time elapsed:/ { split($2, a, " "); t = a[1] } /^Total downtime:/ { split($2, a, " "); d = a[1] }
			END { print (t == "" ? "?" : t), (d == "" ? "?" : d) }'
}

# lv_job_bytes HOST NAME: bytes the running job has processed so far
# (domjobinfo "Data processed", in virsh's units turned back into bytes); 0
# before QEMU's stream has started.
lv_job_bytes() {
	lv_virsh "$1" domjobinfo "$2" 2>/dev/null | awk '/^Data processed:/ {
		m = 1; if ($4 == "KiB") m = 1024; if ($4 == "MiB") m = 1048576; if ($4 == "GiB") m = 1073741824
		b = $3 * m } END { printf "%d\n", b }'
}

# The switch-over as the guest saw it: how long its console was silent. The
# counter guest prints a line per count; the source QEMU writes nothing more
# to its console once the guest is paused there, the destination's nothing
# before the guest resumes there. So the silence runs from the source
# console's last write (its file's mtime, once the migration is over) to
# the destination console's first (its file becoming non-empty, seen by a
# watcher polling it every 10 ms, without a process per poll). It holds the
# pause and up to one count interval of the guest's own (lv_count_interval):
# the interval a count takes anyway. Resolution about 15 ms (the poll, the
# kernel's coarse mtime clock). Both ends are read from this machine's one
# clock, which only works because both "hosts" are on it.

# lv_gap_watch DST NAME: start the watcher of NAME's console on DST, before
# the migration (in the background, at most LV_MIGRATE_TIMEOUT + 30 s; its
# pid in LV_GAP_PID). The console file must not exist yet: a domain name
# not yet used on DST.
lv_gap_watch() {
	local f out=$LV_DIR/gap-$2.first
	f=$(lv_serial "$1" "$2")
	rm -f "$out"
	(
		end=$((SECONDS + ${LV_MIGRATE_TIMEOUT:-180} + 30))
		exec {fd}<> <(:) # read -t on it: a 10 ms sleep in the shell itself
		while [ ! -s "$f" ] && [ $SECONDS -lt $end ]; do read -rt 0.01 -u "$fd"; done
		[ -s "$f" ] && date +%s%3N >"$out"
	) </dev/null >/dev/null 2>&1 &
	LV_GAP_PID=$!
}

# lv_gap SRC DST NAME: after the migration, the ms from NAME's last console
# write on SRC to its first on DST; "?" when the watcher saw none (it is
# then stopped).
lv_gap() {
	local first last out=$LV_DIR/gap-$3.first
	if [ ! -s "$out" ]; then
		kill "${LV_GAP_PID:-}" 2>/dev/null
		echo "?"
		return 0
	fi
	first=$(cat "$out")
	last=$(stat -c %.3Y "$(lv_serial "$1" "$3")" 2>/dev/null | tr -d .)
	[ -n "$last" ] && echo $((first - last)) || echo "?"
}

# lv_count_interval HOST NAME SECONDS: the ms the guest NAME on HOST takes
# per count, over SECONDS (its counter's rate; "?" if it did not count).
lv_count_interval() {
	local c0 c1 t0 t1
	c0=$(lv_counter "$1" "$2") t0=$(date +%s%3N)
	sleep "$3"
	c1=$(lv_counter "$1" "$2") t1=$(date +%s%3N)
	[ "$c1" -gt "$c0" ] && echo $(((t1 - t0) / (c1 - c0))) || echo "?"
}

# --- for the e2e tests (tests/e2e/lib.sh's fail, skip, expect_eq) ---------------
LV_QEMU_SETUP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/qemu/setup.sh

# lv_test_prepare: the guest's kernel and initramfs (no QMP client: libvirt
# owns QEMU) and what lv.sh needs; SKIP when they cannot be had.
lv_test_prepare() {
	local out rc=0
	out=$("$LV_QEMU_SETUP" 2>&1) || rc=$?
	[ $rc = 77 ] && skip "$(grep -m1 '^SKIP' <<<"$out" | sed 's/^SKIP: //')"
	[ $rc = 0 ] || fail "tests/qemu/setup.sh: $(tail -n1 <<<"$out")"
	rc=0
	lv_prepare || rc=$?
	[ $rc = 77 ] && skip "$LV_ERROR"
	[ $rc = 0 ] || fail "$LV_ERROR"
}

# lv_test_boot HOST NAME [IMG]: define and start the guest, wait for count 20.
lv_test_boot() {
	lv_start "$@" || fail "$LV_ERROR"
	lv_wait_counter "$1" "$2" 20 90 || fail "$LV_ERROR"
}

# lv_test_migrated NAME: what must hold after a successful migration of NAME: virsh
# said so, the source's domjobinfo saw it running, the guest runs on dst
# only, and counts on from the source's last value without a gap. Sets
# SEQ: the sequence (guest_check_seq).
lv_test_migrated() {
	local n=$1 src_last seq
	[ "$LV_MIGRATE_RC" = 0 ] || fail "virsh migrate $n exited $LV_MIGRATE_RC: $(tr '\n' ' ' <"$LV_DIR/migrate-$n.err")"
	[ "$LV_JOB_SEEN" -ge 1 ] || fail "the source's domjobinfo never showed $n's outgoing migration running"
	local st
	st=$(lv_state dst "$n")
	# what a failure here needs to be understood (seen once under load)
	[ "$st" = running ] || fail "$n on the destination is '$st' after virsh migrate exited 0 (source: $(lv_state src "$n"); virsh: $(tr '\n' ' ' <"$LV_DIR/migrate-$n.err" | sed 's/Migration: \[[^]]*\]//g' | tail -c 300); dst log: $(tail -n 3 "$LV_DIR/dst/log/qemu/$n.log" 2>/dev/null | tr '\n' ' ' | tail -c 300); tunnels: $(cat "$LV_DIR"/tunnel-*-*.err 2>/dev/null | grep -v 'listening\|connected' | tail -n 4 | tr '\n' ' '))"
	expect_eq "$n on the source" "$(lv_state src "$n")" "shut off"
	src_last=$(lv_counter src "$n")
	lv_wait_counter dst "$n" $((src_last + 10)) 30 ||
		fail "$n on the destination did not count on past the source's $src_last: $LV_ERROR"
	seq=$(guest_check_seq "$(lv_serial src "$n")" "$(lv_serial dst "$n")") ||
		fail "$n's counter across the migration (source's last $src_last): $seq"
	[ "${seq%%..*}" = 1 ] || fail "$n's source console starts at ${seq%%..*}, not 1"
	SEQ=$seq
}

# lv_test_hosts WHAT: both hosts, their link, the relays (LV_RELAY's), and
# the destination's libvirtd reached through them (WHAT: "relay" or
# "tunnel", for the messages).
lv_test_hosts() {
	local dst_host
	lv_host src 1 || fail "$LV_ERROR"
	lv_host dst 2 || fail "$LV_ERROR"
	lv_link src dst || fail "$LV_ERROR"
	lv_relay_all src dst || fail "$LV_ERROR"
	dst_host=$(lv_in src timeout 20 virsh -c "$(lv_dest_uri)" hostname 2>&1) ||
		fail "the destination libvirtd through the $1: $dst_host"
	expect_eq "destination hostname through the $1" "$dst_host" rmig-lv-dst
}
