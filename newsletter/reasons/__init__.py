"""Why a delivery failed: one classifier for SMTP replies, DSNs, feedback loops and ESP webhooks.

Each reason is one `Rule` (a name, what it does to the reader, the status codes and the phrases real MTAs
use for it), in the manner of Sisimai's reason set. The rules live in three modules by what they do:
`address` (the reader's address is gone: suppress at once), `transient` (may pass: add to the decaying
score) and `sender` (our relay, our reputation or the content: the reader is untouched, the editor is told).

The evidence is read in order of trust (RFC 3463 enhanced status code, SMTP reply code, the diagnostic
text, the DSN Action), with one rule above all: a reader is suppressed only on a permanent failure that
nothing in the report contradicts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from newsletter.reasons.address import ADDRESS_RULES
from newsletter.reasons.rule import Effect, Rule
from newsletter.reasons.sender import CONTENT_REASONS, SECURITY_ERROR, SENDER_RULES, UNSUPPORTED
from newsletter.reasons.transient import FILTERED, TRANSIENT_RULES, UNDEFINED

__all__ = ["CONTENT_REASONS", "RULES", "Diagnosis", "Effect", "Rule", "classify", "rule_named"]

# Sender-side and content rules first: their phrases are the most specific ("rejected as spam" also says
# "rejected"), then the reader's address, then what may pass.
RULES: tuple[Rule, ...] = (*SENDER_RULES, *ADDRESS_RULES, *TRANSIENT_RULES)
_BY_NAME = {rule.name: rule for rule in (*RULES, UNDEFINED)}
_STATUS_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_STAGE_WORDS = (
    ("DATA", re.compile(r"in reply to (the )?end of data|after (the )?end of data|>>> data\b")),
    ("RCPT", re.compile(r"in reply to rcpt( to)?|after rcpt|rcpt to generated|smtp:rcpt|>>> rcpt to")),
)
DATA_STAGES = ("DATA", "end of DATA")  # smtp.END_OF_DATA: after the final dot
# The RFC 3463 subjects that name each address reason by themselves (the rest only through the words).
_ADDRESS_BY_STATUS = {
    "1.1": ("userunknown",),
    "1.2": ("hostunknown",),
    "1.3": ("userunknown",),
    "1.6": ("hasmoved",),
    "1.10": ("notaccept", "userunknown"),
    "2.1": ("suspend",),  # a disabled mailbox; "5.2.1 user unknown" contradicts itself and only scores
}
_REPLY_CODE = re.compile(r"(?<![\d.])([245]\d\d)(?![\d.])")
# RFC 3463 subject.detail codes too broad to name a reason by themselves: the text decides, then these.
_GENERIC_STATUSES = {
    "0.0": "",
    "1.0": "",
    "2.0": "",
    "3.0": "systemerror",
    "4.0": "networkerror",
    "4.4": "networkerror",  # "unable to route": an unknown domain, or DNS that failed for a moment
    "5.0": "",
    "7.0": "policyviolation",
    "7.1": "policyviolation",  # "not authorized": spam blocks, relay denials and, at some hosts, unknown users
}


@dataclass(frozen=True)
class Diagnosis:
    """What a failure report says: the reason's name, what it does to the reader, and how it was decided."""

    reason: str
    effect: Effect
    permanent: bool  # a 5.x.x status, a 5xx reply or `Action: failed` with neither
    evidence: str  # status, reply, text, action: the most trusted evidence that named the reason
    status: str = ""  # the enhanced status code found, e.g. 5.1.1
    reply_code: int = 0

    @property
    def suppresses(self) -> bool:
        return self.effect == Effect.SUPPRESS

    @property
    def scores(self) -> bool:
        return self.effect == Effect.SCORE


def rule_named(name: str) -> Rule:
    """The rule of a reason name; an unknown name is `undefined`."""
    return _BY_NAME.get(name, UNDEFINED)


