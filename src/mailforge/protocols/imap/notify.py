"""NOTIFY (RFC 5465): what changed in folders other than the selected one, told as untagged
STATUS and LIST responses after any command and during IDLE.

How changes are found, across worker processes: the same way an idle session finds them in
its selected folder. Each watched folder has a version (store `Mailbox.folder_version`: the
folder's change log and its new/ and cur/ directories stat'ed, nothing listed when nothing
changed); only when it moved is the folder's STATUS computed and compared with the one seen
last, which tells which events happened. Folder creation, deletion, renaming and subscription
changes show in `Mailbox.names_version` (two or three stats); only when it moved is the
folder list read again. The cost is bounded: one look checks at most FOLDERS_PER_LOOK
watched folders, in turn, and a session watches at most MAX_WATCHED folders (more, and it
gets [NOTIFICATIONOVERFLOW] and no more notifications, as RFC 5465 5.8 provides).

The selected folder is reported as before (selected.py: EXPUNGE/VANISHED, EXISTS, FETCH
FLAGS); NOTIFY adds the FETCH attributes of MessageNew for new messages there, and with the
SELECTED filter (not SELECTED-DELAYED) expunges are told after any command (state.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

from ...store.api import (NONEXISTENT, NOSELECT, FolderInfo, FolderStatus, Mailbox, MessageInfo,
                          StoreError)
from . import fetch as fetch_items
from . import notify_spec, wire
from .command_session import CommandSession
from .condstore import SyncExtensions
from .folders import status_line
from .listing import SUBSCRIBED, list_line
from .messages import fetch_line
from .notify_spec import Event, NotifySpec, TooManyNames, UnsupportedEvent
from .responses import Tagged, no, ok
from .selected import Selected

# Watched folders checked by one look (after a command, or at each IDLE tick), in turn: a
# session watching many folders costs a bounded number of stats per command.
FOLDERS_PER_LOOK = 50
# Beyond this many watched folders a session is told [NOTIFICATIONOVERFLOW] instead.
MAX_WATCHED = 1000
# What a STATUS notification carries for each event (Dovecot's choice, which imaptest expects);
# FlagChange's HIGHESTMODSEQ once CONDSTORE is on, and at NOTIFY SET STATUS when FlagChange is
# asked for.
ITEMS_FOR = {Event.MESSAGE_NEW: ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN"),
             Event.MESSAGE_EXPUNGE: ("MESSAGES", "UIDNEXT", "UNSEEN"),
             Event.FLAG_CHANGE: ("UNSEEN",)}
INITIAL_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN")
ITEM_ORDER = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ")
SUPPORTED_EVENTS = " ".join(event.value for event in Event)
OVERFLOW = b"* OK [NOTIFICATIONOVERFLOW] Too many folders to watch; NOTIFY is off\r\n"


@dataclass(frozen=True, slots=True)
class _Watch:
    version: Hashable
    status: FolderStatus


class Notifier:
    """One session's NOTIFY: the folders it watches and what it last saw of them."""

    def __init__(self, spec: NotifySpec, mailbox: Mailbox, sync: SyncExtensions) -> None:
        self.spec = spec
        self._sync = sync  # the session's: names in its encoding, MODSEQ once it has CONDSTORE
        self.overflowed = False
        self._names_version = mailbox.names_version()
        self._folders = {info.name: info for info in mailbox.folders()}
        self._subscribed = frozenset(mailbox.subscriptions())
        self._watches: dict[str, _Watch] = {}
        self._turn: deque[str] = deque()
        self._follow(mailbox)

    @property
    def immediate_expunges(self) -> bool:
        return self.spec.selected_events is not None and self.spec.immediate

    def initial_status(self, selected: str | None) -> list[bytes]:
        """NOTIFY SET STATUS: every watched folder's STATUS but the selected one's."""
        items = INITIAL_ITEMS
        if Event.FLAG_CHANGE in self.spec.used:
            items += ("HIGHESTMODSEQ",)
        return [status_line(name, watch.status, items, self._sync.utf8_names)
                for name, watch in self._watches.items() if name != selected]

    def look(self, mailbox: Mailbox, selected: str | None) -> list[bytes]:
        """What changed since the last look, as untagged responses."""
        lines: list[bytes] = []
        version = mailbox.names_version()
        if version != self._names_version:
            self._names_version = version
            lines += self._names_changed(mailbox)
            if self.overflowed:
                return lines + [OVERFLOW]
        for _ in range(min(FOLDERS_PER_LOOK, len(self._turn))):
            name = self._turn[0]
            self._turn.rotate(-1)
            line = self._look_at(mailbox, name, name == selected)
            if line:
                lines.append(line)
        return lines

    def new_messages(self, selected: Selected, added: Sequence[MessageInfo]) -> list[bytes]:
        """MessageNew's FETCH attributes for messages new in the selected folder."""
        items = list(self.spec.new_message_items)
        if not items:
            return []
        needs_message = fetch_items.needs_message(items)
        from_summary = needs_message and fetch_items.answerable_from_summary(items)
        lines = []
        for info in added:
            seq = selected.seq_of(info.uid)
            if seq:
                try:
                    lines.append(fetch_line(selected, seq, info, items, needs_message,
                                            from_summary, recent=not self._sync.rev2))
                except StoreError:
                    continue  # gone already: its expunge follows
        return lines

    # --- the folders -------------------------------------------------------------------------

    def _look_at(self, mailbox: Mailbox, name: str, selected: bool) -> bytes | None:
        watch = self._watches[name]
        try:
            version = mailbox.folder_version(name)
            if version == watch.version:
                return None
            status = mailbox.status(name)
        except StoreError:
            return None  # deleted or no longer readable: the folder list will tell
        self._watches[name] = _Watch(version, status)
        if selected:
            return None  # told as EXISTS, EXPUNGE and FETCH (selected.py)
        happened = _events(watch.status, status)
        wanted = self.spec.wants(name, self._subscribed, happened)
        items = {item for event in wanted for item in ITEMS_FOR[event]}
        if Event.FLAG_CHANGE in wanted and self._sync.condstore:
            items.add("HIGHESTMODSEQ")
        if not items:
            return None
        return status_line(name, status, [item for item in ITEM_ORDER if item in items],
                           self._sync.utf8_names)

    def _list(self, name: str, attributes: list[str]) -> bytes:
        utf8 = self._sync.utf8_names
        return list_line("LIST", wire.encode_name(name, utf8), attributes, utf8)

    def _names_changed(self, mailbox: Mailbox) -> list[bytes]:
        """LIST responses for folders created, deleted (or renamed: both) and for
        subscription changes, where MailboxName or SubscriptionChange is asked for."""
        folders = {info.name: info for info in mailbox.folders()}
        subscribed = frozenset(mailbox.subscriptions())
        either = self._subscribed | subscribed
        lines = []
        for name in sorted(self._folders.keys() - folders.keys()):
            if self._wants(name, either, Event.MAILBOX_NAME):
                lines.append(self._list(name, [NONEXISTENT]))
        for name in sorted(folders.keys() - self._folders.keys()):
            if self._wants(name, either, Event.MAILBOX_NAME):
                lines.append(self._list(name, _attributes(folders[name], subscribed)))
        for name in sorted(self._subscribed ^ subscribed):
            if self._wants(name, either, Event.SUBSCRIPTION_CHANGE):
                info = folders.get(name)
                attributes = _attributes(info, subscribed) if info else [NONEXISTENT]
                if name in subscribed and SUBSCRIBED not in attributes:
                    attributes.append(SUBSCRIBED)
                lines.append(self._list(name, attributes))
        self._folders, self._subscribed = folders, subscribed
        self._follow(mailbox)
        return lines

    def _wants(self, name: str, subscribed: frozenset[str], event: Event) -> bool:
        return bool(self.spec.wants(name, subscribed, frozenset({event})))

    def _follow(self, mailbox: Mailbox) -> None:
        """Watch exactly the selectable folders some group asks message events of: new ones
        from what they hold now (their earlier messages are nobody's news)."""
        wanted = [name for name, info in self._folders.items()
                  if NOSELECT not in info.attributes
                  and self.spec.wants(name, self._subscribed, notify_spec.MESSAGE_EVENTS)]
        if len(wanted) > MAX_WATCHED:
            self.overflowed = True
            return
        watches = {}
        for name in wanted:
            watch = self._watches.get(name)
            if watch is None:
                try:
                    watch = _Watch(mailbox.folder_version(name), mailbox.status(name))
                except StoreError:
                    continue  # no right to read it: no events either
            watches[name] = watch
        self._watches = watches
        self._turn = deque(watches)


