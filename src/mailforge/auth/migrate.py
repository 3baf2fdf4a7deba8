"""Copy one accounts database into another (a node's SQLite file into the PostgreSQL database
that many nodes will share): every table row for row, in one transaction of the target.

The target must hold no accounts (domains, mailboxes, aliases, limits) unless `replace`
says to drop what it has: so copying twice gives the same database, and nothing is merged by
accident. The settings rows (the SCRAM decoy key) come along, so unknown users see the same
decoy salts before and after.
"""

from __future__ import annotations

from ..errors import UsageError
from .sql.database import Connection, Database, count
from .sql.schema import TABLES

# The tables that hold accounts: a target with rows in any of them is "not empty".
ACCOUNT_TABLES = ("nodes", "domains", "mailboxes", "aliases", "send_limits")


def copy_accounts(source: Database, target: Database, *, replace: bool = False) -> dict[str, int]:
    """Rows copied per table."""
    with source.read() as db:
        rows = {table: _rows(db, table) for table in TABLES}
    with target.write() as db:
        present = {table: count(db, f"SELECT COUNT(*) FROM {table}") for table in ACCOUNT_TABLES}
        if any(present.values()) and not replace:
            held = ", ".join(f"{n} {table}" for table, n in present.items() if n)
            raise UsageError(f"the target already holds accounts ({held}); "
                             "--replace drops them first")
        for table in reversed(TABLES):  # children first: foreign keys
            db.execute(f"DELETE FROM {table}")
        for table in TABLES:
            columns, values = rows[table]
            insert = (f"INSERT INTO {table} ({', '.join(columns)}) "
                      f"VALUES ({', '.join('?' * len(columns))})")
            for row in values:
                db.execute(insert, row)
    return {table: len(values) for table, (_, values) in rows.items()}


def _rows(db: Connection, table: str) -> tuple[list[str], list[tuple]]:
    """The column names and the rows of `table`. By name: a file migrated from an older schema
    has the added columns last, where a new database has them in SCHEMA's order."""
    cursor = db.execute(f"SELECT * FROM {table}")
    return [column[0] for column in cursor.description], cursor.fetchall()
