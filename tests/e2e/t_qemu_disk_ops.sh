#!/bin/bash
# The qemu backend's disk ops against two real QEMUs (TCG, no guest kernel:
# paused machines with virtio-blk disks), driven by tests/tools/
# qemu_disk_check as the engine would drive them: a raw disk (-drive) and a
# qcow2 one (-blockdev) copied through QEMU's NBD servers, with writes made
# in the middle of the copy that the rotating dirty bitmaps must catch; the
# images compared after both QEMUs quit; nothing of rmig's (exports,
# bitmaps, throttle) left in either QEMU afterwards. Then every bad input:
# the destination's disk smaller, larger, missing, read-only, the same image
# as the source's, no disks= on the destination; on the source a disk that
# is missing, read-only or not a multiple of 64 KiB; the destination QEMU
# or the source's killed mid-copy (one clear line, bounded time, the other
# QEMU cleaned up).
# Skips without QEMU, except with CI=true, where that fails.
. "$(dirname "$0")/lib.sh"
set -o pipefail
BIN=$(dirname "$RMIG")/tests
QMPC=$BIN/qmpc
CHECK=$BIN/qemu_disk_check
MIB=16

need() {
	command -v "$1" >/dev/null && return 0
	[ "${CI:-}" = true ] && fail "$1 is missing (CI=true: install qemu-system-x86 and qemu-utils)"
	skip "$1 is missing"
}
need qemu-system-x86_64
need qemu-img
{ [ -x "$QMPC" ] && [ -x "$CHECK" ]; } || fail "build $QMPC and $CHECK first (make unit)"
[ ${#T} -lt 80 ] || fail "$T is too long for unix socket paths"

declare -A VM_PID=()

# vm NAME [-incoming defer] QEMU_ARGS...: a paused machine with two QMP
# sockets (NAME.qmp for rmig, NAME.ctl.qmp for the test); waits (10 s) until
# it answers.
vm() {
	local name=$1
	shift
	qemu-system-x86_64 -nodefaults -no-user-config -machine pc -accel tcg -display none \
		-S -m 64 -qmp "unix:$T/$name.qmp,server=on,wait=off" \
		-qmp "unix:$T/$name.ctl.qmp,server=on,wait=off" "$@" \
		</dev/null >/dev/null 2>"$T/$name.qemu.err" &
	VM_PID[$name]=$!
	PIDS="$PIDS $!"
	disown "$!" # killed on purpose below: no "Killed" notice
	for _ in $(seq 100); do
		"$QMPC" -t 2 "$T/$name.ctl.qmp" query-status >/dev/null 2>&1 && return 0
		kill -0 "${VM_PID[$name]}" 2>/dev/null ||
			fail "QEMU $name exited: $(tail -n2 "$T/$name.qemu.err")"
		sleep 0.1
	done
	fail "QEMU $name does not answer QMP"
}

# vm_quit NAME: quit QEMU and wait (10 s) for it to exit: its images are final.
vm_quit() {
	local pid=${VM_PID[$1]}
	"$QMPC" -t 5 "$T/$1.ctl.qmp" quit >/dev/null 2>&1
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null
	unset "VM_PID[$1]"
}

ctl() { "$QMPC" -t 10 "$T/$1.ctl.qmp" "${@:2}"; }

# qio NAME DEVICE 'qemu-io command': through HMP, on the running QEMU.
qio() {
	local r
	r=$(ctl "$1" human-monitor-command "$(jq -nc --arg c "qemu-io $2 \"$3\"" '{"command-line":$c}')") ||
		fail "qemu-io $2 '$3' on $1: $r"
	# Its output goes to QEMU's stdout: the monitor says nothing unless it failed.
	[ "$(jq -r .return <<<"$r")" = "" ] || fail "qemu-io $2 '$3' on $1: $r"
}
# vdb, a -blockdev attached to a device, takes qemu-io through its device
# (through its node, qemu-io's writes would conflict with the device's).
VDB="-d /machine/peripheral/vdb/virtio-backend"

img() { qemu-img create -q -f "$1" "$T/$2" "$3" || fail "qemu-img create $2"; }

# The two disks every machine below has: vda (raw, -drive) and vdb (qcow2,
# -blockdev, named by its device id).
disks() { # PREFIX
	echo "-drive if=none,id=vda,file=$T/$1-a.raw,format=raw" \
		"-device virtio-blk-pci,drive=vda,id=vdadev" \
		"-blockdev driver=file,filename=$T/$1-b.qcow2,node-name=$1-bf" \
		"-blockdev driver=qcow2,file=$1-bf,node-name=$1-bq" \
		"-device virtio-blk-pci,drive=$1-bq,id=vdb"
}

# leftovers NAME: rmig's exports and bitmaps still in QEMU NAME, if any.
leftovers() {
	local e b
	e=$(ctl "$1" query-block-exports | jq -r '[.return[].id] | join(",")') || fail "query-block-exports on $1"
	b=$(ctl "$1" query-block | jq -r '[.return[].inserted["dirty-bitmaps"] // [] | .[].name] | join(",")') ||
		fail "query-block on $1"
	echo "${e}${b:+ bitmaps:$b}"
}

# refused NAME PATTERN SRC_SPEC DST_SPEC: qemu_disk_check exits 3 within 30 s
# with PATTERN in its one line; nothing left in QEMU src.
refused() {
	local rc=0
	timeout -k 2 30 "$CHECK" "$3" "$4" >"$T/$1.out" 2>"$T/$1.err" || rc=$?
	expect_eq "exit code ($1)" "$rc" 3
	grep -q -- "$2" "$T/$1.err" || fail "$1: the error does not say '$2': $(cat "$T/$1.err")"
	expect_eq "exports and bitmaps left after $1" "$(leftovers src)" ""
}

t0=$(millis)
# --- the copy -----------------------------------------------------------------
img raw src-a.raw ${MIB}M
img qcow2 src-b.qcow2 ${MIB}M
img raw dst-a.raw ${MIB}M
img qcow2 dst-b.qcow2 ${MIB}M
# A writable drive on storage other hosts reach too (an NBD server here):
# disks=all leaves it, as the read-only one.
img raw net.raw 4M
qemu-nbd -f raw -t --socket="$T/net.sock" "$T/net.raw" 2>"$T/qemu-nbd.err" &
PIDS="$PIDS $!"
for _ in $(seq 100); do [ -S "$T/net.sock" ] && break; sleep 0.05; done
[ -S "$T/net.sock" ] || fail "qemu-nbd did not start: $(cat "$T/qemu-nbd.err")"
# shellcheck disable=SC2046 # word splitting wanted
vm src $(disks src) -drive if=none,id=cd,file="$T/src-a.raw",format=raw,readonly=on \
	-drive if=none,id=net,file="nbd+unix:///?socket=$T/net.sock",format=raw
# shellcheck disable=SC2046
vm dst -incoming defer $(disks dst)
qio src vda "write -P 0x5a 1M 64k"
qio src vda "write -P 0x11 5M 300k"
qio src vda "write -P 0x22 $((MIB - 1))M 1M"
qio src "$VDB" "write -P 0x33 0 3M"
qio src "$VDB" "write -P 0x44 10M 64k"

# Mid-copy (after 300 of 512 blocks: vda's 256, then vdb's), writes into
# blocks round 1 has copied already (vda's all, vdb's block 2: the copy goes
# in order) and into one it has not (vdb's block 192).
cat >"$T/midcopy.sh" <<EOF
#!/bin/bash
q() {
	r=\$("$QMPC" -t 10 "$T/src.ctl.qmp" human-monitor-command "\$(jq -nc --arg c "\$1" '{"command-line":\$c}')")
	[ "\$(jq -r .return <<<"\$r")" = "" ] || { echo "midcopy: \$1: \$r" >&2; exit 1; }
}
q 'qemu-io vda "write -P 0x77 64k 4k"' && q 'qemu-io $VDB "write -P 0x66 128k 64k"' &&
	q 'qemu-io vda "write -P 0x55 1M 512"' && q 'qemu-io $VDB "write -P 0x88 12M 64k"'
EOF
# While open: what rmig added, and the throttle.
cat >"$T/during.sh" <<EOF
#!/bin/bash
"$QMPC" -t 10 "$T/src.ctl.qmp" query-block-exports >"$T/src-exports.json"
"$QMPC" -t 10 "$T/src.ctl.qmp" query-block >"$T/src-block.json"
"$QMPC" -t 10 "$T/dst.ctl.qmp" query-block-exports >"$T/dst-exports.json"
find /tmp -maxdepth 1 -name 'rmig-nbd.*' -newer "$T/marker" -printf '%p %m\n' >"$T/nbd-dirs"
EOF
chmod +x "$T/midcopy.sh" "$T/during.sh"
touch "$T/marker"
rc=0
timeout -k 2 60 "$CHECK" --rounds 3 --hook 300 "$T/midcopy.sh" --throttle 1048576 \
	--before-close "$T/during.sh" "qemu:qmp=$T/src.qmp,disks=all" \
	"qemu:qmp=$T/dst.qmp,disks=all" >"$T/copy.out" 2>"$T/copy.err" || rc=$?
expect_eq "qemu_disk_check exit code" "$rc" 0
grep -q '^disk 0: vda, 16777216 bytes, block 65536$' "$T/copy.out" || fail "vda is not disk 0"
grep -q '^disk 1: vdb, 16777216 bytes, block 65536$' "$T/copy.out" || fail "vdb is not disk 1"
grep -q '^disk 2' "$T/copy.out" && fail "disks=all took a third drive: $(grep '^disk 2' "$T/copy.out")"
for d in vda vdb; do
	n=$(sed -n "s/^round 2: disk $d: \([0-9]*\) blocks.*/\1/p" "$T/copy.out")
	[ "${n:-0}" -ge 2 ] || fail "round 2 copied ${n:-no} blocks of $d: the mid-copy writes were not seen"
	n=$(sed -n "s/^round 4: disk $d: \([0-9]*\) blocks.*/\1/p" "$T/copy.out")
	expect_eq "blocks of $d in round 4 (nothing written since)" "$n" 0
done
expect_eq "source exports during the copy" "$(jq -r '[.return[].id] | sort | join(",")' "$T/src-exports.json")" "rmig-d0,rmig-d1"
expect_eq "destination exports during the copy" "$(jq -r '[.return[].id] | sort | join(",")' "$T/dst-exports.json")" "rmig-w0,rmig-w1"
expect_eq "source bitmaps during the copy" \
	"$(jq -r '[.return[] | select(.inserted["dirty-bitmaps"]) | .inserted["dirty-bitmaps"][] | "\(.name)/\(.granularity)"] | join(",")' "$T/src-block.json")" \
	"rmig-4/65536,rmig-4/65536"
expect_eq "vda's write limit during the copy" "$(jq -r '.return[0].inserted.bps_wr' "$T/src-block.json")" 1048576
expect_eq "exports and bitmaps left in the source" "$(leftovers src)" ""
expect_eq "exports left in the destination" "$(leftovers dst)" ""
expect_eq "vda's write limit after" "$(ctl src query-block | jq -r '.return[0].inserted.bps_wr')" 0
# The NBD sockets' directories: one per side, private, gone afterwards.
expect_eq "NBD socket directories during the copy" "$(awk '{ print $2 }' "$T/nbd-dirs" | xargs)" "700 700"
while read -r d _; do
	[ ! -e "$d" ] || fail "$d is still there"
done <"$T/nbd-dirs"
vm_quit src
vm_quit dst
qemu-img compare -q -f raw -F raw "$T/src-a.raw" "$T/dst-a.raw" || fail "vda (raw): the images differ"
qemu-img compare -q -f qcow2 -F qcow2 "$T/src-b.qcow2" "$T/dst-b.qcow2" ||
	fail "vdb (qcow2): the images differ"
# Equal, and with the mid-copy writes in.
pattern() { # IMAGE FORMAT 'read -P ...'
	local r
	r=$(qemu-io -f "$2" -r -c "$3" "$T/$1" 2>&1)
	case $r in *"read "*) ;; *) fail "$1: qemu-io $3: $r" ;; esac
	case $r in *rror* | *failed*) fail "$1: qemu-io $3: $r" ;; esac
}
pattern dst-a.raw raw "read -P 0x77 64k 4k"
pattern dst-a.raw raw "read -P 0x55 1M 512"
pattern dst-b.qcow2 qcow2 "read -P 0x66 128k 64k"
pattern dst-b.qcow2 qcow2 "read -P 0x88 12M 64k"
copy_ms=$(($(millis) - t0))

