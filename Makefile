# libyolo: YOLOv7 on the CPU in C.  `make run` and `make test` are the two
# commands a user needs; see README.md.  Every C file under libyolo/src is part
# of the library, every test/test_*.c is a cmocka test program, every
# bench/*.c is part of bench/run.

PREFIX    ?= /usr/local
LIBDIR    ?= $(PREFIX)/lib
INCDIR    ?= $(PREFIX)/include
PCDIR     ?= $(LIBDIR)/pkgconfig
CC        ?= cc
BUILD     ?= build
SANITIZE  ?=
SHARED    ?= ../shared
# Python for the tools: the first interpreter that can import numpy.
PYTHON    ?= $(shell for p in /usr/bin/python3 python3; do $$p -c 'import numpy' 2>/dev/null && { command -v $$p; break; }; done)

VERSION   := 0.1.0
SOVERSION := 0
PKGS      := openblas libpng libjpeg
WARN      := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
             -Wpointer-arith -Wcast-qual -Wvla
OPT       ?= -O2 -march=x86-64-v2 -mtune=native
CFLAGS    ?= $(OPT) -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC $(WARN) $(CFLAGS) $(SANITIZE) \
             $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -Ilibyolo -Ilibyolo/src
LIBS       = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lz -lm -lpthread
TEST_LIBS  = $(shell pkg-config --libs cmocka 2>/dev/null)

