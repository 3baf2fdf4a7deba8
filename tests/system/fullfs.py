"""A small file system of the test's own that it can fill to the last block: a tmpfs mounted
in the test's temp dir (the tests run as root in CI), unmounted by the fixture afterwards.
Where mounting is impossible (not root, no CAP_SYS_ADMIN) the test is skipped, saying so."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FILLER = "filler"


class SmallDisk:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fill(self, leave: int = 0) -> None:
        """Take every free block but about `leave` octets with one file."""
        stat = os.statvfs(self.path)
        free = stat.f_bavail * stat.f_frsize - leave
        chunk = b"\0" * (1 << 20)
        # Unbuffered: a server taking blocks meanwhile makes a write fail with ENOSPC (full,
        # as wanted), which a buffered file would raise again from its close.
        with open(self.path / FILLER, "ab", buffering=0) as handle, contextlib.suppress(OSError):
            while free > 0:
                handle.write(chunk[: min(len(chunk), free)])
                free -= len(chunk)
            os.fsync(handle.fileno())

    def free(self) -> None:
        (self.path / FILLER).unlink(missing_ok=True)

    def available(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize


@contextlib.contextmanager
def small_disk(path: Path, size_mb: int) -> Iterator[SmallDisk]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs",
                              str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {size_mb} MB tmpfs to fill (needs root): "
                    f"{mounted.stderr.strip()}")
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def small_disk_factory(tmp_path) -> Iterator:
    """`small_disk_factory(size_mb)` → a SmallDisk mounted under the test's temp dir."""
    with contextlib.ExitStack() as stack:
        count = 0

        def factory(size_mb: int = 20) -> SmallDisk:
            nonlocal count
            count += 1
            return stack.enter_context(small_disk(tmp_path / f"disk{count}", size_mb))

        yield factory