def classify(status: str = "", reply_code: int = 0, text: str = "", action: str = "", stage: str = "") -> Diagnosis:
    """Name the reason of one failure.

    `status` is the enhanced code (RFC 3463) the report gives, `reply_code` the SMTP reply, `text` the
    remote server's words, `action` the DSN Action, `stage` the SMTP command refused (MAIL, RCPT, DATA,
    connect, AUTH) when we saw the reply ourselves. Codes missing from the fields are looked for in the text.
    """
    lowered = " ".join(text.lower().split())
    quoted = _status_in(lowered)
    if not status or (status.endswith(".0.0") and quoted and not quoted.endswith(".0.0")):
        status = quoted or status  # Exim's "Status: 5.0.0" over "550 5.1.1 No such user": the specific one
    reply_code = reply_code or _reply_in(lowered)
    permanent = _permanent(status, reply_code, action)
    stage = stage or _stage_in(lowered)
    rule, evidence = _decide(status, reply_code, lowered, stage)
    effect = rule.effect
    if effect == Effect.SUPPRESS and not permanent:
        effect = Effect.SCORE  # "450 4.1.1" and other deferrals: the address may yet work
    subject = status.partition(".")[2]
    if effect == Effect.SUPPRESS and evidence == "text" and status and stage != "RCPT":
        if rule.name not in _ADDRESS_BY_STATUS.get(subject, ()):
            # The words name the address but neither the status code ("5.0.0 Unknown user") nor the command
            # refused (RCPT) does: the code is the more trusted evidence, so this only adds to the score.
            effect = Effect.SCORE
    if action.startswith("delay"):
        effect = Effect.NONE  # RFC 3464 2.3.3: still being tried; only the final word may count
    return Diagnosis(rule.name, effect, permanent, evidence, status, reply_code)


def _decide(status: str, reply_code: int, text: str, stage: str) -> tuple[Rule, str]:
    """The rule the evidence names, most trusted first; an address rule that the text contradicts yields."""
    rule, evidence = _named(status, reply_code, text, stage)
    if rule.effect == Effect.SUPPRESS and stage in DATA_STAGES:
        # RFC 5321 3.3: the server took the recipient at RCPT; "unknown user" after DATA is a filter's word.
        return FILTERED, "stage"
    return rule, evidence


def _named(status: str, reply_code: int, text: str, stage: str) -> tuple[Rule, str]:
    if stage in ("connect", "AUTH", "EHLO", "STARTTLS"):
        return rule_named("securityerror"), "stage"  # refused before any recipient was named: our session
    if stage == "MAIL":
        # RFC 5321 3.3: MAIL names only our envelope sender; a missing SMTPUTF8 is the relay's (RFC 6531 3.4),
        # and a demand for STARTTLS or AUTH our session's.
        found = (rule for rule in (UNSUPPORTED, SECURITY_ERROR) if rule.says(text) or reply_code in rule.replies)
        return next(found, rule_named("rejected")), "stage"
    subject = status.partition(".")[2]
    by_text = next((rule for rule in RULES if rule.says(text)), None)
    by_status = next((rule for rule in RULES if subject in rule.statuses), None)
    if by_status is not None:
        if (
            by_status.effect == Effect.SUPPRESS
            and by_text is not None
            and by_text.effect != Effect.SUPPRESS
            and not any(rule.says(text) for rule in ADDRESS_RULES)
        ):
            return by_text, "text"  # "5.2.1 ... rate limit exceeded": the words say it may pass
        if by_status.effect == Effect.SUPPRESS and by_text is not None and by_text.effect == Effect.SUPPRESS:
            return by_text, "text"  # Microsoft's "5.1.10 RecipientNotFound" is no null MX: the words are exact
        return by_status, "status"
    if by_text is not None:
        return by_text, "text"
    generic = _GENERIC_STATUSES.get(subject, "")
    if generic:
        return rule_named(generic), "status"
    by_reply = next((rule for rule in RULES if reply_code in rule.replies), None)
    if by_reply is not None:
        return by_reply, "reply"
    return UNDEFINED, "action"


def _stage_in(text: str) -> str:
    """The SMTP command a bounce says the refusal answered, when it says so ("in reply to RCPT TO command")."""
    found = [(match.start(), stage) for stage, pattern in _STAGE_WORDS for match in [pattern.search(text)] if match]
    return min(found)[1] if found else ""


def _permanent(status: str, reply_code: int, action: str) -> bool:
    if status:
        return status.startswith("5")  # RFC 3463 3.1: the class decides
    if reply_code:
        return 500 <= reply_code < 600  # RFC 5321 4.2.1
    return action.startswith("fail")


def _status_in(text: str) -> str:
    found = [".".join(match.groups()) for match in _STATUS_CODE.finditer(text)]
    # A specific code ("5.1.1") says more than a generic one ("5.0.0") quoted beside it.
    return next((code for code in found if not code.endswith(".0.0")), found[0] if found else "")


def _reply_in(text: str) -> int:
    match = _REPLY_CODE.search(text[:400])
    return int(match.group(1)) if match else 0
