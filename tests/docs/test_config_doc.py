"""docs/configuration.md is what scripts/gen_config_doc.py makes of the settings model:
a setting added, renamed, re-commented or given a new default fails here until `make docs`
regenerates the page. Prose elsewhere in the docs that states a setting's default as
`NAME` (value) is checked against the model too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.kit.settings import Settings
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


def test_every_setting_has_a_row():
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", page, re.M))
    assert rows == {name.upper() for name in Settings.model_fields}


def test_section_headings_and_descriptions_come_from_the_comments():
    gen = load_script("gen_config_doc")
    source = '''
class Settings:
    """doc"""

    model_config = {}

    # Service
    grpc_port: int = 9001  # where the bridge listens
    http_port: int = 8081

    # Kafka. Empty bootstrap servers means: start the embedded broker.
    kafka_bootstrap_servers: str = ""
    # Upper bound on a fetch's wait.
    kafka_fetch_max_wait_ms: int = 100

    def method(self) -> None:
        pass

    # Learning: every dataset goes to the outcomes topic.
    # Which paths are learned.
    learn_paths: list[str] = ["llm"]
'''

    class Info:
        def __init__(self, default):
            self.default, self.metadata, self.description = default, [], None

    fields = {
        "grpc_port": Info(9001),
        "http_port": Info(8081),
        "kafka_bootstrap_servers": Info(""),
        "kafka_fetch_max_wait_ms": Info(100),
        "learn_paths": Info(["llm"]),
    }
    got = {
        s.heading: [(r.name, r.default, r.description) for r in s.rows]
        for s in gen.sections(source, fields)
    }
    assert got == {
        "Service": [
            ("GRPC_PORT", "`9001`", "where the bridge listens"),
            ("HTTP_PORT", "`8081`", ""),
        ],
        "Kafka": [
            ("KAFKA_BOOTSTRAP_SERVERS", "empty", "Empty bootstrap servers means: start the "
             "embedded broker."),
            ("KAFKA_FETCH_MAX_WAIT_MS", "`100`", "Upper bound on a fetch's wait."),
        ],
        "Learning": [
            ("LEARN_PATHS", "`llm`", "Every dataset goes to the outcomes topic. Which paths "
             "are learned."),
        ],
    }  # fmt: skip


#: `NAME` (value [unit]...: a default stated in prose.
STATED = re.compile(
    r"`([A-Z][A-Z0-9_]+)` \((\d[\d,]*(?:\.\d+)?)(?: ?(KiB|MiB|GiB|days?|hours?))?[ ,;:)]"
)
UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "day": 86_400, "hour": 3_600}


def test_defaults_stated_in_prose_match_the_settings():
    fields = Settings.model_fields
    wrong = []
    for page in DOCS:
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for name, value, unit in STATED.findall(line):
                info = fields.get(name.lower())
                if info is None or not isinstance(info.default, int | float):
                    continue
                stated = float(value.replace(",", "")) * UNITS.get(unit.rstrip("s"), 1)
                if stated != float(info.default):
                    rel = page.relative_to(ROOT)
                    wrong.append(f"{rel}:{n}: {name} ({value}), the default is {info.default}")
    assert not wrong, "\n".join(wrong)
