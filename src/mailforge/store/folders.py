"""An account's Maildir++ folders, and its domain's public ones (api.Mailbox).

INBOX is the Maildir itself (store/<domain>/<user>/Maildir); every other folder is a
directory beside its cur/ new/ tmp/ (names.py), marked with a `maildirfolder` file. Public
folders ("#public/...") are the same kind of tree under store/<domain>/public, shared by every
mailbox of the domain when the domain enables them; their flags are shared too (one set of
file names for everyone), so \\Seen there means "seen by someone". "#shared/OWNER/..." reaches
the folders of another mailbox of the same domain. Who may do what is decided by access control
lists (store/acl.py): the owner may do everything to their own folders, the domain's
public-folder setting grants rights on public folders, and each folder's list grants more.

Subscriptions live in the `subscriptions` file in Dovecot's version 2 format: a "V\\t2" line,
an empty line, then one folder per line with its hierarchy levels separated by tabs.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..auth.api import PUBLIC_EVERYONE, StoreSettingsSource
from ..durable import fsync_dir, write_atomically
from . import acl, metadata, shared, steps
from .api import (
    INBOX,
    NONEXISTENT,
    NOSELECT,
    PUBLIC_PREFIX,
    SEPARATOR,
    Appended,
    Folder,
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
from .filenames import field_of
from .folderdir import MTIME_SLACK_NS, FolderDir
from .maildir import mailbox_path, public_path
from .names import SPECIAL_USE, from_dir, is_namespace, is_public, is_shared, normalize, parents, to_dir
from .quota import NO_LIMITS, Limits, MaildirSize
from .selected import SelectedFolder, canonical_flags
from .specialuse import SpecialUses

SUBSCRIPTIONS = "subscriptions"
# Names of the account's own folders whose place a session remembers (a bound against a
# client that names thousands of them).
MAX_REMEMBERED_PLACES = 1000
SUBSCRIPTIONS_HEADER = "V\t2\n\n"
# A folder being deleted is first renamed to this prefix (not a folder name: it starts with
# "..") so that no reader sees it half removed.
DELETING_PREFIX = "..mailforge-deleting."


# The folder name that stands for the server in the annotation methods (IMAP's "").
SERVER_ENTRIES = ""
SPECIAL_USE_ENTRY = "/private/specialuse"  # RFC 6154 4: the special use, as METADATA shows it
# RFC 5464 3.3: one of these (with "l") lets an account see and set a folder's annotations.
ANNOTATION_RIGHTS = frozenset("rswip")


# Rights that let a session change something in a selected folder (RFC 4314 4): without
# any of them it is selected read-only.
CHANGE_RIGHTS = frozenset("stwe")


@dataclass(frozen=True, slots=True)
class PublicAccess:
    root: Path
    writers: str  # the domain's setting: PUBLIC_EVERYONE or addresses (acl.public_defaults)


@dataclass(frozen=True, slots=True)
class _OwnListing:
    """What `folders` found in the account's own tree, and the stamps that vouch for it."""

    stamps: tuple[object, ...]
    unselectable: tuple[Path, ...]  # folders without cur/: one may get it in place
    infos: list[FolderInfo]
    subscribed: set[str]


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a folder name leads: its directory and the tree it belongs to."""

    name: str
    folder: FolderDir
    public: bool
    owner: str | None = None  # the mailbox whose tree it is; None for public folders


def open_mailbox(store_dir: Path, accounts: StoreSettingsSource, address: str,
                 summarizer: Summarizer | None = None) -> MaildirMailbox:
    """The Mailbox of a canonical address, with its quota and its domain's public folders;
    with a `summarizer`, its folders keep message summaries (store/cache.py)."""
    settings = accounts.store_settings(address)
    public = None
    if settings.public_folders:
        public = PublicAccess(public_path(store_dir, address.rpartition("@")[2]),
                              settings.public_writers)
    return MaildirMailbox(store_dir, address,
                          Limits(settings.quota_bytes, settings.quota_messages), public, summarizer)


class MaildirMailbox:
    def __init__(self, store_dir: Path, address: str, limits: Limits = NO_LIMITS,
                 public: PublicAccess | None = None, summarizer: Summarizer | None = None) -> None:
        self.address = address
        self.domain = address.rpartition("@")[2]
        self._store_dir = store_dir
        self._summarizer = summarizer
        self.root = mailbox_path(store_dir, address)
        self.public = public
        self.usage = MaildirSize(self.root, limits)
        self.special_uses = SpecialUses(self.root)
        # One FolderDir per directory for the session's life, so that what it learnt of the
        # folder (index, keywords, message dates and sizes) serves the next SELECT too.
        self._dirs: dict[Path, FolderDir] = {}
        self._own_places: dict[str, _Place] = {}
        self._own_listing: _OwnListing | None = None
        # What a change to the folder list changes (strings: no Path built at each LIST).
        self._tree_files = (str(self.root), str(self.root / SUBSCRIPTIONS),
                            str(self.special_uses.path))
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
        infos, subscribed = self._own_folders()
        infos = list(infos)
        if self.public is not None:
            public = {name for name in _tree_names(self.public.root)
                      if "l" in self._rights(self._locate(PUBLIC_PREFIX + name))}
            infos += _infos(public, PUBLIC_PREFIX, subscribed, self._selectable, {})
        return infos + _infos(self._shared_names(), "", subscribed, self._selectable, {})

    def _own_folders(self) -> tuple[list[FolderInfo], set[str]]:
        """The account's own folders, and its subscriptions; listed again only when a folder
        came, went or changed its name (the tree's directory changed), a subscription or a
        special use changed, or a folder that could not be selected may now be (LIST comes
        again and again, and listing the tree was most of it)."""
        cached = self._own_listing
        if cached is not None and cached.stamps == self._own_stamps(cached.unselectable):
            return cached.infos, cached.subscribed
        now = time.time_ns()
        stamps = self._own_stamps(())
        subscribed = set(self.subscriptions())
        names = {INBOX} | set(_tree_names(self.root))
        uses = SPECIAL_USE | self.special_uses.load()
        infos = _infos(names, "", subscribed, self._selectable, uses)
        unselectable = tuple(self._locate(info.name).folder.path for info in infos
                             if info.name in names and NOSELECT in info.attributes)
        stamps += tuple(map(_stat_stamp, unselectable))
        # An mtime moves in clock ticks: a change in the tick just seen could leave it as it
        # is, so only stamps older than that vouch for the listing.
        settled = all(stamp is None or now - stamp[1] > MTIME_SLACK_NS for stamp in stamps)
        self._own_listing = (_OwnListing(stamps, unselectable, infos, subscribed)
                             if settled else None)
        return infos, subscribed

    def _own_stamps(self, unselectable: tuple[Path, ...]) -> tuple[object, ...]:
        return (*map(_stat_stamp, self._tree_files), *map(_stat_stamp, unselectable))

    def _shared_names(self) -> set[str]:
        """The other mailboxes' folders of the domain this account may see ("l")."""
        visible = set()
        for owner, root in shared.sharers(self._store_dir, self.domain):
            if owner == self.address:
                continue
            for inner in [INBOX] + _tree_names(root):
                directory = root if inner == INBOX else root / to_dir(inner)
                if "l" in acl.rights_of(self.address, acl.load(directory)):
                    visible.add(shared.folder_name(owner, inner))
        return visible

    def _selectable(self, name: str) -> bool:
        return self._locate(name).folder.exists()

    def create(self, name: str, special_use: list[str] | None = None) -> None:
        place = self._locate(name.removesuffix(SEPARATOR))
        self._require_parent_right(place, "k")
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
            if parent == INBOX or is_namespace(parent):
                continue
            above = self._locate(parent)
            if not above.folder.exists():
                above.folder.create()

    def delete(self, name: str) -> None:
        place = self._locate(name)
        if place.name == INBOX:
            raise InvalidName("INBOX cannot be deleted")
        if not place.folder.exists():
            raise FolderNotFound(f"no folder {place.name}")
        self._require(place, "x")
        path = place.folder.path
        place.folder.summaries.close()
        doomed = path.with_name(DELETING_PREFIX + secrets.token_hex(8))
        os.rename(path, doomed)
        fsync_dir(path.parent)
        shutil.rmtree(doomed, ignore_errors=True)
        if place.owner == self.address:
            self.usage.forget()
            self.special_uses.forget(place.name)

    def rename(self, old: str, new: str) -> None:
        source, target = self._locate(old), self._locate(new)
        if source.owner != target.owner:
            raise InvalidName("folders cannot move between mailboxes or namespaces")
        if not source.folder.exists() and source.name != INBOX:
            raise FolderNotFound(f"no folder {source.name}")
        self._require(source, "x")
        self._require_parent_right(target, "k")
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
        if source.owner == self.address:
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

    def names_version(self) -> Hashable:
        # Creating, deleting or renaming a folder changes its tree's directory; subscribing
        # replaces the subscriptions file (a new inode).
        stamps: list[object] = [_stat_stamp(self.root), _stat_stamp(self.root / SUBSCRIPTIONS)]
        if self.public is not None:
            stamps.append(_stat_stamp(self.public.root))
        return tuple(stamps)

    def folder_version(self, name: str) -> Hashable:
        return self._existing(name).folder.listing().version

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
        held = self._require(place, "r")
        read_only = read_only or not held & CHANGE_RIGHTS
        return SelectedFolder(self, place.name, place.folder, read_only)

    def status(self, name: str) -> FolderStatus:
        place = self._existing(name)
        self._require(place, "r")
        listing = place.folder.listing()
        tally = place.folder.tally(listing)
        return FolderStatus(len(listing.entries), listing.unclaimed, tally.unseen,
                            listing.uidnext, listing.uidvalidity, tally.size,
                            listing.highestmodseq, tally.deleted)

    def append(self, name: str, data: bytes, flags: Iterable[str] = (),
               internal_date: float | None = None) -> Appended:
        return self.append_many(name, [NewMessage(data, frozenset(flags), internal_date)])

    def append_many(self, name: str, messages: Sequence[NewMessage],
                    selected: Folder | None = None) -> Appended:
        return steps.run(self.append_steps(name, messages, selected))

    def append_steps(self, name: str, messages: Sequence[NewMessage],
                     selected: Folder | None = None) -> steps.Steps[Appended]:
        place = self._existing(name, trycreate=True)
        rights = self._require(place, "i")
        self._check_quota(place, sum(len(m.data) for m in messages), len(messages))
        uidvalidity, uids = yield from place.folder.add_steps(
            [(m.data, frozenset(acl.permitted_flags(canonical_flags(m.flags), rights)),
              m.internal_date) for m in messages], _claimer(place, selected))
        return Appended(uidvalidity, tuple(uids))

    def add_copies(self, target: str, sources: list[tuple[Path, MessageInfo]],
                   selected: SelectedFolder | None = None) -> tuple[int, list[int]]:
        """COPY/MOVE: put these message files into `target` with their dates, and with the
        flags the rights on `target` let this account set (RFC 4314 4)."""
        place = self._existing(target, trycreate=True)
        rights = self._require(place, "i")
        self._check_quota(place, sum(field_of(p.name, "S") or 0 for p, _ in sources),
                          len(sources))
        return place.folder.add([(path, frozenset(acl.permitted_flags(info.flags, rights)),
                                  info.internal_date) for path, info in sources],
                                _claimer(place, selected))

    def quota(self) -> Quota:
        return self.usage.quota()

    def check_writable(self, name: str) -> None:
        """Any change to a selected folder's messages (which ones, messages.py decides)."""
        place = self._locate(name)
        if not self._rights(place) & CHANGE_RIGHTS:
            raise NotPermitted(f"{place.name} is read-only for {self.address}")

    # -- access control (store/acl.py)

    def rights(self, name: str) -> frozenset[str]:
        return self._require(self._existing(name), "")

    def acl(self, name: str) -> dict[str, frozenset[str]]:
        place = self._administered(name)
        implied = ({place.owner: frozenset(acl.ALL_RIGHTS)} if place.owner is not None
                   else self._public_defaults())
        return acl.merged(implied, acl.load(place.folder.path))

    def fixed_rights(self, name: str, identifier: str) -> frozenset[str]:
        place = self._administered(name)
        who = acl.identifier(identifier, self.domain)
        if place.owner is not None:
            return frozenset(acl.ALL_RIGHTS) if who == place.owner else frozenset()
        return self._public_defaults().get(who, frozenset())

    def set_acl(self, name: str, identifier: str, rights: str) -> None:
        place = self._administered(name)
        shared.set_entry(self._store_dir, place.folder.path, self.domain, place.owner,
                         identifier, rights)

    def delete_acl(self, name: str, identifier: str) -> None:
        place = self._administered(name)
        acl.delete_entry(place.folder.path, self.domain, place.owner, identifier)

    # -- annotations (store/metadata.py)

    def metadata(self, name: str) -> dict[str, bytes]:
        if name == SERVER_ENTRIES:
            return metadata.load(self.root / metadata.SERVER_FILE, self.address)
        place = self._annotated(name)
        entries = metadata.load(place.folder.path / metadata.FOLDER_FILE, self.address)
        if place.owner == self.address:
            use = (SPECIAL_USE | self.special_uses.load()).get(place.name)
            if use is not None:
                entries[SPECIAL_USE_ENTRY] = use.encode()
        return entries

    def set_metadata(self, name: str, changes: dict[str, bytes | None]) -> None:
        if SPECIAL_USE_ENTRY in changes:
            raise NotPermitted(f"{SPECIAL_USE_ENTRY} is set by CREATE with USE")
        if name == SERVER_ENTRIES:
            path = self.root / metadata.SERVER_FILE
        else:
            path = self._annotated(name).folder.path / metadata.FOLDER_FILE
        metadata.update(path, self.address, changes)

    def _annotated(self, name: str) -> _Place:
        """RFC 5464 3.3: annotations of a folder are read and written with the "l" right and
        any one of "r", "s", "w", "i" or "p"."""
        place = self._existing(name)
        if not self._require(place, "l") & ANNOTATION_RIGHTS:
            raise NotPermitted(f"{self.address} may not annotate {place.name}")
        return place

    def _administered(self, name: str) -> _Place:
        place = self._existing(name)
        self._require(place, "a")
        return place

    def close(self) -> None:
        for folder in self._dirs.values():
            folder.summaries.close()

    # -- names to places

    def _locate(self, name: str) -> _Place:
        # The account's own folders lead to the same place for good: LIST and STATUS ask
        # for them again and again (normalising and escaping a name is most of a LIST).
        place = self._own_places.get(name)
        if place is None:
            place = self._place_of(name)
            if place.owner == self.address and len(self._own_places) < MAX_REMEMBERED_PLACES:
                self._own_places[name] = place
        return place

    def _place_of(self, name: str) -> _Place:
        name = normalize(name)
        if is_namespace(name):
            raise InvalidName(f"{name} is a namespace, not a folder")
        if name == INBOX:
            return _Place(name, self._folder_dir(self.root), False, self.address)
        if is_shared(name):
            return self._shared_place(name)
        if is_public(name):
            if self.public is None:
                raise FolderNotFound(f"no folder {name}")
            inner = name[len(PUBLIC_PREFIX):]
            return _Place(name, self._folder_dir(self.public.root / to_dir(inner),
                                                 public_root=self.public.root), True)
        return _Place(name, self._folder_dir(self.root / to_dir(name)), False, self.address)

    def _shared_place(self, name: str) -> _Place:
        """A folder of another mailbox of the domain (never of another domain: the owner is
        a local part, and only this account's domain is looked in)."""
        owner, inner = shared.split(name, self.domain)
        root = mailbox_path(self._store_dir, owner)
        if owner == self.address or not root.is_dir():
            raise FolderNotFound(f"no folder {name}")
        path = root if inner == INBOX else root / to_dir(inner)
        # Messages put there count in the owner's tree, not against this account's quota.
        return _Place(name, self._folder_dir(path, public_root=root), False, owner)

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

    def _rights(self, place: _Place) -> frozenset[str]:
        if place.owner == self.address:
            return frozenset(acl.ALL_RIGHTS)
        stored = acl.load(place.folder.path)
        if place.public:
            stored = acl.merged(self._public_defaults(), stored)
        return acl.rights_of(self.address, stored)

    def _public_defaults(self) -> acl.Acl:
        return {} if self.public is None else acl.public_defaults(self.public.writers,
                                                                   PUBLIC_EVERYONE)

    def _require(self, place: _Place, needed: str) -> frozenset[str]:
        """The rights held on `place`, which must include `needed`. Another mailbox's folder
        on which no right is held does not exist, as far as this account can tell."""
        held = self._rights(place)
        if not held and place.owner not in (None, self.address):
            raise FolderNotFound(f"no folder {place.name}")
        missing = set(needed) - held
        if missing:
            raise NotPermitted(f"{self.address} lacks the right {acl.render(missing)} "
                               f"on {place.name}")
        return held

    def _require_parent_right(self, place: _Place, needed: str) -> None:
        """CREATE, RENAME's target: the right on the folder above (RFC 4314 4). Top-level
        public folders take it from the namespace's own list; no one creates top-level
        folders in another mailbox."""
        above = parents(place.name)
        if not above or above[-1] == INBOX:
            return  # this account's own tree
        if not is_namespace(above[-1]):
            self._require(self._locate(above[-1]), needed)
        elif place.public and self.public is not None:
            namespace = acl.merged(self._public_defaults(), acl.load(self.public.root))
            if needed not in acl.rights_of(self.address, namespace):
                raise NotPermitted(f"{self.address} may not create public folders")
        else:
            raise NotPermitted("folders cannot be created at the top of another mailbox")

    def _check_quota(self, place: _Place, size: int, count: int) -> None:
        if place.owner == self.address and self.usage.would_exceed(size, count):
            raise OverQuota("quota exceeded")


def _tree_names(root: Path) -> list[str]:
    """The folder names of the directories of a Maildir++ tree."""
    try:
        entries = os.listdir(root)
    except FileNotFoundError:
        return []
    return [name for name in map(from_dir, entries) if name is not None]


def _claimer(place: _Place, selected: object) -> Callable[[frozenset[int]], None] | None:
    """Where the \\Recent of messages stored into `place` goes: the session's read-write view
    of that folder, when it has one selected (else its next refresh claims them)."""
    if isinstance(selected, SelectedFolder) and selected.claims_recent_in(place.folder):
        return selected.took_recent
    return None


def _stat_stamp(path: str | Path) -> tuple[int, int] | None:
    """What tells a changed file or directory from the one seen before (None: none there)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


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
            attributes.add(NOSELECT)
        if name not in names:
            attributes.add(NONEXISTENT)  # a level that only holds others (RFC 5258 3.4)
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
