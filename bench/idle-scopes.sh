#!/usr/bin/env bash
# Issue 4's measurement: CPU of an idle `scopekeeper dev` cluster (3 nodes, one process) holding
# N scopes, as a percentage of one core, for each N given (default 10 100 1000).
#   bash bench/idle-scopes.sh [N ...]
# Each N gets a fresh cluster; scopes are created one by one through the CLI, then the cluster
# is left alone for a few seconds and its CPU time is sampled over IDLE_SECS (default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
[ $# -eq 0 ] && counts=(10 100 1000)
idle=${IDLE_SECS:-20}
work=$(mktemp -d /tmp/sk-idle-bench.XXXXXX)
export SCOPEKEEPER_CONFIG="$work/client.toml"
cargo build --release -p scopekeeper >/dev/null
bin=target/release/scopekeeper
ticks=$(getconf CLK_TCK)

dev_pid=""
stop_dev() { [ -n "$dev_pid" ] && kill -INT "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null || true; dev_pid=""; }
trap 'stop_dev; rm -rf "$work"' EXIT
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

declare -A pct rss
for n in "${counts[@]}"; do
  "$bin" dev --data "$work/dev-$n" --base-port 17201 > "$work/dev-$n.log" 2>&1 &
  dev_pid=$!
  until grep -q "ready in" "$work/dev-$n.log"; do sleep 0.05; done
  for i in $(seq 1 "$n"); do "$bin" scope create "/s$i" >/dev/null; done
  sleep 5
  before=$(cpu_ticks "$dev_pid")
  sleep "$idle"
  after=$(cpu_ticks "$dev_pid")
  pct[$n]=$(python3 -c "print(round(100 * ($after - $before) / $ticks / $idle, 1))")
  rss[$n]=$(awk '/VmRSS/ {print $2}' "/proc/$dev_pid/status")
  stop_dev
done

printf '\n%-8s %22s %12s\n' scopes "idle CPU (% of a core)" "RSS (MiB)"
for n in "${counts[@]}"; do
  printf '%-8s %22s %12d\n' "$n" "${pct[$n]}" "$((rss[$n] / 1024))"
done
echo "(3 nodes in one process; $idle s sampled after 5 s of quiet)"
