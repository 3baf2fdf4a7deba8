"""The soak suite's knobs (issues 21 and 22): load while things go wrong, for as long as asked.

`make test` runs each case as a short smoke (SMOKE_SECONDS of trouble), so the soak code
itself keeps working; a soak is one variable (`make soak` sets 120 unless told):
    MAILFORGE_SOAK_SECONDS=600 .venv/bin/python -m pytest -q -m soak tests/soak
MAILFORGE_SOAK_SEED replays the random choices (which worker is killed, and when); a new one
is drawn per run and named in every failure message. Timing still differs between runs.
"""

from __future__ import annotations

import os
import random

import pytest

from tests.system.conftest import make_server, small_disk_factory  # noqa: F401  (fixtures)

# Seconds of trouble (kills, full-disk cycles) per case in the smoke run; the start, the
# drain and the checks add two or three.
SMOKE_SECONDS = 3.0
SECONDS = float(os.environ.get("MAILFORGE_SOAK_SECONDS", SMOKE_SECONDS))
SEED = int(os.environ.get("MAILFORGE_SOAK_SEED", random.SystemRandom().randrange(1 << 32)))

# The suite's per-test timeout (pyproject) fits the smoke; a soak gets its length again for
# the drain and the checks, plus the start.
TIMEOUT = max(300, int(2 * SECONDS) + 120)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.is_relative_to(os.path.dirname(__file__)):
            item.add_marker(pytest.mark.soak)
            item.add_marker(pytest.mark.timeout(TIMEOUT))


@pytest.fixture
def rng() -> random.Random:
    return random.Random(SEED)
