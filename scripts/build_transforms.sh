#!/usr/bin/env bash
# Builds every guest module into build/transforms/, reproducibly:
#
#   build/transforms/<name>.wasm            standard transforms (components)
#   build/transforms/extism-echo.wasm       the Extism-ABI benchmark plugin
#   build/transforms/testing/<name>.wasm    test-only guests (components)
#   build/transforms/testing/outside-world*.wasm  modules the host must refuse
#
# and prints name, size and CID of each, flagging a standard transform whose
# manifest names another CID (then run scripts/update_manifest_cids.py).
#
# Usage: scripts/build_transforms.sh [all|standard|testing|unit-tests]   (default: all)
#   unit-tests runs the crates' Rust unit tests natively (JSON parser, paths,
#   templates) with the same pinned toolchain, and builds nothing.
#
# A module's bytes are its identity (manifests pin its CID), so the same
# sources must give the same bytes on any machine, at any checkout path:
# Debian's pinned rustc 1.63 and crates (see /work/shared/TOOLCHAIN.md), a
# private CARGO_HOME (no user config leaks in), relative source paths plus a
# path remap for anything absolute, one codegen unit, no debug info, no
# symbols. Environment overrides, for tests and CI:
#   CARGO_TARGET_DIR   cargo's target dir              (default: ./target)
#   IONFLUX_BUILD_DIR  where the .wasm files go        (default: ./build/transforms)
#   WASM_TOOLS, PYTHON the tools (default: .venv/bin/…, then PATH)
#   CARGO_BUILD_JOBS   parallel rustc jobs             (default: 2)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
WHAT="${1:-all}"
case "$WHAT" in
  all|standard|testing|unit-tests) ;;
  *) echo "usage: $0 [all|standard|testing|unit-tests]" >&2; exit 2 ;;
esac

STANDARD=(uppercase text-stats json-path template pod-fetch pod-store nats-publish http-request)
TESTING=(spin grow-memory deep-recursion trap huge-output bad-output echo all-imports busy)

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="${IONFLUX_BUILD_DIR:-$ROOT/build/transforms}"
find_tool() {  # $1 = override, $2 = name: the override, else the venv's, else PATH
  if [ -n "$1" ]; then echo "$1"
  elif [ -x "$ROOT/.venv/bin/$2" ]; then echo "$ROOT/.venv/bin/$2"
  else command -v "$2" || { echo "error: $2 not found; run scripts/bootstrap.sh first" >&2; exit 1; }
  fi
}
WASM_TOOLS="$(find_tool "${WASM_TOOLS:-}" wasm-tools)"
PYTHON="$(find_tool "${PYTHON:-}" python)"
for tool in /usr/bin/cargo /usr/bin/rustc; do
  [ -x "$tool" ] || { echo "error: $tool missing; run scripts/bootstrap.sh (apt: rustc cargo libstd-rust-dev-wasm32)" >&2; exit 1; }
done

# Debian's toolchain, never rustup's (first on PATH, but without a wasm32 std).
export RUSTC=/usr/bin/rustc
# Nothing from ~/.cargo (config, credentials, registry caches) may shape the build.
export CARGO_HOME="$TARGET_DIR/cargo-home"
export CARGO_TARGET_DIR="$TARGET_DIR"
# Cargo names workspace sources by relative paths already; the remaps cover
# whatever is absolute (the checkout, the target dir) should it ever be
# embedded. The encoded form (flags separated by 0x1f) survives paths with
# spaces, which RUSTFLAGS would split; it also replaces any inherited flags.
CARGO_ENCODED_RUSTFLAGS="$(printf '%s\x1f%s' \
  "--remap-path-prefix=$ROOT=/ionflux" "--remap-path-prefix=$TARGET_DIR=/ionflux-target")"
export CARGO_ENCODED_RUSTFLAGS
unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO_BUILD_TARGET
# rustc embeds no timestamps; set for any tool that might.
export SOURCE_DATE_EPOCH=0
JOBS="${CARGO_BUILD_JOBS:-2}"

if [ "$WHAT" = unit-tests ]; then
  # Native target: the imports answer `unavailable` off wasm32 (see pdk/src/abi.rs).
  exec /usr/bin/cargo test --locked --offline -j "$JOBS" --quiet \
    -p ionflux-pdk -p json-path -p template
fi

packages=()
if [ "$WHAT" != testing ]; then packages+=("${STANDARD[@]}"); fi
if [ "$WHAT" != standard ]; then for t in "${TESTING[@]}"; do packages+=("testing-$t"); done; fi
pkg_args=()
for p in "${packages[@]}"; do pkg_args+=(-p "$p"); done

/usr/bin/cargo build --release --target wasm32-unknown-unknown --locked --offline \
  -j "$JOBS" --quiet "${pkg_args[@]}"

mkdir -p "$OUT" "$OUT/testing"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
built=()

# install <file> <dest>: replace dest only when the bytes differ, so an
# unchanged build leaves mtimes alone (and anything watching them quiet).
install_if_changed() {
  if ! cmp -s "$1" "$2"; then mv -f "$1" "$2"; fi
  built+=("$2")
}

# component <core.wasm> <wit dir> <world> <dest>
component() {
  "$WASM_TOOLS" component embed "$2" --world "$3" "$1" -o "$WORK/embedded.wasm"
  "$WASM_TOOLS" component new "$WORK/embedded.wasm" -o "$WORK/component.wasm"
  "$WASM_TOOLS" validate "$WORK/component.wasm"
  install_if_changed "$WORK/component.wasm" "$4"
}

CORE="$TARGET_DIR/wasm32-unknown-unknown/release"
if [ "$WHAT" != testing ]; then
  for name in "${STANDARD[@]}"; do
    component "$CORE/${name//-/_}.wasm" wit transform "$OUT/$name.wasm"
  done
  "$WASM_TOOLS" parse transforms_src/extism-echo/echo.wat -o "$WORK/extism-echo.wasm"
  install_if_changed "$WORK/extism-echo.wasm" "$OUT/extism-echo.wasm"
fi
if [ "$WHAT" != standard ]; then
  for name in "${TESTING[@]}"; do
    component "$CORE/testing_${name//-/_}.wasm" wit transform "$OUT/testing/$name.wasm"
  done
  fixtures=tests/fixtures/outside-world
  component "$fixtures/module.wat" "$fixtures/wit" outside "$OUT/testing/outside-world.wasm"
  "$WASM_TOOLS" parse "$fixtures/extism-wasi.wat" -o "$WORK/outside-world-extism.wasm"
  install_if_changed "$WORK/outside-world-extism.wasm" "$OUT/testing/outside-world-extism.wasm"
fi

"$PYTHON" "$ROOT/scripts/update_manifest_cids.py" --report "${built[@]}"
