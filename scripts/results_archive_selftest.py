"""Self-test of results_archive.py (scripts/test.sh runs it): a made-up plan folder is
saved and restored into an empty one, and what comes back is checked."""
import json
import os
import struct
import tempfile

import results_archive


class FakeJob:
    def __init__(self, outputs, inputs, done):
        self.outputs, self.inputs, self._done = outputs, inputs, done

    def done(self):
        return self._done


def write(path, text, mtime):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode())
    os.utime(path, (mtime, mtime))


def safetensors(names):
    header = {n: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i, n in enumerate(names)}
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + b"\0" * (4 * len(names))


def tensor_names(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return sorted(k for k in json.loads(f.read(n)) if k != "__metadata__")


def run():
    with tempfile.TemporaryDirectory() as tmp:
        out, archive, fresh = f"{tmp}/out", f"{tmp}/archive", f"{tmp}/fresh"
        ckpt = safetensors(["model.w", "opt.m", "opt.v"])
        for run_name in ("main", "abl-done", "abl-pending", "training"):
            write(f"{out}/{run_name}/run.json", "{}", 1000)
            write(f"{out}/{run_name}/checkpoint.safetensors", ckpt, 1001)
            if run_name != "training":
                write(f"{out}/{run_name}/summary.json", '{"seconds": 1}', 1002)
                write(f"{out}/{run_name}/metrics.jsonl", '{"step": 1}\n' * 50, 1002)
        write(f"{out}/rows/a.json", '{"rows": []}', 2000)
        jobs = [FakeJob([f"{out}/{r}/summary.json"], [], r != "training")
                for r in ("main", "abl-done", "abl-pending", "training")]
        jobs += [FakeJob([f"{out}/rows/a.json"], [f"{out}/abl-done/summary.json"], True),
                 FakeJob([f"{out}/rows/b.json"], [f"{out}/abl-pending/summary.json"], False)]
        results_archive.save(out, archive, jobs, ["main"])
        results_archive.save(out, archive, jobs, ["main"])  # a second save changes nothing
        assert os.path.exists(f"{archive}/main/metrics.jsonl.gz"), "metrics are kept gzipped"
        assert tensor_names(f"{archive}/training/checkpoint.safetensors") == ["model.w", "opt.m", "opt.v"], \
            "a run still training is kept whole, to resume"
        assert not os.path.exists(f"{archive}/abl-done/checkpoint.safetensors"), "no reader left: no tensors"
        assert os.path.exists(f"{archive}/abl-pending/checkpoint.safetensors"), "a pending row reads it"

        assert results_archive.restore(archive, fresh) == 14
        assert results_archive.restore(archive, fresh) == 0, "restore only fills what is missing"
        for rel in ("main/run.json", "main/summary.json", "main/metrics.jsonl", "rows/a.json"):
            a, b = f"{out}/{rel}", f"{fresh}/{rel}"
            assert open(a, "rb").read() == open(b, "rb").read(), rel
            assert os.path.getmtime(a) == os.path.getmtime(b), f"{rel}: modification time kept"
        assert tensor_names(f"{fresh}/main/checkpoint.safetensors") == ["model.w"], "optimiser moments dropped"
        assert not os.path.exists(f"{fresh}/rows/b.json")
        assert tensor_names(f"{fresh}/training/checkpoint.safetensors") == ["model.w", "opt.m", "opt.v"]

        # The training run finishes and the pending row is made: neither's tensors are
        # read any more, so the next save drops them from the archive.
        write(f"{out}/training/checkpoint.safetensors", ckpt, 3000)
        write(f"{out}/training/summary.json", '{"seconds": 2}', 3000)
        write(f"{out}/rows/b.json", '{"rows": []}', 3001)
        for j in jobs:
            j._done = True
        results_archive.save(out, archive, jobs, ["main"])
        assert os.path.exists(f"{archive}/training/summary.json")
        for run_name in ("training", "abl-pending"):
            assert not os.path.exists(f"{archive}/{run_name}/checkpoint.safetensors"), run_name
            assert f"{run_name}/checkpoint.safetensors" not in json.load(open(f"{archive}/mtimes.json"))
        assert tensor_names(f"{archive}/main/checkpoint.safetensors") == ["model.w"], "the main run stays"
    print("results archive self-test: save and restore as expected")
