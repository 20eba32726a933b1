# multus-rs — the README's commands. Everything the targets need is installed here,
# idempotently, from Debian's packages (CI starts from a fresh machine).

CARGO ?= cargo
DEB_PACKAGES := containernetworking-plugins iproute2 iptables iputils-ping jq curl
STAMP := target/.deps-installed

.PHONY: deps build release test unit lint demo bench bench-agent clean-netns

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
# gcc + libc6-dev build the static pause program.
E2E_PACKAGES := containerd runc podman busybox-static gcc libc6-dev

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

# rust-toolchain.toml pins the compiler (and so the clippy) CI uses. rustup fetches it
# where it can reach its server; this project's machines cannot, and carry one stable
# toolchain: when that stable is exactly the pinned version, it is made known to rustup
# under the pinned name (a link in rustup's toolchains folder; `rustup toolchain link`
# refuses version-like names). Nothing is downloaded; a different stable is left alone
# and cargo then says which toolchain is missing.
PINNED_RUST := $(shell sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
toolchain:
	@if command -v rustup >/dev/null 2>&1 && ! rustup toolchain list | grep -q "^$(PINNED_RUST)-"; then \
	  v=$$(rustup run stable rustc --version | cut -d' ' -f2); \
	  host=$$(rustup run stable rustc -vV | sed -n 's/^host: //p'); \
	  if [ "$$v" = "$(PINNED_RUST)" ]; then \
	    echo "rustup: the installed stable is $$v, known now as toolchain $(PINNED_RUST)-$$host"; \
	    ln -sfn "$$(rustup run stable rustc --print sysroot)" "$${RUSTUP_HOME:-$$HOME/.rustup}/toolchains/$(PINNED_RUST)-$$host"; \
	  fi; \
	fi

.PHONY: toolchain proto-deps e2e-deps e2e image
proto-deps: toolchain
	$(call apt-install,$(PROTO_PACKAGES))
deps build release lint: proto-deps

# podman's package installs /etc/cni/net.d/87-podman-bridge.conflist, which would make
# any CNI runtime on this machine use podman's bridge: divert it aside (kept across
# package upgrades; `dpkg-divert --rename --remove` restores it).
PODMAN_CNI_CONF := /etc/cni/net.d/87-podman-bridge.conflist
e2e-deps:
	$(call apt-install,$(E2E_PACKAGES))
	@dpkg-divert --list $(PODMAN_CNI_CONF) | grep -q . || \
	  dpkg-divert --local --rename --divert $(PODMAN_CNI_CONF).disabled --add $(PODMAN_CNI_CONF)

build:
	$(CARGO) build --locked --workspace --all-targets

release:
	$(CARGO) build --locked --release --bin multus

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# The fast tier: the library's in-process tests, the verbs included (fakes for the
# delegates and the netns, the API stand-in); no root needed (netlink tests skip without it).
unit: proto-deps
	$(CARGO) test --locked --lib -p multus

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

# The DaemonSet's image as an OCI archive, target/multus-image.tar, built offline from a
# static release binary (scripts/image.sh). Load it with `ctr -n k8s.io images import`.
image: proto-deps
	bash scripts/image.sh

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
