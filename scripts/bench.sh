#!/usr/bin/env bash
# make bench: release build of the plugin, then the benchmark harness (crates/multus-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
# The binary the image ships (static), not a dynamically linked variant of it.
multus=$(bash scripts/shipped-binary.sh)
cargo build --locked --release -p multus-bench
exec target/release/multus-bench --multus "$multus" --out target/bench.json "$@"
