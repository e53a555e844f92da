"""`make bench`: every benchmark section in one run."""

from __future__ import annotations

import sys

from bench import core


def main() -> None:
    sections = sys.argv[1:] or ["core"]
    if "core" in sections:
        core.run()


if __name__ == "__main__":
    main()
