#!/usr/bin/env bash
# Regenerates daemon/symbol-order.txt: the functions of the `cairn` binary that one-shot pushes
# and pulls run, which daemon/build.rs has the linker put together at the front of the code (see
# docs/ARCHITECTURE.md, "Code layout"). Run it after large changes or a toolchain or dependency
# update (names the build no longer has are skipped, so a stale file only costs memory), then
# commit the file:
#   scripts/symbol-order.sh
# Runs each scenario under valgrind's callgrind against a local cairn-server on 127.0.0.1 (about
# 5 minutes on 2 cores). Every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
command -v valgrind > /dev/null || {
  echo "valgrind is needed: apt-get install -y valgrind" >&2
  exit 1
}
cargo build --release -p cairn -p cairn-server --bins -q
b=$root/target/release
work=$(mktemp -d /tmp/cairn-symbol-order.XXXXXX)
pid=
cleanup() {
  [ -z "$pid" ] || kill "$pid" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
server=http://127.0.0.1:$port
"$b/cairn-server" serve --listen "127.0.0.1:$port" --db "$work/db" --store "local:$work/blobs" \
  > "$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  (echo > "/dev/tcp/127.0.0.1/$port") 2> /dev/null && break
  sleep 0.1
done
(echo > "/dev/tcp/127.0.0.1/$port") 2> /dev/null || {
  echo "cairn-server did not start: $(cat "$work/server.log")" >&2
  exit 1
}
for ns in floor main; do "$b/cairn-server" namespace create "$ns" --db "$work/db" > /dev/null; done
token() { "$b/cairn-server" token create --namespace "$1" --device "$2" --db "$work/db"; }

# A folder of 2,000 small files in 20 folders and one of 8 MiB: small files go in packs, the big
# one in chunks of its own.
mkdir -p "$work/empty" "$work/a" "$work/b"
python3 - "$work/a" << 'PY'
import os, random, sys
r = random.Random(20261207)
for i in range(2000):
    d = os.path.join(sys.argv[1], f"d{i // 100:02}")
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, f"f{i:04}.txt"), "wb").write(r.randbytes(64 + i % 4000))
open(os.path.join(sys.argv[1], "big.bin"), "wb").write(r.randbytes(8 << 20))
PY

n=0
run() { # HOME_DIR NAMESPACE TOKEN cairn-args...
  local home=$1 ns=$2 tok=$3
  shift 3
  n=$((n + 1))
  CAIRN_TOKEN=$tok valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/cg.$n" \
    "$b/cairn" --server "$server" --home "$home" --json "$@" --namespace "$ns" > /dev/null 2> "$work/vg.$n" \
    || { echo "scenario $n ($*) failed: $(tail -5 "$work/vg.$n")" >&2; exit 1; }
}
floor=$(token floor a)
a=$(token main a)
b2=$(token main b)
run "$work/home-floor" floor "$floor" push "$work/empty" # what every command runs
run "$work/home-a" main "$a" push "$work/a"              # a first push: hashing, packs, uploads
run "$work/home-a" main "$a" push "$work/a"              # nothing changed (B6)
echo edited >> "$work/a/d03/f0300.txt"
rm "$work/a/d04/f0400.txt"
run "$work/home-a" main "$a" push "$work/a" --allow-deletes # an edit and a delete
run "$work/home-b" main "$b2" pull "$work/b"                # a first pull: downloads
run "$work/home-b" main "$b2" pull "$work/b"                # nothing changed

# The functions of `cairn` itself each run executed: those of the first scenario first (every
# command runs them), then the rest, each list sorted.
python3 - "$b/cairn" "$work"/cg.* > daemon/symbol-order.txt << 'PY'
import re, sys

runs = sys.argv[2:]

def executed(path):
    """Names of the functions of `cairn` that the callgrind profile at `path` ran."""
    objs, fns, out = {}, {}, set()
    ob = cob = None
    spec = re.compile(r"^(ob|cob|fl|fi|fe|cfi|cfl|fn|cfn)=\((\d+)\)(?: (.*))?$")
    for line in open(path, errors="replace"):
        m = spec.match(line.rstrip("\n"))
        if not m:
            continue
        kind, ident, name = m.groups()
        if kind in ("ob", "cob"):
            if name:
                objs[ident] = name
            if kind == "ob":
                ob = objs.get(ident)
            else:
                cob = objs.get(ident)
        elif kind in ("fn", "cfn"):
            if name:
                fns[ident] = name
            owner = ob if kind == "fn" else (cob or ob)
            if kind == "cfn":
                cob = None
            if owner and owner.rsplit("/", 1)[-1] == "cairn" and fns.get(ident):
                out.add(fns[ident])
    # Unnamed code (addresses) and valgrind's own frames cannot be ordered.
    return {n for n in out if not n.startswith("0x") and not n.startswith("(")}

runs.sort(key=lambda p: int(p.rsplit(".", 1)[1]))
first = executed(runs[0])
rest = set().union(*(executed(p) for p in runs[1:])) - first
for name in sorted(first) + sorted(rest):
    print(name)
PY
echo "daemon/symbol-order.txt: $(wc -l < daemon/symbol-order.txt) functions from $n scenarios" >&2
