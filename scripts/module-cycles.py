#!/usr/bin/env python3
"""Lists the cycles between the crate's modules, or says there are none (exit 0 / 1).

usage: scripts/module-cycles.py [--level N] [--graph]

A module depends on another when its code names it: `use crate::a::b`, `super::x`, or a path
such as `crate::a::b::f()` in the body. A module's own children (and the `mod` lines declaring
them) don't count: a parent that only declares or re-exports a child is not its dependant.
`--level 1` looks at top-level modules only (graph, runner, output, ...), `--level 2` (the default)
one level deeper (output::journal, runner::queue, ...). `--graph` prints every edge.
"""

import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "src"


def module_of(path: pathlib.Path) -> tuple[str, ...]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip_comments_and_strings(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def referenced_paths(text: str, here: tuple[str, ...]):
    """Absolute module paths (tuples) named in `text`, written in module `here`."""
    text = strip_comments_and_strings(text)
    # Expand `use a::{b, c::{d}}` groups into `a::b`, `a::c::d` (enough for this crate's style).
    for use in re.finditer(r"\buse\s+([^;]+);", text):
        for path in expand(use.group(1).replace("\n", " ")):
            yield from resolve(path, here)
    for match in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", text):
        yield from resolve(match.group(1), here)


def expand(tree: str):
    tree = tree.strip()
    match = re.match(r"^(.*?)::\{(.*)\}$", tree, flags=re.S)
    if not match:
        yield re.sub(r"\s+as\s+\w+$", "", tree)
        return
    prefix, inner = match.group(1).strip(), match.group(2)
    depth, start = 0, 0
    for i, c in enumerate(inner + ","):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            item = inner[start:i].strip()
            start = i + 1
            if item:
                yield from expand(f"{prefix}::{item}" if item != "self" else prefix)


def resolve(path: str, here: tuple[str, ...]):
    parts = [p for p in path.split("::") if p]
    if not parts:
        return
    if parts[0] == "crate":
        base, rest = (), parts[1:]
    elif parts[0] == "super":
        base, rest = here, parts
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    elif parts[0] == "self":
        base, rest = here, parts[1:]
    else:
        return
    yield base + tuple(rest)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--level", type=int, default=2)
    parser.add_argument("--graph", action="store_true")
    args = parser.parse_args()

    files = sorted(p for p in ROOT.rglob("*.rs") if p.name != "main.rs")
    modules = {module_of(p) for p in files}

    def owner(path: tuple[str, ...]) -> tuple[str, ...]:
        """The deepest module that `path` (a module or an item in one) lies in."""
        while path and path not in modules:
            path = path[:-1]
        return path

    def at_level(module: tuple[str, ...]) -> tuple[str, ...]:
        return module[: args.level]

    edges: dict[tuple, set] = {}
    for path in files:
        here = module_of(path)
        text = path.read_text()
        # Test modules may reach anywhere; they are not part of the design.
        text = re.split(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)[0]
        for target in referenced_paths(text, here):
            target = owner(target)
            source, dest = at_level(here), at_level(target)
            # A module naming its own descendants (or itself) is not a dependency.
            if dest[: len(source)] == source:
                continue
            edges.setdefault(source, set()).add(dest)

    if args.graph:
        for source in sorted(edges):
            for dest in sorted(edges[source]):
                print(f"{'::'.join(source) or 'crate'} -> {'::'.join(dest) or 'crate'}")

    cycles = strongly_connected(edges)
    if not cycles:
        print(f"no module cycle (level {args.level}, {len(edges)} modules with dependencies)")
        return 0
    for cycle in cycles:
        names = sorted("::".join(m) or "crate" for m in cycle)
        print("cycle: " + " <-> ".join(names))
    return 1


def strongly_connected(edges):
    """Tarjan's algorithm; returns the components with more than one module."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []
    counter = [0]
    nodes = set(edges) | {d for ds in edges.values() for d in ds}

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(component)

    sys.setrecursionlimit(10000)
    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return result


if __name__ == "__main__":
    sys.exit(main())
