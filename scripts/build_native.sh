#!/usr/bin/env bash
# Builds the native call path (native/, a PyO3 extension over the wasmtime
# crate) and puts it at host/ionflux/runtime/_ionflux_native.abi3.so.
#
# Called by scripts/bootstrap.sh. Idempotent and cached outside the clone, as
# Kubo is: the built library is kept in ~/.cache/ionflux/native/<key>/, keyed by
# the hash of the crate's sources, the world (wit/) and the compiler's version,
# so a second run (or a second clone) copies it in a second. Cargo's target
# directory is ~/.cache/ionflux/native-target: a change to the extension
# rebuilds only the extension (~16 s), not wasmtime (~8 min on 2 cores).
#
# Needs rustup's cargo/rustc >= 1.95 (wasmtime 48's minimum; the machine
# image's ~/.cargo/bin), not Debian's 1.63 (which builds the guests). Without
# it the host still runs: components go to wasmtime-py, with a warning.
#
# Records how long each build took in ~/.cache/ionflux/native-build-times.json
# (`python -m ionflux.bench native` prints them).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${IONFLUX_CACHE:-$HOME/.cache/ionflux}"
target="${IONFLUX_NATIVE_TARGET:-$cache/native-target}"
dest="$root/host/ionflux/runtime/_ionflux_native.abi3.so"
python="${PYTHON:-$root/.venv/bin/python}"

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
  echo "build_native: no rustup cargo on PATH; components will run on wasmtime-py" >&2
  exit 0
fi
rustc_version="$(rustc --version)"
minor="$(echo "$rustc_version" | sed -E 's/^rustc 1\.([0-9]+).*/\1/')"
if [ "${minor:-0}" -lt 95 ]; then
  echo "build_native: $rustc_version is older than 1.95 (wasmtime 48 needs it);" \
    "components will run on wasmtime-py" >&2
  exit 0
fi

key="$(
  cd "$root"
  {
    echo "$rustc_version"
    find native -path native/target -prune -o -type f \( -name '*.rs' -o -name '*.toml' -o -name Cargo.lock \) -print \
      | LC_ALL=C sort | xargs sha256sum
    find wit -type f -name '*.wit' | LC_ALL=C sort | xargs sha256sum
  } | sha256sum | cut -c1-16
)"
built="$cache/native/$key/_ionflux_native.abi3.so"

# IONFLUX_NATIVE_FORCE=1 builds even when the cache has this key (to time a
# build: with IONFLUX_NATIVE_TARGET set to an empty folder, a cold one).
if [ ! -f "$built" ] || [ "${IONFLUX_NATIVE_FORCE:-0}" = 1 ]; then
  mkdir -p "$cache/native/$key" "$target"
  kind=warm
  [ -d "$target/release/build" ] || kind=cold
  rm -f "$built"
  echo "build_native: building the extension ($kind build: wasmtime is compiled" \
    "only on the first one, ~8 min on 2 cores)" >&2
  started=$(date +%s%N)
  wheels="$(mktemp -d)"
  # Cargo reads .cargo/config.toml from the working directory up: the clone's
  # pins Debian's registry for the guests, so build from outside the clone.
  (
    cd "$cache"
    CARGO_TARGET_DIR="$target" nice -n 10 "$python" -m maturin build --release \
      --manifest-path "$root/native/Cargo.toml" --interpreter "$python" \
      --out "$wheels" --compatibility linux --quiet
  )
  "$python" - "$wheels" "$built.tmp" <<'EOF'
import sys, zipfile, pathlib
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".so"))
    pathlib.Path(sys.argv[2]).write_bytes(z.read(name))
EOF
  rm -rf "$wheels"
  mv "$built.tmp" "$built"
  elapsed=$(( ($(date +%s%N) - started) / 1000000 ))
  "$python" - "$cache/native-build-times.json" "$kind" "$elapsed" <<'EOF'
import json, sys, time, os
path, kind, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
try:
    times = json.load(open(path))
except (OSError, ValueError):
    times = {}
times[kind] = {"seconds": round(seconds / 1000, 1), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": os.cpu_count()}
json.dump(times, open(path, "w"), indent=1)
EOF
  echo "build_native: $kind build took ${elapsed} ms" >&2
  # Keep the three newest builds (other clones or branches), not one per edit.
  ls -1dt "$cache"/native/*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
fi

if ! cmp -s "$built" "$dest" 2>/dev/null; then
  cp "$built" "$dest.tmp"
  mv "$dest.tmp" "$dest"
fi
