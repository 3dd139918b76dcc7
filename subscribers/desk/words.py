"""The desk's names for states and roles (the database keeps the English keys), for language.names."""

from __future__ import annotations

from newsletter import language

N_ = language.N_

# Every state a desk page names, whichever table it is of: subscribers, deliveries and one-off mails, issues.
STATES = {
    "pending": N_("pending"),
    "active": N_("active"),
    "unsubscribed": N_("unsubscribed"),
    "bounced": N_("bounced"),
    "complained": N_("complained"),
    "sending": N_("sending"),
    "sent": N_("sent"),
    "failed": N_("failed"),
    "skipped": N_("skipped"),
    "waiting": N_("waiting"),
    "retrying": N_("retrying"),
    "draft": N_("draft"),
    "scheduled": N_("scheduled"),
    "started": N_("started"),
    "missed": N_("missed"),
    "cancelled": N_("cancelled"),
}
# A delivery's or a one-off mail's own word where a subscriber's differs: pending is waiting to go, not to confirm.
DELIVERY_STATES = {**STATES, "pending": N_("to send")}
ROLES = {"editor": N_("editor"), "viewer": N_("viewer")}
