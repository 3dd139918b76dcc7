"""Many rows of one table updated with values of their own in one statement: UPDATE ... FROM (VALUES ...).

An executemany of a one-row UPDATE still runs one statement per row in the database (and, on SQLite,
one pass of SQLAlchemy and the driver per row); a worker records each group of messages it sent this
way, so it costs one statement a group. PostgreSQL takes each column as one array, unnested into
rows (`FROM unnest(CAST(:id AS BIGINT[]), ...) AS v (id, status)`, each array cast to its column's
type, since a NULL alone has none): one statement text and a parameter per column whatever the number
of rows, which the driver converts once and caches (it converts a statement of more than 50 parameters
anew each time, a sixth of a worker's CPU in groups of 20); SQLite (3.33 and later) takes
`(VALUES (...), (...)) AS v`, names the columns column1, column2 ... and needs no types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import ARRAY, Connection, Table, TextClause, bindparam, text
from sqlalchemy.engine import Dialect

from newsletter.models import Base


def update_rows(
    connection: Connection,
    model: type[Base],
    key: str,
    rows: Sequence[Mapping[str, Any]],
    when: Mapping[str, Any] | None = None,
    constants: Mapping[str, Any] | None = None,
) -> int:
    """Set each row's columns (every row names `key` and the same columns) in the row of `model` it names.

    `when` adds equality conditions every row must also meet (`status = 'sending'`); `constants` sets
    the same value in every row. Returns the number of rows changed.
    """
    if not rows:
        return 0
    table = cast(Table, model.__table__)
    columns = tuple(name for name in rows[0] if name != key)
    when, constants = dict(when or {}), dict(constants or {})
    count = 0 if connection.dialect.name == "postgresql" else len(rows)  # one array per column: any number
    statement = _statement(connection.dialect, table, key, columns, count, tuple(when), tuple(constants))
    values: dict[str, Any] = {f"when_{name}": value for name, value in when.items()}
    values.update({f"set_{name}": value for name, value in constants.items()})
    if connection.dialect.name == "postgresql":
        values.update({name: [row[name] for row in rows] for name in (key, *columns)})
    else:
        for number, row in enumerate(rows):
            values[f"{key}_{number}"] = row[key]
            values.update({f"{name}_{number}": row[name] for name in columns})
    result = connection.execute(statement, values)
    return int(result.rowcount)


@lru_cache(maxsize=256)
def _statement(
    dialect: Dialect,
    table: Table,
    key: str,
    columns: tuple[str, ...],
    count: int,
    when: tuple[str, ...],
    constants: tuple[str, ...],
) -> TextClause:
    """The statement for `count` rows (PostgreSQL: any number, given 0), built once per shape so
    SQLAlchemy reuses its compiled form."""
    names = (key, *columns)
    postgresql = dialect.name == "postgresql"
    if postgresql:
        arrays = ", ".join(f"CAST(:{name} AS {table.c[name].type.compile(dialect=dialect)}[])" for name in names)
        source = f"unnest({arrays}) AS v ({', '.join(names)})"
        column_of = {name: f"v.{name}" for name in names}
        parameters = [bindparam(name, type_=ARRAY(table.c[name].type)) for name in names]
    else:
        tuples = ", ".join(f"({', '.join(f':{name}_{number}' for name in names)})" for number in range(count))
        source = f"(VALUES {tuples}) AS v"
        column_of = {name: f"v.column{index}" for index, name in enumerate(names, 1)}
        parameters = [
            bindparam(f"{name}_{number}", type_=table.c[name].type) for number in range(count) for name in names
        ]
    assignments = [f"{name} = {column_of[name]}" for name in columns]
    assignments += [f"{name} = :set_{name}" for name in constants]
    conditions = [f"{table.name}.{key} = {column_of[key]}"]
    conditions += [f"{table.name}.{name} = :when_{name}" for name in when]
    sql = f"UPDATE {table.name} SET {', '.join(assignments)} FROM {source} WHERE {' AND '.join(conditions)}"
    parameters += [bindparam(f"when_{name}", type_=table.c[name].type) for name in when]
    parameters += [bindparam(f"set_{name}", type_=table.c[name].type) for name in constants]
    return text(sql).bindparams(*parameters)
