"""The `impl` fixture: one suite run against the Cython extensions and their twins (STYLE 12),
the `fuzz` marker, whose million-input runs only go when asked for (-m fuzz), the fake
`clock` that the rate-keeper's counters take, so that their tests never sleep, and the
accounts fixtures: `cheap_scrypt` (password hashing at test cost) and `db`."""

import importlib
import types
from pathlib import Path

import pytest

from mailforge.auth import passwords
from mailforge.auth.accounts import Accounts

NAMES = ("parse", "crammd5", "spool")


def load(kind: str) -> types.SimpleNamespace:
    prefix = "_" if kind == "cython" else ""
    return types.SimpleNamespace(
        kind=kind, **{name: importlib.import_module(f"mailforge.speedups.{prefix}{name}")
                      for name in NAMES})


def compiled() -> types.SimpleNamespace | None:
    try:
        return load("cython")
    except ImportError:
        return None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cheap_scrypt(monkeypatch) -> None:
    """Hashing as cheap as scrypt allows: the production cost takes a tenth of a second a
    password, by design. Modules that hash ask for it with pytest.mark.usefixtures."""
    monkeypatch.setattr(passwords, "SCRYPT_LOG2_N", 4)


@pytest.fixture
def db(tmp_path, cheap_scrypt):
    """A new accounts database with the domain example.com."""
    accounts = Accounts(tmp_path / "accounts.sqlite3", create=True)
    accounts.directory.domain_add("example.com")
    yield accounts
    accounts.close()


@pytest.fixture(params=["python", "cython"])
def impl(request) -> types.SimpleNamespace:
    if request.param == "cython" and compiled() is None:
        pytest.skip("the Cython extensions are not built")
    return load(request.param)


def pytest_collection_modifyitems(config, items):
    if "fuzz" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="fuzz runs only with -m fuzz")
    here = Path(__file__).parent
    for item in items:
        # Only ours: tests/fuzz runs a bounded sample by default.
        if "fuzz" in item.keywords and item.path.is_relative_to(here):
            item.add_marker(skip)
