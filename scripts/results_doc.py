#!/usr/bin/env python3
"""Writes docs/results-fashion-mnist.md from `hyperat report --json` output.

The ordering checks below are computed from the numbers, not written by hand.
Usage: results_doc.py REPORT_JSON SHIP_DIR SECONDS SETTINGS
"""
import json
import os
import struct
import sys

report_path, ship, seconds, settings = sys.argv[1:5]
rep = json.load(open(report_path))
rows = {r["name"]: r for r in rep["rows"]}
cfg = rep["config"]


def pct(v):
    return f"{100 * v:.2f}"


def opt(v, fmt):
    return "—" if v is None else fmt(v)


print("# Results on Fashion-MNIST\n")
print("Made by one command on the project's 2-core CPU machine:\n")
print("```sh\nscripts/results-fashion-mnist.sh\n```\n")
pre = os.path.join(os.path.dirname(report_path), "backbone", "train.json")
pre_s = json.load(open(pre)).get("summary", {}).get("seconds") if os.path.exists(pre) else None
eval_s = sum(r.get("eval_seconds") or 0 for r in rep["rows"])
print(f"Settings: `{settings}`; eps {cfg['eps']:.4g}, evaluation step {cfg['alpha']:.4g}, "
      f"{cfg['steps']}-step PGD and CW, seed {cfg['seed']}. Compute behind the table: each "
      "row's training time is in it"
      + (f", the backbone's pretraining took {pre_s / 60:.1f} min" if pre_s else "")
      + f", the rows' evaluations {eval_s / 3600:.1f} h (one core each, two side by side). The "
      f"script's last invocation took "
      + (f"{int(seconds)} s" if int(seconds) < 120 else f"{int(seconds) / 60:.0f} min")
      + " (it redoes only the runs, "
      "merges and rows that are missing or stale).\n")


def run_dir(r):
    """The run folder behind a row's spec (`RUN#variant`), or None for a plain checkpoint."""
    d = r.get("spec", "").split("#")[0]
    return d if os.path.exists(os.path.join(d, "run.json")) else None


def lr_of(r):
    d = run_dir(r)
    if d is None or r.get("spec", "").endswith("#base"):
        return None
    return json.load(open(os.path.join(d, "run.json")))["config"]["lr"]


aa_n = next((r.get("aa_n") for r in rep["rows"] if r.get("aa_n")), None)
aa_head = f" AutoAttack (first {aa_n}) | PGD-20 − AA |" if aa_n else ""
print(f"| model | clean | PGD-20 | CW-20 |{aa_head} trainable params | lr | train time | peak memory |")
print("|---|---|---|---|" + ("---|---|" if aa_n else "") + "---|---|---|---|")
for r in rep["rows"]:
    aa = ""
    if aa_n:
        a, p = r.get("aa_acc"), r.get("aa_pgd_acc")
        aa = f" {opt(a, pct)} | {opt(None if a is None or p is None else p - a, pct)} |"
    print(f"| {r['name']} | {pct(r['clean_acc'])} | {pct(r['pgd_acc'])} | {pct(r['cw_acc'])} |{aa} "
          f"{opt(r['trainable_params'], lambda p: f'{p:,}')} | {opt(lr_of(r), lambda v: f'{v:.0e}'.replace('e-0', 'e-'))} | "
          f"{opt(r['train_seconds'], lambda t: f'{t / 60:.1f} min')} | "
          f"{opt(r['peak_mem_mib'], lambda m: f'{m:.0f} MiB')} |")
print(f"\nAccuracies in % on the first {rep['rows'][0]['n']} test images. Robust accuracy counts an "
      "image only when both its clean and its adversarial prediction are right. "
      + (f"AutoAttack is the standard version (APGD-CE, APGD-T, FAB-T, Square) at the same eps on "
         f"the first {aa_n} images; the gap column is PGD-20 minus AutoAttack on those same images.\n"
         if aa_n else "This is **not AutoAttack** (PGD-20 and CW-20 only).\n"))

# The sweep's choice per kind (docs/lr-sweep-fashion-mnist.md), to say which rows use it.
sweep_doc = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs",
                         "lr-sweep-fashion-mnist.md")
chosen = {}
if os.path.exists(sweep_doc):
    for line in open(sweep_doc):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[5].startswith("**yes**"):
            chosen[cells[0]] = float(cells[1])
print("lr: each run's peak learning rate.", end="")
if chosen:
    trained = [(r["name"], json.load(open(os.path.join(run_dir(r), "run.json")))["config"])
               for r in rep["rows"] if lr_of(r) is not None]
    off = [name for name, c in trained if c["kind"] in chosen
           and abs(c["lr"] - chosen[c["kind"]]) > 1e-12 * c["lr"]]
    print(" `scripts/lr-sweep.sh` picks one per kind on training data "
          "([the sweep](lr-sweep-fashion-mnist.md)); "
          + ("every adversarially trained row uses its pick." if not off else
             "these rows do not use its pick: " + ", ".join(off) + "."), end="")

