#!/usr/bin/env bash
# Issue 5's measurement: the time to split a scope of N znodes (half of them move), and the
# write unavailability it causes in the split subtree and in the rest of the scope, on a fresh
# `scopekeeper dev` (3 nodes in one process).
# `control` makes a control run: all the same but the split (see `scopekeeper bench --help`).
#   bash bench/split.sh [znodes, default 1000000] [control]
set -euo pipefail
cd "$(dirname "$0")/.."
znodes=${1:-1000000}
control=()
[ "${2:-}" = control ] && control=(--split-control)
work=$(mktemp -d /tmp/sk-split-bench.XXXXXX)
export SCOPEKEEPER_CONFIG="$work/client.toml"
cargo build --release -p scopekeeper >/dev/null
bin=target/release/scopekeeper
dev_pid=""
stop_dev() { [ -n "$dev_pid" ] && kill -INT "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null || true; dev_pid=""; }
trap 'stop_dev; [ -n "${SK_KEEP_BENCH_LOG:-}" ] && cp "$work/dev.log" "$SK_KEEP_BENCH_LOG"; rm -rf "$work"' EXIT
"$bin" dev --data "$work/dev" --base-port 17201 > "$work/dev.log" 2>&1 &
dev_pid=$!
until grep -q "ready in" "$work/dev.log"; do sleep 0.05; done
"$bin" bench --split-znodes "$znodes" --value-size 100 "${control[@]}"
echo "machine: $(nproc) cores; dev cluster: 3 nodes in one process"
