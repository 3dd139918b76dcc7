"""The desk's subscriber pages and the search behind them: filters, keyset pages, a reader's record, changes."""

from __future__ import annotations

import datetime as dt

import pytest
from httpx import AsyncClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from newsletter import database, directory
from newsletter.models import AccountRole, Event, Subscriber, SubscriberStatus
from newsletter.subscriptions import add_subscriber
from tests.deskflow import EDITOR, VIEWER, make_account, post_form, sign_in
from tests.webflow import hidden

pytestmark = pytest.mark.anyio


def fill(session: Session, count: int) -> None:
    for number in range(count):
        add_subscriber(session, f"reader{number:03d}@example.org", f"Reader {number}")
    session.commit()


def test_search_pages_cover_every_row_once(session: Session) -> None:
    fill(session, 23)
    since = dt.date(2000, 1, 1)
    for sort, joined_from in [(sort, day) for sort in directory.Sort for day in (None, since)]:
        seen: list[int] = []
        cursor = None
        while True:
            wanted = directory.Search(sort=sort, limit=5, joined_from=joined_from)
            page = directory.search(session, wanted, cursor)
            seen += [row.id for row in page.rows]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert sorted(seen) == sorted(set(seen)) and len(seen) == 23, sort


def test_search_by_address_name_and_domain(session: Session) -> None:
    fill(session, 3)
    add_subscriber(session, "someone@другой.example", "Zoë")
    assert [row.email for row in directory.search(session, directory.Search(query="reader001")).rows] == [
        "reader001@example.org"
    ]
    assert len(directory.search(session, directory.Search(query="Reader")).rows) == 3
    assert [row.name for row in directory.search(session, directory.Search(query="zo")).rows] == ["Zoë"]
    assert len(directory.search(session, directory.Search(query="@example.org")).rows) == 3
    assert directory.search(session, directory.Search(query="100%_")).rows == []


def test_search_filters_status_and_join_date(session: Session) -> None:
    fill(session, 4)
    add_subscriber(session, "waiting@example.org", status=SubscriberStatus.PENDING)
    assert [row.email for row in directory.search(session, directory.Search(status=SubscriberStatus.PENDING)).rows] == [
        "waiting@example.org"
    ]
    today = dt.datetime.now(dt.UTC).date()
    assert len(directory.search(session, directory.Search(joined_from=today)).rows) == 5
    assert directory.search(session, directory.Search(joined_until=today - dt.timedelta(days=1))).rows == []


def test_cursor_of_another_order_is_refused(session: Session) -> None:
    fill(session, 3)
    cursor = directory.search(session, directory.Search(limit=1)).next_cursor
    assert cursor
    with pytest.raises(directory.BadCursor):
        directory.search(session, directory.Search(sort=directory.Sort.EMAIL, limit=1), cursor)
    with pytest.raises(directory.BadCursor):
        directory.search(session, directory.Search(limit=1), "not-a-cursor!")


def test_edit_logs_who_changed_what(session: Session) -> None:
    subscriber = add_subscriber(session, "a@example.org", "A")
    directory.edit(session, subscriber.id, name="Ann", language="zh-CN", tags=["vip"], source="desk", actor=EDITOR)
    session.flush()
    record = directory.reader(session, subscriber.id)
    assert record.subscriber.name == "Ann" and record.subscriber.language == "zh-CN" and record.tags == ["vip"]
    assert record.history[0].kind == "edited" and record.history[0].actor == EDITOR


async def editor_client(client: AsyncClient, engine: Engine) -> AsyncClient:
    make_account(engine)
    await sign_in(client)
    return client


async def test_every_desk_page_needs_a_session(client: AsyncClient, engine: Engine) -> None:
    make_account(engine)
    with database.transaction(engine) as session:
        subscriber_id = add_subscriber(session, "a@example.org").id
    for path in (
        "/admin",
        "/admin/subscribers",
        "/admin/subscribers/new",
        "/admin/subscribers/import",
        "/admin/subscribers/export.csv",
        f"/admin/subscribers/{subscriber_id}",
        f"/admin/subscribers/{subscriber_id}/forget",
    ):
        answer = await client.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/admin/sign-in"), path
    for path in (
        "/admin/subscribers/new",
        f"/admin/subscribers/{subscriber_id}/unsubscribe",
        f"/admin/subscribers/{subscriber_id}/forget",
        f"/admin/subscribers/{subscriber_id}/edit",
    ):
        assert (await client.post(path, data={"email": "b@example.org"})).status_code == 401, path


