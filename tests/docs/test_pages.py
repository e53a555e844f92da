"""The shape of the docs, checked without running anything: every block follows the rules
of tests/docs/mdblocks.py, the README is an overview whose first screen has exactly the
two commands, every page is linked, and the topic table says what the catalogue says."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.docs.mdblocks import DocSyntaxError, pages, parse

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: Skipped blocks are few and each says why; more than this is a smell.
MAX_SKIPS = 8


def _blocks(page: Path):
    return parse(page.read_text(encoding="utf-8"), page.relative_to(ROOT))


@pytest.mark.parametrize("page", pages(ROOT), ids=lambda p: str(p.relative_to(ROOT)))
def test_blocks_follow_the_rules(page):
    _blocks(page)  # raises DocSyntaxError naming the line


def test_skips_are_few_and_say_why():
    skipped = [b for page in pages(ROOT) for b in _blocks(page) if b.skip]
    assert all(len(b.skip or "") > 10 for b in skipped)
    assert len(skipped) <= MAX_SKIPS, [f"{b.where}: {b.skip}" for b in skipped]


def test_readme_is_an_overview():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    # the first screen: everything above the first section
    first_screen = text.split("\n## ", 1)[0]
    assert len(first_screen.splitlines()) <= 25
    blocks = [b for b in _blocks(README) if b.line <= len(first_screen.splitlines())]
    assert len(blocks) == 1 and blocks[0].lang == "bash"
    commands = [
        c for c in (line.split("#")[0].strip() for line in blocks[0].text.splitlines()) if c
    ]
    assert commands == ["make run", "make test"]


def test_every_page_is_linked_from_the_readme():
    text = README.read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in text, f"README links no docs/{page.name}"


def test_relative_links_resolve():
    broken = []
    for page in pages(ROOT):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_the_topic_table_says_what_the_catalogue_says():
    catalog = tomllib.loads((ROOT / "topics" / "catalog.toml").read_text(encoding="utf-8"))
    kept = {}
    for spec in catalog["topics"].values():
        name = spec["name"] + (".<bridge>" if spec.get("family") else "")
        ms = spec["retention_ms"]
        kept[name] = (
            "for good"
            if ms < 0
            else f"{ms // 86_400_000} days"
            if ms % 86_400_000 == 0 and ms > 86_400_000
            else "1 day"
            if ms == 86_400_000
            else f"{ms // 3_600_000} hour" + ("s" if ms != 3_600_000 else "")
        )
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([a-z.<>]+)` \| .* \| ([^|]+?) \|$", page, re.M))
    assert rows == kept


def test_a_block_without_a_language_is_refused():
    with pytest.raises(DocSyntaxError, match="needs a language"):
        parse("text\n\n```\nls\n```\n", Path("x.md"))
    with pytest.raises(DocSyntaxError, match="needs a language"):
        parse("```console\n$ ls\n```\n", Path("x.md"))


def test_directives_apply_to_the_next_fence():
    md = (
        "<!-- docs-test: skip it needs a cluster -->\n```bash\nkcat -L\n```\n\n"
        "<!-- docs-test: needs kcat, curl -->\n<!-- docs-test: exit 1 -->\n"
        "```sh\nfalse\n```\n\n"
        "<!-- docs-test: output stderr ignore=a,b -->\n```json\n{}\n```\n\n"
        "- item\n\n  ```python\n  print(1)\n  ```\n"
    )
    skip, tools, out, indented = parse(md, Path("x.md"))
    assert skip.skip == "it needs a cluster" and skip.line == 2
    assert tools.needs == ("kcat", "curl") and tools.exit == 1
    assert out.output is not None
    assert (out.output.stream, out.output.ignore) == ("stderr", ("a", "b"))
    assert indented.lang == "python" and indented.text == "print(1)\n"
    with pytest.raises(DocSyntaxError, match="must stand above a fence"):
        parse("<!-- docs-test: skip why not -->\ntext\n```bash\nls\n```\n", Path("x.md"))
    with pytest.raises(DocSyntaxError, match="needs a block run before it"):
        parse("<!-- docs-test: output stdout -->\n```text\nhi\n```\n", Path("x.md"))
