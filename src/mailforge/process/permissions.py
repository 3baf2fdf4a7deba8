"""Who owns what under the data dir: applied by `init --system`, checked by `check-config`.

The service account (`[server] user`, primary group `[server] group`, the store group) owns
what workers write: store, queue, badmail, log, run, the accounts DB. Root owns what it must
not change: the config (or a worker could name root as the service account), the TLS files
(readable by the store group only, because workers load the key after dropping root) and
backups. Nothing is writable by others, and the data dir is sticky, so the service account may
create SQLite's -wal/-shm files beside the accounts DB but not rename root's files away.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from . import privileges
from ..config import Config
from ..errors import UsageError

SERVICE, ROOT = "service", "root"


@dataclass(frozen=True)
class Rule:
    path: Path
    owner: str            # SERVICE or ROOT; the group is always the store group
    mode: int
    # For a tree: the mode of every file and directory below (directories get +x for
    # whoever may read). None: the path alone.
    below: int | None = None
    # What the dropped workers need here: os.W_OK, os.R_OK, or 0 (nothing).
    needs: int = 0
    # Readable by others is a mistake too (a private key, password hashes, backups).
    secret: bool = False


def layout(config: Config) -> list[Rule]:
    data = config.data_dir
    rules = [Rule(data, ROOT, 0o1770, needs=os.W_OK), Rule(config.path, ROOT, 0o640),
             Rule(data / "tls", ROOT, 0o750, needs=os.R_OK), Rule(data / "backup", ROOT, 0o700, secret=True),
             Rule(config.run_dir, SERVICE, 0o750, needs=os.W_OK)]
    for tree in (config.store_dir, config.queue_dir, config.badmail_dir, config.log_dir):
        # Setgid: what root's CLI adds there (queue commands, a restored store) keeps the group.
        rules.append(Rule(tree, SERVICE, 0o2770, below=0o660, needs=os.W_OK))
    # DKIM private keys: the delivery workers sign with them, nobody else reads them.
    rules.append(Rule(config.dkim_dir, SERVICE, 0o2700, below=0o600, needs=os.R_OK, secret=True))
    for suffix in ("", "-wal", "-shm"):
        db = config.accounts_db.with_name(config.accounts_db.name + suffix)
        rules.append(Rule(db, SERVICE, 0o660, needs=os.W_OK, secret=True))
    for cert, key in _certificates(config):
        rules += [Rule(cert, ROOT, 0o644, needs=os.R_OK),
                  Rule(key, ROOT, 0o640, needs=os.R_OK, secret=True)]
    return rules


def _certificates(config: Config) -> list[tuple[Path, Path]]:
    pairs = [(config.tls.cert, config.tls.key)]
    pairs += [(files["cert"], files["key"]) for files in config.tls.domains.values()]
    return [(config.data_dir / cert, config.data_dir / key) for cert, key in pairs]


def apply(config: Config, uid: int, gid: int) -> None:
    """Own and mode every path of the layout that exists (as root)."""
    for rule in layout(config):
        if not rule.path.exists():
            continue
        owner = uid if rule.owner == SERVICE else 0
        _set(rule.path, owner, gid, rule.mode)
        if rule.below is None:
            continue
        for root, dirs, files in os.walk(rule.path):
            for name in dirs:
                _set(Path(root, name), owner, gid, _directory_mode(rule.below) | stat.S_ISGID)
            for name in files:
                _set(Path(root, name), owner, gid, rule.below)


def hand_to_service(config: Config, top: Path, path: Path) -> None:
    """Root just made `path` (and maybe its parents below `top`) for the workers: the CLI a
    Maildir, the supervisor's queue recovery its directories. Give every directory from below
    `top` down to `path`, and `path`'s entries, to the service account; nothing to do when not
    root or when workers stay as the invoking user."""
    if os.geteuid() != 0 or not config.server.user or not path.is_dir():
        return
    uid, gid = privileges.resolve(config.server.user, config.server.group)
    chain = [path, *path.parents[: len(path.relative_to(top).parts) - 1]]
    with os.scandir(path) as entries:
        chain += [Path(entry.path) for entry in entries]
    for entry in chain:
        os.chown(entry, uid, gid, follow_symlinks=False)


def _set(path: Path, uid: int, gid: int, mode: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)
    if not path.is_symlink():
        os.chmod(path, mode)


def _directory_mode(file_mode: int) -> int:
    """rw for a class of users means rwx on a directory."""
    return file_mode | (file_mode & 0o444) >> 2


def check(config: Config) -> list[str]:
    """Permission mistakes, one line each: what is open to others, what the service account
    cannot reach, and an install tree it could change."""
    problems: list[str] = []
    for rule in layout(config):
        problems += _check_open(rule)
    if config.server.user:
        problems += _check_service_access(config)
    problems += _check_install_tree(config)
    return problems


def _check_open(rule: Rule) -> list[str]:
    try:
        info = rule.path.lstat()
    except FileNotFoundError:
        return []
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        return []
    if mode & stat.S_IWOTH:
        return [f"{rule.path} is writable by others (mode {mode:04o}; want {rule.mode:04o})"]
    if rule.secret and mode & stat.S_IROTH:
        return [f"{rule.path} is readable by others (mode {mode:04o}; want {rule.mode:04o})"]
    if rule.below is not None:
        # The first level is enough to catch a recursive chmod; walking a store is not cheap.
        for entry in _first_level(rule.path):
            if stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode) & stat.S_IWOTH:
                return [f"{entry.path} is writable by others (under {rule.path})"]
    return []


def _first_level(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            return [entry for entry in entries if not entry.is_symlink()]
    except OSError:
        return []


def _check_service_access(config: Config) -> list[str]:
    try:
        uid, gid = privileges.resolve(config.server.user, config.server.group)
    except UsageError as exc:  # a missing account is reported, not raised, by a checker
        return [str(exc)]
    problems = []
    for rule in layout(config):
        if rule.needs and rule.path.exists() and not _allows(rule.path.stat(), uid, gid, rule.needs):
            verb = "write" if rule.needs == os.W_OK else "read"
            problems.append(f"[server] user {config.server.user} cannot {verb} {rule.path} "
                            "(run `mailforge init --system` as root to fix ownership)")
    return problems


def _allows(info: os.stat_result, uid: int, gid: int, want: int) -> bool:
    """May (uid, gid) read/write this file, by its mode bits alone (the worker has no
    supplementary groups and no capabilities)?"""
    shift = 6 if info.st_uid == uid else 3 if info.st_gid == gid else 0
    bit = 2 if want == os.W_OK else 4
    return bool(info.st_mode >> shift & bit)


def _check_install_tree(config: Config) -> list[str]:
    """The code workers run must not be changeable by them (or by anyone but root)."""
    package = Path(__file__).resolve().parent
    info = package.stat()
    if info.st_mode & stat.S_IWOTH:
        return [f"the install tree {package} is writable by others"]
    if not config.server.user:
        return []
    try:
        uid, gid = privileges.resolve(config.server.user, config.server.group)
    except UsageError:
        return []  # already reported
    if _allows(info, uid, gid, os.W_OK):
        return [f"the install tree {package} is writable by [server] user {config.server.user}"]
    return []
