#!/bin/bash
# `make install DESTDIR=... PREFIX=/usr` as a non-root user puts every file in
# place; pkg-config, pointed into the staged tree, finds rmig; the embedding
# examples build against the installed headers and library alone (pkg-config
# --cflags --libs), each public header compiles alone, and embed_counter
# migrates a 16 MiB guest with them; the backend modules are in
# LIBDIR/librmig and the installed library loads qemu's from there;
# the systemd units of rmig recv and of rmig tunnel recv are installed with
# their paths filled in and systemd-analyze verify takes them; uninstall
# removes everything.
. "$(dirname "$0")/lib.sh"
command -v pkg-config >/dev/null || skip "pkg-config is not installed (scripts/deps.sh)"
build=$(realpath --relative-to="$PWD" "$(dirname "$RMIG")")
san=""
san_cflags=""
case $build in */san) san="SAN=1" san_cflags="-fsanitize=address,undefined" ;; esac
dest="$T/destdir"
version=$(sed -n 's/^#define RMIG_VERSION_STRING "\(.*\)"$/\1/p' include/rmig.h)
# PREFIX=/usr: Debian's multiarch library directory, as the Makefile picks it.
ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || cc -print-multiarch 2>/dev/null)
lib=lib${ma:+/$ma}

# A make of our own: not the jobserver of a `make check` we may run under.
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory -s install \
	DESTDIR="$dest" PREFIX=/usr BUILD="$build" $san >"$T/install.out" 2>&1 ||
	fail "make install exited $?: $(tail -n 5 "$T/install.out")"

for f in bin/rmig $lib/librmig.so.0 $lib/librmig.a include/rmig.h include/rmig_backend.h \
	include/rmig_uffd.h include/rmig_kvm.h include/rmig_tunnel.h $lib/pkgconfig/rmig.pc \
	share/man/man1/rmig.1 share/man/man3/librmig.3 share/bash-completion/completions/rmig; do
	[ -f "$dest/usr/$f" ] || fail "usr/$f was not installed"
done
[ -x "$dest/usr/bin/rmig" ] || fail "usr/bin/rmig is not executable"
# The shared library's optional backends, one module each (xen where built).
modules=$(cd "$build/librmig" && echo backend-*.so)
[ -n "$modules" ] || fail "$build/librmig has no backend modules"
expect_eq "usr/$lib/librmig/" "$(cd "$dest/usr/$lib/librmig" && echo *)" "$modules"
expect_eq "usr/$lib/librmig.so" "$(readlink "$dest/usr/$lib/librmig.so")" librmig.so.0
expect_eq "SONAME" "$(objdump -p "$dest/usr/$lib/librmig.so.0" | awk '$1 == "SONAME" { print $2 }')" \
	librmig.so.0
# The version nodes of librmig.map (RMIG_0.1, ...) themselves are exported too.
others=$(nm -D --defined-only "$dest/usr/$lib/librmig.so.0" |
	awk '$3 !~ /^rmig_/ && $3 !~ /^RMIG_[0-9.]+$/ { print $3 }')
[ -z "$others" ] || fail "librmig.so.0 exports more than rmig_*: $(tr '\n' ' ' <<<"$others")"
nm "$dest/usr/$lib/librmig.a" | grep -q ' T rmig_send$' || fail "librmig.a lacks rmig_send"
expect_eq "installed rmig --version" "$("$dest/usr/bin/rmig" --version)" "rmig $version"

export PKG_CONFIG_SYSROOT_DIR="$dest" PKG_CONFIG_PATH="$dest/usr/$lib/pkgconfig"
expect_eq "pkg-config --modversion rmig" "$(pkg-config --modversion rmig 2>&1)" "$version"
cflags=$(pkg-config --cflags rmig | xargs) || fail "pkg-config --cflags rmig failed"
libs=$(pkg-config --libs rmig | xargs) || fail "pkg-config --libs rmig failed"
expect_eq "pkg-config --cflags" "$cflags" "-I$dest/usr/include"
expect_eq "pkg-config --libs" "$libs" "-L$dest/usr/$lib -lrmig"
static_libs=$(pkg-config --static --libs rmig)
for l in -pthread -lxxhash -lnuma -libverbs -lcrypto -ljansson; do
	grep -q -- "$l\b" <<<"$static_libs" ||
		fail "pkg-config --static --libs rmig lacks $l: $static_libs"
