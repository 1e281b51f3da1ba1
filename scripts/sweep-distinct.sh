#!/usr/bin/env bash
# Which HyperAT settings keep the defenses' LoRAs distinct? One command:
#
#   scripts/sweep-distinct.sh
#
# Tunes HyperAT (PGD-AT, TRADES, MART) with each setting of the grid below at one short
# common budget (EPOCHS, default 1, batch 128, PGD-5 of 0.025 at eps 0.1, seed 0) and
# reads what every run records as it trains (hyperat tune's diagnostics): the mean
# pairwise cosine between the methods' weight deltas at the end, and each method's LoRA
# and the uniform merge on the first 512 hold-out images (clean, PGD-10). Only the
# hold-out is used; the test set is not looked at. Writes docs/sweep-distinct-fashion-mnist.md.
# Runs go to OUT (default ~/hyperat-runs/sweep-distinct); finished runs are reused, a
# killed one resumes. JOBS processes run side by side (default 2, THREADS each, default 1).
# Cost on this 2-core CPU: about 25 min per setting and epoch on one core.
# Environment overrides: OUT, BACKBONE, EPOCHS, LR, SEED, JOBS, THREADS, DOC_ONLY, BIN (a
# built binary to use instead of building one).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
out=${OUT:-$HOME/hyperat-runs/sweep-distinct}
backbone=${BACKBONE:-public/models/fmnist-vit-tiny/backbone}
epochs=${EPOCHS:-1}
lr=${LR:-3e-3}
seed=${SEED:-0}
threads=${THREADS:-1}
# name | flags (beside the common ones) [| learning rate, where not LR]
grid=("random|"
  "random, PGD-AT warm-up 10%|--method-warmup-fraction 0.1"
  "balanced, z to heads, z lr x10, z std 3|--sampling balanced --method-to-heads --lr-scales method-embed=10 --method-embed-std 3"
  "balanced, z to heads|--sampling balanced --method-to-heads"
  "balanced, z to heads, PGD-AT warm-up 10%|--sampling balanced --method-to-heads --method-warmup-fraction 0.1"
  "balanced|--sampling balanced"
  "balanced, z to heads, lr 1e-3|--sampling balanced --method-to-heads|1e-3"
  "balanced, z to heads, diversity 1|--sampling balanced --method-to-heads --method-diversity 1"
  "balanced, z to heads, diversity 0.1|--sampling balanced --method-to-heads --method-diversity 0.1"
  "balanced, z to heads, diversity 0.01|--sampling balanced --method-to-heads --method-diversity 0.01")
# Dropped before they finished (2026-12-05), their neighbours having answered for them:
# "balanced, z to heads, PGD-AT warm-up 10%, lr 1e-3" (lr 1e-3 was only slower), "balanced,
# z std 3" and "balanced, z lr x10" (balanced sampling without z to the heads was unstable).
slug() { echo "$1" | tr -c 'A-Za-z0-9\n' '-' | tr -s '-'; }
tune() { # name flags [lr]
  local dir row_lr=${3:-$lr}
  dir="$out/$(slug "$1")"
  if [ -f "$dir/summary.json" ]; then return 0; fi
  echo "sweep: $1"
  if [ -f "$dir/run.json" ]; then
    RAYON_NUM_THREADS=$threads $bin tune --resume --out "$dir" > "$dir.log" 2>&1
  else
    # shellcheck disable=SC2086
    RAYON_NUM_THREADS=$threads $bin tune --backbone "$backbone" --dataset fashion-mnist --kind hyperat \
      --methods pgd-at,trades,mart --epochs "$epochs" --batch-size 128 --lr "$row_lr" --warmup-fraction 0.1 \
      --eps 0.1 --alpha 0.025 --attack-steps 5 --seed "$seed" --checkpoint-every 50 --out "$dir" $2 \
      > "$dir.log" 2>&1
  fi
}
# DOC_ONLY=1 rewrites the document from the runs there are, running nothing.
if [ -z "${DOC_ONLY:-}" ]; then
  if [ -n "${BIN:-}" ]; then
    bin=$BIN # a binary built before (resuming without a rebuild)
  else
    cargo build --release --locked -p hyperat-server
    mkdir -p "$out/bin"
    # Its own copy of the binary: a rebuild meanwhile cannot change a run.
    cp "${CARGO_TARGET_DIR:-target}/release/hyperat" "$out/bin/hyperat.tmp" && mv "$out/bin/hyperat.tmp" "$out/bin/hyperat"
    bin=$out/bin/hyperat
  fi
  for g in "${grid[@]}"; do
    IFS='|' read -r name flags row_lr <<< "$g"
    spawn tune "$name" "$flags" "${row_lr:-$lr}"
  done
  wait_all || { echo "a run failed (logs: $out/*.log)"; exit 1; }
