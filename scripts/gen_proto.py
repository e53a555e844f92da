"""Generate Python stubs from protos/ into services/proto/ with package-relative imports."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "services" / "proto"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    args = [
        "protoc",
        f"-I{ROOT / 'protos'}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        *protos,
    ]
    if protoc.main(args) != 0:
        return 1
    for d in [OUT, *[p for p in OUT.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    for f in OUT.rglob("*_pb2*.py"):
        text = re.sub(
            r"^from testdata\.", "from services.proto.testdata.", f.read_text(), flags=re.M
        )
        f.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