done

# Built as a user would: no -I or -L into this tree, only what pkg-config says.
# shellcheck disable=SC2086 # the flags are words
cc -std=gnu11 -Wall -Wextra -Werror -pthread $san_cflags -o "$T/embed_counter" \
	examples/embed_counter.c $cflags $libs 2>"$T/cc.err" || fail "cc: $(head -n 5 "$T/cc.err")"
# Each public header compiles on its own (it includes what it needs), as C and C++.
for h in rmig.h rmig_backend.h rmig_uffd.h rmig_kvm.h rmig_tunnel.h; do
	# shellcheck disable=SC2086 # the flags are words
	echo "#include <$h>" | cc -std=gnu11 -Wall -Wextra -Werror -x c -fsyntax-only $cflags - \
		2>"$T/cc.err" || fail "$h does not compile alone: $(head -n 3 "$T/cc.err")"
	if command -v c++ >/dev/null; then
		# shellcheck disable=SC2086
		echo "#include <$h>" | c++ -Wall -Wextra -Werror -x c++ -fsyntax-only $cflags - \
			2>"$T/cc.err" || fail "$h does not compile alone as C++: $(head -n 3 "$T/cc.err")"
	fi
done
# The uffd example too (built only: t_uffd_migrate.sh runs it).
# shellcheck disable=SC2086
cc -std=gnu11 -Wall -Wextra -Werror -pthread $san_cflags -o "$T/uffd_guest" \
	examples/uffd_guest.c $cflags $libs 2>"$T/cc.err" || fail "cc uffd_guest: $(head -n 5 "$T/cc.err")"
# The installed library finds its qemu module (its own error comes back).
# shellcheck disable=SC2086
cc -std=gnu11 -Wall -Wextra -Werror $san_cflags -o "$T/backend_open" tests/tools/backend_open.c \
	$cflags $libs 2>"$T/cc.err" || fail "cc backend_open: $(head -n 5 "$T/cc.err")"
export LD_LIBRARY_PATH="$dest/usr/$lib"
got=$("$T/backend_open" "qemu:qmp=$T/nonexistent.sock" 2>&1)
grep -q "rc=-2 err=qemu: cannot connect to QMP at $T/nonexistent.sock" <<<"$got" ||
	fail "the installed library did not load its qemu module: $got"
ldd "$T/embed_counter" | grep -q "librmig.so.0 => $dest/usr/$lib/librmig.so.0" ||
	fail "the example does not load the installed library: $(ldd "$T/embed_counter" | grep rmig)"
embed_counter_run "$T/embed_counter" 16
expect_eq "recv exit code" "$RC" 0
grep -q '^source result=migrated verified=1 .* check=ok$' "$T/send.out" || fail "source did not migrate"
grep -q '^destination result=migrated verified=1 .* check=ok$' "$T/recv.out" ||
	fail "destination did not migrate or its check failed"

# The receiving service: its unit and settings installed with the paths of
# this install, and a unit systemd takes without a word.
unit=$dest/usr/lib/systemd/system/rmig-recv.service
[ -f "$unit" ] || fail "the systemd unit was not installed"
[ -f "$dest/etc/default/rmig-recv" ] || fail "the service's settings were not installed"
grep -q '^ExecStart=/usr/bin/rmig recv --keep-listening ' "$unit" || fail "ExecStart: $(grep ExecStart "$unit")"
grep -q '^EnvironmentFile=-/etc/default/rmig-recv$' "$unit" || fail "EnvironmentFile: $(grep Environment "$unit")"
command -v systemd-analyze >/dev/null || fail "systemd-analyze is missing (scripts/deps.sh installs systemd)"
# (verified against the staged files: the real paths are not there yet)
sed -e "s|/usr/bin/rmig|$dest/usr/bin/rmig|" -e "s|-/etc/default|-$dest/etc/default|" "$unit" \
	>"$T/rmig-recv.service"
