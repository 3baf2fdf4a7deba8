"""`python -m bench.tune --quick` end to end: real mailforge servers at two worker counts, the
table on stdout and a PNG plot on disk."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tune_quick_prints_the_table_and_writes_the_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "tuning.png"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))
    # --quick bounds itself at 50 s; the margin is for a busy machine starting four servers.
    run = subprocess.run([sys.executable, "-m", "bench.tune", "--quick", "--out", str(out),
                          "--report", str(tmp_path / "report")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line.split() for line in run.stdout.splitlines() if line.lstrip().startswith("smtp")]
    assert [(row[1], row[2]) for row in rows] == [("1", "4"), ("2", "4")]
    assert all(row[3] == "40" and row[4] == "0" for row in rows), run.stdout
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "imap" in run.stdout  # run, or skipped with a note
