"""Charts of runs per time bucket: processed (green) and failed (red) bars side by side, as
inline SVG, with labelled axes (a y scale at 0, half and the top; times in UTC under the bars).

Drawn server-side, escaped text only, so the pages need no script.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

#: Space left of, above and under the plot for the axes' labels, in pixels.
LEFT, TOP, BOTTOM = 44, 16, 34
#: Bar colours: processed, failed.
COLOURS = ("#2f9e44", "#e03131")


def _nice_top(peak: int) -> int:
    """The y scale's top: ``peak`` rounded up to an even number (so the half is a whole one)."""
    return max(2, peak + peak % 2)


def runs_chart(
    buckets: Sequence[dict[str, Any]],
    *,
    unit: str,
    time_format: str = "%H:%M",
    width: int = 720,
    height: int = 160,
) -> Markup:
    """SVG for rows with ``bucket`` (UTC datetime), ``processed`` and ``failed`` counts.

    ``unit`` names a bucket in the y axis title (``runs per <unit>``); ``time_format`` labels
    the first, middle and last buckets.
    """
    top = _nice_top(max([0, *(max(b["processed"], b["failed"]) for b in buckets)]))
    plot_w, plot_h = width - LEFT - 8, height
    slot = plot_w / max(1, len(buckets))
    bar = max(1.0, slot / 2 - 1)
    base = TOP + plot_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {base + BOTTOM}"'
        f' class="chart" role="img" aria-label="processed and failed runs per {escape(unit)}">',
        f'<text x="0" y="10" class="axis">runs per {escape(unit)}</text>',
    ]
    for value in (0, top // 2, top):
        y = base - plot_h * value / top
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{width - 8}" y2="{y:.1f}"'
            f' stroke="{"#999" if value == 0 else "#eee"}"/>'
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" class="axis">{value}</text>'
        )
    for i, b in enumerate(buckets):
        x = LEFT + i * slot
        for j, key in enumerate(("processed", "failed")):
            h = plot_h * b[key] / top
            parts.append(
                f'<rect x="{x + j * bar:.1f}" y="{base - h:.1f}" width="{bar:.1f}"'
                f' height="{h:.1f}" fill="{COLOURS[j]}"><title>{escape(key)} {b[key]}'
                f" at {b['bucket']:{time_format}} UTC</title></rect>"
            )
    if buckets:
        last = len(buckets) - 1
        for i, anchor in {0: "start", last // 2: "middle", last: "end"}.items():
            x = LEFT + (i + (0 if anchor == "start" else 1 if anchor == "end" else 0.5)) * slot
            parts.append(
                f'<text x="{x:.1f}" y="{base + 14}" text-anchor="{anchor}" class="axis">'
                f"{buckets[i]['bucket']:{time_format}}</text>"
            )
        parts.append(
            f'<text x="{LEFT + plot_w / 2:.1f}" y="{base + 30}" text-anchor="middle"'
            ' class="axis">time (UTC)</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