systemd-analyze verify --man=no "$T/rmig-recv.service" >"$T/verify.out" 2>&1 ||
	fail "systemd-analyze verify: $(cat "$T/verify.out")"
[ ! -s "$T/verify.out" ] || fail "systemd-analyze verify warns: $(cat "$T/verify.out")"
# The tunnel's receiving side (libvirt's destination host), the same way:
# its settings give the listen address, the key file and the --forward list.
unit=$dest/usr/lib/systemd/system/rmig-tunnel-recv.service
[ -f "$unit" ] || fail "the tunnel's systemd unit was not installed"
[ -f "$dest/etc/default/rmig-tunnel-recv" ] || fail "the tunnel service's settings were not installed"
# shellcheck disable=SC2016 # systemd's variables, literally
grep -q '^ExecStart=/usr/bin/rmig tunnel recv --listen ${RMIG_TUNNEL_LISTEN} --psk-file ${RMIG_TUNNEL_KEY} $RMIG_TUNNEL_FORWARD$' \
	"$unit" || fail "the tunnel's ExecStart: $(grep ExecStart "$unit")"
grep -q '^EnvironmentFile=-/etc/default/rmig-tunnel-recv$' "$unit" ||
	fail "the tunnel's EnvironmentFile: $(grep Environment "$unit")"
! grep -q '@[A-Z]*@' "$unit" || fail "the tunnel's unit has unfilled paths: $(grep '@[A-Z]*@' "$unit")"
for v in RMIG_TUNNEL_LISTEN RMIG_TUNNEL_KEY RMIG_TUNNEL_FORWARD; do
	grep -q "^$v=." "$dest/etc/default/rmig-tunnel-recv" || fail "the tunnel's settings do not set $v"
done
# What the unit runs, with the installed settings (the --forward list split
# into words as systemd splits $RMIG_TUNNEL_FORWARD) and a key of the test's:
# rmig takes it and listens (a loopback port of its choosing here).
(umask 077 && head -c 32 /dev/urandom >"$T/tunnel.key")
(
	set -a
	# shellcheck source=/dev/null
	. "$dest/etc/default/rmig-tunnel-recv"
	set +a
	# shellcheck disable=SC2086 # the --forward list is words
	timeout 3 "$dest/usr/bin/rmig" tunnel recv --listen 127.0.0.1:0 --psk-file "$T/tunnel.key" \
		$RMIG_TUNNEL_FORWARD
) >"$T/tunnel.out" 2>&1
grep -q '^rmig tunnel: listening on 127.0.0.1:[0-9]*$' "$T/tunnel.out" ||
	fail "rmig tunnel recv with the installed settings: $(head -n 3 "$T/tunnel.out")"
sed -e "s|/usr/bin/rmig|$dest/usr/bin/rmig|" -e "s|-/etc/default|-$dest/etc/default|" "$unit" \
	>"$T/rmig-tunnel-recv.service"
systemd-analyze verify --man=no "$T/rmig-tunnel-recv.service" >"$T/verify.out" 2>&1 ||
	fail "systemd-analyze verify rmig-tunnel-recv: $(cat "$T/verify.out")"
[ ! -s "$T/verify.out" ] || fail "systemd-analyze verify rmig-tunnel-recv warns: $(cat "$T/verify.out")"

env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory -s uninstall \
	DESTDIR="$dest" PREFIX=/usr BUILD="$build" $san >"$T/uninstall.out" 2>&1 ||
	fail "make uninstall exited $?"
left=$(find "$dest" ! -type d)
[ -z "$left" ] || fail "make uninstall left: $(tr '\n' ' ' <<<"$left")"
[ ! -e "$dest/usr/$lib/librmig" ] || fail "make uninstall left usr/$lib/librmig/"
pass "installed (5 headers, modules $modules, the units of rmig-recv and rmig-tunnel-recv verified), found by pkg-config, examples built against it, one migrated 16 MiB"
