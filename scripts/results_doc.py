#!/usr/bin/env python3
"""Writes docs/results-fashion-mnist.md from the outputs of scripts/results_fashion_mnist.py.

Every sentence with a number is computed from the runs' files: the report rows
(`rows/{main,seeds,ablations}/*.json`), the runs' `metrics.jsonl` (hold-out curves and
delta diagnostics) and `summary.json`, the backbone's `train.json`. Paired comparisons
use McNemar's exact test on the per-image PGD-20 robust flags.

Usage: results_doc.py OUT SECONDS  (OUT: the plan's folder; SECONDS: this invocation's time)
"""
import glob
import json
import math
import os
import statistics
import sys


def load_rows(out, group):
    """The rows of a group, in the plan's order (backbone first, merges last)."""
    rows = {}
    for f in sorted(glob.glob(f"{out}/rows/{group}/*.json")):
        r = json.load(open(f))
        for row in r["rows"]:
            rows[row["name"]] = row
    os.environ["OUT"] = out
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import results_fashion_mnist as plan
    order = {"main": [n for n, _, _ in plan.main_rows()], "seeds": [n for n, _ in plan.seed_rows()],
             "ablations": [n for n, _ in plan.ablation_rows()]}.get(group, [])
    rank = {n: i for i, n in enumerate(order)}
    return dict(sorted(rows.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def pct(v):
    return "—" if v is None else f"{100 * v:.2f}"


def mcnemar(a, b):
    """Exact two-sided McNemar test on paired 0/1 strings: (a-only, b-only, p)."""
    n10 = sum(1 for x, y in zip(a, b) if x == "1" and y == "0")
    n01 = sum(1 for x, y in zip(a, b) if x == "0" and y == "1")
    n = n10 + n01
    if n == 0:
        return n10, n01, 1.0
    k = min(n10, n01)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return n10, n01, min(1.0, 2 * tail)


def records(run):
    path = f"{run}/metrics.jsonl"
    return [json.loads(l) for l in open(path)] if os.path.exists(path) else []


def run_dir(spec):
    d = spec.split("#")[0]
    return d if os.path.exists(f"{d}/run.json") else None


def run_config(spec):
    d = run_dir(spec)
    return json.load(open(f"{d}/run.json"))["config"] if d else None


def human(s):
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min"


def main():
    out, seconds = sys.argv[1], float(sys.argv[2])
    main_rows, seed_rows, abl_rows = load_rows(out, "main"), load_rows(out, "seeds"), load_rows(out, "ablations")
    p = print
    p("# Results on Fashion-MNIST\n")
    p("Made by one command on the project's 2-core CPU machine (resumable; it prints what is "
      "left and an estimate before it starts):\n")
    p("```sh\nscripts/results-fashion-mnist.sh\n```\n")
    train_s = sum(json.load(open(f))["seconds"] for f in glob.glob(f"{out}/*/summary.json"))
    eval_s = sum(r["eval_seconds"] for g in (main_rows, seed_rows, abl_rows) for r in g.values())
    pre = json.load(open(f"{out}/backbone/train.json"))
    pre_s = pre["summary"]["seconds"]
    p(f"Compute behind this document, one core per job: pretraining {human(pre_s)}, tuning runs "
      f"{human(train_s)}, evaluations {human(eval_s)} (the last invocation of the script took "
      f"{human(seconds)}; it redoes only what is missing or stale). Threat model everywhere: "
      "L∞, eps 0.1 on [0,1] pixels (the Fashion-MNIST convention). Training attack: PGD-5 of "
      "step 0.025 from a uniform random start; batch 128; AdamW with 10% linear warm-up and "
      "cosine decay. Evaluation: PGD-20 and CW-20 with step 0.01 and a random start, standard "
      "AutoAttack; robust accuracy counts an image only when its clean and adversarial "
      "predictions are both right. Settings were chosen on the hold-out (the last 5000 "
      "training images, never trained on), not on the test set.\n")
    p("The trainer itself is checked against PyTorch first: [parity-pytorch.md](parity-pytorch.md).\n")

    # -- backbone
    req = pre["request"]
    evals = [json.loads(l) for l in open(f"{out}/backbone/metrics.jsonl") if '"eval"' in l]
    bb = main_rows.get("Backbone (no AT)")
    p("## The backbone\n")
    p(f"`{req['preset']}`, {req['epochs']} epochs of clean training with random crops (padding "
      f"{req['crop_pad']}) and horizontal flips, lr {req['lr']}, weight decay {req['weight_decay']}, "
      f"{pre['params']:,} parameters, {human(pre_s)}. Hold-out accuracy after the last epoch "
      f"{pct(evals[-1]['acc'])}%"
      + (f"; test accuracy {pct(bb['clean_acc'])}% (mean top-1 confidence {bb['mean_confidence']:.2f})."
         if bb else ".") + "\n")

    # -- main table
    if main_rows:
        aa_n = next((r["aa_n"] for r in main_rows.values() if r.get("aa_n")), None)
        n = next(iter(main_rows.values()))["n"]
        p("## The main table\n")
        p(f"Every adversarially trained row: the same backbone, the same number of epochs, the same "
          f"training attack. Accuracies in % on the first {n} test images"
          + (f"; AutoAttack (standard) on the first {aa_n}" if aa_n else "") + ".\n")
        p("| model | clean | confidence | PGD-20 | CW-20 | AutoAttack | PGD-20 − AA (same images) "
          "| trainable params | lr | epochs | train time | peak memory |")
        p("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name, r in main_rows.items():
            cfg = run_config(r["spec"]) if "#" in r["spec"] and not r["spec"].endswith("#base") else None
            epochs = (f"{cfg['steps'] / (55000 // cfg['batch_size']):.1f}" if cfg else "—")
            gap = (pct(r["aa_pgd_acc"] - r["aa_acc"]) if r.get("aa_acc") is not None else "—")
            mem = f"{r['peak_mem_mib']:.0f} MiB" if r.get("peak_mem_mib") else "—"
            p(f"| {name} | {pct(r['clean_acc'])} | {r['mean_confidence']:.2f} | {pct(r['pgd_acc'])} "
              f"| {pct(r['cw_acc'])} | {pct(r.get('aa_acc'))} | {gap} "
              f"| {r['trainable_params'] or '—'} | {cfg['lr'] if cfg else '—'} | {epochs} "
              f"| {human(r['train_seconds']) if r.get('train_seconds') else '—'} "
              f"| {mem} |")
        p("")
        convergence(out)
        distinct(out)
    seeds(seed_rows)
    ablations(abl_rows)


def convergence(out):
    """The hold-out curves of the main runs: how much the last epoch still moved them."""
    p = print
    p("### Did the runs converge?\n")
    p("Hold-out robust accuracy (PGD-10, first 512 hold-out images) as each main run trained, "
      "evaluated about every half epoch:\n")
    p("| run | model | first evaluation | one epoch before the end | end | change over the last epoch |")
    p("|---|---|---|---|---|---|")
    for run in ["full-at", "lora-at", "full-lora-at", "hyperat"]:
        recs = [r for r in records(f"{out}/{run}") if r.get("kind") == "holdout"]
        if not recs:
            continue
        cfg = json.load(open(f"{out}/{run}/run.json"))["config"]
        per_epoch = 55000 // cfg["batch_size"]
        for model in sorted({r["model"] for r in recs}):
            c = [r for r in recs if r["model"] == model]
            end = c[-1]
            before = min(c, key=lambda r: abs(r["step"] - (end["step"] - per_epoch)))
            p(f"| {run} | {model} | {pct(c[0]['robust_acc'])} | {pct(before['robust_acc'])} "
              f"| {pct(end['robust_acc'])} | {100 * (end['robust_acc'] - before['robust_acc']):+.2f} |")
    p("")


def distinct(out):
    p = print
    diag = [r for r in records(f"{out}/hyperat") if r.get("kind") == "diagnostics"]
    if not diag:
        return
    last, first = diag[-1], diag[0]
    p("### Are the defenses' LoRAs distinct?\n")
    p(f"Cosine between the methods' weight deltas (16 (block, target) weights × {len(last['pairs'])} "
      f"pairs; 1 = one LoRA under {len(last['methods'])} names): mean "
      f"{last['delta_cosine']['mean']:.3f} (min {last['delta_cosine']['min']:.3f}, max "
      f"{last['delta_cosine']['max']:.3f}) at the end, {first['delta_cosine']['mean']:.3f} at step "
      f"{first['step']}. Method embeddings: cosine {last['embed_cosine_mean']:.3f}; conditioning "
      f"vectors: {last['cond_cosine_mean']:.3f}. Largest delta relative to its frozen weight: "
      + ", ".join(f"{e['target']} of block {e['block']} {max(e['rel_norm']):.2f}"
                  for e in sorted(last["entries"], key=lambda e: -max(e["rel_norm"]))[:3])
      + ". (`hyperat report --deltas RUN` prints the per-weight table.)\n")


def seeds(rows):
    p = print
    if not rows:
        return
    p("## HyperAT+ against LoRA-AT and one-method HyperAT, three seeds\n")
    n = next(iter(rows.values()))["n"]
    p(f"A shorter common budget for every row (see the script), evaluated on all {n} test images; "
      "each seed's models are compared image by image with McNemar's exact test on their PGD-20 "
      "robust flags (b: images only the first keeps, c: only the second).\n")
    p("| seed | HyperAT+ clean / PGD-20 | LoRA-AT clean / PGD-20 | one-method HyperAT clean / PGD-20 "
      "| HyperAT+ − LoRA-AT (b, c, p) | HyperAT+ − one-method (b, c, p) |")
    p("|---|---|---|---|---|---|")
    diffs = {"lora": [], "one": []}
    for s in sorted({int(k.rsplit(" ", 1)[1]) for k in rows}):
        h, l, o = (rows.get(f"{k} seed {s}") for k in ("HyperAT+", "LoRA-AT", "HyperAT one method"))
        if not (h and l and o):
            continue
        cells = []
        for key, other in (("lora", l), ("one", o)):
            b, c, pv = mcnemar(h["pgd_robust_flags"], other["pgd_robust_flags"])
            d = h["pgd_acc"] - other["pgd_acc"]
            diffs[key].append(d)
            cells.append(f"{100 * d:+.2f} ({b}, {c}, p = {pv:.2g})")
        p(f"| {s} | {pct(h['clean_acc'])} / {pct(h['pgd_acc'])} | {pct(l['clean_acc'])} / {pct(l['pgd_acc'])} "
          f"| {pct(o['clean_acc'])} / {pct(o['pgd_acc'])} | {cells[0]} | {cells[1]} |")
    for key, label in (("lora", "LoRA-AT"), ("one", "one-method HyperAT")):
        d = diffs[key]
        if len(d) >= 2:
            p(f"\nHyperAT+ − {label} in PGD-20 robust accuracy: mean {100 * statistics.mean(d):+.2f} "
              f"points, standard deviation {100 * statistics.stdev(d):.2f} over {len(d)} seeds.", end="")
    p("\n")


def ablations(rows):
    p = print
    if not rows:
        return
    n = next(iter(rows.values()))["n"]
    p(f"## Ablations (one seed, first {n} test images)\n")
    p("| variant | clean | PGD-20 | CW-20 | trainable params | train time |")
    p("|---|---|---|---|---|---|")
    for name, r in rows.items():
        p(f"| {name} | {pct(r['clean_acc'])} | {pct(r['pgd_acc'])} | {pct(r['cw_acc'])} "
          f"| {r['trainable_params'] or '—'} | {human(r['train_seconds']) if r.get('train_seconds') else '—'} |")
    p("\nOne seed each: differences of a point or two are within what a seed changes (see the "
      "three-seed table).\n")


def self_test():
    """McNemar's exact test on hand-checked cases (run by scripts/test.sh)."""
    assert mcnemar("1100", "1010") == (1, 1, 1.0)
    b, c, pv = mcnemar("1" * 10, "0" * 10)
    assert (b, c) == (10, 0) and abs(pv - 2 / 1024) < 1e-15
    b, c, pv = mcnemar("1" * 7 + "0" * 3, "0" * 7 + "1" * 3)  # 7 vs 3: p = 2·P(X ≤ 3), X ~ B(10, 1/2)
    assert (b, c) == (7, 3) and abs(pv - 2 * 176 / 1024) < 1e-15
    assert mcnemar("0101", "0101") == (0, 0, 1.0)
    print("results_doc: self-test passed")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    else:
        main()
