"""`make bench`: every benchmark section in one run (or name sections: core admission codec llm
pipeline smallcalls load delivery budget patterns weaviate learner rag intent cache
replay export broker cli; soak (30 minutes) and sustained (10) never run by default)."""

from __future__ import annotations

import sys


def main() -> None:
    sections = sys.argv[1:] or [
        "core",
        "admission",
        "codec",
        "llm",
        "pipeline",
        "smallcalls",
        "load",
        "delivery",
        "budget",
        "patterns",
        "weaviate",
        "learner",
        "rag",
        "intent",
        "cache",
        "replay",
        "export",
        "broker",
        "cli",
    ]
    for name in sections:
        module = __import__(f"bench.{name}", fromlist=["run"])
        module.run()
        print(flush=True)


if __name__ == "__main__":
    main()
