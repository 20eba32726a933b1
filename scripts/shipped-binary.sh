#!/usr/bin/env bash
# Build the multus binary exactly as the DaemonSet's image ships it (a statically linked
# release build for this host) and print its path. Sourced by image.sh and the benches,
# so that what is measured is what runs on the nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
# The binary is copied onto every node and executed there next to whatever glibc the
# host has: link it statically. crt-static needs an explicit --target so that build
# scripts and proc-macros stay dynamic.
RUSTFLAGS="-C target-feature=+crt-static" nice cargo build --locked --release --bin multus --target "$host" >&2
echo "target/$host/release/multus"
