"""The accounts database as a process opens it: one `Database` and its repositories.

Whoever opens it (a protocol worker, a delivery worker, the CLI) hands each consumer the one
repository it needs, which the consumer knows only by its protocol in auth.api. `open_accounts`
picks the backend that [accounts] names.
"""

from __future__ import annotations

import os

from ..config import Config
from .sql.admins import Admins
from .sql.credentials import Credentials
from .sql.database import Database
from .sql.directory import Directory
from .sql.mailboxsettings import MailboxSettings
from .sql.nodes import Nodes
from .sql.sendlimits import SendLimits
from .sqlite.database import Database as SQLiteDatabase


class Accounts:
    def __init__(self, source: os.PathLike | Database, *, create: bool = False,
                 recipient_delimiter: str = "") -> None:
        """`source`: an open Database, or the path of a SQLite file (`create`: make it when
        missing). `recipient_delimiter`: [server] recipient_delimiter, for the recipient
        lookups of SMTP and delivery (auth.api.RecipientResolver)."""
        self.database = (source if isinstance(source, Database)
                         else SQLiteDatabase(source, create=create))
        self.directory = Directory(self.database, recipient_delimiter)
        self.credentials = Credentials(self.database)
        self.send_limits = SendLimits(self.database)
        self.mailbox_settings = MailboxSettings(self.database)
        self.admins = Admins(self.database)
        self.nodes = Nodes(self.database)

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> Accounts:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_accounts(config: Config) -> Accounts:
    """The accounts database that `config` names, for its recipient delimiter."""
    return Accounts(open_database(config), recipient_delimiter=config.server.recipient_delimiter)


def open_database(config: Config) -> Database:
    settings = config.accounts
    if settings.backend == "sqlite":
        return SQLiteDatabase(config.accounts_db)
    return open_postgresql(config, settings.dsn)


def open_postgresql(config: Config, dsn: str) -> Database:
    """The PostgreSQL database at `dsn`, with [accounts] password_file and pool settings."""
    # Imported here: psycopg's import costs what a SQLite node need not pay.
    from .postgresql.database import Database as PostgreSQLDatabase

    settings = config.accounts
    return PostgreSQLDatabase(postgresql_dsn(config, dsn), pool_size=settings.pool_size,
                              timeout=settings.timeout)


def postgresql_dsn(config: Config, dsn: str) -> str:
    """`dsn` with the password of [accounts] password_file, as libpq takes it."""
    from .postgresql.conninfo import with_password

    settings = config.accounts
    password_file = config.data_dir / settings.password_file if settings.password_file else None
    return with_password(dsn, password_file)
