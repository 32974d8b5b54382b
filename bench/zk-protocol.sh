#!/usr/bin/env bash
# Issue 8's measurement, in one sitting: the same `scopekeeper bench` workloads against
#   native  Scopekeeper's native API (QUIC) on `scopekeeper dev`,
#   sk-zk   the same dev cluster through its ZooKeeper-protocol listeners,
#   zk      a 3-server ZooKeeper 3.8 ensemble on the same machine,
# the last two through one driver (the Rust `zookeeper-client` crate), reported as ratios.
#   bash bench/zk-protocol.sh [seconds per run, default 10] [linearizable|sequential]
# The second argument is the dev cluster's `--zk-reads` (default linearizable; sequential is
# ZooKeeper's own guarantee) and the native client's `--reads`.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
reads=${2:-linearizable}
work=$(mktemp -d /tmp/sk-zk-protocol.XXXXXX)
export SCOPEKEEPER_CONFIG="$work/client.toml"
cargo build --release -p scopekeeper >/dev/null
bin=target/release/scopekeeper

cleanup() {
  bash bench/zookeeper-ensemble.sh stop "$work/zk" || true
  [ -n "${dev_pid:-}" ] && kill -INT "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null || true
}
trap 'cleanup; rm -rf "$work"' EXIT

"$bin" dev --data "$work/dev" --base-port 17101 --zk-base-port 12381 --zk-reads "$reads" > "$work/dev.log" 2>&1 &
dev_pid=$!
until grep -q "ready in" "$work/dev.log"; do
  kill -0 "$dev_pid" 2>/dev/null || { cat "$work/dev.log"; exit 1; }
  sleep 0.05
done
sk_zk_hosts=127.0.0.1:12381,127.0.0.1:12382,127.0.0.1:12383
zk_hosts=$(bash bench/zookeeper-ensemble.sh start "$work/zk")

run() { # target hosts clients mix
  "$bin" bench --target "$1" --zk-hosts "$2" --clients "$3" --mix "$4" --duration "$secs" --value-size 100 --reads "$reads" --json
}
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

printf '\n%-20s %10s %10s %10s %9s %9s %24s %24s\n' workload "native/s" "sk-zk/s" "zk/s" \
  "zk/native" "sk-zk/zk" "p50 native/sk-zk/zk ms" "p99 native/sk-zk/zk ms"
for spec in "1 create=1" "64 create=1" "1 get=1" "64 get=1" "64 get=9,set=1"; do
  set -- $spec
  native=$(run scopekeeper "" "$1" "$2")
  skzk=$(run zookeeper "$sk_zk_hosts" "$1" "$2")
  zk=$(run zookeeper "$zk_hosts" "$1" "$2")
  n=$(field "$native" ops_per_sec); s=$(field "$skzk" ops_per_sec); z=$(field "$zk" ops_per_sec)
  for out in "$native" "$skzk" "$zk"; do
    [ "$(field "$out" errors)" = 0 ] || echo "($(field "$out" errors) errors in $1 clients $2)"
  done
  printf '%-20s %10.0f %10.0f %10.0f %9.2f %9.2f %24s %24s\n' "$1 clients $2" "$n" "$s" "$z" \
    "$(python3 -c "print($s / max($n, 1e-9))")" "$(python3 -c "print($s / max($z, 1e-9))")" \
    "$(printf '%.2f/%.2f/%.2f' "$(field "$native" p50_ms)" "$(field "$skzk" p50_ms)" "$(field "$zk" p50_ms)")" \
    "$(printf '%.2f/%.2f/%.2f' "$(field "$native" p99_ms)" "$(field "$skzk" p99_ms)" "$(field "$zk" p99_ms)")"
done
echo
echo "zk/native = Scopekeeper through the ZooKeeper protocol / its native API;"
echo "sk-zk/zk = Scopekeeper through the ZooKeeper protocol / ZooKeeper 3.8; Scopekeeper's reads $reads;"
echo "same run, $(nproc) cores, $(uname -sr)"
