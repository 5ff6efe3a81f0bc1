#!/usr/bin/env bash
# A real Garage S3 server on 127.0.0.1 for tests and benchmarks.
#   scripts/garage.sh install        installs Garage (pinned) unless that version is already on PATH
#   scripts/garage.sh start DIR      starts a fresh single node with its data in DIR, creates the
#                                    test key, and writes DIR/env (GARAGE_CONFIG, GARAGE_S3_ADDR,
#                                    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, GARAGE_PID)
#   scripts/garage.sh bucket DIR     creates a bucket for the test key and prints its name
#   scripts/garage.sh stop DIR       stops the node started in DIR
#   scripts/garage.sh start-cluster DIR
#                                    starts a fresh three-node cluster (replication factor 3, nodes
#                                    in DIR/1..3 on 127.0.0.1, own ports), connects the nodes,
#                                    applies one layout, imports the test key, writes DIR/env (as
#                                    `start`, GARAGE_S3_ADDR of node 1, plus GARAGE_S3_ADDRS of all)
#   scripts/garage.sh stop-node DIR N   stops node N (1..3) of a cluster (SIGKILL: a crash)
#   scripts/garage.sh start-node DIR N  starts node N again on its config and data
#   scripts/garage.sh stop-cluster DIR  stops every node of a cluster
set -euo pipefail

GARAGE_VERSION=2.5.0
# Throwaway credentials for a loopback-only test server (not secrets).
KEY_ID=GK0123456789abcdef01234567
SECRET=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef

# N distinct ports that were free a moment ago on 127.0.0.1 (all held at once, so none repeats).
free_ports() {
  python3 -c '
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))' "$1"
}

