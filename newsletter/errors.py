"""The errors the newsletter raises: one base, named for what happened."""

from __future__ import annotations


class NewsletterError(Exception):
    """Base of every error the CLI and the web app show as one clear line."""


class ConfigError(NewsletterError):
    """A setting has a value it cannot take, or the config file is unreadable."""


class MissingSetting(ConfigError):
    """A setting the current command needs has no value."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"setting {name!r} is required: set `{name}` in newsletter.toml "
            f"or the environment variable NEWSLETTER_{name.upper()}"
        )
        self.name = name


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