LIB_SRC   := $(sort $(wildcard libyolo/src/*.c))
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
BENCH_SRC := $(sort $(wildcard bench/*.c))
BENCH_OBJ := $(BENCH_SRC:%.c=$(BUILD)/%.o)
BENCH_LIB_OBJ := $(filter-out $(BUILD)/bench/main.o,$(BENCH_OBJ))
TEST_SRC  := $(sort $(wildcard test/test_*.c))
TEST_BIN  := $(TEST_SRC:test/%.c=$(BUILD)/test/%)
STATIC    := $(BUILD)/libyolo.a
SHAREDLIB := $(BUILD)/libyolo.so.$(VERSION)

.PHONY: all lib bench tests test test-c test-asan test-asan-e2e test-e2e-busy test-scripts test-e2e \
        test-peers run deps check-deps \
        weights goldens check-official install uninstall clean peers help
.DELETE_ON_ERROR:

all: lib bench

help:
	@echo "make run             build, make the synthetic model, run the default job"
	@echo "make test            unit + golden tests, then the same under ASan+UBSan"
	@echo "make check-official  compare against ../shared/fixtures (SHARED=dir)"
	@echo "make peers           libyolo vs PyTorch, ONNX Runtime, OpenVINO (PEERS_ARGS=...)"
	@echo "make install         PREFIX=$(PREFIX): header, libraries, libyolo.pc"
	@echo "make deps            install the Debian packages needed (as root)"

# ---- dependencies ----------------------------------------------------------
# As root, missing Debian packages are installed; otherwise the exact command
# is printed and the build stops.
APT_PKGS := gcc make pkg-config libc6-dev zlib1g-dev libopenblas-dev libgfortran-12-dev libpng-dev \
            libjpeg62-turbo-dev libcmocka-dev python3 python3-numpy
# Only for regenerating the goldens (make goldens), never for make test.
APT_GOLDEN_PKGS := python3-torch python3-opencv
GOLDEN_PYTHON ?= /usr/bin/python3
DEPS_STAMP := $(BUILD)/.deps-ok

deps: $(DEPS_STAMP)
$(DEPS_STAMP):
	@sh tools/ensure-deps.sh $(APT_PKGS)
	@mkdir -p $(BUILD) && touch $@

check-deps:
	@sh tools/ensure-deps.sh $(APT_PKGS)

# ---- library -----------------------------------------------------------------
lib: $(STATIC) $(SHAREDLIB)

$(BUILD)/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(STATIC): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(SHAREDLIB): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libyolo.so.$(SOVERSION) $(SANITIZE) -o $@ $^ $(LIBS)
	ln -sf libyolo.so.$(VERSION) $(BUILD)/libyolo.so.$(SOVERSION)
	ln -sf libyolo.so.$(SOVERSION) $(BUILD)/libyolo.so

# ---- bench -------------------------------------------------------------------
# Built under $(BUILD) so sanitizer builds never replace the normal binary;
# bench/run is a link to the normal build's.
BENCH_BIN := $(BUILD)/bench/run
bench: $(BENCH_BIN)
	@[ "$(BUILD)" != build ] || ln -sf ../build/bench/run bench/run
# run.json records the flags the benchmark was built with.
$(BUILD)/bench/sysinfo.o: ALL_CFLAGS += -DBENCH_CFLAGS='"$(strip $(CFLAGS) $(SANITIZE))"'
$(BENCH_BIN): $(BENCH_OBJ) $(STATIC)
	$(CC) $(SANITIZE) -o $@ $(BENCH_OBJ) $(STATIC) $(LIBS)

# ---- tools and examples built on the public API -------------------------------
DUMP := $(BUILD)/yolo-dump
EXAMPLE := $(BUILD)/examples/detect
$(DUMP): tools/dump.c $(STATIC)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(STATIC) $(LIBS)
$(EXAMPLE): examples/detect.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(STATIC) $(LIBS)

# ---- tests -------------------------------------------------------------------
tests: $(TEST_BIN) $(DUMP) $(EXAMPLE)
$(BUILD)/test/%: test/%.c test/testutil.h $(STATIC) $(BENCH_LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Ibench -Itest -o $@ $< $(BENCH_LIB_OBJ) $(STATIC) $(LIBS) $(TEST_LIBS)

# The C suites run from the repository root so they find test/data.
test-c: tests bench
	@set -e; for t in $(TEST_BIN); do echo "== $$t"; YOLO_BUILD=$(BUILD) ./$$t; done

# Python and shell suites: exporter, synthetic models, install + example.
# Each prints its own `N passed, N failed` line.
SCRIPT_TESTS := $(filter-out test/test_bench_e2e.sh test/test_peers.sh,$(wildcard test/test_*.sh))
test-scripts: tests bench
	@set -e; for t in $(wildcard test/test_*.py); do echo "== $$t"; $(PYTHON) $$t; done; \
	for t in $(SCRIPT_TESTS); do echo "== $$t"; \
	    YOLO_BUILD=$(BUILD) BENCH_RUN=$(BENCH_BIN) PYTHON=$(PYTHON) sh $$t; done

# bench/run end to end on the bundled photos.
test-e2e: bench $(DUMP)
	@echo "== test/test_bench_e2e.sh"
	@YOLO_BUILD=$(BUILD) BENCH_RUN=$(BENCH_BIN) PYTHON=$(PYTHON) sh test/test_bench_e2e.sh

# The C suites and the bench end-to-end test again, under ASan + UBSan.
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
ASAN_MAKE = ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 SANITIZE="$(ASAN_FLAGS)"
test-asan:
	$(ASAN_MAKE) test-c test-e2e
test-asan-e2e:
	$(ASAN_MAKE) test-e2e

# The bench end-to-end test, normal and ASan + UBSan builds, again with a busy
# loop on every core (tools/with-cpu-hog.sh): no check may depend on the
# machine's speed or load. Not part of `make test`; .ci/run runs it.
test-e2e-busy:
	sh tools/with-cpu-hog.sh $(MAKE) --no-print-directory test-e2e test-asan-e2e

test: deps weights
	$(MAKE) --no-print-directory test-c
	$(MAKE) --no-print-directory test-scripts
	$(MAKE) --no-print-directory test-e2e
	$(MAKE) --no-print-directory test-asan
	@echo "make test: every suite passed"

# ---- synthetic weights, goldens, fixtures ------------------------------------
# Deterministic synthetic checkpoints in the official format, exported like a
# real one.  Nothing is downloaded.
weights: weights/yolov7-tiny.bin weights/yolov7.bin
# The checkpoints are kept: the reference and the peer comparison read them.
.PRECIOUS: weights/%.pt
weights/%.pt: tools/synth.py tools/archs.py | $(DEPS_STAMP)
	$(PYTHON) tools/synth.py --arch $* --out $@
weights/%.bin: weights/%.pt tools/export.py tools/ptload.py
	$(PYTHON) tools/export.py $< $@

# Regenerates test/golden with PyTorch (python3-torch); not part of `make test`.
goldens: weights
	@sh tools/ensure-deps.sh $(APT_GOLDEN_PKGS)
	$(GOLDEN_PYTHON) tools/reference.py --out test/golden weights/yolov7-tiny.pt weights/yolov7.pt

check-official: lib $(DUMP)
	$(PYTHON) tools/check_official.py --shared $(SHARED) --build $(BUILD)

# ---- peers -------------------------------------------------------------------
# libyolo against PyTorch, ONNX Runtime and OpenVINO on the same inputs, in one
# run (docs/peers.md). Installs its peers from PyPI into build/peers-venv.
peers: lib weights
	./bench/peers --lib $(BUILD)/libyolo.so $(PEERS_ARGS)

# bench/peers --quick and its failure paths; not part of `make test`.
test-peers: lib weights
	YOLO_BUILD=$(BUILD) sh test/test_peers.sh

# ---- run -----------------------------------------------------------------------
run: deps lib bench weights
	@echo "NOTE: weights/yolov7-tiny.bin is a SYNTHETIC model (random calibrated weights):"
	@echo "      its boxes are meaningless. See README.md to export the official weights."
	$(BENCH_BIN) weights/yolov7-tiny.bin images/

# ---- install -------------------------------------------------------------------
install: lib
	install -d $(DESTDIR)$(INCDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PCDIR)
	install -m 644 libyolo/yolo.h $(DESTDIR)$(INCDIR)/yolo.h
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/libyolo.a
	install -m 755 $(SHAREDLIB) $(DESTDIR)$(LIBDIR)/libyolo.so.$(VERSION)
	ln -sf libyolo.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libyolo.so.$(SOVERSION)
	ln -sf libyolo.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libyolo.so
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@LIBDIR@|$(LIBDIR)|; s|@INCDIR@|$(INCDIR)|; s|@VERSION@|$(VERSION)|' \
	    libyolo/libyolo.pc.in > $(DESTDIR)$(PCDIR)/libyolo.pc
	case "$(DESTDIR):$(PREFIX)" in :/usr|:/usr/local) command -v ldconfig >/dev/null && ldconfig || true;; esac

uninstall:
	rm -f $(DESTDIR)$(INCDIR)/yolo.h $(DESTDIR)$(LIBDIR)/libyolo.* $(DESTDIR)$(PCDIR)/libyolo.pc

clean:
	rm -rf build build-asan bench/run outputs

-include $(LIB_OBJ:.o=.d) $(BENCH_OBJ:.o=.d)
