#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what the suite needs (Garage, cargo-nextest), builds
# the binaries the e2e tests start, runs unit, integration and e2e tests against a real Garage on
# 127.0.0.1, after checking that the benchmarks still run (quick mode).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/garage.sh install
command -v cargo-nextest > /dev/null || cargo install cargo-nextest --locked
# A real case-insensitive filesystem for the path e2e (vfat in userspace: this kernel has no vfat
# or ext4 casefold); strace to make fsync fail and libfaketime to skew clocks in the fault e2e.
# Without them those tests skip, saying why.
if ! command -v fusefat > /dev/null || ! command -v mkfs.vfat > /dev/null || ! command -v strace > /dev/null \
    || ! command -v faketime > /dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fusefat dosfstools strace faketime) \
        > /dev/null 2>&1 || echo "could not install fusefat/dosfstools/strace/faketime; the tests that need them will skip" >&2
fi

# The peers the side-by-side benchmarks (scripts/bench-peers.sh) run Cairn against.
if ! command -v rclone > /dev/null || ! command -v restic > /dev/null || ! command -v syncthing > /dev/null \
    || ! command -v casync > /dev/null || ! command -v b3sum > /dev/null || [ ! -x /usr/bin/time ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone restic syncthing casync b3sum time) \
        > /dev/null 2>&1 || echo "could not install the benchmark peers; scripts/bench-peers.sh --quick will fail" >&2
fi

cargo build --workspace --bins

# One Garage node for the whole run; each test makes its own bucket on it.
garage_dir=$(mktemp -d)
trap 'scripts/garage.sh stop "$garage_dir"; rm -rf "$garage_dir"' EXIT
scripts/garage.sh start "$garage_dir"
export CAIRN_E2E_GARAGE="$garage_dir/env"

# The benchmarks are not timed tests; this only proves they still build and run (quick mode, in
# the dev profile to spare CI a release build: its numbers mean nothing, `cargo bench` measures).
CAIRN_BENCH_QUICK=1 cargo test -p cairn --bench chunk
CAIRN_BIN_DIR=target/debug scripts/bench-peers.sh --quick > /dev/null

cargo nextest run --workspace --no-fail-fast "$@"
