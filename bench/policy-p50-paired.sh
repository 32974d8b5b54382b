#!/usr/bin/env bash
# Issue 3's 1-client figure, paired inside one cluster: the p50 a policy adds to sequential
# creates, and the node CPU per create beside it. bench/policy-overhead.sh starts a fresh dev
# cluster per variant, and between two fresh clusters the p50 moves by as much as the policy's
# share; here one `scopekeeper dev` serves every run, and each pair is two bench runs back to
# back, each into a new scope of its own: one without a policy, one with POLICY (`open` or
# `limits`), in alternating order. The figure is the median over the pairs.
#   bash bench/policy-p50-paired.sh [pairs, default 10] [seconds per run, default 5] [policy, default open]
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-10}
secs=${2:-5}
policy=${3:-open}
case "$policy" in
  open) params="" ;;
  limits) params='{"max_data_bytes": 1024, "max_children": 1000000, "max_depth": 8}' ;;
  *) echo "policy must be open or limits, not $policy" >&2; exit 2 ;;
esac
work=$(mktemp -d /tmp/sk-policy-p50.XXXXXX)
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
    before=$(cpu_ticks "$dev_pid")
    out=$("$bin" bench --clients 1 --duration "$secs" --mix create=1 --value-size 100 "${args[@]}" --json 2>/dev/null)
    after=$(cpu_ticks "$dev_pid")
    # The scope's creation and placement run inside the CPU window too: the same for both.
    echo "$pair $variant $(echo "$out" | tail -n 1) $((after - before))" >> "$work/runs"
  done
done

python3 - "$work/runs" "$policy" "$ticks" <<'PY'
import json, statistics, sys
runs, policy, ticks = sys.argv[1], sys.argv[2], int(sys.argv[3])
pairs = {}
for line in open(runs):
    pair, variant, rest = line.split(" ", 2)
    report, cpu = rest.rsplit(" ", 1)
    d = json.loads(report)
    pairs.setdefault(pair, {})[variant] = (d["p50_ms"] * 1000, 1e6 * int(cpu) / ticks / d["ops"])
added = [v[policy][0] - v["none"][0] for v in pairs.values()]
cpu = [v[policy][1] - v["none"][1] for v in pairs.values()]
print(f"{'pair':>4} {'p50 none us':>12} {'p50 ' + policy + ' us':>14} {'added':>7} {'CPU/create none':>16} {policy:>8} {'added':>7}")
for k, v in pairs.items():
    print(f"{k:>4} {v['none'][0]:12.0f} {v[policy][0]:14.0f} {v[policy][0] - v['none'][0]:+7.0f} "
          f"{v['none'][1]:16.1f} {v[policy][1]:8.1f} {v[policy][1] - v['none'][1]:+7.1f}")
print(f"median over {len(added)} pairs: p50 added {statistics.median(added):+.0f} us, "
      f"node CPU per create added {statistics.median(cpu):+.1f} us (all three anchors)")
PY
