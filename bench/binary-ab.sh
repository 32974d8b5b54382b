#!/usr/bin/env bash
# Two builds of scopekeeper, A/B: what a change costs or saves, in node CPU per create, p50 and
# throughput. Fresh clusters of two builds differ by more than most changes do, and one build's
# figures drift by 30% within minutes on this machine; so both builds' dev clusters run at
# once (the idle one costs the other little), and each pair is two bench runs back to back, one
# against each, in alternating order, each into a new scope of its own (with POLICY, or none).
#   bash bench/binary-ab.sh OLD_BIN NEW_BIN [pairs, default 12] [seconds, default 5]
#                           [clients, default 1] [policy: none|open|limits, default limits]
# Build the old binary first and copy it aside, e.g.
#   git stash && cargo build --release -p scopekeeper && cp target/release/scopekeeper /tmp/sk-old
#   git stash pop && cargo build --release -p scopekeeper
#   bash bench/binary-ab.sh /tmp/sk-old target/release/scopekeeper
# To A/B two builds of the policy instead (an SDK or build-setting change), give the same binary
# twice and the two components in POLICY_OLD and POLICY_NEW (each built with `policy build`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,14p "$0" >&2; exit 2; }
declare -A bin=([old]=$(realpath "$1") [new]=$(realpath "$2"))
pairs=${3:-12}
secs=${4:-5}
clients=${5:-1}
policy=${6:-limits}
case "$policy" in
  none|open) params="" ;;
  limits) params='{"max_data_bytes": 1024, "max_children": 1000000, "max_depth": 8}' ;;
  *) echo "policy must be none, open or limits, not $policy" >&2; exit 2 ;;
esac
work=$(mktemp -d /tmp/sk-binary-ab.XXXXXX)
declare -A args
for v in old new; do
  args[$v]="--scopes 1"
done
if [ "$policy" != none ]; then
  "${bin[new]}" policy build "policies/$policy" --out "$work/policy.wasm" >/dev/null 2>&1
  declare -A component=([old]=${POLICY_OLD:-$work/policy.wasm} [new]=${POLICY_NEW:-$work/policy.wasm})
  for v in old new; do
    args[$v]+=" --scope-policy $(realpath "${component[$v]}")"
  done
fi
declare -A pid
port=17800
for v in old new; do
  port=$((port + 100))
  SCOPEKEEPER_CONFIG="$work/$v.toml" "${bin[$v]}" dev --data "$work/$v" --base-port $port \
    --zk-base-port 0 > "$work/$v.log" 2>&1 &
  pid[$v]=$!
done
trap 'kill -INT ${pid[old]} ${pid[new]} 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
for v in old new; do
  until grep -q "ready in" "$work/$v.log"; do
    kill -0 "${pid[$v]}" 2>/dev/null || { cat "$work/$v.log"; exit 1; }
    sleep 0.1
  done
done
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for ((pair = 0; pair < pairs; pair++)); do
  for k in 0 1; do
    if [ $(( (pair + k) % 2 )) = 0 ]; then v=old; else v=new; fi
    SCOPEKEEPER_CONFIG="$work/$v.toml" "${bin[$v]}" bench --clients "$clients" --duration "$secs" \
      --mix create=1 --value-size 100 ${args[$v]} ${params:+--scope-params "$params"} --json > "$work/out" 2> "$work/err" &
    bench_pid=$!
    # As in bench/policy-paired.sh: the CPU window opens once the new scope has settled.
    until grep -q "anchors" "$work/err" || ! kill -0 $bench_pid 2>/dev/null; do sleep 0.02; done
    before=$(cpu_ticks "${pid[$v]}")
    wait $bench_pid || { cat "$work/err" >&2; exit 1; }
    after=$(cpu_ticks "${pid[$v]}")
    echo "$pair $v $(tail -n 1 "$work/out") $((after - before))" >> "$work/runs"
  done
done
python3 bench/paired_stats.py "$work/runs" new "$(getconf CLK_TCK)" "$clients" old
