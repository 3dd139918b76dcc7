"""The list as a CSV file: import (validated, de-duplicated, all or nothing) and export."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import String, func, insert, literal, select
from sqlalchemy.orm import Session

from newsletter.addresses import clean_name, normalize_address
from newsletter.errors import ImportFileError, InvalidAddress
from newsletter.models import Base, Event, Subscriber, SubscriberSource, SubscriberStatus, utcnow

# Columns export writes besides the attributes; on import `status` is honoured (so an exported list
# keeps its unsubscribed and bounced rows suppressed) and the others are not taken as attributes.
EXPORT_COLUMNS = ("email", "name", "status", "source", "created_at", "confirmed_at", "unsubscribed_at")
IMPORTABLE_STATUSES = frozenset(SubscriberStatus)
VALIDATION_CHUNK_ROWS = 5_000
PARALLEL_VALIDATION_MIN_ROWS = 20_000
LOOKUP_CHUNK_KEYS = 500
MAX_FIELD_CHARS = 100_000


@dataclass(frozen=True)
class Rejection:
    line: int
    email: str
    reason: str


@dataclass
class ImportReport:
    added: int = 0
    already_present: int = 0
    rejected: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True)
class _Row:
    line: int
    email: str
    name: str | None
    status: str | None
    attributes: dict[str, str]


def import_csv(
    session: Session,
    path: Path,
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
    source: SubscriberSource = SubscriberSource.IMPORT,
    shown_name: str | None = None,
    actor: str | None = None,
) -> ImportReport:
    """Import the valid rows of a CSV file in the caller's transaction; report each rejected row.

    `shown_name` names the file in errors (an upload's own name rather than where it was saved);
    `actor` is the desk or API account that imported it.

    Addresses already on the list are left as they are: an unsubscribed, bounced or complained address
    is never re-activated by an import.

    Raises:
        ImportFileError: the file cannot be read or has no `email` column.
    """
    report = ImportReport()
    rows = list(_read_rows(path, report, shown_name or str(path)))
    candidates: dict[str, tuple[_Row, str]] = {}
    for row, given, key, error in _validate(rows):
        if error is not None:
            report.rejected.append(Rejection(row.line, row.email, error))
        elif key in candidates:
            first = candidates[key][0].line
            report.rejected.append(Rejection(row.line, row.email, f"duplicate of line {first}"))
        else:
            candidates[key] = (row, given)
    existing = _existing_keys(session, list(candidates))
    report.already_present = len(existing)
    new = [(key, row, given) for key, (row, given) in candidates.items() if key not in existing]
    report.added = _insert(session, new, status, source, actor)
    report.rejected.sort(key=lambda rejection: rejection.line)
    return report


def _read_rows(path: Path, report: ImportReport, name: str) -> Iterator[_Row]:
    csv.field_size_limit(MAX_FIELD_CHARS)
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file)
            header = next(reader, None)
            if header is None:
                raise ImportFileError(f"{name} is empty")
            columns = [name.strip().lower() for name in header]
            if "email" not in columns:
                raise ImportFileError(f"{name} has no 'email' column (first line: {', '.join(header)[:200]})")
            email_at = columns.index("email")
            name_at = columns.index("name") if "name" in columns else None
            status_at = columns.index("status") if "status" in columns else None
            attribute_columns = [
                (index, header[index].strip())
                for index, name in enumerate(columns)
                if name not in EXPORT_COLUMNS and name
            ]
            for values in reader:
                if not any(value.strip() for value in values):
                    continue
                if len(values) != len(header):
                    report.rejected.append(
                        Rejection(
                            reader.line_num,
                            values[0] if values else "",
                            f"{len(values)} fields, the header has {len(header)}",
                        )
                    )
                    continue
                yield _Row(
                    line=reader.line_num,
                    email=values[email_at],
                    name=values[name_at] if name_at is not None else None,
                    status=values[status_at].strip().lower() or None if status_at is not None else None,
                    attributes={name: values[index] for index, name in attribute_columns if values[index]},
                )
    except FileNotFoundError:
        raise ImportFileError(f"{name} does not exist") from None
    except UnicodeDecodeError as error:
        raise ImportFileError(f"{name} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except csv.Error as error:
        raise ImportFileError(f"{name} is not valid CSV: {error}") from None
    except OSError as error:
        raise ImportFileError(f"cannot read {name}: {error.strerror}") from None


_Checked = tuple[_Row, str, str, str | None]


def _validate(rows: list[_Row]) -> Iterable[_Checked]:
    """Validate every address; a long list is spread over the CPU's cores (email-validator is ~60 µs)."""
    chunks = [rows[start : start + VALIDATION_CHUNK_ROWS] for start in range(0, len(rows), VALIDATION_CHUNK_ROWS)]
    workers = os.cpu_count() or 1
    if len(rows) < PARALLEL_VALIDATION_MIN_ROWS or workers < 2:
        return [checked for chunk in chunks for checked in _validate_chunk(chunk)]
    # fork: the children need nothing but the already-imported validator, and start in milliseconds.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return [checked for result in pool.map(_validate_chunk, chunks) for checked in result]


def _validate_chunk(rows: list[_Row]) -> list[_Checked]:
    checked: list[_Checked] = []
    for row in rows:
        if row.status is not None and row.status not in IMPORTABLE_STATUSES:
            checked.append((row, "", "", f"unknown status {row.status!r}"))
            continue
        try:
            given, key = normalize_address(row.email)
        except InvalidAddress as error:
            checked.append((row, "", "", error.reason))
        else:
            checked.append((row, given, key, None))
    return checked


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
    actor: str | None,
) -> int:
    if not new:
        return 0
    now = utcnow()
    before = session.scalar(select(func.coalesce(func.max(Subscriber.id), 0))) or 0
    by_status: dict[str, list[dict[str, Any]]] = {}
    for key, row, given in new:
        by_status.setdefault(row.status or status, []).append(
            {"email": given, "email_key": key, "name": clean_name(row.name), "attributes": row.attributes}
        )
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
        table = Base.metadata.tables[Subscriber.__tablename__]
        values = {name: literal(value, table.c[name].type) for name, value in constants.items()}
        session.execute(insert(table).values(values), rows)
    # One set-based statement logs the creation of every row this import added.
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
    return len(new)


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
