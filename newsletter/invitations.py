"""Confirmation mails to subscribers imported as pending: consent asked of a list brought from elsewhere.

Each mail goes through the same path as a sign-up's: the daily cap per address, the outbound ledger, the
queue, and the sending rate limit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from newsletter import database, optin
from newsletter.confirmation import store_confirmation
from newsletter.models import DeliveryStatus, OutboundMessage, Subscriber, SubscriberStatus
from newsletter.queue import Queue
from newsletter.settings import Settings
from newsletter.tokens import Signer

SOURCE_INVITE = "invite"
WAIT_POLL_SECONDS = 0.2


def invite_pending(session: Session, settings: Settings, after_id: int = 0) -> list[int]:
    """Store a confirmation mail for every pending subscriber (with an id above `after_id`: one import's);
    returns the ids of the stored mails. An address over its daily cap gets none today."""
    signer = Signer(settings.secret_key)
    query = (
        select(Subscriber)
        .where(Subscriber.status == SubscriberStatus.PENDING, Subscriber.id > after_id)
        .order_by(Subscriber.id)
    )
    stored = []
    for subscriber in session.scalars(query).all():
        request = optin.request_confirmation(session, settings, subscriber, SOURCE_INVITE)
        outbound_id = store_confirmation(session, settings, signer, request)
        if outbound_id is not None:
            stored.append(outbound_id)
    return stored


def send_invitations(engine: Engine, queue: Queue, outbound_ids: Sequence[int], wait_seconds: float = 3600) -> int:
    """Hand the stored mails to the queue; with the in-process queue, send them here and wait. Returns how
    many are still unsent when it returns (0 once all went out, or were given up as failed)."""
    if queue.embedded:
        queue.start_worker()
    try:
        queue.send_messages(outbound_ids)
        if not queue.embedded:
            return 0  # the workers send them, at the rate limit
        deadline = time.monotonic() + wait_seconds
        while (left := _unsent(engine, outbound_ids)) and time.monotonic() < deadline:
            time.sleep(WAIT_POLL_SECONDS)
        return left
    finally:
        if queue.embedded:
            queue.stop()


def _unsent(engine: Engine, outbound_ids: Sequence[int]) -> int:
    unfinished = [DeliveryStatus.PENDING, DeliveryStatus.SENDING]
    left = 0
    with database.make_sessionmaker(engine)() as session:
        for start in range(0, len(outbound_ids), 500):
            chunk = list(outbound_ids[start : start + 500])
            query = select(func.count()).where(OutboundMessage.id.in_(chunk), OutboundMessage.status.in_(unfinished))
            left += int(session.scalar(query) or 0)
    return left
