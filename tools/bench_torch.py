#!/usr/bin/env python3
"""PyTorch + timm on the workloads `hyperat bench` times (hyperat/src/bench.rs), so the
two can be compared in one run on the same machine (CPU or GPU).

    python3 tools/bench_torch.py [--device cpu|cuda] [--reps 7] [--skip-small] [--json F]

Tiny ViT (28 px, patch 4, dim 64, depth 4, heads 4, 1 channel, 10 classes) at batch 128:
eval forward, one AdamW step, one PGD-10 adversarial training step (eps 8/255, alpha
2/255, random start, 10 input-gradient steps + 1 update), a PGD-20 attack of the batch.
ViT-S/16 at 224 px, batch 8: eval forward and one training step, and its linear layers'
products timed alone (MATMUL_PRODUCTS, as in bench.rs). Normalisation runs
inside the model, as in ours. Each figure is the median of `reps` runs after a warm-up.
Needs torch and timm (not needed by any test).
"""

import argparse
import json
import statistics
import time

import timm
import torch
import torch.nn.functional as F


class Normalised(torch.nn.Module):
    def __init__(self, vit, mean, std):
        super().__init__()
        self.vit = vit
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return self.vit((x - self.mean) / self.std)


def tiny():
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4
    )
    return Normalised(vit, [0.2860], [0.3530])


def small():
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=384, depth=12, num_heads=6
    )
    return Normalised(vit, [0.5] * 3, [0.5] * 3)


def median_ms(dev, reps, f):
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    f()
    sync()
    times = []
    for _ in range(max(reps, 1)):
        s = time.perf_counter()
        f()
        sync()
        times.append((time.perf_counter() - s) * 1e3)
    return statistics.median(times)


def pgd(model, x, y, steps, eps=8 / 255, alpha=2 / 255):
    """torchattacks.PGD: random start, sign steps, projection, clamp to [0, 1]."""
    adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1).detach()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        (g,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + alpha * g.sign()
        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1).detach()
    return adv


# ViT-S/16's linear-layer products at batch 8: name, [m, k, n], left operand transposed
# (the weight gradient x^T dy). The same list as `MATMUL_PRODUCTS` in hyperat/src/bench.rs.
MATMUL_PRODUCTS = [
    ("qkv", (1576, 384, 1152), False),
    ("proj", (1576, 384, 384), False),
    ("fc1", (1576, 384, 1536), False),
    ("fc2", (1576, 1536, 384), False),
    ("qkv weight grad", (384, 1576, 1152), True),
]


def matmul_rates(dev, reps):
    g = torch.Generator().manual_seed(3)
    rates = []
    for name, (m, k, n), lhs_transposed in MATMUL_PRODUCTS:
        lhs = (torch.rand((k, m), generator=g).t() if lhs_transposed else torch.rand((m, k), generator=g)).to(dev)
        rhs = torch.rand((k, n), generator=g).to(dev)
        ms = median_ms(dev, reps, lambda: lhs @ rhs)
        rates.append({"product": name, "shape": [m, k, n], "ms": ms, "gflops": 2 * m * k * n / ms / 1e6})
    return rates


def forward_and_train(model, shape, classes, batch, reps, dev):
    g = torch.Generator().manual_seed(1)
    x = torch.rand((batch, *shape), generator=g).to(dev)
    y = torch.randint(0, classes, (batch,), generator=g).to(dev)
    model.eval()
    with torch.no_grad():
        fwd = median_ms(dev, reps, lambda: model(x).cpu())
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(inp):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(inp), y).backward()
        opt.step()

    train = median_ms(dev, reps, lambda: step(x))
    return fwd, train, x, y, step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--skip-small", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    model = tiny().to(dev)
    fwd, train, x, y, step = forward_and_train(model, (1, 28, 28), 10, 128, a.reps, dev)

    def at_step():
        model.eval()  # no dropout in these models; eval/train only matter for timing parity
        adv = pgd(model, x, y, 10)
        model.train()
        step(adv)

    at = median_ms(dev, a.reps, at_step)
    attack = median_ms(dev, a.reps, lambda: pgd(model, x, y, 20).cpu())
    report = {
        "device": f"pytorch {torch.__version__} {a.device}"
        + (f" ({torch.cuda.get_device_name()})" if dev.type == "cuda" else f" ({torch.get_num_threads()} threads)"),
        "tiny_vit_28": {
            "forward_ms": fwd,
            "train_step_ms": train,
            "pgd10_at_step_ms": at,
            "pgd20_attack_ms": attack,
        },
    }
    if not a.skip_small:
        sf, st, *_ = forward_and_train(small().to(dev), (3, 224, 224), 1000, 8, a.reps, dev)
        report["vit_s16_224"] = {"forward_ms": sf, "train_step_ms": st, "matmul": matmul_rates(dev, a.reps)}
    text = json.dumps(report, indent=1)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
