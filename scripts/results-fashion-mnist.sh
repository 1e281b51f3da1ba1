#!/usr/bin/env bash
# Makes docs/results-fashion-mnist.md and the shipped default model
# public/models/fmnist-vit-tiny/ from scratch, with one command:
#
#   scripts/results-fashion-mnist.sh
#
# Backbone: the tiny ViT pretrained on Fashion-MNIST. Rows: linear probe, full-AT,
# LoRA-AT, FullLoRA-AT (each PGD-AT), HyperAT per method (PGD-AT, TRADES, MART),
# HyperAT+ (uniform merge), HyperAT adaptive merge; the undefended backbone for
# reference. Every adversarially trained row uses the same budget: STEPS optimiser
# steps of BATCH images with a PGD-ATTACK_STEPS inner attack at eps 0.1. Evaluation:
# clean, PGD-20 and CW-20 (eps 0.1, step 0.01) on the first N test images.
# AA_N > 0 adds standard AutoAttack on the first AA_N images of every row (slow: about
# 10 s per robust image on a 2-core CPU).
# Environment overrides: OUT, EPOCHS, STEPS, BATCH, ATTACK_STEPS, N, SEED, AA_N.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p hyperat-server
bin=target/release/hyperat
out=${OUT:-runs/results-fashion-mnist}
epochs=${EPOCHS:-3}
steps=${STEPS:-300}
batch=${BATCH:-64}
attack_steps=${ATTACK_STEPS:-5}
n=${N:-1000}
seed=${SEED:-0}
aa_n=${AA_N:-0}
eps=0.1
start=$(date +%s)
mkdir -p "$out"

if [ ! -f "$out/backbone/model.safetensors" ]; then
  $bin pretrain --preset vit-tiny-fmnist --dataset fashion-mnist --epochs "$epochs" --batch-size 128 \
    --lr 1e-3 --seed "$seed" --out "$out/backbone"
fi

tune() { # name kind methods lr
  local dir="$out/$1"
  if [ -f "$dir/summary.json" ]; then return; fi
  if [ -f "$dir/run.json" ]; then
    $bin tune --resume --out "$dir"
  else
    $bin tune --backbone "$out/backbone" --dataset fashion-mnist --kind "$2" --methods "$3" --lr "$4" \
      --steps "$steps" --batch-size "$batch" --eps "$eps" --attack-steps "$attack_steps" \
      --seed "$seed" --checkpoint-every 50 --out "$dir"
  fi
}
tune linear-probe linear-probe "" 1e-3
tune full-at full-at pgd-at 3e-4
tune lora-at lora-at pgd-at 1e-3
tune full-lora-at full-lora-at pgd-at 1e-3
tune hyperat hyperat pgd-at,trades,mart 1e-3
$bin merge --run "$out/hyperat" --strategy uniform
[ -f "$out/hyperat/merges/adaptive.safetensors" ] || \
  $bin merge --run "$out/hyperat" --strategy adaptive --merge-steps 40 --batch-size 64 --seed "$seed"

h="$out/hyperat"
$bin report --dataset fashion-mnist --limit "$n" --eps "$eps" --alpha 0.01 --steps 20 --seed "$seed" --aa-limit "$aa_n" \
  --models "Backbone (no AT)=$h#base,Linear probe=$out/linear-probe#tuned,Full-AT (PGD-AT)=$out/full-at#tuned,LoRA-AT (PGD-AT)=$out/lora-at#tuned,FullLoRA-AT (PGD-AT)=$out/full-lora-at#tuned,HyperAT PGD-AT=$h#method:pgd-at,HyperAT TRADES=$h#method:trades,HyperAT MART=$h#method:mart,HyperAT+ (uniform)=$h#merged:uniform,HyperAT adaptive=$h#merged:adaptive" \
  --json "$out/report.json" --md "$out/report.md"

# The shipped default model: backbone, the HyperAT run (hypernetwork side, so every
# method's LoRA can be generated) and the merged export.
ship=public/models/fmnist-vit-tiny
rm -rf "$ship.tmp" && mkdir -p "$ship.tmp"
cp -r "$out/backbone" "$ship.tmp/backbone"
mkdir -p "$ship.tmp/hyperat"
cp -r "$h/run.json" "$h/backbone" "$h/checkpoint.safetensors" "$h/summary.json" "$h/metrics.jsonl" "$h/merges" "$ship.tmp/hyperat/"
$bin export --run "$h" --variant merged:uniform --out "$ship.tmp/merged"
rm -rf "$ship" && mv "$ship.tmp" "$ship"

python3 scripts/results_doc.py "$out/report.json" "$ship" "$(( $(date +%s) - start ))" \
  "steps=$steps batch=$batch attack_steps=$attack_steps epochs=$epochs n=$n seed=$seed" > docs/results-fashion-mnist.md
echo "results: docs/results-fashion-mnist.md, shipped model in $ship ($(du -sh "$ship" | cut -f1))"
