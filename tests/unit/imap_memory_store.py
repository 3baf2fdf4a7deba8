"""An in-memory store behind store/api.py's Mailbox and Folder, for the IMAP machine's unit
tests: the machine is pure, so its transcripts need no disk (the system tests use the real
Maildir store). Every Folder of one MemoryMailbox shares the messages, as sessions do."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence

from mailforge.protocols.imap.summary import SUMMARIZER
from mailforge.store.acl import ALL_RIGHTS
from mailforge.store.api import (
    INBOX,
    SEEN,
    Appended,
    Changes,
    FlagMode,
    FolderExists,
    FolderInfo,
    FolderNotFound,
    FolderStatus,
    MessageInfo,
    MessageSummary,
    NewMessage,
    Quota,
)
from mailforge.store.uidindex import FIRST_MODSEQ

UIDVALIDITY = 1700000000


class MemoryMailbox:
    def __init__(self, address: str = "alice@example.test") -> None:
        self.address = address
        # folder → uid → (info without recent, bytes); uidnext per folder
        self.data: dict[str, dict[int, tuple[MessageInfo, bytes]]] = {INBOX: {}}
        self.uidnext: dict[str, int] = {INBOX: 1}
        self.subscribed: set[str] = {INBOX}
        # (folder, uid) → summary of the messages read so far, as the Maildir store keeps them.
        self.summaries: dict[tuple[str, int], MessageSummary | None] = {}
        self.reads = 0  # messages read: tests check that cached answers read none
        # MYRIGHTS per folder (RFC 4314); a folder not named here grants every right.
        self.held: dict[str, frozenset[str]] = {}
        # One MODSEQ counter for every folder: each folder's still only ever goes up, from
        # where the Maildir store's start (a HIGHESTMODSEQ is never 0).
        self.modseq = FIRST_MODSEQ
        self.expunged: dict[str, dict[int, int]] = {}  # folder → UID → MODSEQ of its expunge

    def next_modseq(self) -> int:
        self.modseq += 1
        return self.modseq

    def folders(self) -> list[FolderInfo]:
        names = sorted(self.data, key=lambda n: (n != INBOX, n))
        return [FolderInfo(n, frozenset({"\\HasChildren" if any(o.startswith(n + "/") for o in names)
                                         else "\\HasNoChildren"}), n in self.subscribed)
                for n in names]

    def create(self, name: str, special_use: list[str] | None = None) -> None:
        if name in self.data:
            raise FolderExists("Mailbox already exists")
        self.data[name], self.uidnext[name] = {}, 1

    def delete(self, name: str) -> None:
        self._folder(name)
        del self.data[name]

    def rename(self, old: str, new: str) -> None:
        if new in self.data:
            raise FolderExists("Mailbox already exists")
        self.data[new], self.uidnext[new] = self._folder(old), self.uidnext[old]
        if old == INBOX:
            self.data[INBOX] = {}
        else:
            del self.data[old]

    def subscribe(self, name: str, subscribed: bool = True) -> None:
        (self.subscribed.add if subscribed else self.subscribed.discard)(name)

    def subscriptions(self) -> list[str]:
        return sorted(self.subscribed)

    def select(self, name: str, read_only: bool = False) -> MemoryFolder:
        self._folder(name)
        return MemoryFolder(self, name, read_only)

    def status(self, name: str) -> FolderStatus:
        messages = self._folder(name)
        unseen = sum(1 for info, _ in messages.values() if SEEN not in info.flags)
        return FolderStatus(len(messages), 0, unseen, self.uidnext[name], UIDVALIDITY,
                            highestmodseq=self.modseq)

    def append(self, name: str, data: bytes, flags: Iterable[str] = (),
               internal_date: float | None = None) -> Appended:
        messages = self._folder(name)
        uid = self.uidnext[name]
        self.uidnext[name] += 1
        messages[uid] = (MessageInfo(uid, frozenset(flags), internal_date or 0.0, len(data),
                                     modseq=self.next_modseq()), data)
        return Appended(UIDVALIDITY, (uid,))

    def append_many(self, name: str, messages: Sequence[NewMessage],
                    selected: object = None) -> Appended:
        self._folder(name)
        uids = [self.append(name, m.data, m.flags, m.internal_date).uids[0] for m in messages]
        return Appended(UIDVALIDITY, tuple(uids))

    def append_steps(self, name: str, messages: Sequence[NewMessage],
                     selected: object = None) -> Generator[Callable[[], None], None, Appended]:
        yield from ()  # nothing to sync in memory
        return self.append_many(name, messages, selected)

    def rights(self, name: str) -> frozenset[str]:
        self._folder(name)
        return self.held.get(name, frozenset(ALL_RIGHTS))

    def quota(self) -> Quota:
        return Quota(100 * 1024, 3, 1024 * 1024, None)

    def close(self) -> None:
        pass

    def _folder(self, name: str) -> dict[int, tuple[MessageInfo, bytes]]:
        if name not in self.data:
            raise FolderNotFound("No such mailbox")
        return self.data[name]


class MemoryFolder:
    def __init__(self, mailbox: MemoryMailbox, name: str, read_only: bool) -> None:
        self.mailbox, self.name, self.read_only = mailbox, name, read_only
        self.uidvalidity = UIDVALIDITY
        self._view = self._current()
        self._highestmodseq = mailbox.modseq

    @property
    def uidnext(self) -> int:
        return self.mailbox.uidnext[self.name]

    @property
    def highestmodseq(self) -> int:
        return self._highestmodseq

    def expunged_since(self, modseq: int) -> list[int] | None:
        in_view = {info.uid for info in self._view}
        return sorted(uid for uid, when in self.mailbox.expunged.get(self.name, {}).items()
                      if when > modseq and uid not in in_view)

    def expunge_by_other(self, uid: int) -> None:
        """Another session's expunge, seen at this session's next refresh."""
        del self.mailbox.data[self.name][uid]
        self.mailbox.expunged.setdefault(self.name, {})[uid] = self.mailbox.next_modseq()

    def _current(self) -> list[MessageInfo]:
        return [info for _, (info, _) in sorted(self.mailbox.data[self.name].items())]

    def messages(self) -> list[MessageInfo]:
        return self._view

    def refresh(self) -> Changes:
        before = {info.uid: info for info in self._view}
        now = self._current()
        after = {info.uid: info for info in now}
        self._view = now
        self._highestmodseq = self.mailbox.modseq
        return Changes(tuple(uid for uid in before if uid not in after),
                       tuple(info for info in now if info.uid not in before),
                       tuple(info for info in now if info.uid in before and before[info.uid] != info))

    def read(self, uid: int) -> bytes:
        data = self.mailbox.data[self.name][uid][1]
        self.mailbox.reads += 1
        self.mailbox.summaries[self.name, uid] = SUMMARIZER.summarize(data)
        return data

    def summary(self, uid: int, look: bool = True) -> MessageSummary | None:
        return self.mailbox.summaries.get((self.name, uid))

    def set_flags(self, uids: Iterable[int], flags: Iterable[str], mode: FlagMode,
                  unchanged_since: int | None = None) -> list[MessageInfo]:
        messages, flags, changed = self.mailbox.data[self.name], frozenset(flags), []
        before = self.mailbox.modseq
        for uid in uids:
            info, data = messages[uid]
            if unchanged_since is not None and info.modseq > unchanged_since:
                continue
            new = mode.applied(info.flags, flags)
            if new != info.flags:
                info = MessageInfo(uid, new, info.internal_date, info.size,
                                   modseq=self.mailbox.next_modseq())
                messages[uid] = (info, data)
            changed.append(info)
        self._view = [next((c for c in changed if c.uid == i.uid), i) for i in self._view]
        if self._highestmodseq == before:  # only this change since the view was taken
            self._highestmodseq = self.mailbox.modseq
        return changed

    def expunge(self, uids: Iterable[int] | None = None) -> list[int]:
        messages = self.mailbox.data[self.name]
        wanted = set(messages) if uids is None else set(uids)
        gone = [u for u, (info, _) in sorted(messages.items())
                if u in wanted and "\\Deleted" in info.flags]
        for uid in gone:
            del messages[uid]
            self.mailbox.expunged.setdefault(self.name, {})[uid] = self.mailbox.next_modseq()
        self._view = [info for info in self._view if info.uid not in gone]
        return gone

    def copy(self, uids: Iterable[int], target: str) -> tuple[int, list[tuple[int, int]]]:
        pairs = []
        for uid in uids:
            info, data = self.mailbox.data[self.name][uid]
            pairs.append((uid, self.mailbox.append(target, data, info.flags).uids[0]))
        return UIDVALIDITY, pairs

    def move(self, uids: Iterable[int], target: str) -> tuple[int, list[tuple[int, int]]]:
        uids = list(uids)
        result = self.copy(uids, target)
        for uid in uids:
            del self.mailbox.data[self.name][uid]
        self._view = [info for info in self._view if info.uid not in uids]
        return result

    def close(self) -> None:
        pass
