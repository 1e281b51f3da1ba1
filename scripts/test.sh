#!/usr/bin/env bash
# Runs every test: installs what is missing (chromium, the UI's tools), builds the web
# UI, then the workspace tests (unit, timm fixtures, attacks, data loaders, CLI, server,
# and the browser end-to-end tests in tests/) and the wasm32 build of the core.
set -euo pipefail
cd "$(dirname "$0")/.."
HYPERAT_SETUP_BROWSER=1 scripts/setup.sh
scripts/build-ui.sh

echo "== results document helpers (McNemar's exact test) and the results archive" >&2
python3 scripts/results_doc.py --self-test
python3 scripts/results_archive.py --self-test
python3 scripts/results_fashion_mnist.py --self-test

echo "== no import cycles among sibling modules" >&2
python3 scripts/check-cycles.py --self-test
python3 scripts/check-cycles.py hyperat/src server/src app/src

echo "== cargo test --workspace" >&2
cargo test --workspace --locked

echo "== core library for wasm32-unknown-unknown (default features off)" >&2
cargo check --locked -p hyperat --no-default-features --target wasm32-unknown-unknown
echo "== all tests passed" >&2
