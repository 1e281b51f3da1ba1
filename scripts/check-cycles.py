#!/usr/bin/env python3
"""Import cycles among sibling modules of a crate's `src/`.

For every folder, the modules directly in it (files and sub-folders) are nodes; A -> B
when a file in A's subtree names B through `crate::…`, `super::…` or the crate's own
name (for a binary using its library). A cycle among siblings means neither can be read
or changed without the other. A module and its own children are not siblings (a child
using its parent's types is how Rust modules work), and unit tests (`tests.rs`,
`#[cfg(test)] mod tests`) may use anything. Exit status 1 on a cycle.

Usage: scripts/check-cycles.py CRATE_SRC [CRATE_NAME]…   (e.g. hyperat/src server/src)
"""
import os
import re
import sys


def module_of(root, path):
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def refs(root, path, mod):
    """Absolute module paths a file names."""
    text = open(path).read()
    text = re.sub(r"//[^\n]*", "", text)
    # Unit tests may use anything: they are not part of the layering.
    cut = re.search(r"#\[cfg\(test\)\]\s*mod \w+\s*\{", text)
    if cut:
        text = text[: cut.start()]
    out = set()
    # Expand `use crate::a::{b, c::d}` one level of braces.
    for m in re.finditer(r"\b(crate|super|self)((?:::\w+)*)(?:::\{([^}]*)\})?", text):
        head, tail, group = m.group(1), m.group(2), m.group(3)
        parts = [p for p in tail.split("::") if p]
        base = list(mod) if os.path.basename(path) in ("mod.rs", "lib.rs", "main.rs") else list(mod)
        if head == "crate":
            start = []
        elif head == "self":
            start = base if os.path.basename(path) in ("mod.rs", "lib.rs", "main.rs") else base
        else:  # super
            start = base[:-1]
            while parts and parts[0] == "super":
                parts.pop(0)
                start = start[:-1]
        items = [parts]
        if group:
            items = [parts + [g.strip().split("::")[0]] for g in group.split(",") if g.strip()]
        for it in items:
            out.add(tuple(start + it))
    return out


def self_test():
    """The checker finds a planted cycle and passes a tree without one."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        os.makedirs(f"{d}/src/jobs")
        files = {
            "lib.rs": "pub mod jobs;\npub mod state;\n",
            "jobs/mod.rs": "mod worker;\nuse super::state::AppState;\n",
            "jobs/worker.rs": "use super::super::state::AppState;\n",
            "state.rs": "pub struct AppState;\n#[cfg(test)]\nmod tests {\n use crate::jobs::X;\n}\n",
        }
        for name, text in files.items():
            open(f"{d}/src/{name}", "w").write(text)
        run = lambda: subprocess.run([sys.executable, __file__, f"{d}/src"], capture_output=True, text=True)
        ok = run()
        assert ok.returncode == 0, ok.stdout
        text = open(f"{d}/src/state.rs").read()
        open(f"{d}/src/state.rs", "w").write("use crate::jobs::Jobs;\n" + text)
        bad = run()
        assert bad.returncode == 1 and "jobs, state" in bad.stdout, bad.stdout
    print("check-cycles self-test passed")


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    bad = False
    for root in sys.argv[1:]:
        files = [
            os.path.join(d, f)
            for d, _, fs in os.walk(root)
            for f in fs
            if f.endswith(".rs") and not re.match(r"tests(_\w+)?\.rs$", f)
        ]
        mods = {module_of(root, f) for f in files}
        edges = set()
        for f in files:
            m = module_of(root, f)
            for r in refs(root, f, m):
                # The longest known module the reference lies in.
                target = max((k for k in mods if r[: len(k)] == k), key=len, default=None)
                if target is None:
                    continue
                # Siblings: the first place the two paths part under a common parent.
                i = 0
                while i < min(len(m), len(target)) and m[i] == target[i]:
                    i += 1
                if i < len(m) and i < len(target):
                    edges.add((m[: i + 1], target[: i + 1]))
        graph = {}
        for a, b in edges:
            graph.setdefault(a, set()).add(b)
        # Tarjan's strongly connected components.
        index, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]

        def visit(v):
            index[v] = low[v] = n[0]
            n[0] += 1
            stack.append(v)
            on.add(v)
            for w in graph.get(v, ()):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    sccs.append(comp)

        sys.setrecursionlimit(10000)
        for v in list(graph):
            if v not in index:
                visit(v)
        for comp in sccs:
            bad = True
            names = sorted("::".join(c) for c in comp)
            print(f"{root}: import cycle among {', '.join(names)}")
            for a, b in sorted(edges):
                if a in comp and b in comp:
                    print(f"    {'::'.join(a)} -> {'::'.join(b)}")
    if not bad:
        print("no import cycles among sibling modules")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
