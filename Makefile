# lbkit — make targets. The two set-up steps a newcomer needs are
# `make demo` and `make test`; everything else here serves them.

GO          ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
PKGS        := ./...

# Debian packages the tests and the demo need, installed by `make deps`
# only when missing: iptables/nftables for the NAT engines, iproute2 for
# the root-namespace check and debugging labs, arping for the arp tests, and
# for the VM tier qemu (TCG) and kmod (depmod over Debian's kernel modules);
# xz-utils for kernels that ship .ko.xz, cpio as an independent reader of the
# initramfs in tier-1 tests. The VM tier also needs apt's package lists
# (it resolves linux-image-amd64), so deps refreshes them when they are empty.
DEB_PKGS := iptables nftables iproute2 arping qemu-system-x86 kmod cpio xz-utils

.PHONY: all deps lint test test-unit test-netns vmtest bench demo

all: test

## deps: install the Debian packages the tests and the demo need (root)
deps:
	@missing=""; \
	for p in $(DEB_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	lists=ok; apt-cache show linux-image-amd64 >/dev/null 2>&1 || lists=empty; \
	if [ -z "$$missing" ] && [ $$lists = ok ]; then echo "deps: all present ($(DEB_PKGS))"; exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "deps: missing:$$missing (apt lists: $$lists) — run make deps as root" >&2; exit 1; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -q; \
	if [ -n "$$missing" ]; then echo "deps: installing$$missing"; apt-get install -y -q --no-install-recommends $$missing; fi

## lint: gofmt, go vet and staticcheck (pinned)
lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags vmtest $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)
	$(GO) run $(STATICCHECK) -tags vmtest $(PKGS)

## test: deps, lint, then all three tiers: tier 1 under the race detector,
## tiers 1 and 2 on the kernel, then the VM
test: deps lint test-unit test-netns vmtest

## test-unit: tier 1 only, no root needed (kernel tests skip under -short)
test-unit:
	$(GO) test -short -race -count=1 $(PKGS)

## test-netns: tiers 1 and 2 (root: network namespaces on this kernel)
test-netns:
	$(GO) test -count=1 -timeout 15m $(PKGS)

## vmtest: tier 3 only, IPVS and IPIP tests in one qemu boot
##         (make vmtest VMTEST_FLAGS='-run IPVS' to narrow it)
vmtest:
	$(GO) run ./internal/vmtest/cmd/vmtest $(VMTEST_FLAGS)

## bench: every benchmark; side-by-side figures are recorded in docs/benchmarks.md
bench:
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m $(PKGS)

## demo: real load balancing in namespaces on this kernel (root);
##       make demo ENGINE=iptables DEMO_FLAGS='-weights 1,2,3 -keep'
ENGINE ?= iptables
demo: deps
	$(GO) run ./examples/lab -engine $(ENGINE) $(DEMO_FLAGS)
