#!/usr/bin/env bash
# make bench: release build of the plugin, then the benchmark harness (crates/multus-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release --bin multus
cargo build --locked --release -p multus-bench
exec target/release/multus-bench --multus target/release/multus --out target/bench.json "$@"
