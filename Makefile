# ggfleet — run `make help` for the targets.
GO        ?= go
BIN       ?= bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X github.com/ggfleet/ggfleet/internal/version.Version=$(VERSION) -X github.com/ggfleet/ggfleet/internal/version.Commit=$(COMMIT)
FUZZTIME  ?= 10s
BENCH_DURATION ?= 10m
BENCH_OUT ?= testout/agentbench.md
FLEET_CONFIGS ?= sqlite-1,postgres-1,postgres-3
FLEET_CORES   ?= 10000
FLEET_AGENTS  ?= 1000
DIST      ?= dist
NFPM      ?= .bin/nfpm
NFPM_VERSION := v2.45.2
# Package version: VERSION without its leading v; a bare commit becomes 0.0.0+git<commit>.
# Package version: a tag (v1.2.3[-n-gHASH]) as is, anything else (a bare
# commit, possibly starting with a digit) as 0.0.0+git<commit>.
PKG_VERSION := $(shell echo '$(VERSION)' | sed -E 's/^v([0-9]+\.[0-9]+)/\1/; s/-/+/g; /^[0-9]+\.[0-9]+/!s/^/0.0.0+git/')
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $(HOME)/go/bin/staticcheck)

.PHONY: help build build-agent cross package run test test-unit e2e e2e-device faults fuzz check fmt tidy vet staticcheck clean

help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

build: ## build the ggfleet binary into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ggfleet ./broker/cmd/ggfleet

build-agent: ## build the ggagent binary into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ggagent ./agent/cmd/ggagent

cross: ## static builds into DIST (default dist/): ggagent linux/amd64, arm64, armv7; ggfleet linux/amd64, arm64; SHA256SUMS
	@mkdir -p $(DIST)
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/ggagent_linux_amd64 ./agent/cmd/ggagent
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/ggagent_linux_arm64 ./agent/cmd/ggagent
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/ggagent_linux_armv7 ./agent/cmd/ggagent
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/ggfleet_linux_amd64 ./broker/cmd/ggfleet
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/ggfleet_linux_arm64 ./broker/cmd/ggfleet
	cd $(DIST) && sha256sum ggagent_linux_* ggfleet_linux_* > SHA256SUMS

$(NFPM):
	GOBIN=$(CURDIR)/.bin $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

package: cross $(NFPM) ## .deb and .rpm of ggagent and ggfleet for every `make cross` architecture, into DIST
	$(GO) run ./packaging/cmd/renderunits $(DIST)/units
	@set -e; for spec in ggagent:amd64:amd64 ggagent:arm64:arm64 ggagent:armv7:arm7 ggfleet:amd64:amd64 ggfleet:arm64:arm64; do \
		prog=$${spec%%:*}; rest=$${spec#*:}; arch=$${rest%%:*}; nfpmarch=$${rest#*:}; \
		for pkgr in deb rpm; do \
			ARCH=$$nfpmarch GOARM=7 VERSION='$(PKG_VERSION)' BIN=$(DIST)/$${prog}_linux_$$arch UNITS=$(DIST)/units \
				$(NFPM) package --config packaging/nfpm/$$prog.yaml --packager $$pkgr --target $(DIST)/; \
		done; \
	done

run: build ## run the broker with its embedded defaults (data in ./ggfleet-data)
	$(BIN)/ggfleet serve

test: ## run every test: unit, behaviour (e2e against the built binary) and a short run of each fuzz target
	$(GO) test -count=1 -timeout 30m ./...
	$(MAKE) fuzz

test-unit: ## run the unit tests only (no e2e)
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e: ## run the behaviour tests against the built binaries
	$(GO) test -count=1 -timeout 30m -v ./e2e/...

e2e-device: package ## the fresh-device test (root): boot Debian under systemd-nspawn, install ggagent from the .deb, from install.sh and with ggfleet cores bootstrap over SSH
	$(GO) test -tags devicetest -count=1 -timeout 30m -v -run 'TestFreshDevice|TestBootstrapOverSSH' ./e2e/device/

faults: ## the fault and abuse suite at full size (GGFLEET_FAULTS=full: 10 crash seeds, 2-minute outages, 5,000 agents for 10 minutes); `go test ./e2e` runs it reduced
	GGFLEET_FAULTS=full $(GO) test -count=1 -timeout 240m -v -run 'TestFaults' ./e2e/

fuzz: ## run each fuzz target for FUZZTIME (default 10s)
	./.ci/fuzz.sh $(FUZZTIME)

bench: ## measure ggagent (sizes, start-up, RSS and CPU over BENCH_DURATION, default 10m) into BENCH_OUT, then bench-patch, bench-aws and bench-fleet; see BENCHMARKS.md
	$(GO) run ./bench/agentbench -duration $(BENCH_DURATION) -out $(BENCH_OUT)
	$(MAKE) bench-patch
	$(MAKE) bench-aws
	$(MAKE) bench-fleet

bench-patch: ## patching (root, sshd): 1 MiB over a 115200 8N1 console, and a patch to 50 SSH targets at concurrency 16 vs a scp+ssh loop, into testout/patchbench.md
	$(GO) run ./bench/patchbench -serial-size 1048576 -ssh-targets 50 -ssh-concurrency 16 -out testout/patchbench.md

bench-aws: ## --provider aws against the in-repo AWS fake at AWS's default quotas: one 2,000-core task, achieved rate vs the quota ceiling, into testout/awsbench.md; see BENCHMARKS.md
	@mkdir -p testout
	$(GO) run ./bench/awsbench -cores 2000 -out testout/awsbench.md

bench-fleet: ## fleet P1 (FLEET_CORES cores via the API vs crypto only), P3 (API p99 under P1 vs idle), P4 (deployment to FLEET_AGENTS simulated agents vs the MQTT-only bound), P5 (their health burst into the database vs Mosquitto alone), P7 (2,000-agent reconnect storm vs in-process TLS handshakes) for FLEET_CONFIGS (needs PostgreSQL and mosquitto), into testout/fleetbench.md; see BENCHMARKS.md
	@mkdir -p testout
	$(GO) run ./bench/fleetbench -configs $(FLEET_CONFIGS) -cores $(FLEET_CORES) -agents $(FLEET_AGENTS) -out testout/fleetbench.md

bench-mqtt: ## compare the embedded MQTT broker with Mosquitto (P5 health ingestion, P7 2,000-agent mTLS reconnect storm) into testout/mqttbench.md; see BENCHMARKS.md
	$(GO) run ./bench/mqttbench -out testout/mqttbench.md

check: fmt tidy vet staticcheck cross ## gofmt, go mod tidy, go vet, staticcheck and the cross builds

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

tidy:
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }

vet:
	$(GO) vet ./...

staticcheck:
	$(STATICCHECK) ./...

clean: ## remove build outputs
	rm -rf $(BIN) $(DIST) dist testout
