#!/bin/sh
# /init of the QEMU test guest (tests/qemu/setup.sh builds it into the
# initramfs; busybox only). Forever: count, print "rmig-counter N" on the
# serial console, dirty guest memory, sleep. A migration that loses or
# repeats guest state shows as a gap or a repeat in the counter.
#
# Tunables, from the kernel command line (guest.sh's GUEST_APPEND):
#   rmig_dirty_kib=N  KiB copied into tmpfs per iteration (4096, at most 4096)
#   rmig_sleep=S      seconds slept per iteration (0.05)
# The kernel passes unknown NAME=VALUE parameters to /init as environment.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm
mount -t tmpfs -o size=96m shm /dev/shm

dirty_kib=${rmig_dirty_kib:-4096}
nap=${rmig_sleep:-0.05}
case $dirty_kib in '' | *[!0-9]*) dirty_kib=4096 ;; esac

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

echo "rmig-guest-ready dirty_kib=$dirty_kib sleep=$nap" >/dev/ttyS0
n=0
while :; do
	n=$((n + 1))
	echo "rmig-counter $n" >/dev/ttyS0
	if [ "$pages" -gt 0 ]; then
		dd if=/dev/shm/pool of=/dev/shm/dirty bs=4k count=$pages \
			skip=$(((n * 37) % (pool_pages - pages))) seek=$(((n % slots) * pages)) \
			conv=notrunc 2>/dev/null
	fi
	sleep "$nap"
done
