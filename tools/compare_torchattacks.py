#!/usr/bin/env python3
"""Cross-check `hyperat eval` against timm + torchattacks on the same checkpoint.

Loads a hyperat/timm checkpoint folder with timm, wraps normalisation inside the model
(inputs in [0,1], as hyperat does), reads the first N Fashion-MNIST test images in file
order, and runs torchattacks' FGSM and PGD. Prints clean/FGSM per-sample agreement with
hyperat's JSON reports and both PGD accuracies.

Not used by any test (torch is not a project dependency). Usage:
  python3 -m venv /tmp/pyref && /tmp/pyref/bin/pip install torch timm torchattacks
  hyperat eval --model M --limit 1000 --attack fgsm --eps 0.1 --json fgsm.json
  hyperat eval --model M --limit 1000 --attack pgd --eps 0.1 --alpha 0.01 --steps 20 --json pgd.json
  /tmp/pyref/bin/python tools/compare_torchattacks.py M fgsm.json pgd.json

Standard AutoAttack against torchattacks' `AutoAttack(version="standard")`:
  hyperat eval --model M --limit 500 --attack autoattack --eps 0.1 --json aa.json
  /tmp/pyref/bin/python tools/compare_torchattacks.py aa M aa.json [FIRST_N]
"""
import gzip
import json
import sys
import time

import numpy as np
import timm
import torch
import torchattacks
from safetensors.torch import load_file


def load_model(folder):
    cfg = json.load(open(f"{folder}/config.json"))
    args = dict(cfg["model_args"])
    model = timm.create_model(cfg["architecture"], pretrained=False, **args)
    model.load_state_dict(load_file(f"{folder}/model.safetensors"), strict=True)
    mean = torch.tensor(cfg["pretrained_cfg"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(cfg["pretrained_cfg"]["std"]).view(1, -1, 1, 1)

    class Normalized(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return self.m((x - mean) / std)

    return Normalized().eval()


def fmnist_test(n, root="/usr/share/datasets/fashion-mnist"):
    with gzip.open(f"{root}/t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    with gzip.open(f"{root}/t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return torch.tensor(x, dtype=torch.float32) / 255.0, torch.tensor(y, dtype=torch.long)


def predict(model, x, bs=250):
    with torch.no_grad():
        return torch.cat([model(x[i:i + bs]).argmax(1) for i in range(0, len(x), bs)])


def autoattack(folder, aa_json, first=None, bs=250):
    """torchattacks' standard AutoAttack, component by component as its MultiAttack runs
    them (each on the points every earlier one failed on), next to hyperat's report.
    `first` compares on the first images of a longer hyperat run (per-sample)."""
    ours = json.load(open(aa_json))
    n = int(first) if first else ours["n"]
    eps = ours["attack"]["components"][0]["eps"]
    model = load_model(folder)
    x, y = fmnist_test(n)
    clean = predict(model, x)
    aa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
    attacks = aa._autoattack.attacks
    names = ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    robust = clean == y  # robust accuracy: clean and adversarial both right
    start = time.time()
    rows = []
    for name, atk in zip(names, attacks):
        idx = robust.nonzero().flatten()
        for i in range(0, len(idx), bs):
            j = idx[i:i + bs]
            adv = atk(x[j], y[j])
            assert (adv - x[j]).abs().max() <= eps + 1e-6
            robust[j] = predict(model, adv) == y[j]
        rows.append((name, robust.float().mean().item(), time.time() - start))
    lab = ours["labels"][:n]
    mine = np.array([c == l and a == l for c, a, l in zip(ours["clean_pred"], ours["adv_pred"], lab)])
    ours_clean = np.mean([c == l for c, l in zip(ours["clean_pred"], lab)])
    whole = n == ours["n"]
    ours_comp = {c["name"].lower(): c["robust_acc"] for c in (ours.get("components") or [])} if whole else {}
    print(f"n={n} eps={eps:.4f}  clean acc: timm {(clean == y).float().mean():.4f}  hyperat {ours_clean:.4f}")
    print("| after | torchattacks robust acc | hyperat robust acc |")
    print("|---|---|---|")
    for name, acc, sec in rows:
        o = ours_comp.get(name.lower())
        print(f"| {name} | {100 * acc:.2f}% ({sec:.0f} s) | {'?' if o is None else f'{100 * o:.2f}%'} |")
    final, ours_final = rows[-1][1], mine.mean()
    print(f"standard AutoAttack robust accuracy on the first {n}: torchattacks {100 * final:.2f}%  "
          f"hyperat {100 * ours_final:.2f}%  (difference {100 * abs(final - ours_final):.2f} points; "
          f"torchattacks {rows[-1][2]:.0f} s" + (f", hyperat {ours['seconds']:.0f} s)" if whole else ")"))
    both = robust.cpu().numpy()
    print(f"per-sample robustness agreement {100 * (both == mine).mean():.2f}%  "
          f"(robust in both {int((both & mine).sum())}, only torchattacks {int((both & ~mine).sum())}, "
          f"only hyperat {int((~both & mine).sum())})")


def main():
    if sys.argv[1] == "aa":
        return autoattack(*sys.argv[2:5])
    folder, fgsm_json, pgd_json = sys.argv[1:4]
    torch.manual_seed(0)
    fg, pg = json.load(open(fgsm_json)), json.load(open(pgd_json))
    n = fg["n"]
    model = load_model(folder)
    x, y = fmnist_test(n)
    clean = predict(model, x)
    ours_clean = torch.tensor(fg["clean_pred"])
    print(f"n={n}  clean acc: timm {(clean == y).float().mean():.4f}  hyperat {fg['clean_acc']:.4f}  "
          f"per-sample agreement {(clean == ours_clean).float().mean():.4f}")
    eps = fg["attack"]["eps"]
    fgsm = torchattacks.FGSM(model, eps=eps)
    adv = torch.cat([fgsm(x[i:i + 250], y[i:i + 250]) for i in range(0, n, 250)])
    fpred = predict(model, adv)
    ours_f = torch.tensor(fg["adv_pred"])
    print(f"FGSM eps={eps:.4f}: adv acc torchattacks {(fpred == y).float().mean():.4f}  "
          f"hyperat {fg['adv_acc']:.4f}  per-sample agreement {(fpred == ours_f).float().mean():.4f}")
    a = pg["attack"]
    pgd = torchattacks.PGD(model, eps=a["eps"], alpha=a["alpha"], steps=a["steps"], random_start=True)
    adv = torch.cat([pgd(x[i:i + 250], y[i:i + 250]) for i in range(0, n, 250)])
    ppred = predict(model, adv)
    print(f"PGD-{a['steps']} eps={a['eps']:.4f} alpha={a['alpha']:.4f}: adv acc torchattacks "
          f"{(ppred == y).float().mean():.4f}  hyperat {pg['adv_acc']:.4f}  "
          f"(difference {100 * abs((ppred == y).float().mean().item() - pg['adv_acc']):.2f} points)")


if __name__ == "__main__":
    main()
