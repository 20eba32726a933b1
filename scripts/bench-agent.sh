#!/usr/bin/env bash
# make bench-agent: the node agent's figures (issue 14) against the API stand-in; needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
# The binary the image ships (static), not a dynamically linked variant of it.
multus=$(bash scripts/shipped-binary.sh)
cargo build --locked --release -p multus-bench
exec target/release/agent-bench --multus "$multus" --out target/bench-agent.json "$@"
