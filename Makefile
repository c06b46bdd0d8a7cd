# rmig - build, demo, tests. `make demo` and `make check` install what they
# need first (scripts/deps.sh), so a fresh Debian machine needs nothing else.

CC      ?= cc
SAN     ?= 0
BUILD   ?= build
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC -fvisibility=hidden -pthread
# Include paths per folder: each sees only what its README says it may call,
# so a header reached across the line fails the build. Tests see everything.
INC_api       = -Iinclude -Iapi
INC_proto     = -Iinclude -Iproto
INC_transport = -Iinclude -Itransport
INC_backends  = -Iinclude -Ibackends -Icompat -Iapi
INC_mem       = -Iinclude -Iproto -Itransport -Iengine -Iengine/mem -Icompat -Iapi
INC_payload   = $(INC_mem) -Iengine/payload
INC_session   = $(INC_mem) -Iengine/session -Iengine/payload
INC_tools     = -Iinclude
INC_tunnel    = -Iinclude -Itransport -Itunnel
INC_ALL       = $(INC_session) -Ibackends -Itunnel
# The shared library's own libraries; LDLIBS adds the optional backends'
# (qemu: libjansson, xen: below), which the static library and the tool
# carry built in and the shared library loads as modules.
LIB_LDLIBS = -pthread -lxxhash -lnuma -lrdmacm -libverbs -lssl -lcrypto
NBD_LIBS := $(shell pkg-config --libs libnbd 2>/dev/null || echo -lnbd)
LDLIBS  += $(LIB_LDLIBS) -ljansson $(NBD_LIBS)
TOOL_LDLIBS = -levent_core -levent_pthreads

ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
BUILD   := build/san
endif

SONAME  = librmig.so.0
# The public headers, installed: the migration API, the backend SPI, the uffd
# and kvm backends' embedding APIs.
PUBLIC_HEADERS = include/rmig.h include/rmig_backend.h include/rmig_uffd.h include/rmig_kvm.h include/rmig_tunnel.h
LIB_SRC = api/last_error.c api/abi_0_2.c api/abi_convert.c proto/wire.c transport/registry.c transport/tcp.c transport/rdma.c transport/rdma_reg.c transport/tls.c transport/tls_record.c transport/admission.c \
	  backends/registry.c backends/args.c backends/sim.c backends/sim_disk.c backends/qemu.c backends/qemu_disk.c backends/uffd.c backends/kvm.c \
	  engine/mem/bitmap.c engine/mem/chunks.c engine/mem/digest.c engine/mem/landed.c engine/mem/placement.c engine/mem/populated.c \
	  engine/mem/prealloc.c engine/mem/zero.c \
	  engine/session/machine.c engine/session/ctx.c engine/session/auth.c engine/session/links.c \
	  engine/session/link_select.c engine/session/listener.c engine/session/converge.c engine/session/channels.c engine/session/status.c \
	  engine/session/source.c engine/session/dest.c engine/session/rails.c \
	  engine/payload/registry.c engine/payload/memory.c engine/payload/memory_save.c \
	  engine/payload/memory_load.c engine/payload/postcopy.c engine/payload/stream.c \
	  engine/payload/stream_save.c engine/payload/disk.c engine/payload/disk_save.c \
	  engine/payload/disk_load.c \
	  tunnel/frame.c tunnel/conn.c tunnel/door.c tunnel/tunnel.c
LIB_OBJ = $(LIB_SRC:%.c=$(BUILD)/%.o)
UNIT_TESTS = test_proto test_bitmap test_chunks test_landed test_status test_converge test_sim test_uffd test_populated test_session \
	     test_backend_abi test_link_wrap test_tls_record test_tls_stream test_tunnel_frame test_admission test_rails_open
UNIT_BIN = $(UNIT_TESTS:%=$(BUILD)/tests/%)
# The xen backend, where libxen-dev is installed (CI compiles it and
# runs test_xen against a fake Xen; no real Xen runs it).
XEN_PKGS = xencontrol xenforeignmemory
# The optional backends: in librmig.a, modules of librmig.so.0
# (backends/modules.c loads $(BUILD)/librmig/backend-NAME.so on demand), each
# linked with its own libraries (and its own further objects).
MODULES = qemu
MODULE_LIBS_qemu = -ljansson $(NBD_LIBS)
MODULE_OBJ_qemu = $(BUILD)/backends/qemu_disk.o
ifeq ($(shell pkg-config --exists $(XEN_PKGS) 2>/dev/null && echo y),y)
LIB_SRC += backends/xen.c
UNIT_TESTS += test_xen
CFLAGS  += -DRMIG_HAVE_XEN $(shell pkg-config --cflags $(XEN_PKGS))
MODULE_LIBS_xen = $(shell pkg-config --libs $(XEN_PKGS))
LDLIBS  += $(MODULE_LIBS_xen)
MODULES += xen
endif
MODULE_SO = $(MODULES:%=$(BUILD)/librmig/backend-%.so)
# The shared library: the modules' backends out, registry.c without
# references to them, the loader in.
SHARED_OBJ = $(filter-out $(MODULES:%=$(BUILD)/backends/%.o) $(foreach m,$(MODULES),$(MODULE_OBJ_$(m))) \
			   $(BUILD)/backends/registry.o,$(LIB_OBJ)) \
	     $(BUILD)/backends/registry-shared.o $(BUILD)/backends/modules.o

