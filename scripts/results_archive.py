#!/usr/bin/env python3
"""Keeps what the results plan has finished in git, so a new machine picks up from it.

    results_archive.py save    OUT ARCHIVE   # OUT's finished outputs into ARCHIVE
    results_archive.py restore ARCHIVE OUT   # the archive back into OUT (missing files only)

Why: the plan's folder (OUT, outside git) holds days of CPU; a session that starts on a
fresh machine starts without it (2026-12-06: every run and evaluation but the shipped ones
was gone). The archive (`results/fashion-mnist/` in the repository) holds, for every job the
plan counts done, the files that make it count done — each evaluation's JSON (the
per-image outcomes the paired tests read), each run's `run.json`, `summary.json` and
`metrics.jsonl` (gzipped) — and the trained tensors without optimiser moments of the runs
that are still needed: the main table's runs and the shipped run always, any other run
while a job that reads it is not done. Its `mtimes.json` keeps every file's modification
time, which `restore` puts back: the plan's "outputs newer than inputs" rule then sees
the same state as on the machine that made them. A run still training is kept whole —
its checkpoint with the optimiser moments, its metrics and its copy of the backbone — so
a new machine resumes it where the last save left it (a resumed run drops the metrics past
its checkpoint's step); once it finishes, its tensors follow the rule above.
"""
import fcntl
import gzip
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strip_optimizer import strip  # noqa: E402

MTIMES = "mtimes.json"


def _copy(src, dst, kind="copy"):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = dst + ".tmp"
    if kind == "gzip":
        with open(src, "rb") as f, open(tmp, "wb") as raw:
            # mtime=0: the same input gives the same bytes, so git sees no change
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as z:
                shutil.copyfileobj(f, z)
    elif kind == "gunzip":
        with gzip.open(src, "rb") as z, open(tmp, "wb") as f:
            shutil.copyfileobj(z, f)
    elif kind == "strip":
        strip(src, tmp)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def kept_files(out, jobs, keep_weights):
    """(relative path, how to copy) of everything the archive holds for OUT."""
    files, needed = set(), set(keep_weights)
    for j in jobs:
        if j.done():
            files.update(os.path.relpath(o, out) for o in j.outputs)
        else:
            needed.update(os.path.relpath(i, out).split(os.sep)[0] for i in j.inputs)
    training = set()
    for name in sorted(os.listdir(out)):
        d = os.path.join(out, name)
        finished = finished_run(d)
        # A run still training has its checkpoint but no summary (a tuning run) or
        # train.json (the backbone) yet: kept whole, moments included, to resume.
        if not finished:
            if not (os.path.exists(f"{d}/run.json") and os.path.exists(f"{d}/checkpoint.safetensors")):
                continue
            training.add(f"{name}/checkpoint.safetensors")
        for f in ("run.json", "summary.json", "train.json", "config.json", "metrics.jsonl"):
            if os.path.exists(f"{d}/{f}"):
                files.add(f"{name}/{f}")
        if name in needed or not finished:
            for f in ("model.safetensors", "checkpoint.safetensors", "backbone/config.json",
                      "backbone/model.safetensors"):
                if os.path.exists(f"{d}/{f}"):
                    files.add(f"{name}/{f}")
    return [(f, "copy" if f in training else "strip" if f.endswith("checkpoint.safetensors") else
             "gzip" if f.endswith(".jsonl") else "copy") for f in sorted(files)]


def finished_run(d):
    """A run folder that has finished: its summary (a tuning run) or train.json (the backbone)."""
    return os.path.exists(f"{d}/summary.json") or os.path.exists(f"{d}/train.json")


def save(out, archive, jobs, keep_weights):
    # Two plans may run side by side (one per core): one saves at a time.
    with open(os.path.join(out, "archive.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _save(out, archive, jobs, keep_weights)


def _save(out, archive, jobs, keep_weights):
    mtimes_path = os.path.join(archive, MTIMES)
    mtimes = json.load(open(mtimes_path)) if os.path.exists(mtimes_path) else {}
    kept = kept_files(out, jobs, keep_weights)
    # Tensors kept while a run trained or a job read them go once neither holds: the run
    # has finished here and the file is no longer kept.
    names = {rel for rel, _ in kept}
    for rel in [r for r in mtimes if r not in names]:
        if finished_run(os.path.join(out, rel.split("/")[0])) and rel.endswith(".safetensors"):
            if os.path.exists(os.path.join(archive, rel)):
                os.remove(os.path.join(archive, rel))
            del mtimes[rel]
    for rel, kind in kept:
        src, dst = os.path.join(out, rel), os.path.join(archive, rel + (".gz" if kind == "gzip" else ""))
        mtime = os.path.getmtime(src)
        if mtimes.get(rel) == mtime and os.path.exists(dst):
            continue  # unchanged since the last save
        _copy(src, dst, kind)
        mtimes[rel] = mtime
    tmp = mtimes_path + ".tmp"
    os.makedirs(archive, exist_ok=True)
    with open(tmp, "w") as f:
        json.dump(mtimes, f, indent=0, sort_keys=True)
        f.write("\n")
    os.replace(tmp, mtimes_path)


def restore(archive, out):
    """Copies back what OUT lacks, with its recorded modification time; returns the count."""
    mtimes_path = os.path.join(archive, MTIMES)
    if not os.path.exists(mtimes_path):
        return 0
    count = 0
    for rel, mtime in json.load(open(mtimes_path)).items():
        dst = os.path.join(out, rel)
        gz = os.path.join(archive, rel + ".gz")
        src = gz if os.path.exists(gz) else os.path.join(archive, rel)
        if os.path.exists(dst) or not os.path.exists(src):
            continue
        _copy(src, dst, "gunzip" if src == gz else "copy")
        os.utime(dst, (mtime, mtime))
        count += 1
    return count


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        import results_archive_selftest
        results_archive_selftest.run()
        sys.exit(0)
    if len(sys.argv) != 4 or sys.argv[1] not in ("save", "restore"):
        sys.exit(__doc__)
    if sys.argv[1] == "restore":
        print(f"restored {restore(sys.argv[2], sys.argv[3])} files", file=sys.stderr)
    else:
        out = os.path.abspath(sys.argv[2])
        os.environ["OUT"] = out
        import results_fashion_mnist as plan_module  # noqa: E402  (reads OUT at import)
        save(out, sys.argv[3], plan_module.plan(only=[]), plan_module.KEPT_RUNS)
