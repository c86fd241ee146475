# outbox-relay build.  `make` builds the relay; `make test` runs every test
# (installing what it needs); `make demo` runs the relay end to end on a
# throwaway PostgreSQL and a local Kafka-protocol broker.

CC       ?= cc
PKGS     := libpq rdkafka jansson libbsd
CPPFLAGS += -I. -I$(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql) -D_GNU_SOURCE
CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
LDLIBS   += -lpq -lrdkafka -ljansson -lbsd -lm -lmicrohttpd
BUILD    ?= build

# Every module's .c except main.c goes into one static library, so unit
# tests link against exactly what the relay runs.
LIB_SRC  := $(wildcard decode/*.c schema/*.c publish/*.c) $(filter-out cdc/main.c,$(wildcard cdc/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/liboutbox.a

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
ITEST_SRC := $(wildcard tests/integration/itest_*.c)
ITEST_BIN := $(ITEST_SRC:tests/integration/%.c=$(BUILD)/tests/%)
HARNESS_SRC := $(wildcard tests/harness/*.c)
HARNESS_OBJ := $(HARNESS_SRC:%.c=$(BUILD)/%.o)
MOCKBROKER := $(BUILD)/mockbroker

.SECONDARY: $(HARNESS_OBJ)

.PHONY: format-check all test unit integration integration-matrix compat compat-short compat-switchover asan asan-integration demo bench bench-smoke bench-real kafka-compat chaos chaos-short chaos-real chaos-1000 install clean format deps fuzz deb ops-tests

all: outbox-relay

outbox-relay: $(BUILD)/cdc/main.o $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The relay built into BUILD (the ASan/UBSan integration run uses it).
$(BUILD)/outbox-relay: $(BUILD)/cdc/main.o $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/test_%: tests/unit/test_%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -Wno-missing-prototypes -o $@ $< $(LIB) -lcmocka $(LDLIBS)

$(BUILD)/tests/itest_%: tests/integration/itest_%.c $(HARNESS_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -Wno-missing-prototypes -o $@ $< $(HARNESS_OBJ) $(LIB) -lcmocka $(LDLIBS)

$(MOCKBROKER): tests/mockbroker.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< -lrdkafka

# Test entry point used by README and CI: installs dependencies when root,
# then builds and runs the unit tests, the ASan/UBSan unit build and the
# integration tests against a real PostgreSQL and the mock broker.
test: deps
	bash scripts/run-tests

unit: $(UNIT_BIN)
	@bash scripts/run-unit $(UNIT_BIN)

integration: outbox-relay $(MOCKBROKER) $(ITEST_BIN)
	@bash scripts/run-integration $(ITEST_BIN)

ASAN_CFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

asan:
	$(MAKE) BUILD=build/asan CFLAGS="$(ASAN_CFLAGS)" unit

# The integration tests that differ by server version, on every PostgreSQL
# major of the matrix besides Debian's 15 (builds from scripts/pgfetch).
# The primary failover with a failover slot (a streaming standby, about a
# minute) runs on FAILOVER_PG.
PG_MATRIX ?= 13 14 16 17 18
FAILOVER_PG ?= 17
MATRIX_ITESTS := $(BUILD)/tests/itest_decoding $(BUILD)/tests/itest_shutdown
integration-matrix: outbox-relay $(MOCKBROKER) $(MATRIX_ITESTS) $(BUILD)/tests/itest_failover
	@for v in $(PG_MATRIX); do \
		echo "--- PostgreSQL $$v"; \
		OBX_PGVERSION=$$v bash scripts/run-integration $(MATRIX_ITESTS) \
			$(if $(FAILOVER_PG),$$([ "$$v" = "$(FAILOVER_PG)" ] && echo $(BUILD)/tests/itest_failover)) \
			|| rc=1; \
	done; exit $${rc:-0}

# The integration tests with the relay (and the tests) built with ASan/UBSan.
asan-integration: $(MOCKBROKER)
	$(MAKE) BUILD=build/asan CFLAGS="$(ASAN_CFLAGS)" build/asan/outbox-relay \
		$(ITEST_SRC:tests/integration/%.c=build/asan/tests/%)
	OBX_RELAY=build/asan/outbox-relay OBX_MOCKBROKER=$(MOCKBROKER) \
		bash scripts/run-integration $(ITEST_SRC:tests/integration/%.c=build/asan/tests/%)

deps:
	bash scripts/install-deps

demo: deps
	$(MAKE) outbox-relay $(MOCKBROKER)
	bash scripts/demo

BENCH_BIN := $(BUILD)/bench/latency $(BUILD)/bench/poller
$(BUILD)/bench/%: tests/bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(LIB) -lpq -lrdkafka -ljansson -lpthread -lm

bench: deps
	$(MAKE) outbox-relay $(MOCKBROKER) $(BENCH_BIN)
	bash scripts/bench

bench-smoke:
	$(MAKE) outbox-relay $(MOCKBROKER) $(BENCH_BIN)
	bash scripts/bench-smoke

# The benchmark on a real 3-node Apache Kafka cluster beside the mock broker,
# with an A/B of producer settings (scripts/bench-real), and what this
# machine's librdkafka can do against Kafka 3.9 and 4.x (scripts/kafka-compat).
bench-real: deps
	$(MAKE) outbox-relay $(MOCKBROKER) $(BENCH_BIN)
	bash scripts/bench-real

kafka-compat:
	bash scripts/kafka-compat

# Debezium as the oracle (scripts/compat): Debezium's connector and outbox
# EventRouter and the relay over the same rows, compared record by record.
$(BUILD)/tests/compat_dump: tests/compat/dump.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< -lrdkafka

compat: outbox-relay $(BUILD)/tests/compat_dump
	bash scripts/compat

compat-short: outbox-relay $(BUILD)/tests/compat_dump
	bash scripts/compat --short

# Switching from Debezium under load (after `make compat` fetched the jars).
compat-switchover: outbox-relay $(BUILD)/tests/compat_dump
	bash scripts/compat-switchover

# Fault scenarios with an independent verifier (tests/chaos): the long run,
# and a short one of every scenario.
chaos: outbox-relay $(MOCKBROKER)
	bash scripts/chaos

chaos-short: outbox-relay $(MOCKBROKER)
	bash scripts/chaos --short

# The same on a real Apache Kafka cluster (scripts/kafka; jars from Maven
# Central), and the 1,000-cycle kill -9 of the relay there (about 40 minutes).
chaos-real: deps outbox-relay
	bash scripts/chaos --real

chaos-1000: deps outbox-relay
	CHAOS_SCENARIOS=kill9 CHAOS_KILLS=$${CHAOS_KILLS:-1000} \
		CHAOS_KILL_GAP_MS=$${CHAOS_KILL_GAP_MS:-1500} bash scripts/chaos --real

# Fuzz the decoder and the record builder (libFuzzer + ASan + UBSan):
# FUZZ_SECONDS for the decoder, half for the builder; the test suite runs
# 60 (90 s in all).
FUZZ_SECONDS ?= 600
fuzz:
	bash tests/fuzz/run $(FUZZ_SECONDS)

# The binary, the SQL side and the envelope's JSON Schema, and the systemd
# unit (as an example to copy into /etc/systemd/system: installing it there
# is the administrator's call).
install: outbox-relay
	install -D -m 0755 outbox-relay $(DESTDIR)$(PREFIX)/bin/outbox-relay
	install -D -m 0644 schema/outbox.sql $(DESTDIR)$(PREFIX)/share/outbox-relay/outbox.sql
	install -D -m 0644 schema/envelope.schema.json \
		$(DESTDIR)$(PREFIX)/share/outbox-relay/envelope.schema.json
	install -D -m 0644 scripts/outbox-relay.service \
		$(DESTDIR)$(PREFIX)/share/outbox-relay/outbox-relay.service
	install -D -m 0644 scripts/outbox-relay.conf \
		$(DESTDIR)$(PREFIX)/share/outbox-relay/outbox-relay.conf
	install -D -m 0644 scripts/man/outbox-relay.1 $(DESTDIR)$(PREFIX)/share/man/man1/outbox-relay.1

PREFIX ?= /usr/local

# The Debian package, build/deb/outbox-relay_VERSION_ARCH.deb (dpkg-deb;
# dependencies from dpkg-shlibdeps).
deb: outbox-relay
	bash scripts/deb/build outbox-relay build/deb

# Packaging, man page, dashboards and alerts (tests/ops).
ops-tests: outbox-relay $(MOCKBROKER)
	bash tests/ops/run

FORMAT_SRC := $(wildcard */*.c */*.h tests/*/*.c tests/*/*.h tests/*.c)
format:
	clang-format -i $(FORMAT_SRC)

# CI fails when a C file differs from .clang-format (run `make format`).
format-check:
	clang-format --dry-run --Werror $(FORMAT_SRC)

clean:
	rm -rf build outbox-relay

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