# Whether 127.0.0.1:PORT answers as Garage's S3 API: exit 0 for its XML error to an unsigned
# request, 1 when something else accepts there (another process took the port before Garage could
# bind it, and Garage runs without that listener), 2 while nothing accepts.
s3_answer() {
  python3 -c '
import socket, sys
try:
    c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
except OSError:
    sys.exit(2)
c.sendall(b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
head = b""
try:
    while len(head) < 16384:
        b = c.recv(4096)
        if not b: break
        head += b
except OSError:
    pass
lines = head.decode("latin-1").lower().splitlines()
ok = head.startswith(b"HTTP/1.1 ") and any(l.startswith("content-type: application/xml") for l in lines)
sys.exit(0 if ok else 1)' "$1"
}

# The S3 port in a node's config (the first api_bind_addr: [s3_api] comes before [admin]).
s3_port_of() { sed -n 's/^api_bind_addr = "127.0.0.1:\([0-9]*\)"$/\1/p' "$1" | head -n 1; }

# Waits for a node started with S3 on PORT to answer as Garage's S3 API; fails if anything else
# answers there or nothing does within 30 s.
wait_s3() {
  local port=$1 rc
  for _ in $(seq 1 300); do
    rc=0; s3_answer "$port" || rc=$?
    [ "$rc" = 0 ] && return 0
    [ "$rc" = 1 ] && { echo "127.0.0.1:$port answers, but not as Garage's S3 API" >&2; return 1; }
    sleep 0.1
  done
  echo "nothing answers on 127.0.0.1:$port" >&2; return 1
}

install() {
  if garage --version 2>/dev/null | grep -q "cargo:$GARAGE_VERSION"; then
    return 0
  fi
  echo "installing Garage $GARAGE_VERSION (about 11 minutes on 2 cores, once per machine)" >&2
  cargo install garage --version "$GARAGE_VERSION" --locked \
    --no-default-features --features bundled-libs,sqlite,lmdb
}

# Starts a fresh single node (start DIR). A port found free can be taken before Garage binds it;
# the node is then started again on new ports, up to three times.
start() {
  local dir=$1 attempt
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  for attempt in 1 2 3; do
    start_once "$dir" && return 0
    echo "garage did not start (attempt $attempt of 3), retrying on new ports" >&2
  done
  exit 1
}

start_once() {
  local dir=$1 rpc s3 admin
  read -r rpc s3 admin < <(free_ports 3)
  rm -rf "$dir/meta" "$dir/data"
  cat > "$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$admin"
TOML
  local g="garage -c $dir/garage.toml"
  setsid $g server > "$dir/garage.log" 2>&1 < /dev/null &
  local pid=$!
  local up=
  for _ in $(seq 1 300); do
    $g status > /dev/null 2>&1 && { up=1; break; }
    kill -0 "$pid" 2>/dev/null || { cat "$dir/garage.log" >&2; echo "garage exited" >&2; return 1; }
    sleep 0.1
  done
  if [ -z "$up" ] || ! wait_s3 "$s3"; then
    kill -KILL "$pid" 2>/dev/null || true
    return 1
  fi
  # Called in a condition, where `set -e` does not apply: each step checks its own failure.
  local id
  id=$($g node id -q | cut -d@ -f1) &&
    $g layout assign -z dc1 -c 1G "$id" > /dev/null &&
    $g layout apply --version 1 > /dev/null &&
    $g key import --yes "$KEY_ID" "$SECRET" -n test > /dev/null || {
    kill -KILL "$pid" 2>/dev/null || true
    return 1
  }
  cat > "$dir/env" <<ENV
GARAGE_CONFIG=$dir/garage.toml
GARAGE_S3_ADDR=127.0.0.1:$s3
AWS_ACCESS_KEY_ID=$KEY_ID
AWS_SECRET_ACCESS_KEY=$SECRET
GARAGE_PID=$pid
ENV
  echo "garage on 127.0.0.1:$s3 (config $dir/garage.toml)" >&2
}

bucket() {
  local dir=$1 name
  name="b$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  local g="garage -c $(sed -n 's/^GARAGE_CONFIG=//p' "$dir/env")"
  for _ in $(seq 1 100); do
    $g bucket create "$name" > /dev/null 2>&1 && break
    sleep 0.1
  done
  $g bucket allow --read --write --owner "$name" --key test > /dev/null
  echo "$name"
}

stop() {
  local dir=$1 pid
  pid=$(sed -n 's/^GARAGE_PID=//p' "$dir/env" 2>/dev/null || true)
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
}

# --- three-node cluster ------------------------------------------------------------------------

# Starts node N of a cluster on its config and data; fails if it does not answer, or if its S3
# address answers as something else.
node_start() {
  local dir=$1 n=$2
  setsid garage -c "$dir/$n/garage.toml" server >> "$dir/$n/garage.log" 2>&1 < /dev/null &
  echo $! > "$dir/$n/pid"
  local s3
  s3=$(s3_port_of "$dir/$n/garage.toml")
  for _ in $(seq 1 300); do
    if garage -c "$dir/$n/garage.toml" node id -q > /dev/null 2>&1; then
      wait_s3 "$s3" && return 0
      stop_node "$dir" "$n"
      return 1
    fi
    kill -0 "$(cat "$dir/$n/pid")" 2>/dev/null || { cat "$dir/$n/garage.log" >&2; echo "garage node $n exited" >&2; return 1; }
    sleep 0.1
  done
  echo "garage node $n did not answer" >&2
  stop_node "$dir" "$n"
  return 1
}

# Writes node N's config on new free ports (its data starts empty).
cluster_node_config() {
  local dir=$1 n=$2 secret=$3 rpc s3 admin
  read -r rpc s3 admin < <(free_ports 3)
  rm -rf "$dir/$n"
  mkdir -p "$dir/$n"
  cat > "$dir/$n/garage.toml" <<TOML
metadata_dir = "$dir/$n/meta"
data_dir = "$dir/$n/data"
db_engine = "sqlite"
replication_factor = 3
consistency_mode = "consistent"
# A node that missed writes fetches a block it learns it needs (rc 0 -> 1 during the table sync)
# only 2 x rpc_timeout later: 10 minutes with the default 300 s. 15 s makes a returning node
# heal within a test's patience; transfers here are loopback-fast.
rpc_timeout_msec = 15000
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$admin"
TOML
}

start_cluster() {
  local dir=$1 n secret
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  local addrs=()
  for n in 1 2 3; do
    local attempt started=
    for attempt in 1 2 3; do
      cluster_node_config "$dir" "$n" "$secret"
      if node_start "$dir" "$n"; then started=1; break; fi
      echo "garage node $n did not start (attempt $attempt of 3), retrying on new ports" >&2
    done
    [ -n "$started" ] || exit 1
    addrs+=("127.0.0.1:$(s3_port_of "$dir/$n/garage.toml")")
  done
  local g="garage -c $dir/1/garage.toml" ids=()
  for n in 1 2 3; do
    ids+=("$(garage -c "$dir/$n/garage.toml" node id -q)")
  done
  $g node connect "${ids[1]}" > /dev/null
  $g node connect "${ids[2]}" > /dev/null
  for id in "${ids[@]}"; do
    $g layout assign -z dc1 -c 1G "${id%@*}" > /dev/null
  done
  $g layout apply --version 1 > /dev/null
  # Every node must see the layout before the key and buckets are made through any of them.
  for n in 1 2 3; do
    for _ in $(seq 1 300); do
      [ "$(garage -c "$dir/$n/garage.toml" layout show 2>/dev/null | grep -c 'dc1 ')" = 3 ] && break
      sleep 0.1
    done
  done
  $g key import --yes "$KEY_ID" "$SECRET" -n test > /dev/null
  cat > "$dir/env" <<ENV
GARAGE_CONFIG=$dir/1/garage.toml
GARAGE_S3_ADDR=${addrs[0]}
GARAGE_S3_ADDRS=${addrs[*]}
AWS_ACCESS_KEY_ID=$KEY_ID
AWS_SECRET_ACCESS_KEY=$SECRET
ENV
  echo "garage cluster: S3 on ${addrs[*]} (configs $dir/{1,2,3}/garage.toml)" >&2
}

stop_node() {
  local dir=$1 n=$2 pid
  pid=$(cat "$dir/$n/pid" 2>/dev/null || true)
  [ -n "$pid" ] || return 0
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  rm -f "$dir/$n/pid"
}

stop_cluster() {
  local n
  for n in 1 2 3; do stop_node "$1" "$n"; done
}

cmd=${1:-}; shift || true
case "$cmd" in
  install) install ;;
  start) start "$@" ;;
  bucket) bucket "$@" ;;
  stop) stop "$@" ;;
  start-cluster) start_cluster "$@" ;;
  stop-node) stop_node "$@" ;;
  start-node) node_start "$(cd "$1" && pwd)" "$2" ;;
  stop-cluster) stop_cluster "$@" ;;
  *) echo "usage: scripts/garage.sh install | start DIR | bucket DIR | stop DIR | start-cluster DIR | stop-node DIR N | start-node DIR N | stop-cluster DIR" >&2; exit 2 ;;
esac
