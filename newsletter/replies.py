"""What happens after an SMTP reply: the one rule for issue deliveries and one-off messages alike.

A reply (its code, RFC 3463 enhanced status, text, and the stage it answered: connect, MAIL, RCPT,
DATA) goes through two steps:

1. `reason_for` says why it failed and whose fault that is: the reader's address or mailbox, the
   message, our own side (relay, MAIL FROM, a missing extension, AUTH, TLS), or the link (a dropped
   connection, 421). This is where a failure-reason classifier plugs in: `judge` takes any function
   of the same shape.
2. `judge` turns code and fault into an action, and `settle` turns the action and the number of tries
   into the state to record and when to try again.

Only the reader's faults spend the reader's tries or suppress the reader. The link's faults and our
side's temporary ones hold the connection back instead (a short backoff, see `Backoff`), and the row
goes back untried. The backoffs are jittered in the shape of Dramatiq's `compute_backoff`, so that
workers which failed together do not come back together.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from newsletter import reasons
from newsletter.models import DeliveryStatus
from newsletter.settings import Settings
from newsletter.smtp import CONNECTION_LOST, END_OF_DATA, Outcome, Reply, classify

MAX_RETRY_DELAY_SECONDS = 6 * 3600
# A relay that cannot be reached, resets connections or answers 421: the first pause, and the longest.
LINK_FIRST_PAUSE_SECONDS = 1.0
LINK_MAX_PAUSE_SECONDS = 10.0
ENHANCED_STATUS_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


class Fault(StrEnum):
    """Whose fault a failure is."""

    READER = "reader"  # the reader's address or mailbox
    MESSAGE = "message"  # the content or size of the message
    SENDER = "sender"  # our own side: MAIL FROM, relay limits, a missing extension, AUTH, TLS
    LINK = "link"  # the connection: lost, refused, or the server closing it (421)


class Action(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # the reader's temporary failure: this try counts, another comes after a backoff
    BOUNCE = "bounce"  # final: a hard bounce of the reader
    FAIL = "fail"  # final, the reader untouched: the message or our side was refused for good
    HOLD = "hold"  # not the reader's: the row goes back untried and the connection pauses


@dataclass(frozen=True)
class Reason:
    """Why a delivery failed, named in the manner of Sisimai (userunknown, mailboxfull, ...), and whose fault."""

    name: str
    fault: Fault


@dataclass(frozen=True)
class Verdict:
    action: Action
    reply: Reply
    reason: Reason | None  # None for an accepted message


Classifier = Callable[[Reply], Reason]


def enhanced_status(reply: Reply) -> tuple[int, int, int] | None:
    """The RFC 3463 enhanced status code at the start of the reply text (`5.1.1 no such user`), if any."""
    found = ENHANCED_STATUS_RE.match(reply.text)
    return None if found is None else (int(found[1]), int(found[2]), int(found[3]))


def reason_for(reply: Reply) -> Reason:
    """Why the server refused, by the one classifier of failures (newsletter.reasons), and whose fault it is.

    The link's faults come first: a lost connection or a 421 says nothing of the reader (RFC 5321 3.8).
    Then the stage (a refusal at MAIL is about our envelope sender), the enhanced status code, the reply
    code and the server's words name the reason; its effect says whose fault it is.
    """
    if reply.code == CONNECTION_LOST or reply.code == 421 or reply.stage == "connect":
        return Reason("networkerror" if reply.code == CONNECTION_LOST else "toomanyconn", Fault.LINK)
    status = enhanced_status(reply)
    code = ".".join(str(part) for part in status) if status else ""
    diagnosis = reasons.classify(code, reply.code, reply.text, stage=reply.stage)
    if diagnosis.effect != reasons.Effect.NONE:
        return Reason(diagnosis.reason, Fault.READER)
    return Reason(diagnosis.reason, Fault.MESSAGE if diagnosis.reason in reasons.CONTENT_REASONS else Fault.SENDER)


def judge(reply: Reply, classifier: Classifier = reason_for) -> Verdict:
    """What to do after `reply`: send on, retry the reader later, bounce, fail, or hold the connection."""
    outcome = classify(reply.code)
    if outcome == Outcome.SENT:
        return Verdict(Action.SENT, reply, None)
    reason = classifier(reply)
    if reason.fault == Fault.LINK:
        if reply.code == CONNECTION_LOST and reply.stage == END_OF_DATA:
            # RFC 5321 4.1.1.4: lost after the final dot, the message may have been taken; the try counts,
            # so a message that always breaks the connection ends `failed` after max_attempts.
            return Verdict(Action.RETRY, reply, reason)
        return Verdict(Action.HOLD, reply, reason)
    if outcome == Outcome.TEMPORARY:
        return Verdict(Action.HOLD if reason.fault == Fault.SENDER else Action.RETRY, reply, reason)
    return Verdict(Action.BOUNCE if reason.fault == Fault.READER else Action.FAIL, reply, reason)


@dataclass(frozen=True)
class Settled:
    """What to record for a message after a verdict: its state, and the seconds until it may be tried again."""

    status: DeliveryStatus
    retry_seconds: float | None = None
    counts_try: bool = True


def settle(verdict: Verdict, attempts: int, settings: Settings) -> Settled:
    """The state a verdict leaves a message in, after `attempts` tries (this one included)."""
    if verdict.action == Action.SENT:
        return Settled(DeliveryStatus.SENT)
    if verdict.action == Action.BOUNCE:
        return Settled(DeliveryStatus.BOUNCED)
    if verdict.action == Action.FAIL:
        return Settled(DeliveryStatus.FAILED)
    if verdict.action == Action.HOLD:
        return Settled(DeliveryStatus.PENDING, counts_try=False)
    if attempts >= settings.max_attempts:
        return Settled(DeliveryStatus.FAILED)
    if verdict.reason is not None and verdict.reason.fault == Fault.LINK:
        # Lost after the final dot: the try counts, but the reader's retry delay is for the reader's faults.
        return Settled(
            DeliveryStatus.PENDING, backoff_seconds(attempts, LINK_FIRST_PAUSE_SECONDS, LINK_MAX_PAUSE_SECONDS)
        )
    return Settled(DeliveryStatus.PENDING, retry_delay_seconds(settings, attempts))


def backoff_seconds(
    attempt: int, first_seconds: float, max_seconds: float, chance: random.Random | None = None
) -> float:
    """`first_seconds` doubled for each attempt after the first, capped, with jitter.

    Dramatiq's compute_backoff shape: the delay is stretched by up to twice, and once it passes the cap it
    falls to 50-100 % of it, so many messages that failed together spread out instead of coming back at once.
    """
    uniform = (chance or random).uniform
    delay = first_seconds * 2 ** min(max(attempt - 1, 0), 32)
    delay *= uniform(1, 2)
    return delay if delay <= max_seconds else max_seconds * uniform(0.5, 1)


def retry_delay_seconds(settings: Settings, attempts: int) -> float:
    """The wait after a reader's temporary failure: retry_delay_seconds, doubling per try, up to six hours."""
    return backoff_seconds(attempts, settings.retry_delay_seconds, MAX_RETRY_DELAY_SECONDS)


class Backoff:
    """The pause of a connection whose link fails: 1 s, then doubling up to 10 s (jittered), reset by a success."""

    def __init__(self, first_seconds: float = LINK_FIRST_PAUSE_SECONDS, max_seconds: float = LINK_MAX_PAUSE_SECONDS):
        self.first_seconds = first_seconds
        self.max_seconds = max_seconds
        self.failures = 0

    def next_seconds(self) -> float:
        self.failures += 1
        return backoff_seconds(self.failures, self.first_seconds, self.max_seconds)

    def reset(self) -> None:
        self.failures = 0
