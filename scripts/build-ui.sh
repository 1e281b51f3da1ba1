#!/usr/bin/env bash
# Builds the web UI (app/) into dist/ with Trunk, offline. Installs the pinned tools
# when they are missing (docs/toolchain.md): Trunk 0.21.14, wasm-bindgen-cli at the
# version in app/Cargo.lock, wasm-opt from npm binaryen@132 (Debian's is too old).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hyperat-target}"
tools="$HOME/.cache/hyperat-tools"
mkdir -p "$tools"

command -v rustup >/dev/null && ! rustup target list --installed | grep -q wasm32-unknown-unknown \
  && rustup target add wasm32-unknown-unknown

if ! trunk --version 2>/dev/null | grep -q '0.21.14'; then
  echo "build-ui: installing trunk 0.21.14 (a few minutes, once)" >&2
  cargo install trunk --version 0.21.14 --locked --quiet
fi

wbg=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/, ""); print; exit}' app/Cargo.lock)
if ! wasm-bindgen --version 2>/dev/null | grep -q "$wbg"; then
  echo "build-ui: installing wasm-bindgen-cli $wbg (a few minutes, once)" >&2
  cargo install wasm-bindgen-cli --version "$wbg" --quiet
fi
grep -q "wasm_bindgen = \"$wbg\"" Trunk.toml || {
  echo "build-ui: Trunk.toml pins another wasm-bindgen than app/Cargo.lock ($wbg)" >&2; exit 1; }

if ! "$tools/node_modules/.bin/wasm-opt" --version 2>/dev/null | grep -q 'version 132'; then
  command -v npm >/dev/null || {
    echo "build-ui: installing npm (for wasm-opt)" >&2
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq npm >/dev/null; else sudo apt-get install -y -qq npm >/dev/null; fi
  }
  echo "build-ui: installing wasm-opt (npm binaryen@132)" >&2
  (cd "$tools" && npm install --silent --no-audit --no-fund binaryen@132)
fi
export PATH="$tools/node_modules/.bin:$HOME/.cargo/bin:$PATH"

echo "== trunk build (app/ -> dist/)" >&2
# Trunk runs cargo in app/, a workspace of its own with its own Cargo.lock.
trunk build --release --locked 2>&1 | grep -v '^\s*$' >&2
# Precompressed copies: `hyperat serve` sends them to browsers that accept gzip.
for f in dist/*.wasm dist/*.js dist/*.css; do if [ -f "$f" ]; then gzip -9 -k -f "$f"; fi; done
ls -la dist/*.wasm dist/*.wasm.gz >&2
