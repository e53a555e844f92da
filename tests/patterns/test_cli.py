"""`testdata patterns ...` as a user runs it (in-process main, real store file)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli import main
from services.kit.settings import get_settings
from services.patterns.seeds import load_seeds
from tests.support import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "data" / "patterns.sqlite"
    monkeypatch.setenv("PATTERN_STORE_PATH", str(path))
    monkeypatch.delenv("WEAVIATE_URL", raising=False)
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def seeded_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One seeded store file, copied by the tests that need seeds (embedding once)."""
    path = tmp_path_factory.mktemp("seeded") / "patterns.sqlite"
    with pytest.MonkeyPatch.context() as m:
        m.setenv("PATTERN_STORE_PATH", str(path))
        get_settings.cache_clear()
        assert main(["patterns", "seed"]) == 0
    get_settings.cache_clear()
    return path


@pytest.fixture
def seeded(store_path: Path, seeded_file: Path) -> Path:
    store_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(seeded_file, store_path)  # closed: the WAL is checkpointed into the file
    return store_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["patterns", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_seed_is_idempotent_and_says_new_and_total(store_path: Path, capsys) -> None:
    n = len(load_seeds())
    code, out, _ = run(capsys, "seed", "--if-empty")
    assert code == 0
    assert out.strip() == (
        f"seeded {n} new patterns of {n} (first start); {n} in the embedded store at {store_path}"
    )
    assert run(capsys, "seed")[1].startswith(f"seeded 0 new patterns of {n}; {n} in ")
    assert run(capsys, "seed", "--if-empty")[1].startswith(f"{n} patterns in ")
    assert "not seeded (not empty)" in run(capsys, "seed", "--if-empty")[1]


def test_list_filters_and_stats_count(seeded: Path, capsys) -> None:
    code, out, err = run(capsys, "list", "--collection", "defects", "--entity", "payment")
    assert code == 0 and err.strip() == "2 pattern(s)"
    assert all("defects/ecommerce/payment" in line for line in out.splitlines())
    listed = json.loads(run(capsys, "list", "--entity", "cart", "--limit", "3", "--json")[1])
    assert len(listed) == 3 and {p["entity"] for p in listed} == {"cart"}
    code, out, _ = run(capsys, "stats")
    assert code == 0
    assert "patterns/ecommerce/review" in out and "healthy" in out
    assert out.splitlines()[-1].split() == ["total", str(len(load_seeds()))]
    stats = json.loads(run(capsys, "stats", "--json")[1])
    assert stats["counts"]["defects/ecommerce/cart"] == 2 and stats["semantic"] is True


def test_search_ranks_with_scores_and_json(seeded: Path, capsys) -> None:
    code, out, _ = run(capsys, "search", "presents for a newborn", "--entity", "cart")
    assert code == 0
    first = out.splitlines()[0]
    assert first.startswith(" 1. 1.000") and "baby_shower_gift" in first
    hits = json.loads(
        run(
            capsys,
            "search",
            "payment of nothing",
            "--collection",
            "defects",
            "--entity",
            "payment",
            "--top-k",
            "1",
            "--json",
        )[1]
    )
    assert [h["pattern"]["defect_type"] for h in hits] == ["zero_amount"]
    assert 0 <= hits[0]["score"] <= 1
    code, out, err = run(capsys, "search", "zzzqqq", "--alpha", "0")
    assert code == 0 and out == "" and "no matching patterns" in err


def test_delete_by_id(seeded: Path, capsys) -> None:
    listed = json.loads(run(capsys, "list", "--collection", "production", "--json")[1])
    victim = listed[0]["id"]
    code, out, _ = run(capsys, "delete", victim)
    assert code == 0 and out.strip() == "deleted 1 of 1 pattern(s)"
    code, out, _ = run(capsys, "delete", victim, "--collection", "production")
    assert code == 1 and out.strip() == "deleted 0 of 1 pattern(s)"


def test_user_errors_are_one_line(store_path: Path, capsys) -> None:
    code, _, err = run(capsys, "search", "x", "--alpha", "1.5")
    assert code == 2 and err.strip() == "error: --alpha must be between 0 and 1"
    with pytest.raises(SystemExit):
        main(["patterns", "list", "--limit", "0"])
    assert "expected a whole number >= 1" in capsys.readouterr().err
    store_path.parent.mkdir(parents=True)
    store_path.mkdir()  # a directory where the file should be
    code, _, err = run(capsys, "stats")
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: pattern store unavailable (the embedded store at ")


def test_counting_listing_and_stats_never_load_the_model(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import os, sys
        os.environ["PATTERN_STORE_PATH"] = {str(tmp_path / "p.sqlite")!r}
        from services.cli import main
        from services.patterns import embedding
        for argv in (["patterns", "list"], ["patterns", "stats"]):
            assert main(argv) == 0
        print("LOADED", embedding.loaded(), "tokenizers" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED False False" in done.stdout
    assert "healthy" in done.stdout
