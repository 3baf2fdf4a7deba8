"""The implementation is chosen once at import: compiled when built, twins when forced."""

import os
import subprocess
import sys

import pytest

CODE = "import mailforge.speedups as s; print(s.IMPLEMENTATION, s.split_command.__module__)"


def run(**env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_env_var_forces_the_twins_without_a_warning():
    result = run(MAILFORGE_PUREPYTHON="1")
    assert result.stdout.split() == ["python", "mailforge.speedups.parse"]
    assert result.stderr == ""


def test_compiled_modules_are_used_when_built():
    pytest.importorskip("mailforge.speedups._parse")
    result = run(MAILFORGE_PUREPYTHON="0")
    assert result.stdout.split()[0] == "cython"
    assert result.stderr == ""


def test_missing_extensions_fall_back_with_one_warning_line(tmp_path):
    # A package directory without the .so files: what a machine without a compiler gets.
    package = tmp_path / "mailforge"
    source = os.path.dirname(os.path.dirname(__import__("mailforge").__file__))
    subprocess.run(["cp", "-r", os.path.join(source, "mailforge"), str(tmp_path)], check=True)
    for path in (package / "speedups").glob("_*.so"):
        path.unlink()
    result = run(PYTHONPATH=str(tmp_path), MAILFORGE_PUREPYTHON="")
    assert result.stdout.split()[0] == "python"
    assert len(result.stderr.splitlines()) == 1 and "pure-Python twins" in result.stderr


def test_callers_get_the_selected_implementation():
    import mailforge.speedups as speedups
    from mailforge.protocols import smtp, smtpd
    assert smtp.split_command is speedups.split_command
    assert smtpd.DotUnstuffer is speedups.DotUnstuffer
