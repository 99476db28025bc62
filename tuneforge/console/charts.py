"""Charts drawn on the server as inline SVG (no chart library, nothing to load): stacked bars by day."""

from __future__ import annotations

import math
from html import escape

COLORS = ["#0550ae", "#bc4c00", "#116329", "#8250df", "#a40e26", "#1b7c83", "#57606a"]


def _nice(top: float) -> float:
    """A round axis maximum at or above `top`."""
    if top <= 0:
        return 1.0
    step = 10 ** math.floor(math.log10(top))
    return next(step * m for m in (1, 2, 2.5, 5, 10) if step * m >= top)


def stacked_bars(days: list[str], series: dict[str, list[float]], *, label: str, unit: str = "") -> str:
    """One bar per day, stacked by series (in the order given); a legend; each segment has a tooltip."""
    width, height, left, bottom, top = 720, 220, 56, 28, 10
    if not days:
        return '<p class="muted">Nothing captured in this period.</p>'
    totals = [sum(v[i] for v in series.values()) for i in range(len(days))]
    ymax = _nice(max(totals))
    slot = (width - left - 8) / len(days)
    bar = max(min(slot * 0.7, 36), 2)

    def y(v: float) -> float:
        return top + (1 - v / ymax) * (height - top - bottom)

    def fmt(v: float) -> str:
        if unit != "$":
            return f"{v:,g}"
        return f"${v:,.2f}" if v >= 1 or v == 0 else f"${v:.3g}"

    out = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">']
    for i in range(5):
        v = ymax * i / 4
        out.append(f'<line x1="{left}" x2="{width - 8}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#d0d7de"/>'
                   f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{fmt(v)}</text>')
    every = max(1, len(days) // 8)
    for i, day in enumerate(days):
        x = left + i * slot + (slot - bar) / 2
        base = 0.0
        for j, (name, values) in enumerate(series.items()):
            v = values[i]
            if v > 0:
                tip = f"{escape(day)} {escape(name)}: {fmt(v)}"
                out.append(f'<rect x="{x:.1f}" y="{y(base + v):.1f}" width="{bar:.1f}" '
                           f'height="{y(base) - y(base + v):.1f}" fill="{COLORS[j % len(COLORS)]}">'
                           f'<title>{tip}</title></rect>')
                base += v
        if i % every == 0:
            out.append(f'<text x="{x + bar / 2:.1f}" y="{height - 8}" text-anchor="middle">{escape(day[5:])}</text>')
    out.append("</svg>")
    legend = "".join(f'<span><i style="background:{COLORS[j % len(COLORS)]}"></i>{escape(name)}</span>'
                     for j, name in enumerate(series))
    return "".join(out) + f'<div class="legend">{legend}</div>'
