#!/usr/bin/env bash
# A GPU backend against the CPU (issue 18: "keep results equal to the CPU's" with burn's
# fusion on), on the shipped model and the first N (256) test images:
#   1. logits: the largest difference relative to the largest logit, and top-1 agreement;
#   2. clean and FGSM accuracy (deterministic: equal up to an image whose gradient sign
#      sits at a float's margin) and PGD-10 (random start from each backend's own random
#      numbers, so only close);
#   3. a 20-step HyperAT `tune` on the device, which must run and learn (its numbers are
#      not the CPU's: initialisation and attacks draw the backend's random numbers).
#
#   scripts/backend-parity.sh wgpu [BIN]   # here, on Mesa's lavapipe (software Vulkan;
#                                          # apt-get install mesa-vulkan-drivers): steps 1-2
#                                          # take minutes, the tune over 15 (TUNE_STEPS=2)
#   scripts/backend-parity.sh cuda [BIN]   # on a lent GPU machine
#
# BIN: a `hyperat` built with the device's feature (default target/release/hyperat).
# Exits non-zero when the logits differ by more than 1e-4 of the largest or any top-1
# prediction, clean or FGSM, differs on more than one image.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=${1:?usage: scripts/backend-parity.sh wgpu|cuda [BIN]}
bin=${2:-${CARGO_TARGET_DIR:-target}/release/hyperat}
n=${N:-256}
model=public/models/fmnist-vit-tiny/merged
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
data=${HYPERAT_DATA:-/usr/share/datasets}/fashion-mnist/t10k-images-idx3-ubyte.gz
python3 - "$data" "$n" "$out/x.f32" <<'EOF'
import array, gzip, sys
raw = gzip.open(sys.argv[1]).read()[16:]
n = int(sys.argv[2])
array.array("f", (b / 255.0 for b in raw[:n * 784])).tofile(open(sys.argv[3], "wb"))
EOF
for d in cpu "$dev"; do
  "$bin" logits --device "$d" --model "$model" --inputs "$out/x.f32" --out "$out/logits-$d.f32" >/dev/null 2>&1
  for a in fgsm pgd; do
    "$bin" eval --device "$d" --model "$model" --limit "$n" --attack "$a" --eps 0.1 --alpha 0.01 \
      --steps 10 --json "$out/eval-$a-$d.json" >/dev/null 2>&1
  done
done
ok=0
python3 - "$out" "$dev" <<'EOF' || ok=$?
import array, json, sys
out, dev = sys.argv[1], sys.argv[2]
def logits(d):
    a = array.array("f"); a.frombytes(open(f"{out}/logits-{d}.f32", "rb").read()); return a
c, g = logits("cpu"), logits(dev)
rows = [(c[i:i + 10], g[i:i + 10]) for i in range(0, len(c), 10)]
rel = max(abs(x - y) for x, y in zip(c, g)) / max(abs(x) for x in c)
top = sum(max(range(10), key=a.__getitem__) != max(range(10), key=b.__getitem__) for a, b in rows)
print(f"logits, {dev} vs cpu: largest difference {rel:.2e} of the largest logit; top-1 differs on {top} of {len(rows)}")
bad = rel > 1e-4 or top > 1
for a in ("fgsm", "pgd"):
    e = {d: json.load(open(f"{out}/eval-{a}-{d}.json")) for d in ("cpu", dev)}
    diff = sum(x != y for x, y in zip(e["cpu"]["adv_pred"], e[dev]["adv_pred"]))
    print(f"{a}: clean {e['cpu']['clean_acc']:.4f} (cpu) / {e[dev]['clean_acc']:.4f} ({dev}); "
          f"robust {e['cpu']['robust_acc']:.4f} / {e[dev]['robust_acc']:.4f}; adversarial predictions differ on {diff}")
    if a == "fgsm":
        bad |= diff > 1 or abs(e["cpu"]["clean_acc"] - e[dev]["clean_acc"]) * len(rows) > 1
sys.exit(1 if bad else 0)
EOF
"$bin" tune --device "$dev" --backbone public/models/fmnist-vit-tiny/backbone --methods pgd-at,trades,mart \
  --steps "${TUNE_STEPS:-20}" --eps 0.1 --alpha 0.025 --attack-steps 5 --batch-size 64 --lr 1e-3 --train-limit 2000 \
  --checkpoint-every 1000 --out "$out/tune" >/dev/null 2>&1
python3 - "$out/tune/metrics.jsonl" "$dev" "${TUNE_STEPS:-20}" <<'EOF'
import json, math, sys
steps = [r for r in map(json.loads, open(sys.argv[1])) if r.get("kind") is None and "loss" in r]
losses = [r["loss"] for r in steps]
n = int(sys.argv[3])
assert len(steps) == n and all(math.isfinite(l) for l in losses), f"the tune did not run {n} finite steps"
print(f"tune on {sys.argv[2]}: {n} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
      f"{steps[-1]['seconds'] / n:.2f} s per step")
EOF
exit $ok
