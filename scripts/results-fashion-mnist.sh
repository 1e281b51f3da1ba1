#!/usr/bin/env bash
# Makes docs/results-fashion-mnist.md and the shipped default model
# public/models/fmnist-vit-tiny/ from scratch, with one command:
#
#   scripts/results-fashion-mnist.sh
#
# Backbone: the tiny ViT pretrained on Fashion-MNIST. Rows: linear probe, full-AT,
# LoRA-AT, FullLoRA-AT (each PGD-AT), HyperAT per method (PGD-AT, TRADES, MART),
# HyperAT+ (uniform merge), HyperAT adaptive merge; the undefended backbone for
# reference; and HyperAT+ without the method warm-up (METHOD_WARMUP steps of PGD-AT
# alone before the three methods are sampled), to show what the warm-up does. Every adversarially trained row uses the same budget: STEPS optimiser
# steps of BATCH images with a PGD-ATTACK_STEPS inner attack at eps 0.1. Evaluation:
# clean, PGD-20 and CW-20 (eps 0.1, step 0.01) on the first N test images.
# Standard AutoAttack runs on the first AA_N images of every row (AA_N=0 skips it; it
# costs about 3 s per image still robust after APGD-CE). The evaluation runs as two
# processes side by side (each uses about one core).
# Environment overrides: OUT, EPOCHS, STEPS, BATCH, ATTACK_STEPS, METHOD_WARMUP, N, SEED, AA_N.
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
aa_n=${AA_N:-500}
method_warmup=${METHOD_WARMUP:-150}
eps=0.1
start=$(date +%s)
mkdir -p "$out"

if [ ! -f "$out/backbone/model.safetensors" ]; then
  $bin pretrain --preset vit-tiny-fmnist --dataset fashion-mnist --epochs "$epochs" --batch-size 128 \
    --lr 1e-3 --seed "$seed" --out "$out/backbone"
fi

tune() { # name kind methods lr [extra tune flags]
  local dir="$out/$1"
  if [ -f "$dir/summary.json" ]; then return; fi
  if [ -f "$dir/run.json" ]; then
    $bin tune --resume --out "$dir"
  else
    $bin tune --backbone "$out/backbone" --dataset fashion-mnist --kind "$2" --methods "$3" --lr "$4" \
      --steps "$steps" --batch-size "$batch" --eps "$eps" --attack-steps "$attack_steps" \
      --seed "$seed" --checkpoint-every 50 --out "$dir" "${@:5}"
  fi
}
tune linear-probe linear-probe "" 1e-3
tune full-at full-at pgd-at 3e-4
tune lora-at lora-at pgd-at 1e-3
tune full-lora-at full-lora-at pgd-at 1e-3
tune hyperat hyperat pgd-at,trades,mart 1e-3 --method-warmup "$method_warmup"
tune hyperat-no-warmup hyperat pgd-at,trades,mart 1e-3
$bin merge --run "$out/hyperat" --strategy uniform
$bin merge --run "$out/hyperat-no-warmup" --strategy uniform
[ -f "$out/hyperat/merges/adaptive.safetensors" ] || \
  $bin merge --run "$out/hyperat" --strategy adaptive --merge-steps 40 --batch-size 64 --seed "$seed"

h="$out/hyperat"
report() { # part models (a part whose JSON exists is kept: delete report-*.json to redo it)
  [ -f "$out/report-$1.json" ] && return
  $bin report --dataset fashion-mnist --limit "$n" --eps "$eps" --alpha 0.01 --steps 20 --seed "$seed" --aa-limit "$aa_n" \
    --models "$2" --json "$out/report-$1.json" --md "$out/report-$1.md" > "$out/report-$1.log" 2>&1
}
# Two halves of about equal AutoAttack cost, side by side; the rows keep this order.
rows=("Backbone (no AT)=$h#base" "Linear probe=$out/linear-probe#tuned" "Full-AT (PGD-AT)=$out/full-at#tuned"
  "LoRA-AT (PGD-AT)=$out/lora-at#tuned" "FullLoRA-AT (PGD-AT)=$out/full-lora-at#tuned"
  "HyperAT PGD-AT=$h#method:pgd-at" "HyperAT TRADES=$h#method:trades" "HyperAT MART=$h#method:mart"
  "HyperAT+ (uniform)=$h#merged:uniform" "HyperAT adaptive=$h#merged:adaptive"
  "HyperAT+ no warm-up (uniform)=$out/hyperat-no-warmup#merged:uniform")
join() { local IFS=,; echo "$*"; }
echo "report: clean, PGD-20, CW-20 on $n images, AutoAttack on $aa_n (logs: $out/report-a.log, $out/report-b.log)"
report a "$(join "${rows[0]}" "${rows[1]}" "${rows[2]}" "${rows[3]}" "${rows[6]}" "${rows[10]}")" & pa=$!
report b "$(join "${rows[4]}" "${rows[5]}" "${rows[7]}" "${rows[8]}" "${rows[9]}")" & pb=$!
wait $pa || { cat "$out/report-a.log"; exit 1; }
wait $pb || { cat "$out/report-b.log"; exit 1; }
python3 - "$out" "${rows[@]}" <<'PY'
import json, sys
out, order = sys.argv[1], [r.split("=", 1)[0] for r in sys.argv[2:]]
a, b = (json.load(open(f"{out}/report-{p}.json")) for p in "ab")
rows = {r["name"]: r for r in a["rows"] + b["rows"]}
a["rows"] = [rows[name] for name in order]
json.dump(a, open(f"{out}/report.json", "w"), indent=1)
PY

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
