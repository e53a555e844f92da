"""The spec's traditional generator, as written there: one Faker call per field.

Kept only as the benchmark's baseline: it is what our pooled, coherent generator is
measured against.
"""

from __future__ import annotations

from typing import Any

from faker import Faker


def naive_carts(n: int, seed: int = 0) -> list[dict[str, Any]]:
    fk = Faker("en_US")
    fk.seed_instance(seed)
    return carts_from(fk, n)


def carts_from(fk: Faker, n: int) -> list[dict[str, Any]]:
    """`n` carts from a seeded Faker (the direct server keeps one and seeds it per call)."""
    out = []
    for i in range(n):
        items = [
            {
                "sku": fk.bothify("???-???-???-##").upper(),
                "name": fk.catch_phrase(),
                "quantity": fk.random_int(1, 99),
                "price": float(fk.pydecimal(left_digits=3, right_digits=2, positive=True)),
                "category": fk.word(),
            }
            for _ in range(fk.random_int(1, 5))
        ]
        out.append(
            {
                "_index": i,
                "_scenario": "default",
                "cart_id": f"CRT-{fk.year()}-{fk.bothify('#######')}",
                "customer_id": f"USR-{fk.bothify('#######')}",
                "items": items,
                "subtotal": float(fk.pydecimal(left_digits=4, right_digits=2, positive=True)),
                "tax": float(fk.pydecimal(left_digits=2, right_digits=2, positive=True)),
                "total": float(fk.pydecimal(left_digits=4, right_digits=2, positive=True)),
                "currency": fk.random_element(["USD", "CAD"]),
                "created_at": fk.iso8601(),
                "updated_at": fk.iso8601(),
            }
        )
    return out
