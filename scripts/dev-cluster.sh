#!/usr/bin/env bash
# A local Cairn installation for development: cairn-server over TLS on 127.0.0.1 with a
# self-signed development CA, a user, a namespace, and optionally a Garage node as its store.
#   scripts/dev-cluster.sh start DIR [--garage]   starts it; writes DIR/env (CAIRN_SERVER,
#                                                 CAIRN_CA_CERT) and DIR/alice.password (0600)
#   scripts/dev-cluster.sh stop DIR               stops what start started
# Binaries come from $CAIRN_BIN_DIR (default target/release; built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CAIRN_BIN_DIR:-target/release}

start() {
  local dir=$1 garage=${2:-}
  mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
  if [[ ! -x $BIN/cairn-server || ! -x $BIN/cairn ]]; then
    cargo build --release --bins
  fi
  "$BIN/cairn-server" dev-cert --out "$dir/tls"
  local store="local:$dir/blobs" envs=()
  if [[ $garage == --garage ]]; then
    scripts/garage.sh start "$dir/garage" >&2
    # shellcheck disable=SC1091
    source "$dir/garage/env"
    store="s3://$(scripts/garage.sh bucket "$dir/garage")?endpoint=http://$GARAGE_S3_ADDR&region=garage"
  fi
  local password
  password=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
  printf '%s\n' "$password" | "$BIN/cairn-server" user add alice --password-stdin --db "$dir/meta.db"
  (umask 077; printf '%s\n' "$password" > "$dir/alice.password")
  "$BIN/cairn-server" namespace create team --owner alice --db "$dir/meta.db"
  nohup "$BIN/cairn-server" serve --listen 127.0.0.1:0 --db "$dir/meta.db" --store "$store" \
    --tls-cert "$dir/tls/cert.pem" --tls-key "$dir/tls/key.pem" \
    > "$dir/server.out" 2> "$dir/server.log" &
  echo $! > "$dir/server.pid"
  local addr=""
  for _ in $(seq 1 100); do
    addr=$(sed -n 's/^listening on //p' "$dir/server.out" 2>/dev/null || true)
    [[ -n $addr ]] && break
    sleep 0.1
  done
  [[ -n $addr ]] || { echo "cairn-server did not start; see $dir/server.log" >&2; exit 1; }
  cat > "$dir/env" <<ENV
export CAIRN_SERVER=https://$addr
export CAIRN_CA_CERT=$dir/tls/ca.pem
ENV
  cat >&2 <<MSG
cairn-server listens on https://$addr (TLS, development CA $dir/tls/ca.pem)
user alice (password in $dir/alice.password), namespace team. On a device:
  source $dir/env
  cairn --home ~/.cairn-dev login --user alice --device laptop --password-stdin < $dir/alice.password
  cairn --home ~/.cairn-dev push ~/some/folder --namespace team
MSG
}

stop() {
  local dir=$1
  if [[ -f $dir/server.pid ]]; then kill "$(cat "$dir/server.pid")" 2>/dev/null || true; rm -f "$dir/server.pid"; fi
  if [[ -f $dir/garage/env ]]; then scripts/garage.sh stop "$dir/garage" || true; fi
}

case ${1:-} in
  start) start "${2:?usage: start DIR [--garage]}" "${3:-}" ;;
  stop) stop "${2:?usage: stop DIR}" ;;
  *) echo "usage: $0 start DIR [--garage] | stop DIR" >&2; exit 2 ;;
esac
