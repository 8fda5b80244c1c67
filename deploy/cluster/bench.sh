#!/usr/bin/env bash
# Throughput of the local 2-node cluster beside a single node, in alternating rounds on the same
# machine: `mcplog-load run` against a single `mcplog serve`, then against both cluster nodes at
# once (half the clients each), ROUNDS times. Prints every round and the medians.
#
#   cargo build --release && deploy/cluster/bench.sh [ROUNDS] [SECONDS] [CLIENTS] [BATCH]
#
# WRITERS=1 sends every cluster client to node-1 (the other node only follows), which shows what
# two nodes writing at once cost in groups planned again. Each node's
# mcplog_cluster_publish_retries_total is printed at the end.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
rounds="${1:-3}" seconds="${2:-5}" clients="${3:-64}" batch="${4:-1}"
bin="${MCPLOG_BIN_DIR:-target/release}"
work="$(mktemp -d)"
pids=()
stop() {
  trap - INT TERM EXIT
  kill -s TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop INT TERM EXIT

NATS_PORTS="24222 24223 24224" ROUTE_PORTS="26222 26223 26224" NODE_PORTS="28081 28082" \
  MCPLOG_BIN="$bin/mcplog" "$here/start-local.sh" "$work/cluster" >"$work/cluster.out" 2>&1 &
pids+=($!)
"$bin/mcplog" serve --bind 127.0.0.1:28090 --data-dir "$work/single" >"$work/single.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do
  grep -q '^ready' "$work/cluster.out" 2>/dev/null && grep -q 'listening on' "$work/single.log" && break
  sleep 0.1
done
grep -q '^ready' "$work/cluster.out" || { cat "$work/cluster.out" >&2; exit 1; }

load() { # addr key clients
  "$bin/mcplog-load" run --addr "$1" --key "$2" --clients "$3" --batch "$batch" --seconds "$seconds" |
    awk '{print $1}'
}
single=() cluster=()
for round in $(seq 1 "$rounds"); do
  s=$(load 127.0.0.1:28090 "$(cat "$work/single/admin.key")" "$clients")
  if [[ "${WRITERS:-2}" == 1 ]]; then
    a=$(load 127.0.0.1:28081 "$(cat "$work/cluster/node-1/admin.key")" "$clients")
  else
    half=$((clients / 2))
    a=$(load 127.0.0.1:28081 "$(cat "$work/cluster/node-1/admin.key")" "$half" &
        load 127.0.0.1:28082 "$(cat "$work/cluster/node-2/admin.key")" "$half"; wait)
  fi
  c=$(echo "$a" | awk '{sum += $1} END {print sum}')
  echo "round $round: single node $s events/s, 2-node cluster $c events/s"
  single+=("$s") cluster+=("$c")
done
for port in 28081 28082; do
  echo "node on :$port: $(curl -s "127.0.0.1:$port/metrics" | grep '^mcplog_cluster_publish_retries_total' | tr '\n' ' ')"
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
s=$(median "${single[@]}") c=$(median "${cluster[@]}")
echo "median: single node $s events/s, 2-node cluster $c events/s, ratio $(awk -v c="$c" -v s="$s" 'BEGIN {printf "%.2f", c / s}')"
