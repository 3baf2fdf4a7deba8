"""What the store's summary cache (store/cache.py) keeps of a message for IMAP: its header block
and its ENVELOPE, BODY and BODYSTRUCTURE as FETCH renders them, so that those items and the
header sections (fetch.answerable_from_summary) are answered without the message's file.
"""

from __future__ import annotations

from mailforge.store.api import Folder, MessageSummary

from .bodystructure import body_structure
from .envelope import envelope
from .mime import parse_message

# A header block past this is rare and mostly spam: such a message is simply not cached. Well
# under mime.MAX_HEADER, so the fields read from the cached block are the ones read from the
# whole message.
MAX_CACHED_HEADER = 64 * 1024


class ImapSummarizer:
    # One more whenever the rendering of ENVELOPE, BODY or BODYSTRUCTURE changes: summaries
    # cached by the old code are then ignored instead of answered.
    version = 1

    def summarize(self, data: bytes) -> MessageSummary | None:
        root = parse_message(data)
        header = root.mime_header()
        if len(header) > MAX_CACHED_HEADER:
            return None
        return MessageSummary(header, envelope(root.header), body_structure(root, extended=False),
                              body_structure(root, extended=True))


SUMMARIZER = ImapSummarizer()


def header_block(folder: Folder, uid: int) -> bytes:
    """What a reader of header fields alone (SEARCH's header keys, SORT, THREAD) needs of a
    message: its cached header block when there is one, else the whole message (whose header
    parses the same)."""
    summary = folder.summary(uid)
    return summary.header if summary is not None else folder.read(uid)
