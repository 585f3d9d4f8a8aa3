"""A run's graph drawn as SVG: nodes in columns by level, edges from dependencies.

Pure: ``layout(nodes)`` places the boxes, ``svg(nodes, statuses)`` draws them
with a CSS class per status (the stylesheet colours them). No library: a
layered drawing of a DAG whose levels the planner already computed is a few
lines, and the page stays readable without JavaScript.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 176, 46, 50, 18, 10


@dataclass(frozen=True, slots=True)
class Placed:
    id: str
    target: str
    deps: tuple[str, ...]
    x: int
    y: int


def layout(nodes: Sequence[Mapping[str, Any]]) -> tuple[list[Placed], int, int]:
    """The boxes (in the nodes' order), the drawing's width and height."""
    rows: dict[int, int] = {}
    placed = []
    for node in nodes:
        level = int(node.get("level", 0))
        row = rows.get(level, 0)
        rows[level] = row + 1
        placed.append(
            Placed(
                str(node["id"]),
                str(node.get("target", "")),
                tuple(str(d) for d in node.get("deps", ())),
                PAD + level * (BOX_W + GAP_X),
                PAD + row * (BOX_H + GAP_Y),
            )
        )
    levels = max(rows, default=0) + 1
    height = max(rows.values(), default=1)
    return (
        placed,
        2 * PAD + levels * BOX_W + (levels - 1) * GAP_X,
        2 * PAD + height * BOX_H + (height - 1) * GAP_Y,
    )


def svg(nodes: Sequence[Mapping[str, Any]], statuses: Mapping[str, str]) -> str:
    """The SVG of the graph; each node's group has ``data-node`` and ``data-status``."""
    placed, width, height = layout(nodes)
    at = {p.id: p for p in placed}
    parts = [
        f'<svg class="dag" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="graph of the run, {len(placed)} nodes">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>',
    ]
    for p in placed:
        for dep in p.deps:
            d = at.get(dep)
            if d is None:
                continue
            x1, y1 = d.x + BOX_W, d.y + BOX_H // 2
            x2, y2 = p.x, p.y + BOX_H // 2
            mid = (x1 + x2) // 2
            parts.append(
                f'<path class="edge" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" '
                'marker-end="url(#arrow)"/>'
            )
    for p in placed:
        status = statuses.get(p.id, "pending")
        node, target, state = escape(p.id), escape(_short(p.target)), escape(status)
        parts.append(
            f'<g class="node s-{state}" data-node="{node}" data-status="{state}">'
            f"<title>{node}: {state} ({escape(p.target)})</title>"
            f'<rect x="{p.x}" y="{p.y}" width="{BOX_W}" height="{BOX_H}" rx="7"/>'
            f'<text x="{p.x + 10}" y="{p.y + 19}" class="id">{node}</text>'
            f'<text x="{p.x + 10}" y="{p.y + 36}" class="meta">{target} · {state}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _short(text: str, limit: int = 18) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["layout", "svg"]
