#!/bin/bash
# The library's ABI: every exported function carries a symbol version
# (RMIG_0.1, RMIG_0.2, ...: librmig.map), the map names exactly the
# headers' RMIG_API functions, and no symbol recorded in
# tests/abi/librmig.symbols went away or changed its version. abidiff
# (abigail-tools) compares this build with the last release's ABI
# (tests/abi/librmig-0.2.0.abi): nothing removed or changed beyond what
# tests/abi/librmig.abignore allows (sized structs growing at the end). A
# program built against the 0.2.0 headers, whose struct rmig_config had no
# size, still migrates with this library (the RMIG_0.1 versions); a sized
# config of another size is taken or refused as rmig.h says, and refusals
# say why through rmig_last_error(). rmig_version() and the RMIG_VERSION_*
# macros agree.
. "$(dirname "$0")/lib.sh"
command -v objdump >/dev/null || fail "objdump is missing (binutils)"
LIB=$(dirname "$RMIG")/librmig.so.0
[ -f "$LIB" ] || fail "$LIB is missing"
# The SAN build's library needs the ASan runtime first in the program.
san_cflags=""
case $(realpath "$(dirname "$LIB")") in */san) san_cflags="-fsanitize=address,undefined" ;; esac

# "(RMIG_0.1)": a version kept for older programs, not the default one.
objdump -T "$LIB" | awk '$NF ~ /^rmig_/ { v = $(NF-1); gsub(/[()]/, "", v); print v, $NF }' |
	sort >"$T/now"
[ -s "$T/now" ] || fail "no rmig_ symbols in $LIB"
unversioned=$(awk '$1 !~ /^RMIG_[0-9]+\.[0-9]+$/' "$T/now")
[ -z "$unversioned" ] || fail "symbols without an RMIG_ version: $(tr '\n' ' ' <<<"$unversioned")"

for h in include/rmig*.h; do
	sed -n 's/^RMIG_API .*\b\(rmig_[a-z_]*\)(.*/\1/p' "$h"
done | sort >"$T/api"
awk '{ print $2 }' "$T/now" | sort -u >"$T/exported"
diff -u "$T/api" "$T/exported" >"$T/api.diff" ||
	fail "the exported functions differ from the headers' RMIG_API ones (librmig.map): $(grep '^[-+]rmig' "$T/api.diff" | tr '\n' ' ')"

gone=$(comm -23 tests/abi/librmig.symbols "$T/now")
[ -z "$gone" ] || fail "released symbols gone or moved to another version: $(tr '\n' ' ' <<<"$gone")"
new=$(comm -13 tests/abi/librmig.symbols "$T/now")
[ -z "$new" ] || fail "new symbols not recorded in tests/abi/librmig.symbols: $(tr '\n' ' ' <<<"$new")"
newest=$(awk '{ print $1 }' "$T/now" | sort -t. -k2 -n | tail -1)
# The map's nodes in order, each naming the one before (a chain, as ld
# wants), the newest last: a function added to an older node would change
# what programs built against it bind to.
nodes=$(grep -o '^RMIG_[0-9.]*' librmig.map | xargs)
expect_eq "the newest node of librmig.map" "${nodes##* }" "$newest"
prev=""
for n in $nodes; do
	[ -z "$prev" ] || grep -q "^} $prev;" <(sed -n "/^$n {/,/^}/p" librmig.map) ||
		fail "librmig.map: $n does not follow $prev"
	prev=$n
done

# RMIG_CONFIG_KNOWN_END (engine/engine.h) names struct rmig_config's last
# member: its _Static_assert cannot see a member added into the tail
# padding (a 4-byte one after timeout_ms), which the library would then
# refuse as a newer header's (-E2BIG) and never read.
last=$(cc -fpreprocessed -dD -E -P include/rmig.h | sed -n '/^struct rmig_config {/,/^};/p' |
	grep -oE '[A-Za-z_][A-Za-z_0-9]*(\[[^]]*\])?;' | tail -1 | sed 's/\[.*//; s/;//')
known=$(sed -n 's/^#define RMIG_CONFIG_KNOWN_END (offsetof(struct rmig_config, \([a-z_0-9]*\)).*/\1/p' \
	engine/engine.h)
[ -n "$last" ] && [ -n "$known" ] ||
	fail "cannot read struct rmig_config's last member ('$last') or RMIG_CONFIG_KNOWN_END's ('$known')"
expect_eq "RMIG_CONFIG_KNOWN_END's member (engine/engine.h)" "$known" "$last"

# api/abi_0_2.c's struct is 0.2's, member for member: abidiff does not
# see it (it compares the re-versioned rmig_config_init, rmig_ctx_create
# and rmig_listener_create under neither version), and its static
# assertion checks only the size and the last member's end.
config_struct() {
	cc -fpreprocessed -dD -E -P "$1" | sed -n '/^struct rmig_config {/,/^};/p' | tr -s ' \t' ' ' |
		sed 's/^ //'
}
config_struct tests/abi/include-0.2.0/rmig.h >"$T/config-0.2"
config_struct api/abi_0_2.c >"$T/config-compat"
[ -s "$T/config-0.2" ] || fail "no struct rmig_config in tests/abi/include-0.2.0/rmig.h"
diff -u "$T/config-0.2" "$T/config-compat" >"$T/config.diff" ||
	fail "api/abi_0_2.c's struct rmig_config is not 0.2's: $(grep '^[-+][^-+]' "$T/config.diff" | tr '\n' ' ')"