async def test_posts_need_the_csrf_token(client: AsyncClient, engine: Engine) -> None:
    await editor_client(client, engine)
    answer = await client.post("/admin/subscribers/new", data={"email": "b@example.org"})
    assert answer.status_code == 403
    answer = await client.post("/admin/subscribers/new", data={"email": "b@example.org", "csrf_token": "forged"})
    assert answer.status_code == 403


async def test_viewer_sees_but_cannot_change(client: AsyncClient, engine: Engine) -> None:
    make_account(engine, VIEWER, AccountRole.VIEWER)
    with database.transaction(engine) as session:
        subscriber_id = add_subscriber(session, "a@example.org").id
    await sign_in(client, VIEWER)
    assert (await client.get(f"/admin/subscribers/{subscriber_id}")).status_code == 200
    for action in ("unsubscribe", "edit", "forget"):
        answer = await post_form(
            client,
            f"/admin/subscribers/{subscriber_id}",
            f"/admin/subscribers/{subscriber_id}/{action}",
            confirm_email="a@example.org",
            name="x",
        )
        assert answer.status_code == 403, action
    with database.transaction(engine) as session:
        assert session.get_one(Subscriber, subscriber_id).status == SubscriberStatus.ACTIVE


async def test_add_edit_unsubscribe_and_forget(client: AsyncClient, engine: Engine) -> None:
    await editor_client(client, engine)
    answer = await post_form(
        client, "/admin/subscribers/new", "/admin/subscribers/new", email="New@Example.org", name="N"
    )
    assert answer.status_code == 303
    path = answer.headers["location"].split("?")[0]
    subscriber_id = int(path.rsplit("/", 1)[1])
    page = await client.get(answer.headers["location"])
    assert "Added to the list." in page.text and "New@Example.org" in page.text
    assert (await post_form(client, path, f"{path}/edit", name="Nora", language="zh", tags="a, b")).status_code == 303
    assert (await post_form(client, path, f"{path}/unsubscribe")).status_code == 303
    wrong = await post_form(client, f"{path}/forget", f"{path}/forget", confirm_email="someone else")
    assert wrong.status_code == 422
    assert (
        await post_form(client, f"{path}/forget", f"{path}/forget", confirm_email="new@example.org")
    ).status_code == 303
    with database.transaction(engine) as session:
        subscriber = session.get_one(Subscriber, subscriber_id)
        assert subscriber.name is None and subscriber.status == SubscriberStatus.UNSUBSCRIBED
        actors = {event.actor for event in session.query(Event).filter_by(subscriber_id=subscriber_id)}
        assert actors == {EDITOR}


async def test_hostile_input_is_refused_or_escaped(client: AsyncClient, engine: Engine) -> None:
    await editor_client(client, engine)
    answer = await post_form(
        client, "/admin/subscribers/new", "/admin/subscribers/new", email="a@example.org", name="x\r\nBcc: y"
    )
    assert answer.status_code == 422 and "line break" in answer.text
    answer = await post_form(
        client, "/admin/subscribers/new", "/admin/subscribers/new", email="a@example.org\r\nBcc: b@example.org", name=""
    )
    assert answer.status_code == 422
    answer = await post_form(
        client,
        "/admin/subscribers/new",
        "/admin/subscribers/new",
        email="b@example.org",
        name="<script>alert(1)</script>",
    )
    assert answer.status_code == 303
    page = await client.get("/admin/subscribers")
    assert "<script>alert(1)" not in page.text and "&lt;script&gt;alert(1)" in page.text
    assert (await client.get("/admin/subscribers?after=garbage")).status_code == 400
    assert (await client.get("/admin/subscribers?status=nonsense&from=yesterday&limit=-4")).status_code == 200


async def test_list_pages_and_filters(client: AsyncClient, engine: Engine) -> None:
    await editor_client(client, engine)
    with database.transaction(engine) as session:
        fill(session, 7)
    first = await client.get("/admin/subscribers?limit=5")
    assert first.text.count("/admin/subscribers/") >= 5 and "Next page" in first.text
    import re

    next_link = re.search(r'rel="next" href="([^"]+)"', first.text)
    assert next_link
    second = await client.get(next_link.group(1).replace("&amp;", "&"))
    assert "reader000@example.org" in second.text and "Next page" not in second.text