def _events(before: FolderStatus, now: FolderStatus) -> frozenset[Event]:
    """Which events turned one STATUS of a folder into the next."""
    if before.uidvalidity != now.uidvalidity:
        return notify_spec.MESSAGE_EVENTS  # rebuilt: everything may have changed
    events = set()
    arrived = now.uidnext - before.uidnext
    if arrived:
        events.add(Event.MESSAGE_NEW)
    if now.messages != before.messages + arrived:
        events.add(Event.MESSAGE_EXPUNGE)
    if now.unseen != before.unseen or (not events and now.highestmodseq != before.highestmodseq):
        events.add(Event.FLAG_CHANGE)
    return frozenset(events)


def _attributes(info: FolderInfo, subscribed: Iterable[str]) -> list[str]:
    attributes = sorted(info.attributes)
    if info.name in subscribed:
        attributes.append(SUBSCRIBED)
    return attributes


# --- the command -------------------------------------------------------------------------------

def notify(session: CommandSession, tag: str, args: list) -> Tagged:
    """NOTIFY NONE | NOTIFY SET [STATUS] (filter events) ... (RFC 5465 3)."""
    try:
        spec = notify_spec.parse(args)
    except UnsupportedEvent as exc:
        return no(f"Unsupported NOTIFY events: {exc}", f"BADEVENT ({SUPPORTED_EVENTS})")
    except TooManyNames as exc:
        return no(f"Too many folders: {exc}", "NOTIFICATIONOVERFLOW")
    if spec is None:
        session.notifier = None
        return ok("NOTIFY completed")
    assert session.mailbox is not None
    notifier = Notifier(spec, session.mailbox, session.sync)
    if notifier.overflowed:
        return no(f"More than {MAX_WATCHED} folders to watch", "NOTIFICATIONOVERFLOW")
    if spec.send_status:
        selected = session.selected.folder.name if session.selected is not None else None
        for line in notifier.initial_status(selected):
            session.untagged(line)
    session.notifier = notifier
    return ok("NOTIFY completed")
