# pushrelay build and test entry points. `make test` is what CI runs.

GO        ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
PKGS      := ./...
VERSION   ?= $(shell cat VERSION 2>/dev/null || echo 0.1.0)
REVISION  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BRANCH    ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X github.com/prometheus/common/version.Version=$(VERSION) \
             -X github.com/prometheus/common/version.Revision=$(REVISION) \
             -X github.com/prometheus/common/version.Branch=$(BRANCH)

# Debian packages the end-to-end tests drive: a real Prometheus server (and
# promtool), the Python client that Windmill scripts use, the reference
# Pushgateway and a headless Chromium for the web UI.
DEB_PACKAGES := prometheus python3-prometheus-client prometheus-pushgateway chromium

.PHONY: all build otelcol run deps test check unit bench clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o pushrelay ./cmd/pushrelay
	CGO_ENABLED=0 $(GO) build -o pushrelay-bench ./cmd/pushrelay-bench

# otelcol builds the OpenTelemetry Collector that `pushrelay-bench --spans
# --spans-otelcol-bin` measures beside pushrelay (its own Go module).
otelcol:
	cd bench/otelcol && CGO_ENABLED=0 $(GO) build -o ../../otelcol-spanmetrics .

# run starts pushrelay with its defaults: port 9091, bbolt file data/pushrelay.db.
run: build
	./pushrelay

# deps installs what the tests need on a fresh Debian machine.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi
	$(GO) mod download

check:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)
	$(GO) mod tidy && git diff --exit-code go.mod go.sum
	cd bench/otelcol && $(GO) vet ./... && $(GO) mod tidy && git diff --exit-code go.mod go.sum

# test runs every check and every test, end-to-end ones included, with the race detector.
test: deps check
	PUSHRELAY_E2E=1 $(GO) test -race -count=1 -timeout 20m $(PKGS)

unit:
	$(GO) test -race -short $(PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./gateway/ ./persistence/ ./spanmetrics/

clean:
	rm -f pushrelay pushrelay-bench otelcol-spanmetrics
