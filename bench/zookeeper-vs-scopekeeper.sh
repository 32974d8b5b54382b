#!/usr/bin/env bash
# Issue 2's measurement, in one sitting: `scopekeeper bench` against `scopekeeper dev` and against a
# 3-server ZooKeeper 3.8 ensemble on the same machine, same workload code, reported as ratios.
#   bash bench/zookeeper-vs-scopekeeper.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
work=$(mktemp -d /tmp/sk-vs-zk.XXXXXX)
export SCOPEKEEPER_CONFIG="$work/client.toml"
cargo build --release -p scopekeeper >/dev/null
bin=target/release/scopekeeper

cleanup() {
  bash bench/zookeeper-ensemble.sh stop "$work/zk" || true
  [ -n "${dev_pid:-}" ] && kill -INT "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null || true
}
trap 'cleanup; rm -rf "$work"' EXIT

started=$(date +%s%N)
"$bin" dev --data "$work/dev" --base-port 17001 > "$work/dev.log" 2>&1 &
dev_pid=$!
until grep -q "ready in" "$work/dev.log"; do
  kill -0 "$dev_pid" 2>/dev/null || { cat "$work/dev.log"; exit 1; }
  sleep 0.05
done
echo "scopekeeper dev: $(grep -o 'ready in [0-9]* ms' "$work/dev.log") (fresh data, certificates included; wall $(( ($(date +%s%N) - started) / 1000000 )) ms)"
zk_hosts=$(bash bench/zookeeper-ensemble.sh start "$work/zk")

run() { # target clients mix
  "$bin" bench --target "$1" --zk-hosts "$zk_hosts" --clients "$2" --mix "$3" --duration "$secs" --value-size 100 --json
}
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

printf '\n%-28s %12s %12s %8s %10s %10s %10s %10s\n' workload "sk ops/s" "zk ops/s" ratio "sk p50" "zk p50" "sk p99" "zk p99"
for spec in "1 create=1" "64 create=1" "64 get=1" "64 get=9,set=1"; do
  set -- $spec
  sk=$(run scopekeeper "$1" "$2")
  zk=$(run zookeeper "$1" "$2")
  sko=$(field "$sk" ops_per_sec); zko=$(field "$zk" ops_per_sec)
  printf '%-28s %12.0f %12.0f %8.2f %8.2fms %8.2fms %8.2fms %8.2fms\n' "$1 clients $2" "$sko" "$zko" \
    "$(python3 -c "print($sko / max($zko, 1e-9))")" "$(field "$sk" p50_ms)" "$(field "$zk" p50_ms)" \
    "$(field "$sk" p99_ms)" "$(field "$zk" p99_ms)"
done
echo
echo "machine: $(nproc) cores, $(uname -sr); ratio = Scopekeeper / ZooKeeper in this run"
