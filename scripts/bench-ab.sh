#!/usr/bin/env bash
# Interleaved before/after timing of several `hyperat` binaries on this machine:
#   scripts/bench-ab.sh ROUNDS BIN_A BIN_B [BIN_C ...]
# Each round runs `BIN bench --skip-small --reps 5` for every binary in turn (`VIT_S=1`:
# with the ViT-S/16 workloads); the table gives, per workload, the minimum of the rounds'
# medians for each binary. These 2-core machines drift by 10-20% over minutes, so
# binaries are compared within one sitting, interleaved. Background `hyperat tune`,
# `report` and `eval` runs (any binary named hyperat*) are paused (SIGSTOP) meanwhile
# and resumed.
set -euo pipefail
rounds=$1
shift
out=$(mktemp -d)
skip=--skip-small
[ "${VIT_S:-0}" = 1 ] && skip=
source "$(dirname "$0")/lib.sh"
pause_background
for r in $(seq "$rounds"); do
  i=0
  for bin in "$@"; do
    i=$((i + 1))
    "$bin" bench $skip --reps 5 --json "$out/$i-$r.json" > /dev/null
  done
done
python3 - "$out" "$rounds" "$@" <<'PY'
import json, sys
out, rounds, bins = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flat(v, prefix + k + ".")
        elif isinstance(v, (int, float)) and k.endswith("_ms"):
            yield prefix + k, v
rows = {}
for i, _ in enumerate(bins, 1):
    for r in range(1, rounds + 1):
        for k, v in flat(json.load(open(f"{out}/{i}-{r}.json"))):
            rows.setdefault(k, []).append((i, v))
print("workload (min of", rounds, "medians, ms)".ljust(38), *[f"{b[-14:]:>14}" for b in bins])
for k, vals in rows.items():
    best = [min(v for j, v in vals if j == i) for i in range(1, len(bins) + 1)]
    print(k.ljust(40), *[f"{v:14.1f}" for v in best])
PY
rm -rf "$out"
