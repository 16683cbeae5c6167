"""The report's chart of opens and clicks over time: inline SVG drawn on the server
(no JavaScript, no external files), one line per series, machine hits dashed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from html import escape

SERIES = (("opens", "#017cee", ""), ("clicks", "#12b76a", ""), ("machine", "#98a2b3", "4 3"))


def svg_chart(
    series: list[tuple[datetime, int, int, int]],
    label: Callable[[datetime], str] = lambda d: d.strftime("%m-%d %H:%M"),
    width: int = 760,
    height: int = 240,
) -> str:
    if not series:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="60" role="img" '
            'aria-label="no opens or clicks yet"><text x="8" y="32" fill="#7b8794">'
            "no opens or clicks yet</text></svg>"
        )
    left, right, top, bottom = 44, 12, 14, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(max(row[1:]) for row in series) or 1
    n = len(series)

    def x(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: int) -> float:
        return top + plot_h - plot_h * v / peak

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="report-chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="opens and clicks over time" style="background:#fff;border:1px solid #d8dde3">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#9aa5b1"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#9aa5b1"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" font-size="11">{peak}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" font-size="11">0</text>',
    ]
    for col, (name, color, dash) in enumerate(SERIES, start=1):
        points = " ".join(f"{x(i):.1f},{y(_count(row, col)):.1f}" for i, row in enumerate(series))
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline class="series-{name}" fill="none" stroke="{color}" stroke-width="2"'
            f'{dashed} points="{points}"/>'
        )
        for i, row in enumerate(series):
            if row[col]:
                parts.append(
                    f'<circle cx="{x(i):.1f}" cy="{y(_count(row, col)):.1f}" r="2.5" fill="{color}">'
                    f"<title>{escape(label(row[0]))}: {row[col]} {name}</title></circle>"
                )
        lx = left + 10 + (col - 1) * 120
        parts.append(
            f'<line x1="{lx}" y1="{height - 10}" x2="{lx + 18}" y2="{height - 10}" '
            f'stroke="{color}" stroke-width="2"{dashed}/>'
            f'<text x="{lx + 22}" y="{height - 6}" font-size="11">{name}</text>'
        )
    first, last = escape(label(series[0][0])), escape(label(series[-1][0]))
    parts.append(f'<text x="{left}" y="{top + plot_h + 14}" font-size="11">{first}</text>')
    if n > 1:
        parts.append(
            f'<text x="{left + plot_w}" y="{top + plot_h + 14}" text-anchor="end" '
            f'font-size="11">{last}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _count(row: tuple[datetime, int, int, int], col: int) -> int:
    """Column `col` (1..3) of a series row: a count (column 0 is the bucket's time)."""
    value = row[col]
    assert isinstance(value, int)
    return value
