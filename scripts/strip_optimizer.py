#!/usr/bin/env python3
"""Copies a run's checkpoint without its optimiser moments (the `opt.*` tensors).

    scripts/strip_optimizer.py RUN/checkpoint.safetensors OUT.safetensors

A shipped run is for looking at, not for resuming: its trained tensors (`model.*`) and
metadata (the step) are all that building its variants reads, and the AdamW moments are
twice the size of the tensors they belong to. Pure Python (the safetensors layout is an
8-byte little-endian header length, a JSON header, then the data), written atomically.
"""
import json
import os
import struct
import sys


def strip(src, dst):
    with open(src, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    kept, chunks, offset = {}, [], 0
    for name, info in sorted(header.items(), key=lambda kv: kv[0]):
        if name == "__metadata__":
            kept[name] = info
            continue
        if name.startswith("opt."):
            continue
        begin, end = info["data_offsets"]
        chunks.append(data[begin:end])
        kept[name] = dict(info, data_offsets=[offset, offset + end - begin])
        offset += end - begin
    text = json.dumps(kept, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)
    os.replace(tmp, dst)
    return len(kept) - ("__metadata__" in kept)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(f"kept {strip(sys.argv[1], sys.argv[2])} tensors", file=sys.stderr)
