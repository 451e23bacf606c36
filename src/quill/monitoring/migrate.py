"""Bring an existing store's tables up to the models: add the nullable columns they lack.

``Base.metadata.create_all`` creates the tables a store lacks but never alters one that
exists, so a store written by an older Quill would miss every column added since, and the
first write naming one would fail. :func:`add_missing_columns` runs after it each time a
store is opened: a nullable column is added in place (older rows read it as NULL); a NOT NULL
column cannot be, because the rows already there have no value for it, so it stops the
store from opening with :class:`SchemaUpgradeError` naming the table and column.

Only the column is added, with its type: no index, no server default, no constraint. The
columns added this way so far need none; one that does needs a migration written by hand.
Several processes may open the same store at once (API workers on one SQLite file): when
the ``ALTER TABLE`` fails because another process has just added the column, that is
checked and the upgrade carries on.
"""

from __future__ import annotations

import logging

from sqlalchemy import Column, MetaData, Table, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from quill.errors import QuillError

log = logging.getLogger(__name__)


class SchemaUpgradeError(QuillError, RuntimeError):
    """A table of the store lacks a column that cannot be added to the rows it holds."""

    code = "monitoring_schema_outdated"


def add_missing_columns(engine: Engine, metadata: MetaData) -> list[tuple[str, str]]:
    """Add to each existing table of ``metadata`` the nullable columns it lacks.

    Returns the (table, column) pairs this call added, in the models' order: empty when
    the store was up to date (opening it again changes nothing). Tables that do not exist
    are left to ``create_all``. Raises :class:`SchemaUpgradeError` for a missing NOT NULL
    column, before any column of that table is added.
    """
    inspector = inspect(engine)
    added = []
    for table in metadata.sorted_tables:
        if not inspector.has_table(table.name, schema=table.schema):
            continue
        present = {c["name"] for c in inspector.get_columns(table.name, schema=table.schema)}
        missing = [column for column in table.columns if column.name not in present]
        for column in missing:
            if not column.nullable:
                raise SchemaUpgradeError(
                    f"table {table.name!r} of the monitoring store lacks column "
                    f"{column.name!r}, which is NOT NULL: it cannot be added to the rows "
                    "already there. Upgrade this store by hand, or start a new one."
                )
        for column in missing:
            if _add_column(engine, table, column):
                log.info("monitoring store: added column %s.%s", table.name, column.name)
                added.append((table.name, column.name))
    return added


def _add_column(engine: Engine, table: Table, column: Column) -> bool:
    """``ALTER TABLE ... ADD COLUMN`` in the engine's dialect; False when another process
    added the column first (the statement failed and the column is now there)."""
    preparer = engine.dialect.identifier_preparer
    column_type = column.type.compile(dialect=engine.dialect)
    statement = (
        f"ALTER TABLE {preparer.format_table(table)} "
        f"ADD COLUMN {preparer.format_column(column)} {column_type}"
    )
    try:
        with engine.begin() as connection:
            connection.execute(text(statement))
    except DBAPIError:
        if column.name in _column_names(engine, table):
            return False
        raise
    return True


def _column_names(engine: Engine, table: Table) -> set[str]:
    """The table's columns as the database has them now (a fresh inspector: no cache)."""
    return {c["name"] for c in inspect(engine).get_columns(table.name, schema=table.schema)}
