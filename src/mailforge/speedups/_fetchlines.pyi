from collections.abc import Callable, Sequence
from typing import Any

UID: int
FLAGS: int
INTERNALDATE: int
RFC822_SIZE: int
ENVELOPE: int
BODY: int
BODYSTRUCTURE: int
MODSEQ: int
SUMMARY_CODES: frozenset[int]

def format_date_time(timestamp: float) -> bytes: ...
def render_fetch(targets: Sequence[tuple[int, Any]], plan: Sequence[int | Callable[..., bytes]],
                 summary_of: Callable[[int], Any] | None,
                 fallback: Callable[[int, Any], bytes | None],
                 flags_item: Callable[[frozenset[str], bool], bytes],
                 recent: bool) -> tuple[bytes, int]: ...
