#!/usr/bin/env bash
# Starts or stops a 3-member etcd 3.4 cluster on loopback from Debian's etcd-server package.
# Client URLs http://127.0.0.1:12379-12381, peer ports 12480-12482: clear of `scopekeeper dev`
# and of bench/zookeeper-ensemble.sh.
#   bench/etcd-cluster.sh start DIR    -> prints the client URLs once every member serves
#   bench/etcd-cluster.sh stop DIR
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?usage: start|stop DIR}
command -v etcd >/dev/null || { echo "install Debian's etcd-server package first" >&2; exit 1; }

client_url() { echo "http://127.0.0.1:$((12378 + $1))"; }
peer_url() { echo "http://127.0.0.1:$((12479 + $1))"; }

case "$cmd" in
start)
  mkdir -p "$dir"
  initial="e1=$(peer_url 1),e2=$(peer_url 2),e3=$(peer_url 3)"
  for i in 1 2 3; do
    mkdir -p "$dir/e$i"
    # Defaults otherwise, as ZooKeeper's ensemble keeps its defaults: fsync on every commit.
    etcd --name "e$i" --data-dir "$dir/e$i/data" \
      --listen-client-urls "$(client_url "$i")" --advertise-client-urls "$(client_url "$i")" \
      --listen-peer-urls "$(peer_url "$i")" --initial-advertise-peer-urls "$(peer_url "$i")" \
      --initial-cluster "$initial" --initial-cluster-state new \
      --initial-cluster-token "sk-bench-$$" --log-level warn \
      > "$dir/e$i/server.log" 2>&1 &
    echo $! > "$dir/e$i/pid"
  done
  endpoints="$(client_url 1),$(client_url 2),$(client_url 3)"
  for _ in $(seq 1 120); do
    if ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1; then
      echo "$endpoints"
      exit 0
    fi
    sleep 0.5
  done
  echo "the etcd cluster did not form within 60 s; see $dir/e*/server.log" >&2
  exit 1
  ;;
stop)
  for i in 1 2 3; do
    [ -f "$dir/e$i/pid" ] && kill "$(cat "$dir/e$i/pid")" 2>/dev/null || true
  done
  for i in 1 2 3; do
    [ -f "$dir/e$i/pid" ] || continue
    pid=$(cat "$dir/e$i/pid")
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/e$i/pid"
  done
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 1
  ;;
esac
