#!/bin/bash
# The shared library's optional backends (issue 17): librmig.so.0 needs
# neither libjansson nor the xen libraries; opening qemu (xen) loads
# librmig/backend-qemu.so beside the library, whose own errors then come
# back (and rmig_backend_find finds it); without the module dir, one line
# says it is not installed (-ENOENT); names that are not [a-z0-9_] never
# reach dlopen; a broken module (not ELF, no entry point, the wrong
# backend) is refused with a clear line, once per process.
. "$(dirname "$0")/lib.sh"
command -v readelf >/dev/null || fail "readelf is missing (binutils)"
BUILD_DIR=$(realpath "$(dirname "$RMIG")")
LIB=$BUILD_DIR/librmig.so.0
MODS=$BUILD_DIR/librmig
[ -f "$LIB" ] || fail "$LIB is missing"
[ -f "$MODS/backend-qemu.so" ] || fail "$MODS/backend-qemu.so is missing (make all builds it)"
san_cflags=""
case $BUILD_DIR in */san) san_cflags="-fsanitize=address,undefined" ;; esac
unset RMIG_MODULE_DIR

# (1) What the library itself needs.
needed=$(readelf -d "$LIB" | awk '/NEEDED/ { print $NF }' | tr -d '[]' | xargs)
grep -Eq 'jansson|xen' <<<"$needed" && fail "librmig.so.0 needs: $needed"
readelf -d "$MODS/backend-qemu.so" | grep -q 'NEEDED.*libjansson' ||
	fail "backend-qemu.so does not need libjansson"
exports=$(nm -D --defined-only "$MODS/backend-qemu.so" | awk '{ print $3 }' | xargs)
expect_eq "backend-qemu.so's exports" "$exports" rmig_backend_module

# cc_open OUT LIBDIR: tests/tools/backend_open.c against LIBDIR's librmig.so.0
cc_open() {
	# shellcheck disable=SC2086 # the flags are words
	cc -std=gnu11 -Wall -Wextra -Werror $san_cflags -Iinclude -o "$1" tests/tools/backend_open.c \
		-L"$2" -lrmig -Wl,-rpath,"$2" 2>"$T/cc.err" || fail "cc: $(head -n 3 "$T/cc.err")"
}
# line SPEC: the program's line for SPEC in $T/open.out, without the spec
line() {
	awk -v s="$1" '$1 == s { sub(/^[^ ]* /, ""); print }' "$T/open.out"
}
cc_open "$T/open" "$BUILD_DIR"

# (2) The qemu backend's own errors, from the module: its QMP connect, its
# private copy of args.c; found afterwards; the name list shows the modules.
"$T/open" nosuch "qemu:qmp=$T/nonexistent.sock" qemu:bogus=1 '?qemu' >"$T/open.out" 2>"$T/open.err" ||
	fail "backend_open exited $?"
line nosuch | grep -q "^rc=-2 err=unknown backend 'nosuch' (known here: sim, .*qemu" ||
	fail "nosuch: $(line nosuch)"
expect_eq "qemu:qmp=... (the module's own error)" "$(line "qemu:qmp=$T/nonexistent.sock")" \
	"rc=-2 err=qemu: cannot connect to QMP at $T/nonexistent.sock: No such file or directory (start QEMU with -qmp unix:$T/nonexistent.sock,server=on,wait=off)"
line qemu:bogus=1 | grep -q "^rc=-22 err=qemu: unknown option 'bogus'" ||
	fail "qemu:bogus=1: $(line qemu:bogus=1)"
expect_eq "rmig_backend_find(qemu)" "$(line '?qemu')" found
if [ -f "$MODS/backend-xen.so" ] && [ ! -e /dev/xen/privcmd ]; then
	"$T/open" xen:domid=1 >"$T/open.out" 2>&1
	line xen:domid=1 | grep -q "err=xen: cannot open the hypervisor interface" ||
		fail "xen:domid=1: $(line xen:domid=1)"
fi
# rmig_backend_find loads too, without an open first; qemu's name is
# taken (as in librmig.a) even before anything loaded its module.
"$T/open" '?qemu' '?nosuch' >"$T/open.out" 2>&1
expect_eq "rmig_backend_find(qemu), first" "$(line '?qemu')" found
expect_eq "rmig_backend_find(nosuch)" "$(line '?nosuch')" missing
"$T/open" +qemu +mine '?mine' >"$T/open.out" 2>&1
expect_eq "rmig_backend_register(qemu)" "$(line +qemu)" "rc=-17"
expect_eq "rmig_backend_register(mine)" "$(line +mine)" "rc=0"
expect_eq "rmig_backend_find(mine)" "$(line '?mine')" found

# The library found by a relative path (LD_LIBRARY_PATH=build), the
# process then in another directory that holds a build/librmig of its own:
# the module comes from beside the library as loaded, never from the
# current directory.
mkdir -p "$T/elsewhere/$(basename "$BUILD_DIR")/librmig"
printf '#include <stdio.h>\n__attribute__((constructor)) static void c(void) { fprintf(stderr, "DECOY\\n"); }\n' \
	>"$T/decoy.c"
cc -shared -fPIC -o "$T/elsewhere/$(basename "$BUILD_DIR")/librmig/backend-qemu.so" "$T/decoy.c" ||
	fail "cc decoy"
