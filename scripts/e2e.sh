#!/usr/bin/env bash
# make e2e: multus-rs through its real callers, containerd's CRI plugin and podman.
# Builds the plugin and the driver (crates/cri-e2e), then runs the driver, which sets up
# and removes everything itself (containerd, the API stand-in, the pause image, links)
# and ends with "N passed, M failed". Extra arguments go to the driver (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make e2e needs root (containerd, podman, network namespaces)"; exit 1; }
nice cargo build --locked -p multus -p cri-e2e --bins
# The DaemonSet scenarios run the image of `make image` (a static release build: minutes
# the first time, seconds after).
bash scripts/image.sh
exec target/debug/cri-e2e --multus target/debug/multus "$@"
