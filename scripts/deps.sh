#!/bin/sh
# Install the Debian packages rmig needs to build and test, if missing.
# As root: apt-get install. Otherwise: print the exact command and fail.
set -e
PKGS="build-essential pkg-config libevent-dev libcmocka-dev libxxhash-dev libssl-dev libjansson-dev libnbd-dev qemu-utils clang libclang-rt-dev libnuma-dev libibverbs-dev librdmacm-dev libxen-dev jq systemd tmux abigail-tools libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu socat iproute2"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "rmig: missing packages:$missing" >&2
	echo "rmig: run: sudo apt-get install -y$missing" >&2
	exit 1
fi
echo "rmig: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || true
apt-get install -y -qq $missing >/dev/null