swept = sorted({r["name"] for r in rep["rows"]
                if run_dir(r) and not r["spec"].endswith("#base")
                and os.path.exists(os.path.join(run_dir(r), "from-lr-sweep"))})
if swept:
    print(" The runs of " + ", ".join(swept) + " are the sweep's own (same settings, reused): "
          "the sweep trains two runs side by side on the two cores, so their train times are "
          "longer than those of a run trained alone.", end="")
print("\n")
print("## Does the paper's ordering hold here?\n")
checks = [
    ("HyperAT+ (uniform)", "FullLoRA-AT (PGD-AT)", "pgd_acc"),
    ("FullLoRA-AT (PGD-AT)", "LoRA-AT (PGD-AT)", "pgd_acc"),
    ("HyperAT+ (uniform)", "LoRA-AT (PGD-AT)", "pgd_acc"),
    ("HyperAT+ (uniform)", "HyperAT PGD-AT", "pgd_acc"),
    ("HyperAT adaptive", "HyperAT+ (uniform)", "pgd_acc"),
    ("HyperAT+ (uniform)", "Full-AT (PGD-AT)", "pgd_acc"),
    ("HyperAT+ (uniform)", "HyperAT+ no warm-up (uniform)", "pgd_acc"),
]
for a, b, key in checks:
    if a in rows and b in rows:
        va, vb = rows[a][key], rows[b][key]
        verdict = "holds" if va >= vb else "does not hold"
        line = f"- {a} ≥ {b} in PGD-20 accuracy: **{verdict}** ({pct(va)} vs {pct(vb)})"
        aa_a, aa_b = rows[a].get("aa_acc"), rows[b].get("aa_acc")
        if aa_a is not None and aa_b is not None:
            verdict = "holds" if aa_a >= aa_b else "does not hold"
            line += f"; in AutoAttack accuracy: **{verdict}** ({pct(aa_a)} vs {pct(aa_b)})"
        print(line + ".")
if aa_n:
    measured = [r for r in rep["rows"] if r.get("aa_acc") is not None and r.get("aa_pgd_acc") is not None]
    worse = [r["name"] for r in measured if r["aa_acc"] > r["aa_pgd_acc"]]
    gaps = [r["aa_pgd_acc"] - r["aa_acc"] for r in measured]
    print(f"- AutoAttack ≤ PGD-20 on the same {aa_n} images, every row: **"
          + ("holds" if not worse else "does not hold for " + ", ".join(worse))
          + f"** (gap {pct(min(gaps))} to {pct(max(gaps))} points). AutoAttack is the figure to "
          f"quote: it is lower than PGD-20 on {sum(g > 0 for g in gaps)} of {len(gaps)} rows.")
    hyp_rows = [r for r in measured if r["name"].startswith("HyperAT")]
    base_rows = [r for r in measured if r["name"].startswith(("LoRA-AT", "FullLoRA-AT", "Full-AT"))]
    if hyp_rows and base_rows:
        mean = lambda rs: sum(r["aa_pgd_acc"] - r["aa_acc"] for r in rs) / len(rs)
        print(f"- Mean PGD-20 − AutoAttack gap: HyperAT rows {pct(mean(hyp_rows))} points, "
              f"the LoRA-AT / FullLoRA-AT / Full-AT baselines {pct(mean(base_rows))} points.")
full, hyp = rows.get("Full-AT (PGD-AT)"), rows.get("HyperAT+ (uniform)")
if full and hyp and full["trainable_params"] and hyp["trainable_params"]:
    ratio = hyp["trainable_params"] / full["trainable_params"]
    print(f"- Trainable parameters, HyperAT vs full-AT: {hyp['trainable_params']:,} vs "
          f"{full['trainable_params']:,} ({ratio:.2f}×). "
          + ("HyperAT trains fewer parameters." if ratio < 1 else
             "On this tiny ViT (205K weights) the hypernetwork's heads are larger than the model, "
             "so the paper's 'far fewer trainable parameters' does **not** hold at this scale; it "
             "is a property of large backbones (ViT-B has 86M weights, the same hypernetwork "
             "grows only with the LoRA shapes)."))


