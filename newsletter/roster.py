"""The list as a CSV file: import (streamed, validated, de-duplicated, all or nothing) and export.

Reading the file (encoding, delimiter, lines) is `listfile`'s; here the columns become subscribers.
"""

from __future__ import annotations

import csv
import ctypes
import itertools
import json
import multiprocessing
import os
import secrets
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, literal, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from newsletter.addresses import clean_name, normalize_address
from newsletter.errors import InvalidAddress, NewsletterError
from newsletter.listfile import ListFile, Record
from newsletter.mappings import Layout, full_name, layout_of
from newsletter.models import EMAIL_MAX_CHARS, Base, Event, Subscriber, SubscriberSource, SubscriberStatus, utcnow
from newsletter.tags import add_tags, split_tags

# Columns export writes besides the attributes; on import `status` is honoured (so an exported list
# keeps its unsubscribed and bounced rows suppressed) and the others are not taken as attributes.
EXPORT_COLUMNS = ("email", "name", "status", "source", "created_at", "confirmed_at", "unsubscribed_at")
IMPORTABLE_STATUSES = frozenset(SubscriberStatus)
VALIDATION_CHUNK_ROWS = 5_000  # also the rows one INSERT carries: memory holds a few chunks, never the file
PARALLEL_VALIDATION_MIN_ROWS = 20_000
LOOKUP_CHUNK_KEYS = 500
MAX_REPORTED_REJECTIONS = 1_000  # a file of a million bad rows is counted, not kept in memory row by row
PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Rejection:
    line: int
    email: str
    reason: str


@dataclass
class ImportReport:
    added: int = 0
    already_present: int = 0
    rejected: list[Rejection] = field(default_factory=list)  # the first MAX_REPORTED_REJECTIONS, by line
    rejected_count: int = 0
    encoding: str = ""  # how the file was read: "UTF-8 (detected)", "GB18030 (given)"
    source: str = ""  # whose export the columns were read as: "Mailchimp", "newsletter"

    def reject(self, line: int, email: str, reason: str) -> None:
        self.rejected_count += 1
        if len(self.rejected) < MAX_REPORTED_REJECTIONS:
            self.rejected.append(Rejection(line, email, reason))


@dataclass(frozen=True)
class _Row:
    line: int
    email: str
    name: str | None
    status: str | None
    attributes: dict[str, Any]
    problem: str = ""  # found while reading: rejected in its place among the others, in line order
    tags: tuple[str, ...] = ()


def import_csv(
    session: Session,
    path: Path,
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
    source: SubscriberSource = SubscriberSource.IMPORT,
    encoding: str | None = None,
    shown_name: str | None = None,
    actor: str | None = None,
    maps: Mapping[str, str] | None = None,
) -> ImportReport:
    """Import the valid rows of a CSV file in the caller's transaction; report each rejected row.

    `encoding` is the file's, when known; `shown_name` names the file in errors (an upload's own name
    rather than where it was saved); `actor` is the desk or API account that imported it; `maps` says
    which column is which field where the file's own names do not (mappings.py knows the exports of
    Mailchimp, Substack, Buttondown, listmonk and Ghost).

    The file is streamed: memory holds a few thousand rows whatever its length. Addresses already on
    the list are left as they are: an unsubscribed, bounced or complained address is never re-activated.

    Raises:
        ImportFileError: the file cannot be read (the error names the line and byte), is in an encoding
            that is neither given nor detected with confidence, or has no `email` column.
    """
    with ListFile(path, encoding, shown_name) as listing:
        report = ImportReport(encoding=f"{listing.decoding.name} ({listing.decoding.how})")
        columns = columns_of(listing.name, listing.header, maps)
        report.source = columns.source
        seen = _SeenKeys(session)
        try:
            now = utcnow()
            before = last_subscriber_id(session)
            for chunk in _validated(_rows(listing.records(), columns)):
                new = _first_occurrences(session, seen, chunk, report)
                report.added += _insert(session, new, status, source, now)
            _log_created(session, before, now, source, actor)
        finally:
            seen.drop()
    return report


def last_subscriber_id(session: Session) -> int:
    """The highest subscriber id: the rows an import adds come after it."""
    return int(session.scalar(select(func.coalesce(func.max(Subscriber.id), 0))) or 0)


def columns_of(name: str, header: list[str], maps: Mapping[str, str] | None = None) -> Layout:
    """The columns of a header line (see mappings.layout_of): the address is required."""
    return layout_of(name, header, maps)