(cd "$(dirname "$BUILD_DIR")" && LD_LIBRARY_PATH=$(basename "$BUILD_DIR") \
	"$T/open" "@$T/elsewhere" "qemu:qmp=$T/nonexistent.sock") >"$T/open.out" 2>"$T/open.err"
grep -q DECOY "$T/open.err" && fail "a module was loaded from the current directory"
line "qemu:qmp=$T/nonexistent.sock" | grep -q "^rc=-2 err=qemu: cannot connect to QMP" ||
	fail "qemu after a chdir, library by a relative path: $(line "qemu:qmp=$T/nonexistent.sock")"

# (3) The library without its module directory beside it.
mkdir "$T/lonely"
cp "$LIB" "$T/lonely/"
ln -s librmig.so.0 "$T/lonely/librmig.so"
cc_open "$T/open_lonely" "$T/lonely"
"$T/open_lonely" "qemu:qmp=$T/nonexistent.sock" '?qemu' >"$T/open.out" 2>&1
expect_eq "qemu without its module" "$(line "qemu:qmp=$T/nonexistent.sock")" \
	"rc=-2 err=backend qemu: not installed (module $T/lonely/librmig/backend-qemu.so missing)"
expect_eq "rmig_backend_find(qemu) without its module" "$(line '?qemu')" missing
"$T/open_lonely" +qemu >"$T/open.out" 2>&1
expect_eq "rmig_backend_register(qemu) without its module" "$(line +qemu)" "rc=0"

# Test modules: one whose loading prints LOADED (constructor) and that
# exports no entry point; one providing another backend's name.
cat >"$T/noentry.c" <<'CEOF'
#include <stdio.h>
__attribute__((constructor)) static void loaded(void) { fprintf(stderr, "LOADED\n"); }
CEOF
cat >"$T/wrong.c" <<'CEOF'
#include <rmig_backend.h>
static int create(struct rmig_backend *be, const char *a, enum rmig_role r) { (void)be; (void)a; (void)r; return 0; }
static void destroy(struct rmig_backend *be) { (void)be; }
static int regions(struct rmig_backend *be, const struct rmig_region **r, size_t *n) { (void)be; (void)r; (void)n; return 0; }
static const struct rmig_backend_ops ops = { .size = sizeof(ops), .name = "other", .create = create,
	.destroy = destroy, .get_regions = regions };
__attribute__((visibility("default"))) const struct rmig_backend_ops *rmig_backend_module(void) { return &ops; }
CEOF
mkdir -p "$T/mods/backend-.." "$T/mods/backend-a"
for m in noentry wrong; do
	# shellcheck disable=SC2086
	cc -shared -fPIC $san_cflags -Iinclude -o "$T/mods/backend-$m.so" "$T/$m.c" 2>"$T/cc.err" ||
		fail "cc $m: $(head -n 3 "$T/cc.err")"
done
cp "$T/mods/backend-noentry.so" "$T/mods/backend-../x.so"
cp "$T/mods/backend-noentry.so" "$T/mods/backend-a/b.so"
cp "$T/mods/backend-noentry.so" "$T/mods/backend-Up.so"
echo "not an ELF file" >"$T/mods/backend-junk.so"
export RMIG_MODULE_DIR=$T/mods

# (4) Names that would leave the directory, or are not [a-z0-9_].
"$T/open" ../x:a=1 a/b Up '?../x' >"$T/open.out" 2>"$T/open.err"
grep -q LOADED "$T/open.err" && fail "a module was loaded for a bad name: $(cat "$T/open.out")"
for s in ../x:a=1 a/b Up; do
	line "$s" | grep -q "^rc=-2 err=unknown backend '${s%%:*}' (known here: sim, " ||
		fail "$s: $(line "$s")"
done
expect_eq "rmig_backend_find(../x)" "$(line '?../x')" missing

# (5) Broken modules: a clear line each, the same the second time without
# loading again, no crash.
"$T/open" junk noentry noentry:x=1 wrong >"$T/open.out" 2>"$T/open.err" ||
	fail "backend_open exited $? with broken modules: $(cat "$T/open.err")"
line junk | grep -q "^rc=-80 err=backend junk: cannot load module: $T/mods/backend-junk.so: " ||
	fail "junk: $(line junk)"
expect_eq "a module without its entry point" "$(line noentry)" \
	"rc=-80 err=backend noentry: $T/mods/backend-noentry.so is not an rmig backend module (no rmig_backend_module)"
expect_eq "the same module again" "$(line noentry:x=1)" "$(line noentry)"
expect_eq "times noentry was loaded" "$(grep -c LOADED "$T/open.err")" 1
expect_eq "a module of another backend" "$(line wrong)" \
	"rc=-80 err=backend wrong: module $T/mods/backend-wrong.so does not provide backend 'wrong'"
"$T/open" nosuch >"$T/open.out" 2>&1
line nosuch | grep -q "known here: sim, .*junk, noentry, wrong)$" ||
	fail "the list does not name the modules present: $(line nosuch)"
pass "no jansson/xen in librmig.so.0; qemu loaded from $(basename "$MODS")/; missing, bad names and broken modules refused"
