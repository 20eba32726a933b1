#!/usr/bin/env bash
# make demo: seed 001 on one machine. Two "nodes" (network namespaces) whose eth1 are
# joined by a veth pair, as koko did between kind workers; a bridge primary network per
# node; the project's Kubernetes API stand-in serving examples/k8s (NADs and pods);
# our multus binary run as containerd runs it, for pod1 on node 1 and pod2 on node 2.
# Idempotent; cleans up after itself, also when interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE_DIR=${PROFILE_DIR:-target/debug}
MULTUS=$PWD/$PROFILE_DIR/multus
STANDIN=$PWD/$PROFILE_DIR/kube-standin
CNI_BIN=${CNI_BIN:-/usr/lib/cni}
WORK=/run/multus-demo
PREFIX=mdemo

# Bold headings on a terminal only: a log file or a pipe gets no escape codes.
if [ -t 1 ]; then say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }; else say() { printf '\n== %s\n' "$*"; }; fi

cleanup() {
  if [ -f "$WORK/standin.pid" ]; then kill "$(cat "$WORK/standin.pid")" 2>/dev/null || true; fi
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX-" || true); do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || { echo "make demo needs root (network namespaces)"; exit 1; }
for f in "$MULTUS" "$STANDIN" "$CNI_BIN/bridge" "$CNI_BIN/macvlan"; do
  [ -x "$f" ] || { echo "missing $f (run 'make demo', which builds and installs everything)"; exit 1; }
done
cleanup
mkdir -p "$WORK"

say "Topology: node1, node2 (eth1 <-> eth1 veth, like koko), pod1 on node1, pod2 on node2"
for n in node1 node2 pod1 pod2; do ip netns add "$PREFIX-$n"; ip -n "$PREFIX-$n" link set lo up; done
ip link add eth1 netns "$PREFIX-node1" type veth peer name eth1 netns "$PREFIX-node2"
ip -n "$PREFIX-node1" link set eth1 up
ip -n "$PREFIX-node2" link set eth1 up
echo "node1: $(ip -n $PREFIX-node1 -br link show eth1)"
echo "node2: $(ip -n $PREFIX-node2 -br link show eth1)"

say "Kubernetes API stand-in with examples/k8s over HTTPS + token (reachable on 127.0.0.1 inside each node)"
TOKEN=demo-token
"$STANDIN" --listen 127.0.0.1:0 --load examples/k8s --token "$TOKEN" --ca-out "$WORK/ca.crt" \
  --also-listen-in-netns "/var/run/netns/$PREFIX-node1" --also-listen-in-netns "/var/run/netns/$PREFIX-node2" \
  --kubeconfig-out "$WORK/kubeconfig" --addr-file "$WORK/api" 2>"$WORK/standin.log" &
echo $! > "$WORK/standin.pid"
for _ in $(seq 100); do [ -s "$WORK/api" ] && break; sleep 0.05; done
API=$(cat "$WORK/api")
echo "API: $API (CA $WORK/ca.crt, bearer token)"
# curl as a client of the API: the stand-in's CA and the token.
kcurl() { curl -s --cacert "$WORK/ca.crt" -H "Authorization: Bearer $TOKEN" "$@"; }
say "The inputs: each NAD's spec.config and each pod's networks annotation"
kcurl "$API/apis/k8s.cni.cncf.io/v1/network-attachment-definitions" | jq -r '.items[] | "NAD \(.metadata.namespace)/\(.metadata.name): \(.spec.config | fromjson? // . | tojson)"'
for i in 1 2; do
  kcurl "$API/_standin/pods/default/pod$i" | jq -r '"pod\('$i') k8s.v1.cni.cncf.io/networks: \(.metadata.annotations["k8s.v1.cni.cncf.io/networks"])"'
done
kcurl -X DELETE "$API/_standin/requests" >/dev/null   # from here on, only the plugin's requests
kcurl -X DELETE "$API/_standin/connections" >/dev/null

node_conf() { # $1 = node number
  cat <<JSON
{
  "cniVersion": "0.3.1",
  "name": "multus-cni-network",
  "type": "multus",
  "kubeconfig": "$WORK/kubeconfig",
  "cniDir": "$WORK/node$1/multus",
  "binDir": "$CNI_BIN",
  "logLevel": "verbose",
  "logFile": "$WORK/node$1/multus.log",
  "logToStderr": false,
  "delegates": [{
    "cniVersion": "0.3.1", "name": "kindnet",
    "plugins": [{ "type": "bridge", "bridge": "cni0", "isGateway": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.244.$1.0/24" }]],
                "routes": [{ "dst": "0.0.0.0/0" }], "dataDir": "$WORK/node$1/ipam" } }]
  }]
}
JSON
}

