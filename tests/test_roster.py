"""CSV import and export of the list."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter import database, roster, subscriptions
from newsletter.errors import ImportFileError
from newsletter.models import Event, Subscriber, SubscriberStatus


def write(tmp_path: Path, content: str, name: str = "list.csv") -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Subscriber)) or 0


def test_import_reports_rejects_with_line_numbers(session: Session, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Email,Name,City\na@example.org,Ann,Oslo\nA@EXAMPLE.org,dup,\n"
        'not-an-address,,\n"b@example.org","Bob, Jr.","Rome"\nc@example.org,only two\n',
    )
    report = roster.import_csv(session, path)
    assert report.added == 2
    assert [(r.line, r.email) for r in report.rejected] == [
        (3, "A@EXAMPLE.org"),
        (4, "not-an-address"),
        (6, "c@example.org"),
    ]
    assert "duplicate of line 2" in report.rejected[0].reason
    assert "@-sign" in report.rejected[1].reason
    bob = subscriptions.get_subscriber(session, "b@example.org")
    assert (bob.name, bob.attributes, bob.status, bob.source) == ("Bob, Jr.", {"City": "Rome"}, "active", "import")
    created = session.scalar(select(func.count()).select_from(Event).where(Event.kind == "created"))
    assert created == 2


def test_import_never_reactivates_who_left(session: Session, tmp_path: Path) -> None:
    for email, status in [
        ("gone@example.org", SubscriberStatus.UNSUBSCRIBED),
        ("bounced@example.org", SubscriberStatus.BOUNCED),
        ("spam@example.org", SubscriberStatus.COMPLAINED),
    ]:
        subscriber = subscriptions.add_subscriber(session, email)
        subscriptions.change_status(session, subscriber, status, "test")
    path = write(tmp_path, "email\nGONE@example.org\nbounced@example.org\nspam@EXAMPLE.ORG\nnew@example.org\n")
    report = roster.import_csv(session, path, SubscriberStatus.ACTIVE)
    assert (report.added, report.already_present, report.rejected) == (1, 3, [])
    statuses = {s.email: s.status for s in session.scalars(select(Subscriber))}
    assert statuses == {
        "gone@example.org": "unsubscribed",
        "bounced@example.org": "bounced",
        "spam@example.org": "complained",
        "new@example.org": "active",
    }


def test_import_honours_a_status_column(session: Session, tmp_path: Path) -> None:
    path = write(tmp_path, "email,status\nx@example.org,unsubscribed\ny@example.org,\nz@example.org,weird\n")
    report = roster.import_csv(session, path, SubscriberStatus.PENDING)
    assert report.added == 2 and [r.line for r in report.rejected] == [4]
    assert subscriptions.get_subscriber(session, "x@example.org").status == "unsubscribed"
    assert subscriptions.get_subscriber(session, "y@example.org").status == "pending"


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "is empty"), ("name,city\nAnn,Oslo\n", "no 'email' column"), ('email\n"a@b.org\n' + "x" * 200_000, "CSV")],
)
def test_unusable_files_are_one_clear_error(session: Session, tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(ImportFileError, match=message):
        roster.import_csv(session, write(tmp_path, content))
    assert count(session) == 0


def test_binary_file_is_refused(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(b"email\n\xff\xfe\x00garbage\n")
    with pytest.raises(ImportFileError, match="not UTF-8"):
        roster.import_csv(session, path)


def test_a_crash_mid_import_imports_nothing(engine: Engine, tmp_path: Path) -> None:
    # A trigger makes the database itself fail on one row in the middle of the insert.
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TRIGGER boom BEFORE INSERT ON subscribers WHEN NEW.email_key = 'row500@example.org' "
                "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
            )
        )
    rows = "".join(f"row{i}@example.org\n" for i in range(1000))
    path = write(tmp_path, "email\n" + rows)
    with pytest.raises(IntegrityError), database.transaction(engine) as session:
        roster.import_csv(session, path)
    with database.transaction(engine) as session:
        assert count(session) == 0


def test_large_import_validates_in_parallel(session: Session, tmp_path: Path) -> None:
    rows = "".join(f"user{i}@example{i % 7}.org,User {i}\n" for i in range(roster.PARALLEL_VALIDATION_MIN_ROWS + 10))
    path = write(tmp_path, "email,name\n" + rows + "broken@\n")
    report = roster.import_csv(session, path)
    assert report.added == roster.PARALLEL_VALIDATION_MIN_ROWS + 10
    assert [r.line for r in report.rejected] == [roster.PARALLEL_VALIDATION_MIN_ROWS + 12]


def test_export_round_trips_through_import(session: Session, tmp_path: Path) -> None:
    subscriptions.add_subscriber(session, "a@example.org", "Ann", attributes={"city": "Oslo", "plan": "pro"})
    gone = subscriptions.add_subscriber(session, "b@example.org", 'Bob, "B"')
    subscriptions.change_status(session, gone, SubscriberStatus.UNSUBSCRIBED, "test")
    out = io.StringIO()
    assert roster.export_csv(session, out) == 2
    header = out.getvalue().splitlines()[0]
    assert header == "email,name,status,source,created_at,confirmed_at,unsubscribed_at,city,plan"
    session.rollback()
    session.execute(text("DELETE FROM events"))
    session.execute(text("DELETE FROM subscribers"))
    report = roster.import_csv(session, write(tmp_path, out.getvalue()))
    assert report.added == 2 and report.rejected == []
    ann = subscriptions.get_subscriber(session, "a@example.org")
    assert ann.attributes == {"city": "Oslo", "plan": "pro"}
    assert subscriptions.get_subscriber(session, "b@example.org").status == "unsubscribed"
    assert subscriptions.get_subscriber(session, "b@example.org").name == 'Bob, "B"'
