# pgshift — build, test and demo. `make demo` and `make test` work on a fresh Debian machine:
# both install missing PostgreSQL binaries first (scripts/deps.sh).
GO      ?= go
BIN     := bin/pgshift
PKGS    := ./...
# Packages with concurrent code run under the race detector in `make test`.
RACE_PKGS := ./internal/...

.PHONY: all build deps test test-short vet fmt-check race demo bench clean

all: build

deps:
	@bash scripts/deps.sh

# The commit goes into `pgshift version` even where GOFLAGS turns the toolchain's VCS stamping off.
LDFLAGS := -X main.buildCommit=$(shell git rev-parse HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo -modified) \
	-X main.buildTime=$(shell git log -1 --format=%cI 2>/dev/null)

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/pgshift

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

test-short:
	$(GO) test -short $(PKGS)

# The full suite: formatting, vet, unit + integration tests (real throwaway PostgreSQL
# clusters), with the race detector on.
test: deps fmt-check vet
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

demo: deps build
	./$(BIN) demo

bench: deps build
	bash bench/run.sh

clean:
	rm -rf bin
