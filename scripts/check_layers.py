"""Layering contracts, checked on the import graph (run by `make lint` and the tests).

1. `services.core` is pure: it imports no transport, SDK or store client and nothing of
   `services` outside `core`.
2. `services.kit` (the transport edges every service shares) imports no deployable.
3. A deployable never imports another deployable's service module.
4. A command-line tool (`TOOLS`: replay and export live in `services.datasets`) imports no
   deployable's service module either; it talks to the services over Kafka.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "services"
IO_PACKAGES = ("aiokafka", "grpc", "anthropic", "openai", "weaviate", "redis", "httpx")
SHARED = ("core", "kit", "proto")
TOOLS = ("datasets",)


def deployables() -> list[str]:
    """Every package under services/ that is neither core, kit nor generated code."""
    return sorted(
        p.name
        for p in SERVICES.iterdir()
        if p.is_dir() and (p / "__init__.py").exists() and p.name not in (*SHARED, *TOOLS)
    )


def imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def violations() -> list[str]:
    out: list[str] = []
    apps = deployables()
    for path in sorted(SERVICES.rglob("*.py")):
        rel = path.relative_to(ROOT)
        parts = rel.parts
        if len(parts) < 3 or parts[1] == "proto":
            continue
        package = parts[1]
        for line, name in imports(path):
            where = f"{rel}:{line} imports {name}"
            top = name.split(".")[0]
            target = name.split(".")[1] if name.startswith("services.") and "." in name else ""
            if package == "core" and (top in IO_PACKAGES or (target and target != "core")):
                out.append(f"{where}: core must stay pure")
            elif package == "kit" and target in apps:
                out.append(f"{where}: kit must not depend on a deployable")
            elif (
                package in TOOLS
                and target in apps
                and name.startswith(f"services.{target}.service")
            ):
                out.append(f"{where}: a tool must not import a deployable's service module")
            elif (
                package in apps
                and target in apps
                and target != package
                and name.startswith(f"services.{target}.service")
            ):
                out.append(f"{where}: a deployable must not import another's service module")
    return out


def main() -> int:
    found = violations()
    for v in found:
        print(v)
    print(f"layering: {len(found)} violation(s) in {len(deployables())} deployables + core, kit")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