# --- bad input on the destination ----------------------------------------------
# shellcheck disable=SC2046
vm src $(disks src) -drive if=none,id=cd,file="$T/src-a.raw",format=raw,readonly=on
S="qemu:qmp=$T/src.qmp,disks=vda"
baddst() { # NAME PATTERN DST_DISKS_ARG QEMU_ARGS...
	local name=$1 pat=$2 arg=$3
	shift 3
	vm "$name" -incoming defer "$@"
	refused "$name" "$pat" "$S" "qemu:qmp=$T/$name.qmp$arg"
	expect_eq "exports left in $name" "$(leftovers "$name")" ""
	vm_quit "$name"
}
img raw small.raw $((MIB / 2))M
img raw large.raw $((MIB * 2))M
baddst small "disk vda: the destination's image is 8388608 bytes, the source's 16777216" ,disks=all \
	-drive if=none,id=vda,file="$T/small.raw",format=raw -device virtio-blk-pci,drive=vda
baddst large "disk vda: the destination's image is 33554432 bytes, the source's 16777216" ,disks=all \
	-drive if=none,id=vda,file="$T/large.raw",format=raw -device virtio-blk-pci,drive=vda
baddst missing "disk vda: the destination QEMU has no such device (it has: vdx)" ,disks=all \
	-drive if=none,id=vdx,file="$T/dst-a.raw",format=raw -device virtio-blk-pci,drive=vdx
