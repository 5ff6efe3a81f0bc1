# Sourced by the transfer benchmarks (bench-transfer.sh, bench-push.sh, bench-pull.sh): one Garage
# node under $work/garage, rclone pointed at it, and cairn-servers on fresh buckets of it.
# Needs $work (the run's temp dir); the caller's trap stops what these start.

# Starts Garage and exports its address and keys (GARAGE_S3_ADDR, AWS_*); defines rclone_cmd.
bench_garage_start() {
  scripts/garage.sh start "$work/garage" > /dev/null
  set -a; . "$work/garage/env"; set +a
  # rclone's and restic's S3 clients refuse or misread AWS_CA_BUNDLE (NOTES.md); plain http here.
  rclone_cmd=(env -u AWS_CA_BUNDLE RCLONE_CONFIG_G_TYPE=s3 RCLONE_CONFIG_G_PROVIDER=Other
    RCLONE_CONFIG_G_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" RCLONE_CONFIG_G_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"
    RCLONE_CONFIG_G_ENDPOINT="http://$GARAGE_S3_ADDR" RCLONE_CONFIG_G_REGION=garage RCLONE_CONFIG_G_FORCE_PATH_STYLE=true
    rclone)
}

# Starts SERVER_BIN serve on a fresh bucket with database DB, waits until it listens, and exports
# CAIRN_SERVER; with a third argument, also creates namespace `bench` and exports CAIRN_TOKEN.
bench_server_start() { # SERVER_BIN DB [token]
  local bucket
  bucket=$(scripts/garage.sh bucket "$work/garage")
  "$1" serve --listen 127.0.0.1:0 --db "$2" \
    --store "s3://$bucket?endpoint=http://$GARAGE_S3_ADDR&region=garage" > "$work/server.out" 2> "$work/server.log" &
  server_pid=$!
  # Polls for the address line (bounded: 20 s).
  for _ in $(seq 1 400); do grep -q '^listening on' "$work/server.out" 2> /dev/null && break; sleep 0.05; done
  grep -q '^listening on' "$work/server.out" || { echo "cairn-server did not start: $(cat "$work/server.log")" >&2; return 1; }
  export CAIRN_SERVER=http://$(sed -n 's/^listening on //p' "$work/server.out")
  if [ -n "${3:-}" ]; then
    "$1" namespace create bench --db "$2"
    CAIRN_TOKEN=$("$1" token create --namespace bench --device bench --db "$2")
    export CAIRN_TOKEN
  fi
}
