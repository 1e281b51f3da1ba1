#!/usr/bin/env bash
# WiSE-FT on the shipped HyperAT+ (docs/results-fashion-mnist.md, "Trading robustness
# for clean accuracy"): interpolate the clean backbone's weights toward HyperAT+'s,
# `backbone + t·(HyperAT+ − backbone)`, and measure each t on the HOLD-OUT (1000 images,
# clean and PGD-20 at eps 0.1); nothing here reads the test set. About 40 s of one core
# per t. Resumable: a t whose JSON exists is skipped.
#   OUT=~/hyperat-runs/wise BIN=target/release/hyperat scripts/wise-fashion-mnist.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$HOME/hyperat-runs/wise}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/hyperat}
WEIGHTS=${WEIGHTS:-"0.5 0.6 0.65 0.7 0.75 0.8 0.85 0.9 1.0"}
MODEL=${MODEL:-public/models/fmnist-vit-tiny}
export RAYON_NUM_THREADS=${THREADS:-1}
mkdir -p "$OUT/models" "$OUT/holdout"
for t in $WEIGHTS; do
  json="$OUT/holdout/t$t.json"
  [ -s "$json" ] && continue
  dir="$OUT/models/t$t"
  [ -s "$dir/config.json" ] || "$BIN" interpolate --from "$MODEL/backbone" \
    --to "$MODEL/hyperat#merged:uniform" --weight "$t" --out "$dir"
  "$BIN" eval --model "$dir" --split holdout --limit 1000 --attack pgd --steps 20 \
    --eps 0.1 --alpha 0.01 --batch-size 250 --json "$json.tmp"
  mv "$json.tmp" "$json"
done
python3 - "$OUT/holdout" <<'PY'
import json, pathlib, sys
rows = []
for p in sorted(pathlib.Path(sys.argv[1]).glob("t*.json")):
    j = json.loads(p.read_text())
    rows.append((float(p.stem[1:]), j))
print("| t | clean | PGD-20 robust | mean confidence |\n|---|---|---|---|")
for t, j in sorted(rows):
    print(f"| {t:g} | {100*j['clean_acc']:.1f} | {100*j['robust_acc']:.1f} | {j['mean_confidence']:.3f} |")
PY
