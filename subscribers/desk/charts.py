"""Small SVG charts drawn on the server: the geometry here, the markup in templates/web/desk/charts.html."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CHART_WIDTH = 720
CHART_HEIGHT = 180
AXIS_LEFT = 44
AXIS_BOTTOM = 22
AXIS_TOP = 10  # room for the top tick's label


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int
    label: str
    series: int  # 0, 1, ...: which of the series (its colour and legend entry)


@dataclass(frozen=True)
class BarChart:
    title: str
    width: int
    height: int
    bars: tuple[Bar, ...]
    ticks: tuple[tuple[float, int], ...]  # (y, value) of the horizontal grid lines
    labels: tuple[tuple[float, str], ...]  # (x, text) under the axis
    legend: tuple[str, ...]
    top: int


def bar_chart(
    title: str, labels: Sequence[str], series: Sequence[Sequence[int]], legend: Sequence[str], every: int = 1
) -> BarChart:
    """Grouped bars: one group per label, one bar per series; every `every`-th label is written under the axis."""
    top = _nice(max((value for values in series for value in values), default=0))
    plot_width = CHART_WIDTH - AXIS_LEFT
    plot_height = CHART_HEIGHT - AXIS_BOTTOM - AXIS_TOP
    group = plot_width / max(len(labels), 1)
    bar_width = max(group * 0.8 / max(len(series), 1), 0.5)
    bars = []
    for index, label in enumerate(labels):
        for number, values in enumerate(series):
            value = values[index]
            height = plot_height * value / top
            x = AXIS_LEFT + index * group + group * 0.1 + number * bar_width
            bars.append(
                Bar(
                    round(x, 2),
                    round(AXIS_TOP + plot_height - height, 2),
                    round(bar_width, 2),
                    round(height, 2),
                    value,
                    label,
                    number,
                )
            )
    ticks = tuple((round(AXIS_TOP + plot_height - plot_height * step / 4, 2), top * step // 4) for step in range(5))
    written = tuple(
        (round(AXIS_LEFT + index * group + group / 2, 2), label)
        for index, label in enumerate(labels)
        if index % every == 0
    )
    return BarChart(title, CHART_WIDTH, CHART_HEIGHT, tuple(bars), ticks, written, tuple(legend), top)


def horizontal_counts(rows: Sequence[tuple[str, int]]) -> list[tuple[str, int, float]]:
    """Rows for a bar-per-line chart: label, count, and the bar's share of the longest (0 to 100)."""
    longest = max((count for _label, count in rows), default=0) or 1
    return [(label, count, round(100 * count / longest, 1)) for label, count in rows]


def _nice(value: int) -> int:
    """The smallest round number (1, 2 or 5 times a power of ten, divisible by 4 steps) at or above `value`."""
    if value <= 4:
        return 4
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            candidate = step * magnitude
            if candidate >= value and candidate % 4 == 0:
                return candidate
        magnitude *= 10
