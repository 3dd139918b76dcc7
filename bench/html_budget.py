"""Size budget of the email's HTML: inline-style share (target <= 25%) and the HTML part as sent (< 102 KB).

Usage: python bench/html_budget.py [ISSUE.md ...]   (default: the bundled samples and the link-heavy test issue)
"""

from __future__ import annotations

import sys
from pathlib import Path

from newsletter.mime import MessageTemplate
from newsletter.preflight import GMAIL_CLIP_BYTES, html_part_bytes, inline_style_share
from newsletter.preview import sample_recipient
from newsletter.render import render_issue_file
from newsletter.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ISSUES = [
    *sorted((ROOT / "newsletter" / "samples").glob("*.md")),
    ROOT / "tests" / "issues" / "link-heavy-weekly.md",
]
MAX_INLINE_STYLE_SHARE = 0.25


def main(paths: list[Path]) -> int:
    settings = Settings(
        database_url="sqlite://",
        from_address="editor@example.org",
        newsletter_name="AI 简报",
        base_url="https://news.example.org",
        postal_address="1 Example Street, Springfield",
        secret_key="bench",
        remote_image_sizes=False,
    )
    ok = True
    print(f"{'issue':32} {'HTML KB':>8} {'inline styles':>14} {'HTML part KB':>13} {'message KB':>11}")
    for path in paths:
        issue = render_issue_file(path, settings)
        message = MessageTemplate.build(issue, settings).fill(sample_recipient(settings))
        share, part = inline_style_share(issue.html), html_part_bytes(message)
        ok = ok and share <= MAX_INLINE_STYLE_SHARE and part < GMAIL_CLIP_BYTES
        print(
            f"{path.stem[:32]:32} {len(issue.html.encode()) / 1024:8.1f} {share:14.1%} {part / 1024:13.1f} "
            f"{len(message) / 1024:11.1f}"
        )
    print(
        f"targets: inline styles <= {MAX_INLINE_STYLE_SHARE:.0%}, HTML part < {GMAIL_CLIP_BYTES // 1024} KB: "
        + ("met" if ok else "MISSED")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main([Path(arg) for arg in sys.argv[1:]] or DEFAULT_ISSUES))