fi
python3 - "$out" "$epochs" "$lr" "$backbone" "${grid[@]}" > docs/sweep-distinct-fashion-mnist.md <<'PY'
import json, re, sys
out, epochs, lr, backbone, grid = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
print("# Keeping the defenses distinct: a sweep on Fashion-MNIST\n")
print("Made by `scripts/sweep-distinct.sh`. HyperAT with PGD-AT, TRADES and MART, "
      f"{epochs} epoch(s) at batch 128, lr {lr} unless the setting names another (warm-up 10%, cosine), PGD-5 of 0.025 at eps 0.1, "
      f"seed 0, from `{backbone}`. Every number comes from the run's own records "
      "(`metrics.jsonl`): the delta diagnostics at the last step (mean over the 16 (block, "
      "target) weights and the 3 method pairs of the cosine between the methods' weight "
      "deltas; 1 = one LoRA under three names) and the last hold-out evaluation (first 512 "
      "hold-out images, PGD-10 of eps/4 at eps 0.1, robust = clean and adversarial right). "
      "The test set is not used.\n")
print("| setting | delta cosine, mean (min–max) | conditioning cosine | method embedding cosine | "
      "PGD-AT clean / PGD-10 | TRADES clean / PGD-10 | MART clean / PGD-10 | "
      "uniform merge clean / PGD-10 | train time |")
