#!/usr/bin/env bash
# Side-by-side benchmarks of issue 6: Cairn against b3sum, casync, rclone, restic and Syncthing on
# the same generated corpora, against one local Garage. Prints markdown tables (docs/BENCHMARKS.md).
#   scripts/bench-peers.sh [--quick] [--seed S] [b1 b2 b3 b4 b5 b6]
# Without rows, all run; --quick uses small corpora (checks the harness still works; its numbers
# mean nothing). Builds release binaries, or uses the ones in CAIRN_BIN_DIR (e.g. target/debug).
# Installs missing peers from Debian and Garage (scripts/garage.sh install).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export PATH="$HOME/.cargo/bin:$PATH"

missing=()
for t in rclone restic syncthing casync b3sum; do command -v "$t" > /dev/null || missing+=("$t"); done
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} from Debian" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") > /dev/null \
    || { echo "could not install ${missing[*]}: install them (apt-get install -y ${missing[*]}) and rerun" >&2; exit 1; }
fi
# Garage only for the rows that store something (b2, b3, b4; all rows when none are named).
needs_garage=1
rows=0
for a in "$@"; do case $a in b1|b5|b6) rows=1 ;; esac; done
if [ $rows = 1 ]; then
  needs_garage=0
  for a in "$@"; do case $a in b2|b3|b4) needs_garage=1 ;; esac; done
fi
[ $needs_garage = 0 ] || scripts/garage.sh install

bin_dir=${CAIRN_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
  cargo build --release --workspace --bins -q
  bin_dir=$root/target/release
fi
[ -x "$bin_dir/cairn-peers" ] || { echo "$bin_dir/cairn-peers is missing: build the workspace's binaries" >&2; exit 1; }

work=$(mktemp -d /tmp/cairn-peers-garage.XXXXXX)
pid=
cleanup() {
  # The bench runs in its own process group: whatever it started goes with it.
  [ -n "$pid" ] && kill -- "-$pid" 2> /dev/null || true
  scripts/garage.sh stop "$work"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ $needs_garage = 1 ]; then
  scripts/garage.sh start "$work"
  export CAIRN_E2E_GARAGE=$work/env
fi
setsid "$bin_dir/cairn-peers" "$@" &
pid=$!
wait "$pid"
