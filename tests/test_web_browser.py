"""End to end in headless Chromium against `newsletter serve`: sign up, confirm, receive an issue, leave."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter import database
from newsletter.models import Subscriber
from newsletter.settings import Settings
from tests.browser import ARTIFACTS as BROWSER_ARTIFACTS
from tests.browser import CHROMIUM, CHROMIUM_ARGS, PHONE, cli, require_chromium, serving, wait_until
from tests.mailserver import MailSink, free_port
from tests.webflow import confirm_link

ARTIFACTS = BROWSER_ARTIFACTS / "browser"
ADDRESS = "reader@example.com"
ISSUE = """---
subject: Browser notes
slug: browser-notes
lang: en
---

# Browser notes

The first issue a reader receives after confirming, with [a link](https://example.org/).
"""

pytestmark = pytest.mark.browser


@pytest.fixture
def site(tmp_path: Path, smtpd: MailSink) -> Iterator[tuple[str, Path, Settings]]:
    """`newsletter serve` on a free loopback port, mailing through `smtpd`: its URL, config and settings."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    config = tmp_path / "newsletter.toml"
    config.write_text(
        f'database_url = "sqlite:///{tmp_path / "site.db"}"\nsecret_key = "browser-test-secret-key-0123456789"\n'
        f'from_address = "editor@example.org"\nfrom_name = "The Editor"\nnewsletter_name = "Browser Weekly"\n'
        f'base_url = "{base_url}"\npostal_address = "1 Example Street"\nsmtp_host = "127.0.0.1"\n'
        f"smtp_port = {smtpd.port}\nsignup_min_fill_seconds = 1.0\nretry_delay_seconds = 0.2\n",
        encoding="utf-8",
    )
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'site.db'}", secret_key="x")
    with serving(config, port) as served_url:
        assert served_url == base_url
        yield base_url, config, settings


def status(settings: Settings) -> str | None:
    engine = database.make_engine(settings)
    try:
        with database.transaction(engine) as session:
            return session.scalar(select(Subscriber.status).where(Subscriber.email_key == ADDRESS))
    finally:
        engine.dispose()


def test_sign_up_confirm_receive_and_leave(site: tuple[str, Path, Settings], smtpd: MailSink, tmp_path: Path) -> None:
    require_chromium()
    from playwright.sync_api import sync_playwright

    base_url, config, settings = site
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport=PHONE, java_script_enabled=False)  # the pages need no script
        page.goto(f"{base_url}/subscribe")
        page.screenshot(path=ARTIFACTS / "1-form.png", full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
        page.get_by_label("Email address").fill(ADDRESS)
        page.get_by_label("Name").fill("Rea Der")
        time.sleep(1.2)  # a person takes a moment; the form refuses bots that post at once
        page.get_by_role("button", name="Subscribe").click()
        assert page.get_by_role("heading", name="Check your inbox").is_visible()
        page.screenshot(path=ARTIFACTS / "2-check-inbox.png", full_page=True)
        assert status(settings) == "pending"

        wait_until(lambda: smtpd.to(ADDRESS), 20, "the confirmation mail")
        link = confirm_link(smtpd.to(ADDRESS)[0].message)
        page.goto(link)
        page.screenshot(path=ARTIFACTS / "3-confirm.png", full_page=True)
        assert status(settings) == "pending"  # opening the link is not enough: scanners open links too
        page.get_by_role("button", name="Confirm my subscription").click()
        assert page.get_by_role("heading", name="You are subscribed").is_visible()
        page.screenshot(path=ARTIFACTS / "4-subscribed.png", full_page=True)
        assert status(settings) == "active"

        issue_file = tmp_path / "issue.md"
        issue_file.write_text(ISSUE, encoding="utf-8")
        sent = subprocess.run(
            [*cli(config), "send", str(issue_file), "--yes"], capture_output=True, text=True, cwd=tmp_path, timeout=120
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        wait_until(lambda: len(smtpd.to(ADDRESS)) == 3, 20, "the welcome mail and the issue")
        issue = next(mail.message for mail in smtpd.to(ADDRESS) if mail.message["Subject"] == "Browser notes")
        assert issue["Subject"] == "Browser notes"
        assert "List-Unsubscribe=One-Click" in issue["List-Unsubscribe-Post"]
        html_part = issue.get_body(("html",))
        assert html_part is not None
        page.set_content(html_part.get_content())
        page.screenshot(path=ARTIFACTS / "5-issue.png", full_page=True)
        page.locator('a[href*="/unsubscribe/"]').first.click()
        page.wait_for_url(f"{base_url}/unsubscribe/*")
        page.screenshot(path=ARTIFACTS / "6-unsubscribe.png", full_page=True)
        assert status(settings) == "active"
        page.get_by_role("button", name="Unsubscribe").click()
        assert page.get_by_role("heading", name="You are unsubscribed").is_visible()
        page.screenshot(path=ARTIFACTS / "7-unsubscribed.png", full_page=True)
        assert status(settings) == "unsubscribed"

        page.goto(f"{base_url}/issues/browser-notes")
        assert "Browser notes" in page.content()
        page.screenshot(path=ARTIFACTS / "8-archive.png", full_page=True)
        browser.close()
    served = (tmp_path / "serve.log").read_text(encoding="utf-8", errors="replace")
    assert "/confirm/[token]" in served and "/unsubscribe/[token]" in served
    assert link.rsplit("/", 1)[1] not in served
