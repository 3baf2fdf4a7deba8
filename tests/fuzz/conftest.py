"""The fuzz suite's knobs and shared server.

CI runs a bounded sample by default; one variable makes it a long run:
    MAILFORGE_FUZZ_COUNT=100000 pytest -m fuzz tests/fuzz
MAILFORGE_FUZZ_SEED replays a failing run (the seed is in the test's id and output).
"""

from __future__ import annotations

import os

import pytest

from tests.system.conftest import Server
from tests.unit.conftest import impl  # noqa: F401  (the parser twins, one run each)

# Lines per service on the network, and examples per parser entry point for hypothesis.
COUNT = int(os.environ.get("MAILFORGE_FUZZ_COUNT", "1500"))
SEED = int(os.environ.get("MAILFORGE_FUZZ_SEED", "20261125"))
EXAMPLES = max(200, COUNT // 10)


# The suite's per-test timeout (pyproject) fits the CI sample; a long run gets time by its
# size (a service takes about 250 lines/s here, hypothesis examples are quicker).
TIMEOUT = max(300, COUNT // 50)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.is_relative_to(os.path.dirname(__file__)):
            item.add_marker(pytest.mark.fuzz)
            item.add_marker(pytest.mark.timeout(TIMEOUT))


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    """Every service this build serves, one worker each (so a crash cannot hide behind a
    sibling that keeps answering)."""
    server = Server(tmp_path_factory.mktemp("fuzz"), tls_services=True, pop3_services=True,
                    imap_services=True,
                    smtp={"workers": 1, "idle_timeout": 10},
                    server={"grace_period": 2})
    server.start()
    yield server
    server.stop()
