"""Scheduled sends: stored by `send --at`, started once when due by worker or serve, across restarts."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import time
import zoneinfo
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from newsletter import database, schedule
from newsletter.models import Delivery, Issue, ScheduledSend, ScheduleStatus, utcnow
from newsletter.render import render_issue
from newsletter.schedule import InvalidSchedule, ScheduleNotFound
from newsletter.segments import Segment
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber
from tests.browser import _healthy as healthy
from tests.browser import cli as command_line
from tests.browser import wait_until
from tests.mailserver import MailSink, free_port

ISSUE = "---\nsubject: 定时发送\nslug: scheduled-1\n---\n\n# 定时发送\n\n早上九点见。\n"
SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
RESTART_MARGIN_SECONDS = 30  # time to store the schedule and kill serve on a slow shared machine


def test_a_time_is_read_in_its_zone() -> None:
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    due = schedule.parse_at("2026-12-05 09:00", "Asia/Shanghai", now)
    assert due == dt.datetime(2026, 12, 5, 1, 0, tzinfo=dt.UTC)
    assert schedule.parse_at("2026-12-05T09:00:30", "UTC", now) == dt.datetime(2026, 12, 5, 9, 0, 30, tzinfo=dt.UTC)
    with pytest.raises(InvalidSchedule, match="already past"):
        schedule.parse_at("2026-11-30 09:00", "UTC", now)
    with pytest.raises(InvalidSchedule, match="time zone"):
        schedule.parse_at("2026-12-05 09:00", "Mars/Olympus", now)
    with pytest.raises(InvalidSchedule, match="2026-12-05 09:00"):
        schedule.parse_at("next friday", "UTC", now)


def test_the_front_matter_date_schedules_only_with_a_time_to_come(settings: Settings) -> None:
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    later = render_issue(ISSUE.replace("slug:", "date: 2026-12-05 09:00\nslug:"), settings)
    assert schedule.front_matter_due(later, "Asia/Shanghai", now) == dt.datetime(2026, 12, 5, 1, tzinfo=dt.UTC)
    day_only = render_issue(ISSUE.replace("slug:", "date: 2026-12-05\nslug:"), settings)
    assert schedule.front_matter_due(day_only, "Asia/Shanghai", now) is None
    past = render_issue(ISSUE.replace("slug:", "date: 2020-11-06 09:00\nslug:"), settings)
    assert schedule.front_matter_due(past, "Asia/Shanghai", now) is None


def scheduled(engine: Engine, settings: Settings, tmp_path: Path, due: dt.datetime) -> int:
    path = tmp_path / "scheduled-1.md"
    path.write_text(ISSUE, encoding="utf-8")
    with database.transaction(engine) as session:
        add_subscriber(session, "ann@example.org")
        row = schedule.schedule_send(session, path, render_issue(ISSUE, settings), due, "Asia/Shanghai")
        return row.id


def schedule_row(engine: Engine, schedule_id: int) -> ScheduledSend:
    with database.transaction(engine) as session:
        row = session.get_one(ScheduledSend, schedule_id)
        session.expunge(row)
        return row


def deliveries(engine: Engine) -> int:
    with database.transaction(engine) as session:
        return int(session.scalar(select(func.count()).select_from(Delivery)) or 0)


def test_a_due_schedule_starts_once(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    due = utcnow() + dt.timedelta(hours=1)
    schedule_id = scheduled(engine, settings, tmp_path, due)
    assert schedule.start_due(engine, settings, due - dt.timedelta(seconds=1)) == []
    started = schedule.start_due(engine, settings, due + dt.timedelta(seconds=5))
    assert len(started) == 1 and deliveries(engine) == 1
    assert schedule_row(engine, schedule_id).status == ScheduleStatus.STARTED
    assert schedule.start_due(engine, settings, due + dt.timedelta(seconds=10)) == [], "once"
    assert schedule.unfinished_started(engine) == started, "a scheduler that starts again resumes it"


def test_a_schedule_missed_by_more_than_the_lateness_waits_for_the_editor(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    due = utcnow() + dt.timedelta(hours=1)
    schedule_id = scheduled(engine, settings, tmp_path, due)
    late = due + dt.timedelta(seconds=settings.schedule_max_lateness + 60)
    assert schedule.start_due(engine, settings, late) == []
    row = schedule_row(engine, schedule_id)
    assert row.status == ScheduleStatus.MISSED and "waits for the editor" in row.note
    assert deliveries(engine) == 0
    with database.transaction(engine) as session:
        assert [view.id for view in schedule.list_schedules(session)] == [schedule_id]
        schedule.cancel(session, schedule_id)
    with database.transaction(engine) as session, pytest.raises(ScheduleNotFound):
        schedule.cancel(session, schedule_id)


def test_a_schedule_that_cannot_start_is_marked_failed(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    due = utcnow() + dt.timedelta(hours=1)
    path = tmp_path / "x.md"
    with database.transaction(engine) as session:
        row = schedule.schedule_send(
            session, path, render_issue(ISSUE, settings), due, "UTC", segment=Segment(topics=("gone",))
        )
        schedule_id = row.id
    assert schedule.start_due(engine, settings, due) == []
    failed = schedule_row(engine, schedule_id)
    assert failed.status == ScheduleStatus.FAILED and "gone" in failed.note


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [*command_line(config), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=config.parent)


def serve(config: Path, port: int) -> subprocess.Popen[bytes]:
    command = command_line(config)
    with (config.parent / "serve.log").open("ab") as log:  # the child keeps its own copy of the file
        return subprocess.Popen(
            [*command, "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=config.parent, stdout=log, stderr=log
        )


def test_a_schedule_survives_a_restart_between_scheduling_and_its_time(tmp_path: Path, smtpd: MailSink) -> None:
    port = free_port()
    database_url = f"sqlite:///{tmp_path / 'scheduled.db'}"
    config = tmp_path / "newsletter.toml"
    config.write_text(
        f'database_url = "{database_url}"\nsecret_key = "schedule-test-secret-key-0123456789"\n'
        f'from_address = "editor@example.org"\npostal_address = "1 Example Street"\n'
        f'base_url = "http://127.0.0.1:{port}"\nsmtp_host = "127.0.0.1"\nsmtp_port = {smtpd.port}\n'
        'timezone = "Asia/Shanghai"\nschedule_poll_seconds = 0.3\n',
        encoding="utf-8",
    )
    assert cli(config, "db", "upgrade").returncode == 0
    for address in ("ann@example.org", "bo@example.org"):
        assert cli(config, "subscribers", "add", address).returncode == 0
    issue = tmp_path / "scheduled-1.md"
    issue.write_text(ISSUE, encoding="utf-8")
    # The first process runs while the schedule is stored, and is killed before its time: only the slow
    # steps that must come first (start-up, then storing) use up the margin, never serve's start.
    first = serve(config, port)
    wait_until(lambda: healthy(f"http://127.0.0.1:{port}"), 60, "newsletter serve")
    due = (dt.datetime.now(SHANGHAI) + dt.timedelta(seconds=RESTART_MARGIN_SECONDS)).replace(microsecond=0)
    stored = cli(config, "send", str(issue), "--at", due.strftime("%Y-%m-%d %H:%M:%S"), "--yes")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert stored.returncode == 0 and "Scheduled #1" in stored.stdout, stored.stdout + stored.stderr
    assert dt.datetime.now(SHANGHAI) < due, "the machine was too slow for the test to restart before the time"
    assert "scheduled-1" in cli(config, "schedule").stdout
    assert smtpd.received == []

    second = serve(config, port)
    try:
        wait_until(lambda: len(smtpd.received) == 2, 60, "the scheduled issue")
        assert dt.datetime.now(SHANGHAI) >= due, "not before its time"
        time.sleep(1.5)  # a few more looks of the scheduler: nothing goes twice
        assert sorted(mail.recipient for mail in smtpd.received) == ["ann@example.org", "bo@example.org"]
    finally:
        second.terminate()
        second.wait(timeout=30)
    engine = database.make_engine(Settings(database_url=database_url))
    try:
        with database.transaction(engine) as session:
            assert session.scalar(select(ScheduledSend.status)) == ScheduleStatus.STARTED
            assert session.scalar(select(Issue.status)) == "sent"
    finally:
        engine.dispose()
