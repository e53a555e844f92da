"""Layering contracts, checked on the import graph (run by `make lint` and the tests).

Every package under `services/` is declared in `USES` with the packages it may import;
an undeclared package, or an import the table does not allow, is a violation:

1. `services.core` is pure: it imports no transport, SDK or store client and nothing of
   `services` outside `core`.
2. `services.kit` (the edges every service shares) imports no deployable, and its
   sub-packages are layered (`KIT_USES`): the wire contract knows no Kafka client, the
   Kafka runtime no path, and so on.
3. A deployable uses another deployable only where declared, and then only through that
   package's public face (`services.rag`, never `services.rag.retrieval`).
4. The top-level modules (`app`, `cli`, `supervisor`, `deployables`) compose everything;
   no package imports them.
5. The module graph has no cycle, function-level imports included: a circle hidden inside
   a function is still a circle.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "services"
IO_PACKAGES = ("aiokafka", "grpc", "anthropic", "openai", "weaviate", "redis", "httpx")
#: Packages every service shares; everything else under services/ is a deployable or a tool.
SHARED = ("core", "kit", "proto", "patterns", "client")
TOOLS = ("datasets",)

#: Which package may import which (besides itself).
USES: dict[str, frozenset[str]] = {
    name: frozenset(uses)
    for name, uses in {
        "core": (),
        "proto": (),
        "kit": ("core",),
        "patterns": ("core", "kit"),
        "client": ("core", "kit", "proto"),
        "bridge": ("core", "kit", "proto"),
        "router": ("core", "kit", "patterns"),
        "traditional": ("core", "kit"),
        "llm": ("core", "kit"),
        "rag": ("core", "kit", "patterns"),
        "hybrid": ("core", "kit", "patterns", "rag", "llm"),
        "learner": ("core", "kit", "patterns"),
        "datasets": ("core", "kit", "client"),
    }.items()
}

#: Inside `kit`: each sub-package (or top-level module) and the others it may import.
KIT_USES: dict[str, frozenset[str]] = {
    name: frozenset(uses)
    for name, uses in {
        "settings": (),
        "errors": (),
        "ops": ("settings",),
        "wire": ("settings",),
        "redis": ("ops", "settings"),
        "runtime": ("ops", "settings", "wire"),
        "broker": ("ops", "runtime", "settings", "wire"),
        "path": ("ops", "redis", "runtime", "settings", "wire"),
        "console": ("errors", "ops", "runtime", "settings"),
    }.items()
}


def deployables() -> list[str]:
    """Every package under services/ that is neither shared nor a tool."""
    return sorted(
        p.name
        for p in SERVICES.iterdir()
        if p.is_dir() and (p / "__init__.py").exists() and p.name not in (*SHARED, *TOOLS)
    )


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every absolute import in the file, function-level ones included;
    `from a import b` names `a.b` when that is a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield node.lineno, sub if _is_module(sub) else node.module


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _sources() -> Iterator[Path]:
    for path in sorted(SERVICES.rglob("*.py")):
        if path.relative_to(SERVICES).parts[0] != "proto":
            yield path


def _kit_part(parts: list[str]) -> str:
    return parts[2] if len(parts) > 2 else ""


def violations() -> list[str]:
    out: list[str] = []
    apps = deployables()
    for path in _sources():
        rel = path.relative_to(ROOT)
        parts = module_name(path).split(".")
        if len(parts) < 2 or len(rel.parts) < 3:
            continue  # a top-level module composes everything
        package = parts[1]
        if package not in USES:
            out.append(
                f"services/{package}: package {package!r} is not declared in check_layers.USES"
            )
            continue
        for line, name in imports(path):
            where = f"{rel}:{line} imports {name}"
            top = name.split(".")[0]
            target = name.split(".")
            if package == "core" and top in IO_PACKAGES:
                out.append(f"{where}: core must stay pure")
            if top != "services" or len(target) < 2 or target[1] == package:
                if package == "kit" and top == "services" and len(target) > 2:
                    out.extend(_kit_violation(where, parts, target))
                continue
            other = target[1]
            if other not in USES:
                out.append(
                    f"{where}: top-level modules compose the services; no package imports them"
                )
            elif other not in USES[package]:
                rule = "core must stay pure" if package == "core" else "not declared"
                if package == "kit":
                    rule = "kit must not depend on a deployable"
                out.append(f"{where}: {package} may not use {other} ({rule})")
            elif other in apps and len(target) > 2:
                out.append(f"{where}: use {other} through its public face (services.{other})")
    return list(dict.fromkeys(out))


def _kit_violation(where: str, parts: list[str], target: list[str]) -> list[str]:
    mine, theirs = _kit_part(parts), _kit_part(target)
    if not mine or mine == theirs:
        return []
    if mine not in KIT_USES:
        return [f"{where}: kit.{mine} is not declared in check_layers.KIT_USES"]
    if theirs not in KIT_USES[mine]:
        return [f"{where}: kit.{mine} may not use kit.{theirs}"]
    return []


def cycles() -> list[list[str]]:
    """Every strongly connected set of modules (Tarjan), each a circle of imports."""
    graph: dict[str, set[str]] = {}
    for path in _sources():
        me = module_name(path)
        graph[me] = {n for _, n in imports(path) if n.startswith("services.") and n != me}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    found = violations()
    for v in found:
        print(v)
    circles = cycles()
    for c in circles:
        print("import cycle: " + " <-> ".join(c))
    print(
        f"layering: {len(found)} violation(s), {len(circles)} import cycle(s) in "
        f"{len(USES)} declared packages"
    )
    return 1 if found or circles else 0


if __name__ == "__main__":
    sys.exit(main())
