#!/bin/sh
# /init of the QEMU test guest (tests/qemu/setup.sh builds it into the
# initramfs; busybox only). Forever: count, print "rmig-counter N" on the
# serial console, dirty guest memory, sleep. A migration that loses or
# repeats guest state shows as a gap or a repeat in the counter.
#
# Tunables, from the kernel command line (guest.sh's GUEST_APPEND):
#   rmig_dirty_kib=N  KiB copied into tmpfs per iteration (4096, at most 4096)
#   rmig_sleep=S      seconds slept per iteration (0.05)
#   rmig_disk=1       also keep the counter on the first virtio-blk disk
#                     (/dev/vda) and check it back at each count (below)
#   rmig_disk_kib=N   with rmig_disk=1: KiB of new data written per count at
#                     a moving offset of the disk (0, at most 4096)
# The kernel passes unknown NAME=VALUE parameters to /init as environment.
#
# The disk (rmig_disk=1), all I/O O_DIRECT so that it goes to the device and
# never to the guest's page cache (whose pages would migrate with memory and
# hide a disk that did not):
#   bytes 0..8191   a ring of 16 records of 512 bytes: count N writes
#                   "rmig-disk-counter %012d\n" (N), zero-padded to 512
#                   bytes, at sector N % 16; zeroed at boot
#   1 MiB..end      the moving region: rmig_disk_kib KiB per count from the
#                   random pool, the offset moving on by as much each count
#                   and wrapping at the disk's end
# At count N (N > 1) the guest first reads back sector (N-1) % 16, which
# must hold N-1, and sector N % 16, which must hold N-16 (nothing while
# N <= 16): "rmig-disk-ok N-1" when both do, else "rmig-disk-BAD expected X
# got Y at sector S" (Y: the value read, "none" for no record,
# "read-error"). Then it writes N. After a migration the destination's guest
# thus checks, at its first count, the destination's disk itself: the last
# record and one written 15 counts earlier, by the source.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm
mount -t tmpfs -o size=96m shm /dev/shm

# say LINE: LINE on the serial console. Through the kernel's console
# (printk, which writes the UART polled), not /dev/ttyS0's tty, which waits
# for the UART's transmit interrupt: once, after a migration under TCG, the
# guest ran on but each of its writes to /dev/ttyS0 stalled 30 s (the tty's
# closing_wait; t_libvirt_relay, 2026-12-06), as a transmit interrupt lost
# across the migration would make them. /dev/kmsg lines: level 3 shows past
# "quiet", no timestamp, no rate limit; the tty where the kernel has no such
# switches.
if echo on >/proc/sys/kernel/printk_devkmsg 2>/dev/null &&
	echo N >/sys/module/printk/parameters/time 2>/dev/null; then
	say() { echo "<3>$*" >/dev/kmsg; }
else
	say() { echo "$*" >/dev/ttyS0; }
fi

dirty_kib=${rmig_dirty_kib:-4096}
nap=${rmig_sleep:-0.05}
case $dirty_kib in '' | *[!0-9]*) dirty_kib=4096 ;; esac
disk=${rmig_disk:-0}
disk_kib=${rmig_disk_kib:-0}
case $disk_kib in '' | *[!0-9]*) disk_kib=0 ;; esac
[ "$disk_kib" -le 4096 ] || disk_kib=4096

# A pool of random pages to copy from (8 MiB), and a 32 MiB target file
# whose pages get new content every time they are written: each iteration
# copies dirty_kib from a moving offset of the pool to the next slot of the
# target.
pool_pages=2048
dd if=/dev/urandom of=/dev/shm/pool bs=4k count=$pool_pages 2>/dev/null
pages=$((dirty_kib / 4))
[ "$pages" -le $((pool_pages / 2)) ] || pages=$((pool_pages / 2))
slots=1
[ "$pages" -gt 0 ] && slots=$((8192 / pages))

# --- the disk ------------------------------------------------------------------
# disk_read SECTOR: the record there, NULs dropped ("" if none); 1 on an
# I/O error.
disk_read() {
	dd if=$dev of=/dev/shm/rec bs=512 count=1 skip="$1" iflag=direct 2>/dev/null || return 1
	tr -d '\000' </dev/shm/rec | head -n1
}

