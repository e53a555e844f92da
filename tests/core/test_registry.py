import json

import pytest

from services.core.errors import SchemaFileError
from services.core.registry import SchemaRegistry

ENTITIES = ["cart", "order", "payment", "product", "review", "user"]


def test_six_entities_load_from_data_files(registry):
    assert registry.names() == ENTITIES
    cart = registry.get("cart")
    assert cart.domain == "ecommerce"
    assert cart.description
    assert cart.field_names()[:3] == ["cart_id", "customer_id", "items"]
    assert registry.get("CART ") is cart


def test_list_by_domain(registry):
    assert [s.name for s in registry.list("ecommerce")] == ENTITIES
    assert registry.list("supply_chain") == []
    assert len(registry.list()) == 6


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"name": "x", "fields": [{"name": "a", "type": "NOPE"}]}, "NOPE"),
        ({"name": "x", "fields": [{"name": "a", "type": "ENUM"}]}, "ENUM field needs enum_values"),
        (
            {
                "name": "x",
                "fields": [{"name": "a", "type": "INTEGER", "constraint": {"min": 5, "max": 1}}],
            },
            "above max",
        ),
        (
            {"name": "x", "fields": [{"name": "a", "constraint": {"regex": "(unclosed"}}]},
            "invalid regex",
        ),
        ({"name": "x", "fields": [{"name": "a", "type": "OBJECT"}]}, "needs nested_fields"),
    ],
)
def test_invalid_schema_file_is_refused_with_reason(tmp_path, body, needle):
    (tmp_path / "x.json").write_text(json.dumps(body))
    with pytest.raises(SchemaFileError, match=needle):
        SchemaRegistry.load(tmp_path)
