# multus-rs — the README's commands. Everything the targets need is installed here,
# idempotently, from Debian's packages (CI starts from a fresh machine).

CARGO ?= cargo
DEB_PACKAGES := containernetworking-plugins iproute2 iptables iputils-ping jq curl
STAMP := target/.deps-installed

.PHONY: deps build release test lint unit demo bench fuzz clean-netns

$(STAMP):
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@mkdir -p target && touch $(STAMP)

deps: $(STAMP)

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

demo: deps
	$(CARGO) build --locked --workspace --bins --examples
	bash scripts/demo.sh

bench: deps
	bash scripts/bench.sh

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
