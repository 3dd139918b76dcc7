"""Benchmark: render each sample issue (target < 500 ms on one core) and fill slots (target > 20,000/s)."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from newsletter.mime import MessageTemplate, Recipient
from newsletter.render import RenderedIssue, SlotTemplate, render_issue, render_issue_file
from newsletter.settings import Settings

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "issues"
RENDER_RUNS = 5
FILLS = 50_000
RENDER_TARGET_MS = 500
FILL_TARGET_PER_SECOND = 20_000
PERSONAL_FRONT = (
    "---\nsubject: \"{{ name | default('朋友') }}，本周 AI 简报\"\n---\n\n{{ name | default('朋友') }}，你好！\n\n"
)
PERSONAL_BODY = "\n\n{{ name | default('朋友') }}，下周见。你在 {{ city | default('地球') }}。\n"


def main(paths: list[Path]) -> int:
    settings = Settings(
        from_address="editor@example.org",
        from_name="编辑部",
        newsletter_name="AI 简报",
        base_url="https://news.example.org",
        postal_address="1 Example Street, Springfield",
        secret_key="bench",
    )
    render_issue_file(paths[0], settings)  # warm up imports and template caches
    ok = True
    issues = []
    for path in paths:
        timings = []
        for _ in range(RENDER_RUNS):
            started = time.perf_counter()
            issue = render_issue_file(path, settings)
            timings.append((time.perf_counter() - started) * 1000)
        median = statistics.median(timings)
        ok &= median < RENDER_TARGET_MS
        print(
            f"render {path.name}: median {median:.0f} ms, best {min(timings):.0f} ms "
            f"(target < {RENDER_TARGET_MS} ms), HTML {len(issue.html.encode()) / 1024:.1f} KB"
        )
        issues.append((path, issue))
        # The same issue with personal fields in the subject and the body: the subject is encoded per recipient.
        personal = PERSONAL_FRONT + path.read_text(encoding="utf-8-sig") + PERSONAL_BODY
        issues.append((path.with_name(f"{path.stem} + personal fields"), render_issue(personal, settings)))
    # Every sample: the fill cost follows the size of the issue and the encoding its parts get.
    for path, issue in issues:
        for name, rate in fill_rates(issue, settings).items():
            ok &= rate > FILL_TARGET_PER_SECOND
            print(f"{path.stem} {name}: {rate:,.0f} per second (target > {FILL_TARGET_PER_SECOND:,})")
    return 0 if ok else 1


def fill_rates(issue: RenderedIssue, settings: Settings) -> dict[str, float]:
    """Slot fills per second: the HTML alone, and the complete MIME message of one recipient."""
    html = SlotTemplate(issue.html)
    values = {
        "email": "reader@example.com",
        "name": "张三",
        "unsubscribe_url": "https://news.example.org/u/x",
        "preferences_url": "https://news.example.org/p/x",
        "view_url": "https://news.example.org/issues/s",
    }
    rates = {"HTML slot fill": _rate(lambda i: html.fill(values | {"email": f"reader{i}@example.com"}))}
    template = MessageTemplate.build(issue, settings)

    def fill_message(i: int) -> None:
        template.fill(
            Recipient(
                f"reader{i}@example.com",
                "张三",
                f"<{i}.1.abc@example.org>",
                f"https://news.example.org/unsubscribe/token{i}",
                f"mailto:unsubscribe+{i:x}-abc@example.org?subject=unsubscribe",
                f"https://news.example.org/preferences/token{i}",
                {"city": "上海"},
            )
        )

    rates["complete message fill"] = _rate(fill_message)
    return rates


def _rate(fill: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for i in range(FILLS):
        fill(i)
    return FILLS / (time.perf_counter() - started)


if __name__ == "__main__":
    sys.exit(main([Path(arg) for arg in sys.argv[1:]] or sorted(SAMPLES.glob("*.md"))))
