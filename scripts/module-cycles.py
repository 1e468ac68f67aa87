#!/usr/bin/env python3
"""Lists the cycles between the crate's modules, or says there are none (exit 0 / 1); with
`--level 1`, also every import between top-level modules that ALLOWED (below) does not list.

usage: scripts/module-cycles.py [--level N] [--graph] [--self-test]

A module depends on another when its code names it: `use crate::a::b`, `super::x`, or a path
such as `crate::a::b::f()` in the body. A module's own children (and the `mod` lines declaring
them) don't count: a parent that only declares or re-exports a child is not its dependant.
`--level 1` looks at top-level modules only (graph, runner, output, ...), `--level 2` (the default)
one level deeper (output::journal, runner::queue, ...). `--graph` prints every edge. Test code
(`#[cfg(test)] mod x { ... }` and files declared `#[cfg(test)] mod x;`) is left out: tests may
reach anywhere. `--self-test` checks this script on a small made-up crate.
"""

import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "src"

# Which way imports go (STYLE.md's module map): commands use the phases' modules, which use the
# core; nothing but commands (and tests) uses mock. Each top-level module may name the modules
# listed for it and their children; an entry with `::` allows only that child. `crate` is lib.rs
# (the exit-code table and `Fatal`). A module absent here may name nothing outside itself.
ALLOWED = {
    # The clap definitions and their conversion: into config's types, from the value types and
    # parsers the flags take (Action, ApiVersion, AuthKind, InputFormat, RetryPolicy, Rate).
    # `mock`: the `mock` subcommand's flags (MockArgs) live with the mock, which converts them.
    "cli": ["config", "graph", "input", "retry", "units", "mock"],
    # One module a subcommand, and run's phases: they use everything below them, the mock too
    # (`--mock` starts one in process), and the exit statuses.
    "commands": [
        "crate", "config", "logging", "input", "lookup", "runner", "graph", "output", "outcome",
        "units", "sanitize", "mock",
    ],
    # The typed settings are made of the phases' own types (InputOptions, Guardrails,
    # RetryPolicy, ApiVersion, Rate); never output's, whose choices live in units.
    "config": ["input", "lookup", "retry", "graph", "units"],
    # Starts tracing from LogConfig, and installs the progress bar's layer, which it tells by
    # output::progress's BAR_FIELD.
    "logging": ["config", "output::progress"],
    # Reads wait on the runner's admission (the limiter and throttle gate of each Graph service,
    # shared with the actions) and are retried by the same policy; they decide rows' outcomes.
    "lookup": ["input", "runner", "attempt", "retry", "graph", "outcome", "units", "sanitize"],
    # The workers: jobs from input, requests through graph, decisions from retry.
    "runner": ["input", "attempt", "retry", "graph", "outcome", "units"],
    # Records and reports what was done: jobs, models and outcomes; the summary's exit status.
    # Not mock: which requests the mock answered is the mock's to say, not the record's reader's.
    "output": ["crate", "input", "graph", "outcome", "units", "sanitize"],
    # Rows name actions and providers (graph::model).
    "input": ["graph", "sanitize"],
    # One HTTP exchange: a failure says what kind of attempt it was (retry::AttemptKind), and the
    # token requests run through the one attempt driver; text from servers made safe.
    "graph": ["attempt", "retry", "sanitize"],
    # The one attempt driver (issue 17 item 3): admission, token, send, the policy's decision and
    # its wait, for every request kind. Below graph, so token requests use it too; it asks only
    # the pure policy.
    "attempt": ["retry"],
    # The core: a row's outcome names its job's keys, action and provider.
    "outcome": ["input", "graph"],
    # The mock speaks the wire models and parses --rate as run does; never graph::client.
    "mock": ["graph::model", "graph::identity", "units"],
}


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


def test_modules(files, module_of) -> set:
    """Modules declared `#[cfg(test)] mod x;` in a file of their parent."""
    found = set()
    for path in files:
        for name in re.findall(
            r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", path.read_text()
        ):
            found.add(module_of(path) + (name,))
    return found


