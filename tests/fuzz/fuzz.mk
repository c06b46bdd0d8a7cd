# tests/fuzz/fuzz.mk - libFuzzer targets for the wire decoder and the
# destination's handshake. Included from the main Makefile, after LIB_SRC,
# CFLAGS, LDLIBS and BUILD are defined; see tests/fuzz/README.md.
#
#   make fuzz-build   build $(BUILD)/fuzz/fuzz_frame, fuzz_handshake (clang)
#   make fuzz-smoke   replay the checked-in corpus, then fuzz each target for
#                     FUZZ_SMOKE_SECONDS (20); what tests/e2e/t_fuzz.sh runs,
#                     two targets at once (-j2)
#   make fuzz         fuzz each target for FUZZ_SECONDS (600), building on
#                     what earlier runs found ($(BUILD)/fuzz/corpus)
#   make fuzz-merge   add what those runs found, minimised, to the corpus
#   make fuzz-seeds   regenerate the seed-* inputs (tests/fuzz/make_seeds.c)
#
# The library is compiled a second time, with clang and coverage
# instrumentation, into $(BUILD)/fuzz/obj: libFuzzer needs every object
# instrumented, and the normal build may use gcc.

FUZZ_CC ?= clang
FUZZ_DIR = $(BUILD)/fuzz
FUZZ_TARGETS = frame handshake tls rdmakeys
FUZZ_BIN = $(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_LIB_OBJ = $(LIB_SRC:%.c=$(FUZZ_DIR)/obj/%.o)
FUZZ_HDRS = $(wildcard include/*.h proto/*.h transport/*.h engine/*.h engine/*/*.h backends/*.h compat/*.h)
FUZZ_SAN = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
# The main build's language, defines and include paths; not its -O, -f or
# -Werror: a warning only clang gives in library code must not stop fuzzing
# (the harnesses themselves are built with -Werror).
FUZZ_CFLAGS = -O1 -g $(filter -std=% -D% -I% -pthread,$(CFLAGS)) $(INC_ALL) -Wall -Wextra $(FUZZ_SAN)

FUZZ_SMOKE_SECONDS ?= 20
FUZZ_SECONDS ?= 600
# Per input: 10 s is a hang. Memory: the handshake caps the guest it accepts
# at 64 MiB (RMIG_FUZZ_GUEST_CAP_MB), so 2 GiB is a leak or a runaway.
FUZZ_OPTS = -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 -detect_leaks=1 \
	    -print_final_stats=1
FUZZ_OPTS_frame = -max_len=16384
FUZZ_OPTS_handshake = -max_len=131072
FUZZ_OPTS_tls = -max_len=65536
FUZZ_OPTS_rdmakeys = -max_len=4096
FUZZ_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:allocator_may_return_null=0 \
	   LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.PHONY: fuzz-build fuzz-smoke fuzz fuzz-merge fuzz-seeds

fuzz-build: $(FUZZ_BIN)

$(FUZZ_LIB_OBJ): $(FUZZ_DIR)/obj/%.o: %.c $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_BIN): $(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB_OBJ) $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Werror -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB_OBJ) $(LDLIBS)

# $(call fuzz_run,TARGET,SECONDS,CORPUS): replay CORPUS and the checked-in
# corpus, then fuzz; new inputs go to CORPUS (the checked-in one stays as it
# is), a crash to $(FUZZ_DIR)/artifacts/. Log: $(FUZZ_DIR)/TARGET.log.
define fuzz_run
	@mkdir -p $(3) $(FUZZ_DIR)/artifacts
	@echo "fuzz_$(1): $(2) s, log in $(FUZZ_DIR)/$(1).log"
	@if $(FUZZ_ENV) $(FUZZ_DIR)/fuzz_$(1) $(FUZZ_OPTS) $(FUZZ_OPTS_$(1)) \
		-max_total_time=$(2) -artifact_prefix=$(FUZZ_DIR)/artifacts/$(1)- \
		$(3) tests/fuzz/corpus/$(1) >$(FUZZ_DIR)/$(1).log 2>&1; then \
		grep -E '^(#[0-9]+[[:space:]]+DONE|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb))' \
			$(FUZZ_DIR)/$(1).log | sed 's/^/  /'; \
	else \
		echo "fuzz_$(1): FAILED (crash, leak, timeout or out of memory), log $(FUZZ_DIR)/$(1).log:"; \
		grep -E -A12 '^==[0-9]+== ?ERROR' $(FUZZ_DIR)/$(1).log | head -40; \
		grep -E '^fuzz|runtime error|^SUMMARY|Test unit written' $(FUZZ_DIR)/$(1).log | head -10; \
		echo "reproduce: $(FUZZ_DIR)/fuzz_$(1) $(FUZZ_DIR)/artifacts/$(1)-*"; \
		exit 1; \
	fi
endef

# The smoke run starts from the checked-in corpus alone, every time, so that
# make check takes the same time whatever earlier runs found. Each target is
# its own rule, so that `make -j2 fuzz-smoke` fuzzes two at once: a fuzzer
# keeps one core busy, and nothing in it depends on time.
FUZZ_SMOKE = $(FUZZ_TARGETS:%=fuzz-smoke-%)
.PHONY: fuzz-smoke-clean $(FUZZ_SMOKE)

fuzz-smoke-clean:
	@rm -rf $(FUZZ_DIR)/smoke

$(FUZZ_SMOKE): fuzz-smoke-%: fuzz-build fuzz-smoke-clean
	$(call fuzz_run,$*,$(FUZZ_SMOKE_SECONDS),$(FUZZ_DIR)/smoke/$*)

fuzz-smoke: $(FUZZ_SMOKE)

# Long runs build on what earlier ones found ($(FUZZ_DIR)/corpus).
fuzz: fuzz-build
	$(call fuzz_run,frame,$(FUZZ_SECONDS),$(FUZZ_DIR)/corpus/frame)
	$(call fuzz_run,handshake,$(FUZZ_SECONDS),$(FUZZ_DIR)/corpus/handshake)
	$(call fuzz_run,tls,$(FUZZ_SECONDS),$(FUZZ_DIR)/corpus/tls)
	$(call fuzz_run,rdmakeys,$(FUZZ_SECONDS),$(FUZZ_DIR)/corpus/rdmakeys)

# Add to the checked-in corpus only the inputs of the long runs that reach
# new edges (-merge=1 picks few, small ones; -use_counters=0: hit counts do
# not count, which keeps the corpus at a few hundred KiB).
define fuzz_merge
	@mkdir -p $(FUZZ_DIR)/corpus/$(1)
	@$(FUZZ_ENV) $(FUZZ_DIR)/fuzz_$(1) $(FUZZ_OPTS_$(1)) -use_counters=0 -merge=1 \
		tests/fuzz/corpus/$(1) \
		$(FUZZ_DIR)/corpus/$(1) >$(FUZZ_DIR)/$(1)-merge.log 2>&1 || \
		{ tail -n 20 $(FUZZ_DIR)/$(1)-merge.log; exit 1; }
	@echo "fuzz_$(1): checked-in corpus now $$(ls tests/fuzz/corpus/$(1) | wc -l) files"
endef

fuzz-merge: fuzz-build
	$(call fuzz_merge,frame)
	$(call fuzz_merge,tls)
	$(call fuzz_merge,rdmakeys)
	$(call fuzz_merge,handshake)

# The seeds are built with the real encoders of the normal build.
$(FUZZ_DIR)/make_seeds: tests/fuzz/make_seeds.c $(BUILD)/librmig.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INC_ALL) $(LDFLAGS) -o $@ $< $(BUILD)/librmig.a $(LDLIBS)

fuzz-seeds: $(FUZZ_DIR)/make_seeds
	$(FUZZ_DIR)/make_seeds tests/fuzz/corpus
