"""The whole reader path in headless Chromium, in Chinese and in English: sign up (Accept-Language), the
confirmation mail, confirm, the welcome mail, a change of topics on the preferences page, unsubscribe
from an issue. Every page must speak the reader's language and say so in `lang`."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter import database, topics
from newsletter.models import Subscriber
from newsletter.settings import Settings
from tests.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, PHONE, cli, require_chromium, serving, wait_until
from tests.mailserver import MailSink, free_port
from tests.webflow import confirm_link

pytestmark = pytest.mark.browser
HAN = re.compile("[\u4e00-\u9fff]")


@dataclass(frozen=True)
class Words:
    """What each step of the path shows in one language."""

    lang: str
    accept: str
    newsletter: str
    subscribe: str
    email_label: str
    sent: str
    confirm_subject: str
    confirm_button: str
    subscribed: str
    welcome_subject: str
    preferences_link: str
    save: str
    saved: str
    unsubscribe: str
    unsubscribed: str
    issue: str
    english_leftovers: tuple[str, ...]  # English a Chinese page must not show


CHINESE = Words(
    lang="zh-CN",
    accept="zh-CN,zh;q=0.9,en;q=0.5",
    newsletter="浏览器周刊",
    subscribe="订阅",
    email_label="电子邮箱",
    sent="请查收邮件",
    confirm_subject="请确认订阅「浏览器周刊」",
    confirm_button="确认订阅",
    subscribed="订阅成功",
    welcome_subject="欢迎订阅「浏览器周刊」",
    preferences_link="选择主题与设置",
    save="保存",
    saved="您的设置已保存。",
    unsubscribe="退订",
    unsubscribed="您已退订",
    issue=(
        "---\nsubject: 本周笔记\nslug: notes-zh\n---\n\n# 本周笔记\n\n"
        '{{ name | default("朋友") }}，你好！这是本周的内容。\n'
    ),
    english_leftovers=("Subscribe", "Unsubscribe", "Email address", "Confirm", "Past issues", "Save"),
)
ENGLISH = Words(
    lang="en",
    accept="en-GB,en;q=0.9",
    newsletter="Browser Weekly",
    subscribe="Subscribe",
    email_label="Email address",
    sent="Check your inbox",
    confirm_subject="Confirm your subscription to Browser Weekly",
    confirm_button="Confirm my subscription",
    subscribed="You are subscribed",
    welcome_subject="Welcome to Browser Weekly",
    preferences_link="Choose your topics and settings",
    save="Save",
    saved="Your choices are saved.",
    unsubscribe="Unsubscribe",
    unsubscribed="You are unsubscribed",
    issue=(
        '---\nsubject: Weekly notes\nslug: notes-en\n---\n\n# Weekly notes\n\nHello {{ name | default("friend") }}!\n'
    ),
    english_leftovers=(),
)


@dataclass(frozen=True)
class Site:
    base_url: str
    config: Path
    settings: Settings
    command: list[str]


@pytest.fixture(params=[CHINESE, ENGLISH], ids=["zh-CN", "en"])
def words(request: pytest.FixtureRequest) -> Words:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def site(tmp_path: Path, smtpd: MailSink, words: Words) -> Iterator[Site]:
    """`newsletter serve` for a newsletter named in the reader's language, with two topics."""
    port = free_port()
    database_url = f"sqlite:///{tmp_path / 'site.db'}"
    config = tmp_path / "newsletter.toml"
    config.write_text(
        f'database_url = "{database_url}"\nsecret_key = "browser-test-secret-key-0123456789"\n'
        f'from_address = "editor@example.org"\nnewsletter_name = "{words.newsletter}"\n'
        f'base_url = "http://127.0.0.1:{port}"\npostal_address = "1 Example Street"\nsmtp_host = "127.0.0.1"\n'
        f"smtp_port = {smtpd.port}\nsignup_min_fill_seconds = 1.0\n",
        encoding="utf-8",
    )
    settings = Settings(database_url=database_url, secret_key="x")
    with serving(config, port) as base_url:
        engine = database.make_engine(settings)
        with database.transaction(engine) as session:
            topics.define_topic(session, "weekly", "每周精选" if words.lang == "zh-CN" else "Weekly picks")
            topics.define_topic(session, "tools", "工具推荐" if words.lang == "zh-CN" else "Tools")
        engine.dispose()
        yield Site(base_url, config, settings, cli(config))


def reader_state(settings: Settings) -> tuple[str | None, str | None, list[str]]:
    engine = database.make_engine(settings)
    try:
        with database.transaction(engine) as session:
            subscriber = session.scalars(select(Subscriber)).one()
            return subscriber.status, subscriber.language, topics.chosen_topics(session, subscriber.id)
    finally:
        engine.dispose()


