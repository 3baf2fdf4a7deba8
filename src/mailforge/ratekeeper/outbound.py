"""Messages sent per sender in a sliding window: the "hacked account" regulator. No IO.

The limit itself comes with each request (workers read it from the accounts database, where
the CLI changes it), so a changed limit applies to the next message, and counts the messages
already sent in the window. The window is a log of send times, never longer than the highest
limit asked for, so the count is exact however many workers ask.
"""

from __future__ import annotations

import collections

from .counters import Clock

# Senders whose window emptied are forgotten on every Nth request.
SWEEP_EVERY = 1024


def check_limit(messages: int, interval: float) -> None:
    if messages < 1 or interval <= 0:
        raise ValueError("a limit needs messages >= 1 and interval > 0")


class SendCounters:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._sent: dict[str, collections.deque[float]] = {}
        self._refusing: set[str] = set()  # senders whose last request was refused
        self._requests = 0
        self.refused = 0

    def take(self, sender: str, messages: int, interval: float, commit: bool) -> tuple[bool, bool]:
        """May `sender` send one more message? With `commit`, count it when it may.

        Returns (allowed, new_event): new_event is True on the first refusal after the sender
        was last allowed, so that an administrator hears of each event once, not per message.
        """
        check_limit(messages, interval)
        now = self.clock()
        self._requests += 1
        if self._requests % SWEEP_EVERY == 0:
            self._sweep(now, interval)
        sent = self._sent.get(sender)
        if sent is None:
            sent = self._sent[sender] = collections.deque()
        while sent and sent[0] <= now - interval:
            sent.popleft()
        if len(sent) >= messages:
            self.refused += 1
            new_event = sender not in self._refusing
            self._refusing.add(sender)
            return False, new_event
        self._refusing.discard(sender)
        if commit:
            sent.append(now)
        return True, False

    def limited(self) -> list[str]:
        """Senders whose last request was refused: the accounts at their limit now."""
        return sorted(self._refusing)

    def note(self, sender: str) -> None:
        """Count a message the shared counters allowed, so that this node's own count is warm
        should it have to fall back on it."""
        self._refusing.discard(sender)
        self._sent.setdefault(sender, collections.deque()).append(self.clock())

    def snapshot(self) -> dict[str, int]:
        return {"senders": len(self._sent), "limited_now": len(self._refusing),
                "refused": self.refused}

    def _sweep(self, now: float, interval: float) -> None:
        # Only the interval of the request at hand is known here; a sender with another
        # interval keeps its log until a sweep under a longer one, which is harmless.
        for sender in [s for s, sent in self._sent.items() if not sent or sent[-1] <= now - interval]:
            if sender not in self._refusing:
                del self._sent[sender]
