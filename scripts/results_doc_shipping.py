"""The results document's sections on the shipped model: the shipping screen (hold-out
only), the shipped run's row beside the main table's, and WiSE-FT's interpolation from the
backbone toward HyperAT+ (hold-out only)."""
import glob
import json
import os

from results_doc_common import diagnostics, pct, mcnemar, p_text


def screen_candidates(plan):
    """(run, label) of the screen's reference, then each candidate."""
    return ([(plan.SCREEN_REFERENCE, "reference (trained at eps 0.1)"),
             (plan.SCREEN_PATCH, "trainable patch embedding")]
            + [(name, f"trained at eps {eps}") for name, eps in plan.SCREEN])


def screen_todo(out, plan):
    """The labels of the screen's runs without a hold-out evaluation yet."""
    return [label for run, label in screen_candidates(plan) if not os.path.exists(f"{out}/screen/{run}.json")]


def screen_rows(out, plan):
    """(label, hold-out evaluation) of the screen's reference and candidates that exist."""
    found = []
    for run, label in screen_candidates(plan):
        path = f"{out}/screen/{run}.json"
        if os.path.exists(path):
            found.append((label, json.load(open(path))))
    return found


def shipped(lines, out, plan, ship_rows, main_rows):
    p = lines.append
    screen = screen_rows(out, plan)
    if not screen and not ship_rows:
        return
    p("## The shipped model\n")
    p("The main table's HyperAT+ is trained and evaluated at eps 0.1. For the shipped default "
      "model the targets are clean ≥ 80% on the 10,000 test images, AutoAttack (eps 0.1) ≥ 55% "
      "on the first 1000 and mean top-1 confidence ≥ 0.6; the setting was chosen by a screen "
      "on the hold-out, with its decision rule committed before the runs.\n")
    if screen:
        ref = screen[0][1]
        gain, loss = plan.SCREEN_MIN_CLEAN_GAIN, plan.SCREEN_MAX_ROBUST_LOSS
        p(f"**The screen** (HyperAT at {plan.ABL_EPOCHS:g} epochs, seed 0; HyperAT+ on the first "
          f"{ref['n']} hold-out images, PGD-20 at eps 0.1; `SCREEN` in "
          f"`scripts/results_fashion_mnist.py`). Rule: keep a setting whose clean gain over the "
          f"reference is ≥ {gain:g} points and whose robust loss is ≤ {loss:g}, and train the most "
          "robust such setting at the main budget.\n")
        p("| setting | clean | PGD-20 robust | mean confidence | clean gain / robust change | kept |")
        p("|---|---|---|---|---|---|")
        kept = []
        for label, r in screen:
            if r is ref:
                p(f"| {label} | {pct(r['clean_acc'])} | {pct(r['robust_acc'])} | {r['mean_confidence']:.3f} | — | — |")
                continue
            dc = 100 * (r["clean_acc"] - ref["clean_acc"])
            dr = 100 * (r["robust_acc"] - ref["robust_acc"])
            ok = dc >= gain and -dr <= loss
            if ok:
                kept.append((r["robust_acc"], label))
            p(f"| {label} | {pct(r['clean_acc'])} | {pct(r['robust_acc'])} | {r['mean_confidence']:.3f} "
              f"| {dc:+.1f} / {dr:+.1f} | {'yes' if ok else 'no'} |")
        p("")
        todo = screen_todo(out, plan)
        choice = max(kept)[1] if kept else None
        if todo:
            p(f"Still to run: {', '.join(todo)}; the rule is applied when every candidate has "
              "its hold-out evaluation" + (f" (so far it would keep: {choice})" if choice else "") + ".")
        else:
            p(f"The rule keeps: {choice or 'nothing (the reference stays)'}.")
        p(f"One seed on {ref['n']} images (a standard error of about 1.5 points on each figure): "
          "the rule's margins, not these differences, carry the choice.\n")
    shipped_run = plan.ship_run()
    for name, r in ship_rows.items():
        ship_row(lines, plan, name, r, main_rows, r["spec"].split("#")[0] == f"{out}/{shipped_run}")
    if ship_rows:
        measured = {r["spec"].split("#")[0] for r in ship_rows.values()}
        todo = [run for run, _ in plan.SHIP_CANDIDATES if f"{out}/{run}" not in measured]
        p(f"**Which candidate ships.** The rule, fixed before the run with the diversity penalty "
          f"(`{plan.SHIP_DISTINCT_RUN}`) started: ship it when its HyperAT+ meets the targets and its "
          "methods' mean delta cosine ends below 0.7 (so the Compare page shows distinct defenses), "
          f"else `{plan.SHIP_RUN}`. Shipped: `{shipped_run}`"
          + (f" (still to run: {', '.join(f'`{t}`' for t in todo)}; the rule is applied once it is measured)"
             if todo else "") + ".\n")
    meeting = [n for n, r in main_rows.items() if plan.meets_ship_targets(r)]
    if main_rows:
        p("Of the main table's rows (trained at eps 0.1), the targets are met by: "
          + (", ".join(meeting) if meeting else "none") + ".\n")