def check_language(page: object, words: Words, step: str) -> None:
    """The page says its language in `lang`, and its text is in it."""
    assert page.evaluate("document.documentElement.lang") == words.lang, step  # type: ignore[attr-defined]
    # The language picker names each language in itself ("中文", "English"): that text is not the page's.
    text = page.evaluate(  # type: ignore[attr-defined]
        "(() => { const main = document.querySelector('main').cloneNode(true);"
        " main.querySelectorAll('option, [lang]').forEach(node => node.remove()); return main.textContent; })()"
    )
    if words.lang == "zh-CN":
        assert HAN.search(text), f"{step}: no Chinese on the page"
        leftovers = [word for word in words.english_leftovers if word in text]
        assert leftovers == [], f"{step}: English left on a Chinese page: {leftovers}"
    else:
        assert not HAN.search(text), f"{step}: Chinese on an English page"


def mail_with_subject(smtpd: MailSink, address: str, subject: str) -> object:
    wait_until(lambda: any(mail.message["Subject"] == subject for mail in smtpd.to(address)), 30, subject)
    return next(mail.message for mail in smtpd.to(address) if mail.message["Subject"] == subject)


def test_the_whole_reader_path(site: Site, smtpd: MailSink, words: Words, tmp_path: Path) -> None:
    require_chromium()
    from playwright.sync_api import sync_playwright

    address = f"reader-{words.lang.lower()}@example.com"
    shots = ARTIFACTS / f"reader-{words.lang}"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(
            viewport=PHONE, java_script_enabled=False, extra_http_headers={"Accept-Language": words.accept}
        )
        page = context.new_page()
        page.goto(f"{site.base_url}/subscribe")
        check_language(page, words, "sign-up form")
        page.screenshot(path=shots / "1-form.png", full_page=True)
        page.get_by_label(words.email_label).fill(address)
        page.locator('input[name="topics"][value="weekly"]').check()
        time.sleep(1.2)  # the form refuses a post sooner than signup_min_fill_seconds
        page.get_by_role("button", name=words.subscribe, exact=True).click()
        assert page.get_by_role("heading", name=words.sent).is_visible()
        check_language(page, words, "check your inbox")
        assert reader_state(site.settings) == ("pending", words.lang, ["weekly"])

        confirmation = mail_with_subject(smtpd, address, words.confirm_subject)
        page.goto(confirm_link(confirmation))  # type: ignore[arg-type]
        check_language(page, words, "confirm page")
        page.screenshot(path=shots / "2-confirm.png", full_page=True)
        page.get_by_role("button", name=words.confirm_button).click()
        assert page.get_by_role("heading", name=words.subscribed).is_visible()
        check_language(page, words, "subscribed")
        assert reader_state(site.settings)[0] == "active"

        welcome = mail_with_subject(smtpd, address, words.welcome_subject)
        html_part = welcome.get_body(("html",))  # type: ignore[attr-defined]
        assert html_part is not None and f'lang="{words.lang}"' in html_part.get_content()
        page.set_content(html_part.get_content())
        page.screenshot(path=shots / "3-welcome.png", full_page=True)
        page.get_by_role("link", name=words.preferences_link).click()
        page.wait_for_url(f"{site.base_url}/preferences/*")
        check_language(page, words, "preferences")
        page.locator('input[name="topics"][value="weekly"]').uncheck()
        page.locator('input[name="topics"][value="tools"]').check()
        page.get_by_role("button", name=words.save).click()
        assert page.get_by_text(words.saved).is_visible()
        check_language(page, words, "preferences saved")
        page.screenshot(path=shots / "4-preferences.png", full_page=True)
        assert reader_state(site.settings) == ("active", words.lang, ["tools"])

        issue_file = tmp_path / "issue.md"
        issue_file.write_text(words.issue, encoding="utf-8")
        sent = subprocess.run(
            [*site.command, "send", str(issue_file), "--yes", "--topic", "tools"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        subject = words.issue.split("subject: ", 1)[1].split("\n", 1)[0]
        issue = mail_with_subject(smtpd, address, subject)
        html_part = issue.get_body(("html",))  # type: ignore[attr-defined]
        assert html_part is not None
        page.set_content(html_part.get_content())
        page.screenshot(path=shots / "5-issue.png", full_page=True)
        page.get_by_role("link", name=words.unsubscribe, exact=True).first.click()
        page.wait_for_url(f"{site.base_url}/unsubscribe/*")
        check_language(page, words, "unsubscribe page")
        page.get_by_role("button", name=words.unsubscribe, exact=True).click()
        assert page.get_by_role("heading", name=words.unsubscribed).is_visible()
        check_language(page, words, "unsubscribed")
        page.screenshot(path=shots / "6-unsubscribed.png", full_page=True)
        assert reader_state(site.settings)[0] == "unsubscribed"
        browser.close()
