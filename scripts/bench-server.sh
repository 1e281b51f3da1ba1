#!/usr/bin/env bash
# Load benchmark on loopback: starts `hyperat serve` on the shipped model, sends 200
# concurrent predictions and 20 concurrent PGD-20 attacks (eps 0.1, step 0.01), prints
# throughput and p50/p99 latency, stops the server.
#   scripts/bench-server.sh soak    the soak instead (server/examples/soak.rs): CLIENTS
#                                   (50) clients of mixed traffic with 5% hostile requests
#                                   for SOAK_SECONDS (600); per-endpoint latency, status counts,
#                                   the server's RSS and open descriptors, lost jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p hyperat-server --bin hyperat --example load --example soak
bin=${CARGO_TARGET_DIR:-target}/release
addr=${ADDR:-127.0.0.1:3917}
data=$(mktemp -d)
"$bin/hyperat" serve --addr "$addr" --models public/models --data-dir "$data" --dist /nonexistent &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
  curl -sf "http://$addr/api/health" >/dev/null 2>&1 && break
  sleep 0.2
done
if [ "${1:-}" = soak ]; then
  "$bin/examples/soak" "$addr" "$pid" "${SOAK_SECONDS:-600}" "${CLIENTS:-50}"
else
  "$bin/examples/load" "$addr" "${PREDICTS:-200}" "${ATTACKS:-20}"
fi
