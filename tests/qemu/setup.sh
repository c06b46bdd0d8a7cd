#!/bin/bash
# Prepare the QEMU test guest: the Debian kernel that tests/rxe/setup.sh
# downloads (it is called for that, and for QEMU and busybox-static) and a
# tiny busybox initramfs whose /init is tests/qemu/guest-init.sh (a counter on
# the serial console that dirties memory and, with rmig_disk=1, writes its disk;
# the only modules are virtio_blk and virtio_pci, with what they depend on). Idempotent and cached
# under ${QEMU_BUILD_DIR:-build/qemu}/: a second run only checks and prints
# "ready". The kernel comes from ${RXE_BUILD_DIR:-build/rxe}.
# Exit 0 ready, 77 "SKIP: reason" when qemu or the kernel cannot be had at
# all, 1 with one "setup.sh: error: ..." line otherwise.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${QEMU_BUILD_DIR:-$repo/build/qemu}
rxe_out=${RXE_BUILD_DIR:-$repo/build/rxe}

die() { echo "setup.sh: error: $*" >&2; exit 1; }
note() { echo "setup.sh: $*" >&2; }
trap 'echo "setup.sh: error: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

mkdir -p "$out" || die "cannot create $out"
out=$(cd "$out" && pwd)
# Tests running at once may all call setup.sh: serialise on a lock.
exec 9>"$out/.lock"
flock 9 || die "cannot lock $out/.lock"

# --- kernel, QEMU, busybox: tests/rxe/setup.sh ---------------------------------
# Also cached (0.1 s when nothing changed); it takes its own lock.
rc=0
RXE_BUILD_DIR=$rxe_out "$repo/tests/rxe/setup.sh" >"$out/rxe-setup.log" 2>&1 || rc=$?
if ((rc == 77)); then
	grep -m1 '^SKIP' "$out/rxe-setup.log" || echo "SKIP: tests/rxe/setup.sh could not get qemu or the kernel"
	exit 77
fi
((rc == 0)) || die "tests/rxe/setup.sh failed: $(grep -m1 'error' "$out/rxe-setup.log" || tail -n1 "$out/rxe-setup.log")"
[ -s "$rxe_out/vmlinuz" ] || die "tests/rxe/setup.sh left no $rxe_out/vmlinuz"
command -v qemu-system-x86_64 >/dev/null || { echo "SKIP: qemu-system-x86_64 not found"; exit 77; }
bb=$(command -v busybox) || die "busybox not found"
# The initramfs needs a static busybox: nothing else is in it.
if ldd "$bb" >/dev/null 2>&1; then
	die "$bb is dynamically linked (install busybox-static)"
fi

# --- initramfs -------------------------------------------------------------------
init_src="$here/guest-init.sh"
kv=$(cat "$rxe_out/kernel-release" 2>/dev/null || echo '?')
# The disk guest (rmig_disk=1) needs virtio_blk on virtio_pci: modules in
# Debian's kernel, taken with what they depend on from the package
# tests/rxe/setup.sh unpacked (its depmod made modules.dep there).
modules=(virtio_pci virtio_blk)
kdir=""
for d in "$rxe_out"/unpacked-*; do
	[ -d "$d/lib/modules/$kv" ] && kdir=$d
done
[ -n "$kdir" ] || die "no unpacked kernel with modules for $kv in $rxe_out"
stamp=$({
	for f in "$rxe_out/vmlinuz" "$init_src" "${BASH_SOURCE[0]}" "$bb"; do sha256sum <"$f"; done
	echo "$kv ${modules[*]}"
} | sha256sum | cut -d' ' -f1)

if [ -f "$out/initramfs.cpio.gz" ] && [ -f "$out/vmlinuz" ] &&
	[ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
	echo "setup.sh: ready (cached): kernel $kv, $out"
	exit 0
fi

note "building the guest's initramfs"
ir=$(mktemp -d "$out/initramfs.XXXXXX")
trap 'rm -rf "$ir"' EXIT
mkdir -p "$ir"/{bin,sbin,proc,sys,dev,tmp,lib/modules/"$kv"}
cp "$bb" "$ir/bin/busybox"
for a in $("$bb" --list); do
	[ "$a" = busybox ] || ln -s busybox "$ir/bin/$a"
done
# /sbin/modprobe too: the kernel runs it for request_module.
ln -s ../bin/modprobe "$ir/sbin/modprobe"
for m in "${modules[@]}"; do
	deps=$(modprobe -d "$kdir" -S "$kv" --show-depends "$m" 2>/dev/null) ||
		die "module $m not found in $kv ($kdir)"
	while read -r kind path _; do
		[ "$kind" = insmod ] || continue # "builtin x": nothing to copy
		rel=${path#"$kdir"/}
		mkdir -p "$ir/$(dirname "$rel")"
		cp "$path" "$ir/$rel"
	done <<<"$deps"
done
cp "$kdir/lib/modules/$kv"/modules.{order,builtin,builtin.modinfo} "$ir/lib/modules/$kv/"
depmod -b "$ir" "$kv" || die "depmod on the initramfs failed"
install -m 0755 "$init_src" "$ir/init"
(cd "$ir" && find . -print0 | LC_ALL=C sort -z | cpio -o -0 -H newc --quiet | gzip -1) \
	>"$out/initramfs.cpio.gz.tmp" || die "cpio/gzip of the initramfs failed"
# A copy, not a link: a newer kernel in build/rxe must not change a guest that
# is being migrated (source and destination must boot the same one).
cp "$rxe_out/vmlinuz" "$out/vmlinuz.tmp"
mv -f "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
mv -f "$out/vmlinuz.tmp" "$out/vmlinuz"
echo "$kv" >"$out/kernel-release"
echo "$stamp" >"$out/stamp"
echo "setup.sh: ready: kernel $kv, initramfs $(du -k "$out/initramfs.cpio.gz" | cut -f1) KiB, $out"
