"""Every desk page in Chromium at 1280 and 375 px, checked by tests/accessibility.py: text contrast of at least
4.5:1 (3:1 for large text) from the computed colours, a name for every form control, Tab through every control
in document order with a visible focus indicator, no positive tabindex. Screenshots under artifacts/desk-a11y."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from newsletter import database, ledger, outbox, relays, topics
from newsletter.models import DeliveryStatus, OutboundMessage, SubscriberStatus, UnrecognizedMessage, utcnow
from newsletter.render import render_issue
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from newsletter.tags import add_tags
from tests.accessibility import contrast_violations, keyboard_violations, name_violations
from tests.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, cli, require_chromium, serving
from tests.deskflow import EDITOR, PASSWORD
from tests.mailserver import free_port

pytestmark = pytest.mark.browser
SHOTS = ARTIFACTS / "desk-a11y"
ISSUE = """---
title: Accessible notes
slug: a11y-notes
lang: en
---

# Accessible notes

Hello {{ name | default("reader") }}, with [a link](https://example.org/) and a list:

- one
- two
"""


def seed(settings: Settings) -> int:
    """A list, an issue draft, topics, kept mail and a relay refusal, so every page has its parts; the reader's id."""
    engine = database.make_engine(settings)
    with database.transaction(engine) as session:
        topics.define_topic(session, "weekly", "每周精选", "Fridays")
        topics.define_topic(session, "papers", "Papers")
        ids = [add_subscriber(session, f"reader{number}@example.org", f"Reader {number}").id for number in range(3)]
        add_tags(session, ids[:2], ["vip"])
        add_subscriber(session, "gone@example.org", status=SubscriberStatus.BOUNCED)
        ledger.store_issue(session, render_issue(ISSUE, settings))
        for number, kind in enumerate(("unverified", "unrecognized")):
            session.add(
                UnrecognizedMessage(
                    source="maildir",
                    external_id=f"message:{number}",
                    sender="someone@example.net",
                    subject=f"Kept {kind}",
                    note="not tied to a delivery of ours",
                    size_bytes=1,
                    raw=b"Subject: x\r\n\r\nx\r\n",
                    kind=kind,
                )
            )
        relays.record_refusal(session, "127.0.0.1:2525", "the SMTP server refused AUTH: 535 5.7.8 bad credentials")
        for email, status in (
            ("stuck@example.org", DeliveryStatus.PENDING),
            ("refused@example.org", DeliveryStatus.FAILED),
        ):
            outbound_id = outbox.store_message(
                session, "confirmation", "b@example.org", email, b"Subject: x\r\n\r\nx\r\n"
            )
            session.execute(
                update(OutboundMessage)
                .where(OutboundMessage.id == outbound_id)
                .values(status=status, created_at=utcnow() - dt.timedelta(hours=1), last_reply="554 5.7.1 spam")
            )
    engine.dispose()
    return ids[0]


def desk_pages(reader_id: int) -> dict[str, str]:
    return {
        "dashboard": "/admin",
        "subscribers": "/admin/subscribers",
        "reader": f"/admin/subscribers/{reader_id}",
        "new-subscriber": "/admin/subscribers/new",
        "import": "/admin/subscribers/import",
        "forget": f"/admin/subscribers/{reader_id}/forget",
        "topics-and-tags": "/admin/audience",
        "issues": "/admin/issues",
        "new-issue": "/admin/issues/new",
        "issue": "/admin/issues/a11y-notes",
        "send": "/admin/issues/a11y-notes/send",
        "bounces": "/admin/bounces",
        "deliverability": "/admin/deliverability",  # with the settings in effect
        "not-found": "/admin/no-such-page",
    }


def violations(page: Any) -> list[str]:
    found = [*contrast_violations(page), *name_violations(page), *keyboard_violations(page)]
    if page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1"):
        found.append("the page scrolls sideways (only a wide table's own box may)")
    return found


def test_every_desk_page_passes_the_checks_on_desktop_and_phone(tmp_path: Path) -> None:
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'desk.db'}",
        secret_key="desk-a11y-secret-key-0123456789abc",
        from_address="editor@example.org",
        newsletter_name="Desk Weekly",
        base_url=f"http://127.0.0.1:{port}",
        postal_address="1 Example Street",
        remote_image_sizes=False,
    )
    config = tmp_path / "newsletter.toml"
    config.write_text(
        f'database_url = "{settings.database_url}"\nsecret_key = "{settings.secret_key}"\n'
        f'from_address = "{settings.from_address}"\nnewsletter_name = "{settings.newsletter_name}"\n'
        f'base_url = "{settings.base_url}"\npostal_address = "{settings.postal_address}"\n'
        "remote_image_sizes = false\n",
        encoding="utf-8",
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    found: dict[str, list[str]] = {}
    with serving(config, port) as base_url:
        reader_id = seed(settings)
        added = subprocess.run(
            [*cli(config), "users", "add", EDITOR], input=f"{PASSWORD}\n{PASSWORD}\n", capture_output=True, text=True
        )
        assert added.returncode == 0, added.stdout + added.stderr
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            # English, then Chinese as a browser asking for it gets it: longer words must not break the layout.
            for lang, dashboard in (("en", "Dashboard"), ("zh-CN", "概览")):
                for viewport in (DESKTOP, PHONE):
                    shot = f"{viewport['width']}" + ("" if lang == "en" else "-zh")
                    page = browser.new_page(viewport=viewport, extra_http_headers={"accept-language": lang})
                    page.goto(f"{base_url}/admin/sign-in")
                    page.screenshot(path=SHOTS / f"sign-in-{shot}.png", full_page=True)
                    found[f"sign-in at {shot}"] = violations(page)
                    page.locator("#email").fill(EDITOR)
                    page.locator("#password").fill(PASSWORD)
                    page.locator("button[type=submit]").click()
                    expect(page.get_by_role("heading", name=dashboard)).to_be_visible()
                    for name, path in desk_pages(reader_id).items():
                        page.goto(base_url + path)
                        page.screenshot(path=SHOTS / f"{name}-{shot}.png", full_page=True)
                        found[f"{name} at {shot}"] = violations(page)
                    page.close()
            browser.close()
    failing = {where: lines for where, lines in found.items() if lines}
    assert failing == {}, "\n".join(f"{where}:\n  " + "\n  ".join(lines) for where, lines in failing.items())


FLAWED = """<!doctype html><html lang="en"><body style="background:#fff">
<p style="color:#999">faint grey on white</p>
<p style="color:#767676;font-size:24px">large grey passes at 3:1</p>
<div style="background:#1a56db"><span style="color:#3b6fe0">blue on blue</span></div>
<input id="unnamed" type="text">
<label for="named">Named</label><input id="named" type="text">
<button tabindex="2">Jumps the queue</button>
</body></html>"""
UNRINGED = """<!doctype html><html lang="en"><body>
<a href="#" style="outline:none">no focus ring</a>
<a href="#" class="fine">a ring</a>
<style>.fine:focus-visible { outline: 3px solid #1a56db; }</style>
</body></html>"""


def test_the_checks_find_each_flaw_they_look_for() -> None:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport=DESKTOP)
        page.set_content(FLAWED)
        contrast = contrast_violations(page)
        names = name_violations(page)
        out_of_order = keyboard_violations(page)
        page.set_content(UNRINGED)
        keyboard = keyboard_violations(page)
        browser.close()
    assert [line.split(":")[0] for line in contrast] == ['<p> "faint grey on white"', '<span> "blue on blue"']
    assert any("#unnamed" in line and "no accessible name" in line for line in names)
    assert not any("#named" in line for line in names)
    assert any("positive tabindex (2)" in line for line in names)
    assert any('"no focus ring" shows no focus indicator' in line for line in keyboard)
    assert not any('"a ring"' in line for line in keyboard)
    assert any("document order" in line for line in out_of_order)  # the tabindex=2 button comes first