def ship_row(lines, plan, name, r, main_rows, shipped):
    p = lines.append
    others = [(n, main_rows[n]) for n in ("HyperAT+ (uniform)", "Full-AT (PGD-AT)") if n in main_rows]
    run = r["spec"].split("#")[0]
    penalty = ("with the main run's diversity penalty" if os.path.basename(run) == plan.SHIP_DISTINCT_RUN
               else "without the diversity penalty")
    p(f"**{name}** (`{os.path.basename(run)}`: HyperAT's main settings {penalty}, seed 0, "
      f"{plan.EPOCHS:g} epochs; evaluated at eps **0.1** like every row):\n")
    p("| model | clean | mean confidence | PGD-20 robust | CW-20 robust | AutoAttack (first 1000) "
      "| PGD-20 on those 1000 |")
    p("|---|---|---|---|---|---|---|")
    for n, x in [(name, r)] + [(f"{n}, trained at eps 0.1 (main table)", x) for n, x in others]:
        p(f"| {n} | {pct(x['clean_acc'])} | {x['mean_confidence']:.3f} | {pct(x['pgd_acc'])} "
          f"| {pct(x['cw_acc'])} | {pct(x.get('aa_acc'))} | {pct(x.get('aa_pgd_acc'))} |")
    p("")
    p(f"Shipped-model targets: {'**all met**' if plan.meets_ship_targets(r) else '**not all met**'} (clean "
      f"{pct(r['clean_acc'])}%, AutoAttack {pct(r.get('aa_acc'))}%, confidence "
      f"{r['mean_confidence']:.3f}). Paired on the {r['n']:,} PGD-20 outcomes (exact McNemar; b = "
      "images only this run keeps, c = only the other): "
      + "; ".join("vs {}: {} / {}, p = {}".format(n, *fmt(mcnemar(r["pgd_robust_flags"], x["pgd_robust_flags"])))
                  for n, x in others) + ".")
    if r.get("aa_components"):
        p("AutoAttack's components (cumulative): " + ", ".join(
            f"{c['name']} {pct(c['robust_acc'])}" for c in r["aa_components"]) + ".")
    size = folder_mib(SHIPPED)
    if size and shipped:
        p(f"The shipped folder (`{os.path.relpath(SHIPPED, REPO)}`: the backbone, the run and its "
          f"merge as a timm export) is {size:.1f} MiB.")
    diag = diagnostics(run)
    if diag:
        d = diag[-1]["delta_cosine"]
        p(f"Its methods' delta cosine at the end: {d['mean']:.3f} ({d['min']:.3f}–{d['max']:.3f}).")
    if not shipped:
        p("")
        return
    p("What this does not show: one seed each, and the clean / robust trade is measured for this "
      "one pair of runs only. HyperAT is shipped because the product demonstrates HyperAT (each "
      "method's LoRA and their merges), not because it is the best defense in the table.\n")


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = f"{REPO}/public/models/fmnist-vit-tiny"


def folder_mib(path):
    """The size of the files under `path` in MiB (None when it is missing)."""
    if not os.path.isdir(path):
        return None
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 2 ** 20


def fmt(test):
    b, c, pv = test
    return b, c, p_text(pv)


def wise(lines, out):
    """WiSE-FT (Wortsman et al., 2022) from the backbone toward the main HyperAT+."""
    found = []
    for path in glob.glob(f"{out}/wise/holdout/t*.json"):
        t = float(os.path.basename(path)[1:-5])
        found.append((t, json.load(open(path))))
    if not found:
        return
    found.sort(key=lambda x: x[0])
    p = lines.append
    p("## Trading robustness back for clean accuracy by interpolation\n")
    p("Weight-space ensembles `backbone + t·(HyperAT+ − backbone)` (`hyperat interpolate`; "
      "`WISE_T` in `scripts/results_fashion_mnist.py`), the main run's HyperAT+, on the first "
      f"{found[0][1]['n']} hold-out images (clean and PGD-20 at eps 0.1; the test set is not used):\n")
    p("| t | " + " | ".join(f"{t:g}" for t, _ in found) + " |")
    p("|---|" + "---|" * len(found))
    p("| clean | " + " | ".join(f"{100 * j['clean_acc']:.1f}" for _, j in found) + " |")
    p("| PGD-20 robust | " + " | ".join(f"{100 * j['robust_acc']:.1f}" for _, j in found) + " |")
    p("| mean confidence | " + " | ".join(f"{j['mean_confidence']:.3f}" for _, j in found) + " |")
    p("")
    end = found[-1][1]
    dominated = [t for t, j in found[:-1] if j["clean_acc"] <= end["clean_acc"] + 0.01
                 and j["robust_acc"] <= end["robust_acc"]]
    better = [t for t, j in found[:-1] if t not in dominated and j["robust_acc"] > 0.5 * end["robust_acc"]]
    level = next(((t, j) for t, j in found if j["clean_acc"] <= end["clean_acc"] + 0.01), None)
    if level and level[0] < found[-1][0]:
        t, j = level
        p(f"Clean accuracy is down to HyperAT+'s own level (within a point) by t = {t:g}, where "
          f"PGD-20 robust accuracy is {100 * j['robust_acc']:.1f}% against HyperAT+'s "
          f"{100 * end['robust_acc']:.1f}%: the clean accuracy goes before the robustness comes.")
    p(f"Dominated by HyperAT+ itself (at most a point more accurate, no more robust): t = "
      f"{', '.join(f'{t:g}' for t in dominated) or 'none'}. More accurate while keeping at least half "
      f"of its robustness: t = {', '.join(f'{t:g}' for t in better) or 'none'}. Nothing here is shipped "
      "unless it is in the second list.\n")