baddst readonly "disk vda is read-only in the destination QEMU" ,disks=all \
	-drive if=none,id=vda,file="$T/dst-a.raw",format=raw,readonly=on -device virtio-blk-pci,drive=vda
baddst same "the same storage as the source's (shared storage: nothing to copy)" ,disks=all \
	-drive if=none,id=vda,file="$T/src-a.raw",format=raw -device virtio-blk-pci,drive=vda
baddst nodisks "receive them with disks=all or disks=ID+ID" "" \
	-drive if=none,id=vda,file="$T/dst-a.raw",format=raw -device virtio-blk-pci,drive=vda
# QEMU runs an NBD server of its own already: refused, and it is left running.
vm busy -incoming defer -drive if=none,id=vda,file="$T/dst-a.raw",format=raw -device virtio-blk-pci,drive=vda
ctl busy nbd-server-start "{\"addr\":{\"type\":\"unix\",\"data\":{\"path\":\"$T/own.nbd\"}}}" >/dev/null ||
	fail "nbd-server-start on busy"
refused busy "nbd-server-start: NBD server already running (rmig needs QEMU's NBD server" "$S" \
	"qemu:qmp=$T/busy.qmp,disks=all"
ctl busy nbd-server-stop >/dev/null || fail "the NBD server of QEMU busy is gone"
vm_quit busy
baddst notnamed "the source sends disk vda, which disks= leaves out" ,disks=vdb \
	-drive if=none,id=vda,file="$T/dst-a.raw",format=raw -device virtio-blk-pci,drive=vda

