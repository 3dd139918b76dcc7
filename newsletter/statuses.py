"""The states a subscriber can be in and where one came from: plain enums, free of SQLAlchemy."""

from __future__ import annotations

from enum import StrEnum


class SubscriberStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class SubscriberSource(StrEnum):
    IMPORT = "import"
    FORM = "form"
    CLI = "cli"
    API = "api"
    DESK = "desk"  # added by hand on the editor's desk


class AccountRole(StrEnum):
    EDITOR = "editor"  # changes the list, sends issues
    VIEWER = "viewer"  # sees everything the desk shows, changes nothing
