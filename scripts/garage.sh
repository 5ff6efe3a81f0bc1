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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

install() {
  if garage --version 2>/dev/null | grep -q "cargo:$GARAGE_VERSION"; then
    return 0
  fi
  echo "installing Garage $GARAGE_VERSION (about 11 minutes on 2 cores, once per machine)" >&2
  cargo install garage --version "$GARAGE_VERSION" --locked \
    --no-default-features --features bundled-libs,sqlite,lmdb
}

start() {
  local dir=$1
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local rpc s3 admin
  rpc=$(free_port); s3=$(free_port); admin=$(free_port)
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
  for _ in $(seq 1 300); do
    $g status > /dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/garage.log" >&2; echo "garage exited" >&2; exit 1; }
    sleep 0.1
  done
  $g status > /dev/null
  $g layout assign -z dc1 -c 1G "$($g node id -q | cut -d@ -f1)" > /dev/null
  $g layout apply --version 1 > /dev/null
  $g key import --yes "$KEY_ID" "$SECRET" -n test > /dev/null
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

node_start() {
  local dir=$1 n=$2
  setsid garage -c "$dir/$n/garage.toml" server >> "$dir/$n/garage.log" 2>&1 < /dev/null &
  echo $! > "$dir/$n/pid"
  for _ in $(seq 1 300); do
    garage -c "$dir/$n/garage.toml" node id -q > /dev/null 2>&1 && return 0
    kill -0 "$(cat "$dir/$n/pid")" 2>/dev/null || { cat "$dir/$n/garage.log" >&2; echo "garage node $n exited" >&2; exit 1; }
    sleep 0.1
  done
  echo "garage node $n did not answer" >&2; exit 1
}

start_cluster() {
  local dir=$1 n secret
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  local addrs=()
  for n in 1 2 3; do
    mkdir -p "$dir/$n"
    local rpc s3 admin
    rpc=$(free_port); s3=$(free_port); admin=$(free_port)
    addrs+=("127.0.0.1:$s3")
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
    node_start "$dir" "$n"
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
