"""The desk's SVG chart geometry: bars stand on the axis, the tallest reaches the top tick, labels thin out."""

from __future__ import annotations

from subscribers.desk import charts


def test_bars_stand_on_the_axis_and_fit() -> None:
    chart = charts.bar_chart("t", ["a", "b", "c"], [[1, 7, 0], [2, 0, 3]], ("x", "y"))
    axis = charts.CHART_HEIGHT - charts.AXIS_BOTTOM
    assert all(abs(bar.y + bar.height - axis) < 0.01 for bar in chart.bars)
    assert chart.top >= 7 and min(bar.y for bar in chart.bars) >= charts.AXIS_TOP
    assert [value for _y, value in chart.ticks][-1] == chart.top


def test_every_nth_label_is_written() -> None:
    chart = charts.bar_chart("t", [str(day) for day in range(30)], [[1] * 30], ("x",), every=10)
    assert [label for _x, label in chart.labels] == ["0", "10", "20"]


def test_empty_series_draw_nothing_tall() -> None:
    chart = charts.bar_chart("t", [], [], ())
    assert chart.bars == () and chart.top == 4
    assert charts.horizontal_counts([("a", 5), ("b", 0)]) == [("a", 5, 100.0), ("b", 0, 0.0)]
