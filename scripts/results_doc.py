#!/usr/bin/env python3
"""Writes docs/results-fashion-mnist.md from the outputs of scripts/results_fashion_mnist.py.

Every sentence with a number is computed from the runs' files: the report rows
(`rows/{main,seeds,ablations}/*.json`), the runs' `metrics.jsonl` (hold-out curves and
delta diagnostics) and `summary.json`, the backbone's `train.json`, the shipping screen's
hold-out evaluations (`screen/`) and the WiSE-FT interpolation (`wise/`). Paired
comparisons use McNemar's exact test on the per-image PGD-20 robust flags. A row still
to run is named as such, never filled in.

Usage: results_doc.py OUT SECONDS  (OUT: the plan's folder; SECONDS: this invocation's time)
       results_doc.py --self-test
"""
import glob
import importlib
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results_doc_distinct  # noqa: E402
import results_doc_holdout  # noqa: E402
import results_doc_seeds  # noqa: E402
import results_doc_shipping as shipping  # noqa: E402
from results_doc_common import diagnostics, pct, human, mcnemar, p_text, records, safetensors_metadata  # noqa: E402


def load_plan(out):
    """The plan module, pointed at OUT (its row lists name the runs under OUT)."""
    os.environ["OUT"] = out
    import results_fashion_mnist as plan
    return importlib.reload(plan)


