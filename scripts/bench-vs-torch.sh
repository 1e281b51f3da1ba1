#!/usr/bin/env bash
# Ours beside PyTorch on this machine, interleaved:
#   scripts/bench-vs-torch.sh ROUNDS [BIN]
# Each round runs `BIN bench --reps 5` (default: the release build's `hyperat`) and then
# `tools/bench_torch.py --device cpu --reps 5` with PYREF's Python (default
# ~/pyref/bin/python: torch 2.15 and timm, see tools/bench_torch.py), with
# OMP_NUM_THREADS at the CPU count. PyTorch's own times move 10-40% between minutes on
# these shared 2-core machines, so the table gives, per workload, each side's minimum of
# the rounds' medians, their ratio, and the range of the rounds' own ratios (ours over
# the same round's PyTorch). Background `hyperat tune`, `report` and `eval` runs are
# paused (SIGSTOP) meanwhile and resumed; do not build while it runs.
set -euo pipefail
rounds=$1
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${2:-${CARGO_TARGET_DIR:-$here/target}/release/hyperat}
py=${PYREF:-$HOME/pyref/bin/python}
out=$(mktemp -d)
source "$here/scripts/lib.sh"
pause_background
for r in $(seq "$rounds"); do
  "$bin" bench --reps 5 --json "$out/ours-$r.json" > /dev/null
  OMP_NUM_THREADS=$(nproc) "$py" "$here/tools/bench_torch.py" --device cpu --reps 5 \
    --json "$out/torch-$r.json" > /dev/null
done
python3 - "$out" "$rounds" <<'PY'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def figures(d):
    for sec in ("tiny_vit_28", "vit_s16_224"):
        for k, v in (d.get(sec) or {}).items():
            if k.endswith("_ms"):
                yield f"{sec}.{k}", v
        for p in (d.get(sec) or {}).get("matmul", []):
            yield f"{sec}.matmul {p['product']}", p["ms"]
    h = d.get("hyperat_28")
    if h:
        yield "hyperat_28.pgd10_step_ms", h["pgd10_step_ms"]
runs = [(dict(figures(json.load(open(f"{out}/ours-{r}.json")))),
         dict(figures(json.load(open(f"{out}/torch-{r}.json"))))) for r in range(1, rounds + 1)]
print(f"{'workload (ms; min of ' + str(rounds) + ' medians)':46} {'PyTorch':>9} {'ours':>9} {'ratio':>6}  rounds' ratios")
for k in runs[0][0]:
    if all(k in t for _, t in runs):
        o, t = min(r[0][k] for r in runs), min(r[1][k] for r in runs)
        each = sorted(r[0][k] / r[1][k] for r in runs)
        print(f"{k:46} {t:9.2f} {o:9.2f} {o / t:5.2f}x  {each[0]:.2f}-{each[-1]:.2f}")
    elif k.startswith("hyperat_28"):
        each = sorted(r[0][k] / r[0]["tiny_vit_28.pgd10_at_step_ms"] for r in runs)
        print(f"{'HyperAT PGD-10 step / plain AT step (ours)':46} {'':9} {min(r[0][k] for r in runs):9.2f} {'':6}  {each[0]:.2f}-{each[-1]:.2f}")
PY
echo "raw JSON: $out"
