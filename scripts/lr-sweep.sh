#!/usr/bin/env bash
# Chooses each training kind's learning rate for scripts/results-fashion-mnist.sh, from
# training data only (the test set is not looked at), with one command:
#
#   scripts/lr-sweep.sh
#
# Every kind is tuned at each learning rate of its grid with the results script's budget
# (STEPS steps of BATCH images, PGD-ATTACK_STEPS at eps 0.1, seed 0) on the results
# script's backbone. The score is CW-20 robust accuracy (eps 0.1, step 0.01) on the first
# VAL_N images of the hold-out, the training images `hyperat tune` keeps out of training:
# a margin loss, so a learning rate that only masks cross-entropy gradients does not win
# (HyperAT is scored by its uniform merge, the model it ships). Writes
# docs/lr-sweep-fashion-mnist.md. Runs go to OUT (default runs/lr-sweep); finished runs
# and scores are reused. JOBS processes run side by side (default 2; each uses about one core).
# Environment overrides: OUT, BACKBONE, STEPS, BATCH, ATTACK_STEPS, METHOD_WARMUP, SEED, VAL_N, JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
out=${OUT:-runs/lr-sweep}
backbone=${BACKBONE:-runs/results-fashion-mnist/backbone}
steps=${STEPS:-300}
batch=${BATCH:-64}
attack_steps=${ATTACK_STEPS:-5}
method_warmup=${METHOD_WARMUP:-150}
seed=${SEED:-0}
val_n=${VAL_N:-1000}
[ -f "$backbone/model.safetensors" ] || {
  echo "no backbone in $backbone: run scripts/results-fashion-mnist.sh (it pretrains one) or set BACKBONE"
  exit 1
}
cargo build --release --locked -p hyperat-server
bin="${CARGO_TARGET_DIR:-target}/release/hyperat"
mkdir -p "$out"
# kind methods extra-flags | learning rates
grid=("full-at|pgd-at||3e-4 1e-3 3e-3 1e-2"
  "lora-at|pgd-at||1e-3 3e-3 5e-3"
  "full-lora-at|pgd-at||3e-4 1e-3 3e-3 5e-3"
  "hyperat|pgd-at,trades,mart|--method-warmup $method_warmup|1e-3 3e-3 5e-3 1e-2 2e-2")
tune() { # kind methods extra lr
  local dir="$out/$1-$4"
  echo "tune $1 at lr $4"
  [ -f "$dir/summary.json" ] && return 0
  rm -rf "$dir"
  # shellcheck disable=SC2086
  $bin tune --backbone "$backbone" --dataset fashion-mnist --kind "$1" --methods "$2" --lr "$4" \
    --steps "$steps" --batch-size "$batch" --eps 0.1 --attack-steps "$attack_steps" --seed "$seed" \
    --checkpoint-every 100 --out "$dir" $3 > "$dir.log" 2>&1
}
for g in "${grid[@]}"; do
  IFS='|' read -r kind methods extra lrs <<< "$g"
  for lr in $lrs; do
    spawn tune "$kind" "$methods" "$extra" "$lr"
  done
done
wait_all || { echo "a run failed (logs: $out/*.log)"; exit 1; }
score() { # kind lr
  local dir="$out/$1-$2" spec="$out/$1-$2#tuned"
  echo "score $1 at lr $2 (CW-20 on $val_n hold-out images)"
  local json="$dir.cw20-holdout$val_n.json"
  [ -f "$json" ] && [ "$json" -nt "$dir/summary.json" ] && return 0
  if [ "$1" = hyperat ]; then
    [ -f "$dir/merges/uniform.safetensors" ] || $bin merge --run "$dir" --strategy uniform > /dev/null
    spec="$dir#merged:uniform"
  fi
  $bin eval --model "$spec" --dataset fashion-mnist --split holdout --limit "$val_n" --attack cw \
    --eps 0.1 --alpha 0.01 --steps 20 --seed "$seed" --json "$json" 2> "$dir.cw20.log"
}
for g in "${grid[@]}"; do
  IFS='|' read -r kind methods extra lrs <<< "$g"
  for lr in $lrs; do
    spawn score "$kind" "$lr"
  done
done
wait_all || { echo "a score failed (logs: $out/*.cw20.log)"; exit 1; }
python3 - "$out" "$steps" "$val_n" "${grid[@]}" > docs/lr-sweep-fashion-mnist.md <<'PY'
import json, sys
out, steps, val_n, grid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
print("# Learning-rate sweep on Fashion-MNIST\n")
print("Made by `scripts/lr-sweep.sh`. Each kind was tuned at every learning rate of its grid "
      f"with the budget of `docs/results-fashion-mnist.md` ({steps} steps, seed 0). Score: CW-20 "
      f"robust accuracy (eps 0.1, step 0.01) on the first {val_n} hold-out images (training "
      "images `hyperat tune` keeps out of training; the test set is not used); HyperAT is scored "
      "by its uniform merge. The highest score picks the learning rate for "
      "`scripts/results-fashion-mnist.sh` (its `LR_*` settings). For comparison, the training attack's batch "
      "accuracy (PGD-AT steps among the last 50 steps), which a model that masks cross-entropy "
      "gradients inflates.\n")
print("| kind | learning rate | hold-out clean (%) | hold-out CW-20 (%) | training adv. batch acc. (%) | chosen |")
print("|---|---|---|---|---|---|")
for g in grid:
    kind, _, _, lrs = g.split("|")
    rows = []
    for lr in lrs.split():
        recs = [json.loads(l) for l in open(f"{out}/{kind}-{lr}/metrics.jsonl")]
        last = [r for r in recs if r["step"] > steps - 50 and r.get("method", "pgd-at") == "pgd-at"
                and r.get("adv_acc") is not None]
        ev = json.load(open(f"{out}/{kind}-{lr}.cw20-holdout{val_n}.json"))
        rows.append((lr, ev["clean_acc"], ev["robust_acc"],
                     sum(r["adv_acc"] for r in last) / len(last)))
    best = max(rows, key=lambda r: r[2])[0]
    edge = best in (rows[0][0], rows[-1][0])
    for lr, clean, cw, train in rows:
        mark = ("**yes**" + (" (edge of the grid)" if edge else "")) if lr == best else ""
        print(f"| {kind} | {lr} | {100 * clean:.2f} | {100 * cw:.2f} | {100 * train:.2f} | {mark} |")
PY
echo "sweep: docs/lr-sweep-fashion-mnist.md"
