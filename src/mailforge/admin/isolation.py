"""What a console worker takes while it still has the supervisor's rights, before the
privilege drop: its TLS context, the certificates' end dates, its pages' templates compiled
and its static files read (the interpreter's and the package's files may be unreadable to the
service account, as supervisor._preload says); then it loses sight of every private key for
good.

The keys are hidden as systemd's InaccessiblePaths= hides a path: in a mount namespace of the
worker's own, an empty root-owned file with no permissions is bind-mounted over each key file.
Once the worker is the service account it cannot read them, nor undo the mounts (no
CAP_SYS_ADMIN), while the server's other processes see the files as before. The console shows
and changes accounts and settings; it never needs a key, and an exploited console must not
hand one out. Without root (a server run by hand as its own user) there is nothing to drop to:
the keys are that user's own, and stay readable.
"""

from __future__ import annotations

import ctypes
import datetime
import logging
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2

from .. import tls
from ..config import Config

log = logging.getLogger("mailforge.admin")

# <sched.h>, <sys/mount.h>
CLONE_NEWNS = 0x00020000
MS_BIND = 1 << 12
MS_REC = 1 << 14
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Prepared:
    tls_context: ssl.SSLContext | None  # None: plain HTTP ([admin] allow_plain_http)
    certificates: list[tuple[str, datetime.datetime]]  # config key, end of validity
    keys: str  # how the private keys stand, for the log and the dashboard
    templates: jinja2.Environment  # every template compiled
    static: dict[str, bytes]  # /static/ files by name


def prepare(config: Config) -> Prepared:
    from .web import STATIC_DIR, templates

    context = None if config.admin.allow_plain_http else tls.load_server_context(config)
    environment = templates()
    for name in environment.list_templates():
        environment.get_template(name)  # compiled and cached now
    static = {path.name: path.read_bytes() for path in Path(STATIC_DIR).iterdir() if path.is_file()}
    return Prepared(context, tls.expiry(config), hide_keys(config), environment, static)


def key_files(config: Config) -> list[str]:
    pairs = (tls.default_pair(config), *tls.domain_pairs(config).values())
    return [str(pair.key) for pair in pairs if pair.key.is_file()]


def hide_keys(config: Config) -> str:
    if os.geteuid() != 0:
        return "readable: not started as root, so the keys are the console's own user's"
    try:
        _private_mounts()
        _mask(key_files(config), config.run_dir)
    except OSError as exc:
        log.warning("admin worker: cannot hide the private keys: %s", exc)
        return f"readable: {exc}"
    return "hidden from the console"


def _private_mounts() -> None:
    """A mount namespace of our own, whose changes never reach the rest of the system."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) failed")
    if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "making the mounts private failed")


def _mask(paths: list[str], scratch: os.PathLike) -> None:
    fd, blank = tempfile.mkstemp(prefix=".blank-", dir=scratch)
    try:
        os.fchmod(fd, 0)
        os.close(fd)
        for path in paths:
            if _libc.mount(blank.encode(), os.fsencode(path), None, MS_BIND, None) != 0:
                raise OSError(ctypes.get_errno(), f"cannot cover {path}")
    finally:
        os.unlink(blank)  # the mounts keep the inode
