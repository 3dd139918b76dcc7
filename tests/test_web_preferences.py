"""The preferences page a reader uses: name, language, topics, a pause; dates in their language."""

from __future__ import annotations

import base64
import datetime as dt
import email

import pytest
from httpx import AsyncClient
from sqlalchemy import Engine, select

from newsletter import database, ledger, topics
from newsletter.models import Subscriber
from newsletter.render import render_issue
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from newsletter.tokens import Signer
from newsletter.welcome import store_welcome, welcome_message
from tests.test_web_leaving import reader
from tests.webflow import hidden

pytestmark = pytest.mark.anyio


def stored(engine: Engine) -> Subscriber:
    with database.transaction(engine) as session:
        subscriber = session.scalars(select(Subscriber)).one()
        session.expunge(subscriber)
        return subscriber


async def save(client: AsyncClient, path: str, **fields: str | list[str]) -> str:
    page = await client.get(path)
    assert page.status_code == 200
    response = await client.post(path, data={"csrf_token": hidden(page.text, "csrf_token"), **fields})
    assert response.status_code in (200, 422), response.text
    return response.text


async def test_a_reader_changes_name_language_topics_and_pauses(
    client: AsyncClient, engine: Engine, settings: Settings
) -> None:
    with database.transaction(engine) as session:
        topics.define_topic(session, "weekly", "每周精选")
        topics.define_topic(session, "daily", "Daily notes")
    _, preferences = reader(engine, settings)
    page = await client.get(preferences)
    assert 'name="topics" value="weekly"' in page.text and "每周精选" in page.text
    until = (dt.date.today() + dt.timedelta(days=10)).isoformat()
    answer = await save(client, preferences, name="小安", language="zh-CN", topics=["weekly"], paused_until=until)
    assert '<html lang="zh-CN">' in answer and "您的设置已保存" in answer
    day = dt.date.fromisoformat(until)
    assert f"{day.year}年{day.month}月{day.day}日" in answer  # the pause's date, as Chinese readers write it
    subscriber = stored(engine)
    assert subscriber.name == "小安" and subscriber.language == "zh-CN"
    assert subscriber.paused_until is not None and subscriber.paused_until.date() == day
    with database.transaction(engine) as session:
        assert topics.chosen_topics(session, subscriber.id) == ["weekly"]
        issue = ledger.store_issue(session, render_issue("# Paused\n\nText.\n", settings))
        assert ledger.create_deliveries(session, issue) == 0, "a paused reader gets no delivery"
    again = await save(client, preferences, name="小安", language="en", topics=["daily", "forged"], paused_until="")
    assert '<html lang="en">' in again and "Your choices are saved." in again
    with database.transaction(engine) as session:
        assert topics.chosen_topics(session, subscriber.id) == ["daily"], "an unknown topic is ignored"
    assert stored(engine).paused_until is None


async def test_a_bad_pause_date_is_one_line_and_changes_nothing(
    client: AsyncClient, engine: Engine, settings: Settings
) -> None:
    _, preferences = reader(engine, settings)
    far = (dt.date.today() + dt.timedelta(days=800)).isoformat()
    answer = await save(client, preferences, name="X", language="en", paused_until=far)
    assert "A pause lasts at most a year." in answer
    answer = await save(client, preferences, name="X", language="en", paused_until="not-a-date")
    assert "The pause date is not a date." in answer
    assert stored(engine).name == "Ann"


async def test_the_preferences_page_needs_its_csrf_token(
    client: AsyncClient, engine: Engine, settings: Settings
) -> None:
    _, preferences = reader(engine, settings)
    response = await client.post(preferences, data={"name": "Mallory"})
    assert response.status_code == 403
    assert stored(engine).name == "Ann"


async def test_the_welcome_mail_can_be_turned_off(settings: Settings, engine: Engine) -> None:
    with database.transaction(engine) as session:
        subscriber = add_subscriber(session, "li@example.org", "小李")
        subscriber.language = "zh-CN"
        session.flush()
        assert store_welcome(session, settings.replace(welcome_enabled=False), Signer("k"), subscriber) is None
        mail = welcome_message(settings, Signer("k"), subscriber).decode("ascii")
    assert "Subject: =?utf-8?" in mail and "/preferences/" in base64_text(mail)


def base64_text(mail: str) -> str:
    parsed = email.message_from_string(mail)
    return "".join(
        base64.b64decode(part.get_payload()).decode("utf-8") for part in parsed.walk() if not part.is_multipart()
    )