# disk_expect SECTOR N: the record at SECTOR holds N (0: holds nothing);
# else prints the BAD line and returns 1.
disk_expect() {
	want=""
	[ "$2" = 0 ] || want=$(printf 'rmig-disk-counter %012d' "$2")
	if ! rec=$(disk_read "$1"); then
		say "rmig-disk-BAD expected $2 got read-error at sector $1"
		return 1
	fi
	[ "$rec" = "$want" ] && return 0
	case $rec in
	rmig-disk-counter\ *) got=$(echo "${rec#rmig-disk-counter }" | sed 's/^0*\([0-9]\)/\1/') ;;
	'') got=none ;;
	*) got="'$(echo "$rec" | head -c 40 | tr -c 'a-zA-Z0-9 _.:-' '?')'" ;;
	esac
	say "rmig-disk-BAD expected $2 got $got at sector $1"
	return 1
}

# disk_check N (before count N+1 is written): the newest record, N's, and
# the oldest one, which N+1 is about to replace (N+1-ring's, none yet while
# N < ring). The oldest one was written at least ring-1 counts ago: on a
# destination, by the source.
disk_check() {
	old=$(($1 + 1 - ring))
	[ "$old" -gt 0 ] || old=0
	disk_expect $(($1 % ring)) "$1" && disk_expect $((($1 + 1) % ring)) "$old" &&
		say "rmig-disk-ok $1"
}

# disk_write N: N's record into its slot of the ring, then the next slice
# of the moving region.
disk_write() {
	printf 'rmig-disk-counter %012d\n' "$1" |
		dd of=$dev bs=512 count=1 seek=$(($1 % ring)) conv=sync,notrunc oflag=direct 2>/dev/null ||
		say "rmig-disk-BAD write of $1 failed"
	[ "$mv_pages" -gt 0 ] || return 0
	[ $((mv_at + mv_pages)) -le "$mv_blocks" ] || mv_at=0
	dd if=/dev/shm/pool of=$dev bs=4k count="$mv_pages" \
		skip=$((($1 * 53) % (pool_pages - mv_pages))) seek=$((mv_first + mv_at)) \
		conv=notrunc oflag=direct 2>/dev/null ||
		say "rmig-disk-BAD write of the moving region at block $((mv_first + mv_at)) failed"
	mv_at=$((mv_at + mv_pages))
}

# virtio_blk is a module in Debian's kernel (setup.sh puts it and virtio_pci
# in the initramfs); only loaded when asked for, so that the plain guest is
# unchanged.
dev=/dev/vda
ring=16
disk_info=""
if [ "$disk" = 1 ]; then
	modprobe virtio_pci 2>/dev/null
	modprobe virtio_blk 2>/dev/null
	i=0
	while [ ! -b $dev ] && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if [ -b $dev ] && dd if=/dev/zero of=$dev bs=512 count=$ring conv=notrunc oflag=direct 2>/dev/null; then
		sectors=$(cat /sys/block/vda/size)
		# The moving region, in 4 KiB blocks: from 1 MiB to the end.
		mv_first=256
		mv_blocks=$((sectors / 8 - mv_first))
		mv_pages=$((disk_kib / 4))
		[ "$mv_pages" -le "$mv_blocks" ] || mv_pages=0
		mv_at=0
		disk_info=" disk=$dev sectors=$sectors disk_kib=$((mv_pages * 4))"
	else
		say "rmig-disk-BAD no writable $dev"
		disk=0
	fi
fi

say "rmig-guest-ready dirty_kib=$dirty_kib sleep=$nap$disk_info"
n=0
while :; do
	n=$((n + 1))
	say "rmig-counter $n"
	if [ "$pages" -gt 0 ]; then
		dd if=/dev/shm/pool of=/dev/shm/dirty bs=4k count=$pages \
			skip=$(((n * 37) % (pool_pages - pages))) seek=$(((n % slots) * pages)) \
			conv=notrunc 2>/dev/null
	fi
	if [ "$disk" = 1 ]; then
		[ "$n" -gt 1 ] && disk_check $((n - 1))
		disk_write "$n"
	fi
	sleep "$nap"
done
