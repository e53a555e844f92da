"""The layering contracts hold, and the checker really catches a breach."""

from __future__ import annotations

from pathlib import Path

from scripts import check_layers


def test_the_tree_keeps_its_layers():
    assert check_layers.violations() == []


def test_every_deployable_is_a_registered_service():
    from services.app import SERVICES

    assert set(check_layers.deployables()) == set(SERVICES)


def test_a_breach_is_reported(tmp_path: Path, monkeypatch):
    services = tmp_path / "services"
    for pkg, body in {
        "core": "import aiokafka\nfrom services.kit import stream\n",
        "kit": "from services.router.service import RouterService\n",
        "router": "from services.traditional.service import TraditionalService\n",
        "traditional": "",
    }.items():
        (services / pkg).mkdir(parents=True)
        (services / pkg / "__init__.py").write_text("")
        (services / pkg / "mod.py").write_text(body)
    monkeypatch.setattr(check_layers, "ROOT", tmp_path)
    monkeypatch.setattr(check_layers, "SERVICES", services)
    found = check_layers.violations()
    assert len(found) == 4, found
    assert sum("core must stay pure" in v for v in found) == 2
    assert any("kit must not depend" in v for v in found)
    assert any("another's service module" in v for v in found)
