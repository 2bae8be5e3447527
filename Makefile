# ccsync build, test, run and benchmark entry points.
#
#   make            build build/ccsyncd and build/ccsim
#   make run        install what is missing, start Redis + ccsim if needed, run ccsyncd
#   make test       install what is missing, build, run every test (also under ASan+UBSan)
#   make fuzz       run the libFuzzer targets for FUZZ_SECONDS each
#   make bench      ingest and sync benchmarks beside their ceilings
#
# BUILD selects the output folder, so that several builds (plain, sanitizers,
# fuzzing) can live side by side: make BUILD=build/asan SANITIZE=1.

BUILD    ?= build
SANITIZE ?= 0
CC       ?= cc

# Debian packages, one list per use. The Dockerfile installs the same lists
# (tests/deploy/check.sh verifies there is no drift).
DEB_BUILD_PKGS   = build-essential pkg-config libmicrohttpd-dev libcurl4-openssl-dev libjson-c-dev libhiredis-dev libssl-dev
DEB_RUNTIME_PKGS = libmicrohttpd12 libcurl4 libjson-c5 libhiredis0.14 libssl3 ca-certificates
DEB_TEST_PKGS    = redis-server redis-tools libcmocka-dev clang libclang-rt-14-dev wrk docker-compose curl python3 shellcheck nginx-light openssl prometheus chromium webdis
DEB_RUN_PKGS     = redis-server redis-tools curl openssl python3

PKGS    = libmicrohttpd libcurl json-c hiredis openssl
WARN    = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CFLAGS  ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -Iinclude -Itests/support \
	     $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LIBS    = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
ifeq ($(SANITIZE),1)
ALL_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDSAN       = -fsanitize=address,undefined
endif

SERVICE_SRC = $(filter-out service/main.c,$(wildcard service/*.c))
SERVICE_OBJ = $(SERVICE_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/service/ui_assets.o
CCSIM_SRC   = $(wildcard tests/ccsim/*.c)
CCSIM_OBJ   = $(CCSIM_SRC:%.c=$(BUILD)/obj/%.o)
SUPPORT_SRC = $(wildcard tests/support/*.c)
SUPPORT_OBJ = $(SUPPORT_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC    = $(wildcard tests/unit/test_*.c)
UNIT_BIN    = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%)
INTEG_SRC   = $(wildcard tests/integration/test_*.c)
INTEG_BIN   = $(INTEG_SRC:tests/integration/%.c=$(BUILD)/tests/integration/%)
BENCH_SRC   = $(wildcard tests/bench/*.c)
BENCH_BIN   = $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)

# Keep objects make thinks intermediate, so a second run rebuilds nothing.
.SECONDARY:

.PHONY: all run test test-fast check-tests deps deps-run deps-test lint-openapi fuzz bench clean format print-deps
all: $(BUILD)/ccsyncd $(BUILD)/ccsim

# Quiet by default; `make V=1` shows the commands.
ifeq ($(V),1)
Q =
else
Q = @
endif

$(BUILD)/obj/%.o: %.c $(wildcard include/ccsync/*.h tests/support/*.h tests/ccsim/*.h)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

# The status page's files, embedded in the binary by the assembler's .incbin.
$(BUILD)/obj/service/ui_assets.o: service/ui_assets.S $(wildcard service/ui/*)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  AS      $<")
	$(Q)$(CC) -c $< -o $@

$(BUILD)/libccsync.a: $(SERVICE_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/ccsyncd: $(BUILD)/obj/service/main.o $(BUILD)/libccsync.a
	@echo "  LINK    $@"
	$(Q)$(CC) $(LDSAN) -o $@ $^ $(LIBS)

$(BUILD)/ccsim: $(CCSIM_OBJ)
	@echo "  LINK    $@"
	$(Q)$(CC) $(LDSAN) -o $@ $^ $(LIBS)

# The test support as an archive: a benchmark (no cmocka) pulls in only what it uses.
$(BUILD)/libtestsupport.a: $(SUPPORT_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/tests/unit/%: tests/unit/%.c $(BUILD)/libccsync.a $(BUILD)/libtestsupport.a
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	$(Q)$(CC) $(ALL_CFLAGS) $(LDSAN) -o $@ $< $(BUILD)/libtestsupport.a $(BUILD)/libccsync.a $(LIBS) -lcmocka

$(BUILD)/tests/integration/%: tests/integration/%.c $(BUILD)/libccsync.a $(BUILD)/libtestsupport.a
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	$(Q)$(CC) $(ALL_CFLAGS) $(LDSAN) -o $@ $< $(BUILD)/libtestsupport.a $(BUILD)/libccsync.a $(LIBS) -lcmocka

$(BUILD)/bench/%: tests/bench/%.c $(BUILD)/libccsync.a $(BUILD)/libtestsupport.a
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libtestsupport.a $(BUILD)/libccsync.a $(LIBS) -lcmocka

check-tests: all $(UNIT_BIN) $(INTEG_BIN)

# ---- installing what is missing (Debian 12; apt-get as root, else sudo) ----
deps-run:
	@scripts/install-debs.sh $(DEB_BUILD_PKGS) $(DEB_RUN_PKGS)
deps-test:
	@scripts/install-debs.sh $(DEB_BUILD_PKGS) $(DEB_TEST_PKGS)
	@scripts/install-npm.sh
deps: deps-test

print-deps:
	@echo "build: $(DEB_BUILD_PKGS)"
	@echo "runtime: $(DEB_RUNTIME_PKGS)"

# ---- the two commands of README.md ----
# run-dev.sh refuses a taken port before the build, and is exec'd so that make is its
# parent: its watchdog stops everything when make goes, even by SIGKILL.
run: deps-run
	@scripts/run-dev.sh check-port
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) exec scripts/run-dev.sh

# Both builds use every core (make test is often run without -j).
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
test: deps-test
	@$(MAKE) --no-print-directory -j$(JOBS) check-tests
	@$(MAKE) --no-print-directory -j$(JOBS) BUILD=build/asan SANITIZE=1 check-tests
	@tests/run-all.sh

# A quicker loop for development: plain build only.
test-fast:
	@$(MAKE) --no-print-directory -j$(JOBS) check-tests
	@TEST_SANITIZED=0 tests/run-all.sh

lint-openapi:
	@scripts/lint-openapi.sh

FUZZ_SECONDS ?= 60
fuzz:
	@tests/fuzz/run.sh $(FUZZ_SECONDS)

bench: deps-test
	@$(MAKE) --no-print-directory all $(BENCH_BIN)
	@tests/bench/run.sh

format:
	clang-format -i service/*.c include/ccsync/*.h tests/*/*.c tests/*/*.h

clean:
	rm -rf build
