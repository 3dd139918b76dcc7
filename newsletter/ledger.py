"""The delivery ledger: issues, one delivery row per recipient, and the counts that say how far a send got.

The database is the truth and the queue is only transport. Every delivery row moves
`pending -> sending -> sent | bounced | failed | skipped`, and only a worker that claimed a row (set it to
`sending` with a lease, see leases.py) sends it. That gives these guarantees:

- Nothing is lost: a row is final only once its outcome is committed. A row whose worker died stays
  `sending` until its lease (`lease_seconds`) runs out, then any worker may claim it again; a process on
  the dead worker's own machine that sees it gone gives its rows back at once (owners.py,
  leases.release_orphans). `newsletter send` re-enqueues every unfinished row when it resumes, and while
  it follows a send.
- At least once, not exactly once: SMTP cannot be made atomic with a database commit. A worker commits
  its outcomes in groups of `leases.GROUP_SIZE` messages, so a crash (SIGKILL, power loss) between the
  server's 250 and the commit makes the rows of that group be sent again. The duplicate window is
  therefore at most GROUP_SIZE messages per worker thread alive at the crash (`smtp_connections` threads
  per process), plus one message per connection dropped after the final dot of DATA but before the
  server's reply (RFC 5321 4.1.1.4: the client cannot know whether the message was taken, and a
  temporary failure is retried). A copy sent twice carries the same Message-ID (links.message_id is
  derived from issue and subscriber), so receiving systems and readers' clients can fold the two.
- A lease never runs out under a live sender: a worker renews its leases every quarter of
  `lease_seconds` (leases.Heartbeat), and should it fail to (the database away) it stops before a
  message it could only reach after half its lease without a renewal and gives the rest of the group
  back, so one SMTP transaction longer than half of `lease_seconds` with the database away is the
  only way two workers send the same row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, Exists, Select, and_, exists, func, insert, literal, or_, select, text, update
from sqlalchemy.orm import Session

from newsletter.errors import IssueNotFound, NewsletterError
from newsletter.models import (
    Delivery,
    DeliveryStatus,
    Issue,
    IssueImage,
    IssueStatus,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from newsletter.render import InlineImage, RenderedIssue
from newsletter.segments import Segment, from_json, segment_filter

UNFINISHED = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)
_NOT_SENT = [str(status) for status in DeliveryStatus if status != DeliveryStatus.SENT]
STREAM_ROWS = 5_000


class IssueChanged(NewsletterError):
    """The file differs from the issue already stored under its slug."""


@dataclass(frozen=True)
class Counts:
    """How many deliveries of an issue are in each state."""

    by_status: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, status: str) -> int:
        return self.by_status.get(status, 0)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def remaining(self) -> int:
        return self[DeliveryStatus.PENDING] + self[DeliveryStatus.SENDING]

    @property
    def done(self) -> int:
        return self.total - self.remaining


def store_issue(session: Session, rendered: RenderedIssue, force: bool = False) -> Issue:
    """The stored issue for `rendered`: created, or the one already stored under its slug.

    Raises:
        IssueChanged: the stored issue was made from another text and `force` is not set.
    """
    issue = session.scalar(select(Issue).where(Issue.slug == rendered.slug))
    if issue is not None and issue.source_hash == rendered.source_hash:
        return issue
    if issue is not None and not force:
        state = "was sent" if issue.status == IssueStatus.SENT else f"is {issue.status}"
        raise IssueChanged(
            f"issue {rendered.slug!r} {state} from a different text; pass --force to send the changed "
            "text to those who have not received it yet (who did is not mailed again)"
        )
    if issue is None:
        issue = Issue(slug=rendered.slug, status=IssueStatus.DRAFT)
        session.add(issue)
    issue.subject = rendered.subject
    issue.preheader = rendered.preheader
    issue.lang = rendered.lang
    issue.source_text = rendered.source_text
    issue.source_hash = rendered.source_hash
    issue.html = rendered.html
    issue.text = rendered.text
    issue.web_html = rendered.web_html
    session.flush()
    _store_images(session, issue.id, rendered.images)
    return issue


def _store_images(session: Session, issue_id: int, images: tuple[InlineImage, ...]) -> None:
    session.query(IssueImage).filter(IssueImage.issue_id == issue_id).delete()
    for image in images:
        session.add(
            IssueImage(
                issue_id=issue_id,
                cid=image.cid,
                filename=image.filename,
                content_type=image.content_type,
                data=image.data,
            )
        )
    session.flush()


def find_issue(session: Session, slug: str) -> Issue:
    """The issue stored under `slug`.

    Raises:
        IssueNotFound: there is none.
    """
    issue = session.scalar(select(Issue).where(Issue.slug == slug))
    if issue is None:
        raise IssueNotFound(f"no issue {slug!r} has been sent; `newsletter status` lists them")
    return issue


def rendered_issue(session: Session, issue_id: int) -> RenderedIssue:
    """The rendered issue as stored: what a worker on any machine builds the messages from."""
    issue = session.get_one(Issue, issue_id)
    images = session.scalars(select(IssueImage).where(IssueImage.issue_id == issue_id).order_by(IssueImage.id))
    return RenderedIssue(
        slug=issue.slug,
        subject=issue.subject,
        preheader=issue.preheader,
        lang=issue.lang,
        html=issue.html,
        text=issue.text,
        web_html=issue.web_html,
        source_text=issue.source_text,
        source_hash=issue.source_hash,
        images=tuple(InlineImage(image.cid, image.filename, image.content_type, image.data) for image in images),
    )


def issue_hash(session: Session, issue_id: int) -> str:
    """The source hash of a stored issue: a worker's cached message template is good while it matches."""
    return session.execute(select(Issue.source_hash).where(Issue.id == issue_id)).scalar_one()


