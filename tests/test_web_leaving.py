"""Leaving: the unsubscribe page, RFC 8058 one-click as a mail provider sends it, re-subscribe, preferences."""

from __future__ import annotations

import json

import pytest
from httpx import AsyncClient
from sqlalchemy import Engine

from newsletter import database, links
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber, forget
from newsletter.tokens import Purpose, Signer
from tests.webflow import confirm_link, hidden, path_of, press_button, status_of, stored_message

pytestmark = pytest.mark.anyio


def reader(engine: Engine, settings: Settings, email: str = "ann@example.org") -> tuple[str, str]:
    """An active subscriber: the paths of their unsubscribe and preferences links."""
    signer = Signer(settings.secret_key)
    with database.transaction(engine) as session:
        subscriber = add_subscriber(session, email, "Ann", attributes={"city": "Springfield"})
        return (
            path_of(links.unsubscribe_url(settings, signer, subscriber.id)),
            path_of(links.preferences_url(settings, signer, subscriber.id)),
        )


async def test_unsubscribe_page_needs_the_button(client: AsyncClient, engine: Engine, settings: Settings) -> None:
    unsubscribe, _ = reader(engine, settings)
    page = await client.get(unsubscribe)
    assert page.status_code == 200 and "ann@example.org" in page.text and "<button" in page.text
    assert status_of(engine, "ann@example.org") == "active"
    done = await press_button(client, unsubscribe)
    assert done.status_code == 200 and "You are unsubscribed" in done.text and "Subscribe again" in done.text
    assert status_of(engine, "ann@example.org") == "unsubscribed"
    again = await client.get(unsubscribe)
    assert again.status_code == 200 and "not on the list" in again.text


async def test_unsubscribe_button_needs_csrf(client: AsyncClient, engine: Engine, settings: Settings) -> None:
    unsubscribe, _ = reader(engine, settings)
    await client.get(unsubscribe)
    refused = await client.post(unsubscribe, data={"csrf_token": "forged"})
    assert refused.status_code == 403
    assert status_of(engine, "ann@example.org") == "active"


async def test_one_click_exactly_as_a_mail_provider_posts(
    settings: Settings, engine: Engine, client: AsyncClient
) -> None:
    """RFC 8058 3.2: POST to the List-Unsubscribe URI, body List-Unsubscribe=One-Click, no cookies."""
    unsubscribe, _ = reader(engine, settings)
    url = settings.base_url + unsubscribe
    client.cookies.clear()
    for _ in range(2):  # providers retry; the second is harmless
        answer = await client.post(
            url,
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded", "user-agent": "GoogleOneClick/1.0"},
        )
        assert answer.status_code == 200 and not answer.is_redirect
        assert "set-cookie" not in answer.headers and "Unsubscribed" in answer.text
        assert status_of(engine, "ann@example.org") == "unsubscribed"


async def test_one_click_as_multipart_and_with_a_bad_token(
    settings: Settings, engine: Engine, client: AsyncClient
) -> None:
    unsubscribe, _ = reader(engine, settings)
    answer = await client.post(unsubscribe, files={"List-Unsubscribe": (None, "One-Click")})
    assert answer.status_code == 200 and status_of(engine, "ann@example.org") == "unsubscribed"
    bad = await client.post(unsubscribe[:-4] + "abcd", data={"List-Unsubscribe": "One-Click"})
    assert bad.status_code == 400 and "not valid" in bad.text
    signer = Signer(settings.secret_key)
    confirm_token = signer.dumps(Purpose.CONFIRM, [1, 1])  # a confirm token can never unsubscribe
    wrong_purpose = await client.post(f"/unsubscribe/{confirm_token}", data={"List-Unsubscribe": "One-Click"})
    assert wrong_purpose.status_code == 400


async def test_unsubscribe_links_never_expire(settings: Settings, engine: Engine, client: AsyncClient) -> None:
    unsubscribe, _ = reader(engine, settings)
    token = unsubscribe.rsplit("/", 1)[1]
    assert token.count(".") == 1  # no timestamp part: URLSafeSerializer, not the timed one
    assert (await client.get(unsubscribe)).status_code == 200


async def test_resubscribe_sends_a_confirmation(
    settings: Settings, engine: Engine, client: AsyncClient, queued: list[int]
) -> None:
    unsubscribe, _ = reader(engine, settings)
    done = await press_button(client, unsubscribe)
    back = await client.post(unsubscribe + "/resubscribe", data={"csrf_token": hidden(done.text, "csrf_token")})
    assert back.status_code == 200 and "Check your inbox" in back.text
    assert status_of(engine, "ann@example.org") == "pending" and len(queued) == 1
    await press_button(client, path_of(confirm_link(stored_message(engine, queued[0]))))
    assert status_of(engine, "ann@example.org") == "active"
    assert (await client.post(unsubscribe + "/resubscribe", data={})).status_code == 403


async def test_preferences_show_export_and_erase(settings: Settings, engine: Engine, client: AsyncClient) -> None:
    _, preferences = reader(engine, settings)
    page = await client.get(preferences)
    assert page.status_code == 200
    for shown in ("ann@example.org", "Ann", "Springfield", "subscribed", "signed up"):
        assert shown in page.text
    exported = await client.get(preferences + "/export")
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    data = json.loads(exported.text)
    assert data["email"] == "ann@example.org" and data["attributes"] == {"city": "Springfield"}
    assert "id" not in data
    assert (await client.post(preferences + "/erase", data={"csrf_token": "forged"})).status_code == 403
    erased = await client.post(preferences + "/erase", data={"csrf_token": hidden(page.text, "csrf_token")})
    assert erased.status_code == 200 and "erased" in erased.text
    assert status_of(engine, "ann@example.org") is None
    after = await client.get(preferences + "/export")
    assert after.status_code == 410 and "ann@example.org" not in after.text and "erased" in after.text
    assert (await client.get(preferences[:-3])).status_code == 400


async def test_links_of_an_erased_subscriber_show_nothing_and_one_click_stays_harmless(
    settings: Settings, engine: Engine, client: AsyncClient, queued: list[int]
) -> None:
    unsubscribe, preferences = reader(engine, settings)
    csrf = hidden((await client.get(preferences)).text, "csrf_token")  # a page left open in a tab
    with database.transaction(engine) as session:
        forget(session, "ann@example.org")
    for path in (preferences, preferences + "/export"):
        gone = await client.get(path)
        assert gone.status_code == 410 and "erased" in gone.text
        assert "forgotten" not in gone.text and "unsubscribed" not in gone.text
    assert (await client.post(preferences + "/erase", data={"csrf_token": csrf})).status_code == 410
    left = await client.get(unsubscribe)
    assert left.status_code == 200 and "not on the list" in left.text
    assert "forgotten" not in left.text and "Subscribe again" not in left.text
    assert (await client.post(unsubscribe, data={"csrf_token": csrf})).status_code == 200
    back = await client.post(unsubscribe + "/resubscribe", data={"csrf_token": csrf})
    assert back.status_code == 200 and queued == []  # no confirmation mail to the anonymous row
    client.cookies.clear()
    for _ in range(2):  # RFC 8058: providers retry a one-click POST; it must stay a quiet 200
        answer = await client.post(
            settings.base_url + unsubscribe,
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 200 and not answer.is_redirect and "Unsubscribed" in answer.text