def _rows(records: Iterable[Record], columns: Layout) -> Iterator[_Row]:
    for record in records:
        values = record.values
        if not any(value.strip() for value in values):
            continue
        if len(values) != columns.width:
            problem = f"{len(values)} fields, the header has {columns.width}"
            yield _Row(record.line, values[0] if values else "", None, None, {}, problem)
            continue
        status, problem = _status(values, columns)
        attributes: dict[str, Any] = {name: values[index] for index, name in columns.attributes if values[index]}
        if columns.json_attributes is not None:
            extra, bad = _json_object(values[columns.json_attributes])
            attributes = {**extra, **attributes}
            problem = problem or bad
        try:
            tags = tuple(split_tags(values[columns.tags])) if columns.tags is not None else ()
        except NewsletterError as error:
            tags, problem = (), problem or str(error)
        yield _Row(
            line=record.line,
            email=values[columns.email],
            name=_name(values, columns),
            status=status,
            attributes=attributes,
            problem=problem,
            tags=tags,
        )


def _name(values: list[str], columns: Layout) -> str | None:
    if columns.name is not None and values[columns.name].strip():
        return values[columns.name]
    first = values[columns.first_name] if columns.first_name is not None else ""
    last = values[columns.last_name] if columns.last_name is not None else ""
    return full_name(first, last) or None


def _status(values: list[str], columns: Layout) -> tuple[str | None, str]:
    """The row's status as ours (None: the import's default) and a problem when its word means nothing."""
    if columns.status is None:
        return columns.file_status, ""
    word = values[columns.status].strip().lower()
    if word not in columns.statuses:
        return None, f"unknown status {word!r}"
    return columns.statuses[word] or columns.file_status, ""


def _json_object(text: str) -> tuple[dict[str, Any], str]:
    if not text.strip():
        return {}, ""
    try:
        value = json.loads(text)
    except ValueError:
        return {}, "the attributes column is not JSON"
    return (value, "") if isinstance(value, dict) else ({}, "the attributes column is not a JSON object")


_Checked = tuple[_Row, str, str, str | None]


def _validated(rows: Iterator[_Row]) -> Iterator[list[_Checked]]:
    """Validated chunks in file order; a long list is spread over the CPU's cores (email-validator is ~60 µs)."""
    chunks = iter(lambda: list(itertools.islice(rows, VALIDATION_CHUNK_ROWS)), [])
    head = list(itertools.islice(chunks, PARALLEL_VALIDATION_MIN_ROWS // VALIDATION_CHUNK_ROWS + 1))
    workers = os.cpu_count() or 1
    if sum(len(chunk) for chunk in head) <= PARALLEL_VALIDATION_MIN_ROWS or workers < 2:
        yield from (_validate_chunk(chunk) for chunk in itertools.chain(head, chunks))
        return
    # fork: the children need nothing but the already-imported validator, and start in milliseconds.
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    )
    try:
        in_flight: deque[Future[list[_Checked]]] = deque()
        for chunk in itertools.chain(head, chunks):
            in_flight.append(pool.submit(_validate_chunk, chunk))
            if len(in_flight) >= 2 * workers:  # a bounded read-ahead keeps memory flat
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _die_with_parent(parent: int) -> None:
    """In a validation child: end when the import ends, even by SIGKILL, rather than wait on a dead queue."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before the child could ask to follow it
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def _validate_chunk(rows: list[_Row]) -> list[_Checked]:
    checked: list[_Checked] = []
    for row in rows:
        if row.problem:
            checked.append((row, "", "", row.problem))
        elif row.status is not None and row.status not in IMPORTABLE_STATUSES:
            checked.append((row, "", "", f"unknown status {row.status!r}"))
        else:
            checked.append(_checked_address(row))
    return checked


def _checked_address(row: _Row) -> _Checked:
    try:
        given, key = normalize_address(row.email)
    except InvalidAddress as error:
        return (row, "", "", error.reason)
    return (row, given, key, None)


class _SeenKeys:
    """The addresses met so far in this file and the line of each, in a temporary table, not in memory."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.table = Table(
            f"import_keys_{secrets.token_hex(6)}",
            MetaData(),
            Column("email_key", String(EMAIL_MAX_CHARS), primary_key=True),
            Column("line", Integer, nullable=False),
            prefixes=["TEMPORARY"],
            postgresql_on_commit="DROP",
        )
        self.table.create(session.connection())

    def lines(self, keys: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(keys), LOOKUP_CHUNK_KEYS):
            chunk = keys[start : start + LOOKUP_CHUNK_KEYS]
            query = select(self.table.c.email_key, self.table.c.line).where(self.table.c.email_key.in_(chunk))
            found.update((key, line) for key, line in self.session.execute(query))
        return found

    def add(self, lines: dict[str, int]) -> None:
        if lines:
            self.session.execute(insert(self.table), [{"email_key": k, "line": n} for k, n in lines.items()])

    def drop(self) -> None:
        try:
            self.table.drop(self.session.connection())
        except SQLAlchemyError:  # a failed transaction is rolled back, and PostgreSQL drops it at its end
            pass


