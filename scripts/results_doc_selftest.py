"""Self-test of the results document (run by scripts/test.sh): McNemar's exact test on
hand-checked cases, then the whole document rendered from a small made-up results folder,
checking that its computed figures are the ones the folder implies."""
import json
import os
import struct
import tempfile

from results_doc_common import mcnemar, p_text


def check_mcnemar():
    assert mcnemar("1100", "1010") == (1, 1, 1.0)
    b, c, pv = mcnemar("1" * 10, "0" * 10)
    assert (b, c) == (10, 0) and abs(pv - 2 / 1024) < 1e-15
    b, c, pv = mcnemar("1" * 7 + "0" * 3, "0" * 7 + "1" * 3)  # 7 vs 3: p = 2·P(X ≤ 3), X ~ B(10, 1/2)
    assert (b, c) == (7, 3) and abs(pv - 2 * 176 / 1024) < 1e-15
    assert mcnemar("0101", "0101") == (0, 0, 1.0)
    assert [p_text(x) for x in (0.15, 0.0012, 6.2e-10, 0.0)] == ["0.15", "0.0012", "6e-10", "< 1e-300"]


def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        if isinstance(obj, list):
            f.write("".join(json.dumps(r) + "\n" for r in obj))
        else:
            json.dump(obj, f)


def row(name, spec, clean, flags, aa=None):
    r = {"name": name, "spec": spec, "n": len(flags), "clean_acc": clean, "mean_confidence": 0.7,
         "pgd_acc": flags.count("1") / len(flags), "pgd_robust_flags": flags, "cw_acc": 0.5,
         "trainable_params": 1000, "train_seconds": 60.0, "peak_mem_mib": 100.0, "eval_seconds": 10.0}
    if aa is not None:
        r.update(aa_acc=aa, aa_n=len(flags), aa_pgd_acc=r["pgd_acc"],
                 aa_components=[{"name": "apgd-ce", "robust_acc": aa + 0.1}, {"name": "square", "robust_acc": aa}])
    return r


SHIP_DISTINCT_ROW = "HyperAT+-uniform-trained-at-eps-0-06-with-diversity-penalty-0-1.json"


