"""Line charts as SVG text, drawn on the server: no JavaScript, no fonts or files to fetch.

Pure functions from numbers to a string. Every name that reaches the SVG is escaped here (an
arm called ``<b>&"`` draws as text, never as markup). Each series is one
``<g class="series" data-series="...">`` holding its band (``<path class="band">``, the
interval) and its line (``<path class="line">``), so a test, a screen reader (each group has
a ``<title>``) and a stylesheet can find it. Scales to its container through ``viewBox``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

# Okabe-Ito colours: told apart with the common kinds of colour blindness. Control is grey.
CONTROL_COLOUR = "#555555"
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")

# Narrow enough that 13-unit text stays legible when a phone scales the chart to ~370 px.
WIDTH, HEIGHT = 560, 280
LEFT, RIGHT, TOP, BOTTOM = 52, 14, 46, 30  # margins inside the viewBox


@dataclass(frozen=True, slots=True)
class Point:
    x: float                  # position on the x axis, in units of ``x_labels`` (0 = first)
    y: float
    lo: float | None = None   # interval band, drawn when both ends are given
    hi: float | None = None


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    points: tuple[Point, ...]
    colour: str
    dashed: bool = False
    step: bool = False        # hold each value until the next point (weights in force)


def colour(index: int) -> str:
    """Colour of the ``index``-th arm; arm 0 is the control."""
    return CONTROL_COLOUR if index == 0 else PALETTE[(index - 1) % len(PALETTE)]


def line_chart(title: str, x_labels: Sequence[str], series: Sequence[Series], *,
               y_format: Callable[[float], str] = lambda v: f"{v:g}",
               y_range: tuple[float, float] | None = None, chart_id: str = "chart") -> str:
    """An SVG line chart of ``series`` over ``x_labels`` (days), titled ``title``."""
    lo, hi = y_range if y_range is not None else _y_extent(series)
    ticks = nice_ticks(lo, hi)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    span_x = max(len(x_labels) - 1, 1)

    def sx(x: float) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * x / span_x

    def sy(y: float) -> float:
        return HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * (y - lo) / ((hi - lo) or 1.0)

    title_id = f"{escape(chart_id)}-title"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'class="chart" role="img" aria-labelledby="{title_id}">',
             f'<title id="{title_id}">{escape(title)}</title>',
             f'<rect class="frame" x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>']
    parts += _grid(ticks, sx, sy, span_x, x_labels, y_format)
    for s in series:
        parts.append(_series(s, sx, sy))
    parts += _legend(series)
    if not x_labels:
        parts.append(f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" '
                     'text-anchor="middle">no data yet</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _y_extent(series: Sequence[Series]) -> tuple[float, float]:
    values = [v for s in series for p in s.points for v in (p.y, p.lo, p.hi)
              if v is not None and math.isfinite(v)]
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if lo >= 0 and lo < 0.5 * hi:
        lo = 0.0  # rates and means read best from zero, unless that squashes the lines flat
    return (lo, hi) if hi > lo else (lo - 0.5 if lo else 0.0, hi + 0.5 if hi else 1.0)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo, lo + 1.0]
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks = [first]
    while ticks[-1] < hi - 1e-12 * step:
        ticks.append(first + len(ticks) * step)
    return ticks


def _grid(ticks: list[float], sx: Callable[[float], float], sy: Callable[[float], float],
          span_x: int, x_labels: Sequence[str], y_format: Callable[[float], str]) -> list[str]:
    out = ['<g class="axes" fill="#333" font-size="13" font-family="sans-serif">']
    for t in ticks:
        y = sy(t)
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                   'stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{escape(y_format(t))}</text>')
    every = max(1, math.ceil(len(x_labels) / 5))
    last = len(x_labels) - 1
    for i, label in enumerate(x_labels):
        if i != last and (i % every or last - i < every):  # the last day always, no overlap
            continue
        anchor = "end" if i == last and i else "start" if i == 0 else "middle"
        out.append(f'<text x="{sx(i):.1f}" y="{HEIGHT - BOTTOM + 18}" '
                   f'text-anchor="{anchor}">{escape(label)}</text>')
    out.append("</g>")
    return out


def _series(s: Series, sx: Callable[[float], float], sy: Callable[[float], float]) -> str:
    name, colour_ = escape(s.name), escape(s.colour)
    out = [f'<g class="series" data-series="{name}"><title>{name}</title>']
    banded = [p for p in s.points if p.lo is not None and p.hi is not None]
    if len(banded) > 1:
        upper = [(sx(p.x), sy(p.hi)) for p in banded]  # type: ignore[arg-type]
        lower = [(sx(p.x), sy(p.lo)) for p in reversed(banded)]  # type: ignore[arg-type]
        out.append(f'<path class="band" d="{_path(upper + lower)} Z" fill="{colour_}" '
                   'fill-opacity="0.15" stroke="none"/>')
    coords = _step(s.points) if s.step else [(p.x, p.y) for p in s.points]
    xy = [(sx(x), sy(y)) for x, y in coords]
    dash = ' stroke-dasharray="6 4"' if s.dashed else ""
    if len(xy) == 1:
        out.append(f'<circle class="line" cx="{xy[0][0]:.1f}" cy="{xy[0][1]:.1f}" r="3" '
                   f'fill="{colour_}"/>')
    elif xy:
        out.append(f'<path class="line" d="{_path(xy)}" fill="none" stroke="{colour_}" '
                   f'stroke-width="2"{dash}/>')
    out.append("</g>")
    return "".join(out)


def _step(points: Sequence[Point]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for i, p in enumerate(points):
        if i:
            out.append((p.x, points[i - 1].y))
        out.append((p.x, p.y))
    return out


def _path(xy: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(xy))


def _legend(series: Sequence[Series]) -> list[str]:
    out = ['<g class="legend" font-size="13" font-family="sans-serif">']
    x, y = LEFT, 12
    for s in series:
        width = 32 + 8 * min(len(s.name), 24)
        if x + width > WIDTH and x > LEFT:  # wrap to a second row (TOP leaves room for two)
            x, y = LEFT, y + 17
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(f'<line x1="{x}" x2="{x + 18}" y1="{y}" y2="{y}" '
                   f'stroke="{escape(s.colour)}" stroke-width="3"{dash}/>')
        out.append(f'<text x="{x + 22}" y="{y + 4}" fill="#222">{escape(s.name[:24])}</text>')
        x += width
    out.append("</g>")
    return out
