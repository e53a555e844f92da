#!/usr/bin/env bash
# A redis-server binary for the tests (they start their own on a free port; none is kept
# running). Debian's package, installed without starting its system service.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "redis-server is needed by the tests: install it (Debian: apt-get install redis-server)" >&2
  exit 1
fi
# policy-rc.d 101: the package's post-install must not start a Redis on port 6379
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
fi
trap '[ "$own_policy" = 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends redis-server >/dev/null 2>&1 || {
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends redis-server >/dev/null
}
command -v redis-server >/dev/null
