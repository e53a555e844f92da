#!/usr/bin/env bash
# kcat for the docs test: docs/calling.md's recipe for agents in other languages runs as
# written (tests/docs/test_docs_blocks.py). Debian's package.
set -euo pipefail
if command -v kcat >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "kcat is needed by the docs test: install it (Debian: apt-get install kcat)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends kcat >/dev/null 2>&1 || {
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends kcat >/dev/null
}
command -v kcat >/dev/null
