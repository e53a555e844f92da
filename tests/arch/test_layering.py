"""The layering contracts hold, the import graph has no cycle, and the checker really
catches each kind of breach."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import check_layers

pytestmark = pytest.mark.unit


def test_the_tree_keeps_its_layers():
    assert check_layers.violations() == []


def test_the_import_graph_has_no_cycle():
    assert check_layers.cycles() == []


def test_every_deployable_is_a_registered_service():
    from services.app import SERVICES

    assert set(check_layers.deployables()) == set(SERVICES)


def test_every_package_and_kit_part_is_declared():
    packages = {p.parent.name for p in check_layers.SERVICES.glob("*/__init__.py")}
    assert packages == set(check_layers.USES)
    kit = check_layers.SERVICES / "kit"
    parts = {p.parent.name for p in kit.glob("*/__init__.py")} | {
        p.stem for p in kit.glob("*.py") if p.stem != "__init__"
    }
    assert parts == set(check_layers.KIT_USES)


def test_every_package_says_what_it_is():
    for init in check_layers.SERVICES.rglob("__init__.py"):
        if "proto" in init.parts:
            continue
        assert init.read_text().startswith('"""'), f"{init} has no docstring"


def _tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> None:
    services = tmp_path / "services"
    for name, body in files.items():
        path = services / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(tmp_path).parents:
            init = tmp_path / parent / "__init__.py"
            if parent != Path(".") and not init.exists():
                init.write_text("")
        path.write_text(body)
    monkeypatch.setattr(check_layers, "ROOT", tmp_path)
    monkeypatch.setattr(check_layers, "SERVICES", services)


def test_a_breach_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _tree(
        tmp_path,
        monkeypatch,
        {
            "core/mod.py": "import aiokafka\nfrom services.kit.runtime import stream\n",
            "kit/runtime/stream.py": "from services.router.service import RouterService\n",
            "kit/wire/codec.py": "from services.kit.runtime import stream\n",
            "router/service.py": "from services.traditional.service import TraditionalService\n",
            "traditional/service.py": "",
            "hybrid/service.py": "from services.rag.retrieval import retrieve\n",
            "rag/retrieval.py": "",
            "datasets/cli.py": "from services.cli import UserError\n",
            "cli.py": "",
            "newpkg/mod.py": "",
        },
    )
    found = check_layers.violations()
    text = "\n".join(found)
    assert text.count("core may not use kit") == 1, text
    assert "core must stay pure" in text
    assert "kit must not depend on a deployable" in text
    assert "kit.wire may not use kit.runtime" in text
    assert "router may not use traditional" in text
    assert "use rag through its public face" in text
    assert "no package imports them" in text
    assert "'newpkg' is not declared" in text
    assert len(found) == 8, "\n".join(found)


def test_a_cycle_is_reported_even_through_a_function_level_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _tree(
        tmp_path,
        monkeypatch,
        {
            "cli.py": "from services.datasets.cli import add_parsers\n",
            "datasets/cli.py": "def f():\n    from services.cli import UserError\n",
            "kit/wire/a.py": "from services.kit.wire import b\n",
            "kit/wire/b.py": "import services.kit.wire.a\n",
        },
    )
    assert sorted(check_layers.cycles()) == [
        ["services.cli", "services.datasets.cli"],
        ["services.kit.wire.a", "services.kit.wire.b"],
    ]
