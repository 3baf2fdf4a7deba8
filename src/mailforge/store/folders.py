"""An account's Maildir++ folders, and its domain's public ones (api.Mailbox).

INBOX is the Maildir itself (store/<domain>/<user>/Maildir); every other folder is a
directory beside its cur/ new/ tmp/ (names.py), marked with a `maildirfolder` file. Public
folders ("#public/...") are the same kind of tree under store/<domain>/public, shared by every
mailbox of the domain when the domain enables them; their flags are shared too (one set of
file names for everyone), so \\Seen there means "seen by someone". Who may change them is the
domain's setting; anyone else selects them read-only and gets NotPermitted for writes.

Subscriptions live in the `subscriptions` file in Dovecot's version 2 format: a "V\\t2" line,
an empty line, then one folder per line with its hierarchy levels separated by tabs.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..auth.api import StoreSettingsSource
from ..durable import fsync_dir, write_atomically
from .api import (
    INBOX,
    PUBLIC_PREFIX,
    SEPARATOR,
    Appended,
    FolderExists,
    FolderInfo,
    FolderNotFound,
    FolderStatus,
    InvalidName,
    MessageInfo,
    NewMessage,
    NotPermitted,
    OverQuota,
    Quota,
    Summarizer,
    UnsupportedUse,
)
from .filenames import field_of, letters_of
from .folderdir import FolderDir
from .maildir import mailbox_path, public_path
from .names import SPECIAL_USE, from_dir, is_public, normalize, parents, to_dir
from .quota import NO_LIMITS, Limits, MaildirSize
from .selected import SelectedFolder, canonical_flags
from .specialuse import SpecialUses

SUBSCRIPTIONS = "subscriptions"
SUBSCRIPTIONS_HEADER = "V\t2\n\n"
# A folder being deleted is first renamed to this prefix (not a folder name: it starts with
# "..") so that no reader sees it half removed.
DELETING_PREFIX = "..mailforge-deleting."


@dataclass(frozen=True, slots=True)
class PublicAccess:
    root: Path
    writable: bool


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a folder name leads: its directory and the tree it belongs to."""

    name: str
    folder: FolderDir
    public: bool


def open_mailbox(store_dir: Path, accounts: StoreSettingsSource, address: str,
                 summarizer: Summarizer | None = None) -> MaildirMailbox:
    """The Mailbox of a canonical address, with its quota and its domain's public folders;
    with a `summarizer`, its folders keep message summaries (store/cache.py)."""
    settings = accounts.store_settings(address)
    public = None
    if settings.public_folders:
        public = PublicAccess(public_path(store_dir, address.rpartition("@")[2]),
                              settings.public_writer)
    return MaildirMailbox(store_dir, address,
                          Limits(settings.quota_bytes, settings.quota_messages), public, summarizer)


