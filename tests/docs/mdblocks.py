"""The fenced code blocks of the docs, and what the docs test does with each.

A block's language decides: ```bash and ```sh blocks run with `bash -euo pipefail`,
```python blocks with the project's interpreter; every other language (json, text, csv,
sql, toml, ...) is shown, not run. A fence without a language is an error, and so is
```console (a prompt mixed with output cannot be run as written): commands go in a bash
block, their output in a block of its own.

Directives, each an HTML comment on its own line right above a fence (several may stack):

    <!-- docs-test: skip REASON -->           do not run this block (say why)
    <!-- docs-test: needs TOOL[,TOOL] -->     the block calls these programs; the test
                                               fails naming an install step when one is
                                               missing (never skips)
    <!-- docs-test: exit N -->                the block is expected to exit with N (not 0)
    <!-- docs-test: output STREAM [ignore=KEY,KEY] -->
                                               this (not run) block is exactly what the
                                               last block run printed: STREAM is stdout,
                                               stderr or run (the banner of `make run`).
                                               A json block is compared as JSON (the first
                                               JSON value in the stream; ignore= drops
                                               keys whose values vary), any other block as
                                               lines, runs of spaces counting as one and
                                               an ellipsis (…) standing for any text (a
                                               pid, an uptime).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

SHELL = frozenset({"bash", "sh"})
PYTHON = frozenset({"python"})
RUNNABLE = SHELL | PYTHON
#: Shown, never run.
SHOWN = frozenset({"json", "text", "csv", "sql", "toml", "ini", "dotenv", "protobuf", "yaml"})
FORBIDDEN = frozenset({"console", "shell-session", "shell", "sh-session", "pycon", ""})
STREAMS = frozenset({"stdout", "stderr", "run"})

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<lang>[^`\s]*)[^`]*$")
DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")


class DocSyntaxError(ValueError):
    """A page's blocks or directives do not follow the rules above."""


@dataclass
class Output:
    stream: str
    ignore: tuple[str, ...] = ()


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    skip: str | None = None
    needs: tuple[str, ...] = ()
    exit: int = 0
    output: Output | None = None
    directives: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.lang in RUNNABLE


def _directive(block: Block, body: str) -> None:
    word, _, rest = body.partition(" ")
    rest = rest.strip()
    if word == "skip":
        if not rest:
            raise DocSyntaxError(f"{block.where}: `skip` needs a reason")
        block.skip = rest
    elif word == "needs":
        tools = tuple(t for t in re.split(r"[,\s]+", rest) if t)
        if not tools:
            raise DocSyntaxError(f"{block.where}: `needs` names no program")
        block.needs += tools
    elif word == "exit":
        if not rest.isdigit():
            raise DocSyntaxError(f"{block.where}: `exit` needs a number, got {rest!r}")
        block.exit = int(rest)
    elif word == "output":
        parts = rest.split()
        if not parts or parts[0] not in STREAMS:
            raise DocSyntaxError(f"{block.where}: `output` needs one of {sorted(STREAMS)}")
        ignore: tuple[str, ...] = ()
        for opt in parts[1:]:
            key, _, value = opt.partition("=")
            if key != "ignore" or not value:
                raise DocSyntaxError(f"{block.where}: unknown output option {opt!r}")
            ignore += tuple(v for v in value.split(",") if v)
        block.output = Output(parts[0], ignore)
    else:
        raise DocSyntaxError(f"{block.where}: unknown directive {body!r}")
    block.directives.append(body)


def _closes(line: str, fence: str) -> bool:
    s = line.strip()
    return len(s) >= len(fence) and set(s) == {fence[0]}


def parse(text: str, page: Path) -> list[Block]:
    """Every fenced block of a page, its directives applied and checked."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        d = DIRECTIVE.match(line)
        if d:
            pending.append((i + 1, d.group("body")))
            i += 1
            continue
        m = FENCE.match(line)
        if not m:
            if pending and line.strip():
                n = pending[0][0]
                raise DocSyntaxError(f"{page}:{n}: a docs-test directive must stand above a fence")
            i += 1
            continue
        indent, fence, lang = m.group("indent"), m.group("fence"), m.group("lang").lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not _closes(lines[i], fence):
            body.append(
                lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip()
            )
            i += 1
        if i == len(lines):
            raise DocSyntaxError(f"{page}:{start + 1}: fence never closed")
        i += 1
        block = Block(page, start + 1, lang, "\n".join(body) + "\n")
        if lang in FORBIDDEN:
            raise DocSyntaxError(
                f"{block.where}: a fence needs a language (bash, python, json, text, ...); "
                f"{lang or 'none'} is not one: put commands and their output in blocks of "
                "their own"
            )
        if lang not in RUNNABLE | SHOWN:
            raise DocSyntaxError(f"{block.where}: unknown block language {lang!r}")
        for _, directive in pending:
            _directive(block, directive)
        pending = []
        if block.output and block.runnable:
            raise DocSyntaxError(f"{block.where}: an output block must not be runnable")
        if not block.runnable and (block.skip or block.needs or block.exit):
            raise DocSyntaxError(f"{block.where}: skip, needs and exit are for runnable blocks")
        blocks.append(block)
    if pending:
        raise DocSyntaxError(
            f"{page}:{pending[0][0]}: a docs-test directive must stand above a fence"
        )
    _check_outputs(blocks)
    return blocks


def _check_outputs(blocks: list[Block]) -> None:
    last_run: Block | None = None
    for block in blocks:
        if block.runnable and not block.skip:
            last_run = block
        elif block.output and block.output.stream != "run" and last_run is None:
            raise DocSyntaxError(f"{block.where}: an output block needs a block run before it")


def pages(root: Path) -> list[Path]:
    """README first (its first five minutes start from a fresh instance), then docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]
