"""`python -m bench.imapcmd` end to end on a small folder, mailforge alone (the Dovecot anchor
needs root and fixed ports): a row per kind of command, each with its CPU and wall time."""

import pytest

from bench import imapcmd


def test_imapcmd_bench_times_each_kind_of_command(capsys):
    kinds = ["NOOP", "STATUS", "FETCH 7 (BODY.PEEK[])", "FETCH 7 (HEADER)", "STORE +/-FLAGS",
             "APPEND"]
    assert imapcmd.main(["--messages", "20", "--seconds", "0.3", "--peers", "mailforge",
                         "--commands", ",".join(kinds)]) == 0
    rows = [[cell.strip() for cell in line.split("│") if cell.strip()]
            for line in capsys.readouterr().out.splitlines() if line.startswith("│ ")]
    assert [row[0] for row in rows] == kinds
    for row in rows:
        cpu, wall = (float(cell.replace(",", "")) for cell in row[1:3])
        assert wall > 0 and cpu >= 0


def test_imapcmd_bench_refuses_a_folder_too_small(capsys):
    with pytest.raises(SystemExit) as exited:
        imapcmd.main(["--messages", "5", "--peers", "mailforge"])
    assert exited.value.code == 2
    assert "--messages must be at least 10" in capsys.readouterr().err