def _eligible(now: dt.datetime) -> ColumnElement[bool]:
    """Who may get an issue now: active, and not pausing (the preferences page's "no mail until")."""
    return and_(
        Subscriber.status == SubscriberStatus.ACTIVE,
        or_(Subscriber.paused_until.is_(None), Subscriber.paused_until <= now),
    )


def count_recipients(session: Session, issue_id: int | None, segment: Segment | None = None) -> int:
    """How many active subscribers of the segment have no delivery of this issue yet (all of them when new)."""
    query = (
        select(func.count()).select_from(Subscriber).where(_eligible(utcnow()), segment_filter(segment or Segment()))
    )
    if issue_id is not None:
        query = query.where(~_has_delivery(issue_id))
    return session.execute(query).scalar_one()


def _has_delivery(issue_id: int) -> Exists:
    return exists().where(Delivery.issue_id == issue_id, Delivery.subscriber_id == Subscriber.id)


def create_deliveries(session: Session, issue: Issue) -> int:
    """One `pending` delivery per active subscriber of the issue's segment who has none, in one set-based
    INSERT ... SELECT (the segment only adds EXISTS conditions to it).

    The list never passes through Python. An issue already sent gets no new recipients: re-running
    `send` for it must not mail an old issue to people who joined since.
    """
    if issue.status == IssueStatus.SENT:
        return 0
    recipients = select(
        literal(issue.id), Subscriber.id, literal(str(DeliveryStatus.PENDING)), literal(0), literal("")
    ).where(_eligible(utcnow()), segment_filter(from_json(issue.segment)), ~_has_delivery(issue.id))
    columns = ["issue_id", "subscriber_id", "status", "attempts", "message_id"]
    # preserve_rowcount: SQLAlchemy only keeps an INSERT's row count when asked (psycopg reports 0 otherwise).
    statement = insert(Delivery).from_select(columns, recipients).execution_options(preserve_rowcount=True)
    result = session.execute(statement)
    created = max(int(result.rowcount), 0)  # type: ignore[attr-defined]
    if created:
        # Without statistics on the new rows, PostgreSQL and SQLite both take a claim's `issue_id = ?` to an
        # index on issue_id and go through every row of the issue, for each group of 20 (2 ms a claim at
        # 20,000 rows, growing with the list), where the primary key finds the 20. ANALYZE, once a send,
        # tells them how many rows an issue has.
        session.execute(text("ANALYZE deliveries"))
    if issue.status == IssueStatus.DRAFT:
        issue.status = IssueStatus.SENDING
    return created


def claimable_ids(session: Session, issue_id: int, lease_seconds: float, due_only: bool = False) -> Iterator[int]:
    """The ids of the unfinished deliveries no live worker holds, oldest first, streamed.

    With `due_only`, rows waiting for a later retry are left out.
    """
    query = _claimable(issue_id, lease_seconds, due_only).execution_options(yield_per=STREAM_ROWS)
    yield from session.scalars(query)


def claimable_page(session: Session, issue_id: int, lease_seconds: float, after_id: int, limit: int) -> list[int]:
    """The next `limit` claimable delivery ids above `after_id`, oldest first (keyset paging: no cursor stays open)."""
    query = _claimable(issue_id, lease_seconds, due_only=False).where(Delivery.id > after_id).limit(limit)
    return list(session.scalars(query))


