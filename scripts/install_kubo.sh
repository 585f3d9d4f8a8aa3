#!/usr/bin/env bash
# Builds Kubo (the IPFS daemon) once per machine into a cache outside the repo
# and prints the path of the `ipfs` binary. A second run only checks the cache.
#
#   bash scripts/install_kubo.sh            # -> ~/.cache/ionflux/kubo-v0.41.0/ipfs
#   KUBO_VERSION=v0.40.1 bash scripts/install_kubo.sh
#
# Tests find the binary through $IONFLUX_KUBO_BIN, else this cache path, else PATH.
set -euo pipefail

version="${KUBO_VERSION:-v0.41.0}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/ionflux/kubo-${version}"
bin="${cache}/ipfs"

if [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "install_kubo: go is not on PATH" >&2; exit 1; }
mkdir -p "$cache"
# Build into a temp dir and rename, so an interrupted build never leaves a
# half-written binary that the check above would trust.
tmp="$(mktemp -d "${cache}/build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "install_kubo: building github.com/ipfs/kubo/cmd/ipfs@${version} (takes minutes)" >&2
start=$(date +%s)
# Preferred: `GOBIN=... go install github.com/ipfs/kubo/cmd/ipfs@<version>`. The
# module proxy reachable here refuses the version *list* that `go install pkg@v`
# reads to look for deprecations, so fall back to the equivalent build inside a
# throwaway module that requires exactly that Kubo release (Kubo's go.mod has no
# replace directives, so the build list is the same).
if ! GOBIN="$tmp" CGO_ENABLED=0 go install "github.com/ipfs/kubo/cmd/ipfs@${version}" 2>"$tmp/install.log"; then
  cat "$tmp/install.log" >&2
  echo "install_kubo: go install failed; building in a throwaway module instead" >&2
  mkdir -p "$tmp/mod"
  (
    cd "$tmp/mod"
    go mod init ionflux.local/kubobuild >/dev/null 2>&1
    go get "github.com/ipfs/kubo/cmd/ipfs@${version}"
    CGO_ENABLED=0 go build -o "$tmp/ipfs" github.com/ipfs/kubo/cmd/ipfs
  )
fi
mv -f "$tmp/ipfs" "$bin"
echo "install_kubo: built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
