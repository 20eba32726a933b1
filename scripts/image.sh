#!/usr/bin/env bash
# make image: the DaemonSet's image (deployments/multus-daemonset.yml) as an OCI image
# archive, offline: a statically linked release binary packed by crates/cri-e2e's
# oci-image (no Docker engine, no registry, no base image to pull).
#   IMAGE=registry.example/multus-rs:0.1.0 make image   # another name
# Then: ctr -n k8s.io images import target/multus-image.tar   (on each node), or
#       skopeo copy oci-archive:target/multus-image.tar docker://registry.example/multus-rs:0.1.0
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
IMAGE=${IMAGE:-localhost/multus-rs:$version}
OUT=${OUT:-target/multus-image.tar}
host=$(rustc -vV | sed -n 's/^host: //p')
# The binary is copied onto every node and executed there next to whatever glibc the
# host has: link it statically. crt-static needs an explicit --target so that build
# scripts and proc-macros stay dynamic.
RUSTFLAGS="-C target-feature=+crt-static" nice cargo build --locked --release --bin multus --target "$host"
nice cargo build --locked -p cri-e2e --bin oci-image
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
target/debug/oci-image --binary "target/$host/release/multus" --name "$IMAGE" --out "$OUT" --revision "$revision"
