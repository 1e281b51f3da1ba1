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
# costs about 5 s per image still robust after APGD-CE on a 2-core CPU). The evaluation
# runs JOBS processes side by side (default 2; each uses about one core).
# Learning rates per kind (LR_*): scripts/lr-sweep.sh compares them by CW-20 accuracy on
# the hold-out, not the test set (docs/lr-sweep-fashion-mnist.md); a finished run made
# with another learning rate stops the script (delete that run folder to retrain it).
# Environment overrides: OUT, EPOCHS, STEPS, BATCH, ATTACK_STEPS, METHOD_WARMUP, N, SEED, AA_N,
# LR_FULL_AT, LR_LORA_AT, LR_FULL_LORA_AT, LR_HYPERAT, JOBS, SWEEP (the sweep's runs, reused where
# their settings are these).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
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
sweep=${SWEEP:-runs/lr-sweep}
method_warmup=${METHOD_WARMUP:-150}
lr_full_at=${LR_FULL_AT:-3e-3}
lr_lora_at=${LR_LORA_AT:-3e-3}
lr_full_lora_at=${LR_FULL_LORA_AT:-1e-3}
lr_hyperat=${LR_HYPERAT:-1e-2}
eps=0.1
start=$(date +%s)
mkdir -p "$out"

if [ ! -f "$out/backbone/model.safetensors" ]; then
  $bin pretrain --preset vit-tiny-fmnist --dataset fashion-mnist --epochs "$epochs" --batch-size 128 \
    --lr 1e-3 --seed "$seed" --out "$out/backbone"
fi

tune() { # name kind methods lr [extra tune flags]
  local dir="$out/$1"
  if [ -f "$dir/run.json" ]; then
    python3 -c 'import json,sys; lr = json.load(open(sys.argv[1]))["config"]["lr"]
if abs(lr - float(sys.argv[2])) > 1e-12 * lr: sys.exit(f"{sys.argv[1]}: made with lr {lr}, this script asks for {sys.argv[2]}; delete that run to retrain it")' \
      "$dir/run.json" "$4"
  fi
  if [ -f "$dir/summary.json" ]; then return; fi
  # A finished run of scripts/lr-sweep.sh with these very settings is the same run: reuse it.
  local swept="$sweep/$2-$4"
  if [ ! -e "$dir" ] && [ -f "$swept/summary.json" ] && python3 - "$swept/run.json" "$2" "$3" "$4" \
      "$steps" "$batch" "$eps" "$attack_steps" "$seed" "$out/backbone" "${@:5}" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
c = run["config"]
kind, methods, lr, steps, batch, eps, attack_steps, seed, backbone = sys.argv[2:11]
extra = sys.argv[11:]
warmup = int(extra[extra.index("--method-warmup") + 1]) if "--method-warmup" in extra else 0
same = (c["kind"] == kind and c["methods"] == [m for m in methods.split(",") if m]
        and abs(c["lr"] - float(lr)) <= 1e-12 * c["lr"] and c["steps"] == int(steps)
        and c["batch_size"] == int(batch) and abs(c["defense"]["eps"] - float(eps)) < 1e-7
        and c["defense"]["steps"] == int(attack_steps) and c["seed"] == int(seed)
        and c.get("method_warmup", 0) == warmup and run["backbone_source"] == backbone
        and run["dataset"] == "fashion-mnist" and run["holdout"] == 5000 and run["train_limit"] is None)
sys.exit(0 if same else 1)
PY
  then
    echo "tune $1: reusing $swept (same settings)"
    cp -a "$swept" "$dir.tmp" && rm -rf "$dir.tmp/merges" && touch "$dir.tmp/from-lr-sweep" && mv "$dir.tmp" "$dir"
    return
  fi
  if [ -f "$dir/run.json" ]; then
    $bin tune --resume --out "$dir"
  else
    $bin tune --backbone "$out/backbone" --dataset fashion-mnist --kind "$2" --methods "$3" --lr "$4" \
      --steps "$steps" --batch-size "$batch" --eps "$eps" --attack-steps "$attack_steps" \
      --seed "$seed" --checkpoint-every 50 --out "$dir" "${@:5}"
  fi
}
tune linear-probe linear-probe "" 1e-3
tune full-at full-at pgd-at "$lr_full_at"
tune lora-at lora-at pgd-at "$lr_lora_at"
tune full-lora-at full-lora-at pgd-at "$lr_full_lora_at"
tune hyperat hyperat pgd-at,trades,mart "$lr_hyperat" --method-warmup "$method_warmup"
tune hyperat-no-warmup hyperat pgd-at,trades,mart "$lr_hyperat"
# A merge is redone only when missing or older than its run's checkpoint: rewriting it
# would make every cached row that reads it stale.
merge() {
  local run=$out/$1 strategy=$2; shift 2
  local file=$run/merges/$strategy.safetensors
  if [ ! -f "$file" ] || [ "$run/checkpoint.safetensors" -nt "$file" ]; then
    $bin merge --run "$run" --strategy "$strategy" "$@"
  fi
}
merge hyperat uniform
merge hyperat-no-warmup uniform
merge hyperat adaptive --merge-steps 40 --batch-size 64 --seed "$seed"

