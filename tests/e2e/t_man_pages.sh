#!/bin/bash
# The man pages render without a single groff warning, and they stay complete:
# rmig.1 names every command and long option of tools/rmig.c, librmig.3 every
# function that the public headers include/rmig*.h export, and names each header.
. "$(dirname "$0")/lib.sh"
command -v groff >/dev/null || skip "groff is not installed"
for page in man/rmig.1 man/librmig.3; do
	groff -man -ww -z "$page" >"$T/groff.err" 2>&1 || fail "groff failed on $page"
	[ ! -s "$T/groff.err" ] || fail "groff warns about $page: $(head -n 3 "$T/groff.err")"
	if command -v man >/dev/null; then
		man --warnings -l "$page" 2>"$T/man.err" >/dev/null || fail "man failed on $page"
		[ ! -s "$T/man.err" ] || fail "man warns about $page: $(head -n 3 "$T/man.err")"
	fi
	groff -man -Tascii -P-cbou "$page" >"$T/$(basename "$page").txt" 2>/dev/null
done

options=$(sed -n 's/^\t{ "\([a-z-]*\)", [a-z_]*argument,.*/\1/p' tools/rmig.c)
[ -n "$options" ] || fail "found no long options in tools/rmig.c"
for opt in $options; do
	grep -q -- "--$opt\b" "$T/rmig.1.txt" || fail "rmig.1 does not document --$opt"
done
for cmd in send recv bench info help --version; do
	grep -q "^       $cmd\b" "$T/rmig.1.txt" || fail "rmig.1 has no entry for $cmd"
done
functions=""
for h in include/rmig*.h; do
	found=$(sed -n 's/^RMIG_API .*\b\(rmig_[a-z_]*\)(.*/\1/p' "$h")
	[ -n "$found" ] || fail "found no RMIG_API functions in $h"
	grep -q "^\.B #include <$(basename "$h")>" man/librmig.3 || fail "librmig.3 does not name $h"
	functions="$functions $found"
done
for fn in $functions; do
	grep -q "^       $fn()" "$T/librmig.3.txt" || fail "librmig.3 has no entry for $fn()"
done
pass "$(wc -w <<<"$options") options, $(wc -w <<<"$functions") functions documented"
