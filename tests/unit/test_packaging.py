"""What the Makefile installs for which target (`make -n`, in a copy of its inputs), and the
manual page: made from the argparse definitions, current, rendered by man without a warning,
and declared for installation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mailforge.cli import build_parser

ROOT = Path(__file__).parents[2]
PAGE = ROOT / "man" / "mailforge.1"
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="no make")
needs_man = pytest.mark.skipif(shutil.which("man") is None, reason="man-db comes with `make test-debs`")


@pytest.fixture
def tree(tmp_path) -> Path:
    """The files the install rules depend on, in a directory of the test's own."""
    for name in ("Makefile", "pyproject.toml", "setup.py", "man/mailforge.1"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def dry_run(tree: Path, target: str) -> str:
    return subprocess.run(["make", "-n", target], cwd=tree, capture_output=True, text=True,
                          check=True, timeout=30).stdout


def stamp(tree: Path, name: str) -> None:
    path = tree / ".venv" / name
    path.parent.mkdir(exist_ok=True)
    path.touch()


@needs_make
def test_make_run_installs_without_the_dev_extras_and_says_so(tree):
    commands = dry_run(tree, "run")
    assert "pip install --quiet -e '.'" in commands and "[dev]" not in commands
    assert "echo \"mailforge: installing mailforge and its runtime dependencies" in commands
    assert "making the virtual environment" in commands and "starting the server" in commands


@needs_make
def test_make_test_after_make_run_still_installs_the_dev_extras(tree):
    stamp(tree, ".installed-run")
    assert "pip install --quiet -e '.[dev]'" in dry_run(tree, "test")
    assert "pip install" not in dry_run(tree, "run")


@needs_make
def test_make_test_installs_once_and_then_make_run_needs_nothing(tree):
    commands = dry_run(tree, "test")
    assert commands.count("pip install --quiet -e") == 1 and "-e '.[dev]'" in commands
    stamp(tree, ".installed-dev")
    stamp(tree, ".installed-run")
    assert "pip install" not in dry_run(tree, "run") + dry_run(tree, "check")


def test_the_man_page_is_current_with_the_command_line():
    """Fails when a command changed and `make man` was not run."""
    result = subprocess.run([sys.executable, "man/generate.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@needs_man
def test_man_renders_the_page_with_every_command_and_no_warning():
    result = subprocess.run(["man", "--warnings", "-l", str(PAGE)], capture_output=True, text=True,
                            timeout=30, env={**os.environ, "MANWIDTH": "100", "MAN_KEEP_FORMATTING": ""})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    commands = next(action for action in build_parser()._actions if action.dest == "command").choices
    assert len(commands) > 10
    for name in commands:
        assert f"mailforge {name}" in result.stdout, name


def test_the_page_is_installed_with_the_package():
    """A wheel carries it as mailforge-<version>.data/data/share/man/man1/mailforge.1."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["data-files"] == {"share/man/man1": ["man/mailforge.1"]}
    assert "argparse-manpage" in " ".join(pyproject["project"]["optional-dependencies"]["dev"])
