# multus-rs — the README's commands. Everything the targets need is installed here,
# idempotently, from Debian's packages (CI starts from a fresh machine).

CARGO ?= cargo
DEB_PACKAGES := containernetworking-plugins iproute2 iptables iputils-ping jq curl
STAMP := target/.deps-installed

.PHONY: deps build release test lint demo bench bench-agent clean-netns

$(STAMP):
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@mkdir -p target && touch $(STAMP)

deps: $(STAMP)

# crates/cri-e2e compiles the CRI proto with protoc: every workspace build needs it.
PROTO_PACKAGES := protobuf-compiler
# What make e2e drives: containerd's CRI plugin (runc) and podman; busybox for podman's rootfs.
E2E_PACKAGES := containerd runc podman busybox-static

# Installs the missing packages among $(1); apt-get update only when the package lists
# are more than an hour old (on a fresh machine the deps stamp has just refreshed them).
define apt-install
@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
if [ -n "$$missing" ]; then \
  echo "installing Debian packages:$$missing"; \
  find /var/lib/apt/lists -maxdepth 1 -name '*Release' -mmin -60 2>/dev/null | grep -q . || apt-get update -qq; \
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
fi
endef

.PHONY: proto-deps e2e-deps e2e
proto-deps:
	$(call apt-install,$(PROTO_PACKAGES))
deps build lint: proto-deps

e2e-deps:
	$(call apt-install,$(E2E_PACKAGES))

build:
	$(CARGO) build --locked --workspace --all-targets

release:
	$(CARGO) build --locked --release --bin multus

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# Unit tests, integration tests with Debian's real plugins in real network namespaces,
# the Kubernetes API stand-in, failure paths and bad inputs.
test: deps lint
	$(CARGO) build --locked --workspace --bins --examples
	$(CARGO) test --locked --workspace --all-targets -- --test-threads=2
	$(MAKE) e2e

demo: deps
	$(CARGO) build --locked -p multus -p kube-standin --bins
	bash scripts/demo.sh

bench: deps
	bash scripts/bench.sh

bench-agent: deps
	bash scripts/bench-agent.sh

# End to end through the real callers: containerd's CRI plugin (driven over its socket
# as kubelet does) and podman; prints "N passed, M failed" (crates/cri-e2e).
e2e: deps e2e-deps
	bash scripts/e2e.sh
# Fuzzing, not part of `make test`: every cargo-fuzz target of fuzz/ for FUZZ_SECONDS
# each, new inputs kept in fuzz/corpus/<target>, crashes in fuzz/artifacts/<target>.
# cargo-fuzz wants a nightly toolchain; RUSTC_BOOTSTRAP=1 makes this stable one accept
# its -Z flags (AddressSanitizer included). See docs/reliability.md.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= annotation config result cache

fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t && \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t corpus/$$t seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -print_final_stats=1 || exit 1; \
	done

# Leftovers of interrupted test runs: namespaces whose names our tests use.
clean-netns:
	@for ns in $$(ip netns list | awk '{print $$1}' | grep -E '^(mrs-|mdemo-)'); do ip netns del $$ns; done
