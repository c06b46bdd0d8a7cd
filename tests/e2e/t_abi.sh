#!/bin/bash
# The library's ABI: every exported function carries a symbol version
# (RMIG_0.1, RMIG_0.2, ...: librmig.map), the map names exactly the
# headers' RMIG_API functions, and no symbol recorded in
# tests/abi/librmig.symbols (the ABI as released) went away or changed its
# version: a lighter equivalent of abidiff against the last release, which
# this tree has no tag of. A new function goes into the newest node and into
# that file. rmig_version() and the RMIG_VERSION_* macros agree.
. "$(dirname "$0")/lib.sh"
command -v objdump >/dev/null || fail "objdump is missing (binutils)"
LIB=$(dirname "$RMIG")/librmig.so.0
[ -f "$LIB" ] || fail "$LIB is missing"

objdump -T "$LIB" | awk '$NF ~ /^rmig_/ { print $(NF-1), $NF }' | sort >"$T/now"
[ -s "$T/now" ] || fail "no rmig_ symbols in $LIB"
unversioned=$(awk '$1 !~ /^RMIG_[0-9]+\.[0-9]+$/' "$T/now")
[ -z "$unversioned" ] || fail "symbols without an RMIG_ version: $(tr '\n' ' ' <<<"$unversioned")"

for h in include/rmig*.h; do
	sed -n 's/^RMIG_API .*\b\(rmig_[a-z_]*\)(.*/\1/p' "$h"
done | sort >"$T/api"
awk '{ print $2 }' "$T/now" | sort >"$T/exported"
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
cc -std=gnu11 -Wall -Werror -Iinclude -o "$T/v" "$T/v.c" -L"$(dirname "$LIB")" -lrmig \
	-Wl,-rpath,"$(realpath "$(dirname "$LIB")")" 2>"$T/cc.err" || fail "cc: $(head -3 "$T/cc.err")"
out=$("$T/v") || fail "rmig_version and the macros disagree: $out"
objdump -T "$T/v" | grep -q '(RMIG_0.2) *rmig_version' || fail "the program does not bind rmig_version@RMIG_0.2"
expect_eq "rmig --version" "$("$RMIG" --version)" "rmig ${out%% *}"

pass "$(wc -l <"$T/now") functions versioned (newest node $newest), as the headers and the released list say; version ${out%% *}"
