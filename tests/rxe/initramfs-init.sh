#!/bin/sh
# Stage 1 of the rxe test VM: /init of the initramfs built by setup.sh.
# Runs under busybox only. It builds the guest's root filesystem: the host's /
# (9p, read-only) under a tmpfs overlay, mounts everything stage 2 needs
# (busybox here is fast; every exec from the 9p root costs ~80 ms under TCG),
# then switch_roots into it and runs stage 2 (tests/rxe/guest-init.sh, read
# from the host's tree). What it prints is boot noise that vm.sh only shows
# when the boot fails.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
	echo "rxe-vm-init: $*"
	echo "RXE-VM-BOOTFAIL"
	poweroff -f # the reboot syscall itself; qemu runs with -no-reboot
}

# Every module listed in /etc/rxe-modules (written by setup.sh), with
# dependencies from the initramfs' own modules.dep.
for m in $(cat /etc/rxe-modules); do
	modprobe "$m" || fail "modprobe $m failed"
done
# What udev loads on a real machine for its CPU: the AES-NI and PCLMULQDQ
# drivers of the crypto API (kernel TLS's AES-GCM; without them the kernel
# takes its generic C code while OpenSSL in user space uses the instructions,
# and a comparison of the two would say little). Best effort.
grep -qw aes /proc/cpuinfo && modprobe aesni_intel
grep -qw pclmulqdq /proc/cpuinfo && modprobe ghash_clmulni_intel

mkdir -p /lower /rw /newroot
# cache=loose: the lower layer is read-only to the guest; caching makes exec
# and stat over 9p much faster. (Host-side changes during a run may not be
# seen inside.)
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /lower ||
	fail "cannot mount the host root (9p tag hostroot)"
mount -t tmpfs -o mode=0755 rw /rw || fail "cannot mount tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
	fail "cannot mount the overlay root"
[ -x /newroot/bin/bash ] || fail "host root has no /bin/bash"

# The guest kernel's modules, for modprobe inside (the kernel's own
# request_module runs /sbin/modprobe too): copy them into the writable layer;
# switch_root empties the initramfs.
kver=$(uname -r)
mkdir -p "/newroot/lib/modules/$kver"
cp -a "/lib/modules/$kver/." "/newroot/lib/modules/$kver/" || fail "cannot copy modules"

for d in proc sys dev; do
	mkdir -p "/newroot/$d"
	mount --move "/$d" "/newroot/$d" || fail "cannot move /$d"
done
r=/newroot
# Fresh /run (ip netns keeps its files there; the host's /run is not ours).
# /tmp stays the overlay's (the host's /tmp, writable in RAM), so host paths
# under /tmp (mktemp dirs, --out, the cwd) mean the same thing inside.
mount -t tmpfs -o mode=0755,nosuid,nodev run $r/run || fail "mount /run"
mkdir -p $r/dev/pts $r/dev/shm $r/run/rxe-vm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $r/dev/pts || fail "mount /dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev shm $r/dev/shm || fail "mount /dev/shm"
mount -t configfs configfs $r/sys/kernel/config 2>/dev/null
echo rxe-vm >$r/proc/sys/kernel/hostname

# Control share (vm.conf, job.sh, stage2, outdir in; rc out) and the output
# share, mounted at the host path written in outdir.
nine() { mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 "$@"; }
nine rxectl $r/run/rxe-vm || fail "cannot mount the control share"
stage2=$(cat $r/run/rxe-vm/stage2)
[ -f "$r$stage2" ] || fail "stage 2 script '$stage2' not found in the host root"
out=$(cat $r/run/rxe-vm/outdir)
[ -n "$out" ] || fail "no outdir in the control share"
mkdir -p "$r$out" && nine rxeout "$r$out" || fail "cannot mount the output share at $out"

# The console is ttyS0: no \n -> \r\n, so the job's output reaches the host
# byte for byte.
stty -F $r/dev/console -onlcr

exec switch_root /newroot /bin/bash "$stage2"
