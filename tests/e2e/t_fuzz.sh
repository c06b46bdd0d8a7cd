#!/bin/bash
# libFuzzer smoke test: build the fuzz targets (wire decoder, destination
# handshake) with clang, replay the checked-in corpus and fuzz each target
# for FUZZ_SMOKE_SECONDS (20). Any crash, sanitizer report, leak, hang
# (> 10 s on one input) or runaway memory fails. See tests/fuzz/README.md.
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.." || fail "no repository"
BUILD=${BUILD:-build}
FUZZ_CC=${FUZZ_CC:-clang}

command -v "$FUZZ_CC" >/dev/null 2>&1 ||
	skip "no $FUZZ_CC (Debian: apt-get install clang libclang-rt-dev)"
# clang without its runtime libraries cannot link a fuzzer: say so, not FAIL.
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ (void)d; (void)n; return 0; }\n' >"$T/probe.c"
"$FUZZ_CC" -fsanitize=fuzzer,address,undefined -o "$T/probe" "$T/probe.c" >"$T/probe.err" 2>&1 ||
	skip "$FUZZ_CC cannot link libFuzzer targets (libclang_rt.fuzzer missing: apt-get install libclang-rt-dev)"
rm -f "$T/probe.err"

# A make of our own: not the jobserver of a `make check` that called us.
export MAKEFLAGS=
make -s --no-print-directory -j"$(nproc)" BUILD="$BUILD" FUZZ_CC="$FUZZ_CC" fuzz-build \
	>"$T/build.out" 2>&1 || fail "building the fuzzers"
make -s --no-print-directory -j2 -Otarget BUILD="$BUILD" FUZZ_CC="$FUZZ_CC" \
	FUZZ_SMOKE_SECONDS="${FUZZ_SMOKE_SECONDS:-20}" fuzz-smoke >"$T/smoke.out" 2>&1 ||
	fail "fuzzing found a problem (inputs in $BUILD/fuzz/artifacts/)"

runs=$(awk '/stat::number_of_executed_units:/ { n += $2 } END { print n + 0 }' "$T/smoke.out")
pass "$runs inputs, no crash or leak"
