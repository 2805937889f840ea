# Thin wrapper over meson/ninja. The real build is meson.build.
BUILD ?= build
ASAN_BUILD ?= build-asan
DATA ?= ./plenum-data

.PHONY: all deps build run test unit asan integration fuzz bench clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/build.ninja:
	@meson setup $(BUILD) --buildtype=debugoptimized >/dev/null

build: deps $(BUILD)/build.ninja
	@ninja -C $(BUILD) >/dev/null

run: build
	$(BUILD)/plenum server --data $(DATA)

test: build
	@scripts/test.sh

bench: build
	@bench/store.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-tsan
