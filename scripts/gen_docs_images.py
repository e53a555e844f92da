"""The pictures in the docs, drawn from source files in the repository (plain SVG, no
plotting or graph library):

- docs/request-path.svg from docs/request-path.toml (nodes, edges, numbered steps);
- docs/benchmarks.svg from docs/benchmarks.csv (records per second, one bar per row);
- docs/packages.svg from scripts/check_layers.py (which package may use which, layered).

    python scripts/gen_docs_images.py           # (re)draw both
    python scripts/gen_docs_images.py --check   # exit 1 if a committed picture differs

`make docs` runs it; tests/docs/test_images.py fails while a picture is out of date.
The output depends on nothing but the source files: no fonts are measured (text widths
are estimated from the character count), no dates or random ids are written.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SANS = "DejaVu Sans, Helvetica, Arial, sans-serif"
MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"
#: Average glyph widths in em, to size boxes without measuring fonts.
SANS_EM, MONO_EM = 0.58, 0.61
STYLE = {
    "actor": {"fill": "#ffffff", "stroke": "#555555", "dash": "5 3"},
    "service": {"fill": "#dbe9f7", "stroke": "#2b5f8f", "dash": ""},
    "topic": {"fill": "#fff3c9", "stroke": "#9a7a10", "dash": ""},
    "store": {"fill": "#e2f2e0", "stroke": "#3c7a36", "dash": ""},
}


def _num(v: float) -> str:
    """Coordinates with at most one decimal, the same on every machine."""
    text = f"{v:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _text(x: float, y: float, s: str, size: float, **attrs: Any) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<text x="{_num(x)}" y="{_num(y)}" font-size="{_num(size)}"{extra}>{escape(s)}</text>'


def _svg(width: float, height: float, body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(width)}" height="{_num(height)}" '
        f'viewBox="0 0 {_num(width)} {_num(height)}" font-family="{SANS}">\n'
        f"<title>{escape(title)}</title>\n"
        '<rect width="100%" height="100%" fill="#ffffff"/>\n' + "\n".join(body) + "\n</svg>\n"
    )


# ---- the request's path ------------------------------------------------------------------
@dataclass
class Node:
    id: str
    kind: str
    lines: list[str]
    x: float
    y: float

    @property
    def w(self) -> float:
        name = len(self.lines[0]) * (MONO_EM if self.kind == "topic" else SANS_EM) * 14
        rest = max((len(s) for s in self.lines[1:]), default=0) * SANS_EM * 11
        return max(name, rest) + 28

    @property
    def h(self) -> float:
        return 30 + 15 * (len(self.lines) - 1) + (10 if self.kind == "store" else 0)

    def border(self, toward: tuple[float, float]) -> tuple[float, float]:
        """Where the line from the centre toward a point leaves the box."""
        dx, dy = toward[0] - self.x, toward[1] - self.y
        if dx == 0 and dy == 0:
            return self.x, self.y
        sx = (self.w / 2) / abs(dx) if dx else math.inf
        sy = (self.h / 2) / abs(dy) if dy else math.inf
        s = min(sx, sy)
        return self.x + dx * s, self.y + dy * s

    def draw(self) -> list[str]:
        st = STYLE[self.kind]
        x0, y0, w, h = self.x - self.w / 2, self.y - self.h / 2, self.w, self.h
        dash = f' stroke-dasharray="{st["dash"]}"' if st["dash"] else ""
        paint = f'fill="{st["fill"]}" stroke="{st["stroke"]}" stroke-width="1.5"{dash}'
        out = []
        if self.kind == "store":  # a cylinder
            ry = 6
            out.append(
                f'<path d="M{_num(x0)},{_num(y0 + ry)} v{_num(h - 2 * ry)} '
                f"a{_num(w / 2)},{ry} 0 0 0 {_num(w)},0 v{_num(-(h - 2 * ry))} "
                f'a{_num(w / 2)},{ry} 0 0 0 {_num(-w)},0 z" {paint}/>'
            )
            out.append(
                f'<path d="M{_num(x0)},{_num(y0 + ry)} a{_num(w / 2)},{ry} 0 0 0 {_num(w)},0" '
                f'fill="none" stroke="{st["stroke"]}" stroke-width="1.5"/>'
            )
        else:
            rx = 10 if self.kind == "service" else 2
            out.append(
                f'<rect x="{_num(x0)}" y="{_num(y0)}" width="{_num(w)}" height="{_num(h)}" '
                f'rx="{rx}" {paint}/>'
            )
        if self.kind == "topic":  # a log: the newest records at its right end
            for i in (1, 2, 3):
                lx = x0 + w - 7 * i
                out.append(
                    f'<line x1="{_num(lx)}" y1="{_num(y0 + 3)}" x2="{_num(lx)}" '
                    f'y2="{_num(y0 + h - 3)}" stroke="{st["stroke"]}" stroke-width="0.8"/>'
                )
        top = self.y - (15 * (len(self.lines) - 1)) / 2 + 5 + (3 if self.kind == "store" else 0)
        family = MONO if self.kind == "topic" else SANS
        weight = "normal" if self.kind in ("topic", "actor") else "bold"
        out.append(
            _text(
                self.x - (10 if self.kind == "topic" else 0),
                top,
                self.lines[0],
                13,
                text_anchor="middle",
                font_family=family,
                font_weight=weight,
            )
        )
        for i, line in enumerate(self.lines[1:], 1):
            out.append(_text(self.x, top + 15 * i, line, 11, text_anchor="middle", fill="#444444"))
        return out


def _edge(spec: dict[str, Any], nodes: dict[str, Node]) -> tuple[list[str], list[str]]:
    """An arrow (and its step's circle): drawn below the nodes, circles above them."""
    a, b = nodes[spec["from"]], nodes[spec["to"]]
    via = [tuple(p) for p in spec.get("via", [])]
    start = a.border(via[0] if via else (b.x, b.y))
    end = b.border(via[-1] if via else (a.x, a.y))
    points = [start, *via, end]
    off = spec.get("offset", 0)
    if off and not via:
        dx, dy = end[0] - start[0], end[1] - start[1]
        length = math.hypot(dx, dy)
        nx, ny = dy / length * off, -dx / length * off
        points = [(x + nx, y + ny) for x, y in points]
    path = " ".join(f"{_num(x)},{_num(y)}" for x, y in points)
    dash = ' stroke-dasharray="6 4"' if spec.get("dashed") else ""
    lines = [
        f'<polyline points="{path}" fill="none" stroke="#333333" stroke-width="1.4"'
        f'{dash} marker-end="url(#arrow)"/>'
    ]
    marks: list[str] = []
    if "step" in spec:
        segs = list(itertools.pairwise(points))
        (x1, y1), (x2, y2) = max(segs, key=lambda s: math.dist(*s))
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        marks.append(
            f'<circle cx="{_num(cx)}" cy="{_num(cy)}" r="9" fill="#2b5f8f" stroke="#ffffff"/>'
        )
        marks.append(
            _text(
                cx,
                cy + 4,
                str(spec["step"]),
                11,
                text_anchor="middle",
                fill="#ffffff",
                font_weight="bold",
            )
        )
    return lines, marks


def request_path(source: str) -> str:
    spec = tomllib.loads(source)
    nodes = {n["id"]: Node(**n) for n in spec["node"]}
    width = float(spec["width"])
    arrows: list[str] = []
    marks: list[str] = []
    for e in spec["edge"]:
        line, mark = _edge(e, nodes)
        arrows += line
        marks += mark
    body = [
        "<defs>",
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#333333"/></marker>',
        "</defs>",
        _text(20, 28, spec["title"], 16, font_weight="bold"),
        *arrows,
    ]
    for node in nodes.values():
        body += node.draw()
    body += marks
    y = max(n.y + n.h / 2 for n in nodes.values()) + 40
    for e in (e for e in spec["edge"] if "step" in e):
        body.append(
            f'<circle cx="32" cy="{_num(y - 4)}" r="8" fill="#2b5f8f"/>'
            + _text(32, y, str(e["step"]), 10, text_anchor="middle", fill="#ffffff")
        )
        body.append(_text(50, y, e["says"], 12.5))
        y += 21
    return _svg(width, y + 6, body, spec["title"])


def topics_named(source: str) -> list[str]:
    """The topic names in the picture (`<bridge>` marks a family's member)."""
    spec = tomllib.loads(source)
    return [n["lines"][0] for n in spec["node"] if n["kind"] == "topic"]


# ---- the benchmark plot --------------------------------------------------------------------
def benchmarks(source: str) -> str:
    rows = list(csv.DictReader(source.splitlines()))
    label_w, bar_w, top, row_h = 400, 430, 62, 30
    most = max(float(r["high"]) for r in rows)
    step = 10_000
    scale_max = math.ceil(most / step) * step
    width = label_w + bar_w + 110
    height = top + row_h * len(rows) + 56
    title = "Records per second (2-core machine; make bench)"
    body = [_text(20, 28, title, 16, font_weight="bold")]
    body.append(_text(20, 47, "bar: the figure (a range: the mean, the line spans the runs)", 11.5))
    for tick in range(0, scale_max + 1, step):
        x = label_w + bar_w * tick / scale_max
        body.append(
            f'<line x1="{_num(x)}" y1="{top - 6}" x2="{_num(x)}" '
            f'y2="{_num(top + row_h * len(rows))}" stroke="#dddddd"/>'
        )
        body.append(
            _text(
                x,
                top + row_h * len(rows) + 16,
                f"{tick // 1000}k",
                11,
                text_anchor="middle",
                fill="#555555",
            )
        )
    colours = {
        "core": "#2b5f8f",
        "export": "#3c7a36",
        "broker": "#9a5a10",
        "replay": "#7a3c8f",
    }
    for i, r in enumerate(rows):
        low, high = float(r["low"]), float(r["high"])
        mid = (low + high) / 2
        y = top + row_h * i
        body.append(_text(label_w - 10, y + 17, r["what"], 12, text_anchor="end", fill="#222222"))
        w = bar_w * mid / scale_max
        body.append(
            f'<rect x="{label_w}" y="{_num(y + 5)}" width="{_num(w)}" height="{row_h - 10}" '
            f'fill="{colours.get(r["section"], "#555555")}"/>'
        )
        if high > low:
            x1, x2 = label_w + bar_w * low / scale_max, label_w + bar_w * high / scale_max
            body.append(
                f'<line x1="{_num(x1)}" y1="{_num(y + 15)}" x2="{_num(x2)}" y2="{_num(y + 15)}" '
                'stroke="#000000" stroke-width="2"/>'
            )
        figure = f"{mid:,.0f}" if high == low else f"{low:,.0f}-{high:,.0f}"
        right = label_w + bar_w * high / scale_max
        body.append(_text(right + 6, y + 17, figure, 11.5, fill="#222222"))
    body.append(
        _text(
            label_w + bar_w / 2,
            height - 12,
            "records/s; date and section of each figure: docs/benchmarks.csv",
            11,
            text_anchor="middle",
            fill="#555555",
        )
    )
    return _svg(width, height, body, title)


# ---- the packages and their layers -------------------------------------------------------
#: The top-level modules that compose every package (no package imports them).
COMPOSERS = "app.py · cli.py · supervisor.py: compose everything"
#: Every package uses these; their arrows are left out.
EVERYWHERE = ("core", "kit")
#: Left to right within a row (fewest crossings); a package not named goes last.
ORDER = ("bridge", "datasets", "client", "proto", "traditional", "router", "llm", "learner")


def _ranks(uses: dict[str, frozenset[str]]) -> dict[str, int]:
    """Each package's row: one above the highest package it uses (core and proto: 0)."""
    ranks: dict[str, int] = {}

    def rank(name: str) -> int:
        if name not in ranks:
            ranks[name] = 1 + max((rank(u) for u in uses[name]), default=-1)
        return ranks[name]

    for name in uses:
        rank(name)
    return ranks


def packages(source: str) -> str:
    table: dict[str, Any] = {
        "__name__": "check_layers",
        "__file__": str(DOCS.parent / "scripts" / "check_layers.py"),
    }
    exec(compile(source, "check_layers.py", "exec"), table)
    uses: dict[str, frozenset[str]] = table["USES"]
    kit_parts = " · ".join(sorted(table["KIT_USES"]))
    ranks = _ranks(uses)
    ranks["proto"] = ranks["kit"]  # generated stubs: an edge beside kit, not under it
    top = max(ranks.values())
    width, row_h, y0 = 880.0, 78.0, 96.0
    nodes: dict[str, Node] = {}
    for r in range(top + 1):  # bottom up: a lone package sits above what it uses
        row = sorted(
            (n for n, k in ranks.items() if k == r),
            key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n),
        )
        y = y0 + (top - r) * row_h
        for i, name in enumerate(row):
            below = [nodes[u].x for u in uses[name] - set(EVERYWHERE) if u in nodes]
            x = (
                sum(below) / len(below)
                if len(row) == 1 and below
                else width * (i + 1) / (len(row) + 1)
            )
            kind = "store" if name == "core" else "service"
            lines = [name, kit_parts] if name == "kit" else [name]
            nodes[name] = Node(name, kind, lines, x, y)
    arrows: list[str] = []
    for name in sorted(uses):
        for used in sorted(uses[name] - set(EVERYWHERE)):
            line, _ = _edge({"from": name, "to": used}, nodes)
            arrows += line
    composers = Node("composers", "actor", [COMPOSERS], width / 2, 48)
    title = "Which package may use which (scripts/check_layers.py)"
    body = [
        "<defs>",
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#333333"/></marker>',
        "</defs>",
        _text(20, 22, title, 15, font_weight="bold"),
        *arrows,
        *composers.draw(),
    ]
    for node in nodes.values():
        body += node.draw()
    y = y0 + top * row_h + 56
    note = (
        "Rows: a package uses only packages in rows below it, and only those the table "
        "declares (arrows); every package above core uses core and kit."
    )
    body.append(_text(20, y, note, 12, fill="#444444"))
    return _svg(width, y + 14, body, title)


#: picture -> (its source, how it is drawn)
IMAGES: dict[str, tuple[str, Callable[[str], str]]] = {
    "request-path.svg": ("request-path.toml", request_path),
    "benchmarks.svg": ("benchmarks.csv", benchmarks),
    "packages.svg": ("../scripts/check_layers.py", packages),
}


def draw(name: str) -> str:
    source, fn = IMAGES[name]
    return fn((DOCS / source).read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    stale = []
    for name in IMAGES:
        text = draw(name)
        target = DOCS / name
        if args.check:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            target.write_text(text, encoding="utf-8")
    for name in stale:
        print(f"docs/{name} is out of date with docs/{IMAGES[name][0]}: run `make docs`")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
