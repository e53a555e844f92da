"""How patterns are laid out in Weaviate: the spec's three classes, their properties, and the
mapping between a `Pattern` and an object's properties.

The spec's property names are kept (`data`, `trigger_data`/`defect_description`/
`discovered_at`/`defect_id`, `anonymized_data`/`distribution_stats`/`sample_date`); every
class also carries what a `Pattern` round-trips. Vectors are self-provided (the same MiniLM
vectors as the embedded store) instead of the spec's `text2vec-openai`: nothing is called
out and both backends rank on the same vectors.

Pure: no weaviate import here (that costs ~1 s), only plain data the backend turns into
client calls.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.patterns.store import Collection, Pattern

# What keyword search ranks on and what is embedded: `Pattern.search_text()`, as in the
# embedded store, so both backends rank the same words.
SEARCH_PROP = "search_text"
#: A pattern's tenant; a shared pattern's is SHARED (Weaviate does not index an empty
#: string, so "" could not be filtered on).
TENANT_PROP = "tenant"
SHARED = "*"


@dataclass(frozen=True)
class Prop:
    name: str
    data_type: str  # "text", "number", "int", "date"
    tokenization: str | None = None  # "field": filters compare the whole value
    filterable: bool = True
    searchable: bool = True


def _exact(name: str) -> Prop:
    """Compared whole by equality filters; not ranked by keywords."""
    return Prop(name, "text", tokenization="field", searchable=False)


def _stored(name: str) -> Prop:
    """Stored and returned only: no inverted index."""
    return Prop(name, "text", filterable=False, searchable=False)


@dataclass(frozen=True)
class Layout:
    """One collection's Weaviate class and the spec's names for the contract's fields."""

    collection: Collection
    name: str
    id_prop: str
    description_prop: str
    records_prop: str
    created_prop: str
    extra: tuple[Prop, ...] = ()

    def properties(self) -> list[Prop]:
        exact = ("domain", "entity", "scenario", "source", "defect_type", "severity", TENANT_PROP)
        return [
            _exact(self.id_prop),
            *(_exact(name) for name in exact),
            Prop(SEARCH_PROP, "text", tokenization="word", filterable=False),
            _stored(self.description_prop),
            _stored(self.records_prop),
            Prop("quality_score", "number"),
            Prop("usage_count", "int"),
            Prop(self.created_prop, "date"),
            *self.extra,
        ]

    # ------------------------------------------------------------------ mapping
    def to_properties(self, pattern: Pattern) -> dict[str, Any]:
        created = pattern.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        props: dict[str, Any] = {
            self.id_prop: pattern.id,
            "domain": pattern.domain,
            "entity": pattern.entity,
            "scenario": pattern.scenario,
            "source": pattern.source,
            "defect_type": pattern.defect_type,
            "severity": pattern.severity,
            TENANT_PROP: pattern.tenant or SHARED,
            SEARCH_PROP: pattern.search_text(),
            self.description_prop: pattern.description,
            self.records_prop: json.dumps(pattern.records, separators=(",", ":"), default=str),
            "quality_score": float(pattern.quality),
            "usage_count": int(pattern.usage_count),
            self.created_prop: created,
        }
        if self.collection is Collection.PRODUCTION:
            props["distribution_stats"] = json.dumps(
                distribution_stats(pattern.records), separators=(",", ":")
            )
        return props

    def from_properties(self, props: Mapping[str, Any]) -> Pattern:
        created = props.get(self.created_prop)
        if isinstance(created, str):
            created = datetime.fromisoformat(created)
        return Pattern(
            id=str(props.get(self.id_prop) or ""),
            collection=self.collection,
            domain=str(props.get("domain") or ""),
            entity=str(props.get("entity") or ""),
            scenario=str(props.get("scenario") or ""),
            description=str(props.get(self.description_prop) or ""),
            records=json.loads(props.get(self.records_prop) or "[]"),
            quality=float(props.get("quality_score") or 0.0),
            usage_count=int(props.get("usage_count") or 0),
            source=str(props.get("source") or ""),
            created_at=created or datetime.now(UTC),
            defect_type=str(props.get("defect_type") or ""),
            severity=str(props.get("severity") or ""),
            tenant="" if props.get(TENANT_PROP) in (None, "", SHARED) else str(props[TENANT_PROP]),
        )


LAYOUTS: dict[Collection, Layout] = {
    Collection.PATTERNS: Layout(
        Collection.PATTERNS, "TestDataPattern", "pattern_id", "description", "data", "created_at"
    ),
    Collection.DEFECTS: Layout(
        Collection.DEFECTS,
        "DefectPattern",
        "defect_id",
        "defect_description",
        "trigger_data",
        "discovered_at",
    ),
    Collection.PRODUCTION: Layout(
        Collection.PRODUCTION,
        "ProductionSample",
        "sample_id",
        "description",
        "anonymized_data",
        "sample_date",
        extra=(_stored("distribution_stats"),),
    ),
}


def object_uuid(pattern_id: str) -> str:
    """The object's uuid: uuid5 of the content id, as `weaviate.util.generate_uuid5(id)`,
    so storing the same pattern again replaces it."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, pattern_id))


def distribution_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The spec's `distribution_stats` of a production sample: per field, min/max/mean of
    numbers or the number of distinct values."""
    fields: dict[str, Any] = {}
    keys = dict.fromkeys(k for r in records for k in r)
    for key in keys:
        values = [r[key] for r in records if key in r and r[key] is not None]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if values and len(numbers) == len(values):
            fields[key] = {
                "min": min(numbers),
                "max": max(numbers),
                "mean": round(sum(numbers) / len(numbers), 6),
            }
        else:
            fields[key] = {
                "distinct": len({json.dumps(v, sort_keys=True, default=str) for v in values})
            }
    return {"records": len(records), "fields": fields}
