"""`mailforge store check|repair ADDR`: the UID indexes (snapshot and change log, see
folderlog.py) measured against the Maildir files.

The files are the truth. `check` only reads (no lock, no writes) and says what is wrong;
`repair` rebuilds what is: a damaged index keeps its UIDVALIDITY and every UID that survived
(only entries that cannot be trusted get new UIDs, above any UID handed out before); a lost or
unreadable one starts a new UIDVALIDITY, since old UIDs cannot be known; either way the
snapshot is written anew and the change log starts over. Messages and flags
(which live in the file names) are never touched. A session that selects a folder with a
damaged index repairs it the same way by itself (folderstate.FolderState._repair, logged).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .api import INBOX
from .filenames import base_of
from .folderdir import FOLDER_MARKER, FolderDir
from .folderstate import inspect
from .maildir import MAILDIR_SUBDIRS
from .names import from_dir
from .quota import NO_LIMITS, MaildirSize, count_messages


@dataclass
class Report:
    folder: str
    problems: list[str] = field(default_factory=list)  # things `repair` must fix
    notes: list[str] = field(default_factory=list)     # normal states, shown for information

    def lines(self) -> list[str]:
        if not self.problems and not self.notes:
            return [f"{self.folder}: ok"]
        return ([f"{self.folder}: PROBLEM: {p}" for p in self.problems]
                + [f"{self.folder}: {n}" for n in self.notes])


def folder_paths(maildir: Path) -> list[tuple[str, Path]]:
    """(name, directory) of INBOX and every folder of a Maildir++ tree."""
    folders = [(INBOX, maildir)]
    for entry in sorted(os.listdir(maildir)):
        name = from_dir(entry)
        if name is not None and (maildir / entry).is_dir():
            folders.append((name, maildir / entry))
    return folders


def check_folder(name: str, path: Path, is_inbox: bool) -> Report:
    report = Report(name)
    missing_dirs = [sub for sub in MAILDIR_SUBDIRS if not (path / sub).is_dir()]
    if missing_dirs:
        report.problems.append(f"missing {', '.join(missing_dirs)}/")
        return report
    if not is_inbox and not (path / FOLDER_MARKER).exists():
        report.problems.append(f"no {FOLDER_MARKER} marker")
    bases = _bases(path, report)
    index, problems = inspect(path)
    if index is None and not problems:
        if bases:
            report.problems.append(f"UID index missing ({len(bases)} messages)")
        return report
    report.problems += [f"UID index: {problem}" for problem in problems]
    if index is not None:
        unindexed = len(bases - index.uids.keys())
        stale = len(index.uids.keys() - bases)
        if unindexed:
            report.notes.append(f"{unindexed} new message(s) get UIDs at the next select")
        if stale:
            report.notes.append(f"{stale} expunged message(s) leave the index at the next select")
    return report


def _bases(path: Path, report: Report) -> set[str]:
    bases: set[str] = set()
    for sub in ("new", "cur"):
        for entry in os.listdir(path / sub):
            if entry.startswith("."):
                continue
            base = base_of(entry)
            if base in bases:
                report.problems.append(f"two files for one message: {base}")
            bases.add(base)
    return bases


def check(maildir: Path) -> list[Report]:
    reports = [check_folder(name, path, name == INBOX) for name, path in folder_paths(maildir)]
    reports.append(_check_usage(maildir))
    return reports


def _check_usage(maildir: Path) -> Report:
    report = Report("maildirsize")
    lines = _usage_lines(maildir)
    if lines is None:
        report.notes.append("absent; counted at the next quota check")
        return report
    actual = count_messages(maildir)
    if lines != actual:
        report.notes.append(f"says {lines[0]} octets in {lines[1]} messages, files hold "
                            f"{actual[0]} in {actual[1]} (recounted when stale)")
    return report


def _usage_lines(maildir: Path) -> tuple[int, int] | None:
    try:
        text = (maildir / "maildirsize").read_text("ascii", "replace").splitlines()[1:]
    except FileNotFoundError:
        return None
    totals = [0, 0]
    for line in text:
        fields = line.split()
        if len(fields) == 2 and all(f.lstrip("-").isdigit() for f in fields):
            totals[0] += int(fields[0])
            totals[1] += int(fields[1])
    return totals[0], totals[1]


def repair(maildir: Path) -> list[str]:
    """Fix every folder of a Maildir; what was done, one line each."""
    done = []
    for name, path in folder_paths(maildir):
        for sub in MAILDIR_SUBDIRS:
            if not (path / sub).is_dir():
                os.makedirs(path / sub, mode=0o700)
                done.append(f"{name}: made {sub}/")
        if name != INBOX and not (path / FOLDER_MARKER).exists():
            (path / FOLDER_MARKER).touch(0o600)
            done.append(f"{name}: made the {FOLDER_MARKER} marker")
        uidvalidity, problems = FolderDir(path, maildir).rebuild()
        if problems:
            done.append(f"{name}: UID index rebuilt ({'; '.join(problems)}), "
                        f"UIDVALIDITY {uidvalidity}")
    if (maildir / "maildirsize").exists():
        MaildirSize(maildir, NO_LIMITS).forget()
        done.append("maildirsize: will be counted again at the next quota check")
    return done