def _first_occurrences(
    session: Session, seen: _SeenKeys, chunk: list[_Checked], report: ImportReport
) -> list[tuple[str, _Row, str]]:
    """The rows of a chunk that are valid, new in the file and not on the list; the others reported, by line."""
    firsts: dict[str, tuple[_Row, str]] = {}
    again: list[tuple[_Row, str]] = []
    rejected: list[tuple[_Row, str]] = []
    for row, given, key, error in chunk:
        if error is not None:
            rejected.append((row, error))
        elif key in firsts:
            again.append((row, key))
        else:
            firsts[key] = (row, given)
    earlier = seen.lines(list(firsts))
    for key in earlier:
        rejected.append((firsts.pop(key)[0], f"duplicate of line {earlier[key]}"))
    for row, key in again:
        rejected.append((row, f"duplicate of line {earlier.get(key) or firsts[key][0].line}"))
    for row, reason in sorted(rejected, key=lambda pair: pair[0].line):
        report.reject(row.line, row.email, reason)
    seen.add({key: row.line for key, (row, _given) in firsts.items()})
    existing = _existing_keys(session, list(firsts))
    report.already_present += len(existing)
    return [(key, row, given) for key, (row, given) in firsts.items() if key not in existing]


def _existing_keys(session: Session, keys: list[str]) -> set[str]:
    existing: set[str] = set()
    for start in range(0, len(keys), LOOKUP_CHUNK_KEYS):
        chunk = keys[start : start + LOOKUP_CHUNK_KEYS]
        existing.update(session.scalars(select(Subscriber.email_key).where(Subscriber.email_key.in_(chunk))))
    return existing


def _insert(
    session: Session,
    new: list[tuple[str, _Row, str]],
    status: SubscriberStatus,
    source: SubscriberSource,
    now: Any,
) -> int:
    by_status: dict[str, list[dict[str, Any]]] = {}
    for key, row, given in new:
        by_status.setdefault(row.status or status, []).append(
            {"email": given, "email_key": key, "name": clean_name(row.name), "attributes": row.attributes}
        )
    table = Base.metadata.tables[Subscriber.__tablename__]
    for row_status, rows in by_status.items():
        # Core, not ORM, and the columns every row shares as constants: the per-row work is what differs.
        constants = {
            "status": row_status,
            "source": str(source),
            "bounce_score": 0.0,
            "created_at": now,
            "confirmed_at": now if row_status == SubscriberStatus.ACTIVE else None,
            "unsubscribed_at": now if row_status == SubscriberStatus.UNSUBSCRIBED else None,
        }
        values = {name: literal(value, table.c[name].type) for name, value in constants.items()}
        session.execute(insert(table).values(values), rows)
    _insert_tags(session, [(key, row.tags) for key, row, _given in new if row.tags])
    return len(new)


def _insert_tags(session: Session, tagged: list[tuple[str, tuple[str, ...]]]) -> None:
    """The imported rows' tags, kept as tags (the Tags column of Mailchimp, Buttondown; Ghost's labels)."""
    for start in range(0, len(tagged), LOOKUP_CHUNK_KEYS):
        chunk = dict(tagged[start : start + LOOKUP_CHUNK_KEYS])
        ids = session.execute(select(Subscriber.email_key, Subscriber.id).where(Subscriber.email_key.in_(chunk)))
        for key, subscriber_id in ids:
            add_tags(session, [subscriber_id], chunk[key])


def _log_created(session: Session, before: int, now: Any, source: SubscriberSource, actor: str | None) -> None:
    """One set-based statement logs the creation of every row this import added, and who imported them."""
    created = select(
        Subscriber.id,
        literal("created"),
        Subscriber.status,
        literal(str(source)),
        Subscriber.created_at,
        literal(actor, String()),
    ).where(Subscriber.id > before, Subscriber.created_at == now, Subscriber.source == source)
    columns = ["subscriber_id", "kind", "new_status", "source", "created_at", "actor"]
    session.execute(insert(Event).from_select(columns, created))


def export_csv(session: Session, out: IO[str], status: SubscriberStatus | None = None) -> int:
    """Write the list as CSV (attributes as extra columns); returns the number of rows written."""
    condition = [] if status is None else [Subscriber.status == status]
    attribute_names: dict[str, None] = {}
    for attributes in session.scalars(
        select(Subscriber.attributes).where(*condition).execution_options(yield_per=2000)
    ):
        attribute_names.update(dict.fromkeys(_as_dict(attributes)))
    names = [name for name in attribute_names if name.lower() not in EXPORT_COLUMNS]
    writer = csv.writer(out)
    writer.writerow([*EXPORT_COLUMNS, *names])
    count = 0
    query = select(Subscriber).where(*condition).order_by(Subscriber.id).execution_options(yield_per=2000)
    for subscriber in session.scalars(query):
        attributes = _as_dict(subscriber.attributes)
        writer.writerow(
            [
                subscriber.email,
                subscriber.name or "",
                subscriber.status,
                subscriber.source,
                _iso(subscriber.created_at),
                _iso(subscriber.confirmed_at),
                _iso(subscriber.unsubscribed_at),
                *(_cell(attributes.get(name)) for name in names),
            ]
        )
        count += 1
    return count


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _iso(value: Any) -> str:
    return value.isoformat() if value is not None else ""
