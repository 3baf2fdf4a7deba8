"""The service account: made by `init --system`, and become for good in a child after fork
(the supervisor keeps root only to bind low ports)."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from ..errors import MailforgeError, UsageError

# What `mailforge init --system` creates when not told otherwise.
DEFAULT_USER = "mailforge"
DEFAULT_GROUP = "mailforge-store"
# Files a dropped process creates (messages, queue entries, logs) are for the store group,
# never for every local user.
SERVICE_UMASK = 0o007


def resolve(user: str, group: str = "") -> tuple[int, int]:
    """`[server] user`/`group` (names or numbers) → (uid, gid); the user's own group by default."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"[server] user: no such user {user!r}") from None
    if not group:
        return entry.pw_uid, entry.pw_gid
    try:
        gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise UsageError(f"[server] group: no such group {group!r}") from None
    return entry.pw_uid, gid


def prepare(user: str, group: str = "") -> tuple[int, int]:
    """Resolve and check that the switch is possible, so the supervisor fails at start
    with one line instead of every child failing to boot."""
    uid, gid = resolve(user, group)
    if os.geteuid() != 0 and (os.getuid(), os.geteuid()) != (uid, uid):
        raise UsageError(f"[server] user: switching to {user!r} needs root")
    return uid, gid


def drop(user: str, group: str = "") -> None:
    """Become `user`/`group` for good: no supplementary groups, no way back to root."""
    uid, gid = prepare(user, group)
    os.umask(SERVICE_UMASK)
    if os.geteuid() != 0:
        return  # already that account (prepare checked): nothing to drop
    # Order matters: groups and gid can only be changed while we still are root.
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    _verify(uid, gid)


def _verify(uid: int, gid: int) -> None:
    """Refuse to go on if anything of root is left (a saved set-user-ID, a group)."""
    ids = (os.getresuid(), os.getresgid())
    if ids != ((uid,) * 3, (gid,) * 3) or os.getgroups() not in ([], [gid]):
        raise PermissionError(f"privilege drop incomplete: uids/gids {ids}, groups {os.getgroups()}")
    if uid == 0:
        return
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise PermissionError("privilege drop failed: the process could become root again")


def ensure_account(user: str, group: str, home: Path) -> tuple[int, int]:
    """Create the store group and the service account (a system user with no login shell,
    the group as its primary group) unless they exist; their (uid, gid)."""
    if os.geteuid() != 0:
        raise UsageError("init --system needs root (it creates a user and a group)")
    if not _exists(grp.getgrnam, group):
        _run(["groupadd", "--system", group])
    if not _exists(pwd.getpwnam, user):
        shell = shutil.which("nologin") or "/bin/false"
        _run(["useradd", "--system", "--gid", group, "--no-create-home", "--home-dir", str(home),
              "--shell", shell, "--comment", "mailforge mail server", user])
    return resolve(user, group)


def _exists(lookup: Callable[[str], object], name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True


def _run(command: list[str]) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise MailforgeError(f"{command[0]} not found (install the passwd package)") from None
    except subprocess.CalledProcessError as exc:
        reason = exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else f"status {exc.returncode}"
        raise MailforgeError(f"{' '.join(command)} failed: {reason}") from None
