"""The errors the newsletter raises: one base, named for what happened."""

from __future__ import annotations


class NewsletterError(Exception):
    """Base of every error the CLI and the web app show as one clear line."""


class ConfigError(NewsletterError):
    """A setting has a value it cannot take, or the config file is unreadable."""


class MissingSetting(ConfigError):
    """Settings the current command needs have no value (all of them named at once)."""

    def __init__(self, *names: str) -> None:
        if len(names) == 1:
            where = f"`{names[0]}` in newsletter.toml or the environment variable NEWSLETTER_{names[0].upper()}"
            super().__init__(f"setting {names[0]!r} is required: set {where}")
        else:
            listed = ", ".join(f"{name!r}" for name in names)
            variables = ", ".join(f"NEWSLETTER_{name.upper()}" for name in names)
            super().__init__(
                f"settings {listed} are required: set them in newsletter.toml or the environment ({variables})"
            )
        self.name = names[0]
        self.names = names


class InvalidAddress(NewsletterError):
    """An email address that is not a valid address."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class SubscriberNotFound(NewsletterError):
    """No subscriber has the given address."""


class ImportFileError(NewsletterError):
    """A subscriber import file that cannot be read as CSV with an email column."""


class DatabaseNotReady(NewsletterError):
    """The database is missing or not at the latest migration."""


class IssueFormatError(NewsletterError):
    """An issue file that cannot be rendered: unreadable, bad front matter, or no subject."""


class IssueNotFound(NewsletterError):
    """No stored issue has the given slug (none sent under it, or none in the archive)."""
