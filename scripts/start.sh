#!/usr/bin/env bash
# Starts HyperAT Studio on the shipped Fashion-MNIST model (public/models/fmnist-vit-tiny):
# installs what is missing, builds `hyperat` (and the web UI once it exists in app/),
# then serves the API and UI. Open the URL it prints. ADDR=host:port to change it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p hyperat-server
if [ -f app/Cargo.toml ] && [ -x scripts/build-ui.sh ]; then
  scripts/build-ui.sh
fi
addr=${ADDR:-127.0.0.1:3000}
echo "start: HyperAT Studio on http://$addr/ (Ctrl-C stops it; jobs resume at the next start)" >&2
exec "${CARGO_TARGET_DIR:-target}/release/hyperat" serve --addr "$addr" --models public/models --data-dir data --dist dist
