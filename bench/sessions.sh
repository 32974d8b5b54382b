#!/usr/bin/env bash
# Issue 6's measurements on the dev cluster (3 nodes in one process), in one sitting:
#   - session creations/s: each op opens a session (a new connection, the record written in
#     its session scope) and closes it, at 1 and 16 clients;
#   - watch notification latency: a one-shot data watch armed through a second node, the key
#     set, timed from the set to the event, at 1 and 16 clients;
#   - N concurrent sessions (default 10000) with an ephemeral each: the cluster's memory and
#     its CPU while they only keep alive (30 s timeout: a ping per session every 10 s).
#   bash bench/sessions.sh [seconds per run, default 10] [sessions held, default 10000]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
held=${2:-10000}
work=$(mktemp -d /tmp/sk-session-bench.XXXXXX)
export SCOPEKEEPER_CONFIG="$work/client.toml"
cargo build --release -p scopekeeper >/dev/null
bin=target/release/scopekeeper
ticks=$(getconf CLK_TCK)
# Every held session is a QUIC connection with its own UDP socket in the bench process.
ulimit -n "$(ulimit -Hn)"

dev_pid=""
bench_pid=""
stop() {
  [ -n "$bench_pid" ] && kill "$bench_pid" 2>/dev/null || true
  [ -n "$dev_pid" ] && kill -INT "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null || true
}
trap 'stop; rm -rf "$work"' EXIT
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mib() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$1/status"; }

"$bin" dev --data "$work/dev" --base-port 17401 > "$work/dev.log" 2>&1 &
dev_pid=$!
until grep -q "ready in" "$work/dev.log"; do sleep 0.05; done
sleep 2

printf '%-34s %10s %10s %10s\n' workload "ops/s" "p50 (ms)" "p99 (ms)"
for spec in "session 1" "session 16" "watch 1" "watch 16"; do
  set -- $spec
  out=$("$bin" bench --clients "$2" --duration "$secs" --mix "$1=1" --json)
  [ "$(field "$out" errors)" = 0 ] || echo "($(field "$out" errors) errors in $1 at $2 clients)"
  label="$1 ($2 client$([ "$2" = 1 ] || echo s))"
  [ "$1" = session ] && label="session open+close ($2 client$([ "$2" = 1 ] || echo s))"
  [ "$1" = watch ] && label="watch set->event ($2 client$([ "$2" = 1 ] || echo s))"
  printf '%-34s %10.0f %10.2f %10.2f\n' "$label" "$(field "$out" ops_per_sec)" \
    "$(field "$out" p50_ms)" "$(field "$out" p99_ms)"
done

sleep 3
idle_rss=$(rss_mib "$dev_pid")
before=$(cpu_ticks "$dev_pid")
sleep 10
idle_cpu=$(python3 -c "print(round(100 * ($(cpu_ticks "$dev_pid") - $before) / $ticks / 10, 1))")

hold_secs=60
"$bin" bench --hold-sessions "$held" --duration "$hold_secs" > "$work/hold.log" 2>&1 &
bench_pid=$!
until grep -q "opened" "$work/hold.log"; do
  kill -0 "$bench_pid" 2>/dev/null || { cat "$work/hold.log"; exit 1; }
  sleep 0.2
done
sed -n 1p "$work/hold.log"
# Let the opening burst settle, then sample 20 s of keeping alive.
sleep 10
before=$(cpu_ticks "$dev_pid")
sleep 20
held_cpu=$(python3 -c "print(round(100 * ($(cpu_ticks "$dev_pid") - $before) / $ticks / 20, 1))")
held_rss=$(rss_mib "$dev_pid")
wait "$bench_pid"
bench_pid=""
sed -n 2p "$work/hold.log"

printf '\n%-30s %16s %12s\n' "dev cluster" "CPU (% of core)" "RSS (MiB)"
printf '%-30s %16s %12s\n' "idle" "$idle_cpu" "$idle_rss"
printf '%-30s %16s %12s\n' "$held sessions held" "$held_cpu" "$held_rss"
echo "(per session: $(python3 -c "print(round(($held_rss - $idle_rss) * 1024 / $held, 1))") KiB; CPU sampled over 20 s)"