def load_rows(out, group, order):
    """The rows of a group keyed by name: those of `order` first, in its order."""
    rows = {}
    for f in sorted(glob.glob(f"{out}/rows/{group}/*.json")):
        for row in json.load(open(f))["rows"]:
            rows[row["name"]] = row
    rank = {n: i for i, n in enumerate(order)}
    return dict(sorted(rows.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def run_dir(spec):
    d = spec.split("#")[0]
    return d if os.path.exists(f"{d}/run.json") else None


def run_config(spec):
    d = run_dir(spec)
    return json.load(open(f"{d}/run.json"))["config"] if d else None


def main():
    out, seconds = sys.argv[1], float(sys.argv[2])
    for line in document(out, seconds):
        print(line)


def document(out, seconds):
    """The document's lines."""
    plan = load_plan(out)
    main_names = [n for n, _, _ in plan.main_rows()]
    every_main = load_rows(out, "main", main_names)
    main_rows = {n: r for n, r in every_main.items() if n in main_names}
    ship_rows = {n: r for n, r in every_main.items() if n not in main_names}
    seed_rows = load_rows(out, "seeds", [n for n, _ in plan.seed_rows()])
    abl_rows = load_rows(out, "ablations", [n for n, _ in plan.ablation_rows()])
    distinct_rows = load_rows(out, "distinct", [n for n, *_ in plan.distinct_rows()])
    lines = []
    p = lines.append
    p("# Results on Fashion-MNIST\n")
    p("Made by one command on the project's 2-core CPU machine (resumable; it prints what is "
      "left and an estimate before it starts):\n")
    p("```sh\nscripts/results-fashion-mnist.sh\n```\n")
    p("Every evaluation behind the figures below (with its per-image predictions, which the "
      "paired tests read), every run's summary and training metrics, and the tensors of the "
      "main runs are kept in [`results/fashion-mnist/`](../results/fashion-mnist/); the script "
      "restores them before it plans, so it redoes nothing already there.\n")
    train_s = sum(json.load(open(f))["seconds"] for f in glob.glob(f"{out}/*/summary.json"))
    eval_s = sum(r["eval_seconds"] for g in (every_main, seed_rows, abl_rows, distinct_rows) for r in g.values())
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
      "training images, never trained on), not on the test set. Every figure is one seed "
      "unless a table says otherwise.\n")
    p("The trainer itself is checked against PyTorch first: [parity-pytorch.md](parity-pytorch.md). "
      "How HyperAT's settings were chosen: [sweep-distinct-fashion-mnist.md](sweep-distinct-fashion-mnist.md).\n")
    backbone(lines, out, pre, main_rows.get("Backbone (no AT)"))
    results_doc_holdout.holdout(lines, out, plan, ANCHOR)
    main_table(lines, out, plan, main_rows)
    if main_rows:
        paired(lines, main_rows)
        claims(lines, main_rows)
        adaptive_weights(lines, out, plan.MAIN_HYPERAT)
        autoattack_components(lines, main_rows)
        sparse_merges(lines, out, main_rows, plan.MAIN_HYPERAT)
        holdout_vs_test(lines, out, plan, main_rows)
        convergence(lines, out, plan)
        distinct(lines, out, plan)
        results_doc_distinct.distinct_runs(lines, out, plan, main_rows, distinct_rows)
    shipping.shipped(lines, out, plan, ship_rows, main_rows)
    shipping.wise(lines, out)
    results_doc_seeds.seeds(lines, seed_rows, plan.EPOCHS / plan.ABL_EPOCHS)
    results_doc_seeds.ablations(lines, abl_rows, [n for n, _ in plan.ablation_rows()])
    p("The previous protocol's figures (every run 0.35 epoch on a backbone pretrained 3 "
      "epochs) are in this file's history up to commit 0367180; none of them is used here.")
    return lines


def backbone(lines, out, pre, row):
    req = pre["request"]
    evals = [json.loads(l) for l in open(f"{out}/backbone/metrics.jsonl") if '"eval"' in l]
    lines.append("## The backbone\n")
    lines.append(
        f"`{req['preset']}`, {req['epochs']} epochs of clean training with random crops (padding "
        f"{req['crop_pad']}) and horizontal flips, lr {req['lr']}, weight decay {req['weight_decay']}, "
        f"{pre['params']:,} parameters, {human(pre['summary']['seconds'])}. Hold-out accuracy after the "
        f"last epoch {pct(evals[-1]['acc'])}%"
        + (f"; test accuracy {pct(row['clean_acc'])}% (mean top-1 confidence {row['mean_confidence']:.2f})."
           if row else ".") + "\n")


def main_table(lines, out, plan, rows):
    p = lines.append
    missing = [n for n, _, _ in plan.main_rows() if n not in rows]
    if not rows:
        return
    aa_n = next((r["aa_n"] for r in rows.values() if r.get("aa_n")), None)
    n = next(iter(rows.values()))["n"]
    p("## The main table\n")
    p(f"Every adversarially trained row: the same backbone, the same number of epochs, the same "
      f"training attack. Accuracies in % on the first {n:,} test images"
      + (f"; AutoAttack (standard) on the first {aa_n:,}" if aa_n else "") + ".\n")
    p("| model | clean | confidence | PGD-20 | CW-20 | AutoAttack | PGD-20 − AA (same images) "
      "| trainable params | lr | epochs | train time | peak memory |")
    p("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        cfg = run_config(r["spec"]) if "#" in r["spec"] and not r["spec"].endswith("#base") else None
        epochs = (f"{cfg['steps'] / (55000 // cfg['batch_size']):.1f}" if cfg else "—")
        gap = (pct(r["aa_pgd_acc"] - r["aa_acc"]) if r.get("aa_acc") is not None else "—")
        mem = f"{r['peak_mem_mib']:.0f} MiB" if r.get("peak_mem_mib") else "—"
        params = f"{r['trainable_params']:,}" if r.get("trainable_params") else "—"
        p(f"| {name} | {pct(r['clean_acc'])} | {r['mean_confidence']:.3f} | {pct(r['pgd_acc'])} "
          f"| {pct(r['cw_acc'])} | {pct(r.get('aa_acc'))} | {gap} | {params} "
          f"| {cfg['lr'] if cfg else '—'} | {epochs} "
          f"| {human(r['train_seconds']) if r.get('train_seconds') else '—'} | {mem} |")
    p("")
    cfg = run_config(f"{out}/{plan.MAIN_HYPERAT}#") or {}
    penalty = (f", trained with the margin diversity penalty (λ {cfg['method_diversity']:g}, margin "
               f"{cfg['method_diversity_margin']:g}; chosen on the hold-out, see \"Keeping them "
               "distinct\" below)" if cfg.get("method_diversity") else "")
    p(f"The per-method rows, the merges and HyperAT+ come from one HyperAT run, `{plan.MAIN_HYPERAT}`"
      f"{penalty}; its trainable parameters and time are the run's. Train times are one core "
      "each with another job beside it.\n")
    if missing:
        p("Still to run (the script resumes them): " + ", ".join(missing) + ".\n")


ANCHOR = "HyperAT+ (uniform)"


def paired(lines, rows):
    """HyperAT+ against every robust row, image by image."""
    a = rows.get(ANCHOR)
    others = [(n, r) for n, r in rows.items() if n != ANCHOR and r["pgd_acc"] > 0]
    if not a or not others:
        return
    p = lines.append
    p(f"### {ANCHOR} against each row, paired\n")
    p(f"Exact McNemar test on the {a['n']:,} PGD-20 outcomes; b = images only {ANCHOR} keeps "
      "robustly right, c = images only the other row keeps.\n")
    p("| other row | PGD-20 difference (points) | b | c | p |")
    p("|---|---|---|---|---|")
    for n, r in others:
        b, c, pv = mcnemar(a["pgd_robust_flags"], r["pgd_robust_flags"])
        p(f"| {n} | {100 * (a['pgd_acc'] - r['pgd_acc']):+.2f} | {b} | {c} | {p_text(pv)} |")
    p("")


def verdict(a, b):
    """Whether `a ≥ b` in PGD-20 robust accuracy holds, by the paired test at 5%."""
    _, _, pv = mcnemar(a["pgd_robust_flags"], b["pgd_robust_flags"])
    if pv >= 0.05:
        return f"**not distinguishable** ({pct(a['pgd_acc'])} vs {pct(b['pgd_acc'])}, p = {p_text(pv)})"
    word = "**holds**" if a["pgd_acc"] > b["pgd_acc"] else "**does not hold**"
    return f"{word} ({pct(a['pgd_acc'])} vs {pct(b['pgd_acc'])}, p = {p_text(pv)})"


def claims(lines, rows):
    """The paper's orderings, each checked on this table (one seed, PGD-20 on every image)."""
    p = lines.append
    checks = [(ANCHOR, "LoRA-AT (PGD-AT)"), (ANCHOR, "FullLoRA-AT (PGD-AT)"),
              ("FullLoRA-AT (PGD-AT)", "LoRA-AT (PGD-AT)"), (ANCHOR, "Full-AT (PGD-AT)"),
              ("HyperAT adaptive", ANCHOR), ("HyperAT TIES", ANCHOR), ("HyperAT DARE", ANCHOR)]
    methods = [n for n in ("HyperAT PGD-AT", "HyperAT TRADES", "HyperAT MART") if n in rows]
    if methods:
        checks.insert(1, (ANCHOR, max(methods, key=lambda n: rows[n]["pgd_acc"])))
    checks = [(a, b) for a, b in checks if a in rows and b in rows]
    if not checks:
        return
    p("### Does the paper's ordering hold here?\n")
    p("Each claim as `A ≥ B` in PGD-20 robust accuracy on every test image, judged by the paired "
      "test at 5% (one seed: a second seed may order two close rows the other way; the three-seed "
      "comparisons are below). AutoAttack figures, where measured, are on the first 1000 only and "
      "unpaired.\n")
    for a, b in checks:
        aa = ""
        if rows[a].get("aa_acc") is not None and rows[b].get("aa_acc") is not None:
            aa = f"; AutoAttack {pct(rows[a]['aa_acc'])} vs {pct(rows[b]['aa_acc'])}"
        p(f"- {a} ≥ {b}: {verdict(rows[a], rows[b])}{aa}.")
    h, f = rows.get(ANCHOR), rows.get("Full-AT (PGD-AT)")
    if h and f and h.get("trainable_params") and f.get("trainable_params"):
        ratio = h["trainable_params"] / f["trainable_params"]
        p(f"- Fewer trainable parameters than full fine-tuning: **does not hold at this scale** "
          f"({h['trainable_params']:,} for HyperAT against {f['trainable_params']:,} for Full-AT, "
          f"{ratio:.1f}×): the hypernetwork's heads grow with the LoRA shapes, not with the "
          "backbone, so the paper's saving needs a backbone far larger than this 0.2M-weight ViT.")
    p("")


def adaptive_weights(lines, out, run):
    """What the adaptive merge learned, and what its own check on the hold-out saw."""
    meta = safetensors_metadata(f"{out}/{run}/merges/adaptive.safetensors")
    if "lambdas" not in meta:
        return
    lambdas = json.loads(meta["lambdas"])
    weights = ", ".join(f"{m} {w:.2f}" for m, w in zip(meta["methods"].split(","), lambdas[0]))
    text = f"The adaptive merge learned the weights {weights}"
    if len(lambdas) > 1:
        text += " (per layer: the first layer's)"
    if "check" in meta:
        c = json.loads(meta["check"])
        text += (f" on the hold-out; on {c['images']} images of that split (learned from, so not an "
                 "independent check) under its own training attack it lowered the "
                 f"adversarial loss from {c['uniform_loss']:.3f} (uniform) to {c['learned_loss']:.3f} and "
                 f"moved robust accuracy from {pct(c['uniform_accuracy'])}% to {pct(c['learned_accuracy'])}%")
    lines.append(text + ".\n")


def autoattack_components(lines, rows):
    with_aa = {n: r for n, r in rows.items() if r.get("aa_components")}
    if not with_aa:
        return
    p = lines.append
    names = [c["name"] for c in next(iter(with_aa.values()))["aa_components"]]
    aa_n = next(iter(with_aa.values()))["aa_n"]
    p(f"Robust accuracy after each AutoAttack component (cumulative, first {aa_n} test images); "
      "where APGD-T (targeted, DLR loss) takes much more than APGD-CE left, the model's "
      "cross-entropy gradients misled the untargeted attacks:\n")
    p("| model | PGD-20 (same images) | " + " | ".join(f"after {c}" for c in names) + " |")
    p("|---|---|" + "---|" * len(names))
    for n, r in with_aa.items():
        p(f"| {n} | {pct(r['aa_pgd_acc'])} | " + " | ".join(pct(c["robust_acc"]) for c in r["aa_components"]) + " |")
    p("")


def sparse_merges(lines, out, rows, run):
    """What TIES and DARE keep of HyperAT+, beside the run's delta diagnostics."""
    a = rows.get(ANCHOR)
    sparse = [(n, rows[n]) for n in ("HyperAT TIES", "HyperAT DARE") if n in rows]
    diag = diagnostics(f"{out}/{run}")
    if not (a and sparse and diag):
        return
    last = diag[-1]
    rel = statistics.median(max(e["rel_norm"]) for e in last["entries"])
    kept = ", ".join(f"{n.split()[-1]} keeps {100 * r['pgd_acc'] / a['pgd_acc']:.0f}%" for n, r in sparse)
    lines.append(
        f"**The sparsifying merges.** Of HyperAT+'s PGD-20 robust accuracy, {kept}. The deltas "
        f"they merge have a mean pairwise cosine of {last['delta_cosine']['mean']:.2f} and are "
        f"rewrites of the weights rather than small corrections (median {rel:.2f}× the frozen "
        "weight's norm); a likely reading, not tested here, is that trimming or dropping entries "
        "of such deltas breaks them (what each full-budget run's sparsifying merges keep is in "
        "\"Keeping them distinct\" below).\n")


def holdout_vs_test(lines, out, plan, rows):
    """How far the hold-out (where settings were chosen) is from the test set, and whether
    it orders the rows the same way."""
    both = []
    for name, r in rows.items():
        path = f"{out}/holdout/{plan.slug(name)}.json"
        if os.path.exists(path) and r["pgd_acc"] > 0:
            both.append((name, json.load(open(path)), r))
    if len(both) < 2:
        return
    gaps = [100 * (h["clean_acc"] - r["clean_acc"]) for _, h, r in both]
    swapped = [(a[0], b[0]) for i, a in enumerate(both) for b in both[i + 1:]
               if (a[1]["robust_acc"] - b[1]["robust_acc"]) * (a[2]["pgd_acc"] - b[2]["pgd_acc"]) < 0]
    lines.append(
        f"**The hold-out against the test set.** For the {len(both)} robust rows the hold-out's clean "
        f"accuracy differs from the test set's by {min(gaps):+.1f} to {max(gaps):+.1f} points (positive: "
        "higher on the hold-out); of their "
        f"{len(both) * (len(both) - 1) // 2} pairs, {len(swapped)} ordered the other way under PGD-20"
        + (": " + "; ".join(f"{a} / {b}" for a, b in swapped) if swapped else "")
        + f" (the hold-out has {both[0][1]['n']:,} images, so pairs within a point or two may swap "
        "by chance).\n")


def convergence(lines, out, plan):
    """The hold-out curves of the main runs: how much the last epoch still moved them."""
    p = lines.append
    ships = [r for r in (plan.SHIP_RUN, plan.SHIP_DISTINCT_RUN) if os.path.exists(f"{out}/{r}/summary.json")]
    p("### Did the runs converge?\n")
    p("Hold-out robust accuracy (PGD-10 of step eps/4 at the run's training eps, first 512 "
      "hold-out images) as each main run, the HyperAT run without the diversity penalty "
      f"(`hyperat`) and the shipping candidates ({', '.join(f'`{r}`' for r in ships) or 'none finished'}) "
      "trained, evaluated about every half epoch:\n")
    p("| run | model | first evaluation | one epoch before the end | end | change over the last epoch |")
    p("|---|---|---|---|---|---|")
    for run in ["full-at", "lora-at", "full-lora-at", plan.MAIN_HYPERAT, plan.PLAIN_HYPERAT] + ships:
        recs = [r for r in records(f"{out}/{run}") if r.get("kind") == "holdout"]
        if not recs or not os.path.exists(f"{out}/{run}/summary.json"):
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


def distinct(lines, out, plan):
    """How close the defenses' deltas end: the main run's, beside the run's without the penalty."""
    p = lines.append
    runs = [(run, diagnostics(f"{out}/{run}")) for run in (plan.MAIN_HYPERAT, plan.PLAIN_HYPERAT)]
    runs = [(run, diag) for run, diag in runs if diag]
    if not runs or runs[0][0] != plan.MAIN_HYPERAT:
        return
    last = runs[0][1][-1]
    p("### Are the defenses' LoRAs distinct?\n")
    p(f"Cosine between the methods' weight deltas, mean over the 16 (block, target) weights × "
      f"{len(last['pairs'])} pairs (1 = one LoRA under {len(last['methods'])} names), as the main "
      "run and the run without the diversity penalty trained (their `metrics.jsonl`; `hyperat "
      "report --deltas RUN` prints the per-weight table):\n")
    p("| run | step | delta cosine, mean (min–max) | method embedding cosine | conditioning cosine |")
    p("|---|---|---|---|---|")
    for run, diag in runs:
        picked = []
        for s in (100, 500, 1000, 2000, diag[-1]["step"]):
            r = min(diag, key=lambda d: abs(d["step"] - s))
            if r not in picked:
                picked.append(r)
        for r in picked:
            d = r["delta_cosine"]
            p(f"| {run} | {r['step']} | {d['mean']:.3f} ({d['min']:.3f}–{d['max']:.3f}) "
              f"| {r['embed_cosine_mean']:.3f} | {r['cond_cosine_mean']:.4f} |")
    rel = sorted((max(e["rel_norm"]) for e in last["entries"]))
    top = sorted(last["entries"], key=lambda e: -max(e["rel_norm"]))[:3]
    p("")
    met = "met" if last["delta_cosine"]["mean"] < 0.7 else "**not met**"
    text = (f"The target, a mean delta cosine below 0.7 at the end of the main run, is {met} "
            f"({last['delta_cosine']['mean']:.3f}; each method's hold-out robustness against its "
            "best: next section).")
    if len(runs) > 1:
        text += (f" Without the penalty (`hyperat`, the same settings otherwise) the deltas end at "
                 f"{runs[1][1][-1]['delta_cosine']['mean']:.3f}: the three objectives' gradients, "
                 "which agree (each attacks with PGD and rewards the right adversarial class), pull "
                 "the shared generator's outputs together, and nothing in that objective keeps the "
                 "methods apart, so merging its LoRAs only rescales one delta.")
    p(text + " The main run's deltas are not small: relative to its frozen weight, median "
      f"{statistics.median(rel):.2f} over the 16 weights, largest "
      + ", ".join(f"{e['target']} of block {e['block']} {max(e['rel_norm']):.2f}" for e in top) + ".\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        import results_doc_selftest
        results_doc_selftest.run(document)
    else:
        main()
