"""The `impl` fixture: one suite run against the Cython extensions and their twins (STYLE 12),
the `fuzz` marker, whose million-input runs only go when asked for (-m fuzz), the fake
`clock` that the rate-keeper's counters take, so that their tests never sleep, and the
accounts fixtures: `cheap_scrypt` (password hashing at test cost), `db`, and
`accounts_backend`: "sqlite", or for a test marked `both_backends` each of "sqlite" and
"postgresql" (a database of its own in one throw-away cluster, `pg_cluster`)."""

import importlib
import itertools
import types
from pathlib import Path

import pytest

from mailforge.auth import passwords
from mailforge.auth.accounts import Accounts, open_accounts
from mailforge.config import Config
from tests.pg_cluster import PASSWORD, Cluster, start_cluster

NAMES = ("parse", "crammd5", "spool", "fetchlines")


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


BACKENDS = ("sqlite", "postgresql")
_databases = itertools.count()


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "both_backends: run the test's accounts database on "
                                       "SQLite and on PostgreSQL")


def pytest_generate_tests(metafunc) -> None:
    if ("accounts_backend" in metafunc.fixturenames
            and metafunc.definition.get_closest_marker("both_backends")):
        metafunc.parametrize("accounts_backend", BACKENDS, indirect=True)


@pytest.fixture(scope="session")
def pg_cluster():
    cluster = start_cluster()
    yield cluster
    cluster.remove()


@pytest.fixture
def accounts_backend(request) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def accounts_config(request, tmp_path, accounts_backend) -> Config:
    """A config whose accounts database is new and empty, in the test's backend."""
    config = Config(path=tmp_path / "mailforge.toml")
    config.server.data_dir = str(tmp_path)
    config.server.recipient_delimiter = ""  # the tests that want one set it themselves
    if accounts_backend == "sqlite":
        Accounts(config.accounts_db, create=True).close()
        return config
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    (tmp_path / "pg.password").write_text(PASSWORD + "\n")
    config.accounts.backend = "postgresql"
    config.accounts.dsn = cluster.create_database(f"unit{next(_databases)}")
    config.accounts.password_file = "pg.password"
    return config


@pytest.fixture
def db(accounts_config, cheap_scrypt):
    """A new accounts database with the domain example.com."""
    accounts = open_accounts(accounts_config)
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
