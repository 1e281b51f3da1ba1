"""Formatting and statistics shared by the results document's sections."""
import json
import math
import os
import struct


def pct(v):
    return "—" if v is None else f"{100 * v:.2f}"


def human(s):
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min"


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


def paired_cell(a, b):
    """Row `a` against row `b` on their PGD-20 robust flags: (difference, p, the table cell
    `+d.dd (b, c, p = …)` with b = images only `a` keeps, c = only `b`)."""
    n10, n01, pv = mcnemar(a["pgd_robust_flags"], b["pgd_robust_flags"])
    d = a["pgd_acc"] - b["pgd_acc"]
    return d, pv, f"{100 * d:+.2f} ({n10}, {n01}, p = {p_text(pv)})"


def p_text(p):
    """A p-value as people write it: 0.15, 0.0012, 6e-10, < 1e-300."""
    if p == 0:
        return "< 1e-300"
    if p >= 0.001:
        return f"{p:.2g}"
    mantissa, exponent = f"{p:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def records(run):
    """A run's metrics.jsonl records (none when the run has not started)."""
    path = f"{run}/metrics.jsonl"
    return [json.loads(l) for l in open(path)] if os.path.exists(path) else []


def diagnostics(run):
    """A HyperAT run's delta diagnostics, one per checkpoint (see `hyperat report --deltas`)."""
    return [r for r in records(run) if r.get("kind") == "diagnostics"]


def safetensors_metadata(path):
    """The `__metadata__` of a safetensors file's header (none when the file is missing)."""
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)).get("__metadata__", {})