print("|---|---|---|---|---|---|---|---|---|")
rows, missing = [], []
for g in grid:
    name = g.split("|")[0]
    d = f"{out}/{re.sub('-+', '-', re.sub(r'[^A-Za-z0-9]', '-', name))}"
    try:
        recs = [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
        secs = json.load(open(f"{d}/summary.json"))["seconds"]
    except OSError:
        missing.append(name)
        continue
    diag = [r for r in recs if r.get("kind") == "diagnostics"][-1]
    hold = [r for r in recs if r.get("kind") == "holdout"]
    last = max(r["step"] for r in hold)
    by = {r["model"]: r for r in hold if r["step"] == last}
    rows.append((name, diag, by, secs))
    cell = lambda m: f"{100 * by[m]['clean_acc']:.1f} / {100 * by[m]['robust_acc']:.1f}"
    dc = diag["delta_cosine"]
    print(f"| {name} | {dc['mean']:.3f} ({dc['min']:.2f}–{dc['max']:.2f}) | "
          f"{diag['cond_cosine_mean']:.3f} | {diag['embed_cosine_mean']:.3f} | {cell('method:pgd-at')} | {cell('method:trades')} | "
          f"{cell('method:mart')} | {cell('merged:uniform')} | {secs / 60:.0f} min |")
if missing:
    print(f"\nNot run yet (the script resumes them): {'; '.join(missing)}.")
# The issue's target: mean delta cosine < 0.7 with each method's own hold-out PGD-10
# within 3 points of that method's best over the settings.
methods = ["method:pgd-at", "method:trades", "method:mart"]
best = {m: max(r[2][m]["robust_acc"] for r in rows) for m in methods} if rows else {}
ok = [r[0] for r in rows if r[1]["delta_cosine"]["mean"] < 0.7
      and all(r[2][m]["robust_acc"] >= best[m] - 0.03 for m in methods)]
print("\n**Target**: mean delta cosine below 0.7 with each method's hold-out PGD-10 "
      "within 3 points of that method's best in this table. "
      + (f"Met by: {', '.join(ok)}." if ok else "No finished setting meets it yet.")
      + " On 512 hold-out images a robust accuracy near 40% has a standard error of about "
      "2 points, so differences of a few points between settings are within noise.")
print("\n**Reading the columns.** The conditioning cosine compares the generator's outputs "
      "`e = G([z_m; u_l; v_t])` of the methods at the same (block, target). Without `z_m` fed "
      "to the factor heads, the methods' conditioning vectors, and with them their deltas, stay "
      "about as alike as the deltas whatever the embeddings do: the three objectives' "
      "gradients agree, and the shared generator passes the agreement on. Feeding `z_m` to the "
      "heads gives each method factors of its own. A larger `z_m` scale with a faster "
      "embedding learning rate made the deltas most distinct and stopped the run from "
      "learning at all (the generated factors start several times larger than a plain LoRA's). "
      "Balanced sampling alone (no `z_m` to the heads) ended far below random sampling on every "
      "method: at lr 3e-3 single runs of one epoch swing widely, hence the rows at lr 1e-3. "
      "At lr 1e-3, `z_m` to the heads kept its delta cosine (0.70) and ended 10-15 points "
      "less robust on every method after the epoch: slower, not steadier. "
      "One epoch, one seed, the old 83.8% backbone: a screen for the main run's settings, "
      "not a result. Train times are not comparable across rows: the first rows ran two "
      "side by side on an older, slower trainer; the diversity rows ran alone.")
print("\n**A penalty on the deltas' similarity** (`--method-diversity` λ, ours: λ times the "
      "mean squared cosine between the methods' deltas, added to every step's loss; rows "
      "`diversity λ`, on top of balanced sampling with `z_m` to the heads). It does make the "
      "deltas distinct, and at every weight tried it costs robustness. At λ = 1 and 0.1 the "
      "deltas end near-orthogonal (cosine 0.02 and 0.14) and MART's LoRA stops being robust "
      "(12.3% and 3.9% PGD-10), taking the uniform merge down with it (12.5%, 15.6%): the "
      "average of three orthogonal deltas keeps a third of each, and the shared classifier "
      "head follows the methods that still learn. At λ = 0.01 the cosine (0.60) is only a "
      "little below the same setting without the penalty (0.69), and every method ends 12-17 "
      "points less robust; one seed at one epoch swings widely, so part of that may be noise, "
      "but nothing here says the penalty helps.")
failed = [r[0] for r in rows if r[2]["merged:uniform"]["clean_acc"] < 0.3]
if failed:
    print("\n**Runs that did not learn** (uniform merge below 30% clean on the hold-out, "
          "near chance): " + "; ".join(failed) + ". Every run passes through a near-chance "
          "phase early in adversarial training (the backbone is fooled by every attack); "
          "these did not leave it within the epoch.")
print("\n**Choice for the main run** (`scripts/results-fashion-mnist.sh`, HYPERAT_FLAGS): "
      "balanced, z to heads, lr 3e-3, no PGD-AT warm-up. When chosen, it was the one setting that "
      "learned with a mean delta cosine below 0.7 (the diversity rows came later); it misses the target's robustness half by 1.3 points at most "
      "(2.4, 4.3 and 4.3 points below each method's best, against 3), within the 2-point standard "
      "error of a 512-image hold-out. The settings that beat it on robustness (random sampling, "
      "with or without the PGD-AT warm-up) kept one LoRA under three names (cosine 0.94-0.96), "
      "which leaves merging nothing to combine. Three settings were dropped before they finished: "
      "the warm-up at lr 1e-3 (lr 1e-3 was only slower), and balanced sampling with a larger or "
      "faster method embedding but no z to the heads (balanced sampling alone was unstable). "
      "A 10-epoch run with these settings records the same diagnostics every evaluation: the "
      "LoRAs did not stay distinct (cosine 0.75 at step 100, 0.97 at the end). The main run "
      "adds a diversity penalty with a margin (`--method-diversity 0.1 "
      "--method-diversity-margin 0.6`), which held them at 0.61, chosen on the hold-out "
      "(docs/results-fashion-mnist.md, \"Keeping them distinct\").")
PY
echo "sweep: docs/sweep-distinct-fashion-mnist.md"
