#!/usr/bin/env bash
# Starts a local mcplog cluster for trying cluster mode: three NATS servers in one JetStream
# cluster (nats-1.conf .. nats-3.conf beside this script, with the users of nats-auth.conf given
# fresh passwords) and two mcplog nodes following one stream, all on loopback. Ctrl-C (or
# SIGTERM) stops everything.
#
#   deploy/cluster/start-local.sh [DIR]        # state in DIR (default ./cluster-data)
#
# Environment: MCPLOG_BIN (default target/release/mcplog, else `mcplog` on PATH); NATS_PORTS,
# ROUTE_PORTS (three each) and NODE_PORTS (two) to move off the defaults 4222-4224, 6222-6224
# and 8081-8082.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:-./cluster-data}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

mcplog="${MCPLOG_BIN:-}"
if [[ -z "$mcplog" ]]; then
  if [[ -x target/release/mcplog ]]; then mcplog=target/release/mcplog; else mcplog=mcplog; fi
fi
nats_server="$(command -v nats-server || echo /usr/sbin/nats-server)"
[[ -x "$nats_server" ]] || { echo "nats-server not found (apt-get install nats-server)" >&2; exit 1; }

read -r -a nats_ports <<<"${NATS_PORTS:-4222 4223 4224}"
read -r -a route_ports <<<"${ROUTE_PORTS:-6222 6223 6224}"
read -r -a node_ports <<<"${NODE_PORTS:-8081 8082}"

pids=()
stop() {
  trap - INT TERM EXIT
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

# A secret of 24 random bytes in hex, kept in $dir/$1 across restarts.
secret() {
  if [[ ! -s "$dir/$1" ]]; then
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/$1")
  fi
  cat "$dir/$1"
}
# The servers' users (nats-auth.conf) with passwords of their own: the nodes connect as
# `mcplog`; `reader` is for tools.
mcplog_password="$(secret nats-mcplog.password)"
sed -e "s|CHANGE-ME-mcplog|$mcplog_password|" -e "s|CHANGE-ME-reader|$(secret nats-reader.password)|" \
  "$here/nats-auth.conf" >"$dir/nats-auth.conf"

routes=""
for port in "${route_ports[@]}"; do routes+="${routes:+,}nats-route://127.0.0.1:$port"; done
urls=""
for i in 0 1 2; do
  n=$((i + 1))
  # A copy of the ready-made file keeps its JetStream files under $dir; the flags put the server
  # on the chosen ports.
  sed "s|store_dir: .*|store_dir: \"$dir/nats-$n\"|" "$here/nats-$n.conf" >"$dir/nats-$n.conf"
  "$nats_server" -c "$dir/nats-$n.conf" -p "${nats_ports[$i]}" \
    --cluster "nats://127.0.0.1:${route_ports[$i]}" --routes "$routes" \
    >"$dir/nats-$n.log" 2>&1 &
  pids+=($!)
  urls+="${urls:+,}nats://mcplog:$mcplog_password@127.0.0.1:${nats_ports[$i]}"
done

for port in "${nats_ports[@]}"; do
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done

# One master secret for both nodes: a key made on either is accepted by both, and the groups'
# MAC key is derived from it.
master_secret="$(secret master.secret)"
for i in 0 1; do
  node="node-$((i + 1))"
  MCPLOG_NATS_URL="$urls" MCPLOG_MASTER_SECRET="$master_secret" \
    "$mcplog" serve --bind "127.0.0.1:${node_ports[$i]}" --data-dir "$dir/$node" \
    >"$dir/$node.log" 2>&1 &
  pids+=($!)
done

for i in 0 1; do
  node="node-$((i + 1))"
  for _ in $(seq 1 600); do
    grep -q "listening on" "$dir/$node.log" 2>/dev/null && break
    kill -0 "${pids[$((i + 3))]}" 2>/dev/null || { cat "$dir/$node.log" >&2; exit 1; }
    sleep 0.1
  done
  grep -q "listening on" "$dir/$node.log" || { echo "$node did not start; see $dir/$node.log" >&2; exit 1; }
done

echo "NATS: ${urls//$mcplog_password/****} (users and passwords: $dir/nats-auth.conf)"
for i in 0 1; do
  node="node-$((i + 1))"
  echo "$node: http://127.0.0.1:${node_ports[$i]}  admin key: $dir/$node/admin.key"
done
echo "ready; Ctrl-C stops the cluster"
wait -n "${pids[@]}" || true
echo "a process of the cluster exited; stopping" >&2
