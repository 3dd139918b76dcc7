"""Signed tokens: purpose-bound (a confirm token can never unsubscribe), some expiring, some in addresses."""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum
from typing import Any

from itsdangerous import BadData, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

from newsletter.errors import NewsletterError

MAX_ROW_ID = 2**63 - 1  # a BIGINT; SQLite's INTEGER is as wide
ADDRESS_MAC_HEX_CHARS = 20  # 80 bits: forging one by guessing is out of reach


class TokenInvalid(NewsletterError):
    """A token that was tampered with, cut short, or made for another purpose."""


class TokenExpired(TokenInvalid):
    """A token whose signature is good but whose time has run out."""


class Purpose(StrEnum):
    CONFIRM = "confirm"
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    BOUNCE = "bounce"  # the VERP return path: bounces+TOKEN@domain names a delivery
    OUTBOUND_BOUNCE = "outbound-bounce"  # the same for a one-off message (a confirmation mail)
    MAILTO_UNSUBSCRIBE = "mailto-unsubscribe"  # unsubscribe+TOKEN@domain names a subscriber


def as_row_id(data: Any) -> int:
    """The row id a token carries; anything else (text, a list, a bool, a number no row can have) is invalid.

    Only our key signs tokens, but a token of one form read as another, or an old form, must still be a
    clear 400, never a driver overflow.
    """
    if isinstance(data, int) and not isinstance(data, bool) and 0 < data <= MAX_ROW_ID:
        return data
    raise TokenInvalid("this link is not valid")


class Signer:
    """Makes and reads the tokens of one secret key; each purpose is a separate salt."""

    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise TokenInvalid("no secret_key is set: tokens cannot be signed")
        self._secret = secret_key.encode()
        # One serializer per purpose: building one derives its key and probes its JSON, which cost more
        # than the signature itself, and a worker signs two permanent tokens for every message it sends.
        self._permanent = {
            purpose: URLSafeSerializer(self._secret, salt=f"newsletter.{purpose}") for purpose in Purpose
        }

    def dumps(self, purpose: Purpose, data: Any) -> str:
        """A URL-safe token carrying `data` (expiry is checked by `loads`, from the signing time)."""
        return URLSafeTimedSerializer(self._secret, salt=f"newsletter.{purpose}").dumps(data)

    def loads(self, purpose: Purpose, token: str, max_age_seconds: int | None = None) -> Any:
        """The data of a token made for `purpose`.

        Raises:
            TokenExpired: the token is older than `max_age_seconds`.
            TokenInvalid: the token is not one this key signed for this purpose.
        """
        serializer = URLSafeTimedSerializer(self._secret, salt=f"newsletter.{purpose}")
        try:
            return serializer.loads(token, max_age=max_age_seconds)
        except SignatureExpired:
            raise TokenExpired("this link has expired") from None
        except BadData:  # a bad signature, or a good one around a payload of another form
            raise TokenInvalid("this link is not valid (it may have been cut short or altered)") from None

    def dumps_permanent(self, purpose: Purpose, data: Any) -> str:
        """A URL-safe token without a timestamp: shorter, for links that never expire (unsubscribe)."""
        return self._permanent[purpose].dumps(data)

    def loads_permanent(self, purpose: Purpose, token: str) -> Any:
        try:
            return self._permanent[purpose].loads(token)
        except BadData:  # a bad signature, or a good one around a payload of another form
            raise TokenInvalid("this link is not valid (it may have been cut short or altered)") from None

    def address_token(self, purpose: Purpose, number: int) -> str:
        """A short lower-case token for an address's local part: `<number in hex>-<mac>`.

        Lower case and hex only, because MTAs may fold the case of a local part (RFC 5321 2.4 allows
        case-sensitivity, not every relay keeps it) and some reject characters beyond [a-z0-9.-+].
        """
        head = format(number, "x")
        return f"{head}-{self._mac(purpose, head)}"

    def read_address_token(self, purpose: Purpose, token: str) -> int:
        """The number in an address token.

        Raises:
            TokenInvalid: the token is malformed or its MAC is wrong.
        """
        head, _, mac = token.strip().lower().partition("-")
        try:
            number = int(head, 16)
        except ValueError:
            raise TokenInvalid(f"malformed address token {token[:40]!r}") from None
        if not hmac.compare_digest(mac, self._mac(purpose, head)):
            raise TokenInvalid(f"address token {token[:40]!r} has a bad signature")
        return number

    def _mac(self, purpose: Purpose, head: str) -> str:
        digest = hmac.new(self._secret, f"{purpose}:{head}".encode(), hashlib.sha256).hexdigest()
        return digest[:ADDRESS_MAC_HEX_CHARS]
