#!/usr/bin/env bash
# Issue 3's figures, paired inside one cluster: the throughput, p50 and node CPU per create a
# policy costs at CLIENTS clients. bench/policy-overhead.sh starts a fresh dev cluster per
# variant, and between two fresh clusters the figures move by as much as the policy's share
# (its per-round ratios to no policy spread from 0.65 to 1.36 in one run); here one
# `scopekeeper dev` serves every run, and each pair is two bench runs back to back, each into a
# new scope of its own: one without a policy, one with POLICY (`open` or `limits`), in
# alternating order. The figures are medians over the pairs of each pair's ratio or difference,
# each with a 95% confidence interval that assumes nothing about how the pairs are distributed.
#   bash bench/policy-paired.sh [pairs, default 10] [seconds per run, default 5] [policy, default open] [clients, default 1]
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-10}
secs=${2:-5}
policy=${3:-open}
clients=${4:-1}
case "$policy" in
  open) params="" ;;
  limits) params='{"max_data_bytes": 1024, "max_children": 1000000, "max_depth": 8}' ;;
  *) echo "policy must be open or limits, not $policy" >&2; exit 2 ;;
esac
work=$(mktemp -d /tmp/sk-policy-paired.XXXXXX)
export SCOPEKEEPER_CONFIG="$work/client.toml"
cargo build --release -p scopekeeper >/dev/null
bin=target/release/scopekeeper
"$bin" policy build "policies/$policy" --out "$work/policy.wasm" >/dev/null 2>&1

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

python3 - "$work/runs" "$policy" "$ticks" "$clients" <<'PY'
import json, math, statistics, sys
runs, policy, ticks, clients = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
pairs = {}
for line in open(runs):
    pair, variant, rest = line.split(" ", 2)
    report, cpu = rest.rsplit(" ", 1)
    d = json.loads(report)
    pairs.setdefault(pair, {})[variant] = (d["ops_per_sec"], d["p50_ms"] * 1000,
                                           1e6 * int(cpu) / ticks / d["ops"])
print(f"{'pair':>4} {'creates/s none':>15} {policy:>8} {'ratio':>6} {'p50 none us':>12} {policy:>8} "
      f"{'added':>6} {'CPU/create none':>16} {policy:>8} {'added':>7}")
for k, v in pairs.items():
    n, p = v["none"], v[policy]
    print(f"{k:>4} {n[0]:15.0f} {p[0]:8.0f} {p[0] / n[0]:6.3f} {n[1]:12.0f} {p[1]:8.0f} {p[1] - n[1]:+6.0f} "
          f"{n[2]:16.1f} {p[2]:8.1f} {p[2] - n[2]:+7.1f}")
def median(f, fmt):
    """The median over the pairs and, with no assumption about the pairs' distribution, a 95%
    confidence interval for it: the order statistics k and n-k+1, k the largest with
    P(Binomial(n, 1/2) < k) <= 2.5%."""
    xs = sorted(f(v["none"], v[policy]) for v in pairs.values())
    n, k = len(xs), 0
    while sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n <= 0.025:
        k += 1
    ci = f" (95% CI {xs[k - 1]:{fmt}} to {xs[n - k]:{fmt}})" if k > 0 else " (too few pairs for a 95% CI)"
    return f"{statistics.median(xs):{fmt}}{ci}"
print(f"median over {len(pairs)} pairs at {clients} clients: throughput "
      f"{median(lambda n, p: p[0] / n[0], '.3f')} of none; p50 added "
      f"{median(lambda n, p: p[1] - n[1], '+.0f')} us; node CPU per create added "
      f"{median(lambda n, p: p[2] - n[2], '+.1f')} us (all three anchors)")
PY
