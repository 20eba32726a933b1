# multus-rs image: `multus install` as the entrypoint (see deployments/multus-daemonset.yml).
# With a network and a Docker engine:
#   docker build -t localhost/multus-rs:0.1.0 .
# Offline, without Docker, `make image` packs the same static /usr/bin/multus (alone, no base) as an
# OCI archive: scripts/image.sh.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The binary is copied onto every node and executed there by the container runtime, next
# to whatever glibc the host has: link it statically (crt-static needs an explicit
# --target, so that build scripts and proc-macros stay dynamic).
RUN target="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --bin multus --target "$target" \
 && cp "target/$target/release/multus" /multus

FROM gcr.io/distroless/cc-debian12
COPY --from=builder /multus /usr/bin/multus
ENTRYPOINT ["/usr/bin/multus", "install"]
