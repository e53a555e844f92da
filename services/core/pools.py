"""Value pools drawn once from Faker with a fixed seed, then sampled by seeded index.

Calling Faker per field is the slow part of naive generators; sampling pre-built pools is
an order of magnitude faster and keeps output a function of (Faker version, our seed).
Faker is pinned in pyproject and its version is part of GENERATOR_VERSION, so a replay can
tell when a dataset cannot be byte-identical any more.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import faker

CORE_VERSION = "2"  # 2: constraints met by construction (regex lengths, short emails...)
GENERATOR_VERSION = f"tdcore-{CORE_VERSION}+faker-{faker.VERSION}"
POOL_SEED = 20250101
POOL_SIZE = 1000

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMAS_DIR = REPO_ROOT / "schemas"


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


@dataclass(frozen=True)
class Product:
    name: str
    category: str
    brand: str  # full brand name
    price: float
    sku_stem: str  # BRAND-CAT, colour and size are drawn per line item


@dataclass(frozen=True)
class Occasion:
    name: str
    keywords: tuple[str, ...]
    products: tuple[Product, ...]


@dataclass(frozen=True)
class Pools:
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    streets: tuple[str, ...]
    cities: tuple[tuple[str, str, str], ...]  # (city, state, zip) that belong together
    companies: tuple[str, ...]
    words: tuple[str, ...]
    sentences: tuple[str, ...]
    email_domains: tuple[str, ...]
    area_codes: tuple[str, ...]
    occasions: tuple[Occasion, ...]


COLORS = ("BLK", "WHT", "NVY", "GRY", "RED", "BLU", "GRN", "BGE", "PNK", "BRN")
SIZES = ("XS", "S", "M", "L", "XL", "6", "7", "8", "9", "10", "11", "OS")
EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "aol.com", "proton.me")
AREA_CODES = ("212", "312", "415", "617", "702", "713", "305", "404", "503", "206", "303", "512")


def load_occasions(path: Path | None = None) -> tuple[Occasion, ...]:
    data = json.loads((path or SCHEMAS_DIR / "catalog" / "occasions.json").read_text())
    out = []
    for occ in data["occasions"]:
        products = tuple(
            Product(name, cat, data["brands"][code], float(price), f"{code}-{cat[:3].upper()}")
            for name, cat, code, price in occ["products"]
        )
        out.append(Occasion(occ["name"], tuple(k.lower() for k in occ["keywords"]), products))
    return tuple(out)


@lru_cache(maxsize=1)
def get_pools() -> Pools:
    """Built once per process (~0.2 s); identical in every process for one Faker version."""
    fk = faker.Faker("en_US")
    fk.seed_instance(POOL_SEED)
    n = POOL_SIZE

    def uniq(fn: object, k: int) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for _ in range(k * 3):
            seen[_ascii(fn())] = None  # type: ignore[operator]
            if len(seen) >= k:
                break
        return tuple(seen)

    cities = []
    for _ in range(n // 2):
        cities.append((_ascii(fk.city()), fk.state_abbr(include_territories=False), fk.zipcode()))
    return Pools(
        first_names=uniq(fk.first_name, n),
        last_names=uniq(fk.last_name, n),
        streets=uniq(fk.street_address, n),
        cities=tuple(cities),
        companies=uniq(fk.company, n // 2),
        words=uniq(fk.word, n // 2),
        sentences=uniq(fk.sentence, n),
        email_domains=EMAIL_DOMAINS,
        area_codes=AREA_CODES,
        occasions=load_occasions(),
    )
