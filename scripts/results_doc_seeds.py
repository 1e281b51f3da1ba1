"""The results document's sections on the short-budget comparisons: HyperAT+ against
LoRA-AT and one-method HyperAT over three seeds, and the one-seed ablations, each paired
image by image (McNemar's exact test on the PGD-20 robust flags)."""
import statistics

from results_doc_common import human, mcnemar, p_text, paired_cell, pct


# The three-seed comparisons: (key, first row's prefix, second row's prefix, how the text
# names the difference, whose significance it counts). The rank-16 pair asks whether
# HyperAT+'s gap to LoRA-AT is the rank's; the patch pairs whether the ablations' largest
# effect besides rank holds over the seeds, whether LoRA-AT gains as much from it, and
# where HyperAT+ stands against LoRA-AT when both have it.
PATCH = ("HyperAT+ trainable patch embedding", "LoRA-AT trainable patch embedding")
R16 = ("HyperAT+ rank 16", "LoRA-AT rank 16")
PENALTY = "HyperAT+ with diversity penalty"  # trained as the main run is (the others have none)
COMPARISONS = [("lora", "HyperAT+", "LoRA-AT", "HyperAT+ − LoRA-AT", "HyperAT+"),
               ("one", "HyperAT+", "HyperAT one method", "HyperAT+ − one-method HyperAT", "HyperAT+"),
               ("r16", *R16, "HyperAT+ − LoRA-AT, both at rank 16,", "HyperAT+"),
               ("patch", PATCH[0], "HyperAT+", "HyperAT+ with a trainable patch embedding − HyperAT+ (frozen)",
                "the trainable patch embedding"),
               ("lora-patch", PATCH[1], "LoRA-AT", "LoRA-AT with a trainable patch embedding − LoRA-AT (frozen)",
                "the trainable patch embedding"),
               ("both-patch", *PATCH, "HyperAT+ − LoRA-AT, both with a trainable patch embedding,", "HyperAT+"),
               ("penalty-lora", PENALTY, "LoRA-AT", "HyperAT+ with the diversity penalty − LoRA-AT", "HyperAT+"),
               ("penalty-one", PENALTY, "HyperAT one method",
                "HyperAT+ with the diversity penalty − one-method HyperAT", "HyperAT+"),
               ("penalty", PENALTY, "HyperAT+", "HyperAT+ with the diversity penalty − HyperAT+ without it",
                "the penalty")]


def seeds(lines, rows, longer):
    p = lines.append
    if not rows:
        return
    p("## HyperAT+ against LoRA-AT and one-method HyperAT, three seeds\n")
    n = next(iter(rows.values()))["n"]
    rank16 = any(k.startswith(R16) for k in rows)
    patch = any(k.startswith(PATCH) for k in rows)
    penalty = any(k.startswith(PENALTY) for k in rows)
    p(f"A shorter common budget for every row (see the script), evaluated on all {n:,} test images; "
      "each seed's models are compared image by image with McNemar's exact test on their PGD-20 "
      "robust flags (b: images only the first keeps, c: only the second). A cell still to run "
      "says so." + (" The first table is at the main runs' rank 8." if rank16 or patch else "")
      + (" The next asks whether the gap to LoRA-AT is the rank's, with both at rank 16 (alpha 32)."
         if rank16 else "")
      + (" Another asks whether the ablations' largest effect besides rank, a trainable patch "
         "embedding (ours, off by default), holds over the seeds, whether LoRA-AT gains as much from "
         "one, and where HyperAT+ stands against LoRA-AT when both have it; each model with one is "
         "paired with its frozen twin of the first table." if patch else "")
      + (" The HyperAT+ of these tables has no diversity penalty; the last table trains it as the "
         "main run is trained, with the penalty, and pairs it with the first table's models." if penalty else "")
      + "\n")
    found = sorted({int(k.rsplit(" ", 1)[1]) for k in rows})
    get = lambda prefix, s: rows.get(f"{prefix} seed {s}")  # noqa: E731
    diffs = {key: [] for key, *_ in COMPARISONS}

    def table(header, shown, compared):
        p(header)
        p("|" + "---|" * header.count(" | ") + "---|")
        for s in found:
            cells = [f"{pct(r['clean_acc'])} / {pct(r['pgd_acc'])}" if r else "to run"
                     for r in (get(prefix, s) for prefix in shown)]
            for key, first, second, *_ in compared:
                a, b = get(first, s), get(second, s)
                if not (a and b):
                    cells.append("—")
                    continue
                d, pv, cell = paired_cell(a, b)
                diffs[key].append((d, pv))
                cells.append(cell)
            p(f"| {s} | " + " | ".join(cells) + " |")
        p("")

    table("| seed | HyperAT+ clean / PGD-20 | LoRA-AT clean / PGD-20 | one-method HyperAT clean / PGD-20 "
          "| HyperAT+ − LoRA-AT (b, c, p) | HyperAT+ − one-method (b, c, p) |",
          ("HyperAT+", "LoRA-AT", "HyperAT one method"), COMPARISONS[:2])
    if rank16:
        table("| seed | HyperAT+ rank 16 clean / PGD-20 | LoRA-AT rank 16 clean / PGD-20 "
              "| HyperAT+ − LoRA-AT at rank 16 (b, c, p) |",
              R16, COMPARISONS[2:3])
    if patch:
        table("| seed | HyperAT+ with a trainable patch embedding clean / PGD-20 "
              "| LoRA-AT with one clean / PGD-20 | HyperAT+ trainable − frozen (b, c, p) "
              "| LoRA-AT trainable − frozen (b, c, p) | HyperAT+ − LoRA-AT, both trainable (b, c, p) |",
              PATCH, COMPARISONS[3:6])
    if penalty:
        table("| seed | HyperAT+ with the diversity penalty clean / PGD-20 | − LoRA-AT (b, c, p) "
              "| − one-method HyperAT (b, c, p) | − HyperAT+ without it (b, c, p) |",
              (PENALTY,), COMPARISONS[6:])
    for key, _, _, label, subject in COMPARISONS:
        d = [x for x, _ in diffs[key]]
        below = sum(1 for x, pv in diffs[key] if x < 0 and pv < 0.05)
        above = sum(1 for x, pv in diffs[key] if x > 0 and pv < 0.05)
        if len(d) >= 2:
            p(f"{label} in PGD-20 robust accuracy: mean {100 * statistics.mean(d):+.2f} "
              f"points, standard deviation {100 * statistics.stdev(d):.2f} over {len(d)} seeds "
              f"(range {100 * min(d):+.2f} to {100 * max(d):+.2f}); {subject} significantly below in "
              f"{below} of {len(d)} seeds and above in {above} (paired, 5%).\n")
        elif d:
            p(f"{label} one seed so far ({100 * d[0]:+.2f} points); no spread yet.\n")
    rank_gains(p, get, found)
    p(f"What this does not show: the budget is short (the main table's runs are {longer:g}× "
      "longer; its one-seed ordering is above), and three seeds give a spread, not a distribution.\n")


