"""Email addresses: validation and the normalized key two subscribers may never share."""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, validate_email

from newsletter.errors import InvalidAddress
from newsletter.models import NAME_MAX_CHARS


def normalize_address(email: str, check_deliverability: bool = False) -> tuple[str, str]:
    """Validate `email` and return it as given (trimmed) with its key.

    The key is the address trimmed and lower-cased, domain included. RFC 5321 lets a local part be
    case-sensitive, but no mailbox provider in use treats it so, and two rows that differ only in case
    would mail one person twice.

    Raises:
        InvalidAddress: the address is not a valid address (the message says why).
    """
    given = email.strip()
    try:
        result = validate_email(given, check_deliverability=check_deliverability)
    except EmailNotValidError as error:
        raise InvalidAddress(f"{_shown(given)}: {error}", reason=str(error)) from None
    return given, result.normalized.lower()


def clean_name(name: str | None, max_chars: int = NAME_MAX_CHARS) -> str | None:
    """A display name (or another line of text) without control characters (CR/LF could inject headers),
    spaces folded, at most `max_chars`; None when empty."""
    if name is None:
        return None
    if not name.isprintable():  # the common case skips the per-character look-up
        name = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in name)
    cleaned = " ".join(name.split())[:max_chars]
    return cleaned or None


def _shown(value: str) -> str:
    shown = value.encode("unicode_escape").decode("ascii") if any(c in value for c in "\r\n") else value
    return repr(shown[:80]) if shown else "empty address"
