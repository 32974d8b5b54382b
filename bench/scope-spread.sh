#!/usr/bin/env bash
# Issue 4's measurement: write throughput of one scope against the same load spread over 3 and
# 9 scopes, on the dev cluster (3 nodes on one machine, so this shows the overhead of many
# groups, not scaling), in one sitting, each on a fresh cluster.
#   bash bench/scope-spread.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
work=$(mktemp -d /tmp/sk-spread-bench.XXXXXX)
export SCOPEKEEPER_CONFIG="$work/client.toml"
cargo build --release -p scopekeeper >/dev/null
bin=target/release/scopekeeper

dev_pid=""
stop_dev() { [ -n "$dev_pid" ] && kill -INT "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null || true; dev_pid=""; }
trap 'stop_dev; rm -rf "$work"' EXIT
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

declare -A ops p50 p99
for n in 1 3 9; do
  "$bin" dev --data "$work/dev-$n" --base-port 17301 > "$work/dev-$n.log" 2>&1 &
  dev_pid=$!
  until grep -q "ready in" "$work/dev-$n.log"; do sleep 0.05; done
  out=$("$bin" bench --clients 64 --duration "$secs" --mix create=1 --value-size 100 --scopes "$n" --json)
  ops[$n]=$(field "$out" ops_per_sec); p50[$n]=$(field "$out" p50_ms); p99[$n]=$(field "$out" p99_ms)
  stop_dev
done

printf '\n%-7s %16s %10s %10s %10s\n' scopes "64c creates/s" "vs 1" "p50 (ms)" "p99 (ms)"
for n in 1 3 9; do
  printf '%-7s %16.0f %10.2f %10.2f %10.2f\n' "$n" "${ops[$n]}" \
    "$(python3 -c "print(${ops[$n]} / ${ops[1]})")" "${p50[$n]}" "${p99[$n]}"
done