def not_allowed(source: tuple, dest: tuple) -> bool:
    """Whether top-level module `source` may not name module `dest` (a full module path)."""
    allowed = ALLOWED.get(source[0] if source else "crate", [])
    if not source or dest[:1] == source[:1]:
        return False
    for entry in allowed:
        if entry == "crate":
            if dest == ():
                return False
        elif dest[: len(entry.split("::"))] == tuple(entry.split("::")):
            return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--level", type=int, default=2)
    parser.add_argument("--graph", action="store_true")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    return check(ROOT, args.level, args.graph)


def check(root: pathlib.Path, level: int, graph: bool) -> int:
    def module_of(path: pathlib.Path) -> tuple[str, ...]:
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        return tuple(parts)

    files = sorted(p for p in root.rglob("*.rs") if p.name != "main.rs")
    tests = test_modules(files, module_of)
    files = [p for p in files if not any(module_of(p)[: len(t)] == t for t in tests)]
    modules = {module_of(p) for p in files}

    def owner(path: tuple[str, ...]) -> tuple[str, ...]:
        """The deepest module that `path` (a module or an item in one) lies in."""
        while path and path not in modules:
            path = path[:-1]
        return path

    def at_level(module: tuple[str, ...]) -> tuple[str, ...]:
        return module[:level]

    edges: dict[tuple, set] = {}
    # Imports between top-level modules that ALLOWED does not list, with a file that makes each.
    forbidden: dict[tuple, pathlib.Path] = {}
    for path in files:
        here = module_of(path)
        text = path.read_text()
        # Test modules may reach anywhere; they are not part of the design.
        text = re.split(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)[0]
        for target in referenced_paths(text, here):
            target = owner(target)
            if not_allowed(here[:1], target):
                forbidden.setdefault((here[:1], target[:2]), path)
            source, dest = at_level(here), at_level(target)
            # A module naming its own descendants (or itself) is not a dependency.
            if dest[: len(source)] == source:
                continue
            edges.setdefault(source, set()).add(dest)

    if graph:
        for source in sorted(edges):
            for dest in sorted(edges[source]):
                print(f"{'::'.join(source) or 'crate'} -> {'::'.join(dest) or 'crate'}")

    failed = False
    if level == 1:
        for (source, dest), path in sorted(forbidden.items()):
            failed = True
            print(
                f"import not allowed: {'::'.join(source)} -> {'::'.join(dest) or 'crate'}"
                f" ({path.relative_to(root.parent)}; ALLOWED in {pathlib.Path(__file__).name})"
            )
    cycles = strongly_connected(edges)
    if not cycles:
        print(f"no module cycle (level {level}, {len(edges)} modules with dependencies)")
        return 1 if failed else 0
    for cycle in cycles:
        names = sorted("::".join(m) or "crate" for m in cycle)
        print("cycle: " + " <-> ".join(names))
    return 1


def self_test() -> int:
    """The checks on a made-up crate: a cycle, an import ALLOWED does not list, and neither."""
    import contextlib
    import io
    import tempfile

    def run(tree: dict, level: int) -> tuple[int, str]:
        with tempfile.TemporaryDirectory() as tmp:
            root = pathlib.Path(tmp) / "src"
            for name, text in tree.items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_text(text)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = check(root, level, False)
            return code, out.getvalue()

    clean = {"lib.rs": "mod output; mod units;", "output/mod.rs": "use crate::units::Rate;",
             "units.rs": "pub struct Rate;", "mock.rs": ""}
    upward = dict(clean, **{"output/mod.rs": "use crate::mock::Server;"})
    in_tests = dict(clean, **{"output/mod.rs": "#[cfg(test)]\nmod tests;",
                              "output/tests.rs": "use crate::mock::Server;"})
    cycle = dict(clean, **{"units.rs": "use crate::output::Journal;"})
    results = [
        run(clean, 1) == (0, "no module cycle (level 1, 1 modules with dependencies)\n"),
        run(upward, 1)[0] == 1 and "import not allowed: output -> mock" in run(upward, 1)[1],
        run(upward, 2)[0] == 0,
        run(in_tests, 1)[0] == 0,
        run(cycle, 1)[0] == 1 and "cycle: output <-> units" in run(cycle, 1)[1],
    ]
    print("self-test: " + ("ok" if all(results) else f"failed {results}"))
    return 0 if all(results) else 1


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
