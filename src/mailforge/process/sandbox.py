"""Lock a protocol or delivery worker in before it serves: it runs no program and writes only in the data dir.

Two kernel features, each applied when present (fail-open, said once by `serve`, `status`
and `check-config`), never removable afterwards by the process itself:
- seccomp (libseccomp through pyseccomp): `execve`/`execveat` fail with EPERM, so an exploited
  worker cannot start a shell — the counterpart of denying a Windows service account cmd.exe;
- Landlock: creating, writing, truncating, renaming or removing files is refused outside the
  data directory and the run's metrics directory, when metrics are on (EACCES), and executing
  any file is refused as a second wall against exec.
Reads are left alone: the worker loads certificates, the interpreter's modules, the store.
Network access is left alone too: the ruleset handles no ABI 4 network rights, so a delivery
worker (confined the same way) still connects to any remote MTA's port.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass
from pathlib import Path

try:
    import pyseccomp
except (ImportError, RuntimeError, OSError) as exc:  # RuntimeError: libseccomp.so.2 missing
    pyseccomp = None
    _SECCOMP_MISSING = f"seccomp unavailable ({exc})"
else:
    _SECCOMP_MISSING = ""

# The calls that start another program; denied, not killed, so a stray call is an error
# the worker can log rather than a dead process.
EXEC_SYSCALLS = ("execve", "execveat")

# <linux/prctl.h>, <asm/unistd_64.h> (the same numbers on every architecture), <linux/landlock.h>
PR_SET_NO_NEW_PRIVS = 38
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
ACCESS_EXECUTE = 1 << 0
# Everything that changes the file tree or a file's content, by the ABI version that added it.
ACCESS_CHANGE = {1: sum(1 << bit for bit in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12)),
                 2: 1 << 13,   # REFER: link or rename a file into another directory
                 3: 1 << 14}   # TRUNCATE


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@dataclass(frozen=True)
class Support:
    """What this kernel and install can enforce; a reason string for each missing part."""

    seccomp: str
    landlock_abi: int
    landlock: str

    @property
    def complete(self) -> bool:
        return not (self.seccomp or self.landlock)

    def describe(self) -> str:
        parts = ["seccomp: no exec" if not self.seccomp else self.seccomp,
                 f"landlock ABI {self.landlock_abi}: writes only in the data dir"
                 if not self.landlock else self.landlock]
        return "; ".join(parts)


def support() -> Support:
    abi = _landlock_abi()
    landlock = "" if abi > 0 else f"landlock unavailable ({os.strerror(-abi)})"
    return Support(_SECCOMP_MISSING, max(abi, 0), landlock)


def warning(state: Support) -> str:
    """The one line an operator sees when the sandbox is partial."""
    return (f"worker sandbox incomplete: {state.describe()}; workers run without that wall "
            "(install libseccomp2 and pyseccomp, use Linux 5.13+ with Landlock enabled)")


def confine(data_dir: Path, *also_writable: Path | None) -> Support:
    """Apply what the kernel supports to this process (and the threads it starts later);
    returns what is in force. Writes stay inside `data_dir` and the `also_writable` given
    (None: skipped). Call once, single-threaded, after dropping privileges."""
    state = support()
    _no_new_privileges()
    if not state.landlock:
        _restrict_writes([data_dir, *(path for path in also_writable if path)], state.landlock_abi)
    if not state.seccomp:
        _deny_exec()
    return state


def _no_new_privileges() -> None:
    """Both walls need it (an unprivileged process may not install them otherwise), and it
    makes set-user-ID programs useless to us anyway."""
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


def _deny_exec() -> None:
    assert pyseccomp is not None
    sandbox = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
    # Any thread the process already has gets the filter too, not just this one.
    sandbox.set_attr(pyseccomp.Attr.CTL_TSYNC, 1)
    for name in EXEC_SYSCALLS:
        sandbox.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
    sandbox.load()


def _landlock_abi() -> int:
    """The kernel's Landlock ABI version, or -errno (ENOSYS: too old, EOPNOTSUPP: disabled)."""
    version = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                            ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    return int(version) if version >= 0 else -ctypes.get_errno()


def _restrict_writes(directories: list[Path], abi: int) -> None:
    change = sum(bits for version, bits in ACCESS_CHANGE.items() if version <= abi)
    attr = _RulesetAttr(change | ACCESS_EXECUTE)
    ruleset = _checked(_libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr),
                                     ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0)),
                       "landlock_create_ruleset")
    try:
        for directory in directories:
            parent = os.open(directory, os.O_PATH | os.O_CLOEXEC | os.O_DIRECTORY)
            try:
                rule = _PathBeneathAttr(change, parent)
                _checked(_libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH,
                                       ctypes.byref(rule), ctypes.c_uint32(0)), "landlock_add_rule")
            finally:
                os.close(parent)
        _checked(_libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)),
                 "landlock_restrict_self")
    finally:
        os.close(ruleset)


def _checked(result: int, call: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{call}: {os.strerror(code)}")
    return int(result)
