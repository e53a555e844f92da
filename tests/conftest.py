"""Session-wide fixtures: ONE embedded broker (Apache Kafka) for the whole run, shared by
every test; and the test tiers.

Every test is in exactly one tier, worked out here from what it uses (never by listing it):

    unit      no broker at all: neither the session's nor one of its own (`make test-unit`)
    pipeline  the session's broker: it requests `embedded_broker`, directly or through a
              fixture built on it (`settings`, `stack`, `stub`, ... of tests/pipeline)
    process   starts a broker, a supervisor, `testdata run` or `testdata service`
              processes of its own, or a Docker container: `pytest.mark.process` on the
              test or its module (`pytestmark`)

and `slow` on top for a test taking over ~5 s on a quiet machine (`pytest.mark.slow`,
`make test-fast` leaves them out). A unit test that starts a broker or a supervisor anyway
fails, saying so: it is in the wrong tier.
"""

from __future__ import annotations

import sys

import pytest

from services.kit.broker.embedded import EmbeddedBroker
from services.kit.wire.topics import Topics

#: Retention is checked every second here (30 s in `make run`), so tests see it applied.
TEST_BROKER_CONFIGS = {"log.retention.check.interval.ms": "1000"}

TIERS = ("unit", "pipeline", "process")
SESSION_BROKER = "embedded_broker"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wrong = []
    for item in items:
        if item.get_closest_marker("docker") and not item.get_closest_marker("process"):
            item.add_marker("process")  # a container of its own
        marked = [t for t in TIERS if item.get_closest_marker(t)]
        uses_broker = SESSION_BROKER in getattr(item, "fixturenames", ())
        if len(marked) > 1:
            wrong.append(f"{item.nodeid}: marked {' and '.join(marked)}")
        elif marked == ["unit"] and uses_broker:
            wrong.append(f"{item.nodeid}: marked unit, but requests `{SESSION_BROKER}`")
        elif not marked:
            item.add_marker("pipeline" if uses_broker else "unit")
    if wrong:
        raise pytest.UsageError("one tier per test (tests/conftest.py):\n  " + "\n  ".join(wrong))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """A unit test that starts a broker (the session's too: `-m unit` runs have none) or
    a supervisor fails, saying so: fixtures of every scope included."""
    if item.get_closest_marker("unit") is None:
        return (yield)

    def refuse(what: str):
        def start(*_args: object, **_kwargs: object) -> None:
            pytest.fail(
                f"{item.nodeid} is tiered `unit` (tests/conftest.py) but starts {what}: "
                f"request `{SESSION_BROKER}` (tier `pipeline`) or mark it `pytest.mark.process`",
                pytrace=False,
            )

        return start

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EmbeddedBroker, "start", refuse("a Kafka broker"))
        # imported by collection whenever a test module uses it (not imported here: the
        # whole app comes with it, seconds for a run of one small module)
        if (supervisor := sys.modules.get("services.supervisor")) is not None:
            patch.setattr(supervisor.Supervisor, "start", refuse("a supervisor"))
        return (yield)


@pytest.fixture(scope="session")
def embedded_broker():
    fixed = Topics().fixed()
    with EmbeddedBroker(
        {t.name: t.partitions for t in fixed},
        topic_configs={t.name: t.configs() for t in fixed},
        server_overrides=TEST_BROKER_CONFIGS,
    ) as broker:
        yield broker
