#!/usr/bin/env python3
"""The parity yardstick in PyTorch + timm: adversarial fine-tuning of a hyperat/timm
backbone with the recipe of scripts/parity-pytorch.sh, so ours and PyTorch's can be
compared in one run on one machine (and their differences isolated one at a time).

Recipe: the first 55,000 Fashion-MNIST training images, batch 128 (the short remainder
of each epoch dropped, as ours), PGD-AT (uniform random start, STEPS steps of ALPHA at
EPS, model in eval mode while attacking), AdamW with linear warm-up over WARMUP of the
steps then cosine decay to 0; `full` trains every weight, `lora` trains rank-8 LoRA
(alpha 16, A ~ N(0, 1/in), B = 0) on qkv/proj/fc1/fc2 of every block plus the head.
Evaluation: clean accuracy and mean top-1 confidence on all 10,000 test images,
torchattacks PGD-20 (step 0.01) on the first 1000, robust = clean and adversarial right.

Not used by any test (torch is not a project dependency). Usage:
  python3 -m venv ~/pyref && ~/pyref/bin/pip install torch timm torchattacks
  ~/pyref/bin/python tools/parity_torch.py full|lora BACKBONE_DIR [--epochs 3] [--lr 1e-3]
      [--wd 0.05] [--clip 0] [--seed 0] [--threads 1] [--eval-model DIR]
`--eval-model DIR` only evaluates a timm folder (e.g. our export) the same way.
"""
import argparse
import gzip
import json
import math
import time

import numpy as np
import timm
import torch
import torch.nn.functional as F
import torchattacks
from safetensors.torch import load_file

ROOT = "/usr/share/datasets/fashion-mnist"


def fmnist(split, n=None):
    pre = "train" if split == "train" else "t10k"
    with gzip.open(f"{ROOT}/{pre}-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(f"{ROOT}/{pre}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    x, y = x[:n], y[:n]
    return torch.tensor(x, dtype=torch.float32) / 255.0, torch.tensor(y, dtype=torch.long)


class Normalized(torch.nn.Module):
    """Inputs in [0,1]; the checkpoint's mean/std inside, as hyperat does."""

    def __init__(self, model, mean, std):
        super().__init__()
        self.m = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return self.m((x - self.mean) / self.std)


def load(folder):
    cfg = json.load(open(f"{folder}/config.json"))
    model = timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"])
    model.load_state_dict(load_file(f"{folder}/model.safetensors"), strict=True)
    return Normalized(model, cfg["pretrained_cfg"]["mean"], cfg["pretrained_cfg"]["std"])


class LoRALinear(torch.nn.Module):
    def __init__(self, base, rank=8, alpha=16.0):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.a = torch.nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.b = torch.nn.Parameter(torch.zeros(base.out_features, rank))
        self.s = alpha / rank

    def forward(self, x):
        return self.base(x) + self.s * F.linear(F.linear(x, self.a), self.b)


def add_lora(net):
    for p in net.parameters():
        p.requires_grad_(False)
    for blk in net.m.blocks:
        blk.attn.qkv = LoRALinear(blk.attn.qkv)
        blk.attn.proj = LoRALinear(blk.attn.proj)
        blk.mlp.fc1 = LoRALinear(blk.mlp.fc1)
        blk.mlp.fc2 = LoRALinear(blk.mlp.fc2)
    for p in net.m.head.parameters():
        p.requires_grad_(True)


def pgd(model, x, y, eps, alpha, steps):
    adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        (g,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + alpha * g.sign()
        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1)
    return adv.detach()


def evaluate(model, n_pgd=1000):
    model.eval()
    x, y = fmnist("test")
    with torch.no_grad():
        probs = torch.cat([F.softmax(model(x[i:i + 500]), 1) for i in range(0, len(x), 500)])
    clean = probs.argmax(1)
    atk = torchattacks.PGD(model, eps=0.1, alpha=0.01, steps=20, random_start=True)
    xs, ys = x[:n_pgd], y[:n_pgd]
    adv_pred = torch.cat([model(atk(xs[i:i + 250], ys[i:i + 250])).argmax(1) for i in range(0, n_pgd, 250)])
    robust = ((clean[:n_pgd] == ys) & (adv_pred == ys)).float().mean().item()
    return {"clean_acc": (clean == y).float().mean().item(),
            "mean_confidence": probs.max(1).values.mean().item(), "pgd20_robust": robust}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["full", "lora"])
    ap.add_argument("backbone")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--wd", type=float)
    ap.add_argument("--clip", type=float, default=0.0)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--alpha", type=float, default=0.025)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-model")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if a.eval_model:
        print(json.dumps(evaluate(load(a.eval_model).eval())))
        return
    lr = a.lr if a.lr is not None else (1e-3 if a.kind == "full" else 3e-3)
    wd = a.wd if a.wd is not None else (0.05 if a.kind == "full" else 0.0)
    model = load(a.backbone)
    if a.kind == "lora":
        add_lora(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    x, y = fmnist("train", 55000)
    per_epoch = len(x) // 128
    total = round(a.epochs * per_epoch)
    warm = round(a.warmup * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: (t + 1) / warm if t < warm else 0.5 * (1 + math.cos(math.pi * (t - warm) / max(1, total - warm))))
    g = torch.Generator().manual_seed(a.seed)
    start = time.time()
    step = 0
    while step < total:
        perm = torch.randperm(len(x), generator=g)
        for b in range(per_epoch):
            if step >= total:
                break
            idx = perm[b * 128:(b + 1) * 128]
            xb, yb = x[idx], y[idx]
            model.eval()
            adv = pgd(model, xb, yb, a.eps, a.alpha, a.steps)
            model.train()
            loss = F.cross_entropy(model(adv), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if a.clip > 0:
                torch.nn.utils.clip_grad_norm_(params, a.clip)
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                print(f"step {step}/{total} loss {loss.item():.3f} {time.time() - start:.0f}s", flush=True)
    r = evaluate(model)
    r.update({"kind": a.kind, "epochs": a.epochs, "lr": lr, "wd": wd, "clip": a.clip, "seed": a.seed,
              "train_seconds": time.time() - start})
    print(json.dumps(r))


if __name__ == "__main__":
    main()
