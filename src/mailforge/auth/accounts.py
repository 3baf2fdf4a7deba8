"""The accounts database as a process opens it: one `Database` and its repositories.

Whoever opens it (a protocol worker, a delivery worker, the CLI) hands each consumer the one
repository it needs, which the consumer knows only by its protocol in auth.api.
"""

from __future__ import annotations

import os

from .sqlite.admins import Admins
from .sqlite.credentials import Credentials
from .sqlite.database import Database
from .sqlite.directory import Directory
from .sqlite.mailboxsettings import MailboxSettings
from .sqlite.sendlimits import SendLimits


class Accounts:
    def __init__(self, path: os.PathLike, *, create: bool = False,
                 recipient_delimiter: str = "") -> None:
        """`recipient_delimiter`: [server] recipient_delimiter, for the recipient lookups of
        SMTP and delivery (auth.api.RecipientResolver)."""
        self.database = Database(path, create=create)
        self.directory = Directory(self.database, recipient_delimiter)
        self.credentials = Credentials(self.database)
        self.send_limits = SendLimits(self.database)
        self.mailbox_settings = MailboxSettings(self.database)
        self.admins = Admins(self.database)

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> Accounts:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
