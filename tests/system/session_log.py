"""What a server's log says its sessions cost: the fields of each session's `disconnect` line
(commands, bytes_in, bytes_out…), for tests that count what a client made the server do."""

from __future__ import annotations

import re
import time

# A text-format field, key=value; a value with a space is JSON-quoted (logging._text).
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def session_ends(server, service: str) -> list[dict[str, str]]:
    """The fields of every `disconnect` line `service`'s sessions logged, oldest first."""
    ends = []
    for line in server.log().splitlines():
        if " INFO disconnect " in line and f" service={service} " in line:
            ends.append(dict(_FIELD.findall(line.split(" INFO disconnect ", 1)[1])))
    return ends


def wait_session_ends(server, service: str, count: int, timeout: float = 15) -> list[dict[str, str]]:
    """Once `service` has logged `count` session ends (a session logs its end after the client
    has gone): them."""
    deadline = time.monotonic() + timeout
    while len(ends := session_ends(server, service)) < count:
        assert time.monotonic() < deadline, f"{len(ends)} of {count} {service} sessions ended"
        time.sleep(0.05)
    return ends
