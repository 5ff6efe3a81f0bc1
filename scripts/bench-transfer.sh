#!/usr/bin/env bash
# Push/pull benchmark against a real Garage on 127.0.0.1, with rclone on the same corpus and the
# same Garage in the same run as the reference. Prints markdown tables for docs/BENCHMARKS.md.
#   scripts/bench-transfer.sh           full: a mixed 1 GiB corpus and a 4 GiB single file
#   scripts/bench-transfer.sh --quick   small corpora (checks the harness still works)
# Builds release binaries (or uses CAIRN_BIN_DIR), needs Garage (scripts/garage.sh install), GNU time,
# and rclone (installed from Debian when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
quick=0
[ "${1:-}" = "--quick" ] && quick=1

command -v rclone > /dev/null || apt-get install -y -qq rclone > /dev/null
[ -x /usr/bin/time ] || apt-get install -y -qq time > /dev/null
# CAIRN_BIN_DIR: use binaries built elsewhere (e.g. from a pinned commit) instead of building.
bin_dir=${CAIRN_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
  cargo build --release --bins -q
  bin_dir=$root/target/release
fi
cairn=$bin_dir/cairn
server=$bin_dir/cairn-server

work=$(mktemp -d /tmp/cairn-bench.XXXXXX)
cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2> /dev/null || true
  scripts/garage.sh stop "$work/garage"
  rm -rf "$work"
}
trap cleanup EXIT

. scripts/lib/bench-garage.sh
bench_garage_start
rbucket=$(scripts/garage.sh bucket "$work/garage")
bench_server_start "$server" "$work/server.db" token

# Runs a command under GNU time; prints "seconds peak_rss_kib".
measure() {
  /usr/bin/time -f '%e %M' -o "$work/time.out" "$@" > "$work/cmd.out" 2> "$work/cmd.err" \
    || { cat "$work/cmd.err" >&2; exit 1; }
  cat "$work/time.out"
}

mkfiles() { # DIR COUNT SIZE_BYTES
  mkdir -p "$1"
  for i in $(seq 1 "$2"); do head -c "$3" /dev/urandom > "$1/f$i.bin"; done
}

corpus=$work/corpus
if [ $quick = 1 ]; then
  mkfiles "$corpus/large" 2 $((16 << 20)); mkfiles "$corpus/medium" 10 $((1 << 20)); mkfiles "$corpus/small" 100 $((16 << 10))
  big_size=$((64 << 20))
else
  mkfiles "$corpus/large" 3 $((256 << 20)); mkfiles "$corpus/medium" 100 $((2 << 20)); mkfiles "$corpus/small" 1000 $((56 << 10))
  big_size=$((4 << 30))
fi
bytes=$(du -sb "$corpus" | cut -f1)
mib=$(python3 -c "print(f'{$bytes/2**20:.0f}')")
files=$(find "$corpus" -type f | wc -l)
sync; echo 3 > /proc/sys/vm/drop_caches 2> /dev/null || true

rate() { python3 -c "print(f'{$bytes/2**20/$1:.0f}')"; }

read -r t_push rss_push < <(measure "$cairn" --home "$work/home-a" push "$corpus" --namespace bench)
mkdir -p "$work/pulled"
read -r t_pull rss_pull < <(measure "$cairn" --home "$work/home-b" pull "$work/pulled" --namespace bench)
diff -r "$corpus" "$work/pulled" > /dev/null || { echo "pulled tree differs from the corpus" >&2; exit 1; }
read -r t_rpush rss_rpush < <(measure "${rclone_cmd[@]}" copy --transfers 8 "$corpus" "G:$rbucket/c")
read -r t_rpull rss_rpull < <(measure "${rclone_cmd[@]}" copy --transfers 8 "G:$rbucket/c" "$work/rpulled")

echo
echo "Corpus: $files files, $mib MiB (3 large, medium, small random files; see script)"
echo
echo "| tool | push s | push MiB/s | pull s | pull MiB/s | peak RSS push / pull |"
echo "|---|---|---|---|---|---|"
echo "| cairn | $t_push | $(rate "$t_push") | $t_pull | $(rate "$t_pull") | $((rss_push / 1024)) / $((rss_pull / 1024)) MiB |"
echo "| rclone copy --transfers 8 | $t_rpush | $(rate "$t_rpush") | $t_rpull | $(rate "$t_rpull") | $((rss_rpush / 1024)) / $((rss_rpull / 1024)) MiB |"
echo "| ratio cairn/rclone (time) | $(python3 -c "print(f'{$t_push/$t_rpush:.2f}')") | | $(python3 -c "print(f'{$t_pull/$t_rpull:.2f}')") | | |"

rm -rf "$corpus" "$work/pulled" "$work/rpulled"
mkdir -p "$work/big"
head -c "$big_size" /dev/urandom > "$work/big/one.bin"
read -r t_big rss_big < <(measure "$cairn" --home "$work/home-c" push "$work/big" --namespace bench)
echo
echo "| single file push | size | seconds | MiB/s | peak RSS |"
echo "|---|---|---|---|---|"
echo "| cairn push | $((big_size >> 20)) MiB | $t_big | $(python3 -c "print(f'{$big_size/2**20/$t_big:.0f}')") | $((rss_big / 1024)) MiB |"
