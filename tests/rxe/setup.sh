#!/bin/bash
# Prepare the soft-RoCE test VM: host packages, a Debian kernel (downloaded,
# never installed on the host) and a small busybox initramfs with the modules
# rdma_rxe needs. Idempotent and cached under build/rxe/: a second run only
# checks and prints "ready". Exit 0 ready, 77 "SKIP: reason" when qemu or the
# kernel cannot be had at all, 1 with one "setup.sh: error: ..." line otherwise.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${RXE_BUILD_DIR:-$repo/build/rxe}

die() { echo "setup.sh: error: $*" >&2; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }
note() { echo "setup.sh: $*" >&2; }
# Anything failing that has no die of its own still ends in one clear line.
trap 'echo "setup.sh: error: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

mkdir -p "$out" || die "cannot create $out"
# Two vm.sh runs at once may both call setup.sh: serialise on a lock.
exec 9>"$out/.lock"
flock 9 || die "cannot lock $out/.lock"

# --- host packages ----------------------------------------------------------
# qemu-system-x86: the VM (TCG, no KVM here). busybox-static: the initramfs.
# The rest runs inside the guest from the host's own tree (shared over 9p):
# rdma-core/ibverbs-* (libibverbs + the rxe provider), rdmacm-utils (rping),
# perftest, iproute2 (ip netns, rdma), numactl. kmod: depmod and modprobe -d
# for the kernel's modules.dep. cpio: the initramfs archive.
pkgs=(qemu-system-x86 busybox-static rdma-core ibverbs-utils ibverbs-providers
	libibverbs1 librdmacm1 rdmacm-utils perftest iproute2 numactl kmod cpio gzip util-linux)
