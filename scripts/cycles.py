#!/usr/bin/env python3
"""Report import cycles between the project's source files.

Each `.rs` file under a crate's `src/` is a module; an edge A -> B means A
names B through a `use crate::...` / `use tally::...` path, or a
`crate::x::y` path in code. A cycle is a strongly connected component of more
than one file. A parent `mod.rs` (or `lib.rs`) declaring its children is not
an edge. Exits 1 and lists the cycles if there is any.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRATES = {"runtime": "tally", "sim": "tally_sim"}


def modules(src: Path):
    """Map module path tuples to files."""
    out = {}
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(src)
        parts = list(rel.with_suffix("").parts)
        if parts[0] == "bin" or parts == ["main"]:
            continue
        if parts[-1] in ("mod", "lib"):
            parts = parts[:-1]
        out[tuple(parts)] = f
    return out


def strip(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    # Unit tests may reach anywhere: they are not part of the module graph.
    cut = re.search(r"#\[cfg\(test\)\]\s*mod \w+\s*\{", text)
    return text[: cut.start()] if cut else text


def paths_in(text: str, crate_names):
    """Every path rooted at the crate: `crate::a::b`, `tally::a::b`, with
    `use x::{a, b::c}` groups expanded."""
    found = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        found.extend(expand(m.group(1).replace("\n", " ").replace(" ", "")))
    for m in re.finditer(r"\b((?:crate|super|" + "|".join(crate_names) + r")(?:::\w+)+)", text):
        found.append(m.group(1))
    return found


def expand(tree: str):
    m = re.match(r"^(.*?)::\{(.*)\}$", tree)
    if not m:
        return [tree.split(" as ")[0]]
    prefix, body = m.groups()
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        if p and p != "self":
            out.extend(expand(prefix + "::" + p))
        elif p == "self":
            out.append(prefix)
    return out


def reexports(mods):
    """(module, name) -> the module a `pub use child::...::name` in it names."""
    out = {}
    for mod, f in mods.items():
        for m in re.finditer(r"\bpub\s+use\s+([^;]+);", strip(f.read_text())):
            for p in expand(m.group(1).replace("\n", " ").replace(" ", "")):
                segs = [x for x in p.split("::") if x not in ("self",)]
                if not segs or segs[0] in ("crate", "super", "std"):
                    continue
                child = mod + (segs[0],)
                if child in mods:
                    out[(mod, segs[-1])] = child
    return out


def resolve(path: str, mods, here, exports):
    """The module a crate path names: the longest module prefix, followed
    through one re-export of the name after it."""
    segs = path.split("::")
    if segs[0] == "crate":
        segs = segs[1:]
    elif segs[0] == "super":
        base = list(here[:-1])
        while segs and segs[0] == "super":
            segs = segs[1:]
            if segs and segs[0] == "super":
                base = base[:-1]
        segs = base + segs
    else:
        return None
    for n in range(len(segs), 0, -1):
        if tuple(segs[:n]) in mods:
            target = tuple(segs[:n])
            if n < len(segs) and (target, segs[n]) in exports:
                return exports[(target, segs[n])]
            return target
    return None


def sccs(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    bad = []
    for crate, name in CRATES.items():
        src = ROOT / crate / "src"
        mods = modules(src)
        exports = reexports(mods)
        graph = {}
        for mod, f in mods.items():
            edges = set()
            for p in paths_in(strip(f.read_text()), [name]):
                if p.startswith(name + "::"):
                    p = "crate::" + p[len(name) + 2 :]
                target = resolve(p, mods, mod, exports)
                # A module's own ancestors (declaring it) and itself are not edges.
                if target is None or target == mod or mod[: len(target)] == target:
                    continue
                edges.add(target)
            graph[mod] = edges
        for comp in sccs(graph):
            if len(comp) > 1:
                bad.append((crate, sorted("::".join(c) for c in comp)))
    for crate, comp in bad:
        print(f"{crate}: import cycle among {', '.join(comp)}")
    if bad:
        sys.exit(1)
    print("no import cycles")


if __name__ == "__main__":
    main()
