#!/usr/bin/env bash
# Initial-push benchmark (issue 6, row B3): `cairn push` of three corpora to cairn-server on a
# real Garage on 127.0.0.1, with `rclone copy` and `restic backup` to the same Garage in the same
# run. Prints a markdown table (seconds; best of --runs) for docs/BENCHMARKS.md.
#   scripts/bench-push.sh [--runs N] [--quick] [LABEL=BIN_DIR ...]
# Each LABEL=BIN_DIR is a directory holding `cairn` and `cairn-server` (e.g. before=/tmp/old
# after=target/release); default: now=target/release (built here). Needs Garage
# (scripts/garage.sh install), rclone and restic (installed from Debian when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=1
quick=0
bins=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    *=*) bins+=("$1"); shift ;;
    *) echo "usage: scripts/bench-push.sh [--runs N] [--quick] [LABEL=BIN_DIR ...]" >&2; exit 2 ;;
  esac
done
if [ ${#bins[@]} = 0 ]; then
  cargo build --release --bins -q
  bins=("now=$(pwd)/target/release")
fi
command -v rclone > /dev/null || apt-get install -y -qq rclone > /dev/null
command -v restic > /dev/null || apt-get install -y -qq restic > /dev/null

work=$(mktemp -d /tmp/cairn-bench-push.XXXXXX)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2> /dev/null || true
  scripts/garage.sh stop "$work/garage"
  rm -rf "$work"
}
trap cleanup EXIT

. scripts/lib/bench-garage.sh
bench_garage_start

# Prints the wall seconds of a command (its output goes to $work/cmd.*; a failure stops the run).
seconds() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" > "$work/cmd.out" 2> "$work/cmd.err" || { cat "$work/cmd.err" >&2; exit 1; }
  t1=$(date +%s.%N)
  python3 -c "print(f'{$t1 - $t0:.2f}')"
}

# A fresh cairn-server on a fresh bucket; sets CAIRN_SERVER and CAIRN_TOKEN.
start_server() { # BIN_DIR
  stop_server
  bench_server_start "$1/cairn-server" "$work/server-$RANDOM.db" token
}

stop_server() {
  [ -n "$server_pid" ] || return 0
  kill "$server_pid" 2> /dev/null || true
  wait "$server_pid" 2> /dev/null || true
  server_pid=
}

best() { tr ' ' '\n' | sort -n | head -1; }

mkfiles() { # DIR COUNT SIZE_BYTES
  mkdir -p "$1"
  python3 - "$1" "$2" "$3" <<'PY'
import os, sys
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    with open(os.path.join(d, f"f{i}.bin"), "wb") as f:
        f.write(os.urandom(size))
PY
}

if [ $quick = 1 ]; then
  corpora=("500 x 4 KiB:500:4096" "50 x 256 KiB:50:262144" "2 x 16 MiB:2:16777216")
else
  corpora=("5000 x 4 KiB:5000:4096" "500 x 256 KiB:500:262144" "4 x 256 MiB:4:268435456")
fi

header="| corpus |"
sep="|---|"
for b in "${bins[@]}"; do header+=" cairn ${b%%=*} s |"; sep+="---|"; done
header+=" rclone copy s | restic backup s |"
sep+="---|---|"
rows=()
for c in "${corpora[@]}"; do
  IFS=: read -r name count size <<< "$c"
  rm -rf "$work/corpus"
  mkfiles "$work/corpus" "$count" "$size"
  sync
  row="| $name |"
  for b in "${bins[@]}"; do
    dir=${b#*=}
    ts=()
    for r in $(seq 1 "$runs"); do
      start_server "$dir"
      ts+=("$(seconds "$dir/cairn" --home "$work/home-$RANDOM" push "$work/corpus" --namespace bench)")
    done
    stop_server
    row+=" $(echo "${ts[@]}" | best) |"
  done
  ts=()
  for r in $(seq 1 "$runs"); do
    rb=$(scripts/garage.sh bucket "$work/garage")
    ts+=("$(seconds "${rclone_cmd[@]}" copy "$work/corpus" "G:$rb/c")")
  done
  row+=" $(echo "${ts[@]}" | best) |"
  ts=()
  for r in $(seq 1 "$runs"); do
    rb=$(scripts/garage.sh bucket "$work/garage")
    export RESTIC_REPOSITORY="s3:http://$GARAGE_S3_ADDR/$rb" RESTIC_PASSWORD=bench
    env -u AWS_CA_BUNDLE AWS_DEFAULT_REGION=garage restic init -q > /dev/null
    ts+=("$(seconds env -u AWS_CA_BUNDLE AWS_DEFAULT_REGION=garage restic backup -q "$work/corpus")")
  done
  row+=" $(echo "${ts[@]}" | best) |"
  rows+=("$row")
  echo "$row" >&2
done

echo
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "$header"
echo "$sep"
printf '%s\n' "${rows[@]}"
