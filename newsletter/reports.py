"""Machine-readable mail reports (RFC 6522): delivery status (RFC 3464) and abuse feedback (RFC 5965)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from newsletter.reasons import Diagnosis, classify
from newsletter.received import decoded, find_part, header_blocks, plausible_address

DELIVERY_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")  # RFC 6533: UTF-8
FEEDBACK_REPORT_TYPE = "message/feedback-report"
# RFC 3463 2: class.subject.detail; class 2 success, 4 persistent transient, 5 permanent.
_STATUS_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# RFC 5965 3.1 and 7.3: `abuse` and `fraud` are complaints about the mail; `auth-failure` (RFC 6591) is a
# DMARC or DKIM failure report, `not-spam` (RFC 6650) says the mail was wanted, `virus` and `other` name
# no reader's wish: recorded, never complaints. `opt-out` (early ARF drafts) asks to leave the list.
COMPLAINT_TYPES = frozenset({"abuse", "fraud"})
OPT_OUT_TYPES = frozenset({"opt-out", "opt-out-list"})
# RFC 3464 2.3.3 names five actions; MTAs also write "fail", "failure", "Failed (permanent)", "delay".
_ACTIONS = (("fail", "failed"), ("delay", "delayed"), ("deliver", "delivered"), ("relay", "relayed"))


@dataclass(frozen=True)
class RecipientStatus:
    """One per-recipient block of a DSN (RFC 3464 2.3)."""

    # Original-Recipient, else Final-Recipient: the bare address, lower-cased. RFC 3464 2.3.1: the original
    # is the address we gave; the final one may be where a forward sent it, never a reader of ours.
    recipient: str
    action: str  # failed, delayed, delivered, relayed, expanded (variants mapped onto these)
    status: str  # the enhanced status code, e.g. 5.1.1 (RFC 3463)
    diagnostic: str  # Diagnostic-Code: the remote server's own words

    @property
    def is_failure(self) -> bool:
        """A report of mail that was not delivered (now or yet): failed or delayed."""
        if self.action in ("delivered", "relayed", "expanded"):
            return False
        return self.action in ("failed", "delayed") or self.status[:1] in ("4", "5")

    @property
    def diagnosis(self) -> Diagnosis:
        """Why it failed (newsletter.reasons), from the status code, the reply, the text and the action."""
        return classify(self.status, 0, self.diagnostic, self.action)

    @property
    def reason(self) -> str:
        """The raw reason for the log: status code and the remote server's diagnostic."""
        return " ".join(part for part in (self.status, self.diagnostic) if part) or self.action


@dataclass(frozen=True)
class FeedbackReport:
    """The machine-readable part of an ARF report (RFC 5965 3.1 and 3.2)."""

    feedback_type: str
    user_agent: str
    original_mail_from: str  # the envelope sender of the reported mail: our VERP address, when kept
    original_rcpt_to: tuple[str, ...]
    arrival_date: str
    reported_domain: str
    source_ip: str

    @property
    def is_complaint(self) -> bool:
        return self.feedback_type in COMPLAINT_TYPES

    @property
    def is_opt_out(self) -> bool:
        return self.feedback_type in OPT_OUT_TYPES


def is_report(message: Message, report_type: str) -> bool:
    """True for a multipart/report (RFC 6522) of `report_type`."""
    return message.get_content_type() == "multipart/report" and (message.get_param("report-type") or "") == (
        report_type
    )


def delivery_statuses(message: Message) -> list[RecipientStatus] | None:
    """The per-recipient blocks of a DSN, or None when the message has no delivery-status part."""
    part = find_part(message, *DELIVERY_STATUS_TYPES)
    if part is None:
        return None
    blocks = header_blocks(part)
    # RFC 3464 2.2: the first block is about the message; each one after it about one recipient.
    statuses = [_recipient_status(block) for block in blocks[1:]]
    if blocks and (blocks[0].get("Final-Recipient") or blocks[0].get("Action")):
        statuses.insert(0, _recipient_status(blocks[0]))  # a sender that left the message block out
    return [status for status in statuses if status.recipient or status.action]


def feedback_report(message: Message) -> FeedbackReport | None:
    """The feedback report of an ARF message, or None when it has none."""
    part = find_part(message, FEEDBACK_REPORT_TYPE)
    if part is None:
        return None
    blocks = header_blocks(part)
    if not blocks:
        return None
    fields = blocks[0]
    return FeedbackReport(
        feedback_type=_field(fields, "Feedback-Type").lower() or "abuse",
        user_agent=_field(fields, "User-Agent"),
        original_mail_from=_bare_address(_field(fields, "Original-Mail-From")),
        original_rcpt_to=tuple(
            _bare_address(decoded(str(value))) for value in fields.get_all("Original-Rcpt-To", [])[:20]
        ),
        arrival_date=_field(fields, "Arrival-Date") or _field(fields, "Received-Date"),
        reported_domain=_field(fields, "Reported-Domain"),
        source_ip=_field(fields, "Source-IP"),
    )


def _recipient_status(block: Message) -> RecipientStatus:
    recipient = _typed_address(_field(block, "Original-Recipient")) or _typed_address(_field(block, "Final-Recipient"))
    diagnostic = _field(block, "Diagnostic-Code")
    if diagnostic.lower().startswith(("smtp;", "x-postfix;", "x-unix;")):
        diagnostic = diagnostic.partition(";")[2].strip()
    status_field = _field(block, "Status")
    status_match = _STATUS_CODE.search(status_field)
    status = ".".join(status_match.groups()) if status_match else ""
    # Some MTAs write the words in Status ("5.0.0 (recipient reached disk quota)", "553 Exceeded ..."): keep them.
    words = status_field[status_match.end() :] if status_match else status_field
    if words.strip(" ()") and words.strip().lower() not in diagnostic.lower():
        diagnostic = f"{diagnostic} {words.strip()}".strip()
    return RecipientStatus(recipient, action_of(_field(block, "Action")), status, diagnostic)


def action_of(value: str) -> str:
    """An Action field as one of RFC 3464's words: `Failure`, `fail (permanent)` are `failed`."""
    word = value.strip().lower()
    return next((action for prefix, action in _ACTIONS if word.startswith(prefix)), word.split(" ")[0])


def _field(block: Message, name: str) -> str:
    value = block.get(name)
    return "" if value is None else decoded(str(value))


def _typed_address(value: str) -> str:
    """The address of an RFC 3464 2.3.2 `address-type; address` field (rfc822 or utf-8)."""
    kind, separator, address = value.partition(";")
    if not separator:
        address = kind
    return _bare_address(address)


def _bare_address(value: str) -> str:
    address = value.strip().strip("<>").strip().lower()
    return address if plausible_address(address) and " " not in address else ""