def _claimable(issue_id: int, lease_seconds: float, due_only: bool) -> Select[int]:
    now = utcnow()
    expired = now - dt.timedelta(seconds=lease_seconds)
    pending = Delivery.status == DeliveryStatus.PENDING
    if due_only:
        pending = and_(pending, or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now))
    return (
        select(Delivery.id)
        .where(
            Delivery.issue_id == issue_id,
            or_(pending, and_(Delivery.status == DeliveryStatus.SENDING, Delivery.claimed_at < expired)),
        )
        .order_by(Delivery.id)
    )


def sending_issue_ids(session: Session) -> list[int]:
    """The issues being sent: stored, their deliveries created, not all final yet."""
    return list(session.scalars(select(Issue.id).where(Issue.status == IssueStatus.SENDING).order_by(Issue.id)))


def expired_ids(session: Session, issue_id: int, lease_seconds: float) -> list[int]:
    """The rows still `sending` whose lease ran out: a live worker renews its leases, so their worker died."""
    expired = utcnow() - dt.timedelta(seconds=lease_seconds)
    query = select(Delivery.id).where(
        Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.SENDING, Delivery.claimed_at < expired
    )
    return list(session.scalars(query.order_by(Delivery.id)))


def waiting_reply(session: Session, issue_id: int) -> str:
    """The last reply kept on a row still pending (why a worker gave it back, or a retry's reason), if any."""
    query = select(Delivery.last_reply).where(
        Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.PENDING, Delivery.last_reply != ""
    )
    return session.scalars(query.limit(1)).first() or ""


def counts(session: Session, issue_id: int) -> Counts:
    """The number of deliveries of an issue in each state."""
    rows = session.execute(
        select(Delivery.status, func.count()).where(Delivery.issue_id == issue_id).group_by(Delivery.status)
    )
    return Counts({status: number for status, number in rows})


def counts_since(session: Session, issue_id: int, total: int) -> Counts:
    """The counts of an issue of `total` deliveries, reading only the rows that are not `sent`.

    Each state but `sent` is a range of the claim index, so following a send costs what is left of it
    rather than the whole list every poll (a GROUP BY over 100,000 rows twice a second was a tenth of the
    database's work). `sent` is what `total` leaves; rows added since `total` was counted make it short
    until a full `counts`.
    """
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.issue_id == issue_id, Delivery.status.in_(_NOT_SENT))
        .group_by(Delivery.status)
    )
    by_status = {status: number for status, number in rows}
    by_status[DeliveryStatus.SENT] = max(0, total - sum(by_status.values()))
    return Counts(by_status)


def finish_issue(session: Session, issue_id: int) -> bool:
    """Mark the issue `sent` once no delivery is unfinished; True when it is (or already was) sent."""
    unfinished = select(
        exists().where(Delivery.issue_id == issue_id, Delivery.status.in_([str(s) for s in UNFINISHED]))
    )
    if session.execute(unfinished).scalar_one():
        return False
    session.execute(
        update(Issue)
        .where(Issue.id == issue_id, Issue.status != IssueStatus.SENT)
        .values(status=IssueStatus.SENT, sent_at=utcnow())
    )
    return True


@dataclass(frozen=True)
class Failure:
    email: str
    status: str
    attempts: int
    reply: str


def failures(session: Session, issue_id: int, limit: int = 50) -> list[Failure]:
    """Deliveries that failed or bounced, with the server's last reply."""
    rows = session.execute(
        select(Subscriber.email, Delivery.status, Delivery.attempts, Delivery.last_reply)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.issue_id == issue_id, Delivery.status.in_([DeliveryStatus.FAILED, DeliveryStatus.BOUNCED]))
        .order_by(Delivery.id)
        .limit(limit)
    )
    return [Failure(email, status, attempts, reply or "") for email, status, attempts, reply in rows]


def issues_by_recency(session: Session) -> list[Issue]:
    return list(session.scalars(select(Issue).order_by(Issue.created_at.desc(), Issue.id.desc())))


def retry_failed(session: Session, issue_id: int) -> int:
    """Put the deliveries that exhausted their temporary retries back to `pending`; returns how many."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.FAILED)
        .values(status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=None, claimed_at=None)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        session.execute(update(Issue).where(Issue.id == issue_id).values(status=IssueStatus.SENDING, sent_at=None))
    return int(result.rowcount)  # type: ignore[attr-defined]
