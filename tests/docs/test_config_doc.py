"""docs/configuration.md is what scripts/gen_config_doc.py makes of the settings model:
a setting added, renamed, re-described or given a new default fails here until `make docs`
regenerates the page. Prose elsewhere in the docs that states a setting's default as
`NAME` (value) is checked against the model too."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import NoDecode

from services.kit.settings import SECTIONS, Settings
from tests.docs.scripts import load_script

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_configuration_page_is_generated_from_the_settings():
    gen = load_script("gen_config_doc")
    committed = gen.TARGET.read_text(encoding="utf-8")
    assert committed == gen.generate(), (
        "docs/configuration.md is out of date with services/kit/settings.py: run `make docs` "
        "(or .venv/bin/python scripts/gen_config_doc.py)"
    )


def env_fields() -> dict:
    """Every setting's field info by its environment variable."""
    gen = load_script("gen_config_doc")
    return {gen.env_name(name, info): info for name, info in Settings.model_fields.items()}


def test_every_setting_has_a_row():
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", page, re.M))
    assert rows == set(env_fields())
    assert {"MAX_SCHEMA_DEPTH", "MAX_TEXT_LENGTH", "MAX_NUMBER_MAGNITUDE"} <= rows


def test_every_setting_is_in_one_section_and_described():
    names = [name for section in SECTIONS for name in section.model_fields]
    assert sorted(names) == sorted(Settings.model_fields)
    assert all(section.__doc__ and "\n" not in section.__doc__.strip() for section in SECTIONS)
    assert [n for n, info in Settings.model_fields.items() if not info.description] == []


class Shape(BaseModel):
    """Shape: how big a thing may be."""

    depth: int = Field(default=8, ge=1, le=64, validation_alias="max_shape_depth", description="d")
    size: int = Field(default=2 << 30, description="how big")
    key: SecretStr = Field(default=SecretStr("EMPTY"), description="a key")


class Plain(BaseModel):
    """Plain words."""

    names: Annotated[list[str], NoDecode] = Field(default=["llm"], description="")


def test_section_headings_and_rows_come_from_the_models():
    gen = load_script("gen_config_doc")
    got = {
        (s.heading, s.about): [(r.name, r.type, r.default, r.description) for r in s.rows]
        for s in gen.sections([Shape, Plain])
    }
    assert got == {
        ("Shape", "How big a thing may be."): [
            ("MAX_SHAPE_DEPTH", "int, 1 to 64", "`8`", "d"),
            ("SIZE", "int", "`2147483648` (`2 << 30`)", "how big"),
            ("KEY", "SecretStr", "`EMPTY`", "a key"),
        ],
        ("Plain words", ""): [("NAMES", "list[str]", "`llm`", "")],
    }


#: `NAME` (value [unit]...: a default stated in prose.
STATED = re.compile(
    r"`([A-Z][A-Z0-9_]+)` \((\d[\d,]*(?:\.\d+)?)(?: ?(KiB|MiB|GiB|days?|hours?))?[ ,;:)]"
)
UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "day": 86_400, "hour": 3_600}


def test_defaults_stated_in_prose_match_the_settings():
    fields = env_fields()
    wrong = []
    for page in DOCS:
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for name, value, unit in STATED.findall(line):
                info = fields.get(name)
                if info is None or not isinstance(info.default, int | float):
                    continue
                stated = float(value.replace(",", "")) * UNITS.get(unit.rstrip("s"), 1)
                if stated != float(info.default):
                    rel = page.relative_to(ROOT)
                    wrong.append(f"{rel}:{n}: {name} ({value}), the default is {info.default}")
    assert not wrong, "\n".join(wrong)
