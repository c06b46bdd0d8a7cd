#!/bin/bash
# Run COMMAND as root inside a throwaway qemu VM (Debian 6.1 kernel, TCG) that
# has two soft-RoCE devices, rxe_a (10.77.0.1) and rxe_b (10.77.0.2), joined
# by a veth pair. The guest's root is the host's / read-only over 9p under a
# RAM overlay, so the host's tools and the repo's build run unchanged inside.
# COMMAND's output comes out on stdout; vm.sh exits with COMMAND's status.
# See tests/rxe/README.md.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: tests/rxe/vm.sh [options] -- COMMAND [ARGS...]
  --numa          2 NUMA nodes (node 0: cpus 0-1, node 1: cpus 2-3), -smp 4,sockets=2
  --mem MB        guest memory (default 2048; split evenly over the nodes with --numa)
  --smp N         vCPUs (default 2; 4 with --numa, where N must be even)
  --timeout S     kill the VM after S seconds (default 300), exit 124
  --out DIR       host dir shared read-write at the same path inside ($RXE_OUT);
                  default: a temp dir, removed afterwards if left empty
  --env NAME=VAL  export NAME=VAL to COMMAND (repeatable)
  --dmesg FILE    save the guest's kernel log to FILE when COMMAND ends
exit: COMMAND's status; 124 timeout; 125 the VM failed; 77 SKIP (no qemu/kernel)
EOF
}
die() { echo "vm.sh: error: $*" >&2; exit 125; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=${RXE_BUILD_DIR:-$repo/build/rxe}

numa=0 mem=2048 smp='' timeout=300 out='' dmesg=''
envs=()
while (($#)); do
	case "$1" in
	--numa) numa=1 ;;
	--mem) mem=${2:?}; shift ;;
	--smp) smp=${2:?}; shift ;;
	--timeout) timeout=${2:?}; shift ;;
	--out) out=${2:?}; shift ;;
	--env) [[ ${2:-} == [A-Za-z_]*=* ]] || die "--env wants NAME=VALUE"; envs+=("$2"); shift ;;
	--dmesg) dmesg=${2:?}; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; break ;;
	-*) usage >&2; die "unknown option $1" ;;
	*) break ;;
	esac
	shift