cni() { # $1 = command, $2 = node number, $3 = pod name, $4 = netns path
  local uid
  uid=$(kcurl "$API/_standin/pods/default/$3" | jq -r '.metadata.uid // ""')
  node_conf "$2" | ip netns exec "$PREFIX-node$2" env -i PATH="$PATH" \
    CNI_COMMAND="$1" CNI_CONTAINERID="demo-$3" CNI_NETNS="$4" CNI_IFNAME=eth0 CNI_PATH="$CNI_BIN" \
    CNI_ARGS="K8S_POD_UID=$uid;IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$3;K8S_POD_INFRA_CONTAINER_ID=demo-$3" \
    "$MULTUS"
}

for i in 1 2; do
  mkdir -p "$WORK/node$i"
  say "ADD pod$i on node$i (CNI_COMMAND=ADD, result on stdout)"
  start=$(date +%s%N)
  cni ADD "$i" "pod$i" "/var/run/netns/$PREFIX-pod$i" | jq -c .
  echo "(multus + delegates: $(( ($(date +%s%N) - start) / 1000000 )) ms)"
done

for i in 1 2; do
  say "pod$i: interfaces"
  ip -n "$PREFIX-pod$i" -br addr show | grep -v '^lo'
  say "pod$i: k8s.v1.cni.cncf.io/network-status"
  kcurl "$API/_standin/pods/default/pod$i" | jq -r '.metadata.annotations["k8s.v1.cni.cncf.io/network-status"]'
done

say "Events (kubectl describe pod)"
kcurl "$API/_standin/events" | jq -r '.[] | "\(.involvedObject.name)\t\(.type)\t\(.reason)\t\(.source.component)\t\(.message)"'

say "ping 10.1.1.102 from pod1 over net1 (node1 eth1 -> node2 eth1)"
ip netns exec "$PREFIX-pod1" ping -c 3 -W 2 -I net1 10.1.1.102
say "ping 10.1.1.101 from pod2 over net1"
ip netns exec "$PREFIX-pod2" ping -c 3 -W 2 -I net1 10.1.1.101

for i in 1 2; do
  say "DEL pod$i (twice, as containerd does: the second with an empty netns)"
  cni DEL "$i" "pod$i" "/var/run/netns/$PREFIX-pod$i" && echo "DEL 1: ok"
  cni DEL "$i" "pod$i" "" && echo "DEL 2: ok"
done

say "Nothing left behind"
for i in 1 2; do
  links=$(ip -n "$PREFIX-pod$i" -br link show | grep -vc '^lo' || true)
  leases=$(find "$WORK/node$i/ipam" -type f ! -name 'last_reserved_ip*' ! -name lock 2>/dev/null | wc -l)
  caches=$(find "$WORK/node$i/multus" -type f 2>/dev/null | wc -l)
  echo "pod$i: links besides lo: $links, host-local leases: $leases, multus cache files: $caches"
  [ "$links" = 0 ] && [ "$leases" = 0 ] && [ "$caches" = 0 ] || { echo "LEAK on pod$i"; exit 1; }
done
say "API requests the plugin made"
kcurl "$API/_standin/requests" | jq -r '.[] | "\(.method) \(.path)"' | sort | uniq -c
echo "plugin connections to the API: $(kcurl "$API/_standin/connections" | jq '[.[] | select(.api_requests > 0)] | length'), TLS handshakes: $(kcurl "$API/_standin/connections" | jq '[.[] | select(.api_requests > 0 and .tls_handshake)] | length'), ALPN: $(kcurl "$API/_standin/connections" | jq -r '[.[] | select(.api_requests > 0) | .alpn] | unique | join(",")')"
say "demo finished: the cleanup removes every namespace, link and file it made"