class MaildirMailbox:
    def __init__(self, store_dir: Path, address: str, limits: Limits = NO_LIMITS,
                 public: PublicAccess | None = None, summarizer: Summarizer | None = None) -> None:
        self.address = address
        self._summarizer = summarizer
        self.root = mailbox_path(store_dir, address)
        self.public = public
        self.usage = MaildirSize(self.root, limits)
        self.special_uses = SpecialUses(self.root)
        # One FolderDir per directory for the session's life, so that what it learnt of the
        # folder (index, keywords, message dates and sizes) serves the next SELECT too.
        self._dirs: dict[Path, FolderDir] = {}
        inbox = self._folder_dir(self.root)
        if not inbox.exists():
            inbox.create(marker=False)
        for name in SPECIAL_USE:
            place = self._locate(name)
            if not place.folder.exists():
                place.folder.create()
        if public is not None:
            os.makedirs(public.root, mode=0o700, exist_ok=True)

    # -- folders

    def folders(self) -> list[FolderInfo]:
        subscribed = set(self.subscriptions())
        names = {INBOX} | set(_tree_names(self.root))
        uses = SPECIAL_USE | self.special_uses.load()
        infos = _infos(names, "", subscribed, self._selectable, uses)
        if self.public is not None:
            public = set(_tree_names(self.public.root))
            infos += _infos(public, PUBLIC_PREFIX, subscribed, self._selectable, {})
        return infos

    def _selectable(self, name: str) -> bool:
        return self._locate(name).folder.exists()

    def create(self, name: str, special_use: list[str] | None = None) -> None:
        place = self._locate(name.removesuffix(SEPARATOR))
        self._require_writable(place)
        if place.name == INBOX or place.folder.exists():
            raise FolderExists(f"{place.name} exists already")
        attribute = None
        if special_use is not None:
            if place.public:
                raise UnsupportedUse("public folders have no special use")
            attribute = self.special_uses.check(special_use)
        self._create_parents(place.name)
        place.folder.create()
        if attribute is not None:
            self.special_uses.assign(place.name, attribute)

    def _create_parents(self, name: str) -> None:
        for parent in parents(name):
            if parent == INBOX or parent + SEPARATOR == PUBLIC_PREFIX:
                continue
            above = self._locate(parent)
            if not above.folder.exists():
                above.folder.create()

    def delete(self, name: str) -> None:
        place = self._locate(name)
        if place.name == INBOX:
            raise InvalidName("INBOX cannot be deleted")
        self._require_writable(place)
        if not place.folder.exists():
            raise FolderNotFound(f"no folder {place.name}")
        path = place.folder.path
        place.folder.summaries.close()
        doomed = path.with_name(DELETING_PREFIX + secrets.token_hex(8))
        os.rename(path, doomed)
        fsync_dir(path.parent)
        shutil.rmtree(doomed, ignore_errors=True)
        if not place.public:
            self.usage.forget()
            self.special_uses.forget(place.name)

    def rename(self, old: str, new: str) -> None:
        source, target = self._locate(old), self._locate(new)
        self._require_writable(source)
        self._require_writable(target)
        if source.public != target.public:
            raise InvalidName("folders cannot move between the personal and public namespaces")
        if not source.folder.exists() and source.name != INBOX:
            raise FolderNotFound(f"no folder {source.name}")
        if target.name == INBOX or target.folder.exists():
            raise FolderExists(f"{target.name} exists already")
        if target.name.startswith(source.name + SEPARATOR):
            raise InvalidName(f"{source.name} cannot be moved inside itself")
        if source.name == INBOX:
            self.create(target.name)
            _move_messages(self.root, target.folder.path)
            return
        self._create_parents(target.name)
        tree = target.folder.path.parent
        for old_dir in _subtree_dirs(source.folder.path):
            suffix = old_dir.name[len(source.folder.path.name):]
            os.rename(old_dir, tree / (target.folder.path.name + suffix))
        fsync_dir(tree)
        self._rename_subscriptions(source.name, target.name)
        if not source.public:
            self.special_uses.rename(source.name, target.name)

    # -- subscriptions

    def subscribe(self, name: str, subscribed: bool = True) -> None:
        name = normalize(name)
        names = [n for n in self.subscriptions() if n != name]
        if subscribed:
            names.append(name)
        self._write_subscriptions(names)

    def subscriptions(self) -> list[str]:
        try:
            text = (self.root / SUBSCRIPTIONS).read_text("utf-8", "replace")
        except FileNotFoundError:
            return []
        if text.startswith(SUBSCRIPTIONS_HEADER):
            return [line.replace("\t", SEPARATOR)
                    for line in text[len(SUBSCRIPTIONS_HEADER):].splitlines() if line]
        return [line for line in text.splitlines() if line]  # version 1: one name a line

    def _write_subscriptions(self, names: list[str]) -> None:
        lines = "".join(name.replace(SEPARATOR, "\t") + "\n" for name in names)
        write_atomically(self.root / SUBSCRIPTIONS, (SUBSCRIPTIONS_HEADER + lines).encode())

    def _rename_subscriptions(self, old: str, new: str) -> None:
        names = self.subscriptions()
        renamed = [new + n[len(old):] if n == old or n.startswith(old + SEPARATOR) else n
                   for n in names]
        if renamed != names:
            self._write_subscriptions(renamed)

    # -- messages

    def select(self, name: str, read_only: bool = False) -> SelectedFolder:
        place = self._existing(name)
        read_only = read_only or not self._may_write(place)
        return SelectedFolder(self, place.name, place.folder, read_only)

    def status(self, name: str) -> FolderStatus:
        place = self._existing(name)
        listing = place.folder.listing()
        unseen = sum(1 for e in listing.entries if "S" not in letters_of(e.name))
        size = sum(field_of(e.name, "W") or field_of(e.name, "S") or 0 for e in listing.entries)
        return FolderStatus(len(listing.entries), listing.unclaimed, unseen, listing.uidnext,
                            listing.uidvalidity, size)

    def append(self, name: str, data: bytes, flags: Iterable[str] = (),
               internal_date: float | None = None) -> Appended:
        return self.append_many(name, [NewMessage(data, frozenset(flags), internal_date)])

    def append_many(self, name: str, messages: Sequence[NewMessage]) -> Appended:
        place = self._existing(name, trycreate=True)
        self._require_writable(place)
        self._check_quota(place, sum(len(m.data) for m in messages), len(messages))
        uidvalidity, uids = place.folder.add(
            [(m.data, canonical_flags(m.flags), m.internal_date) for m in messages])
        return Appended(uidvalidity, tuple(uids))

    def add_copies(self, target: str, sources: list[tuple[Path, MessageInfo]]
                   ) -> tuple[int, list[int]]:
        """COPY/MOVE: put these message files into `target` with their flags and dates."""
        place = self._existing(target, trycreate=True)
        self._require_writable(place)
        self._check_quota(place, sum(field_of(p.name, "S") or 0 for p, _ in sources),
                          len(sources))
        return place.folder.add([(path, info.flags, info.internal_date)
                                 for path, info in sources])

    def quota(self) -> Quota:
        return self.usage.quota()

    def check_writable(self, name: str) -> None:
        self._require_writable(self._locate(name))

    def close(self) -> None:
        for folder in self._dirs.values():
            folder.summaries.close()

    # -- names to places

    def _locate(self, name: str) -> _Place:
        name = normalize(name)
        if name + SEPARATOR == PUBLIC_PREFIX:
            raise InvalidName(f"{name} is the public namespace, not a folder")
        if name == INBOX:
            return _Place(name, self._folder_dir(self.root), False)
        if is_public(name):
            if self.public is None:
                raise FolderNotFound(f"no folder {name}")
            inner = name[len(PUBLIC_PREFIX):]
            return _Place(name, self._folder_dir(self.public.root / to_dir(inner),
                                                 public_root=self.public.root), True)
        return _Place(name, self._folder_dir(self.root / to_dir(name)), False)

    def _folder_dir(self, path: Path, public_root: Path | None = None) -> FolderDir:
        """The FolderDir of a directory of the account's tree, or of the public one (whose
        messages do not count against the account's quota)."""
        folder = self._dirs.get(path)
        if folder is None:
            folder = (FolderDir(path, public_root, summarizer=self._summarizer)
                      if public_root is not None
                      else FolderDir(path, self.root, self.usage.record, self._summarizer))
            self._dirs[path] = folder
        return folder

    def _existing(self, name: str, trycreate: bool = False) -> _Place:
        place = self._locate(name)
        if not place.folder.exists():
            hint = " [TRYCREATE]" if trycreate else ""
            raise FolderNotFound(f"no folder {place.name}{hint}")
        return place

    def _may_write(self, place: _Place) -> bool:
        return not place.public or (self.public is not None and self.public.writable)

    def _require_writable(self, place: _Place) -> None:
        if not self._may_write(place):
            raise NotPermitted(f"{place.name} is read-only for {self.address}")

    def _check_quota(self, place: _Place, size: int, count: int) -> None:
        if not place.public and self.usage.would_exceed(size, count):
            raise OverQuota("quota exceeded")


