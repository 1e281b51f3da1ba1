#!/usr/bin/env bash
# Installs what the project needs and is missing; safe to run again (skips what is there).
#   - Debian package dataset-fashion-mnist (the embedded default dataset)
#   - the wasm32-unknown-unknown Rust target (the core library and the web UI build for it)
#   - npm (wasm-opt for the web UI comes from npm's binaryen)
#   - with HYPERAT_SETUP_BROWSER=1: Debian's chromium and chromium-driver, and axe-core
#     (npm, pinned) for the browser tests' accessibility checks
set -euo pipefail

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "setup: need root for: $*" >&2; return 1; fi
}

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

if [ -z "${HYPERAT_DATA:-}" ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
  apt_install dataset-fashion-mnist
fi

command -v npm >/dev/null || apt_install npm

if [ "${HYPERAT_SETUP_BROWSER:-0}" = 1 ]; then
  apt_install chromium chromium-driver
  # The browser tests inject axe-core from here (tests/browser: HYPERAT_AXE overrides).
  tools="$HOME/.cache/hyperat-tools"
  if ! grep -qs '"version": "4.11.0"' "$tools/node_modules/axe-core/package.json"; then
    echo "setup: installing axe-core 4.11.0 (npm)" >&2
    mkdir -p "$tools" && (cd "$tools" && npm install --silent --no-audit --no-fund --save-exact axe-core@4.11.0)
  fi
fi

if command -v rustup >/dev/null && ! rustup target list --installed | grep -q wasm32-unknown-unknown; then
  echo "setup: adding the wasm32-unknown-unknown target" >&2
  rustup target add wasm32-unknown-unknown >/dev/null
fi
