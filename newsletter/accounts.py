"""The desk's accounts: add, list, remove, change a password, sign in (rate-limited), API tokens."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from newsletter import language, throttle
from newsletter.addresses import normalize_address
from newsletter.errors import NewsletterError
from newsletter.models import EMAIL_MAX_CHARS, Account, AccountRole, ApiToken, utcnow

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024  # argon2 hashes any length; a megabyte "password" is only a way to burn CPU
SIGN_IN_WINDOW_SECONDS = 15 * 60
# Failed sign-ins counted per window: one account guessed at from many places, or one place guessing many.
SIGN_IN_FAILURES_PER_ACCOUNT = 10
SIGN_IN_FAILURES_PER_IP = 30
TOKEN_BYTES = 32
TOKEN_USE_RESOLUTION_SECONDS = 300
TOKEN_PREFIX = "nl_"  # tells a leaked token apart in logs and secret scanners
_hasher = PasswordHasher()
# Verified against when no account has the address, so a wrong address takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AccountExists(NewsletterError):
    """An account with that address already exists."""


class AccountNotFound(NewsletterError):
    """No account has that address."""


class WeakPassword(NewsletterError):
    """A password too short (or too long) to be taken."""


class TooManySignIns(NewsletterError):
    """Too many failed sign-ins for this account or from this address: wait a while."""


# Its words, which the desk says in the editor's language.
TOO_MANY_SIGN_INS = language.N_("too many failed sign-ins: wait %(minutes)s minutes and try again")


class SignInFailed(NewsletterError):
    """The address or the password is wrong (which one is not said)."""


@dataclass(frozen=True)
class SignedIn:
    """Who is signed in (the part of an account a page or a request needs)."""

    id: int
    email: str
    role: str
    session_version: int

    @property
    def is_editor(self) -> bool:
        return self.role == AccountRole.EDITOR


def _signed_in(account: Account) -> SignedIn:
    return SignedIn(account.id, account.email, account.role, account.session_version)


def check_password(password: str) -> None:
    """Raise WeakPassword unless the password can be taken."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise WeakPassword(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise WeakPassword(f"a password has at most {MAX_PASSWORD_CHARS} characters")


def add_account(session: Session, email: str, password: str, role: AccountRole = AccountRole.EDITOR) -> SignedIn:
    """Create an account.

    Raises:
        InvalidAddress: the address is not valid.
        WeakPassword: the password is too short.
        AccountExists: an account has this address already.
    """
    given, key = normalize_address(email)
    check_password(password)
    if session.scalar(select(Account.id).where(Account.email_key == key)) is not None:
        raise AccountExists(f"an account for {given} exists already")
    account = Account(email=given, email_key=key, role=role, password_hash=_hasher.hash(password), session_version=1)
    session.add(account)
    session.flush()
    return _signed_in(account)


def get_account(session: Session, email: str) -> Account:
    """The account with this address.

    Raises:
        AccountNotFound: there is none.
    """
    _, key = normalize_address(email)
    account = session.scalar(select(Account).where(Account.email_key == key))
    if account is None:
        raise AccountNotFound(f"no account for {email.strip()!r}; `newsletter users list` shows them")
    return account


def list_accounts(session: Session) -> list[Account]:
    return list(session.scalars(select(Account).order_by(Account.email_key)))


def has_accounts(session: Session) -> bool:
    return bool(session.scalar(select(func.count()).select_from(Account)))


def remove_account(session: Session, email: str) -> None:
    """Delete an account, its sessions and its API tokens (the events keep its address as who acted)."""
    session.delete(get_account(session, email))


def set_password(session: Session, email: str, password: str) -> None:
    """Give an account a new password; its open sessions end."""
    check_password(password)
    account = get_account(session, email)
    account.password_hash = _hasher.hash(password)
    account.session_version += 1


def sign_in(
    session: Session, secret_key: str, email: str, password: str, ip: str | None, now: dt.datetime | None = None
) -> SignedIn | None:
    """The account when address and password match, else None (the failure is counted, and committed).

    Raises:
        TooManySignIns: this account, or this client IP, failed too often in the last window.
    """
    now = now or utcnow()
    key = email.strip().lower()[:EMAIL_MAX_CHARS]
    limits = [(throttle.throttle_key(secret_key, "sign-in-account", key), SIGN_IN_FAILURES_PER_ACCOUNT)]
    if ip:
        limits.append((throttle.throttle_key(secret_key, "sign-in-ip", ip), SIGN_IN_FAILURES_PER_IP))
    for throttle_key, limit in limits:
        if throttle.hits(session, throttle_key, SIGN_IN_WINDOW_SECONDS, now) >= limit:
            raise TooManySignIns(TOO_MANY_SIGN_INS % {"minutes": SIGN_IN_WINDOW_SECONDS // 60})
    account = session.scalar(select(Account).where(Account.email_key == key))
    if account is not None and _verify(account.password_hash, password):
        if _hasher.check_needs_rehash(account.password_hash):
            account.password_hash = _hasher.hash(password)
        account.signed_in_at = now
        return _signed_in(account)
    if account is None:
        _verify(_DUMMY_HASH, password)
    for throttle_key, _limit in limits:
        throttle.hit(session, throttle_key, SIGN_IN_WINDOW_SECONDS, now)
    return None


def _verify(password_hash: str, password: str) -> bool:
    if len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def session_account(session: Session, account_id: int, session_version: int) -> SignedIn | None:
    """The account a session cookie names, while its password has not changed since it was signed."""
    account = session.get(Account, account_id)
    if account is None or account.session_version != session_version:
        return None
    return _signed_in(account)


def new_token(session: Session, email: str) -> str:
    """A new API bearer token for the account; only its hash is kept, so it is shown once."""
    account = get_account(session, email)
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    session.add(ApiToken(account_id=account.id, token_hash=_token_hash(token)))
    return token


def revoke_tokens(session: Session, email: str) -> int:
    """Remove every API token of the account; returns how many there were."""
    account = get_account(session, email)
    result = session.execute(delete(ApiToken).where(ApiToken.account_id == account.id))
    return int(result.rowcount)  # type: ignore[attr-defined]


def token_account(session: Session, token: str, now: dt.datetime | None = None) -> SignedIn | None:
    """The account whose API token this is, or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _token_hash(token)))
    if row is None:
        return None
    now = now or utcnow()
    if row.used_at is None or now - row.used_at > dt.timedelta(seconds=TOKEN_USE_RESOLUTION_SECONDS):
        row.used_at = now  # not on every request: a write per API call would serialize them on SQLite
    account = session.get_one(Account, row.account_id)
    return _signed_in(account)


def _token_hash(token: str) -> str:
    # A token is 256 random bits: a fast hash is enough (nothing to brute-force), and the lookup is indexed.
    return hashlib.sha256(token.encode()).hexdigest()
