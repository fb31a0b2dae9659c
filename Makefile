# opsdb build. `make` builds ./opsdb; `make test` installs what is missing, builds with the
# sanitizers and -Werror, and runs every test; `make run` builds and starts the server.

CC      ?= cc
PKGS    := sqlite3 libmicrohttpd jansson yaml-0.1 zlib libzstd libsodium libcurl
# Prometheus remote write: protobuf messages (decoded with libprotobuf-c) in snappy blocks
PKGS    += libprotobuf-c snappy
# HTTPS of opsdb serve (libmicrohttpd over GnuTLS: certificates reloaded on SIGHUP) and the
# check of the clients' CA files
PKGS    += gnutls
WARN    := -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes -Wno-format-nonliteral -Werror
CSTD    := -std=c11 -D_GNU_SOURCE -Isrc
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -lpthread

SRC      := $(sort $(wildcard src/*/*.c))
MAIN_SRC := src/main.c
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))

REL_DIR  := build/release
ASAN_DIR := build/asan
REL_CFLAGS  := -O2 -g
ASAN_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

REL_OBJ  := $(SRC:%.c=$(REL_DIR)/%.o)
ASAN_OBJ := $(SRC:%.c=$(ASAN_DIR)/%.o)

# .proto files under src/ are compiled with protoc-c into build/gen/ (generated, not committed):
# src/ingest/remote_write.proto gives build/gen/ingest/remote_write.pb-c.{c,h}, included as
# "ingest/remote_write.pb-c.h"; their objects join the others.
GEN_DIR   := build/gen
PROTO_SRC := $(sort $(wildcard src/*/*.proto))
PROTO_C   := $(PROTO_SRC:src/%.proto=$(GEN_DIR)/%.pb-c.c)
PROTO_H   := $(PROTO_C:.c=.h)
CSTD      += -I$(GEN_DIR)
REL_OBJ   += $(PROTO_C:%.c=$(REL_DIR)/%.o)
ASAN_OBJ  += $(PROTO_C:%.c=$(ASAN_DIR)/%.o)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(ASAN_DIR)/%)
# the fuzz targets' corpora and kept crashes, replayed without libFuzzer (fuzz/replay.c)
FUZZ_SRC    := $(sort $(wildcard fuzz/fuzz_*.c))
REPLAY_BIN  := $(FUZZ_SRC:fuzz/fuzz_%.c=$(ASAN_DIR)/fuzz_replay_%)

.PHONY: all run test deps test-deps unit e2e lint clean docs fuzz
all: opsdb

opsdb: $(REL_OBJ) $(REL_DIR)/src/main.o
	$(CC) $(REL_CFLAGS) -o $@ $^ $(PKG_LIBS)

$(REL_DIR)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(REL_CFLAGS) $(PKG_CFLAGS) -MMD -MP -c -o $@ $<

$(ASAN_DIR)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(ASAN_CFLAGS) $(PKG_CFLAGS) -MMD -MP -c -o $@ $<

$(ASAN_DIR)/opsdb: $(ASAN_OBJ) $(ASAN_DIR)/src/main.o
	$(CC) $(ASAN_CFLAGS) -o $@ $^ $(PKG_LIBS)

# unit tests link the subsystems from an archive, so each takes only the objects it uses
ASAN_LIB := $(ASAN_DIR)/libopsdb.a
$(ASAN_LIB): $(ASAN_OBJ)
	rm -f $@
	ar rcs $@ $^

$(ASAN_DIR)/test_%: tests/unit/test_%.c $(ASAN_LIB) $(wildcard tests/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(ASAN_CFLAGS) $(PKG_CFLAGS) -o $@ $< $(ASAN_LIB) $(PKG_LIBS) -lcmocka

$(ASAN_DIR)/fuzz_replay_%: fuzz/fuzz_%.c fuzz/replay.c $(ASAN_LIB) $(wildcard fuzz/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(ASAN_CFLAGS) $(PKG_CFLAGS) -DFUZZ_TARGET='"$*"' -o $@ fuzz/replay.c $< \
		$(ASAN_LIB) $(PKG_LIBS)

$(GEN_DIR)/%.pb-c.c $(GEN_DIR)/%.pb-c.h: src/%.proto
	@mkdir -p $(GEN_DIR)
	protoc-c -Isrc --c_out=$(GEN_DIR) $<

# the sources that include a generated header wait for it (the first build has no .d files yet)
$(REL_DIR)/src/ingest/ingest_remote_write.o $(ASAN_DIR)/src/ingest/ingest_remote_write.o: $(PROTO_H)

deps:
	@scripts/install-deps.sh build

test-deps:
	@scripts/install-deps.sh test

run: deps
	$(MAKE) opsdb
	mkdir -p data
	./opsdb serve

# The whole suite: banned calls and formatting (lint), unit tests, the replay of every fuzz
# target's corpus and kept crashes, and end-to-end tests (which include the generated-docs
# check), all against the sanitizer build. Ends with the runner's summary line.
test: test-deps
	$(MAKE) $(ASAN_DIR)/opsdb $(UNIT_BIN) $(REPLAY_BIN) opsdb
	$(MAKE) lint
	scripts/run-tests.sh $(ASAN_DIR) $(UNIT_BIN) $(REPLAY_BIN)

unit: $(UNIT_BIN) $(REPLAY_BIN)
	@for t in $(UNIT_BIN) $(REPLAY_BIN); do $$t || exit 1; done

lint:
	@scripts/check-banned.sh
	@clang-format --dry-run --Werror $(SRC) $(MAIN_SRC) src/*/*.h && echo "clang-format: ok"

# libFuzzer targets of every parser of untrusted bytes (needs clang): FUZZ_SECONDS each
FUZZ_SECONDS ?= 10
fuzz:
	@scripts/install-deps.sh fuzz
	fuzz/build.sh run $(FUZZ_SECONDS)

docs: opsdb
	./opsdb schema --markdown > docs/schema.md
	./opsdb config --markdown > docs/config.md

clean:
	rm -rf build opsdb

-include $(REL_OBJ:.o=.d) $(ASAN_OBJ:.o=.d)