def made_up_folder(out):
    """Backbone, a HyperAT run with diagnostics, main rows, a screen, a shipped row, WiSE."""
    write(f"{out}/backbone/train.json", {
        "request": {"preset": "vit-tiny-fmnist", "epochs": 2, "crop_pad": 2, "lr": 1e-3, "weight_decay": 0.05},
        "params": 205068, "summary": {"seconds": 120.0}})
    write(f"{out}/backbone/metrics.jsonl", [{"kind": "eval", "acc": 0.9, "step": 1}])
    cfg = {"config": {"steps": 4290, "batch_size": 128, "lr": 3e-3}}
    for run in ("hyperat", "lora-at", "hyperat-eps0.06", "hyperat-eps0.06-distinct"):
        write(f"{out}/{run}/run.json", cfg)
        write(f"{out}/{run}/summary.json", {"seconds": 3600.0})
    entry = {"block": 0, "target": "fc1", "cosine": [0.9, 0.9, 0.9], "rel_norm": [2.0, 1.5, 1.0]}
    diag = [{"kind": "diagnostics", "step": s, "pairs": ["a/b", "a/c", "b/c"], "methods": ["a", "b", "c"],
             "delta_cosine": {"mean": m, "min": m - 0.1, "max": m + 0.05}, "embed_cosine_mean": 0.5,
             "cond_cosine_mean": 0.99, "entries": [entry]} for s, m in ((100, 0.75), (4290, 0.96))]
    hold = [{"kind": "holdout", "model": "merged:uniform", "step": s, "robust_acc": a, "clean_acc": 0.8}
            for s, a in ((214, 0.3), (3861, 0.69), (4290, 0.7))]
    # The last hold-out evaluation of each model, as (clean, robust) per model.
    def last_holdout(step, pgd_at, trades, mart, uniform):
        return [{"kind": "holdout", "model": m, "step": step, "clean_acc": 0.8, "robust_acc": r}
                for m, r in (("method:pgd-at", pgd_at), ("method:trades", trades),
                             ("method:mart", mart), ("merged:uniform", uniform))]

    write(f"{out}/hyperat/metrics.jsonl", diag + hold + last_holdout(4290, 0.7, 0.68, 0.7, 0.7)[:3])
    # The diversity-penalty runs: λ = 0.1 (the plan's main run) ends distinct with every method
    # within 3 points of its best (0.7, 0.68, 0.7); λ = 1 ends distinct with MART 10 points below.
    for run, cos, mart in (("distinct-l0.1", 0.6, 0.68), ("distinct-l1", 0.65, 0.6)):
        write(f"{out}/{run}/run.json", {"config": dict(cfg["config"], method_diversity=0.1, method_diversity_margin=0.6)})
        write(f"{out}/{run}/summary.json", {"seconds": 3600.0})
        d = [dict(x, delta_cosine={"mean": m, "min": m - 0.1, "max": m + 0.1})
             for x, m in zip(diag, (0.7, cos))]
        write(f"{out}/{run}/metrics.jsonl", d + last_holdout(4290, 0.69, 0.66, mart, 0.69))
    write(f"{out}/hyperat-eps0.06/metrics.jsonl", diag)
    write(f"{out}/hyperat-eps0.06-distinct/metrics.jsonl", [dict(diag[-1], delta_cosine={"mean": 0.6, "min": 0.5, "max": 0.7})])
    h = f"{out}/distinct-l0.1"
    # HyperAT+ keeps images 0-5, LoRA-AT images 4-9: b = 4, c = 4 → p = 1.
    write(f"{out}/rows/main/a.json", {"rows": [
        row("Backbone (no AT)", f"{out}/backbone", 0.9, "0" * 10),
        row("LoRA-AT (PGD-AT)", f"{out}/lora-at#tuned", 0.8, "0000111111", aa=0.5),
        row("HyperAT+ (uniform)", f"{h}#merged:uniform", 0.78, "1111110000", aa=0.4),
        row("HyperAT TIES", f"{h}#merged:ties", 0.7, "1100000000"),
        row("HyperAT PGD-AT", f"{h}#method:pgd-at", 0.7, "1111111000"),
        row("HyperAT+ (uniform) trained at eps 0.06", f"{out}/hyperat-eps0.06#merged:uniform",
            0.82, "1111111111", aa=0.6)]})
    # The shipping candidate with the penalty meets the targets and ends distinct: it ships.
    write(f"{out}/rows/main/{SHIP_DISTINCT_ROW}", {"rows": [
        row("HyperAT+ (uniform) trained at eps 0.06 with diversity penalty 0.1",
            f"{out}/hyperat-eps0.06-distinct#merged:uniform", 0.81, "1111111110", aa=0.58)]})
    # λ = 1's HyperAT+ on the test set keeps images 0-7 (b = 2, c = 0 against the main run's).
    write(f"{out}/rows/distinct/a.json", {"rows": [
        row("HyperAT+ (uniform) with diversity penalty 1", f"{out}/distinct-l1#merged:uniform",
            0.75, "1111111100"),
        # Its TIES keeps images 0-3 (b = 2, c = 0 against the main run's TIES).
        row("HyperAT TIES with diversity penalty 1", f"{out}/distinct-l1#merged:ties", 0.7, "1111000000"),
        row("HyperAT PGD-AT with diversity penalty 1", f"{out}/distinct-l1#method:pgd-at", 0.7, "1" * 10),
        # Without the penalty HyperAT+ keeps images 0-4 (b = 0, c = 1 against the main run's).
        row("HyperAT+ (uniform) without diversity penalty", f"{out}/hyperat#merged:uniform", 0.76, "1111100000")]})
    # Hold-out: HyperAT+ right (clean and adversarial) on images 0-7, Full-AT on 0-1: b = 6, c = 0.
    labels = [i % 10 for i in range(10)]
    # TIES: 90% on the hold-out (above HyperAT+'s 80%), 20% on the test set (below its 60%).
    for name, right in (("HyperAT+-uniform", 8), ("Full-AT-PGD-AT", 2), ("HyperAT-TIES", 9)):
        pred = [y if i < right else (y + 1) % 10 for i, y in enumerate(labels)]
        write(f"{out}/holdout/{name}.json", {"n": 10, "clean_acc": right / 10, "robust_acc": right / 10,
                                              "mean_confidence": 0.5, "clean_pred": pred, "adv_pred": pred,
                                              "labels": labels})
    # Seeds: HyperAT+ keeps images 0-5, LoRA-AT 4-9 (b = 4, c = 4) in seed 0 and 0-9 in seed 1
    # (b = 0, c = 4); seed 1's one-method run is still to run.
    write(f"{out}/rows/seeds/a.json", {"rows": [
        row("HyperAT+ seed 0", "s0", 0.7, "1111110000"), row("LoRA-AT seed 0", "l0", 0.7, "0000111111"),
        row("HyperAT one method seed 0", "o0", 0.7, "1111100000"),
        row("HyperAT+ seed 1", "s1", 0.7, "1111110000"), row("LoRA-AT seed 1", "l1", 0.7, "1" * 10),
        # At rank 16 seed 0 only LoRA-AT keeps image 9 (b = 0, c = 1); seed 1 has HyperAT+ alone.
        row("HyperAT+ rank 16 seed 0", "h16s0", 0.7, "1111111110"), row("LoRA-AT rank 16 seed 0", "l16s0", 0.7, "1" * 10),
        row("HyperAT+ rank 16 seed 1", "h16s1", 0.7, "1" * 10),
        # The trainable patch embedding keeps images 0-8 in both seeds: b = 3, c = 0 against HyperAT+.
        row("HyperAT+ trainable patch embedding seed 0", "p0", 0.8, "1111111110"),
        row("HyperAT+ trainable patch embedding seed 1", "p1", 0.8, "1111111110"),
        # LoRA-AT with one keeps every image in seed 0 (b = 4, c = 0 against LoRA-AT; b = 0,
        # c = 1 for HyperAT+ with one against it); seed 1's is still to run.
        row("LoRA-AT trainable patch embedding seed 0", "lp0", 0.7, "1" * 10),
        # HyperAT+ with the penalty keeps images 0-6 in seed 0: against LoRA-AT b = 4, c = 3;
        # against one-method HyperAT b = 2, c = 0; against HyperAT+ without it b = 1, c = 0.
        row("HyperAT+ with diversity penalty seed 0", "d0", 0.7, "1111111000")]})
    # Ablations: the reference keeps images 0-5, rank 4 images 0-9 (b = 4, c = 0).
    write(f"{out}/rows/ablations/a.json", {"rows": [
        row("HyperAT+ rank 4", "r4", 0.7, "1" * 10), row("HyperAT+ reference (seed 0)", "ref", 0.7, "1111110000"),
        row("HyperAT+ rank 16", "r16", 0.7, "1111111100"), row("LoRA-AT rank 8 (seed 0)", "l8", 0.7, "0111111000"),
        row("LoRA-AT rank 16", "l16", 0.7, "1111111110")]})
    meta = {"lambdas": "[[0.5,0.25,0.25]]", "methods": "pgd-at,trades,mart",
            "check": json.dumps({"images": 64, "uniform_loss": 1.0, "uniform_accuracy": 0.5,
                                 "learned_loss": 0.9, "learned_accuracy": 0.515625})}
    header = json.dumps({"__metadata__": meta}).encode()
    os.makedirs(f"{h}/merges")
    with open(f"{h}/merges/adaptive.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
    screen = {"abl-hyperat-s0": (0.76, 0.58), "abl-hyperat-patch": (0.78, 0.62),
              "screen-hyperat-eps0.08": (0.79, 0.58), "screen-hyperat-eps0.06": (0.813, 0.569)}
    for run, (c, r) in screen.items():
        write(f"{out}/screen/{run}.json", {"n": 1000, "clean_acc": c, "robust_acc": r, "mean_confidence": 0.6})
    for t, c, r in ((0.0, 0.9, 0.0), (0.5, 0.8, 0.33), (0.8, 0.8, 0.66), (1.0, 0.8, 0.7)):
        write(f"{out}/wise/holdout/t{t:g}.json", {"n": 1000, "clean_acc": c, "robust_acc": r, "mean_confidence": 0.7})


def run(document):
    check_mcnemar()
    with tempfile.TemporaryDirectory() as out:
        made_up_folder(out)
        doc = "\n".join(document(out, 5.0))
    expect = [
        "| LoRA-AT (PGD-AT) | +0.00 | 4 | 4 | 1 |",  # the paired table: b, c, p
        "HyperAT+ (uniform) ≥ LoRA-AT (PGD-AT): **not distinguishable** (60.00 vs 60.00",
        "| hyperat | 4290 | 0.960 (0.860–1.010) |",  # the delta-cosine trajectories
        "| distinct-l0.1 | 4290 | 0.600 (0.500–0.700) |",
        "at the end of the main run, is met (0.600;",
        "Without the penalty (`hyperat`, the same settings otherwise) the deltas end at 0.960:",
        "come from one HyperAT run, `distinct-l0.1`, trained with the margin diversity penalty (λ 0.1, margin 0.6;",
        "| trained at eps 0.06 | 81.30 | 56.90 | 0.600 | +5.3 / -1.1 | yes |",  # the screen rule
        "| trained at eps 0.08 | 79.00 | 58.00 | 0.600 | +3.0 / +0.0 | no |",
        "The rule keeps: trained at eps 0.06.",
        "Shipped-model targets: **all met**",
        "vs HyperAT+ (uniform): 4 / 0, p = 0.12",  # 4 discordant images, one way
        "| clean | 90.0 | 80.0 | 80.0 | 80.0 |",  # WiSE, transposed
        "no more robust): t = 0.5, 0.8.",
        "| Full-AT (PGD-AT) | 20.00 | 20.00 | 0.500 |",  # the hold-out table and its pairing
        "| Full-AT (PGD-AT) | 6 | 0 | 0.031 |",
        "Still to run (the script resumes them): Linear probe, Full-AT (PGD-AT)",
    ]
    expect += [
        "Of HyperAT+'s PGD-20 robust accuracy, TIES keeps 33%.",  # 20 of 60
        "have a mean pairwise cosine of 0.60 and are rewrites of the weights rather than small "
        "corrections (median 2.00×",
        "the hold-out's clean accuracy differs from the test set's by +2.0 to +20.0 points",
        "of their 1 pairs, 1 ordered the other way under PGD-20: HyperAT+ (uniform) / HyperAT TIES",
        "by t = 0.5, where PGD-20 robust accuracy is 33.0% against HyperAT+'s 70.0%",
        "AutoAttack's components (cumulative): apgd-ce 70.00, square 60.00.",
        "The adaptive merge learned the weights pgd-at 0.50, trades 0.25, mart 0.25 on the hold-out; "
        "on 64 images",
        "from 1.000 (uniform) to 0.900 and moved robust accuracy from 50.00% to 51.56%.",
        "Of the main table's rows (trained at eps 0.1), the targets are met by: none.",
        "| 0 | 70.00 / 60.00 | 70.00 / 60.00 | 70.00 / 50.00 | +0.00 (4, 4, p = 1) | +10.00 (1, 0, p = 1) |",
        "| 1 | 70.00 / 60.00 | 70.00 / 100.00 | to run | -40.00 (0, 4, p = 0.12) | — |",
        "HyperAT+ − LoRA-AT in PGD-20 robust accuracy: mean -20.00 points, standard deviation 28.28 over 2 seeds",
        "| 0 | 70.00 / 90.00 | 70.00 / 100.00 | -10.00 (0, 1, p = 1) |",  # the rank-16 table
        "| 1 | 70.00 / 100.00 | to run | — |",
        "HyperAT+ − LoRA-AT, both at rank 16, one seed so far (-10.00 points); no spread yet.",
        # seed 0 has both ranks of both: HyperAT+ 60 → 90, LoRA-AT 60 → 100.
        "rises by +30.00 points for HyperAT+ and +40.00 for LoRA-AT (means over 1 seed); "
        "LoRA-AT gains more in 1 of 1 seeds.",
        "| 0 | 80.00 / 90.00 | 70.00 / 100.00 | +30.00 (3, 0, p = 0.25) | +40.00 (4, 0, p = 0.12) "
        "| -10.00 (0, 1, p = 1) |",  # the patch table
        "| 1 | 80.00 / 90.00 | to run | +30.00 (3, 0, p = 0.25) | — | — |",
        "LoRA-AT with a trainable patch embedding − LoRA-AT (frozen) one seed so far (+40.00 points)",
        "HyperAT+ with a trainable patch embedding − HyperAT+ (frozen) in PGD-20 robust accuracy: mean "
        "+30.00 points, standard deviation 0.00 over 2 seeds (range +30.00 to +30.00); the trainable "
        "patch embedding significantly below in 0 of 2 seeds and above in 0 (paired, 5%).",
        "The next asks whether the gap to LoRA-AT is the rank's",
        "runs are 5× longer;",
        "| HyperAT+ reference (seed 0) | 70.00 | 60.00 | 50.00 | 1,000 | 1 min | — |",  # the reference first
        "| HyperAT+ rank 4 | 70.00 | 100.00 | 50.00 | 1,000 | 1 min | +40.00 (4, 0, p = 0.12) |",
        "method warm-up, HyperAT+ trainable patch embedding.",  # named, not filled in
        "| LoRA-AT rank 16 | 70.00 | 90.00 | 50.00 | 1,000 | 1 min | — |",  # paired below instead
        # rank 8: 1111110000 vs 0111111000 → b = 1, c = 1; rank 16: 1111111100 vs 1111111110 → b = 0, c = 1
        "**At equal rank** (seed 0 on these images; three seeds on every test image in the section "
        "above), HyperAT+ − LoRA-AT in PGD-20 robust accuracy (paired; b = images only "
        "HyperAT+ keeps): rank 8: +0.00 (b = 1, c = 1, p = 1); rank 16: -10.00 (b = 0, c = 1, p = 1).",
        "From rank 8 to 16, HyperAT+ gains +20.00 points and LoRA-AT +30.00.",
        # The diversity-penalty runs, judged on the hold-out, and one on the test set.
        "| none | 4290 of 4290 | 0.750 | 0.960 (0.860–1.010) | 80.00 / 70.00 | "
        "80.00 / 68.00 | 80.00 / 70.00 | 80.00 / 70.00 |",
        "| λ = 0.1, margin 0.6 (the main run) | 4290 of 4290 | 0.700 | 0.600 (0.500–0.700) |",
        "none: misses the target: cosine 0.960; λ = 1, margin 0.6: distinct (cosine 0.650) but more "
        "than 3 points below the best hold-out PGD-10 for mart; λ = 0.1, margin 0.6 (the main run): "
        "**meets the target** (cosine 0.600, every method within 3 points of its best).",
        "the one whose HyperAT+ is the most robust here — λ = 0.1, margin 0.6 (69.00%), run "
        "`distinct-l0.1`, the plan's main run.",
        "| HyperAT+ (uniform) without diversity penalty | 76.00 | 0.700 | 50.00 | 50.00 | -10.00 (0, 1, p = 1) |",
        "cos² − 0.36)",
        "| HyperAT+ (uniform) with diversity penalty 1 | 75.00 | 0.700 | 80.00 | 50.00 | +20.00 (2, 0, p = 0.5) |",
        "| HyperAT TIES with diversity penalty 1 | 70.00 | 0.700 | 40.00 | 50.00 | +20.00 (2, 0, p = 0.5) |",
        "the sparsifying merges keep: the main run (λ = 0.1): HyperAT TIES keeps 33%; λ = 1: HyperAT TIES keeps 50%.",
        # HyperAT+ against its PGD-AT LoRA: the main run's keeps images 0-6 (b = 0, c = 1),
        # λ = 1's every image (b = 0, c = 2).
        "paired within the run (b = images only HyperAT+ keeps): the main run (λ = 0.1): PGD-AT -10.00 "
        "(0, 1, p = 1). λ = 1: PGD-AT -20.00 (0, 2, p = 0.5).",
        # The shipping rule: the candidate with the penalty qualifies (81% clean, 58% AutoAttack,
        # cosine 0.6), so it ships; its folder size is not printed (no such folder here).
        "else `hyperat-eps0.06`. Shipped: `hyperat-eps0.06-distinct`.",
        "(`hyperat-eps0.06-distinct`: HyperAT's main settings with the main run's diversity penalty, seed 0,",
        # The seeds' table of HyperAT+ with the penalty.
        "| 0 | 70.00 / 70.00 | +10.00 (4, 3, p = 1) | +20.00 (2, 0, p = 0.5) | +10.00 (1, 0, p = 1) |",
        "| 1 | to run | — | — | — |",
    ]
    missing = [e for e in expect if e not in doc]
    assert not missing, "results doc self-test: not in the document:\n" + "\n".join(missing) + "\n---\n" + doc
    with tempfile.TemporaryDirectory() as out:  # a screen candidate still to run: no verdict yet
        made_up_folder(out)
        os.remove(f"{out}/screen/screen-hyperat-eps0.08.json")
        doc = "\n".join(document(out, 5.0))
    assert "The rule keeps" not in doc, doc
    assert "Still to run: trained at eps 0.08; the rule is applied when every candidate has its " \
        "hold-out evaluation (so far it would keep: trained at eps 0.06)." in doc, doc
    for aa, shipped in ((None, "`hyperat-eps0.06` (still to run: `hyperat-eps0.06-distinct`;"),
                        (0.5, "`hyperat-eps0.06`.")):  # not measured yet; below the AutoAttack target
        with tempfile.TemporaryDirectory() as out:
            made_up_folder(out)
            path = f"{out}/rows/main/{SHIP_DISTINCT_ROW}"
            if aa is None:
                os.remove(path)
            else:
                j = json.load(open(path))
                j["rows"][0]["aa_acc"] = aa
                write(path, j)
            doc = "\n".join(document(out, 5.0))
        assert f"Shipped: {shipped}" in doc, (shipped, doc)
    print("results_doc: self-test passed")
