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
binary=$(bash scripts/shipped-binary.sh)
nice cargo build --locked -p cri-e2e --bin oci-image
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
target/debug/oci-image --binary "$binary" --name "$IMAGE" --out "$OUT" --revision "$revision"