done
(($#)) || { usage >&2; die "no COMMAND"; }
[[ $mem =~ ^[0-9]+$ ]] && ((mem >= 256)) || die "--mem wants MB >= 256"
[[ $timeout =~ ^[0-9]+$ ]] && ((timeout > 0)) || die "--timeout wants seconds"
if ((numa)); then
	smp=${smp:-4}
	[[ $smp =~ ^[0-9]+$ ]] && ((smp >= 2 && smp % 2 == 0)) || die "--numa wants an even --smp"
else
	smp=${smp:-2}
	[[ $smp =~ ^[0-9]+$ ]] && ((smp >= 1)) || die "--smp wants a number"
fi

# Kernel + initramfs, cached: a no-op after the first run.
rc=0
so=$("$here/setup.sh" 2>&1) || rc=$?
if ((rc)); then
	if ((rc == 77)); then printf '%s\n' "$so" | grep '^SKIP' || echo "SKIP: setup.sh"; exit 77; fi
	printf '%s\n' "$so" >&2
	die "setup.sh failed"
fi

# Control share: vm.conf, job.sh, outdir, stage2 in; rc (and dmesg) out.
ctl=$(mktemp -d "${TMPDIR:-/tmp}/rxe-vm.XXXXXX")
own_out=0
if [ -z "$out" ]; then
	out=$(mktemp -d "${TMPDIR:-/tmp}/rxe-vm-out.XXXXXX")
	own_out=1
fi
mkdir -p "$out" || die "cannot create --out $out"
out=$(cd "$out" && pwd -P)
cleanup() {
	# Killed ourselves (an outer timeout's SIGTERM, ^C): take qemu along.
	if [ -s "$ctl/qemu.pid" ]; then kill "$(cat "$ctl/qemu.pid")" 2>/dev/null || :; fi
	rm -rf "$ctl"
	if ((own_out)); then
		rmdir "$out" 2>/dev/null || echo "vm.sh: output kept in $out" >&2
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

nonce=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
{
	printf 'RXE_OUT=%q\n' "$out"
	printf 'RXE_VM_NONCE=%q\n' "$nonce"
	[ -z "$dmesg" ] || echo RXE_VM_DMESG=1
} >"$ctl/vm.conf"
printf '%s\n' "$out" >"$ctl/outdir"
printf '%s\n' "$here/guest-init.sh" >"$ctl/stage2"
{
	echo 'cd -- '"$(printf '%q' "$PWD")"' || exit 125'
	printf 'export RXE_NUMA=%q RXE_VM_SMP=%q\n' "$numa" "$smp"
	[ -z "${CI:-}" ] || printf 'export CI=%q\n' "$CI"
	for e in ${envs[@]+"${envs[@]}"}; do printf 'export %q=%q\n' "${e%%=*}" "${e#*=}"; done
	printf 'exec'
	printf ' %q' "$@"
	echo
} >"$ctl/job.sh"

kr=$(cat "$build/kernel-release")
if ((numa)); then mem=$((mem / 2 * 2)); fi
qemu=(qemu-system-x86_64 -nodefaults -no-user-config -machine pc -accel tcg,thread=multi
	-cpu max -m "$mem" -no-reboot -pidfile "$ctl/qemu.pid"
	-display none -vga none -serial stdio -monitor none -nic none
	-kernel "$build/vmlinuz" -initrd "$build/initramfs.cpio.gz"
	-device virtio-rng-pci
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap
	-virtfs "local,path=${ctl//,/,,},mount_tag=rxectl,security_model=none,multidevs=remap"
	-virtfs "local,path=${out//,/,,},mount_tag=rxeout,security_model=none,multidevs=remap")
if ((numa)); then
	half=$((mem / 2)) c=$((smp / 2))
	qemu+=(-smp "$smp,sockets=2,cores=$c,threads=1"
		-object "memory-backend-ram,id=m0,size=${half}M"
		-object "memory-backend-ram,id=m1,size=${half}M"
		-numa "node,nodeid=0,cpus=0-$((c - 1)),memdev=m0"
		-numa "node,nodeid=1,cpus=$c-$((smp - 1)),memdev=m1")
else
	qemu+=(-smp "$smp")
fi
# (A comma in a -virtfs path is written as two.)
# quiet loglevel=0: keep the console for the job's output. panic=-1 with
# -no-reboot: a guest panic ends qemu at once instead of hanging to the
# timeout. mitigations=off: speculation workarounds only cost time under TCG.
qemu+=(-append "console=ttyS0 quiet loglevel=0 panic=-1 mitigations=off")

# Before the START marker everything is boot noise (kept in boot.log, shown
# only on failure); after it, lines go to stdout until the EXIT marker.
# mawk (Debian's awk) reads a pipe in blocks: -W interactive makes it
# line by line, so output streams and the boot time is right.
awk_il=()
if awk -W version 2>&1 | grep -q mawk; then awk_il=(-W interactive); fi
t0=$(date +%s.%N)
# In the background and waited for, so that a signal to vm.sh is acted on at
# once (bash defers traps while a foreground pipeline runs).
{
	set +e # the status is the result here, not a reason to stop
	timeout -k 5 "$timeout" "${qemu[@]}" </dev/null 2>"$ctl/qemu.err" |
		awk ${awk_il[@]+"${awk_il[@]}"} -v n="$nonce" -v boot="$ctl/boot.log" -v st="$ctl/started" -v ex="$ctl/marker" '
		BEGIN { phase = 0; start = "RXE-VM-START." n; exit_ = "RXE-VM-EXIT." n "=" }
		phase == 0 {
			print > boot
			if (index($0, start)) { phase = 1; system("date +%s.%N >" st); fflush(boot) }
			next
		}
		phase == 1 {
			i = index($0, exit_)
			if (i) {
				if (i > 1) printf "%s", substr($0, 1, i - 1)
				print substr($0, i + length(exit_)) > ex
				phase = 2
				fflush()
				next
			}
			print; fflush()
		}'
	echo "${PIPESTATUS[0]}" 2>/dev/null >"$ctl/qrc"
} &
wait $! || :
t1=$(date +%s.%N)
qrc=$(cat "$ctl/qrc" 2>/dev/null || echo '?')
rm -f "$ctl/qemu.pid"

rc=
[ -f "$ctl/rc" ] && rc=$(cat "$ctl/rc")
[ -z "$rc" ] && [ -f "$ctl/marker" ] && rc=$(cat "$ctl/marker")
if [ -n "$dmesg" ] && [ -f "$ctl/dmesg" ]; then cp "$ctl/dmesg" "$dmesg"; fi
times=$(awk -v a="$t0" -v b="$t1" -v s="$(cat "$ctl/started" 2>/dev/null)" \
	'BEGIN { if (s != "") printf "boot %.1f s, ", s - a; printf "total %.1f s", b - a }')
if [[ $rc =~ ^[0-9]+$ ]]; then
	echo "vm.sh: COMMAND exited $rc ($times, kernel $kr)" >&2
	exit "$rc"
fi
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
	echo "vm.sh: error: timed out after ${timeout}s (VM killed); COMMAND did not finish" >&2
	exit 124
fi
# No status: the guest failed to come up, or died under COMMAND. Show why.
{
	if [ -f "$ctl/started" ]; then
		echo "vm.sh: error: the guest died while COMMAND ran (kernel panic or poweroff; qemu exit $qrc)"
	elif grep -q 'RXE-VM-\(SETUP\|BOOT\)FAIL' "$ctl/boot.log" 2>/dev/null; then
		echo "vm.sh: error: the guest failed to set up: $(grep -a '^rxe-vm' "$ctl/boot.log" | tr -d '\r' | tail -n1)"
	else
		echo "vm.sh: error: the VM stopped before COMMAND started (qemu exit $qrc)"
	fi
	if [ ! -f "$ctl/started" ] && [ -s "$ctl/boot.log" ]; then
		echo "--- guest console (last lines) ---"
		tr -d '\r' <"$ctl/boot.log" | tail -n 25
	fi
	if [ -s "$ctl/qemu.err" ]; then
		echo "--- qemu stderr ---"
		tail -n 10 "$ctl/qemu.err"
	fi
} >&2
exit 125
