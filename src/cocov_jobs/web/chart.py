"""The overview chart: processed and failed runs per time bucket as an inline SVG bar chart.

Bars are drawn on a :data:`WIDTH` × :data:`HEIGHT` canvas, scaled to the largest bucket; the
processed bar is green and the failed bar red, side by side. Built server-side, escaped text
only, so the page needs no script.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

#: Canvas size in pixels.
WIDTH, HEIGHT = 720, 160
#: Space left for the axis labels.
MARGIN = 24
#: Bar colours: processed, failed.
COLOURS = ("#2f9e44", "#e03131")


def runs_chart(buckets: Sequence[dict[str, Any]]) -> Markup:
    """SVG for rows with ``bucket`` (datetime), ``processed`` and ``failed`` counts."""
    peak = max([1, *(max(b["processed"], b["failed"]) for b in buckets)])
    slot = (WIDTH - MARGIN) / max(1, len(buckets))
    bar = max(1.0, slot / 2 - 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT + MARGIN}"'
        f' class="chart" role="img" aria-label="processed and failed runs">',
        f'<text x="0" y="12" class="axis">{peak}</text>',
        f'<line x1="{MARGIN}" y1="{HEIGHT}" x2="{WIDTH}" y2="{HEIGHT}" stroke="#999"/>',
    ]
    for i, b in enumerate(buckets):
        x = MARGIN + i * slot
        for j, key in enumerate(("processed", "failed")):
            h = (HEIGHT - 16) * b[key] / peak
            parts.append(
                f'<rect x="{x + j * bar:.1f}" y="{HEIGHT - h:.1f}" width="{bar:.1f}"'
                f' height="{h:.1f}" fill="{COLOURS[j]}"><title>{escape(key)} {b[key]}'
                f" at {b['bucket']:%H:%M}</title></rect>"
            )
    if buckets:
        first, last = buckets[0]["bucket"], buckets[-1]["bucket"]
        parts.append(f'<text x="{MARGIN}" y="{HEIGHT + 16}" class="axis">{first:%H:%M}</text>')
        parts.append(
            f'<text x="{WIDTH}" y="{HEIGHT + 16}" text-anchor="end" class="axis">'
            f"{last:%H:%M}</text>"
        )
    else:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" class="axis">no runs yet</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