# --- bad input on the source ------------------------------------------------------
# shellcheck disable=SC2046
vm dst -incoming defer $(disks dst)
D="qemu:qmp=$T/dst.qmp,disks=all"
refused srcmissing "disk vdz: QEMU has no such device (it has: vda, cd, vdb)" "qemu:qmp=$T/src.qmp,disks=vdz" "$D"
refused srcro "disk cd is read-only: only writable disks migrate" "qemu:qmp=$T/src.qmp,disks=vda+cd" "$D"
vm_quit src
img raw odd.raw $((MIB * 1024 + 4))K
vm odd -drive if=none,id=odd,file="$T/odd.raw",format=raw -device virtio-blk-pci,drive=odd
rc=0
timeout -k 2 30 "$CHECK" "qemu:qmp=$T/odd.qmp,disks=all" "$D" >"$T/odd.out" 2>"$T/odd.err" || rc=$?
expect_eq "exit code (odd size)" "$rc" 3
grep -q "disk odd is 16781312 bytes, not a multiple of 64 KiB" "$T/odd.err" ||
	fail "odd size: $(cat "$T/odd.err")"
vm_quit odd
expect_eq "exports left in the destination after the source's refusals" "$(leftovers dst)" ""
vm_quit dst

# --- the destination QEMU dies mid-copy -------------------------------------------
img raw dst-a.raw ${MIB}M
img qcow2 dst-b.qcow2 ${MIB}M
# shellcheck disable=SC2046
vm src $(disks src)
# shellcheck disable=SC2046
vm dst -incoming defer $(disks dst)
t1=$(millis)
rc=0
timeout -k 2 60 "$CHECK" --hook 30 "kill -9 ${VM_PID[dst]}" "qemu:qmp=$T/src.qmp,disks=all" \
	"qemu:qmp=$T/dst.qmp,disks=all" >"$T/kill.out" 2>"$T/kill.err" || rc=$?
