"""Which column of an import file is what: our own export's, or the exports of Mailchimp, Substack,
Buttondown, listmonk and Ghost by the column names each writes, or what `--map column=field` says.

Each source's notion of who left becomes a suppressed status, so an imported list never mails them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from newsletter.cjk import is_cjk
from newsletter.errors import ImportFileError
from newsletter.statuses import SubscriberStatus

ACTIVE, PENDING = SubscriberStatus.ACTIVE.value, SubscriberStatus.PENDING.value
UNSUBSCRIBED, BOUNCED, COMPLAINED = (
    SubscriberStatus.UNSUBSCRIBED.value,
    SubscriberStatus.BOUNCED.value,
    SubscriberStatus.COMPLAINED.value,
)
FIELDS = ("email", "name", "first_name", "last_name", "status", "tags", "attributes", "ignore")
OWN_STATUSES = {status.value: status.value for status in SubscriberStatus}
TRUE_WORDS = ("true", "yes", "1", "t", "y")
FALSE_WORDS = ("false", "no", "0", "f", "n", "")


class InvalidMapping(ImportFileError):
    """A `--map` that names no column of the file, or no field."""


@dataclass(frozen=True)
class Source:
    """One service's export: its column names (lower-case) for each field, and what its statuses mean."""

    name: str
    email: tuple[str, ...]
    markers: tuple[str, ...] = ()  # columns only this service writes: how the file is recognised
    name_columns: tuple[str, ...] = ()
    first_name: tuple[str, ...] = ()
    last_name: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    statuses: Mapping[str, str | None] = field(default_factory=dict)  # value -> our status (None: the default)
    tags: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()  # a column of JSON key-value data (listmonk's attributes)
    # A column whose presence says every row is in this state (Mailchimp exports each state to its own file).
    file_status: tuple[tuple[str, str], ...] = ()
    skip: tuple[str, ...] = ()  # the service's own bookkeeping, not worth an attribute


def _booleans(true: str | None, false: str | None) -> dict[str, str | None]:
    return {**dict.fromkeys(TRUE_WORDS, true), **dict.fromkeys(FALSE_WORDS, false)}


SOURCES = (
    # Mailchimp's audience export: one CSV per state (subscribed, unsubscribed, cleaned, non-subscribed).
    Source(
        "Mailchimp",
        email=("email address",),
        markers=("member_rating", "optin_time", "leid", "euid"),
        first_name=("first name", "fname"),
        last_name=("last name", "lname"),
        tags=("tags",),
        file_status=(("unsub_time", UNSUBSCRIBED), ("clean_time", BOUNCED)),
        skip=(
            "member_rating",
            "optin_time",
            "optin_ip",
            "confirm_time",
            "confirm_ip",
            "latitude",
            "longitude",
            "gmtoff",
            "dstoff",
            "timezone",
            "cc",
            "region",
            "last_changed",
            "leid",
            "euid",
            "notes",
            "unsub_time",
            "unsub_campaign_title",
            "unsub_campaign_id",
            "unsub_reason",
            "unsub_reason_other",
            "clean_time",
            "clean_campaign_title",
            "clean_campaign_id",
        ),
    ),  # fmt: skip
    # Substack's subscriber export.
    Source(
        "Substack",
        email=("email",),
        markers=("active_subscription", "email_disabled", "first_payment_at"),
        name_columns=("name",),
        status=("email_disabled",),
        statuses=_booleans(UNSUBSCRIBED, None),
        skip=("active_subscription", "expiry", "plan", "email_disabled", "created_at", "first_payment_at"),
    ),
    # Buttondown's subscriber export.
    Source(
        "Buttondown",
        email=("email", "email_address"),
        markers=("subscriber_type", "referrer_url", "secondary_id"),
        status=("subscriber_type", "type"),
        statuses={
            "regular": None,
            "premium": None,
            "gifted": None,
            "trialed": None,
            "churned": None,
            "past_due": None,
            "unpaid": None,
            "paused": None,
            "unactivated": PENDING,
            "unsubscribed": UNSUBSCRIBED,
            "removed": UNSUBSCRIBED,
            "blocked": UNSUBSCRIBED,
            "undeliverable": BOUNCED,
            "spammy": COMPLAINED,
            "complained": COMPLAINED,
        },
        tags=("tags",),
        attributes=("metadata",),
        skip=("id", "creation_date", "subscriber_type", "type", "secondary_id", "upgrade_date", "source"),
    ),  # fmt: skip
    # listmonk's subscriber export.
    Source(
        "listmonk",
        email=("email",),
        markers=("uuid",),
        name_columns=("name",),
        status=("status",),
        statuses={"enabled": None, "disabled": UNSUBSCRIBED, "blocklisted": UNSUBSCRIBED},
        attributes=("attributes",),
        skip=("uuid", "status", "created_at", "updated_at", "id"),
    ),
    # Ghost's members export.
    Source(
        "Ghost",
        email=("email",),
        markers=("subscribed_to_emails", "complimentary_plan", "stripe_customer_id"),
        name_columns=("name",),
        status=("subscribed_to_emails",),
        statuses=_booleans(None, UNSUBSCRIBED),
        tags=("labels",),
        skip=(
            "id",
            "note",
            "subscribed_to_emails",
            "complimentary_plan",
            "stripe_customer_id",
            "created_at",
            "deleted_at",
            "tiers",
            "labels",
        ),
    ),  # fmt: skip
)
OWN = Source(
    "newsletter",
    email=("email", "e-mail", "email address", "email_address", "mail"),
    name_columns=("name", "full name", "full_name"),
    first_name=("first name", "first_name", "firstname", "given name"),
    last_name=("last name", "last_name", "lastname", "surname", "family name"),
    status=("status",),
    statuses={**OWN_STATUSES, "": None},
    tags=("tags",),
    skip=("source", "created_at", "confirmed_at", "unsubscribed_at"),
)


