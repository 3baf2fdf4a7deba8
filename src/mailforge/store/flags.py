"""What the flag letters of Maildir file names (filenames.py) mean, as mutt and Dovecot read them.

Flags are letters after ":2,": the system flags in capitals (Draft, Flagged, Replied, Seen,
Trashed) and keywords as "a".."z", each letter standing for the keyword on its line of the
folder's `dovecot-keywords` file ("<n> <keyword>", letter chr(ord("a") + n)), exactly as
Dovecot keeps them. A folder can thus hold 26 keywords; a 27th is refused (Dovecot would keep
it in its own index only, invisible to other tools).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..durable import write_atomically
from .api import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, InvalidName

LETTER_TO_FLAG = {"D": DRAFT, "F": FLAGGED, "R": ANSWERED, "S": SEEN, "T": DELETED}
FLAG_TO_LETTER = {flag: letter for letter, flag in LETTER_TO_FLAG.items()}
KEYWORDS_FILE = "dovecot-keywords"
MAX_KEYWORDS = 26


class Keywords:
    """A folder's `dovecot-keywords` table: keyword ↔ letter. Changed under the index lock."""

    def __init__(self, folder_path: Path) -> None:
        self.path = folder_path / KEYWORDS_FILE
        self._names: list[str | None] = []
        self._stamp: tuple[int, int] | None = None
        # Letters -> flags: a folder's messages share a handful of flag combinations.
        self._flags_of: dict[str, frozenset[str]] = {}
        # The letters' meanings as they are now: equal tables decode letters alike, so caches
        # of decoded flags shared by several sessions' tables are keyed by it.
        self.table: tuple[str | None, ...] = ()

    def load(self) -> None:
        """Read the file again when it changed since the last read."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._stamp is not None:
                self._names, self._stamp, self._flags_of, self.table = [], None, {}, ()
            return
        stamp = (st.st_ino, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        names: list[str | None] = [None] * MAX_KEYWORDS
        for line in self.path.read_text("utf-8", "replace").splitlines():
            number, _, keyword = line.partition(" ")
            if number.isdigit() and int(number) < MAX_KEYWORDS and keyword:
                names[int(number)] = keyword
        while names and names[-1] is None:
            names.pop()
        self._names, self._stamp, self._flags_of = names, stamp, {}
        self.table = tuple(names)

    def flags(self, letters: str) -> frozenset[str]:
        known = self._flags_of.get(letters)
        if known is None:
            known = self._flags_of[letters] = self._decode(letters)
        return known

    def _decode(self, letters: str) -> frozenset[str]:
        flags = set()
        for letter in letters:
            if letter in LETTER_TO_FLAG:
                flags.add(LETTER_TO_FLAG[letter])
            elif "a" <= letter <= "z":
                index = ord(letter) - ord("a")
                if index < len(self._names) and self._names[index] is not None:
                    flags.add(self._names[index])
        return frozenset(flags)

    def letters(self, flags: Iterable[str], kept: str) -> str:
        """Letters for `flags`, adding keywords to the table (the caller holds the lock);
        capitals we do not map (P = passed, ...) are kept from `kept`."""
        letters = {c for c in kept if c.isupper() and c not in LETTER_TO_FLAG}
        for flag in flags:
            if flag in FLAG_TO_LETTER:
                letters.add(FLAG_TO_LETTER[flag])
            elif not flag.startswith("\\"):
                letters.add(self._letter(flag))
        return "".join(letters)

    def names(self) -> list[str]:
        return [name for name in self._names if name is not None]

    def _letter(self, keyword: str) -> str:
        if keyword in self._names:
            return chr(ord("a") + self._names.index(keyword))
        if None in self._names:
            index = self._names.index(None)
        elif len(self._names) < MAX_KEYWORDS:
            index = len(self._names)
            self._names.append(None)
        else:
            raise InvalidName(f"too many keywords in this folder (at most {MAX_KEYWORDS})")
        self._names[index] = keyword
        self._flags_of = {}
        self.table = tuple(self._names)
        self._save()
        return chr(ord("a") + index)

    def _save(self) -> None:
        text = "".join(f"{i} {name}\n" for i, name in enumerate(self._names) if name is not None)
        write_atomically(self.path, text.encode("utf-8"))
        st = os.stat(self.path)
        self._stamp = (st.st_ino, st.st_mtime_ns)
