"""Scheduled sends: `send --at` stores one; a long-running process (worker or serve) starts it when due, once.

The table is the truth, as for deliveries. Starting a schedule is one transaction: the schedule is
marked started and the issue stored with its delivery rows (campaign.prepare), so a process that dies
before the commit leaves the schedule waiting, and one that dies after it leaves rows that the next
start of any scheduler hands to the queue again (claiming sends each once). Two processes that look at
the same moment cannot both start it: the row is marked by a conditional UPDATE, and the loser rolls back.
A schedule found more than `schedule_max_lateness` seconds after its time (nothing was running) is marked
missed and waits for the editor rather than reaching readers late.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from newsletter import campaign, database
from newsletter.errors import NewsletterError
from newsletter.models import Issue, IssueStatus, ScheduledSend, ScheduleStatus, utcnow
from newsletter.queue import Queue
from newsletter.render import RenderedIssue, render_issue
from newsletter.segments import Segment, from_json
from newsletter.settings import Settings
from newsletter.slots import with_fallbacks

LOGGER = logging.getLogger("newsletter.schedule")
DATE_WITH_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2})?")
AT_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


class InvalidSchedule(NewsletterError):
    """A send time that cannot be read, a zone that does not exist, or a time already past."""


class ScheduleNotFound(NewsletterError):
    """No waiting schedule has the given id."""


@dataclass(frozen=True)
class ScheduleView:
    id: int
    slug: str
    subject: str
    due_at: dt.datetime
    timezone: str
    status: str
    note: str
    audience: str

    @property
    def local_due(self) -> dt.datetime:
        return self.due_at.astimezone(zoneinfo.ZoneInfo(self.timezone))


def parse_at(text: str, timezone: str, now: dt.datetime | None = None) -> dt.datetime:
    """`2026-12-05 09:00` in `timezone` as a UTC moment.

    Raises:
        InvalidSchedule: not such a time, an unknown zone, or a time already past.
    """
    due = moment(text, timezone)
    if due <= (now or utcnow()):
        raise InvalidSchedule(f"{text} in {timezone} is already past; give a later time")
    return due


def front_matter_due(rendered: RenderedIssue, timezone: str, now: dt.datetime | None = None) -> dt.datetime | None:
    """When the front matter's `date:` names a time still to come, that moment: `send` schedules the issue."""
    text = front_matter_time(rendered.meta.get("date", ""))
    if text is None:
        return None
    due = moment(text, timezone)
    return due if due > (now or utcnow()) else None


def moment(text: str, timezone: str) -> dt.datetime:
    """`2026-12-05 09:00` in `timezone` as a UTC moment.

    Raises:
        InvalidSchedule: not such a time, or an unknown zone.
    """
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(f"unknown time zone {timezone!r}; use an IANA name such as Asia/Shanghai") from None
    for form in AT_FORMATS:
        try:
            local = dt.datetime.strptime(text.strip(), form)
        except ValueError:
            continue
        return local.replace(tzinfo=zone).astimezone(dt.UTC)
    raise InvalidSchedule(f"cannot read the time {text!r}; write it as 2026-12-05 09:00")


def front_matter_time(date: str) -> str | None:
    """The front matter's `date:` when it names a time of day (a date alone is only the issue's date)."""
    text = date.strip()
    return text if DATE_WITH_TIME_RE.fullmatch(text) else None


def schedule_send(
    session: Session,
    path: Path,
    rendered: RenderedIssue,
    due_at: dt.datetime,
    timezone: str,
    subject_override: str | None = None,
    segment: Segment | None = None,
) -> ScheduledSend:
    """Store a send of the issue for `due_at`; the text is kept as it is now."""
    row = ScheduledSend(
        slug=rendered.slug,
        subject=with_fallbacks(rendered.subject),
        source_path=str(path.resolve()),
        source_text=rendered.source_text,
        source_hash=rendered.source_hash,
        subject_override=subject_override or "",
        segment=(segment or Segment()).as_json(),
        due_at=due_at,
        timezone=timezone,
        status=ScheduleStatus.SCHEDULED,
    )
    session.add(row)
    session.flush()
    return row


def list_schedules(session: Session, include_done: bool = False) -> list[ScheduleView]:
    """The schedules, soonest first (waiting and missed ones unless `include_done`)."""
    query = select(ScheduledSend).order_by(ScheduledSend.due_at, ScheduledSend.id)
    if not include_done:
        query = query.where(ScheduledSend.status.in_([ScheduleStatus.SCHEDULED, ScheduleStatus.MISSED]))
    return [
        ScheduleView(
            row.id,
            row.slug,
            row.subject,
            row.due_at,
            row.timezone,
            row.status,
            row.note,
            from_json(row.segment).describe(),
        )
        for row in session.scalars(query)
    ]


