#!/usr/bin/env bash
# Pull benchmark (issue 6, row B4): `cairn pull` of three corpora into empty folders from
# cairn-server on a local Garage, beside `rclone copy` of the same corpora from the same Garage.
#   scripts/bench-pull.sh [--quick] [LABEL=BIN_DIR ...]
# Each LABEL=BIN_DIR is a cairn build to time (its `cairn` binary; the server is always the first
# one's `cairn-server`), e.g. `before=/tmp/base/target/release after=target/release`; by default
# `cairn=target/release` (built here). Corpora: 5,000 × 4 KiB, 500 × 256 KiB, 4 × 256 MiB random
# files (--quick: 500 × 4 KiB, 50 × 256 KiB, 2 × 16 MiB). Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && { quick=1; shift; }
builds=("$@")
if [ ${#builds[@]} = 0 ]; then
  cargo build --release --bins -q
  builds=("cairn=$(pwd)/target/release")
fi
command -v rclone > /dev/null || apt-get install -y -qq rclone > /dev/null
[ -x /usr/bin/time ] || apt-get install -y -qq time > /dev/null
server=${builds[0]#*=}/cairn-server

work=$(mktemp -d /tmp/cairn-bench-pull.XXXXXX)
cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2> /dev/null || true
  scripts/garage.sh stop "$work/garage" || true
  rm -rf "$work"
}
trap cleanup EXIT

. scripts/lib/bench-garage.sh
bench_garage_start
rbucket=$(scripts/garage.sh bucket "$work/garage")
bench_server_start "$server" "$work/server.db"

seconds() { # runs a command, prints its wall time in seconds (fails loudly)
  /usr/bin/time -f '%e' -o "$work/time.out" "$@" > "$work/cmd.out" 2> "$work/cmd.err" \
    || { cat "$work/cmd.err" >&2; exit 1; }
  cat "$work/time.out"
}
mkfiles() { # DIR COUNT SIZE_BYTES
  mkdir -p "$1"
  if [ "$3" -le 65536 ]; then
    python3 -c "import os,sys; [open(f'$1/f{i}.bin','wb').write(os.urandom($3)) for i in range($2)]"
  else
    for i in $(seq 1 "$2"); do head -c "$3" /dev/urandom > "$1/f$i.bin"; done
  fi
}

if [ $quick = 1 ]; then
  corpora=("small 500 4096" "medium 50 262144" "large 2 16777216")
else
  corpora=("small 5000 4096" "medium 500 262144" "large 4 268435456")
fi

echo "| corpus | $(for b in "${builds[@]}"; do printf '%s s | ' "${b%%=*}"; done)rclone --transfers 4 s | rclone --transfers 16 s |"
echo "|---|$(for _ in "${builds[@]}"; do printf -- '---:|'; done)---:|---:|"
for c in "${corpora[@]}"; do
  read -r name count size <<< "$c"
  src=$work/src-$name
  mkfiles "$src" "$count" "$size"
  "$server" namespace create "$name" --db "$work/server.db" > /dev/null
  CAIRN_TOKEN=$("$server" token create --namespace "$name" --device bench --db "$work/server.db")
  export CAIRN_TOKEN
  "${builds[0]#*=}/cairn" --home "$work/home-push-$name" push "$src" --namespace "$name" > /dev/null 2>&1
  "${rclone_cmd[@]}" copy --transfers 16 "$src" "G:$rbucket/$name" > /dev/null 2>&1
  row="| $count × $((size / 1024)) KiB |"
  for b in "${builds[@]}"; do
    label=${b%%=*}; dir=${b#*=}
    dst=$work/dst-$name-$label
    sync; echo 3 > /proc/sys/vm/drop_caches 2> /dev/null || true
    t=$(seconds "$dir/cairn" --home "$work/home-$name-$label" pull "$dst" --namespace "$name")
    diff -r "$src" "$dst" > /dev/null || { echo "$label: pulled $name differs" >&2; exit 1; }
    rm -rf "$dst"
    row="$row $t |"
  done
  for n in 4 16; do
    dst=$work/rdst-$name-$n
    sync; echo 3 > /proc/sys/vm/drop_caches 2> /dev/null || true
    t=$(seconds "${rclone_cmd[@]}" copy --transfers "$n" "G:$rbucket/$name" "$dst")
    rm -rf "$dst"
    row="$row $t |"
  done
  echo "$row"
  rm -rf "$src"
done
