"""Line plots as PNG with Pillow alone: axes, ticks, gridlines, a legend; no plotting library.

Used for the per-step curves of `vidlat evaluate` and `vidlat report`. Series are lists of floats
against steps 1..F (or given x values); NaN and infinite values leave gaps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from vidlat.errors import DataError

# tab10: distinguishable, and what readers of matplotlib plots are used to.
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
AXIS, GRID, TEXT = (60, 60, 60), (225, 225, 225), (20, 20, 20)
MARGIN = {"left": 70, "right": 20, "top": 34, "bottom": 48}
LEGEND_ROW = 14


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """About `count` round ticks (steps of 1, 2 or 5 times a power of ten) covering [lo, hi];
    with `integer`, steps of at least 1 (for step numbers)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi - lo < 1e-12 * max(1.0, abs(hi)):
        lo, hi = lo - 0.5 * max(abs(lo), 1e-3), hi + 0.5 * max(abs(hi), 1e-3)
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(step, 1.0) if integer else step
    first = math.floor(lo / step) * step
    ticks, value = [], first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _label(value: float) -> str:
    """Tick text: short, no float noise (0.30000000000000004 -> 0.3)."""
    return f"{value:.4g}"


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _inside(ticks: list[float], lo: float, hi: float) -> list[float]:
    return [t for t in ticks if lo - 1e-9 <= t <= hi + 1e-9]


class _Frame:
    """Maps data coordinates to pixels inside the plot area."""

    def __init__(self, size: tuple[int, int], xs: list[float], ys: list[float], legend_rows: int):
        width, height = size
        self.left, self.top = MARGIN["left"], MARGIN["top"]
        self.right = width - MARGIN["right"]
        self.bottom = height - MARGIN["bottom"] - legend_rows * LEGEND_ROW
        whole = all(float(x).is_integer() for x in xs)
        # The x axis spans the data exactly; the y axis with a 5% margin so no point sits on it.
        self.x0, self.x1 = min(xs), max(xs)
        if self.x1 == self.x0:
            self.x0, self.x1 = self.x0 - 1, self.x1 + 1
        pad = 0.05 * (max(ys) - min(ys)) or 0.05 * max(abs(max(ys)), 1e-3)
        self.y0, self.y1 = min(ys) - pad, max(ys) + pad
        self.xticks = _inside(nice_ticks(self.x0, self.x1, 8, whole), self.x0, self.x1)
        self.yticks = _inside(nice_ticks(self.y0, self.y1, 6), self.y0, self.y1)

    def px(self, x: float, y: float) -> tuple[float, float]:
        u = self.left + (x - self.x0) / (self.x1 - self.x0) * (self.right - self.left)
        v = self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)
        return u, v


def _axes(draw: ImageDraw.ImageDraw, frame: _Frame, font, xlabel: str, ylabel: str) -> None:
    """Gridlines, tick labels, the axis lines and their labels."""
    for y in frame.yticks:
        _, v = frame.px(frame.x0, y)
        draw.line([(frame.left, v), (frame.right, v)], fill=GRID)
        draw.text((frame.left - 6, v), _label(y), fill=TEXT, font=font, anchor="rm")
    for x in frame.xticks:
        u, _ = frame.px(x, frame.y0)
        draw.line([(u, frame.top), (u, frame.bottom)], fill=GRID)
        draw.text((u, frame.bottom + 5), _label(x), fill=TEXT, font=font, anchor="mt")
    draw.line([(frame.left, frame.top), (frame.left, frame.bottom)], fill=AXIS, width=1)
    draw.line([(frame.left, frame.bottom), (frame.right, frame.bottom)], fill=AXIS, width=1)
    centre = (frame.left + frame.right) / 2
    draw.text((centre, frame.bottom + 22), xlabel, fill=TEXT, font=font, anchor="mt")
    draw.text((6, frame.top - 20), ylabel, fill=TEXT, font=font, anchor="lt")


def _polyline(draw, frame: _Frame, xs, ys, colour) -> None:
    """The series as line segments with a dot per point; a non-finite value breaks the line."""
    run: list[tuple[float, float]] = []
    for x, y in [*zip(xs, ys, strict=True), (None, None)]:
        if y is None or not math.isfinite(y):
            if len(run) > 1:
                draw.line(run, fill=colour, width=2, joint="curve")
            run = []
            continue
        point = frame.px(x, y)
        run.append(point)
        draw.ellipse([point[0] - 2, point[1] - 2, point[0] + 2, point[1] + 2], fill=colour)


def line_plot(
    path: str | Path,
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    xlabel: str = "future step",
    ylabel: str = "",
    x: Sequence[float] | None = None,
    size: tuple[int, int] = (640, 400),
) -> Path:
    """Draw each series (label -> y values) against x (default 1..len) into the PNG at `path`."""
    series = {k: [float(v) for v in vs] for k, vs in series.items() if len(vs)}
    ys = [v for vs in series.values() for v in _finite(vs)]
    if not ys:
        raise DataError(f"nothing to plot for {title!r}: every series is empty or not finite")
    longest = max(len(vs) for vs in series.values())
    xs = [float(v) for v in x] if x is not None else [float(i + 1) for i in range(longest)]
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    frame = _Frame(size, xs, ys, legend_rows=len(series))
    draw.text((size[0] / 2, 8), title, fill=TEXT, font=font, anchor="mt")
    _axes(draw, frame, font, xlabel, ylabel)
    for i, (label, values) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        _polyline(draw, frame, xs[: len(values)], values, colour)
        row = frame.bottom + 40 + i * LEGEND_ROW
        draw.line([(frame.left, row + 5), (frame.left + 24, row + 5)], fill=colour, width=3)
        draw.text((frame.left + 30, row), label, fill=TEXT, font=font, anchor="lt")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
