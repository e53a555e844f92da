"""The pictures in docs/ are what scripts/gen_docs_images.py draws from their committed
sources (docs/request-path.toml, docs/benchmarks.csv, scripts/check_layers.py), and the
request's path names only topics the catalogue has."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.docs.scripts import load_script

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


GEN = load_script("gen_docs_images")


@pytest.mark.parametrize("name", sorted(GEN.IMAGES))
def test_committed_picture_is_drawn_from_its_source(name):
    committed = (ROOT / "docs" / name).read_text(encoding="utf-8")
    assert committed == GEN.draw(name), (
        f"docs/{name} differs from what docs/{GEN.IMAGES[name][0]} draws: run `make docs` "
        "(or .venv/bin/python scripts/gen_docs_images.py)"
    )


def test_the_request_path_names_catalogue_topics():
    catalog = tomllib.loads((ROOT / "topics" / "catalog.toml").read_text(encoding="utf-8"))
    names = {t["name"] for t in catalog["topics"].values()}
    families = {t["name"] for t in catalog["topics"].values() if t.get("family")}
    source = (ROOT / "docs" / "request-path.toml").read_text(encoding="utf-8")
    for topic in GEN.topics_named(source):
        member = re.fullmatch(r"(.+)\.<\w+>", topic)
        if member:
            assert member.group(1) in families, f"{topic}: no such topic family"
        else:
            assert topic in names, f"{topic}: not in topics/catalog.toml"


def test_drawing_is_deterministic():
    for name in GEN.IMAGES:
        assert GEN.draw(name) == GEN.draw(name)
