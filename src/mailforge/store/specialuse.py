"""The special uses (RFC 6154) an account gave its own folders with CREATE-SPECIAL-USE.

The folders every mailbox gets (names.SPECIAL_USE) have theirs by name; any other personal
folder may take one more use of the same five, kept in the `special-use` file beside the
subscriptions: one "\\Attribute<TAB>folder" line each (a folder name holds no control
characters, names.normalize). \\All and \\Flagged name virtual folders the store does not have.
"""

from __future__ import annotations

from pathlib import Path

from ..durable import write_atomically
from .api import SEPARATOR, UnsupportedUse
from .folderdir import FOLDER_MARKER
from .maildir import ensure_maildir_durable
from .names import SPECIAL_USE, to_dir

SPECIAL_USE_FILE = "special-use"
ASSIGNABLE = frozenset(SPECIAL_USE.values())


class SpecialUses:
    """The uses assigned to folders of one account (folder name → attribute)."""

    def __init__(self, root: Path) -> None:
        self.path = root / SPECIAL_USE_FILE

    def load(self) -> dict[str, str]:
        try:
            text = self.path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return {}
        uses = {}
        for line in text.splitlines():
            attribute, tab, name = line.partition("\t")
            if tab and attribute in ASSIGNABLE:
                uses[name] = attribute
        return uses

    @staticmethod
    def check(uses: list[str]) -> str:
        """The one attribute a new folder may take from `uses`; UnsupportedUse otherwise."""
        canonical = {a.lower(): a for a in ASSIGNABLE}
        known = [canonical.get(use.lower()) for use in uses]
        if len(known) != 1 or known[0] is None:
            raise UnsupportedUse("a folder takes one of " + " ".join(sorted(ASSIGNABLE)))
        return known[0]

    def assign(self, name: str, attribute: str) -> None:
        uses = self.load()
        uses[name] = attribute
        self._save(uses)

    def forget(self, name: str) -> None:
        """The folder and those under it were deleted."""
        uses = self.load()
        kept = {n: a for n, a in uses.items() if not _within(n, name)}
        if kept != uses:
            self._save(kept)

    def rename(self, old: str, new: str) -> None:
        uses = self.load()
        renamed = {(new + n[len(old):] if _within(n, old) else n): a for n, a in uses.items()}
        if renamed != uses:
            self._save(renamed)

    def _save(self, uses: dict[str, str]) -> None:
        write_atomically(self.path, "".join(f"{a}\t{n}\n" for n, a in uses.items()).encode())


def _within(name: str, top: str) -> bool:
    return name == top or name.startswith(top + SEPARATOR)


def junk_folder(store_dir: Path, maildir: Path) -> Path:
    """Where quarantined mail goes (DMARC p=quarantine): the account's folder with the \\Junk
    use, the one it assigned or else "Junk", made when it is not there yet."""
    assigned = [name for name, use in SpecialUses(maildir).load().items() if use == "\\Junk"]
    path = maildir / to_dir(assigned[0] if assigned else "Junk")
    if not (path / "new").is_dir():
        ensure_maildir_durable(store_dir, path)
        (path / FOLDER_MARKER).touch()
    return path
