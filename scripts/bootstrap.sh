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

# The native call path (a PyO3 extension over the wasmtime crate): cached in
# ~/.cache/ionflux by source hash; the first build on a machine takes minutes.
# A failed build is reported, not fatal: components then run on wasmtime-py.
bash scripts/build_native.sh || echo "bootstrap: the native extension did not build (see above)" >&2

if [ $# -gt 0 ]; then
  exec .venv/bin/just "$@"
fi
