#!/usr/bin/env bash
# Builds the guest conformance scenario (guests/conformance/) in every guest
# language with the project's own recipe (`ionflux build`), into a cache
# outside the clone keyed by the hash of everything the build reads:
#
#   ~/.cache/ionflux/guests/<hash>/{python,ts,as,c}.wasm
#
# A second run with the same sources and toolchains builds nothing, so CI
# builds once per change (componentize-py alone takes 15-50 s). Prints the
# cache folder on its last line. Rust is not built here: its conformance
# guests are the Rust test guests of scripts/build_transforms.sh.
#
# Usage: scripts/build_guests.sh [LANG...]   (default: python ts as c)
# Environment: IONFLUX_GUEST_CACHE  the cache root (default: ~/.cache/ionflux/guests)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
LANGS=("$@")
[ ${#LANGS[@]} -gt 0 ] || LANGS=(python ts as c)
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || { echo "error: no venv; run scripts/bootstrap.sh first" >&2; exit 1; }

# What the build reads: the scenario, the guest SDKs, the world, the build
# recipe, the pinned npm toolchain and the versions of the other tools.
hash="$(
  {
    find guests/conformance guests/python guests/ts wit -type f \
      ! -path '*/__pycache__/*' ! -path '*/build/*' -print0 | sort -z | xargs -0 sha256sum
    sha256sum guests/package-lock.json host/ionflux/cli/_new.py
    "$PY" -c "import importlib.metadata as m; print(m.version('componentize-py'))" 2>/dev/null || true
    clang-14 --version 2>/dev/null | head -1 || true
  } | sha256sum | cut -c1-16
)"
CACHE="${IONFLUX_GUEST_CACHE:-$HOME/.cache/ionflux/guests}/$hash"
mkdir -p "$CACHE"

for lang in "${LANGS[@]}"; do
  out="$CACHE/$lang.wasm"
  [ -s "$out" ] && continue
  echo "building the $lang conformance guest" >&2
  tmp="$CACHE/.$lang.$$.wasm"
  nice -n 10 "$PY" -m ionflux.cli build "guests/conformance/$lang" --out "$tmp" --no-manifest >&2
  mv -f "$tmp" "$out"
done
echo "$CACHE"
