#!/usr/bin/env bash
# Load benchmark on loopback: starts `hyperat serve` on the shipped model, sends 200
# concurrent predictions and 20 concurrent PGD-20 attacks (eps 0.1, step 0.01), prints
# throughput and p50/p99 latency, stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p hyperat-server --bin hyperat --example load
addr=${ADDR:-127.0.0.1:3917}
data=$(mktemp -d)
target/release/hyperat serve --addr "$addr" --models public/models --data-dir "$data" --dist /nonexistent &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
  curl -sf "http://$addr/api/health" >/dev/null 2>&1 && break
  sleep 0.2
done
target/release/examples/load "$addr" "${PREDICTS:-200}" "${ATTACKS:-20}"