kill_ms=$(($(millis) - t1))
unset "VM_PID[dst]"
expect_eq "exit code (destination killed)" "$rc" 1
grep -Eq "round 1: disk vda: disk_write(_zeroes)? at offset [0-9]+: (Connection reset by peer|Broken pipe|Transport endpoint is not connected)" \
	"$T/kill.err" || fail "destination killed: $(cat "$T/kill.err")"
[ "$(wc -l <"$T/kill.err")" -le 2 ] || fail "destination killed: more than one line: $(cat "$T/kill.err")"
expect_eq "exports and bitmaps left in the source" "$(leftovers src)" ""
expect_eq "source QEMU status" "$(ctl src query-status | jq -r .return.status)" prelaunch

# --- and the source QEMU dies mid-copy ------------------------------------------
# shellcheck disable=SC2046
vm dst -incoming defer $(disks dst)
rc=0
timeout -k 2 60 "$CHECK" --hook 30 "kill -9 ${VM_PID[src]}" "qemu:qmp=$T/src.qmp,disks=all" \
	"qemu:qmp=$T/dst.qmp,disks=all" >"$T/kill-src.out" 2>"$T/kill-src.err" || rc=$?
unset "VM_PID[src]"
expect_eq "exit code (source killed)" "$rc" 1
grep -Eq "round 1: disk vda: disk_read at offset [0-9]+: (Connection reset by peer|Broken pipe|Transport endpoint is not connected)" \
	"$T/kill-src.err" || fail "source killed: $(cat "$T/kill-src.err")"
expect_eq "exports left in the destination" "$(leftovers dst)" ""
vm_quit dst
pass "raw + qcow2 copied with mid-copy writes caught ($copy_ms ms); 8 destination and 3 source refusals; destination killed mid-copy: one line in $kill_ms ms, source clean; source killed: destination clean"
