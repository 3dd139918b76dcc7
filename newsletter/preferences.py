"""What a reader changes about themselves on the preferences page: name, language, topics, a pause."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from newsletter import language, topics
from newsletter.addresses import clean_name
from newsletter.errors import NewsletterError
from newsletter.models import Subscriber, utcnow
from newsletter.subscriptions import record_event

SOURCE_PREFERENCES = "preferences-page"
MAX_PAUSE_DAYS = 366  # a pause is a holiday, not a way to stay on the list unmailed for ever


class InvalidPreferences(NewsletterError):
    """A preferences form with a value that cannot be stored (a pause date in the past or too far away)."""


@dataclass(frozen=True)
class Choices:
    """What the preferences form posted."""

    name: str
    language: str
    topic_keys: Sequence[str]
    paused_until: dt.date | None


def parse_pause(text: str, today: dt.date) -> dt.date | None:
    """The pause date of the form (ISO `YYYY-MM-DD`, as `<input type=date>` posts it), or None for no pause.

    Raises:
        InvalidPreferences: not a date, not after today, or more than a year away.
    """
    text = text.strip()
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidPreferences("the pause date is not a date") from None
    if day <= today:
        return None  # a date already reached is no pause
    if (day - today).days > MAX_PAUSE_DAYS:
        raise InvalidPreferences("a pause lasts at most a year")
    return day


def update_preferences(session: Session, subscriber: Subscriber, choices: Choices) -> None:
    """Store the reader's name, language, topics and pause, and log the change."""
    subscriber.name = clean_name(choices.name) if choices.name.strip() else None
    subscriber.language = language.supported(choices.language) or subscriber.language
    topics.choose_topics(session, subscriber, choices.topic_keys)
    if choices.paused_until is None:
        subscriber.paused_until = None
    else:
        # Mail resumes at the start of the chosen day, UTC (the day is the reader's, the clock ours).
        subscriber.paused_until = dt.datetime.combine(choices.paused_until, dt.time(), tzinfo=dt.UTC)
    reason = f"paused until {choices.paused_until.isoformat()}" if choices.paused_until else None
    record_event(session, subscriber, "preferences", SOURCE_PREFERENCES, reason=reason, at=utcnow())
    session.flush()
