"""The editor's desk in headless Chromium against `newsletter serve`: an account made by the CLI, signing in,
a CSV uploaded, an issue previewed and sent to aiosmtpd while the progress page reaches 100%, a reader's history."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, cli, require_chromium, serving
from tests.deskflow import EDITOR, PASSWORD
from tests.mailserver import MailSink, free_port

pytestmark = pytest.mark.browser
SHOTS = ARTIFACTS / "desk"
CSV = "email,name\nada@example.org,Ada\nbo@example.org,Bo\ncy@example.org,Cy\nnot-an-address,Bad\n"
ISSUE = """---
title: Desk notes
slug: desk-notes
lang: en
---

Hello {{ name | default("reader") }}. This issue was written and sent from the desk, with [a link](https://example.org/).
"""


def test_editor_signs_in_imports_previews_sends_and_reads_history(tmp_path: Path, smtpd: MailSink) -> None:
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    config = tmp_path / "newsletter.toml"
    config.write_text(
        f'database_url = "sqlite:///{tmp_path / "desk.db"}"\nsecret_key = "desk-browser-secret-key-0123456789"\n'
        f'from_address = "editor@example.org"\nnewsletter_name = "Desk Weekly"\nbase_url = "http://127.0.0.1:{port}"\n'
        f'postal_address = "1 Example Street"\nsmtp_host = "127.0.0.1"\nsmtp_port = {smtpd.port}\n'
        "remote_image_sizes = false\n",
        encoding="utf-8",
    )
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(CSV, encoding="utf-8")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with serving(config, port) as base_url:
        added = subprocess.run(
            [*cli(config), "users", "add", EDITOR], input=f"{PASSWORD}\n{PASSWORD}\n", capture_output=True, text=True
        )
        assert added.returncode == 0, added.stdout + added.stderr
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport=DESKTOP)
            page.goto(f"{base_url}/admin")
            page.get_by_label("Email address").fill(EDITOR)
            page.get_by_label("Password").fill(PASSWORD)
            page.screenshot(path=SHOTS / "1-sign-in-1280.png", full_page=True)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

            page.get_by_role("link", name="Subscribers").first.click()
            page.get_by_role("link", name="Import a CSV file").click()
            page.get_by_label("CSV file", exact=True).set_input_files(str(csv_file))
            page.get_by_role("button", name="Import").click()
            expect(page.get_by_role("heading", name="list.csv: imported 3")).to_be_visible()
            expect(page.get_by_role("cell", name="not-an-address")).to_be_visible()
            page.screenshot(path=SHOTS / "2-import-1280.png", full_page=True)

            page.get_by_role("link", name="Issues").first.click()
            page.get_by_role("link", name="Write or upload an issue").click()
            page.get_by_label("Markdown").fill(ISSUE)
            page.get_by_role("button", name="Save and preview").click()
            expect(page.get_by_role("heading", name="Desk notes", exact=True)).to_be_visible()
            frame = page.frame_locator('iframe[title="The email at 600 pixels, light mode"]')
            expect(frame.locator("p", has_text="This issue was written and sent from the desk")).to_be_visible()
            page.screenshot(path=SHOTS / "3-preview-1280.png", full_page=True)

            page.get_by_role("link", name="Send…").click()
            page.wait_for_url("**/send")
            page.get_by_role("button", name="Send to 3 now").click()
            expect(page.locator("#progress-text")).to_contain_text("3 of 3 done (100%): sent.", timeout=60_000)
            expect(page.get_by_text("Messages accepted per minute")).to_be_visible(timeout=10_000)
            page.screenshot(path=SHOTS / "4-sent-1280.png", full_page=True)
            assert sorted(mail.recipient for mail in smtpd.received) == [
                "ada@example.org",
                "bo@example.org",
                "cy@example.org",
            ]

            page.get_by_role("link", name="Subscribers").first.click()
            page.get_by_role("link", name="ada@example.org").click()
            expect(page.get_by_role("heading", name="History")).to_be_visible()
            expect(page.get_by_role("link", name="Desk notes")).to_be_visible()
            page.screenshot(path=SHOTS / "5-reader-1280.png", full_page=True)
            reader_url, issue_url = page.url, f"{base_url}/admin/issues/desk-notes"

            page.set_viewport_size(PHONE)
            for name, url in (("dashboard", f"{base_url}/admin"), ("reader", reader_url), ("issue", issue_url)):
                page.goto(url)
                page.screenshot(path=SHOTS / f"6-{name}-375.png", full_page=True)
                assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), name

            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("heading", name="Sign in to the desk")).to_be_visible()
            page.goto(f"{base_url}/admin/subscribers")
            expect(page.get_by_role("heading", name="Sign in to the desk")).to_be_visible()
            browser.close()