async def test_import_upload_reports_rejected_lines(client: AsyncClient, engine: Engine) -> None:
    await editor_client(client, engine)
    page = await client.get("/admin/subscribers/import")
    csv_text = "email,name\ngood@example.org,Good\nnot-an-address,Bad\ngood@example.org,Again\n"
    answer = await client.post(
        "/admin/subscribers/import",
        data={"csrf_token": hidden(page.text, "csrf_token"), "status": "active"},
        files={"file": ("list.csv", csv_text.encode(), "text/csv")},
    )
    assert answer.status_code == 200
    assert "imported 1" in answer.text and "duplicate of line 2" in answer.text
    assert '<td class="num">3</td>' in answer.text
    bad = await client.post(
        "/admin/subscribers/import",
        data={"csrf_token": hidden(page.text, "csrf_token")},
        files={"file": ("list.csv", b"name\nx\n", "text/csv")},
    )
    assert bad.status_code == 422 and "list.csv has no &#39;email&#39; column" in bad.text


async def test_import_upload_in_gbk_with_its_encoding_chosen(client: AsyncClient, engine: Engine) -> None:
    await editor_client(client, engine)
    page = await client.get("/admin/subscribers/import")
    data = "email,name\nzhang@example.cn,张三\n".encode("gbk")
    unsure = await client.post(
        "/admin/subscribers/import",
        data={"csrf_token": hidden(page.text, "csrf_token")},
        files={"file": ("名单.csv", data, "text/csv")},
    )
    assert unsure.status_code == 422 and "名单.csv is not UTF-8 (line 2" in unsure.text
    chosen = await client.post(
        "/admin/subscribers/import",
        data={"csrf_token": hidden(page.text, "csrf_token"), "encoding": "gb18030"},
        files={"file": ("名单.csv", data, "text/csv")},
    )
    assert chosen.status_code == 200 and "imported 1" in chosen.text and "Read as gb18030 (given)" in chosen.text
    assert "张三" in (await client.get("/admin/subscribers?q=zhang")).text


async def test_huge_upload_is_refused_clearly(client: AsyncClient, engine: Engine) -> None:
    await editor_client(client, engine)
    page = await client.get("/admin/subscribers/import")
    answer = await client.post(
        "/admin/subscribers/import",
        data={"csrf_token": hidden(page.text, "csrf_token")},
        files={"file": ("big.csv", b"email\n" + b"x" * (10 * 1024 * 1024), "text/csv")},
    )
    assert answer.status_code == 413 and "larger than 8 MiB" in answer.text


async def test_export_is_csv(client: AsyncClient, engine: Engine) -> None:
    await editor_client(client, engine)
    with database.transaction(engine) as session:
        fill(session, 2)
    answer = await client.get("/admin/subscribers/export.csv")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert answer.text.splitlines()[0].startswith("email,name,status") and "reader001@example.org" in answer.text


async def test_reader_page_shows_history(client: AsyncClient, engine: Engine) -> None:
    await editor_client(client, engine)
    with database.transaction(engine) as session:
        subscriber_id = add_subscriber(session, "a@example.org").id
    page = await client.get(f"/admin/subscribers/{subscriber_id}")
    assert page.status_code == 200 and "created" in page.text
    assert (await client.get("/admin/subscribers/999999")).status_code == 404


async def test_reactivate_needs_a_reason_and_logs_who(client: AsyncClient, engine: Engine) -> None:
    await editor_client(client, engine)
    with database.transaction(engine) as session:
        subscriber = add_subscriber(session, "gone@example.org")
        subscriber.status = SubscriberStatus.BOUNCED
        subscriber_id = subscriber.id
    path = f"/admin/subscribers/{subscriber_id}"
    assert "Make active again" in (await client.get(path)).text
    refused = await post_form(client, path, f"{path}/reactivate", reason=" ")
    assert refused.status_code == 422
    assert (await post_form(client, path, f"{path}/reactivate", reason="mailbox fixed, they wrote")).status_code == 303
    with database.transaction(engine) as session:
        assert session.get_one(Subscriber, subscriber_id).status == SubscriberStatus.ACTIVE
        events = session.query(Event).filter_by(subscriber_id=subscriber_id, kind="reactivated").all()
        assert [event.actor for event in events] == [EDITOR]


