"""The console's line to the supervisor: its own control socket (Config.admin_socket), which
answers the console's workers alone (process/supervisor.py)."""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..errors import UsageError
from ..process import control

# The supervisor answers from its loop within milliseconds; a reload is started, not awaited.
TIMEOUT = 5.0


class SupervisorUnavailable(Exception):
    """The supervisor did not answer (it is stopping, or busy beyond TIMEOUT)."""


def ask(config: Config, command: str, **arguments: Any) -> dict[str, Any]:
    """The answer; UsageError with the supervisor's reason when it refused the command."""
    try:
        answer = control.request(config.admin_socket, command, timeout=TIMEOUT, **arguments)
    except (OSError, ValueError) as exc:
        raise SupervisorUnavailable(f"the supervisor did not answer: {exc}") from None
    if not answer.get("ok"):
        raise UsageError(answer.get("error", "refused, no reason given"))
    return answer
