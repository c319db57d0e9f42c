# kvmstack — see README.md. Every target installs what it needs itself.
SHELL := /bin/bash
GO ?= go
export CGO_ENABLED := 0
BIN := build/bin
GOBIN_DIR := $(CURDIR)/build/tools
STATICCHECK := $(GOBIN_DIR)/staticcheck
STATICCHECK_VERSION := v0.7.0
# Packages tested without guests, and the orchestrator (with -race, which needs cgo).
UNIT_PKGS := ./vmm/... ./firmware/... ./cmd/vmm/... ./virtio/... ./netdev/... ./tests/kvmhost/... ./benchmarks/...
RACE_PKGS := ./orchestrator/... ./cmd/kvmstack/...

.PHONY: all deps build kit test test-unit test-race test-e2e test-cluster test-cloud fuzz bench lint fmt demo demo-vmm clean

all: build

# Debian packages for the tests, the nested test host and the benchmarks; the kit's build script
# installs the kernel build's own.
APT_PKGS := qemu-system-x86 busybox-static cpio xz-utils e2fsprogs gcc libc6-dev linux-libc-dev \
	acpica-tools iproute2 ca-certificates

## deps: Debian packages and Go modules everything here needs (idempotent)
deps:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(GO) mod download

## build: the vmm and kvmstack binaries, and the test-host runner
build:
	$(GO) build -o $(BIN)/vmm ./cmd/vmm
	$(GO) build -o $(BIN)/kvmhost-run ./tests/kvmhost/cmd/kvmhost-run
	@if [ -d cmd/kvmstack ]; then $(GO) build -o $(BIN)/kvmstack ./cmd/kvmstack; fi

## kit: the guest kit (kernel, stock kernel, initrd, rootfs) and the nested test host
kit:
	bash firmware/kit/build.sh
	bash tests/kvmhost/build.sh

## test: the whole suite: vet, unit and fuzz seeds, race-checked orchestrator, cluster, e2e boots
test: deps build kit
	$(GO) vet ./...
	$(MAKE) test-unit test-race test-cluster test-e2e test-cloud

test-unit:
	$(GO) test -count=1 $(UNIT_PKGS)
	@# The packages' own real-KVM tests, in the nested test host when there is no /dev/kvm.
	KVMSTACK_KVMHOST=1 $(GO) test -count=1 ./vmm/kvm/ ./vmm/arch/x86/

test-race:
	CGO_ENABLED=1 $(GO) test -race -count=1 $(RACE_PKGS)

test-cluster:
	@if [ -d tests/cluster ]; then CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 15m ./tests/cluster/...; fi

## test-e2e: boots real guests (inside the nested test host when there is no /dev/kvm)
test-e2e: build
	@# The full log is build/e2e.log; on failure the failed tests' whole output and the log's tail are shown as well.
	@$(GO) test -count=1 -timeout 40m -v ./tests/e2e/ 2>&1 | tee build/e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|kvmhost:|e2e:|\s+\S+_test.go)' ; \
	rc=$${PIPESTATUS[0]}; if [ $$rc -ne 0 ]; then echo "--- last 40 lines of build/e2e.log:"; tail -n 40 build/e2e.log; awk -f .ci/failures.awk build/e2e.log; fi; exit $$rc

## test-cloud: three hosts (server + agent each) in network namespaces with real guests: DHCP and
## ping across VXLAN, isolation, cleanup, agent kill, host down + evacuate, vmm killed, disk full
test-cloud: build
	@$(GO) test -count=1 -timeout 30m -v ./tests/cloud/ 2>&1 | tee build/cloud.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|kvmhost:|cloud:|\s+\S+_test.go)' ; \
	rc=$${PIPESTATUS[0]}; if [ $$rc -ne 0 ]; then echo "--- last 40 lines of build/cloud.log:"; tail -n 40 build/cloud.log; awk -f .ci/failures.awk build/cloud.log; fi; exit $$rc

## fuzz: every fuzz target for FUZZTIME each (their seed corpora already run in make test)
FUZZTIME ?= 10s
fuzz:
	@for d in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for t in $$(grep -h '^func Fuzz' $$d/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "== $$d $$t ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$d || exit 1; \
	  done; \
	done

## bench: microbenchmarks and side-by-side tables (see README, Performance)
bench: build kit
	bash benchmarks/run.sh

## lint: gofmt, go vet, staticcheck
lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

$(STATICCHECK):
	GOBIN=$(GOBIN_DIR) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

fmt:
	gofmt -w $$(git ls-files '*.go')

## demo: the cloud on this machine: kvmstack dev, images, a flavor, a network and two instances
## that take DHCP leases and ping each other, their consoles shown through the CLI (the cloud is
## left running where there is /dev/kvm; DEMO_ARGS=--stop tears it down; without /dev/kvm it runs
## and ends in the nested test host)
demo: deps build kit
	sh scripts/demo.sh $(DEMO_ARGS)

## demo-vmm: one kit guest on the bare vmm, its console shown
demo-vmm: deps build kit
	$(BIN)/kvmhost-run --file $(BIN)/vmm --file build/kit/vmlinux --file build/kit/initrd.img -- \
		$(CURDIR)/$(BIN)/vmm --kernel $(CURDIR)/build/kit/vmlinux --initrd $(CURDIR)/build/kit/initrd.img \
		--cpus 2 --memory 256M --cmdline "console=ttyS0 reboot=k panic=-1 kit.run=$$(printf 'uname -a; cat /proc/cpuinfo | grep -c processor; free -m' | base64 -w0)"

clean:
	rm -rf build/bin build/e2e.log build/cloud.log
