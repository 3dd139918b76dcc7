"""The reader's language: catalogs, Accept-Language, the stored language, and every page and mail in it."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from babel.messages.pofile import read_po
from sqlalchemy import Engine, select

from newsletter import database, language, links, theme
from newsletter.mime import MessageTemplate, Recipient
from newsletter.models import Subscriber
from newsletter.render import render_issue
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from newsletter.tokens import Signer
from tests.webflow import confirm_link, hidden, path_of, press_button, stored_message

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("zh-TW", "zh-CN"),  # Simplified serves a Traditional reader better than English
        ("zh-Hans-CN", "zh-CN"),
        ("fr-FR, de;q=0.9, zh;q=0.1", "zh-CN"),
        ("en;q=0.2, zh-CN;q=0.7", "zh-CN"),
        ("fr, de", None),
        ("*", None),
        ("zh-CN;q=0", None),
        ("<script>", None),
        ("", None),
        ("x" * 5000, None),
    ],
)
def test_accept_language(header: str, expected: str | None) -> None:
    assert language.from_accept_language(header) == expected


def test_available_languages_start_with_english() -> None:
    assert language.available()[0] == "en"
    assert "zh-CN" in language.available()


def test_every_message_has_a_chinese_translation() -> None:
    with (language.LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / "messages.po").open("rb") as po_file:
        catalog = read_po(po_file, locale="zh_CN")
    untranslated = [message.id for message in catalog if message.id and not message.string]
    assert untranslated == []
    fuzzy = [message.id for message in catalog if message.id and message.fuzzy]
    assert fuzzy == []


def test_catalog_holds_every_message_of_the_code(tmp_path: Path) -> None:
    """A message added to a template or the code without a catalog entry would show in English."""
    pot = tmp_path / "messages.pot"
    command = [sys.executable, "-m", "babel.messages.frontend", "extract", "-F", "babel.cfg", "-k", "N_"]
    subprocess.run([*command, "-o", str(pot), "."], cwd=ROOT, check=True, capture_output=True, timeout=120)
    with pot.open("rb") as pot_file:
        wanted = {message.id for message in read_po(pot_file) if message.id}
    for catalog_language in ("zh_CN", "en"):
        with (language.LOCALE_DIR / catalog_language / "LC_MESSAGES" / "messages.po").open("rb") as po_file:
            have = {message.id for message in read_po(po_file) if message.id}
        assert wanted <= have, f"{catalog_language} lacks {sorted(wanted - have)[:5]}: run pybabel update"


def test_dates_and_numbers_in_the_language() -> None:
    day = dt.datetime(2026, 12, 5, 9, 30, tzinfo=dt.UTC)
    assert language.date_text(day, "zh-CN") == "2026年12月5日"
    assert language.date_text(day, "en") == "December 5, 2026"
    assert language.number_text(1234567.5, "en") == "1,234,567.5"
    assert "2026年12月5日" in language.datetime_text(day, "zh-CN", "Asia/Shanghai")
    assert "17:30" in language.datetime_text(day, "zh-CN", "Asia/Shanghai")


def test_footer_words_come_from_the_catalog() -> None:
    assert theme.words_for("zh-CN")["unsubscribe"] == "退订"
    assert theme.words_for("en")["unsubscribe"] == "Unsubscribe"
    assert theme.words_for("ja")["unsubscribe"] == "Unsubscribe"  # no catalog: English


def test_default_language_must_have_a_catalog(tmp_path: Path) -> None:
    from newsletter.errors import ConfigError
    from newsletter.settings import load_settings

    with pytest.raises(ConfigError, match="default_language"):
        load_settings(tmp_path / "none.toml", {"NEWSLETTER_DEFAULT_LANGUAGE": "klingon"})


def stored_language(engine: Engine, address: str) -> str | None:
    with database.transaction(engine) as session:
        return session.scalar(select(Subscriber.language).where(Subscriber.email_key == address))


async def sign_up_in(client: httpx.AsyncClient, address: str, accept: str, **extra: str) -> httpx.Response:
    form = await client.get("/subscribe", headers={"accept-language": accept})
    assert form.status_code == 200
    data = {"email": address, "name": "", "stamp": hidden(form.text, "stamp"), "website": "", **extra}
    return await client.post("/subscribe", data=data, headers={"accept-language": accept})


@pytest.mark.anyio
async def test_pages_follow_accept_language(client: httpx.AsyncClient) -> None:
    chinese = await client.get("/subscribe", headers={"accept-language": "zh-CN,zh;q=0.9"})
    assert '<html lang="zh-CN">' in chinese.text and "电子邮箱" in chinese.text
    assert chinese.headers["content-language"] == "zh-CN"
    english = await client.get("/subscribe", headers={"accept-language": "en-GB"})
    assert '<html lang="en">' in english.text and "Email address" in english.text
    chosen = await client.get("/subscribe?lang=zh-CN", headers={"accept-language": "en"})
    assert '<html lang="zh-CN">' in chosen.text
    missing = await client.get("/no-such-page", headers={"accept-language": "zh-CN"})
    assert missing.status_code == 404 and "页面不存在" in missing.text


@pytest.mark.anyio
async def test_chinese_reader_gets_chinese_mails_and_pages(
    client: httpx.AsyncClient, engine: Engine, queued: list[int]
) -> None:
    answer = await sign_up_in(client, "li@example.org", "zh-CN,zh;q=0.9")
    assert "请查收邮件" in answer.text
    assert stored_language(engine, "li@example.org") == "zh-CN"
    mail = stored_message(engine, queued[0])
    assert mail["Subject"] == "请确认订阅「AI 简报」"
    text_part = mail.get_body(("plain",))
    assert text_part is not None and "您好" in text_part.get_content()
    # The confirm page follows the stored language, whatever the browser that opens the link says.
    path = path_of(confirm_link(mail))
    page = await client.get(path, headers={"accept-language": "en"})
    assert '<html lang="zh-CN">' in page.text and "确认订阅" in page.text
    confirmed = await press_button(client, path)
    assert "订阅成功" in confirmed.text
    welcome = stored_message(engine, queued[1])
    assert welcome["Subject"] == "欢迎订阅「AI 简报」"
    html_part = welcome.get_body(("html",))
    assert html_part is not None and 'lang="zh-CN"' in html_part.get_content()


@pytest.mark.anyio
async def test_the_form_choice_beats_the_browser(client: httpx.AsyncClient, engine: Engine) -> None:
    await sign_up_in(client, "ann@example.org", "zh-CN", language="en")
    assert stored_language(engine, "ann@example.org") == "en"


@pytest.mark.anyio
async def test_a_pasted_form_without_language_takes_the_browser_s(client: httpx.AsyncClient, engine: Engine) -> None:
    await client.post("/subscribe", data={"email": "wu@example.org", "website": ""}, headers={"accept-language": "zh"})
    assert stored_language(engine, "wu@example.org") == "zh-CN"


@pytest.mark.anyio
async def test_default_language_serves_readers_without_one(settings: Settings, engine: Engine) -> None:
    from subscribers.app import create_app

    app = create_app(settings.replace(default_language="zh-CN", signup_min_fill_seconds=0), engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=settings.base_url) as client:
        page = await client.get("/subscribe")
    assert '<html lang="zh-CN">' in page.text


@pytest.mark.anyio
async def test_a_reader_without_a_language_gets_the_issue_s(
    client: httpx.AsyncClient, engine: Engine, settings: Settings
) -> None:
    """An imported Chinese reader (no language stored, default English) clicks 退订 in a Chinese issue."""
    with database.transaction(engine) as session:
        subscriber_id = add_subscriber(session, "wang@example.org").id
    signer = Signer(settings.secret_key)
    issue = render_issue("# 本周简报\n\n这是本周的内容，欢迎阅读。\n", settings)
    recipient = Recipient(
        email="wang@example.org",
        name=None,
        message_id="m@example.org",
        unsubscribe_url=links.unsubscribe_url(settings, signer, subscriber_id),
        unsubscribe_mailto="mailto:u@example.org",
        preferences_url=links.preferences_url(settings, signer, subscriber_id),
    )
    mail = email.message_from_bytes(MessageTemplate.build(issue, settings).fill(recipient), policy=email.policy.default)
    html_part = mail.get_body(("html",))
    assert html_part is not None
    link = re.search(r'href="([^"]+/unsubscribe/[^"]+)"', html_part.get_content())
    assert link is not None and link.group(1).endswith("?hl=zh-CN")
    page = await client.get(path_of(link.group(1).replace("&amp;", "&")), headers={"accept-language": "en"})
    assert '<html lang="zh-CN">' in page.text and "退订" in page.text


def test_compiled_catalog_is_kept_under_its_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from babel.messages.catalog import Catalog
    from babel.messages.mofile import write_mo

    from newsletter import resources

    monkeypatch.setenv(resources.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    resources.cache_dir.cache_clear()
    language.translations.cache_clear()
    try:
        unsubscribe = language.translations("zh-CN").gettext("Unsubscribe")
        assert unsubscribe != "Unsubscribe"
        source = language.catalog_path("zh-CN").read_bytes()
        kept = tmp_path / "cache" / "locale" / f"{hashlib.sha256(source).hexdigest()}.mo"
        assert kept.is_file()
        # A later process reads the kept file instead of compiling: one written under that name is used.
        marked = Catalog(locale="zh_CN")
        marked.add("Unsubscribe", "kept")
        with kept.open("wb") as file:
            write_mo(file, marked)
        language.translations.cache_clear()
        assert language.translations("zh-CN").gettext("Unsubscribe") == "kept"
        # Where no cache can be made, the catalog is compiled in memory as before.
        (tmp_path / "blocked").write_text("a file, not a directory")
        monkeypatch.setenv(resources.CACHE_DIR_VARIABLE, str(tmp_path / "blocked"))
        resources.cache_dir.cache_clear()
        language.translations.cache_clear()
        assert language.translations("zh-CN").gettext("Unsubscribe") == unsubscribe
    finally:
        resources.cache_dir.cache_clear()
        language.translations.cache_clear()
