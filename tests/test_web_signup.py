"""The sign-up form and the confirmation pages, through the in-process client."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import anyio
import pytest
from httpx import AsyncClient
from sqlalchemy import Engine, func, select

from newsletter import database
from newsletter.models import OutboundMessage, Subscriber
from newsletter.settings import Settings
from subscribers.app import create_app
from tests.webflow import client_for, confirm_link, hidden, path_of, press_button, sign_up, status_of, stored_message

pytestmark = pytest.mark.anyio
README = Path(__file__).resolve().parent.parent / "README.md"


def count(engine: Engine, model: type[Subscriber] | type[OutboundMessage]) -> int:
    with database.transaction(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


async def test_form_is_an_accessible_page_without_script(client: AsyncClient) -> None:
    page = await client.get("/subscribe")
    assert page.status_code == 200
    assert 'name="viewport"' in page.text and '<label for="email">' in page.text
    assert "<script" not in page.text
    assert "script-src" not in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert (await client.get("/")).status_code == 200


async def test_sign_up_stores_a_pending_subscriber_and_queues_one_confirmation(
    client: AsyncClient, engine: Engine, queued: list[int], settings: Settings
) -> None:
    answer = await sign_up(client, "Ann@Example.org", "Ann")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert status_of(engine, "ann@example.org") == "pending"
    assert len(queued) == 1
    message = stored_message(engine, queued[0])
    assert message["To"] == "Ann <Ann@Example.org>"
    assert message["Subject"] == f"Confirm your subscription to {settings.newsletter_name}"
    assert message["Auto-Submitted"] == "auto-generated"
    assert confirm_link(message).startswith(f"{settings.base_url}/confirm/")


async def test_answer_is_the_same_whatever_the_state(client: AsyncClient, engine: Engine, queued: list[int]) -> None:
    first = (await sign_up(client, "ann@example.org")).text
    assert (await sign_up(client, "ann@example.org")).text == first  # pending: a fresh confirmation
    assert len(queued) == 2
    await press_button(client, path_of(confirm_link(stored_message(engine, queued[1]))))
    assert status_of(engine, "ann@example.org") == "active"
    assert len(queued) == 3  # the welcome mail
    assert (await sign_up(client, "ann@example.org")).text == first  # active: nothing new is sent
    assert len(queued) == 3
    assert (await sign_up(client, "bob@example.org")).text == first  # new


async def test_confirm_page_needs_the_button(client: AsyncClient, engine: Engine, queued: list[int]) -> None:
    await sign_up(client, "ann@example.org")
    path = path_of(confirm_link(stored_message(engine, queued[0])))
    for _ in range(3):  # a mail scanner fetching the link, several times
        page = await client.get(path)
        assert page.status_code == 200 and "Confirm my subscription" in page.text
    await client.head(path)
    assert status_of(engine, "ann@example.org") == "pending"
    done = await client.post(path, data={"csrf_token": hidden(page.text, "csrf_token")})
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert status_of(engine, "ann@example.org") == "active"
    again = await client.post(path, data={"csrf_token": hidden(page.text, "csrf_token")})
    assert again.status_code == 410 and "already been used" in again.text
    assert (await client.get(path)).status_code == 410


async def test_confirm_without_csrf_token_changes_nothing(
    client: AsyncClient, engine: Engine, queued: list[int]
) -> None:
    await sign_up(client, "ann@example.org")
    path = path_of(confirm_link(stored_message(engine, queued[0])))
    await client.get(path)
    for data in ({}, {"csrf_token": "forged"}):
        refused = await client.post(path, data=data)
        assert refused.status_code == 403 and "expired" in refused.text
    client.cookies.clear()
    page = await client.get(path)
    token = hidden(page.text, "csrf_token")
    client.cookies.clear()  # the token without its cookie: a cross-site post
    assert (await client.post(path, data={"csrf_token": token})).status_code == 403
    assert status_of(engine, "ann@example.org") == "pending"


async def test_bad_confirm_tokens_are_pages_with_the_right_status(
    client: AsyncClient, engine: Engine, queued: list[int], settings: Settings
) -> None:
    await sign_up(client, "ann@example.org")
    path = path_of(confirm_link(stored_message(engine, queued[0])))
    assert (await client.get(path[:-3])).status_code == 400
    assert (await client.get("/confirm/nonsense")).status_code == 400
    expired = create_app(settings.replace(confirm_max_age_seconds=1), engine)
    async with client_for(expired, settings.base_url) as later:
        await anyio.sleep(2.1)
        page = await later.get(path)
        assert page.status_code == 410 and "expired" in page.text and "sign up again" in page.text
    for response in (await client.get(path[:-3]), await client.get("/confirm/nonsense")):
        assert "Traceback" not in response.text and "<h1>" in response.text


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("", "Please check the email address"),
        ("ann@", "Please check the email address"),
        ("ann@example.org\r\nBcc: x@example.org", "Please check the email address"),
        ("x" * 500, "Please check"),
    ],
)
async def test_bad_addresses_get_a_clear_message_on_the_form(
    client: AsyncClient, engine: Engine, queued: list[int], address: str, message: str
) -> None:
    answer = await sign_up(client, address, "Ann")
    assert answer.status_code == 422
    assert message in answer.text and 'role="alert"' in answer.text and 'aria-invalid="true"' in answer.text
    assert 'value="Ann"' in answer.text  # what was typed stays
    assert count(engine, Subscriber) == 0 and queued == []


async def test_honeypot_answers_as_usual_and_does_nothing(
    client: AsyncClient, engine: Engine, queued: list[int]
) -> None:
    answer = await sign_up(client, "bot@example.org", website="http://spam.example")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert count(engine, Subscriber) == 0 and queued == []


async def test_a_burst_of_sign_ups_hands_its_mails_to_the_queue_a_group_at_a_time(
    settings: Settings, engine: Engine
) -> None:
    # Sign-ups that share a transaction share a queue message: a worker claims and records its mails
    # together, instead of a queue message, a claim and a record each.
    calls: list[list[int]] = []
    app = create_app(settings.replace(signup_min_fill_seconds=0, signup_limit_per_ip=0), engine, enqueue=calls.append)
    async with client_for(app, settings.base_url) as client:
        answers = await asyncio.gather(*(sign_up(client, f"reader{n}@example.org") for n in range(40)))
    assert all(answer.status_code == 200 for answer in answers)
    queued = [outbound_id for call in calls for outbound_id in call]
    assert sorted(queued) == sorted(set(queued)) and len(queued) == count(engine, OutboundMessage) == 40
    assert len(calls) < 40 and max(map(len, calls)) <= database.GROUP_COMMIT_MOST


async def test_too_quick_or_forged_stamp_is_refused(settings: Settings, engine: Engine) -> None:
    queued: list[int] = []
    app = create_app(settings.replace(signup_min_fill_seconds=30), engine, enqueue=queued.extend)
    async with client_for(app, settings.base_url) as client:
        quick = await sign_up(client, "ann@example.org")
        assert quick.status_code == 422 and "very quick" in quick.text
        forged = await client.post("/subscribe", data={"email": "ann@example.org", "stamp": "forged"})
        assert forged.status_code == 422 and "open too long" in forged.text
    assert count(engine, Subscriber) == 0 and queued == []


async def test_readme_snippet_posts_cross_site(client: AsyncClient, engine: Engine, queued: list[int]) -> None:
    """The README's snippet, pasted on another site: no stamp, no cookie; the sign-up is taken as it comes."""
    snippet = README.read_text(encoding="utf-8").split("<!-- sign-up snippet -->")[1]
    action = re.search(r'<form method="post" action="([^"]+)"', snippet)
    assert action is not None and action.group(1).endswith("/subscribe")
    fields = re.findall(r'<input[^>]* name="([a-z]+)"', snippet)
    assert fields == ["email", "name", "website"]
    posted = {"email": "ann@example.org", "name": "Ann", "website": ""}
    answer = await client.post(
        path_of(action.group(1)),
        data={name: posted[name] for name in fields},
        headers={"origin": "https://someones-blog.example", "sec-fetch-site": "cross-site"},
    )
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert status_of(engine, "ann@example.org") == "pending" and len(queued) == 1
    assert "set-cookie" not in answer.headers
    bot = await client.post(path_of(action.group(1)), data={"email": "bot@example.org", "website": "http://spam"})
    assert bot.status_code == 200 and status_of(engine, "bot@example.org") is None and len(queued) == 1


async def test_rate_limits_answer_429_on_the_form(settings: Settings, engine: Engine) -> None:
    app = create_app(settings.replace(signup_min_fill_seconds=0, signup_limit_per_ip=2), engine)
    async with client_for(app, settings.base_url) as client:
        assert (await sign_up(client, "a@example.org")).status_code == 200
        assert (await sign_up(client, "b@example.org")).status_code == 200
        refused = await sign_up(client, "c@example.org")
        assert refused.status_code == 429 and "try again in an hour" in refused.text
    assert status_of(engine, "c@example.org") is None


async def test_daily_cap_sends_no_more_but_answers_the_same(
    client: AsyncClient, engine: Engine, queued: list[int], settings: Settings
) -> None:
    answers = {(await sign_up(client, "ann@example.org")).text for _ in range(settings.confirmation_daily_cap + 2)}
    assert len(answers) == 1
    assert len(queued) == settings.confirmation_daily_cap == count(engine, OutboundMessage)