def merge_meta(path):
    """The `__metadata__` of a safetensors merge file (its weights and held-out check)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)).get("__metadata__", {})


adaptive = os.path.join(ship, "hyperat", "merges", "adaptive.safetensors")
meta = merge_meta(adaptive) if os.path.isfile(adaptive) else {}
if "lambdas" in meta:
    methods = meta["methods"].split(",")
    lam = json.loads(meta["lambdas"])
    weights = ", ".join(f"{m} {w:.2f}" for m, w in zip(methods, lam[0]))
    line = (f"- The adaptive merge learned the weights {weights}"
            + (" (block 0's; one row per block)" if len(lam) > 1 else "") + ".")
    if "check" in meta:
        c = json.loads(meta["check"])
        loss = "lowered" if c["learned_loss"] < c["uniform_loss"] else "did not lower"
        acc = "rose" if c["learned_accuracy"] > c["uniform_accuracy"] else "did not rise"
        line += (f" On {c['images']} held-out images under its own attack the search {loss} its "
                 f"objective, the adversarial cross-entropy ({c['uniform_loss']:.3f} uniform → "
                 f"{c['learned_loss']:.3f} learned), and robust accuracy {acc} "
                 f"({pct(c['uniform_accuracy'])} → {pct(c['learned_accuracy'])}).")
        if c["learned_loss"] < c["uniform_loss"] and c["learned_accuracy"] <= c["uniform_accuracy"]:
            top = max(zip(lam[0], methods))[1]
            line += (" The search does its job; its loss and the accuracy disagree: the "
                     f"cross-entropy favours {top}"
                     + (", the one method trained on that very loss." if top == "pgd-at" else "."))
    print(line)
comp_rows = [r for r in rep["rows"] if r.get("aa_components")]
if comp_rows:
    names = [c["name"] for c in comp_rows[0]["aa_components"]]
    print(f"\nRobust accuracy after each AutoAttack component (cumulative, first {aa_n} images): "
          "where APGD-T (targeted, DLR loss) takes much more than APGD-CE left, the model's "
          "cross-entropy gradients were misleading PGD.\n")
    print("| model | " + " | ".join(f"after {n}" for n in names) + " | taken by APGD-T |")
    print("|---|" + "---|" * (len(names) + 1))
    for r in comp_rows:
        acc = {c["name"]: c["robust_acc"] for c in r["aa_components"]}
        drop = (acc["apgd-ce"] - acc["apgd-t"]) if "apgd-ce" in acc and "apgd-t" in acc else None
        print(f"| {r['name']} | " + " | ".join(pct(acc[n]) for n in names) + f" | {opt(drop, pct)} |")
size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ship) for f in fs)
print(f"\nThe shipped default model (`{ship}/`, {size / 1e6:.1f} MB) comes from this run: the "
      "backbone, the HyperAT run (its hypernetwork generates every method's LoRA) and the "
      "uniform merge exported as a plain timm ViT.")

# Training curves: how the adversarially tuned rows got there (batch accuracies from each
# run's metrics.jsonl, averaged over 20-step windows), computed, not written by hand.
runs_dir = os.path.dirname(report_path)


def curve(run, key, window=20):
    path = os.path.join(runs_dir, run, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    recs = [json.loads(line) for line in open(path)]
    vals = [(r["step"], r[key]) for r in recs if r.get(key) is not None]
    if len(vals) < window:
        return None
    means = [(vals[i + window - 1][0], sum(v for _, v in vals[i:i + window]) / window)
             for i in range(0, len(vals) - window + 1, window)]
    return means


print("\n## Training curves\n")
print("Batch accuracy on the training attack (adversarial) and on clean images, mean of "
      "20-step windows (`metrics.jsonl` of each run):\n")
for run, name in [("lora-at", "LoRA-AT"), ("full-lora-at", "FullLoRA-AT"), ("full-at", "Full-AT"),
                  ("hyperat", "HyperAT"), ("hyperat-no-warmup", "HyperAT without method warm-up")]:
    adv = curve(run, "adv_acc")
    if not adv:
        continue
    low = min(adv, key=lambda t: t[1])
    print(f"- {name}: adversarial batch accuracy {pct(adv[0][1])} in the first window, lowest "
          f"{pct(low[1])} (window ending at step {low[0]}), {pct(adv[-1][1])} in the last.")
    clean = curve(run, "clean_acc")
    if clean:
        lowc = min(clean, key=lambda t: t[1])
        print(f"  Clean batch accuracy (TRADES and MART steps): first {pct(clean[0][1])}, lowest "
              f"{pct(lowc[1])} (step {lowc[0]}), last {pct(clean[-1][1])}.")

# What the method warm-up changes: the clean accuracy of the TRADES / MART steps.
with_w, without = curve("hyperat", "clean_acc"), curve("hyperat-no-warmup", "clean_acc")
if with_w and without:
    low_w, low_n = min(v for _, v in with_w), min(v for _, v in without)
    print(f"\nWithout the method warm-up, the three methods are sampled from step 1. TRADES and MART "
          "then start with large KL terms on the undefended backbone (loss above 30 at step 1 on "
          "our runs), and the shared head and generator shrink them fastest by flattening every "
          f"prediction: the clean batch accuracy of those steps fell to {pct(low_n)}%, and the PGD-AT "
          "steps paid for it. With PGD-AT alone for the first steps (`--method-warmup`, ours, not "
          f"in the paper) it fell only to {pct(low_w)}%, and HyperAT+ reaches "
          f"{pct(rows['HyperAT+ (uniform)']['pgd_acc'])}% PGD-20 instead of "
          f"{pct(rows['HyperAT+ no warm-up (uniform)']['pgd_acc'])}%.")
