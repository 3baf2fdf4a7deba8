"""NOTIFY's arguments (RFC 5465 8): which events a session wants, for which folders.

`NOTIFY NONE` or `NOTIFY SET [STATUS] (filter events) ...`, where a filter is SELECTED,
SELECTED-DELAYED, PERSONAL, INBOXES, SUBSCRIBED, `SUBTREE mailboxes` or `MAILBOXES
mailboxes`, and events are NONE or a list of event names; MessageNew may carry FETCH
attributes for the selected folder only. Pure: no store, no session.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ...speedups import FetchAttribute, ParseError, parse_fetch_attributes
from ...store.api import PUBLIC_PREFIX, SEPARATOR, SHARED_PREFIX
from . import fetch as fetch_items
from .responses import Bad, folder_name


class Event(enum.Enum):
    MESSAGE_NEW = "MessageNew"
    MESSAGE_EXPUNGE = "MessageExpunge"
    FLAG_CHANGE = "FlagChange"
    MAILBOX_NAME = "MailboxName"
    SUBSCRIPTION_CHANGE = "SubscriptionChange"


# RFC 5465 5: events of other extensions (AnnotationChange, MailboxMetadataChange,
# ServerMetadataChange) are named by NO [BADEVENT], with the events that are supported.
KNOWN_UNSUPPORTED = frozenset({"ANNOTATIONCHANGE", "MAILBOXMETADATACHANGE",
                               "SERVERMETADATACHANGE"})
_BY_NAME = {event.value.upper(): event for event in Event}
MESSAGE_EVENTS = frozenset({Event.MESSAGE_NEW, Event.MESSAGE_EXPUNGE, Event.FLAG_CHANGE})
NAME_EVENTS = frozenset({Event.MAILBOX_NAME, Event.SUBSCRIPTION_CHANGE})
# Dovecot's bound too: a NOTIFY naming more folders than this gets NO [NOTIFICATIONOVERFLOW].
MAX_NAMED_FOLDERS = 100


class UnsupportedEvent(Exception):
    """An event this server does not offer (NO [BADEVENT ...])."""


class TooManyNames(Exception):
    """More than MAX_NAMED_FOLDERS folders named (NO [NOTIFICATIONOVERFLOW])."""


class Scope(enum.Enum):
    PERSONAL = "PERSONAL"      # every folder of the account's own tree
    INBOXES = "INBOXES"        # where mail is delivered: the own tree too (subaddress folders)
    SUBSCRIBED = "SUBSCRIBED"
    SUBTREE = "SUBTREE"
    MAILBOXES = "MAILBOXES"


@dataclass(frozen=True)
class Group:
    """One `(filter events)` of a NOTIFY SET for folders other than the selected one."""

    scope: Scope
    events: frozenset[Event]
    names: tuple[str, ...] = ()  # SUBTREE and MAILBOXES: the store's folder names

    def covers(self, name: str, subscribed: frozenset[str]) -> bool:
        match self.scope:
            case Scope.PERSONAL | Scope.INBOXES:
                return not name.startswith((PUBLIC_PREFIX, SHARED_PREFIX))
            case Scope.SUBSCRIBED:
                return name in subscribed
            case Scope.SUBTREE:
                return any(name == top or name.startswith(top + SEPARATOR) for top in self.names)
        return name in self.names


@dataclass(frozen=True)
class NotifySpec:
    groups: tuple[Group, ...] = ()
    # The selected folder: None without a SELECTED filter; `immediate` for SELECTED (expunges
    # may be told after any command), not SELECTED-DELAYED.
    selected_events: frozenset[Event] | None = None
    immediate: bool = False
    new_message_items: tuple[FetchAttribute, ...] = ()  # MessageNew's FETCH attributes
    send_status: bool = False                            # NOTIFY SET STATUS
    used: frozenset[Event] = field(default=frozenset())  # every event named anywhere

    def wants(self, name: str, subscribed: frozenset[str], events: frozenset[Event]
              ) -> frozenset[Event]:
        """Which of `events` some group asks for about the folder `name`."""
        wanted: set[Event] = set()
        for group in self.groups:
            if group.covers(name, subscribed):
                wanted |= group.events & events
        return frozenset(wanted)


def parse(args: list) -> NotifySpec | None:
    """NOTIFY's arguments; None for NOTIFY NONE. Bad for a syntax error, UnsupportedEvent
    for an event of an extension not offered, TooManyNames."""
    if not args or not isinstance(args[0], str):
        raise Bad("Syntax: NOTIFY NONE | NOTIFY SET [STATUS] (filter events) ...")
    verb = args[0].upper()
    if verb == "NONE" and len(args) == 1:
        return None
    if verb != "SET" or len(args) < 2:
        raise Bad("Syntax: NOTIFY NONE | NOTIFY SET [STATUS] (filter events) ...")
    rest = args[1:]
    send_status = isinstance(rest[0], str) and rest[0].upper() == "STATUS"
    if send_status:
        rest = rest[1:]
    builder = _Builder()
    for item in rest:
        builder.add(item)
    return builder.spec(send_status)


class _Builder:
    def __init__(self) -> None:
        self.groups: list[Group] = []
        self.selected: frozenset[Event] | None = None
        self.immediate = False
        self.items: tuple[FetchAttribute, ...] = ()
        self.used: set[Event] = set()
        self.named = 0

    def add(self, item: object) -> None:
        if not isinstance(item, list) or not item or not isinstance(item[0], str):
            raise Bad("Each NOTIFY filter is (filter-mailboxes events)")
        kind = item[0].upper()
        if kind in ("SELECTED", "SELECTED-DELAYED"):
            if self.selected is not None or len(item) != 2:
                raise Bad("One SELECTED filter, with its events")
            self.immediate = kind == "SELECTED"
            self.selected = self._events(item[1], selected=True)
            _check_selected(self.selected)
            return
        try:
            scope = Scope(kind)
        except ValueError:
            raise Bad(f"Unknown NOTIFY filter {kind[:30]}") from None
        names: tuple[str, ...] = ()
        if scope in (Scope.SUBTREE, Scope.MAILBOXES):
            if len(item) != 3:
                raise Bad(f"Syntax: ({scope.value} mailboxes events)")
            names = _names(item[1])
            self.named += len(names)
        elif len(item) != 2:
            raise Bad(f"Syntax: ({scope.value} events)")
        events = self._events(item[-1], selected=False)
        if events:
            self.groups.append(Group(scope, events, names))

    def _events(self, arg: object, selected: bool) -> frozenset[Event]:
        if isinstance(arg, str) and arg.upper() == "NONE":
            return frozenset()
        if not isinstance(arg, list) or not arg:
            raise Bad("NOTIFY events are NONE or a list of event names")
        events: set[Event] = set()
        unsupported = []
        index = 0
        while index < len(arg):
            name = arg[index]
            index += 1
            if not isinstance(name, str):
                raise Bad("Expected an event name")
            event = _BY_NAME.get(name.upper())
            if event is None:
                if name.upper() in KNOWN_UNSUPPORTED:
                    unsupported.append(name)
                    continue
                raise Bad(f"Unknown event {name[:30]}")
            events.add(event)
            if event is Event.MESSAGE_NEW and index < len(arg) and isinstance(arg[index], list):
                if not selected:
                    raise Bad("FETCH attributes go with MessageNew of the selected folder only")
                self.items = _fetch_items(arg[index])
                index += 1
        if unsupported:
            raise UnsupportedEvent(" ".join(unsupported))
        self.used |= events
        return frozenset(events)

    def spec(self, send_status: bool) -> NotifySpec:
        if self.named > MAX_NAMED_FOLDERS:
            raise TooManyNames(f"at most {MAX_NAMED_FOLDERS} folders may be named")
        return NotifySpec(tuple(self.groups), self.selected, self.immediate, self.items,
                          send_status, frozenset(self.used))


def _check_selected(events: frozenset[Event]) -> None:
    """RFC 5465 5.2-5.4: MessageNew and MessageExpunge go together for the selected folder,
    and FlagChange needs them."""
    new_or_gone = events & {Event.MESSAGE_NEW, Event.MESSAGE_EXPUNGE}
    if new_or_gone and len(new_or_gone) != 2:
        raise Bad("MessageNew and MessageExpunge must be together")
    if Event.FLAG_CHANGE in events and not new_or_gone:
        raise Bad("FlagChange requires MessageNew and MessageExpunge")


def _names(arg: object) -> tuple[str, ...]:
    items = arg if isinstance(arg, list) else [arg]
    if not items:
        raise Bad("Expected one or more mailboxes")
    return tuple(dict.fromkeys(folder_name(item) for item in items))


def _fetch_items(arg: list) -> tuple[FetchAttribute, ...]:
    try:
        items = parse_fetch_attributes(arg)
    except ParseError as exc:
        raise Bad(f"Invalid FETCH attributes: {exc}") from None
    if fetch_items.sets_seen(items):
        # A notification must not change the folder (RFC 5465 5.2): BODY.PEEK, not BODY.
        raise Bad("MessageNew's FETCH attributes must not set \\Seen")
    return tuple(items)