missing_pkgs() {
	# One dpkg-query for all: it is the whole cost of a cached run otherwise.
	dpkg-query -W -f='${Package} ${Status}\n' "$@" 2>/dev/null |
		awk -v want="$*" '$NF == "installed" { ok[$1] = 1 }
			END { n = split(want, w, " "); for (i = 1; i <= n; i++) if (!ok[w[i]]) print w[i] }'
}
mapfile -t missing < <(missing_pkgs "${pkgs[@]}")
if ((${#missing[@]})); then
	[ "$(id -u)" = 0 ] || die "missing packages (${missing[*]}) and not root to install them"
	note "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	log="$out/apt.log"
	# Stale or empty package lists are the usual failure: update and retry once.
	if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
		apt-get update -q >>"$log" 2>&1 || true
		apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1 || true
	fi
	mapfile -t still < <(missing_pkgs "${missing[@]}")
	if ((${#still[@]})); then
		if printf '%s\n' "${still[@]}" | grep -qx qemu-system-x86; then
			skip "qemu-system-x86 cannot be installed (see $log)"
		fi
		die "cannot install ${still[*]} (see $log)"
	fi
fi
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not found after install"

# --- kernel package -----------------------------------------------------------
# The concrete linux-image-6.1.*-amd64 that the linux-image-amd64 meta package
# points at; downloaded with apt-get download, not installed. Asking apt-cache
# costs over a second, so the answer is remembered until apt's lists change.
apt_key() { stat -c %Y /var/lib/apt/lists /var/cache/apt/pkgcache.bin 2>/dev/null | tr '\n' .; }
resolve_kernel() {
	kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
	kver_deb=
	[ -z "$kpkg" ] ||
		kver_deb=$(apt-cache policy "$kpkg" 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)" { print $2; exit }')
	[ -n "$kver_deb" ]
}
kpkg='' kver_deb=''
if [ -f "$out/kernel-pkg" ] && read -r k v key <"$out/kernel-pkg" && [ "$key" = "$(apt_key)" ]; then
	kpkg=$k kver_deb=$v
elif resolve_kernel || { apt-get update -q >"$out/apt.log" 2>&1; resolve_kernel; }; then
	echo "$kpkg $kver_deb $(apt_key)" >"$out/kernel-pkg"
fi
deb=
if [ -n "$kver_deb" ]; then
	cand="$out/${kpkg}_${kver_deb//:/%3a}_amd64.deb"
	if [ -s "$cand" ]; then
		deb=$cand
	else
		note "downloading $kpkg $kver_deb"
		tmpd=$(mktemp -d "$out/dl.XXXXXX")
		# Sandbox::User=root: build/ is not readable by apt's _apt user.
		if (cd "$tmpd" && apt-get -q -o APT::Sandbox::User=root download "$kpkg" >"$out/apt-download.log" 2>&1); then
			f=$(ls "$tmpd"/*.deb 2>/dev/null | head -n1)
			if [ -n "$f" ]; then
				rm -f "$out"/linux-image-[0-9]*.deb # superseded: 70 MB each
				mv -f "$f" "$out/" && deb="$out/$(basename "$f")"
			fi
		fi
		rm -rf "$tmpd"
	fi
fi
if [ -z "$deb" ]; then
	# Offline or the mirror moved on: a kernel downloaded earlier will do.
	deb=$(ls -t "$out"/linux-image-[0-9]*-amd64_*_amd64.deb 2>/dev/null | head -n1 || true)
	[ -n "$deb" ] || skip "the Debian kernel package (linux-image-amd64's linux-image-6.1.*) cannot be downloaded (see $out/apt-download.log)"
	note "using cached $(basename "$deb")"
fi

# Unpack once per package; depmod because the .deb ships no modules.dep
# (its postinst makes it).
kdir="$out/unpacked-$(basename "$deb" .deb)"
if [ ! -f "$kdir/.unpacked" ]; then
	note "unpacking $(basename "$deb")"
	rm -rf "$kdir" "$kdir.tmp"
	dpkg-deb -x "$deb" "$kdir.tmp" || die "dpkg-deb -x $deb failed"
	kv=$(ls "$kdir.tmp/lib/modules" | head -n1)
	[ -n "$kv" ] && [ -f "$kdir.tmp/boot/vmlinuz-$kv" ] || die "$deb has no vmlinuz/modules"
	depmod -b "$kdir.tmp" "$kv" || die "depmod for $kv failed"
	touch "$kdir.tmp/.unpacked"
	mv "$kdir.tmp" "$kdir"
	# Older unpacked kernels are only dead weight (400 MB each).
	for old in "$out"/unpacked-*; do
		[ "$old" = "$kdir" ] || rm -rf "$old"
	done
fi
kv=$(ls "$kdir/lib/modules" | head -n1)

# --- initramfs ------------------------------------------------------------------
# Loaded in this order by stage 1 (modprobe pulls the dependencies):
#  virtio_pci, 9pnet_virtio, 9p, overlay   the root filesystem (host / over 9p)
#  virtio_rng                              entropy at once under TCG
#  crc32_generic                           rxe's ICRC (crypto "crc32")
#  rdma_rxe ib_uverbs rdma_ucm ib_umad     soft-RoCE + user verbs + rdma_cm
#  veth                                    the wire between rxe_a and rxe_b
modules=(virtio_pci 9pnet_virtio 9p overlay virtio_rng crc32_generic
	rdma_rxe ib_uverbs rdma_ucm ib_umad veth)
# Shipped but not loaded; modprobe (or the kernel) loads them on demand:
# netem for delay/loss tests ("tc qdisc add dev veth_a root netem ..."),
# dummy, bridge and macvlan for other wiring, kvm with kvm_amd (what loads
# under TCG's -cpu max, which emulates SVM) and kvm_intel for tests/rxe/t_kvm.sh.
# Kernel TLS (tests/rxe/t_tls.sh): tls (the TCP ULP; setsockopt TCP_ULP "tls"
# loads it by its alias tcp-ulp-tls) and the AES-GCM it asks the crypto API
# for: gcm, ctr, ghash_generic (Debian builds them as modules; only aes itself
# is built in), and aesni_intel and ghash_clmulni_intel, which udev would load
# on a real machine with AES-NI (TCG's -cpu max has it; stage 1 loads them
# when /proc/cpuinfo says so).
extra_modules=(sch_netem dummy bridge macvlan kvm kvm_amd kvm_intel
	tls gcm ctr ghash_generic aesni_intel ghash_clmulni_intel)
init_src="$here/initramfs-init.sh"
bb=$(command -v busybox) || die "busybox not found"
stamp=$({
	basename "$deb"
	echo "${modules[*]} / ${extra_modules[*]}"
	for f in "$init_src" "${BASH_SOURCE[0]}" "$bb"; do sha256sum <"$f"; done # contents, not names
} | sha256sum | cut -d' ' -f1)

if [ -f "$out/initramfs.cpio.gz" ] && [ -f "$out/vmlinuz" ] &&
	[ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
	echo "setup.sh: ready (cached): kernel $kv, $out"
	exit 0
fi

note "building initramfs for $kv"
ir=$(mktemp -d "$out/initramfs.XXXXXX")
trap 'rm -rf "$ir"' EXIT
mkdir -p "$ir"/{bin,sbin,etc,proc,sys,dev,lib/modules/"$kv"}
cp "$bb" "$ir/bin/busybox"
# One symlink per applet; /sbin/modprobe too, which the kernel's
# request_module runs before switch_root.
for a in $("$bb" --list); do
	[ "$a" = busybox ] || ln -s busybox "$ir/bin/$a"
done
ln -s ../bin/modprobe "$ir/sbin/modprobe"
for m in "${modules[@]}" "${extra_modules[@]}"; do
	deps=$(modprobe -d "$kdir" -S "$kv" --show-depends "$m" 2>/dev/null) ||
		die "module $m not found in $kv"
	while read -r kind path _; do
		[ "$kind" = insmod ] || continue # "builtin x": nothing to copy
		rel=${path#"$kdir"/}
		mkdir -p "$ir/$(dirname "$rel")"
		cp "$path" "$ir/$rel"
	done <<<"$deps"
done
cp "$kdir/lib/modules/$kv"/modules.{order,builtin,builtin.modinfo} "$ir/lib/modules/$kv/"
depmod -b "$ir" "$kv" || die "depmod on the initramfs failed"
printf '%s\n' "${modules[@]}" >"$ir/etc/rxe-modules"
install -m 0755 "$init_src" "$ir/init"
(cd "$ir" && find . -print0 | LC_ALL=C sort -z | cpio -o -0 -H newc --quiet | gzip -1) \
	>"$out/initramfs.cpio.gz.tmp" || die "cpio/gzip of the initramfs failed"
cp "$kdir/boot/vmlinuz-$kv" "$out/vmlinuz.tmp"
mv -f "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
mv -f "$out/vmlinuz.tmp" "$out/vmlinuz"
echo "$kv" >"$out/kernel-release"
echo "$stamp" >"$out/stamp"
echo "setup.sh: ready: kernel $kv, initramfs $(du -k "$out/initramfs.cpio.gz" | cut -f1) KiB, $out"
