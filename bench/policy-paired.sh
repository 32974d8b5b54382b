#!/usr/bin/env bash
# Issue 3's figures, paired inside one cluster: the throughput, p50 and node CPU per create a
# policy costs at CLIENTS clients. bench/policy-overhead.sh starts a fresh dev cluster per
# variant, and between two fresh clusters the figures move by as much as the policy's share
# (its per-round ratios to no policy spread from 0.65 to 1.36 in one run); here one
# `scopekeeper dev` serves every run, and each pair is two bench runs back to back, each into a
# new scope of its own: one without a policy, one with POLICY (`open`, `limits` or `floor`), in
# alternating order. The figures are medians over the pairs of each pair's ratio or difference,
# each with a 95% confidence interval that assumes nothing about how the pairs are distributed.
# POLICY `floor` (tests/policies/floor: the bindings alone, admitting everything) measures what
# any policy costs at least: the host's fresh instance per entry on every anchor, and the call.
#   bash bench/policy-paired.sh [pairs, default 10] [seconds per run, default 5]
#                               [policy: open|limits|floor, default open] [clients, default 1]
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-10}
secs=${2:-5}
policy=${3:-open}
clients=${4:-1}
case "$policy" in
  open) params=""; crate=policies/open ;;
  limits) params='{"max_data_bytes": 1024, "max_children": 1000000, "max_depth": 8}'; crate=policies/limits ;;
  floor) params=""; crate=tests/policies/floor ;;
  *) echo "policy must be open, limits or floor, not $policy" >&2; exit 2 ;;
esac
work=$(mktemp -d /tmp/sk-policy-paired.XXXXXX)
export SCOPEKEEPER_CONFIG="$work/client.toml"
cargo build --release -p scopekeeper >/dev/null
bin=target/release/scopekeeper
"$bin" policy build "$crate" --out "$work/policy.wasm" >/dev/null 2>&1

"$bin" dev --data "$work/dev" --base-port 17301 > "$work/dev.log" 2>&1 &
dev_pid=$!
trap 'kill -INT $dev_pid 2>/dev/null; wait $dev_pid 2>/dev/null; rm -rf "$work"' EXIT
until grep -q "ready in" "$work/dev.log"; do sleep 0.05; done
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for ((pair = 0; pair < pairs; pair++)); do
  for k in 0 1; do
    if [ $(( (pair + k) % 2 )) = 0 ]; then
      variant=none; args=(--scopes 1)
    else
      variant=$policy; args=(--scopes 1 --scope-policy "$work/policy.wasm")
      [ -n "$params" ] && args+=(--scope-params "$params")
    fi
    "$bin" bench --clients "$clients" --duration "$secs" --mix create=1 --value-size 100 \
      "${args[@]}" --json > "$work/out" 2> "$work/err" &
    bench_pid=$!
    # The CPU window opens once the new scope's placement has settled (the bench says where
    # its anchors are): its anchors have then stood still for 5 s, long enough to compile the
    # policy (about half a second of CPU). The timed phase starts right after.
    until grep -q "anchors" "$work/err" || ! kill -0 $bench_pid 2>/dev/null; do sleep 0.02; done
    before=$(cpu_ticks "$dev_pid")
    wait $bench_pid
    after=$(cpu_ticks "$dev_pid")
    echo "$pair $variant $(tail -n 1 "$work/out") $((after - before))" >> "$work/runs"
  done
done

python3 bench/paired_stats.py "$work/runs" "$policy" "$ticks" "$clients"
