"""Tags the editor puts on subscribers (by hand or from an import's Tags column); segments select by them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from newsletter.addresses import normalize_address
from newsletter.errors import NewsletterError
from newsletter.models import TAG_MAX_CHARS, Subscriber, SubscriberTag
from newsletter.subscriptions import record_event


class InvalidTag(NewsletterError):
    """A tag that is empty, too long, or holds a comma or a control character."""


class UnknownSubscriber(NewsletterError):
    """An address (or an id) that is not on the list."""


class TagNotFound(NewsletterError):
    """No subscriber carries this tag."""


def clean_tag(tag: str) -> str:
    """A tag as stored: spaces folded, case kept (Mailchimp and Ghost keep it), at most 100 characters.

    Raises:
        InvalidTag: it is empty, too long, or holds a comma or a control character.
    """
    cleaned = " ".join(tag.split())
    if not cleaned or len(cleaned) > TAG_MAX_CHARS or "," in cleaned or not cleaned.isprintable():
        raise InvalidTag(f"tag {tag[:80]!r} must be 1 to {TAG_MAX_CHARS} printable characters without a comma")
    return cleaned


def split_tags(text: str) -> list[str]:
    """The tags of an export's Tags cell: comma-separated, each optionally quoted (`"a", "b"`)."""
    tags = []
    for piece in text.split(","):
        piece = piece.strip().strip('"').strip()
        if piece:
            tags.append(clean_tag(piece))
    return list(dict.fromkeys(tags))


def add_tags(session: Session, subscriber_ids: Sequence[int], tags: Iterable[str]) -> None:
    """Put the tags on the subscribers; a tag already there stays once."""
    cleaned = list(dict.fromkeys(clean_tag(tag) for tag in tags))
    rows = [{"subscriber_id": subscriber_id, "tag": tag} for subscriber_id in subscriber_ids for tag in cleaned]
    if not rows:
        return
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert(SubscriberTag).values(rows).on_conflict_do_nothing())


def tag(session: Session, emails: Iterable[str], tags: Sequence[str]) -> int:
    """Tag the subscribers with these addresses; returns how many.

    Raises:
        UnknownSubscriber: an address is not on the list.
        InvalidTag: a tag is not valid.
    """
    ids = _subscriber_ids(session, emails)
    add_tags(session, ids, tags)
    return len(ids)


def untag(session: Session, emails: Iterable[str], tags: Sequence[str]) -> int:
    """Take the tags off the subscribers with these addresses; returns how many.

    Raises:
        UnknownSubscriber: an address is not on the list.
    """
    ids = _subscriber_ids(session, emails)
    cleaned = [clean_tag(tag) for tag in tags]
    session.execute(delete(SubscriberTag).where(SubscriberTag.subscriber_id.in_(ids), SubscriberTag.tag.in_(cleaned)))
    return len(ids)


def tag_subscribers(
    session: Session, subscriber_ids: Sequence[int], tag: str, *, source: str, actor: str | None = None
) -> int:
    """Put one tag on the subscribers with these ids; returns how many carry it now. The log says who.

    Raises:
        UnknownSubscriber: an id names nobody.
        InvalidTag: the tag is not valid.
    """
    cleaned = clean_tag(tag)
    wanted = set(subscriber_ids)
    # An id past the 64-bit keys can name no row (and would overflow the driver's integer).
    possible = [subscriber_id for subscriber_id in wanted if 0 < subscriber_id < 2**63]
    found = set(session.scalars(select(Subscriber.id).where(Subscriber.id.in_(possible)))) if possible else set()
    if wanted - found:
        raise UnknownSubscriber(f"no subscriber has the id {min(wanted - found)}")
    add_tags(session, sorted(found), [cleaned])
    payload = {"tag": cleaned, "subscribers": len(found)}
    record_event(
        session, None, "tagged", source, reason=f"tag {cleaned} put on {len(found)}", payload=payload, actor=actor
    )
    return _carrying(session, cleaned)


def remove_tag(session: Session, tag: str, *, source: str, actor: str | None = None) -> int:
    """Take a tag off every subscriber; returns how many carried it. The log says who.

    Raises:
        TagNotFound: nobody carries it.
        InvalidTag: the tag is not valid.
    """
    cleaned = clean_tag(tag)
    carrying = _carrying(session, cleaned)
    if not carrying:
        raise TagNotFound(f"no subscriber carries the tag {cleaned[:80]!r}")
    session.execute(delete(SubscriberTag).where(SubscriberTag.tag == cleaned))
    payload = {"tag": cleaned, "subscribers": carrying}
    record_event(session, None, "tag_removed", source, reason=f"tag {cleaned} removed", payload=payload, actor=actor)
    return carrying


def _carrying(session: Session, tag: str) -> int:
    return session.scalar(select(func.count()).select_from(SubscriberTag).where(SubscriberTag.tag == tag)) or 0


def tags_of(session: Session, subscriber_id: int) -> list[str]:
    """The tags of one subscriber, sorted."""
    query = select(SubscriberTag.tag).where(SubscriberTag.subscriber_id == subscriber_id).order_by(SubscriberTag.tag)
    return list(session.scalars(query))


def tag_counts(session: Session) -> list[tuple[str, int]]:
    """Every tag in use and how many subscribers carry it."""
    query = select(SubscriberTag.tag, func.count()).group_by(SubscriberTag.tag).order_by(SubscriberTag.tag)
    return [(name, count) for name, count in session.execute(query)]


def _subscriber_ids(session: Session, emails: Iterable[str]) -> list[int]:
    ids = []
    for email in emails:
        _, key = normalize_address(email)
        subscriber_id = session.scalar(select(Subscriber.id).where(Subscriber.email_key == key))
        if subscriber_id is None:
            raise UnknownSubscriber(f"{email} is not on the list")
        ids.append(subscriber_id)
    return ids
