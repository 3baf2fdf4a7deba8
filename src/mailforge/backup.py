"""`mailforge backup create|list|restore`: one tar archive of everything a server needs.

Made while the server runs. The accounts DB is copied with SQLite's online backup API (a
consistent snapshot even mid-write, WAL included). Maildir message files never change content,
only name (flags live in the name after ":2,"): a file renamed between listing and reading is
found again by its unique part. UID indexes are replaced by rename, so each is read whole.
The queue's acknowledged messages (queue/active: .msg with its .env, and segments) are included: they were
answered 250 and exist nowhere else. A message delivered after the backup is delivered again
after a restore, which SMTP's at-least-once promise allows, where losing it would not.
Unfinished uploads (queue/incoming), run/ (sockets, pids) and log/ are left out.

Archive: the files under their data-dir-relative names, each streamed once (hashed on the
way), then `MANIFEST.json` (format version, time, hostname, every file's size and sha256),
last because only then are the hashes known; `restore` checks every file against it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sqlite3
import tarfile
import tempfile
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import config as configuration
from .durable import fsync_dir
from .errors import UsageError
from .queue.segment import OPEN_SUFFIX, SEALED_SUFFIX, SEGMENTS
from .queue.spool import ENV_SUFFIX, MSG_SUFFIX

FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
CONFIG_NAME = configuration.DEFAULT_CONFIG_NAME
ACCOUNTS_NAME = "accounts.sqlite3"
COMPRESSION = {"gz": ".tar.gz", "xz": ".tar.xz", "none": ".tar"}
# Directories `restore` makes empty beside what the archive holds (DESIGN.md, data on disk).
EMPTY_DIRS = ("queue/incoming", "queue/active", "queue/segments", "store", "badmail", "log", "run", "backup", "tls")
_READ = 1 << 20


@dataclass
class Entry:
    name: str  # relative to the data dir, "/"-separated
    size: int
    sha256: str


@dataclass
class Manifest:
    version: int
    created: float
    hostname: str
    files: list[Entry]
    # Every directory of the store, empty ones too: a Maildir needs its cur/ new/ tmp/.
    directories: list[str]

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        raw = json.loads(data)
        if raw.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown backup format version {raw.get('version')!r}")
        return cls(raw["version"], raw["created"], raw["hostname"],
                   [Entry(**entry) for entry in raw["files"]], raw["directories"])


def includes_accounts(config: configuration.Config) -> bool:
    """Are the accounts in the archive? Only SQLite's file: a PostgreSQL database is shared
    by every node and backed up by its own tools (pg_dump), not by one node."""
    return config.accounts.backend == "sqlite"


def create(config: configuration.Config, compression: str = "gz") -> Path:
    """Write a new archive under backup/ (temp name, fsync, rename) and return its path."""
    backup_dir = config.data_dir / "backup"
    backup_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = backup_dir / f"mailforge-{stamp}{COMPRESSION[compression]}"
    with tempfile.TemporaryDirectory(prefix="backup-", dir=backup_dir) as staging:
        sources = {CONFIG_NAME: config.path}
        if includes_accounts(config):
            sources[ACCOUNTS_NAME] = snapshot = Path(staging) / ACCOUNTS_NAME
            _snapshot_accounts(config.accounts_db, snapshot)
        directories, files = _data_files(config)
        sources.update(files)
        partial = Path(staging) / target.name
        mode = "w" if compression == "none" else f"w:{compression}"
        with tarfile.open(partial, mode) as archive:
            entries = [entry for name, path in sources.items()
                       if (entry := _add_file(archive, name, path, config.data_dir))]
            manifest = Manifest(FORMAT_VERSION, time.time(), config.server.hostname, entries,
                                directories)
            data = manifest.to_json()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(data), int(manifest.created), 0o640
            archive.addfile(info, io.BytesIO(data))
        # It holds the TLS key and the password hashes.
        os.chmod(partial, 0o600)
        with open(partial, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, target)
    fsync_dir(backup_dir)
    return target


def _snapshot_accounts(db: Path, target: Path) -> None:
    source = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        copy.close()
        source.close()


def _data_files(config: configuration.Config) -> tuple[list[str], dict[str, Path]]:
    """Certificates, the store, acknowledged queue entries: their directories, and archive
    name → file now."""
    data = config.data_dir
    directories: list[str] = []
    files: dict[str, Path] = {}
    for top in ("tls", "store", "badmail"):
        for path, is_dir in _walk(data / top):
            name = path.relative_to(data).as_posix()
            if is_dir:
                directories.append(name)
            else:
                files[name] = path
    active = data / "queue" / "active"
    names = set(os.listdir(active)) if active.is_dir() else set()
    for name in sorted(names):
        stem, suffix = os.path.splitext(name)
        if suffix == MSG_SUFFIX and stem + ENV_SUFFIX in names:
            for part in (name, stem + ENV_SUFFIX):
                files[f"queue/active/{part}"] = active / part
        elif suffix == SEALED_SUFFIX:  # small messages, many to a segment (queue/segment.py)
            files[f"queue/active/{name}"] = active / name
    # Segments still being appended to hold acknowledged messages too; the server that starts
    # on the restored dir seals them (their writers' locks are gone), as after a crash.
    segments = data / "queue" / SEGMENTS
    for name in sorted(os.listdir(segments)) if segments.is_dir() else ():
        if name.endswith(OPEN_SUFFIX):
            files[f"queue/{SEGMENTS}/{name}"] = segments / name
    return directories, files


def _walk(root: Path) -> Iterator[tuple[Path, bool]]:
    """(path, is a directory) of everything under `root`, but what Maildir tmp/ dirs hold:
    deliveries in progress, not messages yet."""
    for directory, subdirs, names in os.walk(root):
        subdirs.sort()
        yield Path(directory), True
        if Path(directory).name != "tmp":
            for name in sorted(names):
                yield Path(directory) / name, False


class _Hashing:
    """A file read once: into the archive and through sha256 at the same time."""

    def __init__(self, fh: typing.BinaryIO) -> None:
        self.fh, self.digest = fh, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.digest.update(data)
        return data


def _add_file(archive: tarfile.TarFile, name: str, path: Path, data_dir: Path) -> Entry | None:
    found = _open_settled(name, path, data_dir)
    if found is None:
        return None  # deleted meanwhile (expunged, delivered): not part of the snapshot
    name, fh = found
    with fh:
        info = tarfile.TarInfo(name)
        status = os.fstat(fh.fileno())
        info.size, info.mtime, info.mode = status.st_size, int(status.st_mtime), 0o640
        reader = _Hashing(fh)
        archive.addfile(info, reader)
    return Entry(name, info.size, reader.digest.hexdigest())


def _open_settled(name: str, path: Path, data_dir: Path) -> tuple[str, typing.BinaryIO] | None:
    """The file, opened; a Maildir message renamed since it was listed (a flag change, or
    new/ → cur/) is found again by the unique part of its name. Message files are never
    rewritten, so an open one holds the same bytes to the end."""
    try:
        return name, open(path, "rb")
    except FileNotFoundError:
        pass
    unique = path.name.split(":", 1)[0]
    for sub in ("cur", "new"):
        folder = path.parent.parent / sub
        for candidate in sorted(folder.glob(f"{unique}:*")) if folder.is_dir() else ():
            try:
                return candidate.relative_to(data_dir).as_posix(), open(candidate, "rb")
            except FileNotFoundError:
                continue
    return None


def archives(config: configuration.Config) -> list[tuple[Path, Manifest]]:
    backup_dir = config.data_dir / "backup"
    found = []
    for path in sorted(backup_dir.glob("mailforge-*.tar*")) if backup_dir.is_dir() else ():
        found.append((path, read_manifest(path)))
    return found


def read_manifest(path: Path) -> Manifest:
    try:
        with tarfile.open(path) as archive:
            member = archive.getmember(MANIFEST)
            return Manifest.from_json(archive.extractfile(member).read())
    except FileNotFoundError:
        raise UsageError(f"no such backup archive: {path}") from None
    except KeyError:
        raise UsageError(f"{path}: not a mailforge backup (no {MANIFEST})") from None
    except (tarfile.TarError, ValueError, EOFError, OSError) as exc:
        raise UsageError(f"{path}: not a readable mailforge backup ({exc})") from None


def restore(archive_path: Path, target: Path) -> Manifest:
    """Unpack onto an empty (or new) data dir, checking every file against the manifest."""
    manifest = read_manifest(archive_path)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"{target} is not an empty directory; restore only into an empty one")
    expected = {entry.name: entry for entry in manifest.files}
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive_path) as archive:
        for member in archive:
            if member.name == MANIFEST:
                continue
            entry = expected.pop(member.name, None)
            if entry is None or not member.isfile() or not _safe(member.name):
                raise UsageError(f"{archive_path}: unexpected member {member.name!r}")
            if _write(target / member.name, archive.extractfile(member)) != (entry.size, entry.sha256):
                raise UsageError(f"{archive_path}: {member.name} does not match the manifest")
    if expected:
        raise UsageError(f"{archive_path}: {len(expected)} file(s) of the manifest are missing")
    for sub in (*EMPTY_DIRS, *manifest.directories):
        if not _safe(sub):
            raise UsageError(f"{archive_path}: unexpected directory {sub!r}")
        (target / sub).mkdir(mode=0o750, parents=True, exist_ok=True)
    _point_config_at(target / CONFIG_NAME)
    return manifest


def _safe(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def _write(path: Path, source: typing.BinaryIO) -> tuple[int, str]:
    """Copy to `path` (fsynced); its size and sha256."""
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    reader, size = _Hashing(source), 0
    with open(path, "wb") as fh:
        while chunk := reader.read(_READ):
            fh.write(chunk)
            size += len(chunk)
        os.fsync(fh.fileno())
    os.chmod(path, 0o600 if path.suffix in (".pem", ".sqlite3") else 0o640)
    return size, reader.digest.hexdigest()


def _point_config_at(config_file: Path) -> None:
    """The restored config's data dir is the directory it was restored into."""
    config = configuration.load(config_file)
    config.server.data_dir = "."
    config_file.write_text(configuration.render_toml(config))


def describe(path: Path, manifest: Manifest) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(manifest.created))
    total = sum(entry.size for entry in manifest.files)
    return (f"{path}  {when}  {manifest.hostname}  {len(manifest.files)} files  "
            f"{total} bytes ({path.stat().st_size} archived)")
