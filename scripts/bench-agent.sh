#!/usr/bin/env bash
# make bench-agent: the node agent's figures (issue 14) against the API stand-in; needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release --bin multus
cargo build --locked --release -p multus-bench
exec target/release/agent-bench --multus target/release/multus --out target/bench-agent.json "$@"
