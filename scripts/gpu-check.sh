#!/usr/bin/env bash
# The CUDA figures of docs/performance.md, in one prepared run for a lent GPU machine (the
# `device` tool; nothing here is needed by the tests or CI).
#
#   scripts/gpu-check.sh prep   # here: builds the CUDA binary and a small data copy into gpu/
#   scripts/gpu-check.sh run    # there (carry gpu/): writes every figure under $OUT (or gpu/out)
#
# `run` does, each step logged with its wall time:
#   1. `hyperat bench --device cuda` and tools/bench_torch.py on the same GPU (PyTorch +
#      timm, the same workloads), so docs/performance.md can give ratios measured in one run;
#   2. a short HyperAT `tune` on CUDA (300 steps, PGD-5, warm-up 150, as the results
#      script's HyperAT row) and the same on the CPU for 20 steps, for the per-step ratio;
#   3. PGD-20 of the tuned model's merge on 1000 test images, on CUDA;
#   4. scripts/backend-parity.sh cuda: the CUDA backend (burn's fusion on) against the CPU.
# The GPU machine has python3 with torch and timm but no Rust: the binary is built here.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
prep)
  cargo build --release --locked -p hyperat-server --features cuda
  mkdir -p gpu/data/fashion-mnist
  cp "${CARGO_TARGET_DIR:-target}/release/hyperat" gpu/hyperat
  # The test split whole, the train split cut to 12000 images (the hold-out takes 5000):
  # the lent machine cannot reach /usr/share/datasets, and carried files are capped at 64 MiB.
  cp /usr/share/datasets/fashion-mnist/t10k-* gpu/data/fashion-mnist/
  python3 - <<'EOF'
import gzip, struct
src, dst, n = "/usr/share/datasets/fashion-mnist", "gpu/data/fashion-mnist", 12000
for stem, item in (("train-images-idx3-ubyte", 784), ("train-labels-idx1-ubyte", 1)):
    raw = gzip.open(f"{src}/{stem}.gz").read()
    head = 16 if item > 1 else 8
    out = bytearray(raw[:head])
    struct.pack_into(">I", out, 4, n)
    gzip.open(f"{dst}/{stem}.gz", "wb").write(bytes(out) + raw[head:head + n * item])
EOF
  du -sh gpu
  ;;
run)
  out="${OUT:-gpu/out}"
  mkdir -p "$out"
  export HYPERAT_DATA="$PWD/gpu/data"
  bin=gpu/hyperat
  t0=$(date +%s)
  step() { echo "== [$(($(date +%s) - t0))s] $*"; }
  step "gpu: $(nvidia-smi -L 2>&1 | head -1)"
  step "bench (ours, cuda)"
  $bin bench --device cuda --reps 7 --json "$out/bench-cuda.json" 2>&1 | tail -25
  step "bench (PyTorch, cuda)"
  python3 tools/bench_torch.py --device cuda --reps 7 --json "$out/bench-torch-cuda.json"
  tune() { # device steps dir
    $bin tune --device "$1" --backbone public/models/fmnist-vit-tiny/backbone --methods pgd-at,trades,mart \
      --steps "$2" --method-warmup $(($2 / 2)) --eps 0.1 --alpha 0.025 --attack-steps 5 --batch-size 64 \
      --lr 1e-3 --train-limit 7000 --checkpoint-every 1000 --out "$3" 2>&1 | tail -4
  }
  step "tune on cuda, 300 steps"
  tune cuda 300 "$out/tune-cuda"
  step "tune on the cpu, 20 steps"
  tune cpu 20 "$out/tune-cpu"
  step "PGD-20 of the CUDA-tuned merge on 1000 test images (cuda)"
  $bin eval --device cuda --model "$out/tune-cuda#merged:uniform" --limit 1000 --attack pgd --eps 0.1 \
    --alpha 0.01 --steps 20 --json "$out/eval-cuda.json" 2>&1 | tail -4
  step "the CUDA backend (fusion on) against the CPU: logits, FGSM, PGD-10, a 20-step tune"
  scripts/backend-parity.sh cuda "$bin" 2>&1 | tee "$out/parity-cuda.txt"
  step "done"
  ;;
*)
  echo "usage: $0 prep|run" >&2
  exit 2
  ;;
esac
