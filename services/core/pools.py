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
from functools import cached_property, lru_cache
from pathlib import Path

import faker

# 2: constraints met by construction (regex lengths, short emails...)
# 3: 35 occasions, 346 products with price ranges, SKU attributes by category, themes
CORE_VERSION = "3"
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
    price: float  # list price: the top of its range
    sku_stem: str  # BRAND-CAT; colour and variant are drawn per line item
    low: float = 0.0  # the lowest price a store charges for it over a season
    colors: tuple[str, ...] = ("BLK",)  # colours, shades or metals its category has
    variants: tuple[str, ...] = ("STD",)  # sizes where the category has sizes, else "OS"...

    def cents(self, r: float) -> int:
        """A price in its range, in cents, from one uniform draw r in [0, 1)."""
        lo, hi = round((self.low or self.price) * 100), round(self.price * 100)
        return lo + int(r * (hi - lo + 1))


@dataclass(frozen=True)
class Occasion:
    name: str
    keywords: tuple[str, ...]  # words of its products' names (the coherence scorer's)
    products: tuple[Product, ...]
    synonyms: tuple[str, ...] = ()  # words a request uses for it ("marathon runners")


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

    @cached_property
    def all_products(self) -> tuple[Product, ...]:
        """Every occasion's products, once per pools (seen: an lru_cache keyed by the
        occasions re-hashed 35 occasions and 346 products twice per request)."""
        return tuple(p for o in self.occasions for p in o.products)


COLORS = ("BLK", "WHT", "NVY", "GRY", "RED", "BLU", "GRN", "BGE", "PNK", "BRN")
EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "aol.com", "proton.me")
AREA_CODES = ("212", "312", "415", "617", "702", "713", "305", "404", "503", "206", "303", "512")


@dataclass(frozen=True)
class Category:
    colors: tuple[str, ...]
    variants: tuple[str, ...]  # sizes only where the category has sizes


def load_catalog(path: Path | None = None) -> tuple[tuple[Occasion, ...], dict[str, Category]]:
    data = json.loads((path or SCHEMAS_DIR / "catalog" / "occasions.json").read_text())
    cats = {
        name: Category(tuple(c["colors"]), tuple(c["variants"]))
        for name, c in data["categories"].items()
    }
    out = []
    for occ in data["occasions"]:
        products = []
        for name, cat, code, low, high in occ["products"]:
            c = cats[cat]
            stem = f"{code}-{cat.replace(' ', '')[:3].upper()}"
            products.append(
                Product(
                    name,
                    cat,
                    data["brands"][code],
                    float(high),
                    stem,
                    float(low),
                    *(c.colors, c.variants),
                )
            )
        out.append(
            Occasion(
                occ["name"],
                tuple(k.lower() for k in occ["keywords"]),
                tuple(products),
                tuple(s.lower() for s in occ.get("synonyms", ())),
            )
        )
    return tuple(out), cats


def load_occasions(path: Path | None = None) -> tuple[Occasion, ...]:
    return load_catalog(path)[0]


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