@dataclass(frozen=True)
class Layout:
    """Where a header puts each field, and how its statuses read."""

    source: str
    width: int
    email: int
    name: int | None = None
    first_name: int | None = None
    last_name: int | None = None
    status: int | None = None
    statuses: Mapping[str, str | None] = field(default_factory=dict)
    file_status: str | None = None
    tags: int | None = None
    json_attributes: int | None = None
    attributes: tuple[tuple[int, str], ...] = ()


def parse_maps(maps: Sequence[str]) -> dict[str, str]:
    """`--map "E-Mail=email"` options as {column (lower-case): field}; a field outside FIELDS is an attribute name.

    Raises:
        InvalidMapping: an option without `=`.
    """
    parsed = {}
    for item in maps:
        column, equals, target = item.partition("=")
        if not equals or not column.strip() or not target.strip():
            raise InvalidMapping(f"--map {item!r}: write it as COLUMN=FIELD, e.g. --map 'E-Mail=email'")
        parsed[column.strip().lower()] = target.strip()
    return parsed


def layout_of(file_name: str, header: Sequence[str], maps: Mapping[str, str] | None = None) -> Layout:
    """The layout of a header: the service whose export it is (by its columns), then `maps` over it.

    Raises:
        ImportFileError: no column is the address.
        InvalidMapping: a mapped column is not in the file.
    """
    names = [name.strip().lower() for name in header]
    maps = dict(maps or {})
    missing = [column for column in maps if column not in names]
    if missing:
        raise InvalidMapping(f"--map names {missing[0]!r}, which is no column of {file_name}")
    source = next((s for s in SOURCES if any(marker in names for marker in s.markers)), None)
    source = source or next((s for s in SOURCES if s.name == "Mailchimp" and "email address" in names), OWN)
    found: dict[str, int] = {}
    for role, candidates in (
        ("email", source.email),
        ("name", source.name_columns),
        ("first_name", source.first_name),
        ("last_name", source.last_name),
        ("status", source.status),
        ("tags", source.tags),
        ("attributes", source.attributes),
    ):
        index = next((names.index(column) for column in candidates if column in names), None)
        if index is not None:
            found[role] = index
    renamed: dict[int, str] = {}
    ignored: set[int] = set()
    for column, target in maps.items():
        index = names.index(column)
        for role, at in list(found.items()):
            if at == index:
                del found[role]
        if target == "ignore":
            ignored.add(index)
        elif target in FIELDS:
            found[target] = index
        else:
            renamed[index] = target
    if "email" not in found:
        raise ImportFileError(
            f"{file_name} has no 'email' column (first line: {', '.join(header)[:200]}); name the address column "
            "with --map 'COLUMN=email'"
        )
    taken = set(found.values()) | ignored
    skipped = set(source.skip) | set(OWN.skip) | {"status"}
    file_status = next((status for column, status in source.file_status if column in names), None)
    attributes = tuple(
        (index, renamed.get(index) or header[index].strip())
        for index, name in enumerate(names)
        if index not in taken and name and (index in renamed or name not in skipped)
    )
    statuses = {**OWN_STATUSES, **source.statuses} if "status" in found else {}
    return Layout(
        source=source.name,
        width=len(header),
        email=found["email"],
        name=found.get("name"),
        first_name=found.get("first_name"),
        last_name=found.get("last_name"),
        status=found.get("status"),
        statuses=statuses,
        file_status=file_status,
        tags=found.get("tags"),
        json_attributes=found.get("attributes"),
        attributes=attributes,
    )


def full_name(first: str, last: str) -> str:
    """First and last name joined: with a space in Latin script, without one between CJK names (王 + 小明)."""
    first, last = first.strip(), last.strip()
    if not first or not last:
        return first or last
    # Chinese, Japanese and Korean names are written family name first, without a space.
    return f"{last}{first}" if is_cjk(first[0]) and is_cjk(last[-1]) else f"{first} {last}"
