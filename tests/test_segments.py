"""Tags, topics and segments: who an issue goes to, in the one INSERT ... SELECT, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, event, select

from newsletter import campaign, database, ledger, tags, topics
from newsletter.cli import main
from newsletter.models import Delivery, Subscriber, utcnow
from newsletter.render import render_issue
from newsletter.segments import InvalidSegment, Segment, chosen_segment, make_segment, parse_segment
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from newsletter.tags import InvalidTag, UnknownSubscriber
from newsletter.topics import InvalidTopic

ISSUE = "---\nsubject: Segment notes\nslug: segment-1\n---\n\n# Segment notes\n\nHello.\n"


def fill_list(engine: Engine) -> None:
    """ann: ai; bo: ai, old; cy: ml, chose topic weekly; di: no tag, chose topic daily; ed: paused."""
    with database.transaction(engine) as session:
        topics.define_topic(session, "weekly", "每周精选")
        topics.define_topic(session, "daily", "Daily notes")
        people = {name: add_subscriber(session, f"{name}@example.com") for name in ("ann", "bo", "cy", "di", "ed")}
        session.flush()
        tags.tag(session, ["ann@example.com", "bo@example.com"], ["ai"])
        tags.tag(session, ["bo@example.com"], ["old"])
        tags.tag(session, ["cy@example.com"], ["ml"])
        topics.choose_topics(session, people["cy"], ["weekly"])
        topics.choose_topics(session, people["di"], ["daily"])
        people["ed"].paused_until = utcnow() + dt.timedelta(days=3)


def recipients(engine: Engine, settings: Settings, segment: Segment) -> set[str]:
    """Who gets a delivery row when the issue is sent to `segment`, counting the INSERT statements."""
    inserts: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO DELIVERIES"):
            inserts.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        with database.transaction(engine) as session:
            issue = ledger.store_issue(session, render_issue(ISSUE, settings))
            issue.segment = segment.as_json()
            planned = ledger.count_recipients(session, None, segment)
            created = ledger.create_deliveries(session, issue)
            emails = session.scalars(
                select(Subscriber.email).join(Delivery, Delivery.subscriber_id == Subscriber.id)
            ).all()
            session.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(inserts) == 1, "the deliveries of a segment are one INSERT ... SELECT"
    assert planned == created == len(emails), "send shows the count it will reach"
    return {address.split("@")[0] for address in emails}


CASES = [
    (Segment(), {"ann", "bo", "cy", "di"}),
    (Segment(tags=("ai",)), {"ann", "bo"}),
    (Segment(tags=("ai", "ml")), {"ann", "bo", "cy"}),
    (Segment(tags=("ai",), exclude_tags=("old",)), {"ann"}),
    (Segment(exclude_tags=("ai",)), {"cy", "di"}),
    # Readers who chose no topic get every topic; those who chose get only theirs.
    (Segment(topics=("weekly",)), {"ann", "bo", "cy"}),
    (Segment(tags=("ml", "ai"), topics=("daily",)), {"ann", "bo"}),
]


@pytest.mark.parametrize(("segment", "expected"), CASES)
def test_segments_on_sqlite(engine: Engine, settings: Settings, segment: Segment, expected: set[str]) -> None:
    fill_list(engine)
    assert recipients(engine, settings, segment) == expected


@pytest.mark.postgres
def test_segments_on_postgres(postgres_engine: Engine, postgres_settings: Settings) -> None:
    fill_list(postgres_engine)
    for segment, expected in CASES:
        assert recipients(postgres_engine, postgres_settings, segment) == expected, segment


def test_front_matter_segment() -> None:
    assert parse_segment("ai, ml, -old, topic:weekly") == Segment(("ai", "ml"), ("old",), ("weekly",))
    with pytest.raises(InvalidSegment, match="empty item"):
        parse_segment("ai,,ml")
    with pytest.raises(InvalidSegment):
        parse_segment("topic:Not A Key")
    assert chosen_segment({"segment": "ai"}) == Segment(("ai",))
    assert chosen_segment({"segment": "ai"}, tags=["ml"]) == Segment(("ml",)), "the command's options win"


def test_tags_are_checked(engine: Engine) -> None:
    with pytest.raises(InvalidTag):
        make_segment(tags=["a,b"])
    with pytest.raises(InvalidTag):
        make_segment(tags=["bad\x00tag"])
    with database.transaction(engine) as session, pytest.raises(UnknownSubscriber):
        tags.tag(session, ["nobody@example.com"], ["ai"])


def test_a_segment_naming_no_topic_is_refused_before_anything_is_stored(engine: Engine, settings: Settings) -> None:
    fill_list(engine)
    with pytest.raises(InvalidTopic, match="nope"):
        campaign.plan(engine, render_issue(ISSUE, settings), segment=Segment(topics=("nope",)))
    with pytest.raises(InvalidTopic):
        campaign.start(engine, render_issue(ISSUE, settings), segment=Segment(topics=("nope",)))
    with database.transaction(engine) as session:
        assert session.scalar(select(Delivery.id)) is None


def test_the_segment_is_kept_on_the_issue(engine: Engine, settings: Settings) -> None:
    fill_list(engine)
    issue_id = campaign.start(engine, render_issue(ISSUE, settings), segment=Segment(tags=("ai",)))
    with database.transaction(engine) as session:
        assert ledger.rendered_issue(session, issue_id).slug == "segment-1"
        stored = session.scalar(select(ledger.Issue.segment))
        assert stored == {"tags": ["ai"], "exclude_tags": [], "topics": []}
        assert ledger.counts(session, issue_id).total == 2


def test_cli_tags_topics_and_send_shows_the_audience(tmp_path: Path, settings: Settings, engine: Engine) -> None:
    with database.transaction(engine) as session:
        for name in ("ann", "bo"):
            add_subscriber(session, f"{name}@example.com")
    config = tmp_path / "cli.toml"
    config.write_text(
        f'database_url = "{settings.database_url}"\nsecret_key = "{settings.secret_key}"\n'
        f'from_address = "{settings.from_address}"\npostal_address = "x"\n',
        encoding="utf-8",
    )

    def run(*args: str) -> str:
        result = CliRunner().invoke(main, ["--config", str(config), *args])
        assert result.exit_code == (0 if "--yes" not in args else result.exit_code), result.output
        return result.output

    assert "Tagged 1" in run("subscribers", "tag", "ai", "ann@example.com")
    assert "ai" in run("subscribers", "tags")
    assert "weekly" in run("topics", "add", "weekly", "每周精选")
    assert "每周精选" in run("topics", "list")
    issue = tmp_path / "notes.md"
    issue.write_text(ISSUE.replace("slug: segment-1", "slug: segment-1\nsegment: ai"), encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(config), "send", str(issue), "--dry-run"])
    assert "tagged ai" in result.output and "recipients" in result.output
    assert "Send to 1 recipients?" in result.output or "--yes" in result.output
    result = CliRunner().invoke(main, ["--config", str(config), "send", str(issue), "--topic", "nope"])
    assert result.exit_code == 1 and "no topic 'nope'" in result.output


def test_cli_adds_a_subscriber_with_language_and_tags(tmp_path: Path, settings: Settings, engine: Engine) -> None:
    config = tmp_path / "cli.toml"
    config.write_text(f'database_url = "{settings.database_url}"\nsecret_key = "x"\n', encoding="utf-8")
    args = ["--config", str(config), "subscribers", "add", "li@example.org", "--language", "zh", "--tag", "ai"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    with database.transaction(engine) as session:
        subscriber = session.scalars(select(Subscriber)).one()
        assert subscriber.language == "zh-CN" and tags.tags_of(session, subscriber.id) == ["ai"]
    refused = CliRunner().invoke(main, [*args[:4], "bo@example.org", "--language", "klingon"])
    assert refused.exit_code == 1 and "no catalog" in refused.output
