# Every developer and CI action. `bash scripts/bootstrap.sh <recipe>` installs
# what the project needs first, then runs the recipe with the venv's `just`.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv/bin"
export PATH := venv + ":" + env_var("PATH")

# List the recipes.
default:
    @just --list

# Install everything (Debian packages, venv, Python package, wasm tools).
setup:
    bash scripts/bootstrap.sh

# Build the standard transforms and the test guests to build/transforms/.
build:
    bash scripts/build_transforms.sh

# Build the conformance guests (Python, TS, AssemblyScript, C) into ~/.cache/ionflux/guests/.
guests:
    bash scripts/build_guests.sh

# Build Kubo (IPFS) from its Go module into a cache outside the repo.
kubo:
    bash scripts/install_kubo.sh

# Build the native call path (native/: PyO3 + the wasmtime crate), cached in ~/.cache/ionflux.
native:
    bash scripts/build_native.sh

# The main demo: publish the standard transforms and run them (local store, defaults).
demo: build
    ionflux demo

# The whole default test suite (real wasm modules, real servers).
test *ARGS: build kubo native
    python -m pytest -q {{ARGS}}

# Long soak and load runs, not part of the default suite.
soak *ARGS: build kubo
    python -m pytest -q -m soak -o addopts="" {{ARGS}}

# Benchmarks, all from one process so the figures compare as ratios.
bench *ARGS: build kubo native
    python -m ionflux.bench {{ARGS}}

# The console's screenshots in the README (docs/console-*.png), made by its browser tests.
screenshots: build
    IONFLUX_SCREENSHOTS=docs python -m pytest -q tests/test_console_browser.py

# Static checks: ruff, mypy strict, and the layer rules (import-linter
# contracts in pyproject.toml; see CONTRIBUTING.md). CI runs this before `test`.
lint:
    ruff check host ionwall tests scripts
    ruff format --check host ionwall tests scripts
    mypy
    lint-imports --no-cache

# A local cluster: PostgreSQL, NATS (JetStream), Kubo and N hosts (default 3), each
# host on its own data directory; prints the URLs, Ctrl-C stops all.
cluster HOSTS="3": build kubo
    ionflux dev cluster --hosts {{HOSTS}}