async def test_dashboard_names_what_waits(client: AsyncClient, engine: Engine) -> None:
    from newsletter.models import UnrecognizedMessage

    await editor_client(client, engine)
    with database.transaction(engine) as session:
        for number, kind in enumerate(("unverified", "unverified", "unrecognized")):
            session.add(
                UnrecognizedMessage(
                    source="stdin", external_id=f"message:{number}", note="x", size_bytes=1, raw=b"x", kind=kind
                )
            )
    page = await client.get("/admin")
    assert (
        "2 reports are not tied to our mail" in page.text
        and "1 message to the bounce address was not recognised" in page.text
    )


async def test_a_readers_topics_are_ticked_on_their_page(client: AsyncClient, engine: Engine) -> None:
    from newsletter import topics

    await editor_client(client, engine)
    with database.transaction(engine) as session:
        topics.define_topic(session, "weekly", "每周精选")
        topics.define_topic(session, "daily", "Daily")
        subscriber_id = add_subscriber(session, "t@example.org").id
    path = f"/admin/subscribers/{subscriber_id}"
    page = await client.get(path)
    assert 'name="topics" value="weekly"' in page.text and "每周精选" in page.text
    token = hidden(page.text, "csrf_token")
    fields = {"csrf_token": token, "name": "", "tags": "", "language": "", "topics_shown": "1", "topics": ["daily"]}
    assert (await client.post(f"{path}/edit", data=fields)).status_code == 303
    fields["topics"] = ["daily", "gone"]  # a topic removed while the page was open
    refused = await client.post(f"{path}/edit", data=fields)
    assert refused.status_code == 422 and "no topic" in refused.text
    # A form without the topics box (no topics when it was drawn) leaves them as they are.
    fields = {"csrf_token": token, "name": "T", "tags": "", "language": ""}
    assert (await client.post(f"{path}/edit", data=fields)).status_code == 303
    with database.transaction(engine) as session:
        assert topics.chosen_topics(session, subscriber_id) == ["daily"]
        events = session.query(Event).filter_by(subscriber_id=subscriber_id, kind="edited").all()
        assert [event.payload for event in events] == [{"topics": ["daily"]}, {"name": True}]
        assert {event.actor for event in events} == {EDITOR}


async def test_topics_and_tags_page_defines_renames_and_removes(client: AsyncClient, engine: Engine) -> None:
    from newsletter import tags, topics

    await editor_client(client, engine)
    with database.transaction(engine) as session:
        subscriber_id = add_subscriber(session, "t@example.org").id
        tags.add_tags(session, [subscriber_id], ["vip <b>"])
    page = "/admin/audience"
    assert "vip &lt;b&gt;" in (await client.get(page)).text
    defined = await post_form(client, page, f"{page}/topics", key="Weekly", name="每周精选", description="Fridays")
    assert defined.status_code == 303
    renamed = await post_form(client, page, f"{page}/topics", key="weekly", name="Weekly picks")
    assert renamed.status_code == 303
    refused = await post_form(client, page, f"{page}/topics", key="not a key", name="x")
    assert refused.status_code == 422 and "topic key" in refused.text and 'value="not a key"' in refused.text
    shown = (await client.get(page)).text
    assert "Weekly picks" in shown and "每周精选" not in shown
    assert (await post_form(client, page, f"{page}/tags/remove", tag="vip <b>")).status_code == 303
    assert (await post_form(client, page, f"{page}/topics/weekly/remove")).status_code == 303
    assert (await post_form(client, page, f"{page}/topics/weekly/remove")).status_code == 404
    with database.transaction(engine) as session:
        assert topics.list_topics(session) == [] and tags.tags_of(session, subscriber_id) == []
        kinds = [event.kind for event in session.query(Event).filter_by(actor=EDITOR).order_by(Event.id)]
    assert kinds == ["topic_defined", "topic_defined", "tag_removed", "topic_removed"]


async def test_a_viewer_sees_topics_and_tags_but_changes_nothing(client: AsyncClient, engine: Engine) -> None:
    make_account(engine, VIEWER, AccountRole.VIEWER)
    await sign_in(client, VIEWER)
    answer = await post_form(client, "/admin/audience", "/admin/audience/topics", key="weekly", name="W")
    assert answer.status_code == 403