def rank_gains(p, get, found):
    """What each of HyperAT+ and LoRA-AT gains from rank 8 to rank 16, seed by seed."""
    prefixes = ("HyperAT+", R16[0], "LoRA-AT", R16[1])
    complete = [[get(x, s)["pgd_acc"] for x in prefixes]
                for s in found if all(get(x, s) for x in prefixes)]
    if not complete:
        return
    h = [h16 - h8 for h8, h16, _, _ in complete]
    l = [l16 - l8 for _, _, l8, l16 in complete]
    more = sum(1 for a, b in zip(h, l) if b > a)
    p(f"From rank 8 to rank 16, PGD-20 robust accuracy rises by {100 * statistics.mean(h):+.2f} "
      f"points for HyperAT+ and {100 * statistics.mean(l):+.2f} for LoRA-AT (means over {len(h)} "
      f"seed{'s' if len(h) != 1 else ''}); LoRA-AT gains more in {more} of {len(h)} seeds. The gains "
      "come from different runs, so no paired test compares them.\n")


def ablations(lines, rows, order):
    """Each variant beside the reference (`order[0]`, HyperAT+ of seed 0), paired on the same
    images; the variants still to run are named."""
    p = lines.append
    if not rows:
        return
    ref = rows.get(order[0])
    n = next(iter(rows.values()))["n"]
    p(f"## Ablations (one seed, first {n:,} test images)\n")
    p("Each HyperAT+ variant changes one setting of the reference (the first row) and is paired "
      "with it on the same images (exact McNemar on the PGD-20 robust flags; b = images only the "
      "variant keeps, c = only the reference); the LoRA-AT rows are paired with HyperAT+ at "
      "their own rank, below.\n")
    p("| variant | clean | PGD-20 | CW-20 | trainable params | train time | PGD-20 vs reference (b, c, p) |")
    p("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        if ref is None or r is ref or name in EQUAL_RANK_LORA:
            vs = "—"
        else:
            vs = paired_cell(r, ref)[2]
        params = f"{r['trainable_params']:,}" if r.get("trainable_params") else "—"
        p(f"| {name} | {pct(r['clean_acc'])} | {pct(r['pgd_acc'])} | {pct(r['cw_acc'])} "
          f"| {params} | {human(r['train_seconds']) if r.get('train_seconds') else '—'} | {vs} |")
    equal_rank(lines, rows, order[0])
    todo = [name for name in order if name not in rows]
    if todo:
        p(f"\nStill to run (the script resumes them): {', '.join(todo)}.")
    p("\nOne seed each: a difference the paired test does not separate is no difference here, "
      "and one it does separate may still move with the seed (see the three-seed table).\n")


# (rank, HyperAT+ row, LoRA-AT row) of the equal-rank comparison; rank 8 is the reference's.
EQUAL_RANK = [(8, None, "LoRA-AT rank 8 (seed 0)"), (16, "HyperAT+ rank 16", "LoRA-AT rank 16")]
# Those LoRA-AT rows: paired at their own rank, not with the reference.
EQUAL_RANK_LORA = {lora for _, _, lora in EQUAL_RANK}


def equal_rank(lines, rows, reference):
    """HyperAT+ against LoRA-AT at the same LoRA rank (does the rank close the gap?)."""
    found = []
    for rank, hyper, lora in EQUAL_RANK:
        h, l = rows.get(hyper or reference), rows.get(lora)
        if h and l:
            b, c, pv = mcnemar(h["pgd_robust_flags"], l["pgd_robust_flags"])
            found.append((rank, h, l, f"rank {rank}: {100 * (h['pgd_acc'] - l['pgd_acc']):+.2f} "
                                       f"(b = {b}, c = {c}, p = {p_text(pv)})"))
    if not found:
        return
    lines.append("\n**At equal rank** (seed 0 on these images; three seeds on every test image in "
                 "the section above), HyperAT+ − LoRA-AT in PGD-20 robust accuracy (paired; b = images "
                 "only HyperAT+ keeps): " + "; ".join(t for *_, t in found) + ".")
    if len(found) == 2:
        (r0, h0, l0, _), (r1, h1, l1, _) = found
        lines.append(f"From rank {r0} to {r1}, HyperAT+ gains {100 * (h1['pgd_acc'] - h0['pgd_acc']):+.2f} "
                     f"points and LoRA-AT {100 * (l1['pgd_acc'] - l0['pgd_acc']):+.2f}.")