.PHONY: all deps demo check unit e2e clean format bench bench-rxe
all: $(BUILD)/librmig.a $(BUILD)/$(SONAME) $(MODULE_SO) $(BUILD)/rmig

$(BUILD)/api/%.o: INC = $(INC_api)
$(BUILD)/proto/%.o: INC = $(INC_proto)
$(BUILD)/transport/%.o: INC = $(INC_transport)
$(BUILD)/backends/%.o: INC = $(INC_backends)
$(BUILD)/engine/mem/%.o: INC = $(INC_mem)
$(BUILD)/engine/payload/%.o: INC = $(INC_payload)
$(BUILD)/engine/session/%.o: INC = $(INC_session)
$(BUILD)/tools/%.o: INC = $(INC_tools)
$(BUILD)/tunnel/%.o: INC = $(INC_tunnel)
HEADERS = $(wildcard include/*.h api/*.h proto/*.h transport/*.h engine/*.h engine/*/*.h backends/*.h compat/*.h \
		    tools/*.h tunnel/*.h)
$(BUILD)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INC) -c -o $@ $<

$(BUILD)/backends/registry-shared.o: backends/registry.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INC_backends) -DRMIG_BACKEND_MODULES -c -o $@ $<

# A module's entry point, naming its ops table (kept: not an intermediate
# make may delete).
.SECONDARY: $(MODULES:%=$(BUILD)/backends/module-%.o)
$(BUILD)/backends/module-%.o: backends/module.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INC_backends) -DRMIG_MODULE_OPS=rmig_$*_backend_ops -c -o $@ $<

$(BUILD)/librmig.a: $(LIB_OBJ)
	ar rcs $@ $^

# Symbol versions (RMIG_0.1, ...) and nothing exported but the map's names.
$(BUILD)/$(SONAME): $(SHARED_OBJ) librmig.map
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=librmig.map $(LDFLAGS) -o $@ \
	    $(SHARED_OBJ) $(LIB_LDLIBS)
	ln -sf $(SONAME) $(BUILD)/librmig.so

# A backend module: its backend, a private copy of args.c (and of the
# last-error slot its helpers write: the backend's own message, be->err, is
# what reaches the caller), its entry point;
# bound to librmig.so.0's versioned symbols (rmig_backend_err...). Every
# symbol resolved at link time (-z defs), except under the sanitizers,
# whose runtime only the program carries.
MODULE_LDFLAGS = $(if $(filter 1,$(SAN)),,-Wl,-z,defs)
$(BUILD)/librmig/backend-%.so: $(BUILD)/backends/%.o $(BUILD)/backends/args.o $(BUILD)/api/last_error.o \
			    $(BUILD)/backends/module-%.o \
			    backends/module.map $(BUILD)/$(SONAME)
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,--version-script=backends/module.map $(MODULE_LDFLAGS) $(LDFLAGS) -o $@ \
	    $(filter %.o,$^) -L$(BUILD) -lrmig $(MODULE_LIBS_$*) -pthread
$(BUILD)/librmig/backend-qemu.so: $(MODULE_OBJ_qemu)

$(BUILD)/rmig: $(BUILD)/tools/rmig.o $(BUILD)/tools/control.o $(BUILD)/tools/status.o \
	       $(BUILD)/tools/records.o $(BUILD)/tools/info.o $(BUILD)/tools/journal.o \
	       $(BUILD)/tools/tunnel.o \
	       $(BUILD)/librmig.a
	$(CC) $(LDFLAGS) -o $@ $^ $(TOOL_LDLIBS) $(LDLIBS)
	@[ "$(BUILD)" = build ] || ln -sf $(abspath $@) tools/rmig.san

# Installing: `make install PREFIX=/usr/local DESTDIR=...`;
# DESTDIR lets a non-root user or a package build stage the tree elsewhere.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
# Debian's multiarch directory under /usr (lib/x86_64-linux-gnu), as its
# packages install libraries; plain lib elsewhere. Or say LIBDIR=...
MULTIARCH  := $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || $(CC) -print-multiarch 2>/dev/null)
LIBDIR     ?= $(PREFIX)/lib$(if $(and $(filter /usr,$(PREFIX)),$(MULTIARCH)),/$(MULTIARCH))
INCLUDEDIR ?= $(PREFIX)/include
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR    ?= $(PREFIX)/lib/systemd/system
COMPLETIONDIR ?= $(PREFIX)/share/bash-completion/completions
VERSION    := $(shell sed -n 's/^\#define RMIG_VERSION_STRING "\(.*\)"$$/\1/p' include/rmig.h)

.PHONY: install uninstall
# rmig.pc is written at install time: its paths are the PREFIX of this install.
install: all
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	    -e 's|@LIBS_PRIVATE@|$(strip $(LDLIBS))|g' \
	    rmig.pc.in >$(BUILD)/rmig.pc
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR) \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3
	install -m 755 $(BUILD)/rmig $(DESTDIR)$(BINDIR)/rmig
	install -m 755 $(BUILD)/$(SONAME) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/librmig.so
	install -d $(DESTDIR)$(LIBDIR)/librmig
	install -m 644 $(MODULE_SO) $(DESTDIR)$(LIBDIR)/librmig/
	install -m 644 $(BUILD)/librmig.a $(DESTDIR)$(LIBDIR)/librmig.a
	install -m 644 $(PUBLIC_HEADERS) $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 $(BUILD)/rmig.pc $(DESTDIR)$(LIBDIR)/pkgconfig/rmig.pc
	install -m 644 man/rmig.1 $(DESTDIR)$(MANDIR)/man1/rmig.1
	install -m 644 man/librmig.3 $(DESTDIR)$(MANDIR)/man3/librmig.3
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/default
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	    -e 's|@UNITDIR@|$(UNITDIR)|g' packaging/rmig-recv.service.in \
	    >$(DESTDIR)$(UNITDIR)/rmig-recv.service
	[ -e $(DESTDIR)$(SYSCONFDIR)/default/rmig-recv ] || \
	    install -m 644 packaging/rmig-recv.default $(DESTDIR)$(SYSCONFDIR)/default/rmig-recv
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	    -e 's|@UNITDIR@|$(UNITDIR)|g' packaging/rmig-tunnel-recv.service.in \
	    >$(DESTDIR)$(UNITDIR)/rmig-tunnel-recv.service
	[ -e $(DESTDIR)$(SYSCONFDIR)/default/rmig-tunnel-recv ] || \
	    install -m 644 packaging/rmig-tunnel-recv.default $(DESTDIR)$(SYSCONFDIR)/default/rmig-tunnel-recv
	install -d $(DESTDIR)$(COMPLETIONDIR)
	install -m 644 packaging/rmig.bash-completion $(DESTDIR)$(COMPLETIONDIR)/rmig

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/rmig $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/librmig.so \
	    $(DESTDIR)$(LIBDIR)/librmig.a $(PUBLIC_HEADERS:include/%=$(DESTDIR)$(INCLUDEDIR)/%) \
	    $(DESTDIR)$(LIBDIR)/pkgconfig/rmig.pc $(DESTDIR)$(MANDIR)/man1/rmig.1 \
	    $(DESTDIR)$(MANDIR)/man3/librmig.3 $(DESTDIR)$(UNITDIR)/rmig-recv.service \
	    $(DESTDIR)$(UNITDIR)/rmig-tunnel-recv.service \
	    $(DESTDIR)$(COMPLETIONDIR)/rmig $(MODULES:%=$(DESTDIR)$(LIBDIR)/librmig/backend-%.so)
	[ ! -d $(DESTDIR)$(LIBDIR)/librmig ] || rmdir --ignore-fail-on-non-empty $(DESTDIR)$(LIBDIR)/librmig
	# The settings stay if someone changed them.
	! cmp -s packaging/rmig-recv.default $(DESTDIR)$(SYSCONFDIR)/default/rmig-recv || \
	    rm -f $(DESTDIR)$(SYSCONFDIR)/default/rmig-recv
	! cmp -s packaging/rmig-tunnel-recv.default $(DESTDIR)$(SYSCONFDIR)/default/rmig-tunnel-recv || \
	    rm -f $(DESTDIR)$(SYSCONFDIR)/default/rmig-tunnel-recv

# Unit tests link the static library: they may call internal (hidden) symbols.
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/librmig.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INC_ALL) $(LDFLAGS) -o $@ $< $(BUILD)/librmig.a -lcmocka $(LDLIBS)

# Helpers the end-to-end tests run: a hostile sender speaking the real wire
# format (built from the library's encoders).
TEST_TOOLS = $(BUILD)/tests/fakepeer $(BUILD)/tests/faultproxy $(BUILD)/tests/memcpy_bw \
	     $(BUILD)/tests/tcp_mem_bw \
	     $(BUILD)/tests/postcopy_check $(BUILD)/tests/qmpc $(BUILD)/tests/flood \
	     $(BUILD)/tests/qemu_disk_check
$(BUILD)/tests/fakepeer: tests/tools/fakepeer.c $(BUILD)/librmig.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INC_ALL) $(LDFLAGS) -o $@ $< $(BUILD)/librmig.a $(LDLIBS)

# The hostile-network tests' attacker without the key: idle, trickling,
# spraying, oversized and storming connections (HELLO from the real encoder).
$(BUILD)/tests/flood: tests/tools/flood.c $(BUILD)/librmig.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INC_ALL) $(LDFLAGS) -o $@ $< $(BUILD)/librmig.a $(LDLIBS)

# Post-copy's memory check: a whole migration in one process, then a replay
# of the destination guest's writes (public API only).
$(BUILD)/tests/postcopy_check: tests/tools/postcopy_check.c $(BUILD)/librmig.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INC_ALL) $(LDFLAGS) -o $@ $< $(BUILD)/librmig.a $(LDLIBS)

# The qemu backend's disk ops against two real QEMUs, driven as the engine
# drives them (t_qemu_disk_ops).
$(BUILD)/tests/qemu_disk_check: tests/tools/qemu_disk_check.c $(BUILD)/librmig.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INC_ALL) $(LDFLAGS) -o $@ $< $(BUILD)/librmig.a $(LDLIBS)

# The fault-matrix test's TCP forwarder (corrupts frames on SIGUSR1/SIGUSR2).
$(BUILD)/tests/faultproxy: tests/tools/faultproxy.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INC_ALL) $(LDFLAGS) -o $@ $<

# The embedding examples, built as a user would against an installed rmig
# (`pkg-config --cflags --libs rmig`: only -Iinclude and -lrmig, the shared
# library), with an rpath to $(BUILD) so that the tests can run it in place.
EXAMPLES = $(BUILD)/examples/embed_counter $(BUILD)/examples/uffd_guest
$(BUILD)/examples/%: examples/%.c $(PUBLIC_HEADERS) $(BUILD)/$(SONAME)
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -I%,$(CFLAGS)) -Iinclude $(LDFLAGS) -o $@ $< -L$(BUILD) -lrmig \
	    -Wl,-rpath,'$$ORIGIN/..'

# make bench's copy ceiling, and the digest's speed against it.
$(BUILD)/tests/memcpy_bw: tests/tools/memcpy_bw.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INC_ALL) $(LDFLAGS) -o $@ $< -lxxhash

# make bench's TCP reference with guest-sized buffers at both ends.
$(BUILD)/tests/tcp_mem_bw: tests/tools/tcp_mem_bw.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -lpthread

# The QEMU tests' QMP client (tests/qemu, scripts/bench_qemu.sh): no python on CI.
$(BUILD)/tests/qmpc: tests/tools/qmpc.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INC_ALL) $(LDFLAGS) -o $@ $<

# Run inside the rxe VM: the RDMA link's own two-process test, the kvm
# backend's dirty-log test.
$(BUILD)/rxe/%: tests/rxe/%.c $(BUILD)/librmig.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INC_ALL) $(LDFLAGS) -o $@ $< $(BUILD)/librmig.a $(LDLIBS)

deps:
	@scripts/deps.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@tests/e2e/demo.sh $(BUILD)/rmig

unit: $(UNIT_BIN) $(BUILD)/rxe/link_selftest $(BUILD)/rxe/kvm_dirtylog_test $(TEST_TOOLS) $(EXAMPLES)
e2e: all

check: deps
	@$(MAKE) --no-print-directory all unit
	@BUILD=$(BUILD) tests/run.sh

# Performance, as ratios to a ceiling measured in the same run.
bench: deps
	@$(MAKE) --no-print-directory all $(BUILD)/tests/memcpy_bw $(BUILD)/tests/tcp_mem_bw $(BUILD)/tests/qmpc \
		$(BUILD)/tests/faultproxy
	@RMIG=$(BUILD)/rmig BUILD=$(BUILD) scripts/bench.sh

bench-rxe: deps
	@$(MAKE) --no-print-directory all
	@tests/rxe/setup.sh >/dev/null
	@tests/rxe/vm.sh --timeout 1200 -- tests/rxe/bench.sh
	@tests/rxe/vm.sh --numa --timeout 900 -- tests/rxe/bench_rails.sh

format:
	clang-format -i $(LIB_SRC) backends/modules.c backends/module.c tools/*.c tests/unit/*.c examples/*.c include/*.h */*.h engine/*/*.h

clean:
	rm -rf build
include tests/fuzz/fuzz.mk