h="$out/hyperat"
# Each row is evaluated by its own `hyperat report` and kept in $rep/NAME.json: a row is
# redone only when its run (summary.json) or merge file is newer than that JSON, so an
# interrupted evaluation resumes and a changed run redoes only its rows. JOBS rows (default
# 2) run side by side (each process uses about one core), the headline rows first.
rep="$out/report/n$n-aa$aa_n-seed$seed"
mkdir -p "$rep"
rows=("Backbone (no AT)=$h#base" "Linear probe=$out/linear-probe#tuned" "Full-AT (PGD-AT)=$out/full-at#tuned"
  "LoRA-AT (PGD-AT)=$out/lora-at#tuned" "FullLoRA-AT (PGD-AT)=$out/full-lora-at#tuned"
  "HyperAT PGD-AT=$h#method:pgd-at" "HyperAT TRADES=$h#method:trades" "HyperAT MART=$h#method:mart"
  "HyperAT+ (uniform)=$h#merged:uniform" "HyperAT adaptive=$h#merged:adaptive"
  "HyperAT+ no warm-up (uniform)=$out/hyperat-no-warmup#merged:uniform")
slug() { echo "$1" | tr -c 'A-Za-z0-9+\n' '-'; }
row_report() { # NAME=SPEC
  local name=${1%%=*} spec=${1#*=} json
  json="$rep/$(slug "$name").json"
  local run=${spec%%#*} variant=${spec#*#} deps
  deps=("$run/summary.json")
  [[ $variant == merged:* ]] && deps+=("$run/merges/${variant#merged:}.safetensors")
  if [ -f "$json" ]; then
    local stale=0 d
    for d in "${deps[@]}"; do [ "$d" -nt "$json" ] && stale=1; done
    [ $stale = 0 ] && return 0
  fi
  $bin report --dataset fashion-mnist --limit "$n" --eps "$eps" --alpha 0.01 --steps 20 --seed "$seed" \
    --aa-limit "$aa_n" --models "$name=$spec" --json "$json.tmp" > "$rep/$(slug "$name").log" 2>&1 &&
    mv "$json.tmp" "$json"
}
echo "report: clean, PGD-20, CW-20 on $n images, AutoAttack on $aa_n (per-row logs in $rep)"
# The headline rows first (HyperAT+, LoRA-AT, full-AT), then the other trained rows, the cheap last.
order=(8 3 2 5 6 7 9 10 4 1 0)
for i in "${order[@]}"; do
  spawn row_report "${rows[$i]}"
done
wait_all || { tail -n 5 "$rep"/*.log; echo "a row's report failed (logs in $rep)"; exit 1; }
python3 - "$rep" "${rows[@]}" > "$out/report.json" <<'PY'
import json, sys, re
rep, rows = sys.argv[1], [r.split("=", 1)[0] for r in sys.argv[2:]]
parts = [json.load(open(f"{rep}/{re.sub(r'[^A-Za-z0-9+]', '-', name)}.json")) for name in rows]
json.dump({"config": parts[0]["config"], "rows": [p["rows"][0] for p in parts]}, sys.stdout, indent=1)
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
