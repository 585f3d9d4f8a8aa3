#!/usr/bin/env bash
# Sets up everything IONFLUX host needs on a fresh Debian machine, then runs
# one `just` recipe:  bash scripts/bootstrap.sh demo | test | bench | ...
# Idempotent: a second run only checks what the first installed.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# Debian's Rust: the only toolchain here that has a std for wasm32 (TOOLCHAIN.md).
# PostgreSQL: state.backend postgres, its tests and `just cluster` (testing/postgres.py).
# chromium: the console's browser tests (Playwright drives it; it never downloads a browser).
for pkg in rustc cargo libstd-rust-dev-wasm32 librust-serde-dev librust-serde-derive-dev librust-serde-json-dev postgresql chromium; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
# Guests in other languages (guests/, `ionflux build`): clang and wasm-ld for C
# plugins; Node.js and npm for the pinned JS/TS/AssemblyScript toolchain.
for pkg in clang-14 lld-14; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi

# The guest npm toolchain (componentize-qjs, TypeScript, esbuild, AssemblyScript,
# @extism/as-pdk), exactly as guests/package-lock.json pins it.
npm_stamp=guests/node_modules/.installed-$(sha256sum guests/package-lock.json | cut -c1-16)
if [ ! -f "$npm_stamp" ]; then
  (cd guests && npm ci --no-audit --no-fund --loglevel=error)
  touch "$npm_stamp"
fi

# The native call path (a PyO3 extension over the wasmtime crate): cached in
# ~/.cache/ionflux by source hash; the first build on a machine takes minutes.
# A failed build is reported, not fatal: components then run on wasmtime-py.
bash scripts/build_native.sh || echo "bootstrap: the native extension did not build (see above)" >&2

if [ $# -gt 0 ]; then
  exec .venv/bin/just "$@"
fi
