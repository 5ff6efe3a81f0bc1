#!/usr/bin/env bash
# A real Garage S3 server on 127.0.0.1 for tests and benchmarks.
#   scripts/garage.sh install        installs Garage (pinned) unless that version is already on PATH
#   scripts/garage.sh start DIR      starts a fresh single node with its data in DIR, creates the
#                                    test key, and writes DIR/env (GARAGE_CONFIG, GARAGE_S3_ADDR,
#                                    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, GARAGE_PID)
#   scripts/garage.sh bucket DIR     creates a bucket for the test key and prints its name
#   scripts/garage.sh stop DIR       stops the node started in DIR
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
  local g="garage -c $dir/garage.toml"
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

cmd=${1:-}; shift || true
case "$cmd" in
  install) install ;;
  start) start "$@" ;;
  bucket) bucket "$@" ;;
  stop) stop "$@" ;;
  *) echo "usage: scripts/garage.sh install | start DIR | bucket DIR | stop DIR" >&2; exit 2 ;;
esac
