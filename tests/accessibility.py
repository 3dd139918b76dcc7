"""Accessibility checks a Chromium page runs on itself (tests/accessibility.js): text contrast (WCAG 2.1 1.4.3,
from the computed colours), a name for every form control (4.1.2), and the keyboard (2.1.1, 2.4.3, 2.4.7): Tab
reaches every control in document order, each with a visible focus indicator, and no positive tabindex. Each
function returns the violations it found, one line each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHECKS = (Path(__file__).parent / "accessibility.js").read_text(encoding="utf-8")
MAX_EXTRA_TABS = 400  # tab stops inside frames (an email preview's links) on top of the page's own


def _run(page: Any, check: str) -> Any:
    if not page.evaluate("Boolean(window.deskChecks)"):
        page.evaluate(CHECKS)
    return page.evaluate(f"window.deskChecks.{check}()")


def contrast_violations(page: Any) -> list[str]:
    return list(_run(page, "contrast"))


def name_violations(page: Any) -> list[str]:
    """Form controls without an accessible name, and elements with a positive tabindex."""
    return list(_run(page, "names"))


def keyboard_violations(page: Any) -> list[str]:
    """Tab from the top of the page through to its end: every stop, in order, each with a visible focus."""
    stops: list[str] = _run(page, "mark")
    found: list[str] = []
    reached: list[int] = []
    for _ in range(len(stops) + MAX_EXTRA_TABS):
        page.keyboard.press("Tab")
        where, visible, html = _run(page, "focused")
        if where == "frame":
            continue
        if where not in ("", "other") and reached and int(where) == reached[-1]:
            continue  # the next part of the same control (a date field's day, month and year)
        if where == "" or (where != "other" and reached and int(where) < reached[-1]):
            break  # past the last stop: back to the address bar, or round to the first
        if where == "other":
            found.append(f"Tab reached {html}, no tab stop of the page's own (hidden, or focusable by accident)")
            continue
        reached.append(int(where))
        if not visible:
            found.append(f"{stops[int(where)]} shows no focus indicator (no outline or box shadow when focused)")
    if reached != list(range(len(stops))):
        missed = [stops[index] for index in range(len(stops)) if index not in reached]
        found.append(f"Tab did not reach every stop in document order; missed or out of order: {missed[:5]}")
    return found
