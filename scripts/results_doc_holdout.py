"""The results document's hold-out section: every main row on the 1000 hold-out images,
the split settings were chosen on (the test-set table never chose anything)."""
import json
import os

from results_doc_common import mcnemar, p_text, pct


def robust_flags(e):
    """'1' where an eval JSON's clean and adversarial predictions are both right."""
    return "".join("1" if c == y and a == y else "0"
                   for c, a, y in zip(e["clean_pred"], e["adv_pred"], e["labels"]))


def holdout(lines, out, plan, anchor):
    found = {}
    for name, spec, _ in plan.main_rows():
        path = f"{out}/holdout/{plan.slug(name)}.json"
        if os.path.exists(path):
            found[name] = json.load(open(path))
    if not found:
        return
    p = lines.append
    n = next(iter(found.values()))["n"]
    p("## The hold-out: where settings were chosen\n")
    p(f"Every main row on the first {n:,} of the 5000 training images every run holds out "
      "(clean and PGD-20 of step 0.01 at eps 0.1, random start; `hold-out of …` jobs of the "
      "plan). Learning rates, HyperAT's settings and the shipping screen were chosen on this "
      f"split; a robust accuracy near 70% on {n:,} images has a standard error of about 1.4 "
      "points.\n")
    p("| model | clean | PGD-20 robust | mean confidence |")
    p("|---|---|---|---|")
    for name, e in found.items():
        p(f"| {name} | {pct(e['clean_acc'])} | {pct(e['robust_acc'])} | {e['mean_confidence']:.3f} |")
    p("")
    a = found.get(anchor)
    others = [(m, e) for m, e in found.items() if m != anchor and e["robust_acc"] > 0]
    if a and others:
        p(f"Paired with {anchor} on the same images (exact McNemar; b = images only {anchor} "
          "keeps robustly right, c = only the other):\n")
        p("| other row | b | c | p |")
        p("|---|---|---|---|")
        for m, e in others:
            b, c, pv = mcnemar(robust_flags(a), robust_flags(e))
            p(f"| {m} | {b} | {c} | {p_text(pv)} |")
        p("")
