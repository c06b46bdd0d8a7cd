# rmig - build, demo, tests. `make demo` and `make check` install what they
# need first (scripts/deps.sh), so a fresh Debian machine needs nothing else.

CC      ?= cc
SAN     ?= 0
BUILD   ?= build
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC -fvisibility=hidden -pthread \
	   -Iinclude -Iproto -Itransport -Iengine -Ibackends
LDLIBS  += -pthread -lxxhash -lnuma -lrdmacm -libverbs -lcrypto -ljansson
TOOL_LDLIBS = -levent_core -levent_pthreads

ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
BUILD   := build/san
endif

SONAME  = librmig.so.0
LIB_SRC = proto/wire.c transport/registry.c transport/tcp.c transport/rdma.c engine/placement.c engine/link_select.c \
	  backends/registry.c backends/sim.c backends/qemu.c \
	  engine/bitmap.c engine/converge.c engine/digest.c engine/ctx.c \
	  engine/source.c engine/dest.c engine/auth.c engine/stream.c engine/populated.c
LIB_OBJ = $(LIB_SRC:%.c=$(BUILD)/%.o)
UNIT_TESTS = test_proto test_bitmap test_converge test_sim
UNIT_BIN = $(UNIT_TESTS:%=$(BUILD)/tests/%)

.PHONY: all deps demo check unit e2e clean format bench bench-rxe
all: $(BUILD)/librmig.a $(BUILD)/$(SONAME) $(BUILD)/rmig

$(BUILD)/%.o: %.c $(wildcard include/*.h proto/*.h transport/*.h engine/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/librmig.a: $(LIB_OBJ)
	ar rcs $@ $^

$(BUILD)/$(SONAME): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) $(LDFLAGS) -o $@ $^ $(LDLIBS)
	ln -sf $(SONAME) $(BUILD)/librmig.so

$(BUILD)/rmig: $(BUILD)/tools/rmig.o $(BUILD)/librmig.a
	$(CC) $(LDFLAGS) -o $@ $^ $(TOOL_LDLIBS) $(LDLIBS)
	@[ "$(BUILD)" = build ] || ln -sf $(abspath $@) tools/rmig.san

# Unit tests link the static library: they may call internal (hidden) symbols.
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/librmig.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/librmig.a -lcmocka $(LDLIBS)

# Helpers the end-to-end tests run: a hostile sender speaking the real wire
# format (built from the library's encoders).
TEST_TOOLS = $(BUILD)/tests/fakepeer $(BUILD)/tests/faultproxy
$(BUILD)/tests/fakepeer: tests/tools/fakepeer.c $(BUILD)/librmig.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/librmig.a $(LDLIBS)

# The fault-matrix test's TCP forwarder (corrupts frames on SIGUSR1/SIGUSR2).
$(BUILD)/tests/faultproxy: tests/tools/faultproxy.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $<

# The RDMA link's own two-process test, run inside the rxe VM.
$(BUILD)/rxe/link_selftest: tests/rxe/link_selftest.c $(BUILD)/librmig.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/librmig.a $(LDLIBS)

deps:
	@scripts/deps.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@tests/e2e/demo.sh $(BUILD)/rmig

unit: $(UNIT_BIN) $(BUILD)/rxe/link_selftest $(TEST_TOOLS)
e2e: all

check: deps
	@$(MAKE) --no-print-directory all unit
	@BUILD=$(BUILD) tests/run.sh

# Performance, as ratios to a ceiling measured in the same run.
bench: deps
	@$(MAKE) --no-print-directory all
	@RMIG=$(BUILD)/rmig scripts/bench.sh

bench-rxe: deps
	@$(MAKE) --no-print-directory all
	@tests/rxe/setup.sh >/dev/null
	@tests/rxe/vm.sh --timeout 600 -- tests/rxe/bench.sh

format:
	clang-format -i $(LIB_SRC) tools/*.c tests/unit/*.c include/*.h */*.h

clean:
	rm -rf build
include tests/fuzz/fuzz.mk
