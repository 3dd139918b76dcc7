"""The desk speaks the editor's language: every page of it, to a browser that asks for Chinese, in Chinese
(what stays English is data: addresses, setting names, code, the relay's replies, the core's messages)."""

from __future__ import annotations

import dataclasses
import html
import re

import pytest
from httpx import AsyncClient
from sqlalchemy import Engine

from newsletter import database, ledger, outbox, relays, topics
from newsletter.render import render_issue
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from newsletter.tags import add_tags
from tests.deskflow import make_account, sign_in
from tests.test_desk_routes import desk_routes

pytestmark = pytest.mark.anyio
CHINESE = {"accept-language": "zh-CN"}
REPLY = "535 5.7.8 bad credentials"  # the relay's words, quoted as they came
ISSUE = "---\nsubject: 本周 AI 简报\nslug: weekly-1\n---\n\n# 本周 AI 简报\n\n你好。\n"
# Pages that are not the desk's words: files, JSON, and the email as the readers get it.
NOT_PAGES = ("export.csv", "/progress", "/preview", "/email")
# Two English words in a row, outside what is data.
ENGLISH = re.compile(r"\b[A-Za-z]{2,}\b(?:[ ,:]+\b[A-Za-z]{2,}\b)+")
DATA_ELEMENTS = re.compile(
    r'(?is)<(script|style|code|pre|textarea|option)\b.*?</\1>|<[^>]*\blang="en"[^>]*>.*?</[a-z0-9]+>'
)


def visible_english(page: str, data: list[str]) -> list[str]:
    """Runs of English words in what the page shows (each element's text apart), but for `data`."""
    text = DATA_ELEMENTS.sub("\n", page)
    text = html.unescape(re.sub(r"(?s)<[^>]+>", "\n", text))
    return sorted({run for run in ENGLISH.findall(text) if "@" not in run and not any(run in item for item in data)})


@pytest.fixture
def seeded(engine: Engine, settings: Settings) -> None:
    make_account(engine)
    with database.transaction(engine) as session:
        topics.define_topic(session, "weekly", "每周精选")
        ids = [add_subscriber(session, f"reader{n}@example.org", f"读者{n}").id for n in range(2)]
        add_tags(session, ids, ["vip"])
        ledger.store_issue(session, render_issue(ISSUE, settings))
        outbox.store_message(session, "confirmation", "b@example.org", "new@example.org", b"Subject: x\r\n\r\nx\r\n")
        relays.record_refusal(session, "127.0.0.1:2525", REPLY)


async def test_every_desk_page_speaks_chinese_to_a_chinese_browser(
    client: AsyncClient, seeded: None, settings: Settings
) -> None:
    await sign_in(client)
    data = [REPLY, *(str(getattr(settings, item.name)) for item in dataclasses.fields(settings))]
    values = {"/admin/subscribers/1": None, "/admin/issues/spring": "/admin/issues/weekly-1"}
    found: dict[str, list[str]] = {}
    checked: list[str] = []
    for method, path in desk_routes(client):
        if method != "GET" or not path.startswith("/admin") or any(part in path for part in NOT_PAGES):
            continue
        path = values.get(path, path) or path
        answer = await client.get(path, headers=CHINESE)
        if answer.status_code != 200 or "text/html" not in answer.headers["content-type"]:
            continue
        assert '<html lang="zh-CN">' in answer.text and answer.headers["content-language"] == "zh-CN", path
        checked.append(path)
        english = visible_english(answer.text, data)
        if english:
            found[path] = english
    assert len(checked) >= 12 and found == {}, (checked, found)
    # The same pages in English, asked for on the address.
    assert "Dashboard" in (await client.get("/admin?lang=en", headers=CHINESE)).text
