"""What the command handlers of folders.py and messages.py use of the session they serve.

state.IMAPMachine is the one implementation; the handlers name this much of it, so that
state.py imports them without their importing state.py back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ...store.api import Mailbox
from .condstore import SyncExtensions
from .selected import Selected

if TYPE_CHECKING:
    from .notify import Notifier
    from .state import IMAPSettings


class CommandSession(Protocol):
    settings: IMAPSettings
    mailbox: Mailbox | None  # the logged-in user's, once authenticated
    selected: Selected | None  # the selected folder, in the SELECTED state
    sync: SyncExtensions       # CONDSTORE and QRESYNC, once switched on
    notifier: Notifier | None  # NOTIFY's, once set (RFC 5465)

    def select_folder(self, selected: Selected | None) -> None:
        """Select `selected` (None: leave the SELECTED state)."""

    def untagged(self, line: bytes) -> None:
        """Queue an untagged response for the command's reply."""
