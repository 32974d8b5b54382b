#!/usr/bin/env bash
# Issue 3's measurement: write throughput at 64 clients and p50 latency at 1 client with no
# policy, with `open` and with `limits`, each on a fresh `scopekeeper dev`, in one sitting.
# The machine is shared and its speed drifts over minutes, so the variants take turns: each
# round runs all three in a rotated order, and the table shows each variant's median. Beside
# throughput it gives the dev process's CPU per create at 64 clients, which drifts far less:
# on a machine the writers saturate, throughput falls by about the share that CPU grows.
#   bash bench/policy-overhead.sh [seconds per run, default 10] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-3}
work=$(mktemp -d /tmp/sk-policy-bench.XXXXXX)
export SCOPEKEEPER_CONFIG="$work/client.toml"
cargo build --release -p scopekeeper >/dev/null
bin=target/release/scopekeeper
for p in open limits; do "$bin" policy build "policies/$p" --out "$work/$p.wasm" >/dev/null 2>&1; done

dev_pid=""
stop_dev() { [ -n "$dev_pid" ] && kill -INT "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null || true; dev_pid=""; }
trap 'stop_dev; rm -rf "$work"' EXIT
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# A deploy returns once the leader has committed the policy; the other anchors compile it in
# the background (about half a second of CPU for `limits` on this machine, far less for `open`).
# Unless the run waits, that compile lands in the first second of the 64-client run and counts
# as the policy's cost per create. Every variant waits alike: until two half-seconds in a row
# cost the dev process at most 3 ticks (an idle cluster's heartbeats), or 30 s have passed.
settle() {
  local last now quiet=0
  last=$(cpu_ticks "$1")
  for _ in $(seq 60); do
    sleep 0.5
    now=$(cpu_ticks "$1")
    if [ $((now - last)) -le 3 ]; then quiet=$((quiet + 1)); else quiet=0; fi
    [ $quiet -ge 2 ] && return
    last=$now
  done
}
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

declare -A ops p50 cpu
variants=(none open limits)
for ((round = 0; round < rounds; round++)); do
  for ((k = 0; k < 3; k++)); do
    variant=${variants[$(( (round + k) % 3 ))]}
    "$bin" dev --data "$work/dev-$variant-$round" --base-port 17101 > "$work/dev-$variant.log" 2>&1 &
    dev_pid=$!
    until grep -q "ready in" "$work/dev-$variant.log"; do sleep 0.05; done
    case "$variant" in
      open) "$bin" policy deploy / "$work/open.wasm" >/dev/null ;;
      limits) "$bin" policy deploy / "$work/limits.wasm" --params '{"max_data_bytes": 1024, "max_children": 1000000, "max_depth": 8}' >/dev/null ;;
    esac
    settle "$dev_pid"
    before=$(cpu_ticks "$dev_pid")
    many=$("$bin" bench --clients 64 --duration "$secs" --mix create=1 --value-size 100 --json)
    after=$(cpu_ticks "$dev_pid")
    one=$("$bin" bench --clients 1 --duration "$secs" --mix create=1 --value-size 100 --json)
    ops[$variant]="${ops[$variant]:-} $(field "$many" ops_per_sec)"
    p50[$variant]="${p50[$variant]:-} $(field "$one" p50_ms)"
    # The bench's warm-up and setup also run inside the window: a small constant overhead.
    per_write=$(python3 -c "print(1e6 * ($after - $before) / $ticks / ($(field "$many" ops_per_sec) * $secs))")
    cpu[$variant]="${cpu[$variant]:-} $per_write"
    echo "round $round $variant: $(field "$many" ops_per_sec) creates/s at 64 clients ($(printf %.1f "$per_write") us of node CPU each), p50 $(field "$one" p50_ms) ms at 1" >&2
    stop_dev
    rm -rf "$work/dev-$variant-$round"
  done
done
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" $1; }
declare -A mops mp50 mcpu
for variant in none open limits; do
  mops[$variant]=$(median "${ops[$variant]}")
  mp50[$variant]=$(median "${p50[$variant]}")
  mcpu[$variant]=$(median "${cpu[$variant]}")
done

printf '\n%-8s %16s %10s %18s %10s %16s %14s\n' policy "64c creates/s" "vs none" "CPU/create (us)" "vs none" \
  "1c p50 (ms)" "added p50 (us)"
for variant in none open limits; do
  printf '%-8s %16.0f %10.3f %18.1f %10.3f %16.3f %14.0f\n' "$variant" "${mops[$variant]}" \
    "$(python3 -c "print(${mops[$variant]} / ${mops[none]})")" "${mcpu[$variant]}" \
    "$(python3 -c "print(${mcpu[$variant]} / ${mcpu[none]})")" "${mp50[$variant]}" \
    "$(python3 -c "print((${mp50[$variant]} - ${mp50[none]}) * 1000)")"
done
echo "machine: $(nproc) cores; medians of $rounds rounds, each variant on a fresh dev cluster, in turn"