def cancel(session: Session, schedule_id: int) -> None:
    """Cancel a waiting or missed schedule.

    Raises:
        ScheduleNotFound: there is no such schedule still waiting.
    """
    waiting = [ScheduleStatus.SCHEDULED, ScheduleStatus.MISSED]
    result = session.execute(
        update(ScheduledSend)
        .where(ScheduledSend.id == schedule_id, ScheduledSend.status.in_(waiting))
        .values(status=ScheduleStatus.CANCELLED, note="cancelled by the editor")
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ScheduleNotFound(f"no waiting schedule {schedule_id}; `newsletter schedule` lists them")


def start_due(engine: Engine, settings: Settings, now: dt.datetime | None = None) -> list[int]:
    """Start every schedule that is due (each in its own transaction); returns the ids of the issues started.

    Schedules found later than `schedule_max_lateness` are marked missed instead.
    """
    now = now or utcnow()
    with database.make_sessionmaker(engine)() as session:
        due = list(
            session.scalars(
                select(ScheduledSend.id)
                .where(ScheduledSend.status == ScheduleStatus.SCHEDULED, ScheduledSend.due_at <= now)
                .order_by(ScheduledSend.due_at)
            )
        )
    started = []
    for schedule_id in due:
        issue_id = _start_one(engine, settings, schedule_id, now)
        if issue_id is not None:
            started.append(issue_id)
    return started


def _start_one(engine: Engine, settings: Settings, schedule_id: int, now: dt.datetime) -> int | None:
    with database.transaction(engine) as session:
        row = session.get_one(ScheduledSend, schedule_id)
        late = (now - row.due_at).total_seconds()
        if late > settings.schedule_max_lateness:
            note = f"missed by {late / 60:.0f} min (nothing was running at its time): waits for the editor"
            _mark(session, row, ScheduleStatus.MISSED, note, now)
            LOGGER.warning("scheduled send %d of %s %s", row.id, row.slug, note)
            return None
        try:
            rendered = render_issue(
                row.source_text,
                settings,
                base_dir=Path(row.source_path).parent,
                subject=row.subject_override or None,
                slug=Path(row.source_path).stem,
            )
            issue = campaign.prepare(session, rendered, False, from_json(row.segment))
        except NewsletterError as error:
            LOGGER.error("scheduled send %d of %s could not start: %s", row.id, row.slug, error)
            session.rollback()
            with database.transaction(engine) as retry:
                _mark(retry, retry.get_one(ScheduledSend, schedule_id), ScheduleStatus.FAILED, str(error), now)
            return None
        if not _mark(session, row, ScheduleStatus.STARTED, f"started issue {issue.slug}", now):
            session.rollback()  # another process started it first
            return None
        LOGGER.info("scheduled send %d started issue %s", row.id, issue.slug)
        return issue.id


def _mark(session: Session, row: ScheduledSend, status: ScheduleStatus, note: str, now: dt.datetime) -> bool:
    """Move a waiting schedule on, if no other process moved it first."""
    result = session.execute(
        update(ScheduledSend)
        .where(ScheduledSend.id == row.id, ScheduledSend.status == ScheduleStatus.SCHEDULED)
        .values(status=status, note=note[:2_000], started_at=now if status == ScheduleStatus.STARTED else None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def unfinished_started(engine: Engine) -> list[int]:
    """The issues of started schedules that are not sent yet: a scheduler hands them to the queue on start."""
    with database.make_sessionmaker(engine)() as session:
        query = (
            select(Issue.id)
            .join(ScheduledSend, ScheduledSend.slug == Issue.slug)
            .where(ScheduledSend.status == ScheduleStatus.STARTED, Issue.status != IssueStatus.SENT)
            .distinct()
        )
        return list(session.scalars(query))


class Scheduler:
    """A thread that starts due schedules and hands their deliveries to this process's queue."""

    def __init__(self, engine: Engine, settings: Settings, queue: Queue) -> None:
        self.engine = engine
        self.settings = settings
        self.queue = queue
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="newsletter-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        resume = True
        while not self.stopping.is_set():
            try:
                if resume:  # what a stopped process had started and not finished
                    self._deliver(unfinished_started(self.engine))
                    resume = False
                self._deliver(start_due(self.engine, self.settings))
            except Exception:  # a dead database or relay must not kill the thread: the next look tries again
                LOGGER.exception("scheduled sends: the next look tries again")
            self.stopping.wait(self.settings.schedule_poll_seconds)

    def _deliver(self, issue_ids: list[int]) -> None:
        for issue_id in issue_ids:
            if self.queue.embedded:
                # The in-process queue is fed a few batches at a time: this thread feeds it until the issue is out.
                feeder = campaign.Feeder(self.engine, self.queue, issue_id)
                campaign.follow(self.engine, self.queue, issue_id, None, feeder)
            else:
                self.queue.enqueue_unfinished(issue_id)