# abidiff against the last release: exit 4 (a change) is fine when all it
# lists is added functions; 8 (incompatible), 1 or 2 (errors) never are.
command -v abidiff >/dev/null || fail "abidiff is missing (abigail-tools; scripts/deps.sh installs it)"
BASE=$(ls tests/abi/librmig-*.abi | sort -V | tail -1)
rc=0
abidiff --suppressions tests/abi/librmig.abignore "$BASE" "$LIB" >"$T/abidiff" 2>&1 || rc=$?
[ $rc = 0 ] || [ $rc = 4 ] || fail "abidiff $BASE $LIB: exit $rc: $(head -30 "$T/abidiff")"
grep -q '^Functions changes summary: 0 Removed, 0 Changed' "$T/abidiff" &&
	grep -q '^Variables changes summary: 0 Removed, 0 Changed' "$T/abidiff" ||
	fail "abidiff finds ABI changes against $BASE: $(head -40 "$T/abidiff")"

# A program built against 0.2.0: linked against a stand-in library with
# 0.2.0's symbols and versions (from the release's ABI file), as if built
# back then, then run against this one.
mkdir -p "$T/stub"
grep -o "<elf-symbol name='rmig_[a-z_]*' version='RMIG_[0-9.]*'" "$BASE" |
	sed "s/.*name='\([^']*\)' version='\([^']*\)'/\2 \1/" | sort -u >"$T/released"
[ -s "$T/released" ] || fail "no versioned symbols in $BASE"
awk '{ print "void " $2 "(void) {}" }' "$T/released" >"$T/stub/stub.c"
prev=""
for v in $(awk '{ print $1 }' "$T/released" | sort -u -t. -k2 -n); do
	echo "$v { global: $(awk -v v="$v" '$1 == v { printf "%s; ", $2 }' "$T/released") ${prev:+};"
	echo "} $prev;"
	prev=$v
done | sed 's/^} ;$/};/; s/ ;$//' >"$T/stub/stub.map"
sed -i '1s/$/ local: *;/' "$T/stub/stub.map"
cc -shared -fPIC -o "$T/stub/librmig.so.0" -Wl,-soname,librmig.so.0 \
	-Wl,--version-script="$T/stub/stub.map" "$T/stub/stub.c" 2>"$T/cc.err" ||
	fail "the 0.2.0 stand-in library: $(head -5 "$T/cc.err") (map: $(tr '\n' ' ' <"$T/stub/stub.map"))"
ln -sf librmig.so.0 "$T/stub/librmig.so"
# shellcheck disable=SC2086 # the flags are words
cc -std=gnu11 -Wall -Werror $san_cflags -Itests/abi/include-0.2.0 -o "$T/p02" tests/abi/program_0_2.c \
	-L"$T/stub" -lrmig -pthread 2>"$T/cc.err" || fail "cc program_0_2: $(head -5 "$T/cc.err")"
objdump -T "$T/p02" | grep -q '(RMIG_0.1) *rmig_ctx_create$' ||
	fail "the 0.2.0 program does not bind rmig_ctx_create@RMIG_0.1: $(objdump -T "$T/p02" | grep rmig_ctx)"
out=$(LD_LIBRARY_PATH=$(dirname "$LIB") timeout 60 "$T/p02" 2>&1) ||
	fail "a program built against 0.2.0, run against this library: $out"
echo "0.2.0 program: $out"

# Sized configs of other sizes, and the thread's messages.
# shellcheck disable=SC2086 # the flags are words
cc -std=gnu11 -Wall -Werror $san_cflags -Iinclude -o "$T/sized" tests/abi/sized_config.c \
	-L"$(dirname "$LIB")" -lrmig -Wl,-rpath,"$(realpath "$(dirname "$LIB")")" 2>"$T/cc.err" ||
	fail "cc sized_config: $(head -5 "$T/cc.err")"
objdump -T "$T/sized" | grep -q '(RMIG_0.3) *rmig_config_init$' ||
	fail "a program built now does not bind rmig_config_init@RMIG_0.3"
out=$(timeout 60 "$T/sized" 2>&1) || fail "sized struct rmig_config (exit $?): $out"
echo "sized: $out"

# The version, three ways.
cat >"$T/v.c" <<'CEOF'
#include <stdio.h>
#include <string.h>
#include <rmig.h>
int main(void)
{
	int a = -1, b = -1, c = -1;
	const char *s = rmig_version(&a, &b, &c);
	char want[32];

	snprintf(want, sizeof(want), "%d.%d.%d", RMIG_VERSION_MAJOR, RMIG_VERSION_MINOR,
		 RMIG_VERSION_PATCH);
	printf("%s %d.%d.%d %s %d\n", s, a, b, c, want, RMIG_VERSION);
	return strcmp(s, RMIG_VERSION_STRING) || strcmp(want, s) ||
	       RMIG_VERSION != RMIG_VERSION_OF(a, b, c) || rmig_version(NULL, NULL, NULL) != s;
}
CEOF
# shellcheck disable=SC2086 # the flags are words
cc -std=gnu11 -Wall -Werror $san_cflags -Iinclude -o "$T/v" "$T/v.c" -L"$(dirname "$LIB")" -lrmig \
	-Wl,-rpath,"$(realpath "$(dirname "$LIB")")" 2>"$T/cc.err" || fail "cc: $(head -3 "$T/cc.err")"
out=$("$T/v") || fail "rmig_version and the macros disagree: $out"
objdump -T "$T/v" | grep -q '(RMIG_0.2) *rmig_version' || fail "the program does not bind rmig_version@RMIG_0.2"
expect_eq "rmig --version" "$("$RMIG" --version)" "rmig ${out%% *}"

pass "$(wc -l <"$T/now") functions versioned (newest node $newest), as the headers and the released list say; version ${out%% *}"