def _tree_names(root: Path) -> list[str]:
    """The folder names of the directories of a Maildir++ tree."""
    try:
        entries = os.listdir(root)
    except FileNotFoundError:
        return []
    return [name for name in map(from_dir, entries) if name is not None]


def _infos(names: set[str], prefix: str, subscribed: set[str],
           selectable: Callable[[str], bool], uses: dict[str, str]) -> list[FolderInfo]:
    """FolderInfo for each name and for the levels above them that exist only as parents."""
    everything = set(names)
    for name in names:
        everything.update(parents(name))
    infos = []
    for name in sorted(everything, key=lambda n: (n != INBOX, n)):
        full = prefix + name
        attributes = {"\\HasChildren" if any(n.startswith(name + SEPARATOR) for n in everything)
                      else "\\HasNoChildren"}
        if name not in names or not selectable(full):
            attributes.add("\\Noselect")
        if name in uses:
            attributes.add(uses[name])
        infos.append(FolderInfo(full, frozenset(attributes), full in subscribed))
    return infos


def _subtree_dirs(path: Path) -> list[Path]:
    """A folder's directory and those of the folders under it."""
    prefix = path.name + "."
    return [path] + [path.parent / n for n in os.listdir(path.parent) if n.startswith(prefix)]


def _move_messages(source: Path, target: Path) -> None:
    """RENAME INBOX: every message file moves (same base names, so flags and POP3 UIDLs stay);
    the target hands out new UIDs, INBOX's sessions see expunges."""
    for sub in ("new", "cur"):
        for name in os.listdir(source / sub):
            if not name.startswith("."):
                os.rename(source / sub / name, target / sub / name)
        fsync_dir(target / sub)
        fsync_dir(source / sub)
