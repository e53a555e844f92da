"""The deployables, named as on the command line (`testdata service <name>`).

Names only, no service code: the command line's parser and the supervisor need them
without importing every service (and with them the LLM SDKs). `services.app` maps each
name to its service and checks at import that the two lists agree.
"""

from __future__ import annotations

ROUTER = "router"
LEARNER = "learner"
BRIDGE = "bridge"
#: One service per generation path, in `services.app.PATHS` order.
PATH_SERVICES: tuple[str, ...] = ("traditional", "llm", "rag", "hybrid")
#: Every deployable.
SERVICES: tuple[str, ...] = (ROUTER, *PATH_SERVICES, LEARNER, BRIDGE)
#: The deployables that consume topics (all but the bridge).
WORKERS: tuple[str, ...] = tuple(s for s in SERVICES if s != BRIDGE)
