#!/usr/bin/env bash
# Starts or stops a 3-server ZooKeeper 3.8 ensemble on loopback from Debian's packages
# (zookeeper, libzookeeper-java). Client ports 12181-12183, so it never collides with
# `scopekeeper dev`'s ZooKeeper-compatible ports 2181-2183.
#   bench/zookeeper-ensemble.sh start DIR    -> prints the connect string once all serve
#   bench/zookeeper-ensemble.sh stop DIR
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?usage: start|stop DIR}
classpath="/etc/zookeeper/conf:/usr/share/java/zookeeper.jar"
[ -f /usr/share/java/zookeeper.jar ] || { echo "install Debian's zookeeper package first" >&2; exit 1; }

# One four-letter word to a server: `four_letter PORT WORD`.
four_letter() {
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf '%s' "$2" >&3
  cat <&3
  exec 3<&-
}

case "$cmd" in
start)
  mkdir -p "$dir"
  for i in 1 2 3; do
    mkdir -p "$dir/zk$i"
    echo "$i" > "$dir/zk$i/myid"
    cat > "$dir/zk$i/zoo.cfg" <<CFG
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$dir/zk$i
clientPort=$((12180 + i))
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr
server.1=127.0.0.1:12888:13888
server.2=127.0.0.1:12889:13889
server.3=127.0.0.1:12890:13890
CFG
    java -Dzookeeper.log.dir="$dir/zk$i" -Dzookeeper.root.logger=WARN,CONSOLE -cp "$classpath" \
      org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zk$i/zoo.cfg" > "$dir/zk$i/server.log" 2>&1 &
    echo $! > "$dir/zk$i/pid"
  done
  for _ in $(seq 1 120); do
    ok=0
    for i in 1 2 3; do
      mode=$( (four_letter $((12180 + i)) srvr 2>/dev/null || true) | grep Mode || true)
      case "$mode" in *leader*|*follower*) ok=$((ok + 1)) ;; esac
    done
    if [ "$ok" = 3 ]; then echo "127.0.0.1:12181,127.0.0.1:12182,127.0.0.1:12183"; exit 0; fi
    sleep 0.5
  done
  echo "the ensemble did not form within 60 s; see $dir/zk*/server.log" >&2
  exit 1
  ;;
stop)
  for i in 1 2 3; do
    [ -f "$dir/zk$i/pid" ] && kill "$(cat "$dir/zk$i/pid")" 2>/dev/null || true
  done
  ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
