#!/usr/bin/env bash
# Installs what is missing, builds `hyperat`, pretrains the tiny ViT briefly on
# Fashion-MNIST and evaluates it clean, under FGSM and under PGD.
# Environment: STEPS (training steps, default 300), N (test images, default 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p hyperat-server
bin="${CARGO_TARGET_DIR:-target}/release/hyperat"
out=runs/quickstart
steps=${STEPS:-300}
n=${N:-1000}

$bin pretrain --preset vit-tiny-fmnist --dataset fashion-mnist --epochs 1 --max-steps "$steps" \
  --batch-size 128 --out "$out/backbone"
for attack in none fgsm pgd; do
  $bin eval --model "$out/backbone" --dataset fashion-mnist --split test --limit "$n" \
    --attack "$attack" --eps 0.1 --alpha 0.01 --steps 10 --json "$out/eval-$attack.json"
done
echo "quickstart: reports in $out/ (eval-none.json, eval-fgsm.json, eval-pgd.json)"
